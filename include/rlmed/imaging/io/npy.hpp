// rlmed/imaging/io/npy.hpp — NumPy .npy arrays and .npz archives (read and write).
//
// Design decisions:
//  * .npy: the header dictionary is parsed strictly ('descr', 'fortran_order', 'shape' and
//    nothing else), so a corrupt header is an error rather than a guess. Fortran-ordered arrays
//    are transposed to row-major on read. Big-endian descriptors are byte-swapped.
//  * .npz is a zip archive. We read the central directory (with ZIP64 extensions, which NumPy
//    writes), then each member's local header; members are stored or deflated, and their CRC-32
//    is verified. Decompressed sizes are bounded by the sizes the directory declares.
//  * Writers produce version-1.0 .npy (little-endian, C order) and .npz with stored or deflated
//    members; every write is atomic.
#pragma once

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "rlmed/core/file.hpp"
#include "rlmed/imaging/io/compression.hpp"
#include "rlmed/imaging/io/raw_array.hpp"

namespace rlmed::imaging {

inline constexpr std::size_t kMaxNpyHeaderBytes = 1 << 20;

namespace detail {

inline ElementType npy_element_type(std::string_view descr, bool& little_endian, const std::string& source) {
  RLMED_CHECK(descr.size() >= 3, "'", source, "': unsupported .npy dtype '", descr, "'");
  const char order = descr[0];
  RLMED_CHECK(order == '<' || order == '>' || order == '|' || order == '=', "'", source, "': unsupported byte order in dtype '",
              descr, "'");
  little_endian = order != '>';
  const std::string_view kind = descr.substr(1);
  if (kind == "b1") return ElementType::boolean;
  if (kind == "u1") return ElementType::u8;
  if (kind == "i1") return ElementType::i8;
  if (kind == "u2") return ElementType::u16;
  if (kind == "i2") return ElementType::i16;
  if (kind == "u4") return ElementType::u32;
  if (kind == "i4") return ElementType::i32;
  if (kind == "u8") return ElementType::u64;
  if (kind == "i8") return ElementType::i64;
  if (kind == "f4") return ElementType::f32;
  if (kind == "f8") return ElementType::f64;
  RLMED_THROW("'", source, "': .npy dtype '", descr, "' is not supported (expected bool, [u]int8..64, float32/64)");
}

inline const char* npy_descr(ElementType t) noexcept {
  switch (t) {
    case ElementType::boolean: return "|b1";
    case ElementType::u8: return "|u1";
    case ElementType::i8: return "|i1";
    case ElementType::u16: return "<u2";
    case ElementType::i16: return "<i2";
    case ElementType::u32: return "<u4";
    case ElementType::i32: return "<i4";
    case ElementType::u64: return "<u8";
    case ElementType::i64: return "<i8";
    case ElementType::f32: return "<f4";
    case ElementType::f64: return "<f8";
  }
  return "";
}

// A tiny strict parser of the Python-literal dictionary NumPy writes.
class NpyHeaderParser {
 public:
  NpyHeaderParser(std::string_view text, const std::string& source) : s_(text), source_(source) {}

