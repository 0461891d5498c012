// Unit tests of rlmed/imaging/warp.hpp on cases whose answers are known by hand: identity and
// integer shifts (exact), padding modes, nearest on label maps, composed translations, scaling
// and squaring of a rotation field, affine and rigid fields, Jacobians and folding, the
// smoothness penalty, argument errors, and the determinism of the backward pass.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <set>

#include "rlmed/core/random.hpp"
#include "rlmed/imaging/warp.hpp"

using namespace rlmed;
using namespace rlmed::imaging;

namespace {

template <class T, std::size_t R>
Tensor<T, R> random_tensor(const Shape<R>& shape, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Tensor<T, R> t(shape);
  PhiloxStream rng(seed, 0);
  fill_uniform(t.view(), rng, T(lo), T(hi));
  return t;
}

template <class T, std::size_t R>
Tensor<T, R> constant_field(const Shape<R>& shape, std::initializer_list<T> per_channel, std::size_t channel_axis) {
  Tensor<T, R> t(shape);
  const auto strides = contiguous_strides(shape);
  for (index_t i = 0; i < t.size(); ++i) {
    const index_t c = (i / strides[channel_axis]) % shape[channel_axis];
    t.data()[i] = *(per_channel.begin() + c);
  }
  return t;
}

index_t clamp_index(index_t i, index_t n) { return std::min(std::max<index_t>(i, 0), n - 1); }

template <std::size_t R>
double max_abs_diff(TensorView<const double, R> a, TensorView<const double, R> b) {
  REQUIRE(a.shape() == b.shape());
  double m = 0;
  for (index_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a.data()[i] - b.data()[i]));
  return m;
}

constexpr Interp kInterps[] = {Interp::linear, Interp::nearest};
constexpr Padding kPaddings[] = {Padding::zeros, Padding::border};

}  // namespace

TEST_CASE("a zero field returns the input exactly (2D, 3D, batches, channels, every mode, labels)") {
  const auto img2 = random_tensor<float>(Shape<4>{2, 3, 6, 7}, 1);
  const Tensor<float, 4> zero2(Shape<4>{2, 2, 6, 7});
  const auto img3 = random_tensor<double>(Shape<5>{2, 2, 4, 5, 6}, 2);
  const Tensor<double, 5> zero3(Shape<5>{2, 3, 4, 5, 6});
  for (Interp interp : kInterps)
    for (Padding padding : kPaddings) {
      CHECK(bitwise_equal(warp_forward(img2, zero2, interp, padding), img2));
      CHECK(bitwise_equal(warp_forward(img3, zero3, interp, padding), img3));
    }
  Tensor<std::uint8_t, 3> labels(Shape<3>{3, 4, 5});
  for (index_t i = 0; i < labels.size(); ++i) labels.data()[i] = std::uint8_t(i * 7 % 256);
  const Tensor<float, 4> zero_single(Shape<4>{3, 3, 4, 5});
  CHECK(bitwise_equal(warp_forward(labels, zero_single, Interp::nearest), labels));
}

TEST_CASE("an integer shift moves the image exactly; zeros fill, border clamps") {
  // 2D, one image: dy = -1, dx = +2 everywhere -> out[y][x] = in[y - 1][x + 2].
  const auto img = random_tensor<float>(Shape<2>{5, 6}, 3);
  const auto shift = constant_field<float>(Shape<3>{2, 5, 6}, {-1.0f, 2.0f}, 0);
  for (Interp interp : kInterps) {
    const auto zeros = warp_forward(img, shift, interp, Padding::zeros);
    const auto border = warp_forward(img, shift, interp, Padding::border);
    for (index_t y = 0; y < 5; ++y)
      for (index_t x = 0; x < 6; ++x) {
        const bool inside = y - 1 >= 0 && x + 2 < 6;
        CHECK(zeros(y, x) == (inside ? img(y - 1, x + 2) : 0.0f));
        CHECK(border(y, x) == img(clamp_index(y - 1, 5), clamp_index(x + 2, 6)));
      }
  }
  // 3D batch with a different shift per item and two channels.
  const auto img3 = random_tensor<double>(Shape<5>{2, 2, 4, 5, 6}, 4);
  Tensor<double, 5> field(Shape<5>{2, 3, 4, 5, 6});
  const int shifts[2][3] = {{1, 0, -1}, {0, -2, 3}};
  for (index_t n = 0; n < 2; ++n)
    for (index_t c = 0; c < 3; ++c)
      for (index_t i = 0; i < 120; ++i) field[n][c].data()[i] = shifts[n][c];
  for (Interp interp : kInterps) {
    const auto out = warp_forward(img3, field, interp, Padding::zeros);
    for (index_t n = 0; n < 2; ++n)
      for (index_t c = 0; c < 2; ++c)
        for (index_t z = 0; z < 4; ++z)
          for (index_t y = 0; y < 5; ++y)
            for (index_t x = 0; x < 6; ++x) {
              const index_t qz = z + shifts[n][0], qy = y + shifts[n][1], qx = x + shifts[n][2];
              const bool inside = qz >= 0 && qz < 4 && qy >= 0 && qy < 5 && qx >= 0 && qx < 6;
              CHECK(out(n, c, z, y, x) == (inside ? img3(n, c, qz, qy, qx) : 0.0));
            }
  }
}

