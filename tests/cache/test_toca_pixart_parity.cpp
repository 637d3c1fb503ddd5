// ToCa on PixArt-α against the official PixArt-alpha-ToCa code (fixtures from
// scripts/fixtures/toca_pixart_fixtures.py): a 28-layer tiny PixArt, 10 steps of a guided loop over a
// CFG batch of two prompts (3 and 8 valid caption tokens), the same tokens selected at every partial
// cross-attention and MLP site of every step and batch row, and the same final latents.
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "ditcache/cache/context.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/pixart.h"
#include "test_util.h"

namespace ditcache {
namespace {

TEST(ToCaPixArtParity, SameTokensAndLatentsAsTheOfficialCode) {
  // 28 layers of tiny ops: one intra-op thread avoids OpenMP spin-waits on a loaded 2-core machine
  // (seconds instead of ~30 s); the thread count is restored afterwards.
  struct OneThread {
    int saved = at::get_num_threads();
    OneThread() { at::set_num_threads(1); }
    ~OneThread() { at::set_num_threads(saved); }
  } one_thread;
  auto runs = open_weights(test::fixture("toca/pixart_toca_runs.safetensors"));
  const auto& meta = runs->metadata();
  const auto tiny = nlohmann::json::parse(meta.at("config"));
  PixArtConfig config;
  config.name = "PixArt-toca-tiny";
  config.depth = tiny.at("depth");
  config.hidden_size = tiny.at("hidden_size");
  config.num_heads = tiny.at("num_heads");
  config.patch_size = tiny.at("patch_size");
  config.in_channels = tiny.at("in_channels");
  config.caption_channels = tiny.at("caption_channels");
  config.model_max_length = tiny.at("model_max_length");
  config.input_size = tiny.at("input_size");
  config.lewei_scale = 1.0;
  PixArt model(config);
  model->load(*open_weights(test::fixture("toca/pixart_toca_tiny.safetensors")));
  model->eval();

  const int steps = std::stoi(meta.at("steps"));
  const int64_t grid = config.input_size / config.patch_size, prompts = 2, rows = 2 * prompts;
  CacheContext cache(make_policy(meta.at("policy")), /*trace=*/true);
  cache.begin_run(make_run_info(backbone_info(config), pixart_run_shape(rows, true, grid, grid, 0), steps, "dpm-solver"));
  PixArtInputs in;
  in.y = runs->load("y");
  in.mask = runs->load("mask");
  auto x = runs->load("x_init");
  {
    at::NoGradGuard no_grad;
    for (int step = 0; step < steps; ++step) {
      in.x = at::cat({x, x}, 0);
      in.timestep = at::full({rows}, 999.0 * (1.0 - static_cast<double>(step) / steps));
      ASSERT_EQ(cache.begin_step({step, step}), StepMode::kPerSite);
      auto eps = model->forward(in, &cache).narrow(1, 0, config.in_channels);
      cache.end_step();
      auto halves = eps.chunk(2, 0);
      x = x - 0.05 * (halves[1] + 4.5 * (halves[0] - halves[1]));
    }
  }

  int64_t cross_sites = 0, mlp_sites = 0, compared_rows = 0;
  for (const auto& step : cache.steps()) {
    for (const auto& site : step.sites) {
      if (site.action != Action::kPartial) continue;
      const bool cross = site.site.kind == SiteKind::kCrossAttention;
      ASSERT_TRUE(cross || site.site.kind == SiteKind::kMLP) << to_string(site.site);
      (cross ? cross_sites : mlp_sites) += 1;
      const auto key = fmt::format("idx_{}_{}_{}", step.step.index, site.site.layer, cross ? "cross-attn" : "mlp");
      ASSERT_TRUE(runs->contains(key)) << "the official code ran no partial " << key;
      auto official = runs->load(key).to(at::kLong).contiguous();  // [4, k]
      ASSERT_EQ(official.size(1), site.tokens) << key;
      const int64_t* o = official.data_ptr<int64_t>();
      for (int64_t row = 0; row < rows; ++row) {
        std::set<int64_t> expected(o + row * site.tokens, o + (row + 1) * site.tokens);
        std::set<int64_t> got(site.indices.begin() + row * site.tokens, site.indices.begin() + (row + 1) * site.tokens);
        EXPECT_EQ(got, expected) << key << " row " << row;
        compared_rows += site.tokens > 0 && site.tokens < grid * grid;
      }
    }
  }
  EXPECT_EQ(cross_sites, std::stoll(meta.at("partial_cross_sites")));
  EXPECT_EQ(mlp_sites, std::stoll(meta.at("partial_mlp_sites")));
  EXPECT_GT(compared_rows, 1000);
  DITCACHE_EXPECT_CLOSE(x, runs->load("x_final"), 1e-4);
}

}  // namespace
}  // namespace ditcache
