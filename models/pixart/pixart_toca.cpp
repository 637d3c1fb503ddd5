// ToCa's PixArt-α schedule as the official PixArt-alpha-ToCa code runs it (toca.md §2.5):
// --fresh_threshold 3, --fresh_ratio 0.30, s4 local_selection_with_bonus(0.4, 4).
#include "pixart/pixart_toca.h"

#include <cmath>

namespace ditcache {
namespace toca {

double pixart_force_interval(int step, int num_steps, int interval, double ratio) {
  const double w = ratio == 0 ? 0.0 : 0.2;
  // Same float32 arithmetic as DiT's force_scheduler, with the opposite sign of the step term.
  const float factor = static_cast<float>(1 - w + 2 * w * step / num_steps);
  const float quotient = static_cast<float>(interval) / factor;
  return std::nearbyint(quotient);  // round half to even
}

double pixart_fresh_ratio(double r0, int step, int num_steps, int layer, int last_layer, SiteKind module) {
  // The official expression order (Python doubles): step weight -0.9, layer weight 0.6.
  const double step_weight = -0.9, layer_weight = 0.6;
  const double step_factor = 1 - step_weight + 2 * step_weight * step / num_steps;
  const double layer_factor = 1 + layer_weight - 2 * layer_weight * (last_layer > 0 ? static_cast<double>(layer) / last_layer : 0.0);
  // module weight 1.0, module time weight 0.6: cross-attention 1 - 0.4 = 0.6, MLP 1 + 0.6 = 1.6.
  const double module_weight = 1.0, module_time_weight = 0.6;
  const double module_factor = module == SiteKind::kCrossAttention ? 1 - (1 - module_time_weight) * module_weight
                                                                   : 1 + module_time_weight * module_weight;
  return r0 * layer_factor * step_factor * module_factor;
}

}  // namespace toca

std::shared_ptr<const ToCaProfile> pixart_toca_profile() {
  static const auto profile = [] {
    auto p = std::make_shared<ToCaProfile>();
    ToCaProfile::Schedule s;
    s.name = "pixart";
    s.interval = 3;
    s.force_interval = toca::pixart_force_interval;
    s.fresh_ratio = toca::pixart_fresh_ratio;
    p->schedules.push_back(s);
    p->step_index_counts_down = false;
    p->ratio = 0.30;
    p->bonus = 0.4;
    p->grid = 4;
    p->score_site = SiteKind::kCrossAttention;  // s2
    p->refresh_partial_rows = true;
    return std::shared_ptr<const ToCaProfile>(p);
  }();
  return profile;
}

}  // namespace ditcache
