// OpenSora 1.2 STDiT3 and the rectified-flow sampler against the reference outputs in
// ../shared/fixtures/opensora/ (Open-Sora v1.2.0, fp32 CPU; README there). The tiny
// configuration comes from the weight file, not from this test.
#include <cmath>
#include <fstream>
#include <sstream>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ditcache/cache/context.h"
#include "ditcache/cache/policy.h"
#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/stdit3.h"
#include "ditcache/sampling/rflow.h"
#include "opensora_fixtures.h"
#include "test_util.h"

namespace ditcache {
namespace {

using test::shared_fixture;

const std::string kWeights = shared_fixture("opensora/stdit3_tiny_weights.safetensors");

STDiT3 load_tiny() { return test::load_tiny_stdit3(); }

// The keyword arguments of one recorded forward call.
STDiT3Inputs inputs_of(const WeightFile& f) {
  STDiT3Inputs in;
  in.x = f.load("x");
  in.timestep = f.load("timestep");
  in.y = f.load("y");
  if (f.contains("mask")) in.mask = f.load("mask");
  if (f.contains("x_mask")) in.x_mask = f.load("x_mask").ne(0);
  in.fps = f.load("fps");
  in.height = f.load("height")[0].item<double>();
  in.width = f.load("width")[0].item<double>();
  return in;
}

// README: forward passes at atol = rtol = 1e-4.
void expect_allclose(const at::Tensor& actual, const at::Tensor& expected, double atol, double rtol) {
  ASSERT_EQ(actual.sizes(), expected.sizes());
  auto diff = (actual.to(at::kDouble) - expected.to(at::kDouble)).abs();
  auto bound = atol + rtol * expected.to(at::kDouble).abs();
  EXPECT_TRUE(diff.le(bound).all().item<bool>()) << "max |diff| " << diff.max().item<double>();
}

class STDiT3Parity : public ::testing::TestWithParam<const char*> {};

TEST_P(STDiT3Parity, ForwardMatchesReference) {
  const auto path = shared_fixture(std::string("opensora/") + GetParam());
  DITCACHE_REQUIRE_SHARED_FIXTURE(path);
  DITCACHE_REQUIRE_SHARED_FIXTURE(kWeights);
  auto model = load_tiny();
  auto f = open_weights(path);
  at::NoGradGuard no_grad;
  auto out = model->forward(inputs_of(*f));
  expect_allclose(out, f->load("out"), 1e-4, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Cases, STDiT3Parity,
                         ::testing::Values("stdit3_tiny_case1.safetensors", "stdit3_tiny_case2_image.safetensors",
                                           "stdit3_tiny_case3_xmask.safetensors",
                                           "stdit3_tiny_case4_oddsize_nomask.safetensors",
                                           "stdit3_tiny_case5_cfgshape.safetensors"));

TEST(STDiT3, ConfigComesFromTheWeights) {
  DITCACHE_REQUIRE_SHARED_FIXTURE(kWeights);
  auto c = STDiT3Config::from_weights(*open_weights(kWeights));
  EXPECT_EQ(c.depth, 2);
  EXPECT_EQ(c.hidden_size, 72);
  EXPECT_EQ(c.num_heads, 2);
  EXPECT_EQ(c.caption_channels, 32);
  EXPECT_EQ(c.model_max_length, 8);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_TRUE(c.pred_sigma);
  EXPECT_EQ(c.patch_h, 2);
  EXPECT_EQ(c.input_sq_size, 512);
}

TEST(STDiT3, AllOnesXMaskIsTheSameAsNone) {
  DITCACHE_REQUIRE_SHARED_FIXTURE(kWeights);
  auto model = load_tiny();
  auto in = inputs_of(*open_weights(shared_fixture("opensora/stdit3_tiny_case1.safetensors")));
  at::NoGradGuard no_grad;
  auto plain = model->forward(in);
  in.x_mask = at::ones({in.x.size(0), in.x.size(2)}, at::kBool);
  EXPECT_TRUE(at::equal(model->forward(in), plain));
}

TEST(STDiT3, RejectsInputsThatDoNotFit) {
  DITCACHE_REQUIRE_SHARED_FIXTURE(kWeights);
  auto model = load_tiny();
  auto good = inputs_of(*open_weights(shared_fixture("opensora/stdit3_tiny_case1.safetensors")));
  at::NoGradGuard no_grad;
  auto in = good;
  in.x = at::zeros({2, 3, 3, 4, 6});
  test::expect_error([&] { model->forward(in); }, ErrorCode::kShapeMismatch, "x must be [B, 4, T, h, w]");
  in = good;
  in.y = at::zeros({2, 8, 16});
  test::expect_error([&] { model->forward(in); }, ErrorCode::kShapeMismatch, "y must be [2, L, 32]");
  in = good;
  in.mask = at::ones({3, 8}, at::kLong);
  test::expect_error([&] { model->forward(in); }, ErrorCode::kShapeMismatch, "'mask' has 3 rows");
  in = good;
  in.mask = at::zeros({2, 8}, at::kLong);
  test::expect_error([&] { model->forward(in); }, ErrorCode::kInvalidArgument, "no valid token");
  in = good;
  in.x_mask = at::ones({2, 5}, at::kBool);
  test::expect_error([&] { model->forward(in); }, ErrorCode::kShapeMismatch, "x_mask must be [2, 3]");
  in = good;
  in.height = 0;
  test::expect_error([&] { model->forward(in); }, ErrorCode::kInvalidArgument, "height and width");
}

TEST(STDiT3, LoadNamesTheFieldThatDiffers) {
  DITCACHE_REQUIRE_SHARED_FIXTURE(kWeights);
  auto file = open_weights(kWeights);
  auto c = STDiT3Config::from_weights(*file);
  c.num_heads = 4;
  STDiT3 model(c);
  test::expect_error([&] { model->load(*file); }, ErrorCode::kShapeMismatch, "num_heads: expected 4, found 2");
  test::expect_error([&] { STDiT3Config::from_weights(*open_weights(test::fixture("dit/dit_tiny_original.safetensors"))); },
                     ErrorCode::kFormat, "not an STDiT3");
}

TEST(STDiT3, ConfigJsonAcceptsTheReleaseFieldsAndNamesUnknownOnes) {
  auto c = STDiT3Config::from_json(R"({"architectures": ["STDiT3"], "caption_channels": 4096, "class_dropout_prob": 0.1,
    "depth": 28, "drop_path": 0.0, "enable_flash_attn": true, "hidden_size": 1152, "in_channels": 4,
    "input_size": [null, null, null], "input_sq_size": 512, "mlp_ratio": 4.0, "model_max_length": 300,
    "model_type": "STDiT3", "num_heads": 16, "patch_size": [1, 2, 2], "pred_sigma": true, "qk_norm": true})");
  EXPECT_EQ(c.hidden_size, 1152);
  EXPECT_EQ(c.head_dim(), 72);
  test::expect_error([] { STDiT3Config::from_json(R"({"hiden_size": 8})"); }, ErrorCode::kInvalidArgument,
                     "unknown STDiT3 config field 'hiden_size'");
  test::expect_error([] { STDiT3Config::from_json(R"({"patch_size": 2})"); }, ErrorCode::kInvalidArgument, "[t, h, w]");
  test::expect_error([] { STDiT3Config::from_json(R"({"hidden_size": 100, "num_heads": 20})"); }, ErrorCode::kInvalidArgument,
                     "head dim 5 must be even");
}

TEST(OpenSoraEmbeddings, RopeRotatesAdjacentPairs) {
  auto freqs = at::tensor({1.0f, 0.5f});
  auto angles = rope_angles(freqs, 3);  // [3, 4]
  EXPECT_NEAR(angles[2][1].item<float>(), 2.0f, 1e-6);
  EXPECT_NEAR(angles[2][2].item<float>(), 1.0f, 1e-6);
  auto x = at::tensor({1.0f, 0.0f, 0.0f, 1.0f}).expand({3, 4});
  auto r = apply_rope(x, angles);
  // Position 1: pair 0 rotates (1, 0) by 1 rad, pair 1 rotates (0, 1) by 0.5 rad.
  EXPECT_NEAR(r[1][0].item<float>(), std::cos(1.0), 1e-6);
  EXPECT_NEAR(r[1][1].item<float>(), std::sin(1.0), 1e-6);
  EXPECT_NEAR(r[1][2].item<float>(), -std::sin(0.5), 1e-6);
  EXPECT_NEAR(r[1][3].item<float>(), std::cos(0.5), 1e-6);
}

TEST(OpenSoraEmbeddings, PositionScaleFollowsResolution) {
  // 240x426 px: 15x27 patches, base size 20, scale sqrt(240*426)/512 (models.md §3.3).
  auto p = opensora_pos_embed(8, 15, 27, 240, 426);
  ASSERT_EQ(p.sizes(), (std::vector<int64_t>{405, 8}));
  const double scale = std::sqrt(240.0 * 426.0) / 512;
  const double col1 = 1.0 / scale * (20.0 / 27);  // token (0, 1): column position
  EXPECT_NEAR(p[1][0].item<float>(), std::sin(col1), 1e-5);
  EXPECT_NEAR(p[1][1].item<float>(), std::sin(col1 / 100), 1e-5);
  const double row1 = 1.0 / scale * (20.0 / 15);  // token (1, 0): row position
  EXPECT_NEAR(p[27][4].item<float>(), std::sin(row1), 1e-5);
  EXPECT_NEAR(p[27][0].item<float>(), 0.0f, 1e-7);
}

// --- rectified flow --------------------------------------------------------------------------
nlohmann::json timesteps_json() {
  std::ifstream in(shared_fixture("opensora/rflow_timesteps.json"));
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

TEST(RFlow, TimestepsMatchReferenceAt240pAnd480p) {
  DITCACHE_REQUIRE_SHARED_FIXTURE(shared_fixture("opensora/rflow_timesteps.json"));
  const auto j = timesteps_json();
  for (const char* key : {"240p_9x16_51f", "480p_9x16_51f"}) {
    const auto& c = j.at(key);
    RFlowSchedule s;
    s.num_steps = c.at("num_sampling_steps").get<int>();
    s.height = c.at("image_size_hw")[0].get<double>();
    s.width = c.at("image_size_hw")[1].get<double>();
    s.num_frames = c.at("num_frames").get<int64_t>();
    const auto fp32 = rflow_timesteps(s);
    const auto expected = c.at("timesteps").get<std::vector<float>>();
    ASSERT_EQ(fp32.size(), expected.size());
    for (size_t i = 0; i < fp32.size(); ++i) EXPECT_NEAR(fp32[i], expected[i], 1e-3) << key << " step " << i;
    s.args_dtype = at::kBFloat16;
    const auto bf16 = rflow_timesteps(s);
    const auto expected_bf16 = c.at("timesteps_with_bf16_model_args").get<std::vector<float>>();
    for (size_t i = 0; i < bf16.size(); ++i) EXPECT_NEAR(bf16[i], expected_bf16[i], 1e-3) << key << " bf16 step " << i;
    // The two conventions differ (by up to ~0.3): the tolerance tells them apart.
    float largest = 0;
    for (size_t i = 0; i < bf16.size(); ++i) largest = std::max(largest, std::abs(bf16[i] - fp32[i]));
    EXPECT_GT(largest, 0.01f) << key;
  }
}

TEST(RFlow, RejectsFrameCountsTheShiftCannotUse) {
  RFlowSchedule s;
  s.height = 240;
  s.width = 426;
  s.num_frames = 16;
  test::expect_error([&] { rflow_timesteps(s); }, ErrorCode::kInvalidArgument, "num_frames must be 1 (an image) or >= 17");
  s.num_frames = 51;
  s.num_steps = 0;
  test::expect_error([&] { rflow_timesteps(s); }, ErrorCode::kInvalidArgument, "num_steps must be >= 1");
}

TEST(RFlow, TinySamplingLoopMatchesReference) {
  const auto path = shared_fixture("opensora/rflow_tiny_sampling.safetensors");
  DITCACHE_REQUIRE_SHARED_FIXTURE(path);
  DITCACHE_REQUIRE_SHARED_FIXTURE(kWeights);
  auto f = open_weights(path);
  auto model = load_tiny();
  const auto j = timesteps_json();
  const auto expected_t = j.at("tiny_sampling").at("timesteps").get<std::vector<float>>();
  RFlowSchedule s;
  s.num_steps = 5;
  s.height = 32;
  s.width = 48;
  s.num_frames = 17;
  const auto timesteps = rflow_timesteps(s);
  ASSERT_EQ(timesteps.size(), expected_t.size());
  for (size_t i = 0; i < timesteps.size(); ++i) EXPECT_NEAR(timesteps[i], expected_t[i], 1e-3);

  // The CFG batch as the reference builds it: cond first, then the null caption; n masks.
  const auto n = f->load("z_init").size(0);
  auto y = at::cat({f->load("caption_y"), model->null_caption().unsqueeze(0).expand({n, -1, -1})}, 0).unsqueeze(1);
  EXPECT_TRUE(at::equal(y, f->load("model_y")));
  at::NoGradGuard no_grad;
  auto z = rflow_sample(f->load("z_init"), timesteps, 1000, 7.0, [&](const at::Tensor& z_in, const at::Tensor& t, int step) {
    const auto prefix = "step" + std::to_string(step) + "_";
    expect_allclose(z_in, f->load(prefix + "z_in"), 5e-4, 1e-4);
    expect_allclose(t, f->load(prefix + "t"), 1e-3, 0);
    STDiT3Inputs in;
    in.x = z_in;
    in.timestep = t;
    in.y = y;
    in.mask = f->load("model_mask");
    in.fps = f->load("fps");
    in.height = f->load("height")[0].item<double>();
    in.width = f->load("width")[0].item<double>();
    in.x_mask = f->load("model_x_mask").ne(0);
    auto out = model->forward(in);
    expect_allclose(out, f->load(prefix + "model_out"), 1e-4, 1e-4);
    return out.narrow(1, 0, 4);
  });
  expect_allclose(z, f->load("z_final"), 5e-4, 0);
}

// --- caching -----------------------------------------------------------------------------------
TEST(STDiT3Cache, EveryBlockKindAndSiteRunsThroughTheContext) {
  DITCACHE_REQUIRE_SHARED_FIXTURE(kWeights);
  auto model = load_tiny();
  auto in = inputs_of(*open_weights(shared_fixture("opensora/stdit3_tiny_case1.safetensors")));
  at::NoGradGuard no_grad;
  const auto uncached = model->forward(in);
  CacheContext cache(make_policy("fora:interval=3"));
  const auto& c = model->config();
  const int64_t T = in.x.size(2), gh = 2, gw = 3;
  cache.begin_run(make_run_info(backbone_info(c), stdit3_run_shape(in.x.size(0), false, T, gh, gw, 0), 3, "rflow"));
  // Step 0 computes every site: the output is the uncached one.
  cache.begin_step({0, 0});
  EXPECT_TRUE(at::equal(model->forward(in, &cache), uncached));
  cache.end_step();
  // Step 1 reuses every module; with the same inputs the stored outputs are exactly what a fresh
  // computation gives.
  cache.begin_step({1, 1});
  EXPECT_TRUE(at::equal(model->forward(in, &cache), uncached));
  cache.end_step();
  // Step 2 reuses them under a new timestep: only the gates and modulation are new, so the output
  // differs from a fresh computation.
  in.timestep = in.timestep * 0.5;
  cache.begin_step({2, 2});
  auto reused = model->forward(in, &cache);
  cache.end_step();
  EXPECT_FALSE(at::allclose(reused, model->forward(in)));
  const auto& steps = cache.steps();
  ASSERT_EQ(steps.size(), 3u);
  // 2 layers x (spatial, temporal) x (attn, cross_attn, mlp) sites per step.
  ASSERT_EQ(steps[0].sites.size(), 12u);
  int temporal = 0;
  for (const auto& s : steps[0].sites) {
    EXPECT_EQ(s.action, Action::kCompute);
    temporal += s.site.block == BlockKind::kTemporal;
  }
  EXPECT_EQ(temporal, 6);
  for (const auto& s : steps[1].sites) EXPECT_EQ(s.action, Action::kReuse);
  EXPECT_DOUBLE_EQ(steps[0].flops, steps[0].full_flops);
  // A reused step only pays for what is not cached (nothing counted here).
  EXPECT_DOUBLE_EQ(steps[1].flops, 0.0);
  EXPECT_GT(steps[1].full_flops, 0.0);
}

}  // namespace
}  // namespace ditcache
