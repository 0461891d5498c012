// rlmed/imaging/io/idx.hpp — MNIST IDX files (images and labels), plain or gzip-compressed.
//
// Design decisions: the magic number's type byte and rank are validated, extents are
// big-endian and bounded, and a gzip file is inflated with exactly the size its header
// promises as ceiling (the header is peeked first). Only the unsigned-byte type (0x08) that
// MNIST uses is decoded; other IDX types are a clear error.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "rlmed/core/file.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/io/compression.hpp"
#include "rlmed/imaging/io/raw_array.hpp"

namespace rlmed::imaging {

/// Parses an IDX file image (gzip or raw) into a RawArray of uint8.
inline RawArray parse_idx(std::span<const std::byte> file, const std::string& source) {
  std::vector<std::byte> inflated;
  std::span<const std::byte> bytes = file;
  auto header_info = [&](std::span<const std::byte> b, std::vector<index_t>& shape) {
    ByteCursor c(b, source);
    const auto magic = c.get<std::uint32_t>(false);
    RLMED_CHECK((magic >> 16) == 0, "'", source, "' is not an IDX file (magic 0x", std::hex, magic, ")");
    const auto type = (magic >> 8) & 0xff, rank = magic & 0xff;
    RLMED_CHECK(type == 0x08, "'", source, "': IDX element type 0x", std::hex, type, " is not supported (expected 0x08, unsigned byte)");
    RLMED_CHECK(rank >= 1 && rank <= 4, "'", source, "': IDX rank ", rank, " out of range 1..4");
    shape.clear();
    for (std::uint32_t i = 0; i < rank; ++i) {
      const auto e = c.get<std::uint32_t>(false);
      RLMED_CHECK(e >= 1 && e <= (1u << 24), "'", source, "': IDX extent ", e, " out of range");
      shape.push_back(index_t(e));
    }
    return c.position();
  };
  std::vector<index_t> shape;
  if (is_gzip(file)) {
    const auto head = inflate_bounded(file, Framing::gzip, 1 << 16, source, 24);
    const std::size_t hb = header_info(head, shape);
    const index_t n = checked_element_count(shape, source);
    inflated = inflate_bounded(file, Framing::gzip, hb + std::size_t(n), source);
    bytes = inflated;
  }
  const std::size_t hb = header_info(bytes, shape);
  const index_t n = checked_element_count(shape, source);
  RLMED_CHECK(bytes.size() - hb == std::size_t(n), "'", source, "': IDX header promises ", n, " bytes of data (shape ", shape,
              "), file holds ", bytes.size() - hb);
  return make_raw_array(ElementType::u8, shape, bytes.subspan(hb), true, source);
}

/// MNIST images [N, 28, 28] (or any IDX uint8 file of rank 3).
inline Tensor<std::uint8_t, 3> read_idx_images(const std::filesystem::path& path) {
  const auto bytes = read_file_bytes(path);
  return to_tensor<std::uint8_t, 3>(parse_idx(bytes, path.string()), path.string());
}

/// MNIST labels [N].
inline Tensor<std::uint8_t, 1> read_idx_labels(const std::filesystem::path& path) {
  const auto bytes = read_file_bytes(path);
  return to_tensor<std::uint8_t, 1>(parse_idx(bytes, path.string()), path.string());
}

}  // namespace rlmed::imaging
