// rlmed/nn/layers/batch_norm.hpp — batch normalisation over [B, C, spatial...] per channel.
//
// Design: PyTorch semantics — training normalises with the biased batch variance and updates
// running statistics with momentum (running_var from the unbiased variance); evaluation uses
// the running statistics. Statistics are accumulated in double per channel, channels in
// parallel (each channel's sums in fixed order: deterministic). Running statistics are buffers:
// saved in checkpoints, never touched by optimisers.
//   xhat = (x - mean) / sqrt(var + eps);  y = gamma * xhat + beta
//   dx = invstd / N * (N * g - sum(g) - xhat * sum(g * xhat)),  g = dy * gamma   (training)
#pragma once

#include <cmath>
#include <vector>

#include "rlmed/core/parallel.hpp"
#include "rlmed/nn/module.hpp"

namespace rlmed::nn {

struct BatchNormConfig {
  double eps = 1e-5;
  double momentum = 0.1;
};

template <index_t C, class T, std::size_t Rank>
class BatchNormModule {
  static_assert(Rank >= 2 && C >= 1);

 public:
  using value_type = T;
  static constexpr std::size_t in_rank = Rank;
  static constexpr std::size_t out_rank = Rank;
  struct Cache {
    TensorView<const T, Rank> x;
    Tensor<T, Rank> y;
    Tensor<T, Rank> dx;
    Tensor<T, 1> mean, invstd;  // of this forward (batch or running statistics)
    bool training = true;
  };

  explicit BatchNormModule(BatchNormConfig cfg = {})
      : config(cfg), weight(Shape<1>{C}), bias(Shape<1>{C}), running_mean(Shape<1>{C}), running_var(Shape<1>{C}, T(1)) {
    fill(weight.value, T(1));
  }
  void initialize(PhiloxStream&) {
    fill(weight.value, T(1));
    fill(bias.value, T(0));
    fill(running_mean, T(0));
    fill(running_var, T(1));
    num_batches_tracked() = 0;
  }
  Shape<Rank> output_shape(const Shape<Rank>& in) const {
    RLMED_CHECK(in[1] == C, "BatchNorm<", C, ">: input has ", in[1], " channels (shape ", in, ")");
    return in;
  }

  TensorView<const T, Rank> forward(Context& ctx, TensorView<const T, Rank> x, Cache& cache) {
    output_shape(x.shape());
    const index_t B = detail::batch_of(x, "BatchNorm"), S = x.size() / (B * C), N = B * S;
    cache.x = x;
    cache.training = ctx.training;
    cache.y.resize(x.shape());
    cache.mean.resize(Shape<1>{C});
    cache.invstd.resize(Shape<1>{C});
    if (ctx.training) RLMED_CHECK(N > 1, "BatchNorm<", C, ">: training needs more than one value per channel, found ", N);
    parallel_for(0, C, [&](index_t c) {
      double mean = 0, var = 0;
      if (ctx.training) {
        for (index_t b = 0; b < B; ++b) {
          const T* p = x.data() + (b * C + c) * S;
          for (index_t s = 0; s < S; ++s) mean += p[s];
        }
        mean /= double(N);
        for (index_t b = 0; b < B; ++b) {
          const T* p = x.data() + (b * C + c) * S;
          for (index_t s = 0; s < S; ++s) var += (p[s] - mean) * (p[s] - mean);
        }
        var /= double(N);
        const double m = config.momentum;
        running_mean(c) = static_cast<T>((1 - m) * running_mean(c) + m * mean);
        running_var(c) = static_cast<T>((1 - m) * running_var(c) + m * var * double(N) / double(N - 1));
      } else {
        mean = running_mean(c);
        var = running_var(c);
      }
      const T mu = static_cast<T>(mean), inv = static_cast<T>(1.0 / std::sqrt(var + config.eps));
      cache.mean(c) = mu;
      cache.invstd(c) = inv;
      const T g = weight.value(c), beta = bias.value(c);
      for (index_t b = 0; b < B; ++b) {
        const T* p = x.data() + (b * C + c) * S;
        T* q = cache.y.data() + (b * C + c) * S;
        for (index_t s = 0; s < S; ++s) q[s] = g * (p[s] - mu) * inv + beta;
      }
    }, 1);
    if (ctx.training) ++num_batches_tracked();
    return cache.y.view();
  }

  TensorView<const T, Rank> backward(Context&, Cache& cache, TensorView<const T, Rank> dy) {
    detail::check_grad_shape(dy, cache.y.shape(), "BatchNorm");
    const auto x = cache.x;
    const index_t B = x.extent(0), S = x.size() / (B * C), N = B * S;
    cache.dx.resize(x.shape());
    parallel_for(0, C, [&](index_t c) {
      const T mu = cache.mean(c), inv = cache.invstd(c), g = weight.value(c);
      double sum_dy = 0, sum_dy_xhat = 0;
      for (index_t b = 0; b < B; ++b) {
        const T* p = x.data() + (b * C + c) * S;
        const T* d = dy.data() + (b * C + c) * S;
        for (index_t s = 0; s < S; ++s) {
          sum_dy += d[s];
          sum_dy_xhat += d[s] * (p[s] - mu) * inv;
        }
      }
      weight.grad(c) += static_cast<T>(sum_dy_xhat);
      bias.grad(c) += static_cast<T>(sum_dy);
      for (index_t b = 0; b < B; ++b) {
        const T* p = x.data() + (b * C + c) * S;
        const T* d = dy.data() + (b * C + c) * S;
        T* o = cache.dx.data() + (b * C + c) * S;
        if (cache.training) {
          const T k = g * inv / static_cast<T>(N);
          for (index_t s = 0; s < S; ++s) {
            const T xhat = (p[s] - mu) * inv;
            o[s] = k * (static_cast<T>(N) * d[s] - static_cast<T>(sum_dy) - xhat * static_cast<T>(sum_dy_xhat));
          }
        } else {
          for (index_t s = 0; s < S; ++s) o[s] = d[s] * g * inv;
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
  void buffers(V&& visit, std::string_view prefix = {}) {
    visit(join_name(prefix, "running_mean"), running_mean);
    visit(join_name(prefix, "running_var"), running_var);
    visit(join_name(prefix, "num_batches_tracked"), num_batches_tracked);
  }

  BatchNormConfig config;
  Parameter<T, 1> weight, bias;
  Tensor<T, 1> running_mean, running_var;
  Tensor<std::int64_t, 0> num_batches_tracked{Shape<0>{}};  // I64 scalar, as torch saves it
};

/// Spec: batch normalisation of C channels.
template <index_t C>
struct BatchNorm {
  static constexpr index_t in_channels = C;
  static constexpr index_t out_channels(index_t) { return C; }
  template <class T, std::size_t Rank>
  using module = BatchNormModule<C, T, Rank>;
};

}  // namespace rlmed::nn
