// GPU dilated convolution (2D and 3D; forward, backward-data, backward-weights) against
// nn::ConvModule<Dims, ...>: dilations 1-4, strides 2-3, padding other than "same" (smaller and
// larger than the dilated span), odd sizes, batch > 1, channel counts that leave partial
// channel chunks and output-channel tiles, the fallbacks for patches / kernels beyond the
// shared-memory budget, the landmark Q-net's 4 -> 32 5^3 and 32 -> 32 3^3 layers at reduced
// size; parameter gradients are checked to ACCUMULATE onto non-zero initial values (as the
// module does), the data gradient to overwrite. Every kernel runs twice and must give the same
// bits. Exits 77 without a device.
#define DOCTEST_CONFIG_IMPLEMENT
#include "gpu_test_util.hpp"

#include "rlmed/cuda/conv.cuh"
#include "rlmed/nn/layers/conv.hpp"

using namespace rlmed;

namespace {

template <index_t In, index_t Out, index_t K>
void check_conv(index_t B, index_t H, index_t W, index_t stride, index_t padding, index_t dilation, bool bias) {
  CAPTURE(In);
  CAPTURE(Out);
  CAPTURE(K);
  CAPTURE(stride);
  CAPTURE(padding);
  CAPTURE(dilation);
  nn::ConvModule<2, In, Out, K, float> conv(nn::ConvConfig<2>(stride, padding, dilation, bias));
  PhiloxStream rng(21, std::uint64_t(dilation));
  conv.initialize(rng);
  const auto x = gpu_test::random_tensor<float>(Shape<4>{B, In, H, W}, rng, -1.f, 1.f);
  nn::Context ctx;
  typename nn::ConvModule<2, In, Out, K, float>::Cache cache;
  const auto y_view = conv.forward(ctx, x.view(), cache);
  Tensor<float, 4> ref(y_view.shape());
  std::copy(y_view.data(), y_view.data() + y_view.size(), ref.data());

  gpu::Stream stream;
  const auto d_x = to_device(x.view(), stream);
  const auto d_w = to_device(conv.weight.value.view(), stream);
  Tensor<float, 1, rlmed::cuda> d_b(Shape<1>{Out});
  if (bias) copy_async(d_b.view(), conv.bias.value.view(), stream);
  Tensor<float, 4, rlmed::cuda> d_y(ref.shape());
  const kernels::Conv2dParams p{stride, padding, dilation};
  Tensor<float, 4> y[2];
  for (int run = 0; run < 2; ++run) {
    d_y.zero(stream);
    kernels::conv2d_forward<float>(d_y.view(), d_x.view(), d_w.view(), bias ? d_b.data() : nullptr, p, stream);
    y[run] = to_host(d_y.view(), stream);
  }
  const double err = gpu_test::normwise_rel_err(y[0], ref);
  MESSAGE("conv " << In << "->" << Out << " k" << K << " s" << stride << " d" << dilation << ": rel. err " << err);
  CHECK(err < 1e-5);
  CHECK(gpu_test::same_bits(y[0], y[1]));
}

/// Copies a host view into a fresh host tensor (module outputs are views into its caches).
template <class T, std::size_t R>
Tensor<T, R> host_clone(TensorView<const T, R> v) {
  Tensor<T, R> t(v.shape());
  std::copy(v.data(), v.data() + v.size(), t.data());
  return t;
}

/// Runs the module forward + backward on the CPU (dw, db start from non-zero values and must
/// accumulate) and the GPU kernels (forward for 3D; data and weight gradients in both), twice.
template <int Dims, index_t In, index_t Out, index_t K>
void check_conv_grad(index_t B, index_t n0, index_t n1, index_t n2, index_t stride, index_t padding, index_t dilation,
                     bool bias) {
  constexpr std::size_t R = Dims + 2;
  CAPTURE(Dims);
  CAPTURE(In);
  CAPTURE(Out);
  CAPTURE(K);
  CAPTURE(stride);
  CAPTURE(padding);
  CAPTURE(dilation);
  CAPTURE(bias);
  using Module = nn::ConvModule<Dims, In, Out, K, float>;
  Module conv(nn::ConvConfig<Dims>(stride, padding, dilation, bias));
  PhiloxStream rng(33, std::uint64_t(stride * 100 + padding * 10 + dilation));
  conv.initialize(rng);
  Shape<R> xs{};
  xs[0] = B;
  xs[1] = In;
  const index_t sizes[3] = {n0, n1, n2};
  for (int a = 0; a < Dims; ++a) xs[2 + a] = sizes[3 - Dims + a];
  const auto x = gpu_test::random_tensor<float>(xs, rng, -1.f, 1.f);
  const auto dw0 = gpu_test::random_tensor<float>(conv.weight.grad.shape(), rng, -0.5f, 0.5f);
  const auto db0 = gpu_test::random_tensor<float>(Shape<1>{Out}, rng, -0.5f, 0.5f);
  const auto poison = gpu_test::random_tensor<float>(xs, rng, 100.f, 200.f);
  std::copy(dw0.data(), dw0.data() + dw0.size(), conv.weight.grad.data());
  if (bias) std::copy(db0.data(), db0.data() + db0.size(), conv.bias.grad.data());

  nn::Context ctx;
  typename Module::Cache cache;
  const auto y_ref = host_clone<float, R>(conv.forward(ctx, x.view(), cache));
  const auto dy = gpu_test::random_tensor<float>(y_ref.shape(), rng, -1.f, 1.f);
  const auto dx_ref = host_clone<float, R>(conv.backward(ctx, cache, dy.view()));
  const Tensor<float, R>& dw_ref = conv.weight.grad;

  gpu::Stream stream;
  const auto d_x = to_device(x.view(), stream);
  const auto d_w = to_device(conv.weight.value.view(), stream);
  const auto d_dy = to_device(dy.view(), stream);
  Tensor<float, 1, rlmed::cuda> d_b(Shape<1>{Out}), d_db(Shape<1>{Out});
  if (bias) copy_async(d_b.view(), conv.bias.value.view(), stream);
  Tensor<float, R, rlmed::cuda> d_y(y_ref.shape()), d_dx(x.shape()), d_dw(dw0.shape());
  kernels::ConvWorkspace<float> ws;
  const kernels::ConvParams p{stride, padding, dilation};
  Tensor<float, R> y[2], dx[2], dw[2];
  Tensor<float, 1> db[2];
  for (int run = 0; run < 2; ++run) {
    d_y.zero(stream);
    // Poison dx: the data gradient must overwrite it completely.
    copy_async(d_dx.view(), poison.view(), stream);
    copy_async(d_dw.view(), dw0.view(), stream);
    copy_async(d_db.view(), db0.view(), stream);
    const TensorView<float, 1, rlmed::cuda> db_view = bias ? d_db.view() : TensorView<float, 1, rlmed::cuda>{};
    if constexpr (Dims == 3) {
      kernels::conv3d_forward<float>(d_y.view(), d_x.view(), d_w.view(), bias ? d_b.data() : nullptr, p, stream);
      kernels::conv3d_backward_data<float>(d_dx.view(), d_dy.view(), d_w.view(), p, stream);
      kernels::conv3d_backward_weights<float>(d_dw.view(), db_view, d_x.view(), d_dy.view(), p, ws, stream);
    } else {
      kernels::conv2d_forward<float>(d_y.view(), d_x.view(), d_w.view(), bias ? d_b.data() : nullptr, p, stream);
      kernels::conv2d_backward_data<float>(d_dx.view(), d_dy.view(), d_w.view(), p, ws, stream);
      kernels::conv2d_backward_weights<float>(d_dw.view(), db_view, d_x.view(), d_dy.view(), p, ws, stream);
    }
    y[run] = to_host(d_y.view(), stream);
    dx[run] = to_host(d_dx.view(), stream);
    dw[run] = to_host(d_dw.view(), stream);
    db[run] = to_host(d_db.view(), stream);
  }
  const double ey = gpu_test::normwise_rel_err(y[0], y_ref), edx = gpu_test::normwise_rel_err(dx[0], dx_ref),
               edw = gpu_test::normwise_rel_err(dw[0], dw_ref);
  MESSAGE("conv" << Dims << "d " << In << "->" << Out << " k" << K << " s" << stride << " p" << padding << " d"
                 << dilation << ": rel. err y " << ey << ", dx " << edx << ", dw " << edw);
  CHECK(ey < 1e-5);
  CHECK(edx < 1e-5);
  CHECK(edw < 1e-5);
  // The weight gradient itself (dw − dw0), so the check is not dominated by the initial values.
  Tensor<float, R> gw(dw0.shape()), gw_ref(dw0.shape());
  for (index_t i = 0; i < gw.size(); ++i) {
    gw.data()[i] = dw[0].data()[i] - dw0.data()[i];
    gw_ref.data()[i] = dw_ref.data()[i] - dw0.data()[i];
  }
  CHECK(gpu_test::normwise_rel_err(gw, gw_ref) < 1e-5);
  if (bias) {
    const double edb = gpu_test::normwise_rel_err(db[0], conv.bias.grad);
    CHECK(edb < 1e-5);
  } else {
    CHECK(gpu_test::same_bits(db[0], db0));  // no bias: db untouched
  }
  CHECK(gpu_test::same_bits(y[0], y[1]));
  CHECK(gpu_test::same_bits(dx[0], dx[1]));
  CHECK(gpu_test::same_bits(dw[0], dw[1]));
  CHECK(gpu_test::same_bits(db[0], db[1]));
}

}  // namespace

