// rlmed/imaging/io/compression.hpp — bounded zlib inflate/deflate and a checked byte cursor.
//
// Design decisions:
//  * Every reader decodes from memory. Decompression always has an output ceiling that the
//    caller derives from a validated header (at most kMaxArrayElements elements) or a sane
//    limit, and the output buffer grows only as data is actually produced (at most twice what
//    was produced), so a stream that inflates beyond what its header promises is an
//    rlmed::Error, and a short stream costs only what it holds.
//  * One inflate routine handles the three framings the formats use: gzip (.nii.gz, .gz IDX),
//    zlib (MetaImage CompressedData) and raw deflate (zip members of .npz).
//  * ByteCursor never reads past its end: every get checks and throws, naming the source.
#pragma once

#include <zlib.h>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "rlmed/core/error.hpp"

namespace rlmed::imaging {

enum class Framing { gzip, zlib, raw };

/// True when the bytes start with the gzip magic number.
inline bool is_gzip(std::span<const std::byte> bytes) noexcept {
  return bytes.size() >= 2 && bytes[0] == std::byte{0x1f} && bytes[1] == std::byte{0x8b};
}

/// Inflates `in` (whole stream; concatenated gzip members are followed) into at most `max_out`
/// bytes. With `stop_after` > 0, stops as soon as that many bytes were produced (header peeks).
inline std::vector<std::byte> inflate_bounded(std::span<const std::byte> in, Framing framing, std::size_t max_out,
                                              const std::string& source, std::size_t stop_after = 0) {
  z_stream zs{};
  const int window = framing == Framing::gzip ? 16 + MAX_WBITS : framing == Framing::zlib ? MAX_WBITS : -MAX_WBITS;
  RLMED_CHECK(inflateInit2(&zs, window) == Z_OK, "zlib could not initialise a decompressor for '", source, "'");
  // One byte more than allowed: producing it proves the stream is too long.
  const std::size_t limit = max_out + 1;
  std::vector<std::byte> out(std::min<std::size_t>(limit, std::max<std::size_t>(in.size() * 4, 1 << 16)));
  std::size_t produced = 0, consumed = 0;
  try {
    for (;;) {
      if (produced == out.size()) out.resize(std::min(limit, out.size() * 2));
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data() + consumed));
      zs.avail_in = static_cast<uInt>(std::min<std::size_t>(in.size() - consumed, 1u << 30));
      zs.next_out = reinterpret_cast<Bytef*>(out.data() + produced);
      zs.avail_out = static_cast<uInt>(std::min<std::size_t>(out.size() - produced, 1u << 30));
      const uInt in_before = zs.avail_in, out_before = zs.avail_out;
      const int rc = inflate(&zs, Z_NO_FLUSH);
      consumed += in_before - zs.avail_in;
      produced += out_before - zs.avail_out;
      if (stop_after && produced >= stop_after) break;
      RLMED_CHECK(produced <= max_out, "'", source, "' decompresses to more than the expected ", max_out, " bytes");
      if (rc == Z_STREAM_END) {
        // gzip files may hold several members back to back (pigz, appended chunks).
        if (framing == Framing::gzip && consumed + 2 <= in.size() && is_gzip(in.subspan(consumed))) {
          RLMED_CHECK(inflateReset(&zs) == Z_OK, "zlib reset failed on '", source, "'");
          continue;
        }
        break;
      }
      if (rc == Z_BUF_ERROR && consumed == in.size())
        RLMED_THROW("'", source, "' is truncated: the compressed stream ends after ", produced, " bytes");
      if (rc != Z_OK && rc != Z_BUF_ERROR)
        RLMED_THROW("'", source, "' is not a valid compressed stream: ", zs.msg ? zs.msg : "zlib error ", rc);
      if (rc == Z_BUF_ERROR && zs.avail_out != 0 && in_before == zs.avail_in)
        RLMED_THROW("'", source, "' is corrupt: the decompressor made no progress after ", produced, " bytes");
    }
  } catch (...) {
    inflateEnd(&zs);
    throw;
  }
  inflateEnd(&zs);
  out.resize(produced);
  return out;
}

/// Deflates `in` with the given framing (level 1..9; 6 is zlib's default trade-off).
inline std::vector<std::byte> deflate_bytes(std::span<const std::byte> in, Framing framing, int level = 6) {
  z_stream zs{};
  const int window = framing == Framing::gzip ? 16 + MAX_WBITS : framing == Framing::zlib ? MAX_WBITS : -MAX_WBITS;
  RLMED_CHECK(deflateInit2(&zs, level, Z_DEFLATED, window, 8, Z_DEFAULT_STRATEGY) == Z_OK,
              "zlib could not initialise a compressor at level ", level);
  std::vector<std::byte> out(deflateBound(&zs, static_cast<uLong>(in.size())) + 64);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  const std::size_t n = zs.total_out;
  deflateEnd(&zs);
  RLMED_CHECK(rc == Z_STREAM_END, "zlib compression failed (code ", rc, ")");
  out.resize(n);
  return out;
}

/// CRC-32 as zip and gzip use it.
inline std::uint32_t crc32_of(std::span<const std::byte> bytes) noexcept {
  uLong c = crc32(0L, Z_NULL, 0);
  std::size_t done = 0;
  while (done < bytes.size()) {
    const auto n = static_cast<uInt>(std::min<std::size_t>(bytes.size() - done, 1u << 30));
    c = crc32(c, reinterpret_cast<const Bytef*>(bytes.data() + done), n);
    done += n;
  }
  return static_cast<std::uint32_t>(c);
}

template <class T>
T byteswap_value(T v) noexcept {
  static_assert(std::is_trivially_copyable_v<T>);
  unsigned char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  for (std::size_t i = 0; i < sizeof(T) / 2; ++i) std::swap(b[i], b[sizeof(T) - 1 - i]);
  std::memcpy(&v, b, sizeof(T));
  return v;
}

/// A bounds-checked reader over a byte span with explicit endianness.
class ByteCursor {
 public:
  ByteCursor(std::span<const std::byte> bytes, std::string source) : bytes_(bytes), source_(std::move(source)) {}

  [[nodiscard]] std::size_t position() const noexcept { return pos_; }
  [[nodiscard]] std::size_t remaining() const noexcept { return bytes_.size() - pos_; }
  [[nodiscard]] std::size_t size() const noexcept { return bytes_.size(); }
  [[nodiscard]] const std::string& source() const noexcept { return source_; }

  void seek(std::size_t pos) {
    RLMED_CHECK(pos <= bytes_.size(), "'", source_, "' is truncated: offset ", pos, " is past its end (", bytes_.size(),
                " bytes)");
    pos_ = pos;
  }
  void skip(std::size_t n) {
    RLMED_CHECK(n <= remaining(), "'", source_, "' is truncated: needs ", n, " more bytes at offset ", pos_, ", has ",
                remaining());
    pos_ += n;
  }
  std::span<const std::byte> take(std::size_t n) {
    RLMED_CHECK(n <= remaining(), "'", source_, "' is truncated: needs ", n, " bytes at offset ", pos_, ", has ",
                remaining());
    auto s = bytes_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  template <class T>
  T get(bool little_endian = true) {
    auto s = take(sizeof(T));
    T v;
    std::memcpy(&v, s.data(), sizeof(T));
    if (little_endian != (std::endian::native == std::endian::little)) v = byteswap_value(v);
    return v;
  }

 private:
  std::span<const std::byte> bytes_;
  std::string source_;
  std::size_t pos_ = 0;
};

}  // namespace rlmed::imaging
