// STDiT3, the OpenSora 1.2 backbone (models.md §3.3): modules, the forward pass with and without
// a cache context, and checkpoint loading.
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/cache/context.h"
#include "ditcache/error.h"
#include "ditcache/flops.h"
#include "ditcache/io/state_dict.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/dit.h"
#include "ditcache/models/stdit3.h"
#include "nn/attention.h"
#include "common/module_util.h"
#include "opensora/stdit3_toca.h"

namespace ditcache {

namespace {

using detail::holder;
using detail::layer_norm;
using detail::t2i_modulate;

at::Tensor tile_rows(const at::Tensor& t, int64_t batch, const char* what) {
  return detail::tile_rows(t, batch, "STDiT3", what);
}

// LlamaRMSNorm over the last dim in fp32, cast back before the weight.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight) {
  auto h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, true) + 1e-6);
  return weight * h.to(x.scalar_type());
}

// Per-frame choice between the modulation of t (x_mask true) and of t0, for tokens [B, T*S, C].
at::Tensor select_frames(const at::Tensor& frame_is_cond, const at::Tensor& with_t, const at::Tensor& with_t0, int64_t T) {
  const auto B = with_t.size(0), C = with_t.size(-1);
  auto a = with_t.reshape({B, T, -1, C});
  auto b = with_t0.reshape({B, T, -1, C});
  return at::where(frame_is_cond.unsqueeze(-1), a, b).reshape({B, -1, C});
}

}  // namespace

// ---------------------------------------------------------------------------------------------
at::Tensor opensora_pos_embed(int64_t dim, int64_t gh, int64_t gw, double height, double width, int input_sq_size) {
  // float32 arithmetic in the reference's order: arange / scale * (base_size / size).
  const double scale = std::sqrt(height * width) / input_sq_size;
  const auto base_size = static_cast<int64_t>(std::nearbyint(std::sqrt(static_cast<double>(gh * gw))));
  auto opts = at::TensorOptions().dtype(at::kFloat);
  auto rows = at::arange(gh, opts).div(scale).mul(static_cast<double>(base_size) / gh);
  auto cols = at::arange(gw, opts).div(scale).mul(static_cast<double>(base_size) / gw);
  const int64_t half = dim / 2;
  auto inv_freq = 1.0 / at::pow(10000.0, at::arange(0, half, 2, opts) / static_cast<double>(half));  // [dim/4]
  auto embed = [&](const at::Tensor& pos) {
    auto angles = at::outer(pos, inv_freq);
    return at::cat({angles.sin(), angles.cos()}, -1);  // [n, dim/2], sin first
  };
  // Token (r, c) = concat(embed(col c), embed(row r)), row-major.
  auto col_part = embed(cols).unsqueeze(0).expand({gh, gw, half});
  auto row_part = embed(rows).unsqueeze(1).expand({gh, gw, half});
  return at::cat({col_part, row_part}, -1).reshape({gh * gw, dim});
}

at::Tensor rope_angles(const at::Tensor& freqs, int64_t length) {
  auto positions = at::arange(length, freqs.options());
  return at::outer(positions, freqs).repeat_interleave(2, -1);  // [L, 2F]: theta0, theta0, theta1, theta1, ...
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& angles) {
  // rotate pairs: (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)
  auto pairs = x.unflatten(-1, {-1, 2});
  auto rotated = at::stack({-pairs.select(-1, 1), pairs.select(-1, 0)}, -1).flatten(-2);
  auto a = angles.to(x.scalar_type());
  return x * a.cos() + rotated * a.sin();
}

// ---------------------------------------------------------------------------------------------
STDiT3AttentionImpl::STDiT3AttentionImpl(const STDiT3Config& config, bool rope) : num_heads(config.num_heads), rope(rope) {
  const int C = config.hidden_size;
  qkv = register_module("qkv", torch::nn::Linear(C, 3 * C));
  proj = register_module("proj", torch::nn::Linear(C, C));
  if (config.qk_norm) {
    q_norm = holder(*this, "q_norm")->register_parameter("weight", at::ones({config.head_dim()}));
    k_norm = holder(*this, "k_norm")->register_parameter("weight", at::ones({config.head_dim()}));
  }
}