TEST_CASE("zeros padding fades over the voxel beyond the edge; border padding extends the edge") {
  Tensor<double, 2> img(Shape<2>{3, 4});
  for (index_t i = 0; i < 12; ++i) img.data()[i] = double(i + 1);  // rows [1 2 3 4], [5 6 7 8], [9 10 11 12]
  const auto half_left = constant_field<double>(Shape<3>{2, 3, 4}, {0.0, -0.5}, 0);
  const auto zeros = warp_forward(img, half_left, Interp::linear, Padding::zeros);
  const auto border = warp_forward(img, half_left, Interp::linear, Padding::border);
  for (index_t y = 0; y < 3; ++y) {
    CHECK(zeros(y, 0) == 0.5 * img(y, 0));  // q = -0.5: half of voxel 0, half of the zero beyond
    CHECK(border(y, 0) == img(y, 0));        // q clamped to 0
    for (index_t x = 1; x < 4; ++x) {
      CHECK(zeros(y, x) == 0.5 * (img(y, x - 1) + img(y, x)));
      CHECK(border(y, x) == zeros(y, x));
    }
  }
  const auto far_left = constant_field<double>(Shape<3>{2, 3, 4}, {0.0, -1.5}, 0);
  const auto zeros_far = warp_forward(img, far_left, Interp::linear, Padding::zeros);
  for (index_t y = 0; y < 3; ++y) {
    CHECK(zeros_far(y, 0) == 0.0);  // q = -1.5: wholly outside
    CHECK(zeros_far(y, 1) == 0.5 * img(y, 0));
  }
  const auto far_right = constant_field<double>(Shape<3>{2, 3, 4}, {0.0, 10.0}, 0);
  const auto zeros_out = warp_forward(img, far_right, Interp::linear, Padding::zeros);
  const auto border_out = warp_forward(img, far_right, Interp::linear, Padding::border);
  const auto inf_right = constant_field<double>(Shape<3>{2, 3, 4}, {0.0, std::numeric_limits<double>::infinity()}, 0);
  const auto zeros_inf = warp_forward(img, inf_right, Interp::linear, Padding::zeros);
  const auto border_inf = warp_forward(img, inf_right, Interp::nearest, Padding::border);
  for (index_t y = 0; y < 3; ++y)
    for (index_t x = 0; x < 4; ++x) {
      CHECK(zeros_out(y, x) == 0.0);
      CHECK(border_out(y, x) == img(y, 3));
      CHECK(zeros_inf(y, x) == 0.0);
      CHECK(border_inf(y, x) == img(y, 3));
    }
}

TEST_CASE("nearest keeps the label set and rounds half to even") {
  Tensor<std::int32_t, 3> labels(Shape<3>{9, 10, 11});
  const std::int32_t values[] = {-5, 3, 7, 1000};
  for (index_t z = 0; z < 9; ++z)
    for (index_t y = 0; y < 10; ++y)
      for (index_t x = 0; x < 11; ++x) labels(z, y, x) = values[(z / 3 + y / 4 + x / 5) % 4];
  const auto field = random_tensor<float>(Shape<4>{3, 9, 10, 11}, 5, -2.7, 2.7);
  for (Padding padding : kPaddings) {
    const auto out = warp_forward(labels, field, Interp::nearest, padding);
    std::set<std::int32_t> allowed(std::begin(values), std::end(values));
    if (padding == Padding::zeros) allowed.insert(0);
    std::set<std::int32_t> seen;
    for (index_t i = 0; i < out.size(); ++i) {
      REQUIRE(allowed.count(out.data()[i]) == 1);
      seen.insert(out.data()[i]);
    }
    CHECK(seen.size() >= 4);  // the warp moved labels around, it did not collapse them
  }
  // Ties: q = 2.5 -> 2, q = 3.5 -> 4, q = -0.5 -> 0 (inside), q = 4.5 on 5 voxels -> 4 (inside).
  Tensor<std::uint8_t, 2> row(Shape<2>{1, 5});
  for (index_t x = 0; x < 5; ++x) row(0, x) = std::uint8_t(10 + x);
  Tensor<float, 3> u(Shape<3>{2, 1, 5});
  u(1, 0, 0) = -0.5f;  // q = -0.5
  u(1, 0, 2) = 0.5f;   // q = 2.5
  u(1, 0, 3) = 0.5f;   // q = 3.5
  u(1, 0, 4) = 0.5f;   // q = 4.5
  u(1, 0, 1) = 0.49f;  // q = 1.49
  const auto out = warp_forward(row, u, Interp::nearest, Padding::zeros);
  CHECK(int(out(0, 0)) == 10);
  CHECK(int(out(0, 1)) == 11);
  CHECK(int(out(0, 2)) == 12);
  CHECK(int(out(0, 3)) == 14);
  CHECK(int(out(0, 4)) == 14);
  u(1, 0, 0) = -0.51f;  // q = -0.51 rounds to -1: outside
  CHECK(int(warp_forward(row, u, Interp::nearest, Padding::zeros)(0, 0)) == 0);
  CHECK(int(warp_forward(row, u, Interp::nearest, Padding::border)(0, 0)) == 10);
}

