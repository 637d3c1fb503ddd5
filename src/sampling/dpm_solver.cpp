// DPM-Solver++ 2M over PixArt-α's discrete VP schedule, in the original PixArt-alpha and the
// diffusers conventions (models.md §2.5). The schedule is computed with the tensor operations and
// dtypes the references use (float64 numpy betas and a float32 table for the original; float32
// linspace/cumprod for diffusers), so its numbers are theirs, not merely close.
#include "ditcache/sampling/dpm_solver.h"

#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/error.h"
#include "ditcache/sampling/sampler.h"

namespace ditcache {

namespace {

constexpr int kTrainSteps = 1000;
constexpr double kBetaStart = 1e-4, kBetaEnd = 0.02;

std::vector<float> to_floats(const at::Tensor& t) {
  auto c = t.to(at::kFloat).contiguous().cpu();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

float item(const at::Tensor& t) { return t.item<float>(); }

// numpy.linspace(start, stop, num) in float64: i·step + start, the last point exactly `stop`.
std::vector<double> numpy_linspace(double start, double stop, int num) {
  std::vector<double> v(static_cast<size_t>(num));
  const double step = num > 1 ? (stop - start) / (num - 1) : 0.0;
  for (int i = 0; i < num; ++i) v[static_cast<size_t>(i)] = static_cast<double>(i) * step + start;
  if (num > 1) v.back() = stop;
  return v;
}

// Per-step coefficients from [S+1] float32 α, σ, λ tensors. `expm1`: the original's φ = expm1(−h);
// otherwise diffusers' exp(−h) − 1. Each is computed on one-element tensors, as the references do.
void fill_coefficients(DPMSolverSchedule& s, const at::Tensor& alpha, const at::Tensor& sigma, const at::Tensor& lam,
                       bool expm1) {
  for (int i = 0; i < s.num_steps; ++i) {
    auto at_ = [](const at::Tensor& v, int k) { return v.narrow(0, k, 1); };  // [1]
    auto h = at_(lam, i + 1) - at_(lam, i);
    auto phi = expm1 ? at::expm1(-h) : at::exp(-h) - 1.0;
    auto cx = at_(sigma, i + 1) / at_(sigma, i);
    auto cm = at_(alpha, i + 1) * phi;
    s.coef_x.push_back(item(cx));
    s.coef_m.push_back(item(cm));
    if (s.order[static_cast<size_t>(i)] == 1) {
      s.coef_d.push_back(0.f);
      s.inv_r.push_back(0.f);
    } else {
      auto r0 = (at_(lam, i) - at_(lam, i - 1)) / h;
      s.coef_d.push_back(item(0.5 * cm));
      s.inv_r.push_back(item(at::reciprocal(r0)));  // Python's `1. / r0`
    }
  }
}

// PixArt-alpha: NoiseScheduleVP('discrete', betas) and DPM_Solver.get_time_steps('time_uniform').
void original_schedule(DPMSolverSchedule& s) {
  const int S = s.num_steps;
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  auto betas = at::tensor(numpy_linspace(kBetaStart, kBetaEnd, kTrainSteps), at::TensorOptions().dtype(at::kDouble));
  auto log_alpha = 0.5 * at::log(1.0 - betas).cumsum(0);  // [1000] float64
  // (The reference clips λ below −5.1 off the table's end; the smallest λ here is about −5.06.)
  auto knots_t = at::linspace(0.0, 1.0, kTrainSteps + 1, f32).narrow(0, 1, kTrainSteps);  // t = (n+1)/1000
  auto knots_y = log_alpha.to(at::kFloat);
  auto t = at::linspace(1.0, 1.0 / kTrainSteps, S + 1, f32);  // [S+1]
  const auto kt = to_floats(knots_t);
  std::vector<at::Tensor> points;
  for (int i = 0; i <= S; ++i) {
    auto ti = t.narrow(0, i, 1);
    const float tv = item(ti);
    // Segment (j, j+1) with j = (knots strictly below t) − 1, clamped: a t on knot k >= 1 uses
    // (k−1, k), where the reference's stable sort of [t, knots] places it; outside, extrapolation.
    int64_t below = 0;
    while (below < kTrainSteps && kt[static_cast<size_t>(below)] < tv) ++below;
    const int64_t j = std::min<int64_t>(std::max<int64_t>(below - 1, 0), kTrainSteps - 2);
    auto x0 = knots_t.narrow(0, j, 1), x1 = knots_t.narrow(0, j + 1, 1);
    auto y0 = knots_y.narrow(0, j, 1), y1 = knots_y.narrow(0, j + 1, 1);
    points.push_back(y0 + (ti - x0) * (y1 - y0) / (x1 - x0));
  }
  auto la = at::cat(points);  // [S+1] log α
  auto alpha = at::exp(la);
  auto sigma = at::sqrt(1.0 - at::exp(2.0 * la));
  auto lam = la - 0.5 * at::log(1.0 - at::exp(2.0 * la));
  auto model_time = (t - 1.0 / kTrainSteps) * 1000.0;
  const auto mt = to_floats(model_time);
  s.model_timesteps.assign(mt.begin(), mt.begin() + S);
  s.grid = to_floats(t);
  s.alpha = to_floats(alpha);
  s.sigma = to_floats(sigma);
  s.lambda = to_floats(lam);
  for (int i = 0; i < S; ++i) s.order.push_back(i == 0 || (S < 10 && i == S - 1) ? 1 : 2);
  fill_coefficients(s, alpha, sigma, lam, /*expm1=*/true);
}

// diffusers: DPMSolverMultistepScheduler() (the PixArt converter's defaults) after set_timesteps(S).
void diffusers_schedule(DPMSolverSchedule& s) {
  const int S = s.num_steps;
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  auto betas = at::linspace(kBetaStart, kBetaEnd, kTrainSteps, f32);
  auto alphas_cumprod = at::cumprod(1.0 - betas, 0);
  auto all_sigmas = ((1.0 - alphas_cumprod) / alphas_cumprod).pow(0.5);  // [1000]
  // timestep_spacing "linspace": np.linspace(0, 999, S+1).round()[::-1][:-1] (round half to even).
  const auto lin = numpy_linspace(0, kTrainSteps - 1, S + 1);
  std::vector<int64_t> index;
  for (int i = 0; i < S; ++i) index.push_back(static_cast<int64_t>(std::nearbyint(lin[static_cast<size_t>(S - i)])));
  auto sig = at::cat({all_sigmas.index_select(0, at::tensor(index, at::TensorOptions().dtype(at::kLong))),
                      at::zeros({1}, f32)});  // [S+1]; final_sigmas_type "zero"
  auto alpha = at::reciprocal((sig.pow(2) + 1).pow(0.5));
  auto sigma = sig * alpha;
  auto lam = at::log(alpha) - at::log(sigma);  // +inf at the end
  for (int64_t v : index) s.model_timesteps.push_back(static_cast<double>(v));
  s.grid = to_floats(sig);
  s.alpha = to_floats(alpha);
  s.sigma = to_floats(sigma);
  s.lambda = to_floats(lam);
  // The first step has no history; the last goes to σ = 0 and is first order (final_sigmas_type
  // "zero" forces it, whatever lower_order_final says).
  for (int i = 0; i < S; ++i) s.order.push_back(i == 0 || i == S - 1 ? 1 : 2);
  fill_coefficients(s, alpha, sigma, lam, /*expm1=*/false);
}

void check_step(const DPMSolverSchedule& s, int step, const char* what) {
  if (step < 0 || step >= s.num_steps) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: step {} is outside the schedule's 0..{}", what, step, s.num_steps - 1));
  }
}

}  // namespace

const char* to_string(DPMSolverConvention convention) noexcept {
  return convention == DPMSolverConvention::kOriginal ? "original" : "diffusers";
}

DPMSolverConvention parse_dpm_solver_convention(const std::string& text) {
  if (text == "original") return DPMSolverConvention::kOriginal;
  if (text == "diffusers") return DPMSolverConvention::kDiffusers;
  throw Error(ErrorCode::kInvalidArgument,
              fmt::format("DPM-Solver convention '{}' is not known; expected 'original' (PixArt-alpha) or 'diffusers'", text));
}

DPMSolverSchedule dpm_solver_schedule(int num_steps, DPMSolverConvention convention) {
  if (num_steps < 1 || num_steps > kTrainSteps) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("DPM-Solver: steps must be in 1..{}, found {}", kTrainSteps, num_steps));
  }
  if (convention == DPMSolverConvention::kOriginal && num_steps < 2) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("DPM-Solver (original): steps must be >= 2 (PixArt-alpha's multistep solver of order 2 "
                            "needs steps >= order), found {}; the diffusers convention allows 1",
                            num_steps));
  }
  DPMSolverSchedule s;
  s.convention = convention;
  s.num_steps = num_steps;
  if (convention == DPMSolverConvention::kOriginal) original_schedule(s);
  else diffusers_schedule(s);
  return s;
}

