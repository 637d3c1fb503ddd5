#pragma once
// Factories of the built-in policies (registered by src/cache/registry.cpp).

#include <memory>

#include "ditcache/cache/policy.h"

namespace ditcache::detail {

std::unique_ptr<CachePolicy> make_none(const PolicySpec& spec);
std::unique_ptr<CachePolicy> make_fora(const PolicySpec& spec);
std::unique_ptr<CachePolicy> make_toca(const PolicySpec& spec);
std::unique_ptr<CachePolicy> make_random(const PolicySpec& spec);

}  // namespace ditcache::detail
