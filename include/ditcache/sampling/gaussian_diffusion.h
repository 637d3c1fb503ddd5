#pragma once
/// \file Gaussian diffusion samplers of DiT (facebookresearch/DiT diffusion/, models.md §1.5):
/// linear beta schedule, timestep respacing, DDPM ancestral steps with learned-range variance,
/// and DDIM. Schedule quantities are computed in float64 and applied in the latents' dtype.

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

namespace ditcache {

/// DiT's `space_timesteps`: the kept training-step indices (ascending) for a respacing string —
/// "250" (evenly strided sections, round-half-even), "10,15,20" (several sections) or "ddim50"
/// (an integer stride giving exactly 50 steps). Throws Error(kInvalidArgument) naming the string.
std::vector<int64_t> space_timesteps(int64_t num_train_steps, const std::string& respacing);

/// A respaced linear-beta schedule and the DDPM / DDIM updates.
class GaussianDiffusion {
 public:
  /// Linear betas 1e-4..0.02 scaled to num_train_steps (DiT's get_named_beta_schedule("linear")),
  /// respaced by `respacing` (see space_timesteps).
  GaussianDiffusion(const std::string& respacing, int64_t num_train_steps = 1000);

  /// For DDIM with `steps` steps: DiT's "ddimN" stride when one exists, otherwise even spacing "N".
  static GaussianDiffusion ddim(int64_t steps, int64_t num_train_steps = 1000);
  /// The diffusion of a sampling run of `steps` calls: `respacing` when given (then `steps` is 0,
  /// to take its count, or must equal it), else ddim(steps) when `ddim_stride`, else "<steps>".
  /// Throws Error(kInvalidArgument) saying expected and found.
  static GaussianDiffusion for_run(int64_t steps, const std::string& respacing, bool ddim_stride,
                                   int64_t num_train_steps = 1000);

  /// Number of sampling steps.
  int64_t num_steps() const { return static_cast<int64_t>(timestep_map_.size()); }
  /// Training-step index (what the network sees) of respaced step k.
  int64_t model_timestep(int64_t k) const { return timestep_map_.at(static_cast<size_t>(k)); }
  /// The model timesteps of a run in execution order (k = S−1 .. 0): model_timestep(S−1−i) at call i.
  std::vector<double> sampling_timesteps() const;
  const std::vector<int64_t>& timestep_map() const { return timestep_map_; }
  const std::vector<double>& betas() const { return betas_; }
  const std::vector<double>& alphas_cumprod() const { return alphas_cumprod_; }
  const std::string& respacing() const { return respacing_; }

  /// x0 prediction from x_t and eps at respaced step k.
  at::Tensor predict_x0(const at::Tensor& x, const at::Tensor& eps, int64_t k) const;
  /// One ancestral DDPM step k -> k-1. `model_output` [B, 2C, ...] is eps and the variance values
  /// in [-1, 1] (learned range) or [B, C, ...] eps only (fixed small variance, the posterior's
  /// clipped log variance). `noise` is the N(0, I) draw; it is not added at k = 0.
  /// `clip_denoised` clamps the x0 prediction to [-1, 1] first (DiT's p_sample clip_denoised: off
  /// for latents, the usual choice for pixel-space models).
  at::Tensor ddpm_step(const at::Tensor& x, const at::Tensor& model_output, int64_t k, const at::Tensor& noise,
                       bool clip_denoised = false) const;
  /// One DDIM step k -> k-1 with the given eta (0 = deterministic); eps is the first C channels.
  at::Tensor ddim_step(const at::Tensor& x, const at::Tensor& model_output, int64_t k, const at::Tensor& noise,
                       double eta = 0.0, bool clip_denoised = false) const;

  /// Training: x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) noise for per-sample steps `k` [B] (int64,
  /// respaced indices; for the unrespaced 1000-step schedule they are the training timesteps).
  at::Tensor q_sample(const at::Tensor& x0, const at::Tensor& k, const at::Tensor& noise) const;

  /// DiT's training objective (gaussian_diffusion.py training_losses, loss type MSE), per sample:
  /// `mse` of the predicted eps against `noise`; with learned sigma (model_output has 2C
  /// channels) also `vb`, the variational bound term in bits per dimension with the predicted
  /// mean frozen (gradients reach only the variance values; the decoder NLL at k = 0, the KL to
  /// the posterior elsewhere), unscaled as in DiT's LossType.MSE. loss = mse + vb. All [B].
  /// Shapes, dtypes and the range of k are checked (Error naming the argument).
  struct Loss {
    at::Tensor loss, mse, vb;
  };
  Loss training_loss(const at::Tensor& model_output, const at::Tensor& x0, const at::Tensor& x_t, const at::Tensor& k,
                     const at::Tensor& noise) const;

 private:
  at::Tensor split_eps(const at::Tensor& x, const at::Tensor& model_output, at::Tensor* var_values) const;
  void check_training_inputs(const at::Tensor& x0, const at::Tensor& k, const at::Tensor& noise) const;
  std::string respacing_;
  std::vector<int64_t> timestep_map_;
  std::vector<double> betas_, alphas_cumprod_, alphas_cumprod_prev_;
  std::vector<double> posterior_variance_, posterior_log_variance_clipped_;
  std::vector<double> posterior_mean_coef1_, posterior_mean_coef2_;
};

}  // namespace ditcache
