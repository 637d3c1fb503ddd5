// ToCa against the official DiT-ToCa code (fixtures from scripts/fixtures/toca_fixtures.py): the
// same tokens selected at every partial site of every step, per batch row, and the same samples.
#include <set>

#include <fmt/format.h>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "ditcache/cache/context.h"
#include "ditcache/io/weights.h"
#include "ditcache/pipeline.h"
#include "test_util.h"

namespace ditcache {
namespace {

struct OfficialRun {
  std::string name, respacing;
  SamplerKind sampler;
};

class ToCaParity : public ::testing::TestWithParam<OfficialRun> {};

TEST_P(ToCaParity, SameTokensAndSamplesAsTheOfficialCode) {
  const auto& param = GetParam();
  auto runs = open_weights(test::fixture("toca/toca_tiny_runs.safetensors"));
  const auto& meta = runs->metadata();
  DiT model(DiTConfig::from_json(R"({"name": "DiT-toca-tiny", "depth": 28, "hidden_size": 16, "num_heads": 2,
    "patch_size": 2, "input_size": 8, "num_classes": 10})"));
  model->load(*open_weights(test::fixture("toca/dit_toca_tiny.safetensors")));
  model->eval();

  const std::string policy = meta.at(param.name + "_policy");
  CacheContext cache(make_policy(policy), /*trace=*/true);
  DiTSampleOptions o;
  o.class_labels = {1, 7};
  o.respacing = param.respacing;
  o.sampler = param.sampler;
  o.guidance_scale = 4.0;
  o.seed = 0;
  o.cache = &cache;
  auto samples = sample_dit(model, o);

  int64_t partial_sites = 0, compared = 0;
  for (const auto& step : cache.steps()) {
    for (const auto& site : step.sites) {
      if (site.action != Action::kPartial) continue;
      ++partial_sites;
      const auto key = fmt::format("{}_idx_{}_{}", param.name, step.step.index, site.site.layer);
      ASSERT_TRUE(runs->contains(key)) << "the official code ran no partial MLP at step " << step.step.index << " layer "
                                       << site.site.layer << " (" << policy << ")";
      auto official = runs->load(key);  // [4, k]
      ASSERT_EQ(official.size(1), site.tokens) << key;
      for (int64_t row = 0; row < official.size(0); ++row) {
        std::set<int64_t> expected, got;
        for (int64_t j = 0; j < site.tokens; ++j) {
          expected.insert(official[row][j].item<int64_t>());
          got.insert(site.indices[static_cast<size_t>(row * site.tokens + j)]);
        }
        EXPECT_EQ(got, expected) << key << " row " << row;
      }
      ++compared;
    }
  }
  EXPECT_EQ(partial_sites, std::stoll(meta.at(param.name + "_partial_sites")))
      << "the number of partial (step, layer) sites differs from the official schedule";
  EXPECT_GT(compared, 100);
  DITCACHE_EXPECT_CLOSE(samples, runs->load(param.name + "_samples"), 1e-4);
  // FLOPs: the official counter charges both LayerNorms on all N tokens at partial steps; ours
  // charges the MLP LayerNorm on the k recomputed tokens only (what ran). Everything else agrees.
  const double official_flops = std::stod(meta.at(param.name + "_flops"));
  EXPECT_NEAR(cache.summary().flops / official_flops, 1.0, 5e-3);
  EXPECT_LE(cache.summary().flops, official_flops);
}

INSTANTIATE_TEST_SUITE_P(Official, ToCaParity,
                         ::testing::Values(OfficialRun{"ddim10", "ddim10", SamplerKind::kDDIM},
                                           OfficialRun{"ddpm12", "12", SamplerKind::kDDPM}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace ditcache