at::Tensor STDiT3AttentionImpl::forward(const at::Tensor& x, const at::Tensor& angles, at::Tensor* column_sums) {
  const int64_t R = x.size(0), L = x.size(1), C = x.size(2), hd = C / num_heads;
  auto parts = qkv->forward(x).reshape({R, L, 3, num_heads, hd}).permute({2, 0, 3, 1, 4});  // [3, R, H, L, hd]
  auto q = parts[0], k = parts[1], v = parts[2];
  if (q_norm.defined()) {
    q = rms_norm(q, q_norm);
    k = rms_norm(k, k_norm);
  }
  if (rope) {
    q = apply_rope(q, angles);
    k = apply_rope(k, angles);
  }
  at::Tensor out;
  if (column_sums) {
    auto probs = at::matmul(q.to(at::kFloat), k.to(at::kFloat).transpose(-2, -1)).mul(1.0 / std::sqrt(static_cast<double>(hd))).softmax(-1);
    *column_sums = probs.mean(1).sum(1);  // [R, L]
    out = at::matmul(probs.to(v.scalar_type()), v);
  } else {
    out = nn::attention(q, k, v);
  }
  return proj->forward(out.transpose(1, 2).reshape({R, L, C}));
}

CrossAttentionImpl::CrossAttentionImpl(int hidden_size, int heads) : num_heads(heads) {
  q_linear = register_module("q_linear", torch::nn::Linear(hidden_size, hidden_size));
  kv_linear = register_module("kv_linear", torch::nn::Linear(hidden_size, 2 * hidden_size));
  proj = register_module("proj", torch::nn::Linear(hidden_size, hidden_size));
}

std::pair<at::Tensor, at::Tensor> CrossAttentionImpl::key_values(const at::Tensor& captions) {
  const int64_t B = captions.size(0), L = captions.size(1), C = captions.size(2);
  auto kv = kv_linear->forward(captions).reshape({B, L, 2, num_heads, C / num_heads}).permute({2, 0, 3, 1, 4});
  return {kv[0], kv[1]};
}

at::Tensor CrossAttentionImpl::forward(const at::Tensor& x, const std::pair<at::Tensor, at::Tensor>& kv, const at::Tensor& key_mask,
                                      at::Tensor* probabilities) {
  const int64_t B = x.size(0), n = x.size(1), C = x.size(2), hd = C / num_heads;
  auto q = q_linear->forward(x).reshape({B, n, num_heads, hd}).transpose(1, 2);
  at::Tensor out;
  if (probabilities) {
    auto scores = at::matmul(q.to(at::kFloat), kv.first.to(at::kFloat).transpose(-2, -1)) / std::sqrt(static_cast<double>(hd));
    auto probs = (scores + key_mask).softmax(-1);  // [B, H, n, L]
    *probabilities = probs.mean(1);
    out = at::matmul(probs.to(kv.second.scalar_type()), kv.second);
  } else {
    out = nn::attention(q, kv.first, kv.second, key_mask.to(q.scalar_type()));
  }
  return proj->forward(out.transpose(1, 2).reshape({B, n, C}));
}

STDiT3MLPImpl::STDiT3MLPImpl(int hidden_size, int mlp_hidden) {
  fc1 = register_module("fc1", torch::nn::Linear(hidden_size, mlp_hidden));
  fc2 = register_module("fc2", torch::nn::Linear(mlp_hidden, hidden_size));
}

at::Tensor STDiT3MLPImpl::forward(const at::Tensor& x) { return fc2->forward(at::gelu(fc1->forward(x), "tanh")); }

