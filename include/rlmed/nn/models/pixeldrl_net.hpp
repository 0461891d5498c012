// rlmed/nn/models/pixeldrl_net.hpp — the PixelDRL-MG network (SYSTEMS.md S6): a per-pixel
// policy and value for every pixel of the input, at input resolution.
//
//   x [B, In, H, W] -> VggHalf (conv1_1 … conv4_3, conv4 dilated) -> conv4_3 [B, 8B0, H/8, W/8]
//   SAM on conv4_3: f' = f ⊙ softmax(W f + f)                       [B, 8B0, H/8, W/8]
//   features = concat(conv1_2, up×2(conv2_2), up×4(conv3_3), up×8(f'))  [B, 15B0, H, W]
//   policy = head(features) [B, A, H, W]      value = head(features) [B, 1, H, W]
//   head: conv3×3 d3 -> ReLU -> conv3×3 d2 -> ReLU -> conv3×3 d1 -> ReLU -> conv1×1 (Width -> Out)
//
// Design decisions:
//  * Width is a template parameter (principle 1): Base = 32 is the paper's half-width VGG16
//    (32, 32 | 64, 64 | 128×3 | 256×3), Base = 8 a CPU-sized variant; the head width (64 in
//    the paper) is a parameter too. Parameter count at Base 32, Width 64, A = 2: backbone
//    1 909 344 + SAM 65 792 + policy head 350 530 + value head 350 465 = 2 676 131 (≈ 2.68 M,
//    SYSTEMS.md); the paper's 7.14 M is not reachable with half-width VGG (full-width conv1–conv4
//    alone is ≈ 7.6 M), so every result says which width it used.
//  * conv4_3 stays at 1/8 resolution: VggHalf dilates the conv4 block instead of a fourth
//    pooling (the paper's text mentions 1/16, its dilation motivation argues for keeping
//    resolution). Upsampling is bilinear with align_corners = false (PyTorch's default); the
//    input side must be a multiple of 8, so every upsampled map has exactly the input size.
//  * Ablations (paper Table 3) are run-time configuration: use_attention = false skips SAM (the
//    features pass straight to the upsampling; SAM's parameters are neither used nor visited, so
//    counts and checkpoints hold only what the model uses); "no DC" is conv4_dilation = 1 with
//    head_dilations {1, 1, 1}.
//  * The two heads are separate networks on the shared features (paper Fig. 1); their input
//    gradients are summed before the split back into the four scales.
//  * forward returns both maps as views into the cache; backward takes both gradients and
//    accumulates every parameter gradient. Names: backbone.conv1_1.weight …, sam.proj.*,
//    policy.conv1/conv2/conv3/out.*, value.conv1/conv2/conv3/out.* (conv1 is the dilation-3
//    convolution, conv3 the dilation-1 one, out the 1×1 output).
#pragma once

#include <array>

#include "rlmed/nn/layers/activation.hpp"
#include "rlmed/nn/layers/concat.hpp"
#include "rlmed/nn/layers/conv.hpp"
#include "rlmed/nn/layers/self_attention.hpp"
#include "rlmed/nn/layers/upsample.hpp"
#include "rlmed/nn/models/vgg_half.hpp"

namespace rlmed::nn {

/// Per-pixel policy logits and value of one forward pass (views into the cache).
template <class T>
struct PolicyValueMaps {
  TensorView<const T, 4> policy_logits;  ///< [B, A, H, W]
  TensorView<const T, 4> value;          ///< [B, 1, H, W]
};

/// Three dilated 3×3 convolutions (same padding) with ReLU, then a 1×1 output convolution.
template <index_t In, index_t Width, index_t Out, class T>
class DilatedHead {
  static_assert(In >= 1 && Width >= 1 && Out >= 1);
  using C3a = ConvModule<2, In, Width, 3, T>;
  using C3b = ConvModule<2, Width, Width, 3, T>;
  using C1 = ConvModule<2, Width, Out, 1, T>;
  using Relu = ActivationModule<op::Relu, T, 4>;

 public:
  using value_type = T;
  static constexpr std::size_t in_rank = 4;
  static constexpr std::size_t out_rank = 4;

  struct Cache {
    typename C3a::Cache c1;
    typename C3b::Cache c2, c3;
    typename C1::Cache out;
    std::array<typename Relu::Cache, 3> relu;
  };

