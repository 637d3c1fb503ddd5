#pragma once
/// \file The library's string splitting (dotted checkpoint keys, comma lists). The example
/// programs keep their own cli::split (examples/common/cli_util.h): it rejects empty items with
/// an error naming the command-line option, which library callers do not want.

#include <string>
#include <vector>

namespace ditcache::io_detail {

/// "a.b..c" -> {"a", "b", "", "c"}: every item, empty ones included, so that join() gives the
/// text back; "" -> {""}.
inline std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> items;
  size_t start = 0;
  while (true) {
    const size_t end = text.find(separator, start);
    items.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) return items;
    start = end + 1;
  }
}

/// items[from], items[from + 1], ... joined with `separator`; "" when from >= items.size().
inline std::string join(const std::vector<std::string>& items, char separator, size_t from = 0) {
  std::string text;
  for (size_t i = from; i < items.size(); ++i) {
    if (i > from) text += separator;
    text += items[i];
  }
  return text;
}

}  // namespace ditcache::io_detail
