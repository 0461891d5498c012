// Finite-difference gradient checks in double precision for any rlmed module.
//
// L(x, params) = sum(R ⊙ module(x)) with a fixed random R; the analytic gradients from
// backward (dx and every parameter gradient) are compared with central differences
// (L(v + h) - L(v - h)) / 2h, h = 1e-6. The error of a tensor is ||a - n|| / max(||a||, ||n||);
// it must be below `tolerance` (1e-6 by default) for the input and for every parameter.
// Parameters whose gradient is zero in theory (a bias a softmax is invariant to) are named in
// `zero_gradient` and checked absolutely instead: relative error of rounding noise means nothing.
// Stochastic modules see the same Philox position at every evaluation. Large tensors are
// checked on a seeded random subset of at most `max_checks` elements.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "rlmed/core/random.hpp"
#include "rlmed/nn/module.hpp"

namespace rlmed::test {

struct GradcheckOptions {
  double h = 1e-6;
  double input_h = 0;  ///< step for the input (0: same as h)
  double tolerance = 1e-6;
  index_t max_checks = 300;
  bool training = true;
  bool check_input = true;
  std::uint64_t seed = 99;
  std::vector<std::string> zero_gradient;
  /// Instead of element by element, compare directional derivatives along `directions` random
  /// unit directions per tensor: <analytic gradient, v> vs (L(p + h v) - L(p - h v)) / 2h.
  /// Two forward passes per direction: what makes whole models affordable to check.
  bool directional = false;
  int directions = 3;
};

namespace detail {
inline double rel_error(const std::vector<double>& a, const std::vector<double>& n) {
  double num = 0, na = 0, nn = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - n[i]) * (a[i] - n[i]);
    na += a[i] * a[i];
    nn += n[i] * n[i];
  }
  const double den = std::max({std::sqrt(na), std::sqrt(nn), 1e-300});
  return std::sqrt(num) / den;
}
inline std::vector<index_t> pick(index_t n, index_t max_checks, PhiloxStream& rng) {
  std::vector<index_t> idx;
  if (n <= max_checks) {
    for (index_t i = 0; i < n; ++i) idx.push_back(i);
  } else {
    for (index_t k = 0; k < max_checks; ++k) idx.push_back(static_cast<index_t>(rng.uniform_int(static_cast<std::uint32_t>(n))));
  }
  return idx;
}
}  // namespace detail

