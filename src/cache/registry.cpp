// Policy registry and option-string parsing ("name:key=value,key=value").
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ditcache/cache/policy.h"
#include "ditcache/error.h"

namespace ditcache {

// The built-in policies' factories (each in its own file under src/cache/policies/).
namespace detail {
std::unique_ptr<CachePolicy> make_none(const PolicySpec& spec);    // simple.cpp
std::unique_ptr<CachePolicy> make_fora(const PolicySpec& spec);    // simple.cpp
std::unique_ptr<CachePolicy> make_toca(const PolicySpec& spec);    // toca.cpp
std::unique_ptr<CachePolicy> make_random(const PolicySpec& spec);  // toca.cpp
}  // namespace detail

namespace {

struct Registered {
  std::string summary;
  PolicyFactory factory;
};

std::map<std::string, Registered>& table() {
  static std::map<std::string, Registered> instance;
  return instance;
}

void add(const std::string& name, const std::string& summary, PolicyFactory factory) {
  if (name.empty() || name.find_first_of(":,= ") != std::string::npos) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("policy name '{}' must be non-empty without ':', ',', '=' or spaces", name));
  }
  if (table().count(name)) throw Error(ErrorCode::kInvalidArgument, fmt::format("policy '{}' is already registered", name));
  table()[name] = Registered{summary, std::move(factory)};
}

void ensure_builtins() {
  static const bool done = [] {
    add("none", "no caching: every site computed every step", detail::make_none);
    add("fora", "FORA: reuse whole module (or block/step) outputs, recompute every `interval` steps", detail::make_fora);
    add("toca", "ToCa: token-wise caching with the official schedules and scores (ICLR 2025)", detail::make_toca);
    add("random", "ToCa's schedule with uniformly random token scores (seeded)", detail::make_random);
    return true;
  }();
  (void)done;
}

std::vector<std::string> names() {
  std::vector<std::string> out;
  for (const auto& [name, r] : table()) out.push_back(name);
  return out;
}

}  // namespace

PolicySpec PolicySpec::parse(const std::string& text) {
  PolicySpec spec;
  const auto colon = text.find(':');
  spec.name = text.substr(0, colon);
  if (spec.name.empty()) throw Error(ErrorCode::kInvalidArgument, fmt::format("cache policy '{}': no policy name before ':'", text));
  if (colon == std::string::npos) return spec;
  const std::string rest = text.substr(colon + 1);
  size_t start = 0;
  while (start <= rest.size()) {
    const size_t comma = rest.find(',', start);
    const std::string item = rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("cache policy '{}': option '{}' is not key=value", text, item));
    }
    const std::string k = item.substr(0, eq);
    if (spec.options.count(k)) throw Error(ErrorCode::kInvalidArgument, fmt::format("cache policy '{}': option '{}' given twice", text, k));
    spec.options[k] = item.substr(eq + 1);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return spec;
}

void register_policy(const std::string& name, const std::string& summary, PolicyFactory factory) {
  ensure_builtins();
  add(name, summary, std::move(factory));
}

std::vector<std::pair<std::string, std::string>> registered_policies() {
  ensure_builtins();
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, r] : table()) out.emplace_back(name, r.summary);
  return out;
}

std::unique_ptr<CachePolicy> make_policy(const std::string& text) {
  ensure_builtins();
  const auto spec = PolicySpec::parse(text);
  auto it = table().find(spec.name);
  if (it == table().end()) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("unknown cache policy '{}'; known: {}", spec.name, fmt::join(names(), ", ")));
  }
  return it->second.factory(spec);
}

// ---------------------------------------------------------------------------------------------
const std::string* OptionReader::raw(const std::string& key) {
  read_.push_back(key);
  auto it = spec_.options.find(key);
  return it == spec_.options.end() ? nullptr : &it->second;
}

double OptionReader::number(const std::string& key, double fallback, double min, double max) {
  const auto* text = raw(key);
  if (!text) return fallback;
  char* end = nullptr;
  const double v = std::strtod(text->c_str(), &end);
  if (end == text->c_str() || *end != '\0' || !std::isfinite(v)) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: option {}='{}' is not a number", spec_.name, key, *text));
  }
  if (v < min || v > max) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("{}: option {}={} is out of range; expected {} <= {} <= {}", spec_.name, key, *text, min, key, max));
  }
  return v;
}

double OptionReader::number_or_auto(const std::string& key, double fallback, double min, double max) {
  auto it = spec_.options.find(key);
  if (it != spec_.options.end() && it->second == "auto") {
    read_.push_back(key);
    return fallback;
  }
  return number(key, fallback, min, max);
}

int64_t OptionReader::integer(const std::string& key, int64_t fallback, int64_t min, int64_t max) {
  const auto* text = raw(key);
  if (!text) return fallback;
  char* end = nullptr;
  const long long v = std::strtoll(text->c_str(), &end, 10);
  if (end == text->c_str() || *end != '\0') {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: option {}='{}' is not an integer", spec_.name, key, *text));
  }
  if (v < min || v > max) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("{}: option {}={} is out of range; expected {} <= {} <= {}", spec_.name, key, *text, min, key, max));
  }
  return v;
}

int64_t OptionReader::integer_or_auto(const std::string& key, int64_t fallback, int64_t min, int64_t max) {
  auto it = spec_.options.find(key);
  if (it != spec_.options.end() && it->second == "auto") {
    read_.push_back(key);
    return fallback;
  }
  return integer(key, fallback, min, max);
}

std::string OptionReader::choice(const std::string& key, const std::string& fallback, const std::vector<std::string>& allowed) {
  const auto* text = raw(key);
  if (!text) return fallback;
  if (std::find(allowed.begin(), allowed.end(), *text) == allowed.end()) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("{}: option {}='{}' is not one of {}", spec_.name, key, *text, fmt::join(allowed, ", ")));
  }
  return *text;
}

std::string OptionReader::text(const std::string& key, const std::string& fallback) {
  const auto* value = raw(key);
  if (!value) return fallback;
  if (value->empty()) throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: option {} is empty", spec_.name, key));
  return *value;
}

void OptionReader::finish() const {
  for (const auto& [k, v] : spec_.options) {
    if (std::find(read_.begin(), read_.end(), k) == read_.end()) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("{}: unknown option '{}'; valid options: {}", spec_.name, k,
                              read_.empty() ? std::string("none") : fmt::format("{}", fmt::join(read_, ", "))));
    }
  }
}

}  // namespace ditcache
