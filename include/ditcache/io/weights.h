#pragma once
/// \file Weight files: safetensors and PyTorch zip-pickles (.pt/.pth/.bin) behind one lazy
/// interface. open_weights() reads only metadata; tensors are materialised on demand.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Tensor.h>

namespace ditcache {

/// Element types a weight file may hold.
enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

/// safetensors spelling of a dtype ("F32", "BF16", ...).
const char* to_string(DType dtype) noexcept;

/// Name, element type and shape of one stored tensor.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
};

/// A lazily read weight file. Names of nested dicts are flattened with '.', so a PixArt `.pth`
/// whose dict sits under 'state_dict' lists "state_dict.blocks.0.attn.qkv.weight".
class WeightFile {
 public:
  virtual ~WeightFile() = default;
  /// The path the file was opened from.
  virtual const std::string& path() const = 0;
  /// "safetensors" or "pytorch-zip".
  virtual std::string format() const = 0;
  /// Tensor names in file order.
  virtual const std::vector<std::string>& names() const = 0;
  /// Whether a tensor of that name exists.
  virtual bool contains(const std::string& name) const = 0;
  /// Metadata of one tensor; throws Error(kNotFound) naming the tensor and the file.
  virtual const TensorInfo& info(const std::string& name) const = 0;
  /// The tensor as a CPU tensor of its stored dtype and shape, owning (or keeping alive) its
  /// memory; throws Error(kNotFound) or Error(kFormat).
  virtual at::Tensor load(const std::string& name) const = 0;
  /// String metadata (safetensors `__metadata__`); empty for pickles.
  virtual const std::map<std::string, std::string>& metadata() const = 0;
};

/// Opens a weight file, choosing the reader by magic bytes (zip "PK\x03\x04" -> PyTorch zip-pickle,
/// otherwise safetensors). Throws Error(kNotFound) if the path does not exist, Error(kFormat) for a
/// truncated, malformed or foreign file (naming the path and what was wrong).
std::unique_ptr<WeightFile> open_weights(const std::string& path);

/// Writes tensors (any device/dtype from DType; made contiguous, copied to CPU) to a safetensors
/// file, in the given order, with optional string metadata. Writes to a temporary file and renames,
/// so a failure never leaves a partial file under `path`. Throws Error(kIo / kInvalidArgument).
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace ditcache
