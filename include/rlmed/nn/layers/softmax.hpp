// rlmed/nn/layers/softmax.hpp — softmax and log-softmax over the channel axis at every pixel
// (or over the features of a [B, F] input).
//
// Design: the per-pixel policy of the pixel agents is a softmax over action channels at every
// pixel; channels are strided by the spatial size in [B, C, spatial...] layout, so the loops run
// over (b, pixel) with the channel loop inside. Max-subtraction keeps exp finite.
//   softmax:     y = exp(x - max) / sum;   dx = y * (dy - sum_c dy*y)
//   log-softmax: y = x - max - log(sum);   dx = dy - softmax * sum_c dy
#pragma once

#include <cmath>

#include "rlmed/core/parallel.hpp"
#include "rlmed/nn/module.hpp"

namespace rlmed::nn {

namespace detail {
/// Calls f(base, stride) for every (batch, pixel) column of a [B, C, spatial...] tensor:
/// element c of the column is at base + c * stride.
template <std::size_t Rank, class F>
void for_each_channel_column(const Shape<Rank>& shape, F&& f) {
  static_assert(Rank >= 2);
  const index_t B = shape[0], C = shape[1];
  index_t S = 1;
  for (std::size_t a = 2; a < Rank; ++a) S *= shape[a];
  parallel_for(0, B * S, [&](index_t i) {
    const index_t b = i / S, s = i % S;
    f(b * C * S + s, S);
  }, 2048);
}
}  // namespace detail

template <bool Log, class T, std::size_t Rank>
class SoftmaxModule : public Stateless {
  static_assert(Rank >= 2, "softmax runs over axis 1 of [B, C, ...]");

 public:
  using value_type = T;
  static constexpr std::size_t in_rank = Rank;
  static constexpr std::size_t out_rank = Rank;
  struct Cache {
    Tensor<T, Rank> y;
    Tensor<T, Rank> dx;
  };

  void initialize(PhiloxStream&) {}
  Shape<Rank> output_shape(const Shape<Rank>& in) const { return in; }

  TensorView<const T, Rank> forward(Context&, TensorView<const T, Rank> x, Cache& cache) {
    cache.y.resize(x.shape());
    const index_t C = x.extent(1);
    const T* in = x.data();
    T* out = cache.y.data();
    detail::for_each_channel_column(x.shape(), [&](index_t base, index_t stride) {
      T m = in[base];
      for (index_t c = 1; c < C; ++c) m = std::max(m, in[base + c * stride]);
      T sum = 0;
      for (index_t c = 0; c < C; ++c) sum += std::exp(in[base + c * stride] - m);
      if constexpr (Log) {
        const T lse = m + std::log(sum);
        for (index_t c = 0; c < C; ++c) out[base + c * stride] = in[base + c * stride] - lse;
      } else {
        for (index_t c = 0; c < C; ++c) out[base + c * stride] = std::exp(in[base + c * stride] - m) / sum;
      }
    });
    return cache.y.view();
  }

  TensorView<const T, Rank> backward(Context&, Cache& cache, TensorView<const T, Rank> dy) {
    detail::check_grad_shape(dy, cache.y.shape(), Log ? "LogSoftmax" : "Softmax");
    cache.dx.resize(dy.shape());
    const index_t C = dy.extent(1);
    const T *y = cache.y.data(), *g = dy.data();
    T* dx = cache.dx.data();
    detail::for_each_channel_column(dy.shape(), [&](index_t base, index_t stride) {
      T s = 0;
      if constexpr (Log) {
        for (index_t c = 0; c < C; ++c) s += g[base + c * stride];
        for (index_t c = 0; c < C; ++c) {
          const index_t i = base + c * stride;
          dx[i] = g[i] - std::exp(y[i]) * s;
        }
      } else {
        for (index_t c = 0; c < C; ++c) s += g[base + c * stride] * y[base + c * stride];
        for (index_t c = 0; c < C; ++c) {
          const index_t i = base + c * stride;
          dx[i] = y[i] * (g[i] - s);
        }
      }
    });
    return cache.dx.view();
  }
};

template <bool Log>
struct SoftmaxSpec {
  static constexpr index_t in_channels = kAnyChannels;
  static constexpr index_t out_channels(index_t c) { return c; }
  template <class T, std::size_t Rank>
  using module = SoftmaxModule<Log, T, Rank>;
};
/// Softmax over channels (axis 1) at every pixel.
using Softmax = SoftmaxSpec<false>;
/// Log-softmax over channels (axis 1) at every pixel.
using LogSoftmax = SoftmaxSpec<true>;

}  // namespace rlmed::nn
