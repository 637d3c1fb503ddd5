// T5 v1.1 encoder parity against transformers' T5EncoderModel, config parsing, single-file and
// sharded loading, the SentencePiece tokenizer against transformers' T5Tokenizer, and caption
// cleaning against diffusers (fixtures from scripts/fixtures/t5_fixtures.py, see
// tests/fixtures/t5/README.md).
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ditcache/error.h"
#include "ditcache/io/sharded_weights.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/t5.h"
#include "ditcache/text/tokenizer.h"
#include "test_util.h"

namespace ditcache {
namespace {

using test::fixture;
namespace fs = std::filesystem;

constexpr double kTol = 1e-5;

T5Config tiny_config() { return T5Config::from_json_file(fixture("t5/config.json")); }

T5Encoder load_tiny(const WeightFile& file) {
  T5Encoder model(tiny_config());
  model->load(file);
  model->eval();
  return model;
}

struct Outputs {
  std::unique_ptr<WeightFile> file = open_weights(fixture("t5/t5_tiny_outputs.safetensors"));
  at::Tensor operator[](const std::string& name) const { return file->load(name); }
};

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// Copies the fixture's tensors into a sharded safetensors checkpoint under `dir` (n shards) and
// returns the index path; `mutate` may edit the index JSON before it is written.
std::string write_sharded(const test::TempDir& dir, int n,
                          const std::function<void(nlohmann::ordered_json&)>& mutate = {}) {
  auto src = open_weights(fixture("t5/t5_tiny.safetensors"));
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(static_cast<size_t>(n));
  nlohmann::ordered_json index;
  index["metadata"]["total_size"] = 0;
  size_t i = 0;
  for (const auto& name : src->names()) {
    const size_t s = i++ % static_cast<size_t>(n);
    shards[s].emplace_back(name, src->load(name));
    index["weight_map"][name] = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, n);
  }
  for (size_t s = 0; s < shards.size(); ++s) {
    write_safetensors(dir.file(fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, n)), shards[s]);
  }
  if (mutate) mutate(index);
  const auto path = dir.file("model.safetensors.index.json");
  std::ofstream(path) << index.dump(1);
  return path;
}

// ---- building blocks ----------------------------------------------------------------------------

TEST(T5Layers, RelativeBucketsMatchReferenceTable) {
  // models.md §8 item 8: 32 buckets, max distance 128.
  auto rel = at::tensor(std::vector<int64_t>{-200, -20, -8, -7, -1, 0, 1, 7, 8, 20, 200});
  auto b = t5_relative_position_bucket(rel, 32, 128);
  std::vector<int64_t> expected = {15, 10, 8, 7, 1, 0, 17, 23, 24, 26, 31};
  ASSERT_EQ(b.numel(), 11);
  for (int64_t i = 0; i < 11; ++i) EXPECT_EQ(b[i].item<int64_t>(), expected[static_cast<size_t>(i)]) << "rel " << rel[i].item<int64_t>();
}

TEST(T5Layers, RmsNormHasNoMeanAndUsesWeight) {
  auto x = at::tensor(std::vector<float>{1.0f, 2.0f, 3.0f, 6.0f}).view({1, 4});
  auto w = at::tensor(std::vector<float>{1.0f, 2.0f, 1.0f, 0.5f});
  auto y = t5_rms_norm(x, w, 1e-6);
  const double rms = std::sqrt((1 + 4 + 9 + 36) / 4.0 + 1e-6);
  EXPECT_NEAR(y[0][0].item<float>(), 1.0 / rms, 1e-6);
  EXPECT_NEAR(y[0][1].item<float>(), 4.0 / rms, 1e-6);
  EXPECT_NEAR(y[0][3].item<float>(), 3.0 / rms, 1e-6);
}

// ---- config --------------------------------------------------------------------------------------

TEST(T5Config, PresetIsXXL) {
  auto c = T5Config::preset("t5-v1_1-xxl");
  EXPECT_EQ(c.d_model, 4096);
  EXPECT_EQ(c.d_kv, 64);
  EXPECT_EQ(c.num_heads, 64);
  EXPECT_EQ(c.d_ff, 10240);
  EXPECT_EQ(c.num_layers, 24);
  EXPECT_EQ(c.vocab_size, 32128);
  EXPECT_EQ(c.relative_attention_max_distance, 128);
  test::expect_error([] { T5Config::preset("t5-base"); }, ErrorCode::kInvalidArgument, "t5-v1_1-xxl");
}

