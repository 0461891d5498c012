// rlmed/nn/layers/dropout.hpp — inverted dropout driven by the context's Philox stream.
//
// Design: in training each element is kept with probability 1-p and scaled by 1/(1-p); the
// mask comes from ctx.rng (one word per element, stateless fill), so a run is reproducible and
// CPU/GPU agree. In evaluation (ctx.training == false) or with p == 0 it is the identity.
#pragma once

#include "rlmed/core/random.hpp"
#include "rlmed/nn/module.hpp"

namespace rlmed::nn {

template <class T, std::size_t Rank>
class DropoutModule : public Stateless {
 public:
  using value_type = T;
  static constexpr std::size_t in_rank = Rank;
  static constexpr std::size_t out_rank = Rank;
  struct Cache {
    Tensor<T, Rank> mask;  // 0 or 1/(1-p); empty when inactive
    Tensor<T, Rank> y;
    Tensor<T, Rank> dx;
    bool active = false;
  };

  DropoutModule() = default;
  explicit DropoutModule(double probability) : p(probability) {}
  void initialize(PhiloxStream&) {}
  Shape<Rank> output_shape(const Shape<Rank>& in) const { return in; }

  TensorView<const T, Rank> forward(Context& ctx, TensorView<const T, Rank> x, Cache& cache) {
    RLMED_CHECK(p >= 0.0 && p < 1.0, "Dropout: probability ", p, " outside [0, 1)");
    cache.active = ctx.training && p > 0.0;
    if (!cache.active) return x;
    RLMED_CHECK(ctx.rng != nullptr, "Dropout in training mode needs ctx.rng (a Philox stream)");
    cache.mask.resize(x.shape());
    cache.y.resize(x.shape());
    fill_uniform(cache.mask.view(), *ctx.rng);
    const T keep_scale = static_cast<T>(1.0 / (1.0 - p));
    T* m = cache.mask.data();
    T* y = cache.y.data();
    for (index_t i = 0; i < x.size(); ++i) {
      m[i] = m[i] >= static_cast<T>(p) ? keep_scale : T(0);
      y[i] = x.data()[i] * m[i];
    }
    return cache.y.view();
  }

  TensorView<const T, Rank> backward(Context&, Cache& cache, TensorView<const T, Rank> dy) {
    if (!cache.active) return dy;
    detail::check_grad_shape(dy, cache.mask.shape(), "Dropout");
    cache.dx.resize(dy.shape());
    for (index_t i = 0; i < dy.size(); ++i) cache.dx.data()[i] = dy.data()[i] * cache.mask.data()[i];
    return cache.dx.view();
  }

  double p = 0.5;
};

struct Dropout {
  static constexpr index_t in_channels = kAnyChannels;
  static constexpr index_t out_channels(index_t c) { return c; }
  template <class T, std::size_t Rank>
  using module = DropoutModule<T, Rank>;
};

}  // namespace rlmed::nn