TEST_CASE("warp of an Image keeps its geometry") {
  Image<float, 2> moving(random_tensor<float>(Shape<2>{4, 5}, 6), Vec<2>{0.5, 2.0}, Vec<2>{1.0, -3.0});
  const auto shift = constant_field<float>(Shape<3>{2, 4, 5}, {0.0f, 1.0f}, 0);
  const auto out = warp_forward(moving, shift, Interp::linear, Padding::border);
  CHECK(same_geometry(out, moving));
  CHECK(out.voxels(2, 1) == moving.voxels(2, 2));
}

TEST_CASE("the image gradient is the adjoint of the warp: <warp(I), R> = <I, dI(R)>") {
  const auto img = random_tensor<double>(Shape<5>{2, 3, 5, 6, 7}, 7);
  const auto field = random_tensor<double>(Shape<5>{2, 3, 5, 6, 7}, 8, -3.0, 3.0);
  const auto R = random_tensor<double>(Shape<5>{2, 3, 5, 6, 7}, 9);
  for (Interp interp : kInterps)
    for (Padding padding : kPaddings) {
      const auto out = warp_forward(img, field, interp, padding);
      const auto grads = warp_backward(R, img, field, interp, padding);
      double lhs = 0, rhs = 0;
      for (index_t i = 0; i < img.size(); ++i) {
        lhs += out.data()[i] * R.data()[i];
        rhs += img.data()[i] * grads.image.data()[i];
      }
      CHECK(lhs == doctest::Approx(rhs).epsilon(1e-12));
    }
}

TEST_CASE("composing two translations gives their sum everywhere; composing with zero is exact") {
  const auto a = constant_field<double>(Shape<3>{2, 6, 7}, {0.75, -1.25}, 0);
  const auto b = constant_field<double>(Shape<3>{2, 6, 7}, {-2.5, 0.5}, 0);
  const auto ab = compose_displacements(a, b);
  for (index_t i = 0; i < 42; ++i) {
    CHECK(ab[0].data()[i] == -1.75);
    CHECK(ab[1].data()[i] == -0.75);
  }
  const auto a3 = constant_field<float>(Shape<5>{2, 3, 4, 5, 6}, {1.5f, -0.25f, 3.0f}, 1);
  const auto b3 = constant_field<float>(Shape<5>{2, 3, 4, 5, 6}, {-0.5f, 2.0f, 0.125f}, 1);
  const auto ab3 = compose_displacements<3>(a3, b3);
  for (index_t n = 0; n < 2; ++n)
    for (index_t i = 0; i < 120; ++i) {
      CHECK(ab3[n][0].data()[i] == 1.0f);
      CHECK(ab3[n][1].data()[i] == 1.75f);
      CHECK(ab3[n][2].data()[i] == 3.125f);
    }
  const auto u = random_tensor<double>(Shape<3>{2, 6, 7}, 10, -2.0, 2.0);
  const Tensor<double, 3> zero(Shape<3>{2, 6, 7});
  CHECK(bitwise_equal(compose_displacements(u, zero), u));
  CHECK(bitwise_equal(compose_displacements(zero, u), u));
  // An integer shift first: out(p) = a + u(p + a), the earlier field read at the clamped point.
  const auto down = constant_field<double>(Shape<3>{2, 6, 7}, {2.0, 0.0}, 0);
  const auto du = compose_displacements(down, u);
  for (index_t c = 0; c < 2; ++c)
    for (index_t y = 0; y < 6; ++y)
      for (index_t x = 0; x < 7; ++x) CHECK(du(c, y, x) == down(c, y, x) + u(c, clamp_index(y + 2, 6), x));
}

