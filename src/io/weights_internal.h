#pragma once
/// \file Internal helpers shared by the weight-file readers (safetensors.cpp, torch_zip.cpp,
/// weights.cpp): a read-only file handle with bounds-checked positional reads, dtype tables and
/// the per-format open functions that open_weights() dispatches to.

#include <c10/core/ScalarType.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "ditcache/io/weights.h"

namespace ditcache::io_detail {

/// A read-only file descriptor with its size; closed on destruction.
class ReadOnlyFile {
 public:
  /// Opens `path` (must exist and be a regular file); throws Error(kNotFound / kIo / kInvalidArgument).
  explicit ReadOnlyFile(const std::string& path);
  ~ReadOnlyFile();
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;

  const std::string& path() const noexcept { return path_; }
  int fd() const noexcept { return fd_; }
  uint64_t size() const noexcept { return size_; }

  /// Reads exactly `n` bytes at `offset` into `dst`. A range beyond the end of the file throws
  /// Error(kFormat) "<path>: <what> [offset, offset+n) lies beyond the end of the file (size bytes)";
  /// an OS failure throws Error(kIo).
  void read_at(uint64_t offset, void* dst, size_t n, const std::string& what) const;
  /// Same, into a string.
  std::string read_string(uint64_t offset, size_t n, const std::string& what) const;

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

/// Bytes per element of a dtype.
size_t element_size(DType dtype) noexcept;
/// The ATen scalar type of a dtype.
c10::ScalarType scalar_type(DType dtype) noexcept;

/// `a * b` into `out`; false on uint64 overflow.
inline bool mul_overflow(uint64_t a, uint64_t b, uint64_t* out) noexcept {
  return __builtin_mul_overflow(a, b, out);
}
/// `a + b` into `out`; false on uint64 overflow.
inline bool add_overflow(uint64_t a, uint64_t b, uint64_t* out) noexcept {
  return __builtin_add_overflow(a, b, out);
}

/// "[2, 3, 4]".
std::string shape_string(const std::vector<int64_t>& shape);

/// Throws Error(kFormat) naming the tensor when a kBool tensor holds a byte other than 0 or 1.
void check_bool_bytes(const std::string& path, const std::string& name, const void* data, size_t n);

/// Readers behind open_weights(); `file` is already open and at least 8 bytes long.
std::unique_ptr<WeightFile> open_safetensors(std::shared_ptr<ReadOnlyFile> file);
std::unique_ptr<WeightFile> open_torch_zip(std::shared_ptr<ReadOnlyFile> file);

}  // namespace ditcache::io_detail
