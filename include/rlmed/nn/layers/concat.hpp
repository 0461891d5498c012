// rlmed/nn/layers/concat.hpp — concatenation and split along the channel axis.
//
// Design: composite models (multi-scale features of PixelDRL-MG, U-Net skips) concatenate
// feature maps of equal batch and spatial size. A channel block of [B, C, S] is contiguous per
// sample, so both directions are memcpy per (sample, input). Backward of concat is split.
#pragma once

#include <cstring>
#include <initializer_list>
#include <vector>

#include "rlmed/core/tensor.hpp"

namespace rlmed::nn {

/// out[:, offset_i : offset_i + C_i] = inputs[i]; out is resized to [B, sum C_i, spatial...].
template <class T, std::size_t Rank>
void concat_channels(std::initializer_list<TensorView<const T, Rank>> inputs, Tensor<T, Rank>& out) {
  static_assert(Rank >= 2);
  RLMED_CHECK(inputs.size() >= 1, "concat_channels needs at least one input");
  Shape<Rank> shape = inputs.begin()->shape();
  index_t channels = 0;
  for (const auto& in : inputs) {
    for (std::size_t a = 0; a < Rank; ++a)
      RLMED_CHECK(a == 1 || in.extent(a) == shape[a], "concat_channels: input shape ", in.shape(),
                  " does not match ", shape, " outside the channel axis");
    channels += in.extent(1);
  }
  shape[1] = channels;
  out.resize(shape);
  const index_t B = shape[0], S = numel(shape) / (B * std::max<index_t>(channels, 1));
  for (index_t b = 0; b < B; ++b) {
    T* dst = out.data() + b * channels * S;
    for (const auto& in : inputs) {
      const index_t n = in.extent(1) * S;
      if (n) std::memcpy(dst, in.data() + b * n, static_cast<std::size_t>(n) * sizeof(T));
      dst += n;
    }
  }
}

/// The channel block [first, first + count) of a [B, C, ...] tensor, copied into out.
template <class T, std::size_t Rank>
void slice_channels(TensorView<const T, Rank> in, index_t first, index_t count, Tensor<T, Rank>& out) {
  RLMED_CHECK(first >= 0 && count >= 0 && first + count <= in.extent(1), "slice_channels: channels [", first, ", ",
              first + count, ") outside [0, ", in.extent(1), ")");
  Shape<Rank> shape = in.shape();
  shape[1] = count;
  out.resize(shape);
  const index_t B = shape[0], C = in.extent(1), S = numel(shape) / std::max<index_t>(B * count, 1);
  for (index_t b = 0; b < B; ++b)
    if (count)
      std::memcpy(out.data() + b * count * S, in.data() + (b * C + first) * S,
                  static_cast<std::size_t>(count * S) * sizeof(T));
}

/// Adds the channel block [first, first + count) of `in` into `acc` (same block shape).
template <class T, std::size_t Rank>
void add_channels(TensorView<const T, Rank> in, index_t first, TensorView<T, Rank> acc) {
  const index_t count = acc.extent(1), C = in.extent(1), B = in.extent(0);
  RLMED_CHECK(first >= 0 && first + count <= C && acc.extent(0) == B, "add_channels: block [", first, ", ",
              first + count, ") of ", in.shape(), " does not fit ", acc.shape());
  const index_t S = count ? acc.size() / (B * count) : 0;
  for (index_t b = 0; b < B; ++b) {
    const T* src = in.data() + (b * C + first) * S;
    T* dst = acc.data() + b * count * S;
    for (index_t i = 0; i < count * S; ++i) dst[i] += src[i];
  }
}

}  // namespace rlmed::nn
