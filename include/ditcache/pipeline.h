#pragma once
/// \file The DiT sampling pipeline: class labels in, latents out (models.md §1.3, §1.5). The VAE
/// decoder is a separate component (models/vae.h) that callers compose.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include "ditcache/cache/context.h"
#include "ditcache/models/dit.h"

namespace ditcache {

/// Which update rule advances x_t.
enum class SamplerKind { kDDPM, kDDIM };
/// "ddpm" / "ddim"; parse_sampler throws Error(kInvalidArgument) on anything else.
const char* to_string(SamplerKind kind) noexcept;
SamplerKind parse_sampler(const std::string& text);

/// What to sample and how.
struct DiTSampleOptions {
  std::vector<int64_t> class_labels;    ///< one image per label, each in [0, num_classes)
  SamplerKind sampler = SamplerKind::kDDPM;
  int64_t steps = 250;                  ///< DDPM: respacing "steps"; DDIM: "ddim<steps>" when a stride exists
  std::string respacing;                ///< overrides `steps` with a DiT respacing string ("250", "ddim50", "10,20")
  double guidance_scale = 4.0;          ///< classifier-free guidance; <= 1 disables it (no null batch)
  double ddim_eta = 0.0;
  /// Clamp each step's x0 prediction to [-1, 1] (DiT's clip_denoised; sample.py leaves it off for
  /// latents; pixel-space models such as the embedded shapes10 DiT want it on).
  bool clip_denoised = false;
  uint64_t seed = 0;
  /// Initial noise [n, C, H, W], replacing the seed's first draw (the per-step noise still comes
  /// from `seed`, so passing the seed's own initial noise reproduces the seeded run exactly).
  std::optional<at::Tensor> init_noise;
  /// Called after every step with (steps done, total steps).
  std::function<void(int64_t, int64_t)> progress;
  /// The cache context every forward runs through (its policy decides what is reused); none:
  /// uncached, no FLOPs or telemetry.
  CacheContext* cache = nullptr;
  /// When set, receives the seconds spent inside the model's forward passes (on CUDA the device
  /// is synchronised around each forward, which serialises a little of the loop).
  double* forward_seconds = nullptr;
};

/// Runs the whole sampling loop and returns the latents [n, C, H, W] in float32 on the model's
/// device (only the conditional half when guidance is on). Random numbers come from a CPU
/// generator seeded with `seed` in the order of DiT's sample.py (initial noise, then one draw of
/// the whole batch's shape per step), so CPU and CUDA runs start from the same noise and a CPU
/// run reproduces PyTorch's numbers. Same options -> bit-identical output on the same device.
/// Throws Error(kInvalidArgument) for out-of-range labels or a bad step count.
at::Tensor sample_dit(DiT& model, const DiTSampleOptions& options);

/// FLOPs-only: runs the step schedule of `options` through `cache` in dry mode (no tensors, no
/// weights), so its telemetry and FLOPs summary are those of a real run of `config`.
void simulate_dit(const DiTConfig& config, const DiTSampleOptions& options, CacheContext& cache);

}  // namespace ditcache
