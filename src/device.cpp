#include "ditcache/device.h"

#include <optional>

#include <ATen/Context.h>
#include <fmt/format.h>
#include <torch/cuda.h>

#include "ditcache/error.h"

namespace ditcache {

c10::Device parse_device(const std::string& text, const std::string& option) {
  std::optional<c10::Device> device;
  try {
    device = c10::Device(text);
  } catch (const std::exception&) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("{} '{}': expected cpu, cuda or cuda:N", option, text));
  }
  if (device->is_cuda() && !at::hasCUDA()) {
    throw Error(ErrorCode::kUnsupported, fmt::format("{} {}: no CUDA device is available to this build", option, text));
  }
  if (device->is_cuda() && device->has_index() && device->index() >= static_cast<int>(torch::cuda::device_count())) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("{} {}: this machine has {} CUDA device(s)", option, text,
                                                         torch::cuda::device_count()));
  }
  if (!device->is_cpu() && !device->is_cuda()) {
    throw Error(ErrorCode::kUnsupported, fmt::format("{} '{}': only cpu and cuda are supported", option, text));
  }
  return *device;
}

c10::ScalarType parse_dtype(const std::string& text, const std::string& option) {
  if (text == "fp32") return at::kFloat;
  if (text == "fp16") return at::kHalf;
  if (text == "bf16") return at::kBFloat16;
  throw Error(ErrorCode::kInvalidArgument, fmt::format("{} '{}': expected fp32, fp16 or bf16", option, text));
}

}  // namespace ditcache
