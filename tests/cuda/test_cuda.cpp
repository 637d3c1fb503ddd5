// CUDA: the models, the sampler and the cache policies run on the GPU and agree with the CPU and
// the reference fixtures. Every test skips without a CUDA device (CI has none); on a GPU machine
// run `build/tests/ditcache_tests --gtest_filter='Cuda*'`. TF32 is switched off for the fp32
// comparisons (cuDNN allows it for convolutions by default), so fp32 means fp32.
#include <algorithm>
#include <iterator>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include "ditcache/bench.h"
#include "ditcache/cache/context.h"
#include "ditcache/cache/policy.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/dit.h"
#include "ditcache/models/pixart.h"
#include "ditcache/models/stdit3.h"
#include "ditcache/pipeline.h"
#include "ditcache/pipeline_pixart.h"
#include "opensora_fixtures.h"
#include "test_util.h"

namespace ditcache {
namespace {

const c10::Device kCuda(c10::kCUDA, 0);

class Cuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: the CUDA tests run on GPU machines only";
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }
};

DiT embedded_dit() {
  auto file = open_weights(embedded_model_dir() + "/dit.safetensors");
  DiT model(DiTConfig::from_weights(*file));
  model->load(*file);
  model->eval();
  return model;
}

double relative_l2(const at::Tensor& a, const at::Tensor& b) {
  auto x = a.to(at::kCPU, at::kDouble), y = b.to(at::kCPU, at::kDouble);
  return ((x - y).norm() / y.norm()).item<double>();
}

DiTSampleOptions small_run() {
  DiTSampleOptions o;
  o.class_labels = {0, 3, 4, 9};
  o.sampler = SamplerKind::kDDIM;
  o.steps = 10;
  o.guidance_scale = 4.0;
  o.seed = 7;
  return o;
}

// Share of the selected tokens two traced runs have in common (each site's picks as a set).
double common_share(const std::vector<std::vector<int64_t>>& a, const std::vector<std::vector<int64_t>>& b) {
  EXPECT_EQ(a.size(), b.size());
  int64_t same = 0, total = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    std::vector<int64_t> x = a[i], y = b[i];
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    std::vector<int64_t> common;
    std::set_intersection(x.begin(), x.end(), y.begin(), y.end(), std::back_inserter(common));
    same += static_cast<int64_t>(common.size());
    total += static_cast<int64_t>(std::max(x.size(), y.size()));
  }
  return total > 0 ? static_cast<double>(same) / static_cast<double>(total) : 0.0;
}

// A recorded PixArt sampling loop of tests/fixtures/pixart (README there): its tiny model on
// `device` and its options.
struct PixArtLoop {
  PixArt model{nullptr};
  PixArtSampleOptions options;
  at::Tensor expected;
  PixArtLoop(const std::string& name, const c10::Device& device) {
    auto f = open_weights(test::fixture("pixart/pixart_tiny_sampling.safetensors"));
    const auto s = nlohmann::json::parse(f->metadata().at("cases")).at(name);
    const std::string variant = s.at("model").get<std::string>(), numerics = s.at("numerics").get<std::string>();
    auto config = PixArtConfig::from_json_file(test::fixture("pixart/pixart_tiny_" + variant + "_config.json"));
    config.model_max_length = 8;
    model = PixArt(config);
    const std::string layout = numerics == "original" ? "original" : "diffusers";
    model->load(*open_weights(test::fixture("pixart/pixart_tiny_" + variant + "_" + layout +
                                            (layout == "original" ? ".pth" : ".safetensors"))));
    model->eval();
    model->to(device);
    options.numerics = parse_pixart_numerics(numerics);
    options.y = f->load(name + ".y");
    options.mask = f->load(name + ".mask");
    if (f->contains(name + ".negative_y")) {
      options.negative_y = f->load(name + ".negative_y");
      options.negative_mask = f->load(name + ".negative_mask");
    }
    options.steps = s.at("steps").get<int>();
    options.guidance = s.at("guidance").get<double>();
    options.height = s.at("height").get<int64_t>();
    options.width = s.at("width").get<int64_t>();
    if (!s.at("aspect_ratio").is_null()) options.aspect_ratio = s.at("aspect_ratio").get<double>();
    options.init_noise = f->load(name + ".z_init");
    expected = f->load(name + ".z_final");
  }
};

