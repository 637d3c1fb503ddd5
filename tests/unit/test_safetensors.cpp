// safetensors reader/writer and open_weights() dispatch: round trips, the python-written fixture,
// and every malformed-input case with its ErrorCode.

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

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

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// A safetensors file from a raw header text (not validated) and a data section.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

// Opens a file built from header + data and expects open_weights() to fail.
void expect_open_error(const std::string& header, const std::string& data, ErrorCode code,
                       const std::string& fragment) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  write_bytes(path, safetensors_bytes(header, data));
  expect_error([&] { open_weights(path); }, code, fragment);
}

void expect_same(const at::Tensor& actual, const at::Tensor& expected, const std::string& name) {
  ASSERT_EQ(actual.scalar_type(), expected.scalar_type()) << name;
  ASSERT_EQ(actual.sizes(), expected.sizes()) << name;
  EXPECT_TRUE(actual.device().is_cpu()) << name;
  EXPECT_TRUE(at::equal(actual, expected)) << name << "\nactual:\n" << actual << "\nexpected:\n" << expected;
}

std::vector<std::pair<std::string, at::Tensor>> all_dtypes() {
  at::manual_seed(7);
  return {
      {"f64", at::randn({2, 3}, at::kDouble)},
      {"f32", at::randn({4, 5})},
      {"f16", at::randn({3}).to(at::kHalf)},
      {"bf16", at::randn({2, 2}).to(at::kBFloat16)},
      {"i64", at::arange(6, at::kLong) * (int64_t{1} << 40) - 5},
      {"i32", at::arange(4, at::kInt) - 2},
      {"i16", at::arange(3, at::kShort) * 1000},
      {"i8", at::arange(5, at::kChar) - 3},
      {"u8", at::arange(7, at::kByte) * 30},
      {"bool", at::arange(5) % 3 == 0},
      {"scalar", at::scalar_tensor(2.5)},
      {"empty", at::zeros({0, 4})},
      {"transposed", at::arange(12, at::kFloat).reshape({3, 4}).t()},
  };
}

TEST(Safetensors, RoundTripEveryDtypeWithMetadata) {
  TempDir dir;
  std::string path = dir.file("rt.safetensors");
  auto tensors = all_dtypes();
  std::map<std::string, std::string> meta{{"format", "pt"}, {"note", "ünïcode ok"}};
  write_safetensors(path, tensors, meta);

  // Header padded with spaces to a multiple of 8; no temporary file left behind.
  std::string bytes = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);

  auto f = open_weights(path);
  EXPECT_EQ(f->format(), "safetensors");
  EXPECT_EQ(f->path(), path);
  EXPECT_EQ(f->metadata(), meta);
  std::vector<std::string> expected_names;
  for (const auto& [name, t] : tensors) expected_names.push_back(name);
  EXPECT_EQ(f->names(), expected_names);
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(f->contains(name));
    const TensorInfo& info = f->info(name);
    EXPECT_EQ(info.name, name);
    EXPECT_EQ(info.shape, t.sizes().vec()) << name;
    at::Tensor loaded = f->load(name);
    EXPECT_TRUE(loaded.is_contiguous()) << name;
    expect_same(loaded, t.contiguous(), name);
  }
  EXPECT_EQ(f->info("bf16").dtype, DType::kBF16);
  EXPECT_EQ(f->info("bool").dtype, DType::kBool);
  EXPECT_STREQ(to_string(f->info("u8").dtype), "U8");
  EXPECT_FALSE(f->contains("nope"));
}

TEST(Safetensors, OverwritesAtomicallyAndWithoutMetadata) {
  TempDir dir;
  std::string path = dir.file("w.safetensors");
  write_safetensors(path, {{"a", at::ones({2})}});
  write_safetensors(path, {{"b", at::zeros({3}, at::kInt)}});
  auto f = open_weights(path);
  EXPECT_EQ(f->names(), std::vector<std::string>{"b"});
  EXPECT_TRUE(f->metadata().empty());
  expect_same(f->load("b"), at::zeros({3}, at::kInt), "b");
}

