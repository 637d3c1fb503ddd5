// OpenSora 1.2 video VAE decoder: frame-count arithmetic, config validation and inference from
// weights, parity of the temporal output (x_z) and the final video (x) against the reference
// (../shared/fixtures/opensora/vae_tiny_*), and loader errors.

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/opensora_vae.h"
#include "test_util.h"

namespace ditcache {
namespace {

using test::expect_error;
using test::shared_fixture;

const std::string kWeights = "opensora/vae_tiny_weights.safetensors";

/// The tensors of a file, for writing modified copies.
std::vector<std::pair<std::string, at::Tensor>> all_tensors(const WeightFile& file) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& name : file.names()) out.emplace_back(name, file.load(name));
  return out;
}

/// The tiny fixture's configuration, written out by hand (independent of from_weights).
OpenSoraVAEConfig tiny_config() {
  auto c = OpenSoraVAEConfig::release();
  c.spatial.block_out_channels = {8, 16, 16, 16};
  c.spatial.norm_num_groups = 4;
  c.temporal.filters = 8;
  c.temporal.num_res_blocks = 1;
  c.temporal.num_groups = 4;
  return c;
}

/// Expects allclose(actual, expected, atol, rtol) and prints the max abs difference.
void expect_allclose(const at::Tensor& actual, const at::Tensor& expected, double tol, const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const auto a = actual.to(at::kDouble), e = expected.to(at::kDouble);
  const double max_abs = (a - e).abs().max().item<double>();
  std::printf("[ OpenSoraVAE ] %s: max |diff| %.3g (output max |x| %.3g)\n", what.c_str(), max_abs,
              e.abs().max().item<double>());
  EXPECT_TRUE(at::allclose(a, e, tol, tol)) << what << ": max |diff| " << max_abs;
}

// ---------------------------------------------------------------------------------------------
// Frame counts and configs
// ---------------------------------------------------------------------------------------------

TEST(OpenSoraVAEConfig, LatentAndPixelFrameCounts) {
  const auto c = OpenSoraVAEConfig::release();
  EXPECT_EQ(c.micro_latent_frames(), 5);
  EXPECT_EQ(c.temporal.time_upsample_factor(), 4);
  // models.md §4.2.
  EXPECT_EQ(c.latent_frames(51), 15);
  EXPECT_EQ(c.latent_frames(102), 30);
  EXPECT_EQ(c.latent_frames(204), 60);
  EXPECT_EQ(c.latent_frames(408), 120);
  EXPECT_EQ(c.latent_frames(1), 1);
  EXPECT_EQ(c.latent_frames(17), 5);
  EXPECT_EQ(c.latent_frames(30), 9);
  EXPECT_EQ(c.latent_frames(16), 4);
  EXPECT_EQ(c.latent_frames(18), 6);
  EXPECT_EQ(c.latent_frames(21), 6);
  EXPECT_EQ(c.latent_frames(22), 7);
  EXPECT_EQ(c.pixel_frames(15), 51);
  EXPECT_EQ(c.pixel_frames(9), 30);
  EXPECT_EQ(c.pixel_frames(5), 17);
  EXPECT_EQ(c.pixel_frames(1), 1);
  EXPECT_EQ(c.pixel_frames(6), 18);
  for (int64_t t = 1; t <= 40; ++t) {
    const int64_t f = c.pixel_frames(t);
    EXPECT_EQ(c.latent_frames(f), t) << "T_lat " << t;
    if (t > 1) EXPECT_EQ(c.latent_frames(f - 1), t - 1) << "pixel_frames(" << t << ") is not the smallest";
  }
  expect_error([&] { c.latent_frames(0); }, ErrorCode::kInvalidArgument, "num_frames");
  expect_error([&] { c.pixel_frames(0); }, ErrorCode::kInvalidArgument, "latent_frames");
}

