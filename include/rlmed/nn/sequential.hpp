// rlmed/nn/sequential.hpp — a compile-time chain of layer specs.
//
// Design: Sequential<Specs...> is itself a spec. Binding it to (T, Rank) binds each layer in
// turn to the rank the previous one produces, so ranks change where they should (Flatten) and
// are checked by the compiler. Channel counts that are known at compile time are chained and a
// mismatch is a static_assert naming no run-time input at all. Parameters are named by position
// ("0.weight", "3.bias"), as torch.nn.Sequential names them.
#pragma once

#include <tuple>
#include <utility>

#include "rlmed/nn/module.hpp"

namespace rlmed::nn {

namespace detail {

template <class T, std::size_t R, class... Specs>
struct BindChain {
  using modules = std::tuple<>;
  static constexpr std::size_t out_rank = R;
};
template <class T, std::size_t R, class S, class... Rest>
struct BindChain<T, R, S, Rest...> {
  using head = typename S::template module<T, R>;
  using tail = BindChain<T, head::out_rank, Rest...>;
  using modules = decltype(std::tuple_cat(std::declval<std::tuple<head>>(), std::declval<typename tail::modules>()));
  static constexpr std::size_t out_rank = tail::out_rank;
};

/// Index of the first layer whose fixed input channel count differs from what reaches it, or -1.
template <class... Specs>
constexpr int first_channel_mismatch() {
  index_t c = kAnyChannels;
  int index = 0, bad = -1;
  (
      [&] {
        if (bad < 0 && Specs::in_channels != kAnyChannels && c != kAnyChannels && Specs::in_channels != c) bad = index;
        c = Specs::out_channels(c);
        ++index;
      }(),
      ...);
  return bad;
}

template <class Tuple>
struct CachesOf;
template <class... M>
struct CachesOf<std::tuple<M...>> {
  using type = std::tuple<typename M::Cache...>;
};

template <class S>
concept HasInRank = requires { S::in_rank; };

template <class S, class...>
constexpr std::size_t first_in_rank() {
  if constexpr (HasInRank<S>) return S::in_rank;
  else return 0;
}

}  // namespace detail

template <class T, std::size_t Rank, class... Specs>
class SequentialModule {
  static_assert(sizeof...(Specs) >= 1, "Sequential needs at least one layer");
  static_assert(detail::first_channel_mismatch<Specs...>() < 0,
                "Sequential: a layer's input channel count differs from the previous layer's output "
                "(first_channel_mismatch<...>() gives its index)");
  using Chain = detail::BindChain<T, Rank, Specs...>;

 public:
  using value_type = T;
  static constexpr std::size_t in_rank = Rank;
  static constexpr std::size_t out_rank = Chain::out_rank;
  static constexpr std::size_t size = sizeof...(Specs);
  using Layers = typename Chain::modules;
  template <std::size_t I>
  using Layer = std::tuple_element_t<I, Layers>;

  struct Cache {
    typename detail::CachesOf<Layers>::type layers;
  };

  SequentialModule() = default;

  template <std::size_t I>
  Layer<I>& layer() { return std::get<I>(layers_); }
  template <std::size_t I>
  const Layer<I>& layer() const { return std::get<I>(layers_); }

  /// Propagates an example input shape through the layers (allocating shape-dependent
  /// parameters such as Linear weights) and returns the output shape.
  Shape<out_rank> setup(const Shape<in_rank>& in) { return setup_from<0>(in); }
  Shape<out_rank> output_shape(const Shape<in_rank>& in) const { return shape_from<0>(in); }

  /// Initialises every layer in order from one stream (deterministic per seed).
  void initialize(PhiloxStream& rng) {
    std::apply([&](auto&... l) { (l.initialize(rng), ...); }, layers_);
  }

  TensorView<const T, out_rank> forward(Context& ctx, TensorView<const T, in_rank> x, Cache& cache) {
    return forward_from<0>(ctx, x, cache);
  }
  TensorView<const T, in_rank> backward(Context& ctx, Cache& cache, TensorView<const T, out_rank> dy) {
    return backward_from<size - 1>(ctx, cache, dy);
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    visit_layers([&](auto& l, std::size_t i) { l.parameters(visit, join_name(prefix, std::to_string(i))); });
  }
  template <class V>
  void buffers(V&& visit, std::string_view prefix = {}) {
    visit_layers([&](auto& l, std::size_t i) { l.buffers(visit, join_name(prefix, std::to_string(i))); });
  }

 private:
  template <class F>
  void visit_layers(F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) { (f(std::get<I>(layers_), I), ...); }(std::make_index_sequence<size>{});
  }

  template <std::size_t I, class S>
  auto setup_from(const S& shape) {
    auto& l = std::get<I>(layers_);
    Shape<Layer<I>::out_rank> out;
    if constexpr (requires { l.setup(shape); }) {
      out = l.setup(shape);
    } else {
      out = l.output_shape(shape);
    }
    if constexpr (I + 1 < size) return setup_from<I + 1>(out);
    else return out;
  }
  template <std::size_t I, class S>
  auto shape_from(const S& shape) const {
    const auto out = std::get<I>(layers_).output_shape(shape);
    if constexpr (I + 1 < size) return shape_from<I + 1>(out);
    else return out;
  }
  template <std::size_t I>
  TensorView<const T, out_rank> forward_from(Context& ctx, TensorView<const T, Layer<I>::in_rank> x, Cache& cache) {
    auto y = std::get<I>(layers_).forward(ctx, x, std::get<I>(cache.layers));
    if constexpr (I + 1 < size) return forward_from<I + 1>(ctx, y, cache);
    else return y;
  }
  template <std::size_t I>
  TensorView<const T, in_rank> backward_from(Context& ctx, Cache& cache, TensorView<const T, Layer<I>::out_rank> dy) {
    // Inner layers always need their input gradient; the first honours ctx.input_grad.
    Context inner = ctx;
    inner.input_grad = I > 0 ? true : ctx.input_grad;
    auto dx = std::get<I>(layers_).backward(inner, std::get<I>(cache.layers), dy);
    if constexpr (I > 0) return backward_from<I - 1>(ctx, cache, dx);
    else return dx;
  }

  Layers layers_;
};

/// Spec: layers applied in order. Its input rank is the first layer's when that is fixed.
template <class... Specs>
struct Sequential {
  static constexpr std::size_t in_rank = detail::first_in_rank<Specs...>();
  static constexpr index_t in_channels = std::tuple_element_t<0, std::tuple<Specs...>>::in_channels;
  static constexpr index_t out_channels(index_t c) {
    ((c = Specs::out_channels(c)), ...);
    return c;
  }
  template <class T, std::size_t Rank = in_rank>
  using module = SequentialModule<T, Rank, Specs...>;
};

}  // namespace rlmed::nn
