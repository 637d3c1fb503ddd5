// T5Config: presets, Hugging Face config.json and inference from checkpoint shapes (models.md §6.1, §6.3).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/t5.h"
#include "io/json_config.h"

namespace ditcache {

void T5Config::validate() const {
  auto fail = [](const std::string& what) { throw Error(ErrorCode::kInvalidArgument, "T5Config: " + what); };
  auto positive = [&](const char* field, int64_t v) {
    if (v <= 0) fail(fmt::format("{} must be positive, got {}", field, v));
  };
  positive("d_model", d_model);
  positive("d_kv", d_kv);
  positive("d_ff", d_ff);
  positive("num_layers", num_layers);
  positive("num_heads", num_heads);
  positive("vocab_size", vocab_size);
  positive("relative_attention_max_distance", relative_attention_max_distance);
  // Each sign gets num_buckets/2 buckets, half of them exact: at least 4 buckets, even.
  if (relative_attention_num_buckets < 4 || relative_attention_num_buckets % 2 != 0) {
    fail(fmt::format("relative_attention_num_buckets must be even and >= 4, got {}", relative_attention_num_buckets));
  }
  if (relative_attention_max_distance <= relative_attention_num_buckets / 4) {
    fail(fmt::format("relative_attention_max_distance {} must exceed the {} exact buckets",
                     relative_attention_max_distance, relative_attention_num_buckets / 4));
  }
  if (!(layer_norm_epsilon > 0)) fail(fmt::format("layer_norm_epsilon must be positive, got {}", layer_norm_epsilon));
  if (feed_forward_proj != "gated-gelu") {
    throw Error(ErrorCode::kUnsupported,
                fmt::format("T5Config: feed_forward_proj '{}' is not supported; only T5 v1.1's 'gated-gelu' is",
                            feed_forward_proj));
  }
}

std::vector<std::string> T5Config::preset_names() { return {"t5-v1_1-xxl"}; }

T5Config T5Config::preset(const std::string& name) {
  if (name == "t5-v1_1-xxl") return T5Config{};
  throw Error(ErrorCode::kInvalidArgument,
              fmt::format("unknown T5 preset '{}'; known: {}", name, fmt::join(preset_names(), ", ")));
}

T5Config T5Config::from_json(const std::string& json_text, const std::string& source) {
  // Every key not read here (decoder sizes, dropout, token ids, architectures, ...) does not change
  // the encoder's function and is ignored.
  io_detail::JsonConfig json(json_text, source, "T5", io_detail::JsonConfig::Unknown::kIgnore);
  T5Config c;
  c.name = "custom";
  json.read("d_model", c.d_model);
  json.read("d_kv", c.d_kv);
  json.read("d_ff", c.d_ff);
  json.read("num_layers", c.num_layers);
  json.read("num_heads", c.num_heads);
  json.read("relative_attention_num_buckets", c.relative_attention_num_buckets);
  json.read("relative_attention_max_distance", c.relative_attention_max_distance);
  json.read("vocab_size", c.vocab_size);
  json.read("layer_norm_epsilon", c.layer_norm_epsilon);
  json.read("feed_forward_proj", c.feed_forward_proj);
  // The Hugging Face name, when there is one, names the config; anything else there is bookkeeping.
  if (const auto* path = json.take("_name_or_path"); path && path->is_string() && !path->get<std::string>().empty()) {
    c.name = path->get<std::string>();
  }
  json.finish();
  c.validate();
  return c;
}

T5Config T5Config::from_json_file(const std::string& path) {
  return from_json(io_detail::read_config_file(path, "T5"), path);
}

T5Config T5Config::from_weights(const WeightFile& file) {
  auto need = [&](const std::string& name, size_t rank) -> const TensorInfo& {
    if (!file.contains(name)) {
      throw Error(ErrorCode::kNotFound, fmt::format("{}: tensor '{}' not found; not a T5 encoder checkpoint?",
                                                    file.path(), name));
    }
    const auto& info = file.info(name);
    if (info.shape.size() != rank) {
      throw Error(ErrorCode::kShapeMismatch, fmt::format("{}: tensor '{}' has rank {}, expected {}", file.path(), name,
                                                         info.shape.size(), rank));
    }
    return info;
  };
  T5Config c;
  c.name = "from-weights";
  const std::string embed = file.contains("shared.weight") ? "shared.weight" : "encoder.embed_tokens.weight";
  const auto& e = need(embed, 2);
  c.vocab_size = e.shape[0];
  c.d_model = e.shape[1];
  const auto& bias = need("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 2);
  c.relative_attention_num_buckets = bias.shape[0];
  c.num_heads = bias.shape[1];
  const auto& q = need("encoder.block.0.layer.0.SelfAttention.q.weight", 2);
  if (q.shape[0] % c.num_heads != 0) {
    throw Error(ErrorCode::kShapeMismatch,
                fmt::format("{}: q.weight has {} rows, not a multiple of the {} heads of relative_attention_bias",
                            file.path(), q.shape[0], c.num_heads));
  }
  c.d_kv = q.shape[0] / c.num_heads;
  c.d_ff = need("encoder.block.0.layer.1.DenseReluDense.wi_0.weight", 2).shape[0];
  c.num_layers = 0;
  while (file.contains(fmt::format("encoder.block.{}.layer.0.SelfAttention.q.weight", c.num_layers))) ++c.num_layers;
  if (!file.contains("encoder.block.0.layer.1.DenseReluDense.wi_1.weight")) {
    throw Error(ErrorCode::kUnsupported,
                fmt::format("{}: no 'encoder.block.0.layer.1.DenseReluDense.wi_1.weight': not a gated-gelu (T5 v1.1) "
                            "checkpoint", file.path()));
  }
  c.validate();
  return c;
}

}  // namespace ditcache
