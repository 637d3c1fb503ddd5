// ToCa's schedules, scores and FLOPs against hand-computed cases from toca.md and the paper's
// published DiT-XL/2 figures.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "cache/policies/toca_scores.h"
#include "dit/dit_toca.h"
#include "ditcache/cache/context.h"
#include "ditcache/cache/toca.h"
#include "ditcache/error.h"
#include "ditcache/pipeline.h"
#include "test_util.h"

namespace ditcache {
namespace {

TEST(ToCaSchedule, ForceIntervalFollowsStepFactorAndSensitiveWindow) {
  // S = 50, N = 3, w = 0.4: f = 1.4 - 0.8 * step / 50.
  EXPECT_EQ(toca::force_interval(49, 50, 3, 0.07), 5);  // f = 0.616 -> 4.87 -> 5
  EXPECT_EQ(toca::force_interval(25, 50, 3, 0.07), 3);  // f = 1.0
  EXPECT_EQ(toca::force_interval(0, 50, 3, 0.07), 2);   // f = 1.4 -> 2.14 -> 2
  EXPECT_EQ(toca::force_interval(30, 50, 3, 0.07), 3);  // f = 0.92 -> 3.26 -> 3
  EXPECT_EQ(toca::force_interval(40, 50, 4, 0.07), 5);  // f = 0.76 -> 5.26 -> 5
  // Sensitive window int(0.2 S) <= step < int(0.4 S): always 2.
  for (int step = 10; step < 20; ++step) EXPECT_EQ(toca::force_interval(step, 50, 3, 0.07), 2) << step;
  EXPECT_EQ(toca::force_interval(20, 50, 4, 0.07), 4);   // f = 1.08 -> 3.70 -> 4, outside the window
  EXPECT_EQ(toca::force_interval(9, 50, 4, 0.07), 3);    // f = 1.256 -> 3.18 -> 3
  // ratio 0 (FORA mode): w = 0, no window: the interval is N.
  for (int step : {0, 12, 49}) EXPECT_EQ(toca::force_interval(step, 50, 3, 0.0), 3);
  // round half to even: N = 5 and f = 1.0 (step 25 of 50) -> 5; N = 1 at f = 1.4 -> 0.71 -> 1.
  EXPECT_EQ(toca::force_interval(0, 50, 1, 0.07), 1);
}

TEST(ToCaSchedule, FreshRatioMatchesTocaNotes) {
  // ToCa-ddim50 at step 1: layer 0 ≈ 0.41, layer 27 ≈ 0.61 (toca.md §2.3).
  EXPECT_NEAR(toca::fresh_ratio("ddim50", 0.07, 1, 50, 0, 27, SiteKind::kMLP), 0.07 * 0.8 * 2.92 * 2.5, 1e-12);
  EXPECT_NEAR(toca::fresh_ratio("ddim50", 0.07, 1, 50, 27, 27, SiteKind::kMLP), 0.07 * 1.2 * 2.92 * 2.5, 1e-12);
  // Partial steps >= 38 of DDIM-50 recompute nothing (negative ratio, clamped).
  EXPECT_LT(toca::fresh_ratio("ddim50", 0.07, 38, 50, 5, 27, SiteKind::kMLP), 0);
  EXPECT_EQ(toca::fresh_tokens(toca::fresh_ratio("ddim50", 0.07, 38, 50, 5, 27, SiteKind::kMLP), 256), 0);
  // Attention's module factor is 1 - 0.4 * 2.5 = 0: never partial.
  EXPECT_EQ(toca::fresh_ratio("ddim50", 0.07, 1, 50, 3, 27, SiteKind::kSelfAttention), 0);
  // ToCa-ddpm250: layer 27 at the first step ≈ 0.02, layer 0 at step 1 ≈ 0.44.
  EXPECT_NEAR(toca::fresh_ratio("ddpm250", 0.07, 249, 250, 27, 27, SiteKind::kMLP), 0.07 * 0.2 * (1.4 - 0.8 * 249 / 250.0) * 2.5, 1e-12);
  EXPECT_NEAR(toca::fresh_ratio("ddpm250", 0.07, 1, 250, 0, 27, SiteKind::kMLP), 0.07 * 1.8 * (1.4 - 0.8 / 250) * 2.5, 1e-12);
  EXPECT_THROW(toca::fresh_ratio("linear", 0.07, 1, 50, 0, 27, SiteKind::kMLP), Error);
}

TEST(ToCaSchedule, FreshTokensTruncateInFloat32AfterClamping) {
  EXPECT_EQ(toca::fresh_tokens(0.07 * 0.8 * 2.92 * 2.5, 256), 104);  // 104.65
  EXPECT_EQ(toca::fresh_tokens(1.7, 256), 256);
  EXPECT_EQ(toca::fresh_tokens(-0.3, 256), 0);
  EXPECT_EQ(toca::fresh_tokens(0.5, 7), 3);
}

TEST(ToCaScores, SpreadBonusBoostsOnlyEachBlockMaximum) {
  // 4x4 grid, 2x2 blocks; block 0 = tokens {0, 1, 4, 5}.
  auto score = at::arange(16, at::kFloat).reshape({1, 16}) / 16;
  auto out = toca::spread_bonus(score, 4, 4, 2, 0.6);
  auto expected = score.clone();
  for (int64_t best : {5, 7, 13, 15}) expected[0][best] = score[0][best] * 1.6;
  EXPECT_TRUE(at::allclose(out, expected)) << out;
  EXPECT_THROW(toca::spread_bonus(at::zeros({1, 12}), 3, 4, 2, 0.6), Error);
}

TEST(ToCaScores, AttentionScoreIsL2NormalisedPerRow) {
  auto s = toca::attention_score(at::tensor({3.0f, 4.0f, 0.0f, 0.0f}).reshape({2, 2}));
  EXPECT_NEAR(s[0][0].item<float>(), 0.6, 1e-6);
  EXPECT_NEAR(s[0][1].item<float>(), 0.8, 1e-6);
  EXPECT_EQ(s[1].abs().sum().item<float>(), 0.0f);  // eps keeps zeros finite
  auto top = toca::select_top(at::tensor({0.1f, 0.9f, 0.5f, 0.7f}).reshape({1, 4}), 2);
  EXPECT_EQ(top[0][0].item<int64_t>(), 1);
  EXPECT_EQ(top[0][1].item<int64_t>(), 3);
}

RunSummary simulate(const std::string& policy, SamplerKind sampler, int64_t steps, double cfg = 1.5) {
  CacheContext cache(make_policy(policy));
  DiTSampleOptions o;
  o.class_labels = {0};
  o.sampler = sampler;
  o.steps = steps;
  o.guidance_scale = cfg;
  simulate_dit(DiTConfig::preset("DiT-XL/2"), o, cache);
  return cache.summary();
}

TEST(ToCaFlops, DiTXL2Ddim50MatchesThePaper) {
  // toca.md §5.1 / §6: DDIM-50 uncached 23.735 TFLOPs (0.4747 per step, batch 2 with CFG);
  // ToCa N = 3, r = 0.07: 10.23 TFLOPs, 2.32x.
  auto none = simulate("none", SamplerKind::kDDIM, 50);
  EXPECT_NEAR(none.flops * 1e-12, 23.735, 5e-4);
  EXPECT_DOUBLE_EQ(none.flops, none.full_flops);
  auto toca = simulate("toca:ratio=0.07,interval=3,schedule=ddim50", SamplerKind::kDDIM, 50);
  EXPECT_NEAR(toca.flops * 1e-12, 10.23, 5e-3);
  EXPECT_NEAR(toca.flops_speedup(), 2.32, 5e-3);
  // `auto` picks ddim50 and N = 3 for a DDIM run.
  EXPECT_DOUBLE_EQ(simulate("toca", SamplerKind::kDDIM, 50).flops, toca.flops);
  // The clean once-per-step mode has no mixed steps: more full blocks, more FLOPs.
  EXPECT_GT(simulate("toca:mode=clean", SamplerKind::kDDIM, 50).flops, toca.flops);
  // FORA N = 3: 17 full steps of 50, adaLN only elsewhere.
  auto fora = simulate("fora:interval=3", SamplerKind::kDDIM, 50);
  const double block_full = 23.735e12 / 50 / 28, ada = 2 * 1152.0 + 6 * 2 * 1152.0 * 1152.0;
  EXPECT_NEAR(fora.flops, 17 * 28 * block_full + 33 * 28 * ada, 1e9);
}

}  // namespace
}  // namespace ditcache
