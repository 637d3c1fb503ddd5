// PixArt-α configs: presets (models.md §2.1), diffusers config.json, detection from checkpoint
// shapes in the original and diffusers layouts (models.md §2.4), and the diffusers key map.
#include <cmath>
#include <functional>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "ditcache/error.h"
#include "ditcache/io/state_dict.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/pixart.h"
#include "io/json_config.h"

namespace ditcache {

void PixArtConfig::validate() const {
  auto bad = [&](const std::string& what) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("PixArt config '{}': {}", name, what));
  };
  if (depth < 1) bad(fmt::format("depth must be >= 1, found {}", depth));
  if (hidden_size < 1 || num_heads < 1) bad(fmt::format("hidden_size and num_heads must be >= 1, found {} and {}", hidden_size, num_heads));
  if (hidden_size % num_heads != 0) bad(fmt::format("hidden_size {} is not divisible by num_heads {}", hidden_size, num_heads));
  if (hidden_size % 4 != 0) bad(fmt::format("hidden_size {} must be divisible by 4 (2-D sin-cos position embedding)", hidden_size));
  if (micro_conditions && hidden_size % 3 != 0) {
    bad(fmt::format("hidden_size {} must be divisible by 3 with micro_conditions (size embedders of width C/3)", hidden_size));
  }
  if (patch_size < 1) bad(fmt::format("patch_size must be >= 1, found {}", patch_size));
  if (input_size < patch_size || input_size % patch_size != 0) {
    bad(fmt::format("input_size {} is not a positive multiple of patch_size {}", input_size, patch_size));
  }
  if (in_channels < 1) bad(fmt::format("in_channels must be >= 1, found {}", in_channels));
  if (!(mlp_ratio > 0) || hidden_size * mlp_ratio < 1) bad(fmt::format("mlp_ratio must be > 0, found {}", mlp_ratio));
  if (caption_channels < 1 || model_max_length < 1) {
    bad(fmt::format("caption_channels and model_max_length must be >= 1, found {} and {}", caption_channels, model_max_length));
  }
  if (!(lewei_scale > 0) || !std::isfinite(lewei_scale)) bad(fmt::format("lewei_scale must be > 0, found {}", lewei_scale));
}

std::vector<std::string> PixArtConfig::preset_names() {
  return {"PixArt-XL-2-256", "PixArt-XL-2-512", "PixArt-XL-2-1024-MS"};
}

PixArtConfig PixArtConfig::preset(const std::string& name) {
  PixArtConfig c;
  if (name == "PixArt-XL-2-256" || name == "PixArt-XL-2-256x256") {
    c.name = "PixArt-XL-2-256";
    c.input_size = 32;
  } else if (name == "PixArt-XL-2-512" || name == "PixArt-XL-2-512x512") {
    c.name = "PixArt-XL-2-512";
    c.input_size = 64;
  } else if (name == "PixArt-XL-2-1024-MS") {
    c.name = name;
    c.input_size = 128;
    c.lewei_scale = 2.0;
    c.micro_conditions = true;
  } else {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("unknown PixArt preset '{}'; known: {}", name, fmt::join(preset_names(), ", ")));
  }
  return c;
}

