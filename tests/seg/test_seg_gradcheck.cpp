// Gradient check (double precision, central differences, relative error < 1e-6) of the new
// backward of the per-pixel DQN family: the Huber Q loss of the taken actions through the dueling
// combination Q = V + A − mean(A) (rl/pixel_dqn.hpp), with respect to the network's feature maps,
// and through a whole PixelFcn with respect to every parameter tensor (random directions).
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "rlmed/core/random.hpp"
#include "rlmed/rl/pixel_dqn.hpp"
#include "rlmed/seg/pixel_fcn.hpp"

using namespace rlmed;

namespace {

struct Problem {
  Tensor<std::int32_t, 3> actions;
  Tensor<double, 4> targets;
  std::vector<double> scratch;
  Tensor<double, 4> q, dq;

  /// Loss of Q = dueling(features); dfeatures receives its gradient when given.
  double loss(TensorView<const double, 4> features, Tensor<double, 4>* dfeatures) {
    const Shape<4> fs = features.shape();
    q.resize(Shape<4>{fs[0], fs[1] - 1, fs[2], fs[3]});
    dq.resize(q.shape());
    rl::dueling_q_into<double>(q.view(), features);
    const double l = rl::pixel_q_loss_into<double>(dq.view(), q.view(), actions.view(), targets.view(), 1.0, scratch);
    if (dfeatures) {
      dfeatures->resize(fs);
      rl::dueling_q_backward_into<double>(dfeatures->view(), dq.view());
    }
    return l;
  }
};

Problem make_problem(index_t B, index_t A, index_t H, index_t W, std::uint64_t seed) {
  Problem p;
  PhiloxStream rng(seed, 0);
  p.actions = Tensor<std::int32_t, 3>(Shape<3>{B, H, W});
  for (auto& a : p.actions) a = static_cast<std::int32_t>(rng.uniform_int(static_cast<std::uint32_t>(A)));
  p.targets = Tensor<double, 4>(Shape<4>{B, 1, H, W});
  fill_normal(p.targets.view(), rng);
  for (auto& t : p.targets) t *= 2.0;  // both Huber regions occur
  return p;
}

double rel(double a, double n) { return std::abs(a - n) / std::max({std::abs(a), std::abs(n), 1e-12}); }

}  // namespace

TEST_CASE("dueling per-pixel Q loss: analytic gradient w.r.t. advantage and value maps") {
  const index_t B = 2, A = 3, H = 3, W = 4;
  Problem p = make_problem(B, A, H, W, 1);
  Tensor<double, 4> f(Shape<4>{B, A + 1, H, W}), df;
  PhiloxStream rng(2, 0);
  fill_normal(f.view(), rng);
  p.loss(f.view(), &df);
  const auto analytic = Tensor<double, 4>::copy_of(df.view());
  const double h = 1e-4;  // the loss is piecewise quadratic in the features: central differences are exact but for rounding
  double worst = 0;
  int nonzero = 0;
  for (index_t i = 0; i < f.size(); ++i) {
    const double keep = f.data()[i];
    f.data()[i] = keep + h;
    const double lp = p.loss(f.view(), nullptr);
    f.data()[i] = keep - h;
    const double lm = p.loss(f.view(), nullptr);
    f.data()[i] = keep;
    const double numeric = (lp - lm) / (2 * h);
    worst = std::max(worst, rel(analytic.data()[i], numeric));
    nonzero += analytic.data()[i] != 0.0;
  }
  MESSAGE("worst relative error over " << f.size() << " feature entries: " << worst);
  CHECK(worst < 1e-6);
  CHECK(nonzero > f.size() / 2);  // the value map and non-taken advantages get gradient too
}

TEST_CASE("per-pixel Q loss through PixelFcn + dueling head: every parameter along random directions") {
  using Net = seg::PixelFcn<double, 1, 3, 3>;
  Net net;
  PhiloxStream init(3, 0);
  net.initialize(init);
  const index_t B = 2, H = 6, W = 5;
  Problem p = make_problem(B, 2, H, W, 4);
  Tensor<double, 4> x(Shape<4>{B, 1, H, W}), df;
  PhiloxStream rng(5, 0);
  fill_normal(x.view(), rng);
  nn::Context ctx;
  ctx.input_grad = false;
  Net::Cache cache;
  auto loss_at = [&]() { return p.loss(net.forward(ctx, x.view(), cache), nullptr); };
  nn::zero_grad(net);
  p.loss(net.forward(ctx, x.view(), cache), &df);
  net.backward(ctx, cache, df.view());
  double worst = 0;
  int checked = 0;
  PhiloxStream dirs(6, 0);
  net.parameters([&](const std::string& name, auto& param) {
    for (int d = 0; d < 3; ++d) {
      Tensor<double, 1> v(Shape<1>{param.value.size()});
      fill_normal(v.view(), dirs);
      double analytic = 0, gnorm = 0, vnorm = 0;
      for (index_t i = 0; i < v.size(); ++i) {
        analytic += param.grad.data()[i] * v.data()[i];
        gnorm += param.grad.data()[i] * param.grad.data()[i];
        vnorm += v.data()[i] * v.data()[i];
      }
      const double h = 1e-6;
      for (index_t i = 0; i < v.size(); ++i) param.value.data()[i] += h * v.data()[i];
      const double lp = loss_at();
      for (index_t i = 0; i < v.size(); ++i) param.value.data()[i] -= 2 * h * v.data()[i];
      const double lm = loss_at();
      for (index_t i = 0; i < v.size(); ++i) param.value.data()[i] += h * v.data()[i];
      const double numeric = (lp - lm) / (2 * h);
      // Relative to the derivative, floored at 1% of its natural scale |g|·|v| (a direction
      // almost orthogonal to g has a derivative made of rounding noise).
      const double e = std::abs(analytic - numeric) /
                       std::max({std::abs(analytic), std::abs(numeric), 1e-2 * std::sqrt(gnorm * vnorm), 1e-12});
      if (e >= 1e-6) MESSAGE(name << ": analytic " << analytic << ", numeric " << numeric);
      worst = std::max(worst, e);
      ++checked;
    }
  });
  MESSAGE("worst relative error over " << checked << " directional derivatives: " << worst);
  CHECK(checked == 3 * 16);  // 8 convolutions x (weight, bias) x 3 directions
  CHECK(worst < 1e-6);
}
