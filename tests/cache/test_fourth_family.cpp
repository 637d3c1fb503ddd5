// A fourth model family written against the public headers only (backbone.h, step_driver.h,
// cache/toca.h): two blocks of another site layout (MLP first, then self-attention), its own ToCa
// profile, run through every registered policy by the StepDriver. Proves that a family needs no
// edit of the cache runtime, the pipelines or any policy.
#include <cmath>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include "ditcache/backbone.h"
#include "ditcache/cache/context.h"
#include "ditcache/cache/policy.h"
#include "ditcache/cache/toca.h"
#include "ditcache/error.h"
#include "ditcache/flops.h"
#include "ditcache/step_driver.h"

namespace ditcache {
namespace {

constexpr int64_t kC = 16, kGrid = 4, kTokens = kGrid * kGrid, kHeads = 2;

std::shared_ptr<const ToCaProfile> mini_toca_profile() {
  auto p = std::make_shared<ToCaProfile>();
  ToCaProfile::Schedule s;
  s.name = "mini";
  s.interval = 2;
  s.force_interval = [](int, int, int interval, double) { return static_cast<double>(interval); };
  s.fresh_ratio = [](double r0, int, int, int, int, SiteKind kind) { return kind == SiteKind::kMLP ? r0 : 0.0; };
  p->schedules.push_back(s);
  p->ratio = 0.25;
  p->bonus = 0;
  return p;
}

BackboneInfo mini_info() {
  BackboneInfo info;
  info.family = "MiniDiT";
  info.name = "MiniDiT-2";
  info.depth = 2;
  info.site_kinds = {SiteKind::kMLP, SiteKind::kSelfAttention};
  info.block_flops = [](BlockKind, const RunShape& shape, const SiteTokens& computed) {
    double f = 0;
    if (computed.mlp > 0) f += flops::mlp(shape.rows, computed.mlp, kC, 2 * kC);
    if (computed.self_attention > 0) f += flops::attention(shape.rows, computed.self_attention, shape.tokens(), kC, kHeads);
    return f;
  };
  info.toca = mini_toca_profile();
  return info;
}

// x [B, C, 4, 4] -> tokens, two blocks (MLP then attention, both residual), back to [B, C, 4, 4].
class MiniDiT : public Backbone {
 public:
  MiniDiT() : info_(mini_info()) {
    auto g = at::make_generator<at::CPUGeneratorImpl>(3);
    for (int i = 0; i < 2; ++i) {
      fc1_.push_back(at::randn({2 * kC, kC}, g) * 0.2);
      fc2_.push_back(at::randn({kC, 2 * kC}, g) * 0.2);
      qkv_.push_back(at::randn({3 * kC, kC}, g) * 0.2);
    }
  }
  const BackboneInfo& info() const override { return info_; }
  RunShape run_shape(const BackboneInputs& in) const override {
    RunShape s;
    s.rows = in.x.size(0);
    s.grid_h = s.grid_w = kGrid;
    return s;
  }
  void load(const WeightFile&) override {}
  at::Tensor forward(const BackboneInputs& in, CacheContext* cache) override {
    reject_unused_inputs(in, "MiniDiT", {});
    const int64_t B = in.x.size(0);
    auto h = in.x.flatten(2).transpose(1, 2) + in.timestep.view({B, 1, 1}) * 1e-3;  // [B, N, C]
    const auto shape = run_shape(in);
    for (int layer = 0; layer < 2; ++layer) {
      h = run_block(cache, info_, BlockKind::kSpatial, layer, shape, h, [&](const at::Tensor& x, BlockRunner& sites) {
        auto m = sites.token_wise(SiteKind::kMLP, x, [&](const at::Tensor& rows) {
          return at::linear(at::gelu(at::linear(rows, fc1_[layer])), fc2_[layer]);
        });
        auto y = x + m;
        auto a = sites.attention(SiteKind::kSelfAttention, y, [&](const at::Tensor& t, const at::Tensor& queries, at::Tensor* sums) {
          auto qkv = at::linear(t, qkv_[layer]).chunk(3, -1);  // [B, N, C] each
          auto q = queries.defined() ? qkv[0].gather(1, queries.unsqueeze(-1).expand({B, queries.size(1), kC})) : qkv[0];
          auto p = at::softmax(at::matmul(q, qkv[1].transpose(1, 2)) / std::sqrt(static_cast<double>(kC)), -1);  // [B, n, N]
          if (sums) *sums = p.sum(1);  // [B, N]
          return at::matmul(p, qkv[2]);
        });
        return y + a;
      });
    }
    return h.transpose(1, 2).reshape(in.x.sizes());
  }

