// H.264 MP4 output through FFmpeg's libraries (video.h), when the build found them.
#include <cmath>
#include <filesystem>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/error.h"
#include "ditcache/video.h"
#include "video/video_util.h"

#ifdef DITCACHE_WITH_FFMPEG
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}
#endif

namespace ditcache {

bool mp4_supported() noexcept {
#ifdef DITCACHE_WITH_FFMPEG
  return true;
#else
  return false;
#endif
}

#ifdef DITCACHE_WITH_FFMPEG
namespace {

std::string av_message(int code) {
  char text[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(code, text, sizeof(text));
  return text;
}

// Everything the encoder holds, released in any case.
struct Encoder {
  AVFormatContext* format = nullptr;
  AVCodecContext* codec = nullptr;
  SwsContext* sws = nullptr;
  AVFrame* frame = nullptr;
  AVPacket* packet = nullptr;
  bool file_open = false;
  ~Encoder() {
    if (file_open) avio_closep(&format->pb);
    av_packet_free(&packet);
    av_frame_free(&frame);
    sws_freeContext(sws);
    avcodec_free_context(&codec);
    avformat_free_context(format);
  }
};

}  // namespace
#endif

void write_mp4(const std::string& path, const at::Tensor& frames, double fps) {
#ifndef DITCACHE_WITH_FFMPEG
  (void)frames;
  (void)fps;
  throw Error(ErrorCode::kUnsupported, fmt::format("cannot write '{}': ditcache was built without FFmpeg (install the "
                                                   "libavformat/libavcodec/libswscale/libavutil development packages and "
                                                   "reconfigure), write .gif or a folder of PNG frames instead",
                                                   path));
#else
  if (!(fps > 0) || !std::isfinite(fps)) throw Error(ErrorCode::kInvalidArgument, fmt::format("write_mp4: fps must be > 0, found {}", fps));
  auto pixels = video_to_uint8(frames);  // [F, H, W, 3]
  // yuv420p needs even sizes: replicate the last row / column.
  if (pixels.size(1) % 2) pixels = at::cat({pixels, pixels.narrow(1, pixels.size(1) - 1, 1)}, 1);
  if (pixels.size(2) % 2) pixels = at::cat({pixels, pixels.narrow(2, pixels.size(2) - 1, 1)}, 2);
  pixels = pixels.contiguous();
  const int count = static_cast<int>(pixels.size(0)), height = static_cast<int>(pixels.size(1)),
            width = static_cast<int>(pixels.size(2));
  const std::string tmp = detail::temp_path_for(path);
  auto fail = [&](const std::string& what, int code) {
    return Error(ErrorCode::kIo, fmt::format("cannot write '{}': {}{}", path, what, code < 0 ? ": " + av_message(code) : ""));
  };
  try {
    Encoder e;
    const AVCodec* codec = avcodec_find_encoder(AV_CODEC_ID_H264);
    if (codec == nullptr) {
      throw Error(ErrorCode::kUnsupported, fmt::format("cannot write '{}': the FFmpeg libraries have no H.264 encoder", path));
    }
    int rc = avformat_alloc_output_context2(&e.format, nullptr, "mp4", tmp.c_str());
    if (rc < 0 || e.format == nullptr) throw fail("cannot create the MP4 muxer", rc);
    e.codec = avcodec_alloc_context3(codec);
    if (e.codec == nullptr) throw fail("cannot allocate the H.264 encoder", 0);
    const AVRational rate = av_d2q(fps, 100000);
    e.codec->width = width;
    e.codec->height = height;
    e.codec->pix_fmt = AV_PIX_FMT_YUV420P;
    e.codec->time_base = av_inv_q(rate);
    e.codec->framerate = rate;
    e.codec->gop_size = 12;
    if (e.format->oformat->flags & AVFMT_GLOBALHEADER) e.codec->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    av_opt_set(e.codec->priv_data, "crf", "18", 0);  // libx264: visually near-lossless; ignored elsewhere
    av_opt_set(e.codec->priv_data, "preset", "medium", 0);
    if ((rc = avcodec_open2(e.codec, codec, nullptr)) < 0) throw fail("cannot open the H.264 encoder", rc);
    AVStream* stream = avformat_new_stream(e.format, nullptr);
    if (stream == nullptr) throw fail("cannot add the video stream", 0);
    stream->time_base = e.codec->time_base;
    stream->avg_frame_rate = rate;
    if ((rc = avcodec_parameters_from_context(stream->codecpar, e.codec)) < 0) throw fail("cannot set the stream parameters", rc);
    if ((rc = avio_open(&e.format->pb, tmp.c_str(), AVIO_FLAG_WRITE)) < 0) throw fail("cannot open the output file", rc);
    e.file_open = true;
    if ((rc = avformat_write_header(e.format, nullptr)) < 0) throw fail("cannot write the MP4 header", rc);

    e.sws = sws_getContext(width, height, AV_PIX_FMT_RGB24, width, height, AV_PIX_FMT_YUV420P, SWS_BICUBIC, nullptr, nullptr, nullptr);
    e.frame = av_frame_alloc();
    e.packet = av_packet_alloc();
    if (e.sws == nullptr || e.frame == nullptr || e.packet == nullptr) throw fail("cannot allocate the frame converter", 0);
    e.frame->format = AV_PIX_FMT_YUV420P;
    e.frame->width = width;
    e.frame->height = height;
    if ((rc = av_frame_get_buffer(e.frame, 0)) < 0) throw fail("cannot allocate a frame", rc);

    // Sends one frame (nullptr: flush) and writes every packet the encoder has ready.
    auto encode = [&](AVFrame* frame) {
      int r = avcodec_send_frame(e.codec, frame);
      if (r < 0) throw fail("H.264 encoding failed", r);
      while ((r = avcodec_receive_packet(e.codec, e.packet)) >= 0) {
        av_packet_rescale_ts(e.packet, e.codec->time_base, stream->time_base);
        e.packet->stream_index = stream->index;
        const int w = av_interleaved_write_frame(e.format, e.packet);  // takes the packet's data
        if (w < 0) throw fail("cannot write a video packet", w);
      }
      if (r != AVERROR(EAGAIN) && r != AVERROR_EOF) throw fail("H.264 encoding failed", r);
    };
    for (int i = 0; i < count; ++i) {
      if ((rc = av_frame_make_writable(e.frame)) < 0) throw fail("cannot reuse the frame buffer", rc);
      const uint8_t* src[1] = {pixels[i].data_ptr<uint8_t>()};
      const int stride[1] = {3 * width};
      sws_scale(e.sws, src, stride, 0, height, e.frame->data, e.frame->linesize);
      e.frame->pts = i;
      encode(e.frame);
    }
    encode(nullptr);
    if ((rc = av_write_trailer(e.format)) < 0) throw fail("cannot finish the MP4 file", rc);
    e.file_open = false;
    if ((rc = avio_closep(&e.format->pb)) < 0) throw fail("cannot close the output file", rc);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
  detail::commit_temp(tmp, path);
#endif
}

}  // namespace ditcache
