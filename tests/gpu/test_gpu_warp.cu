// GPU warp: forward (linear / nearest, zeros / border, 2D / 3D, float images and int labels) and
// the deterministic backward against rlmed/imaging/warp.hpp on random inputs; run twice for bit
// identity; NaN displacements reported through the flag. Exits 77 without a device.
#define DOCTEST_CONFIG_IMPLEMENT
#include "gpu_test_util.hpp"

#include <cmath>
#include <cstdint>

#include "rlmed/cuda/warp.cuh"
#include "rlmed/imaging/warp.hpp"

using namespace rlmed;
using imaging::GradWrite;
using imaging::Interp;
using imaging::Padding;

namespace {

/// Random field in voxels: displacements up to ±amp, a quarter of them snapped to multiples of
/// 0.5 (integer and half-integer sample points, the rounding ties and cell boundaries).
template <std::size_t R>
Tensor<float, R> random_field(const Shape<R>& shape, PhiloxStream& rng, float amp) {
  Tensor<float, R> u(shape);
  for (index_t i = 0; i < u.size(); ++i) {
    float v = rng.uniform(-amp, amp);
    if (rng.uniform() < 0.25f) v = std::round(2.f * v) / 2.f;
    u.data()[i] = v;
  }
  return u;
}

template <std::size_t Dim>
void check_case(const Shape<Dim + 2>& image_shape, Interp interp, Padding padding, float amp, std::uint64_t seed) {
  CAPTURE(image_shape);
  CAPTURE(int(interp));
  CAPTURE(int(padding));
  CAPTURE(amp);
  PhiloxStream rng(seed, 0);
  Shape<Dim + 2> field_shape = image_shape;
  field_shape[1] = index_t(Dim);
  const auto image = gpu_test::random_tensor<float>(image_shape, rng, -2.f, 2.f);
  const auto field = random_field(field_shape, rng, amp);
  const auto grad_out = gpu_test::random_tensor<float>(image_shape, rng, -1.f, 1.f);

  // CPU reference.
  Tensor<float, Dim + 2> out_ref(image_shape), gi_ref(image_shape);
  Tensor<float, Dim + 2> gf_ref(field_shape);
  imaging::warp_forward_into(out_ref.view(), image, field, interp, padding);
  imaging::warp_backward_into(gi_ref.view(), gf_ref.view(), grad_out, image, field, interp, padding);

  gpu::Stream stream;
  const auto d_image = to_device(image.view(), stream);
  const auto d_field = to_device(field.view(), stream);
  const auto d_grad_out = to_device(grad_out.view(), stream);
  Tensor<float, Dim + 2, rlmed::cuda> d_out(image_shape), d_gi(image_shape), d_gf(field_shape);
  kernels::WarpDeviceWorkspace ws;
  kernels::DeviceFlag nan_flag;

  Tensor<float, Dim + 2> out[2], gi[2], gf[2];
  for (int run = 0; run < 2; ++run) {
    kernels::warp_forward<Dim, float, float>(d_out.view(), d_image.view(), d_field.view(), interp, padding, stream,
                                             nan_flag.get());
    kernels::warp_backward<Dim, float, float>(d_gi.view(), d_gf.view(), d_grad_out.view(), d_image.view(),
                                              d_field.view(), interp, padding, GradWrite::overwrite, ws, stream,
                                              nan_flag.get());
    CHECK_FALSE(nan_flag.test_and_clear(stream));
    out[run] = to_host(d_out.view(), stream);
    gi[run] = to_host(d_gi.view(), stream);
    gf[run] = to_host(d_gf.view(), stream);
  }
  const double e_out = gpu_test::normwise_rel_err(out[0], out_ref);
  const double e_gi = gpu_test::normwise_rel_err(gi[0], gi_ref);
  const double e_gf = gpu_test::normwise_rel_err(gf[0], gf_ref);
  MESSAGE("rel. err forward " << e_out << ", grad image " << e_gi << ", grad field " << e_gf);
  CHECK(e_out < 1e-5);
  CHECK(e_gi < 1e-5);
  CHECK(e_gf < 1e-5);
  if (interp == Interp::nearest) CHECK(gpu_test::same_bits(out[0], out_ref));  // a pure gather
  CHECK(gpu_test::same_bits(out[0], out[1]));
  CHECK(gpu_test::same_bits(gi[0], gi[1]));
  CHECK(gpu_test::same_bits(gf[0], gf[1]));

  // Accumulate mode adds onto what is there.
  const auto prior_gi = gpu_test::random_tensor<float>(image_shape, rng, -1.f, 1.f);
  const auto prior_gf = gpu_test::random_tensor<float>(field_shape, rng, -1.f, 1.f);
  copy_async(d_gi.view(), prior_gi.view(), stream);
  copy_async(d_gf.view(), prior_gf.view(), stream);
  kernels::warp_backward<Dim, float, float>(d_gi.view(), d_gf.view(), d_grad_out.view(), d_image.view(),
                                            d_field.view(), interp, padding, GradWrite::accumulate, ws, stream);
  auto acc_gi = to_host(d_gi.view(), stream);
  auto acc_gf = to_host(d_gf.view(), stream);
  Tensor<float, Dim + 2> want_gi = prior_gi, want_gf = prior_gf;
  imaging::warp_backward_into(want_gi.view(), want_gf.view(), grad_out, image, field, interp, padding,
                              GradWrite::accumulate);
  CHECK(gpu_test::normwise_rel_err(acc_gi, want_gi) < 1e-5);
  CHECK(gpu_test::normwise_rel_err(acc_gf, want_gf) < 1e-5);

  // Only one gradient wanted: the other view is empty and untouched.
  kernels::warp_backward<Dim, float, float>(d_gi.view(), TensorView<float, Dim + 2, rlmed::cuda>{}, d_grad_out.view(),
                                            d_image.view(), d_field.view(), interp, padding, GradWrite::overwrite, ws,
                                            stream);
  CHECK(gpu_test::same_bits(to_host(d_gi.view(), stream), gi[0]));
}

}  // namespace

