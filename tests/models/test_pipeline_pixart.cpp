// The PixArt-α sampling pipeline (sample_pixart, simulate_pixart) on the tiny PixArt models of
// tests/fixtures/pixart/: whole DPM-Solver++ 2M loops with CFG in both conventions against
// pixart_tiny_sampling.safetensors (diffusers' PixArtAlphaPipeline / scheduler loop, and
// PixArt-alpha's sampler), determinism, initial noise, dry vs real FLOPs, whole-step reuse, the
// helpers (aspect-ratio bins, captions) and input errors.
#include <chrono>
#include <functional>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ditcache/cache/context.h"
#include "ditcache/cache/policy.h"
#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/pixart.h"
#include "ditcache/pipeline_pixart.h"
#include "ditcache/sampling/dpm_solver.h"
#include "ditcache/text/text_encoder.h"
#include "ditcache/text/tokenizer.h"
#include "cache_test_util.h"
#include "test_util.h"

namespace ditcache {
namespace {

std::string pixart_fixture(const std::string& name) { return test::fixture("pixart/" + name); }

// The fixture model (its config.json; the null caption has 8 rows) from one of its two layouts.
PixArt load_tiny(const std::string& variant, const std::string& layout) {
  auto config = PixArtConfig::from_json_file(pixart_fixture("pixart_tiny_" + variant + "_config.json"));
  config.model_max_length = 8;
  PixArt model(config);
  model->load(*open_weights(pixart_fixture("pixart_tiny_" + variant + "_" + layout +
                                           (layout == "original" ? ".pth" : ".safetensors"))));
  model->eval();
  return model;
}

std::unique_ptr<WeightFile> sampling_file() { return open_weights(pixart_fixture("pixart_tiny_sampling.safetensors")); }

nlohmann::json case_settings(const WeightFile& f, const std::string& name) {
  return nlohmann::json::parse(f.metadata().at("cases")).at(name);
}

// The options of a recorded loop (its initial noise included).
PixArtSampleOptions case_options(const WeightFile& f, const std::string& name) {
  const auto s = case_settings(f, name);
  PixArtSampleOptions o;
  o.numerics = parse_pixart_numerics(s.at("numerics").get<std::string>());
  o.y = f.load(name + ".y");
  o.mask = f.load(name + ".mask");
  if (f.contains(name + ".negative_y")) {
    o.negative_y = f.load(name + ".negative_y");
    o.negative_mask = f.load(name + ".negative_mask");
  }
  o.steps = s.at("steps").get<int>();
  o.guidance = s.at("guidance").get<double>();
  o.height = s.at("height").get<int64_t>();
  o.width = s.at("width").get<int64_t>();
  if (!s.at("aspect_ratio").is_null()) o.aspect_ratio = s.at("aspect_ratio").get<double>();
  o.init_noise = f.load(name + ".z_init");
  return o;
}

// The original convention needs the null caption of the original layout; diffusers runs from the
// diffusers file, which has none.
PixArt model_for(const WeightFile& f, const std::string& name) {
  const auto s = case_settings(f, name);
  return load_tiny(s.at("model").get<std::string>(), s.at("numerics") == "original" ? "original" : "diffusers");
}

double relative_error(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

class PixArtReferenceLoop : public ::testing::TestWithParam<const char*> {};

TEST_P(PixArtReferenceLoop, Reproduces) {
  const std::string name = GetParam();
  auto f = sampling_file();
  auto model = model_for(*f, name);
  auto o = case_options(*f, name);
  std::vector<int64_t> progress;
  o.progress = [&](int64_t done, int64_t total) {
    EXPECT_EQ(total, o.steps);
    progress.push_back(done);
  };
  double seconds = -1;
  o.forward_seconds = &seconds;
  auto z = sample_pixart(model, o);
  auto expected = f->load(name + ".z_final");
  ASSERT_EQ(z.sizes(), expected.sizes());
  EXPECT_EQ(z.scalar_type(), at::kFloat);
  const double err = relative_error(z, expected);
  // The backbone matches diffusers bit for bit on the CPU and the solver is the references'
  // float32 arithmetic; what remains is float rounding amplified by 1/alpha of the first steps.
  EXPECT_LE(err, 1e-5) << "max |z - z_ref| / max |z_ref|";
  RecordProperty("max_relative_error", ::testing::PrintToString(err));
  ASSERT_EQ(progress.size(), static_cast<size_t>(o.steps));
  EXPECT_EQ(progress.back(), o.steps);
  EXPECT_GT(seconds, 0);

  // The same loop through a `none` cache context: the same latents, every block counted, the run
  // info the policies see.
  CacheContext cache(make_policy("none"));
  o.cache = &cache;
  auto zc = sample_pixart(model, o);
  EXPECT_TRUE(at::equal(zc, z));
  EXPECT_EQ(cache.steps().size(), static_cast<size_t>(o.steps));
  const auto& run = cache.run_info();
  EXPECT_EQ(run.model, "PixArt");
  EXPECT_EQ(run.cfg, o.guidance != 1.0);
  EXPECT_EQ(run.batch, (run.cfg ? 2 : 1) * o.y.size(0));
  EXPECT_EQ(run.num_tokens, (o.height / 16) * (o.width / 16));
  EXPECT_FALSE(run.step_index_counts_down);
  EXPECT_EQ(run.sampler, "dpm-solver++");
  EXPECT_EQ(cache.steps().back().step.index, o.steps - 1);
  EXPECT_GT(cache.summary().full_flops, 0);
  EXPECT_DOUBLE_EQ(cache.summary().flops, cache.summary().full_flops);
}

INSTANTIATE_TEST_SUITE_P(Cases, PixArtReferenceLoop,
                         ::testing::Values("base_original", "base_original_g1", "base_diffusers", "base_diffusers_g1",
                                           "ms_original", "ms_diffusers"));

TEST(PixArtPipeline, NullCaptionOverrideRunsTheOriginalConventionOnDiffusersWeights) {
  auto f = sampling_file();
  auto o = case_options(*f, "base_original");
  auto diffusers_model = load_tiny("base", "diffusers");
  ASSERT_FALSE(diffusers_model->has_null_caption());
  test::expect_error([&] { sample_pixart(diffusers_model, o); }, ErrorCode::kInvalidArgument,
                     "has no null caption (y_embedder.y_embedding: diffusers checkpoints drop it)");
  auto original_model = load_tiny("base", "original");
  o.null_caption = original_model->null_caption();
  EXPECT_TRUE(at::equal(sample_pixart(diffusers_model, o), sample_pixart(original_model, o)));
  o.null_caption = at::zeros({7, 32});
  test::expect_error([&] { sample_pixart(diffusers_model, o); }, ErrorCode::kShapeMismatch, "null caption must be [8, 32], found [7, 32]");
}

TEST(PixArtPipeline, SeededRunsAreDeterministicAndInitNoiseIsTheSeedsDraw) {
  auto f = sampling_file();
  auto model = load_tiny("ms", "original");
  auto o = case_options(*f, "ms_original");
  o.init_noise.reset();
  o.steps = 3;
  o.seed = 11;
  auto a = sample_pixart(model, o);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{2, 4, 8, 12}));
  EXPECT_TRUE(at::equal(a, sample_pixart(model, o)));
  o.seed = 12;
  EXPECT_FALSE(at::equal(a, sample_pixart(model, o)));
  o.seed = 11;
  o.init_noise = at::randn({2, 4, 8, 12}, at::make_generator<at::CPUGeneratorImpl>(11));
  EXPECT_TRUE(at::equal(a, sample_pixart(model, o)));
  // The micro-conditions matter: another aspect-ratio key changes the result, and the default
  // (height / width) is another value again.
  o.aspect_ratio = 0.6;
  auto b = sample_pixart(model, o);
  EXPECT_FALSE(at::equal(a, b));
  o.aspect_ratio = 0;
  EXPECT_FALSE(at::equal(b, sample_pixart(model, o)));
  // The default size is the training size (latent 8 x 8).
  o.init_noise.reset();
  o.height = o.width = 0;
  EXPECT_EQ(sample_pixart(model, o).sizes(), (std::vector<int64_t>{2, 4, 8, 8}));
}

TEST(PixArtPipeline, ConventionsDiffer) {
  // The same prompts and noise under both conventions give different images (models.md §2.3).
  auto f = sampling_file();
  auto model = load_tiny("base", "original");
  auto o = case_options(*f, "base_diffusers");
  o.steps = 4;
  auto diffusers = sample_pixart(model, o);
  o.numerics = PixArtNumerics::kOriginal;
  o.negative_y = o.negative_mask = at::Tensor();
  EXPECT_GT(relative_error(sample_pixart(model, o), diffusers), 1e-3);
}

// The dry FLOPs count of simulate_pixart equals what a real cached run counts, step by step and
// site by site.
class PixArtDryFlops : public ::testing::TestWithParam<std::tuple<const char*, const char*>> {};

TEST_P(PixArtDryFlops, EqualRealRun) {
  const std::string policy = std::get<0>(GetParam()), name = std::get<1>(GetParam());
  auto f = sampling_file();
  auto model = model_for(*f, name);
  auto o = case_options(*f, name);
  o.steps = 6;
  CacheContext real(make_policy(policy));
  o.cache = &real;
  sample_pixart(model, o);
  CacheContext dry(make_policy(policy));
  o.cache = nullptr;
  simulate_pixart(model->config(), o, dry);
  ASSERT_EQ(real.steps().size(), 6u);
  test::expect_dry_retraces_real(real, dry, policy);
}

INSTANTIATE_TEST_SUITE_P(Policies, PixArtDryFlops,
                         ::testing::Combine(::testing::Values("none", "fora:interval=2", "fora:interval=3,granularity=block",
                                                             "fora:interval=2,granularity=step"),
                                            ::testing::Values("base_original", "ms_diffusers", "base_diffusers_g1")));

TEST(PixArtPipeline, WholeStepReuseRepeatsTheLastNoisePrediction) {
  auto f = sampling_file();
  auto model = load_tiny("base", "original");
  auto o = case_options(*f, "base_original");
  o.steps = 4;
  CacheContext cache(make_policy("fora:interval=2,granularity=step"));
  o.cache = &cache;
  auto z = sample_pixart(model, o);
  ASSERT_EQ(cache.steps().size(), 4u);
  EXPECT_EQ(cache.steps()[0].mode, StepMode::kPerSite);
  EXPECT_EQ(cache.steps()[1].mode, StepMode::kReuseOutput);
  EXPECT_EQ(cache.steps()[1].flops, 0);
  EXPECT_GT(cache.steps()[1].full_flops, 0);
  EXPECT_EQ(cache.steps()[2].mode, StepMode::kPerSite);
  EXPECT_EQ(cache.steps()[3].mode, StepMode::kReuseOutput);
  // The loop replayed by hand: the CFG batch is run at steps 0 and 2 only; steps 1 and 3 guide
  // the kept noise prediction of the step before.
  const auto schedule = dpm_solver_schedule(4, DPMSolverConvention::kOriginal);
  PixArtInputs in;
  in.y = at::cat({model->null_caption().unsqueeze(0).expand({2, 8, 32}), o.y}, 0);
  in.mask = o.mask;
  at::Tensor kept;
  auto manual = dpm_solver_sample(*o.init_noise, schedule, [&](const at::Tensor& x, int i) {
    if (i % 2 == 0) {
      in.x = at::cat({x, x}, 0);
      in.timestep = at::full({4}, schedule.model_timesteps[static_cast<size_t>(i)], at::kFloat);
      kept = model->forward(in).narrow(1, 0, 4);
    }
    auto uncond = kept.narrow(0, 0, 2), cond = kept.narrow(0, 2, 2);
    return uncond + (cond - uncond) * 4.5;
  });
  EXPECT_LE(relative_error(z, manual), 1e-6);
  PixArtSampleOptions uncached = o;
  uncached.cache = nullptr;
  EXPECT_GT(relative_error(sample_pixart(model, uncached), z), 1e-4);
}

TEST(PixArtPipeline, FlopsOnlyReleaseConfigIsFast) {
  const auto config = PixArtConfig::preset("PixArt-XL-2-1024-MS");
  PixArtSampleOptions o;
  const auto bucket = pixart_aspect_bucket(1024, 9.0 / 16.0);
  o.height = bucket.height;
  o.width = bucket.width;
  CacheContext cache(make_policy("fora:interval=3"));
  const auto start = std::chrono::steady_clock::now();
  simulate_pixart(config, o, cache);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 1.0);
  EXPECT_EQ(cache.steps().size(), 20u);
  EXPECT_EQ(cache.run_info().batch, 2);
  EXPECT_EQ(cache.run_info().num_tokens, (768 / 16) * (1344 / 16));
  const auto s = cache.summary();
  EXPECT_GT(s.full_flops, 1e14);
  EXPECT_GT(s.flops_speedup(), 1.5);
  // Without y, n = 1 and L = model_max_length; the release has 120 caption tokens.
  EXPECT_EQ(config.model_max_length, 120);
}

