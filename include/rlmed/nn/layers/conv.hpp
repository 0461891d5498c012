// rlmed/nn/layers/conv.hpp — N-dimensional convolution (1D/2D/3D) with run-time stride,
// padding and dilation; forward and backward side by side.
//
// Design: tiled im2col + GEMM (conv_gemm.hpp): (sample, tile) work items over OpenMP threads;
// float on AVX2/AVX-512 CPUs packs im2col straight into the panels of core/gemm.hpp's packed
// GEMM, double (and float elsewhere) uses Eigen on cache-sized column blocks. Pointwise kernels (1x1, stride 1, no padding)
// skip im2col: the input already is the column matrix. Stride-1 data gradients run as a
// convolution with the flipped kernel; strided ones use col2im per sample. Scratch buffers live
// in the module and are reused, so steady-state calls do not allocate. Weight layout
// [Out, In, k...] and bias [Out], as in PyTorch.
//
//   x  [B, In,  spatial_in...]       y  [B, Out, spatial_out...]
//   W  [Out, In * k^Dims]            col [In * k^Dims, prod(spatial_out)]
//   y_b = W col_b + bias;  dW += dy_b col_b^T;  db += rowsum(dy_b);  dx_b = col2im(W^T dy_b)
#pragma once

#include <array>

#include "rlmed/core/interop.hpp"
#include "rlmed/nn/init.hpp"
#include <optional>

#include "rlmed/nn/layers/conv_gemm.hpp"
#include "rlmed/nn/layers/window.hpp"
#include "rlmed/nn/module.hpp"

namespace rlmed::nn {

template <int Dims>
struct ConvConfig : WindowConfig<Dims> {
  bool bias = true;
  ConvConfig() = default;
  ConvConfig(index_t s, index_t p, index_t d = 1, bool with_bias = true)
      : WindowConfig<Dims>(s, p, d), bias(with_bias) {}
  /// Padding that keeps the spatial size at stride 1: dilation * (k - 1) / 2 (odd k).
  static ConvConfig same(index_t kernel, index_t dilation = 1) {
    return ConvConfig(1, dilation * (kernel - 1) / 2, dilation);
  }
};

template <int Dims, index_t In, index_t Out, index_t K, class T>
class ConvModule {
  static_assert(Dims >= 1 && Dims <= 3, "Conv supports 1D, 2D and 3D");
  static_assert(In >= 1 && Out >= 1 && K >= 1, "Conv needs positive channels and kernel size");

 public:
  using value_type = T;
  static constexpr std::size_t in_rank = Dims + 2;
  static constexpr std::size_t out_rank = Dims + 2;
  using Config = ConvConfig<Dims>;
  using WeightShape = Shape<Dims + 2>;

  struct Cache {
    TensorView<const T, in_rank> x;
    Tensor<T, out_rank> y;
    Tensor<T, in_rank> dx;
  };

  explicit ConvModule(Config cfg = {}) : config(cfg) {
    WeightShape ws{};
    ws[0] = Out;
    ws[1] = In;
    for (int a = 0; a < Dims; ++a) ws[2 + a] = K;
    weight.reset(ws);
    bias.reset(Shape<1>{config.bias ? Out : 0});
  }

  /// PyTorch's default: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  void initialize(PhiloxStream& rng) {
    const double bound = 1.0 / std::sqrt(double(In) * std::pow(double(K), Dims));
    fill_uniform(weight.value.view(), rng, T(-bound), T(bound));
    if (config.bias) fill_uniform(bias.value.view(), rng, T(-bound), T(bound));
  }

  Shape<out_rank> output_shape(const Shape<in_rank>& in) const {
    RLMED_CHECK(in[1] == In, "Conv<", Dims, ", ", In, ", ", Out, ", ", K, ">: input has ", in[1],
                " channels, expected ", In, " (input shape ", in, ")");
    const Window3 w = window(in);
    Shape<out_rank> out{};
    out[0] = in[0];
    out[1] = Out;
    for (int a = 0; a < Dims; ++a) out[2 + a] = w.out[3 - Dims + a];
    return out;
  }

  TensorView<const T, out_rank> forward(Context&, TensorView<const T, in_rank> x, Cache& cache) {
    const index_t batch = detail::batch_of(x, "Conv");
    const auto out_shape = output_shape(x.shape());  // validate before the cache changes
    cache.x = x;
    cache.y.resize(out_shape);
    conv_forward_tiled(x.data(), batch, In, window(x.shape()), weight.value.data(), Out,
                       config.bias ? bias.value.data() : nullptr, cache.y.data(), scratch_);
    return cache.y.view();
  }

