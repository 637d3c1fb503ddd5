#pragma once
// Test helpers about cache runs: a dry (FLOPs-only) run must retrace a real run exactly.

#include <string>

#include <gtest/gtest.h>

#include "ditcache/cache/context.h"

namespace ditcache::test {

/// Every step of `dry` has the mode, FLOPs and per-site actions and token counts of the same
/// step of `real`, the totals agree, and a policy other than `none` skipped some work.
inline void expect_dry_retraces_real(const CacheContext& real, const CacheContext& dry, const std::string& policy) {
  EXPECT_FALSE(dry.dry());
  ASSERT_EQ(dry.steps().size(), real.steps().size());
  EXPECT_EQ(dry.run_info().batch, real.run_info().batch);
  for (size_t i = 0; i < real.steps().size(); ++i) {
    const auto& r = real.steps()[i];
    const auto& d = dry.steps()[i];
    EXPECT_EQ(r.mode, d.mode) << "step " << i;
    EXPECT_DOUBLE_EQ(r.flops, d.flops) << "step " << i;
    EXPECT_DOUBLE_EQ(r.full_flops, d.full_flops) << "step " << i;
    ASSERT_EQ(r.sites.size(), d.sites.size()) << "step " << i;
    for (size_t s = 0; s < r.sites.size(); ++s) {
      EXPECT_TRUE(r.sites[s].site == d.sites[s].site) << "step " << i << " site " << s;
      EXPECT_EQ(r.sites[s].action, d.sites[s].action) << "step " << i << " " << to_string(r.sites[s].site);
      EXPECT_EQ(r.sites[s].tokens, d.sites[s].tokens) << "step " << i << " " << to_string(r.sites[s].site);
    }
  }
  const auto rs = real.summary(), ds = dry.summary();
  EXPECT_DOUBLE_EQ(rs.flops, ds.flops);
  EXPECT_DOUBLE_EQ(rs.full_flops, ds.full_flops);
  EXPECT_GT(rs.full_flops, 0);
  if (policy != "none") EXPECT_LT(rs.flops, rs.full_flops) << "the policy never skipped work";
}

}  // namespace ditcache::test
