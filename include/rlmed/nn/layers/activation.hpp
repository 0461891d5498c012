// rlmed/nn/layers/activation.hpp — elementwise activations of any rank: ReLU, LeakyReLU, ELU,
// Tanh, Sigmoid. Forward and backward of each are one small struct side by side.
//
// Design: an activation is an Op with value(x) and derivative(x, y) as RLMED_HOST_DEVICE
// functions (written once for CPU and CUDA); one generic module applies it. The derivative may
// use the input or the output, whichever is cheaper and stabler (tanh, sigmoid use y).
#pragma once

#include <cmath>

#include "rlmed/core/config.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/nn/module.hpp"

namespace rlmed::nn {

namespace op {
struct Relu {
  template <class T>
  RLMED_HOST_DEVICE T value(T x) const { return x > T(0) ? x : T(0); }
  template <class T>
  RLMED_HOST_DEVICE T derivative(T x, T) const { return x > T(0) ? T(1) : T(0); }
};
struct LeakyRelu {
  double slope = 0.01;
  template <class T>
  RLMED_HOST_DEVICE T value(T x) const { return x > T(0) ? x : T(slope) * x; }
  template <class T>
  RLMED_HOST_DEVICE T derivative(T x, T) const { return x > T(0) ? T(1) : T(slope); }
};
struct Elu {
  double alpha = 1.0;
  template <class T>
  RLMED_HOST_DEVICE T value(T x) const { return x > T(0) ? x : T(alpha) * std::expm1(x); }
  template <class T>
  RLMED_HOST_DEVICE T derivative(T x, T y) const { return x > T(0) ? T(1) : y + T(alpha); }
};
struct Tanh {
  template <class T>
  RLMED_HOST_DEVICE T value(T x) const { return std::tanh(x); }
  template <class T>
  RLMED_HOST_DEVICE T derivative(T, T y) const { return T(1) - y * y; }
};
struct Sigmoid {
  template <class T>
  RLMED_HOST_DEVICE T value(T x) const {
    // Split by sign so exp never overflows.
    if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
    const T e = std::exp(x);
    return e / (T(1) + e);
  }
  template <class T>
  RLMED_HOST_DEVICE T derivative(T, T y) const { return y * (T(1) - y); }
};
}  // namespace op

template <class Op, class T, std::size_t Rank>
class ActivationModule : public Stateless {
 public:
  using value_type = T;
  static constexpr std::size_t in_rank = Rank;
  static constexpr std::size_t out_rank = Rank;

  struct Cache {
    TensorView<const T, Rank> x;
    Tensor<T, Rank> y;
    Tensor<T, Rank> dx;
  };

  ActivationModule() = default;
  explicit ActivationModule(Op o) : op(o) {}

  void initialize(PhiloxStream&) {}
  Shape<Rank> output_shape(const Shape<Rank>& in) const { return in; }

  TensorView<const T, Rank> forward(Context&, TensorView<const T, Rank> x, Cache& cache) {
    cache.x = x;
    cache.y.resize(x.shape());
    const T* in = x.data();
    T* out = cache.y.data();
    parallel_for(0, x.size(), [&](index_t i) { out[i] = op.value(in[i]); }, 1 << 15);
    return cache.y.view();
  }

  TensorView<const T, Rank> backward(Context&, Cache& cache, TensorView<const T, Rank> dy) {
    detail::check_grad_shape(dy, cache.y.shape(), "activation");
    cache.dx.resize(dy.shape());
    const T *x = cache.x.data(), *y = cache.y.data(), *g = dy.data();
    T* dx = cache.dx.data();
    parallel_for(0, dy.size(), [&](index_t i) { dx[i] = g[i] * op.derivative(x[i], y[i]); }, 1 << 15);
    return cache.dx.view();
  }

  Op op{};
};

/// Spec of an activation: any rank, channels unchanged.
template <class Op>
struct ActivationSpec {
  static constexpr index_t in_channels = kAnyChannels;
  static constexpr index_t out_channels(index_t c) { return c; }
  template <class T, std::size_t Rank>
  using module = ActivationModule<Op, T, Rank>;
};

using ReLU = ActivationSpec<op::Relu>;
using LeakyReLU = ActivationSpec<op::LeakyRelu>;
using ELU = ActivationSpec<op::Elu>;
using Tanh = ActivationSpec<op::Tanh>;
using Sigmoid = ActivationSpec<op::Sigmoid>;

}  // namespace rlmed::nn
