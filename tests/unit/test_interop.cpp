// Zero-copy adapters: Eigen maps and xtensor adapters alias the tensor's memory.
#include <doctest/doctest.h>

#include <numeric>
#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

#include "rlmed/core/interop.hpp"

using rlmed::Shape;
using rlmed::Tensor;

TEST_CASE("Eigen row-major map sees and writes the tensor") {
  Tensor<float, 2> t(Shape<2>{3, 4});
  std::iota(t.begin(), t.end(), 0.f);
  auto m = rlmed::as_eigen_matrix(t);
  CHECK(m.rows() == 3);
  CHECK(m.cols() == 4);
  CHECK(m(1, 2) == t(1, 2));
  CHECK(m.data() == t.data());
  m(2, 3) = -1.f;
  CHECK(t(2, 3) == -1.f);
  // A GEMM through maps: (3x4) * (4x2)
  Tensor<float, 2> b(Shape<2>{4, 2}, 1.f), c(Shape<2>{3, 2});
  rlmed::as_eigen_matrix(c).noalias() = m * rlmed::as_eigen_matrix(b);
  CHECK(c(0, 0) == 0.f + 1.f + 2.f + 3.f);
  const Tensor<float, 2>& ct = t;
  auto cm = rlmed::as_eigen_matrix(ct);
  CHECK(cm.sum() == doctest::Approx(m.sum()));
  Tensor<double, 3> v(Shape<3>{2, 3, 4}, 0.5);
  CHECK(rlmed::as_eigen_vector(v.view()).sum() == doctest::Approx(12.0));
  auto reshaped = rlmed::as_eigen_matrix(v.view(), 6, 4);
  CHECK(reshaped.rows() == 6);
  CHECK_THROWS_WITH_AS(rlmed::as_eigen_matrix(v.view(), 5, 5), doctest::Contains("as a 5x5 matrix"), rlmed::Error);
}

TEST_CASE("xtensor adapter has the same shape and aliases the data") {
  Tensor<double, 3> t(Shape<3>{2, 3, 4});
  std::iota(t.begin(), t.end(), 0.0);
  auto x = rlmed::as_xtensor(t);
  CHECK(x.dimension() == 3);
  CHECK(x.shape()[2] == 4);
  CHECK(x(1, 2, 3) == t(1, 2, 3));
  CHECK(xt::sum(x)() == doctest::Approx(23.0 * 24.0 / 2.0));
  xt::view(x, 0, xt::all(), xt::all()) *= 2.0;
  CHECK(t(0, 1, 1) == 2.0 * 5.0);
  CHECK(t(1, 1, 1) == 17.0);
}
