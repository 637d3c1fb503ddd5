#pragma once
/// \file The sampler interface (design.md §2 "Sampler"): the schedule of a run of S model calls and
/// the update that advances x_t from the guided model output of each call, keeping whatever
/// multistep state it needs. Classifier-free guidance is the pipeline's job; a pipeline drives any
/// compatible sampler with one loop:
///
///     check_sampler_prediction(*sampler, Prediction::kEpsilon, "DiT");  // refuse a mismatch
///     sampler->set_generator(generator);             // where sampler->draws_noise()
///     for (int i = 0; i < sampler->num_steps(); ++i) {
///       const double t = sampler->model_timestep(i);  // the pipeline builds the timestep tensor
///       auto out = guided_model_output(x, t);         // [B, C, ...] or [B, 2C, ...]
///       x = sampler->step(i, x, out);
///     }
///
/// Built-in samplers (make_sampler; one file each under src/sampling/, see
/// docs/adding-a-sampler.md): "ddpm" and "ddim" over DiT's respaced GaussianDiffusion,
/// "dpm-solver++" (DPM-Solver++ 2M, PixArt-α, both conventions), "rflow" (OpenSora 1.2's rectified
/// flow with its timestep shift).

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>

#include "ditcache/error.h"
#include "ditcache/sampling/dpm_solver.h"
#include "ditcache/sampling/rflow.h"

namespace ditcache {

/// What a sampler expects the model to predict (channels 0..C-1 of its output; C = x's channels).
enum class Prediction {
  kEpsilon,   ///< the noise ε of a variance-preserving diffusion (DiT, PixArt-α)
  kVelocity,  ///< the rectified-flow velocity v ≈ x0 − ε (OpenSora 1.2)
};
/// "epsilon" / "velocity".
const char* to_string(Prediction prediction) noexcept;

/// A sampler: a fixed schedule of num_steps() model calls and the update after each. Calls come
/// as step(0), step(1), ..., step(S−1) in execution order; step(0) starts a new run (forgetting
/// any state of the last one), so one object runs any number of times. Not thread-safe.
class Sampler {
 public:
  virtual ~Sampler() = default;

  /// The registry name ("ddpm", "ddim", "dpm-solver++", "rflow").
  const std::string& name() const noexcept { return name_; }
  /// What the model must predict.
  Prediction prediction() const noexcept { return prediction_; }
  /// Model calls in a run (S).
  int num_steps() const noexcept { return static_cast<int>(model_timesteps_.size()); }
  /// The timestep the model is told at call i (0..S−1), in the model's own units: DDPM/DDIM the
  /// integer training step (DiT's timestep tensor is int64), DPM-Solver++ 999, 949.05, ...
  /// (original) or integers (diffusers), rflow the shifted float32 time in [0, 1000]. The pipeline
  /// builds the tensor in the dtype its model expects. Throws Error(kInvalidArgument) for an i
  /// outside 0..S−1.
  double model_timestep(int i) const;
  /// [S] model_timestep(i) for every call.
  const std::vector<double>& model_timesteps() const noexcept { return model_timesteps_; }
  /// The step's index in the reference's own numbering, for a cache's StepInfo::index: DiT's
  /// respaced k = S−1−i for DDPM/DDIM (step_index_counts_down()), i for the others.
  int step_index(int i) const;
  /// Whether step_index counts S−1 .. 0 (RunInfo::step_index_counts_down).
  bool step_index_counts_down() const noexcept { return counts_down_; }

  /// Whether step() draws noise from the generator (DDPM every step; DDIM every step when a
  /// generator is set, whatever eta, as DiT's loop does, so the random stream does not depend on
  /// eta and a run reproduces DiT's draws bit for bit).
  virtual bool draws_noise() const { return false; }
  /// Whether step() cannot run without a generator (DDPM; DDIM with eta > 0).
  virtual bool needs_generator() const { return false; }
  /// The generator step() draws its noise from: at::randn(x.sizes(), generator, float32) on the
  /// generator's device, then moved to x's device, one draw per step, before the update (the order
  /// of DiT's sample loop, which draws after the model call; a model forward draws nothing). The
  /// generator is shared, not copied: the caller's own draws and the sampler's form one stream
  /// (DiT: the initial noise, then one draw per step). An undefined generator clears it.
  void set_generator(at::Generator generator) { generator_ = std::move(generator); }
  /// The generator set by set_generator (undefined when none).
  const at::Generator& generator() const noexcept { return generator_; }

  /// Advances x from the (guided) model output of call i and returns the new x (x's shape; the
  /// dtype and device each sampler documents). `model_output` is [x's shape] or, for x of rank >= 2,
  /// [B, 2C, ...] with learned-sigma channels after the prediction (DDPM uses them as the
  /// learned-range variance; the others ignore them). Throws Error(kInvalidArgument) naming the
  /// sampler for an i out of order (calls run 0, 1, ..., S−1; step(0) restarts) or a missing
  /// generator (needs_generator()), Error(kShapeMismatch) for an output of another shape.
  at::Tensor step(int i, const at::Tensor& x, const at::Tensor& model_output);
  /// Forgets the current run: the next call must be step(0). (step(0) does this by itself.)
  void reset();
  /// Calls completed in the current run (0..S).
  int steps_done() const noexcept { return next_; }

