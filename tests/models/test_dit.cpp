// DiT parity against the original facebookresearch/DiT code and diffusers (fixtures from
// scripts/fixtures/dit_fixtures.py), configs, strict loading and the samplers.
#include <cmath>
#include <filesystem>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/dit.h"
#include "ditcache/pipeline.h"
#include "ditcache/sampling/gaussian_diffusion.h"
#include "test_util.h"

namespace ditcache {
namespace {

using test::fixture;

DiTConfig tiny_config(DiTNumerics numerics = DiTNumerics::kOriginal) {
  auto c = DiTConfig::from_json(R"({"name": "DiT-tiny", "depth": 2, "hidden_size": 64, "num_heads": 4,
    "patch_size": 2, "input_size": 8, "num_classes": 10})");
  c.numerics = numerics;
  return c;
}

DiT load_tiny(const std::string& file, DiTNumerics numerics = DiTNumerics::kOriginal) {
  DiT model(tiny_config(numerics));
  model->load(*open_weights(fixture("dit/" + file)));
  model->eval();
  return model;
}

struct Cases {
  std::unique_ptr<WeightFile> file = open_weights(fixture("dit/dit_tiny_cases.safetensors"));
  at::Tensor operator[](const std::string& name) const { return file->load(name); }
};

constexpr double kTol = 1e-5;

TEST(DiTEmbeddings, TimestepFeaturesMatchReferenceVectors) {
  auto f = timestep_features(at::tensor({0.0, 1.0, 500.0}, at::kFloat));
  ASSERT_EQ(f.sizes(), (std::vector<int64_t>{3, 256}));
  EXPECT_FLOAT_EQ(f[0][0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(f[0][128].item<float>(), 0.0f);
  EXPECT_NEAR(f[1][0].item<float>(), 0.5403023, 1e-6);
  EXPECT_NEAR(f[1][128].item<float>(), 0.8414710, 1e-6);
  EXPECT_NEAR(f[1][1].item<float>(), 0.5973753, 1e-6);
  EXPECT_NEAR(f[1][129].item<float>(), 0.8019618, 1e-6);
  EXPECT_NEAR(f[2][0].item<float>(), -0.8838493, 1e-4);
  EXPECT_NEAR(f[2][128].item<float>(), -0.4677718, 1e-4);
  // diffusers' DiT divides by 127: element 1 of t=1 is cos(10000^(-1/127)).
  auto d = timestep_features(at::tensor({1.0}, at::kFloat), 256, 127);
  EXPECT_NEAR(d[0][1].item<float>(), std::cos(std::pow(10000.0, -1.0 / 127)), 1e-6);
}

TEST(DiTEmbeddings, PosEmbedMatchesReferenceVectors) {
  auto p = sincos_pos_embed_2d(1152, 16, 16);
  ASSERT_EQ(p.sizes(), (std::vector<int64_t>{256, 1152}));
  EXPECT_EQ(p[0].narrow(0, 0, 288).abs().max().item<float>(), 0.0f);
  EXPECT_EQ(p[0].narrow(0, 288, 288).min().item<float>(), 1.0f);
  EXPECT_NEAR(p[1][0].item<float>(), 0.841471, 1e-6);
  EXPECT_NEAR(p[1][1].item<float>(), std::sin(0.9685256), 1e-6);
  EXPECT_NEAR(p[1][288].item<float>(), std::cos(1.0), 1e-6);
  EXPECT_TRUE(at::equal(p[1].narrow(0, 576, 576), p[0].narrow(0, 576, 576)));
  EXPECT_THROW(sincos_pos_embed_2d(6, 2, 2), Error);
}

TEST(DiTConfig, PresetsCoverEverySizePatchAndResolution) {
  const auto names = DiTConfig::preset_names();
  EXPECT_EQ(names.size(), 24u);
  for (const auto& name : names) EXPECT_NO_THROW(DiTConfig::preset(name).validate()) << name;
  auto xl = DiTConfig::preset("DiT-XL/2");
  EXPECT_EQ(xl.depth, 28);
  EXPECT_EQ(xl.hidden_size, 1152);
  EXPECT_EQ(xl.num_heads, 16);
  EXPECT_EQ(xl.num_tokens(), 256);
  EXPECT_EQ(DiTConfig::preset("DiT-XL/2-512").num_tokens(), 1024);
  EXPECT_EQ(DiTConfig::preset("DiT-S/8-256").num_tokens(), 16);
  try {
    DiTConfig::preset("DiT-M/2");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("DiT-XL/2-512"), std::string::npos) << e.what();
  }
}

TEST(DiTConfig, JsonRoundTripsAndRejectsBadFields) {
  auto c = tiny_config(DiTNumerics::kDiffusers);
  auto back = DiTConfig::from_json(c.to_json());
  EXPECT_EQ(back.hidden_size, 64);
  EXPECT_EQ(back.numerics, DiTNumerics::kDiffusers);
  auto expect_error = [](const std::string& json, const std::string& fragment) {
    try {
      DiTConfig::from_json(json, "cfg.json");
      ADD_FAILURE() << "no error for " << json;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"hidden": 64})", "unknown DiT config field 'hidden'");
  expect_error(R"({"depth": "two"})", "field 'depth' must be an integer");
  expect_error(R"({"hidden_size": 66, "num_heads": 4})", "hidden_size");
  expect_error(R"({"input_size": 9, "patch_size": 2})", "input_size 9 is not a multiple of patch_size 2");
  expect_error(R"({"numerics": "fast"})", "field 'numerics' must be \"original\" or \"diffusers\", found \"fast\"");
  expect_error("[1, 2", "not valid JSON");
}

TEST(DiTConfig, DetectsArchitectureFromBothLayouts) {
  for (const char* file : {"dit_tiny_original.safetensors", "dit_tiny_diffusers.safetensors"}) {
    auto c = DiTConfig::from_weights(*open_weights(fixture(std::string("dit/") + file)));
    EXPECT_EQ(c.depth, 2) << file;
    EXPECT_EQ(c.hidden_size, 64) << file;
    EXPECT_EQ(c.patch_size, 2) << file;
    EXPECT_EQ(c.num_classes, 10) << file;
    EXPECT_TRUE(c.learn_sigma) << file;
    // The original file stores pos_embed (16 tokens: latent 8); a diffusers file has no trace of the
    // latent size, so the 256 px default (latent 32) stands until the caller sets it.
    const bool diffusers = std::string(file).find("diffusers") != std::string::npos;
    EXPECT_EQ(c.name, diffusers ? "DiT(depth=2, hidden=64, patch=2, input=32)" : "DiT(depth=2, hidden=64, patch=2, input=8)") << file;
    EXPECT_EQ(c.numerics, DiTNumerics::kOriginal) << file;  // the original numerics are the default
  }
}

TEST(DiTParity, ForwardMatchesOriginal) {
  Cases cases;
  auto model = load_tiny("dit_tiny_original.safetensors");
  at::NoGradGuard g;
  DITCACHE_EXPECT_CLOSE(model->forward(cases["x"], cases["t"], cases["y"]), cases["out_original"], kTol);
  DITCACHE_EXPECT_CLOSE(model->forward(cases["x"], cases["t_fractional"], cases["y"]),
                        cases["out_original_fractional_t"], kTol);
}

TEST(DiTParity, ForwardFromOriginalPickleCheckpoint) {
  Cases cases;
  auto model = load_tiny("dit_tiny_original.pt");
  at::NoGradGuard g;
  DITCACHE_EXPECT_CLOSE(model->forward(cases["x"], cases["t"], cases["y"]), cases["out_original"], kTol);
}

TEST(DiTParity, ForwardWithGuidanceMatchesOriginal) {
  Cases cases;
  auto model = load_tiny("dit_tiny_original.safetensors");
  at::NoGradGuard g;
  auto out = model->forward_with_cfg(cases["x_cfg"], cases["t_cfg"], cases["y_cfg"], 4.0);
  DITCACHE_EXPECT_CLOSE(out, cases["out_cfg_original"], kTol);
}

TEST(DiTParity, DiffusersCheckpointWithDiffusersNumerics) {
  Cases cases;
  auto model = load_tiny("dit_tiny_diffusers.safetensors", DiTNumerics::kDiffusers);
  at::NoGradGuard g;
  DITCACHE_EXPECT_CLOSE(model->forward(cases["x"], cases["t"], cases["y"]), cases["out_diffusers"], kTol);
  // The same weights under the original numerics reproduce the original model instead.
  auto original = load_tiny("dit_tiny_diffusers.safetensors", DiTNumerics::kOriginal);
  DITCACHE_EXPECT_CLOSE(original->forward(cases["x"], cases["t"], cases["y"]), cases["out_original"], kTol);
  // ... and the two numerics really differ on these inputs.
  EXPECT_GT(test::relative_max_error(cases["out_diffusers"], cases["out_original"]), 1e-4);
}

class DiTLoadErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    auto file = open_weights(fixture("dit/dit_tiny_original.safetensors"));
    for (const auto& name : file->names()) tensors_.emplace_back(name, file->load(name));
  }
  std::string write(const std::string& name) {
    auto path = dir_.file(name);
    write_safetensors(path, tensors_);
    return path;
  }
  std::string load_error(const std::string& path, DiTConfig config = tiny_config()) {
    DiT model(config);
    try {
      model->load(*open_weights(path));
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  }
  test::TempDir dir_;
  std::vector<std::pair<std::string, at::Tensor>> tensors_;
};

TEST_F(DiTLoadErrors, MisShapedTensorIsNamedWithBothShapes) {
  for (auto& [name, t] : tensors_) if (name == "blocks.1.attn.proj.weight") t = t.t().contiguous().narrow(0, 0, 32);
  auto message = load_error(write("bad_shape.safetensors"));
  EXPECT_NE(message.find("tensor 'blocks.1.attn.proj.weight': shape [32, 64], expected [64, 64]"), std::string::npos)
      << message;
}

TEST_F(DiTLoadErrors, MissingAndUnexpectedTensorsAreAllListed) {
  std::vector<std::pair<std::string, at::Tensor>> kept;
  for (auto& item : tensors_) if (item.first != "blocks.0.mlp.fc2.bias") kept.push_back(item);
  kept.emplace_back("blocks.0.extra.weight", at::zeros({3}));
  tensors_ = kept;
  auto message = load_error(write("missing.safetensors"));
  EXPECT_NE(message.find("missing tensor 'blocks.0.mlp.fc2.bias' (expected shape [64])"), std::string::npos) << message;
  EXPECT_NE(message.find("unexpected tensor 'blocks.0.extra.weight' of shape [3]"), std::string::npos) << message;
}

TEST_F(DiTLoadErrors, WrongConfigNamesTheField) {
  auto config = tiny_config();
  config.hidden_size = 96;
  auto message = load_error(fixture("dit/dit_tiny_original.safetensors"), config);
  EXPECT_NE(message.find("hidden_size: expected 96, found 64"), std::string::npos) << message;
  config = tiny_config();
  config.depth = 3;
  message = load_error(fixture("dit/dit_tiny_original.safetensors"), config);
  EXPECT_NE(message.find("depth: expected 3, found 2"), std::string::npos) << message;
}

TEST_F(DiTLoadErrors, ForeignFileIsRejected) {
  tensors_ = {{"encoder.conv_in.weight", at::zeros({2, 2})}};
  auto message = load_error(write("foreign.safetensors"));
  EXPECT_NE(message.find("not a DiT checkpoint"), std::string::npos) << message;
}

TEST(DiTModel, RejectsBadInputShapes) {
  DiT model(tiny_config());
  auto t = at::zeros({2}, at::kLong);
  EXPECT_THROW(model->forward(at::zeros({2, 4, 16, 16}), t, t), Error);
  EXPECT_THROW(model->forward(at::zeros({2, 4, 8, 8}), at::zeros({3}, at::kLong), t), Error);
  EXPECT_THROW(model->forward_with_cfg(at::zeros({3, 4, 8, 8}), at::zeros({3}), at::zeros({3}, at::kLong), 4.0), Error);
}

// ------------------------------------------------------------------------------------------- sampler
TEST(DiTSchedule, Respacing250MatchesOriginal) {
  Cases cases;
  GaussianDiffusion d("250");
  auto expected_map = cases["ddpm250_timestep_map"];
  ASSERT_EQ(d.num_steps(), 250);
  for (int64_t k = 0; k < 250; ++k) EXPECT_EQ(d.model_timestep(k), expected_map[k].item<int64_t>()) << k;
  auto betas = cases["ddpm250_betas"];
  for (int64_t k = 0; k < 250; ++k) EXPECT_NEAR(d.betas()[k], betas[k].item<double>(), 1e-15) << k;
  EXPECT_NEAR(d.betas()[0], 1e-4, 1e-12);
  EXPECT_NEAR(d.betas()[1], 5.99066e-4, 1e-9);
  EXPECT_NEAR(d.betas()[249], 0.0775193, 1e-7);
  EXPECT_EQ(d.model_timestep(1), 4);
  EXPECT_EQ(d.model_timestep(248), 995);
  EXPECT_EQ(d.model_timestep(249), 999);
}

TEST(DiTSchedule, DdimStridesAndErrors) {
  Cases cases;
  auto expected = cases["ddim50_timestep_map"];
  auto steps = space_timesteps(1000, "ddim50");
  ASSERT_EQ(steps.size(), 50u);
  for (size_t i = 0; i < steps.size(); ++i) EXPECT_EQ(steps[i], expected[static_cast<int64_t>(i)].item<int64_t>());
  EXPECT_EQ(GaussianDiffusion::ddim(50).respacing(), "ddim50");
  EXPECT_EQ(GaussianDiffusion::ddim(37).num_steps(), 37);  // no stride gives 37: even spacing instead
  EXPECT_EQ(space_timesteps(1000, "10,20").size(), 30u);
  EXPECT_THROW(space_timesteps(1000, "ddim999"), Error);
  EXPECT_THROW(space_timesteps(1000, "abc"), Error);
  EXPECT_THROW(space_timesteps(1000, "0"), Error);
  EXPECT_THROW(space_timesteps(1000, "2000"), Error);
  EXPECT_THROW(GaussianDiffusion::ddim(0), Error);
}

TEST(DiTSchedule, ClipDenoisedClampsTheX0Prediction) {
  auto d = GaussianDiffusion::ddim(10);
  const int64_t k = 5;
  // eps chosen so that x0 = x / sqrt(abar) - eps * sqrt(1/abar - 1) is 3 everywhere (outside [-1, 1]).
  const double a = d.alphas_cumprod()[k];
  auto x = at::full({1, 2, 2, 2}, 0.5);
  auto eps = (x / std::sqrt(a) - 3.0) / std::sqrt(1.0 / a - 1.0);
  auto x0 = d.predict_x0(x, eps, k);
  EXPECT_NEAR(x0.max().item<double>(), 3.0, 1e-4);
  auto noise = at::zeros_like(x);
  auto plain = d.ddim_step(x, eps, k, noise, 0.0, false);
  auto clipped = d.ddim_step(x, eps, k, noise, 0.0, true);
  // With x0 clamped to 1 the step is the DDIM update from x0 = 1 (and eps re-derived from it).
  EXPECT_FALSE(at::allclose(plain, clipped));
  auto expected_eps = (x / std::sqrt(a) - 1.0) / std::sqrt(1.0 / a - 1.0);
  auto from_one = d.ddim_step(x, expected_eps, k, noise, 0.0, false);
  EXPECT_TRUE(at::allclose(clipped, from_one, 1e-5, 1e-5));
  // DDPM likewise: the posterior mean uses the clamped x0.
  auto ddpm_clipped = d.ddpm_step(x, eps, k, noise, true);
  EXPECT_TRUE(at::allclose(ddpm_clipped, d.ddpm_step(x, expected_eps, k, noise, false), 1e-5, 1e-5));
}

at::Tensor run_sampler(DiT& model, const std::string& respacing, SamplerKind kind, double scale) {
  DiTSampleOptions o;
  o.class_labels = {1, 7};
  o.respacing = respacing;
  o.sampler = kind;
  o.guidance_scale = scale;
  o.seed = 0;
  return sample_dit(model, o);
}

TEST(DiTSampling, DdpmLoopWithGuidanceMatchesOriginal) {
  Cases cases;
  auto model = load_tiny("dit_tiny_original.safetensors");
  DITCACHE_EXPECT_CLOSE(run_sampler(model, "10", SamplerKind::kDDPM, 4.0), cases["sample_ddpm10"], 1e-4);
}

TEST(DiTSampling, DdpmLoopWithoutGuidanceMatchesOriginal) {
  Cases cases;
  auto model = load_tiny("dit_tiny_original.safetensors");
  DITCACHE_EXPECT_CLOSE(run_sampler(model, "10", SamplerKind::kDDPM, 1.0), cases["sample_ddpm10_nocfg"], 1e-4);
}

TEST(DiTSampling, DdimLoopMatchesOriginal) {
  Cases cases;
  auto model = load_tiny("dit_tiny_original.safetensors");
  DITCACHE_EXPECT_CLOSE(run_sampler(model, "ddim5", SamplerKind::kDDIM, 4.0), cases["sample_ddim5"], 1e-4);
}

TEST(DiTSampling, DdimLoopMatchesDiffusersPipeline) {
  Cases cases;
  auto model = load_tiny("dit_tiny_diffusers.safetensors", DiTNumerics::kDiffusers);
  DITCACHE_EXPECT_CLOSE(run_sampler(model, "ddim5", SamplerKind::kDDIM, 4.0), cases["sample_diffusers_ddim5"], 1e-4);
}

TEST(DiTSampling, InitialNoiseMatchesTorchSeedAndRunsAreBitIdentical) {
  Cases cases;
  auto model = load_tiny("dit_tiny_original.safetensors");
  DiTSampleOptions o;
  o.class_labels = {1, 7};
  o.respacing = "10";
  o.init_noise = cases["sample_ddpm10_init"];
  auto a = sample_dit(model, o);
  o.init_noise.reset();
  auto b = sample_dit(model, o);
  auto c = sample_dit(model, o);
  EXPECT_TRUE(at::equal(a, b)) << "seeded noise differs from torch.manual_seed(0); torch.randn";
  EXPECT_TRUE(at::equal(b, c));
  o.class_labels = {1, 10};
  EXPECT_THROW(sample_dit(model, o), Error);
}

}  // namespace
}  // namespace ditcache
