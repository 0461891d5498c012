// rlmed/core/safetensors.hpp — reading and writing weights in the safetensors format.
//
// Format (huggingface/safetensors): 8-byte little-endian header length N, N bytes of UTF-8
// JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {"key": "value"}}, then the byte buffer the offsets index (relative to its start).
//
// Design decisions:
//  * Untrusted input: every number in the header is validated before use — header length
//    against the file size and a 100 MB cap, nesting depth before JSON parsing, dtype names,
//    extents and element counts with overflow checks, offsets inside the buffer, byte counts
//    equal to shape x dtype size, and the buffer covered exactly once without holes or overlaps
//    (the format's own rule). Any violation is an rlmed::Error naming the file and the tensor.
//  * Conversions on read are the lossless ones only (same dtype, or F16/BF16/F32 widened to a
//    wider float); anything else is an error, so a checkpoint is never silently truncated.
//  * The writer copies (and converts) tensors when they are added, orders the buffer by name,
//    pads the header with spaces to 8 bytes (aligned data, as the reference writer does), and
//    writes through AtomicFileWriter.
#pragma once

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "rlmed/core/error.hpp"
#include "rlmed/core/file.hpp"
#include "rlmed/core/half.hpp"
#include "rlmed/core/tensor.hpp"

static_assert(std::endian::native == std::endian::little,
              "rlmed's safetensors I/O copies raw little-endian data; big-endian hosts are not supported");

namespace rlmed::io {

enum class DType : std::uint8_t { BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64 };

inline constexpr std::string_view dtype_name(DType d) noexcept {
  switch (d) {
    case DType::BOOL: return "BOOL";
    case DType::U8: return "U8";
    case DType::I8: return "I8";
    case DType::I16: return "I16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F32: return "F32";
    case DType::F64: return "F64";
  }
  return "?";
}

inline constexpr std::size_t dtype_size(DType d) noexcept {
  switch (d) {
    case DType::BOOL: case DType::U8: case DType::I8: return 1;
    case DType::I16: case DType::F16: case DType::BF16: return 2;
    case DType::I32: case DType::F32: return 4;
    case DType::I64: case DType::F64: return 8;
  }
  return 0;
}

inline std::optional<DType> parse_dtype(std::string_view s) noexcept {
  for (DType d : {DType::BOOL, DType::U8, DType::I8, DType::I16, DType::I32, DType::I64, DType::F16,
                  DType::BF16, DType::F32, DType::F64})
    if (dtype_name(d) == s) return d;
  return std::nullopt;
}

/// The dtype that stores a C++ element type natively.
template <class T>
constexpr DType dtype_of() {
  using U = std::remove_const_t<T>;
  if constexpr (std::is_same_v<U, bool>) return DType::BOOL;
  else if constexpr (std::is_same_v<U, std::uint8_t>) return DType::U8;
  else if constexpr (std::is_same_v<U, std::int8_t>) return DType::I8;
  else if constexpr (std::is_same_v<U, std::int16_t>) return DType::I16;
  else if constexpr (std::is_same_v<U, std::int32_t>) return DType::I32;
  else if constexpr (std::is_same_v<U, std::int64_t>) return DType::I64;
  else if constexpr (std::is_same_v<U, float>) return DType::F32;
  else if constexpr (std::is_same_v<U, double>) return DType::F64;
  else static_assert(sizeof(U) == 0, "no safetensors dtype for this element type");
}

/// One tensor's header entry.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<index_t> shape;
  std::size_t offset = 0;  // into the data buffer
  std::size_t nbytes = 0;
  [[nodiscard]] index_t numel() const {
    index_t n = 1;
    for (auto e : shape) n *= e;
    return n;
  }
};

/// Largest header accepted (the reference implementation's limit).
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;
/// Deepest JSON nesting a valid header can have is 3; anything much deeper is hostile.
inline constexpr int kMaxSafetensorsJsonDepth = 16;
inline constexpr std::size_t kMaxSafetensorsRank = 16;

