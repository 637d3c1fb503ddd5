// Stable Diffusion VAE decoder (diffusers AutoencoderKL, decoder half): modules, config parsing,
// weight-name detection (diffusers, deprecated diffusers, LDM/CompVis) and loading.

#include "ditcache/models/vae.h"

#include <cmath>
#include <sstream>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "io/json_config.h"
#include "io/strings.h"
#include "nn/attention.h"

namespace ditcache {

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

namespace {

std::string list_string(const std::vector<int64_t>& v) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  s << ']';
  return s.str();
}

std::string describe(const VAEConfig& c) {
  std::ostringstream s;
  s << "block_out_channels " << list_string(c.block_out_channels) << ", layers_per_block "
    << c.layers_per_block << ", latent_channels " << c.latent_channels << ", out_channels "
    << c.out_channels;
  return s.str();
}

bool is_half(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

}  // namespace

VAEConfig VAEConfig::sd() { return VAEConfig{}; }

int64_t VAEConfig::upscale_factor() const {
  return int64_t{1} << (block_out_channels.empty() ? 0 : block_out_channels.size() - 1);
}

void VAEConfig::validate() const {
  auto fail = [](const std::string& what) { throw Error(ErrorCode::kInvalidArgument, "VAEConfig: " + what); };
  if (block_out_channels.empty()) fail("block_out_channels is empty");
  if (block_out_channels.size() > 16) {
    fail("block_out_channels has " + std::to_string(block_out_channels.size()) + " entries, expected at most 16");
  }
  if (norm_num_groups <= 0) fail("norm_num_groups must be positive, found " + std::to_string(norm_num_groups));
  for (int64_t c : block_out_channels) {
    if (c <= 0 || c % norm_num_groups != 0) {
      fail("block_out_channels " + list_string(block_out_channels) + ": every entry must be a positive multiple of " +
           "norm_num_groups " + std::to_string(norm_num_groups) + ", found " + std::to_string(c));
    }
  }
  if (layers_per_block < 0) fail("layers_per_block must be >= 0, found " + std::to_string(layers_per_block));
  if (latent_channels <= 0) fail("latent_channels must be positive, found " + std::to_string(latent_channels));
  if (out_channels <= 0) fail("out_channels must be positive, found " + std::to_string(out_channels));
  if (!std::isfinite(scaling_factor) || scaling_factor <= 0) {
    fail("scaling_factor must be a positive finite number, found " + std::to_string(scaling_factor));
  }
  if (!std::isfinite(shift_factor)) fail("shift_factor must be finite, found " + std::to_string(shift_factor));
}

VAEConfig VAEConfig::from_json_string(const std::string& text, const std::string& origin) {
  // diffusers' AutoencoderKL config.json carries the encoder's settings, sample sizes, latent
  // statistics, ...: every key not read here is ignored.
  io_detail::JsonConfig json(text, origin, "VAE", io_detail::JsonConfig::Unknown::kIgnore);
  VAEConfig c = sd();
  json.read_list_at_least("block_out_channels", c.block_out_channels, 1);
  json.read_at_least("layers_per_block", c.layers_per_block, 0);
  json.read_at_least("latent_channels", c.latent_channels, 1);
  json.read_at_least("out_channels", c.out_channels, 1);
  json.read_at_least("norm_num_groups", c.norm_num_groups, 1);
  if (json.read("scaling_factor", c.scaling_factor, "a positive number") &&
      !(c.scaling_factor > 0 && std::isfinite(c.scaling_factor))) {
    json.fail("scaling_factor", "a positive number");
  }
  if (json.read_nullable("shift_factor", c.shift_factor) && !std::isfinite(c.shift_factor)) {
    json.fail("shift_factor", "a number or null");
  }
  json.read("use_post_quant_conv", c.use_post_quant_conv);
  json.read("mid_block_add_attention", c.mid_block_add_attention);
  if (const auto act = json.get<std::string>("act_fn"); act && *act != "silu" && *act != "swish") {
    json.fail("act_fn", "\"silu\" (the only activation supported)", ErrorCode::kUnsupported);
  }
  if (const auto types = json.get<std::vector<std::string>>("up_block_types", "a list of block type names")) {
    if (types->size() != c.block_out_channels.size()) {
      json.fail("up_block_types", fmt::format("a list of {} block type names (one per block_out_channels entry)",
                                              c.block_out_channels.size()));
    }
    for (const auto& type : *types) {
      if (type != "UpDecoderBlock2D") {
        json.fail("up_block_types", "a list of \"UpDecoderBlock2D\" (the only block type supported)", ErrorCode::kUnsupported);
      }
    }
  }
  json.check("norm_type", [](const nlohmann::json& v) { return v == "group"; }, "\"group\" (the only norm supported)",
             ErrorCode::kUnsupported);
  json.finish();
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: {}", origin, e.message()));
  }
  return c;
}

