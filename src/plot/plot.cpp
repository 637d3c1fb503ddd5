#include "ditcache/plot.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/error.h"
#include "plot/font.h"

namespace ditcache {
namespace {

constexpr Rgb kWhite{255, 255, 255};
constexpr Rgb kBlack{0, 0, 0};
constexpr Rgb kGrid{228, 228, 228};
constexpr Rgb kFrame{60, 60, 60};
constexpr Rgb kLegendBorder{190, 190, 190};
constexpr Rgb kNanCell{160, 160, 160};
constexpr int kPad = 10;           // margin around everything
constexpr int kTick = 5;           // tick mark length
constexpr int kMaxSide = 16384;    // largest image side we agree to allocate
constexpr int kLegendSwatch = 20;  // legend line sample length
constexpr int kLegendRow = 16;     // legend entry pitch

[[noreturn]] void fail(const std::string& message) { throw Error(ErrorCode::kInvalidArgument, message); }

std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

std::string describe(const at::Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  return std::string(c10::toString(t.scalar_type())) + " " + shape_of(t);
}

/// A W x H RGB pixel buffer with a clip rectangle; writes outside it are dropped.
struct Canvas {
  int width, height;
  std::vector<uint8_t> px;
  int clip_x0 = 0, clip_y0 = 0, clip_x1 = 0, clip_y1 = 0;  // [x0, x1) x [y0, y1)

