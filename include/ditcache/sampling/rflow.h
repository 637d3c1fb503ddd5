#pragma once
/// \file Rectified flow (OpenSora 1.2's `RFLOW` scheduler, models.md §3.5): the time grid with
/// OpenSora's resolution- and length-dependent shift, its classifier-free guidance, and the Euler
/// loop with guidance. Model-agnostic: the caller supplies the velocity of a [cond; uncond] batch.
/// The Euler update itself is the "rflow" Sampler (sampling/sampler.h: make_rflow_sampler), which
/// rflow_sample drives.

#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/Tensor.h>

namespace ditcache {

/// The time grid of a sampling run.
struct RFlowSchedule {
  int num_steps = 30;             ///< model calls
  int num_timesteps = 1000;       ///< the time scale (t = num_timesteps is pure noise)
  bool use_timestep_transform = true;
  double height = 0, width = 0;   ///< pixel size of the video (the shift's space ratio)
  int64_t num_frames = 1;         ///< pixel frames (the shift's time ratio; 1 = image)
  /// dtype the reference holds height, width and num_frames in when it computes the shift: kFloat
  /// for fp32 model arguments, kBFloat16 as the released bf16 inference config does (the ratio is
  /// then bf16-rounded; the rest stays float32).
  at::ScalarType args_dtype = at::kFloat;

  /// Throws Error(kInvalidArgument) naming an impossible field (e.g. 2..16 frames, for which the
  /// reference's shift collapses every timestep to 0).
  void validate() const;
};

/// The shifted timesteps t_0 > t_1 > ... (float32 arithmetic in the reference's order):
/// t_i = (1 - i/S)·T, then τ = t/T, r = sqrt(H·W/512²)·sqrt(F) with F = 1 for an image or
/// floor(frames/17)·5, τ' = r·τ / (1 + (r-1)·τ), t' = T·τ'.
std::vector<float> rflow_timesteps(const RFlowSchedule& schedule);

/// The velocity of a doubled batch: z_in [2n, ...] (the same latents twice) at timesteps t [2n]
/// (float32) for step `step` -> [2n, ...] (rows 0..n-1 conditional, n..2n-1 unconditional).
using VelocityFn = std::function<at::Tensor(const at::Tensor& z_in, const at::Tensor& t, int step)>;

/// OpenSora's classifier-free guidance of a velocity batch v [2n, ...] (rows 0..n-1 conditional,
/// n..2n-1 unconditional): v_uncond + scale·(v_cond - v_uncond) [n, ...], in the reference's order
/// of operations. Throws Error(kShapeMismatch) for an undefined v or an odd row count.
at::Tensor rflow_guidance(const at::Tensor& v, double guidance_scale);

/// Euler integration from noise `z` [n, ...] along `timesteps` (rflow_timesteps) with guidance
/// v = v_uncond + scale·(v_cond - v_uncond) and dt = (t_i - t_{i+1})/T (the last step goes to 0).
/// `progress` is called after each step with (steps done, total). Returns the latents [n, ...].
/// Throws Error(kInvalidArgument) for no timesteps, Error(kShapeMismatch) for a velocity batch that
/// is not [2n, ...] (with any channel count from C; channels 0..C-1 are the velocity).
at::Tensor rflow_sample(const at::Tensor& z, const std::vector<float>& timesteps, int num_timesteps, double guidance_scale,
                        const VelocityFn& velocity, const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace ditcache
