// OpenSora 1.2 video VAE, decode path: the causal 3-D temporal decoder, the chunked pipeline
// around it and the SD-style spatial decoder (models/vae), config inference and checkpoint
// loading. Written from models.md §4.2 and the fixture notes; the reference code was read for
// facts only.

#include "ditcache/models/opensora_vae.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>
#include <sstream>
#include <type_traits>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "io/json_config.h"

namespace ditcache {

namespace {

constexpr double kTemporalEps = 1e-5;  // PyTorch's GroupNorm default, as the reference uses
const std::string kTemporalAnchor = "temporal_vae.decoder.conv1.conv.weight";
const std::string kSpatialAnchor = "spatial_vae.module.decoder.conv_in.weight";

template <typename T>
std::string list_string(const std::vector<T>& v) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < v.size(); ++i) {
    s << (i ? ", " : "");
    if constexpr (std::is_same_v<T, bool>) {
      s << (v[i] ? "true" : "false");
    } else {
      s << v[i];
    }
  }
  s << ']';
  return s.str();
}

std::string describe(const OpenSoraTemporalVAEConfig& c) {
  std::ostringstream s;
  s << "filters " << c.filters << ", channel_multipliers " << list_string(c.channel_multipliers)
    << ", num_res_blocks " << c.num_res_blocks << ", temporal_downsample " << list_string(c.temporal_downsample)
    << ", latent_channels " << c.latent_channels << ", latent_embed_dim " << c.latent_embed_dim << ", out_channels "
    << c.out_channels;
  return s.str();
}

std::string describe(const VAEConfig& c) {
  std::ostringstream s;
  s << "block_out_channels " << list_string(c.block_out_channels) << ", layers_per_block " << c.layers_per_block
    << ", latent_channels " << c.latent_channels << ", out_channels " << c.out_channels;
  return s.str();
}

