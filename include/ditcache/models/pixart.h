#pragma once
/// \file PixArt-α (PixArt-alpha/PixArt-alpha `PixArt` and `PixArtMS`; diffusers
/// `PixArtTransformer2DModel`): configs, the backbone with its cache sites, and checkpoint loading.
/// Modules carry the original checkpoint's names, so the released `.pth` files (the dict under
/// 'state_dict') load key for key; diffusers safetensors go through pixart_diffusers_key_map().
/// Reference: ../shared/reference/models.md §0, §2; toca.md §2.1 (the cache sites).

#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "ditcache/backbone.h"
#include "ditcache/cache/site.h"
#include "ditcache/models/dit.h"
#include "ditcache/models/stdit3.h"

namespace ditcache {

class WeightFile;
class CacheContext;
class KeyMap;

/// Architecture of a PixArt-α transformer. Field names follow the original `PixArt` class;
/// diffusers' names are given where they differ.
struct PixArtConfig {
  std::string name = "PixArt-XL-2-512";
  int depth = 28;               ///< blocks (diffusers `num_layers`)
  int hidden_size = 1152;       ///< diffusers num_attention_heads * attention_head_dim
  int num_heads = 16;
  int patch_size = 2;
  int in_channels = 4;
  bool pred_sigma = true;       ///< output 2 * in_channels channels (eps, then the variance values)
  double mlp_ratio = 4.0;
  int caption_channels = 4096;  ///< T5-XXL width
  int model_max_length = 120;   ///< caption tokens: rows of the null caption `y_embedder.y_embedding`
  int input_size = 64;          ///< latent side of the training resolution (diffusers `sample_size`): 32 / 64 / 128
  double lewei_scale = 1.0;     ///< position-embedding scale (diffusers `interpolation_scale`): 1 for 256/512, 2 for 1024
  bool micro_conditions = false;  ///< PixArtMS: resolution and aspect-ratio embedders (diffusers `use_additional_conditions`)

  int out_channels() const { return pred_sigma ? 2 * in_channels : in_channels; }
  int head_dim() const { return hidden_size / num_heads; }
  int mlp_hidden() const { return static_cast<int>(hidden_size * mlp_ratio); }
  /// Patch-grid side of the training resolution: the `base_size` of the position embedding.
  int base_size() const { return input_size / patch_size; }

