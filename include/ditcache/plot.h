#pragma once
/// \file Raster plots for reports: line/scatter charts, heat maps, captioned side-by-side image
/// strips and bitmap text, rendered into uint8 RGB images `[H, W, 3]` on the CPU (the layout
/// write_png takes). No anti-aliasing; text uses a built-in 5x9 pixel font for printable ASCII.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

namespace ditcache {

/// An RGB colour.
using Rgb = std::array<uint8_t, 3>;

/// One curve of a chart.
struct PlotSeries {
  std::string label;                      ///< legend entry; a series with an empty label has none
  std::vector<double> x, y;               ///< same length; points with a NaN/inf coordinate are skipped
  bool lines = true;                      ///< connect consecutive points in the order given (gaps at skipped points)
  bool markers = true;                    ///< a filled marker at every point (circles, squares by turns per series)
  std::vector<std::string> point_labels;  ///< empty, or one short text per point, drawn above right of it
};

/// Layout and axes of a chart.
struct ChartOptions {
  std::string title, x_label, y_label;
  int width = 800, height = 500;  ///< image size in pixels
  bool log_x = false;             ///< log10 x axis; finite x values (and x_min/x_max) must be > 0
  /// Axis ranges: from the finite data with a 5% margin (an empty span is widened) unless set.
  /// Ticks fall on "nice" values (1, 2, 5 x 10^k; decades on a log axis).
  std::optional<double> x_min, x_max, y_min, y_max;
};

/// Where render_chart puts the plot area and how it maps data to pixels.
struct ChartFrame {
  int left = 0, top = 0, width = 0, height = 0;  ///< plot area in image pixels (inside the frame)
  double x_lo = 0, x_hi = 1, y_lo = 0, y_hi = 1;  ///< axis ranges in data units
  bool log_x = false;
  std::vector<double> x_ticks, y_ticks;  ///< tick values in data units
  /// Pixel column of data x (left + 0 at x_lo, left + width - 1 at x_hi; not clamped).
  double to_px(double x) const;
  /// Pixel row of data y (top + height - 1 at y_lo, top at y_hi; not clamped).
  double to_py(double y) const;
};

/// The layout render_chart uses for these inputs. Throws Error(kInvalidArgument) as render_chart.
ChartFrame chart_frame(const std::vector<PlotSeries>& series, const ChartOptions& options);

/// Line/scatter chart `[height, width, 3]` uint8: white background, light grid lines at the
/// ticks, a framed plot area with numeric tick labels, axis labels, a title, one colour per series
/// from series_color, point labels, and a legend right of the plot for the labelled series.
/// Throws Error(kInvalidArgument) naming the problem for: no series, a series whose x, y and
/// point_labels sizes differ, no finite point in any series, x <= 0 on a log axis, an empty or
/// inverted axis range, or an image too small for the plot.
at::Tensor render_chart(const std::vector<PlotSeries>& series, const ChartOptions& options);

/// The colour of series `index` in a chart: ten clearly distinct colours (Tableau 10), cycled.
Rgb series_color(size_t index);

/// Layout of a heat map.
struct HeatmapOptions {
  std::string title, x_label, y_label;
  std::vector<std::string> row_labels;  ///< empty (rows numbered), or one per row, drawn left of it
  int cell_width = 2, cell_height = 8;  ///< pixels per value
  std::optional<double> v_min, v_max;   ///< colour range (default: finite data min/max)
  std::string colorbar_label;
};

/// Heat map of `values` `[R, C]` (any real dtype, any device): row r, column c is a cell_width x
/// cell_height block coloured by colormap((v - v_min) / (v_max - v_min)) (clamped; NaN cells are
/// gray), with column indices below, row labels left, and a colour bar with its max, mid and min
/// values right. Row labels that would overlap are thinned to every k-th. Throws
/// Error(kInvalidArgument) for values that are not a non-empty 2-d real tensor, a row_labels
/// count other than R, cell sizes < 1, no finite value without v_min/v_max, or v_min > v_max.
at::Tensor render_heatmap(const at::Tensor& values, const HeatmapOptions& options);

/// The heat map colour at `t` in [0, 1] (clamped): a viridis-like map, dark purple -> blue ->
/// green -> yellow, interpolated linearly between anchor colours; luminance rises with t.
Rgb colormap(double t);

/// Draws `text` onto `image` `[H, W, 3]` uint8 on the CPU, in place, with its top-left corner at
/// pixel (x, y), each font pixel a `scale` x `scale` block of `color`. Only ink pixels are written,
/// all inside the box text_width x text_height at (x, y); parts outside the image are clipped.
/// Bytes outside printable ASCII draw '?'. Throws Error(kInvalidArgument) for a bad image or
/// scale < 1.
void draw_text(at::Tensor& image, const std::string& text, int x, int y, int scale = 1, Rgb color = {0, 0, 0});

/// Width in pixels of `text` at `scale`: (6 * length - 1) * scale, 0 for "".
int text_width(const std::string& text, int scale = 1);
/// Height in pixels of a line of text at `scale` (descenders included): 9 * scale.
int text_height(int scale = 1);

/// Places images `[H_i, W_i, 3]` uint8 (any device) left to right on a white background with
/// `padding` pixels around and between them, each enlarged `scale` times by nearest neighbour
/// (e.g. 32x32 samples shown at 4x) and top-aligned, with its caption centred above it, e.g. for
/// "uncached | ToCa" comparisons. `captions` is empty (no caption row) or has one entry per
/// image (entries may be empty); a caption wider than its image widens that image's slot.
/// Result: `[2 * padding + caption room + max H_i * scale, padding + sum(slot_i + padding), 3]`,
/// caption room being text_height() + 4 when any caption is non-empty. Throws
/// Error(kInvalidArgument) for no images, a bad image, a captions count mismatch, padding < 0 or
/// scale < 1.
at::Tensor side_by_side(const std::vector<at::Tensor>& images, const std::vector<std::string>& captions,
                        int padding = 8, int scale = 1);

}  // namespace ditcache
