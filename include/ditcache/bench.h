#pragma once
/// \file The benchmark grid behind `ditcache-bench` (design.md §5): models x policies x steps x
/// batch sizes x devices, each cell timed over repetitions after warm-up, with its FLOPs, memory,
/// share of tokens recomputed, fidelity to the uncached run on the same seeds and, on the
/// embedded shapes10 model, the quality of the generated set (class accuracy, Fréchet distance,
/// inception-style score under the shapes10 classifier).

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

namespace ditcache {

/// What to run. Every list is one axis of the grid.
struct BenchOptions {
  /// "shapes10" (the embedded model), a DiT weight file, or a preset name such as "DiT-XL/2"
  /// (needs random_weights: speed-only rows).
  std::vector<std::string> models = {"shapes10"};
  /// Policy specs (docs/caching.md). The uncached `none` row is always run first (added when
  /// absent): every other row's speedup and fidelity are measured against it.
  std::vector<std::string> policies = {"none", "fora", "toca", "random"};
  std::vector<int64_t> steps = {50};
  std::vector<int64_t> batches = {10};      ///< images per run; labels cycle through the classes
  std::vector<std::string> devices = {"cpu"};
  std::string sampler = "ddim";
  double guidance_scale = 4.0;
  std::string dtype = "fp32";              ///< fp32, fp16 or bf16
  uint64_t seed = 0;
  int repetitions = 3;                     ///< timed runs per row (median and spread)
  int warmup = 1;                          ///< untimed runs first; the first run (warm-up or timed) records outputs and token counts
  bool random_weights = false;             ///< preset models get seeded random weights
  std::string vae;                         ///< latent models: SD VAE weights, so image PSNR/SSIM can be measured
  int64_t quality_samples = 0;             ///< shapes10: images per row for accuracy / FD / IS (0: off)
  int64_t reference_samples = 2000;        ///< real images behind the Fréchet reference statistics
  std::string classifier;                  ///< shapes10 classifier weights (default: the embedded one)
  /// Called with a one-line status before every run.
  std::function<void(const std::string&)> progress;
};

/// One cell of the grid. NaN marks a column that does not apply (e.g. device memory on the CPU,
/// image fidelity of a latent model without a VAE, quality on a model without a classifier).
struct BenchRow {
  std::string model, device, dtype, sampler;
  std::string policy;  ///< canonical spec, every option spelled out (make_policy(policy) rebuilds it)
  std::string spec;    ///< the spec as given (shorter; what the table and file names show)
  int64_t steps = 0, batch = 0;
  int repetitions = 0;
  double wall_ms = 0, wall_min_ms = 0, wall_max_ms = 0;  ///< median and range of the timed runs
  double forward_ms = 0;                                  ///< median time inside model forwards
  double flops = 0, full_flops = 0;                       ///< per run (toca.md §6 convention)
  double flops_speedup = 1, wall_speedup = 1;             ///< over the `none` row of the same cell
  double peak_host_mb = 0, peak_device_mb = 0, cache_mb = 0;
  double recomputed = 1;                                  ///< share of module tokens recomputed
  double psnr = 0, ssim = 0, latent_rel_l2 = 0;           ///< against the `none` row, same seeds
  double accuracy = 0, frechet = 0, inception = 0;        ///< shapes10 quality set
  int64_t quality_count = 0;
  /// Per site (rows) and token (columns): the share of (steps x batch rows) in which the token
  /// was recomputed; site_labels name the rows ("L0 attn", "L0 mlp", ...).
  at::Tensor token_share;
  std::vector<std::string> site_labels;
};

/// Runs the grid; throws Error naming the bad model, policy, device or option before any timing.
std::vector<BenchRow> run_bench(const BenchOptions& options);

/// Expands '|' alternatives of a policy spec into the grid of specs:
/// "toca:ratio=0.1|0.3,interval=3|5" -> 4 specs. Specs without '|' come back unchanged.
std::vector<std::string> expand_policy_sweep(const std::string& spec);

/// The results as a Markdown table, CSV (one header line) and JSON (an array of row objects;
/// non-finite numbers as null).
std::string bench_markdown(const std::vector<BenchRow>& rows);
std::string bench_csv(const std::vector<BenchRow>& rows);
std::string bench_json(const std::vector<BenchRow>& rows);

/// Speedup (x: wall-clock speedup) against fidelity (y: PSNR in dB vs uncached) of the rows of
/// one model, one series per policy name; uint8 [H, W, 3].
at::Tensor plot_speedup_fidelity(const std::vector<BenchRow>& rows, const std::string& model);
/// Heat map of row.token_share (sites x tokens); uint8 [H, W, 3].
at::Tensor plot_token_heatmap(const BenchRow& row);

/// Where the embedded shapes10 model lives: $DITCACHE_MODELS/shapes10 when set, else the source
/// tree's models/shapes10, else the installed share/ditcache/models/shapes10. Throws
/// Error(kNotFound) listing the places searched.
std::string embedded_model_dir();

}  // namespace ditcache
