// The Sampler base (run order, shapes, noise) and the sampler registry (sampling/sampler.h).
#include "ditcache/sampling/sampler.h"

#include <algorithm>
#include <map>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ditcache/io/state_dict.h"

namespace ditcache {

// The built-in samplers' factories, one file each (src/sampling/sampler_<name>.cpp).
namespace detail {
std::unique_ptr<Sampler> make_ddpm_sampler(const SamplerOptions& options);
std::unique_ptr<Sampler> make_ddim_sampler(const SamplerOptions& options);
std::unique_ptr<Sampler> make_dpm_solver_sampler(const SamplerOptions& options);
std::unique_ptr<Sampler> make_rflow_sampler(const SamplerOptions& options);
}  // namespace detail

namespace {

std::map<std::string, SamplerInfo>& infos() {
  static std::map<std::string, SamplerInfo> instance;
  return instance;
}

std::map<std::string, SamplerFactory>& factories() {
  static std::map<std::string, SamplerFactory> instance;
  return instance;
}

void add(const std::string& name, Prediction prediction, const std::string& summary, SamplerFactory factory) {
  if (name.empty() || name.find_first_of(":,= ") != std::string::npos) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("sampler name '{}' must be non-empty without ':', ',', '=' or spaces", name));
  }
  if (infos().count(name)) throw Error(ErrorCode::kInvalidArgument, fmt::format("sampler '{}' is already registered", name));
  infos()[name] = SamplerInfo{name, prediction, summary};
  factories()[name] = std::move(factory);
}

void ensure_builtins() {
  static const bool done = [] {
    add("ddpm", Prediction::kEpsilon, "DiT's ancestral DDPM over a respaced linear-beta schedule, learned-range variance",
        detail::make_ddpm_sampler);
    add("ddim", Prediction::kEpsilon, "DiT's DDIM over a respaced linear-beta schedule (ddimN strides), eta 0..1",
        detail::make_ddim_sampler);
    add("dpm-solver++", Prediction::kEpsilon,
        "DPM-Solver++ 2M (PixArt-alpha), the original or the diffusers time grid", detail::make_dpm_solver_sampler);
    add("rflow", Prediction::kVelocity, "rectified-flow Euler steps with OpenSora 1.2's timestep shift",
        detail::make_rflow_sampler);
    return true;
  }();
  (void)done;
}

std::vector<std::string> names_where(const std::function<bool(const SamplerInfo&)>& keep) {
  std::vector<std::string> out;
  for (const auto& [name, info] : infos()) {
    if (keep(info)) out.push_back(name);
  }
  return out;
}

}  // namespace

const char* to_string(Prediction prediction) noexcept {
  return prediction == Prediction::kEpsilon ? "epsilon" : "velocity";
}

// ---------------------------------------------------------------------------------------------
Sampler::Sampler(std::string name, Prediction prediction, std::vector<double> model_timesteps, bool counts_down)
    : name_(std::move(name)), prediction_(prediction), model_timesteps_(std::move(model_timesteps)), counts_down_(counts_down) {
  if (model_timesteps_.empty()) throw error(ErrorCode::kInvalidArgument, "a run needs at least one model call, found 0");
}

Error Sampler::error(ErrorCode code, const std::string& what) const {
  return Error(code, fmt::format("sampler '{}': {}", name_, what));
}

double Sampler::model_timestep(int i) const {
  if (i < 0 || i >= num_steps()) {
    throw error(ErrorCode::kInvalidArgument, fmt::format("call {} is outside the run's 0..{}", i, num_steps() - 1));
  }
  return model_timesteps_[static_cast<size_t>(i)];
}

int Sampler::step_index(int i) const {
  model_timestep(i);  // range check
  return counts_down_ ? num_steps() - 1 - i : i;
}

void Sampler::reset() {
  next_ = 0;
  clear_state();
}

