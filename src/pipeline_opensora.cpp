// The OpenSora 1.2 sampling pipeline (models.md §3.2, §3.5): the reference inference script's
// CFG batch around the rectified-flow loop.
#include "ditcache/pipeline_opensora.h"

#include <cmath>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include "ditcache/error.h"
#include "ditcache/io/state_dict.h"
#include "ditcache/models/opensora_vae.h"
#include "ditcache/sampling/rflow.h"
#include "ditcache/step_driver.h"
#include "ditcache/text/tokenizer.h"

namespace ditcache {

namespace {

Error invalid(const std::string& what) { return Error(ErrorCode::kInvalidArgument, "sample_stdit3: " + what); }

// The caption embeddings as [n, L, C], checked against the model.
at::Tensor caption_rows(const STDiT3Config& config, const at::Tensor& y_in) {
  if (!y_in.defined()) throw invalid(fmt::format("no caption embeddings: y must be [n, {}, {}] (the T5 output)", config.model_max_length, config.caption_channels));
  at::Tensor y = y_in.dim() == 4 && y_in.size(1) == 1 ? y_in.squeeze(1) : y_in;
  if (y.dim() != 3 || y.size(0) < 1 || y.size(1) != config.model_max_length || y.size(2) != config.caption_channels ||
      !at::isFloatingType(y.scalar_type())) {
    throw Error(ErrorCode::kShapeMismatch,
                fmt::format("sample_stdit3: caption embeddings y must be floating point [n, {}, {}] ({} pads captions to "
                            "model_max_length {} tokens of caption_channels {}), found {} {}",
                            config.model_max_length, config.caption_channels, config.name, config.model_max_length,
                            config.caption_channels, c10::toString(y_in.scalar_type()), shape_string(y_in.sizes())));
  }
  return y;
}

// Checks the T5 mask: [n, L] of 0/1, each row a non-empty prefix of valid tokens.
void check_mask(const at::Tensor& mask, int64_t n, int64_t L) {
  if (!mask.defined()) return;
  if (mask.dim() != 2 || mask.size(0) != n || mask.size(1) != L) {
    throw Error(ErrorCode::kShapeMismatch, fmt::format("sample_stdit3: caption mask must be [{}, {}] (one row per caption), found {}",
                                                       n, L, shape_string(mask.sizes())));
  }
  auto m = mask.to(at::kCPU).to(at::kDouble);
  if (!(m.eq(0) | m.eq(1)).all().item<bool>()) throw invalid("caption mask values must be 0 or 1");
  auto valid = m.ne(0);
  auto counts = valid.sum(1);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = counts[i].item<int64_t>();
    if (k == 0) throw invalid(fmt::format("caption mask row {} has no valid token (T5 masks include the EOS token)", i));
    if (!valid[i].narrow(0, 0, k).all().item<bool>()) {
      throw invalid(fmt::format("caption mask row {} is not a prefix of valid tokens (T5 masks are 1...1 0...0)", i));
    }
  }
}

struct Plan {
  int64_t n = 0, caption_tokens = 0;
  std::vector<int64_t> latent;  // [T_lat, h, w]
  int64_t frames = 0, gh = 0, gw = 0;  // token grid after patching
  std::vector<float> timesteps;
};

Plan plan_run(const STDiT3Config& config, const STDiT3SampleOptions& o, bool need_y) {
  Plan p;
  if (need_y || o.y.defined()) {
    auto y = caption_rows(config, o.y);
    p.n = y.size(0);
    p.caption_tokens = y.size(1);
    check_mask(o.mask, p.n, p.caption_tokens);
  } else {
    p.n = 1;
    p.caption_tokens = config.model_max_length;
  }
  if (o.steps < 1) throw invalid(fmt::format("steps must be >= 1, found {}", o.steps));
  if (!std::isfinite(o.guidance)) throw invalid(fmt::format("guidance must be a finite number, found {}", o.guidance));
  if (!(o.fps > 0) || !std::isfinite(o.fps)) throw invalid(fmt::format("fps must be > 0, found {}", o.fps));
  p.latent = opensora_latent_size(o.num_frames, o.height, o.width);
  RFlowSchedule schedule;
  schedule.num_steps = o.steps;
  schedule.height = static_cast<double>(o.height);
  schedule.width = static_cast<double>(o.width);
  schedule.num_frames = o.num_frames;
  schedule.args_dtype = o.bf16_time_shift ? at::kBFloat16 : at::kFloat;
  p.timesteps = rflow_timesteps(schedule);  // validates the frame count for the shift
  auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  p.frames = ceil_div(p.latent[0], config.patch_t);
  p.gh = ceil_div(p.latent[1], config.patch_h);
  p.gw = ceil_div(p.latent[2], config.patch_w);
  return p;
}

}  // namespace

