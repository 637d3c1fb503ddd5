// The cache context and every registered policy on the tiny DiT: the same contract for all
// (identity settings reproduce the uncached output, runs are deterministic, stats add up, a
// non-trivial setting really skips work, bad options throw, option strings round-trip), plus the
// exact behaviour of each policy.
#include <set>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cache/policies/toca_scores.h"
#include "dit/dit_toca.h"
#include "ditcache/cache/context.h"
#include "ditcache/cache/policies.h"
#include "ditcache/cache/toca.h"
#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "ditcache/pipeline.h"
#include "test_util.h"

namespace ditcache {
namespace {

DiT tiny_model() {
  auto c = DiTConfig::from_json(R"({"name": "DiT-tiny", "depth": 2, "hidden_size": 64, "num_heads": 4,
    "patch_size": 2, "input_size": 8, "num_classes": 10})");
  DiT model(c);
  model->load(*open_weights(test::fixture("dit/dit_tiny_original.safetensors")));
  model->eval();
  return model;
}

DiTSampleOptions options(SamplerKind sampler = SamplerKind::kDDIM, int64_t steps = 10) {
  DiTSampleOptions o;
  o.class_labels = {1, 7};
  o.sampler = sampler;
  o.steps = steps;
  o.guidance_scale = 4.0;
  o.seed = 5;
  return o;
}

struct Run {
  at::Tensor latents;
  std::unique_ptr<CacheContext> cache;
};

Run run(DiT& model, const std::string& policy, DiTSampleOptions o = options(), bool trace = false) {
  Run r;
  r.cache = std::make_unique<CacheContext>(make_policy(policy), trace);
  o.cache = r.cache.get();
  r.latents = sample_dit(model, o);
  return r;
}

// Identity settings (must reproduce the uncached output) and non-trivial settings of every policy.
struct PolicyCase {
  std::string identity, nontrivial;
  double identity_tol;  // 0: bit-identical; toca/random compute s1 with explicit attention
};
const std::map<std::string, PolicyCase>& cases() {
  static const std::map<std::string, PolicyCase> c = {
      {"none", {"none", "none", 0}},
      {"fora", {"fora:interval=1", "fora:interval=3", 0}},
      {"toca", {"toca:ratio=0,interval=1", "toca:ratio=0.07,interval=3", 1e-5}},
      {"random", {"random:ratio=0,interval=1", "random:ratio=0.07,interval=3,seed=9", 1e-5}},
  };
  return c;
}

TEST(PolicyConformance, EveryRegisteredPolicyHasACase) {
  for (const auto& [name, summary] : registered_policies()) {
    EXPECT_TRUE(cases().count(name)) << "policy '" << name << "' has no conformance case";
    EXPECT_FALSE(summary.empty());
  }
}

class Conformance : public ::testing::TestWithParam<std::string> {};

TEST_P(Conformance, IdentitySettingReproducesUncachedOutput) {
  auto model = tiny_model();
  const auto& c = cases().at(GetParam());
  auto uncached = sample_dit(model, options());
  auto cached = run(model, c.identity);
  if (c.identity_tol == 0) {
    EXPECT_TRUE(at::equal(cached.latents, uncached));
  } else {
    DITCACHE_EXPECT_CLOSE(cached.latents, uncached, c.identity_tol);
  }
  EXPECT_EQ(cached.cache->summary().computed_share(), 1.0);
}

TEST_P(Conformance, RunsAreDeterministicAndStatsAddUp) {
  auto model = tiny_model();
  const auto& c = cases().at(GetParam());
  auto a = run(model, c.nontrivial), b = run(model, c.nontrivial);
  EXPECT_TRUE(at::equal(a.latents, b.latents));
  const auto s = a.cache->summary();
  // Telemetry adds up: one record per site of every block of every step.
  ASSERT_EQ(a.cache->steps().size(), 10u);
  int64_t computed = 0;
  for (const auto& step : a.cache->steps()) {
    ASSERT_EQ(step.sites.size(), 4u);  // 2 layers x (attn, mlp)
    for (const auto& r : step.sites) computed += r.tokens * 4;  // 4 rows (2 labels, CFG)
    EXPECT_LE(step.flops, step.full_flops);
  }
  EXPECT_EQ(s.tokens_computed, computed);
  EXPECT_EQ(s.tokens_total, 10 * 4 * 4 * 16);
  if (GetParam() != "none") {
    EXPECT_LT(s.flops, s.full_flops) << "a non-trivial setting must skip work";
    EXPECT_LT(s.tokens_computed, s.tokens_total);
    EXPECT_GT(s.cache_bytes, 0);
  } else {
    EXPECT_EQ(s.flops, s.full_flops);
    EXPECT_EQ(s.cache_bytes, 0) << "an uncached run keeps nothing alive";
  }
}

TEST_P(Conformance, DryRunCountsWhatTheRealRunRan) {
  auto model = tiny_model();
  const auto& c = cases().at(GetParam());
  auto real = run(model, c.nontrivial);
  CacheContext dry(make_policy(c.nontrivial));
  simulate_dit(model->config(), options(), dry);
  ASSERT_EQ(dry.steps().size(), real.cache->steps().size());
  for (size_t i = 0; i < dry.steps().size(); ++i) {
    const auto &d = dry.steps()[i], &r = real.cache->steps()[i];
    EXPECT_DOUBLE_EQ(d.flops, r.flops) << "step " << i;
    ASSERT_EQ(d.sites.size(), r.sites.size());
    for (size_t j = 0; j < d.sites.size(); ++j) {
      EXPECT_EQ(d.sites[j].action, r.sites[j].action);
      EXPECT_EQ(d.sites[j].tokens, r.sites[j].tokens);
    }
  }
}

TEST_P(Conformance, OptionStringRoundTripsAndBadOptionsThrow) {
  const auto& c = cases().at(GetParam());
  for (const auto& spec : {c.identity, c.nontrivial, GetParam()}) {
    auto p = make_policy(spec);
    EXPECT_EQ(make_policy(p->to_string())->to_string(), p->to_string());
  }
  EXPECT_THROW(make_policy(GetParam() + ":no_such_option=1"), Error);
  if (GetParam() != "none") {
    EXPECT_THROW(make_policy(GetParam() + ":interval=-1"), Error);
    EXPECT_THROW(make_policy(GetParam() + ":interval=abc"), Error);
  }
}

INSTANTIATE_TEST_SUITE_P(AllPolicies, Conformance, ::testing::Values("none", "fora", "toca", "random"));

TEST(PolicyRegistry, ErrorsNameTheProblem) {
  auto message = [](const std::string& spec) {
    try {
      make_policy(spec);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("teacache").find("unknown cache policy 'teacache'; known: fora, none, random, toca"), std::string::npos);
  EXPECT_NE(message("toca:ratio=1.5").find("toca: option ratio=1.5 is out of range; expected 0 <= ratio <= 1"), std::string::npos);
  EXPECT_NE(message("toca:ratoi=0.1").find("unknown option 'ratoi'"), std::string::npos);
  EXPECT_NE(message("toca:ratio").find("option 'ratio' is not key=value"), std::string::npos);
  EXPECT_NE(message("toca:schedule=").find("option 'schedule=' is not key=value"), std::string::npos);
  EXPECT_NE(message("fora:interval=2,interval=3").find("given twice"), std::string::npos);
  EXPECT_NE(message(":x=1").find("no policy name"), std::string::npos);
  EXPECT_NE(message("none:interval=2").find("unknown option 'interval'"), std::string::npos);
}

// A policy that replays a script and records the ages it was shown.
class ScriptedPolicy : public CachePolicy {
 public:
  std::vector<SiteDecision> script;
  std::vector<at::Tensor> seen_ages;
  size_t next = 0;
  std::string name() const override { return "scripted"; }
  std::string to_string() const override { return "scripted"; }
  void begin_run(const RunInfo&) override {}
  StepMode begin_step(const StepInfo&) override { return StepMode::kPerSite; }
  SiteDecision decide(const SiteState& state, bool) override {
    seen_ages.push_back(state.ages.defined() ? state.ages.clone() : at::Tensor());
    return script.at(next++);
  }
};

TEST(CacheContext, PartialScattersFreshRowsAndAgesReadBeforeUpdate) {
  auto policy = std::make_shared<ScriptedPolicy>();
  SiteDecision compute, partial, reuse;
  partial.action = Action::kPartial;
  partial.tokens = 2;
  partial.indices = at::tensor({1, 3, 0, 2}, at::kLong).reshape({2, 2});
  reuse.action = Action::kReuse;
  policy->script = {compute, partial, reuse, partial};
  CacheContext ctx(policy);
  RunInfo run;
  run.model = "test";
  run.batch = 2;
  run.num_tokens = 4;
  run.depth = 1;
  run.site_kinds = {SiteKind::kMLP};
  ctx.begin_run(run);
  const Site site{0, BlockKind::kSpatial, SiteKind::kMLP};
  auto double_it = [](const at::Tensor& t) { return t * 2; };
  auto x = at::arange(8, at::kFloat).reshape({2, 4, 1});
  std::vector<at::Tensor> outs;
  for (int step = 0; step < 4; ++step) {
    ctx.begin_step({3 - step, step});
    outs.push_back(ctx.run(site, x + 100 * step, double_it).clone());
    ctx.end_step();
  }
  EXPECT_TRUE(at::equal(outs[0], x * 2));
  // Step 1: row 0 tokens 1, 3 and row 1 tokens 0, 2 recomputed from the current input.
  auto expected = x * 2;
  expected.index_put_({0, 1}, (x[0][1] + 100) * 2);
  expected.index_put_({0, 3}, (x[0][3] + 100) * 2);
  expected.index_put_({1, 0}, (x[1][0] + 100) * 2);
  expected.index_put_({1, 2}, (x[1][2] + 100) * 2);
  EXPECT_TRUE(at::equal(outs[1], expected)) << outs[1];
  EXPECT_TRUE(at::equal(outs[2], expected));  // reuse returns the store as is
  // Ages as the policy saw them (before each step's update): 0 / 1,0,1,0 / 2,0,2,0.
  EXPECT_FALSE(policy->seen_ages[0].defined());
  EXPECT_TRUE(at::equal(policy->seen_ages[1], at::zeros({2, 4}, at::kInt)));
  EXPECT_TRUE(at::equal(policy->seen_ages[2], at::tensor({1, 0, 1, 0, 0, 1, 0, 1}, at::kInt).reshape({2, 4})));
  EXPECT_TRUE(at::equal(policy->seen_ages[3], at::tensor({2, 1, 2, 1, 1, 2, 1, 2}, at::kInt).reshape({2, 4})));
  const auto s = ctx.summary();
  EXPECT_EQ(s.tokens_computed, 2 * (4 + 2 + 0 + 2));
  EXPECT_EQ(s.tokens_total, 2 * 4 * 4);
}

TEST(CacheContext, RejectsReuseBeforeCompute) {
  auto policy = std::make_shared<ScriptedPolicy>();
  SiteDecision reuse;
  reuse.action = Action::kReuse;
  policy->script = {reuse};
  CacheContext ctx(policy);
  RunInfo run;
  run.batch = 1;
  run.num_tokens = 2;
  ctx.begin_run(run);
  ctx.begin_step({0, 0});
  try {
    ctx.run({0, BlockKind::kSpatial, SiteKind::kMLP}, at::zeros({1, 2, 3}), [](const at::Tensor& t) { return t; });
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("asked to reuse site spatial.0.mlp before it was ever computed"), std::string::npos) << e.what();
  }
}

TEST(ForaPolicy, ReusesExactlyOnItsInterval) {
  auto model = tiny_model();
  for (const std::string granularity : {"module", "block", "step"}) {
    auto r = run(model, "fora:interval=3,granularity=" + granularity);
    for (const auto& step : r.cache->steps()) {
      const bool full = step.step.position % 3 == 0;
      if (granularity == "step") {
        EXPECT_EQ(step.mode, full ? StepMode::kPerSite : StepMode::kReuseOutput);
        EXPECT_EQ(step.flops, full ? step.full_flops : 0.0);
      }
      for (const auto& site : step.sites) {
        EXPECT_EQ(site.action, full ? Action::kCompute : Action::kReuse) << granularity;
        if (granularity == "block") EXPECT_EQ(site.site.kind, SiteKind::kBlock);
      }
    }
    // positions 0, 3, 6, 9 of 10 are computed
    EXPECT_DOUBLE_EQ(r.cache->summary().computed_share(), 0.4) << granularity;
  }
}

TEST(ToCaPolicy, PartialStepsReuseAttentionAndRecomputeSelectedMlpTokens) {
  auto model = tiny_model();
  auto r = run(model, "toca:ratio=0.3,interval=3,schedule=ddim50", options(SamplerKind::kDDIM, 10), true);
  int partial = 0;
  for (const auto& step : r.cache->steps()) {
    for (size_t i = 0; i < step.sites.size(); i += 2) {
      const auto &attn = step.sites[i], &mlp = step.sites[i + 1];
      if (attn.action == Action::kCompute) {
        EXPECT_EQ(mlp.action, Action::kCompute);
        continue;
      }
      EXPECT_EQ(attn.action, Action::kReuse);
      ASSERT_EQ(mlp.action, Action::kPartial);
      const double ratio = toca::fresh_ratio("ddim50", 0.3, step.step.index, 10, mlp.site.layer, 1, SiteKind::kMLP);
      EXPECT_EQ(mlp.tokens, toca::fresh_tokens(ratio, 16));
      if (mlp.tokens == 0) continue;
      ++partial;
      ASSERT_EQ(mlp.indices.size(), static_cast<size_t>(4 * mlp.tokens));
      for (int64_t row = 0; row < 4; ++row) {  // distinct, in range
        std::set<int64_t> unique(mlp.indices.begin() + row * mlp.tokens, mlp.indices.begin() + (row + 1) * mlp.tokens);
        EXPECT_EQ(unique.size(), static_cast<size_t>(mlp.tokens));
        EXPECT_LT(*unique.rbegin(), 16);
      }
    }
  }
  EXPECT_GT(partial, 0) << "the schedule must produce partial steps with recomputed tokens";
  // Trace JSON carries the same decisions.
  auto trace = nlohmann::json::parse(r.cache->trace_json());
  EXPECT_EQ(trace["steps"].size(), 10u);
  EXPECT_EQ(trace["steps"][0]["sites"][1]["action"], "compute");
}

TEST(ToCaPolicy, RandomScoresAreSharedByTheCfgHalves) {
  auto model = tiny_model();
  auto r = run(model, "random:ratio=0.3,interval=3,schedule=ddim50,seed=4,weight=0,bonus=0", options(), true);
  int checked = 0;
  for (const auto& step : r.cache->steps()) {
    for (const auto& site : step.sites) {
      if (site.action != Action::kPartial || site.tokens == 0) continue;
      const int64_t k = site.tokens;
      // rows 0, 1 = cond, rows 2, 3 = uncond: the same tokens in each pair.
      for (int64_t row = 0; row < 2; ++row) {
        EXPECT_TRUE(std::equal(site.indices.begin() + row * k, site.indices.begin() + (row + 1) * k,
                               site.indices.begin() + (row + 2) * k));
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
  // Another seed selects other tokens.
  auto other = run(model, "random:ratio=0.3,interval=3,schedule=ddim50,seed=5,weight=0,bonus=0", options(), true);
  EXPECT_FALSE(at::equal(other.latents, r.latents));
}

TEST(ToCaPolicy, UnsupportedLayoutsAreErrors) {
  auto policy = make_policy("toca:grid=3");
  CacheContext ctx(std::move(policy));
  auto model = tiny_model();  // 4x4 token grid: s4 grid 3 does not divide it
  auto o = options();
  o.cache = &ctx;
  EXPECT_THROW(sample_dit(model, o), Error);
  // A model without a ToCa schedule (PixArt has one now: tests/cache/test_toca_pixart.cpp).
  RunInfo other;
  other.model = "Flux";
  other.depth = 2;
  other.batch = 2;
  other.num_tokens = 16;
  other.grid_h = other.grid_w = 4;
  other.num_steps = 10;
  other.site_kinds = {SiteKind::kSelfAttention, SiteKind::kMLP};
  test::expect_error([&] { make_policy("toca")->begin_run(other); }, ErrorCode::kUnsupported, "model 'Flux' has no ToCa profile");
  // A schedule the family does not have is refused when the run starts, naming the family's.
  const auto config = DiTConfig::preset("DiT-S/2-256");
  const auto dit = make_run_info(backbone_info(config), dit_run_shape(config, 2, true), 10, "ddim");
  test::expect_error([&] { make_policy("toca:schedule=linear")->begin_run(dit); }, ErrorCode::kInvalidArgument,
                     "toca: schedule=linear is not one of DiT's: ddim50, ddpm250 (or auto)");
  test::expect_error([&] { make_policy("toca:schedule=pixart")->begin_run(dit); }, ErrorCode::kInvalidArgument,
                     "schedule=pixart is not one of DiT's");
}

// Forwards to a real policy and counts the attention statistics it asks for and receives.
class CountingPolicy : public CachePolicy {
 public:
  explicit CountingPolicy(std::unique_ptr<CachePolicy> inner) : inner_(std::move(inner)) {}
  int requested = 0, observed = 0, computed_attention = 0;
  std::string name() const override { return inner_->name(); }
  std::string to_string() const override { return inner_->to_string(); }
  void begin_run(const RunInfo& run) override { inner_->begin_run(run); }
  StepMode begin_step(const StepInfo& step) override { return inner_->begin_step(step); }
  SiteDecision decide(const SiteState& state, bool dry) override {
    auto d = inner_->decide(state, dry);
    requested += d.attention_stats;
    computed_attention += state.site.kind == SiteKind::kSelfAttention && d.action == Action::kCompute;
    return d;
  }
  void observe_attention(const Site& site, const at::Tensor& sums) override {
    ++observed;
    EXPECT_EQ(sums.dim(), 2);
    inner_->observe_attention(site, sums);
  }
  void end_step() override { inner_->end_step(); }

 private:
  std::unique_ptr<CachePolicy> inner_;
};

TEST(AttentionStatistics, ComputedOnlyWhereThePolicyAsks) {
  auto model = tiny_model();
  for (const std::string spec : {"toca:ratio=0.3,interval=3", "fora:interval=2", "random:ratio=0.3"}) {
    auto counting = std::make_shared<CountingPolicy>(make_policy(spec));
    CacheContext cache(counting);
    auto o = options();
    o.cache = &cache;
    sample_dit(model, o);
    const bool toca = spec.rfind("toca", 0) == 0;
    // ToCa needs s1 at every computed self-attention site (its full blocks), nothing elsewhere.
    EXPECT_EQ(counting->requested, toca ? counting->computed_attention : 0) << spec;
    EXPECT_EQ(counting->observed, counting->requested) << spec;
    EXPECT_GT(counting->computed_attention, 0) << spec;
  }
}

TEST(TypedPolicyConfigs, BuildTheSamePoliciesAsOptionStrings) {
  ForaConfig fora;
  fora.interval = 4;
  fora.granularity = "block";
  EXPECT_EQ(make_fora_policy(fora)->to_string(), make_policy("fora:interval=4,granularity=block")->to_string());
  EXPECT_TRUE(make_fora_policy(fora)->uses_block_sites());
  ToCaConfig toca;
  toca.ratio = 0.1;
  toca.interval = 5;
  EXPECT_EQ(make_toca_policy(toca)->to_string(), make_policy("toca:ratio=0.1,interval=5")->to_string());
  toca.score = "random";
  toca.seed = 3;
  EXPECT_EQ(make_toca_policy(toca)->name(), "random");
  EXPECT_EQ(make_none_policy()->to_string(), "none");
  fora.interval = 0;
  EXPECT_THROW(make_fora_policy(fora), Error);
  fora.interval = 2;
  fora.granularity = "layer";
  EXPECT_THROW(fora.validate(), Error);
  toca.ratio = 1.5;
  EXPECT_THROW(make_toca_policy(toca), Error);
  toca.ratio = 0.1;
  toca.mode = "fast";
  EXPECT_THROW(toca.validate(), Error);
}

}  // namespace
}  // namespace ditcache
