// rlmed/nn/models/landmark_qnet.hpp — the 3D Q-network of the landmark agents (SYSTEMS.md S1).
//
// Input [B, FrameHistory, D, H, W] (45^3 cubes in Alansary et al.); four 3D convolutions
// Width-Width-2W-2W with kernels 5-5-4-3 (paddings 1-1-1-0), max-pool 2 after the first three,
// leaky ReLU, then fully connected 512-256-128 and the Q head over Actions (plain Linear or the
// dueling head). For a 45^3 input the trunk's flattened size is 2W * 2^3 = 512 at W = 32.
// Width is a template argument so tests can run the identical architecture narrower.
//   trunk: [B, 4, 45, 45, 45] -> conv0 [B, W, 43^3] -> pool [21^3] -> conv1 [19^3] -> pool [9^3]
//          -> conv2 [B, 2W, 8^3] -> pool [4^3] -> conv3 [B, 2W, 2^3] -> flatten -> 512 -> 256 -> 128
#pragma once

#include "rlmed/nn/layers/activation.hpp"
#include "rlmed/nn/layers/conv.hpp"
#include "rlmed/nn/layers/dueling.hpp"
#include "rlmed/nn/layers/flatten.hpp"
#include "rlmed/nn/layers/linear.hpp"
#include "rlmed/nn/layers/pool.hpp"
#include "rlmed/nn/sequential.hpp"

namespace rlmed::nn {

template <index_t FrameHistory = 4, index_t Actions = 6, index_t Width = 32>
using LandmarkTrunk =
    Sequential<Conv<3, FrameHistory, Width, 5>, MaxPool<3, 2>, LeakyReLU, Conv<3, Width, Width, 5>, MaxPool<3, 2>,
               LeakyReLU, Conv<3, Width, 2 * Width, 4>, MaxPool<3, 2>, LeakyReLU, Conv<3, 2 * Width, 2 * Width, 3>,
               LeakyReLU, Flatten, Linear<512>, LeakyReLU, Linear<256>, LeakyReLU, Linear<128>, LeakyReLU>;

template <class T, bool Dueling = true, index_t FrameHistory = 4, index_t Actions = 6, index_t Width = 32>
class LandmarkQNet {
 public:
  using value_type = T;
  static constexpr std::size_t in_rank = 5;
  static constexpr std::size_t out_rank = 2;
  using Trunk = Model<LandmarkTrunk<FrameHistory, Actions, Width>, T>;
  using Head = std::conditional_t<Dueling, DuelingHeadModule<Actions, T>, LinearModule<Actions, T>>;
  struct Cache {
    typename Trunk::Cache trunk;
    typename Head::Cache head;
  };

  /// Sets up the network for cubes of `cube` voxels per side (45 in the paper).
  explicit LandmarkQNet(index_t cube = 45) {
    trunk.template layer<0>().config = ConvConfig<3>(1, 1);
    trunk.template layer<3>().config = ConvConfig<3>(1, 1);
    trunk.template layer<6>().config = ConvConfig<3>(1, 1);
    trunk.template layer<9>().config = ConvConfig<3>(1, 0);
    const auto features = trunk.setup(Shape<5>{1, FrameHistory, cube, cube, cube});
    head.setup_features(features[1]);
    cube_ = cube;
  }
  void initialize(PhiloxStream& rng) {
    trunk.initialize(rng);
    head.initialize(rng);
  }
  [[nodiscard]] index_t cube() const noexcept { return cube_; }
  Shape<2> output_shape(const Shape<5>& in) const { return {in[0], Actions}; }

  /// x [B, FrameHistory, cube, cube, cube] -> Q [B, Actions]
  TensorView<const T, 2> forward(Context& ctx, TensorView<const T, 5> x, Cache& cache) {
    RLMED_CHECK(x.extent(2) == cube_ && x.extent(3) == cube_ && x.extent(4) == cube_, "LandmarkQNet: input ",
                x.shape(), " is not a batch of ", cube_, "^3 cubes");
    return head.forward(ctx, trunk.forward(ctx, x, cache.trunk), cache.head);
  }
  TensorView<const T, 5> backward(Context& ctx, Cache& cache, TensorView<const T, 2> dq) {
    Context inner = ctx;
    inner.input_grad = true;
    return trunk.backward(ctx, cache.trunk, head.backward(inner, cache.head, dq));
  }
  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    trunk.parameters(visit, join_name(prefix, "trunk"));
    head.parameters(visit, join_name(prefix, "head"));
  }
  template <class V>
  void buffers(V&&, std::string_view = {}) {}

  Trunk trunk;
  Head head;

 private:
  index_t cube_ = 45;
};

}  // namespace rlmed::nn