/// Runs the check; returns the worst relative error seen (also asserted with doctest).
template <class M>
double gradcheck(M& module, Tensor<double, M::in_rank>& x, const GradcheckOptions& opt = {}) {
  static_assert(std::is_same_v<typename M::value_type, double>, "gradient checks run in double precision");
  PhiloxStream ctx_rng_start(opt.seed, 1);
  PhiloxStream ctx_rng = ctx_rng_start;
  nn::Context ctx;
  ctx.training = opt.training;
  ctx.rng = &ctx_rng;
  typename M::Cache cache;

  auto loss = [&](const Tensor<double, M::out_rank>& R) {
    ctx_rng = ctx_rng_start;
    const auto y = module.forward(ctx, x.view(), cache);
    double s = 0;
    for (index_t i = 0; i < y.size(); ++i) s += R.data()[i] * y.data()[i];
    return s;
  };

  // Projection R, analytic gradients.
  ctx_rng = ctx_rng_start;
  const auto y0 = module.forward(ctx, x.view(), cache);
  Tensor<double, M::out_rank> R(y0.shape());
  PhiloxStream rrng(opt.seed, 2);
  fill_normal(R.view(), rrng);
  nn::zero_grad(module);
  ctx_rng = ctx_rng_start;
  module.forward(ctx, x.view(), cache);
  const auto dx_view = module.backward(ctx, cache, R.view());
  std::vector<double> dx(dx_view.begin(), dx_view.end());
  std::vector<std::pair<std::string, std::vector<double>>> pgrads;
  module.parameters([&](const std::string& name, auto& p) { pgrads.emplace_back(name, std::vector<double>(p.grad.begin(), p.grad.end())); });

  double worst = 0;
  PhiloxStream pick_rng(opt.seed, 3);
  auto check_tensor = [&](const std::string& what, double* values, index_t n, const std::vector<double>& analytic,
                          double h) {
    const bool zero = std::find(opt.zero_gradient.begin(), opt.zero_gradient.end(), what) != opt.zero_gradient.end();
    std::vector<double> a, num;
    if (opt.directional && !zero) {
      std::vector<double> saved(values, values + n), v(static_cast<std::size_t>(n));
      for (int k = 0; k < opt.directions; ++k) {
        double norm = 0;
        for (auto& e : v) {
          e = pick_rng.normal_double();
          norm += e * e;
        }
        norm = std::sqrt(norm);
        double dot = 0;
        for (index_t i = 0; i < n; ++i) {
          v[static_cast<std::size_t>(i)] /= norm;
          dot += analytic[static_cast<std::size_t>(i)] * v[static_cast<std::size_t>(i)];
        }
        for (index_t i = 0; i < n; ++i) values[i] = saved[static_cast<std::size_t>(i)] + h * v[static_cast<std::size_t>(i)];
        const double lp = loss(R);
        for (index_t i = 0; i < n; ++i) values[i] = saved[static_cast<std::size_t>(i)] - h * v[static_cast<std::size_t>(i)];
        const double lm = loss(R);
        std::copy(saved.begin(), saved.end(), values);
        a.push_back(dot);
        num.push_back((lp - lm) / (2 * h));
      }
      const double err = detail::rel_error(a, num);
      INFO("directional gradient of " << what << ": relative error " << err << " (analytic " << a[0] << ", numeric "
                                       << num[0] << ", ...)");
      CHECK(err < opt.tolerance);
      worst = std::max(worst, err);
      return;
    }
    const auto idx = detail::pick(n, opt.max_checks, pick_rng);
    for (index_t i : idx) {
      const double saved = values[i];
      values[i] = saved + h;
      const double lp = loss(R);
      values[i] = saved - h;
      const double lm = loss(R);
      values[i] = saved;
      num.push_back((lp - lm) / (2 * h));
      a.push_back(analytic[static_cast<std::size_t>(i)]);
    }
    if (zero) {
      double amax = 0, nmax = 0;
      for (std::size_t i = 0; i < a.size(); ++i) {
        amax = std::max(amax, std::abs(a[i]));
        nmax = std::max(nmax, std::abs(num[i]));
      }
      INFO("gradient of " << what << " should be zero: analytic max " << amax << ", numeric max " << nmax);
      CHECK(amax < 1e-12);
      CHECK(nmax < 1e-7);
      return;
    }
    const double err = detail::rel_error(a, num);
    INFO("gradient of " << what << ": relative error " << err);
    CHECK(err < opt.tolerance);
    worst = std::max(worst, err);
  };

  if (opt.check_input) {
    REQUIRE(static_cast<index_t>(dx.size()) == x.size());
    check_tensor("input", x.data(), x.size(), dx, opt.input_h > 0 ? opt.input_h : opt.h);
  }
  std::size_t k = 0;
  module.parameters([&](const std::string& name, auto& p) {
    check_tensor(name, p.value.data(), p.value.size(), pgrads[k].second, opt.h);
    ++k;
  });
  return worst;
}

/// A double tensor of the given shape filled with N(0, 1) from a seed.
template <std::size_t R>
Tensor<double, R> random_tensor(const Shape<R>& shape, std::uint64_t seed, double scale = 1.0) {
  Tensor<double, R> t(shape);
  PhiloxStream rng(seed, 0);
  fill_normal(t.view(), rng, 0.0, scale);
  return t;
}

}  // namespace rlmed::test
