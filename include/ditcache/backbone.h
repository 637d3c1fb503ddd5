#pragma once
/// \file The model interface every family implements (design.md §2): a descriptor of what the
/// cache runtime needs to know of a family (its blocks and module sites, step numbering, the FLOPs
/// of a block, its ToCa schedule), the inputs of one forward pass, the model itself, and the block
/// runner through which every block calls its module sites, cached or not. The run info a policy
/// sees, the FLOPs-only walk and whole-block caching are built from the descriptor here, once for
/// every family (docs/adding-a-model.md).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include "ditcache/cache/context.h"
#include "ditcache/cache/policy.h"
#include "ditcache/cache/site.h"

namespace ditcache {

class WeightFile;
struct ToCaProfile;

/// The token layout of one run (or one forward pass): `rows` model rows (CFG halves included) of
/// frames x grid_h x grid_w patch tokens, and `context_tokens` caption tokens (0: no text).
struct RunShape {
  int64_t rows = 0;
  bool cfg = false;                 ///< rows are two halves [cond; uncond] or [uncond; cond]
  int64_t frames = 1;
  int64_t grid_h = 0, grid_w = 0;   ///< patch grid of one frame
  int64_t context_tokens = 0;
  /// Tokens per row: frames * grid_h * grid_w.
  int64_t tokens() const { return frames * grid_h * grid_w; }
};

/// Tokens per row that each module site of one block computed (0: reused).
struct SiteTokens {
  int64_t self_attention = 0, cross_attention = 0, mlp = 0;
  /// The count of a module site kind; Error(kInvalidArgument) for SiteKind::kBlock.
  int64_t& operator[](SiteKind kind);
  int64_t operator[](SiteKind kind) const { return const_cast<SiteTokens&>(*this)[kind]; }
  /// Every site kind at `tokens`.
  static SiteTokens all(int64_t tokens) { return {tokens, tokens, tokens}; }
};

/// What the cache runtime knows of a model family, from its config alone (no weights): enough to
/// tell a policy about a run, to count a run's FLOPs without running it, and to run ToCa on it.
struct BackboneInfo {
  std::string family;                    ///< "DiT", "PixArt", "STDiT3": names the model in messages and traces
  std::string name;                      ///< the config's name ("DiT-XL/2")
  int depth = 0;                         ///< layers
  std::vector<BlockKind> block_kinds{BlockKind::kSpatial};  ///< blocks of a layer, in call order
  std::vector<SiteKind> site_kinds;      ///< module sites of every block, in call order
  bool step_index_counts_down = false;   ///< the sampler numbers model calls S-1 .. 0 (DiT) instead of 0 .. S-1
  /// FLOPs (toca.md §6) of one block of kind `block` over `shape` when its module sites computed
  /// `computed` tokens per row (0: reused). Full cost: SiteTokens::all(shape.tokens()).
  std::function<double(BlockKind block, const RunShape& shape, const SiteTokens& computed)> block_flops;
  /// How ToCa runs on this family (null: ToCa and `random` refuse it).
  std::shared_ptr<const ToCaProfile> toca;

  /// The uncached FLOPs of one block of kind `block`.
  double full_block_flops(BlockKind block, const RunShape& shape) const;
  /// Throws Error(kInvalidArgument) naming the first missing or impossible field.
  void validate() const;
};

/// What a cache policy is told about a run of `info` over `shape` with `num_steps` model calls.
RunInfo make_run_info(const BackboneInfo& info, const RunShape& shape, int num_steps, const std::string& sampler);

/// FLOPs-only: the current step's decisions of every site through `cache` (dry mode: no tensors),
/// counted with the family's block FLOPs exactly as a real forward counts them; a kReuseOutput
/// step adds 0 of the full cost. Call between begin_step and end_step.
void count_step_flops(const BackboneInfo& info, const RunShape& shape, CacheContext& cache);

/// One block's module sites in a forward pass: each runs through the cache context when there is
/// one (the policy decides compute, reuse or partial), directly otherwise; it counts the tokens
/// each module computed, and finish() reports the block's FLOPs to the cache. The same block code
/// serves cached and uncached runs.
class BlockRunner {
 public:
  BlockRunner(CacheContext* cache, const BackboneInfo& info, BlockKind kind, int layer, const RunShape& shape);
  /// An attention-like site: `module(x, queries, stats)` with all tokens x [B, N, C] and the query
  /// tokens `queries` [B, n] (undefined: all); see AttentionModule.
  at::Tensor attention(SiteKind kind, const at::Tensor& x, const AttentionModule& module);
  /// A token-wise site: `module(rows)` maps any subset of a row's tokens [B, n, C] to outputs.
  at::Tensor token_wise(SiteKind kind, const at::Tensor& x, const TokenModule& module);
  /// Reports the FLOPs of what ran (cached runs only); called once, after the block's last site.
  void finish();
  /// Whether the sites run through a cache context.
  bool cached() const { return cache_ != nullptr; }

