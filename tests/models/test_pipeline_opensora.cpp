// The OpenSora sampling pipeline (sample_stdit3, simulate_stdit3) on the tiny STDiT3 of
// ../shared/fixtures/opensora/: the reference's 5-step CFG loop, determinism, dry vs real FLOPs,
// whole-step reuse, and input errors.
#include <chrono>
#include <functional>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "ditcache/cache/context.h"
#include "ditcache/cache/policy.h"
#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/stdit3.h"
#include "ditcache/pipeline_opensora.h"
#include "opensora_fixtures.h"
#include "cache_test_util.h"
#include "test_util.h"

namespace ditcache {
namespace {

using test::shared_fixture;

const std::string kWeights = shared_fixture("opensora/stdit3_tiny_weights.safetensors");
const std::string kSampling = shared_fixture("opensora/rflow_tiny_sampling.safetensors");

STDiT3 load_tiny() { return test::load_tiny_stdit3(); }

// The fixture loop's settings: 2 prompts, 32x48 pixels, 17 frames, 5 steps, CFG 7.
STDiT3SampleOptions fixture_options(const WeightFile& f) {
  STDiT3SampleOptions o;
  o.y = f.load("caption_y");
  o.mask = f.load("caption_mask");
  o.height = 32;
  o.width = 48;
  o.num_frames = 17;
  o.fps = 24;
  o.steps = 5;
  o.guidance = 7.0;
  return o;
}

TEST(OpenSoraPipeline, LatentSize) {
  EXPECT_EQ(opensora_latent_size(51, 240, 426), (std::vector<int64_t>{15, 30, 53}));
  EXPECT_EQ(opensora_latent_size(51, 480, 854), (std::vector<int64_t>{15, 60, 106}));
  EXPECT_EQ(opensora_latent_size(17, 32, 48), (std::vector<int64_t>{5, 4, 6}));
  EXPECT_EQ(opensora_latent_size(1, 32, 48), (std::vector<int64_t>{1, 4, 6}));
  test::expect_error([] { opensora_latent_size(0, 32, 48); }, ErrorCode::kInvalidArgument, "num_frames must be >= 1");
  test::expect_error([] { opensora_latent_size(17, 4, 48); }, ErrorCode::kInvalidArgument, "height and width must be >= 8");
}

TEST(OpenSoraPipeline, ReproducesReferenceSamplingLoop) {
  DITCACHE_REQUIRE_SHARED_FIXTURE(kSampling);
  DITCACHE_REQUIRE_SHARED_FIXTURE(kWeights);
  auto f = open_weights(kSampling);
  auto model = load_tiny();
  // The null caption the pipeline appends is the fixture's.
  EXPECT_TRUE(at::equal(model->null_caption(), f->load("null_y")));
  auto o = fixture_options(*f);
  o.init_noise = f->load("z_init");
  std::vector<int64_t> progress;
  o.progress = [&](int64_t done, int64_t total) {
    EXPECT_EQ(total, 5);
    progress.push_back(done);
  };
  double seconds = -1;
  o.forward_seconds = &seconds;
  auto z = sample_stdit3(model, o);
  auto expected = f->load("z_final");
  ASSERT_EQ(z.sizes(), expected.sizes());
  EXPECT_EQ(z.scalar_type(), at::kFloat);
  const double err = (z - expected).abs().max().item<double>();
  EXPECT_LT(err, 5e-4) << "max |z - z_final|";
  EXPECT_EQ(progress, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_GT(seconds, 0);

  // The same loop through a `none` cache context gives the same latents and counts every block.
  CacheContext cache(make_policy("none"));
  o.cache = &cache;
  auto zc = sample_stdit3(model, o);
  EXPECT_TRUE(at::equal(zc, z));
  EXPECT_EQ(cache.steps().size(), 5u);
  EXPECT_GT(cache.summary().full_flops, 0);
  EXPECT_DOUBLE_EQ(cache.summary().flops, cache.summary().full_flops);
}

TEST(OpenSoraPipeline, SeededRunsAreDeterministicAndImageModeWorks) {
  DITCACHE_REQUIRE_SHARED_FIXTURE(kSampling);
  DITCACHE_REQUIRE_SHARED_FIXTURE(kWeights);
  auto f = open_weights(kSampling);
  auto model = load_tiny();
  auto o = fixture_options(*f);
  o.steps = 2;
  o.seed = 11;
  auto a = sample_stdit3(model, o);
  auto b = sample_stdit3(model, o);
  EXPECT_TRUE(at::equal(a, b));
  o.seed = 12;
  EXPECT_FALSE(at::equal(a, sample_stdit3(model, o)));
  // Passing the seed's own noise reproduces the seeded run.
  o.seed = 11;
  o.init_noise = at::randn({2, 4, 5, 4, 6}, at::make_generator<at::CPUGeneratorImpl>(11));
  EXPECT_TRUE(at::equal(a, sample_stdit3(model, o)));

  // An image: one latent frame; the model is told 120 fps, so the fps option has no effect.
  o.init_noise.reset();
  o.num_frames = 1;
  auto img = sample_stdit3(model, o);
  EXPECT_EQ(img.sizes(), (std::vector<int64_t>{2, 4, 1, 4, 6}));
  o.fps = 8;
  EXPECT_TRUE(at::equal(img, sample_stdit3(model, o)));
  // In a video, fps matters.
  o.num_frames = 17;
  EXPECT_FALSE(at::equal(a, sample_stdit3(model, o)));
}

// The dry FLOPs count of simulate_stdit3 equals what a real cached run counts, step by step and
// site by site.
class OpenSoraDryFlops : public ::testing::TestWithParam<const char*> {};

TEST_P(OpenSoraDryFlops, EqualRealRun) {
  DITCACHE_REQUIRE_SHARED_FIXTURE(kSampling);
  DITCACHE_REQUIRE_SHARED_FIXTURE(kWeights);
  auto f = open_weights(kSampling);
  auto model = load_tiny();
  auto o = fixture_options(*f);
  o.steps = 6;
  CacheContext real(make_policy(GetParam()));
  o.cache = &real;
  sample_stdit3(model, o);
  CacheContext dry(make_policy(GetParam()));
  o.cache = nullptr;
  simulate_stdit3(model->config(), o, dry);
  ASSERT_EQ(real.steps().size(), 6u);
  test::expect_dry_retraces_real(real, dry, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Policies, OpenSoraDryFlops,
                         ::testing::Values("none", "fora:interval=2", "toca", "fora:interval=3,granularity=block",
                                           "fora:interval=2,granularity=step"));

TEST(OpenSoraPipeline, WholeStepReuseRepeatsTheLastVelocity) {
  DITCACHE_REQUIRE_SHARED_FIXTURE(kSampling);
  DITCACHE_REQUIRE_SHARED_FIXTURE(kWeights);
  auto f = open_weights(kSampling);
  auto model = load_tiny();
  auto o = fixture_options(*f);
  o.steps = 2;
  o.init_noise = f->load("z_init");
  CacheContext cache(make_policy("fora:interval=2,granularity=step"));
  o.cache = &cache;
  auto z = sample_stdit3(model, o);
  ASSERT_EQ(cache.steps().size(), 2u);
  EXPECT_EQ(cache.steps()[1].mode, StepMode::kReuseOutput);
  EXPECT_EQ(cache.steps()[1].flops, 0);
  EXPECT_GT(cache.steps()[1].full_flops, 0);
  // Step 1 reused step 0's velocity: z = z0 + v0 * (t0 - 0) / 1000 in one Euler stretch.
  o.cache = nullptr;
  o.steps = 1;
  // One step from t0 to 0 with the same velocity: the same latents (up to float rounding).
  auto one = sample_stdit3(model, o);
  // The 1-step schedule's t0 equals the 2-step one's (both start at ~1000), so the results agree.
  EXPECT_LT((z - one).abs().max().item<double>(), 1e-4);
}

TEST(OpenSoraPipeline, FlopsOnlyReleaseConfigIsFast) {
  const auto config = STDiT3Config::preset("STDiT3-XL/2");
  STDiT3SampleOptions o;
  o.height = 480;
  o.width = 854;
  o.num_frames = 51;
  CacheContext cache(make_policy("toca"));
  const auto start = std::chrono::steady_clock::now();
  simulate_stdit3(config, o, cache);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 1.0);
  EXPECT_EQ(cache.steps().size(), 30u);
  EXPECT_EQ(cache.run_info().batch, 2);
  EXPECT_EQ(cache.run_info().num_tokens, 15 * 30 * 53);
  const auto s = cache.summary();
  EXPECT_GT(s.full_flops, 1e15);  // hundreds of TFLOPs for a 480p 51-frame video
  EXPECT_GT(s.flops_speedup(), 1.2);
}

TEST(OpenSoraPipeline, BadInputsAreClearErrors) {
  DITCACHE_REQUIRE_SHARED_FIXTURE(kSampling);
  DITCACHE_REQUIRE_SHARED_FIXTURE(kWeights);
  auto f = open_weights(kSampling);
  auto model = load_tiny();
  const auto base = fixture_options(*f);
  auto expect = [&](const std::function<void(STDiT3SampleOptions&)>& edit, ErrorCode code, const std::string& fragment) {
    auto o = base;
    edit(o);
    test::expect_error([&] { sample_stdit3(model, o); }, code, fragment);
  };
  expect([](auto& o) { o.y = at::Tensor(); }, ErrorCode::kInvalidArgument, "no caption embeddings: y must be [n, 8, 32]");
  expect([](auto& o) { o.y = at::zeros({2, 7, 32}); }, ErrorCode::kShapeMismatch, "y must be floating point [n, 8, 32]");
  expect([](auto& o) { o.y = at::zeros({2, 8, 16}); }, ErrorCode::kShapeMismatch, "found Float [2, 8, 16]");
  expect([](auto& o) { o.mask = at::ones({3, 8}, at::kLong); }, ErrorCode::kShapeMismatch, "caption mask must be [2, 8]");
  expect([](auto& o) { o.mask = at::tensor({0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, at::kLong).view({2, 8}); },
         ErrorCode::kInvalidArgument, "row 0 is not a prefix");
  expect([](auto& o) { o.mask = at::zeros({2, 8}, at::kLong); }, ErrorCode::kInvalidArgument, "row 0 has no valid token");
  expect([](auto& o) { o.mask = at::full({2, 8}, 2, at::kLong); }, ErrorCode::kInvalidArgument, "must be 0 or 1");
  expect([](auto& o) { o.num_frames = 5; }, ErrorCode::kInvalidArgument, "num_frames must be 1 (an image) or >= 17");
  expect([](auto& o) { o.height = 4; }, ErrorCode::kInvalidArgument, "height and width must be >= 8 pixels");
  expect([](auto& o) { o.steps = 0; }, ErrorCode::kInvalidArgument, "steps must be >= 1, found 0");
  expect([](auto& o) { o.fps = 0; }, ErrorCode::kInvalidArgument, "fps must be > 0");
  expect([](auto& o) { o.init_noise = at::zeros({2, 4, 4, 4, 6}); }, ErrorCode::kShapeMismatch,
         "initial noise has shape [2, 4, 4, 4, 6], expected floating point [2, 4, 5, 4, 6]");
  // A bad request in FLOPs-only mode fails the same way, and leaves the context out of dry mode.
  CacheContext cache(make_policy("none"));
  auto o = base;
  o.num_frames = 3;
  test::expect_error([&] { simulate_stdit3(model->config(), o, cache); }, ErrorCode::kInvalidArgument, "num_frames");
  EXPECT_FALSE(cache.dry());
}

}  // namespace
}  // namespace ditcache

namespace ditcache {
namespace {

TEST(OpenSoraPrompt, AppendsTheAestheticScoreAndCleans) {
  EXPECT_EQ(opensora_caption("A red panda   eating bamboo"), "a red panda eating bamboo aesthetic score: 6.5.");
  EXPECT_EQ(opensora_caption("A cat", 7), "a cat aesthetic score: 7.0.");
  EXPECT_EQ(opensora_caption("A cat", -1), "a cat");
  // A prompt that already carries a score keeps it; without cleaning only lower() and strip().
  EXPECT_EQ(opensora_caption("  A Cat aesthetic score: 5.0.  ", 6.5, false), "a cat aesthetic score: 5.0.");
}

}  // namespace
}  // namespace ditcache