 private:
  BackboneInfo info_;
  std::vector<at::Tensor> fc1_, fc2_, qkv_;
};

// A 6-step Euler loop through the StepDriver, every model call through `cache` when given.
at::Tensor sample(MiniDiT& model, CacheContext* cache, int steps = 6) {
  at::NoGradGuard no_grad;
  auto x = at::randn({2, kC, kGrid, kGrid}, at::make_generator<at::CPUGeneratorImpl>(11));
  BackboneInputs in;
  in.x = x;
  StepDriver driver(cache, model.info(), model.run_shape(in), steps, "euler", at::kCPU);
  for (int i = 0; i < steps; ++i) {
    in.x = x;
    in.timestep = at::full({2}, 1000.0 * (steps - i) / steps);
    auto out = driver.step(i, [&](CacheContext* c) { return model.forward(in, c); });
    x = x - 0.1 * out;
    driver.done(i);
  }
  return x;
}

TEST(FourthFamily, EveryRegisteredPolicyRunsOnIt) {
  MiniDiT model;
  const auto uncached = sample(model, nullptr);
  for (const auto& [name, summary] : registered_policies()) {
    SCOPED_TRACE(name);
    CacheContext a(make_policy(name)), b(make_policy(name));
    const auto first = sample(model, &a);
    EXPECT_TRUE(at::equal(first, sample(model, &b))) << "two runs differ";
    ASSERT_EQ(a.steps().size(), 6u);
    EXPECT_EQ(a.run_info().model, "MiniDiT");
    // The FLOPs-only walk counts what the real run ran.
    CacheContext dry(make_policy(name));
    StepDriver::simulate(dry, model.info(), model.run_shape(BackboneInputs{at::zeros({2, kC, kGrid, kGrid})}), 6, "euler");
    EXPECT_DOUBLE_EQ(dry.summary().flops, a.summary().flops);
    EXPECT_DOUBLE_EQ(dry.summary().full_flops, a.summary().full_flops);
    if (name == "none") {
      EXPECT_TRUE(at::equal(first, uncached));
    } else {
      EXPECT_GT(a.summary().flops_speedup(), 1.0) << "the policy skipped no work";
    }
  }
}

TEST(FourthFamily, IdentitySettingsReproduceUncached) {
  MiniDiT model;
  const auto uncached = sample(model, nullptr);
  for (const char* spec : {"fora:interval=1", "fora:interval=1,granularity=block", "toca:interval=1"}) {
    SCOPED_TRACE(spec);
    CacheContext cache(make_policy(spec));
    EXPECT_TRUE(at::allclose(sample(model, &cache), uncached, 1e-5, 1e-6));
  }
}

TEST(FourthFamily, ToCaRunsItsProfileAndRefusesOthers) {
  MiniDiT model;
  CacheContext cache(make_policy("toca"), /*trace=*/true);
  sample(model, &cache);
  // Interval 2 from the profile: steps 0, 2, 4 full; at the others the MLP recomputes 25 % (4 of 16 tokens).
  for (const auto& step : cache.steps()) {
    for (const auto& site : step.sites) {
      const bool full = step.step.position % 2 == 0;
      if (site.site.kind == SiteKind::kMLP) EXPECT_EQ(site.tokens, full ? kTokens : 4) << step.step.position;
      if (site.site.kind == SiteKind::kSelfAttention) EXPECT_EQ(site.tokens, full ? kTokens : 0) << step.step.position;
    }
  }
  CacheContext other(make_policy("toca:schedule=ddim50"));
  EXPECT_THROW(sample(model, &other), Error);
}

}  // namespace
}  // namespace ditcache
