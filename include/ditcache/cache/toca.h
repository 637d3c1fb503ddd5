#pragma once
/// \file ToCa (Zou et al., "Accelerating Diffusion Transformers with Token-wise Feature Caching",
/// ICLR 2025) as the official DiT-ToCa code runs it (../shared/reference/toca.md §2-§3). The
/// schedule and score functions are public so tests can check them against hand-computed cases.

#include <cstdint>
#include <string>

#include <ATen/Tensor.h>

#include "ditcache/cache/site.h"

namespace ditcache {

/// Parameters of the `toca` and `random` policies (docs/caching.md lists meaning and ranges).
struct ToCaConfig {
  /// r0, `fresh_ratio`: base share of tokens recomputed at partial steps; kAuto = the model's
  /// paper value (DiT 0.07, PixArt 0.30, OpenSora 0.10).
  double ratio = kAuto;
  /// ratio schedule: "ddim50", "ddpm250" (DiT), "pixart" (PixArt-α's `ToCa`), "opensora" (STDiT3),
  /// or "auto" (DiT: ddim50 for DDIM, ddpm250 otherwise; PixArt: pixart; STDiT3: opensora).
  std::string schedule = "auto";
  int interval = 0;               ///< N, `fresh_threshold`: force-activation cycle (DiT, PixArt) / s3 scale (OpenSora); 0 = the paper value (DiT 3 / 4, PixArt 3, OpenSora 3)
  std::string mode = "reference"; ///< "reference": per-block re-evaluation as the official code ("mixed steps"); "clean": one decision per step
  double staleness_weight = 0.25; ///< λ3, `soft_fresh_weight`: weight of s3 (ages / N)
  double spread_bonus = kAuto;    ///< β of s4: the best token of each g x g block gets score * (1 + β); 0 disables; kAuto: DiT 0.6, PixArt 0.4, OpenSora 0 (off)
  int spread_grid = kAutoGrid;    ///< g of s4; kAutoGrid: DiT 2, PixArt 4 (the values the official code hard-codes)
  std::string score = "attention";///< "attention" (s1) or "random" (uniform, seeded, shared by the CFG halves)
  uint64_t seed = 0;              ///< seed of the random score

  /// Throws Error(kInvalidArgument) naming the first out-of-range field.
  void validate() const;

  /// The value of `ratio` and `spread_bonus` that means "the model's paper value" ("auto" in option strings).
  static constexpr double kAuto = -1;
  /// The value of `spread_grid` that means "the model's reference grid" ("grid=auto").
  static constexpr int kAutoGrid = 0;
};

namespace toca {

/// The interval after a full step (`force_scheduler`): round_half_even(float32(N / f)) with
/// f = float32(1 + w - 2 w step / S), w = 0.4 (0 when ratio == 0); 2 inside the sensitive window
/// int(0.2 S) <= step < int(0.4 S) when ratio != 0. `step` counts down from S - 1 (DiT).
double force_interval(int step, int num_steps, int interval, double ratio);

/// The fresh ratio of a DiT schedule (`fresh_ratio_scheduler`, "ToCa-ddim50" / "ToCa-ddpm250"):
/// r0 * layer_factor * step_factor * module_factor, before clamping. `last_layer` is depth - 1
/// (27 for DiT-XL, where the official code hard-codes 27).
double fresh_ratio(const std::string& schedule, double r0, int step, int num_steps, int layer, int last_layer, SiteKind module);

/// PixArt-α's interval after a full step (PixArt `force_scheduler`): round_half_even(float32(N / f))
/// with f = float32(1 - w + 2 w step / S), w = 0.2 (0 when ratio == 0); no sensitive window. `step`
/// counts up from 0 (DPM-Solver order), so the interval shrinks from N / 0.8 to N / 1.2.
double pixart_force_interval(int step, int num_steps, int interval, double ratio);

/// PixArt-α's fresh ratio (ratio_scheduler 'ToCa' of the PixArt code): r0 * layer_factor *
/// step_factor * module_factor with step_factor = 1 + 0.9 - 1.8 step / S (step counting up),
/// layer_factor = 1 + 0.6 - 1.2 layer / last_layer (27 in the official code), module_factor 0.6 for
/// the cross-attention and 1.6 for the MLP (module weight 1.0, module time weight 0.6), before clamping.
double pixart_fresh_ratio(double r0, int step, int num_steps, int layer, int last_layer, SiteKind module);

/// OpenSora's fresh ratio (ratio_scheduler 'ToCa' of the OpenSora code: no step or layer factor,
/// module weight 1.5, module time weight 0.33): r0 * (1 + 0.33 * 1.5) for the MLP, r0 * (1 - 0.67 *
/// 1.5) (negative: nothing recomputed) for attention and cross-attention, before clamping.
double video_fresh_ratio(double r0, SiteKind module);

/// OpenSora's per-module full steps: steps 0-2 always, then every 3rd step for self-attention and
/// the MLP and every 6th for cross-attention (step counts up from 0).
bool video_full_step(int step, SiteKind module);

/// The per-row terms of s2 as the official PixArt / OpenSora code computes it, where every row's
/// valid caption tokens are concatenated along one key axis (a block-diagonal mask), so the CFG
/// average 0.5 M_cond + 0.5 M_uncond has the two halves' probabilities on disjoint keys: from the
/// head-mean probabilities p [B, n, L] of each row over its own caption tokens (0 on padding),
/// t = -sum_l w p log(w p + 1e-7) with w = 0.5 under CFG (1 without) -> [B, n] float32. A token's
/// entropy is t[cond row] + t[uncond row] (CFG) or t (no CFG); see concatenated_entropy_score.
at::Tensor concatenated_entropy_terms(const at::Tensor& probabilities, bool cfg);

/// s2 from those terms [B, N]: e = t[first half] + t[second half] (CFG) or t, then
/// L2-normalise(1 + e) per row -> [B/2, N] (CFG) or [B, N]; the same vector serves both halves.
at::Tensor concatenated_entropy_score(const at::Tensor& terms, bool cfg);

/// Tokens recomputed per row: trunc(float32(clamp(float32(ratio), 0, 1)) * N).
int64_t fresh_tokens(double ratio, int64_t num_tokens);

/// s4: in every g x g block of the (grid_h x grid_w) token grid, the highest score gets β times
/// itself added. score [B, N] -> [B, N]. Throws Error(kInvalidArgument) when g does not divide the grid.
at::Tensor spread_bonus(const at::Tensor& score, int64_t grid_h, int64_t grid_w, int g, double beta);

/// s1 from head-mean attention column sums [B, N]: L2-normalised per row (eps 1e-12).
at::Tensor attention_score(const at::Tensor& column_sums);

/// The k highest-scoring tokens of each row: descending sort, first k. score [B, N] -> [B, k] int64.
at::Tensor select_top(const at::Tensor& score, int64_t k);

}  // namespace toca
}  // namespace ditcache
