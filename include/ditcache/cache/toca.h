#pragma once
/// \file ToCa (Zou et al., "Accelerating Diffusion Transformers with Token-wise Feature Caching",
/// ICLR 2025) as the official code runs it (../shared/reference/toca.md §2-§3): the policy's
/// parameters, and the per-family profile through which a model family tells the policy its
/// schedule and paper settings (the policy itself knows no family; docs/adding-a-model.md).

#include <cstdint>
#include <functional>
#include <string>
#include <vector>


#include "ditcache/cache/site.h"

namespace ditcache {

/// Parameters of the `toca` and `random` policies (docs/caching.md lists meaning and ranges).
struct ToCaConfig {
  /// r0, `fresh_ratio`: base share of tokens recomputed at partial steps; kAuto = the family's
  /// paper value (ToCaProfile::ratio: DiT 0.07, PixArt 0.30, OpenSora 0.10).
  double ratio = kAuto;
  /// The schedule by name, one of the run's family (ToCaProfile::schedules: DiT "ddim50" and
  /// "ddpm250", PixArt "pixart", STDiT3 "opensora"), or "auto" (the family's choice: DiT ddim50 for
  /// DDIM, ddpm250 otherwise). A name the family lacks is refused when the run starts.
  std::string schedule = "auto";
  int interval = 0;               ///< N, `fresh_threshold`: force-activation cycle (DiT, PixArt) / s3 scale (OpenSora); 0 = the schedule's paper value (DiT 3 / 4, PixArt 3, OpenSora 3)
  std::string mode = "reference"; ///< "reference": per-block re-evaluation as the official code ("mixed steps"); "clean": one decision per step
  double staleness_weight = 0.25; ///< λ3, `soft_fresh_weight`: weight of s3 (ages / N)
  double spread_bonus = kAuto;    ///< β of s4: the best token of each g x g block gets score * (1 + β); 0 disables; kAuto: the family's (DiT 0.6, PixArt 0.4, OpenSora 0: off)
  int spread_grid = kAutoGrid;    ///< g of s4; kAutoGrid: the family's (DiT 2, PixArt 4: the values the official code hard-codes)
  std::string score = "attention";///< "attention" (s1) or "random" (uniform, seeded, shared by the CFG halves)
  uint64_t seed = 0;              ///< seed of the random score

  /// Throws Error(kInvalidArgument) naming the first out-of-range field.
  void validate() const;

  /// The value of `ratio` and `spread_bonus` that means "the model's paper value" ("auto" in option strings).
  static constexpr double kAuto = -1;
  /// The value of `spread_grid` that means "the model's reference grid" ("grid=auto").
  static constexpr int kAutoGrid = 0;
};

/// How ToCa runs on one model family: the official code's schedule for it and the paper's
/// settings (toca.md §2-§5). A family folder builds one (e.g. models/dit/dit_toca.cpp) and hands it
/// to the policy through its BackboneInfo (RunInfo::toca); a family without one cannot run ToCa.
struct ToCaProfile {
  /// One named schedule: when a site is computed whole, and how many tokens a partial site
  /// recomputes. Exactly one of force_interval and full_step is set.
  struct Schedule {
    std::string name;  ///< what `schedule=` names ("ddim50")
    int interval = 3;  ///< N's paper value under this schedule (`interval=0`)
    /// Forced activation (DiT, PixArt): after a full step, the interval to the next one, from the
    /// step index (the family's numbering), the run's steps, N and r0. Whole blocks are full or
    /// partial, decided at the block's first site (per block in mode=reference).
    std::function<double(int step, int num_steps, int interval, double ratio)> force_interval;
    /// Fixed cycles (OpenSora): whether a site of `kind` is computed whole at step `step`.
    std::function<bool(int step, SiteKind kind)> full_step;
    /// The share of tokens a partial site recomputes, before clamping to [0, 1]: r0 scaled by the
    /// step, the layer (`last_layer` = depth - 1) and the site kind (<= 0: none).
    std::function<double(double r0, int step, int num_steps, int layer, int last_layer, SiteKind kind)> fresh_ratio;
  };
  std::vector<Schedule> schedules;  ///< the first is `schedule=auto`'s unless auto_schedule says otherwise
  /// `schedule=auto`'s choice for a run (e.g. by sampler); null: the first schedule.
  std::function<std::string(const std::string& sampler)> auto_schedule;
  /// Whether the schedules' step index counts down (DiT's S-1 .. 0); a run numbered otherwise is refused.
  bool step_index_counts_down = false;
  double ratio = 0.07;   ///< r0 of `ratio=auto`
  double bonus = 0;      ///< β of `bonus=auto` (0: s4 off)
  int grid = 2;          ///< g of `grid=auto`
  /// Whether s4 may run at all (false: `bonus` > 0 is refused, as OpenSora's code disables it).
  bool bonus_supported = true;
  /// Where the attention score comes from: kSelfAttention: s1, the column sums of the whole
  /// self-attention map at full steps; kCrossAttention: s2, the caption-attention entropy.
  SiteKind score_site = SiteKind::kSelfAttention;
  /// s2 only: a partial cross-attention reports the recomputed tokens' rows (PixArt's
  /// update_cache), so their entropy terms stay current.
  bool refresh_partial_rows = false;
  /// Site kinds reused whole at partial steps (ToCa never recomputes self-attention partially).
  std::vector<SiteKind> reused_whole{SiteKind::kSelfAttention};

  /// The schedule named `name`, or nullptr.
  const Schedule* find(const std::string& name) const;
  /// The names of the schedules, comma-separated ("ddim50, ddpm250").
  std::string schedule_names() const;
};

}  // namespace ditcache
