// rlmed/nn/layers/pool.hpp — max and average pooling over 1D/2D/3D windows.
//
// Design: window geometry shared with convolution (window.hpp); stride defaults to the kernel
// size, padding is run-time. Max pooling records the argmax offset per output so backward is a
// scatter within one (b, c) plane: planes are independent, so it parallelises without races.
// Padded positions never win a max (PyTorch semantics: they are -inf). Average pooling divides
// by the full window size, padding included (PyTorch's count_include_pad=True default).
#pragma once

#include <cstdint>
#include <limits>

#include "rlmed/nn/layers/window.hpp"
#include "rlmed/nn/module.hpp"

namespace rlmed::nn {

template <int Dims, index_t K, bool Max, class T>
class PoolModule : public Stateless {
 public:
  using value_type = T;
  static constexpr std::size_t in_rank = Dims + 2;
  static constexpr std::size_t out_rank = Dims + 2;
  using Config = WindowConfig<Dims>;

  struct Cache {
    Shape<in_rank> x_shape{};
    Tensor<T, out_rank> y;
    Tensor<std::int64_t, out_rank> argmax;  // offset in the input plane (max pooling only)
    Tensor<T, in_rank> dx;
  };

  PoolModule() : config(K, 0, 1) {}
  explicit PoolModule(Config cfg) : config(cfg) {}
  void initialize(PhiloxStream&) {}

  Shape<out_rank> output_shape(const Shape<in_rank>& in) const {
    const Window3 w = window(in);
    Shape<out_rank> out = in;
    for (int a = 0; a < Dims; ++a) out[2 + a] = w.out[3 - Dims + a];
    return out;
  }

  TensorView<const T, out_rank> forward(Context&, TensorView<const T, in_rank> x, Cache& cache) {
    detail::batch_of(x, "Pool");
    const auto out_shape = output_shape(x.shape());  // validate before the cache changes
    cache.x_shape = x.shape();
    cache.y.resize(out_shape);
    if constexpr (Max) cache.argmax.resize(cache.y.shape());
    const Window3 w = window(x.shape());
    const index_t planes = x.extent(0) * x.extent(1), isize = w.in_size(), osize = w.out_size();
    const T inv = T(1) / static_cast<T>(w.kernel_size());
    parallel_for(0, planes, [&](index_t pl) {
      const T* xp = x.data() + pl * isize;
      T* yp = cache.y.data() + pl * osize;
      std::int64_t* ap = Max ? cache.argmax.data() + pl * osize : nullptr;
      index_t o = 0;
      for (index_t oz = 0; oz < w.out[0]; ++oz)
        for (index_t oy = 0; oy < w.out[1]; ++oy)
          for (index_t ox = 0; ox < w.out[2]; ++ox, ++o) {
            T best = -std::numeric_limits<T>::infinity(), sum = 0;
            std::int64_t best_at = -1;
            for_each_window_tap(w, oz, oy, ox, [&](index_t at) {
              const T v = xp[at];
              if constexpr (Max) {
                if (v > best || best_at < 0 || v != v) {  // NaN propagates, as in PyTorch
                  best = v;
                  best_at = at;
                }
              } else {
                sum += v;
              }
            });
            if constexpr (Max) {
              yp[o] = best;
              ap[o] = best_at;
            } else {
              yp[o] = sum * inv;
            }
          }
    }, 1);
    return cache.y.view();
  }

  TensorView<const T, in_rank> backward(Context&, Cache& cache, TensorView<const T, out_rank> dy) {
    detail::check_grad_shape(dy, cache.y.shape(), "Pool");
    cache.dx.resize(cache.x_shape);
    fill(cache.dx.view(), T(0));
    const Window3 w = window(cache.x_shape);
    const index_t planes = cache.x_shape[0] * cache.x_shape[1], isize = w.in_size(), osize = w.out_size();
    const T inv = T(1) / static_cast<T>(w.kernel_size());
    parallel_for(0, planes, [&](index_t pl) {
      const T* g = dy.data() + pl * osize;
      T* dxp = cache.dx.data() + pl * isize;
      if constexpr (Max) {
        const std::int64_t* ap = cache.argmax.data() + pl * osize;
        for (index_t o = 0; o < osize; ++o)
          if (ap[o] >= 0) dxp[ap[o]] += g[o];
      } else {
        index_t o = 0;
        for (index_t oz = 0; oz < w.out[0]; ++oz)
          for (index_t oy = 0; oy < w.out[1]; ++oy)
            for (index_t ox = 0; ox < w.out[2]; ++ox, ++o)
              for_each_window_tap(w, oz, oy, ox, [&](index_t at) { dxp[at] += g[o] * inv; });
      }
    }, 1);
    return cache.dx.view();
  }

  Config config;

 private:
  Window3 window(const Shape<in_rank>& in) const {
    std::array<index_t, Dims> k{};
    k.fill(K);
    for (int a = 0; a < Dims; ++a)
      RLMED_CHECK(config.padding[a] * 2 <= K, "Pool: padding ", config.padding[a], " on axis ", a,
                  " exceeds half the kernel ", K, " (a window would lie entirely in the padding)");
    return make_window<Dims>(in, k, config, Max ? "MaxPool" : "AvgPool");
  }
};

template <int Dims, index_t K, bool Max>
struct PoolSpec {
  static constexpr std::size_t in_rank = Dims + 2;
  static constexpr index_t in_channels = kAnyChannels;
  static constexpr index_t out_channels(index_t c) { return c; }
  template <class T, std::size_t Rank = in_rank>
  using module = PoolModule<Dims, K, Max, T>;
};
/// Max pooling with a K^Dims window (stride K unless configured).
template <int Dims, index_t K>
using MaxPool = PoolSpec<Dims, K, true>;
/// Average pooling with a K^Dims window (stride K unless configured), padding counted.
template <int Dims, index_t K>
using AvgPool = PoolSpec<Dims, K, false>;

}  // namespace rlmed::nn
