// Video output: format dispatch, frame conversion and PNG frame folders (video.h).
#include "ditcache/video.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <filesystem>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/error.h"
#include "ditcache/image.h"
#include "video/video_util.h"

namespace ditcache {

namespace fs = std::filesystem;

VideoFormat video_format_of(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (ext == ".mp4") return VideoFormat::kMP4;
  if (ext == ".gif") return VideoFormat::kGIF;
  if (ext.empty()) return VideoFormat::kPNGFrames;
  throw Error(ErrorCode::kInvalidArgument,
              fmt::format("video output '{}': '{}' is not a supported format; expected FILE.mp4, FILE.gif or a folder "
                          "(PNG frames) without an extension",
                          path, ext));
}

at::Tensor video_to_uint8(const at::Tensor& frames) {
  if (!frames.defined() || frames.dim() != 4 || frames.size(0) < 1 || frames.size(1) != 3 ||
      !at::isFloatingType(frames.scalar_type()) || frames.size(2) < 1 || frames.size(3) < 1) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("video frames must be floating point [F, 3, H, W] with F, H, W >= 1, found {}",
                            frames.defined() ? fmt::format("{} {}", c10::toString(frames.scalar_type()),
                                                           detail::shape_text(frames.sizes()))
                                             : std::string("nothing")));
  }
  return to_uint8_images(frames);  // [F, H, W, 3] uint8, CPU
}

namespace detail {

std::string shape_text(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

std::string temp_path_for(const std::string& path) {
  static std::atomic<int> counter{0};
  return fmt::format("{}.tmp-{}-{}", path, ::getpid(), counter++);
}

void commit_temp(const std::string& tmp, const std::string& path) {
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error(ErrorCode::kIo, fmt::format("cannot write '{}': rename of the temporary file failed", path));
  }
}

}  // namespace detail

void write_png_frames(const std::string& dir, const at::Tensor& frames) {
  const auto pixels = video_to_uint8(frames);  // [F, H, W, 3]
  const int64_t count = pixels.size(0);
  const int digits = std::max<int>(4, static_cast<int>(std::to_string(count - 1).size()));
  // Frames go to a temporary sibling folder first; only when all are written do they move in.
  const std::string tmp = detail::temp_path_for(fs::path(dir).lexically_normal().string());
  std::error_code ec;
  try {
    fs::create_directories(tmp, ec);
    if (ec) throw Error(ErrorCode::kIo, fmt::format("cannot create the folder for '{}': {}", dir, ec.message()));
    std::vector<std::string> names;
    for (int64_t i = 0; i < count; ++i) {
      names.push_back(fmt::format("frame_{:0{}d}.png", i, digits));
      write_png(tmp + "/" + names.back(), pixels[i]);
    }
    fs::create_directories(dir, ec);
    if (ec || !fs::is_directory(dir)) throw Error(ErrorCode::kIo, fmt::format("cannot create the folder '{}'", dir));
    for (const auto& name : names) {
      fs::rename(tmp + "/" + name, fs::path(dir) / name, ec);
      if (ec) throw Error(ErrorCode::kIo, fmt::format("cannot write '{}': {}", (fs::path(dir) / name).string(), ec.message()));
    }
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::remove_all(tmp, ec);
}

void write_video(const std::string& path, const at::Tensor& frames, double fps) {
  switch (video_format_of(path)) {
    case VideoFormat::kMP4: return write_mp4(path, frames, fps);
    case VideoFormat::kGIF: return write_gif(path, frames, fps);
    case VideoFormat::kPNGFrames: return write_png_frames(path, frames);
  }
}

}  // namespace ditcache