TEST(OpenSoraVAEConfig, ReleaseDefaultsAndValidation) {
  const auto c = OpenSoraVAEConfig::release();
  EXPECT_NO_THROW(c.validate());
  EXPECT_EQ(c.spatial.block_out_channels, (std::vector<int64_t>{128, 256, 512, 512}));
  EXPECT_DOUBLE_EQ(c.spatial.scaling_factor, 0.18215);
  EXPECT_EQ(c.temporal.filters, 128);
  EXPECT_EQ(c.temporal.num_res_blocks, 4);
  EXPECT_EQ(c.temporal.channel_multipliers, (std::vector<int64_t>{1, 2, 2, 4}));
  EXPECT_EQ(c.temporal.temporal_downsample, (std::vector<bool>{false, true, true}));
  EXPECT_EQ(c.temporal.num_groups, 32);
  EXPECT_EQ(c.micro_frame_size, 17);
  EXPECT_EQ(c.shift, (std::vector<double>{-0.10, 0.34, 0.27, 0.98}));
  EXPECT_EQ(c.scale, (std::vector<double>{3.85, 2.32, 2.33, 3.06}));
  EXPECT_EQ(c.upscale_factor(), 8);

  auto bad = c;
  bad.temporal.num_groups = 48;
  expect_error([&] { bad.validate(); }, ErrorCode::kInvalidArgument, "temporal: OpenSoraTemporalVAEConfig: num_groups");
  expect_error([&] { bad.validate(); }, ErrorCode::kInvalidArgument, "found 48 (level 0 has 128 channels)");
  bad = c;
  bad.temporal.temporal_downsample = {true, true};
  expect_error([&] { bad.validate(); }, ErrorCode::kInvalidArgument, "temporal_downsample: expected 3 entries");
  bad = c;
  bad.temporal.num_res_blocks = 0;
  expect_error([&] { bad.validate(); }, ErrorCode::kInvalidArgument, "num_res_blocks: expected an integer >= 1, found 0");
  bad = c;
  bad.spatial.latent_channels = 16;
  expect_error([&] { bad.validate(); }, ErrorCode::kInvalidArgument,
               "spatial.latent_channels: expected temporal.out_channels (4), found 16");
  bad = c;
  bad.shift = {0.0, 1.0};
  expect_error([&] { bad.validate(); }, ErrorCode::kInvalidArgument, "shift: expected 4 values (temporal.latent_channels), found 2");
  bad = c;
  bad.scale[2] = 0.0;
  expect_error([&] { bad.validate(); }, ErrorCode::kInvalidArgument, "scale: expected finite non-zero values");
  bad = c;
  bad.micro_frame_size = 0;
  expect_error([&] { bad.validate(); }, ErrorCode::kInvalidArgument, "micro_frame_size");
  bad = c;
  bad.spatial.norm_num_groups = 7;
  expect_error([&] { bad.validate(); }, ErrorCode::kInvalidArgument, "spatial: VAEConfig");
  EXPECT_THROW(OpenSoraVAE{bad}, Error);
}

TEST(OpenSoraVAEConfig, TemporalJson) {
  const auto t = OpenSoraTemporalVAEConfig::from_json_string(
      R"({"type": "VAE_Temporal", "in_out_channels": 4, "latent_embed_dim": 4, "embed_dim": 4, "filters": 8,
          "num_res_blocks": 1, "channel_multipliers": [1, 2, 2, 4], "temporal_downsample": [false, true, true],
          "num_groups": 4})");
  EXPECT_EQ(t.filters, 8);
  EXPECT_EQ(t.num_res_blocks, 1);
  EXPECT_EQ(t.num_groups, 4);
  EXPECT_EQ(t.level_channels(3), 32);
  expect_error([] { OpenSoraTemporalVAEConfig::from_json_string(R"({"filters": "8"})", "cfg"); },
               ErrorCode::kInvalidArgument, "temporal VAE config field 'filters' must be a positive integer, found \"8\"");
  expect_error([] { OpenSoraTemporalVAEConfig::from_json_string(R"({"temporal_downsample": [1, 0, 0]})"); },
               ErrorCode::kInvalidArgument, "temporal_downsample");
  expect_error([] { OpenSoraTemporalVAEConfig::from_json_string(R"({"activation_fn": "relu"})"); },
               ErrorCode::kUnsupported, "activation_fn");
  expect_error([] { OpenSoraTemporalVAEConfig::from_json_string("{"); }, ErrorCode::kFormat, "JSON");
}