namespace detail {

inline void check_json_depth(std::string_view text, const std::string& source) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') {
      if (++depth > kMaxSafetensorsJsonDepth)
        RLMED_THROW(source, ": safetensors header nests deeper than ", kMaxSafetensorsJsonDepth, " levels");
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
}

template <class To, class From>
void convert_elements(To* dst, const std::byte* src, index_t n) {
  for (index_t i = 0; i < n; ++i) {
    From v;
    std::memcpy(&v, src + i * sizeof(From), sizeof(From));
    dst[i] = static_cast<To>(v);
  }
}

}  // namespace detail

/// A parsed, validated safetensors file held in memory.
class SafetensorsReader {
 public:
  /// Reads and validates a file.
  static SafetensorsReader open(const std::filesystem::path& path) {
    return from_bytes(read_file_bytes(path), path.string());
  }

  /// Validates an in-memory image of a file; `source` names it in error messages.
  static SafetensorsReader from_bytes(std::vector<std::byte> bytes, std::string source = "<memory>") {
    SafetensorsReader r;
    r.source_ = std::move(source);
    r.bytes_ = std::move(bytes);
    r.parse();
    return r;
  }

  /// Tensors ordered by name.
  [[nodiscard]] const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  [[nodiscard]] const std::string& source() const noexcept { return source_; }

  [[nodiscard]] bool contains(std::string_view name) const noexcept { return find(name) != nullptr; }

  /// Header entry of a tensor; rlmed::Error listing what exists when it is missing.
  [[nodiscard]] const TensorInfo& info(std::string_view name) const {
    const TensorInfo* t = find(name);
    if (!t) {
      std::string names;
      for (std::size_t i = 0; i < tensors_.size() && i < 12; ++i) names += (i ? ", " : "") + tensors_[i].name;
      if (tensors_.size() > 12) names += ", ...";
      RLMED_THROW(source_, ": no tensor named '", name, "' (the file holds ", tensors_.size(),
                  " tensors: ", names, ")");
    }
    return *t;
  }

  /// Raw little-endian bytes of a tensor.
  [[nodiscard]] std::span<const std::byte> raw(std::string_view name) const {
    const TensorInfo& t = info(name);
    return {bytes_.data() + data_start_ + t.offset, t.nbytes};
  }

  /// Reads a tensor of rank Rank into a new host tensor (lossless conversions only).
  template <class T, std::size_t Rank>
  [[nodiscard]] Tensor<T, Rank, cpu> read(std::string_view name) const {
    const TensorInfo& t = info(name);
    RLMED_CHECK(t.shape.size() == Rank, source_, ": tensor '", name, "' has rank ", t.shape.size(),
                " (shape ", t.shape, "), expected rank ", Rank);
    Shape<Rank> shape{};
    std::copy(t.shape.begin(), t.shape.end(), shape.begin());
    auto out = Tensor<T, Rank, cpu>::uninitialized(shape);
    decode(t, out.data());
    return out;
  }

  /// Reads a tensor into an existing view whose shape must match exactly (checkpoint loading).
  template <class T, std::size_t Rank>
  void read_into(std::string_view name, TensorView<T, Rank, cpu> dst) const {
    const TensorInfo& t = info(name);
    const std::vector<index_t> expected(dst.shape().begin(), dst.shape().end());
    RLMED_CHECK(t.shape == expected, source_, ": tensor '", name, "' has shape ", t.shape,
                ", expected ", expected);
    decode(t, dst.data());
  }

