// rlmed/imaging/io/raw_array.hpp — a decoded array of any stored element type, and its
// conversion into a typed rlmed::Tensor.
//
// Design decisions:
//  * File formats store many element types (uint8 … float64, either byte order). Readers first
//    produce a RawArray in native byte order and C (row-major) order with its run-time element
//    type; `to_tensor<T, Rank>` then converts once. Conversions that would lose information
//    (float → integer, out-of-range integers) are checked value by value and raise rlmed::Error
//    naming the first offending value, instead of wrapping silently.
//  * Size limits are checked before allocation: extents must be positive (or zero), and their
//    product must fit the bytes actually present.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/io/compression.hpp"

namespace rlmed::imaging {

enum class ElementType : std::uint8_t { boolean, u8, i8, u16, i16, u32, i32, u64, i64, f32, f64 };

inline constexpr std::size_t element_size(ElementType t) noexcept {
  switch (t) {
    case ElementType::boolean: case ElementType::u8: case ElementType::i8: return 1;
    case ElementType::u16: case ElementType::i16: return 2;
    case ElementType::u32: case ElementType::i32: case ElementType::f32: return 4;
    case ElementType::u64: case ElementType::i64: case ElementType::f64: return 8;
  }
  return 0;
}

inline constexpr const char* element_name(ElementType t) noexcept {
  switch (t) {
    case ElementType::boolean: return "bool";
    case ElementType::u8: return "uint8";
    case ElementType::i8: return "int8";
    case ElementType::u16: return "uint16";
    case ElementType::i16: return "int16";
    case ElementType::u32: return "uint32";
    case ElementType::i32: return "int32";
    case ElementType::u64: return "uint64";
    case ElementType::i64: return "int64";
    case ElementType::f32: return "float32";
    case ElementType::f64: return "float64";
  }
  return "?";
}

/// The ElementType that stores T natively.
template <class T>
constexpr ElementType element_type_of() noexcept {
  if constexpr (std::is_same_v<T, bool>) return ElementType::boolean;
  else if constexpr (std::is_same_v<T, std::uint8_t>) return ElementType::u8;
  else if constexpr (std::is_same_v<T, std::int8_t>) return ElementType::i8;
  else if constexpr (std::is_same_v<T, std::uint16_t>) return ElementType::u16;
  else if constexpr (std::is_same_v<T, std::int16_t>) return ElementType::i16;
  else if constexpr (std::is_same_v<T, std::uint32_t>) return ElementType::u32;
  else if constexpr (std::is_same_v<T, std::int32_t>) return ElementType::i32;
  else if constexpr (std::is_same_v<T, std::uint64_t>) return ElementType::u64;
  else if constexpr (std::is_same_v<T, std::int64_t>) return ElementType::i64;
  else if constexpr (std::is_same_v<T, float>) return ElementType::f32;
  else if constexpr (std::is_same_v<T, double>) return ElementType::f64;
  else static_assert(sizeof(T) == 0, "no stored element type for this C++ type");
}

/// Calls f(T{}) with the C++ type that stores `t`.
template <class F>
decltype(auto) visit_element_type(ElementType t, F&& f) {
  switch (t) {
    case ElementType::boolean: return f(bool{});
    case ElementType::u8: return f(std::uint8_t{});
    case ElementType::i8: return f(std::int8_t{});
    case ElementType::u16: return f(std::uint16_t{});
    case ElementType::i16: return f(std::int16_t{});
    case ElementType::u32: return f(std::uint32_t{});
    case ElementType::i32: return f(std::int32_t{});
    case ElementType::u64: return f(std::uint64_t{});
    case ElementType::i64: return f(std::int64_t{});
    case ElementType::f32: return f(float{});
    case ElementType::f64: return f(double{});
  }
  RLMED_THROW("invalid element type code ", int(t));
}

/// Converts one value to T; false when T cannot represent it exactly enough (integers: exact;
/// floating point: finite-range; NaN passes only into floating point).
template <class T, class S>
bool convert_value(S s, T& out) noexcept {
  if constexpr (std::is_same_v<T, bool>) {
    out = s != S{};
    return true;
  } else if constexpr (std::is_floating_point_v<T>) {
    out = static_cast<T>(s);
    return true;
  } else if constexpr (std::is_same_v<S, bool>) {
    out = static_cast<T>(s ? 1 : 0);
    return true;
  } else if constexpr (std::is_floating_point_v<S>) {
    if (!std::isfinite(s) || s != std::trunc(s)) return false;
    if (s < static_cast<S>(std::numeric_limits<T>::lowest()) || s > static_cast<S>(std::numeric_limits<T>::max()))
      return false;
    out = static_cast<T>(s);
    return true;
  } else {
    if (!std::in_range<T>(s)) return false;
    out = static_cast<T>(s);
    return true;
  }
}

/// A decoded array: run-time element type and extents, native byte order, row-major.
struct RawArray {
  ElementType type = ElementType::u8;
  std::vector<index_t> shape;
  std::vector<std::byte> data;