TEST(OpenSoraVAEConfig, FromTinyWeights) {
  const auto path = shared_fixture(kWeights);
  DITCACHE_REQUIRE_SHARED_FIXTURE(path);
  auto file = open_weights(path);
  const auto c = OpenSoraVAEConfig::from_weights(*file);
  EXPECT_EQ(c.spatial.block_out_channels, (std::vector<int64_t>{8, 16, 16, 16}));
  EXPECT_EQ(c.spatial.layers_per_block, 2);
  EXPECT_EQ(c.spatial.norm_num_groups, 4);  // from the metadata
  EXPECT_EQ(c.spatial.latent_channels, 4);
  EXPECT_DOUBLE_EQ(c.spatial.scaling_factor, 0.18215);
  EXPECT_EQ(c.temporal.filters, 8);
  EXPECT_EQ(c.temporal.num_res_blocks, 1);
  EXPECT_EQ(c.temporal.channel_multipliers, (std::vector<int64_t>{1, 2, 2, 4}));
  EXPECT_EQ(c.temporal.temporal_downsample, (std::vector<bool>{false, true, true}));
  EXPECT_EQ(c.temporal.num_groups, 4);  // from the metadata
  EXPECT_EQ(c.temporal.latent_channels, 4);
  EXPECT_EQ(c.temporal.latent_embed_dim, 4);
  EXPECT_EQ(c.temporal.out_channels, 4);
  EXPECT_EQ(c.micro_frame_size, 17);
  EXPECT_EQ(c.micro_batch_size, 4);
  ASSERT_EQ(c.shift.size(), 4u);
  ASSERT_EQ(c.scale.size(), 4u);
  const std::vector<double> shift{-0.10, 0.34, 0.27, 0.98}, scale{3.85, 2.32, 2.33, 3.06};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(c.shift[i], shift[i], 1e-6);
    EXPECT_NEAR(c.scale[i], scale[i], 1e-6);
  }

  // Without metadata the sizes still come from the shapes; the groups come from `base`.
  test::TempDir dir;
  write_safetensors(dir.file("nometa.safetensors"), all_tensors(*file));
  auto bare = open_weights(dir.file("nometa.safetensors"));
  expect_error([&] { OpenSoraVAEConfig::from_weights(*bare); }, ErrorCode::kInvalidArgument, "num_groups");
  auto base = OpenSoraVAEConfig::release();
  base.spatial.norm_num_groups = 2;
  base.temporal.num_groups = 8;
  const auto c2 = OpenSoraVAEConfig::from_weights(*bare, base);
  EXPECT_EQ(c2.spatial.block_out_channels, c.spatial.block_out_channels);
  EXPECT_EQ(c2.spatial.norm_num_groups, 2);
  EXPECT_EQ(c2.temporal.filters, 8);  // the channels' gcd
  EXPECT_EQ(c2.temporal.channel_multipliers, c.temporal.channel_multipliers);
  EXPECT_EQ(c2.temporal.num_groups, 8);

  // Metadata that contradicts the shapes is named.
  auto md = file->metadata();
  md["temporal_vae_config"] =
      R"({"filters": 8, "num_res_blocks": 2, "channel_multipliers": [1, 2, 2, 4], "temporal_downsample": [false, true, true], "num_groups": 4})";
  write_safetensors(dir.file("badmeta.safetensors"), all_tensors(*file), md);
  expect_error([&] { OpenSoraVAEConfig::from_weights(*open_weights(dir.file("badmeta.safetensors"))); },
               ErrorCode::kFormat, "'num_res_blocks' is 2 but the tensors have 1");
}

// ---------------------------------------------------------------------------------------------
// Parity with the reference
// ---------------------------------------------------------------------------------------------

struct DecodeCase {
  const char* file;
  int64_t num_frames;
  std::vector<int64_t> x_shape;
};

class OpenSoraVAEParity : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(OpenSoraVAEParity, MatchesReferenceDecode) {
  const auto& param = GetParam();
  const auto weights_path = shared_fixture(kWeights);
  const auto case_path = shared_fixture(std::string("opensora/") + param.file);
  DITCACHE_REQUIRE_SHARED_FIXTURE(weights_path);
  DITCACHE_REQUIRE_SHARED_FIXTURE(case_path);
  auto weights = open_weights(weights_path);
  auto ref = open_weights(case_path);

  OpenSoraVAE vae(tiny_config());
  const auto report = vae->load(*weights);
  EXPECT_EQ(report.loaded.size(), vae->named_parameters().size() + vae->named_buffers().size());
  EXPECT_TRUE(report.defaulted.empty());

