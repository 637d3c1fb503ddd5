// ToCa on PixArt-α as the official PixArt-alpha-ToCa code runs it (toca.md §2.2-§3.5): the
// force-activation schedule counting up (w 0.2, no sensitive window, per-block re-evaluation), the
// 'ToCa' ratios (cross-attention 0.6, MLP 1.6), s2 from the CFG-averaged cross-attention entropy over
// each prompt's valid caption tokens (the official key axis concatenates all rows' tokens, so the two
// halves' maps never overlap), s3, s4 with 4 x 4 blocks and β 0.4, and partial cross-attention whose
// recomputed rows refresh s2. Hand-computed cases, then the tiny PixArt of tests/fixtures/pixart.
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <map>
#include <set>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "cache/pixart_cache_run.h"
#include "cache/policies/toca_scores.h"
#include "pixart/pixart_toca.h"
#include "ditcache/cache/context.h"
#include "ditcache/cache/policy.h"
#include "ditcache/cache/toca.h"
#include "ditcache/error.h"
#include "ditcache/models/pixart.h"
#include "ditcache/step_driver.h"
#include "test_util.h"

namespace ditcache {
namespace {

// ------------------------------------------------------------------------------------- schedule
TEST(ToCaPixArtSchedule, ForceIntervalShrinksWithTheStepAndHasNoSensitiveWindow) {
  // S = 20, N = 3: f = 0.8 + 0.4 step / 20.
  EXPECT_EQ(toca::pixart_force_interval(0, 20, 3, 0.3), 4);   // 3 / 0.8 = 3.75
  EXPECT_EQ(toca::pixart_force_interval(4, 20, 3, 0.3), 3);   // 3 / 0.88 = 3.41
  EXPECT_EQ(toca::pixart_force_interval(19, 20, 3, 0.3), 3);  // 3 / 1.18 = 2.54
  EXPECT_EQ(toca::pixart_force_interval(0, 20, 4, 0.3), 5);   // 5.0
  EXPECT_EQ(toca::pixart_force_interval(19, 20, 4, 0.3), 3);  // 3.39
  // Where DiT's sensitive window would force 2 (int(0.2 S) <= step < int(0.4 S)), PixArt keeps the formula.
  for (int step = 4; step < 8; ++step) EXPECT_EQ(toca::pixart_force_interval(step, 20, 3, 0.3), 3) << step;
  // round half to even: 2 / float32(0.8) = 2.5 in float32 -> 2 (half up would give 3).
  EXPECT_EQ(toca::pixart_force_interval(0, 20, 2, 0.3), 2);
  // ratio 0 (FORA mode): w = 0, the interval is N.
  for (int step : {0, 7, 19}) EXPECT_EQ(toca::pixart_force_interval(step, 20, 3, 0.0), 3);
}

TEST(ToCaPixArtSchedule, FreshRatiosOfCrossAttentionAndMlp) {
  // r0 0.3; step factor 1.9 - 1.8 step / S; layer factor 1.6 - 1.2 layer / 27; module 0.6 / 1.6.
  EXPECT_NEAR(toca::pixart_fresh_ratio(0.3, 1, 20, 0, 27, SiteKind::kMLP), 0.3 * 1.6 * 1.81 * 1.6, 1e-12);
  EXPECT_NEAR(toca::pixart_fresh_ratio(0.3, 1, 20, 0, 27, SiteKind::kCrossAttention), 0.3 * 1.6 * 1.81 * 0.6, 1e-12);
  EXPECT_NEAR(toca::pixart_fresh_ratio(0.3, 19, 20, 27, 27, SiteKind::kCrossAttention), 0.3 * 0.4 * 0.19 * 0.6, 1e-12);
  EXPECT_NEAR(toca::pixart_fresh_ratio(0.3, 10, 20, 13, 27, SiteKind::kMLP), 0.3 * (1.6 - 1.2 * 13 / 27.0) * 1.0 * 1.6, 1e-12);
  // Cross-attention recomputes 0.375 of the MLP's share everywhere.
  for (int step : {1, 7, 19}) {
    for (int layer : {0, 13, 27}) {
      EXPECT_NEAR(toca::pixart_fresh_ratio(0.3, step, 20, layer, 27, SiteKind::kCrossAttention),
                  0.375 * toca::pixart_fresh_ratio(0.3, step, 20, layer, 27, SiteKind::kMLP), 1e-12);
    }
  }
  // Token counts at 256 tokens (PixArt-XL-2-256): clamped to all at the start, a handful at the end.
  EXPECT_EQ(toca::fresh_tokens(toca::pixart_fresh_ratio(0.3, 1, 20, 0, 27, SiteKind::kMLP), 256), 256);
  EXPECT_EQ(toca::fresh_tokens(toca::pixart_fresh_ratio(0.3, 10, 20, 13, 27, SiteKind::kMLP), 256), 125);          // 125.6
  EXPECT_EQ(toca::fresh_tokens(toca::pixart_fresh_ratio(0.3, 10, 20, 13, 27, SiteKind::kCrossAttention), 256), 47);  // 47.1
  EXPECT_EQ(toca::fresh_tokens(toca::pixart_fresh_ratio(0.3, 19, 20, 27, 27, SiteKind::kCrossAttention), 256), 3);    // 3.50
}

// A dry run of PixArt-XL-2-256 (16 x 16 tokens, 120 caption tokens, one prompt with CFG), 20 steps.
CacheContext dry_256(const std::string& policy, int steps = 20) {
  CacheContext cache(make_policy(policy), /*trace=*/false);
  const auto config = PixArtConfig::preset("PixArt-XL-2-256");
  StepDriver::simulate(cache, backbone_info(config), pixart_run_shape(2, true, 16, 16, 120), steps, "dpm-solver");
  cache.set_dry(true);  // the tests read the dry telemetry as it was
  return cache;
}

const SiteRecord& site_at(const StepRecord& step, int layer, SiteKind kind) {
  for (const auto& r : step.sites) {
    if (r.site.layer == layer && r.site.kind == kind) return r;
  }
  throw std::runtime_error("no such site");
}

TEST(ToCaPixArtSchedule, TwentyStepsHaveSixFullStepsAndOneMixedStep) {
  // Step 0 full (interval 4 after it), steps 4 (interval 3 from there: layer 0 full, layers 1-27
  // partial), 6, 9, 12, 15, 18 full; the others partial at every block.
  auto cache = dry_256("toca");
  std::vector<int> full, mixed;
  for (const auto& step : cache.steps()) {
    ASSERT_EQ(step.sites.size(), 28u * 3);
    const bool first = site_at(step, 0, SiteKind::kSelfAttention).action == Action::kCompute;
    const bool rest = site_at(step, 1, SiteKind::kSelfAttention).action == Action::kCompute;
    for (int layer = 1; layer < 28; ++layer) {
      EXPECT_EQ(site_at(step, layer, SiteKind::kSelfAttention).action == Action::kCompute, rest) << step.step.index;
    }
    if (first && rest) full.push_back(step.step.index);
    if (first && !rest) mixed.push_back(step.step.index);
    for (const auto& r : step.sites) {
      const bool block_full = (r.site.layer == 0 ? first : rest);
      if (block_full) {
        EXPECT_EQ(r.action, Action::kCompute);
      } else if (r.site.kind == SiteKind::kSelfAttention) {
        EXPECT_EQ(r.action, Action::kReuse);  // never partial
      } else {
        EXPECT_EQ(r.action, Action::kPartial);
        EXPECT_EQ(r.tokens, toca::fresh_tokens(toca::pixart_fresh_ratio(0.3, step.step.index, 20, r.site.layer, 27, r.site.kind), 256));
      }
    }
  }
  EXPECT_EQ(full, (std::vector<int>{0, 6, 9, 12, 15, 18}));
  EXPECT_EQ(mixed, (std::vector<int>{4}));
  const auto& s10 = cache.steps()[10];
  EXPECT_EQ(site_at(s10, 13, SiteKind::kMLP).tokens, 125);
  EXPECT_EQ(site_at(s10, 13, SiteKind::kCrossAttention).tokens, 47);
  EXPECT_EQ(site_at(cache.steps()[19], 27, SiteKind::kCrossAttention).tokens, 3);
  EXPECT_EQ(site_at(cache.steps()[1], 0, SiteKind::kMLP).tokens, 256);
  // mode=clean decides once per step: step 4 is wholly full.
  auto clean = dry_256("toca:mode=clean");
  std::vector<int> clean_full;
  for (const auto& step : clean.steps()) {
    if (site_at(step, 27, SiteKind::kSelfAttention).action == Action::kCompute) clean_full.push_back(step.step.index);
  }
  EXPECT_EQ(clean_full, (std::vector<int>{0, 4, 6, 9, 12, 15, 18}));
  EXPECT_GT(clean.summary().flops, cache.summary().flops);
}

TEST(ToCaPixArtFlops, TwentyStepRunOfThe256ReleaseMatchesTheNotesEstimate) {
  // toca.md §5.2 [replay]: the released config at r0 = 0.30 -> about 1.86x FLOPs speed-up (L = 120,
  // norms and scores ignored); 0.20 -> 2.10x; 0.10 -> 2.44x.
  EXPECT_NEAR(dry_256("toca").summary().flops_speedup(), 1.86, 0.01);
  EXPECT_NEAR(dry_256("toca:ratio=0.2").summary().flops_speedup(), 2.10, 0.01);
  EXPECT_NEAR(dry_256("toca:ratio=0.1").summary().flops_speedup(), 2.44, 0.01);
}

TEST(ToCaPixArtFlops, PartialCrossAttentionCountsSelectedQueriesAgainstAllCaptionKeys) {
  // One block of PixArt-XL-2-256 with CFG: k = 47 recomputed queries of 256 against 120 caption
  // tokens: q and output projections for k rows, k/v projections of all 120 caption tokens,
  // scaling, QKᵀ, softmax and PV over k x 120 (toca.md §6 convention).
  const auto config = PixArtConfig::preset("PixArt-XL-2-256");
  const double B = 2, k = 47, L = 120, C = 1152, H = 16, d = 72;
  const double expected = 2 * B * k * C * C + 2 * B * L * C * 2 * C + B * H * k * d + 2 * B * H * k * L * d + 5 * B * H * k * L +
                          2 * B * H * k * L * d + 2 * B * k * C * C;
  EXPECT_DOUBLE_EQ(pixart_block_flops(config, 2, 256, 120, 0, 47, 0), expected);
  // With the MLP on 125 tokens (its LayerNorm on those tokens only) and self-attention reused.
  const double M = 4608, n = 125;
  EXPECT_DOUBLE_EQ(pixart_block_flops(config, 2, 256, 120, 0, 47, 125), expected + B * n * C + 4 * B * n * C * M + 6 * B * n * M);
}

// ---------------------------------------------------------------------------------------- scores
TEST(ToCaPixArtScores, EntropyAveragesTheCfgHalvesOnDisjointCaptionKeys) {
  // One prompt with CFG: rows [cond, uncond], 2 tokens, 3 caption keys of which the last is padding.
  auto p = at::zeros({2, 2, 3});  // [B, N, L]
  p[0][0][0] = 0.5;  // token 0, cond: uniform over the 2 valid keys
  p[0][0][1] = 0.5;
  p[1][0][0] = 1;    // token 0, uncond: one key
  p[0][1][0] = 1;    // token 1: one key in both halves
  p[1][1][1] = 1;
  auto terms = toca::concatenated_entropy_terms(p, true);
  ASSERT_EQ(terms.sizes(), (std::vector<int64_t>{2, 2}));
  // The averaged map has 0.25, 0.25 on the cond keys and 0.5 on the uncond key: its entropy is
  // 0.5 log 4 + 0.5 log 2 = 1.5 log 2 (not the entropy of the aligned mixture [0.75, 0.25], 0.562).
  const double log2 = std::log(2.0);
  EXPECT_NEAR(terms[0][0].item<float>(), log2, 1e-5);
  EXPECT_NEAR(terms[1][0].item<float>(), 0.5 * log2, 1e-5);
  EXPECT_NEAR(terms[0][1].item<float>(), 0.5 * log2, 1e-5);  // a one-hot row still adds 0.5 log 2
  EXPECT_NEAR(terms[1][1].item<float>(), 0.5 * log2, 1e-5);
  EXPECT_TRUE(terms.isfinite().all().item<bool>());
  auto s = toca::concatenated_entropy_score(terms, true);
  ASSERT_EQ(s.sizes(), (std::vector<int64_t>{1, 2}));
  const double a = 1 + 1.5 * log2, b = 1 + log2, norm = std::sqrt(a * a + b * b);
  EXPECT_NEAR(s[0][0].item<float>(), a / norm, 1e-5);
  EXPECT_NEAR(s[0][1].item<float>(), b / norm, 1e-5);
  // Padding keys (probability 0) contribute nothing: appending more of them changes no term.
  auto padded = at::cat({p, at::zeros({2, 2, 5})}, -1);
  EXPECT_TRUE(at::allclose(toca::concatenated_entropy_terms(padded, true), terms));
  // Without CFG each row is its own map: -sum p log(p + 1e-7).
  auto own = toca::concatenated_entropy_terms(p, false);
  EXPECT_NEAR(own[0][0].item<float>(), log2, 1e-5);
  EXPECT_NEAR(own[1][0].item<float>(), 0.0, 1e-5);
  EXPECT_EQ(toca::concatenated_entropy_score(own, false).sizes(), (std::vector<int64_t>{2, 2}));
}

TEST(ToCaPixArtScores, SpreadBonusUsesFourByFourBlocks) {
  // 8 x 8 grid, g = 4: four blocks of 16 tokens; block (0, 0) = rows 0-3, columns 0-3.
  auto score = (at::arange(64, at::kFloat).reshape({1, 64}) * 7).remainder(64) / 64;  // a scrambled order
  auto out = toca::spread_bonus(score, 8, 8, 4, 0.4);
  auto expected = score.clone();
  for (int br = 0; br < 2; ++br) {
    for (int bc = 0; bc < 2; ++bc) {
      int64_t best = -1;
      float best_value = -1;
      for (int r = 0; r < 4; ++r) {
        for (int c = 0; c < 4; ++c) {
          const int64_t i = (br * 4 + r) * 8 + bc * 4 + c;
          if (score[0][i].item<float>() > best_value) best_value = score[0][i].item<float>(), best = i;
        }
      }
      expected[0][best] = best_value * 1.4f;
    }
  }
  EXPECT_TRUE(at::allclose(out, expected)) << out;
  EXPECT_EQ(out.ne(score).sum().item<int64_t>(), 4);
}

TEST(ToCaPixArtPolicy, DefaultsOptionsAndErrors) {
  const auto config = PixArtConfig::preset("PixArt-XL-2-256");
  auto run = make_run_info(backbone_info(config), pixart_run_shape(2, true, 16, 16, 0), 20, "dpm-solver");
  EXPECT_NO_THROW(make_policy("toca")->begin_run(run));
  EXPECT_NO_THROW(make_policy("toca:schedule=pixart")->begin_run(run));
  EXPECT_NO_THROW(make_policy("random")->begin_run(run));
  test::expect_error([&] { make_policy("toca:schedule=ddim50")->begin_run(run); }, ErrorCode::kInvalidArgument,
                     "schedule=ddim50 is not one of PixArt's: pixart (or auto)");
  test::expect_error([&] { make_policy("toca:schedule=opensora")->begin_run(run); }, ErrorCode::kInvalidArgument,
                     "schedule=opensora is not one of PixArt's: pixart");
  // s4's grid is 4 on PixArt: a 4 x 6 token grid does not divide into 4 x 4 blocks.
  auto narrow = make_run_info(backbone_info(config), pixart_run_shape(2, true, 4, 6, 0), 20, "dpm-solver");
  test::expect_error([&] { make_policy("toca")->begin_run(narrow); }, ErrorCode::kInvalidArgument, "s4 grid 4 does not divide the 4x6");
  EXPECT_NO_THROW(make_policy("toca:grid=2")->begin_run(narrow));
  EXPECT_NO_THROW(make_policy("toca:bonus=0")->begin_run(narrow));
  auto down = run;
  down.step_index_counts_down = true;
  test::expect_error([&] { make_policy("toca")->begin_run(down); }, ErrorCode::kInvalidArgument, "PixArt's ToCa schedule numbers steps up, the run numbers them down");
  // grid=auto is the default, and option strings round-trip.
  EXPECT_EQ(make_policy("toca")->to_string(), "toca:ratio=auto,interval=0,schedule=auto,mode=reference,weight=0.25,bonus=auto,grid=auto");
  for (const char* spec : {"toca:schedule=pixart,grid=4,bonus=0.4,ratio=0.3", "random:grid=auto,seed=9"}) {
    auto p = make_policy(spec);
    EXPECT_EQ(make_policy(p->to_string())->to_string(), p->to_string());
  }
  EXPECT_THROW(make_policy("toca:grid=0"), Error);
  EXPECT_THROW(make_policy("toca:grid=65"), Error);
  // A schedule name is the family's to check: refused when the run starts.
  test::expect_error([&] { make_policy("toca:schedule=linear")->begin_run(run); }, ErrorCode::kInvalidArgument,
                     "schedule=linear is not one of PixArt's");
  EXPECT_THROW(make_policy("toca:schedule="), Error);
}

// Drives a policy through a PixArt run by hand (depth 2, one prompt with CFG, 8 x 8 tokens, 8
// steps, ages 0): every cross-attention map it asks for is `map` [2, 64, 8]; returns the tokens of
// each row selected at (step, layer, kind).
std::vector<std::set<int64_t>> drive(const std::string& spec, const at::Tensor& map, int at_step, int at_layer, SiteKind at_kind) {
  auto policy = make_policy(spec);
  auto config = PixArtConfig::preset("PixArt-XL-2-256");
  config.depth = 2;
  policy->begin_run(make_run_info(backbone_info(config), pixart_run_shape(2, true, 8, 8, 0), 8, "dpm-solver"));
  const auto ages = at::zeros({2, 64}, at::kInt);
  for (int step = 0; step < 8; ++step) {
    policy->begin_step({step, step});
    for (int layer = 0; layer < 2; ++layer) {
      for (SiteKind kind : {SiteKind::kSelfAttention, SiteKind::kCrossAttention, SiteKind::kMLP}) {
        const Site site{layer, BlockKind::kSpatial, kind};
        const auto d = policy->decide(SiteState{site, step > 0, ages}, false);
        if (d.attention_stats && d.action == Action::kCompute) policy->observe_attention(site, map);
        if (d.attention_stats && d.action == Action::kPartial) {
          policy->observe_attention_rows(site, d.indices, map.gather(1, d.indices.unsqueeze(-1).expand({2, d.tokens, 8})));
        }
        if (step == at_step && layer == at_layer && kind == at_kind) {
          EXPECT_EQ(d.action, Action::kPartial);
          std::vector<std::set<int64_t>> out;
          for (int64_t row = 0; row < 2; ++row) {
            auto r = d.indices[row].contiguous();
            out.emplace_back(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
          }
          return out;
        }
      }
    }
    policy->end_step();
  }
  return {};
}

TEST(ToCaPixArtPolicy, DefaultSpreadBonusIsFourTenthsOverFourByFourBlocks) {
  // Every token attends to one caption key (1 + e = 1 + log 2) except A = token 9 (block 0's
  // maximum; 2 keys: 1 + log 4 = 2.386), C = token 5 (block 1's maximum; 8 keys: 1 + log 16 =
  // 3.773) and B = token 22 (block 1; 7 keys: 1 + log 14 = 3.639). With β = 0.4, A becomes 3.340 <
  // B; with β = 0.6, 3.818 > B. Step 7, layer 1 cross-attention at r0 = 0.5: trunc(64 * 0.5 * 0.4 *
  // 0.325 * 0.6) = 2 tokens.
  auto map = at::zeros({2, 64, 8});
  map.select(2, 0).fill_(1);
  auto spread = [&](int64_t token, int64_t keys) {
    map.select(1, token).zero_();
    map.select(1, token).narrow(1, 0, keys).fill_(1.0 / keys);
  };
  spread(9, 2);
  spread(5, 8);
  spread(22, 7);
  const auto by_default = drive("toca:ratio=0.5", map, 7, 1, SiteKind::kCrossAttention);
  ASSERT_EQ(by_default.size(), 2u);
  EXPECT_EQ(by_default[0], (std::set<int64_t>{5, 22}));
  EXPECT_EQ(by_default[1], by_default[0]);  // shared by both CFG halves
  EXPECT_EQ(drive("toca:ratio=0.5,bonus=0.4,grid=4", map, 7, 1, SiteKind::kCrossAttention), by_default);
  EXPECT_EQ(drive("toca:ratio=0.5,bonus=0.6", map, 7, 1, SiteKind::kCrossAttention)[0], (std::set<int64_t>{5, 9}));
  // Without s4 the two highest entropies win.
  EXPECT_EQ(drive("toca:ratio=0.5,bonus=0", map, 7, 1, SiteKind::kCrossAttention)[0], (std::set<int64_t>{5, 22}));
}

// --------------------------------------------------------------------------- the tiny PixArt-α
TEST(ToCaPixArtModel, PartialCrossAttentionEqualsFullCrossAttentionOnTheSelectedRows) {
  auto model = test::load_tiny_pixart();
  at::NoGradGuard no_grad;
  auto& block = *model->blocks[1]->as<PixArtBlockImpl>();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const int64_t B = 2, N = 64, L = 8, C = 24;
  auto x = at::randn({B, N, C}, gen);
  auto captions = at::randn({B, L, C}, gen);
  auto key_mask = at::zeros({B, 1, 1, L});
  key_mask[0].narrow(-1, 3, L - 3).fill_(-std::numeric_limits<float>::infinity());  // row 0: 3 valid keys
  auto kv = block.cross_attn->key_values(captions);
  at::Tensor full_p, part_p;
  auto full = block.cross_attn->forward(x, kv, key_mask, &full_p);  // [B, N, C], [B, N, L]
  auto fused = block.cross_attn->forward(x, kv, key_mask);          // the fused kernel
  DITCACHE_EXPECT_CLOSE(fused, full, 1e-5);
  auto idx = at::stack({at::arange(0, 64, 5, at::kLong), at::arange(63, 0, -5, at::kLong).narrow(0, 0, 13)});  // [2, 13]
  auto rows = x.gather(1, idx.unsqueeze(-1).expand({B, 13, C}));
  auto part = block.cross_attn->forward(rows, kv, key_mask, &part_p);  // [B, 13, C], [B, 13, L]
  EXPECT_LE((part - full.gather(1, idx.unsqueeze(-1).expand({B, 13, C}))).abs().max().item<double>(), 1e-6);
  EXPECT_LE((part_p - full_p.gather(1, idx.unsqueeze(-1).expand({B, 13, L}))).abs().max().item<double>(), 1e-7);
  EXPECT_EQ(part_p[0].narrow(-1, 3, L - 3).abs().max().item<float>(), 0.0f);  // masked keys get nothing
}

// Forwards to the real policy and keeps what it observes: full cross-attention maps per (step,
// layer) and the rows of partial cross-attention with their indices.
class RecordingPolicy : public CachePolicy {
 public:
  explicit RecordingPolicy(std::unique_ptr<CachePolicy> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return inner_->name(); }
  std::string to_string() const override { return inner_->to_string(); }
  void begin_run(const RunInfo& run) override { inner_->begin_run(run); }
  StepMode begin_step(const StepInfo& step) override {
    step_ = step.index;
    return inner_->begin_step(step);
  }
  SiteDecision decide(const SiteState& state, bool dry) override { return inner_->decide(state, dry); }
  void observe_attention(const Site& site, const at::Tensor& stats) override {
    maps[{step_, site.layer}] = stats.clone();
    inner_->observe_attention(site, stats);
  }
  void observe_attention_rows(const Site& site, const at::Tensor& indices, const at::Tensor& stats) override {
    rows[{step_, site.layer}] = {indices.clone(), stats.clone()};
    inner_->observe_attention_rows(site, indices, stats);
  }
  void end_step() override { inner_->end_step(); }
  std::map<std::pair<int, int>, at::Tensor> maps;
  std::map<std::pair<int, int>, std::pair<at::Tensor, at::Tensor>> rows;

 private:
  std::unique_ptr<CachePolicy> inner_;
  int step_ = 0;
};

// Hand-written reference of the official selection: s2 from the stored (partially refreshed) map,
// + 0.25 * ages / 3, s4 with 4 x 4 blocks and β 0.4 on the 8 x 8 grid, top-k per row.
std::vector<double> entropy_terms_by_hand(const at::Tensor& p) {  // p [B, n, L] -> B*n terms (CFG weight 0.5)
  auto a = p.to(at::kDouble).contiguous();
  std::vector<double> out;
  for (int64_t b = 0; b < a.size(0); ++b) {
    for (int64_t i = 0; i < a.size(1); ++i) {
      double t = 0;
      for (int64_t l = 0; l < a.size(2); ++l) {
        const double m = 0.5 * a[b][i][l].item<double>();
        t -= m * std::log(m + 1e-7);
      }
      out.push_back(t);
    }
  }
  return out;
}

std::set<int64_t> top_by_hand(std::vector<double> score, int64_t k) {
  // s4 on an 8 x 8 grid with 4 x 4 blocks.
  for (int br = 0; br < 2; ++br) {
    for (int bc = 0; bc < 2; ++bc) {
      int64_t best = -1;
      for (int r = 0; r < 4; ++r) {
        for (int c = 0; c < 4; ++c) {
          const int64_t i = (br * 4 + r) * 8 + bc * 4 + c;
          if (best < 0 || score[static_cast<size_t>(i)] > score[static_cast<size_t>(best)]) best = i;
        }
      }
      score[static_cast<size_t>(best)] *= 1.4;
    }
  }
  std::vector<int64_t> order(score.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return score[static_cast<size_t>(a)] > score[static_cast<size_t>(b)]; });
  return std::set<int64_t>(order.begin(), order.begin() + k);
}

TEST(ToCaPixArtModel, SelectionsFollowMaskedCfgEntropyStalenessAndSpreadBonus) {
  test::TinyPixArtRun run;
  auto recorder = std::make_shared<RecordingPolicy>(make_policy("toca"));
  CacheContext cache(recorder, /*trace=*/true);
  const int steps = 8;
  run.sample(&cache, steps);
  const int64_t N = 64, P = 2;  // tokens, prompts (rows 0-1 cond, 2-3 uncond)

  // Replay: per layer the entropy terms [4 * 64] and per (layer, kind) the ages [4 * 64].
  std::map<int, std::vector<double>> terms;
  std::map<std::pair<int, SiteKind>, std::vector<int64_t>> ages;
  int64_t checked = 0;
  for (const auto& step : cache.steps()) {
    const int s = step.step.index;
    for (const auto& r : step.sites) {
      const int layer = r.site.layer;
      const auto key = std::make_pair(layer, r.site.kind);
      if (r.action == Action::kCompute) {
        ages[key].assign(static_cast<size_t>(2 * P * N), 0);
        if (r.site.kind == SiteKind::kCrossAttention) {
          ASSERT_TRUE(recorder->maps.count({s, layer})) << "no s2 statistics at a full cross-attention site";
          const auto& map = recorder->maps.at({s, layer});
          ASSERT_EQ(map.sizes(), (std::vector<int64_t>{4, N, 8}));
          // Prompt 0 has 3 valid caption tokens, in both halves (the mask is repeated over CFG).
          EXPECT_EQ(map[0].narrow(-1, 3, 5).abs().max().item<float>(), 0.0f);
          EXPECT_EQ(map[2].narrow(-1, 3, 5).abs().max().item<float>(), 0.0f);
          EXPECT_GT(map[3].narrow(-1, 3, 5).abs().max().item<float>(), 0.0f);
          terms[layer] = entropy_terms_by_hand(map);
        }
        continue;
      }
      if (r.action != Action::kPartial) continue;
      ASSERT_EQ(r.site.kind == SiteKind::kSelfAttention, false);
      auto& t = terms.at(layer);
      auto& age = ages.at(key);
      ASSERT_EQ(r.indices.size(), static_cast<size_t>(4 * r.tokens));
      for (int64_t prompt = 0; prompt < P; ++prompt) {
        // s2 = L2-normalise(1 + e), e = cond terms + uncond terms, shared by both halves.
        std::vector<double> s2(static_cast<size_t>(N));
        double norm = 0;
        for (int64_t i = 0; i < N; ++i) {
          s2[static_cast<size_t>(i)] = 1 + t[static_cast<size_t>(prompt * N + i)] + t[static_cast<size_t>((prompt + P) * N + i)];
          norm += s2[static_cast<size_t>(i)] * s2[static_cast<size_t>(i)];
        }
        for (auto& v : s2) v /= std::sqrt(norm);
        for (int64_t row : {prompt, prompt + P}) {
          std::vector<double> score = s2;
          for (int64_t i = 0; i < N; ++i) score[static_cast<size_t>(i)] += 0.25 * static_cast<double>(age[static_cast<size_t>(row * N + i)]) / 3;
          std::set<int64_t> got(r.indices.begin() + row * r.tokens, r.indices.begin() + (row + 1) * r.tokens);
          EXPECT_EQ(got, top_by_hand(score, r.tokens)) << to_string(r.site) << " step " << s << " row " << row;
          ++checked;
        }
        // Both halves select the same tokens.
        EXPECT_TRUE(std::equal(r.indices.begin() + prompt * r.tokens, r.indices.begin() + (prompt + 1) * r.tokens,
                               r.indices.begin() + (prompt + P) * r.tokens));
      }
      // s3: read before the update, then all +1 and the selected 0.
      for (auto& a : age) ++a;
      for (int64_t row = 0; row < 4; ++row) {
        for (int64_t j = 0; j < r.tokens; ++j) age[static_cast<size_t>(row * N + r.indices[static_cast<size_t>(row * r.tokens + j)])] = 0;
      }
      // Partial cross-attention refreshes the map rows of its recomputed tokens (update_cache).
      if (r.site.kind == SiteKind::kCrossAttention && r.tokens > 0) {
        ASSERT_TRUE(recorder->rows.count({s, layer}));
        const auto& [idx, stats] = recorder->rows.at({s, layer});
        ASSERT_EQ(stats.sizes(), (std::vector<int64_t>{4, r.tokens, 8}));
        const auto fresh = entropy_terms_by_hand(stats);
        for (int64_t row = 0; row < 4; ++row) {
          for (int64_t j = 0; j < r.tokens; ++j) {
            t[static_cast<size_t>(row * N + idx[row][j].item<int64_t>())] = fresh[static_cast<size_t>(row * r.tokens + j)];
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 60);  // 5 partial steps (+ layer 1 of the mixed step) x sites x rows
}

TEST(ToCaPixArtModel, ExactReuseCountsOverEightSteps) {
  // S = 8, N = 3, 64 tokens, depth 2 (layer factor 1.6 - 1.2 layer): full steps 0 and 6; step 4
  // mixed (interval 4 after step 0, 3 after step 4); the token counts by hand from
  // trunc(64 * 0.3 * layer_factor * (1.9 - 1.8 step / 8) * module factor).
  // {step: {layer 0 cross, layer 0 mlp, layer 1 cross, layer 1 mlp}}, -1 = computed.
  const std::map<int, std::vector<int64_t>> expected = {
      {0, {-1, -1, -1, -1}}, {1, {30, 64, 7, 20}}, {2, {26, 64, 6, 17}}, {3, {22, 60, 5, 15}},
      {4, {-1, -1, 4, 12}},  {5, {14, 38, 3, 9}},  {6, {-1, -1, -1, -1}}, {7, {5, 15, 1, 3}}};
  test::TinyPixArtRun run;
  CacheContext cache(make_policy("toca"));
  auto cached = run.sample(&cache, 8);
  auto uncached = run.sample(nullptr, 8);
  EXPECT_TRUE(at::isfinite(cached).all().item<bool>());
  EXPECT_GT(test::relative_max_error(cached, uncached), 1e-4);  // caching changed something
  EXPECT_LT(test::relative_max_error(cached, uncached), 0.5);   // and stayed close
  int64_t computed = 0;
  for (const auto& step : cache.steps()) {
    const auto& want = expected.at(step.step.index);
    ASSERT_EQ(step.sites.size(), 6u);
    for (const auto& r : step.sites) {
      SCOPED_TRACE(to_string(r.site) + " step " + std::to_string(step.step.index));
      const int64_t w = r.site.kind == SiteKind::kSelfAttention ? (want[static_cast<size_t>(2 * r.site.layer)] < 0 ? -1 : 0)
                                                                : want[static_cast<size_t>(2 * r.site.layer + (r.site.kind == SiteKind::kMLP))];
      if (w < 0) {
        EXPECT_EQ(r.action, Action::kCompute);
        EXPECT_EQ(r.tokens, 64);
      } else if (r.site.kind == SiteKind::kSelfAttention) {
        EXPECT_EQ(r.action, Action::kReuse);
        EXPECT_EQ(r.tokens, 0);
      } else {
        EXPECT_EQ(r.action, Action::kPartial);
        EXPECT_EQ(r.tokens, w);
      }
      computed += r.tokens * 4;
    }
  }
  // 2 full steps x 6 sites x 64 + layer 0 of step 4 (3 x 64) + the partial counts, 4 rows each.
  const int64_t by_hand = 4 * (2 * 6 * 64 + 3 * 64 + (30 + 64 + 7 + 20) + (26 + 64 + 6 + 17) + (22 + 60 + 5 + 15) + (4 + 12) +
                               (14 + 38 + 3 + 9) + (5 + 15 + 1 + 3));
  EXPECT_EQ(cache.summary().tokens_computed, by_hand);
  EXPECT_EQ(computed, by_hand);
  EXPECT_EQ(cache.summary().tokens_total, 8 * 6 * 4 * 64);
  // The FLOPs-only count of the same schedule equals what ran.
  CacheContext dry(make_policy("toca"));
  const auto simulated = run.simulate(dry, 8);
  EXPECT_DOUBLE_EQ(simulated.flops, cache.summary().flops);
  EXPECT_DOUBLE_EQ(simulated.full_flops, cache.summary().full_flops);
  EXPECT_GT(cache.summary().flops_speedup(), 1.3);
}

TEST(ToCaPixArtModel, WithoutCfgEveryRowRanksByItsOwnEntropy) {
  test::TinyPixArtRun run;
  CacheContext cache(make_policy("toca:weight=0,bonus=0"), /*trace=*/true);
  run.sample(&cache, 3, /*cfg=*/false);
  // Rows 0 and 2 (prompt 0 and the null caption) have different maps and, without the shared CFG
  // score, select different tokens somewhere.
  bool differ = false;
  for (const auto& step : cache.steps()) {
    for (const auto& r : step.sites) {
      if (r.action != Action::kPartial || r.tokens == 0 || r.tokens == 64) continue;
      std::set<int64_t> a(r.indices.begin(), r.indices.begin() + r.tokens);
      std::set<int64_t> b(r.indices.begin() + 2 * r.tokens, r.indices.begin() + 3 * r.tokens);
      differ = differ || a != b;
    }
  }
  EXPECT_TRUE(differ);
}

}  // namespace
}  // namespace ditcache
