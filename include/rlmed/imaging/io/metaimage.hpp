// rlmed/imaging/io/metaimage.hpp — ITK MetaImage (.mha with inline data, .mhd + raw file),
// raw or zlib-compressed, read and write.
//
// Design decisions:
//  * The text header is parsed key by key; unknown keys are kept but ignored, required keys
//    (NDims, DimSize, ElementType, ElementDataFile) must be present and consistent.
//  * TransformMatrix lists the world direction of index axis 0, then of axis 1, … (ITK's
//    MetaImageIO reads it this way), Offset is the origin, ElementSpacing the spacing — all
//    already in rlmed's LPS world and (x, y, z) order, so no conversion is needed.
//  * Compressed data is inflated with the exact expected size as ceiling; a CompressedDataSize
//    that disagrees with the bytes present is an error. Multi-channel and list-file data are
//    rejected clearly.
#pragma once

#include <charconv>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "rlmed/core/file.hpp"
#include "rlmed/imaging/image.hpp"
#include "rlmed/imaging/io/compression.hpp"
#include "rlmed/imaging/io/raw_array.hpp"

namespace rlmed::imaging {

inline constexpr std::size_t kMaxMetaHeaderBytes = 1 << 16;

struct MetaImageHeader {
  int ndims = 0;
  std::vector<index_t> dim_size;         // x, y, z
  std::vector<double> spacing, offset;   // x, y, z
  std::vector<double> transform;         // ndims × ndims, axis-major
  ElementType element = ElementType::u8;
  bool msb = false;
  bool compressed = false;
  std::size_t compressed_size = 0;
  std::string data_file;                 // "LOCAL" or a path relative to the header
  std::size_t header_bytes = 0;          // where LOCAL data starts
  std::map<std::string, std::string> fields;
};

namespace detail {

inline std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r");
  const auto e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

template <class V>
std::vector<V> parse_numbers(const std::string& text, const std::string& key, const std::string& source) {
  std::vector<V> out;
  std::istringstream is(text);
  std::string tok;
  while (is >> tok) {
    V v{};
    const auto* first = tok.data();
    const auto* last = tok.data() + tok.size();
    const auto r = std::from_chars(first, last, v);
    RLMED_CHECK(r.ec == std::errc() && r.ptr == last, "'", source, "': MetaImage field ", key, " has a non-numeric value '",
                tok, "'");
    if constexpr (std::is_floating_point_v<V>) RLMED_CHECK(std::isfinite(v), "'", source, "': MetaImage field ", key, " is not finite");
    out.push_back(v);
    RLMED_CHECK(out.size() <= 64, "'", source, "': MetaImage field ", key, " has too many values");
  }
  return out;
}

inline ElementType meta_element(const std::string& s, const std::string& source) {
  if (s == "MET_UCHAR") return ElementType::u8;
  if (s == "MET_CHAR") return ElementType::i8;
  if (s == "MET_USHORT") return ElementType::u16;
  if (s == "MET_SHORT") return ElementType::i16;
  if (s == "MET_UINT" || s == "MET_ULONG") return ElementType::u32;
  if (s == "MET_INT" || s == "MET_LONG") return ElementType::i32;
  if (s == "MET_ULONG_LONG") return ElementType::u64;
  if (s == "MET_LONG_LONG") return ElementType::i64;
  if (s == "MET_FLOAT") return ElementType::f32;
  if (s == "MET_DOUBLE") return ElementType::f64;
  RLMED_THROW("'", source, "': MetaImage ElementType '", s, "' is not supported");
}

inline const char* meta_element_name(ElementType t) {
  switch (t) {
    case ElementType::boolean:
    case ElementType::u8: return "MET_UCHAR";
    case ElementType::i8: return "MET_CHAR";
    case ElementType::u16: return "MET_USHORT";
    case ElementType::i16: return "MET_SHORT";
    case ElementType::u32: return "MET_UINT";
    case ElementType::i32: return "MET_INT";
    case ElementType::u64: return "MET_ULONG_LONG";
    case ElementType::i64: return "MET_LONG_LONG";
    case ElementType::f32: return "MET_FLOAT";
    case ElementType::f64: return "MET_DOUBLE";
  }
  return "";
}

inline bool meta_bool(const std::string& v) { return v == "True" || v == "true" || v == "TRUE" || v == "1"; }

}  // namespace detail

/// Parses the text header at the start of `bytes`. For .mha, data follows ElementDataFile = LOCAL.
inline MetaImageHeader parse_metaimage_header(std::span<const std::byte> bytes, const std::string& source) {
  MetaImageHeader h;
  std::size_t pos = 0;
  bool done = false;
  while (!done) {
    RLMED_CHECK(pos < bytes.size() && pos < kMaxMetaHeaderBytes, "'", source,
                "' is not a MetaImage file: no ElementDataFile line within the first ", kMaxMetaHeaderBytes, " bytes");
    std::size_t end = pos;
    while (end < bytes.size() && bytes[end] != std::byte{'\n'}) ++end;
    std::string line(reinterpret_cast<const char*>(bytes.data() + pos), end - pos);
    pos = std::min(end + 1, bytes.size());
    for (char ch : line)
      RLMED_CHECK(ch == '\t' || ch == '\r' || (ch >= 32 && ch < 127), "'", source, "' is not a MetaImage file: binary byte in its header");
    if (detail::trim(line).empty()) continue;
    const auto eq = line.find('=');
    RLMED_CHECK(eq != std::string::npos, "'", source, "': MetaImage header line without '=': '", line, "'");
    const std::string key = detail::trim(line.substr(0, eq));
    const std::string value = detail::trim(line.substr(eq + 1));
    h.fields[key] = value;
    if (key == "ElementDataFile") done = true;
  }
  h.header_bytes = pos;
  auto need = [&](const char* key) -> const std::string& {
    const auto it = h.fields.find(key);
    if (it == h.fields.end()) RLMED_THROW("'", source, "': MetaImage header has no ", key);
    return it->second;
  };
  const auto nd = detail::parse_numbers<int>(need("NDims"), "NDims", source);
  RLMED_CHECK(nd.size() == 1 && nd[0] >= 1 && nd[0] <= 4, "'", source, "': NDims must be 1..4, found '", need("NDims"), "'");
  h.ndims = nd[0];
  const std::size_t n = std::size_t(h.ndims);
  h.dim_size = detail::parse_numbers<index_t>(need("DimSize"), "DimSize", source);
  RLMED_CHECK(h.dim_size.size() == n, "'", source, "': DimSize has ", h.dim_size.size(), " values for NDims ", n);
  for (auto d : h.dim_size) RLMED_CHECK(d >= 1 && d <= (1 << 20), "'", source, "': DimSize value ", d, " out of range");
  auto numbers_or = [&](const char* key, const char* alt, double fill) {
    auto it = h.fields.find(key);
    if (it == h.fields.end() && alt) it = h.fields.find(alt);
    if (it == h.fields.end()) return std::vector<double>(n, fill);
    auto v = detail::parse_numbers<double>(it->second, key, source);
    RLMED_CHECK(v.size() == n, "'", source, "': ", key, " has ", v.size(), " values for NDims ", n);
    return v;
  };
  h.spacing = numbers_or("ElementSpacing", "ElementSize", 1.0);
  for (double s : h.spacing) RLMED_CHECK(s > 0, "'", source, "': ElementSpacing must be positive, found ", h.spacing);
  h.offset = numbers_or("Offset", "Origin", 0.0);
  if (!h.fields.count("Offset") && !h.fields.count("Origin") && h.fields.count("Position"))
    h.offset = numbers_or("Position", nullptr, 0.0);
  h.transform.assign(n * n, 0.0);
  for (std::size_t i = 0; i < n; ++i) h.transform[i * n + i] = 1.0;
  for (const char* key : {"TransformMatrix", "Rotation", "Orientation"}) {
    if (const auto it = h.fields.find(key); it != h.fields.end()) {
      h.transform = detail::parse_numbers<double>(it->second, key, source);
      RLMED_CHECK(h.transform.size() == n * n, "'", source, "': ", key, " has ", h.transform.size(), " values, expected ", n * n);
      break;
    }
  }
  h.element = detail::meta_element(need("ElementType"), source);
  if (const auto it = h.fields.find("ElementNumberOfChannels"); it != h.fields.end())
    RLMED_CHECK(detail::trim(it->second) == "1", "'", source, "': multi-channel MetaImage (", it->second,
                " channels) is not supported");
  for (const char* key : {"BinaryDataByteOrderMSB", "ElementByteOrderMSB"})
    if (const auto it = h.fields.find(key); it != h.fields.end()) h.msb = detail::meta_bool(it->second);
  if (const auto it = h.fields.find("BinaryData"); it != h.fields.end())
    RLMED_CHECK(detail::meta_bool(it->second), "'", source, "': ASCII MetaImage data (BinaryData = False) is not supported");
  if (const auto it = h.fields.find("CompressedData"); it != h.fields.end()) h.compressed = detail::meta_bool(it->second);
  if (const auto it = h.fields.find("CompressedDataSize"); it != h.fields.end()) {
    const auto v = detail::parse_numbers<std::size_t>(it->second, "CompressedDataSize", source);
    RLMED_CHECK(v.size() == 1, "'", source, "': CompressedDataSize must be one number");
    h.compressed_size = v[0];
  }
  h.data_file = need("ElementDataFile");
  RLMED_CHECK(h.data_file != "LIST" && h.data_file.find('%') == std::string::npos, "'", source,
              "': MetaImage slice lists (ElementDataFile = ", h.data_file, ") are not supported");
  return h;
}

/// A parsed MetaImage: header and voxels (row-major, slowest axis first).
struct MetaImageFile {
  MetaImageHeader header;
  RawArray data;
};

/// Parses a MetaImage from memory. `header_path` locates an external data file (for .mhd).
inline MetaImageFile parse_metaimage(std::span<const std::byte> bytes, const std::string& source,
                                     const std::filesystem::path& header_path = {}) {
  MetaImageFile f;
  f.header = parse_metaimage_header(bytes, source);
  const auto& h = f.header;
  std::vector<index_t> shape(h.dim_size.rbegin(), h.dim_size.rend());
  const index_t count = checked_element_count(shape, source);
  const std::size_t need = std::size_t(count) * element_size(h.element);
  std::vector<std::byte> external;
  std::span<const std::byte> payload;
  if (h.data_file == "LOCAL") {
    payload = bytes.subspan(h.header_bytes);
  } else {
    std::filesystem::path data_path = h.data_file;
    if (data_path.is_relative()) data_path = header_path.parent_path() / data_path;
    external = read_file_bytes(data_path);
    payload = external;
    if (const auto it = h.fields.find("HeaderSize"); it != h.fields.end()) {
      const auto hs = detail::parse_numbers<long long>(it->second, "HeaderSize", source);
      RLMED_CHECK(hs.size() == 1, "'", source, "': HeaderSize must be one number");
      const std::size_t skip = hs[0] == -1 ? (payload.size() >= need ? payload.size() - need : 0) : std::size_t(std::max(0LL, hs[0]));
      RLMED_CHECK(skip <= payload.size(), "'", data_path.string(), "' is shorter than its HeaderSize ", hs[0]);
      payload = payload.subspan(skip);
    }
  }
  std::vector<std::byte> inflated;
  if (h.compressed) {
    if (h.compressed_size)
      RLMED_CHECK(h.compressed_size <= payload.size(), "'", source, "' is truncated: CompressedDataSize ", h.compressed_size,
                  ", only ", payload.size(), " bytes present");
    const auto comp = h.compressed_size ? payload.first(h.compressed_size) : payload;
    inflated = inflate_bounded(comp, Framing::zlib, need, source);
    payload = inflated;
  }
  RLMED_CHECK(payload.size() >= need, "'", source, "' is truncated: ", need, " bytes of voxel data expected (DimSize ",
              h.dim_size, ", ", element_name(h.element), "), ", payload.size(), " found");
  f.data = make_raw_array(h.element, std::move(shape), payload, !h.msb, source);
  return f;
}

template <class T, std::size_t Dim>
Image<T, Dim> metaimage_to_image(const MetaImageFile& f, const std::string& source) {
  const auto& h = f.header;
  RLMED_CHECK(std::size_t(h.ndims) == Dim, "'", source, "' is a ", h.ndims, "D MetaImage; expected ", Dim, "D");
  Image<T, Dim> img;
  img.voxels = to_tensor<T, Dim>(f.data, source);
  for (std::size_t a = 0; a < Dim; ++a) {
    img.spacing_mm[a] = h.spacing[a];
    img.origin_mm[a] = h.offset[a];
    for (std::size_t r = 0; r < Dim; ++r) img.direction[r * Dim + a] = h.transform[a * Dim + r];  // axis-major
  }
  img.validate_geometry();
  return img;
}

/// Reads .mha / .mhd as Image<T, Dim>.
template <class T, std::size_t Dim>
Image<T, Dim> read_metaimage(const std::filesystem::path& path) {
  const auto bytes = read_file_bytes(path);
  return metaimage_to_image<T, Dim>(parse_metaimage(bytes, path.string(), path), path.string());
}

/// Writes `img` atomically as a single-file .mha (zlib-compressed when `compress`).
template <class T, std::size_t Dim>
void write_metaimage(const std::filesystem::path& path, const Image<T, Dim>& img, bool compress = false) {
  img.validate_geometry();
  RLMED_CHECK(path.extension() == ".mha", "write_metaimage writes single-file .mha images; got '", path.string(), "'");
  std::ostringstream os;
  os.precision(17);
  os << "ObjectType = Image\nNDims = " << Dim << "\nBinaryData = True\nBinaryDataByteOrderMSB = False\n";
  const auto* p = reinterpret_cast<const std::byte*>(img.voxels.data());
  std::vector<std::byte> data(p, p + img.voxels.bytes());
  if (compress) data = deflate_bytes(data, Framing::zlib);
  os << "CompressedData = " << (compress ? "True" : "False") << "\n";
  if (compress) os << "CompressedDataSize = " << data.size() << "\n";
  os << "TransformMatrix =";
  for (std::size_t a = 0; a < Dim; ++a)
    for (std::size_t r = 0; r < Dim; ++r) os << ' ' << img.direction[r * Dim + a];
  os << "\nOffset =";
  for (double v : img.origin_mm) os << ' ' << v;
  os << "\nElementSpacing =";
  for (double v : img.spacing_mm) os << ' ' << v;
  os << "\nDimSize =";
  for (auto v : img.size_xyz()) os << ' ' << v;
  os << "\nElementType = " << detail::meta_element_name(element_type_of<T>()) << "\nElementDataFile = LOCAL\n";
  const std::string header = os.str();
  std::vector<std::byte> out(header.size());
  std::memcpy(out.data(), header.data(), header.size());
  out.insert(out.end(), data.begin(), data.end());
  write_file_atomic(path, out);
}

}  // namespace rlmed::imaging