 private:
  Site site(SiteKind kind) const { return {layer_, kind_, kind}; }
  CacheContext* cache_;
  const BackboneInfo& info_;
  BlockKind kind_;
  int layer_;
  RunShape shape_;
  SiteTokens computed_;
};

/// Runs one block: the whole block as one cache site (SiteKind::kBlock) when the policy caches
/// blocks, otherwise `body(x, sites)` with its module sites through `sites`. Without a cache
/// context `body` runs directly. x [B, N, C] -> the block output [B, N, C].
at::Tensor run_block(CacheContext* cache, const BackboneInfo& info, BlockKind kind, int layer, const RunShape& shape,
                     const at::Tensor& x, const std::function<at::Tensor(const at::Tensor& x, BlockRunner& sites)>& body);

/// What one forward pass is conditioned on. The field names are the reference implementations'
/// (all three call the condition `y`); a family reads the fields it documents and refuses the
/// others (Error(kInvalidArgument) naming the field), so nothing is silently ignored. Rows: `x` and
/// `timestep` have the model batch B; per-prompt conditions may have B or a divisor B' of it
/// (row i uses row i mod B', as the references tile the conditional prompt over the CFG batch).
struct BackboneInputs {
  at::Tensor x;             ///< latents [B, C, H, W] (images) or [B, C, T, H, W] (video)
  at::Tensor timestep;      ///< [B] the model time (DiT: int64 0..999; PixArt: float 0..999; STDiT3: float 0..1000)
  at::Tensor y;             ///< DiT: class ids [B] (num_classes = null); PixArt, STDiT3: caption embeddings [B, L, C] or [B, 1, L, C]
  at::Tensor mask;          ///< caption mask [B', L] nonzero = valid token; undefined: all valid
  at::Tensor resolution;    ///< PixArtMS: [B', 2] (height, width) in pixels
  at::Tensor aspect_ratio;  ///< PixArtMS: [B'] or [B', 1] height / width
  at::Tensor fps;           ///< STDiT3: [B'] frames per second
  double height = 0;        ///< STDiT3: pixel height of the target video
  double width = 0;         ///< STDiT3: pixel width
  at::Tensor x_mask;        ///< STDiT3: [B, T] bool, frames where false use the timestep-0 modulation
};

/// Throws Error(kInvalidArgument) when `inputs` sets a field that `family` does not read: every
/// field not in `used` ("mask", "resolution", "aspect_ratio", "fps", "size", "x_mask"; x,
/// timestep and y are always used).
void reject_unused_inputs(const BackboneInputs& inputs, const std::string& family, const std::vector<std::string>& used);

/// The model interface: one forward pass through an optional cache context, strict loading, and
/// the family descriptor. DiT, PixArt and STDiT3 implement it next to their LibTorch modules.
class Backbone {
 public:
  virtual ~Backbone() = default;
  /// The family descriptor of this model's config.
  virtual const BackboneInfo& info() const = 0;
  /// One forward pass -> the model output [B, Cout, ...] (float32 for PixArt and STDiT3, the model
  /// dtype for DiT). With a cache context every block runs through it; the caller (StepDriver)
  /// brackets the call with begin_step / end_step and answers whole-step reuse itself.
  virtual at::Tensor forward(const BackboneInputs& inputs, CacheContext* cache) = 0;
  /// The token layout `inputs` give (rows, grid, caption tokens).
  virtual RunShape run_shape(const BackboneInputs& inputs) const = 0;
  /// Loads a checkpoint strictly (names every missing, unexpected or mis-shaped tensor).
  virtual void load(const WeightFile& file) = 0;
};

}  // namespace ditcache
