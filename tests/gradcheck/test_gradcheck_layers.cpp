// Finite-difference gradient checks (double precision) of every layer, on odd sizes, stride 2,
// dilation 2-4, padding != k/2 and batch > 1.
#include <doctest/doctest.h>

#include "gradcheck.hpp"
#include "rlmed/nn/nn.hpp"

using namespace rlmed;
using rlmed::test::gradcheck;
using rlmed::test::random_tensor;

// Every layer, container and model satisfies the module protocol.
static_assert(nn::Module<nn::ConvModule<3, 2, 4, 3, double>>);
static_assert(nn::Module<nn::LinearModule<5, float>>);
static_assert(nn::Module<nn::Model<nn::ReLU, float, 4>>);
static_assert(nn::Module<nn::Model<nn::Softmax, float, 4>>);
static_assert(nn::Module<nn::PoolModule<2, 2, true, float>>);
static_assert(nn::Module<nn::UpsampleModule<3, float>>);
static_assert(nn::Module<nn::Model<nn::Flatten, float, 5>>);
static_assert(nn::Module<nn::Model<nn::Dropout, float, 2>>);
static_assert(nn::Module<nn::Model<nn::BatchNorm<4>, float, 4>>);
static_assert(nn::Module<nn::Model<nn::GroupNorm<4, 2>, float, 4>>);
static_assert(nn::Module<nn::DuelingHeadModule<6, float>>);
static_assert(nn::Module<nn::GaussianPolicyHeadModule<2, float>>);
static_assert(nn::Module<nn::SelfAttentionModule<2, 8, float>>);
static_assert(nn::Module<nn::Model<nn::Sequential<nn::Conv<2, 1, 4, 3>, nn::ReLU, nn::Flatten, nn::Linear<3>>, float>>);
static_assert(nn::Module<nn::LandmarkQNet<float>>);
static_assert(nn::Module<nn::VggHalf<float>>);
static_assert(nn::Module<nn::UNet<3, float>>);

TEST_CASE("Conv1D: stride 2, dilation 3, padding 2, odd length, batch 3") {
  nn::ConvModule<1, 3, 4, 3, double> conv(nn::ConvConfig<1>(2, 2, 3));
  PhiloxStream rng(1, 0);
  conv.initialize(rng);
  auto x = random_tensor(Shape<3>{3, 3, 17}, 11);
  CHECK(conv.output_shape(x.shape()) == Shape<3>{3, 4, 8});  // floor((17 + 4 - 3*2 - 1) / 2) + 1
  gradcheck(conv, x);
}

TEST_CASE("Conv2D: same padding, stride 2, dilation 2 with padding 3, kernel 4 dilation 4") {
  PhiloxStream rng(2, 0);
  {
    nn::ConvModule<2, 3, 5, 3, double> conv(nn::ConvConfig<2>::same(3));
    conv.initialize(rng);
    auto x = random_tensor(Shape<4>{2, 3, 9, 7}, 12);
    CHECK(conv.output_shape(x.shape()) == Shape<4>{2, 5, 9, 7});
    gradcheck(conv, x);
  }
  {
    nn::ConvModule<2, 2, 3, 3, double> conv(nn::ConvConfig<2>(2, 0));
    conv.initialize(rng);
    auto x = random_tensor(Shape<4>{2, 2, 11, 8}, 13);
    CHECK(conv.output_shape(x.shape()) == Shape<4>{2, 3, 5, 3});
    gradcheck(conv, x);
  }
  {
    nn::ConvModule<2, 2, 3, 3, double> conv(nn::ConvConfig<2>(1, 3, 2));
    conv.initialize(rng);
    auto x = random_tensor(Shape<4>{2, 2, 7, 9}, 14);
    gradcheck(conv, x);
  }
  {
    nn::ConvModule<2, 2, 2, 4, double> conv(nn::ConvConfig<2>(2, 1, 4, /*bias=*/false));
    conv.initialize(rng);
    auto x = random_tensor(Shape<4>{3, 2, 15, 14}, 15);
    gradcheck(conv, x);
  }
}

TEST_CASE("Conv2D pointwise (1x1) fast path and Conv3D with stride 2 dilation 2") {
  PhiloxStream rng(3, 0);
  nn::ConvModule<2, 4, 3, 1, double> pw;
  pw.initialize(rng);
  auto x = random_tensor(Shape<4>{2, 4, 5, 3}, 16);
  gradcheck(pw, x);
  nn::ConvModule<3, 2, 3, 3, double> conv3(nn::ConvConfig<3>(2, 1, 2));
  conv3.initialize(rng);
  auto v = random_tensor(Shape<5>{2, 2, 7, 6, 5}, 17);
  gradcheck(conv3, v);
}

