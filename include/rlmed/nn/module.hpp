// rlmed/nn/module.hpp — what every layer and model is: the module protocol, parameters,
// the context passed through forward/backward, and layer specs bound to a scalar type.
//
// Design decisions (ARCHITECTURE.md principles 1-3, 8):
//  * Explicit forward and backward, no tape. A module M<T> has
//      out_view forward(Context&, TensorView<const T, in_rank> x, Cache& cache)
//      in_view  backward(Context&, Cache& cache, TensorView<const T, out_rank> dy)
//    backward accumulates (+=) parameter gradients and returns dL/dx. The Cache is a separate
//    object that owns the output, dx and whatever backward needs, so one module can run t_max
//    times with t_max caches before any backward (A3C). Caches keep their buffers between calls
//    (Tensor::resize keeps a fitting allocation): after the first step nothing is allocated.
//  * forward keeps a *view* of x in the cache: x must stay alive and unchanged until backward
//    (it is normally the previous layer's cache output).
//  * Structure is compile-time: channel counts and kernel sizes are template arguments of the
//    layer *spec* (nn::Conv<2, 3, 32, 3>), checked with static_assert when specs are chained in
//    nn::Sequential; spatial sizes, batch, stride, padding, dilation are run-time.
//  * A spec is bound to a scalar type and input rank by `Spec::module<T, Rank>`; float32 is the
//    training type, double is used by the finite-difference gradient checks. nn::Model<Spec, T>
//    names the bound module.
//  * Parameters are visited as (path name, Parameter&) so optimisers and checkpoints see every
//    tensor; names are module paths ("backbone.conv1_1.weight").
//  * A module instance owns scratch buffers and is not safe for concurrent forward/backward from
//    several threads; A3C workers each hold their own copy.
#pragma once

#include <concepts>
#include <string>
#include <string_view>

#include "rlmed/core/error.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed::nn {

/// Channel count a spec accepts when it accepts any (elementwise layers, Linear).
inline constexpr index_t kAnyChannels = -1;

/// Run-time state shared by one forward/backward pass.
struct Context {
  bool training = true;              ///< dropout active, batch-norm uses batch statistics
  PhiloxStream* rng = nullptr;       ///< randomness for dropout and stochastic heads
  bool input_grad = true;            ///< false: backward skips dL/dx and returns an empty view
};

/// A trainable tensor and its gradient (same shape).
template <class T, std::size_t Rank>
struct Parameter {
  Tensor<T, Rank> value;
  Tensor<T, Rank> grad;

  Parameter() = default;
  explicit Parameter(const Shape<Rank>& shape) : value(shape), grad(shape) {}
  void reset(const Shape<Rank>& shape) {
    value = Tensor<T, Rank>(shape);
    grad = Tensor<T, Rank>(shape);
  }
  void zero_grad() { fill(grad, T(0)); }
  [[nodiscard]] index_t size() const noexcept { return value.size(); }
};

/// "prefix.name", or "name" at the top level.
inline std::string join_name(std::string_view prefix, std::string_view name) {
  std::string s;
  s.reserve(prefix.size() + name.size() + 1);
  if (!prefix.empty()) {
    s.append(prefix);
    s.push_back('.');
  }
  s.append(name);
  return s;
}

/// Every module exposes its parameters with `parameters(visit, prefix)`, where
/// visit(std::string name, Parameter<T, R>& p) is called once per tensor, and its non-trained
/// state (batch-norm running statistics) with `buffers(visit, prefix)`, visit(name, Tensor&).
template <class M>
concept Module = requires(M& m, Context& ctx, typename M::Cache& cache,
                          TensorView<const typename M::value_type, M::in_rank> x,
                          TensorView<const typename M::value_type, M::out_rank> dy) {
  typename M::value_type;
  { M::in_rank } -> std::convertible_to<std::size_t>;
  { M::out_rank } -> std::convertible_to<std::size_t>;
  { m.forward(ctx, x, cache) } -> std::same_as<TensorView<const typename M::value_type, M::out_rank>>;
  { m.backward(ctx, cache, dy) } -> std::same_as<TensorView<const typename M::value_type, M::in_rank>>;
};

/// The module a spec becomes for scalar T and input rank Rank.
template <class Spec, class T = float, std::size_t Rank = Spec::in_rank>
using Model = typename Spec::template module<T, Rank>;

/// Sets every parameter gradient of a module to zero.
template <class M>
void zero_grad(M& module) {
  module.parameters([](const std::string&, auto& p) { p.zero_grad(); });
}

/// Number of scalar parameters of a module.
template <class M>
index_t parameter_count(M& module) {
  index_t n = 0;
  module.parameters([&](const std::string&, auto& p) { n += p.size(); });
  return n;
}

/// Modules without state implement these as no-ops.
struct Stateless {
  template <class V>
  void parameters(V&&, std::string_view = {}) {}
  template <class V>
  void buffers(V&&, std::string_view = {}) {}
};

namespace detail {
/// The batch size of an activation, with a check that it is positive.
template <class T, std::size_t R>
index_t batch_of(TensorView<const T, R> x, const char* layer) {
  static_assert(R >= 1);
  RLMED_CHECK(x.extent(0) >= 1, layer, ": empty batch (input shape ", x.shape(), ")");
  return x.extent(0);
}

/// Checks that a gradient has the shape of the output it belongs to.
template <class T, std::size_t R>
void check_grad_shape(TensorView<const T, R> dy, const Shape<R>& y_shape, const char* layer) {
  RLMED_CHECK(dy.shape() == y_shape, layer, ": gradient shape ", dy.shape(), " differs from output shape ", y_shape);
}
}  // namespace detail

}  // namespace rlmed::nn