// ---------------------------------------------------------------------------------------------
STDiT3BlockImpl::STDiT3BlockImpl(const STDiT3Config& config, BlockKind block_kind) : kind(block_kind), config_(config) {
  const int C = config.hidden_size;
  scale_shift_table = register_parameter("scale_shift_table", at::randn({6, C}) / std::sqrt(static_cast<double>(C)));
  attn = register_module("attn", STDiT3Attention(config, block_kind == BlockKind::kTemporal));
  cross_attn = register_module("cross_attn", CrossAttention(C, config.num_heads));
  mlp = register_module("mlp", STDiT3MLP(C, config.mlp_hidden()));
}

at::Tensor STDiT3BlockImpl::self_attention(const at::Tensor& h, const STDiT3BlockContext& ctx, const at::Tensor& queries,
                                           at::Tensor* column_sums) {
  const int64_t B = ctx.batch, T = ctx.frames, S = ctx.tokens, C = h.size(-1);
  at::Tensor out;
  if (kind == BlockKind::kSpatial) {
    // Each frame's S tokens attend to each other.
    out = attn->forward(h.reshape({B * T, S, C}), {}, column_sums).reshape({B, T * S, C});
    if (column_sums) *column_sums = column_sums->reshape({B, T * S});
  } else {
    // Each location's T frames attend to each other, with RoPE over the frame index.
    auto seq = h.reshape({B, T, S, C}).transpose(1, 2).reshape({B * S, T, C});
    out = attn->forward(seq, ctx.rope_angles, column_sums).reshape({B, S, T, C}).transpose(1, 2).reshape({B, T * S, C});
    if (column_sums) *column_sums = column_sums->reshape({B, S, T}).transpose(1, 2).reshape({B, T * S});
  }
  // A partial update needs the selected queries only; attention within frames (or locations) is
  // computed whole and gathered (ToCa for OpenSora never recomputes self-attention partially).
  if (queries.defined()) out = out.gather(1, queries.unsqueeze(-1).expand({B, queries.size(1), C}));
  return out;
}

at::Tensor STDiT3BlockImpl::forward(const at::Tensor& x, const STDiT3BlockContext& ctx, CacheContext* cache, int layer) {
  return run_block(cache, *ctx.info, kind, layer, ctx.shape, x, [&](const at::Tensor& in, BlockRunner& sites) {
    return forward_sites(in, ctx, sites);
  });
}

at::Tensor STDiT3BlockImpl::forward_sites(const at::Tensor& x, const STDiT3BlockContext& ctx, BlockRunner& sites) {
  const int64_t B = ctx.batch, T = ctx.frames, C = x.size(-1);
  // adaLN-single: the block's table plus the shared t_block output; [B, 1, C] each.
  auto mod = (scale_shift_table.unsqueeze(0) + ctx.t_mlp.reshape({B, 6, C})).chunk(6, 1);
  std::vector<at::Tensor> mod0;
  if (ctx.frame_is_cond.defined()) mod0 = (scale_shift_table.unsqueeze(0) + ctx.t0_mlp.reshape({B, 6, C})).chunk(6, 1);
  // modulate(LN(x), shift_i, scale_i), per frame from t or t0 where an x_mask is given.
  auto modulated = [&](const at::Tensor& normed, int shift, int scale) {
    auto h = t2i_modulate(normed, mod[shift], mod[scale]);
    if (mod0.empty()) return h;
    return select_frames(ctx.frame_is_cond, h, t2i_modulate(normed, mod0[shift], mod0[scale]), T);
  };
  auto gated = [&](const at::Tensor& out, int gate) {
    auto g = mod[gate] * out;
    if (mod0.empty()) return g;
    return select_frames(ctx.frame_is_cond, g, mod0[gate] * out, T);
  };

  // Self-attention on LN(x) modulated (pre-gate output cached). The norm runs inside the module
  // call, so a reused site costs nothing; the FLOPs count the whole attention whenever it runs.
  auto attn_out = sites.attention(SiteKind::kSelfAttention, x, [&](const at::Tensor& in, const at::Tensor& queries, at::Tensor* column_sums) {
    return self_attention(modulated(layer_norm(in), 0, 1), ctx, queries, column_sums);
  });
  auto out = x + gated(attn_out, 2);

  // Cross-attention to the captions: each token's output depends only on that token, so any
  // subset of tokens can be recomputed.
  std::pair<at::Tensor, at::Tensor> kv;
  out = out + sites.attention(SiteKind::kCrossAttention, out, [&](const at::Tensor& all, const at::Tensor& queries, at::Tensor* probabilities) {
    auto rows = queries.defined() ? all.gather(1, queries.unsqueeze(-1).expand({B, queries.size(1), C})) : all;
    if (!kv.first.defined()) kv = cross_attn->key_values(ctx.captions);
    return cross_attn->forward(rows, kv, ctx.key_mask, probabilities);
  });

  // MLP on the modulated tokens (pre-gate output cached). The norm and the per-frame modulation run
  // inside the module call on all tokens, then the selected rows are taken (as a token-wise site
  // would take them), so a reused site costs nothing and a partial one computes what it did.
  auto mlp_out = sites.attention(SiteKind::kMLP, out, [&](const at::Tensor& all, const at::Tensor& tokens, at::Tensor*) {
    auto m = modulated(layer_norm(all), 3, 4);
    if (tokens.defined()) m = m.gather(1, tokens.unsqueeze(-1).expand({B, tokens.size(1), C}));
    return mlp->forward(m);
  });
  return out + gated(mlp_out, 5);
}