  void parse(std::string& descr, bool& fortran, std::vector<index_t>& shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    expect('{');
    for (;;) {
      ws();
      if (peek() == '}') { ++i_; break; }
      const std::string key = string_literal();
      expect(':');
      ws();
      if (key == "descr") {
        descr = string_literal();
        have_descr = true;
      } else if (key == "fortran_order") {
        fortran = boolean();
        have_fortran = true;
      } else if (key == "shape") {
        shape = tuple();
        have_shape = true;
      } else {
        fail("unknown key '" + key + "'");
      }
      ws();
      if (peek() == ',') { ++i_; continue; }
      expect('}');
      break;
    }
    if (!have_descr || !have_fortran || !have_shape) fail("missing 'descr', 'fortran_order' or 'shape'");
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    RLMED_THROW("'", source_, "' has a malformed .npy header (", why, " at character ", i_, "): ", std::string(s_.substr(0, 120)));
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void ws() { while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n')) ++i_; }
  void expect(char c) {
    ws();
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string string_literal() {
    ws();
    const char q = peek();
    if (q != '\'' && q != '"') fail("expected a string");
    ++i_;
    const std::size_t b = i_;
    while (i_ < s_.size() && s_[i_] != q) ++i_;
    if (i_ >= s_.size()) fail("unterminated string");
    return std::string(s_.substr(b, i_++ - b));
  }
  bool boolean() {
    if (s_.substr(i_, 4) == "True") { i_ += 4; return true; }
    if (s_.substr(i_, 5) == "False") { i_ += 5; return false; }
    fail("expected True or False");
  }
  std::vector<index_t> tuple() {
    std::vector<index_t> v;
    expect('(');
    for (;;) {
      ws();
      if (peek() == ')') { ++i_; break; }
      if (!std::isdigit(static_cast<unsigned char>(peek()))) fail("expected a non-negative integer extent");
      index_t x = 0;
      while (std::isdigit(static_cast<unsigned char>(peek()))) {
        if (x > (index_t(1) << 40)) fail("extent too large");
        x = x * 10 + (s_[i_++] - '0');
      }
      if (peek() == 'L') ++i_;
      v.push_back(x);
      if (v.size() > 32) fail("more than 32 dimensions");
      ws();
      if (peek() == ',') { ++i_; continue; }
      expect(')');
      break;
    }
    return v;
  }
  std::string_view s_;
  const std::string& source_;
  std::size_t i_ = 0;
};

// Reverses the axis order of a row-major array (Fortran order on disk → C order).
inline void transpose_all_axes(RawArray& a) {
  const std::size_t rank = a.shape.size();
  if (rank < 2) return;
  const std::size_t es = element_size(a.type);
  const index_t n = a.numel();
  std::vector<std::byte> out(a.data.size());
  // Disk (Fortran) index of C element (i0..ik): offset = i0 + n0*(i1 + n1*(...)).
  std::vector<index_t> idx(rank, 0);
  for (index_t c = 0; c < n; ++c) {
    index_t f = 0;
    for (std::size_t ax = rank; ax-- > 0;) f = f * a.shape[ax] + idx[ax];
    std::memcpy(out.data() + std::size_t(c) * es, a.data.data() + std::size_t(f) * es, es);
    for (std::size_t ax = rank; ax-- > 0;) {
      if (++idx[ax] < a.shape[ax]) break;
      idx[ax] = 0;
    }
  }
  a.data.swap(out);
}

}  // namespace detail

/// Parses a whole .npy file image.
inline RawArray parse_npy(std::span<const std::byte> bytes, const std::string& source) {
  ByteCursor c(bytes, source);
  const auto magic = c.take(6);
  static constexpr unsigned char kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  RLMED_CHECK(std::memcmp(magic.data(), kMagic, 6) == 0, "'", source, "' is not a .npy file (bad magic)");
  const auto major = std::to_integer<int>(c.take(1)[0]);
  (void)c.take(1);
  std::size_t header_len;
  if (major == 1) header_len = c.get<std::uint16_t>();
  else if (major == 2 || major == 3) header_len = c.get<std::uint32_t>();
  else RLMED_THROW("'", source, "' has .npy version ", major, "; expected 1, 2 or 3");
  RLMED_CHECK(header_len <= kMaxNpyHeaderBytes, "'", source, "' declares a .npy header of ", header_len, " bytes");
  const auto h = c.take(header_len);
  const std::string_view text(reinterpret_cast<const char*>(h.data()), h.size());
  std::string descr;
  bool fortran = false;
  std::vector<index_t> shape;
  detail::NpyHeaderParser(text, source).parse(descr, fortran, shape);
  bool little = true;
  const ElementType type = detail::npy_element_type(descr, little, source);
  const index_t n = checked_element_count(shape, source, index_t(1) << 40);
  const std::size_t need = std::size_t(n) * element_size(type);
  RLMED_CHECK(c.remaining() == need, "'", source, "' holds ", c.remaining(), " bytes of array data; its header (shape ",
              shape, ", dtype ", descr, ") needs ", need);
  RawArray a = make_raw_array(type, std::move(shape), c.take(need), little, source);
  if (fortran) detail::transpose_all_axes(a);
  return a;
}

inline RawArray read_npy(const std::filesystem::path& path) {
  const auto bytes = read_file_bytes(path);
  return parse_npy(bytes, path.string());
}

/// The bytes of a version-1.0 .npy file holding `a` (C order, little-endian).
inline std::vector<std::byte> npy_bytes(const RawArray& a) {
  std::string header = std::string("{'descr': '") + detail::npy_descr(a.type) + "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < a.shape.size(); ++i) header += std::to_string(a.shape[i]) + (a.shape.size() == 1 || i + 1 < a.shape.size() ? "," : "");
  header += "), }";
  // Pad with spaces so the data starts on a 64-byte boundary; newline-terminated.
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  RLMED_CHECK(header.size() < 65536, "array header too long for .npy version 1.0");
  std::vector<std::byte> out(10 + header.size());
  static constexpr unsigned char kMagic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  std::memcpy(out.data(), kMagic, 8);
  const auto hl = static_cast<std::uint16_t>(header.size());
  out[8] = std::byte(hl & 0xff);
  out[9] = std::byte(hl >> 8);
  std::memcpy(out.data() + 10, header.data(), header.size());
  const std::size_t es = element_size(a.type);
  const std::size_t off = out.size();
  out.insert(out.end(), a.data.begin(), a.data.end());
  if (es > 1 && std::endian::native != std::endian::little)
    for (std::size_t i = off; i < out.size(); i += es) std::reverse(out.begin() + std::ptrdiff_t(i), out.begin() + std::ptrdiff_t(i + es));
  return out;
}

/// A RawArray holding a copy of a host tensor.
template <class T, std::size_t Rank>
RawArray raw_array_of(TensorView<const T, Rank> t) {
  RawArray a;
  a.type = element_type_of<T>();
  for (std::size_t i = 0; i < Rank; ++i) a.shape.push_back(t.extent(i));
  a.data.resize(t.bytes());
  if (t.size()) std::memcpy(a.data.data(), t.data(), t.bytes());
  return a;
}

template <class T, std::size_t Rank>
void write_npy(const std::filesystem::path& path, TensorView<const T, Rank> t) {
  write_file_atomic(path, npy_bytes(raw_array_of<T, Rank>(t)));
}

/// Reads a .npy file as Tensor<T, Rank> (lossless conversions only).
template <class T, std::size_t Rank>
Tensor<T, Rank> read_npy_tensor(const std::filesystem::path& path) {
  return to_tensor<T, Rank>(read_npy(path), path.string());
}

// ------------------------------------------------------------------------------------------
// .npz (zip)

/// All arrays of an .npz archive, by name (without the ".npy" suffix).
class NpzArchive {
 public:
  static NpzArchive open(const std::filesystem::path& path) { return from_bytes(read_file_bytes(path), path.string()); }

  static NpzArchive from_bytes(const std::vector<std::byte>& bytes, const std::string& source,
                               std::size_t max_member_bytes = std::size_t(1) << 34) {
    NpzArchive archive;
    archive.source_ = source;
    ByteCursor c(bytes, source);
    // End of central directory: the last 22..(22+65535) bytes.
    RLMED_CHECK(bytes.size() >= 22, "'", source, "' is not a zip/.npz archive (", bytes.size(), " bytes)");
    std::size_t eocd = std::string::npos;
    const std::size_t lowest = bytes.size() >= 22 + 65535 ? bytes.size() - 22 - 65535 : 0;
    for (std::size_t p = bytes.size() - 22 + 1; p-- > lowest;) {
      if (read_u32(bytes, p) == 0x06054b50) { eocd = p; break; }
    }
    RLMED_CHECK(eocd != std::string::npos, "'", source, "' is not a zip/.npz archive (no end-of-central-directory record)");
    c.seek(eocd + 10);
    std::uint64_t entries = c.get<std::uint16_t>();
    std::uint64_t cd_size = c.get<std::uint32_t>();
    std::uint64_t cd_offset = c.get<std::uint32_t>();
    if (entries == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {
      // ZIP64 end-of-central-directory locator sits just before the classic record.
      RLMED_CHECK(eocd >= 20 && read_u32(bytes, eocd - 20) == 0x07064b50, "'", source, "': missing ZIP64 locator");
      c.seek(eocd - 20 + 8);
      const std::uint64_t z64 = c.get<std::uint64_t>();
      c.seek(z64);
      RLMED_CHECK(c.get<std::uint32_t>() == 0x06064b50, "'", source, "': bad ZIP64 end-of-central-directory record");
      c.seek(z64 + 32);
      entries = c.get<std::uint64_t>();
      cd_size = c.get<std::uint64_t>();
      cd_offset = c.get<std::uint64_t>();
    }
    RLMED_CHECK(cd_offset <= bytes.size() && cd_size <= bytes.size() - cd_offset && entries <= cd_size / 46,
                "'", source, "' has an inconsistent zip central directory (", entries, " entries, ", cd_size, " bytes at ", cd_offset, ")");
    c.seek(cd_offset);
    for (std::uint64_t e = 0; e < entries; ++e) {
      RLMED_CHECK(c.get<std::uint32_t>() == 0x02014b50, "'", source, "': bad zip central directory entry ", e);
      c.skip(4);
      const auto flags = c.get<std::uint16_t>();
      const auto method = c.get<std::uint16_t>();
      c.skip(4);
      const auto crc = c.get<std::uint32_t>();
      std::uint64_t csize = c.get<std::uint32_t>();
      std::uint64_t usize = c.get<std::uint32_t>();
      const auto name_len = c.get<std::uint16_t>();
      const auto extra_len = c.get<std::uint16_t>();
      const auto comment_len = c.get<std::uint16_t>();
      c.skip(8);
      std::uint64_t local = c.get<std::uint32_t>();
      const auto name_bytes = c.take(name_len);
      std::string name(reinterpret_cast<const char*>(name_bytes.data()), name_len);
      ByteCursor extra(c.take(extra_len), source);
      while (extra.remaining() >= 4) {
        const auto id = extra.get<std::uint16_t>();
        const auto len = extra.get<std::uint16_t>();
        ByteCursor field(extra.take(len), source);
        if (id == 0x0001) {  // ZIP64: only the saturated fields are present, in this order
          if (usize == 0xffffffff) usize = field.get<std::uint64_t>();
          if (csize == 0xffffffff) csize = field.get<std::uint64_t>();
          if (local == 0xffffffff) local = field.get<std::uint64_t>();
        }
      }
      c.skip(comment_len);
      RLMED_CHECK((flags & 0x1) == 0, "'", source, "': member '", name, "' is encrypted");
      RLMED_CHECK(method == 0 || method == 8, "'", source, "': member '", name, "' uses zip method ", method,
                  "; expected stored (0) or deflate (8)");
      RLMED_CHECK(usize <= max_member_bytes, "'", source, "': member '", name, "' declares ", usize, " bytes");
      // Local header: its own name/extra lengths decide where the data starts.
      ByteCursor lc(bytes, source);
      lc.seek(local);
      RLMED_CHECK(lc.get<std::uint32_t>() == 0x04034b50, "'", source, "': bad local header for member '", name, "'");
      lc.seek(local + 26);
      const auto lname = lc.get<std::uint16_t>();
      const auto lextra = lc.get<std::uint16_t>();
      lc.skip(std::size_t(lname) + lextra);
      RLMED_CHECK(csize <= lc.remaining(), "'", source, "' is truncated: member '", name, "' needs ", csize,
                  " compressed bytes, ", lc.remaining(), " remain");
      const auto comp = lc.take(csize);
      std::vector<std::byte> data;
      if (method == 0) {
        RLMED_CHECK(csize == usize, "'", source, "': stored member '", name, "' has sizes ", csize, " and ", usize);
        data.assign(comp.begin(), comp.end());
      } else {
        data = inflate_bounded(comp, Framing::raw, usize, source + ":" + name);
        RLMED_CHECK(data.size() == usize, "'", source, "': member '", name, "' inflates to ", data.size(),
                    " bytes; the directory says ", usize);
      }
      RLMED_CHECK(crc32_of(data) == crc, "'", source, "': CRC-32 mismatch in member '", name, "' (corrupt archive)");
      std::string key = name;
      if (key.size() > 4 && key.ends_with(".npy")) key.resize(key.size() - 4);
      archive.arrays_[key] = parse_npy(data, source + ":" + name);
    }
    return archive;
  }

  [[nodiscard]] std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (const auto& [k, v] : arrays_) n.push_back(k);
    return n;
  }
  [[nodiscard]] bool contains(const std::string& name) const { return arrays_.count(name) != 0; }
  [[nodiscard]] const RawArray& at(const std::string& name) const {
    const auto it = arrays_.find(name);
    if (it == arrays_.end()) RLMED_THROW("'", source_, "' has no array '", name, "'; it holds ", names());
    return it->second;
  }
  template <class T, std::size_t Rank>
  [[nodiscard]] Tensor<T, Rank> tensor(const std::string& name) const {
    return to_tensor<T, Rank>(at(name), source_ + ":" + name);
  }

 private:
  static std::uint32_t read_u32(const std::vector<std::byte>& b, std::size_t p) noexcept {
    return std::uint32_t(b[p]) | std::uint32_t(b[p + 1]) << 8 | std::uint32_t(b[p + 2]) << 16 | std::uint32_t(b[p + 3]) << 24;
  }
  std::string source_;
  std::map<std::string, RawArray> arrays_;
};

/// Collects arrays and writes an .npz archive atomically (deflated when `compress`).
class NpzWriter {
 public:
  void add(const std::string& name, RawArray a) { members_.emplace_back(name, std::move(a)); }
  template <class T, std::size_t Rank>
  void add(const std::string& name, TensorView<const T, Rank> t) { add(name, raw_array_of<T, Rank>(t)); }

  [[nodiscard]] std::vector<std::byte> to_bytes(bool compress = true) const {
    std::vector<std::byte> out, cd;
    auto put16 = [](std::vector<std::byte>& v, std::uint16_t x) { v.push_back(std::byte(x & 0xff)); v.push_back(std::byte(x >> 8)); };
    auto put32 = [&](std::vector<std::byte>& v, std::uint32_t x) { put16(v, std::uint16_t(x & 0xffff)); put16(v, std::uint16_t(x >> 16)); };
    for (const auto& [name, a] : members_) {
      const auto raw = npy_bytes(a);
      RLMED_CHECK(raw.size() < 0xffffffffu && out.size() < 0xffffffffu, "NpzWriter: archives over 4 GiB are not supported");
      const auto data = compress ? deflate_bytes(raw, Framing::raw) : raw;
      const std::string fname = name + ".npy";
      const auto offset = static_cast<std::uint32_t>(out.size());
      const std::uint32_t crc = crc32_of(raw);
      const std::uint16_t method = compress ? 8 : 0;
      put32(out, 0x04034b50); put16(out, 20); put16(out, 0); put16(out, method); put16(out, 0); put16(out, 0x21);
      put32(out, crc); put32(out, std::uint32_t(data.size())); put32(out, std::uint32_t(raw.size()));
      put16(out, std::uint16_t(fname.size())); put16(out, 0);
      for (char ch : fname) out.push_back(std::byte(ch));
      out.insert(out.end(), data.begin(), data.end());
      put32(cd, 0x02014b50); put16(cd, 20); put16(cd, 20); put16(cd, 0); put16(cd, method); put16(cd, 0); put16(cd, 0x21);
      put32(cd, crc); put32(cd, std::uint32_t(data.size())); put32(cd, std::uint32_t(raw.size()));
      put16(cd, std::uint16_t(fname.size())); put16(cd, 0); put16(cd, 0); put16(cd, 0); put16(cd, 0); put32(cd, 0);
      put32(cd, offset);
      for (char ch : fname) cd.push_back(std::byte(ch));
    }
    RLMED_CHECK(out.size() < 0xffffffffu && cd.size() < 0xffffffffu && members_.size() < 0xffff,
                "NpzWriter: archives over 4 GiB or with 65535 members or more are not supported (", members_.size(),
                " members, ", out.size(), " bytes)");
    const auto cd_offset = static_cast<std::uint32_t>(out.size());
    out.insert(out.end(), cd.begin(), cd.end());
    put32(out, 0x06054b50); put16(out, 0); put16(out, 0);
    put16(out, std::uint16_t(members_.size())); put16(out, std::uint16_t(members_.size()));
    put32(out, std::uint32_t(cd.size())); put32(out, cd_offset); put16(out, 0);
    return out;
  }
  void write(const std::filesystem::path& path, bool compress = true) const { write_file_atomic(path, to_bytes(compress)); }

 private:
  std::vector<std::pair<std::string, RawArray>> members_;
};

}  // namespace rlmed::imaging
