// rlmed/nn/models/vgg_half.hpp — the PixelDRL-MG feature extractor (SYSTEMS.md S6).
//
// VGG16 conv1_1 ... conv4_3 at half width (Base = 32: 32, 32 | 64, 64 | 128 x 3 | 256 x 3),
// 3x3 kernels with "same" padding, ReLU after every convolution, 2x2 max-pooling after blocks
// 1-3, and the conv4 block dilated (dilation 2 by default) instead of a fourth pooling, so the
// output stays at 1/8 resolution with a large receptive field. The taps conv1_2 (1/1), conv2_2
// (1/2) and conv3_3 (1/4) are kept in the cache for the multi-scale heads; backward accepts
// gradients for them. Parameter names follow VGG ("conv1_1.weight").
//   x [B, In, H, W] -> conv1_2 [B, B0, H, W] -> conv2_2 [B, 2B0, H/2, W/2] -> conv3_3 [B, 4B0, H/4, W/4]
//                   -> conv4_3 [B, 8B0, H/8, W/8]
#pragma once

#include "rlmed/nn/layers/activation.hpp"
#include "rlmed/nn/layers/conv.hpp"
#include "rlmed/nn/layers/pool.hpp"

namespace rlmed::nn {

template <class T, index_t In = 1, index_t Base = 32>
class VggHalf {
  template <index_t I, index_t O>
  using C3 = ConvModule<2, I, O, 3, T>;
  using Relu = ActivationModule<op::Relu, T, 4>;
  using Pool = PoolModule<2, 2, true, T>;

 public:
  using value_type = T;
  static constexpr std::size_t in_rank = 4;
  static constexpr std::size_t out_rank = 4;
  static constexpr index_t kOutChannels = 8 * Base;
  static constexpr int kConvs = 10;

  struct Cache {
    std::array<typename Relu::Cache, kConvs> relu;
    typename C3<In, Base>::Cache c11;
    typename C3<Base, Base>::Cache c12;
    typename C3<Base, 2 * Base>::Cache c21;
    typename C3<2 * Base, 2 * Base>::Cache c22;
    typename C3<2 * Base, 4 * Base>::Cache c31;
    typename C3<4 * Base, 4 * Base>::Cache c32, c33;
    typename C3<4 * Base, 8 * Base>::Cache c41;
    typename C3<8 * Base, 8 * Base>::Cache c42, c43;
    std::array<typename Pool::Cache, 3> pool;
    Tensor<T, 4> g1, g2, g3;  // gradient sums at the taps
    /// Tap outputs (after ReLU): conv1_2, conv2_2, conv3_3.
    [[nodiscard]] TensorView<const T, 4> tap(int i) const { return relu[i == 0 ? 1 : i == 1 ? 3 : 6].y.view(); }
  };

  explicit VggHalf(index_t conv4_dilation = 2)
      : conv1_1(ConvConfig<2>::same(3)),
        conv1_2(ConvConfig<2>::same(3)),
        conv2_1(ConvConfig<2>::same(3)),
        conv2_2(ConvConfig<2>::same(3)),
        conv3_1(ConvConfig<2>::same(3)),
        conv3_2(ConvConfig<2>::same(3)),
        conv3_3(ConvConfig<2>::same(3)),
        conv4_1(ConvConfig<2>::same(3, conv4_dilation)),
        conv4_2(ConvConfig<2>::same(3, conv4_dilation)),
        conv4_3(ConvConfig<2>::same(3, conv4_dilation)) {}

  void initialize(PhiloxStream& rng) {
    visit_convs([&](auto& c, const char*) {
      init::he_normal(c.weight.value.view(), rng);
      fill(c.bias.value, T(0));
    });
  }
  Shape<4> output_shape(const Shape<4>& in) const {
    RLMED_CHECK(in[1] == In, "VggHalf: input has ", in[1], " channels, expected ", In);
    RLMED_CHECK(in[2] % 8 == 0 && in[3] % 8 == 0, "VggHalf: spatial size ", in[2], "x", in[3],
                " must be a multiple of 8 (three 2x2 poolings)");
    return {in[0], kOutChannels, in[2] / 8, in[3] / 8};
  }

