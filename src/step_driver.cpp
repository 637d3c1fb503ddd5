#include "ditcache/step_driver.h"

#include <chrono>

#include <torch/cuda.h>

namespace ditcache {

namespace {

// The time now, after the device's queued work when `sync` (forward timings on CUDA).
std::chrono::steady_clock::time_point sync_now(const c10::Device& device, bool sync) {
  if (sync && device.is_cuda()) torch::cuda::synchronize(device.index());
  return std::chrono::steady_clock::now();
}

}  // namespace

StepDriver::StepDriver(CacheContext* cache, const BackboneInfo& info, const RunShape& shape, int num_steps,
                       const std::string& sampler, const c10::Device& device, ProgressFn progress, double* forward_seconds)
    : cache_(cache),
      info_(info),
      shape_(shape),
      num_steps_(num_steps),
      device_(device),
      progress_(std::move(progress)),
      forward_seconds_(forward_seconds) {
  if (forward_seconds_) *forward_seconds_ = 0;
  if (cache_) {
    cache_->set_dry(false);
    cache_->begin_run(make_run_info(info_, shape_, num_steps_, sampler));
  }
}

StepInfo StepDriver::step_info(int position) const {
  return {info_.step_index_counts_down ? num_steps_ - 1 - position : position, position};
}

at::Tensor StepDriver::step(int position, const std::function<at::Tensor(CacheContext* cache)>& forward) {
  const StepMode mode = cache_ ? cache_->begin_step(step_info(position)) : StepMode::kPerSite;
  at::Tensor out;
  if (cache_ && mode == StepMode::kReuseOutput && cache_->step_output().defined()) {
    // The whole step reused: no forward; the FLOPs count records the skipped blocks.
    count_step_flops(info_, shape_, *cache_);
    out = cache_->step_output();
  } else {
    const auto start = sync_now(device_, forward_seconds_ != nullptr);
    out = forward(cache_);
    if (forward_seconds_) *forward_seconds_ += std::chrono::duration<double>(sync_now(device_, true) - start).count();
    if (cache_) cache_->set_step_output(out);
  }
  if (cache_) cache_->end_step();
  return out;
}

void StepDriver::done(int position) const {
  if (progress_) progress_(position + 1, num_steps_);
}

void StepDriver::simulate(CacheContext& cache, const BackboneInfo& info, const RunShape& shape, int num_steps,
                          const std::string& sampler, const ProgressFn& progress) {
  struct LeaveDry {
    CacheContext& cache;
    ~LeaveDry() { cache.set_dry(false); }
  } leave{cache};
  cache.set_dry(true);
  const RunInfo run = make_run_info(info, shape, num_steps, sampler);
  cache.begin_run(run);
  for (int i = 0; i < num_steps; ++i) {
    cache.begin_step({info.step_index_counts_down ? num_steps - 1 - i : i, i});
    count_step_flops(info, shape, cache);
    cache.end_step();
    if (progress) progress(i + 1, num_steps);
  }
}

}  // namespace ditcache
