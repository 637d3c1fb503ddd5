#include "ditcache/pipeline.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include "ditcache/error.h"
#include "ditcache/io/state_dict.h"
#include "ditcache/sampling/gaussian_diffusion.h"
#include "ditcache/step_driver.h"

namespace ditcache {

const char* to_string(SamplerKind kind) noexcept { return kind == SamplerKind::kDDIM ? "ddim" : "ddpm"; }

SamplerKind parse_sampler(const std::string& text) {
  if (text == "ddpm") return SamplerKind::kDDPM;
  if (text == "ddim") return SamplerKind::kDDIM;
  throw Error(ErrorCode::kInvalidArgument, fmt::format("sampler '{}' is not known; expected 'ddpm' or 'ddim'", text));
}

namespace {

GaussianDiffusion make_diffusion(const DiTSampleOptions& options) {
  if (!options.respacing.empty()) return GaussianDiffusion(options.respacing);
  if (options.sampler == SamplerKind::kDDIM) return GaussianDiffusion::ddim(options.steps);
  return GaussianDiffusion(std::to_string(options.steps));
}

void check_labels(const DiTConfig& config, const DiTSampleOptions& options) {
  if (options.class_labels.empty()) throw Error(ErrorCode::kInvalidArgument, "sample_dit: no class labels given");
  for (int64_t label : options.class_labels) {
    if (label < 0 || label >= config.num_classes) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("class label {} is out of range; {} has classes 0..{}",
                                                           label, config.name, config.num_classes - 1));
    }
  }
}

}  // namespace

void simulate_dit(const DiTConfig& config, const DiTSampleOptions& options, CacheContext& cache) {
  check_labels(config, options);
  const auto diffusion = make_diffusion(options);
  const bool cfg = options.guidance_scale > 1.0;
  const int64_t rows = static_cast<int64_t>(options.class_labels.size()) * (cfg ? 2 : 1);
  StepDriver::simulate(cache, backbone_info(config), dit_run_shape(config, rows, cfg), static_cast<int>(diffusion.num_steps()),
                       to_string(options.sampler), options.progress);
}

at::Tensor sample_dit(DiT& model, const DiTSampleOptions& options) {
  const auto& config = model->config();
  const int64_t n = static_cast<int64_t>(options.class_labels.size());
  check_labels(config, options);
  const GaussianDiffusion diffusion = make_diffusion(options);
  const auto param = model->parameters().front();
  const auto device = param.device();
  const auto model_dtype = param.scalar_type();
  const bool cfg = options.guidance_scale > 1.0;

  auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const std::vector<int64_t> shape = {n, config.in_channels, config.input_size, config.input_size};
  // The initial draw happens even when the caller supplies the noise, so the per-step noise that
  // follows is the same stream either way: supplying the seed's own noise reproduces the run.
  at::Tensor z = at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat));
  if (options.init_noise) {
    if (options.init_noise->sizes() != at::IntArrayRef(shape)) {
      throw Error(ErrorCode::kShapeMismatch, fmt::format("initial noise has shape {}, expected {}",
                                                         shape_string(options.init_noise->sizes()), shape_string(shape)));
    }
    z = options.init_noise->to(at::kFloat).cpu();
  }
  std::vector<int64_t> labels = options.class_labels;
  if (cfg) {
    z = at::cat({z, z}, 0);  // [2n, C, H, W]: cond then uncond
    labels.insert(labels.end(), static_cast<size_t>(n), config.num_classes);
  }
  at::Tensor x = z.to(device);
  auto y = at::tensor(labels, at::TensorOptions().dtype(at::kLong)).to(device);

  at::NoGradGuard no_grad;
  const int64_t steps = diffusion.num_steps();
  StepDriver driver(options.cache, model->info(), dit_run_shape(config, x.size(0), cfg), static_cast<int>(steps),
                    to_string(options.sampler), device, options.progress, options.forward_seconds);
  for (int64_t k = steps - 1; k >= 0; --k) {
    const int position = static_cast<int>(steps - 1 - k);
    auto t = at::full({x.size(0)}, diffusion.model_timestep(k), at::TensorOptions().dtype(at::kLong).device(device));
    auto xin = x.to(model_dtype);
    auto out = driver.step(position, [&](CacheContext* cache) {
      return cfg ? model->forward_with_cfg(xin, t, y, options.guidance_scale, cache) : model->forward(xin, t, y, cache);
    }).to(at::kFloat);
    // DiT draws one noise tensor of the batch's shape every step, DDIM included.
    auto noise = at::randn(x.sizes(), generator, at::TensorOptions().dtype(at::kFloat)).to(device);
    x = options.sampler == SamplerKind::kDDIM ? diffusion.ddim_step(x, out, k, noise, options.ddim_eta, options.clip_denoised)
                                              : diffusion.ddpm_step(x, out, k, noise, options.clip_denoised);
    driver.done(position);
  }
  return cfg ? x.narrow(0, 0, n).contiguous() : x;
}

}  // namespace ditcache
