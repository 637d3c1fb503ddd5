#pragma once
/// \file Cache policies decide, per step and per site, what is computed and what is reused; a
/// registry builds them from option strings such as "toca:ratio=0.07,interval=3,schedule=ddim50".
/// Policies own no model tensors beyond their scores (design.md §2; docs/caching.md).

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include "ditcache/cache/site.h"

namespace ditcache {

struct ToCaProfile;

/// What a policy is told when a sampling run starts (built from the model family's descriptor by
/// make_run_info, backbone.h).
struct RunInfo {
  std::string model;              ///< the family: "DiT", "PixArt", "STDiT3", ...
  int depth = 0;                  ///< blocks (per block kind)
  int block_kinds = 1;            ///< block kinds per layer: 1, or 2 for STDiT3 (spatial and temporal)
  int64_t batch = 0;              ///< rows of the model batch, CFG halves included
  bool cfg = false;               ///< batch is two CFG halves
  int64_t num_tokens = 0;         ///< tokens per row at every site
  int64_t frames = 1;             ///< frames of a video run (1 for images)
  int64_t grid_h = 0, grid_w = 0; ///< token grid (num_tokens = grid_h * grid_w; a video's frames stacked vertically)
  int64_t context_tokens = 0;     ///< caption tokens per row (0 without text)
  int num_steps = 0;              ///< model calls in the run
  bool step_index_counts_down = true;  ///< DiT numbers steps S-1 .. 0; PixArt/OpenSora 0 .. S-1
  std::string sampler;            ///< "ddpm", "ddim", ...
  std::vector<SiteKind> site_kinds;    ///< module sites of every block, in call order
  /// The family's ToCa schedule and paper settings (cache/toca.h); null when it has none.
  std::shared_ptr<const ToCaProfile> toca;
};

/// The step being run: `index` in the model's own numbering (see RunInfo), `position` 0..S-1 in
/// execution order.
struct StepInfo {
  int index = 0;
  int position = 0;
};

/// What the context tells a policy about a site before it decides.
struct SiteState {
  const Site& site;
  bool has_cache;           ///< the site holds a stored output (it was computed before)
  const at::Tensor& ages;   ///< [B, N] int32 steps since each token was last computed (before this step's update); undefined without cache
};

/// A policy's decision at one site.
struct SiteDecision {
  Action action = Action::kCompute;
  int64_t tokens = 0;        ///< kPartial: tokens recomputed per batch row (0 allowed: ages still advance)
  at::Tensor indices;        ///< kPartial: [B, tokens] int64 on the model's device; undefined in dry runs
  /// Attention sites only (ignored at MLP sites): kCompute: report the statistics via
  /// observe_attention; kPartial with tokens > 0: report those of the selected queries via
  /// observe_attention_rows.
  bool attention_stats = false;
};

/// The policy interface. Calls come in this order: begin_run, then per step begin_step and the
/// sites of every block in call order (decide, then observe_attention if asked), then end_step.
class CachePolicy {
 public:
  virtual ~CachePolicy() = default;
  /// Registry name ("toca").
  virtual std::string name() const = 0;
  /// Canonical option string with every parameter; make_policy(to_string()) builds an equal policy.
  virtual std::string to_string() const = 0;
  /// Resets all state for a new run; throws Error(kUnsupported) for a model or layout it cannot serve.
  virtual void begin_run(const RunInfo& run) = 0;
  /// Decides the mode of a step.
  virtual StepMode begin_step(const StepInfo& step) = 0;
  /// Decides one site. In a dry run (FLOPs only) no tensors exist: decide the action and the
  /// token count, leave indices undefined.
  virtual SiteDecision decide(const SiteState& state, bool dry) = 0;
  /// The statistics of an attention site computed with attention_stats: self-attention: the
  /// head-mean probability column sums [B, N]; cross-attention: the head-mean probabilities
  /// [B, N, L] of every token over the caption tokens (0 on a row's padding).
  virtual void observe_attention(const Site& site, const at::Tensor& stats) { (void)site; (void)stats; }
  /// The statistics of a partial attention site computed with attention_stats, for the selected
  /// queries `indices` [B, k] only: cross-attention: their head-mean probabilities [B, k, L];
  /// self-attention: the head-mean column sums over those queries [B, N].
  virtual void observe_attention_rows(const Site& site, const at::Tensor& indices, const at::Tensor& stats) {
    (void)site;
    (void)indices;
    (void)stats;
  }
  /// Whether computed outputs must be kept for later reuse (false for `none`: nothing is stored).
  virtual bool stores() const { return true; }
  /// Whether the policy decides kBlock sites (whole-block reuse) instead of module sites.
  virtual bool uses_block_sites() const { return false; }
  virtual void end_step() {}
};

/// Parsed "name:key=value,key=value".
struct PolicySpec {
  std::string name;
  std::map<std::string, std::string> options;
  /// Throws Error(kInvalidArgument) for a malformed string (empty name, "k" without "=", duplicate keys).
  static PolicySpec parse(const std::string& text);
};

/// A policy factory: builds from parsed options (unknown keys and bad values are errors).
using PolicyFactory = std::function<std::unique_ptr<CachePolicy>(const PolicySpec&)>;

/// Registers a factory under a name (replacing none: a duplicate name throws) with a one-line summary.
void register_policy(const std::string& name, const std::string& summary, PolicyFactory factory);
/// Names and summaries of every registered policy.
std::vector<std::pair<std::string, std::string>> registered_policies();
/// Builds a policy from "name[:k=v,...]"; Error(kInvalidArgument) names an unknown policy (listing
/// the known ones), an unknown option (listing the valid ones) or an out-of-range value.
std::unique_ptr<CachePolicy> make_policy(const std::string& spec);

/// Helpers for factories: typed option readers that record which keys were consumed.
class OptionReader {
 public:
  explicit OptionReader(const PolicySpec& spec) : spec_(spec) {}
  double number(const std::string& key, double fallback, double min, double max);
  /// number(), or `fallback` when the value is the word "auto" (the policy resolves it per model).
  double number_or_auto(const std::string& key, double fallback, double min, double max);
  int64_t integer(const std::string& key, int64_t fallback, int64_t min, int64_t max);
  /// integer(), or `fallback` when the value is the word "auto".
  int64_t integer_or_auto(const std::string& key, int64_t fallback, int64_t min, int64_t max);
  std::string choice(const std::string& key, const std::string& fallback, const std::vector<std::string>& allowed);
  /// A word the policy checks itself later (e.g. a schedule the run's model family names); empty is an error.
  std::string text(const std::string& key, const std::string& fallback);
  /// Throws for any option not read, listing the policy's valid keys.
  void finish() const;

 private:
  const std::string* raw(const std::string& key);
  const PolicySpec& spec_;
  std::vector<std::string> read_;
};

}  // namespace ditcache