  Canvas(int w, int h, Rgb background = kWhite) : width(w), height(h), px(static_cast<size_t>(w) * h * 3) {
    for (size_t i = 0; i < px.size(); i += 3) std::memcpy(&px[i], background.data(), 3);
    reset_clip();
  }
  void clip(int x, int y, int w, int h) {
    clip_x0 = std::max(x, 0), clip_y0 = std::max(y, 0);
    clip_x1 = std::min(x + w, width), clip_y1 = std::min(y + h, height);
  }
  void reset_clip() { clip(0, 0, width, height); }
  void set(int x, int y, Rgb c) {
    if (x < clip_x0 || y < clip_y0 || x >= clip_x1 || y >= clip_y1) return;
    std::memcpy(&px[(static_cast<size_t>(y) * width + x) * 3], c.data(), 3);
  }
  void fill(int x, int y, int w, int h, Rgb c) {
    for (int yy = std::max(y, clip_y0); yy < std::min(y + h, clip_y1); ++yy)
      for (int xx = std::max(x, clip_x0); xx < std::min(x + w, clip_x1); ++xx) set(xx, yy, c);
  }
  void hline(int x0, int x1, int y, Rgb c) { fill(x0, y, x1 - x0 + 1, 1, c); }
  void vline(int x, int y0, int y1, Rgb c) { fill(x, y0, 1, y1 - y0 + 1, c); }
  void outline(int x, int y, int w, int h, Rgb c) {
    hline(x, x + w - 1, y, c), hline(x, x + w - 1, y + h - 1, c);
    vline(x, y, y + h - 1, c), vline(x + w - 1, y, y + h - 1, c);
  }
  at::Tensor to_tensor() const {
    auto t = at::empty({height, width, 3}, at::kByte);
    std::memcpy(t.data_ptr<uint8_t>(), px.data(), px.size());
    return t;
  }
};

/// Calls ink(u, v) for every ink pixel of `text` at `scale`, in text coordinates (u right, v down).
template <class Ink>
void for_each_ink(const std::string& text, int scale, Ink&& ink) {
  for (size_t i = 0; i < text.size(); ++i) {
    const char* const* g = plot_font::glyph(text[i]);
    const int u0 = static_cast<int>(i) * plot_font::kAdvance * scale;
    for (int gy = 0; gy < plot_font::kGlyphHeight; ++gy)
      for (int gx = 0; gx < plot_font::kGlyphWidth; ++gx) {
        if (g[gy][gx] != '#') continue;
        for (int sy = 0; sy < scale; ++sy)
          for (int sx = 0; sx < scale; ++sx) ink(u0 + gx * scale + sx, gy * scale + sy);
      }
  }
}

/// Text with its top-left at (x, y); `vertical` turns it 90 degrees counter-clockwise (reading
/// upwards), occupying text_height x text_width pixels from (x, y).
void text(Canvas& c, const std::string& s, int x, int y, Rgb color, int scale = 1, bool vertical = false) {
  const int w = text_width(s, scale);
  for_each_ink(s, scale, [&](int u, int v) {
    if (vertical) c.set(x + v, y + w - 1 - u, color);
    else c.set(x + u, y + v, color);
  });
}

/// Text over a 1-pixel white outline, legible on top of lines and grid.
void text_with_halo(Canvas& c, const std::string& s, int x, int y, Rgb color) {
  for (int dy = -1; dy <= 1; ++dy)
    for (int dx = -1; dx <= 1; ++dx)
      if (dx || dy) text(c, s, x + dx, y + dy, kWhite);
  text(c, s, x, y, color);
}

/// Left edge that centres a `w`-wide item on `centre`, kept inside [0, limit) when it fits.
int centred(double centre, int w, int limit) {
  const int x = static_cast<int>(std::lround(centre - w / 2.0));
  return std::clamp(x, 0, std::max(0, limit - w));
}

/// Thin (2 px) Bresenham line between pixel centres.
void line(Canvas& c, int x0, int y0, int x1, int y1, Rgb color) {
  const int dx = std::abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
  const int dy = -std::abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
  int err = dx + dy;
  while (true) {
    c.fill(x0, y0, 2, 2, color);
    if (x0 == x1 && y0 == y1) break;
    const int e2 = 2 * err;
    if (e2 >= dy) err += dy, x0 += sx;
    if (e2 <= dx) err += dx, y0 += sy;
  }
}

/// Clips the segment to [x0, x1] x [y0, y1]; false when nothing is left. Each cut moves the outside
/// end onto an edge along the line through the inside end, so far-away ends (1e300 pixels) stay exact.
bool clip_segment(double& ax, double& ay, double& bx, double& by, double x0, double y0, double x1, double y1) {
  for (int edge = 0; edge < 4; ++edge) {
    auto out = [&](double x, double y) { return edge == 0 ? x < x0 : edge == 1 ? x > x1 : edge == 2 ? y < y0 : y > y1; };
    const bool a_out = out(ax, ay), b_out = out(bx, by);
    if (a_out && b_out) return false;
    if (!a_out && !b_out) continue;
    double &ox = a_out ? ax : bx, &oy = a_out ? ay : by;
    const double ix = a_out ? bx : ax, iy = a_out ? by : ay;
    if (edge < 2) {
      const double e = edge == 0 ? x0 : x1;
      oy = iy + (e - ix) * ((oy - iy) / (ox - ix));
      ox = e;
    } else {
      const double e = edge == 2 ? y0 : y1;
      ox = ix + (e - iy) * ((ox - ix) / (oy - iy));
      oy = e;
    }
  }
  return true;
}

void marker(Canvas& c, int x, int y, bool square, Rgb color) {
  for (int dy = -3; dy <= 3; ++dy)
    for (int dx = -3; dx <= 3; ++dx)
      if (square || dx * dx + dy * dy <= 10) c.set(x + dx, y + dy, color);
}

Rgb darker(Rgb c) {
  return {static_cast<uint8_t>(c[0] * 0.6), static_cast<uint8_t>(c[1] * 0.6), static_cast<uint8_t>(c[2] * 0.6)};
}

/// Compact number text: "{:.<digits>g}" with the exponent trimmed (1e+06 -> 1e6, 2.5e-05 -> 2.5e-5).
std::string number(double v, int digits = 6) {
  if (v == 0) v = 0;  // no "-0"
  std::string s = fmt::format("{:.{}g}", v, digits);
  const size_t e = s.find('e');
  if (e == std::string::npos) return s;
  std::string exponent = s.substr(e + 1);
  const bool negative = !exponent.empty() && exponent[0] == '-';
  if (!exponent.empty() && (exponent[0] == '-' || exponent[0] == '+')) exponent.erase(0, 1);
  exponent.erase(0, std::min(exponent.find_first_not_of('0'), exponent.size() - 1));
  return s.substr(0, e) + (negative ? "e-" : "e") + exponent;
}

/// The smallest of 1, 2, 5 x 10^k that is >= raw (raw > 0).
double nice_step(double raw) {
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f <= 1 + 1e-9 ? 1 : f <= 2 + 1e-9 ? 2 : f <= 5 + 1e-9 ? 5 : 10) * mag;
}

std::vector<double> linear_ticks(double lo, double hi, int target) {
  const double step = nice_step((hi - lo) / std::max(target, 1));
  const double i0 = std::ceil(lo / step - 1e-9), i1 = std::floor(hi / step + 1e-9);
  std::vector<double> ticks;
  for (double i = i0; i <= i1 && ticks.size() < 1000; ++i) ticks.push_back(i == 0 ? 0.0 : i * step);
  return ticks;
}

/// Log-axis ticks over values [lo, hi]: 1-2-5 multiples when few, else every k-th decade, else
/// (less than a decade) linear ones.
std::vector<double> log_ticks(double lo, double hi, int target) {
  const double l0 = std::log10(lo), l1 = std::log10(hi);
  const int d0 = static_cast<int>(std::ceil(l0 - 1e-9)), d1 = static_cast<int>(std::floor(l1 + 1e-9));
  std::vector<double> m125;
  for (int d = static_cast<int>(std::floor(l0)); d <= static_cast<int>(std::ceil(l1)) && m125.size() <= 64; ++d)
    for (double m : {1.0, 2.0, 5.0}) {
      const double v = m * std::pow(10.0, d);
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) m125.push_back(v);
    }
  if (m125.size() >= 2 && static_cast<int>(m125.size()) <= target) return m125;
  const int decades = d1 - d0 + 1;
  if (decades >= 2) {
    const int k = std::max(1, (decades + target - 1) / std::max(target, 1));
    std::vector<double> ticks;
    for (int d = d0; d <= d1; d += k) ticks.push_back(std::pow(10.0, d));
    return ticks;
  }
  return linear_ticks(lo, hi, target);
}

