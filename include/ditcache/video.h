#pragma once
/// \file Video output: decoded frames [F, 3, H, W] in [-1, 1] written as PNG frames, an animated
/// GIF (a built-in GIF89a encoder) or an H.264 MP4 (through FFmpeg's libraries when ditcache was
/// built with them). Every writer goes through a temporary file (or folder) and renames it on
/// success, so a failed write leaves nothing partial under the requested path.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

namespace ditcache {

/// How write_video stores a video, from the path's extension.
enum class VideoFormat {
  kPNGFrames,  ///< a folder of frame_0000.png, frame_0001.png, ...
  kGIF,        ///< ".gif": animated GIF89a, looping forever
  kMP4,        ///< ".mp4": H.264 (yuv420p) in an MP4 container
};

/// ".mp4" -> kMP4, ".gif" -> kGIF (case-insensitive); any other path names a folder of PNG
/// frames. A path with another file-like extension (".avi", ".png", ...) throws
/// Error(kInvalidArgument) listing the supported outputs.
VideoFormat video_format_of(const std::string& path);

/// Whether this build writes MP4 (it found FFmpeg's libavformat, libavcodec, libswscale and
/// libavutil through pkg-config: compile definition DITCACHE_WITH_FFMPEG).
bool mp4_supported() noexcept;

/// Maps frames [F, 3, H, W] (floating point, any device; the decoder output, nominally in
/// [-1, 1]) to uint8 RGB frames [F, H, W, 3] on the CPU, clamped (to_uint8_images' rounding).
/// Throws Error(kInvalidArgument) for anything else.
at::Tensor video_to_uint8(const at::Tensor& frames);

/// Writes frames [F, 3, H, W] as `dir`/frame_0000.png ... (at least 4 digits), creating `dir`.
/// Throws Error(kIo) naming the path when it cannot be written.
void write_png_frames(const std::string& dir, const at::Tensor& frames);

/// Writes frames [F, 3, H, W] as an animated GIF: a fixed 256-colour palette (a 6x6x6 colour cube
/// plus 40 greys, nearest colour, no dithering), LZW-compressed, a frame delay of
/// round(100 / fps) hundredths of a second (at least 2), looping forever. Frames up to 65535
/// pixels wide and high. Throws Error(kInvalidArgument) for bad frames or fps, Error(kIo) when
/// the file cannot be written.
void write_gif(const std::string& path, const at::Tensor& frames, double fps);

/// Writes frames [F, 3, H, W] as an H.264 MP4 at `fps` (odd sizes are padded by one replicated
/// row/column, as yuv420p needs even sizes). Throws Error(kUnsupported) when ditcache was built
/// without FFmpeg or the FFmpeg libraries have no H.264 encoder, Error(kIo) when encoding or
/// writing fails.
void write_mp4(const std::string& path, const at::Tensor& frames, double fps);

/// Writes frames [F, 3, H, W] in the format of video_format_of(path).
void write_video(const std::string& path, const at::Tensor& frames, double fps);

namespace detail {
/// The GIF palette: 256 RGB triples (768 bytes): index r*36 + g*6 + b (each 0..5, value 51 x
/// level) for the colour cube, 216 + k for the grey k = round((k + 1) * 255 / 41), k = 0..39.
std::vector<uint8_t> gif_palette();
/// The palette index nearest (squared RGB distance) to a colour among the cube's and the greys'
/// nearest candidates.
uint8_t gif_palette_index(uint8_t r, uint8_t g, uint8_t b);
/// GIF's variable-width LZW of `count` colour indices (< 2^min_code_size) with a clear code
/// first, a clear code whenever the 4096-entry table fills, and the end code last; the packed
/// code stream, LSB first, not yet split into sub-blocks.
std::vector<uint8_t> gif_lzw_encode(const uint8_t* indices, size_t count, int min_code_size = 8);
}  // namespace detail

}  // namespace ditcache
