// PixArt-α backbone (PixArt-alpha `PixArt` / `PixArtMS` semantics, equal to diffusers'
// `PixArtTransformer2DModel`; models.md §2.2): modules, the forward pass with and without a cache
// context (sites as toca.md §2.1 lists them for PixArt), checkpoint loading, FLOPs.
#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/cache/context.h"
#include "ditcache/error.h"
#include "ditcache/flops.h"
#include "ditcache/io/state_dict.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/pixart.h"
#include "common/module_util.h"
#include "pixart/pixart_toca.h"

namespace ditcache {

namespace {

using detail::holder;
using detail::layer_norm;
using detail::t2i_modulate;

at::Tensor tile_rows(const at::Tensor& t, int64_t batch, const char* what) {
  return detail::tile_rows(t, batch, "PixArt", what);
}

std::string shape_or_nothing(const at::Tensor& t) { return t.defined() ? shape_string(t.sizes()) : std::string("nothing"); }

}  // namespace

// ---------------------------------------------------------------------------------------------
at::Tensor pixart_pos_embed(int64_t dim, int64_t gh, int64_t gw, int base_size, double lewei_scale) {
  if (dim % 4 != 0 || gh < 1 || gw < 1 || base_size < 1 || !(lewei_scale > 0)) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("PixArt position embedding: dim {} must be divisible by 4, grid {} x {}, "
                                                         "base size {} and lewei scale {} positive", dim, gh, gw, base_size, lewei_scale));
  }
  // Positions in float32, as numpy (original) and torch (diffusers) compute them:
  // arange / (size / base_size) / lewei_scale.
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  auto rows = at::arange(gh, f32).div(static_cast<double>(gh) / base_size).div(lewei_scale).to(at::kDouble);  // [gh]
  auto cols = at::arange(gw, f32).div(static_cast<double>(gw) / base_size).div(lewei_scale).to(at::kDouble);  // [gw]
  const int64_t quarter = dim / 4;
  auto omega = 1.0 / at::pow(10000.0, at::arange(quarter, f64) / static_cast<double>(quarter));  // [D/4]
  auto axis = [&](const at::Tensor& pos) {  // [n] -> [n, D/2] = [sin | cos]
    auto angles = at::outer(pos, omega);
    return at::cat({angles.sin(), angles.cos()}, 1);
  };
  // Token n = r * gw + c: the first half encodes the column, the second the row.
  auto col_emb = axis(cols).unsqueeze(0).expand({gh, gw, dim / 2});
  auto row_emb = axis(rows).unsqueeze(1).expand({gh, gw, dim / 2});
  return at::cat({col_emb, row_emb}, -1).reshape({gh * gw, dim}).to(at::kFloat);  // [N, D]
}

// ---------------------------------------------------------------------------------------------
PixArtBlockImpl::PixArtBlockImpl(const PixArtConfig& config) : config_(config) {
  const int C = config.hidden_size;
  scale_shift_table = register_parameter("scale_shift_table", at::randn({6, C}) / std::sqrt(static_cast<double>(C)));
  attn = register_module("attn", DiTAttention(C, config.num_heads));
  cross_attn = register_module("cross_attn", CrossAttention(C, config.num_heads));
  mlp = register_module("mlp", DiTMLP(C, config.mlp_hidden()));
}

at::Tensor PixArtBlockImpl::forward(const at::Tensor& x, const PixArtBlockContext& ctx, CacheContext* cache, int layer) {
  return run_block(cache, *ctx.info, BlockKind::kSpatial, layer, ctx.shape, x, [&](const at::Tensor& in, BlockRunner& sites) {
    return forward_sites(in, ctx, sites);
  });
}

