#pragma once
/// \file The OpenSora 1.2 sampling pipeline: T5 caption embeddings in, video latents out
/// (models.md §3.2, §3.5). The rectified-flow loop with classifier-free guidance over STDiT3,
/// batched as the reference's inference script batches it. The video VAE (opensora_vae.h) and the
/// text encoder are separate components that callers compose.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include "ditcache/cache/context.h"
#include "ditcache/models/stdit3.h"

namespace ditcache {

/// What to sample and how.
struct STDiT3SampleOptions {
  /// Caption embeddings [n, L, caption_channels] (or [n, 1, L, caption_channels]): the T5 output
  /// for n prompts, L = the model's model_max_length (300 for the release). One video per row.
  at::Tensor y;
  /// The T5 attention mask [n, L] (1 = valid token, a non-empty prefix); undefined: all valid.
  at::Tensor mask;
  int64_t height = 0;      ///< video height in pixels (latent height floor(height / 8))
  int64_t width = 0;       ///< video width in pixels (latent width floor(width / 8))
  int64_t num_frames = 1;  ///< pixel frames: 1 (an image) or >= 17 (the timestep shift needs it)
  double fps = 24;         ///< frames per second; the model is told 120 for an image, as the reference script does
  int steps = 30;          ///< sampling steps (model calls)
  double guidance = 7.0;   ///< classifier-free guidance scale (the CFG batch is always run, as the reference does)
  uint64_t seed = 0;
  /// Holds height, width and frame count in bfloat16 when computing the timestep shift, as the
  /// released bf16 inference config does (RFlowSchedule::args_dtype); false: float32.
  bool bf16_time_shift = false;
  /// Initial noise [n, 4, T_lat, h, w], replacing the seed's draw.
  std::optional<at::Tensor> init_noise;
  /// Called after every step with (steps done, total steps).
  std::function<void(int64_t, int64_t)> progress;
  /// The cache context every forward runs through; none: uncached, no FLOPs or telemetry.
  CacheContext* cache = nullptr;
  /// When set, receives the seconds spent inside the model's forward passes (on CUDA the device
  /// is synchronised around each forward).
  double* forward_seconds = nullptr;
};

/// The latent size [T_lat, h, w] of a video of `num_frames` frames of `height` x `width` pixels:
/// T_lat = OpenSoraVAEConfig::latent_frames(num_frames) (51 -> 15, 17 -> 5, 1 -> 1), h, w =
/// floor(pixels / 8). Throws Error(kInvalidArgument) for sizes that give an empty latent.
std::vector<int64_t> opensora_latent_size(int64_t num_frames, int64_t height, int64_t width);

/// OpenSora 1.2's prompt conventions before T5 (models.md §3.5): " aesthetic score: 6.5." appended
/// (the released config's `aes`; a negative score appends nothing, and a prompt that already says
/// "aesthetic score:" is left alone), then the caption cleaning applied twice (`clean`), otherwise
/// lowercased and stripped, as the reference's text preprocessing.
std::string opensora_caption(const std::string& prompt, double aesthetic_score = 6.5, bool clean = true);

/// Runs the rectified-flow sampling loop (rflow_timesteps, rflow_sample) and returns the latents
/// [n, 4, T_lat, h, w] in float32 on the model's device. The model batch is the reference's CFG
/// batch: latents twice, captions `[y; null_caption repeated n times]`, the n masks (the model
/// tiles them, so prompt i's null row is masked with prompt i's mask), fps/height/width for n
/// rows. The initial noise comes from a CPU generator seeded with `seed` (so CPU and CUDA runs
/// start alike). With a cache context every forward is bracketed by begin_step / end_step
/// ({i, i}); a kReuseOutput step returns the stored output of the last computed step. Same
/// options -> bit-identical output on the same device. Throws Error(kInvalidArgument) or
/// Error(kShapeMismatch) naming the option that is wrong, with what was expected and found.
at::Tensor sample_stdit3(STDiT3& model, const STDiT3SampleOptions& options);

/// FLOPs-only: runs the whole schedule of `options` through `cache` in dry mode (no weights, no
/// tensors), so its telemetry and FLOPs summary equal those of a real run of `config`. Only the
/// shapes matter: n and L come from `options.y` when it is defined, else n = 1 and L =
/// config.model_max_length; init_noise is ignored.
void simulate_stdit3(const STDiT3Config& config, const STDiT3SampleOptions& options, CacheContext& cache);

}  // namespace ditcache