  const auto z = ref->load("z");
  const int64_t num_frames = ref->load("num_frames").item<int64_t>();
  ASSERT_EQ(num_frames, param.num_frames);
  EXPECT_EQ(vae->config().latent_frames(num_frames), z.size(2));
  EXPECT_EQ(vae->config().pixel_frames(z.size(2)), num_frames);

  expect_allclose(vae->denormalize(z), ref->load("z_unnormalized"), 1e-6, std::string(param.file) + " z_unnormalized");
  const auto x_z = vae->temporal_decode(z, num_frames);
  expect_allclose(x_z, ref->load("x_z"), 1e-4, std::string(param.file) + " x_z");
  const auto x = vae->decode(z, num_frames);
  EXPECT_EQ(x.sizes(), at::IntArrayRef(param.x_shape));
  expect_allclose(x, ref->load("x"), 1e-4, std::string(param.file) + " x");
}

INSTANTIATE_TEST_SUITE_P(OpenSoraVAE, OpenSoraVAEParity,
                         ::testing::Values(DecodeCase{"vae_tiny_decode_17f.safetensors", 17, {1, 3, 17, 32, 48}},
                                           DecodeCase{"vae_tiny_decode_image.safetensors", 1, {1, 3, 1, 32, 48}},
                                           DecodeCase{"vae_tiny_decode_30f.safetensors", 30, {1, 3, 30, 16, 24}}),
                         [](const ::testing::TestParamInfo<DecodeCase>& info) {
                           return "F" + std::to_string(info.param.num_frames);
                         });

TEST(OpenSoraVAE, ChunksAreDecodedSeparately) {
  // Decoding the 30-frame latent in one temporal call (GroupNorm over all 9 frames) must differ
  // from the reference, which decodes 5 + 4 latent frames.
  const auto weights_path = shared_fixture(kWeights);
  const auto case_path = shared_fixture("opensora/vae_tiny_decode_30f.safetensors");
  DITCACHE_REQUIRE_SHARED_FIXTURE(weights_path);
  DITCACHE_REQUIRE_SHARED_FIXTURE(case_path);
  OpenSoraVAE vae(tiny_config());
  vae->load(*open_weights(weights_path));
  auto ref = open_weights(case_path);
  const auto whole = vae->temporal()->decode(vae->denormalize(ref->load("z")), 33);  // 36 emitted, 3 dropped
  ASSERT_EQ(whole.size(2), 33);
  const auto expected = ref->load("x_z");
  // The first chunk's 17 frames differ once GroupNorm sees all 9 latent frames.
  const double diff = (whole.narrow(2, 0, 17) - expected.narrow(2, 0, 17)).abs().max().item<double>();
  EXPECT_GT(diff, 1e-3);
  // A pipeline whose chunks hold all 9 latent frames reproduces that one-call decode.
  auto one_chunk = tiny_config();
  one_chunk.micro_frame_size = 36;
  OpenSoraVAE vae_one(one_chunk);
  vae_one->load(*open_weights(weights_path));
  EXPECT_EQ(vae_one->config().latent_frames(36), 9);
  const auto x_z = vae_one->temporal_decode(ref->load("z"), 36);
  EXPECT_TRUE(at::allclose(x_z.narrow(2, 3, 33), whole, 1e-5, 1e-5));
}

TEST(OpenSoraVAE, RunsInOtherDtypes) {
  const auto weights_path = shared_fixture(kWeights);
  const auto case_path = shared_fixture("opensora/vae_tiny_decode_17f.safetensors");
  DITCACHE_REQUIRE_SHARED_FIXTURE(weights_path);
  DITCACHE_REQUIRE_SHARED_FIXTURE(case_path);
  OpenSoraVAE vae(tiny_config());
  vae->load(*open_weights(weights_path));
  auto ref = open_weights(case_path);
  const auto z = ref->load("z");
  const auto expected_x_z = ref->load("x_z");

  vae->to(at::kDouble);
  const auto x = vae->decode(z, 17);
  EXPECT_EQ(x.scalar_type(), at::kDouble);
  expect_allclose(x, ref->load("x"), 1e-4, "float64 x");

  // bf16 (GroupNorm statistics in fp32): the temporal output stays near the fp32 reference.
  vae->to(at::kBFloat16);
  const auto x_z = vae->temporal_decode(z, 17);
  EXPECT_EQ(x_z.scalar_type(), at::kBFloat16);
  EXPECT_FALSE(x_z.isnan().any().item<bool>());
  const double err = test::relative_max_error(x_z, expected_x_z);
  std::printf("[ OpenSoraVAE ] bf16 x_z: relative max error %.3g\n", err);
  EXPECT_LE(err, 0.1);
}

