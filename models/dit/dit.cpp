// DiT backbone (facebookresearch/DiT models.py semantics; models.md §0-§1).
#include "ditcache/models/dit.h"

#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/init.h>
#include <torch/version.h>

#include "ditcache/cache/context.h"
#include "ditcache/error.h"
#include "ditcache/flops.h"
#include "ditcache/io/state_dict.h"
#include "ditcache/io/weights.h"
#include "common/module_util.h"
#include "dit/dit_toca.h"
#include "nn/attention.h"

namespace ditcache {

namespace {

using detail::holder;
using detail::layer_norm;

at::Tensor gelu_tanh(const at::Tensor& x) { return at::gelu(x, "tanh"); }

}  // namespace

at::Tensor modulate(const at::Tensor& normed, const at::Tensor& shift, const at::Tensor& scale) {
  return normed * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1);
}

at::Tensor timestep_features(const at::Tensor& t, int64_t dim, double freq_divisor) {
  const int64_t half = dim / 2;
  auto options = at::TensorOptions().dtype(at::kFloat).device(t.device());
  auto exponents = -std::log(10000.0) * at::arange(0, half, options) / freq_divisor;
#if TORCH_VERSION_MAJOR < 2
  // LibTorch 1.x's vectorized float exp is off by 1 ulp on ~12% of these exponents, which
  // cos/sin(t * freq) with t up to 999 turn into ~1e-5 errors: round a double exp instead.
  auto freqs = at::exp(exponents.to(at::kDouble)).to(at::kFloat);                            // [half]
#else
  auto freqs = at::exp(exponents);                                                          // [half]
#endif
  auto args = t.to(at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);                         // [B, half]
  auto emb = at::cat({at::cos(args), at::sin(args)}, -1);                                 // [B, 2*half]
  if (dim % 2) emb = at::cat({emb, at::zeros_like(emb.narrow(1, 0, 1))}, -1);
  return emb;
}

at::Tensor sincos_pos_embed_2d(int64_t dim, int64_t gh, int64_t gw, double row_scale, double col_scale) {
  if (dim % 4 != 0) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("2-D position embedding: dim {} is not divisible by 4", dim));
  }
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  const int64_t quarter = dim / 4;
  auto omega = 1.0 / at::pow(10000.0, at::arange(0, quarter, f64) / static_cast<double>(quarter));  // [D/4]
  auto axis = [&](const at::Tensor& pos) {  // pos [n] -> [n, D/2] = [sin | cos]
    auto out = pos.unsqueeze(1) * omega.unsqueeze(0);
    return at::cat({at::sin(out), at::cos(out)}, 1);
  };
  auto rows = at::arange(0, gh, f64) * row_scale;  // [gh]
  auto cols = at::arange(0, gw, f64) * col_scale;  // [gw]
  // Token n = r * gw + c: the first half encodes the column, the second the row.
  auto col_emb = axis(cols).unsqueeze(0).expand({gh, gw, dim / 2});
  auto row_emb = axis(rows).unsqueeze(1).expand({gh, gw, dim / 2});
  return at::cat({col_emb, row_emb}, -1).reshape({gh * gw, dim}).to(at::kFloat);  // [N, D]
}

// ---------------------------------------------------------------------------------------------
DiTAttentionImpl::DiTAttentionImpl(int hidden_size, int heads) : num_heads(heads) {
  qkv = register_module("qkv", torch::nn::Linear(hidden_size, 3 * hidden_size));
  proj = register_module("proj", torch::nn::Linear(hidden_size, hidden_size));
}

