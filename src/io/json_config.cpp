// The one JSON config reader (json_config.h): typed reads, nullable and ignored fields, unknown
// fields, one message style.
#include "io/json_config.h"

#include <fstream>
#include <limits>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace ditcache::io_detail {

namespace {

using nlohmann::json;

// How a JSON value becomes a T: `expected` describes the accepted values for messages, `convert`
// returns false for another type (or an integer outside T's range).
template <typename T>
struct Conversion;

bool to_int64(const json& v, int64_t& out) {
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  out = v.get<int64_t>();
  return true;
}

bool to_int(const json& v, int& out) {
  int64_t wide = 0;
  if (!to_int64(v, wide) || wide < std::numeric_limits<int>::min() || wide > std::numeric_limits<int>::max()) return false;
  out = static_cast<int>(wide);
  return true;
}

template <>
struct Conversion<int> {
  static constexpr const char* expected = "an integer";
  static bool convert(const json& v, int& out) { return to_int(v, out); }
};

template <>
struct Conversion<int64_t> {
  static constexpr const char* expected = "an integer";
  static bool convert(const json& v, int64_t& out) { return to_int64(v, out); }
};

// A scalar that nlohmann reads directly once `is` accepts it.
template <typename T, bool (json::*is)() const noexcept>
struct Scalar {
  static bool convert(const json& v, T& out) {
    if (!(v.*is)()) return false;
    out = v.get<T>();
    return true;
  }
};

template <>
struct Conversion<double> : Scalar<double, &json::is_number> {
  static constexpr const char* expected = "a number";
};

template <>
struct Conversion<bool> : Scalar<bool, &json::is_boolean> {
  static constexpr const char* expected = "true or false";
};

template <>
struct Conversion<std::string> : Scalar<std::string, &json::is_string> {
  static constexpr const char* expected = "a string";
};

// A list whose every element converts as an E.
template <typename E>
struct ListOf {
  static bool convert(const json& v, std::vector<E>& out) {
    if (!v.is_array()) return false;
    std::vector<E> items;
    for (const auto& element : v) {
      E item{};
      if (!Conversion<E>::convert(element, item)) return false;
      items.push_back(item);
    }
    out = std::move(items);
    return true;
  }
};

template <>
struct Conversion<std::vector<int>> : ListOf<int> {
  static constexpr const char* expected = "a list of integers";
};

template <>
struct Conversion<std::vector<int64_t>> : ListOf<int64_t> {
  static constexpr const char* expected = "a list of integers";
};

template <>
struct Conversion<std::vector<bool>> : ListOf<bool> {
  static constexpr const char* expected = "a list of booleans";
};

template <>
struct Conversion<std::vector<std::string>> : ListOf<std::string> {
  static constexpr const char* expected = "a list of strings";
};

// What a nullable T field accepts: "an integer or null", "true, false or null", ...
template <typename T>
std::string or_null() {
  return fmt::format("{} or null", Conversion<T>::expected);
}

template <>
std::string or_null<bool>() {
  return "true, false or null";
}

std::string at_least(int64_t min_value) {
  return min_value == 1 ? "a positive integer" : fmt::format("an integer >= {}", min_value);
}

}  // namespace

std::string read_config_file(const std::string& path, const std::string& family) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::kNotFound, fmt::format("{} config file '{}' cannot be opened", family, path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw Error(ErrorCode::kIo, fmt::format("{} config file '{}': the read failed", family, path));
  return buffer.str();
}

JsonConfig::JsonConfig(const std::string& json_text, std::string source, std::string family, Unknown unknown)
    : source_(std::move(source)), family_(std::move(family)), unknown_(unknown) {
  try {
    json_ = json::parse(json_text);
  } catch (const json::exception& e) {
    throw Error(ErrorCode::kFormat, fmt::format("{}: not valid JSON ({})", source_, e.what()));
  }
  if (!json_.is_object()) {
    throw Error(ErrorCode::kFormat,
                fmt::format("{}: expected a JSON object of {} config fields, found {}", source_, family_, json_.type_name()));
  }
}

void JsonConfig::ignore(std::initializer_list<const char*> keys) {
  for (const char* key : keys) consumed_.insert(key);
}