std::vector<int64_t> opensora_latent_size(int64_t num_frames, int64_t height, int64_t width) {
  if (num_frames < 1) throw invalid(fmt::format("num_frames must be >= 1 (1 = an image), found {}", num_frames));
  if (height < 8 || width < 8) {
    throw invalid(fmt::format("height and width must be >= 8 pixels (the latent is 1/8 of the size), found {} x {}", height, width));
  }
  return {OpenSoraVAEConfig().latent_frames(num_frames), height / 8, width / 8};
}

void simulate_stdit3(const STDiT3Config& config, const STDiT3SampleOptions& options, CacheContext& cache) {
  config.validate();
  const Plan p = plan_run(config, options, /*need_y=*/false);
  const int64_t rows = 2 * p.n;
  StepDriver::simulate(cache, backbone_info(config), stdit3_run_shape(rows, true, p.frames, p.gh, p.gw, p.caption_tokens),
                       options.steps, "rflow", options.progress);
}

at::Tensor sample_stdit3(STDiT3& model, const STDiT3SampleOptions& options) {
  const auto& config = model->config();
  const Plan p = plan_run(config, options, /*need_y=*/true);
  const int64_t n = p.n;
  const auto param = model->parameters().front();
  const auto device = param.device();

  const std::vector<int64_t> shape = {n, config.in_channels, p.latent[0], p.latent[1], p.latent[2]};
  at::Tensor z;
  if (options.init_noise) {
    const auto& noise = *options.init_noise;
    if (!noise.defined() || noise.sizes() != at::IntArrayRef(shape) || !at::isFloatingType(noise.scalar_type())) {
      throw Error(ErrorCode::kShapeMismatch,
                  fmt::format("sample_stdit3: initial noise has shape {}, expected floating point {} ({} frames of {}x{} pixels "
                              "-> latent {} x {} x {})",
                              noise.defined() ? shape_string(noise.sizes()) : std::string("nothing"), shape_string(shape),
                              options.num_frames, options.height, options.width, p.latent[0], p.latent[1], p.latent[2]));
    }
    z = noise.to(at::kFloat).cpu();
  } else {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
    z = at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat));  // [n, 4, T, h, w]
  }
  z = z.to(device);

  // The reference's CFG batch: cond captions first, then the null caption once per prompt.
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  auto y = caption_rows(config, options.y).to(f32);
  auto null_y = model->null_caption().to(f32).unsqueeze(0).expand({n, -1, -1});
  STDiT3Inputs in;
  in.y = at::cat({y, null_y}, 0);  // [2n, L, C]
  if (options.mask.defined()) in.mask = options.mask.to(device).to(at::kLong);  // [n, L]: tiled by the model
  // The reference script tells the model 120 fps for an image.
  in.fps = at::full({n}, options.num_frames == 1 ? 120.0 : options.fps, f32);
  in.height = static_cast<double>(options.height);
  in.width = static_cast<double>(options.width);

  at::NoGradGuard no_grad;
  StepDriver driver(options.cache, model->info(), stdit3_run_shape(2 * n, true, p.frames, p.gh, p.gw, p.caption_tokens),
                    options.steps, "rflow", device, {}, options.forward_seconds);
  const int64_t cin = config.in_channels;
  auto velocity = [&](const at::Tensor& z_in, const at::Tensor& t, int step) {
    in.x = z_in;  // [2n, 4, T, h, w]
    in.timestep = t;
    // [2n, Cout, T, h, w] float32; only the velocity is used (and kept): the learned-sigma half is unused.
    return driver.step(step, [&](CacheContext* cache) { return model->forward(in, cache).narrow(1, 0, cin).contiguous(); });
  };
  return rflow_sample(z, p.timesteps, 1000, options.guidance, velocity, options.progress).contiguous();
}

std::string opensora_caption(const std::string& prompt, double aesthetic_score, bool clean) {
  std::string text = prompt;
  if (aesthetic_score >= 0 && text.find("aesthetic score:") == std::string::npos) {
    text += fmt::format(" aesthetic score: {:.1f}.", aesthetic_score);
  }
  return preprocess_caption(text, clean);
}

}  // namespace ditcache
