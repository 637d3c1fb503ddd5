// Reader of torch.save's zip format (.pt/.pth/.bin): a stored (uncompressed) zip, ZIP64 included,
// holding `<prefix>/data.pkl` (the pickled object) and `<prefix>/data/<key>` storage blobs.
//
// The pickle is run on a deliberately small, safe VM: only the opcodes a state dict uses, and only
// the globals collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter(_with_state)
// and torch.<T>Storage. Any other global is refused when it is named, before anything is called.
// Tensors are recorded at open (storage key, dtype, offset, size, stride; all bounds checked
// against the blob) and read on load().

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "io/weights_internal.h"

namespace ditcache {
namespace io_detail {
namespace {

// ---------------------------------------------------------------------------------------------
// Little-endian field access on byte buffers (callers check the bounds).

uint16_t le16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t le32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t le64(const unsigned char* p) { return le32(p) | (static_cast<uint64_t>(le32(p + 4)) << 32); }

// ---------------------------------------------------------------------------------------------
// Zip central directory.

struct ZipEntry {
  std::string name;
  uint64_t local_offset = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;
  uint16_t method = 0;
  uint16_t flags = 0;
};

constexpr uint32_t kSigLocal = 0x04034b50;
constexpr uint32_t kSigCentral = 0x02014b50;
constexpr uint32_t kSigEnd = 0x06054b50;
constexpr uint32_t kSigEnd64 = 0x06064b50;
constexpr uint32_t kSigEnd64Locator = 0x07064b50;

class ZipDirectory {
 public:
  explicit ZipDirectory(const ReadOnlyFile& file) : file_(file) { parse(); }

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries_[it->second];
  }

  /// Absolute offset of the entry's bytes; throws kUnsupported for compressed/encrypted entries and
  /// kFormat when the local header or the data lie outside the file.
  uint64_t data_offset(const ZipEntry& e) const {
    if (e.method != 0) {
      throw Error(ErrorCode::kUnsupported,
                  fmt::format("{}: zip entry '{}' is compressed (method {}); only stored (uncompressed) entries "
                              "are read, as torch.save writes them",
                              path(), e.name, e.method));
    }
    if (e.flags & 1) {
      throw Error(ErrorCode::kUnsupported, fmt::format("{}: zip entry '{}' is encrypted", path(), e.name));
    }
    if (e.compressed_size != e.size) {
      fail(fmt::format("stored zip entry '{}' has compressed size {} but size {}", e.name, e.compressed_size,
                       e.size));
    }
    unsigned char h[30];
    file_.read_at(e.local_offset, h, sizeof h, fmt::format("local header of zip entry '{}'", e.name));
    if (le32(h) != kSigLocal) {
      fail(fmt::format("zip entry '{}': no local header signature at offset {}", e.name, e.local_offset));
    }
    uint64_t offset = e.local_offset + 30 + le16(h + 26) + le16(h + 28);
    uint64_t end = 0;
    if (add_overflow(offset, e.size, &end) || end > file_.size()) {
      fail(fmt::format("zip entry '{}' data [{}, {}) lies beyond the end of the file ({} bytes); truncated file?",
                       e.name, offset, offset + e.size, file_.size()));
    }
    return offset;
  }

  std::string read(const ZipEntry& e, uint64_t max_bytes) const {
    uint64_t offset = data_offset(e);
    if (e.size > max_bytes) {
      fail(fmt::format("zip entry '{}' is {} bytes, more than the {} expected", e.name, e.size, max_bytes));
    }
    return file_.read_string(offset, static_cast<size_t>(e.size), fmt::format("zip entry '{}'", e.name));
  }

 private:
  const std::string& path() const { return file_.path(); }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(ErrorCode::kFormat, fmt::format("{}: {}", path(), what));
  }