PixArtConfig PixArtConfig::from_json(const std::string& json_text, const std::string& source) {
  io_detail::JsonConfig json(json_text, source, "PixArt");
  // Fields that do not change inference (training switches, diffusers bookkeeping).
  json.ignore({"dropout", "norm_num_groups", "num_embeds_ada_norm", "upcast_attention", "use_linear_projection",
               "_diffusers_version", "_name_or_path"});
  PixArtConfig c;
  c.name = "custom";
  c.input_size = 128;  // diffusers' default sample_size
  int heads = 16, head_dim = 72, out_channels = -1, cross_dim = -1;
  json.read_at_least("num_attention_heads", heads, 1);
  json.read_at_least("attention_head_dim", head_dim, 1);
  json.read("in_channels", c.in_channels);
  json.read("num_layers", c.depth);
  json.read("sample_size", c.input_size);
  json.read("patch_size", c.patch_size);
  json.read("model_max_length", c.model_max_length);
  json.read_nullable("out_channels", out_channels);
  json.read_nullable("cross_attention_dim", cross_dim);
  c.caption_channels = json.require<int>("caption_channels", "PixArt projects T5 captions");
  const bool has_interpolation = json.read_nullable("interpolation_scale", c.lewei_scale);
  const bool has_additional = json.read_nullable("use_additional_conditions", c.micro_conditions);
  // Fields accepted only at the one value this implementation computes.
  auto only = [&](const char* key, const std::function<bool(const nlohmann::json&)>& ok, const std::string& value) {
    json.check(key, ok, value + " (the only value PixArt-α has)");
  };
  only("norm_type", [](const auto& v) { return v == "ada_norm_single"; }, "\"ada_norm_single\"");
  only("activation_fn", [](const auto& v) { return v == "gelu-approximate"; }, "\"gelu-approximate\"");
  only("norm_elementwise_affine", [](const auto& v) { return v == false; }, "false");
  only("norm_eps", [](const auto& v) { return v.is_number() && std::abs(v.template get<double>() - 1e-6) < 1e-12; }, "1e-6");
  only("attention_bias", [](const auto& v) { return v == true; }, "true");
  only("attention_type", [](const auto& v) { return v == "default"; }, "\"default\"");
  only("num_vector_embeds", [](const auto& v) { return v.is_null(); }, "null");
  only("only_cross_attention", [](const auto& v) { return v == false; }, "false");
  only("double_self_attention", [](const auto& v) { return v == false; }, "false");
  only("_class_name", [](const auto& v) { return v == "PixArtTransformer2DModel" || v == "Transformer2DModel"; },
       "\"PixArtTransformer2DModel\"");
  json.finish();
  c.num_heads = heads;
  c.hidden_size = heads * head_dim;
  if (cross_dim >= 0 && cross_dim != c.hidden_size) {
    json.fail("cross_attention_dim", fmt::format("the width {} (num_attention_heads x attention_head_dim)", c.hidden_size));
  }
  if (out_channels < 0 || out_channels == c.in_channels) {
    c.pred_sigma = false;
  } else if (out_channels == 2 * c.in_channels) {
    c.pred_sigma = true;
  } else {
    json.fail("out_channels", fmt::format("{} or {} (in_channels, or twice with learned sigma)", c.in_channels, 2 * c.in_channels));
  }
  // diffusers' defaults for the two optional switches.
  if (!has_interpolation) c.lewei_scale = std::max(c.input_size / 64, 1);
  if (!has_additional) c.micro_conditions = c.input_size == 128;
  for (const auto& name : preset_names()) {
    const auto p = preset(name);
    if (p.depth == c.depth && p.hidden_size == c.hidden_size && p.num_heads == c.num_heads && p.input_size == c.input_size &&
        p.lewei_scale == c.lewei_scale && p.micro_conditions == c.micro_conditions && p.caption_channels == c.caption_channels) {
      c.name = name;
    }
  }
  c.validate();
  return c;
}

PixArtConfig PixArtConfig::from_json_file(const std::string& path) {
  return from_json(io_detail::read_config_file(path, "PixArt"), path);
}

// ---------------------------------------------------------------------------------------------
PixArtCheckpoint detect_pixart_checkpoint(const WeightFile& file) {
  for (const auto& p : checkpoint_prefixes()) {
    if (file.contains(p + "x_embedder.proj.weight") && file.contains(p + "t_block.1.weight") &&
        file.contains(p + "blocks.0.cross_attn.q_linear.weight")) {
      return {PixArtLayout::kOriginal, p};
    }
    if (file.contains(p + "pos_embed.proj.weight") && file.contains(p + "adaln_single.linear.weight")) {
      return {PixArtLayout::kDiffusers, p};
    }
  }
  throw Error(ErrorCode::kFormat,
              fmt::format("{}: not a PixArt-α checkpoint: neither 'x_embedder.proj.weight' with 't_block.1.weight' and "
                          "'blocks.0.cross_attn.*' (original) nor 'pos_embed.proj.weight' with 'adaln_single.linear.weight' "
                          "(diffusers) is present ({} tensors)", file.path(), file.names().size()));
}

namespace {

const std::vector<int64_t>& shape_of(const WeightFile& file, const std::string& key) {
  if (!file.contains(key)) {
    throw Error(ErrorCode::kFormat, fmt::format("{}: PixArt checkpoint lacks tensor '{}'", file.path(), key));
  }
  return file.info(key).shape;
}

}  // namespace