TEST_CASE("scaling and squaring of a rotation velocity field equals the matrix power, and approaches exp") {
  // v(p) = W (p - c) with W skew: the flow is a rotation by theta. Linear interpolation of a
  // linear field is exact, so 7 squarings give exactly ((I + W/128)^128 - I)(p - c) wherever every
  // sample point stays inside the grid. Clamping at the faces spoils values that then spread inwards
  // by about |u| + 1 voxel per squaring, so the checked disc (radius 8) keeps 12 voxels from the
  // faces of a 41 x 41 grid.
  const double theta = 0.2, cy = 20, cx = 20;
  Tensor<double, 3> v(Shape<3>{2, 41, 41});  // channels (dy, dx)
  for (index_t y = 0; y < 41; ++y)
    for (index_t x = 0; x < 41; ++x) {
      v(0, y, x) = theta * (double(x) - cx);   // dy =  theta * (x - cx)
      v(1, y, x) = -theta * (double(y) - cy);  // dx = -theta * (y - cy)
    }
  const auto u = integrate_velocity(v, 7);
  const auto euler = integrate_velocity(v, 0);
  CHECK(bitwise_equal(euler, v));
  // (I + W/128)^128 by repeated squaring, W = [[0, theta], [-theta, 0]] in (y, x) order.
  double m[2][2] = {{1, theta / 128}, {-theta / 128, 1}};
  for (int s = 0; s < 7; ++s) {
    const double r[2][2] = {{m[0][0] * m[0][0] + m[0][1] * m[1][0], m[0][0] * m[0][1] + m[0][1] * m[1][1]},
                            {m[1][0] * m[0][0] + m[1][1] * m[1][0], m[1][0] * m[0][1] + m[1][1] * m[1][1]}};
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) m[i][j] = r[i][j];
  }
  const double e[2][2] = {{std::cos(theta), std::sin(theta)}, {-std::sin(theta), std::cos(theta)}};  // exp(W)
  double worst_power = 0, worst_exp = 0, worst_euler = 0;
  for (index_t y = 0; y < 41; ++y)
    for (index_t x = 0; x < 41; ++x) {
      const double py = double(y) - cy, px = double(x) - cx;
      if (py * py + px * px > 64) continue;
      const double power_y = m[0][0] * py + m[0][1] * px - py, power_x = m[1][0] * py + m[1][1] * px - px;
      const double exp_y = e[0][0] * py + e[0][1] * px - py, exp_x = e[1][0] * py + e[1][1] * px - px;
      worst_power = std::max({worst_power, std::abs(u(0, y, x) - power_y), std::abs(u(1, y, x) - power_x)});
      worst_exp = std::max({worst_exp, std::abs(u(0, y, x) - exp_y), std::abs(u(1, y, x) - exp_x)});
      worst_euler = std::max({worst_euler, std::abs(v(0, y, x) - exp_y), std::abs(v(1, y, x) - exp_x)});
    }
  CHECK(worst_power < 1e-11);
  CHECK(worst_exp < 2e-3);    // (I + W/128)^128 vs exp(W): ~ theta^2 r / 256
  CHECK(worst_euler > 0.1);  // without squaring the error is ~ theta^2 r / 2
  // 3D, batch of one, a general skew W (rotation about an oblique axis); ball of radius 4 in 29^3.
  const double w_zy = 0.1, w_zx = -0.15, w_yx = 0.05;
  const double W3[3][3] = {{0, w_zy, w_zx}, {-w_zy, 0, w_yx}, {-w_zx, -w_yx, 0}};  // (z, y, x)
  Tensor<double, 5> v3(Shape<5>{1, 3, 29, 29, 29});
  for (index_t z = 0; z < 29; ++z)
    for (index_t y = 0; y < 29; ++y)
      for (index_t x = 0; x < 29; ++x) {
        const double p[3] = {double(z) - 14, double(y) - 14, double(x) - 14};
        for (index_t c = 0; c < 3; ++c) v3(0, c, z, y, x) = W3[c][0] * p[0] + W3[c][1] * p[1] + W3[c][2] * p[2];
      }
  const auto u3 = integrate_velocity(v3, 7);
  double M[3][3];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) M[i][j] = (i == j) + W3[i][j] / 128;
  for (int s = 0; s < 7; ++s) {
    double r[3][3] = {};
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j)
        for (int k = 0; k < 3; ++k) r[i][j] += M[i][k] * M[k][j];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) M[i][j] = r[i][j];
  }
  double worst3 = 0;
  for (index_t z = 0; z < 29; ++z)
    for (index_t y = 0; y < 29; ++y)
      for (index_t x = 0; x < 29; ++x) {
        const double p[3] = {double(z) - 14, double(y) - 14, double(x) - 14};
        if (p[0] * p[0] + p[1] * p[1] + p[2] * p[2] > 16) continue;
        for (int c = 0; c < 3; ++c) {
          const double want = M[c][0] * p[0] + M[c][1] * p[1] + M[c][2] * p[2] - p[c];
          worst3 = std::max(worst3, std::abs(u3(0, c, z, y, x) - want));
        }
      }
  CHECK(worst3 < 1e-11);
}

