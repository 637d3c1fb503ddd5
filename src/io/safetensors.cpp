// safetensors reader (lazy: JSON header parsed at open, tensors mapped on demand) and writer.
//
// Layout: u64 little-endian header length n, n bytes of UTF-8 JSON
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the
// data section; offsets are relative to its start (8 + n).

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <unordered_map>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "io/weights_internal.h"

namespace ditcache {
namespace io_detail {
namespace {

using ordered_json = nlohmann::ordered_json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the python package's limit as well

struct DTypeName {
  const char* name;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {
    {"F64", DType::kF64}, {"F32", DType::kF32}, {"F16", DType::kF16}, {"BF16", DType::kBF16},
    {"I64", DType::kI64}, {"I32", DType::kI32}, {"I16", DType::kI16}, {"I8", DType::kI8},
    {"U8", DType::kU8},   {"BOOL", DType::kBool},
};
// Valid safetensors dtypes this library does not load.
constexpr const char* kKnownUnsupported[] = {"U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0",
                                             "F6_E2M3", "F6_E3M2", "F4", "C64", "C128"};

struct Entry {
  TensorInfo info;
  uint64_t begin = 0;  // relative to the data section
  uint64_t end = 0;
  size_t order = 0;    // position in the JSON header
};

class SafetensorsFile final : public WeightFile {
 public:
  explicit SafetensorsFile(std::shared_ptr<ReadOnlyFile> file) : file_(std::move(file)) { parse(); }

  const std::string& path() const override { return file_->path(); }
  std::string format() const override { return "safetensors"; }
  const std::vector<std::string>& names() const override { return names_; }
  bool contains(const std::string& name) const override { return entries_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const override { return entry(name).info; }
  const std::map<std::string, std::string>& metadata() const override { return metadata_; }

  at::Tensor load(const std::string& name) const override {
    const Entry& e = entry(name);
    auto options = at::TensorOptions().dtype(scalar_type(e.info.dtype)).device(at::kCPU);
    uint64_t nbytes = e.end - e.begin;
    if (nbytes == 0) return at::empty(e.info.shape, options);
    uint64_t offset = data_start_ + e.begin;
    size_t esize = element_size(e.info.dtype);
    static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    uint64_t map_start = offset / page * page;
    uint64_t delta = offset - map_start;
    at::Tensor out;
    if (delta % esize == 0) {
      // A private mapping per load: zero-copy, copy-on-write, never written back, independent of
      // other loads; the deleter unmaps it when the tensor's storage dies.
      size_t map_len = static_cast<size_t>(delta + nbytes);
      void* base = ::mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE, file_->fd(),
                          static_cast<off_t>(map_start));
      if (base != MAP_FAILED) {
        char* data = static_cast<char*>(base) + delta;
        out = at::from_blob(
            data, e.info.shape, [base, map_len](void*) { ::munmap(base, map_len); }, options);
      }
    }
    if (!out.defined()) {
      // Misaligned data (or a file system without mmap): read into owned memory instead.
      out = at::empty(e.info.shape, options);
      file_->read_at(offset, out.data_ptr(), static_cast<size_t>(nbytes), fmt::format("tensor '{}'", name));
    }
    if (e.info.dtype == DType::kBool) check_bool_bytes(path(), name, out.data_ptr(), static_cast<size_t>(nbytes));
    return out;
  }

 private:
  const Entry& entry(const std::string& name) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      throw Error(ErrorCode::kNotFound, fmt::format("{}: no tensor named '{}' ({} tensors in the file)", path(),
                                                    name, names_.size()));
    }
    return it->second;
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(ErrorCode::kFormat, fmt::format("{}: {}", path(), what));
  }

  static std::string describe(const ordered_json& j) {
    std::string s = j.dump();
    if (s.size() > 60) s = s.substr(0, 57) + "...";
    return s;
  }

  DType parse_dtype(const std::string& name, const ordered_json& j) const {
    if (!j.is_string()) fail(fmt::format("tensor '{}' dtype is {}, expected a string such as \"F32\"", name, describe(j)));
    const auto& s = j.get_ref<const std::string&>();
    for (const auto& d : kDTypes) {
      if (s == d.name) return d.dtype;
    }
    for (const char* u : kKnownUnsupported) {
      if (s == u) {
        throw Error(ErrorCode::kUnsupported,
                    fmt::format("{}: tensor '{}' has dtype {}, which ditcache does not load (supported: F64 F32 "
                                "F16 BF16 I64 I32 I16 I8 U8 BOOL)",
                                path(), name, s));
      }
    }
    fail(fmt::format("tensor '{}' has unknown dtype '{}' (expected one of F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)",
                     name, s));
  }