TEST_CASE("dilated 2D convolution forward matches nn::ConvModule") {
  for (index_t d = 1; d <= 4; ++d) check_conv<40, 12, 3>(2, 37, 29, 1, d, d, true);  // "same" padding
  check_conv<5, 9, 3>(3, 33, 40, 2, 1, 2, false);                                  // strided
  check_conv<3, 16, 5>(1, 70, 70, 3, 0, 16, true);                                 // plain fallback
  check_conv<64, 64, 3>(1, 64, 64, 1, 3, 3, true);                                 // PixelRL-like
}

TEST_CASE("dilated 2D convolution backward (data and weights) matches nn::ConvModule") {
  // Stride 1, padding <= d(K-1): data gradient via the flipped kernel on the tiled forward.
  for (index_t d = 1; d <= 4; ++d) check_conv_grad<2, 40, 12, 3>(2, 1, 37, 29, 1, d, d, true);
  check_conv_grad<2, 7, 5, 3>(3, 1, 23, 31, 1, 0, 2, true);   // no padding
  check_conv_grad<2, 6, 4, 4>(2, 1, 19, 21, 1, 2, 3, false);  // even K
  // Direct gather: strides, padding beyond the dilated span.
  check_conv_grad<2, 5, 9, 3>(3, 1, 33, 40, 2, 1, 2, false);
  check_conv_grad<2, 9, 6, 5>(2, 1, 41, 38, 3, 4, 4, true);
  check_conv_grad<2, 4, 6, 3>(2, 1, 17, 15, 1, 3, 1, true);   // p = 3 > d(K-1) = 2
  check_conv_grad<2, 3, 130, 3>(2, 1, 15, 13, 2, 1, 1, true); // output channels beyond one staged chunk
  check_conv_grad<2, 6, 10, 1>(2, 1, 15, 16, 2, 0, 1, true);  // pointwise, strided
  check_conv_grad<2, 2, 3, 40>(1, 1, 50, 47, 2, 1, 1, true);  // K² · 8 floats beyond the staging limit
  // PixelRL-like, enough positions for several weight-gradient chunks.
  check_conv_grad<2, 64, 64, 3>(2, 1, 48, 48, 1, 3, 3, true);
}

