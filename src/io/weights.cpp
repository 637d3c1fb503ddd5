// open_weights(): picks the reader by magic bytes; shared file/dtype helpers of the readers.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "io/weights_internal.h"

namespace ditcache {

const char* to_string(DType dtype) noexcept {
  switch (dtype) {
    case DType::kF64: return "F64";
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI64: return "I64";
    case DType::kI32: return "I32";
    case DType::kI16: return "I16";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kBool: return "BOOL";
  }
  return "?";
}

namespace io_detail {

ReadOnlyFile::ReadOnlyFile(const std::string& path) : path_(path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      throw Error(ErrorCode::kNotFound, fmt::format("{}: weight file not found", path));
    }
    throw Error(ErrorCode::kIo, fmt::format("{}: cannot stat weight file: {}", path, std::strerror(err)));
  }
  if (S_ISDIR(st.st_mode)) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("{}: is a directory, expected a weight file (.safetensors/.pt/.pth/.bin)", path));
  }
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    int err = errno;
    throw Error(ErrorCode::kIo, fmt::format("{}: cannot open weight file: {}", path, std::strerror(err)));
  }
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: not a regular file", path));
  }
  size_ = static_cast<uint64_t>(st.st_size);
}

ReadOnlyFile::~ReadOnlyFile() {
  if (fd_ >= 0) ::close(fd_);
}

void ReadOnlyFile::read_at(uint64_t offset, void* dst, size_t n, const std::string& what) const {
  uint64_t end = 0;
  if (add_overflow(offset, n, &end) || end > size_) {
    throw Error(ErrorCode::kFormat,
                fmt::format("{}: {} [{}, {}) lies beyond the end of the file ({} bytes); truncated file?",
                            path_, what, offset, offset + static_cast<uint64_t>(n), size_));
  }
  auto* out = static_cast<char*>(dst);
  size_t done = 0;
  while (done < n) {
    ssize_t got = ::pread(fd_, out + done, n - done, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      throw Error(ErrorCode::kIo, fmt::format("{}: reading {} failed: {}", path_, what, std::strerror(err)));
    }
    if (got == 0) {
      throw Error(ErrorCode::kIo, fmt::format("{}: reading {}: file shrank while open (got {} of {} bytes)",
                                              path_, what, done, n));
    }
    done += static_cast<size_t>(got);
  }
}

std::string ReadOnlyFile::read_string(uint64_t offset, size_t n, const std::string& what) const {
  std::string out(n, '\0');
  if (n > 0) read_at(offset, out.data(), n, what);
  return out;
}

size_t element_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::kF64:
    case DType::kI64: return 8;
    case DType::kF32:
    case DType::kI32: return 4;
    case DType::kF16:
    case DType::kBF16:
    case DType::kI16: return 2;
    case DType::kI8:
    case DType::kU8:
    case DType::kBool: return 1;
  }
  return 1;
}

c10::ScalarType scalar_type(DType dtype) noexcept {
  switch (dtype) {
    case DType::kF64: return c10::ScalarType::Double;
    case DType::kF32: return c10::ScalarType::Float;
    case DType::kF16: return c10::ScalarType::Half;
    case DType::kBF16: return c10::ScalarType::BFloat16;
    case DType::kI64: return c10::ScalarType::Long;
    case DType::kI32: return c10::ScalarType::Int;
    case DType::kI16: return c10::ScalarType::Short;
    case DType::kI8: return c10::ScalarType::Char;
    case DType::kU8: return c10::ScalarType::Byte;
    case DType::kBool: return c10::ScalarType::Bool;
  }
  return c10::ScalarType::Float;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

void check_bool_bytes(const std::string& path, const std::string& name, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    if (p[i] > 1) {
      throw Error(ErrorCode::kFormat,
                  fmt::format("{}: tensor '{}' has dtype BOOL but byte {} holds {} (expected 0 or 1)", path,
                              name, i, static_cast<int>(p[i])));
    }
  }
}

}  // namespace io_detail

std::unique_ptr<WeightFile> open_weights(const std::string& path) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  throw Error(ErrorCode::kUnsupported, fmt::format("{}: weight files are read on little-endian hosts only", path));
#endif
  auto file = std::make_shared<io_detail::ReadOnlyFile>(path);
  if (file->size() < 8) {
    throw Error(ErrorCode::kFormat,
                fmt::format("{}: truncated weight file: {} bytes, expected at least 8 (a safetensors header "
                            "length or a zip signature)",
                            path, file->size()));
  }
  unsigned char magic[8];
  file->read_at(0, magic, 8, "magic bytes");
  if (magic[0] == 'P' && magic[1] == 'K' &&
      ((magic[2] == 3 && magic[3] == 4) || (magic[2] == 5 && magic[3] == 6))) {
    return io_detail::open_torch_zip(file);
  }
  if (magic[0] == 0x80 && magic[1] >= 2 && magic[1] <= 5) {
    // Legacy torch.save writes protocol-2 pickles starting with the magic number 0x1950a86a20f9469cfc6c.
    static const unsigned char kLegacy[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46};
    bool legacy = std::memcmp(magic, kLegacy, 8) == 0;
    throw Error(ErrorCode::kUnsupported,
                fmt::format("{}: {} — only torch.save's zip format (torch >= 1.6) and safetensors are read; "
                            "re-save with torch.save(obj, path) from torch >= 1.6, or convert to safetensors",
                            path,
                            legacy ? "legacy (non-zip) torch.save file"
                                   : "a bare pickle stream, not a torch.save zip archive"));
  }
  static const char kLfs[] = "version https://git-lfs";
  if (file->size() >= sizeof(kLfs) - 1 && std::memcmp(magic, kLfs, 8) == 0 &&
      file->read_string(0, sizeof(kLfs) - 1, "magic bytes") == kLfs) {
    throw Error(ErrorCode::kFormat,
                fmt::format("{}: is a git-lfs pointer file, not the weights (run `git lfs pull`)", path));
  }
  return io_detail::open_safetensors(file);
}

}  // namespace ditcache