  void parse() {
    const uint64_t file_size = file_->size();
    unsigned char len_bytes[8];
    file_->read_at(0, len_bytes, 8, "header length");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
    if (n == 0) fail("safetensors header length is 0, expected a JSON object");
    if (n > file_size - 8) {
      fail(fmt::format("safetensors header length {} exceeds the file ({} bytes after the 8-byte length); "
                       "truncated, or not a safetensors file",
                       n, file_size - 8));
    }
    if (n > kMaxHeaderBytes) {
      fail(fmt::format("safetensors header length {} exceeds the {} byte limit", n, kMaxHeaderBytes));
    }
    std::string header = file_->read_string(8, static_cast<size_t>(n), "safetensors header");
    size_t first = header.find_first_not_of(" \t\r\n");
    if (first == std::string::npos || header[first] != '{') {
      unsigned c = first == std::string::npos ? 0u : static_cast<unsigned char>(header[first]);
      fail(fmt::format("safetensors header does not start with '{{' (found byte 0x{:02x}); not a safetensors file",
                       c));
    }
    ordered_json j;
    try {
      j = ordered_json::parse(header);
    } catch (const nlohmann::json::exception& e) {
      fail(fmt::format("safetensors header is not valid JSON: {}", e.what()));
    }
    if (!j.is_object()) fail("safetensors header is not a JSON object");
    data_start_ = 8 + n;
    const uint64_t data_size = file_size - data_start_;

    std::vector<const Entry*> order;
    size_t index = 0;
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& name = it.key();
      const ordered_json& v = it.value();
      if (name == "__metadata__") {
        if (!v.is_object()) fail(fmt::format("__metadata__ is {}, expected an object of strings", describe(v)));
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string()) {
            fail(fmt::format("__metadata__ value of '{}' is {}, expected a string", m.key(), describe(m.value())));
          }
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      if (!v.is_object()) fail(fmt::format("tensor '{}' entry is {}, expected an object", name, describe(v)));
      Entry e;
      e.info.name = name;
      e.order = index++;
      auto dt = v.find("dtype");
      auto sh = v.find("shape");
      auto off = v.find("data_offsets");
      if (dt == v.end() || sh == v.end() || off == v.end()) {
        fail(fmt::format("tensor '{}' entry {} lacks one of dtype/shape/data_offsets", name, describe(v)));
      }
      e.info.dtype = parse_dtype(name, *dt);
      if (!sh->is_array()) fail(fmt::format("tensor '{}' shape is {}, expected an array", name, describe(*sh)));
      uint64_t numel = 1;
      for (const auto& d : *sh) {
        if (!d.is_number_integer()) {
          fail(fmt::format("tensor '{}' shape {} holds {}, expected non-negative integers", name, describe(*sh),
                           describe(d)));
        }
        if (d.is_number_integer() && !d.is_number_unsigned()) {
          fail(fmt::format("tensor '{}' shape {} has a negative dimension", name, describe(*sh)));
        }
        uint64_t dim = d.get<uint64_t>();
        if (dim > static_cast<uint64_t>(INT64_MAX) || mul_overflow(numel, dim, &numel)) {
          fail(fmt::format("tensor '{}' shape {} has an absurd number of elements", name, describe(*sh)));
        }
        e.info.shape.push_back(static_cast<int64_t>(dim));
      }
      if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
          !(*off)[1].is_number_unsigned()) {
        fail(fmt::format("tensor '{}' data_offsets is {}, expected [begin, end] with non-negative integers", name,
                         describe(*off)));
      }
      e.begin = (*off)[0].get<uint64_t>();
      e.end = (*off)[1].get<uint64_t>();
      if (e.end < e.begin) {
        fail(fmt::format("tensor '{}' data_offsets [{}, {}] end before begin", name, e.begin, e.end));
      }
      if (e.end > data_size) {
        fail(fmt::format("tensor '{}' data_offsets [{}, {}] exceed the data section ({} bytes)", name, e.begin,
                         e.end, data_size));
      }
      uint64_t nbytes = 0;
      if (mul_overflow(numel, element_size(e.info.dtype), &nbytes) || nbytes != e.end - e.begin) {
        fail(fmt::format("tensor '{}' has shape {} and dtype {} ({} elements) but data_offsets [{}, {}] span {} "
                         "bytes",
                         name, shape_string(e.info.shape), to_string(e.info.dtype), numel, e.begin, e.end,
                         e.end - e.begin));
      }
      auto [pos, inserted] = entries_.emplace(name, std::move(e));
      if (!inserted) fail(fmt::format("tensor '{}' appears twice in the header", name));
      order.push_back(&pos->second);
    }
    // File order = data order; empty tensors keep their header position among equal offsets.
    std::stable_sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->order < b->order;
    });
    const Entry* prev = nullptr;
    for (const Entry* e : order) {
      if (e->end == e->begin) continue;
      if (prev != nullptr && e->begin < prev->end) {
        fail(fmt::format("tensors '{}' data_offsets [{}, {}] and '{}' data_offsets [{}, {}] overlap",
                         prev->info.name, prev->begin, prev->end, e->info.name, e->begin, e->end));
      }
      prev = e;
    }
    names_.reserve(order.size());
    for (const Entry* e : order) names_.push_back(e->info.name);
  }

  std::shared_ptr<ReadOnlyFile> file_;
  uint64_t data_start_ = 0;
  std::vector<std::string> names_;
  std::unordered_map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