  /// Throws Error(kInvalidArgument) naming the first impossible field.
  void validate() const;
  /// "PixArt-XL-2-256" (latent 32), "PixArt-XL-2-512" (64), "PixArt-XL-2-1024-MS" (128, lewei
  /// scale 2, micro-conditions); the release names "PixArt-XL-2-256x256" and "PixArt-XL-2-512x512"
  /// are accepted too. Throws Error(kInvalidArgument) listing the known names.
  static PixArtConfig preset(const std::string& name);
  /// The canonical preset names.
  static std::vector<std::string> preset_names();
  /// Reads a diffusers `config.json` of `PixArtTransformer2DModel` (or of the older
  /// `Transformer2DModel` the PixArt repositories ship): heads x head dim, layers, channels,
  /// `sample_size`, `interpolation_scale` (null: max(sample_size / 64, 1)),
  /// `use_additional_conditions` (null: sample_size == 128), `caption_channels`, and
  /// ditcache's optional `model_max_length`. Settings PixArt cannot have (another norm_type or
  /// activation, affine or eps != 1e-6 norms, a cross_attention_dim other than the width, ...) and
  /// unknown fields are errors naming the field; training-only fields (dropout, ...) are ignored.
  static PixArtConfig from_json(const std::string& json_text, const std::string& source = "<json>");
  static PixArtConfig from_json_file(const std::string& path);
  /// The architecture of a checkpoint (original or diffusers layout) from its tensor shapes: depth,
  /// width, channels, caption width, micro-conditions (from the size-embedder keys), the null
  /// caption length (original `y_embedding`), and for original files the latent size and lewei
  /// scale from the stored `pos_embed`. Heads are not in the shapes: `num_heads` > 0 sets them,
  /// otherwise the released head dim 72 is assumed (Error(kInvalidArgument) when it does not divide
  /// the width). Without a stored `pos_embed`, input size and lewei scale are the 512 release's
  /// (the 1024-MS release's with micro-conditions). Error(kFormat) when the file is no PixArt.
  static PixArtConfig from_weights(const WeightFile& file, int num_heads = 0);
};

/// Key layouts of PixArt checkpoints.
enum class PixArtLayout {
  kOriginal,   ///< PixArt-alpha `.pth` (`state_dict` of PixArt / PixArtMS), names as this module's
  kDiffusers,  ///< diffusers `PixArtTransformer2DModel` (`transformer_blocks.*`, split q/k/v)
};

/// A checkpoint's layout and the prefix of its keys ("state_dict." for the released `.pth`).
struct PixArtCheckpoint {
  PixArtLayout layout = PixArtLayout::kOriginal;
  std::string prefix;
};

/// Detects the layout of a PixArt checkpoint; Error(kFormat) naming the file when it is none.
PixArtCheckpoint detect_pixart_checkpoint(const WeightFile& file);

/// The key map that reads a diffusers `PixArtTransformer2DModel` state dict into this module
/// layout (models.md §2.4): q/k/v concatenated into `attn.qkv`, k/v into `cross_attn.kv_linear`;
/// the null caption `y_embedder.y_embedding`, absent from diffusers files, is optional.
KeyMap pixart_diffusers_key_map(const PixArtConfig& config);

/// PixArt's fixed 2-D sin-cos position embedding [gh * gw, dim] (float32) for a gh x gw patch
/// grid (models.md §0.2): row r at r / (gh / base_size) / lewei_scale, column c likewise with gw;
/// positions in float32 as both references compute them, sin/cos in float64.
at::Tensor pixart_pos_embed(int64_t dim, int64_t gh, int64_t gw, int base_size, double lewei_scale);

/// What one PixArt forward pass reads (models.md §2.2): x [B, in_channels, h, w] latents (h and w
/// multiples of the patch size), timestep [B] float 0..999 (may be fractional), y [B, L,
/// caption_channels] or [B, 1, L, caption_channels] T5 embeddings, mask [B', L] (or [B', 1, 1, L])
/// nonzero = valid caption token (undefined: all valid), and with micro-conditions resolution
/// [B', 2] (height, width in pixels) and aspect_ratio [B'] or [B', 1] (height / width). B' rows
/// tile the batch (row i uses row i mod B'), as the original repeats the conditional prompt's mask
/// over the CFG batch.
using PixArtInputs = BackboneInputs;

/// The layout of a PixArt pass: `rows` rows of a gh x gw patch grid and `caption_tokens` tokens.
RunShape pixart_run_shape(int64_t rows, bool cfg, int64_t gh, int64_t gw, int64_t caption_tokens);

/// Per-call state the blocks share.
struct PixArtBlockContext {
  const BackboneInfo* info = nullptr;  ///< the model's descriptor (run_block)
  RunShape shape;       ///< B rows of gh x gw patch tokens, L caption tokens
  at::Tensor t_mlp;     ///< [B, 6C] output of the shared `t_block`
  at::Tensor captions;  ///< [B, L, C] projected captions
  at::Tensor key_mask;  ///< [B, 1, 1, L] additive caption mask (0 valid, -inf padding)
};

/// One PixArt block: adaLN-single through its own `scale_shift_table`, self-attention (gated),
/// cross-attention on the raw tokens (no norm, no gate), MLP (gated). Its three modules are the
/// cache sites (layer, spatial, attn | cross_attn | mlp); what a site stores is the module output
/// before its gate (toca.md §2.1).
class PixArtBlockImpl : public torch::nn::Module {
 public:
  explicit PixArtBlockImpl(const PixArtConfig& config);
  /// x [B, N, C] -> [B, N, C]. With a cache context every module runs through it (or the whole
  /// block, when the policy uses block sites) and the block reports its FLOPs.
  at::Tensor forward(const at::Tensor& x, const PixArtBlockContext& ctx, CacheContext* cache = nullptr, int layer = 0);
  /// The block's three module sites through `sites` (cached or direct).
  at::Tensor forward_sites(const at::Tensor& x, const PixArtBlockContext& ctx, BlockRunner& sites);

