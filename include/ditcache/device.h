#pragma once
/// \file Parsing of device and dtype names as the command-line programs and the benchmark take them.

#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace ditcache {

/// "cpu", "cuda", "cuda:N". Throws Error(kInvalidArgument) for an unparsable name and
/// Error(kUnsupported) for CUDA without a CUDA device or any other device type; `option` (e.g.
/// "--device") prefixes the messages.
c10::Device parse_device(const std::string& text, const std::string& option = "device");

/// "fp32", "fp16", "bf16"; throws Error(kInvalidArgument) naming `option` otherwise.
c10::ScalarType parse_dtype(const std::string& text, const std::string& option = "dtype");

}  // namespace ditcache