// ---------------------------------------------------------------------------------------------
BackboneInfo backbone_info(const STDiT3Config& config) {
  BackboneInfo info;
  info.family = "STDiT3";
  info.name = config.name;
  info.depth = config.depth;
  info.block_kinds = {BlockKind::kSpatial, BlockKind::kTemporal};
  info.site_kinds = {SiteKind::kSelfAttention, SiteKind::kCrossAttention, SiteKind::kMLP};
  info.step_index_counts_down = false;  // rectified-flow order
  info.block_flops = [config](BlockKind kind, const RunShape& shape, const SiteTokens& computed) {
    return stdit3_block_flops(config, kind, shape.rows, shape.frames, shape.grid_h * shape.grid_w, shape.context_tokens,
                              computed.self_attention, computed.cross_attention, computed.mlp);
  };
  info.toca = stdit3_toca_profile();
  return info;
}

RunShape stdit3_run_shape(int64_t rows, bool cfg, int64_t frames, int64_t gh, int64_t gw, int64_t caption_tokens) {
  RunShape shape;
  shape.rows = rows;
  shape.cfg = cfg;
  shape.frames = frames;
  shape.grid_h = gh;
  shape.grid_w = gw;
  shape.context_tokens = caption_tokens;
  return shape;
}

RunShape STDiT3Impl::run_shape(const BackboneInputs& in) const {
  const auto& x = in.x;
  if (!x.defined() || x.dim() != 5) return {};
  auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  return stdit3_run_shape(x.size(0), false, ceil_div(x.size(2), config_.patch_t), ceil_div(x.size(3), config_.patch_h),
                          ceil_div(x.size(4), config_.patch_w), in.y.defined() && in.y.dim() >= 3 ? in.y.size(-2) : 0);
}

