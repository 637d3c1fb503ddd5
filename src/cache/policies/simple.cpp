// `none` and `fora` (Selvaraju et al., "FORA: Fast-Forward Caching in Diffusion Transformer
// Acceleration", 2024): reuse whole outputs, recompute everything every `interval` steps.
#include <fmt/format.h>

#include "ditcache/cache/policies.h"
#include "ditcache/error.h"

namespace ditcache::detail {

class NonePolicy final : public CachePolicy {
 public:
  std::string name() const override { return "none"; }
  std::string to_string() const override { return "none"; }
  void begin_run(const RunInfo&) override {}
  StepMode begin_step(const StepInfo&) override { return StepMode::kPerSite; }
  SiteDecision decide(const SiteState&, bool) override { return {}; }
  bool stores() const override { return false; }
};

/// granularity: module (attn/mlp outputs, the FORA paper), block (each block's residual update),
/// step (the whole model output).
class ForaPolicy final : public CachePolicy {
 public:
  ForaPolicy(int64_t interval, std::string granularity) : interval_(interval), granularity_(std::move(granularity)) {}
  std::string name() const override { return "fora"; }
  std::string to_string() const override { return fmt::format("fora:interval={},granularity={}", interval_, granularity_); }
  void begin_run(const RunInfo&) override {}
  StepMode begin_step(const StepInfo& step) override {
    full_ = step.position % interval_ == 0;
    return granularity_ == "step" && !full_ ? StepMode::kReuseOutput : StepMode::kPerSite;
  }
  SiteDecision decide(const SiteState&, bool) override {
    SiteDecision d;
    d.action = full_ ? Action::kCompute : Action::kReuse;
    return d;
  }
  bool uses_block_sites() const override { return granularity_ == "block"; }

 private:
  int64_t interval_;
  std::string granularity_;
  bool full_ = true;
};


}  // namespace ditcache::detail

namespace ditcache {

void ForaConfig::validate() const {
  if (interval < 1 || interval > 1000) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("fora: interval={} is out of range; expected 1 <= interval <= 1000", interval));
  }
  if (granularity != "module" && granularity != "block" && granularity != "step") {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("fora: granularity='{}' is not one of module, block, step", granularity));
  }
}

std::unique_ptr<CachePolicy> make_none_policy() { return std::make_unique<detail::NonePolicy>(); }

std::unique_ptr<CachePolicy> make_fora_policy(const ForaConfig& config) {
  config.validate();
  return std::make_unique<detail::ForaPolicy>(config.interval, config.granularity);
}

}  // namespace ditcache

namespace ditcache::detail {

std::unique_ptr<CachePolicy> make_none(const PolicySpec& spec) {
  OptionReader(spec).finish();
  return make_none_policy();
}

std::unique_ptr<CachePolicy> make_fora(const PolicySpec& spec) {
  OptionReader r(spec);
  ForaConfig config;
  config.interval = static_cast<int>(r.integer("interval", config.interval, 1, 1000));
  config.granularity = r.choice("granularity", config.granularity, {"module", "block", "step"});
  r.finish();
  return make_fora_policy(config);
}

}  // namespace ditcache::detail