at::Tensor dpm_solver_data_prediction(const DPMSolverSchedule& s, int step, const at::Tensor& x, const at::Tensor& eps) {
  check_step(s, step, "dpm_solver_data_prediction");
  const auto i = static_cast<size_t>(step);
  return (x - eps * static_cast<double>(s.sigma[i])) / static_cast<double>(s.alpha[i]);
}

at::Tensor dpm_solver_update(const DPMSolverSchedule& s, int step, const at::Tensor& x, const at::Tensor& m0,
                             const at::Tensor& m1) {
  check_step(s, step, "dpm_solver_update");
  const auto i = static_cast<size_t>(step);
  auto out = x * static_cast<double>(s.coef_x[i]) - m0 * static_cast<double>(s.coef_m[i]);
  if (s.order[i] == 1) return out;
  if (!m1.defined()) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("dpm_solver_update: step {} is second order and needs the previous "
                                                         "step's data prediction", step));
  }
  auto d1 = (m0 - m1) * static_cast<double>(s.inv_r[i]);
  return out - d1 * static_cast<double>(s.coef_d[i]);
}

at::Tensor dpm_solver_sample(const at::Tensor& x_init, const DPMSolverSchedule& schedule, const EpsilonFn& eps,
                             const std::function<void(int64_t, int64_t)>& progress) {
  // The "dpm-solver++" Sampler's loop; it holds the multistep state (the last data prediction).
  auto sampler = make_dpm_solver_sampler(schedule);
  at::Tensor x = x_init.to(at::kFloat);
  for (int i = 0; i < sampler->num_steps(); ++i) {
    x = sampler->step(i, x, eps(x, i).to(at::kFloat));
    if (progress) progress(i + 1, sampler->num_steps());
  }
  return x;
}

}  // namespace ditcache
