// rlmed/nn/layers/self_attention.hpp — the self-attention module (SAM) of PixelDRL-MG.
//
//   g = W * f + f      (W a 1x1 convolution with bias, C -> C)
//   M = softmax(g)     f' = f ⊙ M
//
// The paper (seed 002, eq. 1) does not say over which axis the softmax runs. The default here
// is over the spatial positions of each channel (`AttentionAxis::spatial`): every pixel's weight
// depends on the whole image, which is the global context the paper motivates SAM with. The
// per-pixel channel softmax is available as `AttentionAxis::channels` for the ablation.
// Backward: dM = df' ⊙ f; dg = softmax'(dM); df = df' ⊙ M + dg + W^T dg.
#pragma once

#include <cmath>

#include "rlmed/nn/layers/conv.hpp"

namespace rlmed::nn {

enum class AttentionAxis { spatial, channels };

template <int Dims, index_t C, class T>
class SelfAttentionModule {
 public:
  using value_type = T;
  static constexpr std::size_t in_rank = Dims + 2;
  static constexpr std::size_t out_rank = Dims + 2;
  using Proj = ConvModule<Dims, C, C, 1, T>;
  struct Cache {
    TensorView<const T, in_rank> f;
    typename Proj::Cache proj;
    Tensor<T, in_rank> m, y, dg, dx;
  };

  explicit SelfAttentionModule(AttentionAxis a = AttentionAxis::spatial) : axis(a) {}
  void initialize(PhiloxStream& rng) { proj.initialize(rng); }
  Shape<out_rank> output_shape(const Shape<in_rank>& in) const { return proj.output_shape(in); }

  TensorView<const T, out_rank> forward(Context& ctx, TensorView<const T, in_rank> f, Cache& cache) {
    proj.output_shape(f.shape());  // validate before the cache changes
    cache.f = f;
    const auto wf = proj.forward(ctx, f, cache.proj);
    cache.m.resize(f.shape());
    cache.y.resize(f.shape());
    const index_t n = f.size();
    for (index_t i = 0; i < n; ++i) cache.m.data()[i] = wf.data()[i] + f.data()[i];
    for_each_group(f.shape(), [&](index_t base, index_t stride, index_t len) {
      T* g = cache.m.data();
      T mx = g[base];
      for (index_t k = 1; k < len; ++k) mx = std::max(mx, g[base + k * stride]);
      T sum = 0;
      for (index_t k = 0; k < len; ++k) {
        const index_t i = base + k * stride;
        g[i] = std::exp(g[i] - mx);
        sum += g[i];
      }
      for (index_t k = 0; k < len; ++k) g[base + k * stride] /= sum;
    });
    for (index_t i = 0; i < n; ++i) cache.y.data()[i] = f.data()[i] * cache.m.data()[i];
    return cache.y.view();
  }

  TensorView<const T, in_rank> backward(Context& ctx, Cache& cache, TensorView<const T, out_rank> dy) {
    detail::check_grad_shape(dy, cache.y.shape(), "SelfAttention");
    const auto f = cache.f;
    cache.dg.resize(f.shape());
    const T *m = cache.m.data(), *d = dy.data();
    T* dg = cache.dg.data();
    for_each_group(f.shape(), [&](index_t base, index_t stride, index_t len) {
      T s = 0;
      for (index_t k = 0; k < len; ++k) {
        const index_t i = base + k * stride;
        s += d[i] * f.data()[i] * m[i];  // sum of dM * M
      }
      for (index_t k = 0; k < len; ++k) {
        const index_t i = base + k * stride;
        dg[i] = m[i] * (d[i] * f.data()[i] - s);
      }
    });
    Context inner = ctx;
    inner.input_grad = true;
    const auto dproj = proj.backward(inner, cache.proj, cache.dg.view());
    cache.dx.resize(f.shape());
    for (index_t i = 0; i < f.size(); ++i) cache.dx.data()[i] = d[i] * m[i] + dg[i] + dproj.data()[i];
    return cache.dx.view();
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    proj.parameters(visit, join_name(prefix, "proj"));
  }
  template <class V>
  void buffers(V&&, std::string_view = {}) {}

  AttentionAxis axis;
  Proj proj;

 private:
  // Calls f(base, stride, len) for every softmax group: (b, c) rows of S for the spatial axis,
  // (b, pixel) columns of C for the channel axis. Groups are disjoint: parallel and race-free.
  template <class F>
  void for_each_group(const Shape<in_rank>& shape, F&& fn) const {
    const index_t B = shape[0], S = numel(shape) / (B * C);
    if (axis == AttentionAxis::spatial) {
      parallel_for(0, B * C, [&](index_t bc) { fn(bc * S, index_t{1}, S); }, 1);
    } else {
      parallel_for(0, B * S, [&](index_t i) { fn((i / S) * C * S + i % S, S, C); }, 1024);
    }
  }
};

/// Spec: PixelDRL-MG self-attention over C channels of a Dims-dimensional feature map.
template <int Dims, index_t C>
struct SelfAttention {
  static constexpr std::size_t in_rank = Dims + 2;
  static constexpr index_t in_channels = C;
  static constexpr index_t out_channels(index_t) { return C; }
  template <class T, std::size_t Rank = in_rank>
  using module = SelfAttentionModule<Dims, C, T>;
};

}  // namespace rlmed::nn
