#pragma once
/// \file The one reader of JSON config files (DiT, PixArt, STDiT3, T5, the SD and OpenSora VAEs):
/// typed fields, nullable fields, keys accepted and ignored, unknown-field errors, and one message
/// style for all of them.
///
/// Messages (`source` is a file path, "<json>" or a metadata entry; `family` is "DiT", "T5", ...):
///   "<source>: not valid JSON (<parser message>)"                                    kFormat
///   "<source>: expected a JSON object of <family> config fields, found <type>"       kFormat
///   "<source>: <family> config field '<key>' must be <expected>, found <value>"      kInvalidArgument
///   "<source>: <family> config field '<key>' is missing (<why>)"                     kInvalidArgument
///   "<source>: unknown <family> config field '<key>'; known: <every key read>"       kInvalidArgument

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ditcache/error.h"

namespace ditcache::io_detail {

/// The whole text of a config file; throws Error(kNotFound) naming `family` and the path when it
/// cannot be opened, Error(kIo) when the read fails.
std::string read_config_file(const std::string& path, const std::string& family);

/// Reads one JSON object of config fields. Every read declares its key known and marks it
/// consumed; finish() then rejects any key that was neither read nor declared ignored (unless
/// the reader was made with Unknown::kIgnore, for formats whose files carry many keys that do not
/// matter, as Hugging Face / diffusers config.json files do). A read of an absent key leaves its
/// output unchanged, so the caller's defaults stand.
class JsonConfig {
 public:
  /// What finish() does with keys that were neither read nor ignored.
  enum class Unknown { kReject, kIgnore };

  /// Parses `json_text`; throws Error(kFormat) when it is not JSON or not an object.
  JsonConfig(const std::string& json_text, std::string source, std::string family, Unknown unknown = Unknown::kReject);

  const std::string& source() const noexcept { return source_; }
  const std::string& family() const noexcept { return family_; }

  /// Keys accepted and not read (training-only switches, kernels, bookkeeping).
  void ignore(std::initializer_list<const char*> keys);

  /// The raw value of `key` (declared known, consumed), or nullptr when absent.
  const nlohmann::json* take(const std::string& key);

  /// Field `key` as a T (int, int64_t, double, bool, std::string, std::vector<int>,
  /// std::vector<int64_t>, std::vector<bool>, std::vector<std::string>); std::nullopt when absent.
  /// Throws "must be <expected>" on another type or an int out of range; `expected` defaults to the
  /// type's description ("an integer", "a number", "true or false", "a list of integers", ...).
  template <typename T>
  std::optional<T> get(const std::string& key, const std::string& expected = {});
  /// Same, with JSON null read as absent ("an integer or null", ...).
  template <typename T>
  std::optional<T> get_nullable(const std::string& key, const std::string& expected = {});
  /// Field `key` that must be present (and not null): "is missing (<why>)" otherwise.
  template <typename T>
  T require(const std::string& key, const std::string& why);

  /// Reads field `key` into `out` when present; returns whether it was.
  template <typename T>
  bool read(const std::string& key, T& out, const std::string& expected = {}) {
    auto value = get<T>(key, expected);
    if (value) out = std::move(*value);
    return value.has_value();
  }
  /// Same, with JSON null read as absent.
  template <typename T>
  bool read_nullable(const std::string& key, T& out, const std::string& expected = {}) {
    auto value = get_nullable<T>(key, expected);
    if (value) out = std::move(*value);
    return value.has_value();
  }
  /// An integer field (T: int or int64_t) >= `min_value` ("a positive integer" for 1, else "an
  /// integer >= N").
  template <typename T>
  bool read_at_least(const std::string& key, T& out, int64_t min_value);
  /// A non-empty list of integers, each >= `min_value` ("a non-empty list of positive integers").
  bool read_list_at_least(const std::string& key, std::vector<int64_t>& out, int64_t min_value);

  /// Checks field `key`, when present, with `ok`; throws "must be <expected>" with `code` otherwise.
  void check(const std::string& key, const std::function<bool(const nlohmann::json&)>& ok, const std::string& expected,
             ErrorCode code = ErrorCode::kInvalidArgument);

  /// Throws "<family> config field '<key>' must be <expected>, found <value>" (the value as the
  /// JSON has it; also for checks across fields made after the reads).
  [[noreturn]] void fail(const std::string& key, const std::string& expected,
                         ErrorCode code = ErrorCode::kInvalidArgument) const;

  /// Rejects the first key neither read nor ignored (Unknown::kReject), listing the known ones.
  void finish() const;

 private:
  nlohmann::json json_;
  std::string source_;
  std::string family_;
  Unknown unknown_;
  std::set<std::string> known_;     // every key a read asked for
  std::set<std::string> consumed_;  // known and ignored keys
};

}  // namespace ditcache::io_detail