STDiT3Impl::STDiT3Impl(const STDiT3Config& config) : config_(config) {
  config_.validate();
  info_ = backbone_info(config_);
  const int C = config_.hidden_size;
  x_embedder = holder(*this, "x_embedder")
                   ->register_module("proj", torch::nn::Conv3d(torch::nn::Conv3dOptions(
                                                                   config_.in_channels, C, {config_.patch_t, config_.patch_h, config_.patch_w})
                                                                   .stride({config_.patch_t, config_.patch_h, config_.patch_w})));
  auto t_mlp = holder(*holder(*this, "t_embedder"), "mlp");
  t_mlp0 = t_mlp->register_module("0", torch::nn::Linear(256, C));
  t_mlp2 = t_mlp->register_module("2", torch::nn::Linear(C, C));
  auto fps_mlp = holder(*holder(*this, "fps_embedder"), "mlp");
  fps_mlp0 = fps_mlp->register_module("0", torch::nn::Linear(256, C));
  fps_mlp2 = fps_mlp->register_module("2", torch::nn::Linear(C, C));
  t_block = holder(*this, "t_block")->register_module("1", torch::nn::Linear(C, 6 * C));
  auto y_embedder = holder(*this, "y_embedder");
  y_embedding = y_embedder->register_buffer("y_embedding", at::randn({config_.model_max_length, config_.caption_channels}) /
                                                               std::sqrt(static_cast<double>(config_.caption_channels)));
  auto y_proj = holder(*y_embedder, "y_proj");
  y_fc1 = y_proj->register_module("fc1", torch::nn::Linear(config_.caption_channels, C));
  y_fc2 = y_proj->register_module("fc2", torch::nn::Linear(C, C));
  const int hd = config_.head_dim();
  rope_freqs = holder(*this, "rope")->register_parameter(
      "freqs", 1.0 / at::pow(10000.0, at::arange(0, hd, 2, at::kFloat) / static_cast<double>(hd)), /*requires_grad=*/false);
  spatial_blocks = register_module("spatial_blocks", torch::nn::ModuleList());
  temporal_blocks = register_module("temporal_blocks", torch::nn::ModuleList());
  for (int i = 0; i < config_.depth; ++i) {
    spatial_blocks->push_back(STDiT3Block(config_, BlockKind::kSpatial));
    temporal_blocks->push_back(STDiT3Block(config_, BlockKind::kTemporal));
  }
  auto final_layer = holder(*this, "final_layer");
  final_scale_shift = final_layer->register_parameter("scale_shift_table", at::randn({2, C}) / std::sqrt(static_cast<double>(C)));
  final_linear = final_layer->register_module(
      "linear", torch::nn::Linear(C, config_.patch_t * config_.patch_h * config_.patch_w * config_.out_channels()));
}

