// "rflow": rectified flow's Euler update (OpenSora 1.2's RFLOW, models.md §3.5) as a Sampler; the
// time grid with the shift is rflow_timesteps (rflow.cpp), guidance the pipeline's.
#include <memory>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/sampling/rflow.h"
#include "ditcache/sampling/sampler.h"

namespace ditcache {

namespace {

std::vector<double> widened(const std::vector<float>& timesteps) { return {timesteps.begin(), timesteps.end()}; }

class RFlowSampler final : public Sampler {
 public:
  RFlowSampler(std::vector<float> timesteps, int num_timesteps)
      : Sampler("rflow", Prediction::kVelocity, widened(timesteps)),
        timesteps_(std::move(timesteps)),
        num_timesteps_(num_timesteps) {}

 protected:
  // z + v·dt with dt = (t_i − t_{i+1})/T in float32 (t_S = 0: the last step integrates to 0), in x's dtype.
  at::Tensor advance(int i, const at::Tensor& x, const at::Tensor& model_output) override {
    const auto k = static_cast<size_t>(i);
    const float next = k + 1 < timesteps_.size() ? timesteps_[k + 1] : 0.0f;
    const float dt = (timesteps_[k] - next) / static_cast<float>(num_timesteps_);
    return x + predicted(x, model_output).to(x.scalar_type()) * dt;
  }

 private:
  std::vector<float> timesteps_;
  int num_timesteps_;
};

}  // namespace

std::unique_ptr<Sampler> make_rflow_sampler(std::vector<float> timesteps, int num_timesteps) {
  if (timesteps.empty()) throw Error(ErrorCode::kInvalidArgument, "sampler 'rflow': no timesteps");
  if (num_timesteps < 1) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("sampler 'rflow': num_timesteps must be >= 1, found {}", num_timesteps));
  }
  return std::make_unique<RFlowSampler>(std::move(timesteps), num_timesteps);
}

namespace detail {

std::unique_ptr<Sampler> make_rflow_sampler(const SamplerOptions& o) {
  o.expect_only("rflow", {"rflow"});
  if (!o.rflow) {
    throw Error(ErrorCode::kInvalidArgument,
                "sampler 'rflow': needs the rflow option (an RFlowSchedule with the video's height, width and frames "
                "for OpenSora's timestep shift, or use_timestep_transform = false), found none");
  }
  RFlowSchedule schedule = *o.rflow;
  schedule.num_steps = o.steps;
  return ditcache::make_rflow_sampler(rflow_timesteps(schedule), schedule.num_timesteps);
}

}  // namespace detail

}  // namespace ditcache