bool dtype_of(c10::ScalarType t, DType* out) {
  for (DType d : {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64, DType::kI32, DType::kI16,
                  DType::kI8, DType::kU8, DType::kBool}) {
    if (scalar_type(d) == t) {
      *out = d;
      return true;
    }
  }
  return false;
}

// Removes the temporary file unless released.
struct TempFile {
  std::string path;
  int fd = -1;
  bool keep = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!keep) ::unlink(path.c_str());
  }
};

void write_all(int fd, const void* data, size_t n, const std::string& path, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t{1} << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      throw Error(ErrorCode::kIo, fmt::format("{}: writing {} failed: {}", path, what, std::strerror(err)));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

std::unique_ptr<WeightFile> open_safetensors(std::shared_ptr<ReadOnlyFile> file) {
  return std::make_unique<SafetensorsFile>(std::move(file));
}

}  // namespace io_detail

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  using io_detail::ordered_json;
  std::vector<at::Tensor> data;
  data.reserve(tensors.size());
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) {
    ordered_json m = ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty() || name == "__metadata__") {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("{}: invalid tensor name '{}' for a safetensors file", path, name));
    }
    if (header.contains(name)) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: tensor name '{}' given twice", path, name));
    }
    if (!tensor.defined()) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: tensor '{}' is undefined", path, name));
    }
    DType dtype{};
    if (!io_detail::dtype_of(tensor.scalar_type(), &dtype)) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("{}: tensor '{}' has dtype {}, expected one of F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL",
                              path, name, c10::toString(tensor.scalar_type())));
    }
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    uint64_t nbytes = static_cast<uint64_t>(t.numel()) * io_detail::element_size(dtype);
    header[name] = {{"dtype", to_string(dtype)},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(std::move(t));
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("{}: tensor names and metadata must be valid UTF-8: {}", path, e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len_bytes[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(n >> (8 * i));

  static std::atomic<unsigned> counter{0};
  io_detail::TempFile tmp;
  tmp.path = fmt::format("{}.tmp-{}-{}", path, ::getpid(), counter++);
  tmp.fd = ::open(tmp.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (tmp.fd < 0) {
    int err = errno;
    tmp.keep = true;  // nothing was created
    throw Error(ErrorCode::kIo, fmt::format("{}: cannot create temporary file {}: {}", path, tmp.path,
                                            std::strerror(err)));
  }
  io_detail::write_all(tmp.fd, len_bytes, 8, path, "the header length");
  io_detail::write_all(tmp.fd, text.data(), text.size(), path, "the header");
  for (size_t i = 0; i < data.size(); ++i) {
    const at::Tensor& t = data[i];
    io_detail::write_all(tmp.fd, t.data_ptr(), t.numel() * t.element_size(), path,
                         fmt::format("tensor '{}'", tensors[i].first));
  }
  int sync_rc = ::fsync(tmp.fd);
  int sync_err = errno;
  int close_rc = ::close(tmp.fd);
  int close_err = errno;
  tmp.fd = -1;
  if (sync_rc != 0 || close_rc != 0) {
    int err = sync_rc != 0 ? sync_err : close_err;
    throw Error(ErrorCode::kIo, fmt::format("{}: flushing {} failed: {}", path, tmp.path, std::strerror(err)));
  }
  if (::rename(tmp.path.c_str(), path.c_str()) != 0) {
    int err = errno;
    throw Error(ErrorCode::kIo, fmt::format("{}: renaming {} into place failed: {}", path, tmp.path,
                                            std::strerror(err)));
  }
  tmp.keep = true;
}

}  // namespace ditcache
