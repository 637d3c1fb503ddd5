#pragma once
// The FLOPs-only loop behind every pipeline's simulate_*: the cache in dry mode for the whole run
// (and out of it again however the run ends), one begin_step / count / end_step per step, numbered
// as the model's run info says its sampler numbers steps, and progress after each.

#include <cstdint>
#include <functional>

#include "ditcache/cache/context.h"

namespace ditcache::detail {

/// `count_step()` adds one step's FLOPs through `cache` (the model's count_*_step_flops).
inline void run_dry(CacheContext& cache, const RunInfo& run, int steps, const std::function<void()>& count_step,
                    const std::function<void(int64_t, int64_t)>& progress) {
  struct LeaveDry {
    CacheContext& cache;
    ~LeaveDry() { cache.set_dry(false); }
  } leave{cache};
  cache.set_dry(true);
  cache.begin_run(run);
  for (int i = 0; i < steps; ++i) {
    cache.begin_step({run.step_index_counts_down ? steps - 1 - i : i, i});
    count_step();
    cache.end_step();
    if (progress) progress(i + 1, steps);
  }
}

}  // namespace ditcache::detail