/// Position in pixels (0 .. pixels - 1) of value v on an axis over [lo, hi].
double axis_pos(double v, double lo, double hi, bool log, int pixels) {
  const double t = log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) : (v - lo) / (hi - lo);
  return t * (pixels - 1);
}

/// The densest tick set (about one per `spacing` pixels or fewer) whose labels, of size
/// extent(label) along the axis, keep 8 pixels apart.
template <class Extent>
std::vector<double> choose_ticks(double lo, double hi, bool log, int pixels, int spacing, Extent&& extent) {
  std::vector<double> ticks;
  for (int target = std::max(2, pixels / spacing); target >= 1; --target) {
    ticks = log ? log_ticks(lo, hi, target) : linear_ticks(lo, hi, target);
    bool fits = true;
    for (size_t i = 1; i < ticks.size() && fits; ++i) {
      const double gap = axis_pos(ticks[i], lo, hi, log, pixels) - axis_pos(ticks[i - 1], lo, hi, log, pixels);
      fits = gap >= (extent(number(ticks[i - 1])) + extent(number(ticks[i]))) / 2.0 + 8;
    }
    if (fits) return ticks;
  }
  return ticks;
}

/// Data range [lo, hi] (in axis units: log10 on a log axis) widened by 5% each side; an empty
/// span is widened to +-10% of the value (+-1 around 0; +-0.5 decade on a log axis).
std::pair<double, double> auto_range(double lo, double hi, bool log) {
  if (hi > lo) {
    const double margin = 0.05 * (hi - lo);
    return {lo - margin, hi + margin};
  }
  const double half = log ? 0.5 : (lo != 0 ? std::abs(lo) * 0.1 : 1.0);
  return {lo - half, hi + half};
}

/// One axis's range in data units: the option where set, else the padded data extent.
std::pair<double, double> axis_range(char axis, double data_lo, double data_hi, const std::optional<double>& opt_lo,
                                     const std::optional<double>& opt_hi, bool log) {
  for (const auto& [name, opt] : {std::pair{"min", &opt_lo}, std::pair{"max", &opt_hi}}) {
    if (!*opt) continue;
    if (!std::isfinite(**opt)) fail(fmt::format("render_chart: {}_{} must be finite, got {}", axis, name, **opt));
    if (log && **opt <= 0)
      fail(fmt::format("render_chart: {}_{} must be > 0 on a log {} axis, got {}", axis, name, axis, **opt));
  }
  auto fwd = [&](double v) { return log ? std::log10(v) : v; };
  auto inv = [&](double t) { return log ? std::pow(10.0, t) : t; };
  const auto [a0, a1] = auto_range(fwd(data_lo), fwd(data_hi), log);
  const double lo = opt_lo ? *opt_lo : inv(a0), hi = opt_hi ? *opt_hi : inv(a1);
  if (!(lo < hi) || !std::isfinite(hi - lo))
    fail(fmt::format("render_chart: the {} axis range is empty or not finite: from {} to {} ({}_min must be < {}_max)",
                     axis, lo, hi, axis, axis));
  return {lo, hi};
}

