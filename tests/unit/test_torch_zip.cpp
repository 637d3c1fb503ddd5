// PyTorch zip-pickle reader: real torch.save fixtures compared with their .expected.safetensors,
// ZIP64 archives, and every malformed / malicious input with its ErrorCode.

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "test_util.h"

namespace ditcache {
namespace {

namespace fs = std::filesystem;

using test::expect_error;
using test::read_bytes;
using test::TempDir;
using test::write_bytes;

// ---- a minimal zip writer (stored entries; optional ZIP64 records) -------------------------------

struct ZipItem {
  std::string name;
  std::string data;
  uint16_t method = 0;  // 8 = deflate (the bytes are not actually compressed; the reader must refuse)
};

void put16(std::string& s, uint32_t v) {
  for (int i = 0; i < 2; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}
void put32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}
void put64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}

std::string build_zip(const std::vector<ZipItem>& items, bool zip64 = false) {
  std::string out, cd;
  for (const auto& it : items) {
    uint64_t local = out.size();
    uint32_t small_size = zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(it.data.size());
    std::string local_extra;
    if (zip64) {
      put16(local_extra, 1);
      put16(local_extra, 16);
      put64(local_extra, it.data.size());
      put64(local_extra, it.data.size());
    }
    put32(out, 0x04034b50);
    put16(out, zip64 ? 45 : 20);
    put16(out, 0);
    put16(out, it.method);
    put32(out, 0);  // time, date
    put32(out, 0);  // crc (not checked)
    put32(out, small_size);
    put32(out, small_size);
    put16(out, static_cast<uint32_t>(it.name.size()));
    put16(out, static_cast<uint32_t>(local_extra.size()));
    out += it.name + local_extra + it.data;

    std::string extra;
    if (zip64) {
      put16(extra, 1);
      put16(extra, 24);
      put64(extra, it.data.size());
      put64(extra, it.data.size());
      put64(extra, local);
    }
    put32(cd, 0x02014b50);
    put16(cd, 45);
    put16(cd, zip64 ? 45 : 20);
    put16(cd, 0);
    put16(cd, it.method);
    put32(cd, 0);
    put32(cd, 0);
    put32(cd, small_size);
    put32(cd, small_size);
    put16(cd, static_cast<uint32_t>(it.name.size()));
    put16(cd, static_cast<uint32_t>(extra.size()));
    put16(cd, 0);  // comment
    put16(cd, 0);  // disk
    put16(cd, 0);  // internal attributes
    put32(cd, 0);  // external attributes
    put32(cd, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(local));
    cd += it.name + extra;
  }
  uint64_t cd_offset = out.size();
  out += cd;
  if (zip64) {
    uint64_t rec = out.size();
    put32(out, 0x06064b50);
    put64(out, 44);
    put16(out, 45);
    put16(out, 45);
    put32(out, 0);
    put32(out, 0);
    put64(out, items.size());
    put64(out, items.size());
    put64(out, cd.size());
    put64(out, cd_offset);
    put32(out, 0x07064b50);
    put32(out, 0);
    put64(out, rec);
    put32(out, 1);
  }
  put32(out, 0x06054b50);
  put16(out, 0);
  put16(out, 0);
  put16(out, zip64 ? 0xFFFF : static_cast<uint32_t>(items.size()));
  put16(out, zip64 ? 0xFFFF : static_cast<uint32_t>(items.size()));
  put32(out, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(cd.size()));
  put32(out, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(cd_offset));
  put16(out, 0);
  return out;
}

// ---- a minimal pickle writer for crafted data.pkl ------------------------------------------------

struct Pickle {
  std::string b = std::string("\x80\x02", 2);
  Pickle& op(char c) {
    b.push_back(c);
    return *this;
  }
  Pickle& str(const std::string& s) {
    b.push_back('X');
    put32(b, static_cast<uint32_t>(s.size()));
    b += s;
    return *this;
  }
  Pickle& integer(int32_t v) {
    b.push_back('J');
    put32(b, static_cast<uint32_t>(v));
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) {
    b += "c" + module + "\n" + name + "\n";
    return *this;
  }
  Pickle& ints(const std::vector<int32_t>& v) {
    op('(');
    for (int32_t x : v) integer(x);
    return op('t');
  }
  // _rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu', numel), offset, size, stride, False, OrderedDict())
  Pickle& tensor(const std::string& key, int32_t numel, int32_t offset, const std::vector<int32_t>& size,
                 const std::vector<int32_t>& stride, const std::string& type = "FloatStorage") {
    global("torch._utils", "_rebuild_tensor_v2").op('(');
    op('(').str("storage").global("torch", type).str(key).str("cpu").integer(numel).op('t').op('Q');
    integer(offset).ints(size).ints(stride).op('\x89');
    global("collections", "OrderedDict").op(')').op('R');
    return op('t').op('R');
  }
  std::string done() { return b + "."; }
};

// {'w': tensor} as a pickle.
std::string one_tensor_pickle(int32_t numel, int32_t offset, const std::vector<int32_t>& size,
                              const std::vector<int32_t>& stride) {
  Pickle p;
  p.op('}').op('(').str("w").tensor("0", numel, offset, size, stride).op('u');
  return p.done();
}

std::string floats(std::initializer_list<float> v) {
  return std::string(reinterpret_cast<const char*>(std::data(v)), v.size() * sizeof(float));
}

std::string write_zip(const TempDir& dir, const std::string& name, const std::vector<ZipItem>& items,
                      bool zip64 = false) {
  std::string path = dir.file(name);
  write_bytes(path, build_zip(items, zip64));
  return path;
}

// ---- real torch.save fixtures ------------------------------------------------------------------

void expect_matches_expected(const std::string& stem, const std::string& ext) {
  auto f = open_weights(test::fixture("io/" + stem + ext));
  auto ref = open_weights(test::fixture("io/" + stem + ".expected.safetensors"));
  EXPECT_EQ(f->format(), "pytorch-zip");
  EXPECT_TRUE(f->metadata().empty());
  std::set<std::string> got(f->names().begin(), f->names().end());
  std::set<std::string> want(ref->names().begin(), ref->names().end());
  EXPECT_EQ(got, want) << stem;
  EXPECT_EQ(got.size(), f->names().size()) << "duplicate names";
  for (const auto& name : ref->names()) {
    if (!f->contains(name)) continue;
    at::Tensor expected = ref->load(name);
    const TensorInfo& info = f->info(name);
    EXPECT_EQ(info.name, name);
    EXPECT_EQ(info.shape, expected.sizes().vec()) << name;
    at::Tensor actual = f->load(name);
    ASSERT_EQ(actual.scalar_type(), expected.scalar_type()) << name;
    ASSERT_EQ(actual.sizes(), expected.sizes()) << name;
    EXPECT_TRUE(actual.is_contiguous()) << name;
    EXPECT_TRUE(at::equal(actual, expected)) << stem << ": " << name;
  }
}

TEST(TorchZip, ModuleStateDictWithMetadata) {
  expect_matches_expected("state_dict", ".pt");
  auto f = open_weights(test::fixture("io/state_dict.pt"));
  // Pickle (= state_dict) order: the root's own buffer first, then the children.
  EXPECT_EQ(f->names(), (std::vector<std::string>{"pos", "proj.weight", "proj.bias", "norm.weight", "norm.bias",
                                                  "conv.weight", "conv.bias"}));
  EXPECT_EQ(f->info("conv.weight").shape, (std::vector<int64_t>{2, 2, 3, 3}));
  EXPECT_EQ(f->info("conv.weight").dtype, DType::kF32);
}

TEST(TorchZip, NestedStateDictLikePixArt) {
  expect_matches_expected("nested_pixart", ".pth");
  auto f = open_weights(test::fixture("io/nested_pixart.pth"));
  EXPECT_TRUE(f->contains("state_dict.proj.weight"));
  EXPECT_FALSE(f->contains("proj.weight"));
}

TEST(TorchZip, NestedEmaAndModelSkipNonTensorLeaves) {
  expect_matches_expected("nested_ema", ".pt");
  auto f = open_weights(test::fixture("io/nested_ema.pt"));
  EXPECT_EQ(f->names().size(), 14u);  // 7 + 7; steps/name/lr/x skipped
  EXPECT_TRUE(f->contains("ema.norm.bias"));
  EXPECT_TRUE(f->contains("model.pos"));
  EXPECT_FALSE(f->contains("steps"));
  EXPECT_FALSE(at::equal(f->load("ema.proj.weight"), f->load("model.proj.weight")));
}

TEST(TorchZip, ViewsDtypesAndSharedStorages) {
  expect_matches_expected("views", ".pt");
  auto f = open_weights(test::fixture("io/views.pt"));
  EXPECT_EQ(f->info("half").dtype, DType::kF16);
  EXPECT_EQ(f->info("bf16").dtype, DType::kBF16);
  EXPECT_EQ(f->info("mask").dtype, DType::kBool);
  EXPECT_EQ(f->info("ids").dtype, DType::kI64);
  EXPECT_EQ(f->info("f64").dtype, DType::kF64);
  EXPECT_EQ(f->info("i32").dtype, DType::kI32);
  EXPECT_EQ(f->info("i16").dtype, DType::kI16);
  EXPECT_EQ(f->info("i8").dtype, DType::kI8);
  EXPECT_EQ(f->info("u8").dtype, DType::kU8);
  EXPECT_TRUE(f->info("scalar").shape.empty());
  EXPECT_EQ(f->load("scalar").dim(), 0);
  EXPECT_EQ(f->load("scalar").item<float>(), 3.25f);
  EXPECT_EQ(f->info("transposed").shape, (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(f->info("empty").shape, (std::vector<int64_t>{0, 3}));
  // Views of one storage come back as independent tensors.
  at::Tensor base = f->load("base");
  at::Tensor slice_b = f->load("slice_b");
  EXPECT_TRUE(at::equal(slice_b, base.view({4, 5}).slice(0, 1, 3).slice(1, 1, 4)));
  at::Tensor column = f->load("column");
  EXPECT_TRUE(at::equal(column, base.view({4, 5}).select(1, 2)));
  at::Tensor a1 = f->load("slice_a"), a2 = f->load("slice_a");
  a1.fill_(100.0);
  EXPECT_TRUE(at::equal(a2, base.slice(0, 2, 8)));
  EXPECT_TRUE(at::equal(f->load("base"), base));
  for (const auto& n : {"step", "note", "nothing", "numbers"}) EXPECT_FALSE(f->contains(n)) << n;
}

TEST(TorchZip, Protocol4WithParameter) {
  expect_matches_expected("views_proto4", ".pt");
  auto f = open_weights(test::fixture("io/views_proto4.pt"));
  EXPECT_TRUE(at::equal(f->load("param"), at::arange(3, at::kFloat)));
}

TEST(TorchZip, TensorsOutliveTheFileObject) {
  at::Tensor t;
  {
    auto f = open_weights(test::fixture("io/views.pt"));
    t = f->load("transposed");
  }
  EXPECT_EQ(t.sizes(), (c10::IntArrayRef{4, 3}));
  EXPECT_TRUE(t.is_contiguous());
}

TEST(TorchZip, Zip64Archive) {
  TempDir dir;
  std::string path = write_zip(dir, "z64.pt",
                               {{"z64/data.pkl", one_tensor_pickle(6, 1, {2, 2}, {1, 2})},
                                {"z64/byteorder", "little"},
                                {"z64/data/0", floats({0, 1, 2, 3, 4, 5})}},
                               /*zip64=*/true);
  auto f = open_weights(path);
  EXPECT_EQ(f->names(), std::vector<std::string>{"w"});
  // offset 1, size (2,2), stride (1,2): [[1,3],[2,4]]
  EXPECT_TRUE(at::equal(f->load("w"), at::tensor({1.f, 3.f, 2.f, 4.f}).view({2, 2})));
}

TEST(TorchZip, CraftedPlainZipAndTopLevelPrefixes) {
  TempDir dir;
  for (const std::string prefix : {"archive/", "my_model/", ""}) {
    std::string path = write_zip(dir, "p.bin",
                                 {{prefix + "data.pkl", one_tensor_pickle(3, 0, {3}, {1})},
                                  {prefix + "data/0", floats({7, 8, 9})}});
    auto f = open_weights(path);
    EXPECT_TRUE(at::equal(f->load("w"), at::tensor({7.f, 8.f, 9.f}))) << prefix;
  }
}

// ---- bad inputs ----------------------------------------------------------------------------------

TEST(TorchZip, NoDataPkl) {
  TempDir dir;
  std::string path = write_zip(dir, "x.pt", {{"archive/data/0", floats({1})}, {"a/b/data.pkl", "."}});
  expect_error([&] { open_weights(path); }, ErrorCode::kFormat, "no '<prefix>/data.pkl' entry (2 entries)");
}

TEST(TorchZip, TruncatedZip) {
  TempDir dir;
  std::string bytes = read_bytes(test::fixture("io/state_dict.pt"));
  std::string path = dir.file("cut.pt");
  write_bytes(path, bytes.substr(0, bytes.size() / 2));
  expect_error([&] { open_weights(path); }, ErrorCode::kFormat, "end-of-central-directory");
  // Cut inside the central directory but keeping a copy of the end record: offsets point past it.
  std::string zip = build_zip({{"a/data.pkl", one_tensor_pickle(1, 0, {1}, {1})}, {"a/data/0", floats({1})}});
  std::string eocd = zip.substr(zip.size() - 22);
  write_bytes(path, zip.substr(0, zip.size() - 22 - 30) + eocd);
  expect_error([&] { open_weights(path); }, ErrorCode::kFormat, "central directory");
}

TEST(TorchZip, CompressedEntries) {
  TempDir dir;
  std::string path = write_zip(dir, "c.pt",
                               {{"c/data.pkl", one_tensor_pickle(1, 0, {1}, {1}), 8}, {"c/data/0", floats({1})}});
  expect_error([&] { open_weights(path); }, ErrorCode::kUnsupported, "zip entry 'c/data.pkl' is compressed (method 8)");
  path = write_zip(dir, "c2.pt",
                   {{"c/data.pkl", one_tensor_pickle(1, 0, {1}, {1})}, {"c/data/0", floats({1}), 8}});
  expect_error([&] { open_weights(path); }, ErrorCode::kUnsupported, "zip entry 'c/data/0' is compressed");
}

TEST(TorchZip, RefusesOsSystemPickle) {
  expect_error([] { open_weights(test::fixture("io/os_system.pt")); }, ErrorCode::kUnsupported,
               "pickle global 'os.system' is not allowed: only state-dict pickles");
}

TEST(TorchZip, RefusesOtherGlobals) {
  expect_error([] { open_weights(test::fixture("io/with_namespace.pt")); }, ErrorCode::kUnsupported,
               "'argparse.Namespace'");
  TempDir dir;
  Pickle p;
  p.op('}').op('(').str("x").str("builtins").str("eval").op('\x93').str("1+1").op('\x85').op('R').op('u');
  std::string path = write_zip(dir, "e.pt", {{"e/data.pkl", p.done()}});
  expect_error([&] { open_weights(path); }, ErrorCode::kUnsupported, "'builtins.eval'");
  // A torch global that is not a storage type is refused too.
  Pickle q;
  q.global("torch", "load").op('.');
  path = write_zip(dir, "t.pt", {{"t/data.pkl", q.b}});
  expect_error([&] { open_weights(path); }, ErrorCode::kUnsupported, "'torch.load'");
}

TEST(TorchZip, UnknownOpcode) {
  TempDir dir;
  std::string path = write_zip(dir, "u.pt", {{"u/data.pkl", std::string("\x80\x02}\xff.")}});
  expect_error([&] { open_weights(path); }, ErrorCode::kFormat, "byte 3: invalid pickle opcode 0xff");
  path = write_zip(dir, "i.pt", {{"i/data.pkl", std::string("\x80\x02(ios\nsystem\n.")}});
  expect_error([&] { open_weights(path); }, ErrorCode::kUnsupported, "pickle opcode INST (0x69)");
}

TEST(TorchZip, MalformedPickles) {
  TempDir dir;
  auto check = [&](const std::string& pkl, ErrorCode code, const std::string& fragment) {
    std::string path = write_zip(dir, "m.pt", {{"m/data.pkl", pkl}, {"m/data/0", floats({1, 2})}});
    expect_error([&] { open_weights(path); }, code, fragment);
  };
  check(std::string("\x80\x02}(X\x01\x00\x00\x00", 9), ErrorCode::kFormat, "opcode BINUNICODE needs 1 more bytes");
  check(std::string("\x80\x02}", 3), ErrorCode::kFormat, "without STOP");
  check(std::string("\x80\x02h\x05.", 5), ErrorCode::kFormat, "memo key 5 read before it was stored");
  check(std::string("\x80\x02s.", 4), ErrorCode::kFormat, "stack underflow");
  check(std::string("\x80\x02]\x85.", 5), ErrorCode::kUnsupported, "holds a tuple, expected a dict");
  check(std::string("\x80\x09}.", 4), ErrorCode::kUnsupported, "pickle protocol 9");
  Pickle p;
  p.op('}').op('(').str("w").op('(').str("storage").str("x").str("0").str("cpu").integer(1).op('t').op('Q').op('u');
  check(p.done(), ErrorCode::kFormat, "persistent id storage type is a str");
}

TEST(TorchZip, StorageKeyMissing) {
  TempDir dir;
  std::string path = write_zip(dir, "k.pt", {{"k/data.pkl", one_tensor_pickle(2, 0, {2}, {1})},
                                              {"k/data/1", floats({1, 2})}});
  expect_error([&] { open_weights(path); }, ErrorCode::kFormat,
               "storage '0' of tensor 'w' is missing: no zip entry 'k/data/0'");
}

TEST(TorchZip, StorageViewOutOfRange) {
  TempDir dir;
  // offset 2 + 3 elements > 4 elements in the storage.
  std::string path = write_zip(dir, "v.pt", {{"v/data.pkl", one_tensor_pickle(4, 2, {3}, {1})},
                                              {"v/data/0", floats({1, 2, 3, 4})}});
  expect_error([&] { open_weights(path); }, ErrorCode::kFormat,
               "tensor 'w' view (offset 2, size [3], stride [1]) reaches element 4 of storage '0', which holds 4");
  // Strides that jump past the end.
  path = write_zip(dir, "s.pt", {{"s/data.pkl", one_tensor_pickle(4, 0, {2, 2}, {3, 1})},
                                 {"s/data/0", floats({1, 2, 3, 4})}});
  expect_error([&] { open_weights(path); }, ErrorCode::kFormat, "reaches element 4");
  // Negative sizes / strides / offsets.
  path = write_zip(dir, "n.pt", {{"n/data.pkl", one_tensor_pickle(4, 0, {-2}, {1})}, {"n/data/0", floats({1, 2, 3, 4})}});
  expect_error([&] { open_weights(path); }, ErrorCode::kFormat, "negative size or stride");
  path = write_zip(dir, "o.pt", {{"o/data.pkl", one_tensor_pickle(4, -1, {2}, {1})}, {"o/data/0", floats({1, 2, 3, 4})}});
  expect_error([&] { open_weights(path); }, ErrorCode::kFormat, "negative storage offset");
  // Absurd sizes overflow instead of wrapping around.
  path = write_zip(dir, "a.pt", {{"a/data.pkl", one_tensor_pickle(4, 0, {1 << 30, 1 << 30, 1 << 30}, {0, 0, 0})},
                                 {"a/data/0", floats({1, 2, 3, 4})}});
  expect_error([&] { open_weights(path); }, ErrorCode::kFormat, "absurd size");
  // The storage declares more elements than its blob holds.
  path = write_zip(dir, "b.pt", {{"b/data.pkl", one_tensor_pickle(8, 0, {2}, {1})}, {"b/data/0", floats({1, 2})}});
  expect_error([&] { open_weights(path); }, ErrorCode::kFormat,
               "declares 8 elements of F32 (32 bytes) but zip entry 'b/data/0' holds 8 bytes");
}

TEST(TorchZip, BigEndianIsUnsupported) {
  TempDir dir;
  std::string path = write_zip(dir, "be.pt", {{"be/data.pkl", one_tensor_pickle(1, 0, {1}, {1})},
                                               {"be/byteorder", "big"},
                                               {"be/data/0", floats({1})}});
  expect_error([&] { open_weights(path); }, ErrorCode::kUnsupported, "big-endian");
}

TEST(TorchZip, LegacyFormatIsUnsupported) {
  expect_error([] { open_weights(test::fixture("io/legacy.pt")); }, ErrorCode::kUnsupported,
               "re-save with torch.save(obj, path) from torch >= 1.6, or convert to safetensors");
  expect_error([] { open_weights(test::fixture("io/legacy.pt")); }, ErrorCode::kUnsupported, "legacy");
}

TEST(TorchZip, DuplicateFlattenedNames) {
  TempDir dir;
  Pickle p;
  p.op('}').op('(').str("a.b").tensor("0", 1, 0, {1}, {1});
  p.str("a").op('}').str("b").tensor("0", 1, 0, {1}, {1}).op('s').op('u');
  std::string path = write_zip(dir, "d.pt", {{"d/data.pkl", p.done()}, {"d/data/0", floats({1})}});
  expect_error([&] { open_weights(path); }, ErrorCode::kFormat, "'a.b' occurs twice");
}

TEST(TorchZip, UnknownTensorIsNotFound) {
  auto f = open_weights(test::fixture("io/state_dict.pt"));
  expect_error([&] { f->info("missing.weight"); }, ErrorCode::kNotFound, "'missing.weight'");
  expect_error([&] { f->load("missing.weight"); }, ErrorCode::kNotFound, "state_dict.pt");
}

}  // namespace
}  // namespace ditcache
