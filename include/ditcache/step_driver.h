#pragma once
/// \file The step driver: the one place where a model call of any family runs inside a sampling
/// loop. It owns the cache bracket (begin_run, begin_step / end_step around every model call),
/// whole-step reuse (a policy's kReuseOutput answers with the last computed output, no forward),
/// the forward timing, the progress callback and the per-step telemetry that lands in the cache
/// context. Every pipeline, the benchmark and the FLOPs-only simulations run their steps here.

#include <cstdint>
#include <functional>

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include "ditcache/backbone.h"
#include "ditcache/cache/context.h"

namespace ditcache {

/// Called after every model call with (calls done, total calls).
using ProgressFn = std::function<void(int64_t, int64_t)>;

class StepDriver {
 public:
  /// Starts a run of `num_steps` model calls of `info` over `shape` on `device`: with a cache
  /// context, clears it (real mode) and tells its policy (make_run_info). `forward_seconds`, when
  /// set, receives the seconds spent in the forwards (on CUDA the device is synchronised around
  /// each, which serialises a little of the loop).
  StepDriver(CacheContext* cache, const BackboneInfo& info, const RunShape& shape, int num_steps, const std::string& sampler,
             const c10::Device& device, ProgressFn progress = {}, double* forward_seconds = nullptr);

  /// Model call `position` (0 .. S-1 in execution order; the policy sees the family's step
  /// numbering): `forward(cache)` runs the model and returns its output, unless the policy reuses
  /// the whole step, which returns the last computed output. The output is what the sampler
  /// advances x_t with (kept for whole-step reuse). Progress is reported once the caller has
  /// advanced x_t: call done(position) after the update.
  at::Tensor step(int position, const std::function<at::Tensor(CacheContext* cache)>& forward);
  /// Reports progress after model call `position` (and its sampler update).
  void done(int position) const;

  int num_steps() const { return num_steps_; }

  /// FLOPs-only: the whole run's schedule through `cache` in dry mode (no tensors, no weights; a
  /// real-size run is counted in milliseconds), so its telemetry and FLOPs summary are those of a
  /// real run. The cache leaves dry mode however the run ends.
  static void simulate(CacheContext& cache, const BackboneInfo& info, const RunShape& shape, int num_steps,
                       const std::string& sampler, const ProgressFn& progress = {});

 private:
  StepInfo step_info(int position) const;
  CacheContext* cache_;
  const BackboneInfo& info_;
  RunShape shape_;
  int num_steps_;
  c10::Device device_;
  ProgressFn progress_;
  double* forward_seconds_;
};

}  // namespace ditcache
