#pragma once
// Helpers shared by the video writers (not public API).
#include <string>

#include <c10/util/ArrayRef.h>

namespace ditcache::detail {

/// "[2, 3]".
std::string shape_text(c10::IntArrayRef sizes);
/// A unique temporary path beside `path` ("<path>.tmp-<pid>-<n>").
std::string temp_path_for(const std::string& path);
/// Renames `tmp` to `path`; on failure removes `tmp` and throws Error(kIo) naming `path`.
void commit_temp(const std::string& tmp, const std::string& path);

}  // namespace ditcache::detail
