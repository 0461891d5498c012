// rlmed/cuda/adam.cuh — the Adam / AdamW step on device parameters.
//
// Design decisions:
//  * The update rule is nn/optim's Adam (torch.optim's): coupled L2 weight decay or AdamW's
//    decoupled decay, bias corrections computed on the host in double from the step count, then
//    per element m ← β1 m + (1−β1) g, v ← β2 v + (1−β2) g², p ← p − (lr/bc1) m / (√v/√bc2 + ε).
//  * Elementwise, one thread per element (grid-stride, so any size fits one launch); each
//    element's update is independent, so the step is bit-identical run to run. The multiply-adds
//    use explicitly rounded intrinsics (__fmul_rn / __fadd_rn / __fdiv_rn / __fsqrt_rn for
//    float) so the compiler cannot contract them into FMAs: one step reproduces the CPU's float
//    arithmetic operation for operation (g++ on x86-64 does not contract by default either).
//  * Several parameter tensors are stepped by one call per tensor (a flat parameter buffer can
//    be stepped in one call); the host keeps the step counter, like nn/optim.
// Roofline: reads p, g, m, v (16 B) and writes p, m, v (12 B) per fp32 element, ~12 FLOP:
// arithmetic intensity ≈ 0.4 FLOP/B, memory-bound at ~28 B/element.
// CPU reference: nn::optim::Adam::step in rlmed/nn/optim/optimizers.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "rlmed/core/tensor_cuda.hpp"
#include "rlmed/cuda/launch.cuh"
#include "rlmed/nn/optim/optimizers.hpp"

namespace rlmed::kernels {

/// Per-step constants of Adam (computed on the host from the config and the step count).
template <class T>
struct AdamStepConstants {
  T b1, b2, eps, step_size, sqrt_bc2, wd, rate;
  bool decoupled;
};

/// Constants of step number `step` (1-based, after incrementing) with learning rate `lr`.
template <class T>
AdamStepConstants<T> adam_constants(const nn::optim::AdamConfig& config, double lr, std::int64_t step) {
  RLMED_CHECK(step >= 1, "adam (cuda): the step counter must be >= 1 (incremented before the step), found ", step);
  RLMED_CHECK(lr >= 0 && config.eps >= 0 && config.weight_decay >= 0, "adam (cuda): negative lr, eps or weight decay");
  RLMED_CHECK(config.beta1 >= 0 && config.beta1 < 1 && config.beta2 >= 0 && config.beta2 < 1, "adam (cuda): betas (",
              config.beta1, ", ", config.beta2, ") outside [0, 1)");
  const double bc1 = 1.0 - std::pow(config.beta1, double(step));
  const double bc2 = 1.0 - std::pow(config.beta2, double(step));
  return {static_cast<T>(config.beta1), static_cast<T>(config.beta2), static_cast<T>(config.eps),
          static_cast<T>(lr / bc1), static_cast<T>(std::sqrt(bc2)), static_cast<T>(config.weight_decay),
          static_cast<T>(lr), config.decoupled_weight_decay};
}

namespace adam_gpu {

__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ float root(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double div(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ double root(double a) { return __dsqrt_rn(a); }

template <class T>
__global__ void adam_kernel(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                            std::int64_t n, AdamStepConstants<T> k) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += stride) {
    T grad = g[j];
    T pj = p[j];
    if (k.decoupled) pj = mul(pj, sub(T(1), mul(k.rate, k.wd)));
    else grad = add(grad, mul(k.wd, pj));
    const T mj = add(mul(k.b1, m[j]), mul(sub(T(1), k.b1), grad));
    const T vj = add(mul(k.b2, v[j]), mul(mul(sub(T(1), k.b2), grad), grad));
    m[j] = mj;
    v[j] = vj;
    p[j] = sub(pj, div(mul(k.step_size, mj), add(div(root(vj), k.sqrt_bc2), k.eps)));
  }
}

}  // namespace adam_gpu

/// One Adam step on a device parameter p with gradient g and state m, v (all n elements).
template <class T>
void adam_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, std::int64_t n, const AdamStepConstants<T>& k,
               cudaStream_t stream) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "adam (cuda): float or double parameters");
  RLMED_CHECK(n >= 0, "adam (cuda): ", n, " elements");
  if (n == 0) return;
  RLMED_CHECK(param && grad && exp_avg && exp_avg_sq, "adam (cuda): null parameter, gradient or state");
  const std::int64_t blocks = std::min<std::int64_t>((n + kDefaultBlock - 1) / kDefaultBlock, 65535 * 8);
  adam_gpu::adam_kernel<T><<<static_cast<unsigned>(blocks), kDefaultBlock, 0, stream>>>(param, grad, exp_avg,
                                                                                       exp_avg_sq, n, k);
  RLMED_CUDA_CHECK_LAUNCH();
}

/// The same on device views of one shape.
template <class T, std::size_t R>
void adam_step(TensorView<T, R, cuda> param, TensorView<const std::type_identity_t<T>, R, cuda> grad,
               TensorView<T, R, cuda> exp_avg, TensorView<T, R, cuda> exp_avg_sq, const AdamStepConstants<T>& k,
               cudaStream_t stream) {
  RLMED_CHECK(grad.shape() == param.shape() && exp_avg.shape() == param.shape() && exp_avg_sq.shape() == param.shape(),
              "adam (cuda): parameter ", param.shape(), ", gradient ", grad.shape(), " and state ", exp_avg.shape(),
              ", ", exp_avg_sq.shape(), " must have one shape");
  adam_step<T>(param.data(), grad.data(), exp_avg.data(), exp_avg_sq.data(), param.size(), k, stream);
}

}  // namespace rlmed::kernels
