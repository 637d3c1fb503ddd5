// The policy contract on PixArt-α (the tiny model of tests/fixtures/pixart, a CFG batch of two
// prompts driven step by step through the forward): every registered policy has an identity
// setting that reproduces the uncached run, is deterministic, its telemetry adds up over the three
// sites of every block, a non-trivial setting skips work, and the FLOPs-only count equals what ran.
#include <map>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "cache/pixart_cache_run.h"
#include "ditcache/cache/context.h"
#include "ditcache/cache/policy.h"
#include "ditcache/error.h"
#include "test_util.h"

namespace ditcache {
namespace {

// Identity: a setting whose every site is computed at every step. ToCa's PixArt schedule with N = 1
// has interval round(1 / f) = 1 for all f in [0.8, 1.2]: every step full. ToCa runs the
// cross-attention explicitly for s2 (rounding only); random needs no statistics (fused, bit-exact).
// ToCa promises no identity for ratio 1: its step, layer and module factors scale r0 below 1.
struct PixArtCase {
  std::string identity, nontrivial;
  double identity_tol;
};

const std::map<std::string, PixArtCase>& pixart_cases() {
  static const std::map<std::string, PixArtCase> c = {
      {"none", {"none", "none", 0}},
      {"fora", {"fora:interval=1", "fora:interval=3", 0}},
      {"toca", {"toca:interval=1", "toca", 1e-5}},
      {"random", {"random:interval=1,seed=3", "random:seed=3", 0}},
  };
  return c;
}

TEST(PixArtPolicyConformance, EveryRegisteredPolicyHasAPixArtCase) {
  for (const auto& [name, summary] : registered_policies()) {
    EXPECT_TRUE(pixart_cases().count(name)) << "policy '" << name << "' has no PixArt conformance case";
  }
}

class PixArtConformance : public ::testing::TestWithParam<std::string> {};

TEST_P(PixArtConformance, IdentitySettingReproducesUncachedOutput) {
  test::TinyPixArtRun run;
  const auto& c = pixart_cases().at(GetParam());
  const int steps = 6;
  auto uncached = run.sample(nullptr, steps);
  CacheContext cache(make_policy(c.identity));
  auto cached = run.sample(&cache, steps);
  if (c.identity_tol == 0) {
    EXPECT_TRUE(at::equal(cached, uncached));
  } else {
    DITCACHE_EXPECT_CLOSE(cached, uncached, c.identity_tol);
  }
  EXPECT_EQ(cache.summary().computed_share(), 1.0);
  EXPECT_DOUBLE_EQ(cache.summary().flops, cache.summary().full_flops);
}

TEST_P(PixArtConformance, RunsAreDeterministicAndStatsAddUp) {
  test::TinyPixArtRun run;
  const auto& c = pixart_cases().at(GetParam());
  const int steps = 8;
  CacheContext a(make_policy(c.nontrivial)), b(make_policy(c.nontrivial));
  EXPECT_TRUE(at::equal(run.sample(&a, steps), run.sample(&b, steps)));
  const auto s = a.summary();
  ASSERT_EQ(a.steps().size(), static_cast<size_t>(steps));
  int64_t computed = 0;
  for (const auto& step : a.steps()) {
    ASSERT_EQ(step.sites.size(), 6u);  // 2 layers x (attn, cross_attn, mlp)
    for (const auto& r : step.sites) computed += r.tokens * run.rows();
    EXPECT_LE(step.flops, step.full_flops);
  }
  EXPECT_EQ(s.tokens_computed, computed);
  EXPECT_EQ(s.tokens_total, steps * 6 * run.rows() * run.tokens());
  if (GetParam() == "none") {
    EXPECT_EQ(s.flops, s.full_flops);
    EXPECT_EQ(s.cache_bytes, 0);
  } else {
    EXPECT_LT(s.flops, s.full_flops) << "a non-trivial setting must skip work";
    EXPECT_LT(s.tokens_computed, s.tokens_total);
    EXPECT_GT(s.cache_bytes, 0);
  }
}

TEST_P(PixArtConformance, DryRunCountsWhatTheRealRunRan) {
  test::TinyPixArtRun run;
  const auto& c = pixart_cases().at(GetParam());
  std::vector<std::string> specs = {c.nontrivial, c.identity};
  if (GetParam() == "fora") specs.insert(specs.end(), {"fora:interval=2,granularity=block", "fora:interval=3,granularity=step"});
  if (GetParam() == "toca") specs.insert(specs.end(), {"toca:mode=clean", "toca:ratio=0.1,interval=2"});
  for (const auto& spec : specs) {
    SCOPED_TRACE(spec);
    CacheContext real(make_policy(spec));
    run.sample(&real, 8);
    CacheContext dry(make_policy(spec));
    run.simulate(dry, 8);
    ASSERT_EQ(dry.steps().size(), real.steps().size());
    for (size_t i = 0; i < dry.steps().size(); ++i) {
      const auto &d = dry.steps()[i], &r = real.steps()[i];
      EXPECT_EQ(d.mode, r.mode) << "step " << i;
      EXPECT_DOUBLE_EQ(d.flops, r.flops) << "step " << i;
      EXPECT_DOUBLE_EQ(d.full_flops, r.full_flops) << "step " << i;
      ASSERT_EQ(d.sites.size(), r.sites.size());
      for (size_t j = 0; j < d.sites.size(); ++j) {
        EXPECT_EQ(d.sites[j].action, r.sites[j].action);
        EXPECT_EQ(d.sites[j].tokens, r.sites[j].tokens);
      }
    }
    EXPECT_DOUBLE_EQ(dry.summary().flops, real.summary().flops);
  }
}

TEST_P(PixArtConformance, OptionStringRoundTrips) {
  const auto& c = pixart_cases().at(GetParam());
  test::TinyPixArtRun run;
  for (const auto& spec : {c.identity, c.nontrivial, GetParam()}) {
    auto p = make_policy(spec);
    EXPECT_EQ(make_policy(p->to_string())->to_string(), p->to_string());
    EXPECT_NO_THROW(make_policy(p->to_string())->begin_run(run.run_info(8)));
  }
}

INSTANTIATE_TEST_SUITE_P(Policies, PixArtConformance, ::testing::Values("none", "fora", "toca", "random"),
                         [](const auto& info) { return info.param; });

TEST(PixArtPolicies, ForaComputesThenReusesAtEveryGranularity) {
  test::TinyPixArtRun run;
  const int steps = 7;
  for (const std::string granularity : {"module", "block", "step"}) {
    SCOPED_TRACE(granularity);
    CacheContext cache(make_policy("fora:interval=3,granularity=" + granularity));
    auto cached = run.sample(&cache, steps);
    EXPECT_TRUE(at::isfinite(cached).all().item<bool>());
    for (const auto& step : cache.steps()) {
      const bool full = step.step.index % 3 == 0;
      if (granularity == "step") {
        EXPECT_EQ(step.mode, full ? StepMode::kPerSite : StepMode::kReuseOutput);
        if (!full) EXPECT_TRUE(step.sites.empty());
      }
      if (!full) EXPECT_DOUBLE_EQ(step.flops, 0.0) << "step " << step.step.index;
      EXPECT_GT(step.full_flops, 0.0);
      for (const auto& r : step.sites) {
        EXPECT_EQ(r.action, full ? Action::kCompute : Action::kReuse);
        EXPECT_EQ(r.site.kind == SiteKind::kBlock, granularity == "block");
      }
      if (full) EXPECT_DOUBLE_EQ(step.flops, step.full_flops);
    }
  }
}

TEST(PixArtPolicies, BadOptionsForPixArtAreErrors) {
  test::TinyPixArtRun run;
  const auto info = run.run_info(8);
  test::expect_error([&] { make_policy("toca:schedule=ddpm250")->begin_run(info); }, ErrorCode::kInvalidArgument, "schedule=ddpm250 is not one of PixArt's: pixart");
  test::expect_error([&] { make_policy("random:grid=3")->begin_run(info); }, ErrorCode::kInvalidArgument, "s4 grid 3");
  RunInfo unknown = info;
  unknown.model = "Flux";
  unknown.toca = nullptr;
  test::expect_error([&] { make_policy("toca")->begin_run(unknown); }, ErrorCode::kUnsupported, "model 'Flux' has no ToCa profile");
}

// Forwards to a real policy and counts the attention statistics it asks for, per site kind.
class CountingPolicy : public CachePolicy {
 public:
  explicit CountingPolicy(std::unique_ptr<CachePolicy> inner) : inner_(std::move(inner)) {}
  std::map<SiteKind, int> requested, observed, observed_rows;
  std::string name() const override { return inner_->name(); }
  std::string to_string() const override { return inner_->to_string(); }
  void begin_run(const RunInfo& run) override { inner_->begin_run(run); }
  StepMode begin_step(const StepInfo& step) override { return inner_->begin_step(step); }
  SiteDecision decide(const SiteState& state, bool dry) override {
    auto d = inner_->decide(state, dry);
    if (d.attention_stats) ++requested[state.site.kind];
    return d;
  }
  void observe_attention(const Site& site, const at::Tensor& stats) override {
    ++observed[site.kind];
    inner_->observe_attention(site, stats);
  }
  void observe_attention_rows(const Site& site, const at::Tensor& indices, const at::Tensor& stats) override {
    ++observed_rows[site.kind];
    inner_->observe_attention_rows(site, indices, stats);
  }
  void end_step() override { inner_->end_step(); }