TEST_CASE("Conv rejects wrong channels and too-small inputs with clear errors") {
  nn::ConvModule<2, 3, 4, 5, double> conv;
  nn::Context ctx;
  decltype(conv)::Cache cache;
  Tensor<double, 4> x(Shape<4>{1, 2, 8, 8});
  CHECK_THROWS_WITH_AS(conv.forward(ctx, x.view(), cache), doctest::Contains("input has 2 channels, expected 3"), Error);
  Tensor<double, 4> small(Shape<4>{1, 3, 3, 8});
  CHECK_THROWS_WITH_AS(conv.forward(ctx, small.view(), cache), doctest::Contains("too small on spatial axis 0"), Error);
  // A rejected input leaves the cache as it was: backward without a forward is an error, not UB.
  Tensor<double, 4> dy(Shape<4>{1, 4, 4, 4});
  CHECK_THROWS_WITH_AS(conv.backward(ctx, cache, dy.view()), doctest::Contains("differs from output shape"), Error);
  nn::PoolModule<2, 3, true, double> pool(nn::WindowConfig<2>(1, 1));
  pool.config.padding[1] = 2;
  decltype(pool)::Cache pc;
  Tensor<double, 4> img(Shape<4>{1, 1, 6, 6});
  CHECK_THROWS_WITH_AS(pool.forward(ctx, img.view(), pc), doctest::Contains("on axis 1 exceeds half the kernel"), Error);
}

TEST_CASE("Linear and every activation") {
  PhiloxStream rng(4, 0);
  nn::LinearModule<5, double> fc(7);
  fc.initialize(rng);
  auto x = random_tensor(Shape<2>{3, 7}, 18);
  gradcheck(fc, x);
  auto a = random_tensor(Shape<4>{2, 3, 4, 5}, 19);
  nn::Model<nn::ReLU, double, 4> relu;
  gradcheck(relu, a);
  nn::Model<nn::LeakyReLU, double, 4> leaky(nn::op::LeakyRelu{0.2});
  gradcheck(leaky, a);
  nn::Model<nn::ELU, double, 4> elu;
  gradcheck(elu, a);
  nn::Model<nn::Tanh, double, 4> th;
  gradcheck(th, a);
  nn::Model<nn::Sigmoid, double, 4> sg;
  gradcheck(sg, a);
}

TEST_CASE("channel softmax and log-softmax at every pixel") {
  auto x = random_tensor(Shape<4>{2, 3, 5, 4}, 20, 2.0);
  nn::Model<nn::Softmax, double, 4> sm;
  gradcheck(sm, x);
  nn::Model<nn::LogSoftmax, double, 4> lsm;
  gradcheck(lsm, x);
  nn::Context ctx;
  decltype(sm)::Cache c;
  const auto y = sm.forward(ctx, x.view(), c);
  for (index_t b = 0; b < 2; ++b)
    for (index_t i = 0; i < 5; ++i)
      for (index_t j = 0; j < 4; ++j) CHECK(y(b, 0, i, j) + y(b, 1, i, j) + y(b, 2, i, j) == doctest::Approx(1.0));
}

TEST_CASE("max and average pooling in 1D, 2D, 3D with padding and stride") {
  auto x1 = random_tensor(Shape<3>{2, 2, 11}, 21);
  nn::PoolModule<1, 3, true, double> mp1(nn::WindowConfig<1>(2, 1));
  gradcheck(mp1, x1);
  auto x2 = random_tensor(Shape<4>{2, 3, 7, 9}, 22);
  nn::PoolModule<2, 2, true, double> mp2;
  gradcheck(mp2, x2);
  nn::PoolModule<2, 3, false, double> ap2(nn::WindowConfig<2>(2, 1));
  gradcheck(ap2, x2);
  auto x3 = random_tensor(Shape<5>{1, 2, 5, 6, 7}, 23);
  nn::PoolModule<3, 2, true, double> mp3;
  CHECK(mp3.output_shape(x3.shape()) == Shape<5>{1, 2, 2, 3, 3});
  gradcheck(mp3, x3);
  nn::PoolModule<3, 3, false, double> ap3(nn::WindowConfig<3>(2, 1));
  gradcheck(ap3, x3);
}