at::Tensor DiTAttentionImpl::forward(const at::Tensor& x, const at::Tensor& queries, at::Tensor* column_sums) {
  const int64_t B = x.size(0), N = x.size(1), C = x.size(2), H = num_heads, d = C / H;
  at::Tensor q, k, v;
  int64_t n = N;
  // q, k and v as three GEMMs on row slices of the fused qkv weight (views, the checkpoint layout
  // stays): on the CPU three [C, C] GEMMs run ~10 % faster than one [3C, C] (docs/benchmarks.md).
  auto project = [&](const at::Tensor& in, int64_t part) {
    return at::linear(in, qkv->weight.narrow(0, part * C, C), qkv->bias.narrow(0, part * C, C));
  };
  if (!queries.defined()) {
    q = project(x, 0).view({B, N, H, d}).transpose(1, 2);  // [B, H, N, d]
    k = project(x, 1).view({B, N, H, d}).transpose(1, 2);
    v = project(x, 2).view({B, N, H, d}).transpose(1, 2);
  } else {
    // Selected queries only: q from the gathered tokens, k and v from all tokens.
    n = queries.size(1);
    auto rows = x.gather(1, queries.unsqueeze(-1).expand({B, n, C}));                                 // [B, n, C]
    q = project(rows, 0).view({B, n, H, d}).transpose(1, 2);                                          // [B, H, n, d]
    k = project(x, 1).view({B, N, H, d}).transpose(1, 2);                                             // [B, H, N, d]
    v = project(x, 2).view({B, N, H, d}).transpose(1, 2);
  }
  at::Tensor out;
  if (column_sums) {
    // Explicit attention: the probabilities are needed for s1 (toca.md §3.6).
    const auto dtype = q.scalar_type();
    auto probs = at::softmax(at::matmul(q.to(at::kFloat), k.to(at::kFloat).transpose(-2, -1)) / std::sqrt(static_cast<double>(d)), -1);  // [B, H, n, N]
    out = at::matmul(probs, v.to(at::kFloat)).to(dtype);                                                // [B, H, n, d]
    *column_sums = probs.mean(1).sum(1);                                                                 // [B, N]
  } else {
    out = nn::attention(q, k, v);  // [B, H, n, d]
  }
  return proj->forward(out.transpose(1, 2).reshape({B, n, C}));  // [B, n, C]
}

DiTMLPImpl::DiTMLPImpl(int hidden_size, int mlp_hidden) {
  fc1 = register_module("fc1", torch::nn::Linear(hidden_size, mlp_hidden));
  fc2 = register_module("fc2", torch::nn::Linear(mlp_hidden, hidden_size));
}

at::Tensor DiTMLPImpl::forward(const at::Tensor& x) { return fc2->forward(gelu_tanh(fc1->forward(x))); }

DiTBlockImpl::DiTBlockImpl(const DiTConfig& config)
    : hidden_size(config.hidden_size),
      mlp_norm_eps(config.numerics == DiTNumerics::kDiffusers ? 1e-5 : 1e-6),
      config_(config) {
  attn = register_module("attn", DiTAttention(config.hidden_size, config.num_heads));
  mlp = register_module("mlp", DiTMLP(config.hidden_size, config.mlp_hidden()));
  ada_linear = holder(*this, "adaLN_modulation")
                   ->register_module("1", torch::nn::Linear(config.hidden_size, 6 * config.hidden_size));
}

std::vector<at::Tensor> DiTBlockImpl::modulation(const at::Tensor& c) {
  return ada_linear->forward(at::silu(c)).chunk(6, 1);  // 6 x [B, C]
}

at::Tensor DiTBlockImpl::attention_branch(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale,
                                          const at::Tensor& queries, at::Tensor* column_sums) {
  return attn->forward(modulate(layer_norm(x, 1e-6), shift, scale), queries, column_sums);
}

at::Tensor DiTBlockImpl::mlp_branch(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale) {
  return mlp->forward(modulate(layer_norm(x, mlp_norm_eps), shift, scale));
}

at::Tensor DiTBlockImpl::forward(const at::Tensor& x, const at::Tensor& c, CacheContext* cache, int layer,
                                 const BackboneInfo* info, const RunShape& shape) {
  auto body = [&](const at::Tensor& in, BlockRunner& sites) {
    auto m = modulation(c);
    auto attn_out = sites.attention(SiteKind::kSelfAttention, in,
                                    [&](const at::Tensor& tokens, const at::Tensor& queries, at::Tensor* column_sums) {
                                      return attention_branch(tokens, m[0], m[1], queries, column_sums);
                                    });
    auto h = in + m[2].unsqueeze(1) * attn_out;
    // MLP on the tokens the policy selects, with this step's modulation; the gate applies to the
    // whole (mixed fresh and cached) output.
    auto mlp_out = sites.token_wise(SiteKind::kMLP, h, [&](const at::Tensor& rows) { return mlp_branch(rows, m[3], m[4]); });
    return h + m[5].unsqueeze(1) * mlp_out;
  };
  if (!cache) {
    static const BackboneInfo kUncached;  // an uncached runner reads no descriptor
    BlockRunner direct(nullptr, info ? *info : kUncached, BlockKind::kSpatial, layer, shape);
    return body(x, direct);
  }
  if (!info) throw Error(ErrorCode::kInvalidArgument, "DiTBlock: a cached forward needs the model's BackboneInfo");
  return run_block(cache, *info, BlockKind::kSpatial, layer, shape, x, body);
}