// The selected token indices of every partial site of a traced run, in order.
std::vector<std::vector<int64_t>> selections(const CacheContext& cache) {
  std::vector<std::vector<int64_t>> out;
  for (const auto& step : cache.steps())
    for (const auto& site : step.sites)
      if (site.action == Action::kPartial) out.push_back(site.indices);
  return out;
}

TEST_F(Cuda, DiTForwardMatchesCpu) {
  auto model = embedded_dit();
  auto x = at::randn({4, 3, 32, 32}, at::TensorOptions().dtype(at::kFloat));
  auto t = at::tensor(std::vector<int64_t>{999, 500, 20, 0});
  auto y = at::tensor(std::vector<int64_t>{0, 5, 9, 10});
  at::NoGradGuard no_grad;
  auto cpu = model->forward(x, t, y);
  model->to(kCuda);
  auto gpu = model->forward(x.to(kCuda), t.to(kCuda), y.to(kCuda));
  EXPECT_EQ(gpu.device(), kCuda);
  EXPECT_LT(test::relative_max_error(gpu.cpu(), cpu), 1e-4);
  // bf16 on the GPU: the same function at bf16 precision.
  model->to(at::kBFloat16);
  auto half = model->forward(x.to(kCuda, at::kBFloat16), t.to(kCuda), y.to(kCuda));
  EXPECT_LT(relative_l2(half.to(at::kFloat), cpu), 3e-2);
}

TEST_F(Cuda, UncachedSamplingMatchesCpu) {
  auto model = embedded_dit();
  const auto options = small_run();
  auto cpu = sample_dit(model, options);
  model->to(kCuda);
  auto gpu = sample_dit(model, options);  // same CPU-drawn noise on every device
  EXPECT_LT(relative_l2(gpu, cpu), 1e-4);
}

// The random policy draws its scores from a CPU generator, so the GPU must pick exactly the
// tokens the CPU picks, and the outputs must agree as uncached runs do.
TEST_F(Cuda, RandomPolicySelectsTheSameTokensAsCpu) {
  auto model = embedded_dit();
  auto options = small_run();
  CacheContext cpu_cache(make_policy("random:ratio=0.3"), /*trace=*/true);
  options.cache = &cpu_cache;
  auto cpu = sample_dit(model, options);
  model->to(kCuda);
  CacheContext gpu_cache(make_policy("random:ratio=0.3"), /*trace=*/true);
  options.cache = &gpu_cache;
  auto gpu = sample_dit(model, options);
  const auto a = selections(cpu_cache), b = selections(gpu_cache);
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a, b);
  EXPECT_DOUBLE_EQ(gpu_cache.summary().flops, cpu_cache.summary().flops);
  EXPECT_LT(relative_l2(gpu, cpu), 1e-4);
}

// ToCa scores tokens from attention maps; float rounding may reorder near-ties, so the GPU run
// must follow the same schedule (identical FLOPs and token counts) with nearly the same picks.
TEST_F(Cuda, TocaFollowsTheCpuScheduleAndPicks) {
  auto model = embedded_dit();
  auto options = small_run();
  CacheContext cpu_cache(make_policy("toca"), /*trace=*/true);
  options.cache = &cpu_cache;
  auto cpu = sample_dit(model, options);
  model->to(kCuda);
  CacheContext gpu_cache(make_policy("toca"), /*trace=*/true);
  options.cache = &gpu_cache;
  auto gpu = sample_dit(model, options);
  EXPECT_DOUBLE_EQ(gpu_cache.summary().flops, cpu_cache.summary().flops);
  const auto a = selections(cpu_cache), b = selections(gpu_cache);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  EXPECT_GE(common_share(a, b), 0.95);
  EXPECT_LT(relative_l2(gpu, cpu), 2e-2);
}

TEST_F(Cuda, CacheStoredOnTheHostServesAGpuRun) {
  auto model = embedded_dit();
  model->to(kCuda);
  auto options = small_run();
  CacheContext plain(make_policy("fora:interval=3"));
  options.cache = &plain;
  auto a = sample_dit(model, options);
  CacheContext host(make_policy("fora:interval=3"));
  CacheStorage on_host;
  on_host.device = at::kCPU;
  host.set_storage(on_host);
  options.cache = &host;
  auto b = sample_dit(model, options);
  EXPECT_TRUE(at::equal(a, b));
}