TEST_CASE("the field of a 90-degree rotation rotates the image exactly") {
  // 2D, voxel units: q = R(p - c) + c with R = rot(+90°), c = (2, 2): q_x = 4 - p_y, q_y = p_x,
  // so out[y][x] = in[x][4 - y].
  const auto img = random_tensor<double>(Shape<2>{5, 5}, 11);
  const auto field = affine_to_displacement<double>(rotation_matrix_2d(std::numbers::pi / 2), Vec<2>{0, 0},
                                                    Shape<2>{5, 5}, Vec<2>{2, 2});
  CHECK(field(0, 0, 0) == doctest::Approx(0.0));  // at (x, y) = (0, 0): q = (4, 0) -> dy = 0
  CHECK(field(1, 0, 0) == doctest::Approx(4.0));  //                              dx = 4
  const auto rotated = warp_forward(img, field, Interp::linear, Padding::zeros);
  const auto rotated_nearest = warp_forward(img, field, Interp::nearest, Padding::zeros);
  for (index_t y = 0; y < 5; ++y)
    for (index_t x = 0; x < 5; ++x) {
      CHECK(rotated(y, x) == doctest::Approx(img(x, 4 - y)).epsilon(1e-12));
      CHECK(rotated_nearest(y, x) == img(x, 4 - y));
    }
  // 3D rigid: rotation about z by 90° about the centre of a 4^3 cube and tz = +1:
  // q = (3 - p_y, p_x, p_z + 1) -> out[z][y][x] = in[z + 1][x][3 - y] (0 beyond the last slice).
  const auto img3 = random_tensor<float>(Shape<3>{4, 4, 4}, 12);
  const auto rigid = rigid_3d(0, 0, 1, 0, 0, std::numbers::pi / 2, Vec<3>{1.5, 1.5, 1.5});
  const auto field3 = affine_to_displacement(rigid.matrix, rigid.translation, Shape<3>{4, 4, 4}, rigid.center);
  const auto out3 = warp_forward(img3, field3, Interp::nearest, Padding::zeros);
  for (index_t z = 0; z < 4; ++z)
    for (index_t y = 0; y < 4; ++y)
      for (index_t x = 0; x < 4; ++x) CHECK(out3(z, y, x) == (z + 1 < 4 ? img3(z + 1, x, 3 - y) : 0.0f));
}

TEST_CASE("rigid helpers: rotation order Rz·Ry·Rx, radians, orthonormal") {
  const double h = std::numbers::pi / 2;
  const auto r = rotation_matrix_3d(h, 0, h);  // x first (y -> z), then z (x -> y)
  const auto ex = mat_vec<3>(r, Vec<3>{1, 0, 0});
  const auto ey = mat_vec<3>(r, Vec<3>{0, 1, 0});
  CHECK(ex[1] == doctest::Approx(1.0));  // Rz(Rx(e_x)) = Rz(e_x) = e_y (Rx·Rz would give e_z)
  CHECK(ey[2] == doctest::Approx(1.0));  // Rz(Rx(e_y)) = Rz(e_z) = e_z
  const auto rr = rotation_matrix_3d(0.3, -0.7, 1.1);
  const auto should_be_identity = mat_mul<3>(rr, transpose<3>(rr));
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = 0; j < 3; ++j) CHECK(should_be_identity[i * 3 + j] == doctest::Approx(i == j ? 1.0 : 0.0));
  CHECK(determinant<3>(rr) == doctest::Approx(1.0));
  const auto r2 = rigid_2d(1.0, -2.0, h, Vec<2>{3, 4});
  const auto moved = r2.apply(Vec<2>{4, 4});  // (1, 0) from the centre -> (0, 1), then translated
  CHECK(moved[0] == doctest::Approx(3.0 + 1.0));
  CHECK(moved[1] == doctest::Approx(5.0 - 2.0));
}

TEST_CASE("world-space affine fields follow the image geometry (spacing, origin, direction)") {
  Image<float, 2> img2(Shape<2>{6, 5});
  img2.spacing_mm = {2.0, 0.5};
  img2.origin_mm = {10.0, -4.0};
  img2.direction = rotation_matrix_2d(0.5);
  const auto t2 = rigid_2d(3.0, -1.0, 0.4, Vec<2>{12.0, 0.0});
  const auto u2 = affine_to_displacement<double>(img2, t2);
  REQUIRE(u2.shape() == (Shape<3>{2, 6, 5}));
  double worst = 0;
  for (index_t y = 0; y < 6; ++y)
    for (index_t x = 0; x < 5; ++x) {
      const Vec<2> p{double(x), double(y)};
      const Vec<2> q{double(x) + u2(1, y, x), double(y) + u2(0, y, x)};
      worst = std::max(worst, distance_mm<2>(img2.index_to_physical(q), t2.apply(img2.index_to_physical(p))));
    }
  CHECK(worst < 1e-9);
  Image<double, 3> img3(Shape<3>{3, 4, 5});
  img3.spacing_mm = {1.5, 0.75, 3.0};
  img3.origin_mm = {-20.0, 5.0, 7.0};
  img3.direction = rotation_matrix_3d(0.1, 0.2, -0.3);
  const AffineTransform<3> t3{{1.1, 0.1, 0.0, -0.05, 0.9, 0.2, 0.0, 0.1, 1.2}, {2.0, -3.0, 1.0}, {-15.0, 8.0, 10.0}};
  const auto u3 = affine_to_displacement<double>(img3, t3);
  worst = 0;
  for (index_t z = 0; z < 3; ++z)
    for (index_t y = 0; y < 4; ++y)
      for (index_t x = 0; x < 5; ++x) {
        const Vec<3> p{double(x), double(y), double(z)};
        const Vec<3> q{double(x) + u3(2, z, y, x), double(y) + u3(1, z, y, x), double(z) + u3(0, z, y, x)};
        worst = std::max(worst, distance_mm<3>(img3.index_to_physical(q), t3.apply(img3.index_to_physical(p))));
      }
  CHECK(worst < 1e-9);
}

