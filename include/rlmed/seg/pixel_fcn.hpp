// rlmed/seg/pixel_fcn.hpp — a small fully convolutional network that maps an image [B, In, H, W]
// to Out maps at input resolution: the network of the per-pixel baselines (PixelRL, per-pixel
// DQN family, plain actor-critic).
//
//   x -> conv3×3 d1 -> ReLU -> conv3×3 d2 -> ReLU -> conv3×3 d3 -> ReLU -> conv3×3 d4 -> ReLU
//     -> conv3×3 d3 -> ReLU -> conv3×3 d2 -> ReLU -> conv3×3 d1 -> ReLU -> conv1×1 -> [B, Out, H, W]
//
// Design decisions:
//  * PixelRL's (Furuta et al.) shape: dilated 3×3 convolutions with dilations rising then falling
//    (receptive field 33 px), no pooling, so any H, W work and the output needs no upsampling.
//    One trunk with Out = A + 1 channels serves an actor-critic (A logits + 1 value, through
//    rl::FusedPixelActorCritic) or a Q network (A Q-values, or A advantages + 1 value for a
//    dueling head), so every baseline uses the same network and the comparison is of learners.
//  * Width is a template parameter (compile-time structure); He-normal initialisation for the
//    ReLU convolutions, PyTorch's default for the 1×1 output.
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "rlmed/nn/init.hpp"
#include "rlmed/nn/layers/activation.hpp"
#include "rlmed/nn/layers/conv.hpp"

namespace rlmed::seg {

template <class T, index_t In, index_t Out, index_t Width = 32>
class PixelFcn {
  static_assert(In >= 1 && Out >= 1 && Width >= 1, "PixelFcn needs positive channel counts");
  using First = nn::ConvModule<2, In, Width, 3, T>;
  using Mid = nn::ConvModule<2, Width, Width, 3, T>;
  using Last = nn::ConvModule<2, Width, Out, 1, T>;
  using Relu = nn::ActivationModule<nn::op::Relu, T, 4>;
  static constexpr std::array<index_t, 7> kDilations{1, 2, 3, 4, 3, 2, 1};

 public:
  using value_type = T;
  static constexpr std::size_t in_rank = 4;
  static constexpr std::size_t out_rank = 4;
  static constexpr index_t in_channels = In;
  static constexpr index_t out_channels = Out;

  struct Cache {
    typename First::Cache c0;
    std::array<typename Mid::Cache, 6> mid;
    typename Last::Cache out;
    std::array<typename Relu::Cache, 7> relu;
  };

  PixelFcn() : first(nn::ConvConfig<2>::same(3, kDilations[0])), last(nn::ConvConfig<2>(1, 0)) {
    for (std::size_t i = 0; i < mid.size(); ++i) mid[i] = Mid(nn::ConvConfig<2>::same(3, kDilations[i + 1]));
  }

  void initialize(PhiloxStream& rng) {
    nn::init::he_normal(first.weight.value.view(), rng);
    fill(first.bias.value, T(0));
    for (auto& m : mid) {
      nn::init::he_normal(m.weight.value.view(), rng);
      fill(m.bias.value, T(0));
    }
    last.initialize(rng);
  }

  TensorView<const T, 4> forward(nn::Context& ctx, TensorView<const T, 4> x, Cache& c) {
    RLMED_CHECK(x.extent(1) == In, "PixelFcn: input has ", x.extent(1), " channels, expected ", In, " (shape ",
                x.shape(), ")");
    auto h = relu_.forward(ctx, first.forward(ctx, x, c.c0), c.relu[0]);
    for (std::size_t i = 0; i < mid.size(); ++i) h = relu_.forward(ctx, mid[i].forward(ctx, h, c.mid[i]), c.relu[i + 1]);
    return last.forward(ctx, h, c.out);
  }

  TensorView<const T, 4> backward(nn::Context& ctx, Cache& c, TensorView<const T, 4> dy) {
    nn::Context inner = ctx;
    inner.input_grad = true;
    auto g = last.backward(inner, c.out, dy);
    for (std::size_t i = mid.size(); i-- > 0;) g = mid[i].backward(inner, c.mid[i], relu_.backward(inner, c.relu[i + 1], g));
    return first.backward(ctx, c.c0, relu_.backward(inner, c.relu[0], g));
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    first.parameters(visit, nn::join_name(prefix, "conv0"));
    for (std::size_t i = 0; i < mid.size(); ++i)
      mid[i].parameters(visit, nn::join_name(prefix, "conv" + std::to_string(i + 1)));
    last.parameters(visit, nn::join_name(prefix, "out"));
  }
  template <class V>
  void buffers(V&&, std::string_view = {}) {}

  index_t parameter_count() { return nn::parameter_count(*this); }

  First first;
  std::array<Mid, 6> mid;
  Last last;

 private:
  Relu relu_;
};

}  // namespace rlmed::seg
