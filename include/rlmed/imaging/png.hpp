// rlmed/imaging/png.hpp — PNG reading and writing through libpng's simplified API.
//
// Design: files are read whole into memory and decoded from there, so a truncated or corrupt
// file is an rlmed::Error from libpng's own checks (never a crash), and dimensions are bounded
// before any pixel buffer is allocated. 8-bit PNGs (gray, palette, RGB(A)) convert to the
// requested 8-bit layout; 16-bit files are read as uint16 as stored (libpng's simplified API
// would otherwise gamma-encode them), and reading one at the wrong depth is an error.
// Writes go through write_file_atomic.
#pragma once

#include <png.h>

#include <cstring>
#include <filesystem>

#include "rlmed/core/file.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed::imaging {

/// Largest side and pixel count accepted (guard against absurd headers before allocation).
inline constexpr index_t kMaxPngSide = 1 << 16;
inline constexpr std::uint64_t kMaxPngPixels = std::uint64_t(1) << 28;

namespace detail {
inline void decode_png(const std::filesystem::path& path, std::uint32_t format, const std::vector<std::byte>& bytes,
                       png_image& image, std::vector<std::uint8_t>& pixels) {
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size()))
    RLMED_THROW("'", path.string(), "' is not a readable PNG: ", image.message);
  // libpng's simplified API treats 16-bit samples as linear light and would gamma-encode them
  // into 8 bits; rlmed never changes intensities silently, so the bit depth must match.
  const bool file_16bit = (image.format & PNG_FORMAT_FLAG_LINEAR) != 0;
  const bool want_16bit = (format & PNG_FORMAT_FLAG_LINEAR) != 0;
  if (file_16bit != want_16bit) {
    png_image_free(&image);
    RLMED_THROW("'", path.string(), "' is a ", file_16bit ? 16 : 8, "-bit PNG; read it with ",
                file_16bit ? "read_png_gray16" : "read_png_gray / read_png_rgb");
  }
  if (std::uint64_t(image.width) * image.height > kMaxPngPixels) {
    png_image_free(&image);
    RLMED_THROW("'", path.string(), "' declares ", image.width, "x", image.height, " pixels; at most ", kMaxPngPixels,
                " are accepted");
  }
  if (image.width == 0 || image.height == 0 || image.width > kMaxPngSide || image.height > kMaxPngSide) {
    png_image_free(&image);
    RLMED_THROW("'", path.string(), "' has PNG size ", image.width, "x", image.height, "; expected sides in [1, ",
                kMaxPngSide, "]");
  }
  image.format = format;
  pixels.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, pixels.data(), 0, nullptr)) {
    const std::string msg = image.message;
    png_image_free(&image);
    RLMED_THROW("'", path.string(), "' could not be decoded as PNG: ", msg);
  }
}
}  // namespace detail

/// An 8-bit PNG (gray, palette, RGB(A)) as 8-bit grayscale [H, W] (colour converted to
/// luminance by libpng); 16-bit files are an error (see read_png_gray16).
inline Tensor<std::uint8_t, 2> read_png_gray(const std::filesystem::path& path) {
  const auto bytes = read_file_bytes(path, std::size_t(1) << 32);
  png_image image;
  std::vector<std::uint8_t> pixels;
  detail::decode_png(path, PNG_FORMAT_GRAY, bytes, image, pixels);
  auto out = Tensor<std::uint8_t, 2>::uninitialized(Shape<2>{index_t(image.height), index_t(image.width)});
  std::memcpy(out.data(), pixels.data(), pixels.size());
  return out;
}

/// A 16-bit grayscale PNG as [H, W] uint16, values as stored (8-bit files are an error here).
inline Tensor<std::uint16_t, 2> read_png_gray16(const std::filesystem::path& path) {
  const auto bytes = read_file_bytes(path, std::size_t(1) << 32);
  png_image image;
  std::vector<std::uint8_t> pixels;
  detail::decode_png(path, PNG_FORMAT_LINEAR_Y, bytes, image, pixels);
  auto out = Tensor<std::uint16_t, 2>::uninitialized(Shape<2>{index_t(image.height), index_t(image.width)});
  std::memcpy(out.data(), pixels.data(), pixels.size());
  return out;
}

/// True when the PNG stores 16-bit samples (read it with read_png_gray16).
inline bool png_is_16bit(const std::filesystem::path& path) {
  const auto bytes = read_file_bytes(path, std::size_t(1) << 32);
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size()))
    RLMED_THROW("'", path.string(), "' is not a readable PNG: ", image.message);
  const bool linear = (image.format & PNG_FORMAT_FLAG_LINEAR) != 0;
  png_image_free(&image);
  return linear;
}

/// Any 8-bit PNG as 8-bit RGB [H, W, 3].
inline Tensor<std::uint8_t, 3> read_png_rgb(const std::filesystem::path& path) {
  const auto bytes = read_file_bytes(path, std::size_t(1) << 32);
  png_image image;
  std::vector<std::uint8_t> pixels;
  detail::decode_png(path, PNG_FORMAT_RGB, bytes, image, pixels);
  auto out = Tensor<std::uint8_t, 3>::uninitialized(Shape<3>{index_t(image.height), index_t(image.width), 3});
  std::memcpy(out.data(), pixels.data(), pixels.size());
  return out;
}

namespace detail {
inline void encode_png(const std::filesystem::path& path, const std::uint8_t* data, index_t h, index_t w,
                       std::uint32_t format) {
  RLMED_CHECK(h >= 1 && w >= 1 && h <= kMaxPngSide && w <= kMaxPngSide, "PNG of size ", h, "x", w, " cannot be written");
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(w);
  image.height = static_cast<png_uint_32>(h);
  image.format = format;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, data, 0, nullptr))
    RLMED_THROW("encoding PNG '", path.string(), "' failed: ", image.message);
  std::vector<std::byte> bytes(size);
  if (!png_image_write_to_memory(&image, bytes.data(), &size, 0, data, 0, nullptr))
    RLMED_THROW("encoding PNG '", path.string(), "' failed: ", image.message);
  bytes.resize(size);
  write_file_atomic(path, bytes);
}
}  // namespace detail

/// Writes an 8-bit grayscale image [H, W] atomically.
inline void write_png(const std::filesystem::path& path, TensorView<const std::uint8_t, 2> gray) {
  detail::encode_png(path, gray.data(), gray.extent(0), gray.extent(1), PNG_FORMAT_GRAY);
}
/// Writes a 16-bit grayscale image [H, W] atomically (values as given).
inline void write_png(const std::filesystem::path& path, TensorView<const std::uint16_t, 2> gray) {
  detail::encode_png(path, reinterpret_cast<const std::uint8_t*>(gray.data()), gray.extent(0), gray.extent(1),
                     PNG_FORMAT_LINEAR_Y);
}
/// Writes an 8-bit RGB image [H, W, 3] atomically.
inline void write_png(const std::filesystem::path& path, TensorView<const std::uint8_t, 3> rgb) {
  RLMED_CHECK(rgb.extent(2) == 3, "write_png: RGB image must be [H, W, 3], found ", rgb.shape());
  detail::encode_png(path, rgb.data(), rgb.extent(0), rgb.extent(1), PNG_FORMAT_RGB);
}

}  // namespace rlmed::imaging