double dit_block_flops(const DiTConfig& config, int64_t rows, int64_t attn_queries, int64_t mlp_tokens) {
  const int64_t C = config.hidden_size, N = config.num_tokens();
  double f = flops::ada_ln(rows, C, 6);
  if (attn_queries > 0) f += flops::layer_norm(rows, attn_queries, C) + flops::attention(rows, attn_queries, N, C, config.num_heads);
  if (mlp_tokens > 0) f += flops::layer_norm(rows, mlp_tokens, C) + flops::mlp(rows, mlp_tokens, C, config.mlp_hidden());
  return f;
}

// ---------------------------------------------------------------------------------------------
BackboneInfo backbone_info(const DiTConfig& config) {
  BackboneInfo info;
  info.family = "DiT";
  info.name = config.name;
  info.depth = config.depth;
  info.site_kinds = {SiteKind::kSelfAttention, SiteKind::kMLP};
  info.step_index_counts_down = true;  // DiT's samplers number steps S-1 .. 0
  info.block_flops = [config](BlockKind, const RunShape& shape, const SiteTokens& computed) {
    return dit_block_flops(config, shape.rows, computed.self_attention, computed.mlp);
  };
  info.toca = dit_toca_profile();
  return info;
}

RunShape dit_run_shape(const DiTConfig& config, int64_t rows, bool cfg) {
  RunShape shape;
  shape.rows = rows;
  shape.cfg = cfg;
  shape.grid_h = shape.grid_w = config.grid_size();
  return shape;
}

DiTImpl::DiTImpl(const DiTConfig& config) : config_(config) {
  config_.validate();
  info_ = backbone_info(config_);
  const int C = config_.hidden_size, p = config_.patch_size;
  x_embedder_proj = holder(*this, "x_embedder")
                        ->register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(config_.in_channels, C, p).stride(p)));
  auto t_mlp = holder(*holder(*this, "t_embedder"), "mlp");
  t_mlp0 = t_mlp->register_module("0", torch::nn::Linear(256, C));
  t_mlp2 = t_mlp->register_module("2", torch::nn::Linear(C, C));
  y_table = holder(*this, "y_embedder")
                ->register_module("embedding_table", torch::nn::Embedding(config_.num_classes + 1, C));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int i = 0; i < config_.depth; ++i) blocks->push_back(DiTBlock(config_));
  auto final_holder = holder(*this, "final_layer");
  final_adaLN = holder(*final_holder, "adaLN_modulation")->register_module("1", torch::nn::Linear(C, 2 * C));
  final_linear = final_holder->register_module("linear", torch::nn::Linear(C, p * p * config_.out_channels()));
  pos_embed = register_buffer(
      "pos_embed", sincos_pos_embed_2d(C, config_.grid_size(), config_.grid_size()).unsqueeze(0));  // [1, N, C]
}

at::Tensor DiTImpl::embed(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y, at::Tensor& c) {
  const double divisor = config_.numerics == DiTNumerics::kDiffusers ? 127.0 : 128.0;
  auto temb = t_mlp2->forward(at::silu(t_mlp0->forward(timestep_features(t, 256, divisor).to(x.scalar_type()))));
  c = temb + y_table->forward(y);                                             // [B, C]
  auto tokens = x_embedder_proj->forward(x).flatten(2).transpose(1, 2);      // [B, N, C], row-major patches
  return tokens + pos_embed;
}

at::Tensor DiTImpl::final_layer(const at::Tensor& x, const at::Tensor& c) {
  auto shift_scale = final_adaLN->forward(at::silu(c)).chunk(2, 1);  // shift first
  return final_linear->forward(modulate(layer_norm(x, 1e-6), shift_scale[0], shift_scale[1]));
}