TEST_CASE("the Jacobian determinant of an affine field is the matrix determinant; identity gives 1") {
  const Mat<2> a2{1.2, 0.3, -0.4, 0.9};
  const auto u2 = affine_to_displacement<double>(a2, Vec<2>{0.5, -1.0}, Shape<2>{6, 7}, Vec<2>{3, 2});
  const auto j2 = jacobian_determinant(u2);
  REQUIRE(j2.shape() == (Shape<2>{6, 7}));
  for (index_t i = 0; i < j2.size(); ++i) CHECK(j2.data()[i] == doctest::Approx(determinant<2>(a2)).epsilon(1e-12));
  const Mat<3> a3{1.1, 0.2, -0.1, 0.05, 0.8, 0.3, -0.2, 0.1, 1.3};
  const auto u3 = affine_to_displacement<double>(a3, Vec<3>{1, 2, 3}, Shape<3>{4, 5, 6}, Vec<3>{2, 2, 2});
  const auto j3 = jacobian_determinant<3>(u3);
  REQUIRE(j3.shape() == (Shape<3>{4, 5, 6}));
  for (index_t i = 0; i < j3.size(); ++i) CHECK(j3.data()[i] == doctest::Approx(determinant<3>(a3)).epsilon(1e-12));
  const Tensor<float, 5> zero(Shape<5>{2, 3, 3, 4, 5});
  const auto j1 = jacobian_determinant(zero);
  REQUIRE(j1.shape() == (Shape<4>{2, 3, 4, 5}));
  for (index_t i = 0; i < j1.size(); ++i) CHECK(j1.data()[i] == 1.0f);
  CHECK(folding_fraction(zero) == 0.0);
}

TEST_CASE("folding fraction of a constructed folding field") {
  // x + u_x(x) = g(x) = [0 1 2 3 2 1 0 1 2 3] on every row, u_y = 0. np.gradient of g:
  // [1 1 1 0 -1 -1 0 1 1 1] -> determinant <= 0 in columns 3, 4, 5, 6: 4 of 10.
  const double g[10] = {0, 1, 2, 3, 2, 1, 0, 1, 2, 3};
  Tensor<double, 3> fold(Shape<3>{2, 3, 10});
  for (index_t y = 0; y < 3; ++y)
    for (index_t x = 0; x < 10; ++x) fold(1, y, x) = g[x] - double(x);
  const auto det = jacobian_determinant(fold);
  const double want[10] = {1, 1, 1, 0, -1, -1, 0, 1, 1, 1};
  for (index_t y = 0; y < 3; ++y)
    for (index_t x = 0; x < 10; ++x) CHECK(det(y, x) == want[x]);
  CHECK(folding_fraction(fold) == doctest::Approx(0.4));
  // A batch [2, 2, 3, 10]: one identity item and the fold -> 0.2 overall.
  Tensor<double, 4> batch(Shape<4>{2, 2, 3, 10});
  copy(batch[1], fold.view());
  CHECK(folding_fraction<2>(batch) == doctest::Approx(0.2));
  // The same fold along z of a 3D field [3, 10, 2, 2].
  Tensor<float, 4> fold3(Shape<4>{3, 10, 2, 2});
  for (index_t z = 0; z < 10; ++z)
    for (index_t i = 0; i < 4; ++i) fold3[0][z].data()[i] = float(g[z] - double(z));
  CHECK(folding_fraction<3>(fold3) == doctest::Approx(0.4));
}

