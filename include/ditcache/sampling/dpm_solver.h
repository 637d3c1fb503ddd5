#pragma once
/// \file DPM-Solver++ 2M (multistep, order 2, data prediction) over the discrete linear-beta VP
/// schedule PixArt-α is trained with (1000 steps, betas 1e-4..0.02), in the two time-grid
/// conventions that sample PixArt-α (models.md §2.5):
/// - kOriginal: PixArt-alpha's own DPM-Solver as its scripts/inference.py runs it
///   (`NoiseScheduleVP('discrete')`, `skip_type='time_uniform'`, `method='multistep'`, order 2,
///   `lower_order_final` for fewer than 10 steps): continuous times linspace(1, 1/1000, S+1),
///   log α(t) piecewise linear through the table 0.5·cumsum(log(1−β)) at t = (n+1)/1000, fractional
///   model times (t − 1/1000)·1000, φ = expm1(−h);
/// - kDiffusers: diffusers' `DPMSolverMultistepScheduler` as `PixArtAlphaPipeline` ships it
///   (dpmsolver++, `solver_type='midpoint'`, `lower_order_final`, `final_sigmas_type='zero'`,
///   `timestep_spacing='linspace'`): integer timesteps round(linspace(0, 999, S+1)) reversed without
///   the last, float32 ᾱ by cumprod, α = 1/sqrt(σ²+1) of the scheduler's σ = sqrt((1−ᾱ)/ᾱ), the last
///   step first order to σ = 0 (it returns the data prediction), φ = exp(−h) − 1.
/// Both compute the schedule in float32 with the same tensor operations as the reference, so the
/// grids match them to the last bit or so. Model-agnostic: classifier-free guidance lives in the
/// caller (the PixArt pipeline), which supplies the guided noise prediction.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

namespace ditcache {

/// Which reference's time grid and update arithmetic (see the file comment).
enum class DPMSolverConvention { kOriginal, kDiffusers };
/// "original" / "diffusers"; parse_dpm_solver_convention throws Error(kInvalidArgument) on anything else.
const char* to_string(DPMSolverConvention convention) noexcept;
DPMSolverConvention parse_dpm_solver_convention(const std::string& text);

/// The time grid of a run of `num_steps` model calls and the coefficients of every update, all
/// float32 as the references compute them. Grid point i (0..S) is the state before model call i;
/// point S is the end (diffusers: σ = 0, λ = +inf).
struct DPMSolverSchedule {
  DPMSolverConvention convention = DPMSolverConvention::kOriginal;
  int num_steps = 0;
  /// [S] the timestep the model is told at call i: original (t_i − 1/1000)·1000 (fractional,
  /// float32 values: 999, 949.05, ...); diffusers the scheduler's integer timesteps (999, 949, ...).
  std::vector<double> model_timesteps;
  /// [S+1] original: the continuous times t_i; diffusers: the scheduler's sigmas sqrt((1−ᾱ)/ᾱ) (last 0).
  std::vector<float> grid;
  std::vector<float> alpha;   ///< [S+1] α_i = sqrt(ᾱ)
  std::vector<float> sigma;   ///< [S+1] σ_i = sqrt(1 − ᾱ)
  std::vector<float> lambda;  ///< [S+1] λ_i = log α_i − log σ_i
  /// [S] order of the update after call i: 1 for the first step and the lower-order final step
  /// (original: only when S < 10; diffusers: always), else 2.
  std::vector<int> order;
  /// [S] update i: x_{i+1} = coef_x·x_i − coef_m·m_i − coef_d·D1 with D1 = inv_r·(m_i − m_{i−1}),
  /// m the data predictions; coef_x = σ_{i+1}/σ_i, coef_m = α_{i+1}·φ(−h), coef_d = coef_m/2,
  /// inv_r = h/h_0 (h = λ_{i+1} − λ_i, h_0 = λ_i − λ_{i−1}); coef_d = inv_r = 0 for first-order steps.
  std::vector<float> coef_x, coef_m, coef_d, inv_r;
};

/// The schedule of `num_steps` model calls in `convention`. Throws Error(kInvalidArgument) for
/// num_steps < 1, for the original with num_steps < 2 (its multistep order-2 loop asserts steps >=
/// order) and for more steps than the 1000 training timesteps.
DPMSolverSchedule dpm_solver_schedule(int num_steps, DPMSolverConvention convention);

/// The data prediction at grid point `step`: x0 = (x − σ·eps) / α (float32 tensors, any shape).
at::Tensor dpm_solver_data_prediction(const DPMSolverSchedule& schedule, int step, const at::Tensor& x, const at::Tensor& eps);

/// Update `step` (x_step -> x_{step+1}) from the data predictions m0 (this step's) and m1 (the
/// previous step's; ignored, and may be undefined, for first-order steps).
at::Tensor dpm_solver_update(const DPMSolverSchedule& schedule, int step, const at::Tensor& x, const at::Tensor& m0,
                             const at::Tensor& m1);

/// The guided noise prediction eps [same shape as x] of x at model call `step` (model time
/// schedule.model_timesteps[step]).
using EpsilonFn = std::function<at::Tensor(const at::Tensor& x, int step)>;

/// The whole loop from the noise `x` (float32): per step one eps call, the data prediction, the
/// update; `progress` is called after each step with (steps done, total). Returns x at the end of
/// the grid (float32, x's shape and device).
at::Tensor dpm_solver_sample(const at::Tensor& x, const DPMSolverSchedule& schedule, const EpsilonFn& eps,
                             const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace ditcache
