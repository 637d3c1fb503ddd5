// STDiT3 configs: presets, the reference's config JSON, detection from checkpoint shapes
// (models.md §3.1, §3.4).
#include <fmt/format.h>

#include "ditcache/error.h"
#include "ditcache/io/state_dict.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/stdit3.h"
#include "io/json_config.h"

namespace ditcache {

void STDiT3Config::validate() const {
  auto bad = [&](const std::string& what) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("STDiT3 config '{}': {}", name, what));
  };
  if (depth < 1) bad(fmt::format("depth must be >= 1, found {}", depth));
  if (hidden_size < 1 || num_heads < 1) bad(fmt::format("hidden_size and num_heads must be >= 1, found {} and {}", hidden_size, num_heads));
  if (hidden_size % num_heads != 0) bad(fmt::format("hidden_size {} is not divisible by num_heads {}", hidden_size, num_heads));
  if (head_dim() % 2 != 0) bad(fmt::format("head dim {} must be even (RoPE rotates channel pairs)", head_dim()));
  if (hidden_size % 4 != 0) bad(fmt::format("hidden_size {} must be divisible by 4 (2-D sin-cos position embedding)", hidden_size));
  if (patch_t < 1 || patch_h < 1 || patch_w < 1) bad(fmt::format("patch_size must be positive, found [{}, {}, {}]", patch_t, patch_h, patch_w));
  if (in_channels < 1) bad(fmt::format("in_channels must be >= 1, found {}", in_channels));
  if (mlp_ratio <= 0) bad(fmt::format("mlp_ratio must be > 0, found {}", mlp_ratio));
  if (caption_channels < 1 || model_max_length < 1) {
    bad(fmt::format("caption_channels and model_max_length must be >= 1, found {} and {}", caption_channels, model_max_length));
  }
  if (input_sq_size < 1) bad(fmt::format("input_sq_size must be >= 1, found {}", input_sq_size));
}

STDiT3Config STDiT3Config::preset(const std::string& name) {
  STDiT3Config c;
  if (name == "STDiT3-XL/2") {
    c.name = name;
    return c;
  }
  if (name == "STDiT3-3B/2") {
    c.name = name;
    c.hidden_size = 1872;
    c.num_heads = 26;
    return c;
  }
  throw Error(ErrorCode::kInvalidArgument, fmt::format("unknown STDiT3 preset '{}'; known: STDiT3-XL/2, STDiT3-3B/2", name));
}

STDiT3Config STDiT3Config::from_json(const std::string& json_text, const std::string& source) {
  io_detail::JsonConfig json(json_text, source, "STDiT3");
  // Fields of the reference that do not change the inference function (kernels, parallelism,
  // training-only switches, Hugging Face bookkeeping).
  json.ignore({"enable_flash_attn", "enable_layernorm_kernel", "enable_sequence_parallelism", "class_dropout_prob",
               "drop_path", "freeze_y_embedder", "skip_y_embedder", "only_train_temporal", "input_size", "architectures",
               "auto_map", "model_type", "torch_dtype", "transformers_version", "_name_or_path"});
  STDiT3Config c;
  c.name = "custom";
  json.read("name", c.name);
  json.read("depth", c.depth);
  json.read("hidden_size", c.hidden_size);
  json.read("num_heads", c.num_heads);
  const char* patch_expected = "[t, h, w] integers";
  if (const auto patch = json.get<std::vector<int>>("patch_size", patch_expected)) {
    if (patch->size() != 3) json.fail("patch_size", patch_expected);
    c.patch_t = (*patch)[0];
    c.patch_h = (*patch)[1];
    c.patch_w = (*patch)[2];
  }
  json.read("in_channels", c.in_channels);
  json.read("pred_sigma", c.pred_sigma);
  json.read("mlp_ratio", c.mlp_ratio);
  json.read("caption_channels", c.caption_channels);
  json.read("model_max_length", c.model_max_length);
  json.read("qk_norm", c.qk_norm);
  json.read("input_sq_size", c.input_sq_size);
  json.finish();
  c.validate();
  return c;
}