TEST_CASE("upsampling: nearest, bilinear/trilinear with and without align_corners, explicit sizes") {
  auto x1 = random_tensor(Shape<3>{2, 2, 5}, 24);
  nn::UpsampleModule<1, double> lin1(nn::UpsampleConfig<1>::by_scale(3));
  gradcheck(lin1, x1);
  auto x2 = random_tensor(Shape<4>{2, 2, 4, 3}, 25);
  nn::UpsampleModule<2, double> near(nn::UpsampleConfig<2>::by_scale(2, nn::Interpolation::nearest));
  gradcheck(near, x2);
  nn::UpsampleModule<2, double> bil(nn::UpsampleConfig<2>::by_scale(2));
  gradcheck(bil, x2);
  nn::UpsampleModule<2, double> bil_ac(nn::UpsampleConfig<2>::to_size({7, 9}, nn::Interpolation::linear, true));
  gradcheck(bil_ac, x2);
  nn::UpsampleModule<2, double> down(nn::UpsampleConfig<2>::to_size({3, 2}));
  gradcheck(down, x2);
  auto x3 = random_tensor(Shape<5>{1, 2, 3, 4, 2}, 26);
  nn::UpsampleModule<3, double> tri(nn::UpsampleConfig<3>::by_scale(2));
  gradcheck(tri, x3);
}

TEST_CASE("flatten, dropout (training), batch norm (train and eval), group norm") {
  auto x = random_tensor(Shape<4>{3, 4, 3, 5}, 27);
  nn::Model<nn::Flatten, double, 4> flat;
  gradcheck(flat, x);
  nn::Model<nn::Dropout, double, 4> drop(0.3);
  gradcheck(drop, x);
  nn::Model<nn::BatchNorm<4>, double, 4> bn;
  PhiloxStream rng(5, 0);
  fill_uniform(bn.weight.value.view(), rng, 0.5, 1.5);
  fill_uniform(bn.bias.value.view(), rng, -0.5, 0.5);
  gradcheck(bn, x);
  rlmed::test::GradcheckOptions eval;
  eval.training = false;
  fill_uniform(bn.running_var.view(), rng, 0.5, 2.0);
  gradcheck(bn, x, eval);
  nn::Model<nn::GroupNorm<4, 2>, double, 4> gn;
  fill_uniform(gn.weight.value.view(), rng, 0.5, 1.5);
  gradcheck(gn, x);
}

TEST_CASE("dueling head, Gaussian policy head, self-attention (both axes)") {
  PhiloxStream rng(6, 0);
  nn::DuelingHeadModule<4, double> duel(6);
  duel.initialize(rng);
  auto f = random_tensor(Shape<2>{3, 6}, 28);
  gradcheck(duel, f);
  nn::GaussianPolicyHeadModule<2, double> gauss(6);
  gauss.initialize(rng);
  gradcheck(gauss, f);
  rlmed::test::GradcheckOptions eval;
  eval.training = false;
  gradcheck(gauss, f, eval);
  auto feat = random_tensor(Shape<4>{2, 3, 4, 5}, 29);
  nn::SelfAttentionModule<2, 3, double> sam;
  sam.initialize(rng);
  rlmed::test::GradcheckOptions spatial;
  spatial.zero_gradient = {"proj.bias"};  // a per-channel shift cannot change a spatial softmax
  gradcheck(sam, feat, spatial);
  nn::SelfAttentionModule<2, 3, double> sam_c(nn::AttentionAxis::channels);
  sam_c.initialize(rng);
  gradcheck(sam_c, feat);
}

TEST_CASE("Sequential chains ranks and channels; the Q-network of the design card checks") {
  using QNet = nn::Sequential<nn::Conv<3, 2, 4, 3>, nn::ReLU, nn::MaxPool<3, 2>, nn::Conv<3, 4, 3, 2>, nn::ELU,
                              nn::Flatten, nn::Linear<8>, nn::Tanh, nn::DuelingHead<6>>;
  nn::Model<QNet, double> net;
  static_assert(decltype(net)::in_rank == 5 && decltype(net)::out_rank == 2);
  const auto out = net.setup(Shape<5>{2, 2, 8, 7, 9});
  CHECK(out == Shape<2>{2, 6});
  PhiloxStream rng(7, 0);
  net.initialize(rng);
  auto x = random_tensor(Shape<5>{2, 2, 8, 7, 9}, 30);
  gradcheck(net, x);
  std::vector<std::string> names;
  net.parameters([&](const std::string& n, auto&) { names.push_back(n); });
  CHECK(names.front() == "0.weight");
  CHECK(names.back() == "8.advantage.bias");
  static_assert(nn::detail::first_channel_mismatch<nn::Conv<2, 3, 8, 3>, nn::ReLU, nn::Conv<2, 4, 8, 3>>() == 2);
  static_assert(nn::detail::first_channel_mismatch<nn::Conv<2, 3, 8, 3>, nn::ReLU, nn::Conv<2, 8, 8, 3>>() == -1);
}
