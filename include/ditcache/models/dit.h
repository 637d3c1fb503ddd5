#pragma once
/// \file DiT (Peebles & Xie, facebookresearch/DiT): configs, the backbone, and its checkpoint
/// loading (original `.pt` key for key; diffusers `DiTTransformer2DModel` through a key map).
/// Reference: ../shared/reference/models.md §0, §1.

#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "ditcache/backbone.h"

namespace ditcache {

class WeightFile;
class CacheContext;

/// Whose numerics a DiT reproduces where the original and diffusers differ (models.md §1.4).
enum class DiTNumerics {
  kOriginal,   ///< facebookresearch/DiT: timestep frequencies 10000^(-i/128), MLP LayerNorm eps 1e-6, CFG on 3 channels
  kDiffusers,  ///< diffusers DiTPipeline: frequencies 10000^(-i/127), MLP LayerNorm eps 1e-5, CFG on all 4 eps channels
};

/// "original" / "diffusers"; parse_dit_numerics throws Error(kInvalidArgument) on anything else.
const char* to_string(DiTNumerics numerics) noexcept;
DiTNumerics parse_dit_numerics(const std::string& text);

/// Architecture of a DiT. Presets: DiT-{S,B,L,XL}/{2,4,8} at 256 or 512 px (latent 32 or 64).
struct DiTConfig {
  std::string name = "DiT-XL/2";
  int depth = 28;
  int hidden_size = 1152;
  int num_heads = 16;
  int patch_size = 2;
  int input_size = 32;  ///< latent height = width (image size / 8 with the SD VAE)
  int in_channels = 4;
  bool learn_sigma = true;  ///< output 2*in_channels channels (eps and variance values)
  int num_classes = 1000;   ///< the label table has num_classes + 1 rows; id num_classes is the null class
  double mlp_ratio = 4.0;
  DiTNumerics numerics = DiTNumerics::kOriginal;

  int out_channels() const { return learn_sigma ? 2 * in_channels : in_channels; }
  int head_dim() const { return hidden_size / num_heads; }
  int grid_size() const { return input_size / patch_size; }
  int num_tokens() const { return grid_size() * grid_size(); }
  int mlp_hidden() const { return static_cast<int>(hidden_size * mlp_ratio); }

  /// Throws Error(kInvalidArgument) naming the first impossible field (e.g. hidden_size not
  /// divisible by num_heads or by 4, input_size not divisible by patch_size).
  void validate() const;

  /// A named preset, e.g. "DiT-XL/2" (256 px), "DiT-XL/2-512", "DiT-S/8-256". Throws
  /// Error(kInvalidArgument) listing the known names.
  static DiTConfig preset(const std::string& name);
  /// Every preset name ("DiT-S/2-256" ... "DiT-XL/8-512").
  static std::vector<std::string> preset_names();
  /// Reads a JSON object of the fields above (missing fields keep the DiT-XL/2 defaults; unknown
  /// fields and wrong types are errors naming the field). Validated.
  static DiTConfig from_json(const std::string& json_text, const std::string& source = "<json>");
  static DiTConfig from_json_file(const std::string& path);
  /// The config as the JSON from_json() reads.
  std::string to_json() const;
  /// Infers the architecture from a checkpoint's tensor shapes (original or diffusers layout), or
  /// reads it from the metadata "ditcache.config" of files ditcache wrote (train_shapes).
  static DiTConfig from_weights(const WeightFile& file);
};

/// Scales and shifts LayerNorm'd tokens: LN(x) * (1 + scale) + shift (models.md §0.3).
/// x [B, N, C]; shift and scale [B, C].
at::Tensor modulate(const at::Tensor& normed, const at::Tensor& shift, const at::Tensor& scale);

/// Sinusoidal timestep features [B, dim], cos half first (models.md §0.1); `freq_divisor` is 128
/// for the original DiT and PixArt, 127 for diffusers' DiT (downscale_freq_shift=1).
at::Tensor timestep_features(const at::Tensor& t, int64_t dim = 256, double freq_divisor = 128);

/// Fixed 2-D sin-cos position embedding [gh*gw, dim] (float32) of a gh x gw grid with per-axis
/// position scales (models.md §0.2): the first dim/2 channels encode the column, the rest the row.
at::Tensor sincos_pos_embed_2d(int64_t dim, int64_t gh, int64_t gw, double row_scale = 1.0,
                               double col_scale = 1.0);

/// timm-layout self-attention: qkv Linear(C -> 3C), heads, proj Linear(C -> C).
class DiTAttentionImpl : public torch::nn::Module {
 public:
  DiTAttentionImpl(int hidden_size, int num_heads);
  /// x [B, N, C] -> [B, n, C]: all tokens as queries, or only `queries` [B, n] (int64 token
  /// indices) against every token's keys and values. With `column_sums`, the attention runs
  /// explicitly and also returns the head-mean attention column sums [B, N] (ToCa's s1).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& queries = {}, at::Tensor* column_sums = nullptr);

  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  int num_heads;
};
TORCH_MODULE(DiTAttention);

/// timm Mlp: fc1 -> GELU(tanh) -> fc2.
class DiTMLPImpl : public torch::nn::Module {
 public:
  DiTMLPImpl(int hidden_size, int mlp_hidden);
  at::Tensor forward(const at::Tensor& x);

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(DiTMLP);

/// adaLN-Zero block. The two module calls are exposed separately (pre-gate outputs) because they
/// are the cache sites of the scheduler.
class DiTBlockImpl : public torch::nn::Module {
 public:
  explicit DiTBlockImpl(const DiTConfig& config);
  /// The six modulation vectors [B, C] each: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp.
  std::vector<at::Tensor> modulation(const at::Tensor& c);
  /// Self-attention output before its gate for tokens x [B, N, C] (see DiTAttentionImpl::forward).
  at::Tensor attention_branch(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale,
                              const at::Tensor& queries = {}, at::Tensor* column_sums = nullptr);
  /// MLP output before its gate for tokens x [B, N, C] (any subset of tokens).
  at::Tensor mlp_branch(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale);
  /// The whole block: x + g_msa * attn(...), then + g_mlp * mlp(...). With a cache context its
  /// sites (layer, spatial, attn | mlp), or the whole block, run through it (run_block) and it
  /// reports its FLOPs; `info` and `shape` are the model's descriptor and the pass's layout.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& c, CacheContext* cache = nullptr, int layer = 0,
                     const BackboneInfo* info = nullptr, const RunShape& shape = {});

