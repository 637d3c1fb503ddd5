// T5 v1.1 encoder (Hugging Face T5EncoderModel semantics; models.md §6.2-§6.3).
#include "ditcache/models/t5.h"

#include <cmath>
#include <filesystem>
#include <limits>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>

#include "ditcache/error.h"
#include "ditcache/io/state_dict.h"
#include "ditcache/io/weights.h"
#include "common/module_util.h"

namespace ditcache {

namespace {

using detail::holder;

torch::nn::Linear linear(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}

void refuse_half(at::ScalarType dtype, const char* what) {
  if (dtype == at::kHalf) {
    throw Error(ErrorCode::kUnsupported,
                fmt::format("T5 encoder: {} float16 is not supported (T5 activations overflow in fp16); use float32 "
                            "or bfloat16", what));
  }
}

}  // namespace

at::Tensor t5_relative_position_bucket(const at::Tensor& relative_position, int64_t num_buckets, int64_t max_distance) {
  const int64_t half = num_buckets / 2;  // one half per sign (bidirectional)
  const int64_t max_exact = half / 2;
  auto rel = relative_position.to(at::kLong);
  auto buckets = (rel > 0).to(at::kLong) * half;
  auto n = rel.abs();
  // Logarithmic bins between max_exact and max_distance; float32 log as in the reference so the
  // truncation lands on the same bucket.
  auto large = max_exact + (at::log(n.to(at::kFloat) / static_cast<float>(max_exact)) /
                            static_cast<float>(std::log(static_cast<double>(max_distance) / max_exact)) *
                            static_cast<float>(half - max_exact))
                               .to(at::kLong);
  large = at::clamp_max(large, half - 1);
  return buckets + at::where(n < max_exact, n, large);
}

at::Tensor t5_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  auto variance = x.to(at::kFloat).pow(2).mean(-1, /*keepdim=*/true);
  auto y = x * at::rsqrt(variance + eps);
  if (weight.scalar_type() == at::kBFloat16 || weight.scalar_type() == at::kHalf) y = y.to(weight.scalar_type());
  return weight * y;
}

T5LayerNormImpl::T5LayerNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", at::ones({dim}));
}

at::Tensor T5LayerNormImpl::forward(const at::Tensor& x) { return t5_rms_norm(x, weight, eps); }

T5AttentionImpl::T5AttentionImpl(const T5Config& c, bool has_bias)
    : num_heads(c.num_heads),
      d_kv(c.d_kv),
      num_buckets(c.relative_attention_num_buckets),
      max_distance(c.relative_attention_max_distance) {
  q = register_module("q", linear(c.d_model, c.inner_dim()));
  k = register_module("k", linear(c.d_model, c.inner_dim()));
  v = register_module("v", linear(c.d_model, c.inner_dim()));
  o = register_module("o", linear(c.inner_dim(), c.d_model));
  if (has_bias) {
    relative_attention_bias =
        register_module("relative_attention_bias", torch::nn::Embedding(c.relative_attention_num_buckets, c.num_heads));
  }
}

at::Tensor T5AttentionImpl::compute_bias(int64_t length) {
  if (!relative_attention_bias) {
    throw Error(ErrorCode::kInvalidArgument, "T5Attention::compute_bias: this layer has no relative_attention_bias");
  }
  const auto& table = relative_attention_bias->weight;
  auto pos = at::arange(length, table.options().dtype(at::kLong));
  auto rel = pos.unsqueeze(0) - pos.unsqueeze(1);  // [Lq, Lk]: key - query
  auto buckets = t5_relative_position_bucket(rel, num_buckets, max_distance);
  return at::embedding(table, buckets).permute({2, 0, 1}).unsqueeze(0);  // [1, H, Lq, Lk]
}

