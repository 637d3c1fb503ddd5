#pragma once
// Small helpers shared by the example and benchmark programs: parsing of the common options,
// writing text files atomically, and a progress bar on stderr.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <fmt/format.h>

#include "ditcache/error.h"

namespace ditcache::cli {

/// "a,b,c" -> {"a", "b", "c"}; empty items (including a trailing separator) are errors naming `option`.
inline std::vector<std::string> split(const std::string& text, char separator, const char* option) {
  std::vector<std::string> items;
  size_t start = 0;
  while (true) {
    const size_t end = text.find(separator, start);
    std::string item = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (item.empty()) throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: empty item in '{}'", option, text));
    items.push_back(std::move(item));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return items;
}

/// "0,1,2" -> {0, 1, 2}; `option` names the flag in errors.
inline std::vector<int64_t> parse_int_list(const std::string& text, const char* option = "--labels") {
  std::vector<int64_t> values;
  for (const auto& item : split(text, ',', option)) {
    try {
      size_t used = 0;
      values.push_back(std::stoll(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: '{}' is not an integer", option, item));
    }
  }
  return values;
}

inline void require_file(const std::string& path, const char* what) {
  if (!std::filesystem::exists(path)) {
    throw Error(ErrorCode::kNotFound, fmt::format("{} '{}' does not exist", what, path));
  }
}

/// Writes text through a temporary file, so a failed write leaves nothing under `path`.
inline void write_text_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::ofstream out(tmp);
  out << text;
  out.close();  // flushes: a full disk shows up here, not after the rename
  std::error_code ec;
  if (!out) {
    std::filesystem::remove(tmp, ec);
    throw Error(ErrorCode::kIo, fmt::format("cannot write '{}'", path));
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw Error(ErrorCode::kIo, fmt::format("cannot write '{}': rename failed", path));
  }
}

/// Creates `dir` and checks that a file can be written in it, before any long work starts.
inline void require_writable_dir(const std::string& dir, const char* option) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string probe = dir + "/.ditcache-write-test";
  std::ofstream out(probe);
  const bool ok = !ec && static_cast<bool>(out);
  out.close();
  std::filesystem::remove(probe, ec);
  if (!ok) throw Error(ErrorCode::kIo, fmt::format("{} '{}' is not a writable directory", option, dir));
}

/// A thread count: 0 means every core (`all_cores`) or LibTorch's default; negative values are errors.
inline void set_threads(int threads, bool all_cores = false) {
  if (threads < 0) throw Error(ErrorCode::kInvalidArgument, fmt::format("--threads {}: expected >= 0", threads));
  if (threads == 0 && all_cores) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (threads > 0) at::set_num_threads(threads);
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
