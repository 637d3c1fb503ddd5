#pragma once
/// \file T5 v1.1 encoder (Hugging Face `T5EncoderModel` semantics), the text encoder of PixArt-α
/// (max length 120) and OpenSora 1.2 (max length 300): config, modules named like the HF
/// checkpoint, and loading from single-file or sharded checkpoints.
/// Reference: ../shared/reference/models.md §6 (forward, keys), §2.3 / §3.5 (how the pipelines use it).

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

// The T5 encoder's companions: its tokenizer and caption cleaning, and the sharded checkpoints
// its released weights come in.
#include "ditcache/io/sharded_weights.h"
#include "ditcache/text/tokenizer.h"

namespace ditcache {

class WeightFile;

/// Architecture of a T5 v1.1 encoder (field names as in Hugging Face `T5Config`).
/// Default and preset "t5-v1_1-xxl": the DeepFloyd / PixArt T5 (models.md §6.1).
struct T5Config {
  std::string name = "t5-v1_1-xxl";
  int64_t d_model = 4096;
  int64_t d_kv = 64;      ///< per-head size; num_heads * d_kv need not equal d_model
  int64_t d_ff = 10240;
  int64_t num_layers = 24;  ///< encoder blocks
  int64_t num_heads = 64;
  int64_t relative_attention_num_buckets = 32;
  int64_t relative_attention_max_distance = 128;
  int64_t vocab_size = 32128;
  double layer_norm_epsilon = 1e-6;
  /// Only "gated-gelu" (T5 v1.1: wo(gelu_tanh(wi_0 x) * wi_1 x)) is supported.
  std::string feed_forward_proj = "gated-gelu";

  /// num_heads * d_kv, the width of q, k and v.
  int64_t inner_dim() const { return num_heads * d_kv; }

  /// Throws Error(kInvalidArgument) naming the first impossible field, or Error(kUnsupported) for
  /// a feed_forward_proj other than "gated-gelu" (T5 v1.0's "relu" has another FFN layout).
  void validate() const;

  /// A named preset; throws Error(kInvalidArgument) listing the known names.
  static T5Config preset(const std::string& name);
  /// Every preset name ("t5-v1_1-xxl").
  static std::vector<std::string> preset_names();
  /// Reads a Hugging Face T5 `config.json`. The fields above are read when present (missing ones
  /// keep the XXL defaults); every other key (decoder sizes, dropout, token ids, bookkeeping) is
  /// ignored. A field of the wrong type is an Error(kInvalidArgument) naming it; invalid JSON is
  /// Error(kFormat). Validated.
  static T5Config from_json(const std::string& json_text, const std::string& source = "<json>");
  static T5Config from_json_file(const std::string& path);
  /// Infers the architecture from a checkpoint's tensor shapes (shared / embed_tokens, q, wi_0,
  /// relative_attention_bias, the number of encoder blocks). relative_attention_max_distance and
  /// layer_norm_epsilon cannot be seen in the weights and keep the defaults (128, 1e-6). Throws
  /// Error(kNotFound / kShapeMismatch) naming the tensor that is missing or inconsistent.
  static T5Config from_weights(const WeightFile& file);
};

/// Bidirectional T5 relative-position buckets (models.md §6.2): `relative_position` (any integer
/// tensor, key index minus query index) -> int64 buckets in [0, num_buckets). Half the buckets for
/// each sign; exact below num_buckets/4, logarithmic up to max_distance, clamped beyond. The log
/// is taken in float32, as in the reference, so the truncation matches it bit for bit.
at::Tensor t5_relative_position_bucket(const at::Tensor& relative_position, int64_t num_buckets = 32,
                                       int64_t max_distance = 128);

/// T5LayerNorm (RMSNorm): weight * x / sqrt(mean(x^2) + eps) over the last dim; variance in
/// float32, no mean subtraction, no bias; a bf16 weight gets a bf16 result.
at::Tensor t5_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

/// T5LayerNorm as a module with one parameter "weight" [d].
class T5LayerNormImpl : public torch::nn::Module {
 public:
  T5LayerNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;
  double eps;
};
TORCH_MODULE(T5LayerNorm);

/// T5 self-attention ("SelfAttention"): q, k, v, o Linear without bias, NO 1/sqrt(d_kv) scaling
/// (folded into the weights at training time); block 0 also owns relative_attention_bias
/// Embedding [num_buckets, num_heads].
class T5AttentionImpl : public torch::nn::Module {
 public:
  T5AttentionImpl(const T5Config& config, bool has_relative_attention_bias);
  /// x [B, L, d_model], bias [B or 1, H, L, L] (position bias plus key mask, model dtype) ->
  /// [B, L, d_model]. Softmax in float32.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& bias);
  /// The position bias [1, H, L, L] of a length-L sequence from relative_attention_bias (block 0 only).
  at::Tensor compute_bias(int64_t length);

