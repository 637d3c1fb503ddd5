// The attention shim: fused and explicit backends compute the same function, masks included.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "nn/attention.h"
#include "test_util.h"

namespace ditcache::nn {
namespace {

TEST(Attention, FusedAndExplicitAgree) {
  if (!fused_attention_available()) GTEST_SKIP() << "this LibTorch has no fused attention kernel";
  at::manual_seed(3);
  auto q = at::randn({2, 3, 5, 8}), k = at::randn({2, 3, 7, 8}), v = at::randn({2, 3, 7, 8});
  auto mask = at::zeros({2, 1, 1, 7});
  mask.index_put_({1, 0, 0, at::indexing::Slice(4, 7)}, -INFINITY);
  for (const auto& m : {std::optional<at::Tensor>{}, std::optional<at::Tensor>{mask}}) {
    auto fused = attention(q, k, v, m, std::nullopt, AttentionBackend::kFused);
    auto explicit_ = attention(q, k, v, m, std::nullopt, AttentionBackend::kExplicit);
    DITCACHE_EXPECT_CLOSE(fused, explicit_, 1e-6);
  }
}

TEST(Attention, ExplicitMatchesDefinition) {
  at::manual_seed(4);
  auto q = at::randn({1, 1, 2, 4}), k = at::randn({1, 1, 3, 4}), v = at::randn({1, 1, 3, 4});
  auto expected = at::matmul(at::softmax(at::matmul(q, k.transpose(-2, -1)) / 2.0, -1), v);
  DITCACHE_EXPECT_CLOSE(attention(q, k, v, std::nullopt, std::nullopt, AttentionBackend::kExplicit), expected, 1e-6);
  // A masked key gets no weight: its value cannot leak into the output.
  auto mask = at::zeros({1, 1, 1, 3});
  mask[0][0][0][2] = -INFINITY;
  auto v2 = v.clone();
  v2[0][0][2] = 1e6;
  DITCACHE_EXPECT_CLOSE(attention(q, k, v2, mask), attention(q, k, v, mask), 1e-6);
  EXPECT_THROW(attention(q[0], k, v), std::exception);
}

}  // namespace
}  // namespace ditcache::nn