at::Tensor T5AttentionImpl::forward(const at::Tensor& x, const at::Tensor& bias) {
  const int64_t B = x.size(0), L = x.size(1);
  auto heads = [&](const at::Tensor& t) { return t.view({B, L, num_heads, d_kv}).transpose(1, 2); };  // [B, H, L, d_kv]
  auto qh = heads(q->forward(x)), kh = heads(k->forward(x)), vh = heads(v->forward(x));
  // No 1/sqrt(d_kv): T5 folds it into the initialisation of q.
  auto scores = at::matmul(qh, kh.transpose(-1, -2)) + bias;  // [B, H, L, L]
  auto weights = at::softmax(scores.to(at::kFloat), -1).to(scores.scalar_type());
  auto out = at::matmul(weights, vh).transpose(1, 2).reshape({B, L, num_heads * d_kv});  // [B, L, inner]
  return o->forward(out);
}

T5GatedFFImpl::T5GatedFFImpl(const T5Config& c) {
  wi_0 = register_module("wi_0", linear(c.d_model, c.d_ff));
  wi_1 = register_module("wi_1", linear(c.d_model, c.d_ff));
  wo = register_module("wo", linear(c.d_ff, c.d_model));
}

at::Tensor T5GatedFFImpl::forward(const at::Tensor& x) {
  return wo->forward(at::gelu(wi_0->forward(x), "tanh") * wi_1->forward(x));
}

T5BlockImpl::T5BlockImpl(const T5Config& c, bool has_bias) {
  auto layers = register_module("layer", torch::nn::ModuleList());
  auto self_attention = std::make_shared<torch::nn::Module>();
  auto feed_forward = std::make_shared<torch::nn::Module>();
  layers->push_back(self_attention);
  layers->push_back(feed_forward);
  attention = self_attention->register_module("SelfAttention", T5Attention(c, has_bias));
  attention_norm = self_attention->register_module("layer_norm", T5LayerNorm(c.d_model, c.layer_norm_epsilon));
  ffn = feed_forward->register_module("DenseReluDense", T5GatedFF(c));
  ffn_norm = feed_forward->register_module("layer_norm", T5LayerNorm(c.d_model, c.layer_norm_epsilon));
}

at::Tensor T5BlockImpl::forward(const at::Tensor& x, const at::Tensor& bias) {
  auto h = x + attention->forward(attention_norm->forward(x), bias);
  return h + ffn->forward(ffn_norm->forward(h));
}

T5EncoderImpl::T5EncoderImpl(const T5Config& config) : config_(config) {
  config_.validate();
  shared = register_module("shared", torch::nn::Embedding(config_.vocab_size, config_.d_model));
  auto encoder = holder(*this, "encoder");
  block = encoder->register_module("block", torch::nn::ModuleList());
  for (int64_t i = 0; i < config_.num_layers; ++i) block->push_back(T5Block(config_, /*has_bias=*/i == 0));
  final_layer_norm = encoder->register_module("final_layer_norm", T5LayerNorm(config_.d_model, config_.layer_norm_epsilon));
}

void T5EncoderImpl::to(torch::Dtype dtype, bool non_blocking) {
  refuse_half(dtype, "converting to");
  torch::nn::Module::to(dtype, non_blocking);
}

void T5EncoderImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  refuse_half(dtype, "converting to");
  torch::nn::Module::to(device, dtype, non_blocking);
}

