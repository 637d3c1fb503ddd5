// The embedded shapes10 model and classifier as shipped, and the benchmark grid's columns.
#include <cmath>
#include <filesystem>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ditcache/bench.h"
#include "ditcache/data/shapes.h"
#include "ditcache/io/weights.h"
#include "ditcache/metrics/classifier.h"
#include "ditcache/metrics/quality.h"
#include "ditcache/models/dit.h"
#include "ditcache/pipeline.h"
#include "test_util.h"

namespace ditcache {
namespace {

using test::expect_error;
using test::fixture;

TEST(EmbeddedModel, ClassifierRecognisesHeldOutImages) {
  auto classifier = load_shapes_classifier(embedded_model_dir() + "/classifier.safetensors");
  auto real = shapes_batch(kShapesReferenceSeed, 5000, 300);  // beyond the FD reference slice
  at::NoGradGuard no_grad;
  const double accuracy = (classifier->forward(real.images).argmax(1) == real.labels).to(at::kFloat).mean().item<double>();
  EXPECT_GE(accuracy, 0.98);
  expect_error([] { load_shapes_classifier(embedded_model_dir() + "/dit.safetensors"); }, ErrorCode::kFormat,
               "not a shapes classifier");
}

// The shipped DiT draws the class it is asked for far more often than chance (10 %). It is partly
// trained (docs/embedded-model.md: ~40-47 % accuracy at DDIM 50); the bound leaves room for
// platform differences and catches a broken model, sampler or conditioning.
TEST(EmbeddedModel, SamplesFollowTheirClass) {
  auto file = open_weights(embedded_model_dir() + "/dit.safetensors");
  DiT model(DiTConfig::from_weights(*file));
  model->load(*file);
  model->eval();
  EXPECT_EQ(model->config().num_tokens(), 256);
  DiTSampleOptions options;
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < kShapesClasses; ++c) options.class_labels.push_back(c);
  options.sampler = SamplerKind::kDDIM;
  options.steps = 25;
  options.guidance_scale = 4.0;
  auto images = sample_dit(model, options);
  auto classifier = load_shapes_classifier(embedded_model_dir() + "/classifier.safetensors");
  at::NoGradGuard no_grad;
  auto labels = at::tensor(options.class_labels, at::TensorOptions().dtype(at::kLong));
  const double accuracy = (classifier->forward(images.clamp(-1, 1)).argmax(1) == labels).to(at::kFloat).mean().item<double>();
  EXPECT_GE(accuracy, 0.25);
}

TEST(BenchGrid, ExpandsPolicySweeps) {
  EXPECT_EQ(expand_policy_sweep("toca"), std::vector<std::string>{"toca"});
  EXPECT_EQ(expand_policy_sweep("toca:ratio=0.1|0.3,interval=3|5"),
            (std::vector<std::string>{"toca:ratio=0.1,interval=3", "toca:ratio=0.1,interval=5",
                                      "toca:ratio=0.3,interval=3", "toca:ratio=0.3,interval=5"}));
  expect_error([] { expand_policy_sweep("toca|fora"); }, ErrorCode::kInvalidArgument, "option values");
  expect_error([] { expand_policy_sweep("toca:ratio=0.1||0.3"); }, ErrorCode::kInvalidArgument, "empty alternative");
}

TEST(BenchGrid, RejectsBadGridsBeforeTiming) {
  BenchOptions o;
  o.policies = {"none", "tocca"};
  expect_error([&] { run_bench(o); }, ErrorCode::kInvalidArgument, "tocca");
  o.policies = {"none"};
  o.models = {"shapes10", "DiT-XL/2"};  // the second model's problem is found before the first is timed
  expect_error([&] { run_bench(o); }, ErrorCode::kInvalidArgument, "--random-weights");
  o.models = {"shapes10"};
  o.steps = {50, 2000};
  expect_error([&] { run_bench(o); }, ErrorCode::kInvalidArgument, "2000");
  o.steps = {50};
  o.models = {"DiT-XL/2"};
  o.random_weights = true;
  o.quality_samples = 10;
  expect_error([&] { run_bench(o); }, ErrorCode::kInvalidArgument, "shapes10");
  o.random_weights = false;
  o.quality_samples = 0;
  o.models = {"no-such-model"};
  expect_error([&] { run_bench(o); }, ErrorCode::kInvalidArgument, "no-such-model");
  o.models = {"shapes10"};
  o.steps = {0};
  expect_error([&] { run_bench(o); }, ErrorCode::kInvalidArgument, "step count 0");
}

// Every column present and consistent on a small grid of the embedded (pixel-space) model.
TEST(BenchGrid, ColumnsAreConsistent) {
  BenchOptions o;
  o.policies = {"fora:interval=2", "toca:ratio=0.3,interval=2"};  // `none` is added first
  o.steps = {4};
  o.batches = {2};
  o.repetitions = 2;
  o.quality_samples = 4;
  o.reference_samples = 50;
  auto rows = run_bench(o);
  ASSERT_EQ(rows.size(), 3u);
  const auto& none = rows[0];
  EXPECT_EQ(none.spec, "none");
  EXPECT_EQ(none.flops_speedup, 1.0);
  EXPECT_EQ(none.wall_speedup, 1.0);
  // FLOPs of `none`: the analytic count of every block for 4 steps of 2 images + their CFG rows.
  auto config = DiTConfig::from_weights(*open_weights(embedded_model_dir() + "/dit.safetensors"));
  const double full = 4 * config.depth * dit_block_flops(config, 4, config.num_tokens(), config.num_tokens());
  EXPECT_DOUBLE_EQ(none.flops, full);
  EXPECT_DOUBLE_EQ(none.full_flops, full);
  EXPECT_TRUE(std::isinf(none.psnr));
  EXPECT_EQ(none.ssim, 1.0);
  EXPECT_EQ(none.latent_rel_l2, 0.0);
  EXPECT_EQ(none.recomputed, 1.0);
  EXPECT_EQ(none.cache_mb, 0.0);
  ASSERT_TRUE(none.token_share.defined());
  EXPECT_EQ(none.token_share.min().item<double>(), 1.0);
  EXPECT_EQ(none.token_share.size(0), 2 * config.depth);
  EXPECT_EQ(none.token_share.size(1), 256);
  for (const auto& r : rows) {
    SCOPED_TRACE(r.spec);
    EXPECT_EQ(r.repetitions, 2);
    EXPECT_LE(r.wall_min_ms, r.wall_ms);
    EXPECT_LE(r.wall_ms, r.wall_max_ms);
    EXPECT_GT(r.forward_ms, 0.0);
    EXPECT_LE(r.forward_ms, r.wall_max_ms);
    EXPECT_DOUBLE_EQ(r.full_flops, full);
    EXPECT_NEAR(r.flops_speedup, full / r.flops, 1e-9);
    EXPECT_NEAR(r.wall_speedup, none.wall_ms / r.wall_ms, 1e-9);
    EXPECT_GT(r.peak_host_mb, 0.0);
    EXPECT_TRUE(std::isnan(r.peak_device_mb));
    EXPECT_EQ(r.quality_count, 4);
    EXPECT_GE(r.accuracy, 0.0);
    EXPECT_LE(r.accuracy, 1.0);
    EXPECT_TRUE(std::isfinite(r.frechet));
    EXPECT_GE(r.inception, 1.0 - 1e-9);
    // The heat map and the recomputed share count the same tokens.
    EXPECT_NEAR(r.token_share.mean().item<double>(), r.recomputed, 1e-9);
  }
  for (size_t i = 1; i < rows.size(); ++i) {
    EXPECT_GT(rows[i].flops_speedup, 1.0);
    EXPECT_GT(rows[i].cache_mb, 0.0);
    EXPECT_LT(rows[i].recomputed, 1.0);
    EXPECT_GT(rows[i].latent_rel_l2, 0.0);
    EXPECT_LT(rows[i].ssim, 1.0);
  }
  // The three renderings carry every row and column.
  const auto csv = bench_csv(rows);
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "model,device,dtype,sampler,policy,spec,steps,batch,repetitions,wall_ms,wall_spread_pct,forward_ms,gflops,"
            "flops_speedup,wall_speedup,peak_host_mb,peak_device_mb,cache_mb,recomputed_pct,psnr_db,ssim,latent_rel_l2,"
            "accuracy_pct,frechet,inception,quality_samples");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4);
  auto json = nlohmann::json::parse(bench_json(rows));
  ASSERT_EQ(json.size(), 3u);
  EXPECT_TRUE(json[0]["psnr_db"].is_null());   // infinite: JSON has no infinity
  EXPECT_TRUE(json[0]["peak_device_mb"].is_null());
  EXPECT_EQ(json[1]["spec"], "fora:interval=2");
  const auto md = bench_markdown(rows);
  EXPECT_NE(md.find("| shapes10 | cpu | toca:ratio=0.3,interval=2 | 4 | 2 |"), std::string::npos) << md;
  EXPECT_EQ(md.find("device MB"), std::string::npos) << "all-NaN columns are left out of the table";
  auto plot = plot_speedup_fidelity(rows, "shapes10");
  EXPECT_EQ(plot.dim(), 3);
  auto heat = plot_token_heatmap(rows[2]);
  EXPECT_EQ(heat.size(2), 3);
}

}  // namespace
}  // namespace ditcache