PixArtConfig PixArtConfig::from_weights(const WeightFile& file, int num_heads) {
  const auto ckpt = detect_pixart_checkpoint(file);
  const bool diffusers = ckpt.layout == PixArtLayout::kDiffusers;
  const auto& P = ckpt.prefix;
  const std::string block = diffusers ? "transformer_blocks." : "blocks.";
  PixArtConfig c;
  const auto& proj = shape_of(file, P + (diffusers ? "pos_embed.proj.weight" : "x_embedder.proj.weight"));
  if (proj.size() != 4 || proj[2] != proj[3]) {
    throw Error(ErrorCode::kFormat, fmt::format("{}: patch embedding weight has shape {}, expected [C, Cin, p, p]", file.path(),
                                                shape_string(proj)));
  }
  c.hidden_size = static_cast<int>(proj[0]);
  c.in_channels = static_cast<int>(proj[1]);
  c.patch_size = static_cast<int>(proj[2]);
  c.depth = 0;
  while (file.contains(P + block + std::to_string(c.depth) + (diffusers ? ".attn1.to_q.weight" : ".attn.qkv.weight"))) ++c.depth;
  if (c.depth == 0) throw Error(ErrorCode::kFormat, fmt::format("{}: no '{}0.*' tensors; not a PixArt checkpoint", file.path(), P + block));
  const auto& fc1 = shape_of(file, P + block + "0." + (diffusers ? "ff.net.0.proj.weight" : "mlp.fc1.weight"));
  c.mlp_ratio = static_cast<double>(fc1.at(0)) / c.hidden_size;
  const auto& caption = shape_of(file, P + (diffusers ? "caption_projection.linear_1.weight" : "y_embedder.y_proj.fc1.weight"));
  c.caption_channels = static_cast<int>(caption.at(1));
  const auto& out = shape_of(file, P + (diffusers ? "proj_out.weight" : "final_layer.linear.weight"));
  const int out_channels = static_cast<int>(out.at(0)) / (c.patch_size * c.patch_size);
  if (out_channels != c.in_channels && out_channels != 2 * c.in_channels) {
    throw Error(ErrorCode::kFormat, fmt::format("{}: the final linear gives {} channels per pixel; expected {} or {}", file.path(),
                                                out_channels, c.in_channels, 2 * c.in_channels));
  }
  c.pred_sigma = out_channels == 2 * c.in_channels;
  const std::string size_key = diffusers ? "adaln_single.emb.resolution_embedder.linear_1.weight" : "csize_embedder.mlp.0.weight";
  const std::string ar_key = diffusers ? "adaln_single.emb.aspect_ratio_embedder.linear_1.weight" : "ar_embedder.mlp.0.weight";
  c.micro_conditions = file.contains(P + size_key);
  if (c.micro_conditions != file.contains(P + ar_key)) {
    throw Error(ErrorCode::kFormat, fmt::format("{}: '{}' and '{}' must both be present (PixArtMS) or both absent", file.path(),
                                                P + size_key, P + ar_key));
  }
  if (!diffusers && file.contains(P + "y_embedder.y_embedding")) {
    const auto& null_caption = file.info(P + "y_embedder.y_embedding").shape;
    if (null_caption.size() == 2) c.model_max_length = static_cast<int>(null_caption[0]);
  }
  // Heads: given, or the released head dim 72.
  if (num_heads > 0) {
    c.num_heads = num_heads;
  } else if (c.hidden_size % 72 == 0) {
    c.num_heads = c.hidden_size / 72;
  } else {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("{}: the head count is not in the weights and the released head dim 72 does not divide the width {}; "
                            "pass num_heads (or read the diffusers config.json with from_json)", file.path(), c.hidden_size));
  }
  // Latent size and lewei scale: from the stored sin-cos table of an original file, else the
  // release's defaults.
  c.input_size = c.micro_conditions ? 128 : 64;
  c.lewei_scale = c.micro_conditions ? 2.0 : 1.0;
  if (!diffusers && file.contains(P + "pos_embed")) {
    const auto& shape = file.info(P + "pos_embed").shape;
    const int64_t tokens = shape.size() == 3 ? shape[1] : 0;
    const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(tokens))));
    if (shape.size() != 3 || shape[0] != 1 || shape[2] != c.hidden_size || side * side != tokens || side < 2) {
      throw Error(ErrorCode::kFormat, fmt::format("{}: 'pos_embed' has shape {}, expected [1, side^2, {}] with side >= 2", file.path(),
                                                  shape_string(shape), c.hidden_size));
    }
    c.input_size = static_cast<int>(side) * c.patch_size;
    // Token 1 is (row 0, column 1): its first channel is sin(p), channel C/4 cos(p), with the
    // column position p = 1 / lewei_scale on the training grid (models.md §0.2).
    auto table = file.load(P + "pos_embed").to(at::kDouble);
    if (table.abs().max().item<double>() > 0) {
      const double p = std::atan2(table[0][1][0].item<double>(), table[0][1][c.hidden_size / 4].item<double>());
      if (!(p > 0)) {
        throw Error(ErrorCode::kFormat, fmt::format("{}: 'pos_embed' is not a PixArt sin-cos table (column position {})", file.path(), p));
      }
      c.lewei_scale = std::round(1e4 / p) / 1e4;
    }
  }
  c.name = fmt::format("PixArt(depth={}, hidden={}, input={}{})", c.depth, c.hidden_size, c.input_size, c.micro_conditions ? ", MS" : "");
  for (const auto& name : preset_names()) {
    const auto p = preset(name);
    if (p.depth == c.depth && p.hidden_size == c.hidden_size && p.num_heads == c.num_heads && p.input_size == c.input_size &&
        p.lewei_scale == c.lewei_scale && p.micro_conditions == c.micro_conditions && p.caption_channels == c.caption_channels &&
        p.patch_size == c.patch_size) {
      c.name = name;
    }
  }
  c.validate();
  return c;
}