VAEConfig VAEConfig::from_json_file(const std::string& path) {
  return from_json_string(io_detail::read_config_file(path, "VAE"), path);
}

const char* to_string(VAENaming naming) noexcept {
  switch (naming) {
    case VAENaming::kDiffusers: return "diffusers";
    case VAENaming::kDiffusersDeprecated: return "diffusers (deprecated attention names)";
    case VAENaming::kLdm: return "LDM/CompVis";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// Modules (registered under the diffusers names)
// ---------------------------------------------------------------------------------------------

namespace detail {

constexpr double kVaeEps = 1e-6;

/// GroupNorm with statistics in fp32 for half inputs; returns the input's dtype.
at::Tensor vae_group_norm(const at::Tensor& x, const torch::nn::GroupNorm& gn) {
  const auto& o = gn->options;
  if (is_half(x.scalar_type())) {
    return at::group_norm(x.to(at::kFloat), o.num_groups(), gn->weight.to(at::kFloat), gn->bias.to(at::kFloat), o.eps())
        .to(x.scalar_type());
  }
  return at::group_norm(x, o.num_groups(), gn->weight, gn->bias, o.eps());
}

torch::nn::GroupNorm vae_norm(int64_t groups, int64_t channels) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels).eps(kVaeEps).affine(true));
}

torch::nn::Conv2d vae_conv(int64_t in, int64_t out, int64_t kernel) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).padding(kernel / 2).bias(true));
}

/// diffusers ResnetBlock2D without time embedding: norm1, conv1, norm2, conv2, conv_shortcut.
class VaeResnetBlockImpl : public torch::nn::Module {
 public:
  VaeResnetBlockImpl(int64_t in, int64_t out, int64_t groups) {
    norm1_ = register_module("norm1", vae_norm(groups, in));
    conv1_ = register_module("conv1", vae_conv(in, out, 3));
    norm2_ = register_module("norm2", vae_norm(groups, out));
    conv2_ = register_module("conv2", vae_conv(out, out, 3));
    if (in != out) conv_shortcut_ = register_module("conv_shortcut", vae_conv(in, out, 1));
  }
  at::Tensor forward(const at::Tensor& x) {
    auto h = conv1_->forward(at::silu(vae_group_norm(x, norm1_)));
    h = conv2_->forward(at::silu(vae_group_norm(h, norm2_)));
    const auto shortcut = conv_shortcut_ ? conv_shortcut_->forward(x) : x;
    return shortcut + h;
  }

 private:
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv_shortcut_{nullptr};
};
TORCH_MODULE(VaeResnetBlock);

/// Single-head self-attention over all spatial positions with a residual (diffusers Attention
/// with `_from_deprecated_attn_block`): group_norm, to_q, to_k, to_v, to_out.0.
class VaeAttentionImpl : public torch::nn::Module {
 public:
  VaeAttentionImpl(int64_t channels, int64_t groups) : channels_(channels) {
    group_norm_ = register_module("group_norm", vae_norm(groups, channels));
    to_q_ = register_module("to_q", torch::nn::Linear(channels, channels));
    to_k_ = register_module("to_k", torch::nn::Linear(channels, channels));
    to_v_ = register_module("to_v", torch::nn::Linear(channels, channels));
    to_out_ = torch::nn::Linear(channels, channels);
    auto out_list = torch::nn::ModuleList();
    out_list->push_back(to_out_);
    register_module("to_out", out_list);
  }
  at::Tensor forward(const at::Tensor& x) {
    const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    auto tokens = vae_group_norm(x, group_norm_).reshape({b, c, h * w}).transpose(1, 2);  // [B, HW, C]
    auto q = to_q_->forward(tokens).unsqueeze(1);  // [B, 1, HW, C]
    auto k = to_k_->forward(tokens).unsqueeze(1);  // [B, 1, HW, C]
    auto v = to_v_->forward(tokens).unsqueeze(1);  // [B, 1, HW, C]
    // The explicit backend computes the softmax in fp32 for half inputs (diffusers upcasts it).
    const auto backend = is_half(x.scalar_type()) ? nn::AttentionBackend::kExplicit : nn::AttentionBackend::kAuto;
    auto a = nn::attention(q, k, v, std::nullopt, 1.0 / std::sqrt(static_cast<double>(channels_)), backend)
                 .squeeze(1);  // [B, HW, C]
    a = to_out_->forward(a).transpose(1, 2).reshape({b, c, h, w});  // [B, C, H, W]
    return a + x;
  }

