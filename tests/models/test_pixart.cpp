// PixArt-α parity against diffusers' PixArtTransformer2DModel, through both checkpoint layouts
// (diffusers safetensors and the original `.pth` converted from the same weights; fixtures from
// scripts/fixtures/pixart_fixtures.py, README in tests/fixtures/pixart/), configs, strict loading
// and the cache sites.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <tuple>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ditcache/cache/context.h"
#include "ditcache/cache/policy.h"
#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/pixart.h"
#include "test_util.h"

namespace ditcache {
namespace {

std::string pixart_fixture(const std::string& name) { return test::fixture("pixart/" + name); }

std::string weights_path(const std::string& variant, const std::string& layout) {
  return pixart_fixture("pixart_tiny_" + variant + "_" + layout + (layout == "original" ? ".pth" : ".safetensors"));
}

// The fixture's config.json; its null caption has 8 rows (diffusers configs do not record the
// caption length, whose default is the releases' 120).
PixArtConfig tiny_config(const std::string& variant) {
  auto c = PixArtConfig::from_json_file(pixart_fixture("pixart_tiny_" + variant + "_config.json"));
  c.model_max_length = 8;
  return c;
}

PixArt load_tiny(const std::string& variant, const std::string& layout) {
  PixArt model(tiny_config(variant));
  model->load(*open_weights(weights_path(variant, layout)));
  model->eval();
  return model;
}

std::unique_ptr<WeightFile> cases_file() { return open_weights(pixart_fixture("pixart_tiny_cases.safetensors")); }

// The keyword arguments of one recorded forward call.
PixArtInputs inputs_of(const WeightFile& f, const std::string& name) {
  PixArtInputs in;
  in.x = f.load(name + ".x");
  in.timestep = f.load(name + ".timestep");
  in.y = f.load(name + ".y");
  if (f.contains(name + ".mask")) in.mask = f.load(name + ".mask");
  if (f.contains(name + ".resolution")) {
    in.resolution = f.load(name + ".resolution");
    in.aspect_ratio = f.load(name + ".aspect_ratio");
  }
  return in;
}

std::string variant_of(const std::string& case_name) { return case_name.rfind("ms_", 0) == 0 ? "ms" : "base"; }

constexpr double kTol = 1e-5;
const char* const kCases[] = {"base_mask",         "base_nomask_fractional_t", "base_mask_not_prefix", "base_cfg_original",
                              "base_nonsquare",    "ms_mask",                  "ms_nonsquare",         "ms_cfg_tiled"};

// ------------------------------------------------------------------------------------------ parity
class PixArtParity : public ::testing::TestWithParam<std::tuple<const char*, const char*>> {};

TEST_P(PixArtParity, ForwardMatchesDiffusers) {
  const std::string name = std::get<0>(GetParam()), layout = std::get<1>(GetParam());
  auto model = load_tiny(variant_of(name), layout);
  auto f = cases_file();
  at::NoGradGuard no_grad;
  auto out = model->forward(inputs_of(*f, name));
  const auto expected = f->load(name + ".out");
  DITCACHE_EXPECT_CLOSE(out, expected, kTol);
  char error[32];
  std::snprintf(error, sizeof error, "%.3g", test::relative_max_error(out, expected));
  RecordProperty("relative_max_error", error);  // in --gtest_output=xml reports
}

INSTANTIATE_TEST_SUITE_P(Cases, PixArtParity,
                         ::testing::Combine(::testing::ValuesIn(kCases), ::testing::Values("diffusers", "original")),
                         [](const ::testing::TestParamInfo<PixArtParity::ParamType>& info) {
                           return std::string(std::get<0>(info.param)) + "_" + std::get<1>(info.param);
                         });

TEST(PixArtFixtures, EveryRecordedCaseIsTested) {
  auto f = cases_file();
  const auto recorded = nlohmann::json::parse(f->metadata().at("cases")).get<std::vector<std::string>>();
  std::vector<std::string> tested(std::begin(kCases), std::end(kCases));
  std::sort(tested.begin(), tested.end());
  EXPECT_EQ(recorded, tested);
}

TEST(PixArtFixtures, MasksAndMicroConditionsChangeTheOutput) {
  // The parity cases would not notice an ignored mask or size condition if these did not matter.
  auto f = cases_file();
  at::NoGradGuard no_grad;
  auto base = load_tiny("base", "diffusers");
  auto in = inputs_of(*f, "base_mask");
  in.mask = at::Tensor();
  EXPECT_GT(test::relative_max_error(base->forward(in), f->load("base_mask.out")), 1e-3);
  auto ms = load_tiny("ms", "diffusers");
  in = inputs_of(*f, "ms_mask");
  in.resolution = in.resolution.flip({0});
  EXPECT_GT(test::relative_max_error(ms->forward(in), f->load("ms_mask.out")), 1e-3);
  in = inputs_of(*f, "ms_mask");
  in.aspect_ratio = in.aspect_ratio * 2;
  EXPECT_GT(test::relative_max_error(ms->forward(in), f->load("ms_mask.out")), 1e-3);
}

TEST(PixArtFixtures, NullCaptionComesFromTheOriginalCheckpointOnly) {
  auto f = cases_file();
  auto original = load_tiny("base", "original");
  EXPECT_TRUE(original->has_null_caption());
  // The CFG case's unconditional half is the checkpoint's y_embedding ([uncond; cond] order).
  const auto y = f->load("base_cfg_original.y");  // [4, 1, L, C]
  EXPECT_TRUE(at::equal(original->null_caption(), y[0][0]));
  EXPECT_TRUE(at::equal(original->null_caption(), y[1][0]));
  EXPECT_FALSE(at::equal(original->null_caption(), y[2][0]));
  EXPECT_FALSE(load_tiny("base", "diffusers")->has_null_caption());
}

// ------------------------------------------------------------------------------------------ embeddings
TEST(PixArtEmbeddings, PosEmbedFollowsBaseSizeAndLeweiScale) {
  // 4 x 6 grid, base size 4, lewei scale 2: column c at c / 1.5 / 2, row r at r / 1 / 2.
  auto p = pixart_pos_embed(8, 4, 6, 4, 2.0);
  ASSERT_EQ(p.sizes(), (std::vector<int64_t>{24, 8}));
  EXPECT_NEAR(p[1][0].item<float>(), std::sin(1.0 / 3.0), 1e-6);           // token (0, 1), column, omega 1
  EXPECT_NEAR(p[1][1].item<float>(), std::sin(1.0 / 3.0 / 100.0), 1e-6);   // omega 10000^(-1/2)
  EXPECT_NEAR(p[1][2].item<float>(), std::cos(1.0 / 3.0), 1e-6);
  EXPECT_NEAR(p[6][4].item<float>(), std::sin(0.5), 1e-6);                 // token (1, 0), row
  EXPECT_NEAR(p[6][0].item<float>(), 0.0, 1e-7);
  // On the training grid with scale 1 it is DiT's table.
  EXPECT_LE((pixart_pos_embed(64, 8, 8, 8, 1.0) - sincos_pos_embed_2d(64, 8, 8)).abs().max().item<float>(), 1e-6);
  EXPECT_THROW(pixart_pos_embed(6, 2, 2, 2, 1.0), Error);
}

// ------------------------------------------------------------------------------------------ configs
TEST(PixArtConfig, PresetsAreTheReleases) {
  for (const auto& name : PixArtConfig::preset_names()) EXPECT_NO_THROW(PixArtConfig::preset(name).validate()) << name;
  auto c512 = PixArtConfig::preset("PixArt-XL-2-512");
  EXPECT_EQ(c512.depth, 28);
  EXPECT_EQ(c512.hidden_size, 1152);
  EXPECT_EQ(c512.head_dim(), 72);
  EXPECT_EQ(c512.out_channels(), 8);
  EXPECT_EQ(c512.model_max_length, 120);
  EXPECT_EQ(c512.caption_channels, 4096);
  EXPECT_EQ(c512.base_size(), 32);
  EXPECT_EQ(c512.lewei_scale, 1.0);
  EXPECT_FALSE(c512.micro_conditions);
  EXPECT_EQ(PixArtConfig::preset("PixArt-XL-2-512x512").input_size, 64);
  EXPECT_EQ(PixArtConfig::preset("PixArt-XL-2-256").input_size, 32);
  auto ms = PixArtConfig::preset("PixArt-XL-2-1024-MS");
  EXPECT_EQ(ms.input_size, 128);
  EXPECT_EQ(ms.lewei_scale, 2.0);
  EXPECT_TRUE(ms.micro_conditions);
  test::expect_error([] { PixArtConfig::preset("PixArt-XL-2-2048"); }, ErrorCode::kInvalidArgument, "PixArt-XL-2-1024-MS");
  auto bad = ms;
  bad.hidden_size = 1160;
  bad.num_heads = 8;
  test::expect_error([&] { bad.validate(); }, ErrorCode::kInvalidArgument, "divisible by 3 with micro_conditions");
  bad = c512;
  bad.input_size = 33;
  test::expect_error([&] { bad.validate(); }, ErrorCode::kInvalidArgument, "input_size 33");
}

TEST(PixArtConfig, ReadsDiffusersConfigJson) {
  auto base = tiny_config("base");
  EXPECT_EQ(base.depth, 2);
  EXPECT_EQ(base.hidden_size, 24);
  EXPECT_EQ(base.num_heads, 2);
  EXPECT_EQ(base.patch_size, 2);
  EXPECT_EQ(base.input_size, 8);
  EXPECT_EQ(base.caption_channels, 32);
  EXPECT_TRUE(base.pred_sigma);
  EXPECT_EQ(base.lewei_scale, 1.0);
  EXPECT_FALSE(base.micro_conditions);
  auto ms = tiny_config("ms");
  EXPECT_EQ(ms.lewei_scale, 2.0);
  EXPECT_TRUE(ms.micro_conditions);
  // The config.json of the PixArt-XL-2-1024-MS release (diffusers' older Transformer2DModel class;
  // interpolation and additional conditions left to diffusers' defaults for sample_size 128).
  auto release = PixArtConfig::from_json(R"({"_class_name": "Transformer2DModel", "_diffusers_version": "0.22.0.dev0",
    "activation_fn": "gelu-approximate", "attention_bias": true, "attention_head_dim": 72, "attention_type": "default",
    "caption_channels": 4096, "cross_attention_dim": 1152, "double_self_attention": false, "dropout": 0.0,
    "in_channels": 4, "norm_elementwise_affine": false, "norm_eps": 1e-06, "norm_num_groups": 32,
    "norm_type": "ada_norm_single", "num_attention_heads": 16, "num_embeds_ada_norm": 1000, "num_layers": 28,
    "num_vector_embeds": null, "only_cross_attention": false, "out_channels": 8, "patch_size": 2, "sample_size": 128,
    "upcast_attention": false, "use_linear_projection": false})");
  EXPECT_EQ(release.name, "PixArt-XL-2-1024-MS");
  EXPECT_EQ(release.lewei_scale, 2.0);
  EXPECT_TRUE(release.micro_conditions);
  auto r512 = PixArtConfig::from_json(R"({"num_layers": 28, "sample_size": 64, "caption_channels": 4096, "out_channels": 8})");
  EXPECT_EQ(r512.name, "PixArt-XL-2-512");
  EXPECT_FALSE(r512.micro_conditions);
  auto error = [](const std::string& json, const std::string& fragment) {
    test::expect_error([&] { PixArtConfig::from_json(json, "cfg.json"); }, ErrorCode::kInvalidArgument, fragment);
  };
  error(R"({"caption_channels": 32, "num_layer": 2})", "unknown PixArt config field 'num_layer'");
  error(R"({"caption_channels": 32, "norm_type": "layer_norm"})", "field 'norm_type' must be \"ada_norm_single\"");
  error(R"({"caption_channels": 32, "norm_eps": 1e-5})", "field 'norm_eps' must be 1e-6");
  error(R"({"caption_channels": 32, "cross_attention_dim": 512})", "field 'cross_attention_dim' must be the width 1152 (num_attention_heads x attention_head_dim), found 512");
  error(R"({"caption_channels": 32, "out_channels": 5})", "field 'out_channels' must be 4 or 8 (in_channels, or twice with learned sigma), found 5");
  error(R"({"caption_channels": null})", "field 'caption_channels' must be an integer");
  error(R"({"num_layers": 2})", "field 'caption_channels' is missing");
  error(R"({"caption_channels": 32, "num_layers": "2"})", "field 'num_layers' must be an integer");
  test::expect_error([] { PixArtConfig::from_json("{", "cfg.json"); }, ErrorCode::kFormat, "not valid JSON");
}

TEST(PixArtConfig, ComesFromTheWeightsOfBothLayouts) {
  for (const char* variant : {"base", "ms"}) {
    const auto json = tiny_config(variant);
    for (const char* layout : {"diffusers", "original"}) {
      SCOPED_TRACE(std::string(variant) + " " + layout);
      auto file = open_weights(weights_path(variant, layout));
      EXPECT_EQ(detect_pixart_checkpoint(*file).layout,
                std::string(layout) == "original" ? PixArtLayout::kOriginal : PixArtLayout::kDiffusers);
      auto c = PixArtConfig::from_weights(*file, 2);
      EXPECT_EQ(c.depth, json.depth);
      EXPECT_EQ(c.hidden_size, json.hidden_size);
      EXPECT_EQ(c.num_heads, 2);
      EXPECT_EQ(c.patch_size, json.patch_size);
      EXPECT_EQ(c.in_channels, json.in_channels);
      EXPECT_EQ(c.pred_sigma, json.pred_sigma);
      EXPECT_EQ(c.caption_channels, json.caption_channels);
      EXPECT_EQ(c.mlp_ratio, 4.0);
      EXPECT_EQ(c.micro_conditions, json.micro_conditions);
      if (std::string(layout) == "original") {
        // The stored pos_embed gives the training grid and the lewei scale; y_embedding the length.
        EXPECT_EQ(detect_pixart_checkpoint(*file).prefix, "state_dict.");
        EXPECT_EQ(c.input_size, json.input_size);
        EXPECT_EQ(c.lewei_scale, json.lewei_scale);
        EXPECT_EQ(c.model_max_length, 8);
      } else {
        // Nothing in a diffusers file tells the latent size: the release's defaults stand.
        EXPECT_EQ(c.input_size, json.micro_conditions ? 128 : 64);
        EXPECT_EQ(c.lewei_scale, json.micro_conditions ? 2.0 : 1.0);
      }
    }
  }
  test::expect_error([] { PixArtConfig::from_weights(*open_weights(weights_path("base", "original"))); },
                     ErrorCode::kInvalidArgument, "pass num_heads");
  test::expect_error([] { PixArtConfig::from_weights(*open_weights(test::fixture("dit/dit_tiny_original.safetensors")), 4); },
                     ErrorCode::kFormat, "not a PixArt-α checkpoint");
}

// ------------------------------------------------------------------------------------------ loading
class PixArtLoadErrors : public ::testing::Test {
 protected:
  void read(const std::string& variant, const std::string& layout) {
    auto file = open_weights(weights_path(variant, layout));
    tensors_.clear();
    for (const auto& name : file->names()) tensors_.emplace_back(name, file->load(name));
  }
  std::string write(const std::string& name) {
    auto path = dir_.file(name);
    write_safetensors(path, tensors_);
    return path;
  }
  static std::string load_error(const std::string& path, const PixArtConfig& config) {
    PixArt model(config);
    try {
      model->load(*open_weights(path));
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  }
  void expect_message(const std::string& message, const std::string& fragment) {
    EXPECT_NE(message.find(fragment), std::string::npos) << message << "\nexpected: " << fragment;
  }
  test::TempDir dir_;
  std::vector<std::pair<std::string, at::Tensor>> tensors_;
};

TEST_F(PixArtLoadErrors, DiffusersTensorsAreNamed) {
  read("base", "diffusers");
  std::vector<std::pair<std::string, at::Tensor>> kept;
  for (auto& [name, t] : tensors_) {
    if (name == "transformer_blocks.1.attn2.to_k.weight") continue;
    kept.emplace_back(name, name == "transformer_blocks.0.ff.net.2.weight" ? t.narrow(0, 0, 12).contiguous() : t);
  }
  kept.emplace_back("extra.weight", at::zeros({3}));
  tensors_ = kept;
  const auto message = load_error(write("broken.safetensors"), tiny_config("base"));
  expect_message(message, "missing tensor 'transformer_blocks.1.attn2.to_k.weight' for 'blocks.1.cross_attn.kv_linear.weight'");
  expect_message(message, "tensor 'transformer_blocks.0.ff.net.2.weight': shape [12, 96], expected [24, 96]");
  expect_message(message, "unexpected tensor 'extra.weight' of shape [3]");
}

TEST_F(PixArtLoadErrors, OriginalTensorsAreNamedWithTheirPrefix) {
  read("ms", "original");
  std::vector<std::pair<std::string, at::Tensor>> kept;
  for (auto& item : tensors_) if (item.first != "state_dict.ar_embedder.mlp.2.bias") kept.push_back(item);
  tensors_ = kept;
  const auto message = load_error(write("broken.safetensors"), tiny_config("ms"));
  expect_message(message, "missing tensor 'state_dict.ar_embedder.mlp.2.bias' (expected shape [8])");
}

TEST_F(PixArtLoadErrors, ConfigMismatchNamesTheField) {
  auto c = tiny_config("base");
  expect_message(load_error(weights_path("ms", "diffusers"), c), "micro_conditions: expected false, found true");
  c.depth = 3;
  expect_message(load_error(weights_path("base", "original"), c), "depth: expected 3, found 2");
  c = tiny_config("base");
  c.caption_channels = 16;
  expect_message(load_error(weights_path("base", "diffusers"), c), "caption_channels: expected 16, found 32");
  c = tiny_config("base");
  c.model_max_length = 120;
  expect_message(load_error(weights_path("base", "original"), c), "model_max_length: expected 120, found 8");
  // The fixed-size model adds the stored table: it must be this config's.
  c = tiny_config("base");
  c.lewei_scale = 2.0;
  expect_message(load_error(weights_path("base", "original"), c), "lewei_scale: expected 2, found 1 (from the stored pos_embed)");
  c = tiny_config("base");
  c.input_size = 16;
  expect_message(load_error(weights_path("base", "original"), c), "input_size: expected 16, found 8");
  // diffusers files carry no table and no null caption: the same config loads them.
  c.lewei_scale = 2.0;
  EXPECT_EQ(load_error(weights_path("base", "diffusers"), c), "no error");
}

TEST_F(PixArtLoadErrors, TableThatIsNoSinCosTableIsRejected) {
  read("base", "original");
  for (auto& [name, t] : tensors_) if (name == "state_dict.pos_embed") t = t.clone().index_put_({0, 5, 3}, 0.5f);
  expect_message(load_error(write("table.safetensors"), tiny_config("base")), "the stored pos_embed differs by");
}

TEST_F(PixArtLoadErrors, OriginalKeysWithoutTheStateDictWrapperLoadToo) {
  read("ms", "original");
  for (auto& item : tensors_) item.first = item.first.substr(std::string("state_dict.").size());
  const auto path = write("plain.safetensors");
  auto file = open_weights(path);
  EXPECT_EQ(detect_pixart_checkpoint(*file).prefix, "");
  PixArt model(tiny_config("ms"));
  model->load(*file);
  auto f = cases_file();
  at::NoGradGuard no_grad;
  DITCACHE_EXPECT_CLOSE(model->forward(inputs_of(*f, "ms_mask")), f->load("ms_mask.out"), kTol);
}

// ------------------------------------------------------------------------------------------ inputs
TEST(PixArt, RejectsInputsThatDoNotFit) {
  auto f = cases_file();
  auto base = load_tiny("base", "diffusers");
  auto ms = load_tiny("ms", "diffusers");
  const auto good = inputs_of(*f, "base_mask");
  at::NoGradGuard no_grad;
  auto in = good;
  in.x = at::zeros({2, 3, 8, 8});
  test::expect_error([&] { base->forward(in); }, ErrorCode::kShapeMismatch, "x must be [B, 4, h, w]");
  in.x = at::zeros({2, 4, 7, 8});
  test::expect_error([&] { base->forward(in); }, ErrorCode::kShapeMismatch, "multiples of the patch size 2");
  in = good;
  in.timestep = at::zeros({3});
  test::expect_error([&] { base->forward(in); }, ErrorCode::kShapeMismatch, "timestep must be [2]");
  in = good;
  in.y = at::zeros({2, 8, 16});
  test::expect_error([&] { base->forward(in); }, ErrorCode::kShapeMismatch, "y must be [2, L, 32]");
  in = good;
  in.mask = at::ones({3, 8});
  test::expect_error([&] { base->forward(in); }, ErrorCode::kShapeMismatch, "'mask' has 3 rows");
  in.mask = at::ones({2, 7});
  test::expect_error([&] { base->forward(in); }, ErrorCode::kShapeMismatch, "mask must be [B', 8]");
  in.mask = at::zeros({2, 8});
  test::expect_error([&] { base->forward(in); }, ErrorCode::kInvalidArgument, "no valid token");
  in = good;
  in.resolution = at::full({2, 2}, 64.0);
  in.aspect_ratio = at::ones({2});
  test::expect_error([&] { base->forward(in); }, ErrorCode::kInvalidArgument, "has no micro-conditions");
  test::expect_error([&] { ms->forward(good); }, ErrorCode::kInvalidArgument, "resolution [B', 2] and aspect_ratio [B'] are required");
  in.resolution = at::full({2, 3}, 64.0);
  test::expect_error([&] { ms->forward(in); }, ErrorCode::kShapeMismatch, "resolution must be [B', 2]");
  // The original's [B, 1, 1, L] mask is the same as [B, L].
  in = good;
  in.mask = good.mask.view({2, 1, 1, 8});
  EXPECT_TRUE(at::equal(base->forward(in), base->forward(good)));
}

// ------------------------------------------------------------------------------------------ caching
TEST(PixArtCache, ForaComputesThenReusesEverySite) {
  auto model = load_tiny("base", "diffusers");
  auto f = cases_file();
  auto in = inputs_of(*f, "base_mask");
  at::NoGradGuard no_grad;
  const auto uncached = model->forward(in);
  const auto& c = model->config();
  const int64_t B = in.x.size(0), gh = 4, gw = 4, L = 8;
  CacheContext cache(make_policy("fora:interval=3"));
  cache.begin_run(make_run_info(backbone_info(c), pixart_run_shape(B, false, gh, gw, 0), 3, "dpm-solver"));
  // Step 0 computes every site: the output is the uncached one, bit for bit.
  cache.begin_step({0, 0});
  EXPECT_TRUE(at::equal(model->forward(in, &cache), uncached));
  cache.end_step();
  // Step 1 reuses every module; with the same inputs that is exactly a fresh computation.
  cache.begin_step({1, 1});
  EXPECT_TRUE(at::equal(model->forward(in, &cache), uncached));
  cache.end_step();
  // Step 2 reuses them under a new timestep: only gates and modulation are new.
  in.timestep = in.timestep * 0.5;
  cache.begin_step({2, 2});
  auto reused = model->forward(in, &cache);
  cache.end_step();
  EXPECT_FALSE(at::allclose(reused, model->forward(in)));
  const auto& steps = cache.steps();
  ASSERT_EQ(steps.size(), 3u);
  ASSERT_EQ(steps[0].sites.size(), 6u);  // 2 layers x (attn, cross_attn, mlp)
  const SiteKind kinds[] = {SiteKind::kSelfAttention, SiteKind::kCrossAttention, SiteKind::kMLP};
  for (size_t i = 0; i < steps[0].sites.size(); ++i) {
    EXPECT_EQ(steps[0].sites[i].site.layer, static_cast<int>(i / 3));
    EXPECT_EQ(steps[0].sites[i].site.kind, kinds[i % 3]);
    EXPECT_EQ(steps[0].sites[i].action, Action::kCompute);
    EXPECT_EQ(steps[1].sites[i].action, Action::kReuse);
  }
  EXPECT_DOUBLE_EQ(steps[0].flops, steps[0].full_flops);
  EXPECT_DOUBLE_EQ(steps[0].full_flops, 2 * pixart_block_flops(c, B, gh * gw, L, 16, 16, 16));
  EXPECT_DOUBLE_EQ(steps[1].flops, 0.0);
  EXPECT_GT(steps[1].full_flops, 0.0);

  // A dry run of the same schedule counts the same FLOPs without tensors.
  CacheContext dry(make_policy("fora:interval=3"));
  dry.set_dry(true);
  dry.begin_run(make_run_info(backbone_info(c), pixart_run_shape(B, false, gh, gw, 0), 3, "dpm-solver"));
  for (int s = 0; s < 3; ++s) {
    dry.begin_step({s, s});
    count_step_flops(backbone_info(c), pixart_run_shape(B, false, gh, gw, L), dry);
    dry.end_step();
    EXPECT_DOUBLE_EQ(dry.steps()[s].flops, steps[s].flops) << s;
    EXPECT_DOUBLE_EQ(dry.steps()[s].full_flops, steps[s].full_flops) << s;
  }
}

TEST(PixArtCache, BlockSitesReuseTheResidualUpdate) {
  auto model = load_tiny("ms", "original");
  auto f = cases_file();
  auto in = inputs_of(*f, "ms_nonsquare");
  at::NoGradGuard no_grad;
  const auto uncached = model->forward(in);
  CacheContext cache(make_policy("fora:interval=2,granularity=block"));
  cache.begin_run(make_run_info(backbone_info(model->config()), pixart_run_shape(2, false, 4, 6, 0), 2, "dpm-solver"));
  cache.begin_step({0, 0});
  EXPECT_TRUE(at::equal(model->forward(in, &cache), uncached));
  cache.end_step();
  cache.begin_step({1, 1});
  DITCACHE_EXPECT_CLOSE(model->forward(in, &cache), uncached, kTol);
  cache.end_step();
  ASSERT_EQ(cache.steps()[1].sites.size(), 2u);
  for (const auto& s : cache.steps()[1].sites) {
    EXPECT_EQ(s.site.kind, SiteKind::kBlock);
    EXPECT_EQ(s.action, Action::kReuse);
  }
  EXPECT_DOUBLE_EQ(cache.steps()[1].flops, 0.0);
}

TEST(PixArtCache, DryCountsOfTheReleaseAndReusedSteps) {
  // PixArt-XL-2-256 with CFG (2 rows), 16 x 16 patches, 120 caption tokens.
  const auto c = PixArtConfig::preset("PixArt-XL-2-256");
  const int64_t rows = 2, N = 256, L = 120;
  const double block = pixart_block_flops(c, rows, N, L, N, N, N);
  // By hand (toca.md §6): self-attention incl. its LayerNorm, cross-attention against 120 keys, MLP.
  const double C = 1152, H = 16, d = 72;
  auto attention = [&](double q, double k) {
    return rows * (2 * q * C * C + 2 * 2 * k * C * C + H * q * d + 2 * H * q * k * d + 5 * H * q * k + 2 * H * q * k * d + 2 * q * C * C);
  };
  const double mlp = rows * (2 * 2 * N * C * 4 * C + 6 * N * 4 * C);
  EXPECT_NEAR(block, rows * N * C + attention(N, N) + attention(N, L) + rows * N * C + mlp, 1e-6 * block);
  CacheContext dry(make_policy("fora:interval=2,granularity=step"));
  dry.set_dry(true);
  dry.begin_run(make_run_info(backbone_info(c), pixart_run_shape(rows, true, 16, 16, 0), 4, "dpm-solver"));
  for (int s = 0; s < 4; ++s) {
    const auto mode = dry.begin_step({s, s});
    EXPECT_EQ(mode, s % 2 ? StepMode::kReuseOutput : StepMode::kPerSite);
    count_step_flops(backbone_info(c), pixart_run_shape(rows, false, 16, 16, L), dry);
    dry.end_step();
    EXPECT_DOUBLE_EQ(dry.steps()[s].full_flops, 28 * block) << s;
    EXPECT_DOUBLE_EQ(dry.steps()[s].flops, s % 2 ? 0.0 : 28 * block) << s;
  }
  EXPECT_DOUBLE_EQ(dry.summary().flops_speedup(), 2.0);
}

// Step 0: compute with attention statistics. Later steps: partial at every site, all tokens in a
// per-row permuted order (a wrong gather or scatter shows in the output).
class ScriptedPolicy : public CachePolicy {
 public:
  std::string name() const override { return "scripted"; }
  std::string to_string() const override { return "scripted"; }
  void begin_run(const RunInfo& run) override { run_ = run; }
  StepMode begin_step(const StepInfo& step) override {
    position_ = step.position;
    return StepMode::kPerSite;
  }
  SiteDecision decide(const SiteState&, bool dry) override {
    SiteDecision d;
    if (position_ == 0) {
      d.attention_stats = true;
      return d;
    }
    d.action = Action::kPartial;
    d.tokens = run_.num_tokens;
    if (!dry) {
      auto order = at::arange(run_.num_tokens, at::kLong);
      d.indices = at::stack({order.flip({0}), order.roll(5)});  // [2, N]
    }
    return d;
  }
  void observe_attention(const Site& site, const at::Tensor& values) override { stats.emplace_back(site, values); }
  std::vector<std::pair<Site, at::Tensor>> stats;

