// Video writers (video.h): the GIF encoder checked by a small independent GIF/LZW decoder, PNG
// frame folders, MP4 through FFmpeg when the build has it, format dispatch and errors.
#include <cstring>
#include <filesystem>
#include <random>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "ditcache/error.h"
#include "ditcache/image.h"
#include "ditcache/video.h"
#include "test_util.h"

#ifdef DITCACHE_WITH_FFMPEG
extern "C" {
#include <libavformat/avformat.h>
}
#endif

namespace ditcache {
namespace {

namespace fs = std::filesystem;

// GIF's LZW decoder, written from the specification: variable code width from min+1 bits,
// clear and end codes, the table widening when its next free code reaches 2^width.
std::vector<uint8_t> lzw_decode(const std::vector<uint8_t>& data, int min_code_size) {
  const int clear = 1 << min_code_size, end = clear + 1;
  std::vector<std::vector<uint8_t>> table;
  auto reset = [&] {
    table.assign(static_cast<size_t>(end + 1), {});
    for (int i = 0; i < clear; ++i) table[static_cast<size_t>(i)] = {static_cast<uint8_t>(i)};
  };
  reset();
  int width = min_code_size + 1;
  size_t bitpos = 0;
  auto read = [&]() -> int {
    int code = 0;
    for (int i = 0; i < width; ++i, ++bitpos) {
      if (bitpos / 8 >= data.size()) throw std::runtime_error("LZW data ended without an end code");
      code |= ((data[bitpos / 8] >> (bitpos % 8)) & 1) << i;
    }
    return code;
  };
  std::vector<uint8_t> out;
  int prev = -1;
  while (true) {
    const int code = read();
    if (code == clear) {
      reset();
      width = min_code_size + 1;
      prev = -1;
      continue;
    }
    if (code == end) break;
    std::vector<uint8_t> entry;
    if (code < static_cast<int>(table.size())) {
      entry = table[static_cast<size_t>(code)];
      if (entry.empty()) throw std::runtime_error("LZW code of a reserved slot");
    } else if (code == static_cast<int>(table.size()) && prev >= 0) {
      entry = table[static_cast<size_t>(prev)];
      entry.push_back(entry[0]);
    } else {
      throw std::runtime_error("LZW code " + std::to_string(code) + " beyond the table");
    }
    out.insert(out.end(), entry.begin(), entry.end());
    if (prev >= 0 && table.size() < 4096) {
      auto added = table[static_cast<size_t>(prev)];
      added.push_back(entry[0]);
      table.push_back(added);
      if (static_cast<int>(table.size()) == (1 << width) && width < 12) ++width;
    }
    prev = code;
  }
  return out;
}

struct GifFile {
  int width = 0, height = 0;
  std::vector<uint8_t> palette;
  bool loops_forever = false;
  std::vector<int> delays;
  std::vector<std::vector<uint8_t>> frames;  // palette indices
};

GifFile parse_gif(const std::string& bytes) {
  GifFile g;
  size_t pos = 0;
  auto u8 = [&]() -> int {
    if (pos >= bytes.size()) throw std::runtime_error("GIF truncated");
    return static_cast<uint8_t>(bytes[pos++]);
  };
  auto u16 = [&]() { const int lo = u8(); return lo | (u8() << 8); };
  if (bytes.compare(0, 6, "GIF89a") != 0) throw std::runtime_error("no GIF89a header");
  pos = 6;
  g.width = u16();
  g.height = u16();
  const int packed = u8();
  u8();
  u8();
  if (!(packed & 0x80)) throw std::runtime_error("no global colour table");
  const int colours = 2 << (packed & 7);
  for (int i = 0; i < 3 * colours; ++i) g.palette.push_back(static_cast<uint8_t>(u8()));
  auto sub_blocks = [&]() {
    std::vector<uint8_t> data;
    for (int n = u8(); n != 0; n = u8())
      for (int i = 0; i < n; ++i) data.push_back(static_cast<uint8_t>(u8()));
    return data;
  };
  while (true) {
    const int kind = u8();
    if (kind == 0x3B) break;
    if (kind == 0x21) {
      const int label = u8();
      if (label == 0xF9) {
        if (u8() != 4) throw std::runtime_error("bad graphic control block");
        u8();
        g.delays.push_back(u16());
        u8();
        if (u8() != 0) throw std::runtime_error("graphic control block not terminated");
      } else if (label == 0xFF) {
        const int n = u8();
        const std::string app = bytes.substr(pos, static_cast<size_t>(n));
        pos += static_cast<size_t>(n);
        const auto data = sub_blocks();
        if (app == "NETSCAPE2.0" && data.size() == 3 && data[0] == 1 && data[1] == 0 && data[2] == 0) g.loops_forever = true;
      } else {
        sub_blocks();
      }
    } else if (kind == 0x2C) {
      const int left = u16(), top = u16(), w = u16(), h = u16(), flags = u8();
      if (left != 0 || top != 0 || w != g.width || h != g.height || flags != 0) throw std::runtime_error("unexpected image descriptor");
      const int min_code = u8();
      auto pixels = lzw_decode(sub_blocks(), min_code);
      if (pixels.size() != static_cast<size_t>(w * h)) throw std::runtime_error("frame has " + std::to_string(pixels.size()) + " pixels");
      g.frames.push_back(std::move(pixels));
    } else {
      throw std::runtime_error("unknown GIF block " + std::to_string(kind));
    }
  }
  if (pos != bytes.size()) throw std::runtime_error("bytes after the trailer");
  return g;
}

TEST(GifLzw, RoundTripsThroughAnIndependentDecoder) {
  std::mt19937 rng(7);
  // Random data overflows the 4096-entry table many times (clear codes mid-stream).
  std::vector<uint8_t> noise(200000);
  for (auto& v : noise) v = static_cast<uint8_t>(rng() & 0xff);
  EXPECT_EQ(lzw_decode(detail::gif_lzw_encode(noise.data(), noise.size(), 8), 8), noise);
  // Long runs build long strings (and the "code not yet in the table" case).
  std::vector<uint8_t> runs(100000, 3);
  for (size_t i = 50000; i < runs.size(); ++i) runs[i] = static_cast<uint8_t>((i / 1000) % 4);
  const auto packed = detail::gif_lzw_encode(runs.data(), runs.size(), 8);
  EXPECT_LT(packed.size(), runs.size() / 20);  // it does compress
  EXPECT_EQ(lzw_decode(packed, 8), runs);
  // Small alphabets with a smaller minimum code size; a single symbol; nothing.
  std::vector<uint8_t> small(5000);
  for (auto& v : small) v = static_cast<uint8_t>(rng() % 4);
  EXPECT_EQ(lzw_decode(detail::gif_lzw_encode(small.data(), small.size(), 2), 2), small);
  const std::vector<uint8_t> one = {9};
  EXPECT_EQ(lzw_decode(detail::gif_lzw_encode(one.data(), 1, 8), 8), one);
  EXPECT_TRUE(lzw_decode(detail::gif_lzw_encode(nullptr, 0, 8), 8).empty());
  test::expect_error([&] { detail::gif_lzw_encode(small.data(), small.size(), 1); }, ErrorCode::kInvalidArgument, "min_code_size");
  const std::vector<uint8_t> too_big = {0, 5};
  test::expect_error([&] { detail::gif_lzw_encode(too_big.data(), 2, 2); }, ErrorCode::kInvalidArgument, "index 5 >= 4");
}

TEST(GifPalette, CubeAndGreysMapToThemselves) {
  const auto p = detail::gif_palette();
  ASSERT_EQ(p.size(), 768u);
  for (int i = 0; i < 256; ++i) {
    const auto idx = detail::gif_palette_index(p[3 * i], p[3 * i + 1], p[3 * i + 2]);
    // The cube's own greys (0, 51, ...) may sit on a grey entry of the same value: compare colours.
    EXPECT_EQ(p[3 * idx], p[3 * i]) << i;
    EXPECT_EQ(p[3 * idx + 1], p[3 * i + 1]) << i;
    EXPECT_EQ(p[3 * idx + 2], p[3 * i + 2]) << i;
  }
  // A near-grey colour takes a grey entry, which is closer than the cube's 51-level steps.
  const auto g = detail::gif_palette_index(100, 100, 100);
  EXPECT_GE(g, 216);
  EXPECT_LE(std::abs(p[3 * g] - 100), 4);
}

// A [-1, 1] video whose pixels are palette colours, so the GIF keeps them exactly.
at::Tensor palette_video(int64_t frames, int64_t h, int64_t w) {
  const auto p = detail::gif_palette();
  auto idx = at::randint(0, 256, {frames, h, w}, at::make_generator<at::CPUGeneratorImpl>(3), at::kLong);
  auto pal = at::tensor(std::vector<int64_t>(p.begin(), p.end()), at::kLong).view({256, 3});
  auto rgb = pal.index_select(0, idx.flatten()).view({frames, h, w, 3}).to(at::kFloat);  // [F, H, W, 3] in 0..255
  return (rgb / 255.0 * 2.0 - 1.0).permute({0, 3, 1, 2}).contiguous();
}

TEST(VideoGif, WritesADecodableLoopingAnimation) {
  test::TempDir dir;
  auto video = palette_video(3, 17, 23);
  const auto path = dir.file("v.gif");
  write_gif(path, video, 24);
  const auto g = parse_gif(test::read_bytes(path));
  EXPECT_EQ(g.width, 23);
  EXPECT_EQ(g.height, 17);
  EXPECT_TRUE(g.loops_forever);
  ASSERT_EQ(g.frames.size(), 3u);
  EXPECT_EQ(g.delays, (std::vector<int>{4, 4, 4}));  // round(100 / 24) hundredths
  const auto expected = video_to_uint8(video);        // [F, H, W, 3]
  for (size_t f = 0; f < 3; ++f) {
    auto decoded = at::empty({17, 23, 3}, at::kByte);
    auto* d = decoded.data_ptr<uint8_t>();
    for (size_t i = 0; i < g.frames[f].size(); ++i)
      for (int c = 0; c < 3; ++c) d[3 * i + c] = g.palette[3 * g.frames[f][i] + c];
    EXPECT_TRUE(at::equal(decoded, expected[static_cast<int64_t>(f)])) << "frame " << f;
  }
  // Arbitrary colours land on their nearest palette colour: within half a cube step per channel.
  auto smooth = at::linspace(-1, 1, 3 * 8 * 8).view({1, 3, 8, 8});
  write_gif(path, smooth, 2.5);
  const auto g2 = parse_gif(test::read_bytes(path));
  ASSERT_EQ(g2.frames.size(), 1u);
  EXPECT_EQ(g2.delays, (std::vector<int>{40}));
  const auto px = video_to_uint8(smooth).view({-1, 3});
  for (int64_t i = 0; i < px.size(0); ++i)
    for (int c = 0; c < 3; ++c) EXPECT_LE(std::abs(int(g2.palette[3 * g2.frames[0][i] + c]) - px[i][c].item<int>()), 26);
  // No temporary file is left beside it.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(VideoPngFrames, WritesOneFilePerFrame) {
  test::TempDir dir;
  auto video = at::rand({3, 3, 5, 7}) * 2 - 1;
  const auto out = dir.file("frames");
  write_video(out, video, 24);
  const auto expected = video_to_uint8(video);
  for (int i = 0; i < 3; ++i) {
    const auto file = out + "/frame_000" + std::to_string(i) + ".png";
    ASSERT_TRUE(fs::exists(file)) << file;
    EXPECT_TRUE(at::equal(read_png(file), expected[i]));
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(out), fs::directory_iterator()), 3);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);  // no temporary folder
}