bool is_half(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// The outer prefix of the pipeline's keys ("" for the released file), found from the temporal
/// decoder's first conv. Throws Error(kNotFound) saying what was expected.
std::string pipeline_prefix(const WeightFile& file) {
  std::vector<std::string> prefixes;
  for (const auto& name : file.names()) {
    if (!ends_with(name, kTemporalAnchor)) continue;
    const std::string prefix = name.substr(0, name.size() - kTemporalAnchor.size());
    if (prefix.empty() || prefix.back() == '.') prefixes.push_back(prefix);
  }
  if (prefixes.empty()) {
    std::string seen;
    const auto& names = file.names();
    for (size_t i = 0; i < names.size() && i < 3; ++i) seen += (i ? ", '" : "'") + names[i] + "'";
    if (names.size() > 3) seen += ", ...";
    throw Error(ErrorCode::kNotFound,
                "OpenSora VAE weights '" + file.path() + "': no temporal VAE decoder: expected a tensor '" +
                    kTemporalAnchor + "' (the OpenSora 1.2 layout: spatial_vae.module.*, temporal_vae.*, scale, shift); " +
                    "found " + std::to_string(names.size()) + " tensors" + (seen.empty() ? "" : " (" + seen + ")"));
  }
  if (prefixes.size() > 1) {
    std::string list;
    for (const auto& p : prefixes) list += (list.empty() ? "'" : ", '") + p + "'";
    throw Error(ErrorCode::kFormat, "OpenSora VAE weights '" + file.path() + "': several temporal VAE decoders, under prefixes " + list);
  }
  const std::string& prefix = prefixes.front();
  if (!file.contains(prefix + kSpatialAnchor)) {
    throw Error(ErrorCode::kNotFound, "OpenSora VAE weights '" + file.path() + "': no spatial VAE decoder: expected a tensor '" +
                                          prefix + kSpatialAnchor + "' beside '" + prefix + kTemporalAnchor + "'");
  }
  return prefix;
}

std::vector<int64_t> checked_shape(const WeightFile& file, const std::string& key, size_t dims) {
  if (!file.contains(key)) throw Error(ErrorCode::kNotFound, "OpenSora VAE weights '" + file.path() + "': no tensor '" + key + "'");
  const auto& s = file.info(key).shape;
  if (s.size() != dims) {
    throw Error(ErrorCode::kShapeMismatch, "OpenSora VAE weights '" + file.path() + "': tensor '" + key + "': shape " +
                                               shape_string(s) + ", expected a " + std::to_string(dims) + "-d tensor");
  }
  return s;
}

int64_t parse_metadata_int(const WeightFile& file, const std::string& key, int64_t fallback) {
  const auto& md = file.metadata();
  auto it = md.find(key);
  if (it == md.end()) return fallback;
  try {
    size_t used = 0;
    const long long v = std::stoll(it->second, &used);
    if (used == it->second.size()) return static_cast<int64_t>(v);
  } catch (const std::exception&) {
  }
  throw Error(ErrorCode::kFormat, "OpenSora VAE weights '" + file.path() + "': metadata '" + key +
                                      "': expected an integer, found \"" + it->second + "\"");
}

/// Per-channel values of a `[1, C, 1, 1, 1]` buffer stored in the file.
std::vector<double> buffer_values(const WeightFile& file, const std::string& key) {
  const auto t = file.load(key).to(at::kDouble).flatten().contiguous();
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------------

OpenSoraTemporalVAEConfig OpenSoraTemporalVAEConfig::release() { return OpenSoraTemporalVAEConfig{}; }

int64_t OpenSoraTemporalVAEConfig::level_channels(size_t i) const { return filters * channel_multipliers.at(i); }

int64_t OpenSoraTemporalVAEConfig::time_upsample_factor() const {
  int64_t f = 1;
  for (bool d : temporal_downsample) f *= d ? 2 : 1;
  return f;
}

void OpenSoraTemporalVAEConfig::validate() const {
  auto fail = [](const std::string& field, const std::string& expected, const std::string& found) {
    throw Error(ErrorCode::kInvalidArgument,
                "OpenSoraTemporalVAEConfig: " + field + ": expected " + expected + ", found " + found);
  };
  if (out_channels <= 0) fail("out_channels", "a positive integer", std::to_string(out_channels));
  if (latent_channels <= 0) fail("latent_channels", "a positive integer", std::to_string(latent_channels));
  if (latent_embed_dim <= 0) fail("latent_embed_dim", "a positive integer", std::to_string(latent_embed_dim));
  if (filters <= 0) fail("filters", "a positive integer", std::to_string(filters));
  if (num_res_blocks < 1) fail("num_res_blocks", "an integer >= 1", std::to_string(num_res_blocks));
  if (channel_multipliers.empty() || channel_multipliers.size() > 16) {
    fail("channel_multipliers", "1 to 16 entries", list_string(channel_multipliers));
  }
  for (int64_t m : channel_multipliers) {
    if (m <= 0) fail("channel_multipliers", "positive entries", list_string(channel_multipliers));
  }
  if (temporal_downsample.size() + 1 != channel_multipliers.size()) {
    fail("temporal_downsample", std::to_string(channel_multipliers.size() - 1) + " entries (one fewer than channel_multipliers)",
         list_string(temporal_downsample));
  }
  if (num_groups <= 0) fail("num_groups", "a positive integer", std::to_string(num_groups));
  for (size_t i = 0; i < channel_multipliers.size(); ++i) {
    if (level_channels(i) % num_groups != 0) {
      fail("num_groups", "a divisor of every level's channel count (filters " + std::to_string(filters) +
                             " x channel_multipliers " + list_string(channel_multipliers) + ")",
           std::to_string(num_groups) + " (level " + std::to_string(i) + " has " + std::to_string(level_channels(i)) +
               " channels)");
    }
  }
}

OpenSoraTemporalVAEConfig OpenSoraTemporalVAEConfig::from_json_string(const std::string& text, const std::string& origin) {
  // The reference's VAE_Temporal config: `type` and every other key not read here are ignored.
  io_detail::JsonConfig json(text, origin, "temporal VAE", io_detail::JsonConfig::Unknown::kIgnore);
  OpenSoraTemporalVAEConfig c = release();
  json.read_at_least("in_out_channels", c.out_channels, 1);
  json.read_at_least("embed_dim", c.latent_channels, 1);
  json.read_at_least("latent_embed_dim", c.latent_embed_dim, 1);
  json.read_at_least("filters", c.filters, 1);
  json.read_at_least("num_res_blocks", c.num_res_blocks, 1);
  json.read_at_least("num_groups", c.num_groups, 1);
  json.read_list_at_least("channel_multipliers", c.channel_multipliers, 1);
  json.read("temporal_downsample", c.temporal_downsample);
  if (const auto act = json.get<std::string>("activation_fn"); act && *act != "swish" && *act != "silu") {
    json.fail("activation_fn", "\"swish\" (the only activation supported)", ErrorCode::kUnsupported);
  }
  json.finish();
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(ErrorCode::kInvalidArgument, origin + ": " + e.message());
  }
  return c;
}

OpenSoraVAEConfig OpenSoraVAEConfig::release() { return OpenSoraVAEConfig{}; }

void OpenSoraVAEConfig::validate() const {
  auto fail = [](const std::string& field, const std::string& expected, const std::string& found) {
    throw Error(ErrorCode::kInvalidArgument, "OpenSoraVAEConfig: " + field + ": expected " + expected + ", found " + found);
  };
  try {
    spatial.validate();
  } catch (const Error& e) {
    throw Error(ErrorCode::kInvalidArgument, "OpenSoraVAEConfig: spatial: " + e.message());
  }
  try {
    temporal.validate();
  } catch (const Error& e) {
    throw Error(ErrorCode::kInvalidArgument, "OpenSoraVAEConfig: temporal: " + e.message());
  }
  if (spatial.latent_channels != temporal.out_channels) {
    fail("spatial.latent_channels", "temporal.out_channels (" + std::to_string(temporal.out_channels) + ")",
         std::to_string(spatial.latent_channels));
  }
  if (micro_frame_size < 1) fail("micro_frame_size", "a positive integer", std::to_string(micro_frame_size));
  if (micro_batch_size < 1) fail("micro_batch_size", "a positive integer", std::to_string(micro_batch_size));
  const auto c = static_cast<size_t>(temporal.latent_channels);
  if (shift.size() != c) {
    fail("shift", std::to_string(c) + " values (temporal.latent_channels)", std::to_string(shift.size()) + " values");
  }
  if (scale.size() != c) {
    fail("scale", std::to_string(c) + " values (temporal.latent_channels)", std::to_string(scale.size()) + " values");
  }
  for (double v : shift) {
    if (!std::isfinite(v)) fail("shift", "finite values", list_string(shift));
  }
  for (double v : scale) {
    if (!std::isfinite(v) || v == 0.0) fail("scale", "finite non-zero values", list_string(scale));
  }
}

int64_t OpenSoraVAEConfig::micro_latent_frames() const {
  const int64_t f = temporal.time_upsample_factor();
  return (micro_frame_size + f - 1) / f;
}

int64_t OpenSoraVAEConfig::latent_frames(int64_t num_frames) const {
  if (num_frames < 1) {
    throw Error(ErrorCode::kInvalidArgument, "OpenSoraVAEConfig::latent_frames: num_frames: expected >= 1, found " +
                                                 std::to_string(num_frames));
  }
  const int64_t f = temporal.time_upsample_factor();
  const int64_t rest = num_frames % micro_frame_size;
  return (num_frames / micro_frame_size) * micro_latent_frames() + (rest + f - 1) / f;
}

int64_t OpenSoraVAEConfig::pixel_frames(int64_t latent_frames) const {
  if (latent_frames < 1) {
    throw Error(ErrorCode::kInvalidArgument, "OpenSoraVAEConfig::pixel_frames: latent_frames: expected >= 1, found " +
                                                 std::to_string(latent_frames));
  }
  const int64_t f = temporal.time_upsample_factor();
  const int64_t per_chunk = micro_latent_frames();
  const int64_t rest = latent_frames % per_chunk;
  return (latent_frames / per_chunk) * micro_frame_size + (rest > 0 ? f * (rest - 1) + 1 : 0);
}

OpenSoraVAEConfig OpenSoraVAEConfig::from_weights(const WeightFile& file, const OpenSoraVAEConfig& base) {
  const std::string prefix = pipeline_prefix(file);
  const std::string origin = "'" + file.path() + "'";
  const auto& md = file.metadata();
  OpenSoraVAEConfig c = base;
  c.micro_frame_size = parse_metadata_int(file, "micro_frame_size", base.micro_frame_size);
  c.micro_batch_size = parse_metadata_int(file, "micro_batch_size", base.micro_batch_size);

  // Spatial: shapes through the SD VAE's own inference; groups from the metadata when present.
  VAEConfig spatial_base = base.spatial;
  std::optional<VAEConfig> spatial_md;
  if (auto it = md.find("spatial_vae_config"); it != md.end()) {
    spatial_md = VAEConfig::from_json_string(it->second, "metadata 'spatial_vae_config' of " + origin);
    spatial_base.norm_num_groups = spatial_md->norm_num_groups;
  }
  const auto naming = AutoencoderKLDecoderImpl::detect_naming(file);
  if (naming.second != prefix + "spatial_vae.module.") {
    throw Error(ErrorCode::kFormat, "OpenSora VAE weights " + origin + ": the spatial decoder sits under '" + naming.second +
                                        "', expected '" + prefix + "spatial_vae.module.'");
  }
  c.spatial = VAEConfig::from_weights(file, spatial_base);
  // The pipeline divides by a hard-coded 0.18215 whatever the 2-D VAE's own config says.
  c.spatial.scaling_factor = base.spatial.scaling_factor;
  c.spatial.shift_factor = base.spatial.shift_factor;
  if (spatial_md) {
    auto contradict = [&](const std::string& field, const std::string& md_value, const std::string& shape_value) {
      if (md_value == shape_value) return;
      throw Error(ErrorCode::kFormat, "OpenSora VAE weights " + origin + ": metadata spatial_vae_config '" + field +
                                          "' is " + md_value + " but the tensors have " + shape_value);
    };
    contradict("block_out_channels", list_string(spatial_md->block_out_channels), list_string(c.spatial.block_out_channels));
    contradict("layers_per_block", std::to_string(spatial_md->layers_per_block), std::to_string(c.spatial.layers_per_block));
    contradict("latent_channels", std::to_string(spatial_md->latent_channels), std::to_string(c.spatial.latent_channels));
    contradict("out_channels", std::to_string(spatial_md->out_channels), std::to_string(c.spatial.out_channels));
  }

  // Temporal: from the decoder's tensor shapes.
  const std::string t = prefix + "temporal_vae.";
  auto& tc = c.temporal;
  const auto conv1 = checked_shape(file, t + "decoder.conv1.conv.weight", 5);
  const auto pqc = checked_shape(file, t + "post_quant_conv.conv.weight", 5);
  const auto conv_out = checked_shape(file, t + "decoder.conv_out.conv.weight", 5);
  tc.latent_embed_dim = conv1[1];
  tc.latent_channels = pqc[1];
  tc.out_channels = conv_out[0];
  tc.num_res_blocks = 0;
  while (file.contains(t + "decoder.res_blocks." + std::to_string(tc.num_res_blocks) + ".conv1.conv.weight")) ++tc.num_res_blocks;
  std::vector<int64_t> channels;
  while (true) {
    const std::string key = t + "decoder.block_res_blocks." + std::to_string(channels.size()) + ".0.conv1.conv.weight";
    if (!file.contains(key)) break;
    channels.push_back(checked_shape(file, key, 5)[0]);
  }
  if (channels.empty()) {
    throw Error(ErrorCode::kNotFound, "OpenSora VAE weights " + origin + ": no tensor '" + t +
                                          "decoder.block_res_blocks.0.0.conv1.conv.weight'");
  }
  tc.temporal_downsample.assign(channels.size() - 1, false);
  for (size_t i = 0; i + 1 < channels.size(); ++i) {
    tc.temporal_downsample[i] = file.contains(t + "decoder.conv_blocks." + std::to_string(i) + ".conv.weight");
  }
  int64_t g = 0;
  for (int64_t ch : channels) g = std::gcd(g, ch);
  tc.filters = g;
  if (auto it = md.find("temporal_vae_config"); it != md.end()) {
    const auto tmd = OpenSoraTemporalVAEConfig::from_json_string(it->second, "metadata 'temporal_vae_config' of " + origin);
    tc.num_groups = tmd.num_groups;
    // The filters/multiplier split is not in the shapes: take the metadata's when it fits them.
    std::vector<int64_t> md_channels;
    for (size_t i = 0; i < tmd.channel_multipliers.size(); ++i) md_channels.push_back(tmd.level_channels(i));
    auto contradict = [&](const std::string& field, const std::string& md_value, const std::string& shape_value) {
      if (md_value == shape_value) return;
      throw Error(ErrorCode::kFormat, "OpenSora VAE weights " + origin + ": metadata temporal_vae_config '" + field +
                                          "' is " + md_value + " but the tensors have " + shape_value);
    };
    contradict("filters x channel_multipliers", list_string(md_channels), list_string(channels));
    contradict("num_res_blocks", std::to_string(tmd.num_res_blocks), std::to_string(tc.num_res_blocks));
    contradict("temporal_downsample", list_string(tmd.temporal_downsample), list_string(tc.temporal_downsample));
    contradict("in_out_channels", std::to_string(tmd.out_channels), std::to_string(tc.out_channels));
    contradict("embed_dim", std::to_string(tmd.latent_channels), std::to_string(tc.latent_channels));
    contradict("latent_embed_dim", std::to_string(tmd.latent_embed_dim), std::to_string(tc.latent_embed_dim));
    tc.filters = tmd.filters;
  }
  tc.channel_multipliers.clear();
  for (int64_t ch : channels) tc.channel_multipliers.push_back(ch / tc.filters);

  if (file.contains(prefix + "shift")) c.shift = buffer_values(file, prefix + "shift");
  if (file.contains(prefix + "scale")) c.scale = buffer_values(file, prefix + "scale");
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(ErrorCode::kInvalidArgument, "OpenSora VAE weights " + origin + ": " + e.message());
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Temporal decoder modules (registered under the reference's names)
// ---------------------------------------------------------------------------------------------

namespace detail {

namespace {

/// GroupNorm with statistics in fp32 for half inputs; returns the input's dtype.
at::Tensor group_norm_fp32(const at::Tensor& x, const torch::nn::GroupNorm& gn) {
  const auto& o = gn->options;
  if (is_half(x.scalar_type())) {
    return at::group_norm(x.to(at::kFloat), o.num_groups(), gn->weight.to(at::kFloat), gn->bias.to(at::kFloat), o.eps())
        .to(x.scalar_type());
  }
  return at::group_norm(x, o.num_groups(), gn->weight, gn->bias, o.eps());
}

torch::nn::GroupNorm temporal_norm(int64_t groups, int64_t channels) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels).eps(kTemporalEps).affine(true));
}

/// Causal 3-D conv, stride 1: zero-pads k_t - 1 frames in front (none behind) and k//2 on each
/// spatial side, then a plain Conv3d registered as `conv`.
class CausalConv3dImpl : public torch::nn::Module {
 public:
  CausalConv3dImpl(int64_t in, int64_t out, int64_t kernel, bool bias) : time_pad_(kernel - 1) {
    conv_ = register_module(
        "conv", torch::nn::Conv3d(torch::nn::Conv3dOptions(in, out, kernel).padding({0, kernel / 2, kernel / 2}).bias(bias)));
  }
  at::Tensor forward(const at::Tensor& x) {
    if (time_pad_ == 0) return conv_->forward(x);
    // Pad only the time axis (dims are W, H, T from the last): [B, C, pad + T, H, W].
    return conv_->forward(at::constant_pad_nd(x, {0, 0, 0, 0, time_pad_, 0}, 0.0));
  }
  const at::Tensor& weight() const { return conv_->weight; }

 private:
  int64_t time_pad_;
  torch::nn::Conv3d conv_{nullptr};
};
TORCH_MODULE(CausalConv3d);

/// GN -> SiLU -> conv1 (3^3, no bias) -> GN -> SiLU -> conv2 (3^3, no bias), plus the input or
/// its causal 1x1x1 projection conv3 (no bias) when the channel count changes.
class TemporalResBlockImpl : public torch::nn::Module {
 public:
  TemporalResBlockImpl(int64_t in, int64_t out, int64_t groups) {
    norm1_ = register_module("norm1", temporal_norm(groups, in));
    conv1_ = register_module("conv1", CausalConv3d(in, out, 3, false));
    norm2_ = register_module("norm2", temporal_norm(groups, out));
    conv2_ = register_module("conv2", CausalConv3d(out, out, 3, false));
    if (in != out) conv3_ = register_module("conv3", CausalConv3d(in, out, 1, false));
  }
  at::Tensor forward(const at::Tensor& x) {
    auto h = conv1_->forward(at::silu(group_norm_fp32(x, norm1_)));
    h = conv2_->forward(at::silu(group_norm_fp32(h, norm2_)));
    return h + (conv3_ ? conv3_->forward(x) : x);
  }

 private:
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  CausalConv3d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
};
TORCH_MODULE(TemporalResBlock);

/// [B, C*ts, T, H, W] -> [B, C, T*ts, H, W]: output channel c at time ts*t + s is input channel
/// ts*c + s at time t.
at::Tensor depth_to_time(const at::Tensor& x, int64_t ts) {
  const int64_t b = x.size(0), c = x.size(1) / ts, t = x.size(2), h = x.size(3), w = x.size(4);
  return x.reshape({b, c, ts, t, h, w}).permute({0, 1, 3, 2, 4, 5}).reshape({b, c, t * ts, h, w});
}

}  // namespace

/// The `decoder.` module: conv1, res_blocks, block_res_blocks (level order), conv_blocks (level
/// i+1 -> i; an identity without tensors where time is not upsampled), norm1, conv_out.
class OpenSoraTemporalDecoderStackImpl : public torch::nn::Module {
 public:
  explicit OpenSoraTemporalDecoderStackImpl(const OpenSoraTemporalVAEConfig& c) {
    const size_t levels = c.channel_multipliers.size();
    const int64_t g = c.num_groups;
    int64_t channels = c.level_channels(levels - 1);
    conv1_ = register_module("conv1", CausalConv3d(c.latent_embed_dim, channels, 3, true));
    auto res = torch::nn::ModuleList();
    for (int64_t k = 0; k < c.num_res_blocks; ++k) {
      res_blocks_.push_back(TemporalResBlock(channels, channels, g));
      res->push_back(res_blocks_.back());
    }
    register_module("res_blocks", res);

    // Built from the deepest level up, stored in level order like the checkpoint.
    level_blocks_.resize(levels);
    ups_.assign(levels, CausalConv3d(nullptr));  // ups_[i]: conv after level i (i >= 1), null for an identity
    for (size_t step = 0; step < levels; ++step) {
      const size_t i = levels - 1 - step;
      const int64_t out = c.level_channels(i);
      for (int64_t k = 0; k < c.num_res_blocks; ++k) {
        level_blocks_[i].push_back(TemporalResBlock(channels, out, g));
        channels = out;
      }
      if (i > 0 && c.temporal_downsample[i - 1]) ups_[i] = CausalConv3d(channels, channels * 2, 3, true);
    }
    auto blocks = torch::nn::ModuleList();
    for (auto& level : level_blocks_) {
      auto list = torch::nn::ModuleList();
      for (auto& b : level) list->push_back(b);
      blocks->push_back(list);
    }
    register_module("block_res_blocks", blocks);
    auto convs = torch::nn::ModuleList();
    for (size_t i = 1; i < levels; ++i) {
      if (ups_[i]) {
        convs->push_back(ups_[i]);
      } else {
        convs->push_back(torch::nn::Identity());
      }
    }
    register_module("conv_blocks", convs);
    norm1_ = register_module("norm1", temporal_norm(g, channels));
    conv_out_ = register_module("conv_out", CausalConv3d(channels, c.out_channels, 3, true));
  }

  at::Tensor forward(const at::Tensor& z) {
    auto x = conv1_->forward(z);
    for (auto& b : res_blocks_) x = b->forward(x);
    for (size_t step = 0; step < level_blocks_.size(); ++step) {
      const size_t i = level_blocks_.size() - 1 - step;
      for (auto& b : level_blocks_[i]) x = b->forward(x);
      if (ups_[i]) x = depth_to_time(ups_[i]->forward(x), 2);
    }
    x = at::silu(group_norm_fp32(x, norm1_));
    return conv_out_->forward(x);
  }
  const at::Tensor& reference_weight() const { return conv1_->weight(); }

 private:
  CausalConv3d conv1_{nullptr}, conv_out_{nullptr};
  std::vector<TemporalResBlock> res_blocks_;
  std::vector<std::vector<TemporalResBlock>> level_blocks_;
  std::vector<CausalConv3d> ups_;
  torch::nn::GroupNorm norm1_{nullptr};
};

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// OpenSoraTemporalDecoder
// ---------------------------------------------------------------------------------------------

OpenSoraTemporalDecoderImpl::OpenSoraTemporalDecoderImpl(const OpenSoraTemporalVAEConfig& config) : config_(config) {
  config_.validate();
  post_quant_conv_ = register_module(
      "post_quant_conv", detail::CausalConv3d(config_.latent_channels, config_.latent_embed_dim, 1, true).ptr());
  decoder_ = register_module("decoder", std::make_shared<detail::OpenSoraTemporalDecoderStackImpl>(config_));
}

at::Tensor OpenSoraTemporalDecoderImpl::decode(const at::Tensor& z, int64_t num_frames) {
  if (z.dim() != 5 || z.size(1) != config_.latent_channels || z.size(2) < 1) {
    throw Error(ErrorCode::kShapeMismatch, "OpenSoraTemporalDecoder::decode: z of shape " + shape_string(z.sizes()) +
                                               ", expected [B, " + std::to_string(config_.latent_channels) + ", T, h, w]");
  }
  const int64_t f = config_.time_upsample_factor();
  const int64_t t = z.size(2);
  if (num_frames < 1 || (num_frames + f - 1) / f != t) {
    throw Error(ErrorCode::kInvalidArgument, "OpenSoraTemporalDecoder::decode: num_frames " + std::to_string(num_frames) +
                                                 " does not fit " + std::to_string(t) + " latent frames (expected " +
                                                 std::to_string(f * (t - 1) + 1) + " to " + std::to_string(f * t) + ")");
  }
  c10::NoGradGuard no_grad;
  const auto& ref = decoder_->reference_weight();
  auto x = z.to(ref.device(), ref.scalar_type());
  x = std::static_pointer_cast<detail::CausalConv3dImpl>(post_quant_conv_)->forward(x);
  x = decoder_->forward(x);  // [B, out, f*T, h, w]
  const int64_t drop = (f - num_frames % f) % f;
  return drop ? x.narrow(2, drop, x.size(2) - drop) : x;
}

// ---------------------------------------------------------------------------------------------
// OpenSoraVAE
// ---------------------------------------------------------------------------------------------

OpenSoraVAEImpl::OpenSoraVAEImpl(const OpenSoraVAEConfig& config) : config_(config) {
  config_.validate();
  // `spatial_vae` is a plain container so that the decoder's names read `spatial_vae.module.*`.
  auto spatial_holder = std::make_shared<torch::nn::Module>("spatial_vae");
  spatial_ = AutoencoderKLDecoder(config_.spatial);
  spatial_holder->register_module("module", spatial_);
  register_module("spatial_vae", spatial_holder);
  temporal_ = register_module("temporal_vae", OpenSoraTemporalDecoder(config_.temporal));
  const int64_t c = config_.temporal.latent_channels;
  scale_ = register_buffer("scale", at::tensor(config_.scale, at::kDouble).to(at::kFloat).reshape({1, c, 1, 1, 1}));
  shift_ = register_buffer("shift", at::tensor(config_.shift, at::kDouble).to(at::kFloat).reshape({1, c, 1, 1, 1}));
}

void OpenSoraVAEImpl::check_latents(const at::Tensor& z, int64_t num_frames) const {
  const int64_t c = config_.temporal.latent_channels;
  if (z.dim() != 5 || z.size(1) != c || z.size(2) < 1) {
    throw Error(ErrorCode::kShapeMismatch, "OpenSoraVAE::decode: latents of shape " + shape_string(z.sizes()) +
                                               ", expected [B, " + std::to_string(c) + ", T, h, w]");
  }
  if (num_frames < 1 || config_.latent_frames(num_frames) != z.size(2)) {
    throw Error(ErrorCode::kInvalidArgument,
                "OpenSoraVAE::decode: num_frames " + std::to_string(num_frames) + " does not fit " +
                    std::to_string(z.size(2)) + " latent frames (" +
                    (num_frames < 1 ? std::string("expected >= 1")
                                    : std::to_string(num_frames) + " frames encode to " +
                                          std::to_string(config_.latent_frames(num_frames)) + " latent frames") +
                    "; e.g. " + std::to_string(config_.pixel_frames(z.size(2))) + " frames fit)");
  }
}

at::Tensor OpenSoraVAEImpl::denormalize(const at::Tensor& z) {
  c10::NoGradGuard no_grad;
  auto x = z.to(scale_.device(), scale_.scalar_type());
  return x * scale_ + shift_;
}

at::Tensor OpenSoraVAEImpl::temporal_decode(const at::Tensor& z, int64_t num_frames) {
  check_latents(z, num_frames);
  c10::NoGradGuard no_grad;
  const auto x = denormalize(z);
  const int64_t chunk = config_.micro_latent_frames();
  std::vector<at::Tensor> parts;
  int64_t left = num_frames;
  for (int64_t start = 0; start < x.size(2); start += chunk) {
    const int64_t len = std::min(chunk, x.size(2) - start);
    // GroupNorm statistics span the whole chunk, so each chunk is one decoder call.
    parts.push_back(temporal_->decode(x.narrow(2, start, len), std::min(config_.micro_frame_size, left)));
    left -= config_.micro_frame_size;
  }
  return parts.size() == 1 ? parts.front() : at::cat(parts, 2);
}

at::Tensor OpenSoraVAEImpl::spatial_decode(const at::Tensor& x_z) {
  const int64_t c = config_.spatial.latent_channels;
  if (x_z.dim() != 5 || x_z.size(1) != c) {
    throw Error(ErrorCode::kShapeMismatch, "OpenSoraVAE::spatial_decode: input of shape " + shape_string(x_z.sizes()) +
                                               ", expected [B, " + std::to_string(c) + ", F, h, w]");
  }
  c10::NoGradGuard no_grad;
  const int64_t b = x_z.size(0), frames = x_z.size(2), h = x_z.size(3), w = x_z.size(4);
  const int64_t up = config_.upscale_factor();
  // Frames as a batch of images, frame-major within each sample as the reference does.
  const auto images = x_z.permute({0, 2, 1, 3, 4}).reshape({b * frames, c, h, w});  // [(B F), C, h, w]
  const auto& ref = scale_;
  at::Tensor out;
  for (int64_t start = 0; start < b * frames; start += config_.micro_batch_size) {
    const int64_t len = std::min(config_.micro_batch_size, b * frames - start);
    const auto decoded = spatial_->decode(images.narrow(0, start, len) / config_.spatial.scaling_factor);  // [len, 3, H, W]
    if (!out.defined()) {
      out = at::empty({b, decoded.size(1), frames, h * up, w * up}, decoded.options());
    }
    for (int64_t k = 0; k < len; ++k) {
      const int64_t idx = start + k;
      out.select(0, idx / frames).select(1, idx % frames).copy_(decoded[k]);
    }
  }
  if (!out.defined()) out = at::empty({b, config_.spatial.out_channels, 0, h * up, w * up}, ref.options());
  return out;
}

at::Tensor OpenSoraVAEImpl::decode(const at::Tensor& z, int64_t num_frames) {
  return spatial_decode(temporal_decode(z, num_frames));
}

at::Tensor OpenSoraVAEImpl::decode(const at::Tensor& z) {
  if (z.dim() != 5 || z.size(2) < 1) check_latents(z, 1);  // throws the shape error
  return decode(z, config_.pixel_frames(z.size(2)));
}

LoadReport OpenSoraVAEImpl::load(const WeightFile& file) {
  const std::string prefix = pipeline_prefix(file);
  const auto naming = AutoencoderKLDecoderImpl::detect_naming(file);
  const std::string spatial_prefix = prefix + "spatial_vae.module.";
  if (naming.second != spatial_prefix) {
    throw Error(ErrorCode::kFormat, "OpenSora VAE weights '" + file.path() + "': the spatial decoder sits under '" +
                                        naming.second + "', expected '" + spatial_prefix + "'");
  }
  KeyMap map;
  if (naming.first == VAENaming::kLdm) {
    throw Error(ErrorCode::kUnsupported, "OpenSora VAE weights '" + file.path() +
                                             "': the spatial decoder uses LDM/CompVis names; expected diffusers names "
                                             "(spatial_vae.module.decoder.up_blocks.*)");
  }
  if (naming.first == VAENaming::kDiffusersDeprecated) {
    const std::string attn = "spatial_vae.module.decoder.mid_block.attentions.0.";
    const std::pair<const char*, const char*> renames[] = {
        {"to_q", "query"}, {"to_k", "key"}, {"to_v", "value"}, {"to_out.0", "proj_attn"}};
    for (const auto& [now, old] : renames) {
      for (const char* what : {"weight", "bias"}) {
        map.rename(attn + now + "." + what, attn + old + "." + what);
      }
    }
  }
  // Scale and shift are buffers the released file carries; without them the config's values stay.
  map.optional("scale").optional("shift");
  // The encoders are deliberately unused; everything else in the pipeline must be consumed.
  map.ignore_prefix("spatial_vae.module.encoder.")
      .ignore_prefix("spatial_vae.module.quant_conv.")
      .ignore_prefix("temporal_vae.encoder.")
      .ignore_prefix("temporal_vae.quant_conv.");
  LoadOptions options;
  options.prefix = prefix;
  options.strict = true;
  try {
    return load_state_dict(*this, file, map, options);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kShapeMismatch) throw;
    // Say which architecture the file describes when it differs from the module's.
    std::string hint;
    try {
      const auto fc = OpenSoraVAEConfig::from_weights(file, config_);
      if (describe(fc.temporal) != describe(config_.temporal)) {
        hint += "\nThe file's temporal VAE has " + describe(fc.temporal) + "; the config has " + describe(config_.temporal);
      }
      if (describe(fc.spatial) != describe(config_.spatial)) {
        hint += "\nThe file's spatial VAE has " + describe(fc.spatial) + "; the config has " + describe(config_.spatial);
      }
    } catch (const Error&) {
      // The file's architecture could not be read: the tensor list says enough.
    }
    throw Error(ErrorCode::kShapeMismatch, "OpenSora VAE: " + e.message() + hint);
  }
}

}  // namespace ditcache
