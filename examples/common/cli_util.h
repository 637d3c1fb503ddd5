#pragma once
// Small helpers shared by the example and benchmark programs: parsing of the common options,
// writing text files atomically, and a progress bar on stderr.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "ditcache/error.h"

namespace ditcache::cli {

/// "0,1,2" -> {0, 1, 2}; `option` names the flag in errors.
inline std::vector<int64_t> parse_int_list(const std::string& text, const char* option = "--labels") {
  std::vector<int64_t> values;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      size_t used = 0;
      values.push_back(std::stoll(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: '{}' is not an integer", option, item));
    }
  }
  if (values.empty()) throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: empty list", option));
  return values;
}

/// "a,b,c" -> {"a", "b", "c"} (empty items are errors).
inline std::vector<std::string> split(const std::string& text, char separator, const char* option) {
  std::vector<std::string> items;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, separator)) {
    if (item.empty()) throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: empty item in '{}'", option, text));
    items.push_back(item);
  }
  if (items.empty()) throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: empty list", option));
  return items;
}

inline void require_file(const std::string& path, const char* what) {
  if (!std::filesystem::exists(path)) {
    throw Error(ErrorCode::kNotFound, fmt::format("{} '{}' does not exist", what, path));
  }
}

/// Writes text through a temporary file, so a failed write leaves nothing under `path`.
inline void write_text_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << text;
    if (!out) {
      out.close();
      std::filesystem::remove(tmp);
      throw Error(ErrorCode::kIo, fmt::format("cannot write '{}'", path));
    }
  }
  std::filesystem::rename(tmp, path);
}

/// A one-line progress bar on stderr: "[####....] done/total unit 1.2s".
inline void progress_bar(int64_t done, int64_t total, std::chrono::steady_clock::time_point start,
                         const char* unit = "steps") {
  const int width = 30;
  const int filled = total > 0 ? static_cast<int>(width * done / total) : width;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "\r[%s%s] %lld/%lld %s %.1fs", std::string(filled, '#').c_str(),
               std::string(width - filled, '.').c_str(), static_cast<long long>(done), static_cast<long long>(total),
               unit, elapsed);
  if (done == total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

}  // namespace ditcache::cli
