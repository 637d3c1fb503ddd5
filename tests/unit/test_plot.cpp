// Raster plots: text metrics and clipping, chart layout and data-to-pixel mapping, heat map
// colours, side-by-side strips, and the errors for bad inputs.
#include "ditcache/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "ditcache/error.h"
#include "ditcache/image.h"
#include "test_util.h"

namespace ditcache {
namespace {

using test::expect_error;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Rgb pixel(const at::Tensor& image, int64_t x, int64_t y) {
  auto a = image.accessor<uint8_t, 3>();
  return {a[y][x][0], a[y][x][1], a[y][x][2]};
}

at::Tensor white(int64_t h, int64_t w) { return at::full({h, w, 3}, 255, at::kByte); }

/// Number of pixels of exactly `color` in columns [x0, x1) and rows [y0, y1) (clamped to the image).
int count_color(const at::Tensor& image, Rgb color, int64_t x0, int64_t y0, int64_t x1, int64_t y1) {
  int n = 0;
  for (int64_t y = std::max<int64_t>(y0, 0); y < std::min(y1, image.size(0)); ++y)
    for (int64_t x = std::max<int64_t>(x0, 0); x < std::min(x1, image.size(1)); ++x) n += pixel(image, x, y) == color;
  return n;
}

int count_color(const at::Tensor& image, Rgb color) { return count_color(image, color, 0, 0, image.size(1), image.size(0)); }

/// Whether `color` occurs within `r` pixels of (x, y).
bool color_near(const at::Tensor& image, Rgb color, double x, double y, int r = 1) {
  const auto cx = std::lround(x), cy = std::lround(y);
  return count_color(image, color, cx - r, cy - r, cx + r + 1, cy + r + 1) > 0;
}

double luminance(Rgb c) { return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]; }

// ---- text ------------------------------------------------------------------------------------

TEST(PlotText, WidthAndHeightScaleLinearly) {
  EXPECT_EQ(text_width(""), 0);
  const int w1 = text_width("a"), w2 = text_width("ab"), w3 = text_width("abc");
  EXPECT_GT(w1, 0);
  EXPECT_EQ(w3 - w2, w2 - w1);  // a constant advance per character
  for (const std::string s : {"x", "0.25", "ToCa 50%"}) EXPECT_EQ(text_width(s, 2), 2 * text_width(s, 1)) << s;
  EXPECT_EQ(text_height(2), 2 * text_height(1));
  EXPECT_GE(text_height(1), 7);
}

TEST(PlotText, DrawsOnlyInsideItsBox) {
  for (int scale : {1, 2}) {
    auto image = white(40, 260);
    const std::string s = "Fy(1e-3) = 0.5%, x_j";
    const int x = 7, y = 5, w = text_width(s, scale), h = text_height(scale);
    draw_text(image, s, x, y, scale, {200, 0, 0});
    int inside = 0;
    for (int64_t py = 0; py < image.size(0); ++py)
      for (int64_t px = 0; px < image.size(1); ++px) {
        const Rgb c = pixel(image, px, py);
        if (c == Rgb{255, 255, 255}) continue;
        EXPECT_EQ(c, (Rgb{200, 0, 0}));
        const bool in_box = px >= x && px < x + w && py >= y && py < y + h;
        EXPECT_TRUE(in_box) << "ink at (" << px << ", " << py << ") outside the box at scale " << scale;
        inside += in_box;
      }
    EXPECT_GT(inside, 20 * scale * scale);
  }
}

TEST(PlotText, PrintableGlyphsAreInkedAndDistinct) {
  const int w = text_width("x"), h = text_height();
  std::set<std::vector<uint8_t>> shapes;
  auto blank = white(h, w);
  auto space = blank.clone();
  draw_text(space, " ", 0, 0);
  EXPECT_TRUE(space.equal(blank));
  for (int c = 33; c <= 126; ++c) {
    auto image = blank.clone();
    draw_text(image, std::string(1, static_cast<char>(c)), 0, 0);
    EXPECT_FALSE(image.equal(blank)) << "glyph '" << static_cast<char>(c) << "' draws nothing";
    shapes.insert(std::vector<uint8_t>(image.data_ptr<uint8_t>(), image.data_ptr<uint8_t>() + image.numel()));
  }
  EXPECT_EQ(shapes.size(), 94u) << "two printable characters share a glyph";
}

TEST(PlotText, ClipsAtTheImageEdgeAndWritesInPlace) {
  auto image = white(12, 20);
  auto view = image;  // shares storage
  draw_text(image, "WWWWWW", -4, -3, 2);
  draw_text(image, "8", 17, 8);
  EXPECT_GT(count_color(view, {0, 0, 0}), 0);
  EXPECT_EQ(image.sizes(), (std::vector<int64_t>{12, 20, 3}));
}

TEST(PlotText, RejectsBadImages) {
  auto wrong_dtype = at::zeros({4, 4, 3});
  expect_error([&] { draw_text(wrong_dtype, "a", 0, 0); }, ErrorCode::kInvalidArgument, "uint8 [H, W, 3]");
  auto gray = at::zeros({4, 4}, at::kByte);
  expect_error([&] { draw_text(gray, "a", 0, 0); }, ErrorCode::kInvalidArgument, "got Byte [4, 4]");
  auto ok = white(4, 4);
  expect_error([&] { draw_text(ok, "a", 0, 0, 0); }, ErrorCode::kInvalidArgument, "scale must be >= 1, got 0");
}

// ---- charts ----------------------------------------------------------------------------------

PlotSeries points(std::string label, std::vector<double> x, std::vector<double> y, bool lines, bool markers) {
  PlotSeries s;
  s.label = std::move(label);
  s.x = std::move(x), s.y = std::move(y);
  s.lines = lines, s.markers = markers;
  return s;
}

ChartOptions fixed_ranges(double lo = 0, double hi = 10) {
  ChartOptions o;
  o.title = "Title";
  o.x_label = "x", o.y_label = "y";
  o.x_min = lo, o.x_max = hi, o.y_min = lo, o.y_max = hi;
  return o;
}

TEST(PlotChart, HasTheRequestedSizeAndDtype) {
  ChartOptions o;
  o.width = 640, o.height = 360;
  auto image = render_chart({points("a", {1, 2, 3}, {3, 1, 2}, true, true)}, o);
  EXPECT_EQ(image.sizes(), (std::vector<int64_t>{360, 640, 3}));
  EXPECT_EQ(image.scalar_type(), at::kByte);
  EXPECT_TRUE(image.device().is_cpu());
  EXPECT_EQ(pixel(image, 0, 0), (Rgb{255, 255, 255}));
  EXPECT_EQ(pixel(image, 639, 359), (Rgb{255, 255, 255}));
  auto default_size = render_chart({points("", {1}, {1}, true, true)}, ChartOptions{});
  EXPECT_EQ(default_size.sizes(), (std::vector<int64_t>{500, 800, 3}));
}

TEST(PlotChart, PointsLandWhereTheFrameMapsThem) {
  const std::vector<PlotSeries> series = {points("a", {2, 8}, {8, 2}, false, true)};
  const ChartOptions o = fixed_ranges();
  const ChartFrame f = chart_frame(series, o);
  EXPECT_DOUBLE_EQ(f.to_px(0), f.left);
  EXPECT_DOUBLE_EQ(f.to_px(10), f.left + f.width - 1);
  EXPECT_DOUBLE_EQ(f.to_py(0), f.top + f.height - 1);
  EXPECT_DOUBLE_EQ(f.to_py(10), f.top);
  EXPECT_GT(f.left, 0);
  EXPECT_LT(f.left + f.width, o.width);
  auto image = render_chart(series, o);
  const Rgb color = series_color(0);
  EXPECT_EQ(pixel(image, std::lround(f.to_px(2)), std::lround(f.to_py(8))), color);
  EXPECT_EQ(pixel(image, std::lround(f.to_px(8)), std::lround(f.to_py(2))), color);
  EXPECT_FALSE(color_near(image, color, f.to_px(5), f.to_py(5), 10));  // markers only: nothing between
  // Upper-left point is left of and above the lower-right one.
  EXPECT_LT(f.to_px(2), f.to_px(8));
  EXPECT_LT(f.to_py(8), f.to_py(2));
}

TEST(PlotChart, LogAxisSpacesDecadesEvenly) {
  ChartOptions o = fixed_ranges(1, 1000);
  o.log_x = true;
  const std::vector<PlotSeries> series = {points("a", {100}, {500}, false, true)};
  const ChartFrame f = chart_frame(series, o);
  EXPECT_NEAR(f.to_px(10) - f.to_px(1), f.to_px(1000) - f.to_px(100), 1e-9);
  for (double decade : {1.0, 10.0, 100.0, 1000.0})
    EXPECT_NE(std::find(f.x_ticks.begin(), f.x_ticks.end(), decade), f.x_ticks.end()) << decade;
  auto image = render_chart(series, o);
  EXPECT_EQ(pixel(image, std::lround(f.to_px(100)), std::lround(f.to_py(500))), series_color(0));
}

TEST(PlotChart, LinesConnectPointsWithGapsAtNonFinitePoints) {
  const ChartOptions o = fixed_ranges();
  const std::vector<PlotSeries> joined = {points("a", {0, 10}, {0, 10}, true, false)};
  const ChartFrame f = chart_frame(joined, o);
  auto image = render_chart(joined, o);
  for (double t : {2.5, 5.0, 7.5}) EXPECT_TRUE(color_near(image, series_color(0), f.to_px(t), f.to_py(t))) << t;

  const std::vector<PlotSeries> gap = {points("a", {0, 5, 10}, {0, kNaN, 10}, true, true)};
  auto gapped = render_chart(gap, o);
  EXPECT_FALSE(color_near(gapped, series_color(0), f.to_px(5), f.to_py(5), 3));
  EXPECT_EQ(pixel(gapped, std::lround(f.to_px(0)), std::lround(f.to_py(0))), series_color(0));
}

TEST(PlotChart, LegendShowsEachSeriesInADistinctColour) {
  std::set<Rgb> palette;
  for (size_t k = 0; k < 10; ++k) palette.insert(series_color(k));
  EXPECT_EQ(palette.size(), 10u);
  EXPECT_EQ(series_color(10), series_color(0));
  EXPECT_EQ(palette.count({255, 255, 255}), 0u);

  std::vector<PlotSeries> series = {points("uncached", {1, 2, 3}, {1, 2, 3}, true, true),
                                    points("ToCa", {1, 2, 3}, {2, 3, 1}, true, true),
                                    points("FORA", {1, 2, 3}, {3, 1, 2}, true, true)};
  series[1].point_labels = {"a", "b", "c"};
  ChartOptions o;
  o.title = "FID vs speed";
  const ChartFrame f = chart_frame(series, o);
  auto image = render_chart(series, o);
  for (size_t k = 0; k < series.size(); ++k)  // legend: right of the plot area
    EXPECT_GT(count_color(image, series_color(k), f.left + f.width + 2, 0, o.width, o.height), 10) << k;
  // An unlabelled series has no legend entry.
  series[2].label = "";
  auto unlabelled = render_chart(series, o);
  const ChartFrame g = chart_frame(series, o);
  EXPECT_EQ(count_color(unlabelled, series_color(2), g.left + g.width + 2, 0, o.width, o.height), 0);
}

TEST(PlotChart, AutoRangesCoverTheDataWithNiceTicks) {
  const ChartFrame f = chart_frame({points("a", {0, 100}, {-1, 3}, true, true)}, ChartOptions{});
  EXPECT_LT(f.x_lo, 0);
  EXPECT_GT(f.x_hi, 100);
  EXPECT_LT(f.y_lo, -1);
  EXPECT_GT(f.y_hi, 3);
  for (const auto* ticks : {&f.x_ticks, &f.y_ticks}) {
    ASSERT_GE(ticks->size(), 3u);
    const double step = (*ticks)[1] - (*ticks)[0];
    const double mantissa = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
    EXPECT_TRUE(std::abs(mantissa - 1) < 1e-9 || std::abs(mantissa - 2) < 1e-9 || std::abs(mantissa - 5) < 1e-9)
        << "step " << step;
    for (double t : *ticks) EXPECT_NEAR(std::remainder(t, step), 0.0, 1e-9 * step) << t;
  }
  for (double t : f.x_ticks) EXPECT_TRUE(t >= f.x_lo && t <= f.x_hi);

  // A single point, and all-equal values, get a non-empty range around them.
  const ChartFrame one = chart_frame({points("a", {3}, {7}, true, true)}, ChartOptions{});
  EXPECT_TRUE(one.x_lo < 3 && 3 < one.x_hi && one.y_lo < 7 && 7 < one.y_hi);
  const ChartFrame flat = chart_frame({points("a", {0, 1, 2}, {0, 0, 0}, true, true)}, ChartOptions{});
  EXPECT_TRUE(flat.y_lo < 0 && 0 < flat.y_hi);
  EXPECT_FALSE(flat.y_ticks.empty());
  // Options override the automatic range; NaN and inf points do not widen it.
  ChartOptions o;
  o.y_min = 0;
  const ChartFrame set = chart_frame({points("a", {1, 2, kNaN, 4}, {1, 2, 3, INFINITY}, true, true)}, o);
  EXPECT_EQ(set.y_lo, 0);
  EXPECT_LT(set.y_hi, 3);
  EXPECT_LT(set.x_hi, 4);
  EXPECT_EQ(render_chart({points("a", {1, 2, kNaN, 4}, {1, 2, 3, INFINITY}, true, true)}, o).size(1), 800);
}

TEST(PlotChart, HandlesEdgeCases) {
  struct Case {
    const char* name;
    std::vector<double> x, y;
    bool log_x;
  };
  const Case cases[] = {{"single point", {5}, {5}, false},
                        {"all equal", {1, 1, 1}, {0, 0, 0}, false},
                        {"within a decade", {2, 3, 8}, {1, 2, 3}, true},
                        {"one log point", {100}, {1}, true},
                        {"tiny", {1e-12, 3e-12}, {-2e-9, 1e-9}, false},
                        {"huge", {0, 1e12}, {-1e15, 1e15}, false},
                        {"many decades", {1e-30, 1e30}, {1, 2}, true}};
  for (const Case& c : cases) {
    ChartOptions o;
    o.log_x = c.log_x;
    const std::vector<PlotSeries> series = {points(c.name, c.x, c.y, true, true)};
    const ChartFrame f = chart_frame(series, o);
    EXPECT_GE(f.x_ticks.size(), 2u) << c.name;
    EXPECT_GE(f.y_ticks.size(), 2u) << c.name;
    auto image = render_chart(series, o);
    EXPECT_EQ(image.sizes(), (std::vector<int64_t>{500, 800, 3})) << c.name;
    EXPECT_EQ(pixel(image, std::lround(f.to_px(c.x[0])), std::lround(f.to_py(c.y[0]))), series_color(0)) << c.name;
  }
  // Points far outside a fixed range: lines are clipped to the plot area, markers left out.
  ChartOptions o = fixed_ranges();
  const std::vector<PlotSeries> far = {points("far", {-1e300, 5, 1e300}, {5, 5, -1e300}, true, true)};
  const ChartFrame f = chart_frame(far, o);
  auto image = render_chart(far, o);
  EXPECT_TRUE(color_near(image, series_color(0), f.to_px(2), f.to_py(5)));
  EXPECT_EQ(count_color(image, series_color(0), 0, 0, f.left - 1, o.height), 0);
  EXPECT_EQ(count_color(image, series_color(0), 0, f.top + f.height + 1, o.width, o.height), 0);
}

TEST(PlotChart, RejectsBadInput) {
  const ChartOptions o;
  const auto bad = ErrorCode::kInvalidArgument;
  expect_error([&] { render_chart({}, o); }, bad, "expected at least one series, got none");
  expect_error([&] { render_chart({points("toca", {1, 2, 3}, {1, 2}, true, true)}, o); }, bad,
               "series 'toca' has 3 x values and 2 y values");
  expect_error([&] { render_chart({points("a", {kNaN, 1}, {1, INFINITY}, true, true)}, o); }, bad,
               "none of the 1 series has a finite (x, y) point");
  auto labelled = points("a", {1, 2}, {1, 2}, true, true);
  labelled.point_labels = {"only one"};
  expect_error([&] { render_chart({labelled}, o); }, bad, "series 'a' has 2 points but 1 point labels");
  ChartOptions log = o;
  log.log_x = true;
  expect_error([&] { render_chart({points("a", {0, 1}, {1, 2}, true, true)}, log); }, bad,
               "series 'a' has x = 0 at point 0, but a log x axis needs x > 0");
  ChartOptions inverted = o;
  inverted.x_min = 5, inverted.x_max = 1;
  expect_error([&] { render_chart({points("a", {1, 2}, {1, 2}, true, true)}, inverted); }, bad,
               "the x axis range is empty");
  ChartOptions tiny = o;
  tiny.width = 60, tiny.height = 40;
  expect_error([&] { render_chart({points("a", {1, 2}, {1, 2}, true, true)}, tiny); }, bad, "plot area");
}

// ---- heat maps -------------------------------------------------------------------------------

TEST(PlotHeatmap, CellColoursFollowTheColourMap) {
  for (double t = 0; t < 1; t += 0.01) EXPECT_LT(luminance(colormap(t)), luminance(colormap(t + 0.01))) << t;
  EXPECT_EQ(colormap(-1), colormap(0));
  EXPECT_EQ(colormap(2), colormap(1));

  HeatmapOptions o;
  o.cell_width = 10, o.cell_height = 10;
  o.title = "ramp";
  auto image = render_heatmap(at::arange(10, at::kLong).reshape({1, 10}), o);  // an integer dtype
  EXPECT_EQ(image.scalar_type(), at::kByte);
  EXPECT_EQ(image.dim(), 3);
  EXPECT_NE(colormap(0), colormap(1));
  // Cell k has colour colormap(k / 9), and cells lie left to right: the first column holding each
  // colour (the colour bar lies right of the cells) increases with k.
  int64_t previous = -1;
  for (int k = 0; k < 10; ++k) {
    const Rgb color = colormap(k / 9.0);
    int64_t first = -1;
    for (int64_t x = 0; x < image.size(1) && first < 0; ++x)
      for (int64_t y = 0; y < image.size(0) && first < 0; ++y)
        if (pixel(image, x, y) == color) first = x;
    ASSERT_GE(first, 0) << "no cell of colour " << k;
    EXPECT_EQ(count_color(image, color, first, 0, first + 10, image.size(0)), 100) << "cell " << k;
    EXPECT_EQ(first - previous, previous < 0 ? first + 1 : 10) << "cell " << k;
    previous = first;
  }
}

TEST(PlotHeatmap, LayoutGrowsWithCellsAndLabels) {
  HeatmapOptions o;
  auto values = at::rand({56, 256});
  auto plain = render_heatmap(values, o);
  EXPECT_GE(plain.size(1), 256 * 2);
  EXPECT_GE(plain.size(0), 56 * 8);
  o.cell_width = 3;
  o.row_labels.assign(56, "block 27 mlp");
  auto wide = render_heatmap(values, o);
  EXPECT_EQ(wide.size(1) - plain.size(1), 256 + text_width("block 27 mlp") - text_width("50"));
  // A fixed range: a value at its middle gets the middle colour.
  o.v_min = 0, o.v_max = 100;
  o.row_labels.clear();
  auto mid = render_heatmap(at::full({1, 1}, 50.0), o);
  EXPECT_GE(count_color(mid, colormap(0.5)), 3 * 8);
}

TEST(PlotHeatmap, RejectsBadInput) {
  const HeatmapOptions o;
  const auto bad = ErrorCode::kInvalidArgument;
  expect_error([&] { render_heatmap(at::zeros({3}), o); }, bad, "heat map values must be 2-d, got [3]");
  expect_error([&] { render_heatmap(at::zeros({0, 4}), o); }, bad, "must not be empty, got [0, 4]");
  expect_error([&] { render_heatmap(at::zeros({2, 2}, at::kComplexFloat), o); }, bad, "must be real");
  HeatmapOptions labels = o;
  labels.row_labels = {"a", "b", "c"};
  expect_error([&] { render_heatmap(at::zeros({2, 4}), labels); }, bad, "heat map has 2 rows but 3 row labels");
  HeatmapOptions cells = o;
  cells.cell_width = 0;
  expect_error([&] { render_heatmap(at::zeros({2, 4}), cells); }, bad, "cell size must be >= 1x1 pixels, got 0x8");
  expect_error([&] { render_heatmap(at::full({2, 2}, kNaN), o); }, bad, "no finite value");
  HeatmapOptions range = o;
  range.v_min = 2, range.v_max = 1;
  expect_error([&] { render_heatmap(at::zeros({2, 2}), range); }, bad, "v_min 2 > v_max 1");
}

// ---- side by side ----------------------------------------------------------------------------

TEST(PlotSideBySide, SizesAndPlacesImages) {
  auto red = at::zeros({32, 32, 3}, at::kByte);
  red.select(2, 0).fill_(255);
  auto blue = at::zeros({10, 20, 3}, at::kByte);
  blue.select(2, 2).fill_(255);
  const int pad = 8, scale = 2, caption_room = text_height() + 4;
  auto strip = side_by_side({red, blue}, {"uncached", "ToCa"}, pad, scale);
  EXPECT_EQ(strip.sizes(), (std::vector<int64_t>{2 * pad + caption_room + 64, pad + 64 + pad + 40 + pad, 3}));
  const int y0 = pad + caption_room;
  EXPECT_EQ(pixel(strip, pad, y0), (Rgb{255, 0, 0}));
  EXPECT_EQ(pixel(strip, pad + 63, y0 + 63), (Rgb{255, 0, 0}));
  EXPECT_EQ(pixel(strip, pad + 64 + pad, y0), (Rgb{0, 0, 255}));
  EXPECT_EQ(pixel(strip, pad + 64 + pad + 39, y0 + 19), (Rgb{0, 0, 255}));
  EXPECT_EQ(pixel(strip, pad + 64 + pad, y0 + 20), (Rgb{255, 255, 255}));  // top-aligned
  EXPECT_GT(count_color(strip, {0, 0, 0}, 0, 0, strip.size(1), y0), 20);   // captions
  EXPECT_EQ(count_color(strip, {0, 0, 0}, 0, y0, strip.size(1), strip.size(0)), 0);

  // No captions: no caption row; a long caption widens its slot.
  EXPECT_EQ(side_by_side({red, blue}, {}, 4, 1).sizes(), (std::vector<int64_t>{4 + 32 + 4, 4 + 32 + 4 + 20 + 4, 3}));
  EXPECT_EQ(side_by_side({red}, {""}, 0, 1).sizes(), (std::vector<int64_t>{32, 32, 3}));
  const std::string long_caption = "a caption wider than the image";
  EXPECT_EQ(side_by_side({blue}, {long_caption}, 2, 1).size(1), 2 + text_width(long_caption) + 2);
}

TEST(PlotSideBySide, RejectsBadInput) {
  const auto bad = ErrorCode::kInvalidArgument;
  auto ok = at::zeros({4, 4, 3}, at::kByte);
  expect_error([&] { side_by_side({}, {}); }, bad, "expected at least one image, got none");
  expect_error([&] { side_by_side({ok, ok}, {"one"}); }, bad, "has 2 images but 1 captions");
  expect_error([&] { side_by_side({ok, at::zeros({4, 4, 3})}, {}); }, bad, "image 1 must be a non-empty uint8 [H, W, 3]");
  expect_error([&] { side_by_side({ok}, {}, 8, 0); }, bad, "scale must be 1..64, got 0");
  expect_error([&] { side_by_side({ok}, {}, -1); }, bad, "padding must be 0..1024, got -1");
}

// ---- demo images -----------------------------------------------------------------------------

// Renders sample images for a visual check when DITCACHE_PLOT_DEMO_DIR names a folder.
TEST(PlotDemo, WritesSampleImages) {
  const char* dir = std::getenv("DITCACHE_PLOT_DEMO_DIR");
  if (dir == nullptr) GTEST_SKIP() << "set DITCACHE_PLOT_DEMO_DIR to write plot_demo_*.png there";
  const std::string out = dir;
  std::vector<PlotSeries> series = {
      points("uncached (DDIM 250)", {1.0, 1.0}, {2.27, 2.27}, false, true),
      points("ToCa N=3 R=90%", {1.6, 2.1, 2.4, 2.9}, {2.35, 2.58, 3.04, 4.1}, true, true),
      points("FORA", {1.5, 2.0, 2.5, 3.0}, {2.8, 3.6, 5.2, 8.7}, true, true)};
  series[1].point_labels = {"N=2", "N=3", "N=4", "N=5"};
  ChartOptions co;
  co.title = "FID-5k vs speed-up (DiT-XL/2, 256px)";
  co.x_label = "speed-up (x), latency 0.25 s -> 0.09 s";
  co.y_label = "FID-5k: lower is better";
  write_png(out + "/plot_demo_chart.png", render_chart(series, co));
  ChartOptions lg = co;
  lg.log_x = true;
  lg.title = "log x: abcdefghijklm nopqrstuvwxyz ABCDEFGHIJKLM NOPQRSTUVWXYZ";
  lg.x_label = "0123456789 !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
  write_png(out + "/plot_demo_chart_log.png",
            render_chart({points("flops", {1e-3, 0.1, 10, 1e3, 1e5}, {1, 3, 2, 5, 4}, true, true)}, lg));

  at::manual_seed(0);
  auto values = at::rand({56, 256}).cumsum(1) / 256;
  HeatmapOptions ho;
  ho.title = "cache reuse per layer and token";
  ho.x_label = "token index";
  ho.y_label = "layer";
  ho.colorbar_label = "reuse rate";
  for (int r = 0; r < 56; ++r) ho.row_labels.push_back("b" + std::to_string(r / 2) + (r % 2 ? " mlp" : " attn"));
  write_png(out + "/plot_demo_heatmap.png", render_heatmap(values, ho));

  auto a = (at::rand({32, 32, 3}) * 255).to(at::kByte), b = (at::rand({32, 32, 3}) * 255).to(at::kByte);
  write_png(out + "/plot_demo_side_by_side.png", side_by_side({a, b}, {"uncached", "ToCa"}, 8, 4));

  ChartOptions small;
  small.width = 360, small.height = 240;
  ChartOptions small_log = small;
  small_log.log_x = true;
  ChartOptions clipped = small;
  clipped.x_min = 0, clipped.x_max = 10, clipped.y_min = 0, clipped.y_max = 10;
  write_png(out + "/plot_demo_edge_cases.png",
            side_by_side({render_chart({points("one", {5}, {5}, true, true)}, small),
                          render_chart({points("decade", {2, 3, 8}, {1, 2, 3}, true, true)}, small_log),
                          render_chart({points("", {0, 1e12}, {-1e15, 1e15}, true, true)}, small),
                          render_chart({points("far", {-1e300, 5, 1e300}, {5, 5, -1e300}, true, true)}, clipped)},
                         {"single point", "log x within a decade", "huge values", "clipped lines"}));
}

}  // namespace
}  // namespace ditcache
