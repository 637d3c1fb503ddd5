// "dpm-solver++": DPM-Solver++ 2M (models.md §2.5) as a Sampler over a DPMSolverSchedule; the
// update arithmetic is dpm_solver_data_prediction / dpm_solver_update (dpm_solver.cpp).
#include <algorithm>
#include <memory>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/sampling/dpm_solver.h"
#include "ditcache/sampling/sampler.h"

namespace ditcache {

namespace {

class DPMSolverSampler final : public Sampler {
 public:
  explicit DPMSolverSampler(DPMSolverSchedule schedule)
      : Sampler("dpm-solver++", Prediction::kEpsilon, schedule.model_timesteps), schedule_(std::move(schedule)) {}

 protected:
  // float32 throughout, as both references run it: m_i = (x − σ_i·eps)/α_i, then the update with
  // m_{i−1} (the multistep state).
  at::Tensor advance(int i, const at::Tensor& x, const at::Tensor& model_output) override {
    const auto xf = x.to(at::kFloat);
    auto m = dpm_solver_data_prediction(schedule_, i, xf, predicted(x, model_output).to(at::kFloat));
    auto next = dpm_solver_update(schedule_, i, xf, m, previous_);
    previous_ = std::move(m);
    return next;
  }
  void clear_state() override { previous_ = at::Tensor(); }

 private:
  DPMSolverSchedule schedule_;
  at::Tensor previous_;  // the last call's data prediction
};

}  // namespace

std::unique_ptr<Sampler> make_dpm_solver_sampler(DPMSolverSchedule schedule) {
  const auto S = static_cast<size_t>(std::max(schedule.num_steps, 0));
  if (schedule.model_timesteps.size() != S || schedule.order.size() != S || schedule.coef_x.size() != S ||
      schedule.coef_m.size() != S || schedule.coef_d.size() != S || schedule.inv_r.size() != S ||
      schedule.alpha.size() != S + 1 || schedule.sigma.size() != S + 1) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("sampler 'dpm-solver++': the schedule of {} steps has {} model timesteps and {} grid points, "
                            "expected {} and {} (build it with dpm_solver_schedule)",
                            schedule.num_steps, schedule.model_timesteps.size(), schedule.alpha.size(), S, S + 1));
  }
  return std::make_unique<DPMSolverSampler>(std::move(schedule));
}

namespace detail {

std::unique_ptr<Sampler> make_dpm_solver_sampler(const SamplerOptions& o) {
  o.expect_only("dpm-solver++", {"convention"});
  return ditcache::make_dpm_solver_sampler(dpm_solver_schedule(o.steps, o.convention.value_or(DPMSolverConvention::kOriginal)));
}

}  // namespace detail

}  // namespace ditcache