  void parse() {
    const uint64_t size = file_.size();
    // End of central directory: 22 bytes + a comment of up to 65535 bytes at the end of the file.
    uint64_t tail_len = std::min<uint64_t>(size, 22 + 65535);
    std::string tail = file_.read_string(size - tail_len, static_cast<size_t>(tail_len), "zip trailer");
    const auto* t = reinterpret_cast<const unsigned char*>(tail.data());
    int64_t eocd = -1;
    for (int64_t i = static_cast<int64_t>(tail_len) - 22; i >= 0; --i) {
      if (le32(t + i) == kSigEnd && static_cast<uint64_t>(i) + 22 + le16(t + i + 20) <= tail_len) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) {
      fail("no zip end-of-central-directory record: truncated or damaged zip archive (torch.save file)");
    }
    const unsigned char* e = t + eocd;
    const uint64_t eocd_pos = size - tail_len + static_cast<uint64_t>(eocd);
    uint64_t count = le16(e + 10);
    uint64_t cd_size = le32(e + 12);
    uint64_t cd_offset = le32(e + 16);
    if (le16(e + 4) != 0 || le16(e + 6) != 0) {
      throw Error(ErrorCode::kUnsupported, fmt::format("{}: multi-volume zip archives are not read", path()));
    }
    // ZIP64: a locator 20 bytes before the end record points at the 64-bit end record.
    if (eocd_pos >= 20) {
      unsigned char loc[20];
      file_.read_at(eocd_pos - 20, loc, sizeof loc, "zip64 end-of-central-directory locator");
      if (le32(loc) == kSigEnd64Locator) {
        uint64_t rec = le64(loc + 8);
        unsigned char z[56];
        file_.read_at(rec, z, sizeof z, "zip64 end-of-central-directory record");
        if (le32(z) != kSigEnd64) fail(fmt::format("no zip64 end-of-central-directory record at offset {}", rec));
        count = le64(z + 32);
        cd_size = le64(z + 40);
        cd_offset = le64(z + 48);
      } else if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_offset == 0xFFFFFFFFu) {
        fail("zip end record asks for zip64 values but there is no zip64 locator; truncated archive?");
      }
    }
    uint64_t cd_end = 0;
    if (add_overflow(cd_offset, cd_size, &cd_end) || cd_end > eocd_pos) {
      fail(fmt::format("zip central directory [{}, {}) does not end before its end record at {}; truncated "
                       "archive?",
                       cd_offset, cd_offset + cd_size, eocd_pos));
    }
    std::string cd = file_.read_string(cd_offset, static_cast<size_t>(cd_size), "zip central directory");
    const auto* c = reinterpret_cast<const unsigned char*>(cd.data());
    uint64_t pos = 0;
    for (uint64_t k = 0; k < count; ++k) {
      if (pos + 46 > cd_size || le32(c + pos) != kSigCentral) {
        fail(fmt::format("zip central directory entry {} of {} is damaged (no signature at offset {})", k, count,
                         cd_offset + pos));
      }
      const unsigned char* h = c + pos;
      ZipEntry z;
      z.flags = le16(h + 8);
      z.method = le16(h + 10);
      z.compressed_size = le32(h + 20);
      z.size = le32(h + 24);
      uint16_t name_len = le16(h + 28), extra_len = le16(h + 30), comment_len = le16(h + 32);
      z.local_offset = le32(h + 42);
      if (pos + 46 + name_len + extra_len + comment_len > cd_size) {
        fail(fmt::format("zip central directory entry {} runs past the directory", k));
      }
      z.name.assign(reinterpret_cast<const char*>(h + 46), name_len);
      // ZIP64 extra field: the 64-bit values of the fields saturated at 0xFFFFFFFF, in this order.
      const unsigned char* x = h + 46 + name_len;
      for (uint32_t xp = 0; xp + 4 <= extra_len;) {
        uint16_t id = le16(x + xp), len = le16(x + xp + 2);
        if (xp + 4 + len > extra_len) break;
        if (id == 0x0001) {
          const unsigned char* v = x + xp + 4;
          uint32_t used = 0;
          auto next = [&](uint64_t* field) {
            if (*field != 0xFFFFFFFFu) return;
            if (used + 8 > len) fail(fmt::format("zip entry '{}' has a short zip64 extra field", z.name));
            *field = le64(v + used);
            used += 8;
          };
          next(&z.size);
          next(&z.compressed_size);
          next(&z.local_offset);
        }
        xp += 4 + len;
      }
      pos += 46 + static_cast<uint64_t>(name_len) + extra_len + comment_len;
      index_.emplace(z.name, entries_.size());  // the first of duplicate names wins
      entries_.push_back(std::move(z));
    }
  }

