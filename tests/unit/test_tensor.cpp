// Tensor and TensorView on the host: shapes, alignment, indexing, slicing, copies, errors.
#include <doctest/doctest.h>

#include <cstdint>
#include <numeric>

#include "rlmed/core/tensor.hpp"

using rlmed::Shape;
using rlmed::Tensor;
using rlmed::TensorView;

TEST_CASE_TEMPLATE("Tensor is zero-filled, 64-byte aligned, row-major", T, float, double, std::int64_t, std::uint8_t) {
  Tensor<T, 3> t(Shape<3>{2, 3, 5});
  CHECK(t.size() == 30);
  CHECK(t.bytes() == 30 * sizeof(T));
  CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % rlmed::kTensorAlignment == 0);
  for (auto v : t) CHECK(v == T(0));
  CHECK(t.view().strides() == Shape<3>{15, 5, 1});
  t(1, 2, 4) = T(9);
  CHECK(t.data()[1 * 15 + 2 * 5 + 4] == T(9));
  CHECK(t.view().offset(1, 2, 4) == 29);
}

TEST_CASE("fill constructor, fill, copy, deep copy semantics") {
  Tensor<float, 2> a(Shape<2>{3, 4}, 1.5f);
  for (float v : a) CHECK(v == 1.5f);
  Tensor<float, 2> b = a;  // deep copy
  b(0, 0) = 7.f;
  CHECK(a(0, 0) == 1.5f);
  rlmed::fill(a, 2.f);
  for (float v : a) CHECK(v == 2.f);
  rlmed::copy(b, a);
  CHECK(rlmed::bitwise_equal(a, b));
  Tensor<float, 2> c(Shape<2>{4, 3});
  CHECK_THROWS_WITH_AS(rlmed::copy(c, a), doctest::Contains("destination shape [4, 3] differs from source shape [3, 4]"),
                       rlmed::Error);
  Tensor<float, 2> moved = std::move(b);
  CHECK(moved.size() == 12);
  CHECK(b.size() == 0);
  CHECK(b.data() == nullptr);
}

TEST_CASE("slicing along the leading axis is zero-copy and checked") {
  Tensor<int, 3> t(Shape<3>{4, 2, 3});
  std::iota(t.begin(), t.end(), 0);
  auto s = t[2];  // rank 2 view of slice 2
  static_assert(std::is_same_v<decltype(s), TensorView<int, 2>>);
  CHECK(s.shape() == Shape<2>{2, 3});
  CHECK(s(1, 2) == 2 * 6 + 5);
  s(0, 0) = -1;
  CHECK(t(2, 0, 0) == -1);
  auto rows = t.slice(1, 3);
  CHECK(rows.shape() == Shape<3>{2, 2, 3});
  CHECK(rows.data() == t.data() + 6);
  CHECK(rows[1](0, 1) == 13);  // rows[1] is t[2]
  auto one = t[3][1];
  static_assert(std::is_same_v<decltype(one), TensorView<int, 1>>);
  CHECK(one[2] == 3 * 6 + 1 * 3 + 2);
  CHECK_THROWS_WITH_AS(t.slice(3, 5), doctest::Contains("slice [3, 5) out of range [0, 4]"), rlmed::Error);
  CHECK_THROWS_WITH_AS(t.sub(4), doctest::Contains("slice 4 out of range"), rlmed::Error);
  CHECK_THROWS_WITH_AS(t.at(0, 2, 0), doctest::Contains("index 2 out of range [0, 2) on axis 1"), rlmed::Error);
  CHECK(t.at(3, 1, 2) == 23);
}

TEST_CASE("reshape, flat and const views") {
  Tensor<float, 2> t(Shape<2>{6, 4});
  auto r = t.reshape(Shape<3>{2, 3, 4});
  CHECK(r.data() == t.data());
  CHECK_THROWS_WITH_AS(t.reshape(Shape<2>{5, 5}), doctest::Contains("cannot reshape [6, 4] (24 elements) to [5, 5]"),
                       rlmed::Error);
  CHECK(t.flat().shape() == Shape<1>{24});
  const Tensor<float, 2>& ct = t;
  TensorView<const float, 2> cv = ct.view();
  TensorView<const float, 2> from_mutable = t.view();  // mutable -> const conversion
  CHECK(cv.data() == from_mutable.data());
}

TEST_CASE("resize keeps the allocation when the new size fits") {
  Tensor<float, 2> t(Shape<2>{8, 8});
  const float* p = t.data();
  t.resize(Shape<2>{4, 4});
  CHECK(t.data() == p);
  CHECK(t.capacity() == 64);
  t.resize(Shape<2>{8, 8});
  CHECK(t.data() == p);
  t.resize(Shape<2>{9, 9});
  CHECK(t.size() == 81);
  CHECK(t.capacity() == 81);
  CHECK_THROWS_AS(t.resize(Shape<2>{-1, 2}), rlmed::Error);
}

TEST_CASE("empty and rank-0-extent tensors are valid") {
  Tensor<double, 2> e(Shape<2>{0, 7});
  CHECK(e.empty());
  CHECK(e.data() == nullptr);
  Tensor<double, 2> f(Shape<2>{0, 7});
  CHECK(rlmed::bitwise_equal(e, f));
  rlmed::copy(f, e);
}
