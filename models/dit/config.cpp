// DiT configs: presets (models.md §1.1), JSON files, detection from checkpoint shapes, and the
// original / diffusers checkpoint layouts (models.md §1.4).
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "ditcache/error.h"
#include "ditcache/io/state_dict.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/dit.h"
#include "io/json_config.h"

namespace ditcache {

namespace {

struct Size { const char* name; int depth, hidden, heads; };
constexpr Size kSizes[] = {{"S", 12, 384, 6}, {"B", 12, 768, 12}, {"L", 24, 1024, 16}, {"XL", 28, 1152, 16}};
constexpr int kPatches[] = {2, 4, 8};
constexpr int kResolutions[] = {256, 512};

std::string expected_got(const std::string& what, long expected, long got) {
  return fmt::format("{}: expected {}, found {}", what, expected, got);
}

}  // namespace

const char* to_string(DiTNumerics numerics) noexcept {
  return numerics == DiTNumerics::kDiffusers ? "diffusers" : "original";
}

DiTNumerics parse_dit_numerics(const std::string& text) {
  if (text == "original") return DiTNumerics::kOriginal;
  if (text == "diffusers") return DiTNumerics::kDiffusers;
  throw Error(ErrorCode::kInvalidArgument,
              fmt::format("DiT numerics '{}' is not known; expected 'original' or 'diffusers'", text));
}

void DiTConfig::validate() const {
  auto fail = [&](const std::string& message) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("DiT config '{}': {}", name, message));
  };
  if (depth < 1) fail(fmt::format("depth must be >= 1, got {}", depth));
  if (hidden_size < 4 || hidden_size % 4) fail(fmt::format("hidden_size must be a positive multiple of 4 (2-D position embedding), got {}", hidden_size));
  if (num_heads < 1 || hidden_size % num_heads) fail(fmt::format("hidden_size {} is not divisible by num_heads {}", hidden_size, num_heads));
  if (patch_size < 1) fail(fmt::format("patch_size must be >= 1, got {}", patch_size));
  if (input_size < patch_size || input_size % patch_size) fail(fmt::format("input_size {} is not a multiple of patch_size {}", input_size, patch_size));
  if (in_channels < 1) fail(fmt::format("in_channels must be >= 1, got {}", in_channels));
  if (learn_sigma && in_channels < 3 && numerics == DiTNumerics::kOriginal) fail("original CFG guides 3 channels; in_channels must be >= 3");
  if (num_classes < 1) fail(fmt::format("num_classes must be >= 1, got {}", num_classes));
  if (!(mlp_ratio > 0) || hidden_size * mlp_ratio < 1) fail(fmt::format("mlp_ratio must be > 0, got {}", mlp_ratio));
}

std::vector<std::string> DiTConfig::preset_names() {
  std::vector<std::string> names;
  for (const auto& s : kSizes)
    for (int p : kPatches)
      for (int r : kResolutions) names.push_back(fmt::format("DiT-{}/{}-{}", s.name, p, r));
  return names;
}

DiTConfig DiTConfig::preset(const std::string& name) {
  std::string full = name;
  if (full.find('-', 4) == std::string::npos) full += "-256";  // "DiT-XL/2" means the 256 px model
  for (const auto& s : kSizes) {
    for (int p : kPatches) {
      for (int r : kResolutions) {
        if (full != fmt::format("DiT-{}/{}-{}", s.name, p, r)) continue;
        DiTConfig c;
        c.name = full;
        c.depth = s.depth;
        c.hidden_size = s.hidden;
        c.num_heads = s.heads;
        c.patch_size = p;
        c.input_size = r / 8;
        return c;
      }
    }
  }
  throw Error(ErrorCode::kInvalidArgument,
              fmt::format("unknown DiT preset '{}'; known: {}", name, fmt::join(preset_names(), ", ")));
}

