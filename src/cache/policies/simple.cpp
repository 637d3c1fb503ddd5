// `none` and `fora` (Selvaraju et al., "FORA: Fast-Forward Caching in Diffusion Transformer
// Acceleration", 2024): reuse whole outputs, recompute everything every `interval` steps.
#include <fmt/format.h>

#include "cache/policies/builtin.h"
#include "ditcache/error.h"

namespace ditcache::detail {

namespace {

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

}  // namespace

std::unique_ptr<CachePolicy> make_none(const PolicySpec& spec) {
  OptionReader(spec).finish();
  return std::make_unique<NonePolicy>();
}

std::unique_ptr<CachePolicy> make_fora(const PolicySpec& spec) {
  OptionReader r(spec);
  const auto interval = r.integer("interval", 3, 1, 1000);
  const auto granularity = r.choice("granularity", "module", {"module", "block", "step"});
  r.finish();
  return std::make_unique<ForaPolicy>(interval, granularity);
}

}  // namespace ditcache::detail
