// rlmed/nn/layers/upsample.hpp — resizing of [B, C, spatial...] by nearest or (bi/tri)linear
// interpolation, to a scale factor or an explicit output size; align_corners is explicit.
//
// Design: interpolation is separable, so per axis we precompute for every output index two
// source indices and two weights (nearest: one index, weight 1); the 2^Dims corner products
// are formed on the fly. Source coordinates follow PyTorch's F.interpolate:
//   nearest:                 src = floor(o * in / out)
//   linear, align_corners:   src = o * (in - 1) / (out - 1)
//   linear, otherwise:       src = max(0, (o + 0.5) * in / out - 0.5)
// Backward scatters within one (b, c) plane per thread: deterministic.
#pragma once

#include <array>
#include <cmath>
#include <vector>

#include "rlmed/core/parallel.hpp"
#include "rlmed/nn/module.hpp"

namespace rlmed::nn {

enum class Interpolation { nearest, linear };

template <int Dims>
struct UpsampleConfig {
  Interpolation mode = Interpolation::linear;
  bool align_corners = false;
  std::array<index_t, Dims> scale{};        ///< integer scale per axis (used when size is 0)
  std::array<index_t, Dims> size{};         ///< explicit output size per axis (0 = use scale)
  UpsampleConfig() { scale.fill(2); }
  static UpsampleConfig by_scale(index_t s, Interpolation m = Interpolation::linear, bool align = false) {
    UpsampleConfig c;
    c.scale.fill(s);
    c.mode = m;
    c.align_corners = align;
    return c;
  }
  static UpsampleConfig to_size(const std::array<index_t, Dims>& out, Interpolation m = Interpolation::linear,
                                bool align = false) {
    UpsampleConfig c;
    c.size = out;
    c.mode = m;
    c.align_corners = align;
    return c;
  }
};

template <int Dims, class T>
class UpsampleModule : public Stateless {
  static_assert(Dims >= 1 && Dims <= 3);

 public:
  using value_type = T;
  static constexpr std::size_t in_rank = Dims + 2;
  static constexpr std::size_t out_rank = Dims + 2;
  using Config = UpsampleConfig<Dims>;

  struct Cache {
    Shape<in_rank> x_shape{};
    Tensor<T, out_rank> y;
    Tensor<T, in_rank> dx;
  };

  UpsampleModule() = default;
  explicit UpsampleModule(Config cfg) : config(cfg) {}
  void initialize(PhiloxStream&) {}

  Shape<out_rank> output_shape(const Shape<in_rank>& in) const {
    Shape<out_rank> out = in;
    for (int a = 0; a < Dims; ++a) {
      out[2 + a] = config.size[a] > 0 ? config.size[a] : in[2 + a] * config.scale[a];
      RLMED_CHECK(out[2 + a] >= 1 && in[2 + a] >= 1, "Upsample: cannot resize axis ", a, " from ", in[2 + a], " to ",
                  out[2 + a]);
    }
    return out;
  }

  TensorView<const T, out_rank> forward(Context&, TensorView<const T, in_rank> x, Cache& cache) {
    detail::batch_of(x, "Upsample");
    const auto out_shape = output_shape(x.shape());  // validate before the cache changes
    cache.x_shape = x.shape();
    cache.y.resize(out_shape);
    prepare(x.shape(), cache.y.shape());
    const index_t planes = x.extent(0) * x.extent(1);
    parallel_for(0, planes, [&](index_t pl) {
      const T* xp = x.data() + pl * in_size_;
      T* yp = cache.y.data() + pl * out_size_;
      index_t o = 0;
      for (index_t oz = 0; oz < out_[0]; ++oz)
        for (index_t oy = 0; oy < out_[1]; ++oy)
          for (index_t ox = 0; ox < out_[2]; ++ox, ++o) {
            T v = 0;
            for_corners(oz, oy, ox, [&](index_t at, T wgt) { v += wgt * xp[at]; });
            yp[o] = v;
          }
    }, 1);
    return cache.y.view();
  }

