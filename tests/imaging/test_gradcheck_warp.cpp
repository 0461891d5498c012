// Finite-difference checks of the gradients of rlmed/imaging/warp.hpp in double precision:
// warp_backward with respect to the image and the field (2D and 3D, batch 2, 2 channels, odd
// sizes, zeros and border padding, linear and nearest), the smoothness penalty, and the
// composition of fields. L = sum(R ⊙ output) for a fixed random R; central differences with
// h = 1e-6 at every element; error ||analytic - numeric|| / max(||analytic||, ||numeric||) < 1e-6.
// Sample points keep their fractional parts in [0.1, 0.9] (away from 0.5 for nearest): the
// interpolant has kinks at integer coordinates and nearest jumps at half-integers.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>

#include "rlmed/core/random.hpp"
#include "rlmed/imaging/warp.hpp"

using namespace rlmed;
using namespace rlmed::imaging;

namespace {

template <std::size_t R>
Tensor<double, R> random_tensor(const Shape<R>& shape, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Tensor<double, R> t(shape);
  PhiloxStream rng(seed, 0);
  fill_uniform(t.view(), rng, lo, hi);
  return t;
}

// An integer shift in [-max_shift, max_shift] plus a fraction in [0.1, 0.9] (or [0.1, 0.4] ∪
// [0.6, 0.9]) for every element: with integer voxel positions p, q = p + u keeps that fraction.
template <std::size_t R>
Tensor<double, R> safe_field(const Shape<R>& shape, std::uint64_t seed, int max_shift, bool avoid_half = false) {
  Tensor<double, R> t(shape);
  PhiloxStream rng(seed, 0);
  for (index_t i = 0; i < t.size(); ++i) {
    const double whole = double(rng.uniform_int(std::uint32_t(2 * max_shift + 1))) - max_shift;
    double frac = 0.1 + 0.8 * rng.uniform_double();
    if (avoid_half) frac = 0.1 + 0.3 * rng.uniform_double() + (rng.uniform_int(2) ? 0.5 : 0.0);
    t.data()[i] = whole + frac;
  }
  return t;
}

template <std::size_t R>
double dot(const Tensor<double, R>& a, const Tensor<double, R>& b) {
  double s = 0;
  for (index_t i = 0; i < a.size(); ++i) s += a.data()[i] * b.data()[i];
  return s;
}

// Relative error of `analytic` against central differences of `loss` in every element of `param`.
template <std::size_t R>
double gradient_error(Tensor<double, R>& param, const Tensor<double, R>& analytic, const std::function<double()>& loss) {
  REQUIRE(param.shape() == analytic.shape());
  const double h = 1e-6;
  double num2 = 0, den_a = 0, den_n = 0;
  for (index_t i = 0; i < param.size(); ++i) {
    const double saved = param.data()[i];
    param.data()[i] = saved + h;
    const double plus = loss();
    param.data()[i] = saved - h;
    const double minus = loss();
    param.data()[i] = saved;
    const double numeric = (plus - minus) / (2 * h), a = analytic.data()[i];
    num2 += (a - numeric) * (a - numeric);
    den_a += a * a;
    den_n += numeric * numeric;
  }
  REQUIRE(den_a > 0);  // a vanishing gradient would make the check meaningless
  return std::sqrt(num2) / std::max(std::sqrt(den_a), std::sqrt(den_n));
}

// Largest |central difference| of `loss` over the elements of `param`.
template <std::size_t R>
double largest_difference(Tensor<double, R>& param, const std::function<double()>& loss) {
  double worst = 0;
  for (index_t i = 0; i < param.size(); ++i) {
    const double saved = param.data()[i];
    param.data()[i] = saved + 1e-6;
    const double plus = loss();
    param.data()[i] = saved - 1e-6;
    const double minus = loss();
    param.data()[i] = saved;
    worst = std::max(worst, std::abs(plus - minus) / 2e-6);
  }
  return worst;
}

template <std::size_t RI, std::size_t RF>
void check_warp_gradients(const Shape<RI>& image_shape, const Shape<RF>& field_shape, std::uint64_t seed, int max_shift) {
  for (Padding padding : {Padding::zeros, Padding::border}) {
    auto image = random_tensor(image_shape, seed);
    auto field = safe_field(field_shape, seed + 1, max_shift);
    const auto R_out = random_tensor(image_shape, seed + 2);
    const auto loss = [&] { return dot(warp_forward(image, field, Interp::linear, padding), R_out); };
    const auto grads = warp_backward(R_out, image, field, Interp::linear, padding);
    const double image_error = gradient_error(image, grads.image, loss);
    const double field_error = gradient_error(field, grads.field, loss);
    INFO("shape " << image_shape << ", padding " << (padding == Padding::zeros ? "zeros" : "border"));
    CHECK(image_error < 1e-6);
    CHECK(field_error < 1e-6);
  }
}

template <std::size_t RI, std::size_t RF>
void check_nearest_gradients(const Shape<RI>& image_shape, const Shape<RF>& field_shape, std::uint64_t seed) {
  for (Padding padding : {Padding::zeros, Padding::border}) {
    auto image = random_tensor(image_shape, seed);
    auto field = safe_field(field_shape, seed + 1, 2, /*avoid_half=*/true);
    const auto R_out = random_tensor(image_shape, seed + 2);
    const auto loss = [&] { return dot(warp_forward(image, field, Interp::nearest, padding), R_out); };
    const auto grads = warp_backward(R_out, image, field, Interp::nearest, padding);
    CHECK(gradient_error(image, grads.image, loss) < 1e-6);
    for (index_t i = 0; i < grads.field.size(); ++i) REQUIRE(grads.field.data()[i] == 0.0);
    CHECK(largest_difference(field, loss) < 1e-9);  // piecewise constant in the field
  }
}

}  // namespace