TEST_F(Cuda, STDiT3ForwardMatchesReference) {
  const auto path = test::shared_fixture("opensora/stdit3_tiny_case1.safetensors");
  DITCACHE_REQUIRE_SHARED_FIXTURE(path);
  DITCACHE_REQUIRE_SHARED_FIXTURE(test::tiny_stdit3_weights());
  auto model = test::load_tiny_stdit3();
  model->to(kCuda);
  auto f = open_weights(path);
  STDiT3Inputs in;
  in.x = f->load("x").to(kCuda);
  in.timestep = f->load("timestep").to(kCuda);
  in.y = f->load("y").to(kCuda);
  if (f->contains("mask")) in.mask = f->load("mask").to(kCuda);
  in.fps = f->load("fps").to(kCuda);
  in.height = f->load("height")[0].item<double>();
  in.width = f->load("width")[0].item<double>();
  at::NoGradGuard no_grad;
  auto out = model->forward(in);
  EXPECT_EQ(out.device(), kCuda);
  EXPECT_TRUE(at::allclose(out.cpu(), f->load("out"), 1e-4, 1e-4)) << test::relative_max_error(out.cpu(), f->load("out"));
}

TEST_F(Cuda, PixArtForwardMatchesDiffusers) {
  const std::string dir = "pixart/";
  auto config = PixArtConfig::from_json_file(test::fixture(dir + "pixart_tiny_ms_config.json"));
  config.model_max_length = 8;
  PixArt model(config);
  model->load(*open_weights(test::fixture(dir + "pixart_tiny_ms_diffusers.safetensors")));
  model->eval();
  model->to(kCuda);
  auto f = open_weights(test::fixture(dir + "pixart_tiny_cases.safetensors"));
  PixArtInputs in;
  in.x = f->load("ms_mask.x").to(kCuda);
  in.timestep = f->load("ms_mask.timestep").to(kCuda);
  in.y = f->load("ms_mask.y").to(kCuda);
  in.mask = f->load("ms_mask.mask").to(kCuda);
  in.resolution = f->load("ms_mask.resolution").to(kCuda);
  in.aspect_ratio = f->load("ms_mask.aspect_ratio").to(kCuda);
  at::NoGradGuard no_grad;
  auto out = model->forward(in);
  EXPECT_EQ(out.device(), kCuda);
  EXPECT_LT(test::relative_max_error(out.cpu(), f->load("ms_mask.out")), 1e-4);
}

// DPM-Solver++ with CFG on the GPU reproduces the diffusers and original reference loops (the
// diffusers one with PixArtMS micro-conditions and a masked negative prompt).
TEST_F(Cuda, PixArtSamplingMatchesTheReferenceLoops) {
  for (const char* name : {"ms_diffusers", "base_original"}) {
    PixArtLoop loop(name, kCuda);
    auto z = sample_pixart(loop.model, loop.options);
    EXPECT_EQ(z.device(), kCuda) << name;
    EXPECT_LT(test::relative_max_error(z.cpu(), loop.expected), 1e-4) << name;
  }
}

// ToCa's PixArt schedule on the GPU: the CPU's FLOPs and (up to float near-ties) its picks.
TEST_F(Cuda, PixArtTocaFollowsTheCpu) {
  PixArtLoop cpu_loop("base_original", at::kCPU), gpu_loop("base_original", kCuda);
  CacheContext cpu_cache(make_policy("toca"), /*trace=*/true), gpu_cache(make_policy("toca"), /*trace=*/true);
  cpu_loop.options.cache = &cpu_cache;
  gpu_loop.options.cache = &gpu_cache;
  auto cpu = sample_pixart(cpu_loop.model, cpu_loop.options);
  auto gpu = sample_pixart(gpu_loop.model, gpu_loop.options);
  EXPECT_DOUBLE_EQ(gpu_cache.summary().flops, cpu_cache.summary().flops);
  const auto a = selections(cpu_cache), b = selections(gpu_cache);
  ASSERT_FALSE(a.empty());
  EXPECT_GE(common_share(a, b), 0.9);
  EXPECT_LT(relative_l2(gpu, cpu), 2e-2);
}

}  // namespace
}  // namespace ditcache