 private:
  const TensorInfo* find(std::string_view name) const noexcept {
    auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                               [](const TensorInfo& t, std::string_view n) { return t.name < n; });
    return it != tensors_.end() && it->name == name ? &*it : nullptr;
  }

  template <class T>
  void decode(const TensorInfo& t, T* dst) const {
    const std::byte* src = bytes_.data() + data_start_ + t.offset;
    const index_t n = t.numel();
    constexpr DType native = dtype_of<T>();
    if (t.dtype == native) {
      if constexpr (std::is_same_v<T, bool>) {  // validate before any invalid bool is written
        for (index_t i = 0; i < n; ++i)
          RLMED_CHECK(static_cast<std::uint8_t>(src[i]) <= 1, source_, ": BOOL tensor '", t.name,
                      "' holds byte ", static_cast<int>(src[i]), " at element ", i, "; expected 0 or 1");
      }
      if (t.nbytes) std::memcpy(static_cast<void*>(dst), src, t.nbytes);
      return;
    }
    if constexpr (std::is_floating_point_v<T>) {
      if (t.dtype == DType::F16 || t.dtype == DType::BF16) {
        for (index_t i = 0; i < n; ++i) {
          std::uint16_t bits;
          std::memcpy(&bits, src + 2 * i, 2);
          dst[i] = static_cast<T>(t.dtype == DType::F16 ? half_bits_to_float(bits) : bfloat16_bits_to_float(bits));
        }
        return;
      }
      if (t.dtype == DType::F32 && std::is_same_v<T, double>) {
        detail::convert_elements<T, float>(dst, src, n);
        return;
      }
    }
    RLMED_THROW(source_, ": tensor '", t.name, "' is stored as ", dtype_name(t.dtype),
                " and cannot be read losslessly as ", dtype_name(native));
  }

  void parse() {
    const std::size_t file_size = bytes_.size();
    RLMED_CHECK(file_size >= 8, source_, ": ", file_size, " bytes is too short for a safetensors file (needs an 8-byte header length)");
    std::uint64_t header_len = 0;
    std::memcpy(&header_len, bytes_.data(), 8);
    RLMED_CHECK(header_len <= kMaxSafetensorsHeaderBytes, source_, ": header length ", header_len,
                " exceeds the ", kMaxSafetensorsHeaderBytes, "-byte limit");
    RLMED_CHECK(header_len <= file_size - 8, source_, ": header length ", header_len, " exceeds the ",
                file_size - 8, " bytes after the length field (truncated file?)");
    RLMED_CHECK(header_len >= 2, source_, ": header length ", header_len, " cannot hold a JSON object");
    data_start_ = 8 + static_cast<std::size_t>(header_len);
    const std::size_t data_size = file_size - data_start_;
    const std::string_view text(reinterpret_cast<const char*>(bytes_.data() + 8), header_len);
    detail::check_json_depth(text, source_);

    nlohmann::json header;
    try {
      header = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      RLMED_THROW(source_, ": safetensors header is not valid JSON (", e.what(), ")");
    }
    RLMED_CHECK(header.is_object(), source_, ": safetensors header must be a JSON object, found ", header.type_name());

    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const nlohmann::json& entry = it.value();
      if (name == "__metadata__") {
        RLMED_CHECK(entry.is_object(), source_, ": __metadata__ must be an object of strings");
        for (auto m = entry.begin(); m != entry.end(); ++m) {
          RLMED_CHECK(m.value().is_string(), source_, ": __metadata__ value for '", m.key(), "' is not a string");
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      tensors_.push_back(parse_entry(name, entry, data_size));
    }

    // The buffer must be covered exactly once: sorted by offset, contiguous, ending at its end.
    std::vector<const TensorInfo*> by_offset;
    by_offset.reserve(tensors_.size());
    for (const auto& t : tensors_) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
      return a->offset != b->offset ? a->offset < b->offset : a->nbytes < b->nbytes;
    });
    std::size_t cursor = 0;
    for (const TensorInfo* t : by_offset) {
      RLMED_CHECK(t->offset == cursor, source_, ": tensor '", t->name, "' starts at byte ", t->offset,
                  " of the data buffer, expected ", cursor, t->offset < cursor ? " (overlap)" : " (hole)");
      cursor += t->nbytes;
    }
    RLMED_CHECK(cursor == data_size, source_, ": tensors cover ", cursor, " bytes but the data buffer has ",
                data_size, " (", cursor < data_size ? "trailing bytes" : "truncated", ")");
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  }

  TensorInfo parse_entry(const std::string& name, const nlohmann::json& entry, std::size_t data_size) const {
    RLMED_CHECK(!name.empty(), source_, ": a tensor has an empty name");
    RLMED_CHECK(entry.is_object(), source_, ": entry '", name, "' must be an object, found ", entry.type_name());
    TensorInfo t;
    t.name = name;
    const auto dtype_it = entry.find("dtype");
    RLMED_CHECK(dtype_it != entry.end() && dtype_it->is_string(), source_, ": tensor '", name, "' has no string dtype");
    const auto dtype = parse_dtype(dtype_it->get<std::string>());
    RLMED_CHECK(dtype.has_value(), source_, ": tensor '", name, "' has unsupported dtype '",
                dtype_it->get<std::string>(), "' (supported: BOOL U8 I8 I16 I32 I64 F16 BF16 F32 F64)");
    t.dtype = *dtype;

    const auto shape_it = entry.find("shape");
    RLMED_CHECK(shape_it != entry.end() && shape_it->is_array(), source_, ": tensor '", name, "' has no shape array");
    RLMED_CHECK(shape_it->size() <= kMaxSafetensorsRank, source_, ": tensor '", name, "' has rank ",
                shape_it->size(), "; at most ", kMaxSafetensorsRank, " supported");
    for (const auto& e : *shape_it) {
      RLMED_CHECK(e.is_number_unsigned() || (e.is_number_integer() && e.get<std::int64_t>() >= 0), source_,
                  ": tensor '", name, "' has a shape entry that is not a non-negative integer: ", e.dump());
      const auto v = e.get<std::uint64_t>();
      RLMED_CHECK(v <= static_cast<std::uint64_t>(std::numeric_limits<index_t>::max()), source_, ": tensor '",
                  name, "' has extent ", v, " beyond index_t");
      t.shape.push_back(static_cast<index_t>(v));
    }
    index_t n = 0;
    try {
      n = checked_numel(t.shape);
    } catch (const Error&) {
      RLMED_THROW(source_, ": tensor '", name, "' has shape ", t.shape, " whose element count overflows");
    }
    const std::size_t elem = dtype_size(t.dtype);
    RLMED_CHECK(static_cast<std::uint64_t>(n) <= data_size / elem, source_, ": tensor '", name, "' of shape ",
                t.shape, " needs ", static_cast<std::uint64_t>(n), " x ", elem, " bytes but the data buffer has only ",
                data_size);

    const auto off_it = entry.find("data_offsets");
    RLMED_CHECK(off_it != entry.end() && off_it->is_array() && off_it->size() == 2, source_, ": tensor '", name,
                "' needs data_offsets [begin, end]");
    for (const auto& e : *off_it)
      RLMED_CHECK(e.is_number_unsigned() || (e.is_number_integer() && e.get<std::int64_t>() >= 0), source_,
                  ": tensor '", name, "' has a data offset that is not a non-negative integer: ", e.dump());
    const auto begin = (*off_it)[0].get<std::uint64_t>();
    const auto end = (*off_it)[1].get<std::uint64_t>();
    RLMED_CHECK(begin <= end && end <= data_size, source_, ": tensor '", name, "' has data_offsets [", begin, ", ",
                end, "] outside the ", data_size, "-byte data buffer");
    t.offset = static_cast<std::size_t>(begin);
    t.nbytes = static_cast<std::size_t>(end - begin);
    RLMED_CHECK(t.nbytes == static_cast<std::size_t>(n) * elem, source_, ": tensor '", name, "' of shape ", t.shape,
                " and dtype ", dtype_name(t.dtype), " needs ", static_cast<std::size_t>(n) * elem,
                " bytes, its offsets span ", t.nbytes);
    return t;
  }

  std::string source_;
  std::vector<std::byte> bytes_;
  std::size_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// Collects tensors and metadata, then writes one safetensors file atomically.