at::Tensor DiTImpl::unpatchify(const at::Tensor& tokens) {
  const int64_t B = tokens.size(0), p = config_.patch_size, g = config_.grid_size(), c = config_.out_channels();
  auto x = tokens.reshape({B, g, g, p, p, c});              // [B, gr, gc, pr, pc, C]
  return x.permute({0, 5, 1, 3, 2, 4}).reshape({B, c, g * p, g * p});  // [B, C, H, W]
}

at::Tensor DiTImpl::forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y, CacheContext* cache) {
  const int64_t size = config_.input_size;
  if (x.dim() != 4 || x.size(1) != config_.in_channels || x.size(2) != size || x.size(3) != size) {
    throw Error(ErrorCode::kShapeMismatch,
                fmt::format("{}: input latents have shape {}, expected [B, {}, {}, {}]", config_.name,
                            shape_string(x.sizes()), config_.in_channels, size, size));
  }
  if (t.dim() != 1 || y.dim() != 1 || t.size(0) != x.size(0) || y.size(0) != x.size(0)) {
    throw Error(ErrorCode::kShapeMismatch,
                fmt::format("{}: timesteps {} and labels {} must both be [{}]", config_.name,
                            shape_string(t.sizes()), shape_string(y.sizes()), x.size(0)));
  }
  at::Tensor c;
  auto h = embed(x, t, y, c);
  const RunShape shape = dit_run_shape(config_, x.size(0), false);
  for (size_t i = 0; i < blocks->size(); ++i) {
    h = blocks[i]->as<DiTBlockImpl>()->forward(h, c, cache, static_cast<int>(i), &info_, shape);
  }
  return unpatchify(final_layer(h, c));
}

at::Tensor DiTImpl::forward(const BackboneInputs& inputs, CacheContext* cache) {
  reject_unused_inputs(inputs, "DiT", {});
  return forward(inputs.x, inputs.timestep, inputs.y, cache);
}

RunShape DiTImpl::run_shape(const BackboneInputs& inputs) const {
  return dit_run_shape(config_, inputs.x.defined() ? inputs.x.size(0) : 0, false);
}

void init_dit_weights(DiTImpl& model) {
  at::NoGradGuard no_grad;
  namespace init = torch::nn::init;
  for (auto& module : model.modules(/*include_self=*/false)) {
    if (auto* linear = module->as<torch::nn::LinearImpl>()) {
      init::xavier_uniform_(linear->weight);
      init::zeros_(linear->bias);
    }
  }
  // The patch projection as a linear over its flattened [C, in * p * p] weight.
  auto w = model.x_embedder_proj->weight;
  w.copy_(init::xavier_uniform_(at::empty({w.size(0), w[0].numel()}, w.options())).view_as(w));
  init::zeros_(model.x_embedder_proj->bias);
  init::normal_(model.y_table->weight, 0.0, 0.02);
  init::normal_(model.t_mlp0->weight, 0.0, 0.02);
  init::normal_(model.t_mlp2->weight, 0.0, 0.02);
  for (size_t i = 0; i < model.blocks->size(); ++i) {
    auto* block = model.blocks[i]->as<DiTBlockImpl>();
    init::zeros_(block->ada_linear->weight);
    init::zeros_(block->ada_linear->bias);
  }
  for (auto* linear : {model.final_adaLN.get(), model.final_linear.get()}) {
    init::zeros_(linear->weight);
    init::zeros_(linear->bias);
  }
}

at::Tensor DiTImpl::forward_with_cfg(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y, double scale,
                                     CacheContext* cache) {
  if (x.size(0) % 2 != 0) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("forward_with_cfg: batch {} is not [cond; uncond] (must be even)", x.size(0)));
  }
  const int64_t n = x.size(0) / 2;
  auto half = x.narrow(0, 0, n);
  auto out = forward(at::cat({half, half}, 0), t, y, cache);  // [2n, Cout, H, W]
  const int64_t guided = config_.numerics == DiTNumerics::kDiffusers ? config_.in_channels : 3;
  auto eps = out.narrow(1, 0, guided);
  auto rest = out.narrow(1, guided, out.size(1) - guided);
  auto cond = eps.narrow(0, 0, n), uncond = eps.narrow(0, n, n);
  auto half_eps = uncond + scale * (cond - uncond);
  return at::cat({at::cat({half_eps, half_eps}, 0), rest}, 1);
}

}  // namespace ditcache
