#pragma once
// Peak memory probes for the benchmark: the process's resident set (VmHWM, reset through
// /proc/self/clear_refs) and the CUDA caching allocator's peak allocation.
#include <c10/core/Device.h>

namespace ditcache::bench {

/// Resets the peak resident set size to the current one (Linux >= 4.0; a no-op elsewhere).
void reset_host_peak();
/// Peak resident set size in MiB since the last reset (NaN where /proc is unavailable or the
/// reset was refused).
double host_peak_mb();
/// Resets / reads the peak bytes allocated on a CUDA device, in MiB; NaN for the CPU or a build
/// without CUDA.
void reset_device_peak(const c10::Device& device);
double device_peak_mb(const c10::Device& device);
/// Waits for the device's queued work (CUDA); nothing on the CPU.
void synchronize(const c10::Device& device);

}  // namespace ditcache::bench