 private:
  RunInfo run_;
  int position_ = 0;
};

TEST(PixArtCache, PartialSitesAndAttentionStatistics) {
  auto model = load_tiny("base", "original");
  auto f = cases_file();
  auto in = inputs_of(*f, "base_mask");  // row 0: 3 valid caption tokens of 8
  at::NoGradGuard no_grad;
  const auto uncached = model->forward(in);
  auto policy = std::make_shared<ScriptedPolicy>();
  CacheContext cache(policy);
  const int64_t N = 16, L = 8;
  cache.begin_run(make_run_info(backbone_info(model->config()), pixart_run_shape(2, false, 4, 4, 0), 2, "dpm-solver"));
  cache.begin_step({0, 0});
  DITCACHE_EXPECT_CLOSE(model->forward(in, &cache), uncached, kTol);  // explicit attention: rounding only
  cache.end_step();
  ASSERT_EQ(policy->stats.size(), 4u);  // 2 layers x (self, cross)
  for (const auto& [site, s] : policy->stats) {
    if (site.kind == SiteKind::kSelfAttention) {
      ASSERT_EQ(s.sizes(), (std::vector<int64_t>{2, N}));
      // Column sums of row-stochastic maps add up to the number of queries.
      EXPECT_NEAR(s.sum(1)[0].item<double>(), N, 1e-3);
      EXPECT_NEAR(s.sum(1)[1].item<double>(), N, 1e-3);
    } else {
      ASSERT_EQ(site.kind, SiteKind::kCrossAttention);
      ASSERT_EQ(s.sizes(), (std::vector<int64_t>{2, N, L}));
      EXPECT_LE((s.sum(-1) - 1).abs().max().item<double>(), 1e-5);
      EXPECT_EQ(s[0].narrow(1, 3, L - 3).abs().max().item<float>(), 0.0f);  // padded keys get nothing
      EXPECT_GT(s[1][0][7].item<float>(), 0.0f);
    }
  }
  // A new timestep, every token recomputed through the partial path: a fresh forward's output.
  in.timestep = in.timestep * 0.5;
  cache.begin_step({1, 1});
  auto partial = model->forward(in, &cache);
  cache.end_step();
  DITCACHE_EXPECT_CLOSE(partial, model->forward(in), kTol);
  EXPECT_GT(test::relative_max_error(partial, uncached), 1e-3);
  for (const auto& s : cache.steps()[1].sites) {
    EXPECT_EQ(s.action, Action::kPartial);
    EXPECT_EQ(s.tokens, N);
  }
}

}  // namespace
}  // namespace ditcache
