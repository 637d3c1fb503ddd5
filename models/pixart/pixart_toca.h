#pragma once
// ToCa on PixArt-α (toca.md §2.5, the official PixArt-alpha-ToCa code): the force schedule counting
// up (w 0.2), its 'ToCa' ratio schedule (cross-attention x0.6, MLP x1.6), s2 from the
// cross-attention with the recomputed rows refreshed, s4 on 4x4 blocks with β 0.4, r0 0.30.

#include <memory>

#include "ditcache/cache/site.h"
#include "ditcache/cache/toca.h"

namespace ditcache {

/// PixArt-α's ToCa profile (its BackboneInfo::toca).
std::shared_ptr<const ToCaProfile> pixart_toca_profile();

namespace toca {

/// PixArt-α's interval after a full step (PixArt `force_scheduler`): round_half_even(float32(N / f))
/// with f = float32(1 - w + 2 w step / S), w = 0.2 (0 when ratio == 0); no sensitive window. `step`
/// counts up from 0 (DPM-Solver order), so the interval shrinks from N / 0.8 to N / 1.2.
double pixart_force_interval(int step, int num_steps, int interval, double ratio);

/// PixArt-α's fresh ratio (ratio_scheduler 'ToCa' of the PixArt code): r0 * layer_factor *
/// step_factor * module_factor with step_factor = 1 + 0.9 - 1.8 step / S (step counting up),
/// layer_factor = 1 + 0.6 - 1.2 layer / last_layer (27 in the official code), module_factor 0.6 for
/// the cross-attention and 1.6 for the MLP (module weight 1.0, module time weight 0.6), before clamping.
double pixart_fresh_ratio(double r0, int step, int num_steps, int layer, int last_layer, SiteKind module);

}  // namespace toca
}  // namespace ditcache
