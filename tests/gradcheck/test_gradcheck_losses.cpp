// Losses: gradients against central differences, values against hand-computed cases.
#include <doctest/doctest.h>

#include <functional>

#include "gradcheck.hpp"
#include "rlmed/nn/loss.hpp"

using namespace rlmed;
using rlmed::test::random_tensor;

namespace {
// Central differences of a loss with respect to its prediction.
template <std::size_t R>
double check_loss_grad(Tensor<double, R>& pred, const std::function<double(Tensor<double, R>&)>& loss) {
  Tensor<double, R> grad;
  loss(grad);  // fills grad (analytic)
  const Tensor<double, R> analytic = grad;
  double num2 = 0, den_a = 0, den_n = 0;
  Tensor<double, R> scratch;
  for (index_t i = 0; i < pred.size(); ++i) {
    const double s = pred.data()[i], h = 1e-6;
    pred.data()[i] = s + h;
    const double lp = loss(scratch);
    pred.data()[i] = s - h;
    const double lm = loss(scratch);
    pred.data()[i] = s;
    const double n = (lp - lm) / (2 * h), a = analytic.data()[i];
    num2 += (a - n) * (a - n);
    den_a += a * a;
    den_n += n * n;
  }
  const double err = std::sqrt(num2) / std::max({std::sqrt(den_a), std::sqrt(den_n), 1e-300});
  CHECK(err < 1e-6);
  return err;
}
}  // namespace

TEST_CASE("MSE, Huber, BCE-with-logits, soft Dice, cross-entropy: gradients") {
  auto pred = random_tensor(Shape<2>{3, 5}, 1, 2.0);
  auto target = random_tensor(Shape<2>{3, 5}, 2);
  const std::array<double, 3> w{0.5, 1.0, 2.0};
  check_loss_grad<2>(pred, [&](Tensor<double, 2>& g) { return nn::loss::mse<double, 2>(pred.view(), target.view(), g); });
  check_loss_grad<2>(pred, [&](Tensor<double, 2>& g) {
    return nn::loss::huber<double, 2>(pred.view(), target.view(), g, 1.0, std::span<const double>(w));
  });
  Tensor<double, 2> t01(Shape<2>{3, 5});
  PhiloxStream rng(3, 0);
  fill_uniform(t01.view(), rng);
  check_loss_grad<2>(pred, [&](Tensor<double, 2>& g) { return nn::loss::bce_with_logits<double, 2>(pred.view(), t01.view(), g); });
  Tensor<double, 2> prob(Shape<2>{3, 5});
  fill_uniform(prob.view(), rng, 0.05, 0.95);
  check_loss_grad<2>(prob, [&](Tensor<double, 2>& g) { return nn::loss::soft_dice<double, 2>(prob.view(), t01.view(), g); });
  auto logits = random_tensor(Shape<4>{2, 3, 2, 3}, 4);
  Tensor<std::int64_t, 3> labels(Shape<3>{2, 2, 3});
  for (index_t i = 0; i < labels.size(); ++i) labels.data()[i] = static_cast<std::int64_t>(rng.uniform_int(3));
  labels.data()[4] = -100;  // ignored pixel
  check_loss_grad<4>(logits, [&](Tensor<double, 4>& g) { return nn::loss::cross_entropy<double, 4>(logits.view(), labels.view(), g); });
}

TEST_CASE("loss values on hand-computed cases") {
  Tensor<double, 2> p(Shape<2>{1, 2}), t(Shape<2>{1, 2}), g;
  p(0, 0) = 3.0;
  p(0, 1) = 0.5;
  t(0, 0) = 0.0;
  t(0, 1) = 0.0;
  CHECK(nn::loss::mse<double, 2>(p.view(), t.view(), g) == doctest::Approx((9.0 + 0.25) / 2));
  // Huber(delta=1): |3| -> 3 - 0.5 = 2.5; |0.5| -> 0.125
  CHECK(nn::loss::huber<double, 2>(p.view(), t.view(), g) == doctest::Approx((2.5 + 0.125) / 2));
  CHECK(g(0, 0) == doctest::Approx(0.5));
  // BCE with logits: x=0, t=1 -> log 2
  Tensor<double, 2> z(Shape<2>{1, 1}), one(Shape<2>{1, 1}, 1.0);
  CHECK(nn::loss::bce_with_logits<double, 2>(z.view(), one.view(), g) == doctest::Approx(std::log(2.0)));
  // Dice: p = t = [1, 0] -> loss 0 with eps; p = [0, 1], t = [1, 0], eps = 1 -> 1 - 1/3
  Tensor<double, 2> a(Shape<2>{1, 2}), b(Shape<2>{1, 2});
  a(0, 0) = 1;
  b(0, 0) = 1;
  CHECK(nn::loss::soft_dice<double, 2>(a.view(), b.view(), g) == doctest::Approx(0.0));
  a(0, 0) = 0;
  a(0, 1) = 1;
  CHECK(nn::loss::soft_dice<double, 2>(a.view(), b.view(), g) == doctest::Approx(1.0 - 1.0 / 3.0));
  // Cross-entropy of uniform logits over 4 classes = log 4
  Tensor<double, 2> u(Shape<2>{1, 4});
  Tensor<std::int64_t, 1> y(Shape<1>{1}, 2);
  CHECK(nn::loss::cross_entropy<double, 2>(u.view(), y.view(), g) == doctest::Approx(std::log(4.0)));
}

TEST_CASE("losses reject bad input") {
  Tensor<double, 2> p(Shape<2>{2, 2}), t(Shape<2>{2, 3}), g;
  CHECK_THROWS_WITH_AS((nn::loss::mse<double, 2>(p.view(), t.view(), g)), doctest::Contains("differs from target shape"), Error);
  Tensor<double, 2> q(Shape<2>{2, 2});
  q(1, 1) = std::nan("");
  Tensor<double, 2> t2(Shape<2>{2, 2});
  CHECK_THROWS_WITH_AS((nn::loss::mse<double, 2>(q.view(), t2.view(), g)), doctest::Contains("expected a finite loss"), Error);
  Tensor<double, 2> empty(Shape<2>{0, 2});
  CHECK_THROWS_WITH_AS((nn::loss::mse<double, 2>(empty.view(), empty.view(), g)), doctest::Contains("empty prediction"), Error);
  Tensor<double, 4> lg(Shape<4>{1, 2, 3, 4}), g4;
  Tensor<std::int64_t, 3> transposed(Shape<3>{1, 4, 3});
  CHECK_THROWS_WITH_AS((nn::loss::cross_entropy<double, 4>(lg.view(), transposed.view(), g4)), doctest::Contains("do not match logits"), Error);
  Tensor<double, 2> logits(Shape<2>{1, 3});
  Tensor<std::int64_t, 1> bad(Shape<1>{1}, 3);
  CHECK_THROWS_WITH_AS((nn::loss::cross_entropy<double, 2>(logits.view(), bad.view(), g)), doctest::Contains("outside [0, 3)"), Error);
}