const json* JsonConfig::take(const std::string& key) {
  known_.insert(key);
  consumed_.insert(key);
  const auto it = json_.find(key);
  return it == json_.end() ? nullptr : &*it;
}

template <typename T>
std::optional<T> JsonConfig::get(const std::string& key, const std::string& expected) {
  const json* value = take(key);
  if (!value) return std::nullopt;
  T out{};
  if (!Conversion<T>::convert(*value, out)) fail(key, expected.empty() ? Conversion<T>::expected : expected);
  return out;
}

template <typename T>
std::optional<T> JsonConfig::get_nullable(const std::string& key, const std::string& expected) {
  const json* value = take(key);
  if (!value || value->is_null()) return std::nullopt;
  T out{};
  if (!Conversion<T>::convert(*value, out)) fail(key, expected.empty() ? or_null<T>() : expected);
  return out;
}

template <typename T>
T JsonConfig::require(const std::string& key, const std::string& why) {
  const json* value = take(key);
  if (!value) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("{}: {} config field '{}' is missing ({})", source_, family_, key, why));
  }
  T out{};
  if (!Conversion<T>::convert(*value, out)) fail(key, fmt::format("{} ({})", Conversion<T>::expected, why));
  return out;
}

template <typename T>
bool JsonConfig::read_at_least(const std::string& key, T& out, int64_t min_value) {
  const auto value = get<T>(key, at_least(min_value));
  if (!value) return false;
  if (*value < min_value) fail(key, at_least(min_value));
  out = *value;
  return true;
}

bool JsonConfig::read_list_at_least(const std::string& key, std::vector<int64_t>& out, int64_t min_value) {
  const std::string expected = min_value == 1 ? std::string("a non-empty list of positive integers")
                                              : fmt::format("a non-empty list of integers >= {}", min_value);
  const auto value = get<std::vector<int64_t>>(key, expected);
  if (!value) return false;
  if (value->empty()) fail(key, expected);
  for (int64_t item : *value) {
    if (item < min_value) fail(key, expected);
  }
  out = *value;
  return true;
}

void JsonConfig::check(const std::string& key, const std::function<bool(const json&)>& ok, const std::string& expected,
                       ErrorCode code) {
  const json* value = take(key);
  if (value && !ok(*value)) fail(key, expected, code);
}

void JsonConfig::fail(const std::string& key, const std::string& expected, ErrorCode code) const {
  const auto it = json_.find(key);
  throw Error(code, fmt::format("{}: {} config field '{}' must be {}, found {}", source_, family_, key, expected,
                                it == json_.end() ? std::string("nothing") : it->dump()));
}

void JsonConfig::finish() const {
  if (unknown_ == Unknown::kIgnore) return;
  for (const auto& item : json_.items()) {
    if (consumed_.count(item.key())) continue;
    throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: unknown {} config field '{}'; known: {}", source_, family_,
                                                         item.key(), fmt::join(known_, ", ")));
  }
}

// The field types the readers use.
#define DITCACHE_JSON_CONFIG_TYPE(T)                                                                \
  template std::optional<T> JsonConfig::get<T>(const std::string&, const std::string&);          \
  template std::optional<T> JsonConfig::get_nullable<T>(const std::string&, const std::string&); \
  template T JsonConfig::require<T>(const std::string&, const std::string&);
DITCACHE_JSON_CONFIG_TYPE(int)
DITCACHE_JSON_CONFIG_TYPE(int64_t)
DITCACHE_JSON_CONFIG_TYPE(double)
DITCACHE_JSON_CONFIG_TYPE(bool)
DITCACHE_JSON_CONFIG_TYPE(std::string)
DITCACHE_JSON_CONFIG_TYPE(std::vector<int>)
DITCACHE_JSON_CONFIG_TYPE(std::vector<int64_t>)
DITCACHE_JSON_CONFIG_TYPE(std::vector<bool>)
DITCACHE_JSON_CONFIG_TYPE(std::vector<std::string>)
#undef DITCACHE_JSON_CONFIG_TYPE
template bool JsonConfig::read_at_least<int>(const std::string&, int&, int64_t);
template bool JsonConfig::read_at_least<int64_t>(const std::string&, int64_t&, int64_t);

}  // namespace ditcache::io_detail