DiTConfig DiTConfig::from_json(const std::string& json_text, const std::string& source) {
  io_detail::JsonConfig json(json_text, source, "DiT");
  DiTConfig c;
  c.name = "custom";
  json.read("name", c.name);
  json.read("depth", c.depth);
  json.read("hidden_size", c.hidden_size);
  json.read("num_heads", c.num_heads);
  json.read("patch_size", c.patch_size);
  json.read("input_size", c.input_size);
  json.read("in_channels", c.in_channels);
  json.read("learn_sigma", c.learn_sigma);
  json.read("num_classes", c.num_classes);
  json.read("mlp_ratio", c.mlp_ratio);
  const char* numerics_values = "\"original\" or \"diffusers\"";
  if (const auto numerics = json.get<std::string>("numerics", numerics_values)) {
    if (*numerics != "original" && *numerics != "diffusers") json.fail("numerics", numerics_values);
    c.numerics = parse_dit_numerics(*numerics);
  }
  json.finish();
  c.validate();
  return c;
}

DiTConfig DiTConfig::from_json_file(const std::string& path) {
  return from_json(io_detail::read_config_file(path, "DiT"), path);
}

std::string DiTConfig::to_json() const {
  nlohmann::json j = {{"name", name},           {"depth", depth},         {"hidden_size", hidden_size},
                      {"num_heads", num_heads}, {"patch_size", patch_size}, {"input_size", input_size},
                      {"in_channels", in_channels}, {"learn_sigma", learn_sigma}, {"num_classes", num_classes},
                      {"mlp_ratio", mlp_ratio}, {"numerics", to_string(numerics)}};
  return j.dump(2);
}

namespace {

// The file-key prefix ("", "state_dict.", "ema.", ...) and layout of a DiT checkpoint.
struct Layout { std::string prefix; bool diffusers; };

Layout detect_layout(const WeightFile& file) {
  for (const auto& prefix : checkpoint_prefixes()) {
    if (file.contains(prefix + "x_embedder.proj.weight")) return {prefix, false};
    if (file.contains(prefix + "pos_embed.proj.weight")) return {prefix, true};
  }
  throw Error(ErrorCode::kFormat,
              fmt::format("{}: not a DiT checkpoint (neither 'x_embedder.proj.weight' (original) nor "
                          "'pos_embed.proj.weight' (diffusers) is present; {} tensors)",
                          file.path(), file.names().size()));
}

const std::vector<int64_t>& shape_of(const WeightFile& file, const std::string& key) {
  if (!file.contains(key)) {
    throw Error(ErrorCode::kFormat, fmt::format("{}: DiT checkpoint lacks tensor '{}'", file.path(), key));
  }
  return file.info(key).shape;
}

}  // namespace

DiTConfig DiTConfig::from_weights(const WeightFile& file) {
  // Files written by ditcache (train_shapes) carry their whole config, heads and size included.
  const auto& meta = file.metadata();
  if (const auto it = meta.find("ditcache.config"); it != meta.end()) {
    return from_json(it->second, file.path() + " metadata 'ditcache.config'");
  }
  const auto layout = detect_layout(file);
  const auto& P = layout.prefix;
  const std::string block = layout.diffusers ? "transformer_blocks." : "blocks.";
  DiTConfig c;
  c.name = "detected";
  const auto& proj = shape_of(file, P + (layout.diffusers ? "pos_embed.proj.weight" : "x_embedder.proj.weight"));
  if (proj.size() != 4) throw Error(ErrorCode::kFormat, fmt::format("{}: patch embedding weight has shape {}, expected [C, Cin, p, p]", file.path(), shape_string(proj)));
  c.hidden_size = static_cast<int>(proj[0]);
  c.in_channels = static_cast<int>(proj[1]);
  c.patch_size = static_cast<int>(proj[2]);
  c.depth = 0;
  while (file.contains(P + block + std::to_string(c.depth) + (layout.diffusers ? ".attn1.to_q.weight" : ".attn.qkv.weight"))) ++c.depth;
  const auto& table = shape_of(file, P + (layout.diffusers ? "transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight"
                                                           : "y_embedder.embedding_table.weight"));
  c.num_classes = static_cast<int>(table[0]) - 1;
  const auto& fc1 = shape_of(file, P + block + "0." + (layout.diffusers ? "ff.net.0.proj.weight" : "mlp.fc1.weight"));
  c.mlp_ratio = static_cast<double>(fc1[0]) / c.hidden_size;
  const auto& out = shape_of(file, P + (layout.diffusers ? "proj_out_2.weight" : "final_layer.linear.weight"));
  const int out_channels = static_cast<int>(out[0]) / (c.patch_size * c.patch_size);
  c.learn_sigma = out_channels == 2 * c.in_channels;
  // Heads and input size are not in the weights' shapes: take them from the matching preset (the
  // original pos_embed, when stored, gives the token count).
  c.num_heads = 16;
  for (const auto& s : kSizes) if (s.hidden == c.hidden_size) c.num_heads = s.heads;
  c.input_size = 32;
  if (!layout.diffusers && file.contains(P + "pos_embed")) {
    const auto tokens = file.info(P + "pos_embed").shape.at(1);
    const int grid = static_cast<int>(std::lround(std::sqrt(static_cast<double>(tokens))));
    c.input_size = grid * c.patch_size;
  }
  c.name = fmt::format("DiT(depth={}, hidden={}, patch={}, input={})", c.depth, c.hidden_size, c.patch_size, c.input_size);
  for (const auto& name : preset_names()) {
    const auto p = preset(name);
    if (p.depth == c.depth && p.hidden_size == c.hidden_size && p.patch_size == c.patch_size && p.input_size == c.input_size) {
      c.name = name;
    }
  }
  return c;
}