 private:
  int64_t channels_;
  torch::nn::GroupNorm group_norm_{nullptr};
  torch::nn::Linear to_q_{nullptr}, to_k_{nullptr}, to_v_{nullptr}, to_out_{nullptr};
};
TORCH_MODULE(VaeAttention);

/// Nearest-neighbour x2 then a 3x3 conv (diffusers Upsample2D).
class VaeUpsampleImpl : public torch::nn::Module {
 public:
  explicit VaeUpsampleImpl(int64_t channels) { conv_ = register_module("conv", vae_conv(channels, channels, 3)); }
  at::Tensor forward(const at::Tensor& x) {
    // Nearest upsampling copies values, so running it in fp32 for bf16 is exact (older kernels
    // lack bf16).
    const auto dtype = x.scalar_type();
    auto in = dtype == at::kBFloat16 ? x.to(at::kFloat) : x;
    std::vector<int64_t> size{x.size(2) * 2, x.size(3) * 2};
    auto up = at::upsample_nearest2d(in, size).to(dtype);  // [B, C, 2H, 2W]
    return conv_->forward(up);
  }

 private:
  torch::nn::Conv2d conv_{nullptr};
};
TORCH_MODULE(VaeUpsample);

/// diffusers UpDecoderBlock2D: resnets.{0..n-1} then optionally upsamplers.0.
class VaeUpBlockImpl : public torch::nn::Module {
 public:
  VaeUpBlockImpl(int64_t in, int64_t out, int64_t num_resnets, bool add_upsample, int64_t groups) {
    auto resnets = torch::nn::ModuleList();
    for (int64_t j = 0; j < num_resnets; ++j) {
      resnets_.push_back(VaeResnetBlock(j == 0 ? in : out, out, groups));
      resnets->push_back(resnets_.back());
    }
    register_module("resnets", resnets);
    if (add_upsample) {
      upsample_ = VaeUpsample(out);
      auto ups = torch::nn::ModuleList();
      ups->push_back(upsample_);
      register_module("upsamplers", ups);
    }
  }
  at::Tensor forward(at::Tensor x) {
    for (auto& r : resnets_) x = r->forward(x);
    return upsample_ ? upsample_->forward(x) : x;
  }

 private:
  std::vector<VaeResnetBlock> resnets_;
  VaeUpsample upsample_{nullptr};
};
TORCH_MODULE(VaeUpBlock);

/// diffusers UNetMidBlock2D: resnets.0, attentions.0, resnets.1.
class VaeMidBlockImpl : public torch::nn::Module {
 public:
  VaeMidBlockImpl(int64_t channels, int64_t groups, bool add_attention) {
    if (add_attention) {
      attention_ = VaeAttention(channels, groups);
      auto attentions = torch::nn::ModuleList();
      attentions->push_back(attention_);
      register_module("attentions", attentions);
    }
    resnet0_ = VaeResnetBlock(channels, channels, groups);
    resnet1_ = VaeResnetBlock(channels, channels, groups);
    auto resnets = torch::nn::ModuleList();
    resnets->push_back(resnet0_);
    resnets->push_back(resnet1_);
    register_module("resnets", resnets);
  }
  at::Tensor forward(const at::Tensor& x) {
    auto h = resnet0_->forward(x);
    if (attention_) h = attention_->forward(h);
    return resnet1_->forward(h);
  }

 private:
  VaeAttention attention_{nullptr};
  VaeResnetBlock resnet0_{nullptr}, resnet1_{nullptr};
};
TORCH_MODULE(VaeMidBlock);