TEST(OpenSoraVAE, RejectsBadLatentsAndFrameCounts) {
  OpenSoraVAE vae(tiny_config());
  expect_error([&] { vae->decode(at::zeros({1, 3, 5, 2, 3}), 17); }, ErrorCode::kShapeMismatch, "[1, 3, 5, 2, 3]");
  expect_error([&] { vae->decode(at::zeros({1, 4, 2, 3})); }, ErrorCode::kShapeMismatch, "expected [B, 4, T, h, w]");
  expect_error([&] { vae->decode(at::zeros({1, 4, 5, 2, 3}), 16); }, ErrorCode::kInvalidArgument,
               "num_frames 16 does not fit 5 latent frames (16 frames encode to 4 latent frames; e.g. 17 frames fit)");
  expect_error([&] { vae->decode(at::zeros({1, 4, 5, 2, 3}), 0); }, ErrorCode::kInvalidArgument, "num_frames 0");
  expect_error([&] { vae->temporal()->decode(at::zeros({1, 4, 2, 2, 3}), 9); }, ErrorCode::kInvalidArgument,
               "expected 5 to 8");
  expect_error([&] { vae->spatial_decode(at::zeros({1, 3, 2, 2, 3})); }, ErrorCode::kShapeMismatch, "[1, 3, 2, 2, 3]");
  // A random-weight decode of 2 samples with a partial chunk (micro batches of 4 frames straddle
  // the two samples): the second sample decodes as if alone, where decode(z) infers its frame
  // count (6 latent frames -> 18).
  at::manual_seed(0);
  const auto z = at::randn({2, 4, 6, 1, 2});
  const auto x = vae->decode(z, 18);
  ASSERT_EQ(x.sizes(), (at::IntArrayRef{2, 3, 18, 8, 16}));
  const auto alone = vae->decode(z.narrow(0, 1, 1));
  ASSERT_EQ(alone.sizes(), (at::IntArrayRef{1, 3, 18, 8, 16}));
  EXPECT_TRUE(at::allclose(x.narrow(0, 1, 1), alone, 1e-5, 1e-5));
  EXPECT_FALSE(at::allclose(x.narrow(0, 0, 1), alone, 1e-2, 1e-2));  // the samples do differ
}

TEST(OpenSoraVAE, RegistersCheckpointNames) {
  OpenSoraVAE vae(tiny_config());
  auto params = vae->named_parameters();
  for (const char* key : {"spatial_vae.module.post_quant_conv.weight", "spatial_vae.module.decoder.conv_in.weight",
                          "temporal_vae.post_quant_conv.conv.weight", "temporal_vae.decoder.conv1.conv.bias",
                          "temporal_vae.decoder.block_res_blocks.2.0.conv3.conv.weight",
                          "temporal_vae.decoder.conv_blocks.2.conv.weight", "temporal_vae.decoder.norm1.weight",
                          "temporal_vae.decoder.conv_out.conv.weight"}) {
    EXPECT_NE(params.find(key), nullptr) << key;
  }
  EXPECT_EQ(params.find("temporal_vae.decoder.conv_blocks.0.conv.weight"), nullptr);  // identity
  EXPECT_EQ(params.find("temporal_vae.decoder.res_blocks.0.conv1.conv.bias"), nullptr);  // no bias
  EXPECT_EQ(params["temporal_vae.decoder.conv_blocks.1.conv.weight"].sizes(), (at::IntArrayRef{32, 16, 3, 3, 3}));
  auto buffers = vae->named_buffers();
  ASSERT_NE(buffers.find("scale"), nullptr);
  EXPECT_EQ(buffers["scale"].sizes(), (at::IntArrayRef{1, 4, 1, 1, 1}));
}