TEST(Safetensors, ReadsFileWrittenByPythonSafetensors) {
  auto f = open_weights(test::fixture("io/python_written.safetensors"));
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("producer"), "io_fixtures.py");
  EXPECT_EQ(f->names().size(), 12u);
  expect_same(f->load("f64"), at::arange(6, at::kDouble).reshape({2, 3}) / 8 - 0.25, "f64");
  expect_same(f->load("f32"), at::arange(12, at::kFloat).reshape({3, 4}) * 0.5 - 2.0, "f32");
  expect_same(f->load("f16"), (at::arange(8, at::kFloat) * 0.25 - 1.0).to(at::kHalf), "f16");
  expect_same(f->load("bf16"), (at::arange(8, at::kFloat) * 0.5 - 2.0).to(at::kBFloat16), "bf16");
  expect_same(f->load("i64"), at::arange(5, at::kLong) * (int64_t{1} << 40) - 3, "i64");
  expect_same(f->load("i32"), at::arange(5, at::kInt) * 1000 - 2000, "i32");
  expect_same(f->load("i16"), at::arange(5, at::kShort) * 100 - 200, "i16");
  expect_same(f->load("i8"), at::arange(5, at::kChar) * 20 - 40, "i8");
  expect_same(f->load("u8"), at::arange(5, at::kByte) * 50, "u8");
  expect_same(f->load("bool"), at::arange(5) % 2 == 0, "bool");
  expect_same(f->load("scalar"), at::scalar_tensor(1.5, at::kFloat), "scalar");
  EXPECT_EQ(f->load("scalar").dim(), 0);
  expect_same(f->load("empty"), at::zeros({0, 4}), "empty");
}

TEST(Safetensors, LoadedTensorsAreIndependentAndOutliveTheFile) {
  TempDir dir;
  std::string path = dir.file("ind.safetensors");
  write_safetensors(path, {{"x", at::arange(2048, at::kFloat)}, {"y", at::ones({3}, at::kHalf)}});
  std::string before = read_bytes(path);
  at::Tensor a, b;
  {
    auto f = open_weights(path);
    a = f->load("x");
    b = f->load("x");
  }  // the WeightFile is gone; the tensors keep their memory
  a.fill_(-1.0);
  EXPECT_TRUE(at::equal(b, at::arange(2048, at::kFloat)));
  EXPECT_TRUE(at::equal(a, at::full({2048}, -1.0)));
  EXPECT_EQ(read_bytes(path), before);  // nothing written back into the file
  auto f = open_weights(path);
  EXPECT_TRUE(at::equal(f->load("x"), at::arange(2048, at::kFloat)));
}

TEST(Safetensors, ReadsMisalignedTensors) {
  // A U8 of 3 bytes first puts the F32 data at an odd offset: the reader copies instead of mapping.
  std::string header = R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  float vals[2] = {1.25f, -3.5f};
  std::string data = std::string("\x01\x02\x03", 3) + std::string(reinterpret_cast<const char*>(vals), 8);
  TempDir dir;
  std::string path = dir.file("mis.safetensors");
  write_bytes(path, safetensors_bytes(header, data));
  auto f = open_weights(path);
  expect_same(f->load("b"), at::tensor({1.25f, -3.5f}), "b");
  expect_same(f->load("a"), at::tensor({1, 2, 3}, at::kByte), "a");
}

TEST(Safetensors, UnknownTensorIsNotFound) {
  TempDir dir;
  std::string path = dir.file("x.safetensors");
  write_safetensors(path, {{"x", at::ones({1})}});
  auto f = open_weights(path);
  expect_error([&] { f->info("y"); }, ErrorCode::kNotFound, "'y'");
  expect_error([&] { f->load("y"); }, ErrorCode::kNotFound, "x.safetensors");
}

// ---- open_weights(): generic failures ------------------------------------------------------------

TEST(Weights, MissingFileIsNotFound) {
  expect_error([] { open_weights("/nonexistent/dir/model.safetensors"); }, ErrorCode::kNotFound,
               "/nonexistent/dir/model.safetensors");
}

