// The policy contract on OpenSora's STDiT3 (the tiny model of the shared fixtures, rflow with CFG):
// every registered policy has an identity setting that reproduces the uncached run, is
// deterministic, its telemetry adds up over spatial and temporal blocks, and a non-trivial setting
// skips work. Plus the cache's storage options (reduced precision, host memory).
#include <map>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "opensora_fixtures.h"
#include "ditcache/cache/context.h"
#include "ditcache/cache/policy.h"
#include "test_util.h"

namespace ditcache {
namespace {

// Identity: a setting (and step count) whose every site is computed. ToCa on OpenSora has fixed
// cycles, so its identity is a run of only the always-full steps 0-2.
struct VideoCase {
  std::string identity;
  int identity_steps;
  std::string nontrivial;
  double identity_tol;  // 0: bit-identical; toca/random run the cross-attention explicitly (s2)
};

const std::map<std::string, VideoCase>& video_cases() {
  static const std::map<std::string, VideoCase> c = {
      {"none", {"none", 6, "none", 0}},
      {"fora", {"fora:interval=1", 6, "fora:interval=3", 0}},
      {"toca", {"toca", 3, "toca", 1e-5}},
      {"random", {"random:seed=3", 3, "random:seed=3", 1e-5}},
  };
  return c;
}

TEST(VideoPolicyConformance, EveryRegisteredPolicyHasAVideoCase) {
  for (const auto& [name, summary] : registered_policies()) {
    EXPECT_TRUE(video_cases().count(name)) << "policy '" << name << "' has no STDiT3 conformance case";
  }
}

class VideoConformance : public ::testing::TestWithParam<std::string> {};

TEST_P(VideoConformance, IdentitySettingReproducesUncachedOutput) {
  DITCACHE_REQUIRE_TINY_VIDEO();
  test::TinyVideoRun run;
  const auto& c = video_cases().at(GetParam());
  auto uncached = run.sample(nullptr, c.identity_steps);
  CacheContext cache(make_policy(c.identity));
  auto cached = run.sample(&cache, c.identity_steps);
  if (c.identity_tol == 0) {
    EXPECT_TRUE(at::equal(cached, uncached));
  } else {
    DITCACHE_EXPECT_CLOSE(cached, uncached, c.identity_tol);
  }
  EXPECT_EQ(cache.summary().computed_share(), 1.0);
}

TEST_P(VideoConformance, RunsAreDeterministicAndStatsAddUp) {
  DITCACHE_REQUIRE_TINY_VIDEO();
  test::TinyVideoRun run;
  const auto& c = video_cases().at(GetParam());
  const int steps = 8;
  CacheContext a(make_policy(c.nontrivial)), b(make_policy(c.nontrivial));
  EXPECT_TRUE(at::equal(run.sample(&a, steps), run.sample(&b, steps)));
  const auto s = a.summary();
  const int64_t rows = 2 * run.n;
  ASSERT_EQ(a.steps().size(), static_cast<size_t>(steps));
  int64_t computed = 0;
  for (const auto& step : a.steps()) {
    ASSERT_EQ(step.sites.size(), 12u);  // 2 layers x (spatial, temporal) x (attn, cross_attn, mlp)
    for (const auto& r : step.sites) computed += r.tokens * rows;
    EXPECT_LE(step.flops, step.full_flops);
  }
  EXPECT_EQ(s.tokens_computed, computed);
  EXPECT_EQ(s.tokens_total, steps * 12 * rows * run.tokens());
  if (GetParam() == "none") {
    EXPECT_EQ(s.flops, s.full_flops);
    EXPECT_EQ(s.cache_bytes, 0);
  } else {
    EXPECT_LT(s.flops, s.full_flops) << "a non-trivial setting must skip work";
    EXPECT_LT(s.tokens_computed, s.tokens_total);
    EXPECT_GT(s.cache_bytes, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Policies, VideoConformance, ::testing::Values("none", "fora", "toca", "random"),
                         [](const auto& info) { return info.param; });

TEST(CacheStorage, ReducedPrecisionHalvesTheCacheAndStaysClose) {
  DITCACHE_REQUIRE_TINY_VIDEO();
  test::TinyVideoRun run;
  const int steps = 8;
  CacheContext full(make_policy("toca"));
  auto reference = run.sample(&full, steps);
  CacheContext half(make_policy("toca"));
  half.set_storage({at::kBFloat16, std::nullopt});
  auto reduced = run.sample(&half, steps);
  // The same decisions, the stored outputs rounded to bf16: close, but not the same numbers.
  ASSERT_EQ(half.steps().size(), full.steps().size());
  for (size_t i = 0; i < half.steps().size(); ++i) {
    for (size_t j = 0; j < half.steps()[i].sites.size(); ++j) {
      EXPECT_EQ(half.steps()[i].sites[j].action, full.steps()[i].sites[j].action);
    }
  }
  EXPECT_FALSE(at::equal(reduced, reference));
  DITCACHE_EXPECT_CLOSE(reduced, reference, 2e-2);
  // Stores are half the bytes; the int32 ages and the kept model output stay as they are.
  const int64_t rows = 2 * run.n;
  const int64_t fixed = 12 * rows * run.tokens() * 4 + rows * 4 * run.frames * 4 * 6 * 4;
  EXPECT_EQ(full.summary().cache_bytes - fixed, 2 * (half.summary().cache_bytes - fixed));
}

TEST(CacheStorage, HostStorageGivesTheSameNumbers) {
  DITCACHE_REQUIRE_TINY_VIDEO();
  test::TinyVideoRun run;
  CacheContext device(make_policy("fora:interval=2")), host(make_policy("fora:interval=2"));
  host.set_storage({std::nullopt, at::Device(at::kCPU)});
  EXPECT_TRUE(at::equal(run.sample(&host, 5), run.sample(&device, 5)));
  EXPECT_EQ(host.summary().cache_bytes, device.summary().cache_bytes);
}

}  // namespace
}  // namespace ditcache