/// Legend entries (series index, label) of the labelled series, labels cut to fit a third of the image.
std::vector<std::pair<size_t, std::string>> legend_entries(const std::vector<PlotSeries>& series, int image_width) {
  const size_t max_chars = static_cast<size_t>(std::max(4, (image_width / 3 - 38) / plot_font::kAdvance));
  std::vector<std::pair<size_t, std::string>> entries;
  for (size_t k = 0; k < series.size(); ++k) {
    if (series[k].label.empty()) continue;
    std::string label = series[k].label;
    if (label.size() > max_chars) label = label.substr(0, max_chars - 2) + "..";
    entries.emplace_back(k, label);
  }
  return entries;
}

int legend_width(const std::vector<std::pair<size_t, std::string>>& entries) {
  int w = 0;
  for (const auto& e : entries) w = std::max(w, text_width(e.second));
  return entries.empty() ? 0 : 6 + kLegendSwatch + 6 + w + 6;
}

}  // namespace

int text_width(const std::string& text, int scale) {
  if (text.empty()) return 0;
  return (static_cast<int>(text.size()) * plot_font::kAdvance - 1) * scale;
}

int text_height(int scale) { return plot_font::kGlyphHeight * scale; }

void draw_text(at::Tensor& image, const std::string& text, int x, int y, int scale, Rgb color) {
  if (!image.defined() || image.dim() != 3 || image.size(2) != 3 || image.scalar_type() != at::kByte)
    fail("draw_text: image must be a uint8 [H, W, 3] tensor, got " + describe(image));
  if (!image.device().is_cpu()) fail("draw_text: image must be on the CPU, got " + image.device().str());
  if (scale < 1) fail(fmt::format("draw_text: scale must be >= 1, got {}", scale));
  auto a = image.accessor<uint8_t, 3>();
  const int64_t h = image.size(0), w = image.size(1);
  for_each_ink(text, scale, [&](int u, int v) {
    const int64_t px = static_cast<int64_t>(x) + u, py = static_cast<int64_t>(y) + v;
    if (px < 0 || py < 0 || px >= w || py >= h) return;
    for (int ch = 0; ch < 3; ++ch) a[py][px][ch] = color[ch];
  });
}

Rgb series_color(size_t index) {
  static constexpr Rgb kPalette[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},
                                     {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127},
                                     {188, 189, 34}, {23, 190, 207}};
  return kPalette[index % 10];
}

Rgb colormap(double t) {
  // Samples of matplotlib's viridis at 0, 0.1, ..., 1.
  static constexpr Rgb kAnchors[] = {{68, 1, 84},    {72, 36, 117},  {65, 68, 135},  {53, 95, 141},
                                     {42, 120, 142}, {33, 145, 140}, {34, 168, 132}, {68, 191, 112},
                                     {122, 209, 81}, {189, 223, 38}, {253, 231, 37}};
  constexpr int n = sizeof(kAnchors) / sizeof(kAnchors[0]);
  if (std::isnan(t)) t = 0;
  const double s = std::clamp(t, 0.0, 1.0) * (n - 1);
  const int i = std::min(static_cast<int>(s), n - 2);
  const double f = s - i;
  Rgb c;
  for (int ch = 0; ch < 3; ++ch)
    c[ch] = static_cast<uint8_t>(std::lround(kAnchors[i][ch] + f * (kAnchors[i + 1][ch] - kAnchors[i][ch])));
  return c;
}

double ChartFrame::to_px(double x) const { return left + axis_pos(x, x_lo, x_hi, log_x, width); }

double ChartFrame::to_py(double y) const { return top + height - 1 - axis_pos(y, y_lo, y_hi, false, height); }