  DiTAttention attn{nullptr};
  DiTMLP mlp{nullptr};
  torch::nn::Linear ada_linear{nullptr};  ///< Linear(C -> 6C), registered as "adaLN_modulation.1" like the checkpoint
  int hidden_size;
  double mlp_norm_eps;

 private:
  DiTConfig config_;
};
TORCH_MODULE(DiTBlock);

/// DiT's family descriptor: one spatial block per layer with sites self-attention and MLP, steps
/// numbered down (S-1 .. 0), FLOPs from dit_block_flops, ToCa's DiT profile.
BackboneInfo backbone_info(const DiTConfig& config);

/// The DiT backbone: x [B, Cin, H, W], t [B] (float or int, the original 0..999 index), y [B]
/// (int64 class ids, num_classes = null) -> [B, Cout, H, W].
class DiTImpl : public torch::nn::Module, public Backbone {
 public:
  explicit DiTImpl(const DiTConfig& config);

  /// One forward pass; H = W = input_size. With a cache context, every block runs through it (the
  /// caller, a StepDriver, brackets the call with begin_step / end_step).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y, CacheContext* cache = nullptr);
  /// Backbone: reads x, timestep and y (class ids); refuses every other input.
  at::Tensor forward(const BackboneInputs& inputs, CacheContext* cache) override;
  RunShape run_shape(const BackboneInputs& inputs) const override;
  const BackboneInfo& info() const override { return info_; }
  /// Classifier-free guidance on a doubled batch [cond; uncond] (labels [y; null]), as the
  /// original `forward_with_cfg`: guides the first 3 eps channels (original numerics) or all eps
  /// channels (diffusers numerics) and writes the guided half to both halves; variance channels
  /// keep each branch's own prediction.
  at::Tensor forward_with_cfg(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y, double scale,
                              CacheContext* cache = nullptr);


  /// Loads an original (`x_embedder...`) or diffusers (`transformer_blocks...`) checkpoint, strictly;
  /// checks the file's architecture against this config first and names the differing field.
  void load(const WeightFile& file) override;

  const DiTConfig& config() const { return config_; }

  torch::nn::Conv2d x_embedder_proj{nullptr};
  torch::nn::Linear t_mlp0{nullptr}, t_mlp2{nullptr};
  torch::nn::Embedding y_table{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::Linear final_adaLN{nullptr}, final_linear{nullptr};
  at::Tensor pos_embed;  ///< [1, N, C], fixed sin-cos (loaded when the file has it)

 private:
  at::Tensor embed(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y, at::Tensor& c);
  at::Tensor final_layer(const at::Tensor& x, const at::Tensor& c);
  at::Tensor unpatchify(const at::Tensor& tokens);
  DiTConfig config_;
  BackboneInfo info_;
};
TORCH_MODULE(DiT);

/// DiT's training initialisation (models.py initialize_weights), drawn from torch's global
/// generator: Xavier-uniform linears with zero biases, the patch projection Xavier-uniform as a
/// linear, label embeddings and timestep MLP N(0, 0.02), and every adaLN modulation and the final
/// linear zero (adaLN-Zero: each block starts as the identity).
void init_dit_weights(DiTImpl& model);

/// FLOPs of one DiT block (toca.md §6) for `rows` rows when the attention computed
/// `attn_queries` queries and the MLP `mlp_tokens` tokens per row (0 = reused).
double dit_block_flops(const DiTConfig& config, int64_t rows, int64_t attn_queries, int64_t mlp_tokens);

/// The layout of a DiT run of `rows` model rows (CFG halves included).
RunShape dit_run_shape(const DiTConfig& config, int64_t rows, bool cfg);

/// The key map that reads a diffusers `DiTTransformer2DModel` state dict into this module layout.
class KeyMap;
KeyMap dit_diffusers_key_map(const DiTConfig& config);

}  // namespace ditcache
