// rlmed/imaging/io/tiff.hpp — single-channel TIFF images and multi-page stacks via libtiff.
//
// Design decisions:
//  * libtiff runs over an in-memory stream (TIFFClientOpen) for reading and writing, so reads
//    are bounded by the file's bytes and writes stay atomic (encode, then write_file_atomic).
//  * libtiff's error and warning handlers are process-global; rlmed installs thread-local
//    capture while it calls libtiff and restores nothing else, so a libtiff error becomes an
//    rlmed::Error carrying libtiff's message instead of a line on stderr.
//  * Grayscale (one sample per pixel) of 8/16/32-bit unsigned or signed integers and 32/64-bit
//    floats, stripped or tiled; pages of equal size and type form a 3D stack [pages, H, W].
#pragma once

#include <tiffio.h>

#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "rlmed/core/file.hpp"
#include "rlmed/imaging/io/raw_array.hpp"

namespace rlmed::imaging {

inline constexpr std::uint32_t kMaxTiffSide = 1u << 16;
inline constexpr std::size_t kMaxTiffPages = 1 << 14;

namespace detail {

struct TiffMemory {
  std::vector<std::byte> data;
  std::size_t pos = 0;
};

inline thread_local std::string tiff_last_error;

extern "C" inline void rlmed_tiff_error(const char* module, const char* fmt, va_list ap) {
  char buf[512];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  tiff_last_error = std::string(module ? module : "libtiff") + ": " + buf;
}
extern "C" inline void rlmed_tiff_warning(const char*, const char*, va_list) {}

extern "C" inline tmsize_t rlmed_tiff_read(thandle_t h, void* buf, tmsize_t n) {
  auto* m = static_cast<TiffMemory*>(h);
  const std::size_t avail = m->pos < m->data.size() ? m->data.size() - m->pos : 0;
  const std::size_t k = std::min<std::size_t>(avail, static_cast<std::size_t>(n));
  if (k) std::memcpy(buf, m->data.data() + m->pos, k);
  m->pos += k;
  return static_cast<tmsize_t>(k);
}
extern "C" inline tmsize_t rlmed_tiff_write(thandle_t h, void* buf, tmsize_t n) {
  auto* m = static_cast<TiffMemory*>(h);
  const auto k = static_cast<std::size_t>(n);
  if (m->pos + k > m->data.size()) m->data.resize(m->pos + k);
  if (k) std::memcpy(m->data.data() + m->pos, buf, k);
  m->pos += k;
  return n;
}
extern "C" inline toff_t rlmed_tiff_seek(thandle_t h, toff_t off, int whence) {
  auto* m = static_cast<TiffMemory*>(h);
  std::int64_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? std::int64_t(m->pos) : std::int64_t(m->data.size());
  const std::int64_t p = base + std::int64_t(off);
  if (p < 0 || p > (std::int64_t(1) << 40)) return static_cast<toff_t>(-1);
  m->pos = std::size_t(p);
  return static_cast<toff_t>(p);
}
extern "C" inline int rlmed_tiff_close(thandle_t) { return 0; }
extern "C" inline toff_t rlmed_tiff_size(thandle_t h) { return static_cast<TiffMemory*>(h)->data.size(); }
extern "C" inline int rlmed_tiff_map(thandle_t, void**, toff_t*) { return 0; }
extern "C" inline void rlmed_tiff_unmap(thandle_t, void*, toff_t) {}

// libtiff's handlers are process-wide: one mutex serialises rlmed's libtiff calls so that no
// thread swaps them under another's feet.
inline std::mutex& tiff_mutex() {
  static std::mutex m;
  return m;
}

// Installs rlmed's handlers (and holds the libtiff mutex) for the lifetime of the guard.
struct TiffHandlerGuard {
  std::lock_guard<std::mutex> lock{tiff_mutex()};
  TIFFErrorHandler old_error, old_warning;
  TiffHandlerGuard() : old_error(TIFFSetErrorHandler(rlmed_tiff_error)), old_warning(TIFFSetWarningHandler(rlmed_tiff_warning)) {
    tiff_last_error.clear();
  }
  ~TiffHandlerGuard() {
    TIFFSetErrorHandler(old_error);
    TIFFSetWarningHandler(old_warning);
  }
};

struct TiffCloser {
  void operator()(TIFF* t) const noexcept { if (t) TIFFClose(t); }
};

inline ElementType tiff_element(std::uint16_t format, std::uint16_t bits, const std::string& source) {
  if (format == SAMPLEFORMAT_UINT) {
    if (bits == 8) return ElementType::u8;
    if (bits == 16) return ElementType::u16;
    if (bits == 32) return ElementType::u32;
  } else if (format == SAMPLEFORMAT_INT) {
    if (bits == 8) return ElementType::i8;
    if (bits == 16) return ElementType::i16;
    if (bits == 32) return ElementType::i32;
  } else if (format == SAMPLEFORMAT_IEEEFP) {
    if (bits == 32) return ElementType::f32;
    if (bits == 64) return ElementType::f64;
  }
  RLMED_THROW("'", source, "': TIFF sample format ", format, " with ", bits,
              " bits per sample is not supported (8/16/32-bit integers, 32/64-bit floats)");
}

inline std::string tiff_error_or(const char* fallback) {
  return tiff_last_error.empty() ? std::string(fallback) : tiff_last_error;
}

}  // namespace detail

/// Parses all pages of a TIFF in memory into a RawArray of shape [pages, H, W].
inline RawArray parse_tiff(std::vector<std::byte> file, const std::string& source) {
  detail::TiffHandlerGuard guard;
  detail::TiffMemory mem{std::move(file), 0};
  std::unique_ptr<TIFF, detail::TiffCloser> tif(TIFFClientOpen(source.c_str(), "rm", &mem, detail::rlmed_tiff_read,
      detail::rlmed_tiff_write, detail::rlmed_tiff_seek, detail::rlmed_tiff_close, detail::rlmed_tiff_size,
      detail::rlmed_tiff_map, detail::rlmed_tiff_unmap));
  if (!tif) RLMED_THROW("'", source, "' is not a readable TIFF: ", detail::tiff_error_or("bad header"));
  RawArray out;
  std::uint32_t width = 0, height = 0;
  std::size_t pages = 0;
  do {
    std::uint32_t w = 0, h = 0;
    std::uint16_t spp = 1, bits = 1, format = SAMPLEFORMAT_UINT, planar = PLANARCONFIG_CONTIG;
    if (!TIFFGetField(tif.get(), TIFFTAG_IMAGEWIDTH, &w) || !TIFFGetField(tif.get(), TIFFTAG_IMAGELENGTH, &h))
      RLMED_THROW("'", source, "': TIFF page ", pages, " has no image size");
    TIFFGetFieldDefaulted(tif.get(), TIFFTAG_SAMPLESPERPIXEL, &spp);
    TIFFGetFieldDefaulted(tif.get(), TIFFTAG_BITSPERSAMPLE, &bits);
    TIFFGetFieldDefaulted(tif.get(), TIFFTAG_SAMPLEFORMAT, &format);
    TIFFGetFieldDefaulted(tif.get(), TIFFTAG_PLANARCONFIG, &planar);
    RLMED_CHECK(w >= 1 && h >= 1 && w <= kMaxTiffSide && h <= kMaxTiffSide, "'", source, "': TIFF page size ", w, "x", h,
                " out of range");
    RLMED_CHECK(spp == 1, "'", source, "': TIFF page ", pages, " has ", spp, " samples per pixel; only single-channel images are read");
    const ElementType et = detail::tiff_element(format, bits, source);
    if (pages == 0) {
      width = w; height = h; out.type = et;
    } else {
      RLMED_CHECK(w == width && h == height && et == out.type, "'", source, "': TIFF page ", pages,
                  " differs in size or type from page 0 (", w, "x", h, " vs ", width, "x", height, ")");
    }
    RLMED_CHECK(++pages <= kMaxTiffPages, "'", source, "' has more than ", kMaxTiffPages, " pages");
    const std::size_t es = element_size(et);
    const std::size_t page_bytes = std::size_t(w) * h * es;
    RLMED_CHECK(page_bytes * pages <= std::max<std::size_t>(mem.data.size() * 1024, 1 << 26),
                "'", source, "' declares far more pixel data than its size can hold");
    const std::size_t base = out.data.size();
    out.data.resize(base + page_bytes);
    std::byte* page = out.data.data() + base;
    if (TIFFIsTiled(tif.get())) {
      std::uint32_t tw = 0, th = 0;
      TIFFGetField(tif.get(), TIFFTAG_TILEWIDTH, &tw);
      TIFFGetField(tif.get(), TIFFTAG_TILELENGTH, &th);
      // Tiles are multiples of 16 that cover the page: never more than 16 beyond its sides.
      RLMED_CHECK(tw >= 1 && th >= 1 && tw <= w + 16 && th <= h + 16, "'", source, "': TIFF tile size ", tw, "x", th,
                  " does not fit page size ", w, "x", h);
      std::vector<std::byte> tile(std::size_t(tw) * th * es);
      for (std::uint32_t y = 0; y < h; y += th)
        for (std::uint32_t x = 0; x < w; x += tw) {
          const tmsize_t got = TIFFReadEncodedTile(tif.get(), TIFFComputeTile(tif.get(), x, y, 0, 0), tile.data(), tmsize_t(tile.size()));
          if (got < 0) RLMED_THROW("'", source, "': corrupt TIFF tile at (", x, ", ", y, "): ", detail::tiff_error_or("read failed"));
          const std::uint32_t cw = std::min(tw, w - x), chh = std::min(th, h - y);
          for (std::uint32_t r = 0; r < chh; ++r)
            std::memcpy(page + ((std::size_t(y) + r) * w + x) * es, tile.data() + std::size_t(r) * tw * es, std::size_t(cw) * es);
        }
    } else {
      const tstrip_t strips = TIFFNumberOfStrips(tif.get());
      std::size_t done = 0;
      for (tstrip_t s = 0; s < strips && done < page_bytes; ++s) {
        const tmsize_t got = TIFFReadEncodedStrip(tif.get(), s, page + done, tmsize_t(page_bytes - done));
        if (got < 0) RLMED_THROW("'", source, "': corrupt TIFF strip ", s, ": ", detail::tiff_error_or("read failed"));
        done += std::size_t(got);
      }
      RLMED_CHECK(done == page_bytes, "'", source, "' is truncated: TIFF page ", pages - 1, " decoded ", done, " of ", page_bytes, " bytes");
    }
  } while (TIFFReadDirectory(tif.get()));
  out.shape = {index_t(pages), index_t(height), index_t(width)};
  return out;
}

/// A single-page TIFF as [H, W]; a multi-page file is an error here (use read_tiff_stack).
template <class T>
Tensor<T, 2> read_tiff(const std::filesystem::path& path) {
  const auto a = parse_tiff(read_file_bytes(path, std::size_t(1) << 34), path.string());
  RLMED_CHECK(a.shape[0] == 1, "'", path.string(), "' has ", a.shape[0], " pages; use read_tiff_stack for stacks");
  return to_tensor<T, 2>(a, path.string());
}

/// All pages as [pages, H, W].
template <class T>
Tensor<T, 3> read_tiff_stack(const std::filesystem::path& path) {
  return to_tensor<T, 3>(parse_tiff(read_file_bytes(path, std::size_t(1) << 34), path.string()), path.string());
}

/// Writes [pages, H, W] (pages ≥ 1) as a deflate-compressed multi-page TIFF, atomically.
template <class T>
void write_tiff_stack(const std::filesystem::path& path, TensorView<const T, 3> stack) {
  const ElementType et = element_type_of<T>();
  RLMED_CHECK(et != ElementType::boolean && et != ElementType::u64 && et != ElementType::i64, "write_tiff: element type ",
              element_name(et), " is not writable as TIFF");
  RLMED_CHECK(stack.extent(0) >= 1 && stack.extent(1) >= 1 && stack.extent(2) >= 1 && stack.extent(1) <= kMaxTiffSide &&
                  stack.extent(2) <= kMaxTiffSide, "write_tiff: shape ", stack.shape(), " cannot be written");
  detail::TiffHandlerGuard guard;
  detail::TiffMemory mem;
  {
    std::unique_ptr<TIFF, detail::TiffCloser> tif(TIFFClientOpen(path.c_str(), "w", &mem, detail::rlmed_tiff_read,
        detail::rlmed_tiff_write, detail::rlmed_tiff_seek, detail::rlmed_tiff_close, detail::rlmed_tiff_size,
        detail::rlmed_tiff_map, detail::rlmed_tiff_unmap));
    if (!tif) RLMED_THROW("cannot start TIFF '", path.string(), "': ", detail::tiff_error_or("libtiff refused"));
    const auto h = std::uint32_t(stack.extent(1)), w = std::uint32_t(stack.extent(2));
    const std::uint16_t format = std::is_floating_point_v<T> ? SAMPLEFORMAT_IEEEFP : std::is_signed_v<T> ? SAMPLEFORMAT_INT : SAMPLEFORMAT_UINT;
    for (index_t p = 0; p < stack.extent(0); ++p) {
      TIFFSetField(tif.get(), TIFFTAG_IMAGEWIDTH, w);
      TIFFSetField(tif.get(), TIFFTAG_IMAGELENGTH, h);
      TIFFSetField(tif.get(), TIFFTAG_SAMPLESPERPIXEL, std::uint16_t(1));
      TIFFSetField(tif.get(), TIFFTAG_BITSPERSAMPLE, std::uint16_t(8 * sizeof(T)));
      TIFFSetField(tif.get(), TIFFTAG_SAMPLEFORMAT, format);
      TIFFSetField(tif.get(), TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
      TIFFSetField(tif.get(), TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
      TIFFSetField(tif.get(), TIFFTAG_COMPRESSION, COMPRESSION_ADOBE_DEFLATE);
      TIFFSetField(tif.get(), TIFFTAG_ROWSPERSTRIP, h);
      if (stack.extent(0) > 1) {
        TIFFSetField(tif.get(), TIFFTAG_SUBFILETYPE, FILETYPE_PAGE);
        TIFFSetField(tif.get(), TIFFTAG_PAGENUMBER, std::uint16_t(p), std::uint16_t(stack.extent(0)));
      }
      auto* src = const_cast<T*>(stack.data() + p * index_t(h) * index_t(w));
      if (TIFFWriteEncodedStrip(tif.get(), 0, src, tmsize_t(std::size_t(h) * w * sizeof(T))) < 0)
        RLMED_THROW("writing TIFF '", path.string(), "' failed: ", detail::tiff_error_or("strip write failed"));
      if (!TIFFWriteDirectory(tif.get())) RLMED_THROW("writing TIFF '", path.string(), "' failed: ", detail::tiff_error_or("directory"));
    }
  }
  write_file_atomic(path, mem.data);
}

template <class T>
void write_tiff(const std::filesystem::path& path, TensorView<const T, 2> image) {
  write_tiff_stack<T>(path, TensorView<const T, 3>(image.data(), Shape<3>{1, image.extent(0), image.extent(1)}));
}

}  // namespace rlmed::imaging