ChartFrame chart_frame(const std::vector<PlotSeries>& series, const ChartOptions& o) {
  if (series.empty()) fail("render_chart: expected at least one series, got none");
  if (o.width < 1 || o.height < 1 || o.width > kMaxSide || o.height > kMaxSide)
    fail(fmt::format("render_chart: image size must be 1..{} pixels a side, got {}x{}", kMaxSide, o.width, o.height));
  constexpr double kInf = std::numeric_limits<double>::infinity();
  double x0 = kInf, x1 = -kInf, y0 = kInf, y1 = -kInf;
  size_t finite = 0;
  for (const auto& s : series) {
    if (s.x.size() != s.y.size())
      fail(fmt::format("series '{}' has {} x values and {} y values", s.label, s.x.size(), s.y.size()));
    if (!s.point_labels.empty() && s.point_labels.size() != s.x.size())
      fail(fmt::format("series '{}' has {} points but {} point labels (expected none or one per point)", s.label,
                       s.x.size(), s.point_labels.size()));
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      if (o.log_x && s.x[i] <= 0)
        fail(fmt::format("series '{}' has x = {} at point {}, but a log x axis needs x > 0", s.label, s.x[i], i));
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]), y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
      ++finite;
    }
  }
  if (finite == 0) fail(fmt::format("render_chart: none of the {} series has a finite (x, y) point", series.size()));

  ChartFrame f;
  f.log_x = o.log_x;
  std::tie(f.x_lo, f.x_hi) = axis_range('x', x0, x1, o.x_min, o.x_max, o.log_x);
  std::tie(f.y_lo, f.y_hi) = axis_range('y', y0, y1, o.y_min, o.y_max, false);

  const int th = text_height(1);
  f.top = kPad + (o.title.empty() ? 0 : text_height(2) + 8);
  const int bottom = 1 + kTick + 3 + th + (o.x_label.empty() ? 0 : 6 + th) + kPad;
  f.height = o.height - f.top - bottom;
  if (f.height >= 40) {
    f.y_ticks = choose_ticks(f.y_lo, f.y_hi, false, f.height, 45, [&](const std::string&) { return th; });
  }
  int tick_w = 0;
  for (double t : f.y_ticks) tick_w = std::max(tick_w, text_width(number(t)));
  f.left = kPad + (o.y_label.empty() ? 0 : th + 6) + tick_w + 3 + kTick + 1;
  const int legend_w = legend_width(legend_entries(series, o.width));
  const int right = legend_w ? 1 + 12 + legend_w + kPad : 24;
  f.width = o.width - f.left - right;
  if (f.width < 40 || f.height < 40)
    fail(fmt::format("render_chart: a {}x{} image leaves a {}x{} plot area; at least 40x40 is needed", o.width,
                     o.height, std::max(f.width, 0), std::max(f.height, 0)));
  f.x_ticks = choose_ticks(f.x_lo, f.x_hi, o.log_x, f.width, 80, [](const std::string& s) { return text_width(s); });
  return f;
}

