// rlmed/nn/layers/dueling.hpp — the dueling Q head (Wang et al. 2016): Q = V + A - mean(A).
//
// Design: two linear streams from the same features, a scalar state value V and per-action
// advantages A; subtracting mean(A) makes the decomposition identifiable. Parameters are named
// "value.*" and "advantage.*".
//   x [B, F]  ->  V [B, 1], A [B, Actions]  ->  Q [B, Actions]
//   dV_b = sum_j dQ_bj;   dA_bj = dQ_bj - mean_k dQ_bk;   dx = dx_V + dx_A
#pragma once

#include "rlmed/nn/layers/linear.hpp"

namespace rlmed::nn {

template <index_t Actions, class T>
class DuelingHeadModule {
  static_assert(Actions >= 1);

 public:
  using value_type = T;
  static constexpr std::size_t in_rank = 2;
  static constexpr std::size_t out_rank = 2;
  struct Cache {
    typename LinearModule<1, T>::Cache value;
    typename LinearModule<Actions, T>::Cache advantage;
    Tensor<T, 2> q, dv, da, dx;
  };

  DuelingHeadModule() = default;
  explicit DuelingHeadModule(index_t in_features) { setup_features(in_features); }
  void setup_features(index_t in_features) {
    value.setup_features(in_features);
    advantage.setup_features(in_features);
  }
  Shape<2> setup(const Shape<2>& in) {
    setup_features(in[1]);
    return output_shape(in);
  }
  Shape<2> output_shape(const Shape<2>& in) const { return advantage.output_shape(in); }
  void initialize(PhiloxStream& rng) {
    value.initialize(rng);
    advantage.initialize(rng);
  }

  TensorView<const T, 2> forward(Context& ctx, TensorView<const T, 2> x, Cache& cache) {
    const auto v = value.forward(ctx, x, cache.value);
    const auto a = advantage.forward(ctx, x, cache.advantage);
    const index_t B = x.extent(0);
    cache.q.resize(Shape<2>{B, Actions});
    for (index_t b = 0; b < B; ++b) {
      T mean = 0;
      for (index_t j = 0; j < Actions; ++j) mean += a(b, j);
      mean /= T(Actions);
      for (index_t j = 0; j < Actions; ++j) cache.q(b, j) = v(b, 0) + a(b, j) - mean;
    }
    return cache.q.view();
  }

  TensorView<const T, 2> backward(Context& ctx, Cache& cache, TensorView<const T, 2> dq) {
    detail::check_grad_shape(dq, cache.q.shape(), "DuelingHead");
    const index_t B = dq.extent(0);
    cache.dv.resize(Shape<2>{B, 1});
    cache.da.resize(Shape<2>{B, Actions});
    for (index_t b = 0; b < B; ++b) {
      T sum = 0;
      for (index_t j = 0; j < Actions; ++j) sum += dq(b, j);
      cache.dv(b, 0) = sum;
      for (index_t j = 0; j < Actions; ++j) cache.da(b, j) = dq(b, j) - sum / T(Actions);
    }
    const auto dxv = value.backward(ctx, cache.value, cache.dv.view());
    const auto dxa = advantage.backward(ctx, cache.advantage, cache.da.view());
    if (!ctx.input_grad) return {};
    cache.dx.resize(dxv.shape());
    for (index_t i = 0; i < dxv.size(); ++i) cache.dx.data()[i] = dxv.data()[i] + dxa.data()[i];
    return cache.dx.view();
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    value.parameters(visit, join_name(prefix, "value"));
    advantage.parameters(visit, join_name(prefix, "advantage"));
  }
  template <class V>
  void buffers(V&&, std::string_view = {}) {}

  LinearModule<1, T> value;
  LinearModule<Actions, T> advantage;
};

/// Spec: dueling Q head with `Actions` outputs.
template <index_t Actions>
struct DuelingHead {
  static constexpr std::size_t in_rank = 2;
  static constexpr index_t in_channels = kAnyChannels;
  static constexpr index_t out_channels(index_t) { return Actions; }
  template <class T, std::size_t Rank = in_rank>
  using module = DuelingHeadModule<Actions, T>;
};

}  // namespace rlmed::nn
