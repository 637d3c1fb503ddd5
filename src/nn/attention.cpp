#include "nn/attention.h"

#include <cmath>

#include <ATen/ATen.h>
#include <torch/version.h>

#include "ditcache/error.h"

namespace ditcache::nn {

namespace {
constexpr bool kHasFused = TORCH_VERSION_MAJOR >= 2;
}

bool fused_attention_available() noexcept { return kHasFused; }

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& mask, std::optional<double> scale,
                     AttentionBackend backend) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4) {
    throw Error(ErrorCode::kShapeMismatch, "attention: q, k, v must be [B, H, N, D]");
  }
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  if (backend == AttentionBackend::kFused && !kHasFused) {
    throw Error(ErrorCode::kUnsupported, "attention: this LibTorch has no fused attention kernel");
  }
  if (backend != AttentionBackend::kExplicit && kHasFused) {
#if TORCH_VERSION_MAJOR >= 2
    return at::scaled_dot_product_attention(q, k, v, mask, 0.0, false, s);
#endif
  }
  // [B, H, Nq, Nk] scores in fp32 for half inputs, as the references upcast their softmax.
  const auto compute = (q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16) ? at::kFloat
                                                                                         : q.scalar_type();
  auto scores = at::matmul(q.to(compute), k.to(compute).transpose(-2, -1)) * s;
  if (mask) scores = scores + mask->to(compute);
  return at::matmul(at::softmax(scores, -1), v.to(compute)).to(q.scalar_type());
}

}  // namespace ditcache::nn
