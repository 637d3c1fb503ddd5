#include "ditcache/log.h"

#include <cstdlib>
#include <mutex>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace ditcache {

std::shared_ptr<spdlog::logger> logger() {
  static std::shared_ptr<spdlog::logger> instance;
  static std::once_flag once;
  std::call_once(once, [] {
    instance = spdlog::stderr_color_mt("ditcache");
    instance->set_level(spdlog::level::warn);
    if (const char* level = std::getenv("DITCACHE_LOG_LEVEL")) {
      instance->set_level(spdlog::level::from_str(level));
    }
  });
  return instance;
}

}  // namespace ditcache
