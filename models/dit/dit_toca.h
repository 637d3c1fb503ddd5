#pragma once
// ToCa on DiT (toca.md §2.2-§2.4, the official DiT-ToCa code): the force-activation schedule
// counting down with its sensitive window, the ToCa-ddim50 / ToCa-ddpm250 ratio schedules, s1 from
// the self-attention map, s4 on 2x2 blocks with β 0.6, r0 0.07.

#include <memory>
#include <string>

#include "ditcache/cache/site.h"
#include "ditcache/cache/toca.h"

namespace ditcache {

/// DiT's ToCa profile (its BackboneInfo::toca).
std::shared_ptr<const ToCaProfile> dit_toca_profile();

namespace toca {

/// The interval after a full step (`force_scheduler`): round_half_even(float32(N / f)) with
/// f = float32(1 + w - 2 w step / S), w = 0.4 (0 when ratio == 0); 2 inside the sensitive window
/// int(0.2 S) <= step < int(0.4 S) when ratio != 0. `step` counts down from S - 1 (DiT).
double force_interval(int step, int num_steps, int interval, double ratio);

/// The fresh ratio of a DiT schedule (`fresh_ratio_scheduler`, "ToCa-ddim50" / "ToCa-ddpm250"):
/// r0 * layer_factor * step_factor * module_factor, before clamping. `last_layer` is depth - 1
/// (27 for DiT-XL, where the official code hard-codes 27).
double fresh_ratio(const std::string& schedule, double r0, int step, int num_steps, int layer, int last_layer, SiteKind module);

}  // namespace toca
}  // namespace ditcache