TEST_CASE("smoothness penalty on a hand-computed field") {
  // u_y = 0, u_x[y][x] = x^2 on a 2 x 3 grid: x-differences 1, 3 per row -> squares sum 20 over 8
  // differences (2 channels x 2 rows x 2); y-differences 0 over 6. L = lambda / 2 * (20/8 + 0).
  Tensor<double, 3> u(Shape<3>{2, 2, 3});
  for (index_t y = 0; y < 2; ++y)
    for (index_t x = 0; x < 3; ++x) u(1, y, x) = double(x * x);
  CHECK(spatial_gradient_l2(u, 2.0) == doctest::Approx(2.5));
  Tensor<double, 3> grad(u.shape());
  CHECK(spatial_gradient_l2(u, grad.view(), 2.0) == doctest::Approx(2.5));
  // dL/du_x[y][x] = lambda/2 * 2/8 * (back - forward): x=0: -1; x=1: 1 - 3; x=2: 3.
  CHECK(grad(1, 0, 0) == doctest::Approx(0.25 * -1.0));
  CHECK(grad(1, 0, 1) == doctest::Approx(0.25 * -2.0));
  CHECK(grad(1, 1, 2) == doctest::Approx(0.25 * 3.0));
  CHECK(grad(0, 1, 1) == 0.0);
  spatial_gradient_l2(u, grad.view(), 2.0, GradWrite::accumulate);
  CHECK(grad(1, 1, 2) == doctest::Approx(0.5 * 3.0));
  // A constant field is perfectly smooth.
  const auto c3 = constant_field<float>(Shape<5>{2, 3, 3, 4, 5}, {1.0f, -2.0f, 0.5f}, 1);
  CHECK(spatial_gradient_l2(c3, 3.0) == 0.0);
}

TEST_CASE("invalid shapes, NaN fields and bad arguments throw rlmed::Error") {
  const auto img = random_tensor<float>(Shape<4>{2, 1, 5, 6}, 13);
  const Tensor<float, 4> field(Shape<4>{2, 2, 5, 6});
  CHECK_THROWS_AS(warp_forward(img, Tensor<float, 4>(Shape<4>{2, 3, 5, 6})), Error);  // 3 channels for 2D
  CHECK_THROWS_AS(warp_forward(img, Tensor<float, 4>(Shape<4>{2, 2, 5, 7})), Error);  // spatial mismatch
  CHECK_THROWS_AS(warp_forward(img, Tensor<float, 4>(Shape<4>{1, 2, 5, 6})), Error);  // batch mismatch
  Tensor<float, 4> wrong_out(Shape<4>{2, 1, 5, 5});
  CHECK_THROWS_AS(warp_forward_into(wrong_out.view(), img, field), Error);
  Tensor<float, 4> aliased = img;
  CHECK_THROWS_AS(warp_forward_into(aliased.view(), aliased, field), Error);
  Tensor<std::uint8_t, 2> labels(Shape<2>{5, 6});
  CHECK_THROWS_AS(warp_forward(labels, Tensor<float, 3>(Shape<3>{2, 5, 6}), Interp::linear), Error);
  for (Interp interp : kInterps)
    for (Padding padding : kPaddings) {
      Tensor<float, 4> nan_field = field;
      nan_field(1, 0, 3, 2) = std::numeric_limits<float>::quiet_NaN();
      CHECK_THROWS_AS(warp_forward(img, nan_field, interp, padding), Error);
      CHECK_THROWS_AS(warp_backward(img, img, nan_field, interp, padding), Error);
      nan_field(1, 0, 3, 2) = 0.0f;
      nan_field(0, 1, 4, 5) = std::numeric_limits<float>::quiet_NaN();  // the fastest axis, last voxel
      CHECK_THROWS_AS(warp_forward(img, nan_field, interp, padding), Error);
    }
  Tensor<float, 4> gi(img.shape()), gf(field.shape()), bad_gi(Shape<4>{2, 1, 6, 5});
  CHECK_THROWS_AS(warp_backward_into(bad_gi.view(), gf.view(), img, img, field), Error);
  CHECK_THROWS_AS(warp_backward_into(gi.view(), gf.view(), Tensor<float, 4>(Shape<4>{2, 2, 5, 6}), img, field), Error);
  CHECK_THROWS_AS(warp_backward_into(gi.view(), Tensor<float, 4>(Shape<4>{2, 2, 5, 5}).view(), img, img, field), Error);
  CHECK_NOTHROW(warp_backward_into(gi.view(), gf.view(), img, img, field));
  CHECK_THROWS_AS(compose_displacements<2>(field, Tensor<float, 4>(Shape<4>{2, 2, 5, 5})), Error);
  CHECK_THROWS_AS(compose_displacements(Tensor<float, 3>(Shape<3>{3, 5, 6}), Tensor<float, 3>(Shape<3>{3, 5, 6})), Error);
  CHECK_THROWS_AS(integrate_velocity(Tensor<float, 3>(Shape<3>{2, 5, 6}), -1), Error);
  CHECK_THROWS_AS(integrate_velocity(Tensor<float, 3>(Shape<3>{2, 5, 6}), 31), Error);
  Tensor<float, 2> wrong_det(Shape<2>{5, 5});
  CHECK_THROWS_AS(jacobian_determinant_into(wrong_det.view(), Tensor<float, 3>(Shape<3>{2, 5, 6})), Error);
  Tensor<double, 3> nan_u(Shape<3>{2, 4, 4});
  nan_u(1, 2, 2) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(folding_fraction(nan_u), Error);
  CHECK_THROWS_AS(spatial_gradient_l2(nan_u), Error);
  CHECK_THROWS_AS(spatial_gradient_l2(Tensor<double, 3>(Shape<3>{2, 4, 4}), std::nan("")), Error);
  CHECK_THROWS_AS(folding_fraction(Tensor<double, 3>(Shape<3>{2, 0, 4})), Error);
  Tensor<double, 3> three_channels(Shape<3>{3, 4, 4});
  CHECK_THROWS_AS((affine_to_displacement_into<double, 2>(three_channels.view(), AffineTransform<2>{})), Error);
  Tensor<double, 3> out2(Shape<3>{2, 4, 4});
  const AffineTransform<2> nan_matrix{{1, 0, 0, std::nan("")}, {}, {}};
  CHECK_THROWS_AS((affine_to_displacement_into<double, 2>(out2.view(), nan_matrix)), Error);
  Image<float, 2> flat(Shape<2>{4, 4});
  flat.direction = {1, 0, 1, 0};  // singular
  CHECK_THROWS_AS(affine_to_displacement(flat, AffineTransform<2>{}), Error);
}