  at::Tensor scale_shift_table;  ///< [6, C]: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
  DiTAttention attn{nullptr};
  CrossAttention cross_attn{nullptr};
  DiTMLP mlp{nullptr};

 private:
  PixArtConfig config_;
};
TORCH_MODULE(PixArtBlock);

/// PixArt-α's family descriptor: one spatial block per layer with sites self-attention,
/// cross-attention and MLP, steps numbered up, FLOPs from pixart_block_flops, ToCa's PixArt profile.
BackboneInfo backbone_info(const PixArtConfig& config);

/// The PixArt-α backbone (`PixArt`, or `PixArtMS` with micro-conditions).
class PixArtImpl : public torch::nn::Module, public Backbone {
 public:
  explicit PixArtImpl(const PixArtConfig& config);

  /// One forward pass -> [B, out_channels, h, w] float32 (channels 0..in-1: eps; the rest: the
  /// variance values). The position embedding is computed for the input's own patch grid (the
  /// original recomputes it per call for PixArtMS; for the fixed-size PixArt it is the same table
  /// at the training size). Throws Error(kShapeMismatch) naming the input whose shape does not fit,
  /// Error(kInvalidArgument) for missing or superfluous micro-conditions or a caption mask row
  /// without a valid token. With a cache context every block runs through it; the caller brackets
  /// the call with begin_step / end_step and answers a kReuseOutput step itself (StepDriver).
  /// Inputs PixArt does not read (fps, size, x_mask) are refused.
  at::Tensor forward(const PixArtInputs& in, CacheContext* cache = nullptr) override;
  RunShape run_shape(const BackboneInputs& inputs) const override;
  const BackboneInfo& info() const override { return info_; }

  /// Loads an original `.pth` / safetensors (key for key, under any of the prefixes
  /// load_state_dict detects) or a diffusers `PixArtTransformer2DModel` file, strictly, after
  /// checking the file's architecture against this config (names the differing field). An
  /// original non-MS file's stored `pos_embed` must be the table of this config's input_size and
  /// lewei_scale. The null caption is optional (diffusers files have none: has_null_caption()).
  void load(const WeightFile& file) override;

  /// The null caption [model_max_length, caption_channels] (`y_embedder.y_embedding`, the
  /// original's unconditional input for CFG); meaningful only when has_null_caption().
  const at::Tensor& null_caption() const { return y_embedding; }
  /// Whether the null caption came from the loaded file.
  bool has_null_caption() const { return has_null_caption_; }
  const PixArtConfig& config() const { return config_; }

  torch::nn::Conv2d x_embedder{nullptr};
  torch::nn::Linear t_mlp0{nullptr}, t_mlp2{nullptr};
  torch::nn::Linear t_block{nullptr};
  torch::nn::Linear y_fc1{nullptr}, y_fc2{nullptr};
  torch::nn::Linear csize_mlp0{nullptr}, csize_mlp2{nullptr}, ar_mlp0{nullptr}, ar_mlp2{nullptr};  ///< micro-conditions only
  at::Tensor y_embedding, final_scale_shift;
  torch::nn::Linear final_linear{nullptr};
  torch::nn::ModuleList blocks{nullptr};

 private:
  /// The position embedding of a gh x gw grid in the model's dtype and device (kept for the last size).
  const at::Tensor& pos_embed(int64_t gh, int64_t gw);
  PixArtConfig config_;
  BackboneInfo info_;
  bool has_null_caption_ = false;
  at::Tensor pos_cache_;
  int64_t pos_gh_ = 0, pos_gw_ = 0;
};
TORCH_MODULE(PixArt);

/// FLOPs of one PixArt block (toca.md §6 convention) for `rows` rows of `tokens` patch tokens and
/// `caption_tokens` caption tokens when the self-attention computed `attn_queries` queries (its
/// LayerNorm and keys/values over all tokens), the cross-attention `cross_queries` queries and the
/// MLP `mlp_tokens` tokens per row (0 = reused). The adaLN-single modulation (one shared t_block
/// per step) is not counted per block.
double pixart_block_flops(const PixArtConfig& config, int64_t rows, int64_t tokens, int64_t caption_tokens,
                          int64_t attn_queries, int64_t cross_queries, int64_t mlp_tokens);

}  // namespace ditcache
