// "ddim": DiT's DDIM steps (GaussianDiffusion::ddim_step, models.md §1.5) as a Sampler.
#include <cmath>
#include <memory>

#include <fmt/format.h>

#include "ditcache/sampling/gaussian_diffusion.h"
#include "ditcache/sampling/sampler.h"

namespace ditcache {

namespace {

// Call i is respaced step k = S−1−i. With a generator, every step draws one noise tensor of x's
// shape whatever eta (DiT's sample loop draws it for DDIM too), so the stream, and with it every
// later draw, is DiT's; at eta = 0 the draw is not used, and without a generator none is made.
class DDIMSampler final : public Sampler {
 public:
  DDIMSampler(GaussianDiffusion diffusion, double eta, bool clip_denoised)
      : Sampler("ddim", Prediction::kEpsilon, diffusion.sampling_timesteps(), /*counts_down=*/true),
        diffusion_(std::move(diffusion)),
        eta_(eta),
        clip_denoised_(clip_denoised) {}

  bool draws_noise() const override { return generator().defined(); }
  bool needs_generator() const override { return eta_ > 0; }

 protected:
  at::Tensor advance(int i, const at::Tensor& x, const at::Tensor& model_output) override {
    const auto noise = draws_noise() ? draw_noise(x) : at::Tensor();
    return diffusion_.ddim_step(x, model_output, num_steps() - 1 - i, noise, eta_, clip_denoised_);
  }

 private:
  GaussianDiffusion diffusion_;
  double eta_;
  bool clip_denoised_;
};

}  // namespace

namespace detail {

std::unique_ptr<Sampler> make_ddim_sampler(const SamplerOptions& o) {
  o.expect_only("ddim", {"respacing", "eta", "clip_denoised"});
  const double eta = o.eta.value_or(0.0);
  if (!(eta >= 0.0 && eta <= 1.0)) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("sampler 'ddim': eta must be in [0, 1], found {}", eta));
  }
  return std::make_unique<DDIMSampler>(GaussianDiffusion::for_run(o.steps, o.respacing.value_or(""), /*ddim_stride=*/true),
                                       eta, o.clip_denoised.value_or(false));
}

}  // namespace detail

}  // namespace ditcache
