// GPU dilated 2D convolution forward against nn::ConvModule<2, ...>: dilations 1-4, stride 2,
// channel counts that leave partial input-channel chunks and output-channel tiles, the plain
// fallback for patches beyond the shared-memory budget; repeated for bit identity. Exits 77
// without a device.
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

}  // namespace

TEST_CASE("dilated 2D convolution forward matches nn::ConvModule") {
  for (index_t d = 1; d <= 4; ++d) check_conv<40, 12, 3>(2, 37, 29, 1, d, d, true);  // "same" padding
  check_conv<5, 9, 3>(3, 33, 40, 2, 1, 2, false);                                  // strided
  check_conv<3, 16, 5>(1, 70, 70, 3, 0, 16, true);                                 // plain fallback
  check_conv<64, 64, 3>(1, 64, 64, 1, 3, 3, true);                                 // PixelRL-like
}

TEST_CASE("conv2d_forward rejects mismatched shapes") {
  gpu::Stream stream;
  Tensor<float, 4, rlmed::cuda> x(Shape<4>{1, 3, 8, 8}), w(Shape<4>{4, 2, 3, 3}), y(Shape<4>{1, 4, 8, 8});
  CHECK_THROWS_AS(kernels::conv2d_forward<float>(y.view(), x.view(), w.view(), nullptr, {1, 1, 1}, stream), Error);
  Tensor<float, 4, rlmed::cuda> w2(Shape<4>{4, 3, 3, 3});
  CHECK_THROWS_AS(kernels::conv2d_forward<float>(y.view(), x.view(), w2.view(), nullptr, {1, 0, 1}, stream), Error);
  CHECK_NOTHROW(kernels::conv2d_forward<float>(y.view(), x.view(), w2.view(), nullptr, {1, 1, 1}, stream));
}

RLMED_GPU_TEST_MAIN