at::Tensor STDiT3Impl::forward(const STDiT3Inputs& in, CacheContext* cache) {
  reject_unused_inputs(in, "STDiT3", {"mask", "fps", "size", "x_mask"});
  const auto& cfg = config_;
  const auto& x_in = in.x;
  auto shape_error = [&](const std::string& what) { return Error(ErrorCode::kShapeMismatch, "STDiT3 forward: " + what); };
  if (!x_in.defined() || x_in.dim() != 5 || x_in.size(1) != cfg.in_channels) {
    throw shape_error(fmt::format("x must be [B, {}, T, h, w], found {}", cfg.in_channels,
                                  x_in.defined() ? shape_string(x_in.sizes()) : std::string("nothing")));
  }
  const int64_t B = x_in.size(0), T_in = x_in.size(2), H_in = x_in.size(3), W_in = x_in.size(4);
  if (!in.timestep.defined() || in.timestep.dim() != 1 || in.timestep.size(0) != B) {
    throw shape_error(fmt::format("timestep must be [{}], found {}", B, in.timestep.defined() ? shape_string(in.timestep.sizes()) : "nothing"));
  }
  at::Tensor y = in.y;
  if (y.defined() && y.dim() == 4 && y.size(1) == 1) y = y.squeeze(1);
  if (!y.defined() || y.dim() != 3 || y.size(0) != B || y.size(2) != cfg.caption_channels) {
    throw shape_error(fmt::format("y must be [{}, L, {}] (or [{}, 1, L, {}]), found {}", B, cfg.caption_channels, B, cfg.caption_channels,
                                  y.defined() ? shape_string(y.sizes()) : "nothing"));
  }
  const int64_t L = y.size(1);
  if (!in.fps.defined() || in.fps.dim() != 1) throw shape_error("fps must be a 1-D tensor of frames per second");
  if (!(in.height > 0) || !(in.width > 0)) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("STDiT3 forward: height and width (pixels) must be > 0, found {} x {}", in.height, in.width));
  }
  auto w = final_linear->weight;
  const auto dtype = w.scalar_type();
  const auto device = w.device();

  // Caption mask -> additive key mask [B, 1, 1, L].
  at::Tensor key_mask;
  if (in.mask.defined()) {
    if (in.mask.dim() != 2 || in.mask.size(1) != L) {
      throw shape_error(fmt::format("mask must be [B', {}], found {}", L, shape_string(in.mask.sizes())));
    }
    auto valid = tile_rows(in.mask, B, "mask").to(device).ne(0);
    if (valid.sum(1).eq(0).any().item<bool>()) {
      throw Error(ErrorCode::kInvalidArgument, "STDiT3 forward: a caption mask row has no valid token (T5 masks include EOS)");
    }
    key_mask = at::zeros({B, 1, 1, L}, at::TensorOptions().dtype(at::kFloat).device(device))
                   .masked_fill(valid.logical_not().view({B, 1, 1, L}), -std::numeric_limits<float>::infinity());
  } else {
    key_mask = at::zeros({B, 1, 1, L}, at::TensorOptions().dtype(at::kFloat).device(device));
  }

  // Patch embedding with zero padding at the end of each axis that the patch does not divide.
  auto x = x_in.to(device, dtype);
  const int64_t pad_t = (cfg.patch_t - T_in % cfg.patch_t) % cfg.patch_t, pad_h = (cfg.patch_h - H_in % cfg.patch_h) % cfg.patch_h,
                pad_w = (cfg.patch_w - W_in % cfg.patch_w) % cfg.patch_w;
  if (pad_t || pad_h || pad_w) x = at::constant_pad_nd(x, {0, pad_w, 0, pad_h, 0, pad_t}, 0.0);
  const int64_t T = (T_in + pad_t) / cfg.patch_t, gh = (H_in + pad_h) / cfg.patch_h, gw = (W_in + pad_w) / cfg.patch_w, S = gh * gw;
  auto tokens = x_embedder->forward(x).flatten(2).transpose(1, 2);  // [B, T*S, C], frame-major
  auto pos = opensora_pos_embed(cfg.hidden_size, gh, gw, in.height, in.width, cfg.input_sq_size).to(device, dtype);
  tokens = (tokens.reshape({B, T, S, -1}) + pos).reshape({B, T * S, -1});

  // Conditioning: timestep + fps embedding, its t_block projection, and t0's for x_mask.
  auto embed_t = [&](const at::Tensor& t) {
    return t_mlp2->forward(at::silu(t_mlp0->forward(timestep_features(t.to(device, at::kFloat), 256, 128).to(dtype))));
  };
  auto fps = tile_rows(in.fps, B, "fps");
  auto fps_emb = fps_mlp2->forward(at::silu(fps_mlp0->forward(timestep_features(fps.to(device, at::kFloat), 256, 128).to(dtype))));
  // The reference casts the timestep to the model dtype before the sinusoid.
  auto t = embed_t(in.timestep.to(dtype)) + fps_emb;
  STDiT3BlockContext ctx;
  ctx.info = &info_;
  ctx.shape = stdit3_run_shape(B, false, T, gh, gw, L);
  ctx.batch = B;
  ctx.frames = T;
  ctx.tokens = S;
  ctx.t_mlp = t_block->forward(at::silu(t));
  at::Tensor t0;
  if (in.x_mask.defined()) {
    if (in.x_mask.dim() != 2 || in.x_mask.size(0) != B || in.x_mask.size(1) != T) {
      throw shape_error(fmt::format("x_mask must be [{}, {}], found {}", B, T, shape_string(in.x_mask.sizes())));
    }
    t0 = embed_t(at::zeros({B}, at::TensorOptions().dtype(dtype).device(device))) + fps_emb;
    ctx.t0_mlp = t_block->forward(at::silu(t0));
    ctx.frame_is_cond = in.x_mask.to(device).ne(0).view({B, T, 1});
  }
  ctx.captions = y_fc2->forward(at::gelu(y_fc1->forward(y.to(device, dtype)), "tanh"));
  ctx.key_mask = key_mask;
  ctx.rope_angles = rope_angles(rope_freqs.to(at::kFloat), T);

  for (int i = 0; i < cfg.depth; ++i) {
    tokens = spatial_blocks[i]->as<STDiT3BlockImpl>()->forward(tokens, ctx, cache, i);
    tokens = temporal_blocks[i]->as<STDiT3BlockImpl>()->forward(tokens, ctx, cache, i);
  }

  // Final layer: modulation from the raw t (not t_block), per frame from t0 under an x_mask.
  const int64_t C = cfg.hidden_size;
  auto normed = layer_norm(tokens);
  auto final_mod = [&](const at::Tensor& cond) {
    auto ss = (final_scale_shift.unsqueeze(0) + cond.view({B, 1, C})).chunk(2, 1);  // shift, scale
    return t2i_modulate(normed, ss[0], ss[1]);
  };
  auto h = final_mod(t);
  if (ctx.frame_is_cond.defined()) {
    // As the reference computes it: the t0 branch normalises the already-modulated tokens again
    // (its T2IFinalLayer reassigns x before the t0 modulation reads it).
    normed = layer_norm(h);
    h = select_frames(ctx.frame_is_cond, h, final_mod(t0), T);
  }
  auto out = final_linear->forward(h);  // [B, T*S, pt*ph*pw*Cout]

  // Unpatchify: (pt, ph, pw, c) per token -> [B, Cout, T*pt, gh*ph, gw*pw], then crop the padding.
  const int64_t Co = cfg.out_channels();
  out = out.reshape({B, T, gh, gw, cfg.patch_t, cfg.patch_h, cfg.patch_w, Co})
            .permute({0, 7, 1, 4, 2, 5, 3, 6})
            .reshape({B, Co, T * cfg.patch_t, gh * cfg.patch_h, gw * cfg.patch_w});
  out = out.narrow(2, 0, T_in).narrow(3, 0, H_in).narrow(4, 0, W_in);
  return out.to(at::kFloat);
}

