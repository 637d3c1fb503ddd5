#pragma once
/// \file shapes10: the project's own procedural image dataset, on which the embedded demo DiT and
/// its quality classifier are trained (docs/embedded-model.md). Ten classes of shapes and textures,
/// 32x32 RGB, rendered deterministically from a seed with varied colours, position, scale,
/// background gradient and pixel noise. Nothing is downloaded; the same seed gives the same
/// pixels on the same platform and toolchain (own RNG; libm's sin/cos/log may differ in the last
/// bit elsewhere).

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

namespace ditcache {

/// Number of shapes10 classes.
constexpr int kShapesClasses = 10;

/// The class names, index = label: disk, square, triangle, plus, ring, diamond, h-stripes,
/// v-stripes, checker, x-cross.
const std::vector<std::string>& shapes_class_names();

/// Renders one image of class `label` in [0, kShapesClasses) from `seed`: float32 [3, size, size]
/// in [-1, 1]. size must be in [8, 256]. Throws Error(kInvalidArgument) for a bad label or size.
at::Tensor render_shape(int64_t label, uint64_t seed, int64_t size = 32);

/// A batch of the dataset: images [count, 3, size, size] in [-1, 1] and labels [count] (int64).
struct ShapesBatch {
  at::Tensor images, labels;
};

/// Samples first .. first+count-1 of the stream `seed`: sample i has label i % 10 and its own
/// seed derived from (seed, i), so any slice of the stream is reproducible on its own. The
/// held-out reference stream (seed kShapesReferenceSeed) is never trained on: train_shapes
/// refuses that seed.
ShapesBatch shapes_batch(uint64_t seed, int64_t first, int64_t count, int64_t size = 32);

/// The stream the project's metrics use as "real images" (never used for training).
constexpr uint64_t kShapesReferenceSeed = 0x5eedf00dULL;

}  // namespace ditcache