  explicit DilatedHead(std::array<index_t, 3> dilations = {3, 2, 1})
      : conv1(ConvConfig<2>::same(3, dilations[0])),
        conv2(ConvConfig<2>::same(3, dilations[1])),
        conv3(ConvConfig<2>::same(3, dilations[2])) {
    for (index_t d : dilations) RLMED_CHECK(d >= 1, "DilatedHead: dilations must be >= 1, found ", dilations);
  }

  /// He-normal for the ReLU convolutions, PyTorch's default for the output convolution.
  void initialize(PhiloxStream& rng) {
    init::he_normal(conv1.weight.value.view(), rng);
    init::he_normal(conv2.weight.value.view(), rng);
    init::he_normal(conv3.weight.value.view(), rng);
    fill(conv1.bias.value, T(0));
    fill(conv2.bias.value, T(0));
    fill(conv3.bias.value, T(0));
    out.initialize(rng);
  }

  TensorView<const T, 4> forward(Context& ctx, TensorView<const T, 4> x, Cache& c) {
    auto h = relu_.forward(ctx, conv1.forward(ctx, x, c.c1), c.relu[0]);
    h = relu_.forward(ctx, conv2.forward(ctx, h, c.c2), c.relu[1]);
    h = relu_.forward(ctx, conv3.forward(ctx, h, c.c3), c.relu[2]);
    return out.forward(ctx, h, c.out);
  }

  TensorView<const T, 4> backward(Context& ctx, Cache& c, TensorView<const T, 4> dy) {
    Context inner = ctx;
    inner.input_grad = true;
    auto g = out.backward(inner, c.out, dy);
    g = conv3.backward(inner, c.c3, relu_.backward(inner, c.relu[2], g));
    g = conv2.backward(inner, c.c2, relu_.backward(inner, c.relu[1], g));
    return conv1.backward(ctx, c.c1, relu_.backward(inner, c.relu[0], g));
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    conv1.parameters(visit, join_name(prefix, "conv1"));
    conv2.parameters(visit, join_name(prefix, "conv2"));
    conv3.parameters(visit, join_name(prefix, "conv3"));
    out.parameters(visit, join_name(prefix, "out"));
  }
  template <class V>
  void buffers(V&&, std::string_view = {}) {}

  C3a conv1;  ///< dilation 3 (default)
  C3b conv2;  ///< dilation 2
  C3b conv3;  ///< dilation 1
  C1 out;     ///< 1×1 output

 private:
  Relu relu_;
};

struct PixelDrlConfig {
  index_t conv4_dilation = 2;                  ///< dilation of the VGG conv4 block
  std::array<index_t, 3> head_dilations{3, 2, 1};
  AttentionAxis attention = AttentionAxis::spatial;  ///< softmax axis of SAM
  bool use_attention = true;  ///< false: no SAM (the paper's PA3C / PA3C+DC ablations); its parameters are not visited
};

/// PixelDRL-MG: In input channels, backbone width Base (32 = paper), A actions, head width Width.
template <class T, index_t In = 1, index_t Base = 32, index_t Actions = 2, index_t Width = 64>
class PixelDrlNet {
  static_assert(Actions >= 1, "the policy needs at least one action");

 public:
  using value_type = T;
  using Backbone = VggHalf<T, In, Base>;
  using Attention = SelfAttentionModule<2, 8 * Base, T>;
  static constexpr index_t kFeatureChannels = Base + 2 * Base + 4 * Base + 8 * Base;  ///< 15·Base
  using PolicyHead = DilatedHead<kFeatureChannels, Width, Actions, T>;
  using ValueHead = DilatedHead<kFeatureChannels, Width, 1, T>;
  static constexpr index_t num_actions = Actions;
  static constexpr index_t in_channels = In;
  static constexpr std::size_t in_rank = 4;

  struct Cache {
    typename Backbone::Cache backbone;
    typename Attention::Cache sam;
    std::array<typename UpsampleModule<2, T>::Cache, 3> up;  // conv2_2 ×2, conv3_3 ×4, SAM(conv4_3) ×8
    Tensor<T, 4> features;                                   // [B, 15·Base, H, W]
    typename PolicyHead::Cache policy;
    typename ValueHead::Cache value;
    Tensor<T, 4> dfeatures;                                  // summed head input gradients
    std::array<Tensor<T, 4>, 4> dscale;                      // dfeatures split per scale
  };

