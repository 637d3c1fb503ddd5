#include "bench/memory.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <string>

#include <torch/cuda.h>
#if defined(DITCACHE_WITH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace ditcache::bench {

namespace {
bool host_peak_valid = true;  // false once a reset was refused: the peak would be the process's
}  // namespace

void reset_host_peak() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.close();
  host_peak_valid = static_cast<bool>(clear);
}

double host_peak_mb() {
  if (!host_peak_valid) return std::numeric_limits<double>::quiet_NaN();
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmHWM:") {
      double kb = 0;
      status >> kb;
      return kb / 1024.0;
    }
    std::getline(status, key);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

void reset_device_peak(const c10::Device& device) {
#if defined(DITCACHE_WITH_CUDA)
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#else
  (void)device;
#endif
}

double device_peak_mb(const c10::Device& device) {
#if defined(DITCACHE_WITH_CUDA)
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024.0);  // [0]: all pools
  }
#else
  (void)device;
#endif
  return std::numeric_limits<double>::quiet_NaN();
}

void synchronize(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

}  // namespace ditcache::bench
