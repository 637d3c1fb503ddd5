#pragma once
/// \file The library's one logger. Quiet by default (warn); DITCACHE_LOG_LEVEL=trace|debug|info|
/// warn|error|off changes it. The library never writes to stdout: the logger writes to stderr.

#include <memory>

namespace spdlog { class logger; }

namespace ditcache {

/// The shared "ditcache" logger (created on first use).
std::shared_ptr<spdlog::logger> logger();

}  // namespace ditcache