  TensorView<const T, in_rank> backward(Context& ctx, Cache& cache, TensorView<const T, out_rank> dy) {
    detail::check_grad_shape(dy, cache.y.shape(), "Conv");
    const auto x = cache.x;
    RLMED_CHECK(x.data() != nullptr && x.extent(0) == dy.extent(0) && x.extent(1) == In,
                "Conv: backward without a matching forward (cached input ", x.shape(), ", gradient ", dy.shape(), ")");
    const index_t batch = x.extent(0);
    const Window3 w = window(x.shape());
    const index_t P = w.out_size(), KV = In * w.kernel_size();
    if (config.bias) {
      auto db = as_eigen_vector(bias.grad.view());
      for (index_t b = 0; b < batch; ++b) db += as_eigen_matrix(dy[b], Out, P).rowwise().sum();
    }
    conv_weight_grad_tiled(x.data(), dy.data(), batch, In, w, Out, weight.grad.data(), scratch_);
    if (!ctx.input_grad) return {};
    cache.dx.resize(x.shape());
    if (const auto adjoint = data_grad_window(w)) {
      // Stride 1: dx = conv(dy, flipped and transposed kernel), tiled like the forward pass.
      flip_kernel(w);
      conv_forward_tiled(dy.data(), batch, Out, *adjoint, scratch_.flipped.data(), In, static_cast<const T*>(nullptr),
                         cache.dx.data(), scratch_);
      return cache.dx.view();
    }
    // Strided: col2im of W^T dy per sample (each channel's rows touch only that channel: no races).
    fill(cache.dx.view(), T(0));
    const auto W = as_eigen_matrix(weight.value.view(), Out, KV);
    for (index_t b = 0; b < batch; ++b) {
      dcol_.resize(Shape<2>{KV, P});
      as_eigen_matrix(dcol_.view()).noalias() = W.transpose() * as_eigen_matrix(dy[b], Out, P);
      col2im_add(dcol_.data(), In, w, cache.dx.view()[b].data());
    }
    return cache.dx.view();
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    visit(join_name(prefix, "weight"), weight);
    if (config.bias) visit(join_name(prefix, "bias"), bias);
  }
  template <class V>
  void buffers(V&&, std::string_view = {}) {}

  Config config;
  Parameter<T, Dims + 2> weight;
  Parameter<T, 1> bias;

 private:
  Window3 window(const Shape<in_rank>& in) const {
    std::array<index_t, Dims> k{};
    k.fill(K);
    return make_window<Dims>(in, k, config, "Conv");
  }

  // The window that maps dy back onto x as a convolution, when one exists (stride 1 and
  // padding <= d(K-1) on every axis): same kernel and dilation, padding d(K-1) - p.
  static std::optional<Window3> data_grad_window(const Window3& w) {
    Window3 a;
    for (int t = 0; t < 3; ++t) {
      const index_t span = w.dil[t] * (w.kernel[t] - 1);
      if (w.stride[t] != 1 || w.pad[t] > span) return std::nullopt;
      a.in[t] = w.out[t];
      a.out[t] = w.in[t];
      a.kernel[t] = w.kernel[t];
      a.dil[t] = w.dil[t];
      a.pad[t] = span - w.pad[t];
      a.stride[t] = 1;
    }
    return a;
  }

  // flipped [In, Out * kvol]: flipped(c, o, k) = W(o, c, kvol - 1 - k).
  void flip_kernel(const Window3& w) {
    const index_t kvol = w.kernel_size();
    scratch_.flipped.resize(Shape<2>{In, Out * kvol});
    const T* src = weight.value.data();
    T* dst = scratch_.flipped.data();
    parallel_for(0, In, [&](index_t c) {
      for (index_t o = 0; o < Out; ++o)
        for (index_t k = 0; k < kvol; ++k) dst[c * Out * kvol + o * kvol + (kvol - 1 - k)] = src[(o * In + c) * kvol + k];
    }, 8);
  }

  ConvScratch<T> scratch_;
  Tensor<T, 2> dcol_;
};

/// Spec: convolution over Dims spatial axes, In -> Out channels, kernel K per axis.
template <int Dims, index_t In, index_t Out, index_t K>
struct Conv {
  static constexpr std::size_t in_rank = Dims + 2;
  static constexpr index_t in_channels = In;
  static constexpr index_t out_channels(index_t) { return Out; }
  template <class T, std::size_t Rank = in_rank>
  using module = ConvModule<Dims, In, Out, K, T>;
};

}  // namespace rlmed::nn