  TensorView<const T, in_rank> backward(Context&, Cache& cache, TensorView<const T, out_rank> dy) {
    detail::check_grad_shape(dy, cache.y.shape(), "Upsample");
    cache.dx.resize(cache.x_shape);
    fill(cache.dx.view(), T(0));
    prepare(cache.x_shape, cache.y.shape());
    const index_t planes = cache.x_shape[0] * cache.x_shape[1];
    parallel_for(0, planes, [&](index_t pl) {
      const T* g = dy.data() + pl * out_size_;
      T* dxp = cache.dx.data() + pl * in_size_;
      index_t o = 0;
      for (index_t oz = 0; oz < out_[0]; ++oz)
        for (index_t oy = 0; oy < out_[1]; ++oy)
          for (index_t ox = 0; ox < out_[2]; ++ox, ++o)
            for_corners(oz, oy, ox, [&](index_t at, T wgt) { dxp[at] += wgt * g[o]; });
    }, 1);
    return cache.dx.view();
  }

  Config config;

 private:
  struct Tap {
    index_t i0, i1;
    T w0, w1;
  };

  void prepare(const Shape<in_rank>& in, const Shape<out_rank>& out) {
    in_ = {1, 1, 1};
    out_ = {1, 1, 1};
    for (int a = 0; a < Dims; ++a) {
      in_[3 - Dims + a] = in[2 + a];
      out_[3 - Dims + a] = out[2 + a];
    }
    in_size_ = in_[0] * in_[1] * in_[2];
    out_size_ = out_[0] * out_[1] * out_[2];
    for (int t = 0; t < 3; ++t) {
      auto& taps = taps_[t];
      taps.resize(static_cast<std::size_t>(out_[t]));
      const index_t I = in_[t], O = out_[t];
      for (index_t o = 0; o < O; ++o) {
        Tap tap{0, 0, T(1), T(0)};
        if (I == O) {
          tap.i0 = tap.i1 = o;
        } else if (config.mode == Interpolation::nearest) {
          tap.i0 = tap.i1 = std::min<index_t>(static_cast<index_t>(std::floor(double(o) * double(I) / double(O))), I - 1);
        } else {
          double src = 0;
          if (config.align_corners) {
            src = O > 1 ? double(o) * double(I - 1) / double(O - 1) : 0.0;
          } else {
            src = std::max(0.0, (double(o) + 0.5) * double(I) / double(O) - 0.5);
          }
          tap.i0 = std::min<index_t>(static_cast<index_t>(std::floor(src)), I - 1);
          tap.i1 = std::min<index_t>(tap.i0 + 1, I - 1);
          const double l1 = src - double(tap.i0);
          tap.w0 = static_cast<T>(1.0 - l1);
          tap.w1 = static_cast<T>(l1);
        }
        taps[static_cast<std::size_t>(o)] = tap;
      }
    }
  }

  template <class F>
  void for_corners(index_t oz, index_t oy, index_t ox, F&& f) const {
    const Tap& z = taps_[0][static_cast<std::size_t>(oz)];
    const Tap& y = taps_[1][static_cast<std::size_t>(oy)];
    const Tap& x = taps_[2][static_cast<std::size_t>(ox)];
    const index_t zi[2] = {z.i0, z.i1}, yi[2] = {y.i0, y.i1}, xi[2] = {x.i0, x.i1};
    const T zw[2] = {z.w0, z.w1}, yw[2] = {y.w0, y.w1}, xw[2] = {x.w0, x.w1};
    for (int a = 0; a < 2; ++a) {
      if (zw[a] == T(0)) continue;
      for (int b = 0; b < 2; ++b) {
        if (yw[b] == T(0)) continue;
        for (int c = 0; c < 2; ++c) {
          if (xw[c] == T(0)) continue;
          f((zi[a] * in_[1] + yi[b]) * in_[2] + xi[c], zw[a] * yw[b] * xw[c]);
        }
      }
    }
  }

  std::array<index_t, 3> in_{1, 1, 1}, out_{1, 1, 1};
  index_t in_size_ = 1, out_size_ = 1;
  std::array<std::vector<Tap>, 3> taps_;
};

template <int Dims>
struct Upsample {
  static constexpr std::size_t in_rank = Dims + 2;
  static constexpr index_t in_channels = kAnyChannels;
  static constexpr index_t out_channels(index_t c) { return c; }
  template <class T, std::size_t Rank = in_rank>
  using module = UpsampleModule<Dims, T>;
};

}  // namespace rlmed::nn