TEST_CASE("3D convolution forward and backward match nn::ConvModule") {
  // The landmark Q-net's layers (4 -> 32 5^3, 32 -> 32 5^3, 32 -> 64 4^3 with padding 1,
  // 64 -> 64 3^3 without), at reduced sizes.
  check_conv_grad<3, 4, 32, 5>(2, 13, 11, 12, 1, 1, 1, true);
  check_conv_grad<3, 32, 32, 5>(2, 9, 8, 7, 1, 1, 1, true);
  check_conv_grad<3, 32, 64, 4>(3, 9, 9, 9, 1, 1, 1, true);
  check_conv_grad<3, 64, 64, 3>(4, 4, 4, 4, 1, 0, 1, true);
  check_conv_grad<3, 5, 7, 3>(2, 15, 12, 17, 2, 1, 2, false);  // strided, dilated
  check_conv_grad<3, 3, 9, 3>(2, 14, 14, 13, 1, 2, 3, true);   // padding != d(K-1)/2
  check_conv_grad<3, 20, 10, 5>(1, 17, 16, 18, 3, 3, 1, true); // partial channel chunks, stride 3
  check_conv_grad<3, 2, 3, 3>(2, 12, 10, 11, 1, 9, 4, true);   // padding 9 > d(K-1) = 8
  check_conv_grad<3, 1, 2, 12>(1, 14, 15, 13, 1, 1, 1, true);  // K³ · 8 floats beyond the staging limit
}

