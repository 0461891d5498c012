// rlmed/nn/layers/linear.hpp — fully connected layer, forward and backward side by side.
//
// Design: Out is structure (template), the input feature count is learnt from the first input
// shape given to setup() (or the constructor), because it depends on run-time spatial sizes
// upstream (Flatten after convolutions). Weight [Out, In] and bias [Out] as in PyTorch.
//
//   x [B, In]   y [B, Out] = x W^T + b    dW += dy^T x    db += colsum(dy)    dx = dy W
#pragma once

#include "rlmed/core/interop.hpp"
#include "rlmed/nn/module.hpp"

namespace rlmed::nn {

template <index_t Out, class T>
class LinearModule {
  static_assert(Out >= 1, "Linear needs at least one output");

 public:
  using value_type = T;
  static constexpr std::size_t in_rank = 2;
  static constexpr std::size_t out_rank = 2;

  struct Cache {
    TensorView<const T, 2> x;
    Tensor<T, 2> y;
    Tensor<T, 2> dx;
  };

  LinearModule() = default;
  explicit LinearModule(index_t in_features, bool with_bias = true) : has_bias(with_bias) { setup_features(in_features); }

  /// Allocates the weight for `in_features` inputs (once; a different count later is an error).
  void setup_features(index_t in_features) {
    RLMED_CHECK(in_features >= 1, "Linear<", Out, ">: needs at least one input feature, found ", in_features);
    if (weight.value.size() != 0) {
      RLMED_CHECK(weight.value.extent(1) == in_features, "Linear<", Out, ">: set up for ",
                  weight.value.extent(1), " input features, now given ", in_features);
      return;
    }
    weight.reset(Shape<2>{Out, in_features});
    bias.reset(Shape<1>{has_bias ? Out : 0});
  }
  Shape<2> setup(const Shape<2>& in) {
    setup_features(in[1]);
    return output_shape(in);
  }
  [[nodiscard]] index_t in_features() const { return weight.value.extent(1); }

  void initialize(PhiloxStream& rng) {
    RLMED_CHECK(weight.value.size() > 0, "Linear<", Out, ">: initialize() before the input size is known (call setup)");
    const double bound = 1.0 / std::sqrt(double(in_features()));
    fill_uniform(weight.value.view(), rng, T(-bound), T(bound));
    if (has_bias) fill_uniform(bias.value.view(), rng, T(-bound), T(bound));
  }

  Shape<2> output_shape(const Shape<2>& in) const {
    RLMED_CHECK(weight.value.size() > 0, "Linear<", Out, ">: used before setup (input features unknown)");
    RLMED_CHECK(in[1] == in_features(), "Linear<", Out, ">: input has ", in[1], " features, expected ",
                in_features(), " (input shape ", in, ")");
    return {in[0], Out};
  }

  TensorView<const T, 2> forward(Context&, TensorView<const T, 2> x, Cache& cache) {
    detail::batch_of(x, "Linear");
    const auto out_shape = output_shape(x.shape());  // validate before the cache changes
    cache.x = x;
    cache.y.resize(out_shape);
    auto y = as_eigen_matrix(cache.y.view());
    y.noalias() = as_eigen_matrix(x) * as_eigen_matrix(weight.value.view()).transpose();
    if (has_bias) y.rowwise() += as_eigen_vector(bias.value.view()).transpose();
    return cache.y.view();
  }

  TensorView<const T, 2> backward(Context& ctx, Cache& cache, TensorView<const T, 2> dy) {
    detail::check_grad_shape(dy, cache.y.shape(), "Linear");
    RLMED_CHECK(cache.x.data() != nullptr && cache.x.extent(0) == dy.extent(0) && cache.x.extent(1) == in_features(),
                "Linear<", Out, ">: backward without a matching forward (cached input ", cache.x.shape(), ")");
    const auto g = as_eigen_matrix(dy);
    as_eigen_matrix(weight.grad.view()).noalias() += g.transpose() * as_eigen_matrix(cache.x);
    if (has_bias) as_eigen_vector(bias.grad.view()) += g.colwise().sum().transpose();
    if (!ctx.input_grad) return {};
    cache.dx.resize(cache.x.shape());
    as_eigen_matrix(cache.dx.view()).noalias() = g * as_eigen_matrix(weight.value.view());
    return cache.dx.view();
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    visit(join_name(prefix, "weight"), weight);
    if (has_bias) visit(join_name(prefix, "bias"), bias);
  }
  template <class V>
  void buffers(V&&, std::string_view = {}) {}

  bool has_bias = true;
  Parameter<T, 2> weight;
  Parameter<T, 1> bias;
};

/// Spec: fully connected layer with Out outputs; input features set at setup.
template <index_t Out>
struct Linear {
  static constexpr std::size_t in_rank = 2;
  static constexpr index_t in_channels = kAnyChannels;
  static constexpr index_t out_channels(index_t) { return Out; }
  template <class T, std::size_t Rank = in_rank>
  using module = LinearModule<Out, T>;
};

}  // namespace rlmed::nn
