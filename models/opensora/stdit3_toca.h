#pragma once
// ToCa on OpenSora 1.2's STDiT3 (toca.md §2.2, §2.3, the official OpenSora ToCa code): fixed
// per-module cycles with steps 0-2 full; self- and cross-attention reused between, the MLP
// recomputes r0 * 1.495 of the tokens ranked by s2 + λ3 * s3 (s4 off), r0 0.10; one score per block
// kind and layer.

#include <memory>

#include "ditcache/cache/site.h"
#include "ditcache/cache/toca.h"

namespace ditcache {

/// STDiT3's ToCa profile (its BackboneInfo::toca).
std::shared_ptr<const ToCaProfile> stdit3_toca_profile();

namespace toca {

/// OpenSora's fresh ratio (ratio_scheduler 'ToCa' of the OpenSora code: no step or layer factor,
/// module weight 1.5, module time weight 0.33): r0 * (1 + 0.33 * 1.5) for the MLP, r0 * (1 - 0.67 *
/// 1.5) (negative: nothing recomputed) for attention and cross-attention, before clamping.
double video_fresh_ratio(double r0, SiteKind module);

/// OpenSora's per-module full steps: steps 0-2 always, then every 3rd step for self-attention and
/// the MLP and every 6th for cross-attention (step counts up from 0).
bool video_full_step(int step, SiteKind module);

}  // namespace toca
}  // namespace ditcache