TEST_CASE("conv2d_forward rejects mismatched shapes") {
  gpu::Stream stream;
  Tensor<float, 4, rlmed::cuda> x(Shape<4>{1, 3, 8, 8}), w(Shape<4>{4, 2, 3, 3}), y(Shape<4>{1, 4, 8, 8});
  CHECK_THROWS_AS(kernels::conv2d_forward<float>(y.view(), x.view(), w.view(), nullptr, {1, 1, 1}, stream), Error);
  Tensor<float, 4, rlmed::cuda> w2(Shape<4>{4, 3, 3, 3});
  CHECK_THROWS_AS(kernels::conv2d_forward<float>(y.view(), x.view(), w2.view(), nullptr, {1, 0, 1}, stream), Error);
  CHECK_NOTHROW(kernels::conv2d_forward<float>(y.view(), x.view(), w2.view(), nullptr, {1, 1, 1}, stream));
}

TEST_CASE("convolution gradients and 3D kernels reject mismatched shapes") {
  gpu::Stream stream;
  kernels::ConvWorkspace<float> ws;
  Tensor<float, 4, rlmed::cuda> x(Shape<4>{2, 3, 8, 8}), w(Shape<4>{4, 3, 3, 3}), dy(Shape<4>{2, 4, 8, 8});
  Tensor<float, 4, rlmed::cuda> dy_bad(Shape<4>{2, 4, 6, 8}), w_bad(Shape<4>{4, 2, 3, 3});
  Tensor<float, 1, rlmed::cuda> db(Shape<1>{4}), db_bad(Shape<1>{3});
  x.zero(stream);
  w.zero(stream);
  dy.zero(stream);
  db.zero(stream);
  const kernels::ConvParams same{1, 1, 1};
  CHECK_THROWS_AS(kernels::conv2d_backward_data<float>(x.view(), dy_bad.view(), w.view(), same, ws, stream), Error);
  CHECK_THROWS_AS(kernels::conv2d_backward_data<float>(x.view(), dy.view(), w_bad.view(), same, ws, stream), Error);
  CHECK_THROWS_AS(kernels::conv2d_backward_data<float>(x.view(), dy.view(), w.view(), {0, 1, 1}, ws, stream), Error);
  CHECK_NOTHROW(kernels::conv2d_backward_data<float>(x.view(), dy.view(), w.view(), same, ws, stream));
  CHECK_THROWS_AS(kernels::conv2d_backward_weights<float>(w.view(), db.view(), x.view(), dy_bad.view(), same, ws, stream),
                  Error);
  CHECK_THROWS_AS(kernels::conv2d_backward_weights<float>(w.view(), db_bad.view(), x.view(), dy.view(), same, ws, stream),
                  Error);
  CHECK_NOTHROW(kernels::conv2d_backward_weights<float>(w.view(), db.view(), x.view(), dy.view(), same, ws, stream));
  CHECK_NOTHROW(kernels::conv2d_backward_weights<float>(w.view(), {}, x.view(), dy.view(), same, ws, stream));

  Tensor<float, 5, rlmed::cuda> x3(Shape<5>{1, 2, 6, 7, 8}), w3(Shape<5>{3, 2, 3, 3, 3}), y3(Shape<5>{1, 3, 4, 5, 6});
  Tensor<float, 5, rlmed::cuda> w3_bad(Shape<5>{3, 2, 3, 3, 2}), y3_bad(Shape<5>{1, 3, 4, 5, 5});
  x3.zero(stream);
  w3.zero(stream);
  y3.zero(stream);
  const kernels::Conv3dParams valid{1, 0, 1};
  CHECK_THROWS_AS(kernels::conv3d_forward<float>(y3_bad.view(), x3.view(), w3.view(), nullptr, valid, stream), Error);
  CHECK_THROWS_AS(kernels::conv3d_forward<float>(y3.view(), x3.view(), w3_bad.view(), nullptr, valid, stream), Error);
  CHECK_THROWS_AS(kernels::conv3d_forward<float>(y3.view(), x3.view(), w3.view(), nullptr, {1, 0, 4}, stream), Error);
  CHECK_NOTHROW(kernels::conv3d_forward<float>(y3.view(), x3.view(), w3.view(), nullptr, valid, stream));
  CHECK_THROWS_AS(kernels::conv3d_backward_data<float>(x3.view(), y3_bad.view(), w3.view(), valid, stream), Error);
  CHECK_NOTHROW(kernels::conv3d_backward_data<float>(x3.view(), y3.view(), w3.view(), valid, stream));
  CHECK_THROWS_AS(kernels::conv3d_backward_weights<float>(w3.view(), {}, x3.view(), y3_bad.view(), valid, ws, stream),
                  Error);
  CHECK_NOTHROW(kernels::conv3d_backward_weights<float>(w3.view(), {}, x3.view(), y3.view(), valid, ws, stream));
  RLMED_CUDA_CHECK(cudaStreamSynchronize(stream));
}

RLMED_GPU_TEST_MAIN
