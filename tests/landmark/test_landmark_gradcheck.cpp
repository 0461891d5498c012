// Gradient check of the Collab-DQN network (shared trunk, one head per agent, rows routed by
// head) in double precision: the analytic directional derivative of L = Σ Q ⊙ R along random
// directions of every parameter and of the input equals central differences (rel. error < 1e-6),
// and a head that receives no rows gets zero gradient.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "rlmed/core/random.hpp"
#include "rlmed/rl/agents/collab_dqn.hpp"

using namespace rlmed;

namespace {

using Trunk = nn::Sequential<nn::Conv<3, 2, 3, 3>, nn::MaxPool<3, 2>, nn::Tanh, nn::Conv<3, 3, 4, 2>, nn::Tanh, nn::Flatten>;
using Head = nn::Sequential<nn::Linear<5>, nn::Tanh, nn::DuelingHead<6>>;
using Net = nn::CollabQNet<double, Trunk, Head, 3>;

double loss_of(Net& net, const Tensor<double, 5>& x, const std::vector<int>& heads, const Tensor<double, 2>& r) {
  nn::Context ctx;
  Net::Cache cache;
  const auto q = net.forward(ctx, TensorView<const double, 5>(x.view()), heads, cache);
  double l = 0;
  for (index_t i = 0; i < q.size(); ++i) l += q.data()[i] * r.data()[i];
  return l;
}

}  // namespace

TEST_CASE("Collab-DQN net: parameter and input gradients match central differences") {
  Net net(Shape<5>{1, 2, 6, 6, 6});
  PhiloxStream rng(21, 0);
  net.initialize(rng);
  Tensor<double, 5> x(Shape<5>{5, 2, 6, 6, 6});
  fill_normal(x.view(), rng);
  const std::vector<int> heads{2, 0, 2, 0, 2};  // head 1 gets no rows
  Tensor<double, 2> r(Shape<2>{5, 6});
  fill_normal(r.view(), rng);

  nn::zero_grad(net);
  nn::Context ctx;
  ctx.input_grad = true;
  Net::Cache cache;
  net.forward(ctx, TensorView<const double, 5>(x.view()), heads, cache);
  const auto dx = net.backward(ctx, cache, TensorView<const double, 2>(r.view()));
  REQUIRE(dx.shape() == x.shape());
  Tensor<double, 5> dx_copy(x.shape());
  std::copy(dx.data(), dx.data() + dx.size(), dx_copy.data());

  // Directions: one random direction over all parameters, one over the input.
  std::vector<Tensor<double, 1>> dirs;
  double analytic = 0;
  net.parameters([&](const std::string&, auto& p) {
    Tensor<double, 1> d(Shape<1>{p.value.size()});
    fill_normal(d.view(), rng);
    for (index_t i = 0; i < d.size(); ++i) analytic += d(i) * p.grad.data()[i];
    dirs.push_back(std::move(d));
  });
  const double eps = 1e-6;
  auto shift = [&](double s) {
    std::size_t k = 0;
    net.parameters([&](const std::string&, auto& p) {
      for (index_t i = 0; i < p.value.size(); ++i) p.value.data()[i] += s * dirs[k](i);
      ++k;
    });
  };
  shift(eps);
  const double lp = loss_of(net, x, heads, r);
  shift(-2 * eps);
  const double lm = loss_of(net, x, heads, r);
  shift(eps);
  const double numeric = (lp - lm) / (2 * eps);
  CHECK(std::abs(analytic) > 1e-3);
  CHECK(std::abs(numeric - analytic) / std::max(std::abs(numeric), std::abs(analytic)) < 1e-6);

  Tensor<double, 5> dxd(x.shape());
  fill_normal(dxd.view(), rng);
  double analytic_x = 0;
  for (index_t i = 0; i < x.size(); ++i) analytic_x += dxd.data()[i] * dx_copy.data()[i];
  Tensor<double, 5> xp = x, xm = x;
  for (index_t i = 0; i < x.size(); ++i) {
    xp.data()[i] += eps * dxd.data()[i];
    xm.data()[i] -= eps * dxd.data()[i];
  }
  const double numeric_x = (loss_of(net, xp, heads, r) - loss_of(net, xm, heads, r)) / (2 * eps);
  CHECK(std::abs(analytic_x) > 1e-3);
  CHECK(std::abs(numeric_x - analytic_x) / std::max(std::abs(numeric_x), std::abs(analytic_x)) < 1e-6);

  // Head 1 received no rows: zero gradient; heads 0 and 2 did: non-zero.
  auto grad_norm = [&](auto& module) {
    double s = 0;
    module.parameters([&](const std::string&, auto& p) {
      for (index_t i = 0; i < p.grad.size(); ++i) s += p.grad.data()[i] * p.grad.data()[i];
    });
    return s;
  };
  CHECK(grad_norm(net.heads[1]) == 0.0);
  CHECK(grad_norm(net.heads[0]) > 0.0);
  CHECK(grad_norm(net.heads[2]) > 0.0);
}