at::Tensor PixArtBlockImpl::forward_sites(const at::Tensor& x, const PixArtBlockContext& ctx, BlockRunner& sites) {
  const int64_t B = ctx.shape.rows, C = x.size(-1);
  // adaLN-single: the block's table plus the shared t_block output; [B, 1, C] each.
  auto mod = (scale_shift_table.unsqueeze(0) + ctx.t_mlp.reshape({B, 6, C})).chunk(6, 1);

  // Self-attention on LN(x) modulated (pre-gate output cached). The norm runs inside the module
  // call, so a reused site costs nothing; a partial one takes the selected queries against every
  // token's keys and values.
  auto attn_out = sites.attention(SiteKind::kSelfAttention, x, [&](const at::Tensor& in, const at::Tensor& queries, at::Tensor* column_sums) {
    return attn->forward(t2i_modulate(layer_norm(in), mod[0], mod[1]), queries, column_sums);  // [B, n, C]
  });
  auto out = x + mod[2] * attn_out;

  // Cross-attention of the raw tokens to the captions (no norm, no gate): each token's output
  // depends only on that token, so any subset can be recomputed; the caption keys and values are
  // projected once per call.
  std::pair<at::Tensor, at::Tensor> kv;
  out = out + sites.attention(SiteKind::kCrossAttention, out, [&](const at::Tensor& all, const at::Tensor& queries, at::Tensor* probabilities) {
    auto rows = queries.defined() ? all.gather(1, queries.unsqueeze(-1).expand({B, queries.size(1), C})) : all;  // [B, n, C]
    if (!kv.first.defined()) kv = cross_attn->key_values(ctx.captions);
    return cross_attn->forward(rows, kv, ctx.key_mask, probabilities);
  });

  // MLP on LN(x) modulated (pre-gate output cached); LayerNorm is per token, so normalising the
  // selected rows equals selecting normalised rows.
  auto mlp_out = sites.token_wise(SiteKind::kMLP, out, [&](const at::Tensor& rows) {
    return mlp->forward(t2i_modulate(layer_norm(rows), mod[3], mod[4]));
  });
  return out + mod[5] * mlp_out;
}

// ---------------------------------------------------------------------------------------------
BackboneInfo backbone_info(const PixArtConfig& config) {
  BackboneInfo info;
  info.family = "PixArt";
  info.name = config.name;
  info.depth = config.depth;
  info.site_kinds = {SiteKind::kSelfAttention, SiteKind::kCrossAttention, SiteKind::kMLP};
  info.step_index_counts_down = false;  // DPM-Solver order
  info.block_flops = [config](BlockKind, const RunShape& shape, const SiteTokens& computed) {
    return pixart_block_flops(config, shape.rows, shape.tokens(), shape.context_tokens, computed.self_attention,
                              computed.cross_attention, computed.mlp);
  };
  info.toca = pixart_toca_profile();
  return info;
}

PixArtImpl::PixArtImpl(const PixArtConfig& config) : config_(config) {
  config_.validate();
  info_ = backbone_info(config_);
  const int C = config_.hidden_size, p = config_.patch_size;
  x_embedder = holder(*this, "x_embedder")
                   ->register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(config_.in_channels, C, p).stride(p)));
  auto t_mlp = holder(*holder(*this, "t_embedder"), "mlp");
  t_mlp0 = t_mlp->register_module("0", torch::nn::Linear(256, C));
  t_mlp2 = t_mlp->register_module("2", torch::nn::Linear(C, C));
  t_block = holder(*this, "t_block")->register_module("1", torch::nn::Linear(C, 6 * C));
  auto y_embedder = holder(*this, "y_embedder");
  y_embedding = y_embedder->register_buffer("y_embedding", at::randn({config_.model_max_length, config_.caption_channels}) /
                                                               std::sqrt(static_cast<double>(config_.caption_channels)));
  auto y_proj = holder(*y_embedder, "y_proj");
  y_fc1 = y_proj->register_module("fc1", torch::nn::Linear(config_.caption_channels, C));
  y_fc2 = y_proj->register_module("fc2", torch::nn::Linear(C, C));
  if (config_.micro_conditions) {
    const int S = C / 3;  // SizeEmbedder(hidden_size // 3)
    auto csize = holder(*holder(*this, "csize_embedder"), "mlp");
    csize_mlp0 = csize->register_module("0", torch::nn::Linear(256, S));
    csize_mlp2 = csize->register_module("2", torch::nn::Linear(S, S));
    auto ar = holder(*holder(*this, "ar_embedder"), "mlp");
    ar_mlp0 = ar->register_module("0", torch::nn::Linear(256, S));
    ar_mlp2 = ar->register_module("2", torch::nn::Linear(S, S));
  }
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int i = 0; i < config_.depth; ++i) blocks->push_back(PixArtBlock(config_));
  auto final_layer = holder(*this, "final_layer");
  final_scale_shift = final_layer->register_parameter("scale_shift_table", at::randn({2, C}) / std::sqrt(static_cast<double>(C)));
  final_linear = final_layer->register_module("linear", torch::nn::Linear(C, p * p * config_.out_channels()));
}

