// ToCa's OpenSora schedule as the official OpenSora ToCa code runs it (toca.md §2.2, §2.3).
#include "opensora/stdit3_toca.h"

namespace ditcache {
namespace toca {

double video_fresh_ratio(double r0, SiteKind module) {
  const double module_weight = 1.5, module_time_weight = 0.33;
  const double module_factor = module == SiteKind::kMLP ? 1 + module_time_weight * module_weight
                                                        : 1 - (1 - module_time_weight) * module_weight;
  return r0 * module_factor;
}

bool video_full_step(int step, SiteKind module) {
  const int cycle = module == SiteKind::kCrossAttention ? 6 : 3;
  return step <= 2 || step % cycle == 0;
}

}  // namespace toca

std::shared_ptr<const ToCaProfile> stdit3_toca_profile() {
  static const auto profile = [] {
    auto p = std::make_shared<ToCaProfile>();
    ToCaProfile::Schedule s;
    s.name = "opensora";
    s.interval = 3;  // N scales s3 only: the cycles are fixed
    s.full_step = toca::video_full_step;
    s.fresh_ratio = [](double r0, int, int, int, int, SiteKind kind) { return toca::video_fresh_ratio(r0, kind); };
    p->schedules.push_back(s);
    p->step_index_counts_down = false;
    p->ratio = 0.10;
    p->bonus = 0;
    p->grid = 2;
    p->bonus_supported = false;
    p->score_site = SiteKind::kCrossAttention;  // s2
    return std::shared_ptr<const ToCaProfile>(p);
  }();
  return profile;
}

}  // namespace ditcache
