#pragma once
/// \file Image output: decoded [-1, 1] tensors to uint8 pixels, image grids and PNG files.

#include <cstdint>
#include <string>

#include <ATen/Tensor.h>

namespace ditcache {

/// Maps decoder output `[B, C, H, W]` in [-1, 1] (any device, floating dtype) to uint8 pixels
/// `[B, H, W, C]` on the CPU, as torchvision's `save_image(normalize=True, value_range=(-1, 1))`
/// does (DiT's sample.py): computed in fp32, `v = clamp((x + 1) / 2, 0, 1) * 255 + 0.5`, clamped
/// to [0, 255] and truncated, i.e. rounded half up. Throws Error(kInvalidArgument) for a tensor
/// that is not 4-d floating point.
at::Tensor to_uint8_images(const at::Tensor& x);

/// Tiles uint8 images `[B, H, W, C]` into one `[H', W', C]` image with `nrow` images per row and
/// `padding` pixels of `pad_value` around and between them, like torchvision's make_grid (which
/// also returns a single image unpadded). Throws Error(kInvalidArgument) for bad inputs.
at::Tensor make_grid(const at::Tensor& images, int64_t nrow = 8, int64_t padding = 2, uint8_t pad_value = 0);

/// Writes a uint8 image `[H, W, C]` (C = 1 gray, 3 RGB or 4 RGBA; any device) as an 8-bit PNG.
/// Writes to a temporary file beside `path` and renames it, so a failure never leaves a file
/// (partial or not) under `path`. Throws Error(kInvalidArgument) for a bad tensor and Error(kIo)
/// naming the path when the file cannot be written.
void write_png(const std::string& path, const at::Tensor& image);

/// Reads a PNG as uint8 `[H, W, C]` (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA; palettes expanded,
/// 16-bit samples reduced to 8). Throws Error(kNotFound) for a missing file and Error(kFormat)
/// for a file that is not a valid PNG.
at::Tensor read_png(const std::string& path);

}  // namespace ditcache