const at::Tensor& PixArtImpl::pos_embed(int64_t gh, int64_t gw) {
  const auto& w = final_linear->weight;
  if (!pos_cache_.defined() || pos_gh_ != gh || pos_gw_ != gw || pos_cache_.scalar_type() != w.scalar_type() ||
      pos_cache_.device() != w.device()) {
    pos_cache_ = pixart_pos_embed(config_.hidden_size, gh, gw, config_.base_size(), config_.lewei_scale).to(w.device(), w.scalar_type());
    pos_gh_ = gh;
    pos_gw_ = gw;
  }
  return pos_cache_;
}

RunShape pixart_run_shape(int64_t rows, bool cfg, int64_t gh, int64_t gw, int64_t caption_tokens) {
  RunShape shape;
  shape.rows = rows;
  shape.cfg = cfg;
  shape.grid_h = gh;
  shape.grid_w = gw;
  shape.context_tokens = caption_tokens;
  return shape;
}

RunShape PixArtImpl::run_shape(const BackboneInputs& in) const {
  const int64_t p = config_.patch_size;
  const auto& y = in.y;
  return pixart_run_shape(in.x.defined() ? in.x.size(0) : 0, false, in.x.defined() ? in.x.size(2) / p : 0,
                          in.x.defined() ? in.x.size(3) / p : 0, y.defined() && y.dim() >= 3 ? y.size(-2) : 0);
}