TEST(PixArtPipeline, BadInputsAreClearErrors) {
  auto f = sampling_file();
  auto model = load_tiny("base", "original");
  auto base = case_options(*f, "base_original");
  base.steps = 2;
  auto expect = [&](const std::function<void(PixArtSampleOptions&)>& edit, ErrorCode code, const std::string& fragment) {
    auto o = base;
    edit(o);
    test::expect_error([&] { sample_pixart(model, o); }, code, fragment);
  };
  expect([](auto& o) { o.y = at::Tensor(); }, ErrorCode::kInvalidArgument, "no caption embeddings: y must be [n, 8, 32]");
  expect([](auto& o) { o.y = at::zeros({2, 7, 32}); }, ErrorCode::kShapeMismatch, "y must be floating point [n, 8, 32]");
  expect([](auto& o) { o.y = at::zeros({2, 8, 16}); }, ErrorCode::kShapeMismatch, "found Float [2, 8, 16]");
  expect([](auto& o) { o.mask = at::ones({3, 8}, at::kLong); }, ErrorCode::kShapeMismatch, "caption mask mask must be [2, 8]");
  expect([](auto& o) { o.mask = at::tensor({0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, at::kLong).view({2, 8}); },
         ErrorCode::kInvalidArgument, "row 0 is not a prefix");
  expect([](auto& o) { o.mask = at::zeros({2, 8}, at::kLong); }, ErrorCode::kInvalidArgument, "row 0 has no valid token");
  expect([](auto& o) { o.mask = at::full({2, 8}, 2, at::kLong); }, ErrorCode::kInvalidArgument, "must be 0 or 1");
  expect([](auto& o) { o.steps = 1; }, ErrorCode::kInvalidArgument, "steps must be >= 2");
  expect([](auto& o) { o.steps = 0; }, ErrorCode::kInvalidArgument, "steps must be in 1..1000, found 0");
  expect([](auto& o) { o.height = 72; }, ErrorCode::kInvalidArgument, "multiples of 16 pixels (8 per latent pixel x patch size 2), found 72 x 64");
  expect([](auto& o) { o.guidance = std::nan(""); }, ErrorCode::kInvalidArgument, "guidance must be a finite number");
  expect([](auto& o) { o.aspect_ratio = -1; }, ErrorCode::kInvalidArgument, "aspect_ratio must be > 0");
  expect([](auto& o) { o.negative_y = at::zeros({1, 8, 32}); }, ErrorCode::kInvalidArgument,
         "negative_y / negative_mask are the diffusers convention's negative prompt");
  expect([](auto& o) { o.init_noise = at::zeros({2, 4, 8, 6}); }, ErrorCode::kShapeMismatch,
         "initial noise has shape [2, 4, 8, 6], expected floating point [2, 4, 8, 8]");
  // diffusers: the negative prompt is needed with CFG, one row or n, with a valid mask.
  auto d = case_options(*f, "base_diffusers");
  d.steps = 2;
  auto expect_d = [&](const std::function<void(PixArtSampleOptions&)>& edit, ErrorCode code, const std::string& fragment) {
    auto o = d;
    edit(o);
    test::expect_error([&] { sample_pixart(model, o); }, code, fragment);
  };
  expect_d([](auto& o) { o.negative_y = at::Tensor(); }, ErrorCode::kInvalidArgument,
           "the diffusers convention with guidance 4.5 > 1 needs negative_y");
  expect_d([](auto& o) { o.negative_y = at::zeros({3, 8, 32}); }, ErrorCode::kShapeMismatch, "negative_y has 3 rows, expected 1 or n = 2");
  expect_d([](auto& o) { o.negative_mask = at::zeros({1, 8}); }, ErrorCode::kInvalidArgument, "negative_mask row 0 has no valid token");
  expect_d([](auto& o) { o.null_caption = at::zeros({8, 32}); }, ErrorCode::kInvalidArgument, "null_caption is the original convention's");
  // Without CFG the negative prompt is not needed.
  d.negative_y = d.negative_mask = at::Tensor();
  d.guidance = 1.0;
  EXPECT_NO_THROW(sample_pixart(model, d));
  // A bad request in FLOPs-only mode fails the same way and leaves the context out of dry mode.
  CacheContext cache(make_policy("none"));
  auto o = base;
  o.width = 20;
  test::expect_error([&] { simulate_pixart(model->config(), o, cache); }, ErrorCode::kInvalidArgument, "multiples of 16");
  EXPECT_FALSE(cache.dry());
}

TEST(PixArtPipeline, LatentSizeAndAspectBuckets) {
  const auto c = PixArtConfig::preset("PixArt-XL-2-1024-MS");
  EXPECT_EQ(pixart_latent_size(c, 0, 0), (std::vector<int64_t>{128, 128}));
  EXPECT_EQ(pixart_latent_size(c, 768, 1344), (std::vector<int64_t>{96, 168}));
  test::expect_error([&] { pixart_latent_size(c, 770, 1344); }, ErrorCode::kInvalidArgument, "found 770 x 1344");
  auto b = pixart_aspect_bucket(1024, 9.0 / 16.0);
  EXPECT_EQ(b.key, "0.57");
  EXPECT_DOUBLE_EQ(b.ratio, 0.57);
  EXPECT_EQ(b.height, 768);
  EXPECT_EQ(b.width, 1344);
  b = pixart_aspect_bucket(1024, 1.0);
  EXPECT_EQ(b.key, "1.0");
  EXPECT_EQ(b.height, 1024);
  b = pixart_aspect_bucket(512, 16.0 / 9.0);  // 1.78 -> the closest key 1.75: 672 x 384
  EXPECT_EQ(b.key, "1.75");
  EXPECT_EQ(b.height, 672);
  EXPECT_EQ(b.width, 384);
  b = pixart_aspect_bucket(256, 0.1);  // below the table: its first key
  EXPECT_EQ(b.key, "0.25");
  EXPECT_EQ(b.height, 128);
  EXPECT_EQ(b.width, 512);
  EXPECT_EQ(pixart_aspect_bucket(1024, 100).key, "4.0");
  EXPECT_EQ(pixart_aspect_keys().size(), 33u);
  test::expect_error([] { pixart_aspect_bucket(768, 1.0); }, ErrorCode::kInvalidArgument, "256, 512 and 1024 pixels, not 768");
  test::expect_error([] { pixart_aspect_bucket(1024, 0); }, ErrorCode::kInvalidArgument, "must be > 0");
}

TEST(PixArtPipeline, CaptionsAndNumerics) {
  EXPECT_EQ(pixart_caption("A Red Panda   eating bamboo"), "a red panda eating bamboo");
  // The original cuts its size flags off the prompt; diffusers encodes them as text.
  EXPECT_EQ(pixart_caption("A cat --ar 16:9", PixArtNumerics::kOriginal, false), "a cat");
  EXPECT_EQ(pixart_caption("A cat --hw 512:768", PixArtNumerics::kOriginal, false), "a cat");
  EXPECT_EQ(pixart_caption("A cat --ar 16:9", PixArtNumerics::kDiffusers, false), "a cat --ar 16:9");
  EXPECT_EQ(pixart_caption("", PixArtNumerics::kDiffusers), "");
  EXPECT_EQ(parse_pixart_numerics("diffusers"), PixArtNumerics::kDiffusers);
  EXPECT_STREQ(to_string(PixArtNumerics::kOriginal), "original");
  test::expect_error([] { parse_pixart_numerics("sd"); }, ErrorCode::kInvalidArgument, "numerics 'sd' is not known");
  PixArtSampleOptions o;
  o.guidance = 0.5;
  EXPECT_TRUE(pixart_uses_cfg(o));  // the original runs CFG for any scale but 1
  o.numerics = PixArtNumerics::kDiffusers;
  EXPECT_FALSE(pixart_uses_cfg(o));  // diffusers only above 1
  o.guidance = 1.0;
  EXPECT_FALSE(pixart_uses_cfg(o));
  o.numerics = PixArtNumerics::kOriginal;
  EXPECT_FALSE(pixart_uses_cfg(o));
}

TEST(PixArtPipeline, PromptsThroughT5) {
  if (!T5Tokenizer::available()) GTEST_SKIP() << "built without SentencePiece (libsentencepiece-dev)";
  // The tiny T5 of tests/fixtures/t5 has d_model 32, the tiny PixArt's caption width.
  T5Tokenizer tokenizer(test::fixture("t5/spiece.model"));
  auto t5 = load_t5_encoder(test::fixture("t5/t5_tiny.safetensors"));
  t5->eval();
  const std::vector<std::string> prompts = {"A red panda --ar 16:9", "a cat"};
  auto d = encode_pixart_prompts(t5, tokenizer, prompts, PixArtNumerics::kDiffusers, 8);
  EXPECT_EQ(d.y.sizes(), (std::vector<int64_t>{2, 8, 32}));
  EXPECT_EQ(d.negative_y.sizes(), (std::vector<int64_t>{1, 8, 32}));
  EXPECT_EQ(d.negative_mask.sum().item<int64_t>(), 1);  // "" is the EOS token alone
  auto direct = encode_captions(t5, tokenizer, {"a red panda --ar 16:9", "a cat"}, 8);
  EXPECT_TRUE(at::equal(d.y, direct.y));
  EXPECT_TRUE(at::equal(d.mask, direct.mask));
  // The original cuts the size flag and has no negative prompt.
  auto o = encode_pixart_prompts(t5, tokenizer, prompts, PixArtNumerics::kOriginal, 8);
  EXPECT_FALSE(o.negative_y.defined());
  EXPECT_TRUE(at::equal(o.y, encode_captions(t5, tokenizer, {"a red panda", "a cat"}, 8).y));
  EXPECT_TRUE(at::equal(o.y[1], d.y[1]));
  test::expect_error([&] { encode_pixart_prompts(t5, tokenizer, {}, PixArtNumerics::kOriginal, 8); }, ErrorCode::kInvalidArgument,
                     "no prompts");
  // The diffusers run from prompts end to end.
  auto model = load_tiny("base", "diffusers");
  PixArtSampleOptions opt;
  opt.numerics = PixArtNumerics::kDiffusers;
  opt.y = d.y;
  opt.mask = d.mask;
  opt.negative_y = d.negative_y;
  opt.negative_mask = d.negative_mask;
  opt.steps = 2;
  auto z = sample_pixart(model, opt);
  EXPECT_EQ(z.sizes(), (std::vector<int64_t>{2, 4, 8, 8}));
  EXPECT_TRUE(at::isfinite(z).all().item<bool>());
}

}  // namespace
}  // namespace ditcache