void STDiT3Impl::load(const WeightFile& file) {
  const auto found = STDiT3Config::from_weights(file);
  auto check = [&](const char* field, long expected, long got) {
    if (expected != got) {
      throw Error(ErrorCode::kShapeMismatch, fmt::format("{}: the weights do not fit config '{}': {}: expected {}, found {}",
                                                         file.path(), config_.name, field, expected, got));
    }
  };
  check("depth", config_.depth, found.depth);
  check("hidden_size", config_.hidden_size, found.hidden_size);
  check("num_heads", config_.num_heads, found.num_heads);
  check("in_channels", config_.in_channels, found.in_channels);
  check("out_channels", config_.out_channels(), found.out_channels());
  check("caption_channels", config_.caption_channels, found.caption_channels);
  check("model_max_length", config_.model_max_length, found.model_max_length);
  check("qk_norm", config_.qk_norm, found.qk_norm);
  LoadOptions options;
  options.prefix = "";
  load_state_dict(*this, file, {}, options);
}

// ---------------------------------------------------------------------------------------------
double stdit3_block_flops(const STDiT3Config& config, BlockKind kind, int64_t rows, int64_t frames, int64_t tokens,
                          int64_t caption_tokens, int64_t attn_queries, int64_t cross_queries, int64_t mlp_tokens) {
  const int64_t C = config.hidden_size, H = config.num_heads, N = frames * tokens;
  double f = 0;  // the modulation is the shared t_block output plus the block's table: not counted
  if (attn_queries > 0) {
    // Whole self-attention over sequences of S tokens (spatial: rows*T of them) or T frames (temporal: rows*S).
    const int64_t seqs = kind == BlockKind::kSpatial ? rows * frames : rows * tokens;
    const int64_t len = kind == BlockKind::kSpatial ? tokens : frames;
    f += flops::layer_norm(rows, N, C) + flops::attention(seqs, len, len, C, H);
  }
  if (cross_queries > 0) f += flops::attention(rows, cross_queries, caption_tokens, C, H);
  if (mlp_tokens > 0) f += flops::layer_norm(rows, mlp_tokens, C) + flops::mlp(rows, mlp_tokens, C, config.mlp_hidden());
  return f;
}


}  // namespace ditcache