TEST(Weights, DirectoryIsInvalidArgument) {
  TempDir dir;
  expect_error([&] { open_weights(dir.path().string()); }, ErrorCode::kInvalidArgument, "directory");
}

TEST(Weights, EmptyAndTinyFilesAreTruncated) {
  TempDir dir;
  write_bytes(dir.file("empty.safetensors"), "");
  write_bytes(dir.file("five.safetensors"), std::string("\x10\0\0\0\0", 5));
  expect_error([&] { open_weights(dir.file("empty.safetensors")); }, ErrorCode::kFormat, "truncated");
  expect_error([&] { open_weights(dir.file("five.safetensors")); }, ErrorCode::kFormat, "5 bytes");
}

TEST(Weights, ForeignFileIsFormatError) {
  TempDir dir;
  std::string png("\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0", 29);
  write_bytes(dir.file("image.safetensors"), png);
  expect_error([&] { open_weights(dir.file("image.safetensors")); }, ErrorCode::kFormat, "exceeds the file");
  write_bytes(dir.file("lfs.safetensors"), "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 10\n");
  expect_error([&] { open_weights(dir.file("lfs.safetensors")); }, ErrorCode::kFormat, "git-lfs pointer");
}

TEST(Weights, DTypeNames) {
  EXPECT_STREQ(to_string(DType::kF64), "F64");
  EXPECT_STREQ(to_string(DType::kF32), "F32");
  EXPECT_STREQ(to_string(DType::kF16), "F16");
  EXPECT_STREQ(to_string(DType::kBF16), "BF16");
  EXPECT_STREQ(to_string(DType::kI64), "I64");
  EXPECT_STREQ(to_string(DType::kI32), "I32");
  EXPECT_STREQ(to_string(DType::kI16), "I16");
  EXPECT_STREQ(to_string(DType::kI8), "I8");
  EXPECT_STREQ(to_string(DType::kU8), "U8");
  EXPECT_STREQ(to_string(DType::kBool), "BOOL");
}

// ---- malformed safetensors ---------------------------------------------------------------------

TEST(Safetensors, HeaderLengthBeyondFile) {
  // Header cut: the length says 200 bytes, 20 follow.
  TempDir dir;
  std::string path = dir.file("cut.safetensors");
  write_bytes(path, le64(200) + std::string(R"({"a":{"dtype":"F32",)"));
  expect_error([&] { open_weights(path); }, ErrorCode::kFormat, "header length 200 exceeds the file (20 bytes");
}

TEST(Safetensors, HeaderLengthZero) { expect_open_error("", "", ErrorCode::kFormat, "header length is 0"); }

TEST(Safetensors, HeaderNotJson) {
  expect_open_error(R"({"a": {"dtype": "F32", "shape": [1], )", "", ErrorCode::kFormat, "not valid JSON");
  expect_open_error("hello world!", "", ErrorCode::kFormat, "does not start with '{'");
  expect_open_error(R"({"a": 1} trailing)", "", ErrorCode::kFormat, "not valid JSON");
}

TEST(Safetensors, DataSectionCut) {
  // Data cut: the tensor claims 16 bytes, 8 are present.
  expect_open_error(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0'),
                    ErrorCode::kFormat, "tensor 'w' data_offsets [0, 16] exceed the data section (8 bytes)");
}

TEST(Safetensors, OffsetsOutOfRange) {
  expect_open_error(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[100,104]}})", std::string(8, '\0'),
                    ErrorCode::kFormat, "exceed the data section");
  expect_open_error(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[4,2]}})", std::string(8, '\0'),
                    ErrorCode::kFormat, "end before begin");
  expect_open_error(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[-2,0]}})", std::string(8, '\0'),
                    ErrorCode::kFormat, "data_offsets");
  expect_open_error(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0]}})", std::string(8, '\0'),
                    ErrorCode::kFormat, "expected [begin, end]");
}

TEST(Safetensors, OverlappingTensors) {
  expect_open_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                    std::string(16, '\0'), ErrorCode::kFormat, "'a' data_offsets [0, 8] and 'b' data_offsets [4, 12] overlap");
}

