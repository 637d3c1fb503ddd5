#include "ditcache/image.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <png.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include "ditcache/error.h"

namespace ditcache {

at::Tensor to_uint8_images(const at::Tensor& x) {
  if (!x.defined() || x.dim() != 4 || !at::isFloatingType(x.scalar_type())) {
    throw Error(ErrorCode::kInvalidArgument,
                "to_uint8_images: expected a floating-point [B, C, H, W] tensor, found " +
                    (x.defined() ? std::to_string(x.dim()) + "-d " + std::string(c10::toString(x.scalar_type())) : "undefined"));
  }
  // torchvision: clamp to the value range, shift and scale to [0, 1], then *255 + 0.5, clamp,
  // truncate. NaN pixels become mid-gray rather than undefined bytes.
  auto v = at::nan_to_num(x.to(at::kFloat), 0.0).clamp(-1.0, 1.0).add(1.0).div(2.0);
  v = v.mul(255.0).add(0.5).clamp(0.0, 255.0).to(at::kByte);           // [B, C, H, W]
  return v.permute({0, 2, 3, 1}).to(at::kCPU).contiguous();            // [B, H, W, C]
}

at::Tensor make_grid(const at::Tensor& images, int64_t nrow, int64_t padding, uint8_t pad_value) {
  if (!images.defined() || images.dim() != 4 || images.scalar_type() != at::kByte || images.size(0) < 1) {
    throw Error(ErrorCode::kInvalidArgument, "make_grid: expected uint8 images [B, H, W, C] with B >= 1");
  }
  if (nrow < 1 || padding < 0) {
    throw Error(ErrorCode::kInvalidArgument, "make_grid: nrow must be >= 1 and padding >= 0, found nrow " +
                                                 std::to_string(nrow) + ", padding " + std::to_string(padding));
  }
  const int64_t b = images.size(0), h = images.size(1), w = images.size(2), c = images.size(3);
  if (b == 1) return images[0].contiguous();  // torchvision returns a lone image unpadded
  const int64_t cols = std::min(nrow, b);
  const int64_t rows = (b + cols - 1) / cols;
  auto grid = at::full({rows * (h + padding) + padding, cols * (w + padding) + padding, c}, pad_value,
                       images.options());  // [H', W', C]
  for (int64_t k = 0; k < b; ++k) {
    const int64_t y = k / cols, xx = k % cols;
    grid.narrow(0, y * (h + padding) + padding, h).narrow(1, xx * (w + padding) + padding, w).copy_(images[k]);
  }
  return grid;
}

namespace {

// libpng reports errors by longjmp. The functions that call libpng keep only trivially
// destructible locals, so jumping out of them is well defined; C++ objects live in the callers.
struct PngStatus {
  char message[256];
};

void png_error_handler(png_structp png, png_const_charp message) {
  auto* status = static_cast<PngStatus*>(png_get_error_ptr(png));
  std::snprintf(status->message, sizeof(status->message), "%s", message ? message : "libpng error");
  png_longjmp(png, 1);
}

void png_warning_handler(png_structp, png_const_charp) {}  // the library never prints

bool write_png_stream(FILE* f, const uint8_t* data, png_uint_32 width, png_uint_32 height, int channels,
                      PngStatus* status) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, status, png_error_handler, png_warning_handler);
  if (png == nullptr) {
    std::snprintf(status->message, sizeof(status->message), "cannot create the libpng writer");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_write_struct(&png, nullptr);
    std::snprintf(status->message, sizeof(status->message), "cannot create the libpng info");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_init_io(png, f);
  const int color = channels == 1 ? PNG_COLOR_TYPE_GRAY : channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGB_ALPHA;
  png_set_IHDR(png, info, width, height, 8, color, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  const size_t stride = static_cast<size_t>(width) * static_cast<size_t>(channels);
  for (png_uint_32 y = 0; y < height; ++y) png_write_row(png, data + y * stride);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

/// Where read_png_stream puts the pixels: allocated by a C++ callback outside the setjmp frame.
struct PngTarget {
  at::Tensor tensor;
};

uint8_t* allocate_target(PngTarget* target, png_uint_32 height, png_uint_32 width, int channels) noexcept {
  try {
    target->tensor = at::empty({static_cast<int64_t>(height), static_cast<int64_t>(width), channels},
                               at::TensorOptions().dtype(at::kByte));  // [H, W, C]
    return target->tensor.data_ptr<uint8_t>();
  } catch (...) {
    return nullptr;
  }
}

bool read_png_stream(FILE* f, PngTarget* target, PngStatus* status) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, status, png_error_handler, png_warning_handler);
  if (png == nullptr) {
    std::snprintf(status->message, sizeof(status->message), "cannot create the libpng reader");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(status->message, sizeof(status->message), "cannot create the libpng info");
    return false;
  }
  png_bytep* volatile rows = nullptr;
  if (setjmp(png_jmpbuf(png))) {
    std::free(rows);
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_init_io(png, f);
  png_read_info(png, info);
  const int bit_depth = png_get_bit_depth(png, info);
  const int color = png_get_color_type(png, info);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (bit_depth == 16) png_set_strip_16(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const png_uint_32 width = png_get_image_width(png, info);
  const png_uint_32 height = png_get_image_height(png, info);
  const int channels = png_get_channels(png, info);
  uint8_t* data = allocate_target(target, height, width, channels);
  if (data == nullptr) png_error(png, "out of memory");
  rows = static_cast<png_bytep*>(std::malloc(sizeof(png_bytep) * height));
  if (rows == nullptr) png_error(png, "out of memory");
  const size_t stride = static_cast<size_t>(width) * static_cast<size_t>(channels);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = data + y * stride;
  png_read_image(png, rows);
  png_read_end(png, nullptr);
  std::free(rows);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

std::atomic<unsigned> temp_counter{0};

}  // namespace

void write_png(const std::string& path, const at::Tensor& image) {
  if (!image.defined() || image.dim() != 3 || image.scalar_type() != at::kByte) {
    throw Error(ErrorCode::kInvalidArgument, "write_png '" + path + "': expected a uint8 [H, W, C] tensor");
  }
  const int64_t h = image.size(0), w = image.size(1), c = image.size(2);
  if (c != 1 && c != 3 && c != 4) {
    throw Error(ErrorCode::kInvalidArgument,
                "write_png '" + path + "': expected 1, 3 or 4 channels, found " + std::to_string(c));
  }
  if (h < 1 || w < 1 || h > PNG_UINT_31_MAX || w > PNG_UINT_31_MAX) {
    throw Error(ErrorCode::kInvalidArgument, "write_png '" + path + "': bad image size " + std::to_string(h) + "x" +
                                                 std::to_string(w));
  }
  const auto pixels = image.to(at::kCPU).contiguous();

  const std::string temp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(temp_counter++);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) {
    throw Error(ErrorCode::kIo, "write_png '" + path + "': cannot create the file (" + std::strerror(errno) + ")");
  }
  FILE* f = ::fdopen(fd, "wb");
  if (f == nullptr) {
    const int err = errno;
    ::close(fd);
    ::unlink(temp.c_str());
    throw Error(ErrorCode::kIo, "write_png '" + path + "': " + std::strerror(err));
  }
  PngStatus status{};
  const bool ok = write_png_stream(f, pixels.data_ptr<uint8_t>(), static_cast<png_uint_32>(w),
                                   static_cast<png_uint_32>(h), static_cast<int>(c), &status);
  const bool flushed = std::fflush(f) == 0 && !std::ferror(f);
  const int flush_errno = errno;
  const bool closed = std::fclose(f) == 0;
  if (!ok || !flushed || !closed) {
    ::unlink(temp.c_str());
    const std::string why = !ok ? std::string(status.message) : std::string(std::strerror(flush_errno));
    throw Error(ErrorCode::kIo, "write_png '" + path + "': write failed (" + why + ")");
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    throw Error(ErrorCode::kIo, "write_png '" + path + "': cannot rename the temporary file into place (" +
                                    std::strerror(err) + ")");
  }
}

at::Tensor read_png(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    const int err = errno;
    throw Error(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
                "read_png '" + path + "': cannot open the file (" + std::strerror(err) + ")");
  }
  unsigned char signature[8] = {0};
  const size_t got = std::fread(signature, 1, sizeof(signature), f);
  if (got != sizeof(signature) || png_sig_cmp(signature, 0, sizeof(signature)) != 0) {
    std::fclose(f);
    throw Error(ErrorCode::kFormat, "read_png '" + path + "': not a PNG file (bad signature)");
  }
  std::rewind(f);
  PngTarget target;
  PngStatus status{};
  const bool ok = read_png_stream(f, &target, &status);
  std::fclose(f);
  if (!ok) throw Error(ErrorCode::kFormat, "read_png '" + path + "': " + status.message);
  return target.tensor;
}

}  // namespace ditcache
