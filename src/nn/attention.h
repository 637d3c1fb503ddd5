#pragma once
// Scaled dot-product attention shim: LibTorch's fused kernel where this LibTorch has it (>= 2.0),
// the explicit softmax(q k^T / sqrt(d)) v otherwise or on request. Both give the same results up
// to rounding; the explicit path computes the softmax in fp32 for half inputs.

#include <optional>

#include <ATen/Tensor.h>

namespace ditcache::nn {

/// Which implementation attention() runs.
enum class AttentionBackend { kAuto, kFused, kExplicit };

/// softmax(q k^T * scale + mask) v for q [B, H, Nq, D], k and v [B, H, Nk, D]; `mask` is additive
/// (0 or -inf) and broadcastable to [B, H, Nq, Nk]; scale defaults to 1/sqrt(D). Returns [B, H, Nq, D].
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& mask = std::nullopt,
                     std::optional<double> scale = std::nullopt,
                     AttentionBackend backend = AttentionBackend::kAuto);

/// Whether this LibTorch build offers the fused kernel.
bool fused_attention_available() noexcept;

}  // namespace ditcache::nn
