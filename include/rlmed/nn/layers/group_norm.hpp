// rlmed/nn/layers/group_norm.hpp — group normalisation (Wu & He 2018) of [B, C, spatial...].
//
// Design: statistics per (sample, group of C/G channels) — independent of the batch, so it
// behaves the same at batch 1 (pixel agents, registration) and in training. Affine per channel.
// (sample, group) pairs run in parallel, each summed in fixed order: deterministic.
#pragma once

#include <cmath>

#include "rlmed/core/parallel.hpp"
#include "rlmed/nn/module.hpp"

namespace rlmed::nn {

template <index_t C, index_t G, class T, std::size_t Rank>
class GroupNormModule {
  static_assert(Rank >= 2 && G >= 1 && C % G == 0, "GroupNorm: C must be a multiple of G");

 public:
  using value_type = T;
  static constexpr std::size_t in_rank = Rank;
  static constexpr std::size_t out_rank = Rank;
  struct Cache {
    TensorView<const T, Rank> x;
    Tensor<T, Rank> y;
    Tensor<T, Rank> dx;
    Tensor<T, 2> mean, invstd;  // [B, G]
  };

  explicit GroupNormModule(double epsilon = 1e-5) : eps(epsilon), weight(Shape<1>{C}), bias(Shape<1>{C}) {
    fill(weight.value, T(1));
  }
  void initialize(PhiloxStream&) {
    fill(weight.value, T(1));
    fill(bias.value, T(0));
  }
  Shape<Rank> output_shape(const Shape<Rank>& in) const {
    RLMED_CHECK(in[1] == C, "GroupNorm<", C, ", ", G, ">: input has ", in[1], " channels (shape ", in, ")");
    return in;
  }

  TensorView<const T, Rank> forward(Context&, TensorView<const T, Rank> x, Cache& cache) {
    output_shape(x.shape());
    const index_t B = detail::batch_of(x, "GroupNorm"), S = x.size() / (B * C), CG = C / G;
    cache.x = x;
    cache.y.resize(x.shape());
    cache.mean.resize(Shape<2>{B, G});
    cache.invstd.resize(Shape<2>{B, G});
    parallel_for(0, B * G, [&](index_t bg) {
      const index_t b = bg / G, g = bg % G;
      const T* p = x.data() + (b * C + g * CG) * S;
      const index_t n = CG * S;
      double mean = 0, var = 0;
      for (index_t i = 0; i < n; ++i) mean += p[i];
      mean /= double(n);
      for (index_t i = 0; i < n; ++i) var += (p[i] - mean) * (p[i] - mean);
      var /= double(n);
      const T mu = static_cast<T>(mean), inv = static_cast<T>(1.0 / std::sqrt(var + eps));
      cache.mean(b, g) = mu;
      cache.invstd(b, g) = inv;
      T* q = cache.y.data() + (b * C + g * CG) * S;
      for (index_t c = 0; c < CG; ++c) {
        const T w = weight.value(g * CG + c), beta = bias.value(g * CG + c);
        for (index_t s = 0; s < S; ++s) q[c * S + s] = w * (p[c * S + s] - mu) * inv + beta;
      }
    }, 1);
    return cache.y.view();
  }

  TensorView<const T, Rank> backward(Context&, Cache& cache, TensorView<const T, Rank> dy) {
    detail::check_grad_shape(dy, cache.y.shape(), "GroupNorm");
    const auto x = cache.x;
    const index_t B = x.extent(0), S = x.size() / (B * C), CG = C / G, n = CG * S;
    cache.dx.resize(x.shape());
    // Parameter gradients: per channel over (b, s), channels in parallel (fixed order in each).
    parallel_for(0, C, [&](index_t c) {
      const index_t g = c / CG;
      double sw = 0, sb = 0;
      for (index_t b = 0; b < B; ++b) {
        const T* p = x.data() + (b * C + c) * S;
        const T* d = dy.data() + (b * C + c) * S;
        for (index_t s = 0; s < S; ++s) {
          sw += d[s] * (p[s] - cache.mean(b, g)) * cache.invstd(b, g);
          sb += d[s];
        }
      }
      weight.grad(c) += static_cast<T>(sw);
      bias.grad(c) += static_cast<T>(sb);
    }, 1);
    parallel_for(0, B * G, [&](index_t bg) {
      const index_t b = bg / G, g = bg % G;
      const T mu = cache.mean(b, g), inv = cache.invstd(b, g);
      const T* p = x.data() + (b * C + g * CG) * S;
      const T* d = dy.data() + (b * C + g * CG) * S;
      T* o = cache.dx.data() + (b * C + g * CG) * S;
      double sg = 0, sgx = 0;
      for (index_t c = 0; c < CG; ++c) {
        const T w = weight.value(g * CG + c);
        for (index_t s = 0; s < S; ++s) {
          const T gi = d[c * S + s] * w;
          sg += gi;
          sgx += gi * (p[c * S + s] - mu) * inv;
        }
      }
      const T k = inv / static_cast<T>(n);
      for (index_t c = 0; c < CG; ++c) {
        const T w = weight.value(g * CG + c);
        for (index_t s = 0; s < S; ++s) {
          const T xhat = (p[c * S + s] - mu) * inv;
          o[c * S + s] = k * (static_cast<T>(n) * d[c * S + s] * w - static_cast<T>(sg) - xhat * static_cast<T>(sgx));
        }
      }
    }, 1);
    return cache.dx.view();
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    visit(join_name(prefix, "weight"), weight);
    visit(join_name(prefix, "bias"), bias);
  }
  template <class V>
  void buffers(V&&, std::string_view = {}) {}

  double eps;
  Parameter<T, 1> weight, bias;
};

/// Spec: group normalisation of C channels in G groups.
template <index_t C, index_t G>
struct GroupNorm {
  static constexpr index_t in_channels = C;
  static constexpr index_t out_channels(index_t) { return C; }
  template <class T, std::size_t Rank>
  using module = GroupNormModule<C, G, T, Rank>;
};

}  // namespace rlmed::nn
