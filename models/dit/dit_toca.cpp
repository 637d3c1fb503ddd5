// ToCa's DiT schedules as the official DiT-ToCa code runs them (toca.md §2.2-§2.4).
#include "dit/dit_toca.h"

#include <cmath>

#include <fmt/format.h>

#include "ditcache/error.h"

namespace ditcache {
namespace toca {

double force_interval(int step, int num_steps, int interval, double ratio) {
  const double w = ratio == 0 ? 0.0 : 0.4;
  // torch.tensor(python float) is float32; N / tensor and torch.round stay in float32.
  const float factor = static_cast<float>(1 + w - 2 * w * step / num_steps);
  const float quotient = static_cast<float>(interval) / factor;
  double threshold = std::nearbyint(quotient);  // round half to even (default rounding mode)
  const int lo = static_cast<int>(num_steps * 0.2), hi = static_cast<int>(num_steps * 0.4);
  if (step >= lo && step < hi && ratio != 0) threshold = 2;
  return threshold;
}

double fresh_ratio(const std::string& schedule, double r0, int step, int num_steps, int layer, int last_layer, SiteKind module) {
  double step_weight = 0, layer_weight = 0;
  if (schedule == "ddim50") {
    step_weight = 2.0;
    layer_weight = -0.2;
  } else if (schedule == "ddpm250") {
    step_weight = 0.4;
    layer_weight = 0.8;
  } else {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("toca: unknown ratio schedule '{}'", schedule));
  }
  const double step_factor = 1 + step_weight - 2 * step_weight * step / num_steps;
  const double layer_factor = 1 + layer_weight - 2 * layer_weight * (last_layer > 0 ? static_cast<double>(layer) / last_layer : 0.0);
  // module weight 2.5, module time weight 0.6: attention 1 - 0.4 * 2.5 = 0 (never partial), MLP 2.5.
  const double module_weight = 2.5, module_time_weight = 0.6;
  const double module_factor = module == SiteKind::kMLP ? 1 + module_time_weight * module_weight
                                                        : 1 - (1 - module_time_weight) * module_weight;
  return r0 * layer_factor * step_factor * module_factor;
}

}  // namespace toca

std::shared_ptr<const ToCaProfile> dit_toca_profile() {
  static const auto profile = [] {
    auto p = std::make_shared<ToCaProfile>();
    for (const char* name : {"ddim50", "ddpm250"}) {
      ToCaProfile::Schedule s;
      s.name = name;
      s.interval = s.name == "ddim50" ? 3 : 4;
      s.force_interval = toca::force_interval;
      s.fresh_ratio = [schedule = s.name](double r0, int step, int steps, int layer, int last_layer, SiteKind kind) {
        return toca::fresh_ratio(schedule, r0, step, steps, layer, last_layer, kind);
      };
      p->schedules.push_back(s);
    }
    p->auto_schedule = [](const std::string& sampler) { return std::string(sampler == "ddim" ? "ddim50" : "ddpm250"); };
    p->step_index_counts_down = true;
    p->ratio = 0.07;
    p->bonus = 0.6;
    p->grid = 2;
    p->score_site = SiteKind::kSelfAttention;  // s1
    return std::shared_ptr<const ToCaProfile>(p);
  }();
  return profile;
}

}  // namespace ditcache
