// rlmed/imaging/io/jpeg.hpp — JPEG reading and writing through libjpeg(-turbo).
//
// Design decisions: decoding runs from memory with an error manager that turns libjpeg's
// fatal errors into rlmed::Error (via longjmp back into a frame that owns no C++ objects with
// destructors), sizes are bounded before the pixel buffer is allocated, and any JPEG is
// converted to 8-bit grayscale or RGB by libjpeg itself. Writes are atomic.
#pragma once

#include <csetjmp>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <jpeglib.h>

#include "rlmed/core/file.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed::imaging {

inline constexpr index_t kMaxJpegSide = 1 << 15;
inline constexpr std::uint64_t kMaxJpegPixels = std::uint64_t(1) << 28;

namespace detail {

struct JpegErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

extern "C" inline void rlmed_jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}
extern "C" inline void rlmed_jpeg_silence(j_common_ptr, int) {}

// Decodes into `pixels` (rows × cols × channels). Returns an empty string on success, else the
// libjpeg message. Plain C data only in this frame, because of longjmp.
inline std::string decode_jpeg(const std::vector<std::byte>& bytes, J_COLOR_SPACE space, int& rows, int& cols,
                               int& channels, std::vector<std::uint8_t>& pixels) {
  jpeg_decompress_struct cinfo;
  JpegErrorManager jerr;
  cinfo.err = jpeg_std_error(&jerr.pub);
  jerr.pub.error_exit = rlmed_jpeg_error_exit;
  jerr.pub.emit_message = rlmed_jpeg_silence;
  jerr.message[0] = '\0';
  if (setjmp(jerr.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return jerr.message[0] ? jerr.message : "libjpeg error";
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  if (jpeg_read_header(&cinfo, TRUE) != JPEG_HEADER_OK) {
    jpeg_destroy_decompress(&cinfo);
    return "no JPEG header";
  }
  if (cinfo.image_width == 0 || cinfo.image_height == 0 || cinfo.image_width > kMaxJpegSide || cinfo.image_height > kMaxJpegSide ||
      std::uint64_t(cinfo.image_width) * cinfo.image_height > kMaxJpegPixels) {
    jpeg_destroy_decompress(&cinfo);
    return "image size out of range";
  }
  cinfo.out_color_space = space;
  jpeg_start_decompress(&cinfo);
  rows = int(cinfo.output_height);
  cols = int(cinfo.output_width);
  channels = cinfo.output_components;
  pixels.resize(std::size_t(rows) * std::size_t(cols) * std::size_t(channels));
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = pixels.data() + std::size_t(cinfo.output_scanline) * std::size_t(cols) * std::size_t(channels);
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  // A stream that ends early is reported by libjpeg as a warning; treat it as corruption.
  const long warnings = jerr.pub.num_warnings;
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (warnings > 0) return "corrupt or truncated JPEG data";
  return {};
}

inline std::string encode_jpeg(const std::uint8_t* data, int rows, int cols, int channels, int quality,
                               std::vector<std::byte>& out) {
  jpeg_compress_struct cinfo;
  JpegErrorManager jerr;
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  cinfo.err = jpeg_std_error(&jerr.pub);
  jerr.pub.error_exit = rlmed_jpeg_error_exit;
  jerr.pub.emit_message = rlmed_jpeg_silence;
  if (setjmp(jerr.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::free(buffer);
    return jerr.message;
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = JDIMENSION(cols);
  cinfo.image_height = JDIMENSION(rows);
  cinfo.input_components = channels;
  cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<std::uint8_t*>(data) + std::size_t(cinfo.next_scanline) * std::size_t(cols) * std::size_t(channels);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  out.assign(reinterpret_cast<std::byte*>(buffer), reinterpret_cast<std::byte*>(buffer) + size);
  std::free(buffer);
  return {};
}

}  // namespace detail

/// Any JPEG as 8-bit grayscale [H, W].
inline Tensor<std::uint8_t, 2> read_jpeg_gray(const std::filesystem::path& path) {
  const auto bytes = read_file_bytes(path, std::size_t(1) << 30);
  int rows = 0, cols = 0, ch = 0;
  std::vector<std::uint8_t> px;
  const auto err = detail::decode_jpeg(bytes, JCS_GRAYSCALE, rows, cols, ch, px);
  if (!err.empty()) RLMED_THROW("'", path.string(), "' could not be decoded as JPEG: ", err);
  RLMED_CHECK(ch == 1, "'", path.string(), "': libjpeg produced ", ch, " channels for grayscale output");
  auto out = Tensor<std::uint8_t, 2>::uninitialized(Shape<2>{rows, cols});
  std::memcpy(out.data(), px.data(), px.size());
  return out;
}

/// Any JPEG as 8-bit RGB [H, W, 3].
inline Tensor<std::uint8_t, 3> read_jpeg_rgb(const std::filesystem::path& path) {
  const auto bytes = read_file_bytes(path, std::size_t(1) << 30);
  int rows = 0, cols = 0, ch = 0;
  std::vector<std::uint8_t> px;
  const auto err = detail::decode_jpeg(bytes, JCS_RGB, rows, cols, ch, px);
  if (!err.empty()) RLMED_THROW("'", path.string(), "' could not be decoded as JPEG: ", err);
  auto out = Tensor<std::uint8_t, 3>::uninitialized(Shape<3>{rows, cols, 3});
  std::memcpy(out.data(), px.data(), px.size());
  return out;
}

/// Writes 8-bit grayscale [H, W] as JPEG (lossy; quality 1..100) atomically.
inline void write_jpeg(const std::filesystem::path& path, TensorView<const std::uint8_t, 2> gray, int quality = 95) {
  RLMED_CHECK(quality >= 1 && quality <= 100, "JPEG quality must be in [1, 100], found ", quality);
  RLMED_CHECK(gray.extent(0) >= 1 && gray.extent(1) >= 1 && gray.extent(0) <= kMaxJpegSide && gray.extent(1) <= kMaxJpegSide,
              "JPEG of shape ", gray.shape(), " cannot be written");
  std::vector<std::byte> out;
  const auto err = detail::encode_jpeg(gray.data(), int(gray.extent(0)), int(gray.extent(1)), 1, quality, out);
  if (!err.empty()) RLMED_THROW("encoding JPEG '", path.string(), "' failed: ", err);
  write_file_atomic(path, out);
}

}  // namespace rlmed::imaging