  const ReadOnlyFile& file_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

// ---------------------------------------------------------------------------------------------
// Pickle values.

struct Value;
using ValuePtr = std::shared_ptr<Value>;

enum class Kind { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kStorage, kTensor };
enum class Callable { kOrderedDict, kRebuildTensorV2, kRebuildParameter, kRebuildParameterWithState, kStorageType };

struct TensorRef {
  std::string key;  // storage key: blob <prefix>/data/<key>
  DType dtype = DType::kF32;
  uint64_t storage_numel = 0;
  int64_t offset = 0;
  std::vector<int64_t> sizes, strides;
};

struct Value {
  Kind kind = Kind::kNone;
  int64_t i = 0;  // int, bool
  double f = 0;
  std::string s;  // string; global name
  std::vector<ValuePtr> items;  // tuple, list
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;  // dict
  std::unordered_map<std::string, size_t> index;       // dict: scalar key -> entry
  Callable callable = Callable::kOrderedDict;          // global
  DType dtype = DType::kF32;                           // storage type global, storage
  std::shared_ptr<TensorRef> tensor;                   // storage (key/dtype/numel), tensor
};

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kTuple: return "tuple";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kGlobal: return "global";
    case Kind::kStorage: return "storage";
    case Kind::kTensor: return "tensor";
  }
  return "?";
}

ValuePtr make(Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}

// Dict key used for replacement semantics (str and int keys; others never compare equal).
bool scalar_key(const Value& k, std::string* out) {
  if (k.kind == Kind::kString) {
    *out = "s" + k.s;
    return true;
  }
  if (k.kind == Kind::kInt || k.kind == Kind::kBool) {
    *out = "i" + std::to_string(k.i);
    return true;
  }
  return false;
}

void dict_set(Value& d, ValuePtr k, ValuePtr v) {
  std::string key;
  if (scalar_key(*k, &key)) {
    auto it = d.index.find(key);
    if (it != d.index.end()) {
      d.entries[it->second].second = std::move(v);
      return;
    }
    d.index.emplace(key, d.entries.size());
  }
  d.entries.emplace_back(std::move(k), std::move(v));
}

struct StorageGlobal {
  const char* name;
  DType dtype;
};
constexpr StorageGlobal kStorages[] = {
    {"DoubleStorage", DType::kF64}, {"FloatStorage", DType::kF32}, {"HalfStorage", DType::kF16},
    {"BFloat16Storage", DType::kBF16}, {"LongStorage", DType::kI64}, {"IntStorage", DType::kI32},
    {"ShortStorage", DType::kI16}, {"CharStorage", DType::kI8}, {"ByteStorage", DType::kU8},
    {"BoolStorage", DType::kBool},
};

const char* opcode_name(unsigned char op) {
  switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return nullptr;
  }
}

// ---------------------------------------------------------------------------------------------
// The safe pickle VM.

class Unpickler {
 public:
  Unpickler(std::string where, const std::string& bytes)
      : where_(std::move(where)), p_(reinterpret_cast<const unsigned char*>(bytes.data())), n_(bytes.size()) {}