/// The `decoder.` module: conv_in, mid_block, up_blocks, conv_norm_out, conv_out.
class VAEDecoderStackImpl : public torch::nn::Module {
 public:
  explicit VAEDecoderStackImpl(const VAEConfig& c) {
    const auto& boc = c.block_out_channels;
    const int64_t n = static_cast<int64_t>(boc.size());
    const int64_t g = c.norm_num_groups;
    conv_in_ = register_module("conv_in", vae_conv(c.latent_channels, boc.back(), 3));
    mid_block_ = register_module("mid_block", VaeMidBlock(boc.back(), g, c.mid_block_add_attention));
    auto ups = torch::nn::ModuleList();
    int64_t in = boc.back();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t out = boc[static_cast<size_t>(n - 1 - i)];
      up_blocks_.push_back(VaeUpBlock(in, out, c.layers_per_block + 1, i + 1 < n, g));
      ups->push_back(up_blocks_.back());
      in = out;
    }
    register_module("up_blocks", ups);
    conv_norm_out_ = register_module("conv_norm_out", vae_norm(g, boc.front()));
    conv_out_ = register_module("conv_out", vae_conv(boc.front(), c.out_channels, 3));
  }
  at::Tensor forward(const at::Tensor& z) {
    auto h = conv_in_->forward(z);
    h = mid_block_->forward(h);
    for (auto& up : up_blocks_) h = up->forward(h);
    h = at::silu(vae_group_norm(h, conv_norm_out_));
    return conv_out_->forward(h);
  }
  const at::Tensor& reference_weight() const { return conv_in_->weight; }

 private:
  torch::nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  VaeMidBlock mid_block_{nullptr};
  std::vector<VaeUpBlock> up_blocks_;
  torch::nn::GroupNorm conv_norm_out_{nullptr};
};

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Weight names
// ---------------------------------------------------------------------------------------------

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

/// A module key's name in a file of the given naming (without the file's prefix); `reshape`
/// tells whether the file stores it as a 1x1 conv weight.
struct FileKey {
  std::string name;
  bool reshape = false;
};

FileKey file_key(const std::string& module_key, VAENaming naming, int64_t n_blocks) {
  if (naming == VAENaming::kDiffusers || !starts_with(module_key, "decoder.")) return {module_key, false};
  const auto p = io_detail::split(module_key, '.');  // decoder.<...>
  if (naming == VAENaming::kDiffusersDeprecated) {
    // decoder.mid_block.attentions.0.{to_q,to_k,to_v,to_out.0}.{weight,bias}
    if (p.size() >= 6 && p[1] == "mid_block" && p[2] == "attentions") {
      const std::string head = "decoder.mid_block.attentions." + p[3] + ".";
      if (p[4] == "to_q") return {head + "query." + p.back(), false};
      if (p[4] == "to_k") return {head + "key." + p.back(), false};
      if (p[4] == "to_v") return {head + "value." + p.back(), false};
      if (p[4] == "to_out") return {head + "proj_attn." + p.back(), false};
    }
    return {module_key, false};
  }
  // LDM/CompVis.
  auto resnet_tail = [&](size_t from) {
    std::string t = io_detail::join(p, '.', from);
    if (starts_with(t, "conv_shortcut.")) t = "nin_shortcut." + t.substr(std::string("conv_shortcut.").size());
    return t;
  };
  if (p[1] == "conv_norm_out") return {"decoder.norm_out." + p.back(), false};
  if (p[1] == "mid_block" && p.size() >= 5) {
    if (p[2] == "resnets") return {"decoder.mid.block_" + std::to_string(std::stoi(p[3]) + 1) + "." + resnet_tail(4), false};
    if (p[2] == "attentions") {
      const bool weight = p.back() == "weight";
      if (p[4] == "group_norm") return {"decoder.mid.attn_1.norm." + p.back(), false};
      if (p[4] == "to_q") return {"decoder.mid.attn_1.q." + p.back(), weight};
      if (p[4] == "to_k") return {"decoder.mid.attn_1.k." + p.back(), weight};
      if (p[4] == "to_v") return {"decoder.mid.attn_1.v." + p.back(), weight};
      if (p[4] == "to_out") return {"decoder.mid.attn_1.proj_out." + p.back(), weight};
    }
  }
  if (p[1] == "up_blocks" && p.size() >= 6) {
    const std::string level = std::to_string(n_blocks - 1 - std::stoll(p[2]));
    if (p[3] == "resnets") return {"decoder.up." + level + ".block." + p[4] + "." + resnet_tail(5), false};
    if (p[3] == "upsamplers") return {"decoder.up." + level + ".upsample." + io_detail::join(p, '.', 5), false};
  }
  return {module_key, false};
}