  torch::nn::Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};
  torch::nn::Embedding relative_attention_bias{nullptr};
  int64_t num_heads, d_kv, num_buckets, max_distance;
};
TORCH_MODULE(T5Attention);

/// Gated-GELU feed-forward ("DenseReluDense"): wo(gelu_tanh(wi_0 x) * wi_1 x), no biases.
class T5GatedFFImpl : public torch::nn::Module {
 public:
  explicit T5GatedFFImpl(const T5Config& config);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Linear wi_0{nullptr}, wi_1{nullptr}, wo{nullptr};
};
TORCH_MODULE(T5GatedFF);

/// One encoder block "encoder.block.{i}": layer.0 = {SelfAttention, layer_norm}, layer.1 =
/// {DenseReluDense, layer_norm}, both pre-norm residual.
class T5BlockImpl : public torch::nn::Module {
 public:
  T5BlockImpl(const T5Config& config, bool has_relative_attention_bias);
  /// x [B, L, d_model], bias as T5AttentionImpl::forward -> [B, L, d_model].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& bias);

  T5Attention attention{nullptr};  ///< "layer.0.SelfAttention"
  T5LayerNorm attention_norm{nullptr};  ///< "layer.0.layer_norm"
  T5GatedFF ffn{nullptr};  ///< "layer.1.DenseReluDense"
  T5LayerNorm ffn_norm{nullptr};  ///< "layer.1.layer_norm"
};
TORCH_MODULE(T5Block);

/// The T5 v1.1 encoder (`T5EncoderModel`): parameters named exactly as the Hugging Face keys
/// ("shared.weight", "encoder.block.{i}.layer.0.SelfAttention.q.weight", ...,
/// "encoder.final_layer_norm.weight"). Runs in float32 or bfloat16; float16 is refused because T5
/// overflows in it (models.md §6.1). Dropout is never applied.
class T5EncoderImpl : public torch::nn::Module {
 public:
  explicit T5EncoderImpl(const T5Config& config);

  /// input_ids [B, L] (int64 or int32, ids in [0, vocab_size)), attention_mask [B, L] (any
  /// integer/bool/float type, nonzero = real token; undefined = all real) -> last_hidden_state
  /// [B, L, d_model] in the model's dtype. Padded keys are masked with the dtype's lowest value
  /// (the reference's finfo.min: -inf for the softmax, yet no NaN for an all-padding row); padded
  /// query rows are computed like the reference does. Throws Error(kInvalidArgument /
  /// kShapeMismatch) for bad inputs and Error(kUnsupported) when the weights are float16.
  at::Tensor encode(const at::Tensor& input_ids, const at::Tensor& attention_mask = {});
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {}) {
    return encode(input_ids, attention_mask);
  }

  /// Loads a Hugging Face T5EncoderModel / T5ForConditionalGeneration state dict strictly:
  /// `encoder.embed_tokens.weight` (tied to `shared.weight`) is read when `shared.weight` is
  /// absent and ignored otherwise; `decoder.*` and `lm_head.*` are ignored. The file's
  /// architecture is checked against this config first (naming the differing field). Works on any
  /// WeightFile, e.g. open_checkpoint() of a sharded index.
  void load(const WeightFile& file);

  /// Converts parameters; throws Error(kUnsupported) for float16 (T5 overflows in fp16: use
  /// float32 or bfloat16).
  using torch::nn::Module::to;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;

  const T5Config& config() const { return config_; }

  torch::nn::Embedding shared{nullptr};
  torch::nn::ModuleList block{nullptr};  ///< "encoder.block", T5Block each
  T5LayerNorm final_layer_norm{nullptr};  ///< "encoder.final_layer_norm"

 private:
  T5Config config_;
};
TORCH_MODULE(T5Encoder);

/// Builds an encoder whose config is inferred from the checkpoint at `path` (a weight file, a
/// sharded index JSON or a folder holding either, see open_checkpoint()), loads it and puts it in
/// eval mode. A `config.json` beside the weights, when present, supplies the fields the weights do
/// not show (relative_attention_max_distance, layer_norm_epsilon) and must agree with them.
T5Encoder load_t5_encoder(const std::string& path);

}  // namespace ditcache