KeyMap pixart_diffusers_key_map(const PixArtConfig& config) {
  KeyMap map;
  for (const char* wb : {"weight", "bias"}) {
    const std::string s = wb;
    map.rename("x_embedder.proj." + s, "pos_embed.proj." + s)
        .rename("t_embedder.mlp.0." + s, "adaln_single.emb.timestep_embedder.linear_1." + s)
        .rename("t_embedder.mlp.2." + s, "adaln_single.emb.timestep_embedder.linear_2." + s)
        .rename("t_block.1." + s, "adaln_single.linear." + s)
        .rename("y_embedder.y_proj.fc1." + s, "caption_projection.linear_1." + s)
        .rename("y_embedder.y_proj.fc2." + s, "caption_projection.linear_2." + s)
        .rename("final_layer.linear." + s, "proj_out." + s);
    if (config.micro_conditions) {
      map.rename("csize_embedder.mlp.0." + s, "adaln_single.emb.resolution_embedder.linear_1." + s)
          .rename("csize_embedder.mlp.2." + s, "adaln_single.emb.resolution_embedder.linear_2." + s)
          .rename("ar_embedder.mlp.0." + s, "adaln_single.emb.aspect_ratio_embedder.linear_1." + s)
          .rename("ar_embedder.mlp.2." + s, "adaln_single.emb.aspect_ratio_embedder.linear_2." + s);
    }
    for (int i = 0; i < config.depth; ++i) {
      const std::string o = fmt::format("blocks.{}.", i), d = fmt::format("transformer_blocks.{}.", i);
      map.concat(o + "attn.qkv." + s, {d + "attn1.to_q." + s, d + "attn1.to_k." + s, d + "attn1.to_v." + s}, 0)
          .rename(o + "attn.proj." + s, d + "attn1.to_out.0." + s)
          .rename(o + "cross_attn.q_linear." + s, d + "attn2.to_q." + s)
          .concat(o + "cross_attn.kv_linear." + s, {d + "attn2.to_k." + s, d + "attn2.to_v." + s}, 0)
          .rename(o + "cross_attn.proj." + s, d + "attn2.to_out.0." + s)
          .rename(o + "mlp.fc1." + s, d + "ff.net.0.proj." + s)
          .rename(o + "mlp.fc2." + s, d + "ff.net.2." + s);
    }
  }
  for (int i = 0; i < config.depth; ++i) {
    map.rename(fmt::format("blocks.{}.scale_shift_table", i), fmt::format("transformer_blocks.{}.scale_shift_table", i));
  }
  map.rename("final_layer.scale_shift_table", "scale_shift_table");
  map.optional("y_embedder.y_embedding");  // the converter drops the null caption
  return map;
}

}  // namespace ditcache