at::Tensor PixArtImpl::forward(const BackboneInputs& in, CacheContext* cache) {
  reject_unused_inputs(in, "PixArt", {"mask", "resolution", "aspect_ratio"});
  const auto& cfg = config_;
  const int64_t p = cfg.patch_size, C = cfg.hidden_size;
  auto shape_error = [&](const std::string& what) { return Error(ErrorCode::kShapeMismatch, "PixArt forward: " + what); };
  const auto& x_in = in.x;
  if (!x_in.defined() || x_in.dim() != 4 || x_in.size(1) != cfg.in_channels || x_in.size(2) < p || x_in.size(3) < p ||
      x_in.size(2) % p != 0 || x_in.size(3) % p != 0) {
    throw shape_error(fmt::format("x must be [B, {}, h, w] with h and w multiples of the patch size {}, found {}", cfg.in_channels, p,
                                  shape_or_nothing(x_in)));
  }
  const int64_t B = x_in.size(0), gh = x_in.size(2) / p, gw = x_in.size(3) / p;
  if (!in.timestep.defined() || in.timestep.dim() != 1 || in.timestep.size(0) != B) {
    throw shape_error(fmt::format("timestep must be [{}], found {}", B, shape_or_nothing(in.timestep)));
  }
  at::Tensor y = in.y;
  if (y.defined() && y.dim() == 4 && y.size(1) == 1) y = y.squeeze(1);
  if (!y.defined() || y.dim() != 3 || y.size(0) != B || y.size(2) != cfg.caption_channels || y.size(1) < 1) {
    throw shape_error(fmt::format("y must be [{}, L, {}] (or [{}, 1, L, {}]), found {}", B, cfg.caption_channels, B,
                                  cfg.caption_channels, shape_or_nothing(in.y)));
  }
  const int64_t L = y.size(1);
  if (cfg.micro_conditions) {
    if (!in.resolution.defined() || !in.aspect_ratio.defined()) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("PixArt forward: '{}' has micro-conditions (PixArtMS): resolution [B', 2] "
                                                           "and aspect_ratio [B'] are required", cfg.name));
    }
    if (in.resolution.dim() != 2 || in.resolution.size(1) != 2) {
      throw shape_error(fmt::format("resolution must be [B', 2] (height, width), found {}", shape_string(in.resolution.sizes())));
    }
    const auto& ar = in.aspect_ratio;
    if (!(ar.dim() == 1 || (ar.dim() == 2 && ar.size(1) == 1))) {
      throw shape_error(fmt::format("aspect_ratio must be [B'] or [B', 1], found {}", shape_string(ar.sizes())));
    }
  } else if (in.resolution.defined() || in.aspect_ratio.defined()) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("PixArt forward: '{}' has no micro-conditions; resolution and aspect_ratio "
                                                         "are only for PixArtMS models", cfg.name));
  }
  const auto& w = final_linear->weight;
  const auto dtype = w.scalar_type();
  const auto device = w.device();

  // Caption mask -> additive key mask [B, 1, 1, L] (diffusers adds -10000 instead of -inf: the
  // same probabilities in fp32, where exp underflows to 0 either way).
  auto key_mask = at::zeros({B, 1, 1, L}, at::TensorOptions().dtype(at::kFloat).device(device));
  if (in.mask.defined()) {
    auto m = in.mask;
    if (m.dim() == 4 && m.size(1) == 1 && m.size(2) == 1) m = m.reshape({m.size(0), m.size(3)});  // the original's [B, 1, 1, L]
    if (m.dim() != 2 || m.size(1) != L) throw shape_error(fmt::format("mask must be [B', {}], found {}", L, shape_string(in.mask.sizes())));
    auto valid = tile_rows(m, B, "mask").to(device).ne(0);  // [B, L]
    if (valid.sum(1).eq(0).any().item<bool>()) {
      throw Error(ErrorCode::kInvalidArgument, "PixArt forward: a caption mask row has no valid token (T5 masks include EOS)");
    }
    key_mask.masked_fill_(valid.logical_not().view({B, 1, 1, L}), -std::numeric_limits<float>::infinity());
  }

  // Patch tokens plus the sin-cos table of this grid.
  auto tokens = x_embedder->forward(x_in.to(device, dtype)).flatten(2).transpose(1, 2);  // [B, N, C], row-major patches
  tokens = tokens + pos_embed(gh, gw);

  // Conditioning: timestep (+ PixArtMS size and aspect embeddings), the shared t_block.
  auto sinusoid = [&](const at::Tensor& v) { return timestep_features(v.to(device, at::kFloat), 256, 128).to(dtype); };
  auto t = t_mlp2->forward(at::silu(t_mlp0->forward(sinusoid(in.timestep))));  // [B, C]
  if (cfg.micro_conditions) {
    // Height and width each through the shared size MLP, then concatenated: [h_emb | w_emb | ar_emb].
    auto hw = tile_rows(in.resolution, B, "resolution").reshape({B * 2});                                   // [B*2]
    auto size_emb = csize_mlp2->forward(at::silu(csize_mlp0->forward(sinusoid(hw)))).reshape({B, -1});     // [B, 2C/3]
    auto ar = tile_rows(in.aspect_ratio.reshape({in.aspect_ratio.size(0), 1}), B, "aspect_ratio").reshape({B});
    auto ar_emb = ar_mlp2->forward(at::silu(ar_mlp0->forward(sinusoid(ar))));                               // [B, C/3]
    t = t + at::cat({size_emb, ar_emb}, 1);
  }
  PixArtBlockContext ctx;
  ctx.info = &info_;
  ctx.shape = pixart_run_shape(B, false, gh, gw, L);
  ctx.t_mlp = t_block->forward(at::silu(t));                                                 // [B, 6C]
  ctx.captions = y_fc2->forward(at::gelu(y_fc1->forward(y.to(device, dtype)), "tanh"));     // [B, L, C]
  ctx.key_mask = key_mask;

  for (size_t i = 0; i < blocks->size(); ++i) {
    tokens = blocks[i]->as<PixArtBlockImpl>()->forward(tokens, ctx, cache, static_cast<int>(i));
  }

  // T2IFinalLayer: modulation from the raw t (size embeddings included), not from t_block.
  auto ss = (final_scale_shift.unsqueeze(0) + t.view({B, 1, C})).chunk(2, 1);  // shift, scale [B, 1, C]
  auto out = final_linear->forward(t2i_modulate(layer_norm(tokens), ss[0], ss[1]));  // [B, N, p*p*Cout]

  // Unpatchify: (p_row, p_col, c) per token -> [B, Cout, gh*p, gw*p].
  const int64_t Co = cfg.out_channels();
  out = out.reshape({B, gh, gw, p, p, Co}).permute({0, 5, 1, 3, 2, 4}).reshape({B, Co, gh * p, gw * p});
  return out.to(at::kFloat);
}

