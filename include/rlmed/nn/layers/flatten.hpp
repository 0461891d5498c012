// rlmed/nn/layers/flatten.hpp — [B, d1, d2, ...] -> [B, d1*d2*...] without copying.
//
// Design: contiguous row-major layout makes flattening a reinterpretation: the output is a view
// of the input and the gradient a view of dy, so Flatten costs nothing and allocates nothing.
#pragma once

#include "rlmed/nn/module.hpp"

namespace rlmed::nn {

template <class T, std::size_t Rank>
class FlattenModule : public Stateless {
  static_assert(Rank >= 2, "Flatten keeps the batch axis");

 public:
  using value_type = T;
  static constexpr std::size_t in_rank = Rank;
  static constexpr std::size_t out_rank = 2;
  struct Cache {
    Shape<Rank> x_shape{};
  };
  void initialize(PhiloxStream&) {}
  Shape<2> output_shape(const Shape<Rank>& in) const { return {in[0], numel(in) / std::max<index_t>(in[0], 1)}; }

  TensorView<const T, 2> forward(Context&, TensorView<const T, Rank> x, Cache& cache) {
    cache.x_shape = x.shape();
    return x.reshape(output_shape(x.shape()));
  }
  TensorView<const T, Rank> backward(Context&, Cache& cache, TensorView<const T, 2> dy) {
    detail::check_grad_shape(dy, output_shape(cache.x_shape), "Flatten");
    return dy.reshape(cache.x_shape);
  }
};

struct Flatten {
  static constexpr index_t in_channels = kAnyChannels;
  static constexpr index_t out_channels(index_t) { return kAnyChannels; }
  template <class T, std::size_t Rank>
  using module = FlattenModule<T, Rank>;
};

}  // namespace rlmed::nn