TEST(T5Config, ReadsHuggingFaceJsonAndIgnoresOtherKeys) {
  auto c = tiny_config();  // transformers' config.json, with decoder/dropout/token-id keys
  EXPECT_EQ(c.d_model, 32);
  EXPECT_EQ(c.d_kv, 8);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.d_ff, 48);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.vocab_size, 150);
  EXPECT_EQ(c.relative_attention_max_distance, 20);
  EXPECT_EQ(c.feed_forward_proj, "gated-gelu");
  auto e = T5Config::from_json(R"({"d_model": 64, "num_decoder_layers": 3, "dropout_rate": 0.1, "foo": [1]})");
  EXPECT_EQ(e.d_model, 64);
  test::expect_error([] { T5Config::from_json(R"({"d_model": "big"})", "cfg.json"); }, ErrorCode::kInvalidArgument,
                     "cfg.json: T5 config field 'd_model' must be an integer");
  test::expect_error([] { T5Config::from_json(R"({"layer_norm_epsilon": "x"})"); }, ErrorCode::kInvalidArgument,
                     "'layer_norm_epsilon' must be a number");
  test::expect_error([] { T5Config::from_json(R"({"feed_forward_proj": "relu"})"); }, ErrorCode::kUnsupported, "relu");
  test::expect_error([] { T5Config::from_json(R"({"num_heads": 0})"); }, ErrorCode::kInvalidArgument, "num_heads");
  test::expect_error([] { T5Config::from_json("{"); }, ErrorCode::kFormat, "not valid JSON");
}

TEST(T5Config, InfersArchitectureFromWeights) {
  for (const char* f : {"t5/t5_tiny.safetensors", "t5/pytorch_model.bin.index.json"}) {
    auto c = T5Config::from_weights(*open_checkpoint(fixture(f)));
    auto j = tiny_config();
    EXPECT_EQ(c.d_model, j.d_model) << f;
    EXPECT_EQ(c.d_kv, j.d_kv) << f;
    EXPECT_EQ(c.num_heads, j.num_heads) << f;
    EXPECT_EQ(c.d_ff, j.d_ff) << f;
    EXPECT_EQ(c.num_layers, j.num_layers) << f;
    EXPECT_EQ(c.vocab_size, j.vocab_size) << f;
    EXPECT_EQ(c.relative_attention_num_buckets, 32) << f;
  }
  test::expect_error([] { T5Config::from_weights(*open_weights(fixture("vae/vae_tiny.safetensors"))); },
                     ErrorCode::kNotFound, "not a T5 encoder checkpoint");
}

// ---- encoder parity ---------------------------------------------------------------------------

TEST(T5Encoder, MatchesTransformersInFloat32) {
  Outputs out;
  auto model = load_tiny(*open_weights(fixture("t5/t5_tiny.safetensors")));
  auto y = model->encode(out["input_ids"], out["attention_mask"]);
  auto ref = out["last_hidden_state"];
  ASSERT_EQ(y.scalar_type(), at::kFloat);
  DITCACHE_EXPECT_CLOSE(y, ref, kTol);
  std::printf("[ T5 ] fp32 max abs diff %.3g (relative %.3g)\n", (y - ref).abs().max().item<double>(),
              test::relative_max_error(y, ref));
}

TEST(T5Encoder, PaddingDoesNotLeakIntoRealTokens) {
  // Changing the ids of padded positions must not change real tokens' outputs (key mask).
  Outputs out;
  auto model = load_tiny(*open_weights(fixture("t5/t5_tiny.safetensors")));
  auto ids = out["input_ids"], mask = out["attention_mask"];
  auto junk = ids.clone().masked_fill(mask.eq(0), 7);
  auto a = model->encode(ids, mask), b = model->encode(junk, mask);
  auto real = mask.eq(1).unsqueeze(-1).expand_as(a);
  EXPECT_TRUE(at::allclose(a.masked_select(real), b.masked_select(real), 0, 1e-6));
  // Without the mask, the junk does change them: the test can fail.
  auto c = model->encode(junk);
  EXPECT_FALSE(at::allclose(a.masked_select(real), c.masked_select(real), 0, 1e-3));
}