TEST(Video, FormatsAndErrors) {
  EXPECT_EQ(video_format_of("a/b.mp4"), VideoFormat::kMP4);
  EXPECT_EQ(video_format_of("B.GIF"), VideoFormat::kGIF);
  EXPECT_EQ(video_format_of("out/frames"), VideoFormat::kPNGFrames);
  test::expect_error([] { video_format_of("x.avi"); }, ErrorCode::kInvalidArgument, "'.avi' is not a supported format");
  test::TempDir dir;
  test::expect_error([&] { write_gif(dir.file("a.gif"), at::zeros({2, 4, 4}), 24); }, ErrorCode::kInvalidArgument,
                     "[F, 3, H, W]");
  test::expect_error([&] { write_gif(dir.file("a.gif"), at::zeros({2, 1, 4, 4}), 24); }, ErrorCode::kInvalidArgument,
                     "found Float [2, 1, 4, 4]");
  test::expect_error([&] { write_gif(dir.file("a.gif"), at::zeros({2, 3, 4, 4}), 0); }, ErrorCode::kInvalidArgument,
                     "fps must be > 0");
  test::expect_error([&] { write_gif(dir.file("missing/a.gif"), at::zeros({1, 3, 4, 4}), 24); }, ErrorCode::kIo,
                     "missing/a.gif");
  EXPECT_TRUE(fs::is_empty(dir.path()));
  if (!mp4_supported()) {
    test::expect_error([&] { write_video(dir.file("a.mp4"), at::zeros({1, 3, 4, 4}), 24); }, ErrorCode::kUnsupported,
                       "ditcache was built without FFmpeg");
    EXPECT_FALSE(fs::exists(dir.file("a.mp4")));
  }
}

