// shapes10: procedural 32x32 images of ten classes (include/ditcache/data/shapes.h).
#include "ditcache/data/shapes.h"

#include <algorithm>
#include <array>
#include <cmath>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include "ditcache/error.h"

namespace ditcache {

namespace {

constexpr double kPi = 3.14159265358979323846;

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A small deterministic generator (splitmix64 stream): uniform doubles in [0, 1) and normals.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double normal() {  // Box-Muller
    const double u1 = std::max(uniform(), 1e-12), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u2);
  }

 private:
  uint64_t next() { return splitmix64(state_++ * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL); }
  uint64_t state_;
};

using Color = std::array<double, 3>;

Color hsv(double h, double s, double v) {
  const double c = v * s, hp = std::fmod(h, 1.0) * 6.0, x = c * (1.0 - std::fabs(std::fmod(hp, 2.0) - 1.0));
  Color rgb{};
  switch (static_cast<int>(hp)) {
    case 0: rgb = {c, x, 0}; break;
    case 1: rgb = {x, c, 0}; break;
    case 2: rgb = {0, c, x}; break;
    case 3: rgb = {0, x, c}; break;
    case 4: rgb = {x, 0, c}; break;
    default: rgb = {c, 0, x}; break;
  }
  for (auto& ch : rgb) ch += v - c;
  return rgb;
}

// Geometry of one image, in pixel units; inside(u, v) says whether a point is foreground.
struct Shape {
  int64_t label;
  double cx, cy, r;        // shapes: centre and radius
  double period, phase;    // stripes and checker: period (cell size) and offset
  bool inside(double u, double v) const {
    const double dx = u - cx, dy = v - cy, ax = std::fabs(dx), ay = std::fabs(dy);
    switch (label) {
      case 0: return dx * dx + dy * dy < r * r;                                    // disk
      case 1: return std::max(ax, ay) < 0.82 * r;                                  // square
      case 2: {                                                                   // triangle, apex up
        const double top = cy - r, bottom = cy + 0.75 * r;
        return v > top && v < bottom && ax < 0.95 * r * (v - top) / (bottom - top);
      }
      case 3: return (ax < 0.3 * r && ay < r) || (ay < 0.3 * r && ax < r);        // plus
      case 4: { const double d2 = dx * dx + dy * dy; return d2 < r * r && d2 > 0.36 * r * r; }  // ring
      case 5: return ax + ay < 1.1 * r;                                           // diamond
      case 6: return std::sin(2.0 * kPi * v / period + phase) > 0;                // horizontal stripes
      case 7: return std::sin(2.0 * kPi * u / period + phase) > 0;                // vertical stripes
      case 8: {                                                                   // checker
        const auto a = static_cast<int64_t>(std::floor((u + phase) / period));
        const auto b = static_cast<int64_t>(std::floor((v + phase * 0.7) / period));
        return ((a + b) % 2 + 2) % 2 == 0;
      }
      default: {                                                                  // x-cross
        const double w = 0.22 * r * std::sqrt(2.0);
        return std::max(ax, ay) < 0.85 * r && (std::fabs(dx - dy) < w || std::fabs(dx + dy) < w);
      }
    }
  }
};

}  // namespace

const std::vector<std::string>& shapes_class_names() {
  static const std::vector<std::string> names = {"disk",     "square",    "triangle", "plus",    "ring",
                                                 "diamond",  "h-stripes", "v-stripes", "checker", "x-cross"};
  return names;
}

at::Tensor render_shape(int64_t label, uint64_t seed, int64_t size) {
  if (label < 0 || label >= kShapesClasses) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("shapes10: label {} is out of range [0, {})", label, kShapesClasses));
  }
  if (size < 8 || size > 256) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("shapes10: image size {} is out of range [8, 256]", size));
  }
  Rng rng(splitmix64(seed ^ (static_cast<uint64_t>(label) << 56)));
  const double s = static_cast<double>(size);
  Shape shape{label,
              s * rng.uniform(0.36, 0.64), s * rng.uniform(0.36, 0.64), s * rng.uniform(0.22, 0.33),
              s * rng.uniform(0.18, 0.3), rng.uniform(0.0, 2.0 * kPi)};
  if (label == 8) shape.phase = rng.uniform(0.0, shape.period);
  // A bright saturated foreground on a darker, less saturated background with a gentle gradient.
  const double hue = rng.uniform();
  const Color fg = hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.75, 1.0));
  const Color bg = hsv(std::fmod(hue + rng.uniform(0.25, 0.75), 1.0), rng.uniform(0.2, 0.7), rng.uniform(0.08, 0.4));
  const double angle = rng.uniform(0.0, 2.0 * kPi), ramp = rng.uniform(0.0, 0.15);
  const double noise_sigma = rng.uniform(0.01, 0.04);

  std::vector<float> pixels(static_cast<size_t>(3 * size * size));
  constexpr int kSuper = 4;  // 4x4 supersampling: anti-aliased edges
  for (int64_t y = 0; y < size; ++y) {
    for (int64_t x = 0; x < size; ++x) {
      int hits = 0;
      for (int sy = 0; sy < kSuper; ++sy) {
        for (int sx = 0; sx < kSuper; ++sx) {
          hits += shape.inside(static_cast<double>(x) + (sx + 0.5) / kSuper, static_cast<double>(y) + (sy + 0.5) / kSuper);
        }
      }
      const double coverage = static_cast<double>(hits) / (kSuper * kSuper);
      const double gradient = ramp * ((static_cast<double>(x) / s - 0.5) * std::cos(angle) +
                                      (static_cast<double>(y) / s - 0.5) * std::sin(angle));
      for (int c = 0; c < 3; ++c) {
        const double value = coverage * fg[c] + (1.0 - coverage) * (bg[c] + gradient) + noise_sigma * rng.normal();
        pixels[static_cast<size_t>((c * size + y) * size + x)] = static_cast<float>(std::clamp(value, 0.0, 1.0) * 2.0 - 1.0);
      }
    }
  }
  return at::from_blob(pixels.data(), {3, size, size}, at::TensorOptions().dtype(at::kFloat)).clone();
}

ShapesBatch shapes_batch(uint64_t seed, int64_t first, int64_t count, int64_t size) {
  if (first < 0 || count < 1) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("shapes10: bad slice first={} count={}", first, count));
  }
  // Each sample depends only on (seed, index), so rendering them in parallel is deterministic.
  std::vector<at::Tensor> images(static_cast<size_t>(count));
  std::vector<int64_t> labels(static_cast<size_t>(count));
  at::parallel_for(0, count, 8, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t i = first + j;
      labels[static_cast<size_t>(j)] = i % kShapesClasses;
      images[static_cast<size_t>(j)] =
          render_shape(i % kShapesClasses, splitmix64(seed * 0x100000001b3ULL + static_cast<uint64_t>(i)), size);
    }
  });
  return {at::stack(images), at::tensor(labels, at::TensorOptions().dtype(at::kLong))};
}

}  // namespace ditcache