at::Tensor Sampler::step(int i, const at::Tensor& x, const at::Tensor& model_output) {
  if (i == 0) reset();
  if (i != next_ || i >= num_steps()) {
    throw error(ErrorCode::kInvalidArgument,
                fmt::format("step {} called {}; a run calls steps 0..{} in order (step 0 starts a new one)", i,
                            next_ == 0 ? std::string("before step 0") : fmt::format("after step {}", next_ - 1),
                            num_steps() - 1));
  }
  if (!x.defined() || !model_output.defined()) throw error(ErrorCode::kInvalidArgument, fmt::format("step {}: undefined tensor", i));
  // The prediction alone (x's shape) or followed by as many learned-sigma channels ([B, 2C, ...]).
  const bool same = model_output.sizes() == x.sizes();
  bool learned_sigma = x.dim() >= 2 && model_output.dim() == x.dim() && model_output.size(1) == 2 * x.size(1);
  for (int64_t d = 0; learned_sigma && d < x.dim(); ++d) learned_sigma = d == 1 || model_output.size(d) == x.size(d);
  if (!same && !learned_sigma) {
    std::string alternative;
    if (x.dim() >= 2) {
      auto doubled = x.sizes().vec();  // [B, 2C, ...]
      doubled[1] *= 2;
      alternative = fmt::format(" (or {} with learned-sigma channels)", shape_string(doubled));
    }
    throw error(ErrorCode::kShapeMismatch,
                fmt::format("the {} of step {} has shape {}, expected x's {}{}",
                            prediction_ == Prediction::kEpsilon ? "noise prediction" : "velocity", i,
                            shape_string(model_output.sizes()), shape_string(x.sizes()), alternative));
  }
  if (needs_generator() && !generator_.defined()) {
    throw error(ErrorCode::kInvalidArgument, "draws noise every step and needs a generator; call set_generator() first");
  }
  auto out = advance(i, x, model_output);
  ++next_;
  return out;
}

at::Tensor Sampler::draw_noise(const at::Tensor& x) const {
  if (!generator_.defined()) {
    throw error(ErrorCode::kInvalidArgument, "draws noise every step and needs a generator; call set_generator() first");
  }
  // DiT's draw: the whole batch's shape in float32 from the (CPU) generator, then to the device.
  return at::randn(x.sizes(), generator_, at::TensorOptions().dtype(at::kFloat).device(generator_.device())).to(x.device());
}

at::Tensor Sampler::predicted(const at::Tensor& x, const at::Tensor& model_output) {
  if (model_output.sizes() == x.sizes()) return model_output;
  return model_output.narrow(1, 0, x.size(1));  // [B, C, ...] of [B, 2C, ...]
}

void check_sampler_prediction(const Sampler& sampler, Prediction model_prediction, const std::string& model) {
  if (sampler.prediction() == model_prediction) return;
  ensure_builtins();
  const auto fitting = names_where([&](const SamplerInfo& info) { return info.prediction == model_prediction; });
  throw Error(ErrorCode::kUnsupported,
              fmt::format("sampler '{}' expects the model to predict {}, but {} predicts {}; samplers for {}: {}", sampler.name(),
                          to_string(sampler.prediction()), model, to_string(model_prediction), to_string(model_prediction),
                          fitting.empty() ? std::string("none registered") : fmt::format("{}", fmt::join(fitting, ", "))));
}

// ---------------------------------------------------------------------------------------------
std::vector<std::string> SamplerOptions::given() const {
  std::vector<std::string> out;
  if (respacing) out.emplace_back("respacing");
  if (eta) out.emplace_back("eta");
  if (clip_denoised) out.emplace_back("clip_denoised");
  if (convention) out.emplace_back("convention");
  if (rflow) out.emplace_back("rflow");
  return out;
}

void SamplerOptions::expect_only(const std::string& sampler, const std::vector<std::string>& accepted) const {
  for (const auto& option : given()) {
    if (std::find(accepted.begin(), accepted.end(), option) == accepted.end()) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("sampler '{}' takes no option '{}'; its options: steps{}{}", sampler, option,
                              accepted.empty() ? "" : ", ", fmt::join(accepted, ", ")));
    }
  }
}

void register_sampler(const std::string& name, Prediction prediction, const std::string& summary, SamplerFactory factory) {
  ensure_builtins();
  add(name, prediction, summary, std::move(factory));
}

std::vector<SamplerInfo> registered_samplers() {
  ensure_builtins();
  std::vector<SamplerInfo> out;
  for (const auto& [name, info] : infos()) out.push_back(info);
  return out;
}

std::unique_ptr<Sampler> make_sampler(const std::string& name, const SamplerOptions& options) {
  ensure_builtins();
  auto it = factories().find(name);
  if (it == factories().end()) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("sampler '{}' is not known; known: {}", name,
                            fmt::join(names_where([](const SamplerInfo&) { return true; }), ", ")));
  }
  std::unique_ptr<Sampler> sampler;
  try {
    sampler = it->second(options);
  } catch (const Error& e) {
    // Schedules name themselves ("DPM-Solver: ..."); say which sampler they were building.
    const std::string prefix = fmt::format("sampler '{}'", name);
    if (e.message().rfind(prefix, 0) == 0) throw;
    throw Error(e.code(), fmt::format("{}: {}", prefix, e.message()));
  }
  const auto& info = infos().at(name);
  if (!sampler || sampler->prediction() != info.prediction) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("sampler '{}': the factory built {}, expected a sampler of {} predictions", name,
                            sampler ? fmt::format("one of {} predictions", to_string(sampler->prediction())) : "nothing",
                            to_string(info.prediction)));
  }
  return sampler;
}

}  // namespace ditcache
