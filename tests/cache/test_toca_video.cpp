// ToCa for OpenSora (STDiT3): the per-module cycles, the MLP ratio, s2 from the cross-attention
// map in the official concatenated-key form shared by both CFG halves, and a cached sampling run
// on the tiny STDiT3 of the shared fixtures (toca.md §2.2, §2.3, §3.2).
#include <cmath>
#include <set>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "cache/policies/toca_scores.h"
#include "opensora/stdit3_toca.h"
#include "ditcache/cache/context.h"
#include "ditcache/cache/policy.h"
#include "ditcache/cache/toca.h"
#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/stdit3.h"
#include "ditcache/sampling/rflow.h"
#include "opensora_fixtures.h"
#include "test_util.h"

namespace ditcache {
namespace {

TEST(ToCaVideo, CyclesMatchTheOfficialSchedule) {
  std::vector<int> attn, cross;
  for (int step = 0; step < 30; ++step) {
    if (toca::video_full_step(step, SiteKind::kSelfAttention)) attn.push_back(step);
    if (toca::video_full_step(step, SiteKind::kCrossAttention)) cross.push_back(step);
    EXPECT_EQ(toca::video_full_step(step, SiteKind::kMLP), toca::video_full_step(step, SiteKind::kSelfAttention));
  }
  EXPECT_EQ(attn, (std::vector<int>{0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27}));
  EXPECT_EQ(cross, (std::vector<int>{0, 1, 2, 6, 12, 18, 24}));
}

TEST(ToCaVideo, MlpRecomputesAboutFifteenPercentAndCrossAttentionNothing) {
  EXPECT_NEAR(toca::video_fresh_ratio(0.1, SiteKind::kMLP), 0.1495, 1e-12);
  EXPECT_LT(toca::video_fresh_ratio(0.1, SiteKind::kCrossAttention), 0.0);
  EXPECT_EQ(toca::fresh_tokens(toca::video_fresh_ratio(0.1, SiteKind::kCrossAttention), 6075), 0);
  EXPECT_EQ(toca::fresh_tokens(toca::video_fresh_ratio(0.1, SiteKind::kMLP), 6075), 908);  // 240p 51 frames, per row
  EXPECT_EQ(toca::fresh_tokens(toca::video_fresh_ratio(0.1, SiteKind::kMLP), 30), 4);
}

TEST(ToCaVideo, EntropyScoreAveragesTheCfgHalvesOnDisjointCaptionKeys) {
  // The official OpenSora code (like PixArt's) puts every row's valid caption tokens on one
  // concatenated key axis (block-diagonal mask), so 0.5 M_cond + 0.5 M_uncond has the two halves on
  // disjoint keys and a token's entropy is H_cond / 2 + H_uncond / 2 + log 2. One prompt with CFG
  // (rows [cond, uncond], the prompt's mask on both), 3 tokens, 3 caption keys of which the last is
  // padding (probability 0).
  auto p = at::zeros({2, 3, 3});  // [B, N, L]
  p[0][0][0] = 1;  // token 0: one key in each half, different keys
  p[1][0][1] = 1;
  p[0][1][0] = 0.5;  // token 1: uniform over the 2 valid keys in both halves
  p[0][1][1] = 0.5;
  p[1][1][0] = 0.5;
  p[1][1][1] = 0.5;
  p[0][2][0] = 1;  // token 2: the same key in both halves
  p[1][2][0] = 1;
  const double log2 = std::log(2.0);
  auto terms = toca::concatenated_entropy_terms(p, true);
  ASSERT_EQ(terms.sizes(), (std::vector<int64_t>{2, 3}));
  // A half's term is -sum 0.5 p log(0.5 p): 0.5 log 2 for a one-hot row, log 2 for a uniform pair.
  const std::vector<std::vector<double>> expected_terms = {{0.5 * log2, log2, 0.5 * log2}, {0.5 * log2, log2, 0.5 * log2}};
  for (int b = 0; b < 2; ++b) {
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(terms[b][i].item<float>(), expected_terms[b][i], 1e-5) << b << " " << i;
  }
  // e = log 2, 2 log 2, log 2: tokens 0 and 2 score the same (the same-key case is not 0 as it
  // would be if the halves were averaged over the same keys, and token 0 is not log 2 above it).
  auto s = toca::concatenated_entropy_score(terms, true);
  ASSERT_EQ(s.sizes(), (std::vector<int64_t>{1, 3}));
  const std::vector<double> raw = {1 + log2, 1 + 2 * log2, 1 + log2};
  const double norm = std::sqrt(raw[0] * raw[0] + raw[1] * raw[1] + raw[2] * raw[2]);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(s[0][i].item<float>(), raw[i] / norm, 1e-5) << i;
  // Padding keys add nothing; without CFG each row is its own map: -sum p log(p + 1e-7).
  EXPECT_TRUE(at::allclose(toca::concatenated_entropy_terms(at::cat({p, at::zeros({2, 3, 4})}, -1), true), terms));
  auto own = toca::concatenated_entropy_terms(p, false);
  EXPECT_NEAR(own[0][0].item<float>(), 0.0, 1e-5);
  EXPECT_NEAR(own[0][1].item<float>(), log2, 1e-5);
  EXPECT_EQ(toca::concatenated_entropy_score(own, false).sizes(), (std::vector<int64_t>{2, 3}));
}

TEST(ToCaVideo, MlpSelectionFollowsTheOfficialS2) {
  // Drives the policy through an STDiT3 run by hand: depth 1, one prompt with CFG, 1 frame of
  // 1 x 2 tokens, ratio 0.5 (the MLP recomputes trunc(0.7475 * 2) = 1 token per row), ages 0.
  // Token 0 attends to one key in each half, different ones; token 1 spreads over both valid keys
  // in the cond half and takes one key in the uncond half. Official s2: e0 = log 2, e1 = 1.5 log 2,
  // so token 1 is recomputed (averaging the halves over the same keys would give e0 = log 2 >
  // e1 = H(0.75, 0.25) = 0.56 and pick token 0).
  auto map = at::zeros({2, 2, 3});  // [B, N, L]; key 2 is padding
  map[0][0][0] = 1;
  map[1][0][1] = 1;
  map[0][1][0] = 0.5;
  map[0][1][1] = 0.5;
  map[1][1][0] = 1;
  auto config = STDiT3Config::preset("STDiT3-XL/2");
  config.depth = 1;
  auto policy = make_policy("toca:ratio=0.5");
  policy->begin_run(make_run_info(backbone_info(config), stdit3_run_shape(2, true, 1, 1, 2, 0), 8, "rflow"));
  const auto ages = at::zeros({2, 2}, at::kInt);
  int checked = 0;
  for (int step = 0; step < 5; ++step) {
    policy->begin_step({step, step});
    for (BlockKind block : {BlockKind::kSpatial, BlockKind::kTemporal}) {
      for (SiteKind kind : {SiteKind::kSelfAttention, SiteKind::kCrossAttention, SiteKind::kMLP}) {
        const Site site{0, block, kind};
        const auto d = policy->decide(SiteState{site, step > 0, ages}, false);
        if (d.attention_stats && d.action == Action::kCompute) policy->observe_attention(site, map);
        if (step == 4 && kind == SiteKind::kMLP) {
          SCOPED_TRACE(to_string(site));
          ASSERT_EQ(d.action, Action::kPartial);
          ASSERT_EQ(d.tokens, 1);
          EXPECT_EQ(d.indices[0][0].item<int64_t>(), 1);  // cond
          EXPECT_EQ(d.indices[1][0].item<int64_t>(), 1);  // uncond: the same s2
          ++checked;
        }
      }
    }
    policy->end_step();
  }
  EXPECT_EQ(checked, 2);
}

TEST(ToCaVideo, RefusesDiTOnlyOptionsOnSTDiT3) {
  auto c = STDiT3Config::preset("STDiT3-XL/2");
  auto run = make_run_info(backbone_info(c), stdit3_run_shape(2, true, 15, 30, 53, 0), 30, "rflow");
  test::expect_error([&] { make_policy("toca:schedule=ddim50")->begin_run(run); }, ErrorCode::kInvalidArgument,
                     "schedule=ddim50 is not one of STDiT3's: opensora");
  test::expect_error([&] { make_policy("toca:bonus=0.6")->begin_run(run); }, ErrorCode::kUnsupported, "s4 spatial bonus is off");
  EXPECT_NO_THROW(make_policy("toca")->begin_run(run));
  EXPECT_NO_THROW(make_policy("toca:ratio=auto,bonus=0")->begin_run(run));
  EXPECT_EQ(make_policy("toca")->to_string(), "toca:ratio=auto,interval=0,schedule=auto,mode=reference,weight=0.25,bonus=auto,grid=auto");
}

TEST(ToCaVideo, TinyRunFollowsTheScheduleAndSharesTokensAcrossCfgHalves) {
  DITCACHE_REQUIRE_TINY_VIDEO();
  test::TinyVideoRun run;
  CacheContext cache(make_policy("toca"), /*trace=*/true);
  const int steps = 8;
  auto cached = run.sample(&cache, steps);
  auto uncached = run.sample(nullptr, steps);
  EXPECT_TRUE(at::isfinite(cached).all().item<bool>());
  EXPECT_FALSE(at::equal(cached, uncached));  // caching did change something
  const int64_t tokens = run.tokens();  // 5 frames x 2 x 3 patches
  const auto& records = cache.steps();
  ASSERT_EQ(records.size(), static_cast<size_t>(steps));
  for (int step = 0; step < steps; ++step) {
    const auto& sites = records[static_cast<size_t>(step)].sites;
    ASSERT_EQ(sites.size(), 12u);  // 2 layers x 2 block kinds x 3 modules
    for (const auto& r : sites) {
      const bool full = toca::video_full_step(step, r.site.kind);
      SCOPED_TRACE(to_string(r.site) + " step " + std::to_string(step));
      if (full) {
        EXPECT_EQ(r.action, Action::kCompute);
        EXPECT_EQ(r.tokens, tokens);
      } else if (r.site.kind == SiteKind::kSelfAttention) {
        EXPECT_EQ(r.action, Action::kReuse);
      } else if (r.site.kind == SiteKind::kCrossAttention) {
        EXPECT_EQ(r.action, Action::kPartial);
        EXPECT_EQ(r.tokens, 0);
      } else {
        EXPECT_EQ(r.action, Action::kPartial);
        ASSERT_EQ(r.tokens, 4);
        // Both CFG halves select the same tokens (s2 is shared), and no token twice.
        ASSERT_EQ(r.indices.size(), static_cast<size_t>(2 * run.n * 4));
        for (int64_t row = 0; row < run.n; ++row) {
          std::vector<int64_t> cond(r.indices.begin() + row * 4, r.indices.begin() + row * 4 + 4);
          std::vector<int64_t> uncond(r.indices.begin() + (row + run.n) * 4, r.indices.begin() + (row + run.n) * 4 + 4);
          EXPECT_EQ(cond, uncond);
          EXPECT_EQ(std::set<int64_t>(cond.begin(), cond.end()).size(), 4u);
        }
      }
    }
  }
  // Step 5 is the second partial step in a row: the staleness term moves the selection on, so the
  // MLP of a layer recomputes other tokens than at step 4.
  auto mlp_indices = [&](int step) {
    for (const auto& r : records[static_cast<size_t>(step)].sites) {
      if (r.site.kind == SiteKind::kMLP && r.site.layer == 0 && r.site.block == BlockKind::kSpatial) return r.indices;
    }
    return std::vector<int64_t>{};
  };
  auto a = mlp_indices(4), b = mlp_indices(5);
  ASSERT_EQ(a.size(), 16u);
  std::set<int64_t> first(a.begin(), a.begin() + 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(first.count(b[static_cast<size_t>(i)]), 0u) << "token recomputed twice in a row";
  // FLOPs: a partial step costs less than a full one, and the run less than uncached.
  EXPECT_LT(records[4].flops, records[3].flops);
  EXPECT_GT(cache.summary().flops_speedup(), 1.0);
  EXPECT_LT(cache.summary().computed_share(), 1.0);
}

}  // namespace
}  // namespace ditcache