 protected:
  /// `model_timesteps` [S] in execution order; `counts_down`: see step_index_counts_down().
  Sampler(std::string name, Prediction prediction, std::vector<double> model_timesteps, bool counts_down = false);
  /// The update of call i, after step() checked the order and the shapes.
  virtual at::Tensor advance(int i, const at::Tensor& x, const at::Tensor& model_output) = 0;
  /// Forgets multistep state (called when a run starts and by reset()).
  virtual void clear_state() {}
  /// N(0, I) float32 of x's shape from the generator (see set_generator), on x's device. Throws
  /// Error(kInvalidArgument) naming the sampler when no generator is set.
  at::Tensor draw_noise(const at::Tensor& x) const;
  /// The prediction channels 0..C−1 of a model output step() accepted (the output itself when it
  /// has x's shape).
  static at::Tensor predicted(const at::Tensor& x, const at::Tensor& model_output);
  /// An Error(code) whose message is "sampler '<name>': <what>".
  Error error(ErrorCode code, const std::string& what) const;

 private:
  std::string name_;
  Prediction prediction_;
  std::vector<double> model_timesteps_;
  bool counts_down_;
  at::Generator generator_;
  int next_ = 0;
};

/// Throws Error(kUnsupported) when `sampler` expects another prediction than `model` (a name for
/// the message, e.g. "DiT") makes: "sampler 'rflow' expects the model to predict velocity, but DiT
/// predicts epsilon; samplers for epsilon: ddim, ddpm, dpm-solver++".
void check_sampler_prediction(const Sampler& sampler, Prediction model_prediction, const std::string& model);

/// Settings of make_sampler. Each sampler reads `steps` and the options it takes; giving it one it
/// does not take is an error, never silently ignored.
struct SamplerOptions {
  /// Model calls (>= 1). ddpm/ddim with a `respacing`: 0 takes the respacing's count (another
  /// number must equal it).
  int steps = 0;
  /// ddpm, ddim: DiT's respacing string ("250", "ddim50", "10,20"; see space_timesteps). Default:
  /// "<steps>" for ddpm; for ddim "ddim<steps>" where an integer stride gives that count, else
  /// "<steps>" (GaussianDiffusion::ddim).
  std::optional<std::string> respacing;
  /// ddim: eta in [0, 1] (0, the default: deterministic).
  std::optional<double> eta;
  /// ddpm, ddim: clamp each x0 prediction to [-1, 1] (DiT's clip_denoised; default off, as for latents).
  std::optional<bool> clip_denoised;
  /// dpm-solver++: the reference's time grid and arithmetic (default kOriginal, PixArt-alpha's own).
  std::optional<DPMSolverConvention> convention;
  /// rflow (required): the timestep shift's geometry and time scale; its num_steps is not read
  /// (`steps` counts the calls).
  std::optional<RFlowSchedule> rflow;

  /// The names of the options given, in declaration order ("respacing", "eta", ...).
  std::vector<std::string> given() const;
  /// Throws Error(kInvalidArgument) for the first option given that is not in `accepted`:
  /// "sampler 'ddpm' takes no option 'eta'; its options: steps, respacing, clip_denoised".
  void expect_only(const std::string& sampler, const std::vector<std::string>& accepted) const;
};

/// A sampler factory: builds from the options (bad values throw Error(kInvalidArgument)).
using SamplerFactory = std::function<std::unique_ptr<Sampler>(const SamplerOptions&)>;

/// A registered sampler.
struct SamplerInfo {
  std::string name;       ///< the registry name make_sampler takes
  Prediction prediction;  ///< what its samplers expect the model to predict
  std::string summary;    ///< one line
};

/// Registers a factory under a name (non-empty, no spaces; a duplicate name throws
/// Error(kInvalidArgument)) with the prediction its samplers expect and a one-line summary.
void register_sampler(const std::string& name, Prediction prediction, const std::string& summary, SamplerFactory factory);
/// Every registered sampler, by name.
std::vector<SamplerInfo> registered_samplers();
/// Builds the sampler `name` for `options`. Error(kInvalidArgument) names an unknown sampler
/// (listing the known ones), an option it does not take or a bad value; every message starts
/// "sampler '<name>': ".
std::unique_ptr<Sampler> make_sampler(const std::string& name, const SamplerOptions& options);

/// DPM-Solver++ 2M ("dpm-solver++") over an explicit schedule (dpm_solver_schedule). step()
/// computes in float32 and returns float32: x_{i+1} from x_i and the noise prediction of call i,
/// with the previous call's data prediction as its multistep state.
std::unique_ptr<Sampler> make_dpm_solver_sampler(DPMSolverSchedule schedule);
/// Rectified flow's Euler update ("rflow") over explicit timesteps t_0 > t_1 > ... (rflow_timesteps)
/// on the time scale `num_timesteps`: x + v·(t_i − t_{i+1})/T with t_S = 0, in x's dtype. Throws
/// Error(kInvalidArgument) for no timesteps or num_timesteps < 1.
std::unique_ptr<Sampler> make_rflow_sampler(std::vector<float> timesteps, int num_timesteps = 1000);

}  // namespace ditcache
