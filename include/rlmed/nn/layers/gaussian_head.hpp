// rlmed/nn/layers/gaussian_head.hpp — squashed Gaussian policy head (SAC, Haarnoja et al. 2018).
//
// Design: two linear streams give the mean and the log standard deviation (clamped to
// [log_std_min, log_std_max]); an action is a = tanh(u), u = mean + std * eps, eps ~ N(0, 1)
// from ctx.rng (reparameterisation, so gradients flow through the sample). The log-probability
// includes the tanh change of variables:
//   log pi(a) = sum_j [ -eps_j^2 / 2 - log std_j - log(2 pi) / 2 - log(1 - a_j^2 + 1e-6) ]
// Output [B, 2 * Actions + 1] = (a, mean, log pi): the agent needs the action and its
// log-probability, and the deterministic action tanh(mean) is one tanh away. In evaluation
// (ctx.training == false) eps = 0: a = tanh(mean).
// Backward takes dL/d(a, mean, log pi) and returns dL/dx; eps is kept in the cache, so a
// forward/backward pair is a deterministic function of (x, stream position).
#pragma once

#include <cmath>

#include "rlmed/core/random.hpp"
#include "rlmed/nn/layers/linear.hpp"

namespace rlmed::nn {

struct GaussianHeadConfig {
  double log_std_min = -20.0;
  double log_std_max = 2.0;
};

template <index_t Actions, class T>
class GaussianPolicyHeadModule {
  static_assert(Actions >= 1);

 public:
  using value_type = T;
  static constexpr std::size_t in_rank = 2;
  static constexpr std::size_t out_rank = 2;
  static constexpr index_t kOutputs = 2 * Actions + 1;
  struct Cache {
    typename LinearModule<Actions, T>::Cache mean, log_std;
    Tensor<T, 2> eps, a, ls;  // noise, squashed action, clamped log-std
    Tensor<T, 2> y, dmean, dlogstd, dx;
  };

  explicit GaussianPolicyHeadModule(GaussianHeadConfig cfg = {}) : config(cfg) {}
  GaussianPolicyHeadModule(index_t in_features, GaussianHeadConfig cfg = {}) : config(cfg) { setup_features(in_features); }
  void setup_features(index_t in_features) {
    mean.setup_features(in_features);
    log_std.setup_features(in_features);
  }
  Shape<2> setup(const Shape<2>& in) {
    setup_features(in[1]);
    return output_shape(in);
  }
  Shape<2> output_shape(const Shape<2>& in) const {
    mean.output_shape(in);
    return {in[0], kOutputs};
  }
  void initialize(PhiloxStream& rng) {
    mean.initialize(rng);
    log_std.initialize(rng);
  }

  TensorView<const T, 2> forward(Context& ctx, TensorView<const T, 2> x, Cache& cache) {
    const auto mu = mean.forward(ctx, x, cache.mean);
    const auto raw = log_std.forward(ctx, x, cache.log_std);
    const index_t B = x.extent(0);
    const Shape<2> s{B, Actions};
    cache.eps.resize(s);
    cache.a.resize(s);
    cache.ls.resize(s);
    cache.y.resize(Shape<2>{B, kOutputs});
    if (ctx.training) {
      RLMED_CHECK(ctx.rng != nullptr, "GaussianPolicyHead: sampling in training mode needs ctx.rng");
      fill_normal(cache.eps.view(), *ctx.rng);
    } else {
      fill(cache.eps.view(), T(0));
    }
    const T half_log_2pi = static_cast<T>(0.5 * std::log(2.0 * 3.14159265358979323846));
    for (index_t b = 0; b < B; ++b) {
      T logp = 0;
      for (index_t j = 0; j < Actions; ++j) {
        const T ls = std::clamp(raw(b, j), static_cast<T>(config.log_std_min), static_cast<T>(config.log_std_max));
        const T e = cache.eps(b, j);
        const T a = std::tanh(mu(b, j) + std::exp(ls) * e);
        cache.ls(b, j) = ls;
        cache.a(b, j) = a;
        logp += -T(0.5) * e * e - ls - half_log_2pi - std::log(T(1) - a * a + T(1e-6));
        cache.y(b, j) = a;
        cache.y(b, Actions + j) = mu(b, j);
      }
      cache.y(b, 2 * Actions) = logp;
    }
    return cache.y.view();
  }

  TensorView<const T, 2> backward(Context& ctx, Cache& cache, TensorView<const T, 2> dy) {
    detail::check_grad_shape(dy, cache.y.shape(), "GaussianPolicyHead");
    const index_t B = dy.extent(0);
    cache.dmean.resize(Shape<2>{B, Actions});
    cache.dlogstd.resize(Shape<2>{B, Actions});
    const auto raw = cache.log_std.y.view();
    for (index_t b = 0; b < B; ++b) {
      const T dlogp = dy(b, 2 * Actions);
      for (index_t j = 0; j < Actions; ++j) {
        const T a = cache.a(b, j), e = cache.eps(b, j), ls = cache.ls(b, j);
        const T one_minus = T(1) - a * a;
        // d a / d u = 1 - a^2;  d[-log(1 - a^2 + d)] / d u = 2 a (1 - a^2) / (1 - a^2 + d)
        const T du = dy(b, j) * one_minus + dlogp * T(2) * a * one_minus / (one_minus + T(1e-6));
        cache.dmean(b, j) = du + dy(b, Actions + j);
        const bool clamped = raw(b, j) < static_cast<T>(config.log_std_min) || raw(b, j) > static_cast<T>(config.log_std_max);
        cache.dlogstd(b, j) = clamped ? T(0) : du * std::exp(ls) * e - dlogp;
      }
    }
    const auto dx_mean = mean.backward(ctx, cache.mean, cache.dmean.view());
    const auto dx_std = log_std.backward(ctx, cache.log_std, cache.dlogstd.view());
    if (!ctx.input_grad) return {};
    cache.dx.resize(dx_mean.shape());
    for (index_t i = 0; i < dx_mean.size(); ++i) cache.dx.data()[i] = dx_mean.data()[i] + dx_std.data()[i];
    return cache.dx.view();
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    mean.parameters(visit, join_name(prefix, "mean"));
    log_std.parameters(visit, join_name(prefix, "log_std"));
  }
  template <class V>
  void buffers(V&&, std::string_view = {}) {}

  GaussianHeadConfig config;
  LinearModule<Actions, T> mean, log_std;
};

/// Spec: squashed Gaussian policy over `Actions` continuous dimensions.
template <index_t Actions>
struct GaussianPolicyHead {
  static constexpr std::size_t in_rank = 2;
  static constexpr index_t in_channels = kAnyChannels;
  static constexpr index_t out_channels(index_t) { return 2 * Actions + 1; }
  template <class T, std::size_t Rank = in_rank>
  using module = GaussianPolicyHeadModule<Actions, T>;
};

}  // namespace rlmed::nn