TEST(T5Encoder, BFloat16StaysClose) {
  Outputs out;
  auto model = load_tiny(*open_weights(fixture("t5/t5_tiny.safetensors")));
  model->to(at::kBFloat16);
  auto y = model->encode(out["input_ids"], out["attention_mask"]);
  ASSERT_EQ(y.scalar_type(), at::kBFloat16);
  const double err = test::relative_max_error(y, out["last_hidden_state"]);
  std::printf("[ T5 ] bf16 relative max error %.3g\n", err);
  EXPECT_LE(err, 0.1);
  EXPECT_GT(err, 0.0);  // really ran in bf16
}

TEST(T5Encoder, RefusesFloat16) {
  T5Encoder model(tiny_config());
  test::expect_error([&] { model->to(at::kHalf); }, ErrorCode::kUnsupported, "float16");
  test::expect_error([&] { model->to(at::Device(at::kCPU), at::kHalf); }, ErrorCode::kUnsupported, "bfloat16");
  // Weights made fp16 behind the override's back are refused at encode time.
  for (auto& p : model->parameters()) p.set_data(p.data().to(at::kHalf));
  test::expect_error([&] { model->encode(at::ones({1, 3}, at::kLong)); }, ErrorCode::kUnsupported, "float16");
}

TEST(T5Encoder, RejectsBadInputs) {
  T5Encoder model(tiny_config());
  test::expect_error([&] { model->encode(at::ones({3}, at::kLong)); }, ErrorCode::kShapeMismatch, "[B, L]");
  test::expect_error([&] { model->encode(at::ones({1, 3}, at::kFloat)); }, ErrorCode::kInvalidArgument, "int64");
  test::expect_error([&] { model->encode(at::full({1, 3}, 150, at::kLong)); }, ErrorCode::kInvalidArgument,
                     "token id 150 outside the vocabulary [0, 150)");
  test::expect_error([&] { model->encode(at::ones({1, 3}, at::kLong), at::ones({1, 4}, at::kLong)); },
                     ErrorCode::kShapeMismatch, "attention_mask [1, 4]");
}

// ---- loading -----------------------------------------------------------------------------------

TEST(T5Loading, ShardedBinEqualsSingleFile) {
  Outputs out;
  auto single = load_tiny(*open_weights(fixture("t5/t5_tiny.safetensors")));
  auto index = open_checkpoint(fixture("t5/pytorch_model.bin.index.json"));
  EXPECT_EQ(index->format(), "sharded pytorch-zip");
  EXPECT_FALSE(index->metadata().at("total_size").empty());
  auto sharded = load_tiny(*index);
  auto loaded = sharded->named_parameters();
  for (const auto& item : single->named_parameters()) {
    EXPECT_TRUE(at::equal(item.value(), loaded[item.key()])) << item.key();
  }
  auto y = sharded->encode(out["input_ids"], out["attention_mask"]);
  DITCACHE_EXPECT_CLOSE(y, out["last_hidden_state"], kTol);
}

TEST(T5Loading, ShardedSafetensorsAndFolderAndLoadHelper) {
  test::TempDir dir;
  const auto index = write_sharded(dir, 3);
  auto file = open_checkpoint(dir.path().string());  // folder -> model.safetensors.index.json
  EXPECT_EQ(file->format(), "sharded safetensors");
  EXPECT_EQ(file->names().size(), open_weights(fixture("t5/t5_tiny.safetensors"))->names().size());
  fs::copy_file(fixture("t5/config.json"), dir.file("config.json"));
  auto model = load_t5_encoder(index);
  EXPECT_EQ(model->config().relative_attention_max_distance, 20);  // from config.json
  Outputs out;
  DITCACHE_EXPECT_CLOSE(model->encode(out["input_ids"], out["attention_mask"]), out["last_hidden_state"], kTol);
}