at::Tensor render_chart(const std::vector<PlotSeries>& series, const ChartOptions& o) {
  const ChartFrame f = chart_frame(series, o);
  Canvas c(o.width, o.height);
  const int th = text_height(1);
  const int x_end = f.left + f.width, y_end = f.top + f.height;  // exclusive
  auto finite = [](const PlotSeries& s, size_t i) { return std::isfinite(s.x[i]) && std::isfinite(s.y[i]); };

  for (double t : f.x_ticks) c.vline(static_cast<int>(std::lround(f.to_px(t))), f.top, y_end - 1, kGrid);
  for (double t : f.y_ticks) c.hline(f.left, x_end - 1, static_cast<int>(std::lround(f.to_py(t))), kGrid);

  // Data, clipped to the plot area: all lines, then all markers over them.
  c.clip(f.left, f.top, f.width, f.height);
  for (size_t k = 0; k < series.size(); ++k) {
    const PlotSeries& s = series[k];
    if (!s.lines) continue;
    bool have = false;
    double px0 = 0, py0 = 0;
    for (size_t i = 0; i < s.x.size(); ++i) {
      const double px = finite(s, i) ? f.to_px(s.x[i]) : NAN, py = finite(s, i) ? f.to_py(s.y[i]) : NAN;
      if (!std::isfinite(px) || !std::isfinite(py)) {  // a gap at skipped points (and beyond 1e308 pixels)
        have = false;
        continue;
      }
      double ax = px0, ay = py0, bx = px, by = py;
      if (have && clip_segment(ax, ay, bx, by, f.left - 2.0, f.top - 2.0, x_end + 1.0, y_end + 1.0)) {
        line(c, static_cast<int>(std::lround(ax)), static_cast<int>(std::lround(ay)),
             static_cast<int>(std::lround(bx)), static_cast<int>(std::lround(by)), series_color(k));
      }
      px0 = px, py0 = py, have = true;
    }
  }
  auto inside = [&](double px, double py, double margin) {
    return px >= f.left - margin && px <= x_end - 1 + margin && py >= f.top - margin && py <= y_end - 1 + margin;
  };
  for (size_t k = 0; k < series.size(); ++k) {
    const PlotSeries& s = series[k];
    if (!s.markers) continue;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!finite(s, i)) continue;
      const double px = f.to_px(s.x[i]), py = f.to_py(s.y[i]);
      if (inside(px, py, 4))
        marker(c, static_cast<int>(std::lround(px)), static_cast<int>(std::lround(py)), k % 2 == 1, series_color(k));
    }
  }
  c.reset_clip();
  for (size_t k = 0; k < series.size(); ++k) {
    const PlotSeries& s = series[k];
    for (size_t i = 0; i < s.point_labels.size(); ++i) {
      if (!finite(s, i) || s.point_labels[i].empty()) continue;
      const double px = f.to_px(s.x[i]), py = f.to_py(s.y[i]);
      if (inside(px, py, 0))
        text_with_halo(c, s.point_labels[i], static_cast<int>(std::lround(px)) + 6,
                       static_cast<int>(std::lround(py)) - th - 1, darker(series_color(k)));
    }
  }

  // Frame, ticks and their labels.
  c.outline(f.left - 1, f.top - 1, f.width + 2, f.height + 2, kFrame);
  for (double t : f.x_ticks) {
    const int px = static_cast<int>(std::lround(f.to_px(t)));
    c.vline(px, y_end + 1, y_end + kTick, kFrame);
    const std::string label = number(t);
    text(c, label, centred(px, text_width(label), o.width), y_end + kTick + 3, kBlack);
  }
  for (double t : f.y_ticks) {
    const int py = static_cast<int>(std::lround(f.to_py(t)));
    c.hline(f.left - 1 - kTick, f.left - 2, py, kFrame);
    const std::string label = number(t);
    text(c, label, f.left - 1 - kTick - 3 - text_width(label), py - 3, kBlack);
  }

  // Axis labels and title.
  if (!o.x_label.empty())
    text(c, o.x_label, centred(f.left + f.width / 2.0, text_width(o.x_label), o.width), y_end + kTick + 3 + th + 6,
         kBlack);
  if (!o.y_label.empty())
    text(c, o.y_label, kPad, centred(f.top + f.height / 2.0, text_width(o.y_label), o.height), kBlack, 1, true);
  if (!o.title.empty()) {
    const int scale = text_width(o.title, 2) <= o.width - 2 * kPad ? 2 : 1;
    text(c, o.title, centred(f.left + f.width / 2.0, text_width(o.title, scale), o.width), kPad, kBlack, scale);
  }

  // Legend, right of the plot area.
  const auto entries = legend_entries(series, o.width);
  if (!entries.empty()) {
    const int lx = x_end + 1 + 12, ly = f.top;
    c.fill(lx, ly, legend_width(entries), static_cast<int>(entries.size()) * kLegendRow + 5, kWhite);
    c.outline(lx, ly, legend_width(entries), static_cast<int>(entries.size()) * kLegendRow + 5, kLegendBorder);
    for (size_t e = 0; e < entries.size(); ++e) {
      const auto& [k, label] = entries[e];
      const int ey = ly + 6 + static_cast<int>(e) * kLegendRow;
      const Rgb color = series_color(k);
      if (series[k].lines || !series[k].markers) c.fill(lx + 6, ey + 3, kLegendSwatch, 2, color);
      if (series[k].markers) marker(c, lx + 6 + kLegendSwatch / 2, ey + 3, k % 2 == 1, color);
      text(c, label, lx + 6 + kLegendSwatch + 6, ey, kBlack);
    }
  }
  return c.to_tensor();
}

