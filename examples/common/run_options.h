#pragma once
// The options the text-conditioned samplers (sample_pixart, sample_opensora) share — where and in
// what precision the model runs, the cache policy and where its features are stored, tracing,
// FLOPs-only runs, progress and warm-up — with their validation and the timed sampling call.
#include <chrono>
#include <functional>
#include <iostream>
#include <memory>
#include <set>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/cuda.h>

#include "common/cli_util.h"
#include "ditcache/cache/context.h"
#include "ditcache/cache/policy.h"
#include "ditcache/device.h"
#include "ditcache/error.h"

namespace ditcache::cli {

struct RunOptions {
  std::string device = "cpu", dtype = "fp32", cache = "none", cache_dtype = "model", trace;
  int threads = 0;
  bool cache_on_host = false, flops_only = false, quiet = false, warmup = false;

  void add_to(CLI::App& app) {
    app.add_option("--cache", cache, "cache policy POLICY[:k=v,...]: none, fora, toca, random (docs/caching.md)")->capture_default_str();
    app.add_option("--cache-dtype", cache_dtype, "dtype of the stored features: model, fp16, bf16 or fp32 (bf16 halves an "
                                                 "fp32 model's cache)")->capture_default_str();
    app.add_flag("--cache-on-host", cache_on_host, "keep the stored features in host memory (CUDA runs)");
    app.add_option("--device", device, "cpu, cuda or cuda:N")->capture_default_str();
    app.add_option("--dtype", dtype, "fp32 (cpu, cuda), fp16 or bf16 (cuda)")->capture_default_str();
    app.add_option("--threads", threads, "CPU threads (default: all cores)");
    app.add_option("--trace", trace, "write a JSON trace: per step and site the action and selected tokens");
    app.add_flag("--flops-only", flops_only, "run the cache schedule and the FLOPs counter without computing tensors");
    app.add_flag("--quiet", quiet, "no progress bar");
    app.add_flag("--warmup", warmup, "first an untimed, uncached 2-step run, so one-time costs (CUDA context, library "
                                     "handles, first allocations) stay out of the reported time");
  }
};

/// What RunOptions resolve to; `cache` is the context every forward of the run goes through.
struct RunSetup {
  c10::Device device = c10::kCPU;
  c10::ScalarType dtype = at::kFloat;
  std::shared_ptr<CachePolicy> policy;
  std::unique_ptr<CacheContext> cache;
};

/// Checks the options (every bad value is an error naming its flag), sets the thread count and
/// builds the policy and its cache context with the requested storage.
inline RunSetup resolve(const RunOptions& o) {
  if (o.warmup && o.flops_only) {
    throw Error(ErrorCode::kInvalidArgument,
                "--warmup with --flops-only: a FLOPs-only run computes nothing, so there is nothing to warm up");
  }
  RunSetup s;
  s.device = parse_device(o.device, "--device");
  s.dtype = parse_dtype(o.dtype, "--dtype");
  if (s.device.is_cpu() && s.dtype != at::kFloat) {
    throw Error(ErrorCode::kUnsupported, fmt::format("--dtype {} on the CPU: only fp32 is supported there", o.dtype));
  }
  CacheStorage storage;
  if (o.cache_dtype == "fp16") storage.dtype = at::kHalf;
  else if (o.cache_dtype == "bf16") storage.dtype = at::kBFloat16;
  else if (o.cache_dtype == "fp32") storage.dtype = at::kFloat;
  else if (o.cache_dtype != "model") {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("--cache-dtype '{}': expected model, fp16, bf16 or fp32", o.cache_dtype));
  }
  if (o.cache_on_host) storage.device = at::Device(at::kCPU);
  set_threads(o.threads, /*all_cores=*/true);
  s.policy = std::shared_ptr<CachePolicy>(make_policy(o.cache));
  s.cache = std::make_unique<CacheContext>(s.policy, !o.trace.empty());
  s.cache->set_storage(storage);
  return s;
}

/// After a FLOPs-only run through `cache`: prints the cache memory a real run would keep — every
/// site the schedule visited stores [rows, N, hidden] features in the storage dtype (the model's,
/// `model_dtype`, unless --cache-dtype says otherwise) and [rows, N] int32 ages, plus the last model
/// output of `output_elements` floats (whole-step reuse) — and writes the trace if asked.
inline void report_dry_cache(const RunOptions& run, const CacheContext& cache, const CachePolicy& policy, int64_t hidden,
                             c10::ScalarType model_dtype, double output_elements) {
  std::set<std::string> sites;
  for (const auto& step : cache.steps())
    for (const auto& r : step.sites) sites.insert(to_string(r.site));
  const int64_t rows = cache.run_info().batch, tokens = cache.run_info().num_tokens;
  const auto store_dtype = cache.storage().dtype.value_or(model_dtype);
  const double bytes = policy.stores() ? static_cast<double>(sites.size()) * rows * tokens *
                                                 (static_cast<double>(hidden) * at::elementSize(store_dtype) + 4) +
                                             output_elements * 4
                                       : 0.0;
  std::cout << fmt::format("cache memory of a real run: {:.3f} MiB = {:.2f} GiB ({} sites, features in {})\n",
                           bytes / 1048576.0, bytes / (1 << 30), sites.size(), c10::toString(store_dtype));
  if (!run.trace.empty()) write_text_file(run.trace, cache.trace_json());
}

/// The closing lines of a real run: the trace (with --trace) and the cache's FLOPs, recompute
/// share and memory.
inline void report_cache(const RunOptions& run, const CacheContext& cache, const CachePolicy& policy) {
  if (!run.trace.empty()) write_text_file(run.trace, cache.trace_json());
  const auto s = cache.summary();
  std::cout << fmt::format("cache {}: {:.3f} TFLOPs of {:.3f} uncached (FLOPs speedup {:.2f}x), tokens recomputed {:.1f}%, "
                           "cache memory {:.3f} MiB\n",
                           policy.to_string(), s.flops * 1e-12, s.full_flops * 1e-12, s.flops_speedup(),
                           100 * s.computed_share(), s.cache_bytes / 1048576.0);
}

struct TimedSample {
  at::Tensor latents;
  double seconds = 0, forward_seconds = 0;
};

/// Runs `sample(options)` through the run's cache with progress and timing (after an untimed,
/// uncached 2-step run with --warmup). `SampleOptions` is a pipeline's options struct (steps,
/// cache, progress, forward_seconds).
template <class SampleOptions>
TimedSample timed_sample(const RunOptions& run, RunSetup& setup, SampleOptions options,
                         const std::function<at::Tensor(const SampleOptions&)>& sample) {
  if (run.warmup) {
    auto untimed = options;
    untimed.steps = 2;
    untimed.cache = nullptr;
    sample(untimed);
    if (setup.device.is_cuda()) torch::cuda::synchronize(setup.device.index());
  }
  TimedSample out;
  options.cache = setup.cache.get();
  options.forward_seconds = &out.forward_seconds;
  const auto start = std::chrono::steady_clock::now();
  if (!run.quiet) options.progress = [start](int64_t done, int64_t total) { progress_bar(done, total, start); };
  out.latents = sample(options);
  if (setup.device.is_cuda()) torch::cuda::synchronize(setup.device.index());
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace ditcache::cli