// ---------------------------------------------------------------------------------------------
// Loader errors
// ---------------------------------------------------------------------------------------------

TEST(OpenSoraVAELoad, MissingTensorIsNamed) {
  const auto path = shared_fixture(kWeights);
  DITCACHE_REQUIRE_SHARED_FIXTURE(path);
  test::TempDir dir;
  std::vector<std::pair<std::string, at::Tensor>> kept;
  for (auto& item : all_tensors(*open_weights(path))) {
    if (item.first != "temporal_vae.decoder.block_res_blocks.2.0.conv3.conv.weight") kept.push_back(item);
  }
  write_safetensors(dir.file("missing.safetensors"), kept);
  OpenSoraVAE vae(tiny_config());
  const auto before = vae->named_parameters()["temporal_vae.decoder.conv1.conv.weight"].clone();
  expect_error([&] { vae->load(*open_weights(dir.file("missing.safetensors"))); }, ErrorCode::kShapeMismatch,
               "missing tensor 'temporal_vae.decoder.block_res_blocks.2.0.conv3.conv.weight' (expected shape [16, 32, 1, 1, 1])");
  EXPECT_TRUE(at::equal(vae->named_parameters()["temporal_vae.decoder.conv1.conv.weight"], before));  // nothing loaded
}

TEST(OpenSoraVAELoad, WrongShapeIsNamedWithExpectedAndFound) {
  const auto path = shared_fixture(kWeights);
  DITCACHE_REQUIRE_SHARED_FIXTURE(path);
  test::TempDir dir;
  auto tensors = all_tensors(*open_weights(path));
  for (auto& [name, t] : tensors) {
    if (name == "temporal_vae.decoder.conv_blocks.2.conv.weight") t = at::zeros({32, 32, 3, 3, 3});
  }
  write_safetensors(dir.file("bad.safetensors"), tensors);
  OpenSoraVAE vae(tiny_config());
  expect_error([&] { vae->load(*open_weights(dir.file("bad.safetensors"))); }, ErrorCode::kShapeMismatch,
               "tensor 'temporal_vae.decoder.conv_blocks.2.conv.weight': shape [32, 32, 3, 3, 3], expected [64, 32, 3, 3, 3]");

  // A config that disagrees with the file: the tensors are named and the file's architecture told.
  auto wrong = tiny_config();
  wrong.temporal.filters = 16;
  wrong.temporal.num_groups = 4;
  OpenSoraVAE vae_wrong(wrong);
  expect_error([&] { vae_wrong->load(*open_weights(path)); }, ErrorCode::kShapeMismatch,
               "tensor 'temporal_vae.decoder.conv1.conv.weight': shape [32, 4, 3, 3, 3], expected [64, 4, 3, 3, 3]");
  expect_error([&] { vae_wrong->load(*open_weights(path)); }, ErrorCode::kShapeMismatch,
               "The file's temporal VAE has filters 8");
  // Spatial mis-shape too.
  auto wrong_spatial = tiny_config();
  wrong_spatial.spatial.block_out_channels = {8, 16, 16, 32};
  OpenSoraVAE vae_ws(wrong_spatial);
  expect_error([&] { vae_ws->load(*open_weights(path)); }, ErrorCode::kShapeMismatch,
               "tensor 'spatial_vae.module.decoder.conv_in.weight': shape [16, 4, 3, 3], expected [32, 4, 3, 3]");
}

