// "ddpm": DiT's ancestral DDPM steps (GaussianDiffusion::ddpm_step, models.md §1.5) as a Sampler.
#include <memory>

#include "ditcache/sampling/gaussian_diffusion.h"
#include "ditcache/sampling/sampler.h"

namespace ditcache {

namespace {

// Call i is respaced step k = S−1−i; every step draws one noise tensor of x's shape (also the last,
// which does not add it), as DiT's p_sample_loop does.
class DDPMSampler final : public Sampler {
 public:
  DDPMSampler(GaussianDiffusion diffusion, bool clip_denoised)
      : Sampler("ddpm", Prediction::kEpsilon, diffusion.sampling_timesteps(), /*counts_down=*/true),
        diffusion_(std::move(diffusion)),
        clip_denoised_(clip_denoised) {}

  bool draws_noise() const override { return true; }
  bool needs_generator() const override { return true; }

 protected:
  at::Tensor advance(int i, const at::Tensor& x, const at::Tensor& model_output) override {
    const auto noise = draw_noise(x);
    return diffusion_.ddpm_step(x, model_output, num_steps() - 1 - i, noise, clip_denoised_);
  }

 private:
  GaussianDiffusion diffusion_;
  bool clip_denoised_;
};

}  // namespace

namespace detail {

std::unique_ptr<Sampler> make_ddpm_sampler(const SamplerOptions& o) {
  o.expect_only("ddpm", {"respacing", "clip_denoised"});
  return std::make_unique<DDPMSampler>(GaussianDiffusion::for_run(o.steps, o.respacing.value_or(""), /*ddim_stride=*/false),
                                       o.clip_denoised.value_or(false));
}

}  // namespace detail

}  // namespace ditcache