class SafetensorsWriter {
 public:
  /// Adds a copy of a host tensor under `name`, stored as `stored` (default: its own dtype;
  /// float/double may be stored as F16, BF16, F32 or F64).
  template <class T, std::size_t Rank>
  void add(std::string name, TensorView<const T, Rank, cpu> value, std::optional<DType> stored = std::nullopt) {
    RLMED_CHECK(!name.empty() && name != "__metadata__", "safetensors tensor name '", name, "' is reserved or empty");
    RLMED_CHECK(!entries_.contains(name), "safetensors tensor '", name, "' added twice");
    const DType native = dtype_of<T>();
    const DType dtype = stored.value_or(native);
    Entry e;
    e.dtype = dtype;
    e.shape.assign(value.shape().begin(), value.shape().end());
    const index_t n = value.size();
    e.bytes.resize(static_cast<std::size_t>(n) * dtype_size(dtype));
    if (dtype == native) {
      if (n) std::memcpy(e.bytes.data(), value.data(), e.bytes.size());
    } else if constexpr (std::is_floating_point_v<T>) {
      for (index_t i = 0; i < n; ++i) {
        const T v = value.data()[i];
        switch (dtype) {
          case DType::F16: { const std::uint16_t b = float_to_half_bits(static_cast<float>(v)); std::memcpy(&e.bytes[2 * i], &b, 2); break; }
          case DType::BF16: { const std::uint16_t b = float_to_bfloat16_bits(static_cast<float>(v)); std::memcpy(&e.bytes[2 * i], &b, 2); break; }
          case DType::F32: { const float f = static_cast<float>(v); std::memcpy(&e.bytes[4 * i], &f, 4); break; }
          case DType::F64: { const double d = static_cast<double>(v); std::memcpy(&e.bytes[8 * i], &d, 8); break; }
          default: RLMED_THROW("cannot store floating tensor '", name, "' as ", dtype_name(dtype));
        }
      }
    } else {
      RLMED_THROW("cannot store tensor '", name, "' of dtype ", dtype_name(native), " as ", dtype_name(dtype));
    }
    entries_.emplace(std::move(name), std::move(e));
  }
  template <class T, std::size_t Rank>
  void add(std::string name, TensorView<T, Rank, cpu> value, std::optional<DType> stored = std::nullopt) {
    add(std::move(name), TensorView<const T, Rank, cpu>(value), stored);
  }
  template <class T, std::size_t Rank>
  void add(std::string name, const Tensor<T, Rank, cpu>& value, std::optional<DType> stored = std::nullopt) {
    add(std::move(name), value.view(), stored);
  }

  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  [[nodiscard]] std::size_t size() const noexcept { return entries_.size(); }

