#pragma once
/// \file Cache sites: the cacheable module calls of a diffusion transformer (design.md §2).

#include <cstdint>
#include <string>

namespace ditcache {

/// Spatial blocks attend within a frame; temporal blocks (OpenSora) across frames.
enum class BlockKind : uint8_t { kSpatial, kTemporal };

/// What a site computes. kBlock is a whole block (its residual update) as one coarse site.
enum class SiteKind : uint8_t { kSelfAttention, kCrossAttention, kMLP, kBlock };

/// One cacheable call: (layer, block kind, site kind).
struct Site {
  int layer = 0;
  BlockKind block = BlockKind::kSpatial;
  SiteKind kind = SiteKind::kMLP;
  bool operator==(const Site& o) const { return layer == o.layer && block == o.block && kind == o.kind; }
};

/// What the cache context does at a site.
enum class Action : uint8_t {
  kCompute,  ///< run the module on every token and store the result
  kReuse,    ///< return the stored result
  kPartial,  ///< run the module on selected tokens only, scatter them into the store, return the store
};

/// What a whole denoising step does.
enum class StepMode : uint8_t {
  kPerSite,      ///< the policy decides site by site
  kReuseOutput,  ///< the model output of the last computed step is returned as is (no forward)
};

const char* to_string(BlockKind kind) noexcept;   ///< "spatial" / "temporal"
const char* to_string(SiteKind kind) noexcept;    ///< "attn" / "cross_attn" / "mlp" / "block"
const char* to_string(Action action) noexcept;    ///< "compute" / "reuse" / "partial"
const char* to_string(StepMode mode) noexcept;    ///< "per_site" / "reuse_output"
/// "spatial.3.mlp".
std::string to_string(const Site& site);

}  // namespace ditcache