  [[nodiscard]] index_t numel() const noexcept {
    index_t n = 1;
    for (auto e : shape) n *= e;
    return n;
  }

  /// Value i converted to double (for statistics and checksums).
  [[nodiscard]] double value(index_t i) const {
    RLMED_CHECK(i >= 0 && i < numel(), "element ", i, " out of range [0, ", numel(), ")");
    return visit_element_type(type, [&](auto tag) {
      using S = decltype(tag);
      S s;
      std::memcpy(&s, data.data() + std::size_t(i) * sizeof(S), sizeof(S));
      return static_cast<double>(s);
    });
  }
};

/// Most elements any decoded array may hold (2^40): element counts times element sizes (≤ 8
/// bytes) then never overflow, and absurd headers are rejected before anything is allocated.
inline constexpr index_t kMaxArrayElements = index_t(1) << 40;

/// Checks extents (each in [0, max_extent]) and returns the element count, which must not
/// exceed kMaxArrayElements.
inline index_t checked_element_count(std::span<const index_t> shape, const std::string& source,
                                     index_t max_extent = index_t(1) << 31) {
  index_t n = 1;
  for (auto e : shape) {
    RLMED_CHECK(e >= 0 && e <= max_extent, "'", source, "' declares an extent of ", e, "; expected 0 ≤ extent ≤ ",
                max_extent);
    if (e && n > kMaxArrayElements / e)
      RLMED_THROW("'", source, "' declares extents ", std::vector<index_t>(shape.begin(), shape.end()),
                  " holding more than ", kMaxArrayElements, " elements");
    n *= e;
  }
  return n;
}

/// Copies `count` stored elements from `bytes` into a RawArray, swapping bytes when the stored
/// order is not native.
inline RawArray make_raw_array(ElementType type, std::vector<index_t> shape, std::span<const std::byte> bytes,
                               bool little_endian, const std::string& source) {
  const index_t n = checked_element_count(shape, source);
  const std::size_t need = std::size_t(n) * element_size(type);
  RLMED_CHECK(bytes.size() >= need, "'", source, "' is truncated: ", need, " bytes of ", element_name(type),
              " voxel data expected, ", bytes.size(), " found");
  RawArray a;
  a.type = type;
  a.shape = std::move(shape);
  a.data.assign(bytes.begin(), bytes.begin() + std::ptrdiff_t(need));
  const std::size_t es = element_size(type);
  if (es > 1 && little_endian != (std::endian::native == std::endian::little)) {
    for (std::size_t i = 0; i < need; i += es) std::reverse(a.data.begin() + std::ptrdiff_t(i), a.data.begin() + std::ptrdiff_t(i + es));
  }
  if (type == ElementType::boolean) {
    for (std::size_t i = 0; i < need; ++i)
      RLMED_CHECK(a.data[i] == std::byte{0} || a.data[i] == std::byte{1}, "'", source, "' holds an invalid bool byte ",
                  int(a.data[i]), " at element ", i);
  }
  return a;
}

/// The RawArray as a Tensor<T, Rank>; extents must match Rank exactly (or, when `squeeze`,
/// after dropping trailing/leading extents of 1). Lossy conversions throw.
template <class T, std::size_t Rank>
Tensor<T, Rank> to_tensor(const RawArray& a, const std::string& source) {
  std::vector<index_t> s = a.shape;
  // Drop leading unit axes while there are more than Rank (e.g. NIfTI 4D with one volume).
  while (s.size() > Rank && s.front() == 1) s.erase(s.begin());
  while (s.size() > Rank && s.back() == 1) s.pop_back();
  RLMED_CHECK(s.size() == Rank, "'", source, "' holds an array of shape ", a.shape, "; expected rank ", Rank);
  Shape<Rank> shape{};
  for (std::size_t i = 0; i < Rank; ++i) shape[i] = s[i];
  auto out = Tensor<T, Rank>::uninitialized(shape);
  const index_t n = out.size();
  visit_element_type(a.type, [&](auto tag) {
    using S = decltype(tag);
    const std::byte* src = a.data.data();
    T* dst = out.data();
    if constexpr (std::is_same_v<S, T>) {
      if (n) std::memcpy(dst, src, std::size_t(n) * sizeof(T));
    } else {
      for (index_t i = 0; i < n; ++i) {
        S v;
        std::memcpy(&v, src + std::size_t(i) * sizeof(S), sizeof(S));
        if (!convert_value<T>(v, dst[i]))
          RLMED_THROW("'", source, "': stored ", element_name(a.type), " value ", v, " at element ", i,
                      " cannot be represented as the requested element type");
      }
    }
  });
  return out;
}

}  // namespace rlmed::imaging