at::Tensor render_heatmap(const at::Tensor& values, const HeatmapOptions& o) {
  if (!values.defined() || values.dim() != 2) fail("heat map values must be 2-d, got " + (values.defined() ? shape_of(values) : describe(values)));
  if (at::isComplexType(values.scalar_type()))
    fail(std::string("heat map values must be real, got ") + c10::toString(values.scalar_type()));
  const int64_t rows = values.size(0), cols = values.size(1);
  if (rows == 0 || cols == 0) fail("heat map values must not be empty, got " + shape_of(values));
  if (!o.row_labels.empty() && static_cast<int64_t>(o.row_labels.size()) != rows)
    fail(fmt::format("heat map has {} rows but {} row labels (expected none or one per row)", rows, o.row_labels.size()));
  if (o.cell_width < 1 || o.cell_height < 1)
    fail(fmt::format("heat map cell size must be >= 1x1 pixels, got {}x{}", o.cell_width, o.cell_height));
  if (rows * o.cell_height > kMaxSide || cols * o.cell_width > kMaxSide)
    fail(fmt::format("heat map of {}x{} values at {}x{} pixels per cell exceeds {} pixels a side", rows, cols,
                     o.cell_width, o.cell_height, kMaxSide));

  const auto v = values.detach().to(at::kCPU).to(at::kDouble).contiguous();
  const double* data = v.data_ptr<double>();
  constexpr double kInf = std::numeric_limits<double>::infinity();
  double lo = kInf, hi = -kInf;
  for (int64_t i = 0; i < rows * cols; ++i)
    if (std::isfinite(data[i])) lo = std::min(lo, data[i]), hi = std::max(hi, data[i]);
  for (const auto& [name, opt] : {std::pair{"v_min", &o.v_min}, std::pair{"v_max", &o.v_max}})
    if (*opt && !std::isfinite(**opt)) fail(fmt::format("heat map {} must be finite, got {}", name, **opt));
  if (lo > hi && !(o.v_min && o.v_max))
    fail(fmt::format("heat map values {} have no finite value; set v_min and v_max to draw them", shape_of(values)));
  double vmin = o.v_min.value_or(lo), vmax = o.v_max.value_or(hi);
  if (vmin > vmax) fail(fmt::format("heat map colour range is inverted: v_min {} > v_max {}", vmin, vmax));
  if (vmin == vmax) std::tie(vmin, vmax) = auto_range(vmin, vmax, false);

  // Layout: [y label] [row labels] grid | colour bar [value labels] [colour bar label].
  const int th = text_height(1);
  const int cw = o.cell_width, ch = o.cell_height;
  const int grid_w = static_cast<int>(cols) * cw, grid_h = static_cast<int>(rows) * ch;
  std::vector<std::pair<int64_t, std::string>> row_text;  // (row, label), thinned so they do not overlap
  if (!o.row_labels.empty()) {
    const int64_t every = (th + 1 + ch - 1) / ch;
    for (int64_t r = 0; r < rows; r += every) row_text.emplace_back(r, o.row_labels[r]);
  } else {
    const auto step = static_cast<int64_t>(nice_step(std::max(1.0, 20.0 / ch)));
    for (int64_t r = 0; r < rows; r += step) row_text.emplace_back(r, std::to_string(r));
  }
  int row_w = 0;
  for (const auto& rt : row_text) row_w = std::max(row_w, text_width(rt.second));
  const auto col_step = static_cast<int64_t>(
      nice_step(std::max(1.0, (std::max(40, text_width(std::to_string(cols - 1)) + 12)) / static_cast<double>(cw))));

  const std::string vmax_s = number(vmax, 4), vmid_s = number((vmin + vmax) / 2, 4), vmin_s = number(vmin, 4);
  const int bar_label_w = std::max({text_width(vmax_s), text_width(vmid_s), text_width(vmin_s)});
  const int top = kPad + (o.title.empty() ? 0 : text_height(2) + 8);
  const int left = kPad + (o.y_label.empty() ? 0 : th + 6) + row_w + 8;
  const int bar_x = left + grid_w + 16, bar_w = 14, bar_h = std::max(grid_h, 60);
  int width = bar_x + bar_w + 1 + 4 + 3 + bar_label_w + (o.colorbar_label.empty() ? 0 : 8 + th) + kPad;
  const int title_scale = o.title.empty() || text_width(o.title, 2) + 2 * kPad <= width ? 2 : 1;
  width = std::max(width, text_width(o.title, title_scale) + 2 * kPad);
  const int height = top + bar_h + 1 + 4 + th + (o.x_label.empty() ? 0 : 6 + th) + kPad;

  Canvas c(width, height);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t col = 0; col < cols; ++col) {
      const double x = data[r * cols + col];
      const Rgb color = std::isnan(x) ? kNanCell : colormap((x - vmin) / (vmax - vmin));
      c.fill(left + static_cast<int>(col) * cw, top + static_cast<int>(r) * ch, cw, ch, color);
    }
  c.outline(left - 1, top - 1, grid_w + 2, grid_h + 2, kFrame);
  for (const auto& [r, label] : row_text) {
    const int cy = top + static_cast<int>(r) * ch + ch / 2;
    c.hline(left - 4, left - 2, cy, kFrame);
    text(c, label, left - 8 - text_width(label), cy - 3, kBlack);
  }
  for (int64_t col = 0; col < cols; col += col_step) {
    const int cx = left + static_cast<int>(col) * cw + cw / 2;
    c.vline(cx, top + grid_h + 1, top + grid_h + 3, kFrame);
    const std::string label = std::to_string(col);
    text(c, label, centred(cx, text_width(label), width), top + grid_h + 1 + 4, kBlack);
  }
  if (!o.x_label.empty())
    text(c, o.x_label, centred(left + grid_w / 2.0, text_width(o.x_label), width), top + bar_h + 1 + 4 + th + 6, kBlack);
  if (!o.y_label.empty())
    text(c, o.y_label, kPad, centred(top + grid_h / 2.0, text_width(o.y_label), height), kBlack, 1, true);
  if (!o.title.empty())
    text(c, o.title, centred(left + grid_w / 2.0, text_width(o.title, title_scale), width), kPad, kBlack, title_scale);

  // Colour bar, max at the top.
  for (int j = 0; j < bar_h; ++j) c.hline(bar_x, bar_x + bar_w - 1, top + j, colormap(1.0 - j / (bar_h - 1.0)));
  c.outline(bar_x - 1, top - 1, bar_w + 2, bar_h + 2, kFrame);
  const std::pair<int, const std::string*> marks[] = {{top, &vmax_s}, {top + (bar_h - 1) / 2, &vmid_s},
                                                      {top + bar_h - 1, &vmin_s}};
  for (const auto& [y, label] : marks) {
    c.hline(bar_x + bar_w + 1, bar_x + bar_w + 3, y, kFrame);
    text(c, *label, bar_x + bar_w + 1 + 4 + 3, y - 3, kBlack);
  }
  if (!o.colorbar_label.empty())
    text(c, o.colorbar_label, bar_x + bar_w + 1 + 4 + 3 + bar_label_w + 8,
         centred(top + bar_h / 2.0, text_width(o.colorbar_label), height), kBlack, 1, true);
  return c.to_tensor();
}