KeyMap dit_diffusers_key_map(const DiTConfig& config) {
  KeyMap map;
  map.rename("x_embedder.proj.weight", "pos_embed.proj.weight").rename("x_embedder.proj.bias", "pos_embed.proj.bias");
  // diffusers copies the timestep and class embedders into every block; block 0's copy is read.
  const std::string emb = "transformer_blocks.0.norm1.emb.";
  map.rename("t_embedder.mlp.0.weight", emb + "timestep_embedder.linear_1.weight")
      .rename("t_embedder.mlp.0.bias", emb + "timestep_embedder.linear_1.bias")
      .rename("t_embedder.mlp.2.weight", emb + "timestep_embedder.linear_2.weight")
      .rename("t_embedder.mlp.2.bias", emb + "timestep_embedder.linear_2.bias")
      .rename("y_embedder.embedding_table.weight", emb + "class_embedder.embedding_table.weight");
  for (int i = 0; i < config.depth; ++i) {
    const std::string o = fmt::format("blocks.{}.", i), d = fmt::format("transformer_blocks.{}.", i);
    if (i > 0) map.ignore_prefix(d + "norm1.emb.");
    for (const char* wb : {"weight", "bias"}) {
      const std::string s = wb;
      map.rename(o + "adaLN_modulation.1." + s, d + "norm1.linear." + s)
          .concat(o + "attn.qkv." + s, {d + "attn1.to_q." + s, d + "attn1.to_k." + s, d + "attn1.to_v." + s}, 0)
          .rename(o + "attn.proj." + s, d + "attn1.to_out.0." + s)
          .rename(o + "mlp.fc1." + s, d + "ff.net.0.proj." + s)
          .rename(o + "mlp.fc2." + s, d + "ff.net.2." + s);
    }
  }
  for (const char* wb : {"weight", "bias"}) {
    const std::string s = wb;
    map.rename("final_layer.adaLN_modulation.1." + s, "proj_out_1." + s).rename("final_layer.linear." + s, "proj_out_2." + s);
  }
  map.optional("pos_embed");  // fixed sin-cos; diffusers recomputes it
  return map;
}

void DiTImpl::load(const WeightFile& file) {
  const auto layout = detect_layout(file);
  const auto found = DiTConfig::from_weights(file);
  auto check = [&](const char* field, long expected, long got) {
    if (expected != got) {
      throw Error(ErrorCode::kShapeMismatch,
                  fmt::format("{}: the weights do not fit config '{}': {}", file.path(), config_.name,
                              expected_got(field, expected, got)));
    }
  };
  check("hidden_size", config_.hidden_size, found.hidden_size);
  check("depth", config_.depth, found.depth);
  check("patch_size", config_.patch_size, found.patch_size);
  check("in_channels", config_.in_channels, found.in_channels);
  check("num_classes", config_.num_classes, found.num_classes);
  check("out_channels", config_.out_channels(), found.out_channels());
  check("mlp_hidden", config_.mlp_hidden(), found.mlp_hidden());
  LoadOptions options;
  options.prefix = layout.prefix;
  KeyMap map = layout.diffusers ? dit_diffusers_key_map(config_) : KeyMap().optional("pos_embed");
  load_state_dict(*this, file, map, options);
}

}  // namespace ditcache