TEST_CASE("2D warp forward and backward match the CPU reference and repeat bit for bit") {
  for (Interp interp : {Interp::linear, Interp::nearest})
    for (Padding padding : {Padding::zeros, Padding::border}) {
      check_case<2>(Shape<4>{2, 3, 37, 41}, interp, padding, 3.f, 11);
      check_case<2>(Shape<4>{1, 1, 64, 50}, interp, padding, 40.f, 12);  // many stencils far outside
      check_case<2>(Shape<4>{3, 5, 1, 17}, interp, padding, 2.f, 13);    // one row
    }
}

TEST_CASE("3D warp forward and backward match the CPU reference and repeat bit for bit") {
  for (Interp interp : {Interp::linear, Interp::nearest})
    for (Padding padding : {Padding::zeros, Padding::border}) {
      check_case<3>(Shape<5>{2, 2, 13, 17, 19}, interp, padding, 3.f, 21);
      check_case<3>(Shape<5>{1, 1, 24, 20, 33}, interp, padding, 12.f, 22);
      check_case<3>(Shape<5>{1, 6, 5, 6, 7}, interp, padding, 0.75f, 23);  // channel groups of 4 and 2
    }
}

TEST_CASE("a large smooth 3D warp (contraction: many outputs share a cell) matches the CPU") {
  // u(p) = −0.6·(p − centre): every cell collects ~2.5 outputs per axis, long sorted segments.
  const index_t n = 48;
  Tensor<float, 5> image(Shape<5>{1, 1, n, n, n}), field(Shape<5>{1, 3, n, n, n}), grad_out(Shape<5>{1, 1, n, n, n});
  PhiloxStream rng(5, 1);
  for (index_t i = 0; i < image.size(); ++i) {
    image.data()[i] = rng.uniform(-1.f, 1.f);
    grad_out.data()[i] = rng.uniform(-1.f, 1.f);
  }
  for (index_t z = 0; z < n; ++z)
    for (index_t y = 0; y < n; ++y)
      for (index_t x = 0; x < n; ++x) {
        field(0, 0, z, y, x) = -0.6f * (float(z) - 23.3f);
        field(0, 1, z, y, x) = -0.6f * (float(y) - 23.7f);
        field(0, 2, z, y, x) = -0.6f * (float(x) - 22.9f);
      }
  Tensor<float, 5> gi_ref(image.shape()), gf_ref(field.shape());
  imaging::warp_backward_into(gi_ref.view(), gf_ref.view(), grad_out, image, field);
  gpu::Stream stream;
  const auto d_image = to_device(image.view(), stream), d_field = to_device(field.view(), stream);
  const auto d_go = to_device(grad_out.view(), stream);
  Tensor<float, 5, rlmed::cuda> d_gi(image.shape()), d_gf(field.shape());
  kernels::WarpDeviceWorkspace ws;
  kernels::warp_backward<3, float, float>(d_gi.view(), d_gf.view(), d_go.view(), d_image.view(), d_field.view(),
                                          Interp::linear, Padding::zeros, GradWrite::overwrite, ws, stream);
  const auto gi = to_host(d_gi.view(), stream), gf = to_host(d_gf.view(), stream);
  CHECK(gpu_test::normwise_rel_err(gi, gi_ref) < 1e-5);
  CHECK(gpu_test::normwise_rel_err(gf, gf_ref) < 1e-5);
}