at::Tensor T5EncoderImpl::encode(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
  const auto& table = shared->weight;
  refuse_half(table.scalar_type(), "weights in");
  if (!input_ids.defined() || input_ids.dim() != 2) {
    throw Error(ErrorCode::kShapeMismatch,
                fmt::format("T5 encoder: input_ids must be [B, L], got {}",
                            input_ids.defined() ? shape_string(input_ids.sizes()) : std::string("an undefined tensor")));
  }
  if (input_ids.scalar_type() != at::kLong && input_ids.scalar_type() != at::kInt) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("T5 encoder: input_ids must be int64 (or int32), got {}", c10::toString(input_ids.scalar_type())));
  }
  const int64_t B = input_ids.size(0), L = input_ids.size(1);
  if (B == 0 || L == 0) {
    throw Error(ErrorCode::kShapeMismatch, fmt::format("T5 encoder: empty input_ids {}", shape_string(input_ids.sizes())));
  }
  if (attention_mask.defined() && attention_mask.sizes() != input_ids.sizes()) {
    throw Error(ErrorCode::kShapeMismatch, fmt::format("T5 encoder: attention_mask {} does not match input_ids {}",
                                                       shape_string(attention_mask.sizes()),
                                                       shape_string(input_ids.sizes())));
  }
  auto ids = input_ids.to(table.device(), at::kLong);
  const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
  if (lo < 0 || hi >= config_.vocab_size) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("T5 encoder: token id {} outside the vocabulary [0, {})",
                                                         lo < 0 ? lo : hi, config_.vocab_size));
  }
  c10::NoGradGuard no_grad;
  auto h = at::embedding(table, ids);  // [B, L, d_model]; no sqrt(d) scaling in T5
  // One position bias for all layers (block 0 owns the table), plus the key padding mask.
  auto bias = block->ptr<T5BlockImpl>(0)->attention->compute_bias(L).to(h.scalar_type());  // [1, H, L, L]
  if (attention_mask.defined()) {
    auto pad = attention_mask.to(h.device()).eq(0).view({B, 1, 1, L});  // [B, 1, 1, Lk]
    const double lowest = h.scalar_type() == at::kBFloat16 ? static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest())
                                                            : static_cast<double>(std::numeric_limits<float>::lowest());
    bias = bias + at::zeros({B, 1, 1, L}, h.options()).masked_fill(pad, lowest);  // [B, H, L, L]
  }
  for (const auto& m : *block) h = m->as<T5BlockImpl>()->forward(h, bias);
  return final_layer_norm->forward(h);
}

void T5EncoderImpl::load(const WeightFile& file) {
  const auto found = T5Config::from_weights(file);
  auto check = [&](const char* field, int64_t mine, int64_t theirs) {
    if (mine != theirs) {
      throw Error(ErrorCode::kShapeMismatch,
                  fmt::format("{}: T5 checkpoint has {} {}, the model was built with {}", file.path(), field, theirs, mine));
    }
  };
  check("d_model", config_.d_model, found.d_model);
  check("vocab_size", config_.vocab_size, found.vocab_size);
  check("num_layers", config_.num_layers, found.num_layers);
  check("num_heads", config_.num_heads, found.num_heads);
  check("d_kv", config_.d_kv, found.d_kv);
  check("d_ff", config_.d_ff, found.d_ff);
  check("relative_attention_num_buckets", config_.relative_attention_num_buckets, found.relative_attention_num_buckets);

  KeyMap map;
  map.ignore_prefix("decoder.").ignore_prefix("lm_head.");
  if (file.contains("shared.weight")) {
    map.ignore("encoder.embed_tokens.weight");  // tied copy of shared.weight
  } else {
    map.rename("shared.weight", "encoder.embed_tokens.weight");
  }
  LoadOptions options;
  options.prefix = "";
  load_state_dict(*this, file, map, options);
}

T5Encoder load_t5_encoder(const std::string& path) {
  auto file = open_checkpoint(path);
  auto config = T5Config::from_weights(*file);
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path json = (fs::is_directory(p) ? p : p.parent_path()) / "config.json";
  if (fs::exists(json)) {
    auto declared = T5Config::from_json_file(json.string());
    auto check = [&](const char* field, int64_t a, int64_t b) {
      if (a != b) {
        throw Error(ErrorCode::kShapeMismatch,
                    fmt::format("{}: {} {} disagrees with the weights in {} ({})", json.string(), field, a, path, b));
      }
    };
    check("d_model", declared.d_model, config.d_model);
    check("num_layers", declared.num_layers, config.num_layers);
    check("num_heads", declared.num_heads, config.num_heads);
    check("d_kv", declared.d_kv, config.d_kv);
    check("d_ff", declared.d_ff, config.d_ff);
    check("relative_attention_num_buckets", declared.relative_attention_num_buckets, config.relative_attention_num_buckets);
    // HF pads vocab_size past the embedding rows in some configs; the weights decide.
    declared.vocab_size = config.vocab_size;
    config = declared;
  }
  T5Encoder model(config);
  model->load(*file);
  model->eval();
  return model;
}

}  // namespace ditcache