TEST(T5Loading, MissingShardOrTensorIsNamed) {
  {
    test::TempDir dir;
    const auto index = write_sharded(dir, 2);
    fs::remove(dir.file("model-00002-of-00002.safetensors"));
    test::expect_error([&] { open_sharded_weights(index); }, ErrorCode::kNotFound,
                       "shard 'model-00002-of-00002.safetensors'");
  }
  {
    // The index assigns a tensor of shard 2 (odd positions go there) to shard 1.
    const std::string moved = open_weights(fixture("t5/t5_tiny.safetensors"))->names().at(1);
    test::TempDir dir;
    const auto index = write_sharded(dir, 2, [&](nlohmann::ordered_json& j) {
      j["weight_map"][moved] = "model-00001-of-00002.safetensors";
    });
    test::expect_error([&] { open_sharded_weights(index); }, ErrorCode::kNotFound,
                       "tensor '" + moved + "' is listed in shard 'model-00001-of-00002.safetensors'");
  }
  {
    // A tensor the model needs that the index does not list at all.
    test::TempDir dir;
    const auto index = write_sharded(dir, 2, [](nlohmann::ordered_json& j) {
      j["weight_map"].erase("encoder.block.1.layer.1.DenseReluDense.wo.weight");
    });
    T5Encoder model(tiny_config());
    // load_state_dict reports all its problems in one Error(kShapeMismatch).
    test::expect_error([&] { model->load(*open_sharded_weights(index)); }, ErrorCode::kShapeMismatch,
                       "encoder.block.1.layer.1.DenseReluDense.wo.weight");
  }
  test::expect_error([] { open_sharded_weights("/nonexistent/model.safetensors.index.json"); }, ErrorCode::kNotFound,
                     "index not found");
  test::TempDir dir;
  std::ofstream(dir.file("bad.index.json")) << R"({"metadata": {}})";
  test::expect_error([&] { open_checkpoint(dir.file("bad.index.json")); }, ErrorCode::kFormat, "weight_map");
  test::expect_error([&] { open_checkpoint(dir.path().string()); }, ErrorCode::kNotFound, "model.safetensors");
}

TEST(T5Loading, TiedEmbeddingAndDecoderKeys) {
  auto src = open_weights(fixture("t5/t5_tiny.safetensors"));
  test::TempDir dir;
  // Only encoder.embed_tokens.weight (no shared.weight), plus decoder / lm_head keys of a full T5.
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& name : src->names()) {
    if (name != "shared.weight") tensors.emplace_back(name, src->load(name));
  }
  tensors.emplace_back("decoder.block.0.layer.0.SelfAttention.q.weight", at::zeros({32, 32}));
  tensors.emplace_back("lm_head.weight", at::zeros({200, 32}));
  write_safetensors(dir.file("full.safetensors"), tensors);
  auto model = load_tiny(*open_weights(dir.file("full.safetensors")));
  EXPECT_TRUE(at::equal(model->shared->weight, src->load("shared.weight")));
  // A foreign encoder key is still an error (strict).
  tensors.emplace_back("encoder.block.0.layer.2.foo.weight", at::zeros({2}));
  write_safetensors(dir.file("foreign.safetensors"), tensors);
  T5Encoder other(tiny_config());
  test::expect_error([&] { other->load(*open_weights(dir.file("foreign.safetensors"))); }, ErrorCode::kShapeMismatch,
                     "encoder.block.0.layer.2.foo.weight");
  // An architecture mismatch names the field.
  auto c = tiny_config();
  c.d_ff = 64;
  T5Encoder wrong(c);
  test::expect_error([&] { wrong->load(*src); }, ErrorCode::kShapeMismatch, "d_ff 48");
}

// ---- tokenizer ---------------------------------------------------------------------------------

#define DITCACHE_REQUIRE_SENTENCEPIECE()                                                          \
  do {                                                                                            \
    if (!T5Tokenizer::available()) GTEST_SKIP() << "built without SentencePiece (libsentencepiece-dev)"; \
  } while (0)

