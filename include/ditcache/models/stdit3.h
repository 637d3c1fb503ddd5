#pragma once
/// \file OpenSora 1.2's STDiT3 (hpcaitech/Open-Sora `STDiT3`, released as OpenSora-STDiT-v3): spatial
/// and temporal transformer blocks alternating over a latent video, text cross-attention in every
/// block, adaLN-single modulation and the fps embedding. Loads the released `model.safetensors` key
/// for key. Reference: ../shared/reference/models.md §0, §3.

#include <string>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "ditcache/backbone.h"
#include "ditcache/cache/site.h"

namespace ditcache {

class WeightFile;
class CacheContext;

/// Architecture of an STDiT3. Field names follow the reference's `STDiT3Config`.
struct STDiT3Config {
  std::string name = "STDiT3-XL/2";
  int depth = 28;               ///< spatial blocks (and as many temporal blocks)
  int hidden_size = 1152;
  int num_heads = 16;           ///< head dim hidden_size / num_heads must be even (RoPE pairs)
  int patch_t = 1, patch_h = 2, patch_w = 2;  ///< `patch_size` (t, h, w)
  int in_channels = 4;
  bool pred_sigma = true;       ///< output 2 * in_channels channels (the second half is unused at inference)
  double mlp_ratio = 4.0;
  int caption_channels = 4096;  ///< T5-XXL width
  int model_max_length = 300;   ///< caption tokens (rows of the null caption)
  bool qk_norm = true;          ///< RMSNorm of q and k per head in the self-attention
  int input_sq_size = 512;      ///< pixel size at which the spatial position scale is 1

  int out_channels() const { return pred_sigma ? 2 * in_channels : in_channels; }
  int head_dim() const { return hidden_size / num_heads; }
  int mlp_hidden() const { return static_cast<int>(hidden_size * mlp_ratio); }

  /// Throws Error(kInvalidArgument) naming the first impossible field.
  void validate() const;
  /// "STDiT3-XL/2" (the release: 28 blocks, 1152 wide, 16 heads) or "STDiT3-3B/2" (1872, 26 heads).
  static STDiT3Config preset(const std::string& name);
  /// Reads the reference's config JSON (`config.json` of the release, or the `config` metadata of a
  /// weight file): the fields above, `patch_size` as [t, h, w]; flags of the reference that do not
  /// change the function (flash attention, fused LayerNorm, sequence parallelism, dropout) are
  /// accepted and ignored; any other unknown field or a wrong type is an error naming it.
  static STDiT3Config from_json(const std::string& json_text, const std::string& source = "<json>");
  /// The architecture of a checkpoint, from its tensor shapes (head dim from the q-norm weight) and,
  /// where the file carries it, its `config` metadata. Error(kFormat) when the file is no STDiT3.
  static STDiT3Config from_weights(const WeightFile& file);
};

/// What one STDiT3 forward pass reads (models.md §3.2): x [B, Cin, T, h, w] latent video,
/// timestep [B] float 0..1000 (1000 = pure noise), y [B, L, caption_channels] or [B, 1, L,
/// caption_channels] caption embeddings, mask [B', L] (1 = valid caption token, a prefix;
/// undefined: all valid), fps [B'] frames per second (24 for video, 120 for an image), height and
/// width the target video's pixel size (the position-embedding scale), x_mask [B, T] bool (frames
/// where false use the timestep-0 modulation; undefined: none). B' rows tile the batch (row i uses
/// row i mod B'), as the reference tiles them for the CFG batch.
using STDiT3Inputs = BackboneInputs;

/// The layout of an STDiT3 pass: `rows` rows of `frames` x gh x gw patch tokens and `caption_tokens` tokens.
RunShape stdit3_run_shape(int64_t rows, bool cfg, int64_t frames, int64_t gh, int64_t gw, int64_t caption_tokens);

/// Self-attention of an STDiT3 block: qkv, RMSNorm of q and k per head, RoPE on the temporal
/// blocks, softmax attention (fp32 softmax), proj. Works on sequences [R, L, C] (a frame's tokens
/// for spatial blocks, a location's frames for temporal blocks).
class STDiT3AttentionImpl : public torch::nn::Module {
 public:
  STDiT3AttentionImpl(const STDiT3Config& config, bool rope);
  /// x [R, L, C] -> [R, L, C]; `rope_angles` [L, head_dim] interleaved angles (temporal blocks);
  /// with `column_sums` the attention runs explicitly and returns the head-mean probability column
  /// sums [R, L].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& rope_angles = {}, at::Tensor* column_sums = nullptr);

  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  at::Tensor q_norm, k_norm;  ///< RMSNorm weights [head_dim] ("q_norm.weight", "k_norm.weight")
  int num_heads;
  bool rope;
};
TORCH_MODULE(STDiT3Attention);

/// Text cross-attention (PixArt's and OpenSora's `MultiHeadCrossAttention`): every image token
/// attends to its own row's valid caption tokens. No norm, no gate.
class CrossAttentionImpl : public torch::nn::Module {
 public:
  CrossAttentionImpl(int hidden_size, int num_heads);
  /// Keys and values [B, H, L, hd] each of the (projected) captions [B, L, C].
  std::pair<at::Tensor, at::Tensor> key_values(const at::Tensor& captions);
  /// Queries x [B, n, C] (any subset of a row's tokens) against the row's keys and values with the
  /// additive key mask [B, 1, 1, L] (0 valid, -inf padding) -> [B, n, C]. With `probabilities` the
  /// attention runs explicitly and also returns the head-mean probabilities [B, n, L] (ToCa's s2).
  at::Tensor forward(const at::Tensor& x, const std::pair<at::Tensor, at::Tensor>& kv, const at::Tensor& key_mask,
                     at::Tensor* probabilities = nullptr);