  ValuePtr run() {
    while (true) {
      op_pos_ = pos_;
      if (pos_ >= n_) fail(ErrorCode::kFormat, "pickle ends without STOP (truncated data.pkl)");
      const unsigned char op = p_[pos_++];
      switch (op) {
        case 0x80: {  // PROTO
          unsigned v = u8();
          if (v > 5) fail(ErrorCode::kUnsupported, fmt::format("pickle protocol {} (expected 2 to 5)", v));
          break;
        }
        case 0x95: take(8); break;  // FRAME: framing is irrelevant for an in-memory pickle
        case '.': {                 // STOP
          ValuePtr out = pop();
          return out;
        }
        case '(': marks_.push_back(stack_.size()); break;
        case '0': pop(); break;
        case '1': pop_mark(); break;
        case '2': push(top()); break;
        case '}': push(make(Kind::kDict)); break;
        case ']': push(make(Kind::kList)); break;
        case ')': push(make(Kind::kTuple)); break;
        case 't': {
          auto v = make(Kind::kTuple);
          v->items = pop_mark();
          push(v);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {
          size_t k = op - 0x84u;
          if (stack_.size() < k + base()) fail(ErrorCode::kFormat, fmt::format("TUPLE{} on a short stack", k));
          auto v = make(Kind::kTuple);
          v->items.assign(stack_.end() - static_cast<std::ptrdiff_t>(k), stack_.end());
          stack_.resize(stack_.size() - k);
          push(v);
          break;
        }
        case 'l': {
          auto v = make(Kind::kList);
          v->items = pop_mark();
          push(v);
          break;
        }
        case 'd': {
          auto items = pop_mark();
          if (items.size() % 2) fail(ErrorCode::kFormat, "DICT with an odd number of items");
          auto v = make(Kind::kDict);
          for (size_t k = 0; k < items.size(); k += 2) dict_set(*v, items[k], items[k + 1]);
          push(v);
          break;
        }
        case 'X': push_string(u32()); break;
        case 0x8c: push_string(u8()); break;
        case 0x8d: push_string(u64()); break;
        case 'J': {
          uint32_t raw = u32();
          int32_t v;
          std::memcpy(&v, &raw, 4);
          push_int(v);
          break;
        }
        case 'K': push_int(u8()); break;
        case 'M': push_int(u16()); break;
        case 0x8a: push_long(u8()); break;
        case 0x8b: push_long(u32()); break;
        case 'G': {
          const unsigned char* b = take(8);
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | b[k];  // big-endian
          auto v = make(Kind::kFloat);
          std::memcpy(&v->f, &bits, 8);
          push(v);
          break;
        }
        case 'N': push(make(Kind::kNone)); break;
        case 0x88:
        case 0x89: {
          auto v = make(Kind::kBool);
          v->i = op == 0x88;
          push(v);
          break;
        }
        case 'c': {
          std::string module = line(), name = line();
          push(resolve_global(module, name));
          break;
        }
        case 0x93: {
          ValuePtr name = pop(), module = pop();
          if (module->kind != Kind::kString || name->kind != Kind::kString) {
            fail(ErrorCode::kFormat, "STACK_GLOBAL expects two strings");
          }
          push(resolve_global(module->s, name->s));
          break;
        }
        case 'R': {
          ValuePtr args = pop(), callable = pop();
          push(reduce(*callable, *args));
          break;
        }
        case 'b': {
          ValuePtr state = pop();
          const Value& obj = *top();
          // OrderedDict state dicts carry {'_metadata': ...} as instance state: accepted, ignored.
          if (obj.kind != Kind::kDict || (state->kind != Kind::kDict && state->kind != Kind::kNone)) {
            fail(ErrorCode::kUnsupported, fmt::format("BUILD of a {} with a {} state (only OrderedDict state is "
                                                      "accepted)",
                                                      kind_name(obj.kind), kind_name(state->kind)));
          }
          break;
        }
        case 'q': memo_[u8()] = top(); break;
        case 'r': memo_[u32()] = top(); break;
        case 0x94: memo_[static_cast<uint32_t>(memo_.size())] = top(); break;
        case 'h': push(memo_get(u8())); break;
        case 'j': push(memo_get(u32())); break;
        case 's': {
          ValuePtr v = pop(), k = pop();
          dict_set(dict_top("SETITEM"), std::move(k), std::move(v));
          break;
        }
        case 'u': {
          auto items = pop_mark();
          if (items.size() % 2) fail(ErrorCode::kFormat, "SETITEMS with an odd number of items");
          Value& d = dict_top("SETITEMS");
          for (size_t k = 0; k < items.size(); k += 2) dict_set(d, items[k], items[k + 1]);
          break;
        }
        case 'a': {
          ValuePtr v = pop();
          list_top("APPEND").items.push_back(std::move(v));
          break;
        }
        case 'e': {
          auto items = pop_mark();
          auto& l = list_top("APPENDS").items;
          l.insert(l.end(), items.begin(), items.end());
          break;
        }
        case 'Q': push(persistent_load(*pop())); break;
        default: {
          const char* name = opcode_name(op);
          if (name == nullptr) {
            fail(ErrorCode::kFormat, fmt::format("invalid pickle opcode 0x{:02x}", static_cast<unsigned>(op)));
          }
          fail(ErrorCode::kUnsupported,
               fmt::format("pickle opcode {} (0x{:02x}) is not used by state-dict pickles; only state dicts of "
                           "tensors are read",
                           name, static_cast<unsigned>(op)));
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(ErrorCode code, const std::string& what) const {
    throw Error(code, fmt::format("{} byte {}: {}", where_, op_pos_, what));
  }

  const unsigned char* take(uint64_t k) {
    if (k > n_ - pos_) {
      fail(ErrorCode::kFormat, fmt::format("opcode {} needs {} more bytes but the pickle ends after {}",
                                           opcode_name(p_[op_pos_]), k, n_ - pos_));
    }
    const unsigned char* out = p_ + pos_;
    pos_ += static_cast<size_t>(k);
    return out;
  }
  unsigned u8() { return *take(1); }
  unsigned u16() { return le16(take(2)); }
  uint32_t u32() { return le32(take(4)); }
  uint64_t u64() { return le64(take(8)); }

  std::string line() {
    const unsigned char* start = p_ + pos_;
    const void* nl = std::memchr(start, '\n', std::min<size_t>(n_ - pos_, 512));
    if (nl == nullptr) fail(ErrorCode::kFormat, "GLOBAL name without a newline");
    size_t len = static_cast<const unsigned char*>(nl) - start;
    pos_ += len + 1;
    return std::string(reinterpret_cast<const char*>(start), len);
  }

  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(ValuePtr v) { stack_.push_back(std::move(v)); }
  ValuePtr pop() {
    if (stack_.size() <= base()) fail(ErrorCode::kFormat, "pickle stack underflow");
    ValuePtr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  const ValuePtr& top() const {
    if (stack_.size() <= base()) fail(ErrorCode::kFormat, "pickle stack underflow");
    return stack_.back();
  }
  std::vector<ValuePtr> pop_mark() {
    if (marks_.empty()) fail(ErrorCode::kFormat, "no MARK on the pickle stack");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<ValuePtr> out(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(m)),
                              std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return out;
  }
  Value& dict_top(const char* op) {
    const ValuePtr& d = top();
    if (d->kind != Kind::kDict) fail(ErrorCode::kFormat, fmt::format("{} on a {}, expected a dict", op, kind_name(d->kind)));
    return *d;
  }
  Value& list_top(const char* op) {
    const ValuePtr& l = top();
    if (l->kind != Kind::kList) fail(ErrorCode::kFormat, fmt::format("{} on a {}, expected a list", op, kind_name(l->kind)));
    return *l;
  }
  ValuePtr memo_get(uint32_t k) {
    auto it = memo_.find(k);
    if (it == memo_.end()) fail(ErrorCode::kFormat, fmt::format("memo key {} read before it was stored", k));
    return it->second;
  }
  void push_string(uint64_t len) {
    const unsigned char* b = take(len);
    auto v = make(Kind::kString);
    v->s.assign(reinterpret_cast<const char*>(b), static_cast<size_t>(len));
    push(v);
  }
  void push_int(int64_t i) {
    auto v = make(Kind::kInt);
    v->i = i;
    push(v);
  }
  void push_long(uint64_t nbytes) {
    if (nbytes > 8) fail(ErrorCode::kUnsupported, fmt::format("integer of {} bytes (more than 64 bits)", nbytes));
    const unsigned char* b = take(nbytes);
    uint64_t u = 0;
    for (uint64_t k = 0; k < nbytes; ++k) u |= static_cast<uint64_t>(b[k]) << (8 * k);
    if (nbytes > 0 && nbytes < 8 && (b[nbytes - 1] & 0x80)) u |= ~uint64_t{0} << (8 * nbytes);  // sign
    int64_t i;
    std::memcpy(&i, &u, 8);
    push_int(i);
  }

  ValuePtr resolve_global(const std::string& module, const std::string& name) {
    auto v = make(Kind::kGlobal);
    v->s = module + "." + name;
    if (module == "collections" && name == "OrderedDict") {
      v->callable = Callable::kOrderedDict;
      return v;
    }
    if (module == "torch._utils") {
      if (name == "_rebuild_tensor_v2") {
        v->callable = Callable::kRebuildTensorV2;
        return v;
      }
      if (name == "_rebuild_parameter") {
        v->callable = Callable::kRebuildParameter;
        return v;
      }
      if (name == "_rebuild_parameter_with_state") {
        v->callable = Callable::kRebuildParameterWithState;
        return v;
      }
    }
    if (module == "torch") {
      for (const auto& s : kStorages) {
        if (name == s.name) {
          v->callable = Callable::kStorageType;
          v->dtype = s.dtype;
          return v;
        }
      }
    }
    fail(ErrorCode::kUnsupported,
         fmt::format("pickle global '{}.{}' is not allowed: only state-dict pickles (tensors in dicts / "
                     "OrderedDicts) are read, and nothing else is imported or called",
                     module, name));
  }

  static bool is_int(const ValuePtr& v) { return v->kind == Kind::kInt || v->kind == Kind::kBool; }

  std::vector<int64_t> int_tuple(const ValuePtr& v, const char* what) {
    if (v->kind != Kind::kTuple) {
      fail(ErrorCode::kFormat, fmt::format("_rebuild_tensor_v2 {} is a {}, expected a tuple of ints", what,
                                           kind_name(v->kind)));
    }
    std::vector<int64_t> out;
    for (const auto& x : v->items) {
      if (x->kind != Kind::kInt) fail(ErrorCode::kFormat, fmt::format("_rebuild_tensor_v2 {} holds a {}", what, kind_name(x->kind)));
      out.push_back(x->i);
    }
    return out;
  }

  ValuePtr reduce(const Value& callable, const Value& args) {
    if (callable.kind != Kind::kGlobal) {
      fail(ErrorCode::kFormat, fmt::format("REDUCE calls a {}, expected an allowed global", kind_name(callable.kind)));
    }
    if (args.kind != Kind::kTuple) {
      fail(ErrorCode::kFormat, fmt::format("REDUCE of {} with {} arguments, expected a tuple", callable.s,
                                           kind_name(args.kind)));
    }
    const auto& a = args.items;
    switch (callable.callable) {
      case Callable::kOrderedDict:
        if (!a.empty()) fail(ErrorCode::kUnsupported, "collections.OrderedDict called with arguments");
        return make(Kind::kDict);
      case Callable::kRebuildTensorV2: {
        if (a.size() < 6 || a.size() > 7) {
          fail(ErrorCode::kFormat, fmt::format("_rebuild_tensor_v2 takes 6 or 7 arguments, got {}", a.size()));
        }
        if (a[0]->kind != Kind::kStorage) {
          fail(ErrorCode::kFormat, fmt::format("_rebuild_tensor_v2 argument 0 is a {}, expected a storage",
                                               kind_name(a[0]->kind)));
        }
        if (a[1]->kind != Kind::kInt) fail(ErrorCode::kFormat, "_rebuild_tensor_v2 storage offset is not an int");
        auto t = std::make_shared<TensorRef>(*a[0]->tensor);
        t->offset = a[1]->i;
        t->sizes = int_tuple(a[2], "size");
        t->strides = int_tuple(a[3], "stride");
        auto v = make(Kind::kTensor);
        v->tensor = std::move(t);
        return v;
      }
      case Callable::kRebuildParameter:
      case Callable::kRebuildParameterWithState: {
        size_t want = callable.callable == Callable::kRebuildParameter ? 3 : 4;
        if (a.size() != want || a[0]->kind != Kind::kTensor) {
          fail(ErrorCode::kFormat, fmt::format("{} expects ({} arguments starting with a tensor)", callable.s, want));
        }
        return a[0];
      }
      case Callable::kStorageType:
        break;
    }
    fail(ErrorCode::kFormat, fmt::format("{} is called, but storage types are only persistent-id tags", callable.s));
  }

  ValuePtr persistent_load(const Value& pid) {
    // ('storage', torch.<T>Storage, key, location, numel)
    if (pid.kind != Kind::kTuple || pid.items.size() != 5 || pid.items[0]->kind != Kind::kString ||
        pid.items[0]->s != "storage") {
      fail(ErrorCode::kFormat, "persistent id is not ('storage', type, key, location, numel)");
    }
    const auto& a = pid.items;
    if (a[1]->kind != Kind::kGlobal || a[1]->callable != Callable::kStorageType) {
      fail(ErrorCode::kFormat, fmt::format("persistent id storage type is a {}, expected torch.<T>Storage",
                                           kind_name(a[1]->kind)));
    }
    if (a[2]->kind != Kind::kString || a[3]->kind != Kind::kString || !is_int(a[4]) || a[4]->i < 0) {
      fail(ErrorCode::kFormat, "persistent id needs a string key, a string location and a non-negative numel");
    }
    auto v = make(Kind::kStorage);
    v->tensor = std::make_shared<TensorRef>();
    v->tensor->key = a[2]->s;
    v->tensor->dtype = a[1]->dtype;
    v->tensor->storage_numel = static_cast<uint64_t>(a[4]->i);
    return v;
  }

  std::string where_;
  const unsigned char* p_;
  size_t n_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, ValuePtr> memo_;
};

// ---------------------------------------------------------------------------------------------
// The WeightFile.

struct Record {
  TensorInfo info;
  TensorRef ref;
  std::string entry;      // zip entry of the storage blob
  uint64_t blob_offset = 0;  // absolute offset of the blob's bytes
  uint64_t numel = 0;
  uint64_t span = 0;      // elements from ref.offset to the last one the view touches (inclusive)
};

class TorchZipFile final : public WeightFile {
 public:
  explicit TorchZipFile(std::shared_ptr<ReadOnlyFile> file) : file_(std::move(file)) { parse(); }

  const std::string& path() const override { return file_->path(); }
  std::string format() const override { return "pytorch-zip"; }
  const std::vector<std::string>& names() const override { return names_; }
  bool contains(const std::string& name) const override { return records_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const override { return record(name).info; }
  const std::map<std::string, std::string>& metadata() const override { return metadata_; }

  at::Tensor load(const std::string& name) const override {
    const Record& r = record(name);
    auto options = at::TensorOptions().dtype(scalar_type(r.info.dtype)).device(at::kCPU);
    if (r.numel == 0) return at::empty(r.info.shape, options);
    const size_t esize = element_size(r.info.dtype);
    // Read just the bytes the view touches, then re-stride relative to them.
    at::Tensor buf = at::empty({static_cast<int64_t>(r.span)}, options);
    file_->read_at(r.blob_offset + static_cast<uint64_t>(r.ref.offset) * esize, buf.data_ptr(),
                   static_cast<size_t>(r.span * esize), fmt::format("tensor '{}' (zip entry '{}')", name, r.entry));
    if (r.info.dtype == DType::kBool) check_bool_bytes(path(), name, buf.data_ptr(), static_cast<size_t>(r.span));
    at::Tensor view = buf.as_strided(r.ref.sizes, r.ref.strides, 0);
    if (r.span == r.numel && view.is_contiguous()) return buf.view(r.ref.sizes);
    return view.clone(at::MemoryFormat::Contiguous);
  }

 private:
  const Record& record(const std::string& name) const {
    auto it = records_.find(name);
    if (it == records_.end()) {
      throw Error(ErrorCode::kNotFound, fmt::format("{}: no tensor named '{}' ({} tensors in the file)", path(),
                                                    name, names_.size()));
    }
    return it->second;
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(ErrorCode::kFormat, fmt::format("{}: {}", path(), what));
  }

  void parse() {
    ZipDirectory zip(*file_);
    // <prefix>/data.pkl with a one-level prefix (archive/, the file stem, ...).
    const ZipEntry* pkl = nullptr;
    for (const auto& e : zip.entries()) {
      const std::string& n = e.name;
      static const std::string kPkl = "data.pkl";
      if (n.size() < kPkl.size() || n.compare(n.size() - kPkl.size(), kPkl.size(), kPkl) != 0) continue;
      std::string prefix = n.substr(0, n.size() - kPkl.size());
      if (!prefix.empty() && (prefix.back() != '/' || prefix.find('/') != prefix.size() - 1)) continue;
      pkl = &e;
      prefix_ = prefix;
      break;
    }
    if (pkl == nullptr) {
      fail(fmt::format("zip archive has no '<prefix>/data.pkl' entry ({} entries); not a torch.save file",
                       zip.entries().size()));
    }
    if (const ZipEntry* bo = zip.find(prefix_ + "byteorder")) {
      std::string order = zip.read(*bo, 64);
      while (!order.empty() && (order.back() == '\n' || order.back() == '\r')) order.pop_back();
      if (order == "big") {
        throw Error(ErrorCode::kUnsupported,
                    fmt::format("{}: zip entry '{}' says the storages are big-endian; only little-endian "
                                "checkpoints are read (re-save on a little-endian machine)",
                                path(), bo->name));
      }
      if (order != "little") fail(fmt::format("zip entry '{}' holds '{}', expected 'little'", bo->name, order));
    }
    std::string bytes = zip.read(*pkl, file_->size());
    Unpickler vm(fmt::format("{}: zip entry '{}'", path(), pkl->name), bytes);
    ValuePtr root = vm.run();
    if (root->kind != Kind::kDict) {
      throw Error(ErrorCode::kUnsupported,
                  fmt::format("{}: zip entry '{}' holds a {}, expected a dict of tensors (a state dict)", path(),
                              pkl->name, kind_name(root->kind)));
    }
    size_t visits = 0;
    flatten(root, "", 0, &visits);
    for (auto& [name, r] : records_) resolve(zip, name, r);
  }

  void flatten(const ValuePtr& v, const std::string& name, int depth, size_t* visits) {
    if (depth > 64) fail(fmt::format("pickled object is nested deeper than 64 levels at '{}'", name));
    if (++*visits > 10'000'000) fail("pickled object has more than 10 million nested values");
    auto child = [&](const std::string& k) { return name.empty() ? k : name + "." + k; };
    switch (v->kind) {
      case Kind::kDict:
        for (const auto& [k, x] : v->entries) {
          if (k->kind == Kind::kString) {
            flatten(x, child(k->s), depth + 1, visits);
          } else if (k->kind == Kind::kInt) {  // e.g. optimizer state {0: {...}}
            flatten(x, child(std::to_string(k->i)), depth + 1, visits);
          }
        }
        break;
      case Kind::kList:
      case Kind::kTuple:
        for (size_t k = 0; k < v->items.size(); ++k) flatten(v->items[k], child(std::to_string(k)), depth + 1, visits);
        break;
      case Kind::kTensor: {
        Record r;
        r.info.name = name;
        r.info.dtype = v->tensor->dtype;
        r.info.shape = v->tensor->sizes;
        r.ref = *v->tensor;
        if (!records_.emplace(name, std::move(r)).second) {
          fail(fmt::format("tensor name '{}' occurs twice after flattening nested dicts with '.'", name));
        }
        names_.push_back(name);
        break;
      }
      default:
        break;  // ints, strings, None, ...: not weights
    }
  }

  void resolve(const ZipDirectory& zip, const std::string& name, Record& r) {
    const TensorRef& t = r.ref;
    const size_t esize = element_size(t.dtype);
    if (t.sizes.size() != t.strides.size()) {
      fail(fmt::format("tensor '{}' has size {} but stride {}", name, shape_string(t.sizes), shape_string(t.strides)));
    }
    auto view = [&] {
      return fmt::format("offset {}, size {}, stride {}", t.offset, shape_string(t.sizes), shape_string(t.strides));
    };
    if (t.offset < 0) fail(fmt::format("tensor '{}' has a negative storage offset ({})", name, view()));
    uint64_t numel = 1, last = static_cast<uint64_t>(t.offset);
    bool bad = false;
    for (size_t d = 0; d < t.sizes.size(); ++d) {
      if (t.sizes[d] < 0 || t.strides[d] < 0) {
        fail(fmt::format("tensor '{}' has a negative size or stride ({})", name, view()));
      }
      bad |= mul_overflow(numel, static_cast<uint64_t>(t.sizes[d]), &numel);
    }
    if (bad || numel > static_cast<uint64_t>(INT64_MAX)) fail(fmt::format("tensor '{}' has an absurd size ({})", name, view()));
    if (numel > 0) {
      for (size_t d = 0; d < t.sizes.size(); ++d) {
        uint64_t step = 0;
        bad |= mul_overflow(static_cast<uint64_t>(t.sizes[d] - 1), static_cast<uint64_t>(t.strides[d]), &step);
        bad |= add_overflow(last, step, &last);
      }
      if (bad || last >= t.storage_numel) {
        fail(fmt::format("tensor '{}' view ({}) reaches element {} of storage '{}', which holds {} elements", name,
                         view(), bad ? std::string("beyond 2^64") : std::to_string(last), t.key, t.storage_numel));
      }
    }
    r.entry = prefix_ + "data/" + t.key;
    const ZipEntry* blob = zip.find(r.entry);
    if (blob == nullptr) {
      fail(fmt::format("storage '{}' of tensor '{}' is missing: no zip entry '{}'", t.key, name, r.entry));
    }
    uint64_t need = 0;
    if (mul_overflow(t.storage_numel, esize, &need) || blob->size < need) {
      fail(fmt::format("storage '{}' of tensor '{}' declares {} elements of {} ({} bytes) but zip entry '{}' holds "
                       "{} bytes",
                       t.key, name, t.storage_numel, to_string(t.dtype), t.storage_numel * esize, r.entry,
                       blob->size));
    }
    r.blob_offset = zip.data_offset(*blob);
    r.numel = numel;
    r.span = numel == 0 ? 0 : last - static_cast<uint64_t>(t.offset) + 1;
  }

  std::shared_ptr<ReadOnlyFile> file_;
  std::string prefix_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, Record> records_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace

std::unique_ptr<WeightFile> open_torch_zip(std::shared_ptr<ReadOnlyFile> file) {
  return std::make_unique<TorchZipFile>(std::move(file));
}

}  // namespace io_detail
}  // namespace ditcache