/// Architecture-level names, written in diffusers naming and translated per file.
std::string up_resnet_conv1(int64_t i, int64_t j) {
  return "decoder.up_blocks." + std::to_string(i) + ".resnets." + std::to_string(j) + ".conv1.weight";
}

}  // namespace

std::pair<VAENaming, std::string> AutoencoderKLDecoderImpl::detect_naming(const WeightFile& file) {
  static const std::string anchor = "decoder.conv_in.weight";
  std::vector<std::string> prefixes;
  for (const auto& name : file.names()) {
    if (name.size() < anchor.size() || name.compare(name.size() - anchor.size(), anchor.size(), anchor) != 0) continue;
    std::string prefix = name.substr(0, name.size() - anchor.size());
    if (!prefix.empty() && prefix.back() != '.') continue;
    prefixes.push_back(prefix);
  }
  if (prefixes.empty()) {
    throw Error(ErrorCode::kNotFound, "VAE weights '" + file.path() + "': no tensor '" + anchor +
                                          "' (under any prefix); not a VAE decoder file?");
  }
  if (prefixes.size() > 1) {
    std::string list;
    for (const auto& p : prefixes) list += (list.empty() ? "'" : ", '") + p + "'";
    throw Error(ErrorCode::kFormat, "VAE weights '" + file.path() + "': several VAE decoders, under prefixes " + list);
  }
  const std::string& prefix = prefixes.front();
  VAENaming naming = VAENaming::kDiffusers;
  for (const auto& name : file.names()) {
    if (starts_with(name, prefix + "decoder.mid.") || starts_with(name, prefix + "decoder.up.")) {
      naming = VAENaming::kLdm;
      break;
    }
    if (starts_with(name, prefix + "decoder.mid_block.attentions.") &&
        (name.find(".query.") != std::string::npos || name.find(".proj_attn.") != std::string::npos)) {
      naming = VAENaming::kDiffusersDeprecated;
    }
  }
  return {naming, prefix};
}

VAEConfig VAEConfig::from_weights(const WeightFile& file, const VAEConfig& base) {
  const auto detected = AutoencoderKLDecoderImpl::detect_naming(file);
  const VAENaming naming = detected.first;
  const std::string& prefix = detected.second;
  // Count the up blocks first: LDM names depend on their number.
  int64_t n = 0;
  if (naming == VAENaming::kLdm) {
    while (file.contains(prefix + "decoder.up." + std::to_string(n) + ".block.0.conv1.weight")) ++n;
  } else {
    while (file.contains(prefix + up_resnet_conv1(n, 0))) ++n;
  }
  if (n == 0) {
    throw Error(ErrorCode::kNotFound, "VAE weights '" + file.path() + "': no tensor '" + prefix +
                                          file_key(up_resnet_conv1(0, 0), naming, 1).name + "'");
  }
  auto shape = [&](const std::string& module_key) -> std::vector<int64_t> {
    const std::string key = prefix + file_key(module_key, naming, n).name;
    if (!file.contains(key)) throw Error(ErrorCode::kNotFound, "VAE weights '" + file.path() + "': no tensor '" + key + "'");
    const auto& s = file.info(key).shape;
    if (s.size() != 4) {
      throw Error(ErrorCode::kShapeMismatch, "VAE weights '" + file.path() + "': tensor '" + key + "': shape " +
                                                 shape_string(s) + ", expected a 4-d conv weight");
    }
    return s;
  };
  VAEConfig c = base;
  c.block_out_channels.assign(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n; ++i) c.block_out_channels[static_cast<size_t>(n - 1 - i)] = shape(up_resnet_conv1(i, 0))[0];
  int64_t resnets = 0;
  while (file.contains(prefix + file_key(up_resnet_conv1(0, resnets), naming, n).name)) ++resnets;
  c.layers_per_block = resnets - 1;
  const auto conv_in = shape("decoder.conv_in.weight");
  c.latent_channels = conv_in[1];
  c.out_channels = shape("decoder.conv_out.weight")[0];
  c.use_post_quant_conv = file.contains(prefix + "post_quant_conv.weight");
  c.mid_block_add_attention =
      file.contains(prefix + file_key("decoder.mid_block.attentions.0.group_norm.weight", naming, n).name);
  return c;
}