TEST(Safetensors, OffsetsDisagreeWithShape) {
  expect_open_error(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'),
                    ErrorCode::kFormat, "shape [3] and dtype F32 (3 elements) but data_offsets [0, 8] span 8 bytes");
}

TEST(Safetensors, UnknownDtype) {
  expect_open_error(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})", std::string(8, '\0'),
                    ErrorCode::kFormat, "unknown dtype 'Q4'");
  expect_open_error(R"({"w":{"dtype":7,"shape":[2],"data_offsets":[0,2]}})", std::string(8, '\0'),
                    ErrorCode::kFormat, "dtype is 7");
  expect_open_error(R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", std::string(8, '\0'),
                    ErrorCode::kUnsupported, "F8_E4M3");
}

TEST(Safetensors, NegativeOrAbsurdShape) {
  expect_open_error(R"({"w":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}})", std::string(8, '\0'),
                    ErrorCode::kFormat, "negative dimension");
  expect_open_error(R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776,1099511627776],)"
                    R"("data_offsets":[0,8]}})",
                    std::string(8, '\0'), ErrorCode::kFormat, "absurd number of elements");
  expect_open_error(R"({"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})",
                    std::string(8, '\0'), ErrorCode::kFormat, "data_offsets [0, 8] span 8 bytes");
  expect_open_error(R"({"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,2]}})", std::string(8, '\0'),
                    ErrorCode::kFormat, "non-negative integers");
  expect_open_error(R"({"w":{"dtype":"U8","shape":3,"data_offsets":[0,3]}})", std::string(8, '\0'),
                    ErrorCode::kFormat, "expected an array");
}

TEST(Safetensors, MalformedEntriesAndMetadata) {
  expect_open_error(R"([1,2])", "", ErrorCode::kFormat, "does not start with '{'");
  expect_open_error(R"({"w":5})", "", ErrorCode::kFormat, "tensor 'w' entry is 5");
  expect_open_error(R"({"w":{"dtype":"U8","shape":[1]}})", std::string(8, '\0'), ErrorCode::kFormat,
                    "lacks one of dtype/shape/data_offsets");
  expect_open_error(R"({"__metadata__":{"k":3}})", "", ErrorCode::kFormat, "__metadata__ value of 'k'");
  expect_open_error(R"({"__metadata__":[]})", "", ErrorCode::kFormat, "expected an object of strings");
}

TEST(Safetensors, BoolBytesAreValidatedOnLoad) {
  TempDir dir;
  std::string path = dir.file("b.safetensors");
  std::string header = R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  write_bytes(path, safetensors_bytes(header, std::string("\x01\x00\x02", 3)));
  auto f = open_weights(path);
  expect_error([&] { f->load("m"); }, ErrorCode::kFormat, "tensor 'm' has dtype BOOL but byte 2 holds 2");
}

TEST(Safetensors, WriterRejectsBadInput) {
  TempDir dir;
  std::string path = dir.file("w.safetensors");
  expect_error([&] { write_safetensors(path, {{"a", at::ones({1})}, {"a", at::ones({1})}}); },
               ErrorCode::kInvalidArgument, "'a' given twice");
  expect_error([&] { write_safetensors(path, {{"c", at::ones({2}, at::kComplexFloat)}}); },
               ErrorCode::kInvalidArgument, "tensor 'c' has dtype");
  expect_error([&] { write_safetensors(path, {{"", at::ones({1})}}); }, ErrorCode::kInvalidArgument,
               "invalid tensor name");
  expect_error([&] { write_safetensors(path, {{"u", at::Tensor()}}); }, ErrorCode::kInvalidArgument, "undefined");
  EXPECT_FALSE(fs::exists(path));
  expect_error([&] { write_safetensors(dir.file("no/such/dir/x.safetensors"), {{"a", at::ones({1})}}); },
               ErrorCode::kIo, "no/such/dir/x.safetensors");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 0);
}

}  // namespace
}  // namespace ditcache
