// rlmed/nn/models/unet.hpp — a VoxelMorph-style U-Net for 2D and 3D (SYSTEMS.md S6 baseline,
// S7 planner/actor backbone).
//
// Encoder: enc0 conv(In->B, stride 1) at full resolution, then three stride-2 convolutions
// (B->2B->2B->2B) down to 1/8 (VoxelMorph downsamples with strided convolutions). Decoder: at
// each level nearest x2 upsampling, concatenation with the encoder feature of that level (the
// skip), conv 3; then a refinement conv and a 3x3 output conv to Out channels without
// activation (a flow field, or segmentation logits). LeakyReLU(0.2) after every other conv.
// Spatial sizes must be multiples of 8.
//   x [B, In, S]  e0 [B, B0, S]  e1 [B, 2B0, S/2]  e2 [B, 2B0, S/4]  e3 [B, 2B0, S/8]
//   d2 = conv(cat(up(e3), e2) [B, 4B0, S/4]) [B, 2B0, S/4]   d1 = conv(cat(up(d2), e1)) [B, 2B0, S/2]
//   d0 = conv(cat(up(d1), e0)) [B, B0, S]      y = out(refine(d0)) [B, Out, S]
#pragma once

#include "rlmed/nn/layers/activation.hpp"
#include "rlmed/nn/layers/concat.hpp"
#include "rlmed/nn/layers/conv.hpp"
#include "rlmed/nn/layers/upsample.hpp"

namespace rlmed::nn {

template <int Dims, class T, index_t In = 2, index_t Out = Dims, index_t Base = 16>
class UNet {
  template <index_t I, index_t O>
  using C3 = ConvModule<Dims, I, O, 3, T>;
  using Act = ActivationModule<op::LeakyRelu, T, Dims + 2>;
  using Up = UpsampleModule<Dims, T>;
  static constexpr index_t B1 = Base, B2 = 2 * Base;

 public:
  using value_type = T;
  static constexpr std::size_t in_rank = Dims + 2;
  static constexpr std::size_t out_rank = Dims + 2;
  using X = TensorView<const T, Dims + 2>;

  struct Cache {
    typename C3<In, B1>::Cache e0;
    typename C3<B1, B2>::Cache e1;
    typename C3<B2, B2>::Cache e2, e3;
    typename C3<2 * B2, B2>::Cache d2, d1;
    typename C3<B2 + B1, B1>::Cache d0;
    typename C3<B1, B1>::Cache refine;
    typename C3<B1, Out>::Cache out;
    std::array<typename Act::Cache, 8> act;
    std::array<typename Up::Cache, 3> up;
    Tensor<T, Dims + 2> cat2, cat1, cat0;         // decoder inputs
    Tensor<T, Dims + 2> g_up, g_skip2, g_skip1, g_skip0, g_e2, g_e1, g_e0;
  };

  UNet()
      : enc0(ConvConfig<Dims>::same(3)),
        enc1(ConvConfig<Dims>(2, 1)),
        enc2(ConvConfig<Dims>(2, 1)),
        enc3(ConvConfig<Dims>(2, 1)),
        dec2(ConvConfig<Dims>::same(3)),
        dec1(ConvConfig<Dims>::same(3)),
        dec0(ConvConfig<Dims>::same(3)),
        refine(ConvConfig<Dims>::same(3)),
        out(ConvConfig<Dims>::same(3)),
        act_(op::LeakyRelu{0.2}),
        up_(UpsampleConfig<Dims>::by_scale(2, Interpolation::nearest)) {}

  void initialize(PhiloxStream& rng) {
    visit_convs([&](auto& c, const char*) { c.initialize(rng); });
  }
  Shape<out_rank> output_shape(const Shape<in_rank>& in) const {
    RLMED_CHECK(in[1] == In, "UNet: input has ", in[1], " channels, expected ", In);
    for (int a = 0; a < Dims; ++a)
      RLMED_CHECK(in[2 + a] % 8 == 0, "UNet: spatial size ", in[2 + a], " on axis ", a, " is not a multiple of 8");
    Shape<out_rank> s = in;
    s[1] = Out;
    return s;
  }