 private:
  std::unique_ptr<CachePolicy> inner_;
};

TEST(PixArtPolicies, OnlyToCaAsksForCrossAttentionStatistics) {
  test::TinyPixArtRun run;
  for (const std::string spec : {"toca", "random:seed=1", "fora:interval=2"}) {
    SCOPED_TRACE(spec);
    auto counting = std::make_shared<CountingPolicy>(make_policy(spec));
    CacheContext cache(counting);
    run.sample(&cache, 8);
    int computed = 0, partial = 0;
    for (const auto& step : cache.steps()) {
      for (const auto& r : step.sites) {
        if (r.site.kind != SiteKind::kCrossAttention) continue;
        computed += r.action == Action::kCompute;
        partial += r.action == Action::kPartial && r.tokens > 0;
      }
    }
    const bool toca = spec == "toca";
    // PixArt's ToCa needs no self-attention map (s1 unused), and the cross-attention map wherever
    // the cross-attention runs: whole at full blocks, the recomputed rows at partial ones.
    EXPECT_EQ(counting->requested[SiteKind::kSelfAttention], 0);
    EXPECT_EQ(counting->observed[SiteKind::kCrossAttention], toca ? computed : 0);
    EXPECT_EQ(counting->observed_rows[SiteKind::kCrossAttention], toca ? partial : 0);
    EXPECT_EQ(counting->requested[SiteKind::kCrossAttention], toca ? computed + partial : 0);
    if (toca) EXPECT_GT(partial, 0);
  }
}

}  // namespace
}  // namespace ditcache
