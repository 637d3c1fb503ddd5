#pragma once
// Small pieces the model families share (internal; models/ is a private include root).
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/module.h>

#include "ditcache/error.h"

namespace ditcache::detail {

/// A parameterless child module, so the children registered under it get the checkpoint's dotted
/// names ("t_embedder.mlp.0").
inline std::shared_ptr<torch::nn::Module> holder(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

/// LayerNorm over the last dim without affine parameters.
inline at::Tensor layer_norm(const at::Tensor& x, double eps = 1e-6) { return at::layer_norm(x, {x.size(-1)}, {}, {}, eps); }

/// PixArt's and OpenSora's t2i_modulate: x * (1 + scale) + shift, shift and scale [B, 1, C].
inline at::Tensor t2i_modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale) {
  return x * (1 + scale) + shift;
}

/// Rows of `t` for a batch of `batch` rows: row i is row i mod t.size(0), as the references repeat
/// the conditional prompt's mask (and size conditions) over the CFG batch. `model` and `what` name
/// the input in the error when the row count does not divide the batch.
inline at::Tensor tile_rows(const at::Tensor& t, int64_t batch, const char* model, const char* what) {
  if (t.size(0) == batch) return t;
  if (t.size(0) < 1 || batch % t.size(0) != 0) {
    throw Error(ErrorCode::kShapeMismatch, fmt::format("{} input '{}' has {} rows; expected the batch ({}) or a divisor of it",
                                                       model, what, t.size(0), batch));
  }
  std::vector<int64_t> repeats(static_cast<size_t>(t.dim()), 1);
  repeats[0] = batch / t.size(0);
  return t.repeat(repeats);
}

}  // namespace ditcache::detail