  explicit PixelDrlNet(PixelDrlConfig cfg = {})
      : use_attention_(cfg.use_attention),
        backbone(cfg.conv4_dilation),
        sam(cfg.attention),
        policy(cfg.head_dilations),
        value(cfg.head_dilations),
        up2_(UpsampleConfig<2>::by_scale(2, Interpolation::linear, false)),
        up4_(UpsampleConfig<2>::by_scale(4, Interpolation::linear, false)),
        up8_(UpsampleConfig<2>::by_scale(8, Interpolation::linear, false)) {}

  void initialize(PhiloxStream& rng) {
    backbone.initialize(rng);
    sam.initialize(rng);
    policy.initialize(rng);
    value.initialize(rng);
  }

  /// Checks an input shape [B, In, H, W] (H, W multiples of 8) and returns the policy shape.
  Shape<4> policy_shape(const Shape<4>& in) const {
    backbone.output_shape(in);
    RLMED_CHECK(in[0] >= 1, "PixelDrlNet: empty batch (input shape ", in, ")");
    return {in[0], Actions, in[2], in[3]};
  }

  PolicyValueMaps<T> forward(Context& ctx, TensorView<const T, 4> x, Cache& c) {
    policy_shape(x.shape());
    const auto c4 = backbone.forward(ctx, x, c.backbone);
    const auto att = use_attention_ ? sam.forward(ctx, c4, c.sam) : c4;
    const auto t1 = up2_.forward(ctx, c.backbone.tap(1), c.up[0]);
    const auto t2 = up4_.forward(ctx, c.backbone.tap(2), c.up[1]);
    const auto t3 = up8_.forward(ctx, att, c.up[2]);
    concat_channels<T, 4>({c.backbone.tap(0), t1, t2, t3}, c.features);
    const auto p = policy.forward(ctx, c.features.view(), c.policy);
    const auto v = value.forward(ctx, c.features.view(), c.value);
    return {p, v};
  }

  /// dlogits [B, A, H, W], dvalue [B, 1, H, W]; returns dL/dx (empty when !ctx.input_grad).
  TensorView<const T, 4> backward(Context& ctx, Cache& c, TensorView<const T, 4> dlogits,
                                  TensorView<const T, 4> dvalue) {
    Context inner = ctx;
    inner.input_grad = true;
    const auto gp = policy.backward(inner, c.policy, dlogits);
    const auto gv = value.backward(inner, c.value, dvalue);
    c.dfeatures.resize(gp.shape());
    T* d = c.dfeatures.data();
    parallel_for(0, gp.size(), [&](index_t i) { d[i] = gp.data()[i] + gv.data()[i]; }, 1 << 15);
    const auto df = TensorView<const T, 4>(c.dfeatures);
    slice_channels(df, 0, Base, c.dscale[0]);
    slice_channels(df, Base, 2 * Base, c.dscale[1]);
    slice_channels(df, 3 * Base, 4 * Base, c.dscale[2]);
    slice_channels(df, 7 * Base, 8 * Base, c.dscale[3]);
    const auto g1 = up2_.backward(inner, c.up[0], c.dscale[1].view());
    const auto g2 = up4_.backward(inner, c.up[1], c.dscale[2].view());
    const auto g3 = up8_.backward(inner, c.up[2], c.dscale[3].view());
    const auto g4 = use_attention_ ? sam.backward(inner, c.sam, g3) : g3;
    return backbone.backward(ctx, c.backbone, g4, {c.dscale[0].view(), g1, g2});
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    backbone.parameters(visit, join_name(prefix, "backbone"));
    if (use_attention_) sam.parameters(visit, join_name(prefix, "sam"));
    policy.parameters(visit, join_name(prefix, "policy"));
    value.parameters(visit, join_name(prefix, "value"));
  }
  template <class V>
  void buffers(V&&, std::string_view = {}) {}

  /// Number of scalar parameters (all tensors visited by parameters()).
  index_t parameter_count() { return nn::parameter_count(*this); }
  [[nodiscard]] bool uses_attention() const noexcept { return use_attention_; }

 private:
  bool use_attention_ = true;

 public:
  Backbone backbone;
  Attention sam;
  PolicyHead policy;
  ValueHead value;

 private:
  UpsampleModule<2, T> up2_, up4_, up8_;
};

}  // namespace rlmed::nn