at::Tensor side_by_side(const std::vector<at::Tensor>& images, const std::vector<std::string>& captions, int padding,
                        int scale) {
  if (images.empty()) fail("side_by_side: expected at least one image, got none");
  if (!captions.empty() && captions.size() != images.size())
    fail(fmt::format("side_by_side has {} images but {} captions (expected none or one per image)", images.size(),
                     captions.size()));
  if (padding < 0 || padding > 1024) fail(fmt::format("side_by_side: padding must be 0..1024, got {}", padding));
  if (scale < 1 || scale > 64) fail(fmt::format("side_by_side: scale must be 1..64, got {}", scale));
  std::vector<at::Tensor> cpu;
  std::vector<int> slots;
  bool any_caption = false;
  int64_t width = padding, max_h = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    const at::Tensor& im = images[i];
    if (!im.defined() || im.dim() != 3 || im.size(2) != 3 || im.scalar_type() != at::kByte || im.size(0) == 0 ||
        im.size(1) == 0)
      fail(fmt::format("side_by_side: image {} must be a non-empty uint8 [H, W, 3] tensor, got {}", i, describe(im)));
    if (im.size(0) * scale > kMaxSide || im.size(1) * scale > kMaxSide)
      fail(fmt::format("side_by_side: image {} {} at scale {} exceeds {} pixels a side", i, shape_of(im), scale, kMaxSide));
    cpu.push_back(im.to(at::kCPU).contiguous());
    const std::string caption = captions.empty() ? "" : captions[i];
    any_caption = any_caption || !caption.empty();
    slots.push_back(std::max(static_cast<int>(im.size(1)) * scale, text_width(caption)));
    width += slots.back() + padding;
    max_h = std::max(max_h, im.size(0) * scale);
  }
  const int caption_room = any_caption ? text_height() + 4 : 0;
  const int64_t height = 2 * padding + caption_room + max_h;
  if (width > kMaxSide || height > kMaxSide)
    fail(fmt::format("side_by_side: the result would be {}x{} pixels, over {} a side", width, height, kMaxSide));

  Canvas c(static_cast<int>(width), static_cast<int>(height));
  int x = padding;
  for (size_t i = 0; i < cpu.size(); ++i) {
    const int h = static_cast<int>(cpu[i].size(0)), w = static_cast<int>(cpu[i].size(1));
    const uint8_t* src = cpu[i].data_ptr<uint8_t>();
    const int x0 = x + (slots[i] - w * scale) / 2, y0 = padding + caption_room;
    for (int yy = 0; yy < h * scale; ++yy)
      for (int xx = 0; xx < w * scale; ++xx) {
        const uint8_t* p = src + (static_cast<size_t>(yy / scale) * w + xx / scale) * 3;
        c.set(x0 + xx, y0 + yy, {p[0], p[1], p[2]});
      }
    if (!captions.empty() && !captions[i].empty())
      text(c, captions[i], x + (slots[i] - text_width(captions[i])) / 2, padding, kBlack);
    x += slots[i] + padding;
  }
  return c.to_tensor();
}

}  // namespace ditcache