namespace {

const std::vector<int64_t>& shape_of(const WeightFile& file, const std::string& key) {
  if (!file.contains(key)) {
    throw Error(ErrorCode::kFormat, fmt::format("{}: no tensor '{}'; not an STDiT3 (OpenSora 1.2) checkpoint", file.path(), key));
  }
  return file.info(key).shape;
}

}  // namespace

STDiT3Config STDiT3Config::from_weights(const WeightFile& file) {
  STDiT3Config c;
  const auto& proj = shape_of(file, "x_embedder.proj.weight");
  if (proj.size() != 5) {
    throw Error(ErrorCode::kFormat, fmt::format("{}: 'x_embedder.proj.weight' has shape {}, expected [C, Cin, pt, ph, pw]; not an STDiT3 checkpoint",
                                                file.path(), shape_string(proj)));
  }
  c.hidden_size = static_cast<int>(proj[0]);
  c.in_channels = static_cast<int>(proj[1]);
  c.patch_t = static_cast<int>(proj[2]);
  c.patch_h = static_cast<int>(proj[3]);
  c.patch_w = static_cast<int>(proj[4]);
  c.depth = 0;
  while (file.contains(fmt::format("spatial_blocks.{}.attn.qkv.weight", c.depth))) ++c.depth;
  if (c.depth == 0) throw Error(ErrorCode::kFormat, fmt::format("{}: no 'spatial_blocks.0.*' tensors; not an STDiT3 checkpoint", file.path()));
  if (!file.contains(fmt::format("temporal_blocks.{}.attn.qkv.weight", c.depth - 1))) {
    throw Error(ErrorCode::kFormat, fmt::format("{}: {} spatial blocks but no 'temporal_blocks.{}'", file.path(), c.depth, c.depth - 1));
  }
  c.qk_norm = file.contains("spatial_blocks.0.attn.q_norm.weight");
  // The head dim is the length of the q-norm weight, or of the RoPE table (half the head dim).
  int head_dim = 0;
  if (c.qk_norm) head_dim = static_cast<int>(shape_of(file, "spatial_blocks.0.attn.q_norm.weight").at(0));
  else head_dim = 2 * static_cast<int>(shape_of(file, "rope.freqs").at(0));
  if (head_dim <= 0 || c.hidden_size % head_dim != 0) {
    throw Error(ErrorCode::kFormat, fmt::format("{}: head dim {} does not divide hidden size {}", file.path(), head_dim, c.hidden_size));
  }
  c.num_heads = c.hidden_size / head_dim;
  c.mlp_ratio = static_cast<double>(shape_of(file, "spatial_blocks.0.mlp.fc1.weight").at(0)) / c.hidden_size;
  const auto& y_embedding = shape_of(file, "y_embedder.y_embedding");
  c.model_max_length = static_cast<int>(y_embedding.at(0));
  c.caption_channels = static_cast<int>(y_embedding.at(1));
  const auto out = shape_of(file, "final_layer.linear.weight").at(0) / (c.patch_t * c.patch_h * c.patch_w);
  c.pred_sigma = out == 2 * c.in_channels;
  c.name = c.hidden_size == 1152 && c.depth == 28 ? "STDiT3-XL/2"
           : c.hidden_size == 1872 && c.depth == 28 ? "STDiT3-3B/2"
                                                    : fmt::format("STDiT3(depth={}, hidden={})", c.depth, c.hidden_size);
  // input_sq_size is not in the shapes; a config in the metadata may set it (and must agree on the rest).
  const auto& meta = file.metadata();
  if (const auto it = meta.find("config"); it != meta.end()) {
    const auto declared = from_json(it->second, file.path() + " metadata 'config'");
    if (declared.num_heads != c.num_heads || declared.depth != c.depth || declared.hidden_size != c.hidden_size) {
      throw Error(ErrorCode::kFormat,
                  fmt::format("{}: metadata config says depth {}, hidden {}, heads {}; the tensors say {}, {}, {}", file.path(),
                              declared.depth, declared.hidden_size, declared.num_heads, c.depth, c.hidden_size, c.num_heads));
    }
    c.input_sq_size = declared.input_sq_size;
  }
  c.validate();
  return c;
}

}  // namespace ditcache
