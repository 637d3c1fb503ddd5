// Rectified-flow time grid and Euler sampler (models.md §3.5).
#include "ditcache/sampling/rflow.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/error.h"
#include "ditcache/io/state_dict.h"
#include "ditcache/sampling/sampler.h"

namespace ditcache {

void RFlowSchedule::validate() const {
  auto bad = [](const std::string& what) { throw Error(ErrorCode::kInvalidArgument, "rflow schedule: " + what); };
  if (num_steps < 1) bad(fmt::format("num_steps must be >= 1, found {}", num_steps));
  if (num_timesteps < 1) bad(fmt::format("num_timesteps must be >= 1, found {}", num_timesteps));
  if (use_timestep_transform) {
    if (!(height > 0) || !(width > 0)) bad(fmt::format("height and width must be > 0 pixels, found {} x {}", height, width));
    if (num_frames < 1 || (num_frames > 1 && num_frames < 17)) {
      bad(fmt::format("num_frames must be 1 (an image) or >= 17 for the timestep shift, found {} (OpenSora's shift uses "
                      "floor(frames/17)*5 latent frames, which is 0 there)", num_frames));
    }
  }
  if (args_dtype != at::kFloat && args_dtype != at::kBFloat16) bad("args_dtype must be float32 or bfloat16");
}

std::vector<float> rflow_timesteps(const RFlowSchedule& s) {
  s.validate();
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  std::vector<float> base;
  for (int i = 0; i < s.num_steps; ++i) {
    base.push_back(static_cast<float>((1.0 - static_cast<double>(i) / s.num_steps) * s.num_timesteps));
  }
  auto t = at::tensor(base, f32);
  if (s.use_timestep_transform) {
    // The reference's timestep_transform, in its dtypes: the ratio in the model-argument dtype,
    // the interpolation in float32.
    auto arg = [&](double v) { return at::full({1}, v, f32).to(s.args_dtype); };
    auto ratio_space = (arg(s.height) * arg(s.width) / (512 * 512)).sqrt();
    auto frames = arg(static_cast<double>(s.num_frames));
    auto latent_frames = s.num_frames == 1 ? at::ones_like(frames) : at::floor_divide(frames, 17) * 5;
    auto ratio = ratio_space * latent_frames.sqrt() * 1.0;
    auto tau = t / s.num_timesteps;
    t = (ratio * tau / (1 + (ratio - 1) * tau)) * s.num_timesteps;
  }
  t = t.to(at::kFloat).contiguous();
  return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
}

at::Tensor rflow_guidance(const at::Tensor& v, double guidance_scale) {
  if (!v.defined() || v.dim() < 1 || v.size(0) % 2 != 0) {
    throw Error(ErrorCode::kShapeMismatch,
                fmt::format("rflow guidance: the velocity batch has shape {}, expected [2n, ...] (n conditional rows, then n "
                            "unconditional)", v.defined() ? shape_string(v.sizes()) : std::string("undefined")));
  }
  auto halves = v.chunk(2, 0);  // [n, ...] each: cond, uncond
  return halves[1] + guidance_scale * (halves[0] - halves[1]);
}

at::Tensor rflow_sample(const at::Tensor& z0, const std::vector<float>& timesteps, int num_timesteps, double guidance_scale,
                        const VelocityFn& velocity, const std::function<void(int64_t, int64_t)>& progress) {
  if (timesteps.empty()) throw Error(ErrorCode::kInvalidArgument, "rflow_sample: no timesteps");
  // The "rflow" Sampler's loop with the guidance in front of its update.
  auto sampler = make_rflow_sampler(timesteps, num_timesteps);
  auto z = z0;
  const int64_t n = z.size(0);
  const int total = sampler->num_steps();
  for (int i = 0; i < total; ++i) {
    auto t = at::full({2 * n}, sampler->model_timestep(i), z.options().dtype(at::kFloat));
    auto v = velocity(at::cat({z, z}, 0), t, i);
    if (v.size(0) != 2 * n) {
      throw Error(ErrorCode::kShapeMismatch, fmt::format("rflow_sample: the model returned {} rows for a CFG batch of {}", v.size(0), 2 * n));
    }
    z = sampler->step(i, z, rflow_guidance(v, guidance_scale));
    if (progress) progress(i + 1, total);
  }
  return z;
}

}  // namespace ditcache
