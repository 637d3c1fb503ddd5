#pragma once
/// \file The built-in policies from typed configs (the same policies make_policy builds from option
/// strings): `none`, `fora`, `toca`, `random`. Each config's validate() throws
/// Error(kInvalidArgument) naming the first out-of-range field. Parameters: docs/caching.md.

#include <memory>
#include <string>

#include "ditcache/cache/policy.h"
#include "ditcache/cache/toca.h"

namespace ditcache {

/// FORA: everything computed every `interval` steps, reused whole in between.
struct ForaConfig {
  int interval = 3;                    ///< 1-1000
  std::string granularity = "module";  ///< "module", "block" or "step"
  void validate() const;
};

std::unique_ptr<CachePolicy> make_none_policy();
std::unique_ptr<CachePolicy> make_fora_policy(const ForaConfig& config);
/// ToCa with `config.score` "attention" (the paper) or "random" (named `random`).
std::unique_ptr<CachePolicy> make_toca_policy(const ToCaConfig& config);

}  // namespace ditcache