// ---------------------------------------------------------------------------------------------
// AutoencoderKLDecoder
// ---------------------------------------------------------------------------------------------

AutoencoderKLDecoderImpl::AutoencoderKLDecoderImpl(const VAEConfig& config) : config_(config) {
  config_.validate();
  if (config_.use_post_quant_conv) {
    post_quant_conv_ = register_module("post_quant_conv", detail::vae_conv(config_.latent_channels, config_.latent_channels, 1));
  }
  decoder_ = register_module("decoder", std::make_shared<detail::VAEDecoderStackImpl>(config_));
}

at::Tensor AutoencoderKLDecoderImpl::decode(const at::Tensor& latents) {
  if (latents.dim() != 4 || latents.size(1) != config_.latent_channels) {
    throw Error(ErrorCode::kShapeMismatch, "AutoencoderKLDecoder::decode: latents of shape " + shape_string(latents.sizes()) +
                                               ", expected [B, " + std::to_string(config_.latent_channels) + ", h, w]");
  }
  c10::NoGradGuard no_grad;
  const auto& ref = decoder_->reference_weight();
  auto z = latents.to(ref.device(), ref.scalar_type());
  if (post_quant_conv_) z = post_quant_conv_->forward(z);
  return decoder_->forward(z);
}

LoadReport AutoencoderKLDecoderImpl::load(const WeightFile& file) {
  const auto [naming, prefix] = detect_naming(file);
  const int64_t n = static_cast<int64_t>(config_.block_out_channels.size());

  KeyMap map;
  std::set<std::string> used;
  std::vector<std::string> mismatches;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    const auto fk = file_key(item.key(), naming, n);
    const std::string key = prefix + fk.name;
    used.insert(key);
    if (fk.reshape) {
      map.reshape(item.key(), key);
    } else {
      map.rename(item.key(), key);
    }
    if (!file.contains(key)) continue;
    // Config-from-shapes check: name the first tensors whose shapes the config does not explain.
    const auto& found = file.info(key).shape;
    const auto expected = item.value().sizes().vec();
    bool ok = found == expected;
    if (!ok && fk.reshape && found.size() == 4 && found[2] == 1 && found[3] == 1) {
      ok = std::vector<int64_t>{found[0], found[1]} == expected;
    }
    if (!ok) mismatches.push_back("tensor '" + key + "': shape " + shape_string(found) + ", expected " + shape_string(expected));
  }
  if (!mismatches.empty()) {
    std::string msg = "VAE weights '" + file.path() + "' (" + to_string(naming) + " naming) do not fit the config: ";
    for (size_t i = 0; i < mismatches.size() && i < 8; ++i) msg += (i ? "; " : "") + mismatches[i];
    if (mismatches.size() > 8) msg += "; and " + std::to_string(mismatches.size() - 8) + " more";
    try {
      const auto file_config = VAEConfig::from_weights(file, config_);
      msg += ". The file's shapes describe " + describe(file_config) + "; the config has " + describe(config_);
    } catch (const Error&) {
      // No architecture could be read from the file: the tensor list above says enough.
    }
    throw Error(ErrorCode::kShapeMismatch, msg);
  }
  // Everything outside the decoder (encoder, quant_conv, a full checkpoint's UNet and text
  // encoder) is deliberately unused; inside it, unknown tensors stay errors.
  for (const auto& name : file.names()) {
    if (used.count(name)) continue;
    if (starts_with(name, prefix + "decoder.") || starts_with(name, prefix + "post_quant_conv.")) continue;
    map.ignore(name);
  }
  LoadOptions options;
  options.prefix = "";  // the map holds full file keys
  options.strict = true;
  return load_state_dict(*this, file, map, options);
}

at::Tensor decode_latents(AutoencoderKLDecoder& decoder, const at::Tensor& z) {
  const auto& c = decoder->config();
  auto scaled = z / c.scaling_factor;
  if (c.shift_factor != 0.0) scaled = scaled + c.shift_factor;
  return decoder->decode(scaled);
}

}  // namespace ditcache