TEST_CASE("displacement composition and scaling-and-squaring match the CPU") {
  PhiloxStream rng(41, 0);
  const Shape<5> s{2, 3, 11, 14, 9};
  const auto a = random_field(s, rng, 2.5f);
  const auto u = random_field(s, rng, 2.5f);
  Tensor<float, 5> ref(s);
  imaging::compose_displacements_into<3>(ref.view(), a, u);
  gpu::Stream stream;
  const auto d_a = to_device(a.view(), stream);
  const auto d_u = to_device(u.view(), stream);
  Tensor<float, 5, rlmed::cuda> d_out(s);
  kernels::compose_displacements<3, float>(d_out.view(), d_a.view(), d_u.view(), stream);
  const auto composed = to_host(d_out.view(), stream);
  CHECK(gpu_test::normwise_rel_err(composed, ref) < 1e-5);
  kernels::compose_displacements<3, float>(d_out.view(), d_a.view(), d_u.view(), stream);
  CHECK(gpu_test::same_bits(to_host(d_out.view(), stream), composed));

  // A smooth velocity (integration of a rough one amplifies rounding differences).
  Tensor<float, 3> v(Shape<3>{2, 40, 36});
  for (index_t y = 0; y < 40; ++y)
    for (index_t x = 0; x < 36; ++x) {
      v(0, y, x) = 4.f * std::sin(0.15f * float(x) + 0.3f);
      v(1, y, x) = 3.f * std::cos(0.2f * float(y));
    }
  const auto v_ref = imaging::integrate_velocity<2>(v);
  Tensor<float, 4, rlmed::cuda> d_v(Shape<4>{1, 2, 40, 36}), d_int(Shape<4>{1, 2, 40, 36}), scratch;
  copy_async(d_v.view(), TensorView<const float, 4>(v.data(), Shape<4>{1, 2, 40, 36}), stream);
  kernels::integrate_velocity<2, float>(d_int.view(), d_v.view(), 7, scratch, stream);
  const auto integrated = to_host(d_int.view(), stream);
  Tensor<float, 4> want(Shape<4>{1, 2, 40, 36});
  std::copy(v_ref.data(), v_ref.data() + v_ref.size(), want.data());
  CHECK(gpu_test::normwise_rel_err(integrated, want) < 1e-5);
}

TEST_CASE("nearest warp of integer labels is the CPU's, bit for bit") {
  PhiloxStream rng(31, 0);
  Tensor<std::int32_t, 5> labels(Shape<5>{2, 1, 9, 10, 11});
  for (index_t i = 0; i < labels.size(); ++i) labels.data()[i] = static_cast<std::int32_t>(rng.next_u32() % 7);
  const auto field = random_field(Shape<5>{2, 3, 9, 10, 11}, rng, 4.f);
  gpu::Stream stream;
  const auto d_labels = to_device(labels.view(), stream);
  const auto d_field = to_device(field.view(), stream);
  Tensor<std::int32_t, 5, rlmed::cuda> d_out(labels.shape());
  for (Padding padding : {Padding::zeros, Padding::border}) {
    Tensor<std::int32_t, 5> ref(labels.shape());
    imaging::warp_forward_into(ref.view(), labels, field, Interp::nearest, padding);
    kernels::warp_forward<3, std::int32_t, float>(d_out.view(), d_labels.view(), d_field.view(), Interp::nearest,
                                                  padding, stream);
    CHECK(gpu_test::same_bits(to_host(d_out.view(), stream), ref));
  }
  CHECK_THROWS_AS((kernels::warp_forward<3, std::int32_t, float>(d_out.view(), d_labels.view(), d_field.view(),
                                                                  Interp::linear, Padding::zeros, stream)),
                  Error);
}

TEST_CASE("NaN displacements raise the flag; infinities are points outside; bad shapes throw") {
  Tensor<float, 4> image(Shape<4>{1, 1, 8, 9}), field(Shape<4>{1, 2, 8, 9});
  fill(image, 1.f);
  fill(field, 0.f);
  field(0, 1, 3, 4) = std::numeric_limits<float>::infinity();
  gpu::Stream stream;
  auto d_image = to_device(image.view(), stream);
  auto d_field = to_device(field.view(), stream);
  Tensor<float, 4, rlmed::cuda> d_out(image.shape());
  kernels::DeviceFlag flag;
  kernels::warp_forward<2, float, float>(d_out.view(), d_image.view(), d_field.view(), Interp::linear, Padding::zeros,
                                         stream, flag.get());
  CHECK_NOTHROW(kernels::throw_if_nan(flag, stream, "warp"));
  auto out = to_host(d_out.view(), stream);
  CHECK(out(0, 0, 3, 4) == 0.f);
  CHECK(out(0, 0, 3, 5) == 1.f);
  field(0, 0, 2, 2) = std::nanf("");
  d_field = to_device(field.view(), stream);
  kernels::warp_forward<2, float, float>(d_out.view(), d_image.view(), d_field.view(), Interp::linear, Padding::zeros,
                                         stream, flag.get());
  CHECK_THROWS_AS(kernels::throw_if_nan(flag, stream, "warp"), Error);
  CHECK_NOTHROW(kernels::throw_if_nan(flag, stream, "warp"));  // the flag was cleared
  Tensor<float, 4, rlmed::cuda> wrong(Shape<4>{1, 2, 8, 8});
  CHECK_THROWS_AS((kernels::warp_forward<2, float, float>(d_out.view(), d_image.view(), wrong.view(), Interp::linear,
                                                           Padding::zeros, stream)),
                  Error);
}

RLMED_GPU_TEST_MAIN
