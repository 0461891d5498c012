// Gradient checks of the composite models: LandmarkQNet (plain and dueling), VggHalf (with tap
// gradients), UNet 2D and 3D — the same architectures at reduced width so finite differences
// stay affordable.
#include <doctest/doctest.h>

#include "gradcheck.hpp"
#include "rlmed/nn/nn.hpp"

using namespace rlmed;
using rlmed::test::gradcheck;
using rlmed::test::random_tensor;

TEST_CASE("LandmarkQNet at the paper's size has the paper's shapes and a 512-feature trunk") {
  nn::LandmarkQNet<float, true> net(45);
  CHECK(net.trunk.template layer<12>().in_features() == 512);
  PhiloxStream rng(1, 0);
  net.initialize(rng);
  MESSAGE("LandmarkQNet (dueling, 45^3 x 4 frames): " << nn::parameter_count(net) << " parameters");
}

TEST_CASE("LandmarkQNet gradients (width 2, 34^3 cubes, batch 2), dueling and plain") {
  rlmed::test::GradcheckOptions opt;
  opt.directional = true;
  // The network is piecewise linear (convolutions, max-pooling, leaky ReLU, linear layers), so
  // central differences have no truncation error away from kinks; a larger step keeps rounding
  // noise (eps * |L| / h) far below its small input gradient (~1e-6 along a unit direction).
  opt.input_h = 1e-3;
  PhiloxStream rng(2, 0);
  auto x = random_tensor(Shape<5>{2, 4, 34, 34, 34}, 5);
  nn::LandmarkQNet<double, true, 4, 6, 2> duel(34);
  duel.initialize(rng);
  gradcheck(duel, x, opt);
  nn::LandmarkQNet<double, false, 4, 6, 2> plain(34);
  plain.initialize(rng);
  gradcheck(plain, x, opt);
}

TEST_CASE("VggHalf gradients (base width 2, 16x24 input, batch 2), with and without tap gradients") {
  nn::VggHalf<double, 1, 2> vgg;
  PhiloxStream rng(3, 0);
  vgg.initialize(rng);
  auto x = random_tensor(Shape<4>{2, 1, 16, 24}, 6);
  CHECK(vgg.output_shape(x.shape()) == Shape<4>{2, 16, 2, 3});
  rlmed::test::GradcheckOptions opt;
  opt.directional = true;
  gradcheck(vgg, x, opt);

  // With taps: L = sum(R ⊙ out) + sum_t sum(R_t ⊙ tap_t); analytic vs finite differences on x.
  nn::Context ctx;
  decltype(vgg)::Cache cache;
  auto y = vgg.forward(ctx, x.view(), cache);
  Tensor<double, 4> R = random_tensor(y.shape(), 7);
  std::array<Tensor<double, 4>, 3> Rt;
  for (int t = 0; t < 3; ++t) Rt[t] = random_tensor(cache.tap(t).shape(), 8 + t);
  auto total = [&]() {
    const auto out = vgg.forward(ctx, x.view(), cache);
    double s = 0;
    for (index_t i = 0; i < out.size(); ++i) s += R.data()[i] * out.data()[i];
    for (int t = 0; t < 3; ++t)
      for (index_t i = 0; i < Rt[t].size(); ++i) s += Rt[t].data()[i] * cache.tap(t).data()[i];
    return s;
  };
  vgg.forward(ctx, x.view(), cache);
  const auto dx = vgg.backward(ctx, cache, R.view(), {Rt[0].view(), Rt[1].view(), Rt[2].view()});
  const std::vector<double> analytic(dx.begin(), dx.end());
  double num2 = 0, den = 0;
  for (index_t i = 0; i < x.size(); i += 7) {
    const double s = x.data()[i];
    x.data()[i] = s + 1e-6;
    const double lp = total();
    x.data()[i] = s - 1e-6;
    const double lm = total();
    x.data()[i] = s;
    const double n = (lp - lm) / 2e-6;
    num2 += (n - analytic[static_cast<std::size_t>(i)]) * (n - analytic[static_cast<std::size_t>(i)]);
    den += n * n;
  }
  CHECK(std::sqrt(num2 / den) < 1e-6);
}

// SYSTEMS.md S6 gives ~2.68 M for the whole half-width PixelDRL-MG network; the backbone alone
// is conv1_1..conv4_3, counted here layer by layer (the heads and SAM come with the network).
TEST_CASE("VggHalf at the paper's width has the VGG16 conv1_1..conv4_3 half-width parameter count") {
  nn::VggHalf<float, 1, 32> vgg;
  const auto n = nn::parameter_count(vgg);
  MESSAGE("VggHalf (conv1_1..conv4_3, half width): " << n << " parameters");
  CHECK(n == 32 * 9 + 32 + 32 * 32 * 9 + 32 + 64 * 32 * 9 + 64 + 64 * 64 * 9 + 64 + 128 * 64 * 9 + 128 +
                 2 * (128 * 128 * 9 + 128) + 256 * 128 * 9 + 256 + 2 * (256 * 256 * 9 + 256));
}

TEST_CASE("UNet gradients in 2D and 3D (base width 2), and its size checks") {
  PhiloxStream rng(4, 0);
  rlmed::test::GradcheckOptions opt;
  opt.directional = true;
  nn::UNet<2, double, 2, 2, 2> unet2;
  unet2.initialize(rng);
  auto x2 = random_tensor(Shape<4>{2, 2, 16, 8}, 9);
  gradcheck(unet2, x2, opt);
  nn::UNet<3, double, 2, 3, 2> unet3;
  unet3.initialize(rng);
  auto x3 = random_tensor(Shape<5>{1, 2, 8, 8, 16}, 10);
  gradcheck(unet3, x3, opt);
  CHECK_THROWS_WITH_AS(unet2.output_shape(Shape<4>{1, 2, 12, 8}), doctest::Contains("not a multiple of 8"), Error);
}
