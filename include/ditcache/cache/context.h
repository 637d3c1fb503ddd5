#pragma once
/// \file CacheContext: runs each site's action (compute / reuse / partial) for a policy, owns the
/// stored pre-gate module outputs and per-token ages, counts FLOPs and records telemetry
/// (design.md §2). Models call it at every site; the same model code runs with and without caching.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/Tensor.h>

#include "ditcache/cache/policy.h"
#include "ditcache/cache/site.h"

namespace ditcache {

/// What happened at one site in one step.
struct SiteRecord {
  Site site;
  Action action = Action::kCompute;
  int64_t tokens = 0;            ///< tokens computed per batch row (N for compute, 0 for reuse)
  std::vector<int64_t> indices;  ///< kPartial with tracing on: the selected tokens, [rows x tokens] row-major
};

/// What happened in one step.
struct StepRecord {
  StepInfo step;
  StepMode mode = StepMode::kPerSite;
  double flops = 0;       ///< FLOPs that ran (toca.md §6 convention)
  double full_flops = 0;  ///< FLOPs the same step costs uncached
  std::vector<SiteRecord> sites;
};

/// Totals of a run.
struct RunSummary {
  double flops = 0, full_flops = 0;
  int64_t tokens_computed = 0, tokens_total = 0;  ///< over module sites and batch rows
  int64_t cache_bytes = 0;                        ///< memory of the stored outputs and ages
  double flops_speedup() const { return flops > 0 ? full_flops / flops : 1.0; }
  double computed_share() const { return tokens_total > 0 ? static_cast<double>(tokens_computed) / tokens_total : 1.0; }
};

/// Token-wise module: maps tokens [B, n, C] (any subset of a row's tokens) to outputs [B, n, C'].
using TokenModule = std::function<at::Tensor(const at::Tensor& tokens)>;
/// Attention module: all tokens x [B, N, C]; `queries` [B, n] selects the query tokens (undefined:
/// all); when `column_sums` is non-null it receives the statistics CachePolicy::observe_attention
/// documents (self-attention: head-mean column sums [B, N]; cross-attention: head-mean
/// probabilities [B, N, L]).
using AttentionModule = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& queries, at::Tensor* column_sums)>;

/// Where and how the stored module outputs are kept (the cache's memory bound). Unset fields keep
/// the model's dtype and device. Outputs are converted back to the model's dtype and device
/// whenever a step reuses them.
struct CacheStorage {
  std::optional<at::ScalarType> dtype;  ///< e.g. at::kHalf or at::kBFloat16: half the memory of fp32
  std::optional<at::Device> device;     ///< e.g. at::kCPU: keep the cache in host memory (offload)
};

/// Profiler ranges (ATen RecordFunction user scopes, visible to the PyTorch profiler and to global
/// callbacks) that CacheContext opens at every module site: the policy's decision, then the action
/// taken (everything the cache does at the site), and inside it the model's module call.
inline constexpr const char* kScopeDecide = "ditcache::cache.decide";
inline constexpr const char* kScopeCompute = "ditcache::cache.compute";
inline constexpr const char* kScopeReuse = "ditcache::cache.reuse";
inline constexpr const char* kScopePartial = "ditcache::cache.partial";
inline constexpr const char* kScopeModule = "ditcache::cache.module";

/// Per-run cache state and execution of a policy's decisions.
class CacheContext {
 public:
  /// `policy` decides; `trace` keeps the selected indices of partial sites (one device-to-host copy each).
  explicit CacheContext(std::shared_ptr<CachePolicy> policy, bool trace = false);

  /// Starts a run: clears stores, ages, FLOPs and telemetry; forwards to the policy.
  void begin_run(const RunInfo& run);
  /// Starts a step; returns the policy's step mode (kReuseOutput only once an output is stored).
  StepMode begin_step(const StepInfo& step);
  void end_step();

  /// Token counting: per site, how often each token is recomputed (for heat maps; one small
  /// device-side add per site, no sync). Off by default; set before begin_run.
  void set_count_tokens(bool on) { count_tokens_ = on; }
  /// With counting on: every site of the run in layer order and its counts [N] (float64, CPU),
  /// summed over batch rows and steps (a token computed in every step of every row counts
  /// steps x rows).
  std::vector<std::pair<Site, at::Tensor>> token_counts() const;

  /// How stored outputs are kept (set before begin_run); the default keeps them as computed.
  void set_storage(const CacheStorage& storage) { storage_ = storage; }
  const CacheStorage& storage() const { return storage_; }

  /// FLOPs-only mode: sites are decided and counted, no tensor is computed.
  void set_dry(bool dry) { dry_ = dry; }
  bool dry() const { return dry_; }
  bool uses_block_sites() const { return policy_->uses_block_sites(); }

  /// Runs a token-wise site (MLP, and any module whose output row depends only on its input row).
  /// x [B, N, C] -> [B, N, C'] for all tokens.
  at::Tensor run(const Site& site, const at::Tensor& x, const TokenModule& module);
  /// Runs an attention site; partial recomputes the selected queries against all keys.
  at::Tensor run_attention(const Site& site, const at::Tensor& x, const AttentionModule& module);
  /// Runs a whole-block site: `block` maps x to the block output; reuse adds the stored residual update.
  at::Tensor run_block(const Site& site, const at::Tensor& x, const std::function<at::Tensor(const at::Tensor&)>& block);
  /// Dry runs: the decision at a site (recorded in telemetry), for the model's FLOPs count.
  SiteDecision decide_dry(const Site& site);

  /// Adds FLOPs to the current step: what ran and what the uncached model would have run.
  void add_flops(double actual, double full);
  /// The model output of the last computed step (kReuseOutput returns it), and storing it.
  const at::Tensor& step_output() const { return step_output_; }
  void set_step_output(const at::Tensor& out) {
    if (policy_->stores()) step_output_ = out;
  }

  const std::vector<StepRecord>& steps() const { return steps_; }
  RunSummary summary() const;
  const RunInfo& run_info() const { return run_; }
  CachePolicy& policy() { return *policy_; }
  /// JSON trace: per step the mode and FLOPs, per site the action, tokens and (traced) indices.
  std::string trace_json() const;

 private:
  struct Entry {
    at::Tensor store;  ///< [B, N, C] pre-gate outputs
    at::Tensor ages;   ///< [B, N] int32
    at::Tensor counts; ///< [N] float32 recomputations per token (token counting only)
    Site site;
  };
  static uint32_t key(const Site& site);
  SiteDecision decide(const Site& site, Entry& entry);
  void check_decision(const Site& site, const SiteDecision& d, const Entry& entry, int64_t rows, int64_t tokens) const;
  void record(const Site& site, const SiteDecision& d);
  void age(Entry& entry, const SiteDecision& d);
  void reset_ages(Entry& entry, const at::Tensor& x);
  at::Tensor run_site(const Site& site, const at::Tensor& x, const AttentionModule* attention, const TokenModule* token_module);
  Entry& entry(const Site& site);
  void count(Entry& entry, const SiteDecision& d, const at::Tensor& x);
  at::Tensor to_storage(const at::Tensor& t) const;
  static at::Tensor from_storage(const at::Tensor& stored, const at::Tensor& like);
  static at::Tensor like_store(const at::Tensor& t, const at::Tensor& store);

  std::shared_ptr<CachePolicy> policy_;
  bool trace_ = false;
  bool dry_ = false;
  bool count_tokens_ = false;
  CacheStorage storage_;
  RunInfo run_;
  std::unordered_map<uint32_t, Entry> entries_;
  at::Tensor step_output_;
  std::vector<StepRecord> steps_;
};

}  // namespace ditcache