TEST(Tokenizer, MatchesTransformersT5Tokenizer) {
  DITCACHE_REQUIRE_SENTENCEPIECE();
  T5Tokenizer tok(fixture("t5/spiece.model"));
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.vocab_size(), 150);
  auto cases = read_json(fixture("t5/tokenizer_cases.json"))["cases"];
  ASSERT_GE(cases.size(), 5u);
  for (const auto& c : cases) {
    const auto text = c["text"].get<std::string>();
    std::vector<int64_t> mask;
    auto ids = tok.encode_padded(text, c["max_length"].get<int64_t>(), &mask);
    EXPECT_EQ(ids, c["input_ids"].get<std::vector<int64_t>>()) << "'" << text << "'";
    EXPECT_EQ(mask, c["attention_mask"].get<std::vector<int64_t>>()) << "'" << text << "'";
  }
}

TEST(Tokenizer, BatchTensorsPadAndTruncate) {
  DITCACHE_REQUIRE_SENTENCEPIECE();
  T5Tokenizer tok(fixture("t5"));  // folder holding spiece.model
  auto batch = tok({"a cat", "A small dog runs across the green field under a bright blue sky."}, 8);
  ASSERT_EQ(batch.input_ids.sizes(), (std::vector<int64_t>{2, 8}));
  ASSERT_EQ(batch.input_ids.scalar_type(), at::kLong);
  auto first = tok.encode("a cat");
  const auto n = static_cast<int64_t>(first.size()) + 1;
  EXPECT_EQ(batch.attention_mask[0].sum().item<int64_t>(), n);
  EXPECT_EQ(batch.input_ids[0][n - 1].item<int64_t>(), 1);
  EXPECT_EQ(batch.input_ids[0].narrow(0, n, 8 - n).abs().sum().item<int64_t>(), 0);
  EXPECT_EQ(batch.attention_mask[1].sum().item<int64_t>(), 8);  // truncated, EOS kept last
  EXPECT_EQ(batch.input_ids[1][7].item<int64_t>(), 1);
  test::expect_error([&] { tok.encode_padded("x", 0); }, ErrorCode::kInvalidArgument, "max_length");
  test::expect_error([] { T5Tokenizer("/nonexistent/spiece.model"); }, ErrorCode::kNotFound, "spiece.model");
  test::expect_error([] { T5Tokenizer(fixture("t5/config.json")); }, ErrorCode::kFormat, "not a SentencePiece model");
}

TEST(Tokenizer, WithoutSentencePieceConstructionIsUnsupported) {
  if (T5Tokenizer::available()) GTEST_SKIP() << "this build has SentencePiece";
  test::expect_error([] { T5Tokenizer(fixture("t5/spiece.model")); }, ErrorCode::kUnsupported, "libsentencepiece-dev");
}

TEST(Tokenizer, EncodesTokenizedPromptsThroughTheEncoder) {
  DITCACHE_REQUIRE_SENTENCEPIECE();
  T5Tokenizer tok(fixture("t5/spiece.model"));
  auto batch = tok({preprocess_caption("A Cat sitting on a RED chair"), preprocess_caption("")}, 16);
  auto model = load_tiny(*open_weights(fixture("t5/t5_tiny.safetensors")));
  auto y = model->encode(batch.input_ids, batch.attention_mask);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 16, 32}));
  EXPECT_TRUE(at::isfinite(y).all().item<bool>());
}

// ---- caption cleaning ----------------------------------------------------------------------------

TEST(CleanCaption, MatchesDiffusersCases) {
  auto cases = read_json(fixture("t5/clean_caption_cases.json"))["cases"];
  ASSERT_GE(cases.size(), 10u);
  for (const auto& c : cases) {
    const auto input = c["input"].get<std::string>();
    EXPECT_EQ(clean_caption(input), c["once"].get<std::string>()) << "input: '" << input << "'";
    EXPECT_EQ(preprocess_caption(input), c["twice"].get<std::string>()) << "input: '" << input << "'";
  }
}

TEST(CleanCaption, FallbackLowercasesAndTrims) {
  EXPECT_EQ(preprocess_caption("  A Red CAR  ", false), "a red car");
  EXPECT_EQ(clean_caption(""), "");
  EXPECT_EQ(clean_caption("\xff\xfe broken utf8"), "\xef\xbf\xbd\xef\xbf\xbd broken utf8");
}

}  // namespace
}  // namespace ditcache