TEST(OpenSoraVAELoad, UnexpectedDecoderTensorIsAnErrorEncoderIsIgnoredPrefixIsFound) {
  const auto path = shared_fixture(kWeights);
  DITCACHE_REQUIRE_SHARED_FIXTURE(path);
  test::TempDir dir;
  auto tensors = all_tensors(*open_weights(path));
  auto extra = tensors;
  extra.emplace_back("temporal_vae.decoder.res_blocks.1.conv1.conv.weight", at::zeros({32, 32, 3, 3, 3}));
  write_safetensors(dir.file("extra.safetensors"), extra);
  OpenSoraVAE vae(tiny_config());
  expect_error([&] { vae->load(*open_weights(dir.file("extra.safetensors"))); }, ErrorCode::kShapeMismatch,
               "unexpected tensor 'temporal_vae.decoder.res_blocks.1.conv1.conv.weight'");

  // Decoder-only file under an outer prefix, without scale/shift: loads, buffers keep the config.
  std::vector<std::pair<std::string, at::Tensor>> decoder_only;
  for (auto& [name, t] : tensors) {
    if (name.find("encoder.") != std::string::npos || name.find(".quant_conv.") != std::string::npos ||
        name == "scale" || name == "shift") {
      continue;
    }
    decoder_only.emplace_back("module." + name, t);
  }
  write_safetensors(dir.file("prefixed.safetensors"), decoder_only);
  auto cfg = tiny_config();
  cfg.shift = {0.0, 0.0, 0.0, 0.0};
  cfg.scale = {1.0, 1.0, 1.0, 1.0};
  OpenSoraVAE vae2(cfg);
  const auto report = vae2->load(*open_weights(dir.file("prefixed.safetensors")));
  EXPECT_EQ(report.prefix, "module.");
  EXPECT_EQ(report.defaulted, (std::vector<std::string>{"scale", "shift"}));
  EXPECT_TRUE(at::equal(vae2->named_buffers()["scale"], at::ones({1, 4, 1, 1, 1})));
}

TEST(OpenSoraVAELoad, FileWithoutTemporalDecoderSaysWhatWasExpected) {
  const auto path = shared_fixture(kWeights);
  DITCACHE_REQUIRE_SHARED_FIXTURE(path);
  test::TempDir dir;
  // Only the spatial VAE (e.g. a plain SD/SDXL VAE under the pipeline's prefix).
  std::vector<std::pair<std::string, at::Tensor>> spatial_only;
  for (auto& item : all_tensors(*open_weights(path))) {
    if (item.first.rfind("spatial_vae.", 0) == 0) spatial_only.push_back(item);
  }
  write_safetensors(dir.file("spatial.safetensors"), spatial_only);
  OpenSoraVAE vae(tiny_config());
  expect_error([&] { vae->load(*open_weights(dir.file("spatial.safetensors"))); }, ErrorCode::kNotFound,
               "no temporal VAE decoder: expected a tensor 'temporal_vae.decoder.conv1.conv.weight'");
  expect_error([&] { OpenSoraVAEConfig::from_weights(*open_weights(dir.file("spatial.safetensors"))); },
               ErrorCode::kNotFound, "temporal_vae.decoder.conv1.conv.weight");
  // And the other way round.
  std::vector<std::pair<std::string, at::Tensor>> temporal_only;
  for (auto& item : all_tensors(*open_weights(path))) {
    if (item.first.rfind("spatial_vae.", 0) != 0) temporal_only.push_back(item);
  }
  write_safetensors(dir.file("temporal.safetensors"), temporal_only);
  expect_error([&] { vae->load(*open_weights(dir.file("temporal.safetensors"))); }, ErrorCode::kNotFound,
               "no spatial VAE decoder: expected a tensor 'spatial_vae.module.decoder.conv_in.weight'");
}

TEST(OpenSoraVAELoad, ForeignAndTruncatedFiles) {
  const auto path = shared_fixture(kWeights);
  const auto stdit = shared_fixture("opensora/stdit3_tiny_weights.safetensors");
  DITCACHE_REQUIRE_SHARED_FIXTURE(path);
  DITCACHE_REQUIRE_SHARED_FIXTURE(stdit);
  OpenSoraVAE vae(tiny_config());
  // A foreign (transformer) checkpoint.
  expect_error([&] { vae->load(*open_weights(stdit)); }, ErrorCode::kNotFound, "no temporal VAE decoder");
  // A truncated copy of the VAE file is rejected when opened.
  test::TempDir dir;
  const auto bytes = test::read_bytes(path);
  test::write_bytes(dir.file("cut.safetensors"), bytes.substr(0, bytes.size() / 2));
  try {
    vae->load(*open_weights(dir.file("cut.safetensors")));
    ADD_FAILURE() << "a truncated file loaded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kFormat) << e.what();
    EXPECT_NE(e.message().find("cut.safetensors"), std::string::npos) << e.what();
  }
  // Not a weight file at all.
  test::write_bytes(dir.file("text.safetensors"), "this is not a weight file");
  EXPECT_THROW(vae->load(*open_weights(dir.file("text.safetensors"))), Error);
}

}  // namespace
}  // namespace ditcache