  /// The complete file image.
  [[nodiscard]] std::vector<std::byte> to_bytes() const {
    nlohmann::json header = nlohmann::json::object();
    std::size_t offset = 0;
    for (const auto& [name, e] : entries_) {
      header[name] = {{"dtype", std::string(dtype_name(e.dtype))},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.bytes.size()}}};
      offset += e.bytes.size();
    }
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::string text = header.dump();
    text.append((8 - (8 + text.size()) % 8) % 8, ' ');
    std::vector<std::byte> out(8 + text.size() + offset);
    const std::uint64_t len = text.size();
    std::memcpy(out.data(), &len, 8);
    std::memcpy(out.data() + 8, text.data(), text.size());
    std::size_t pos = 8 + text.size();
    for (const auto& [name, e] : entries_) {
      if (!e.bytes.empty()) std::memcpy(out.data() + pos, e.bytes.data(), e.bytes.size());
      pos += e.bytes.size();
    }
    return out;
  }

  /// Writes the file atomically (temporary file + rename).
  void write(const std::filesystem::path& path) const { write_file_atomic(path, to_bytes()); }

 private:
  struct Entry {
    DType dtype;
    std::vector<index_t> shape;
    std::vector<std::byte> bytes;
  };
  std::map<std::string, Entry> entries_;  // ordered by name: deterministic files
  std::map<std::string, std::string> metadata_;
};

}  // namespace rlmed::io