  TensorView<const T, out_rank> forward(Context& ctx, X x, Cache& c) {
    output_shape(x.shape());
    auto a = [&](int i, X v) { return act_.forward(ctx, v, c.act[i]); };
    const X e0 = a(0, enc0.forward(ctx, x, c.e0));
    const X e1 = a(1, enc1.forward(ctx, e0, c.e1));
    const X e2 = a(2, enc2.forward(ctx, e1, c.e2));
    const X e3 = a(3, enc3.forward(ctx, e2, c.e3));
    concat_channels<T, Dims + 2>({up_.forward(ctx, e3, c.up[0]), e2}, c.cat2);
    const X d2 = a(4, dec2.forward(ctx, c.cat2.view(), c.d2));
    concat_channels<T, Dims + 2>({up_.forward(ctx, d2, c.up[1]), e1}, c.cat1);
    const X d1 = a(5, dec1.forward(ctx, c.cat1.view(), c.d1));
    concat_channels<T, Dims + 2>({up_.forward(ctx, d1, c.up[2]), e0}, c.cat0);
    const X d0 = a(6, dec0.forward(ctx, c.cat0.view(), c.d0));
    const X r = a(7, refine.forward(ctx, d0, c.refine));
    return out.forward(ctx, r, c.out);
  }

  TensorView<const T, in_rank> backward(Context& ctx, Cache& c, TensorView<const T, out_rank> dy) {
    Context inner = ctx;
    inner.input_grad = true;
    auto ab = [&](int i, X g) { return act_.backward(inner, c.act[i], g); };
    // Decoder, level 0: cat0 = (up(d1) [B2], e0 [B1])
    X g = out.backward(inner, c.out, dy);
    g = refine.backward(inner, c.refine, ab(7, g));
    g = dec0.backward(inner, c.d0, ab(6, g));
    split(g, c.g_up, c.g_skip0, B2);
    X gd1 = up_.backward(inner, c.up[2], c.g_up.view());
    g = dec1.backward(inner, c.d1, ab(5, gd1));
    split(g, c.g_up, c.g_skip1, B2);
    X gd2 = up_.backward(inner, c.up[1], c.g_up.view());
    g = dec2.backward(inner, c.d2, ab(4, gd2));
    split(g, c.g_up, c.g_skip2, B2);
    X ge3 = up_.backward(inner, c.up[0], c.g_up.view());
    // Encoder: each level's gradient = from below + from its skip.
    g = enc3.backward(inner, c.e3, ab(3, ge3));
    add(g, c.g_skip2.view(), c.g_e2);
    g = enc2.backward(inner, c.e2, ab(2, c.g_e2.view()));
    add(g, c.g_skip1.view(), c.g_e1);
    g = enc1.backward(inner, c.e1, ab(1, c.g_e1.view()));
    add(g, c.g_skip0.view(), c.g_e0);
    return enc0.backward(ctx, c.e0, ab(0, c.g_e0.view()));
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    visit_convs([&](auto& conv, const char* name) { conv.parameters(visit, join_name(prefix, name)); });
  }
  template <class V>
  void buffers(V&&, std::string_view = {}) {}

  C3<In, B1> enc0;
  C3<B1, B2> enc1;
  C3<B2, B2> enc2, enc3;
  C3<2 * B2, B2> dec2, dec1;
  C3<B2 + B1, B1> dec0;
  C3<B1, B1> refine;
  C3<B1, Out> out;

 private:
  static void split(X g, Tensor<T, Dims + 2>& first, Tensor<T, Dims + 2>& rest, index_t first_channels) {
    slice_channels(g, 0, first_channels, first);
    slice_channels(g, first_channels, g.extent(1) - first_channels, rest);
  }
  static void add(X a, X b, Tensor<T, Dims + 2>& out_sum) {
    RLMED_CHECK(a.shape() == b.shape(), "UNet: skip gradient shape ", b.shape(), " differs from ", a.shape());
    out_sum.resize(a.shape());
    for (index_t i = 0; i < a.size(); ++i) out_sum.data()[i] = a.data()[i] + b.data()[i];
  }
  template <class F>
  void visit_convs(F&& f) {
    f(enc0, "enc0");
    f(enc1, "enc1");
    f(enc2, "enc2");
    f(enc3, "enc3");
    f(dec2, "dec2");
    f(dec1, "dec1");
    f(dec0, "dec0");
    f(refine, "refine");
    f(out, "out");
  }
  Act act_;
  Up up_;
};

}  // namespace rlmed::nn
