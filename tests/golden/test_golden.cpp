// rlmed's layers, models, optimisers and losses against PyTorch golden outputs
// (fixtures written by tests/golden/make_golden.py with Debian's python3-torch; float32,
// relative error ||rlmed - torch|| / ||torch|| < 1e-5 for outputs and every gradient).
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "rlmed/nn/nn.hpp"

using namespace rlmed;
using io::SafetensorsReader;

namespace {

const std::string kFixtures = RLMED_GOLDEN_DIR;

SafetensorsReader fixture(const std::string& name) { return SafetensorsReader::open(kFixtures + "/" + name + ".safetensors"); }

template <class U, class T, std::size_t R>
double rel_error(TensorView<U, R> got, const Tensor<T, R>& want) {
  REQUIRE(got.shape() == want.shape());
  double num = 0, den = 0;
  for (index_t i = 0; i < want.size(); ++i) {
    const double d = double(got.data()[i]) - double(want.data()[i]);
    num += d * d;
    den += double(want.data()[i]) * want.data()[i];
  }
  // A gradient that is zero in theory (the attention bias under a spatial softmax) is rounding
  // noise on both sides; then both must be small in absolute terms instead.
  if (std::sqrt(den) < 1e-5) return std::sqrt(num) < 1e-5 ? 0.0 : std::sqrt(num);
  return std::sqrt(num / den);
}

#define CHECK_CLOSE(got, want, what)                         \
  do {                                                       \
    const double err_ = rel_error((got), (want));            \
    INFO(what << ": relative error " << err_);               \
    CHECK(err_ < 1e-5);                                      \
  } while (false)

// Loads a module's parameters from the fixture, runs forward and backward with the fixture's
// projection R, and compares output, input gradient and every parameter gradient.
template <class M>
void check_module(M& m, const std::string& name) {
  const auto r = fixture(name);
  m.parameters([&](const std::string& n, auto& p) { r.read_into(n, p.value.view()); });
  nn::zero_grad(m);
  const auto x = r.read<float, M::in_rank>("x");
  nn::Context ctx;
  typename M::Cache cache;
  const auto y = m.forward(ctx, x.view(), cache);
  CHECK_CLOSE(y, (r.read<float, M::out_rank>("y")), name << " output");
  const auto R = r.read<float, M::out_rank>("R");
  const auto dx = m.backward(ctx, cache, R.view());
  CHECK_CLOSE(dx, (r.read<float, M::in_rank>("grad.x")), name << " input gradient");
  m.parameters([&](const std::string& n, auto& p) {
    using P = std::remove_reference_t<decltype(p.grad)>;
    CHECK_CLOSE(p.grad.view(), (r.read<float, P::rank>("grad." + n)), name << " gradient of " << n);
  });
}

}  // namespace

TEST_CASE("dilated convolutions match torch.nn.functional.conv2d / conv3d") {
  nn::ConvModule<2, 3, 4, 3, float> c1(nn::ConvConfig<2>(1, 2, 2));
  check_module(c1, "conv2d_dilated");
  nn::ConvModule<2, 3, 5, 3, float> c2(nn::ConvConfig<2>(2, 1, 3));
  check_module(c2, "conv2d_stride2_dil3");
  nn::ConvModule<3, 2, 3, 3, float> c3(nn::ConvConfig<3>(2, 1, 2));
  check_module(c3, "conv3d_dilated");
}

TEST_CASE("upsampling matches F.interpolate (bilinear, align_corners 0/1, nearest, sizes, trilinear)") {
  nn::UpsampleModule<2, float> bil(nn::UpsampleConfig<2>::by_scale(2));
  check_module(bil, "upsample2d_bilinear_align0");
  nn::UpsampleModule<2, float> bil_ac(nn::UpsampleConfig<2>::by_scale(2, nn::Interpolation::linear, true));
  check_module(bil_ac, "upsample2d_bilinear_align1");
  nn::UpsampleModule<2, float> near(nn::UpsampleConfig<2>::by_scale(2, nn::Interpolation::nearest));
  check_module(near, "upsample2d_nearest");
  nn::UpsampleModule<2, float> sized(nn::UpsampleConfig<2>::to_size({9, 7}));
  check_module(sized, "upsample2d_bilinear_size");
  nn::UpsampleModule<3, float> tri(nn::UpsampleConfig<3>::by_scale(2));
  check_module(tri, "upsample3d_trilinear");
}

TEST_CASE("self-attention module matches its PyTorch expression") {
  nn::SelfAttentionModule<2, 6, float> sam;
  check_module(sam, "self_attention");
}

TEST_CASE("VggHalf and UNet match PyTorch built from the same weights") {
  nn::VggHalf<float, 1, 4> vgg;
  check_module(vgg, "vgg_half_base4");
  nn::UNet<2, float, 2, 2, 4> unet;
  check_module(unet, "unet2d_base4");
}

namespace {
struct OneParam {
  using value_type = float;
  nn::Parameter<float, 2> p;
  template <class V>
  void parameters(V&& visit, std::string_view = {}) {
    visit("p", p);
  }
};
}  // namespace

TEST_CASE("optimisers reproduce torch.optim over five steps") {
  const auto r = fixture("optimizers");
  auto run = [&](auto make, const char* name) {
    OneParam m;
    m.p.value = r.read<float, 2>("param0");
    m.p.grad = Tensor<float, 2>(m.p.value.shape());
    auto opt = make(m);
    for (int i = 0; i < 5; ++i) {
      r.read_into("grad" + std::to_string(i), m.p.grad.view());
      opt.step();
    }
    CHECK_CLOSE(m.p.value.view(), (r.read<float, 2>(name)), name);
  };
  run([](OneParam& m) { return nn::optim::SGD<float>(m, {0.1, 0.9, true, 0.01}); }, "sgd_nesterov");
  run([](OneParam& m) { return nn::optim::Adam<float>(m, {0.01, 0.9, 0.999, 1e-8, 0.02, false}); }, "adam");
  run([](OneParam& m) {
        nn::optim::AdamConfig c;
        c.lr = 0.01;
        c.weight_decay = 0.1;
        return nn::optim::AdamW<float>(m, c);
      },
      "adamw");
  run([](OneParam& m) { return nn::optim::RMSprop<float>(m, {0.01, 0.9, 1e-8, 0.0, 0.5, true}); }, "rmsprop_centered");
}

TEST_CASE("losses and their gradients match torch.nn.functional") {
  const auto r = fixture("losses");
  const auto pred = r.read<float, 3>("pred");
  const auto target = r.read<float, 3>("target");
  const auto t01 = r.read<float, 3>("t01");
  const auto labels = r.read<std::int64_t, 2>("labels");
  Tensor<float, 3> g;
  auto check = [&](double value, const char* name) {
    const float want = r.read<float, 1>(std::string(name) + ".value")(0);
    CHECK(value == doctest::Approx(want).epsilon(1e-5));
    CHECK_CLOSE(g.view(), (r.read<float, 3>(std::string(name) + ".grad")), name);
  };
  check(nn::loss::mse<float, 3>(pred.view(), target.view(), g), "mse");
  check(nn::loss::huber<float, 3>(pred.view(), target.view(), g), "huber");
  check(nn::loss::bce_with_logits<float, 3>(pred.view(), t01.view(), g), "bce");
  check(nn::loss::cross_entropy<float, 3>(pred.view(), labels.view(), g), "ce");
}