  TensorView<const T, 4> forward(Context& ctx, TensorView<const T, 4> x, Cache& c) {
    output_shape(x.shape());
    auto r = [&](int i, TensorView<const T, 4> v) { return relu_.forward(ctx, v, c.relu[i]); };
    auto h = r(0, conv1_1.forward(ctx, x, c.c11));
    h = r(1, conv1_2.forward(ctx, h, c.c12));
    h = pool_.forward(ctx, h, c.pool[0]);
    h = r(2, conv2_1.forward(ctx, h, c.c21));
    h = r(3, conv2_2.forward(ctx, h, c.c22));
    h = pool_.forward(ctx, h, c.pool[1]);
    h = r(4, conv3_1.forward(ctx, h, c.c31));
    h = r(5, conv3_2.forward(ctx, h, c.c32));
    h = r(6, conv3_3.forward(ctx, h, c.c33));
    h = pool_.forward(ctx, h, c.pool[2]);
    h = r(7, conv4_1.forward(ctx, h, c.c41));
    h = r(8, conv4_2.forward(ctx, h, c.c42));
    return r(9, conv4_3.forward(ctx, h, c.c43));
  }

  /// dy: gradient of conv4_3's output; tap_grads (optional, may be empty views): gradients of
  /// conv1_2, conv2_2, conv3_3 outputs from the multi-scale heads.
  TensorView<const T, 4> backward(Context& ctx, Cache& c, TensorView<const T, 4> dy,
                                  std::array<TensorView<const T, 4>, 3> tap_grads = {}) {
    Context inner = ctx;
    inner.input_grad = true;
    auto rb = [&](int i, TensorView<const T, 4> g) { return relu_.backward(inner, c.relu[i], g); };
    auto with_tap = [&](int t, TensorView<const T, 4> g, Tensor<T, 4>& sum) -> TensorView<const T, 4> {
      if (tap_grads[t].data() == nullptr) return g;
      RLMED_CHECK(tap_grads[t].shape() == g.shape(), "VggHalf: tap ", t, " gradient shape ", tap_grads[t].shape(),
                  ", expected ", g.shape());
      sum.resize(g.shape());
      for (index_t i = 0; i < g.size(); ++i) sum.data()[i] = g.data()[i] + tap_grads[t].data()[i];
      return sum.view();
    };
    auto g = conv4_3.backward(inner, c.c43, rb(9, dy));
    g = conv4_2.backward(inner, c.c42, rb(8, g));
    g = conv4_1.backward(inner, c.c41, rb(7, g));
    g = pool_.backward(inner, c.pool[2], g);
    g = conv3_3.backward(inner, c.c33, rb(6, with_tap(2, g, c.g3)));
    g = conv3_2.backward(inner, c.c32, rb(5, g));
    g = conv3_1.backward(inner, c.c31, rb(4, g));
    g = pool_.backward(inner, c.pool[1], g);
    g = conv2_2.backward(inner, c.c22, rb(3, with_tap(1, g, c.g2)));
    g = conv2_1.backward(inner, c.c21, rb(2, g));
    g = pool_.backward(inner, c.pool[0], g);
    g = conv1_2.backward(inner, c.c12, rb(1, with_tap(0, g, c.g1)));
    return conv1_1.backward(ctx, c.c11, rb(0, g));
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    visit_convs([&](auto& conv, const char* name) { conv.parameters(visit, join_name(prefix, name)); });
  }
  template <class V>
  void buffers(V&&, std::string_view = {}) {}

  C3<In, Base> conv1_1;
  C3<Base, Base> conv1_2;
  C3<Base, 2 * Base> conv2_1;
  C3<2 * Base, 2 * Base> conv2_2;
  C3<2 * Base, 4 * Base> conv3_1;
  C3<4 * Base, 4 * Base> conv3_2, conv3_3;
  C3<4 * Base, 8 * Base> conv4_1;
  C3<8 * Base, 8 * Base> conv4_2, conv4_3;

 private:
  template <class F>
  void visit_convs(F&& f) {
    f(conv1_1, "conv1_1");
    f(conv1_2, "conv1_2");
    f(conv2_1, "conv2_1");
    f(conv2_2, "conv2_2");
    f(conv3_1, "conv3_1");
    f(conv3_2, "conv3_2");
    f(conv3_3, "conv3_3");
    f(conv4_1, "conv4_1");
    f(conv4_2, "conv4_2");
    f(conv4_3, "conv4_3");
  }
  Relu relu_;
  Pool pool_;
};

}  // namespace rlmed::nn