TEST_CASE("backward is deterministic: repeated runs and 1 vs 2 threads are bit-identical") {
  // Large displacements make many output voxels scatter into the same moving voxels, across the
  // slab boundaries of the partition.
  const auto img3 = random_tensor<float>(Shape<5>{2, 2, 16, 12, 20}, 14);
  const auto field3 = random_tensor<float>(Shape<5>{2, 3, 16, 12, 20}, 15, -6.0, 6.0);
  const auto R3 = random_tensor<float>(Shape<5>{2, 2, 16, 12, 20}, 16);
  const auto img2 = random_tensor<double>(Shape<4>{2, 2, 64, 48}, 17);
  const auto field2 = random_tensor<double>(Shape<4>{2, 2, 64, 48}, 18, -9.0, 9.0);
  const auto R2 = random_tensor<double>(Shape<4>{2, 2, 64, 48}, 19);
  const int threads_before = max_threads();
  for (Interp interp : kInterps)
    for (Padding padding : kPaddings) {
      set_num_threads(2);
      const auto a3 = warp_backward(R3, img3, field3, interp, padding);
      const auto b3 = warp_backward(R3, img3, field3, interp, padding);
      const auto a2 = warp_backward(R2, img2, field2, interp, padding);
      const auto y2 = warp_forward(img2, field2, interp, padding);
      set_num_threads(1);
      const auto c3 = warp_backward(R3, img3, field3, interp, padding);
      const auto c2 = warp_backward(R2, img2, field2, interp, padding);
      const auto y2_serial = warp_forward(img2, field2, interp, padding);
      CHECK(bitwise_equal(a3.image, b3.image));
      CHECK(bitwise_equal(a3.field, b3.field));
      CHECK(bitwise_equal(a3.image, c3.image));
      CHECK(bitwise_equal(a3.field, c3.field));
      CHECK(bitwise_equal(a2.image, c2.image));
      CHECK(bitwise_equal(a2.field, c2.field));
      CHECK(bitwise_equal(y2, y2_serial));
    }
  set_num_threads(threads_before);
}

TEST_CASE("backward: one gradient alone equals the pair; accumulate adds to what is there") {
  const auto img = random_tensor<double>(Shape<5>{2, 3, 9, 8, 10}, 20);
  const auto field = random_tensor<double>(Shape<5>{2, 3, 9, 8, 10}, 21, -4.0, 4.0);
  const auto R = random_tensor<double>(Shape<5>{2, 3, 9, 8, 10}, 22);
  for (Padding padding : kPaddings) {
    const auto both = warp_backward(R, img, field, Interp::linear, padding);
    Tensor<double, 5> image_only(img.shape()), field_only(field.shape());
    WarpWorkspace ws;
    warp_backward_into(image_only.view(), {}, R, img, field, Interp::linear, padding, GradWrite::overwrite, &ws);
    warp_backward_into({}, field_only.view(), R, img, field, Interp::linear, padding, GradWrite::overwrite, &ws);
    CHECK(bitwise_equal(image_only, both.image));
    CHECK(bitwise_equal(field_only, both.field));
    auto gi = random_tensor<double>(img.shape(), 23), gf = random_tensor<double>(field.shape(), 24);
    const auto gi0 = gi, gf0 = gf;
    warp_backward_into(gi.view(), gf.view(), R, img, field, Interp::linear, padding, GradWrite::accumulate, &ws);
    Tensor<double, 5> want_i(img.shape()), want_f(field.shape());
    for (index_t i = 0; i < gi.size(); ++i) want_i.data()[i] = gi0.data()[i] + both.image.data()[i];
    for (index_t i = 0; i < gf.size(); ++i) want_f.data()[i] = gf0.data()[i] + both.field.data()[i];
    CHECK(max_abs_diff<5>(gi.view(), want_i.view()) < 1e-12);
    CHECK(max_abs_diff<5>(gf.view(), want_f.view()) < 1e-12);
  }
}