TEST_CASE("2D bilinear warp: gradients of image and field (batch 2, 2 channels, 5 x 7)") {
  check_warp_gradients(Shape<4>{2, 2, 5, 7}, Shape<4>{2, 2, 5, 7}, 100, 3);
}

TEST_CASE("2D bilinear warp of one image [5, 9] by one field [2, 5, 9]") {
  check_warp_gradients(Shape<2>{5, 9}, Shape<3>{2, 5, 9}, 110, 2);
}

TEST_CASE("3D trilinear warp: gradients of image and field (batch 2, 2 channels, 3 x 5 x 4)") {
  check_warp_gradients(Shape<5>{2, 2, 3, 5, 4}, Shape<5>{2, 3, 3, 5, 4}, 200, 2);
}

TEST_CASE("nearest warps: image gradient by finite differences, field gradient zero") {
  check_nearest_gradients(Shape<4>{2, 2, 5, 7}, Shape<4>{2, 2, 5, 7}, 300);
  check_nearest_gradients(Shape<5>{2, 2, 3, 5, 4}, Shape<5>{2, 3, 3, 5, 4}, 310);
}

TEST_CASE("smoothness penalty spatial_gradient_l2: gradient") {
  auto u2 = random_tensor(Shape<4>{2, 2, 5, 7}, 400, -2.0, 2.0);
  Tensor<double, 4> g2(u2.shape());
  spatial_gradient_l2<2>(u2, g2.view(), 0.7);
  CHECK(gradient_error(u2, g2, [&] { return spatial_gradient_l2<2>(u2, 0.7); }) < 1e-6);
  auto u3 = random_tensor(Shape<4>{3, 3, 4, 5}, 410, -2.0, 2.0);
  Tensor<double, 4> g3(u3.shape());
  spatial_gradient_l2<3>(u3, g3.view(), 1.3);
  CHECK(gradient_error(u3, g3, [&] { return spatial_gradient_l2<3>(u3, 1.3); }) < 1e-6);
}

TEST_CASE("compose_displacements: gradients with respect to both fields (2D single, 3D batch)") {
  {
    auto a = safe_field(Shape<3>{2, 5, 7}, 500, 2);
    auto u = random_tensor(Shape<3>{2, 5, 7}, 501, -2.0, 2.0);
    const auto R_out = random_tensor(Shape<3>{2, 5, 7}, 502);
    Tensor<double, 3> ga(a.shape()), gu(u.shape());
    compose_displacements_backward_into(ga.view(), gu.view(), R_out, a, u);
    const auto loss = [&] { return dot(compose_displacements(a, u), R_out); };
    CHECK(gradient_error(a, ga, loss) < 1e-6);
    CHECK(gradient_error(u, gu, loss) < 1e-6);
  }
  {
    auto a = safe_field(Shape<5>{2, 3, 3, 5, 4}, 510, 2);
    auto u = random_tensor(Shape<5>{2, 3, 3, 5, 4}, 511, -2.0, 2.0);
    const auto R_out = random_tensor(Shape<5>{2, 3, 3, 5, 4}, 512);
    Tensor<double, 5> ga(a.shape()), gu(u.shape());
    compose_displacements_backward_into(ga.view(), gu.view(), R_out, a, u);
    const auto loss = [&] { return dot(compose_displacements(a, u), R_out); };
    CHECK(gradient_error(a, ga, loss) < 1e-6);
    CHECK(gradient_error(u, gu, loss) < 1e-6);
  }
}