#ifdef DITCACHE_WITH_FFMPEG
TEST(VideoMp4, WritesAnH264FileFFmpegReadsBack) {
  ASSERT_TRUE(mp4_supported());
  test::TempDir dir;
  const auto path = dir.file("v.mp4");
  auto video = at::rand({9, 3, 33, 47}) * 2 - 1;  // odd sizes are padded to even
  write_video(path, video, 24);
  const auto bytes = test::read_bytes(path);
  ASSERT_GT(bytes.size(), 12u);
  EXPECT_EQ(bytes.substr(4, 4), "ftyp");
  AVFormatContext* format = nullptr;
  ASSERT_EQ(avformat_open_input(&format, path.c_str(), nullptr, nullptr), 0);
  ASSERT_GE(avformat_find_stream_info(format, nullptr), 0);
  const int stream = av_find_best_stream(format, AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  ASSERT_GE(stream, 0);
  EXPECT_EQ(format->streams[stream]->codecpar->codec_id, AV_CODEC_ID_H264);
  EXPECT_EQ(format->streams[stream]->codecpar->width, 48);
  EXPECT_EQ(format->streams[stream]->codecpar->height, 34);
  int packets = 0;
  AVPacket* packet = av_packet_alloc();
  while (av_read_frame(format, packet) >= 0) {
    packets += packet->stream_index == stream;
    av_packet_unref(packet);
  }
  av_packet_free(&packet);
  avformat_close_input(&format);
  EXPECT_EQ(packets, 9);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
  // A failed write leaves nothing behind.
  test::expect_error([&] { write_mp4(dir.file("missing/v.mp4"), video, 24); }, ErrorCode::kIo, "missing/v.mp4");
  EXPECT_FALSE(fs::exists(dir.file("missing")));
}
#endif

}  // namespace
}  // namespace ditcache