  torch::nn::Linear q_linear{nullptr}, kv_linear{nullptr}, proj{nullptr};
  int num_heads;
};
TORCH_MODULE(CrossAttention);

/// timm Mlp with the tanh GELU (fc1 -> GELU -> fc2).
class STDiT3MLPImpl : public torch::nn::Module {
 public:
  STDiT3MLPImpl(int hidden_size, int mlp_hidden);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(STDiT3MLP);

/// Per-call state the blocks share: sizes, modulation, captions, RoPE angles.
struct STDiT3BlockContext {
  const BackboneInfo* info = nullptr;  ///< the model's descriptor (run_block)
  RunShape shape;            ///< B rows of T x gh x gw patch tokens, L caption tokens
  int64_t batch = 0, frames = 0, tokens = 0;  ///< B, T, S (spatial tokens per frame)
  at::Tensor t_mlp;          ///< [B, 6C] t_block output of (timestep + fps)
  at::Tensor t0_mlp;         ///< [B, 6C] the same for timestep 0 (x_mask only)
  at::Tensor frame_is_cond;  ///< [B, T, 1] bool x_mask (undefined: none)
  at::Tensor captions;       ///< [B, L, C] projected captions
  at::Tensor key_mask;       ///< [B, 1, 1, L] additive caption mask
  at::Tensor rope_angles;    ///< [T, head_dim]
};

/// One STDiT3 block, spatial or temporal (the same weights layout): adaLN-single through its own
/// `scale_shift_table`, self-attention, cross-attention, MLP. Its three modules are the cache sites
/// (layer, spatial|temporal, attn|cross_attn|mlp).
class STDiT3BlockImpl : public torch::nn::Module {
 public:
  STDiT3BlockImpl(const STDiT3Config& config, BlockKind kind);
  /// x [B, T*S, C] (frame-major tokens) -> [B, T*S, C]; with a cache context every module runs
  /// through it and the block reports its FLOPs.
  at::Tensor forward(const at::Tensor& x, const STDiT3BlockContext& ctx, CacheContext* cache = nullptr, int layer = 0);
  /// The block's three module sites through `sites` (cached or direct).
  at::Tensor forward_sites(const at::Tensor& x, const STDiT3BlockContext& ctx, BlockRunner& sites);

  at::Tensor scale_shift_table;  ///< [6, C]: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
  STDiT3Attention attn{nullptr};
  CrossAttention cross_attn{nullptr};
  STDiT3MLP mlp{nullptr};
  BlockKind kind;

