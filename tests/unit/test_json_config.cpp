// The one JSON config reader (src/io/json_config.h): typed and nullable reads, wrong types,
// unknown and ignored fields, ranges, and its message style.
#include "io/json_config.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ditcache/error.h"
#include "test_util.h"

namespace ditcache {
namespace {

using io_detail::JsonConfig;
using test::expect_error;

TEST(JsonConfig, ReadsTypedFieldsAndLeavesAbsentOnesAtTheirDefaults) {
  JsonConfig json(R"({"i": 3, "big": 5000000000, "x": 0.5, "whole": 2, "b": true, "s": "hi", "li": [1, 2, 3],
                      "lb": [true, false], "ls": ["a", "b"]})",
                  "cfg.json", "Test");
  int i = 0, absent = 7;
  int64_t big = 0;
  double x = 0, whole = 0;
  bool b = false;
  std::string s;
  std::vector<int64_t> li;
  std::vector<bool> lb;
  std::vector<std::string> ls;
  EXPECT_TRUE(json.read("i", i));
  EXPECT_TRUE(json.read("big", big));
  EXPECT_TRUE(json.read("x", x));
  EXPECT_TRUE(json.read("whole", whole));  // an integer is a number
  EXPECT_TRUE(json.read("b", b));
  EXPECT_TRUE(json.read("s", s));
  EXPECT_TRUE(json.read("li", li));
  EXPECT_TRUE(json.read("lb", lb));
  EXPECT_TRUE(json.read("ls", ls));
  EXPECT_FALSE(json.read("missing", absent));
  EXPECT_EQ(i, 3);
  EXPECT_EQ(big, 5000000000);
  EXPECT_EQ(x, 0.5);
  EXPECT_EQ(whole, 2.0);
  EXPECT_TRUE(b);
  EXPECT_EQ(s, "hi");
  EXPECT_EQ(li, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(lb, (std::vector<bool>{true, false}));
  EXPECT_EQ(ls, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(absent, 7);
  EXPECT_FALSE(json.get<int>("missing").has_value());
  json.finish();  // everything was read
}

TEST(JsonConfig, WrongTypesNameTheSourceFieldExpectationAndValue) {
  auto error = [](const std::string& text, const std::function<void(JsonConfig&)>& read, const std::string& fragment) {
    expect_error(
        [&] {
          JsonConfig json(text, "cfg.json", "Test");
          read(json);
        },
        ErrorCode::kInvalidArgument, fragment);
  };
  error(R"({"depth": "two"})", [](JsonConfig& j) { j.get<int>("depth"); },
        "cfg.json: Test config field 'depth' must be an integer, found \"two\"");
  error(R"({"depth": 2.5})", [](JsonConfig& j) { j.get<int64_t>("depth"); }, "field 'depth' must be an integer, found 2.5");
  error(R"({"depth": 3000000000})", [](JsonConfig& j) { j.get<int>("depth"); }, "field 'depth' must be an integer");
  error(R"({"ratio": "4"})", [](JsonConfig& j) { j.get<double>("ratio"); }, "field 'ratio' must be a number, found \"4\"");
  error(R"({"flag": 1})", [](JsonConfig& j) { j.get<bool>("flag"); }, "field 'flag' must be true or false, found 1");
  error(R"({"name": 1})", [](JsonConfig& j) { j.get<std::string>("name"); }, "field 'name' must be a string, found 1");
  error(R"({"list": [1, "2"]})", [](JsonConfig& j) { j.get<std::vector<int>>("list"); },
        "field 'list' must be a list of integers, found [1,\"2\"]");
  error(R"({"list": [1, 0]})", [](JsonConfig& j) { j.get<std::vector<bool>>("list"); },
        "field 'list' must be a list of booleans, found [1,0]");
  error(R"({"depth": null})", [](JsonConfig& j) { j.get<int>("depth"); }, "field 'depth' must be an integer, found null");
  // A reader's own wording of what it expects.
  error(R"({"patch": 2})", [](JsonConfig& j) { j.get<std::vector<int>>("patch", "[t, h, w] integers"); },
        "field 'patch' must be [t, h, w] integers, found 2");
}

TEST(JsonConfig, NullableFieldsReadNullAsAbsent) {
  JsonConfig json(R"({"a": null, "b": 2.5, "c": "x"})", "<json>", "Test");
  double a = 1.0, b = 0.0;
  EXPECT_FALSE(json.read_nullable("a", a));
  EXPECT_EQ(a, 1.0);
  EXPECT_TRUE(json.read_nullable("b", b));
  EXPECT_EQ(b, 2.5);
  EXPECT_FALSE(json.get_nullable<int>("absent").has_value());
  expect_error([&] { json.get_nullable<bool>("c"); }, ErrorCode::kInvalidArgument,
               "<json>: Test config field 'c' must be true, false or null, found \"x\"");
  json.finish();
}

TEST(JsonConfig, RequiredFieldsSayWhyWhenMissing) {
  JsonConfig json(R"({"present": 4, "null": null})", "cfg.json", "Test");
  EXPECT_EQ(json.require<int>("present", "needed"), 4);
  expect_error([&] { json.require<int>("absent", "the model needs it"); }, ErrorCode::kInvalidArgument,
               "cfg.json: Test config field 'absent' is missing (the model needs it)");
  expect_error([&] { json.require<int>("null", "the model needs it"); }, ErrorCode::kInvalidArgument,
               "field 'null' must be an integer (the model needs it), found null");
}

TEST(JsonConfig, RangesOfIntegersAndLists) {
  JsonConfig json(R"({"zero": 0, "neg": -1, "ok": [1, 2], "empty": [], "bad": [1, 0]})", "cfg", "Test");
  int64_t v = 5;
  EXPECT_TRUE(json.read_at_least("zero", v, 0));
  EXPECT_EQ(v, 0);
  expect_error([&] { json.read_at_least("zero", v, 1); }, ErrorCode::kInvalidArgument,
               "field 'zero' must be a positive integer, found 0");
  int n = 0;
  expect_error([&] { json.read_at_least("neg", n, 0); }, ErrorCode::kInvalidArgument,
               "field 'neg' must be an integer >= 0, found -1");
  std::vector<int64_t> list;
  EXPECT_TRUE(json.read_list_at_least("ok", list, 1));
  EXPECT_EQ(list, (std::vector<int64_t>{1, 2}));
  expect_error([&] { json.read_list_at_least("empty", list, 1); }, ErrorCode::kInvalidArgument,
               "field 'empty' must be a non-empty list of positive integers, found []");
  expect_error([&] { json.read_list_at_least("bad", list, 1); }, ErrorCode::kInvalidArgument,
               "field 'bad' must be a non-empty list of positive integers, found [1,0]");
  EXPECT_EQ(list, (std::vector<int64_t>{1, 2}));  // untouched by the failed reads
}

TEST(JsonConfig, UnknownFieldsAreErrorsListingTheKnownOnesIgnoredOnesAreNot) {
  const std::string text = R"({"depth": 2, "dropout": 0.1, "hiden_size": 8})";
  JsonConfig json(text, "cfg.json", "Test");
  json.ignore({"dropout"});
  int depth = 0, hidden = 0;
  json.read("depth", depth);
  json.read("hidden_size", hidden);
  expect_error([&] { json.finish(); }, ErrorCode::kInvalidArgument,
               "cfg.json: unknown Test config field 'hiden_size'; known: depth, hidden_size");
  JsonConfig lenient(text, "cfg.json", "Test", JsonConfig::Unknown::kIgnore);
  lenient.read("depth", depth);
  lenient.finish();
  EXPECT_EQ(depth, 2);
  JsonConfig all_ignored(R"({"dropout": "anything", "depth": 1})", "cfg.json", "Test");
  all_ignored.ignore({"dropout"});
  all_ignored.read("depth", depth);
  all_ignored.finish();
}

TEST(JsonConfig, ChecksAndFailuresAfterTheReadsUseTheSameStyle) {
  JsonConfig json(R"({"norm": "layer", "act": "gelu", "dim": 512})", "cfg.json", "Test");
  json.check("act", [](const nlohmann::json& v) { return v == "gelu"; }, "\"gelu\"");
  json.check("absent", [](const nlohmann::json&) { return false; }, "never checked");
  expect_error([&] { json.check("norm", [](const nlohmann::json& v) { return v == "group"; }, "\"group\"", ErrorCode::kUnsupported); },
               ErrorCode::kUnsupported, "cfg.json: Test config field 'norm' must be \"group\", found \"layer\"");
  int dim = 0;
  json.read("dim", dim);
  expect_error([&] { json.fail("dim", "the width 1152"); }, ErrorCode::kInvalidArgument,
               "field 'dim' must be the width 1152, found 512");
  json.finish();
  const auto* raw = json.take("act");
  ASSERT_NE(raw, nullptr);
  EXPECT_EQ(*raw, "gelu");
  EXPECT_EQ(json.take("nothing"), nullptr);
}

TEST(JsonConfig, RejectsMalformedJsonAndNonObjects) {
  expect_error([] { JsonConfig("{\"a\": 1,", "cfg.json", "Test"); }, ErrorCode::kFormat, "cfg.json: not valid JSON (");
  expect_error([] { JsonConfig("[1, 2]", "cfg.json", "Test"); }, ErrorCode::kFormat,
               "cfg.json: expected a JSON object of Test config fields, found array");
}

TEST(JsonConfig, ReadsConfigFiles) {
  test::TempDir dir;
  const auto path = dir.file("config.json");
  test::write_bytes(path, R"({"depth": 3})");
  EXPECT_EQ(io_detail::read_config_file(path, "Test"), R"({"depth": 3})");
  expect_error([] { io_detail::read_config_file("/nonexistent/config.json", "Test"); }, ErrorCode::kNotFound,
               "Test config file '/nonexistent/config.json' cannot be opened");
}

}  // namespace
}  // namespace ditcache