void PixArtImpl::load(const WeightFile& file) {
  const auto ckpt = detect_pixart_checkpoint(file);
  // Heads are not in the shapes; 1 always divides, so the check below compares the rest.
  const auto found = PixArtConfig::from_weights(file, 1);
  auto check = [&](const char* field, const std::string& expected, const std::string& got, const std::string& note = "") {
    if (expected != got) {
      throw Error(ErrorCode::kShapeMismatch, fmt::format("{}: the weights do not fit config '{}': {}: expected {}, found {}{}", file.path(),
                                                         config_.name, field, expected, got, note));
    }
  };
  auto str = [](auto v) { return fmt::format("{}", v); };
  check("depth", str(config_.depth), str(found.depth));
  check("hidden_size", str(config_.hidden_size), str(found.hidden_size));
  check("patch_size", str(config_.patch_size), str(found.patch_size));
  check("in_channels", str(config_.in_channels), str(found.in_channels));
  check("out_channels", str(config_.out_channels()), str(found.out_channels()));
  check("caption_channels", str(config_.caption_channels), str(found.caption_channels));
  check("mlp hidden size", str(config_.mlp_hidden()), str(found.mlp_hidden()));
  check("micro_conditions", str(config_.micro_conditions), str(found.micro_conditions));
  const auto& P = ckpt.prefix;
  KeyMap map;
  if (ckpt.layout == PixArtLayout::kDiffusers) {
    map = pixart_diffusers_key_map(config_);
  } else {
    if (file.contains(P + "y_embedder.y_embedding")) check("model_max_length", str(config_.model_max_length), str(found.model_max_length));
    // The fixed-size PixArt adds its stored table; it must be the one this config computes
    // (PixArtMS recomputes the table every call and never reads it).
    if (!config_.micro_conditions && file.contains(P + "pos_embed")) {
      auto stored = file.load(P + "pos_embed").to(at::kFloat);
      if (stored.abs().max().item<float>() > 0) {
        const std::string note = " (from the stored pos_embed)";
        check("input_size", str(config_.input_size), str(found.input_size), note);
        check("lewei_scale", str(config_.lewei_scale), str(found.lewei_scale), note);
        const auto side = config_.base_size();
        const double diff = (stored.reshape({side * side, config_.hidden_size}) -
                             pixart_pos_embed(config_.hidden_size, side, side, side, config_.lewei_scale))
                                .abs()
                                .max()
                                .item<double>();
        if (diff > 1e-4) {
          throw Error(ErrorCode::kShapeMismatch,
                      fmt::format("{}: the stored pos_embed differs by {} from the sin-cos table of input_size {} and lewei_scale {}",
                                  file.path(), diff, config_.input_size, config_.lewei_scale));
        }
      }
    }
    map.ignore("pos_embed");
    map.optional("y_embedder.y_embedding");
  }
  LoadOptions options;
  options.prefix = P;
  const auto report = load_state_dict(*this, file, map, options);
  has_null_caption_ = std::find(report.defaulted.begin(), report.defaulted.end(), "y_embedder.y_embedding") == report.defaulted.end();
  pos_cache_ = at::Tensor();
}

// ---------------------------------------------------------------------------------------------
double pixart_block_flops(const PixArtConfig& config, int64_t rows, int64_t tokens, int64_t caption_tokens,
                          int64_t attn_queries, int64_t cross_queries, int64_t mlp_tokens) {
  const int64_t C = config.hidden_size, H = config.num_heads;
  double f = 0;
  if (attn_queries > 0) f += flops::layer_norm(rows, tokens, C) + flops::attention(rows, attn_queries, tokens, C, H);
  if (cross_queries > 0) f += flops::attention(rows, cross_queries, caption_tokens, C, H);
  if (mlp_tokens > 0) f += flops::layer_norm(rows, mlp_tokens, C) + flops::mlp(rows, mlp_tokens, C, config.mlp_hidden());
  return f;
}

}  // namespace ditcache