 private:
  /// The self-attention over frames (spatial) or over time (temporal) of modulated tokens
  /// [B, T*S, C]; `queries` [B, n] selects output tokens (computed over all, then gathered).
  at::Tensor self_attention(const at::Tensor& h, const STDiT3BlockContext& ctx, const at::Tensor& queries,
                            at::Tensor* column_sums);
  STDiT3Config config_;
};
TORCH_MODULE(STDiT3Block);

/// STDiT3's family descriptor: a spatial then a temporal block per layer, each with sites
/// self-attention, cross-attention and MLP, steps numbered up, FLOPs from stdit3_block_flops,
/// ToCa's OpenSora profile.
BackboneInfo backbone_info(const STDiT3Config& config);

/// The STDiT3 backbone.
class STDiT3Impl : public torch::nn::Module, public Backbone {
 public:
  explicit STDiT3Impl(const STDiT3Config& config);

  /// One forward pass -> [B, out_channels, T, h, w] (float32; channels 0..Cin-1 are the velocity).
  /// Odd h or w are zero-padded for patching and the output cropped back. Throws
  /// Error(kShapeMismatch) naming the input whose shape does not fit. With a cache context every
  /// block runs through it (the caller, a StepDriver, brackets the call with begin_step / end_step).
  /// Inputs STDiT3 does not read (resolution, aspect_ratio) are refused.
  at::Tensor forward(const STDiT3Inputs& in, CacheContext* cache = nullptr) override;
  RunShape run_shape(const BackboneInputs& inputs) const override;
  const BackboneInfo& info() const override { return info_; }

  /// Loads a released `model.safetensors` (or a ditcache-written file) strictly, after checking
  /// the file's architecture against this config (names the differing field).
  void load(const WeightFile& file) override;

  /// The null caption [model_max_length, caption_channels] (`y_embedder.y_embedding`).
  const at::Tensor& null_caption() const { return y_embedding; }
  const STDiT3Config& config() const { return config_; }

  torch::nn::Conv3d x_embedder{nullptr};
  torch::nn::Linear t_mlp0{nullptr}, t_mlp2{nullptr}, fps_mlp0{nullptr}, fps_mlp2{nullptr};
  torch::nn::Linear t_block{nullptr};
  torch::nn::Linear y_fc1{nullptr}, y_fc2{nullptr};
  at::Tensor y_embedding, rope_freqs, final_scale_shift;
  torch::nn::Linear final_linear{nullptr};
  torch::nn::ModuleList spatial_blocks{nullptr}, temporal_blocks{nullptr};

 private:
  STDiT3Config config_;
  BackboneInfo info_;
};
TORCH_MODULE(STDiT3);

/// OpenSora's spatial position embedding [gh*gw, dim] (float32) for a gh x gw patch grid of a
/// video `height` x `width` pixels: the 2-D sin-cos table at base size round(sqrt(gh*gw)) and scale
/// sqrt(height*width) / input_sq_size (models.md §0.2).
at::Tensor opensora_pos_embed(int64_t dim, int64_t gh, int64_t gw, double height, double width, int input_sq_size = 512);

/// Interleaved rotary angles [length, 2*freqs.size(0)]: angle(pos, 2j) = angle(pos, 2j+1) = pos * freqs[j].
at::Tensor rope_angles(const at::Tensor& freqs, int64_t length);
/// Rotates adjacent channel pairs of x [..., L, D] by `angles` [L, D] (rotary-embedding-torch layout).
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& angles);

/// FLOPs of one STDiT3 block for `rows` rows of T frames x S tokens with `caption_tokens` text
/// tokens, when the self-attention computed `attn_queries`, the cross-attention `cross_queries`
/// and the MLP `mlp_tokens` tokens per row (0 = reused).
double stdit3_block_flops(const STDiT3Config& config, BlockKind kind, int64_t rows, int64_t frames, int64_t tokens,
                          int64_t caption_tokens, int64_t attn_queries, int64_t cross_queries, int64_t mlp_tokens);

}  // namespace ditcache
