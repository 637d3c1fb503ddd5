// A small animated GIF89a encoder (video.h): fixed 256-colour palette, LZW, looping forever.
// Format: GIF89a specification (W3C / CompuServe 1990), NETSCAPE2.0 looping extension.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/error.h"
#include "ditcache/video.h"
#include "video/video_util.h"

namespace ditcache {

namespace detail {

namespace {
constexpr int kGreys = 40;
int grey_level(int k) { return static_cast<int>(std::lround((k + 1) * 255.0 / (kGreys + 1))); }
}  // namespace

std::vector<uint8_t> gif_palette() {
  std::vector<uint8_t> p;
  p.reserve(768);
  for (int r = 0; r < 6; ++r)
    for (int g = 0; g < 6; ++g)
      for (int b = 0; b < 6; ++b) p.insert(p.end(), {uint8_t(51 * r), uint8_t(51 * g), uint8_t(51 * b)});
  for (int k = 0; k < kGreys; ++k) p.insert(p.end(), 3, static_cast<uint8_t>(grey_level(k)));
  return p;
}

uint8_t gif_palette_index(uint8_t r, uint8_t g, uint8_t b) {
  // The nearest cube colour (per channel rounding) and the nearest grey; the closer one wins.
  const int cr = (r + 25) / 51, cg = (g + 25) / 51, cb = (b + 25) / 51;
  auto sq = [](int v) { return v * v; };
  const int d_cube = sq(r - 51 * cr) + sq(g - 51 * cg) + sq(b - 51 * cb);
  const int mean = (r + g + b + 1) / 3;
  int k = static_cast<int>(std::lround(mean * (kGreys + 1) / 255.0)) - 1;
  k = k < 0 ? 0 : k >= kGreys ? kGreys - 1 : k;
  const int gl = grey_level(k);
  const int d_grey = sq(r - gl) + sq(g - gl) + sq(b - gl);
  return d_grey < d_cube ? static_cast<uint8_t>(216 + k) : static_cast<uint8_t>(cr * 36 + cg * 6 + cb);
}

std::vector<uint8_t> gif_lzw_encode(const uint8_t* indices, size_t count, int min_code_size) {
  if (min_code_size < 2 || min_code_size > 8) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("gif_lzw_encode: min_code_size must be 2..8, found {}", min_code_size));
  }
  const int clear = 1 << min_code_size, end = clear + 1;
  std::vector<uint8_t> out;
  uint32_t bits = 0;
  int nbits = 0;
  int size = min_code_size + 1;
  auto emit = [&](int code) {
    bits |= static_cast<uint32_t>(code) << nbits;
    nbits += size;
    while (nbits >= 8) {
      out.push_back(static_cast<uint8_t>(bits & 0xff));
      bits >>= 8;
      nbits -= 8;
    }
  };
  // The string table as (prefix code, next index) -> code, valid where its stamp is the current
  // generation (so a clear costs nothing).
  const size_t table = size_t{4096} << 8;
  std::vector<uint16_t> codes(table);
  std::vector<uint32_t> stamps(table, 0);
  uint32_t generation = 1;
  int next = end + 1;
  emit(clear);
  if (count == 0) {
    emit(end);
    if (nbits > 0) out.push_back(static_cast<uint8_t>(bits & 0xff));
    return out;
  }
  int current = indices[0];
  for (size_t i = 1; i < count; ++i) {
    const uint8_t c = indices[i];
    if (c >= clear) throw Error(ErrorCode::kInvalidArgument, fmt::format("gif_lzw_encode: index {} >= {}", c, clear));
    const size_t key = (static_cast<size_t>(current) << 8) | c;
    if (stamps[key] == generation) {
      current = codes[key];
      continue;
    }
    emit(current);
    if (next < 4096) {
      stamps[key] = generation;
      codes[key] = static_cast<uint16_t>(next++);
      // The decoder adds its entries one code later, so it widens when `next` passes 2^size.
      if (next > (1 << size) && size < 12) ++size;
    } else {
      emit(clear);  // the table is full: start over
      ++generation;
      next = end + 1;
      size = min_code_size + 1;
    }
    current = c;
  }
  emit(current);
  emit(end);
  if (nbits > 0) out.push_back(static_cast<uint8_t>(bits & 0xff));
  return out;
}

}  // namespace detail

void write_gif(const std::string& path, const at::Tensor& frames, double fps) {
  if (!(fps > 0) || !std::isfinite(fps)) throw Error(ErrorCode::kInvalidArgument, fmt::format("write_gif: fps must be > 0, found {}", fps));
  const auto pixels = video_to_uint8(frames);  // [F, H, W, 3]
  const int64_t count = pixels.size(0), height = pixels.size(1), width = pixels.size(2);
  if (width > 65535 || height > 65535) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("write_gif: frames of {}x{} exceed GIF's 65535 pixels", width, height));
  }
  std::string bytes;
  auto u8 = [&](int v) { bytes.push_back(static_cast<char>(v & 0xff)); };
  auto u16 = [&](int v) { u8(v); u8(v >> 8); };
  bytes += "GIF89a";
  u16(static_cast<int>(width));
  u16(static_cast<int>(height));
  u8(0xF7);  // global colour table of 2^(7+1) entries, 8-bit colour resolution
  u8(0);     // background colour index
  u8(0);     // pixel aspect ratio: none given
  for (uint8_t v : detail::gif_palette()) u8(v);
  // NETSCAPE2.0 application extension: loop count 0 = forever.
  u8(0x21); u8(0xFF); u8(11);
  bytes += "NETSCAPE2.0";
  u8(3); u8(1); u16(0); u8(0);
  const int delay = std::max(2, static_cast<int>(std::lround(100.0 / fps)));  // hundredths of a second
  std::vector<uint8_t> indices(static_cast<size_t>(width * height));
  for (int64_t f = 0; f < count; ++f) {
    const uint8_t* rgb = pixels[f].data_ptr<uint8_t>();
    for (size_t i = 0; i < indices.size(); ++i) indices[i] = detail::gif_palette_index(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]);
    // Graphic control extension: disposal "do not dispose", the frame delay, no transparency.
    u8(0x21); u8(0xF9); u8(4); u8(0x04); u16(delay); u8(0); u8(0);
    // Image descriptor: the whole canvas, no local colour table, not interlaced.
    u8(0x2C); u16(0); u16(0); u16(static_cast<int>(width)); u16(static_cast<int>(height)); u8(0);
    u8(8);  // LZW minimum code size
    const auto data = detail::gif_lzw_encode(indices.data(), indices.size(), 8);
    for (size_t pos = 0; pos < data.size(); pos += 255) {  // sub-blocks of at most 255 bytes
      const size_t n = std::min<size_t>(255, data.size() - pos);
      u8(static_cast<int>(n));
      bytes.append(reinterpret_cast<const char*>(data.data() + pos), n);
    }
    u8(0);  // block terminator
  }
  u8(0x3B);  // trailer

  const std::string tmp = detail::temp_path_for(path);
  std::ofstream out(tmp, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw Error(ErrorCode::kIo, fmt::format("cannot write '{}'", path));
  }
  detail::commit_temp(tmp, path);
}

}  // namespace ditcache
