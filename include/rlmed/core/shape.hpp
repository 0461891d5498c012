// rlmed/core/shape.hpp — run-time extents with a compile-time rank.
//
// Design: the rank defines structure and is a template argument; the extents are data. Shapes
// are row-major (last axis contiguous), the layout of PyTorch, NumPy and safetensors, so weights
// and fixtures move between them without transposes. Element counts are computed with overflow
// checks because they come from files and command lines.
#pragma once

#include <array>
#include <cstddef>
#include <limits>

#include "rlmed/core/config.hpp"
#include "rlmed/core/error.hpp"

namespace rlmed {

template <std::size_t Rank>
using Shape = std::array<index_t, Rank>;

/// Number of elements of a shape (1 for rank 0). No validation: use checked_numel on input.
template <std::size_t Rank>
RLMED_HOST_DEVICE constexpr index_t numel(const Shape<Rank>& shape) noexcept {
  index_t n = 1;
  for (std::size_t i = 0; i < Rank; ++i) n *= shape[i];
  return n;
}

/// Element count of a shape from outside (a file, a user): every extent must be >= 0 and the
/// product must fit in index_t; otherwise rlmed::Error naming the shape.
template <class Extents>
index_t checked_numel(const Extents& shape) {
  index_t n = 1;
  for (auto e : shape) {
    const auto extent = static_cast<index_t>(e);
    RLMED_CHECK(extent >= 0, "negative extent ", extent, " in shape ", shape);
    if (extent != 0 && n > std::numeric_limits<index_t>::max() / extent)
      RLMED_THROW("shape ", shape, " has more elements than index_t can count");
    n *= extent;
  }
  return n;
}

/// Row-major (C-order) strides, in elements.
template <std::size_t Rank>
RLMED_HOST_DEVICE constexpr Shape<Rank> contiguous_strides(const Shape<Rank>& shape) noexcept {
  Shape<Rank> strides{};
  index_t s = 1;
  for (std::size_t i = Rank; i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

/// Drops the leading extent: the shape of one slice along axis 0.
template <std::size_t Rank>
RLMED_HOST_DEVICE constexpr Shape<Rank - 1> tail_shape(const Shape<Rank>& shape) noexcept {
  static_assert(Rank >= 1, "tail_shape needs rank >= 1");
  Shape<Rank - 1> out{};
  for (std::size_t i = 1; i < Rank; ++i) out[i - 1] = shape[i];
  return out;
}

}  // namespace rlmed
