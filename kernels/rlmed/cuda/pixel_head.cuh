// rlmed/cuda/pixel_head.cuh — the per-pixel actor-critic head of PA3C on the GPU, fused:
// softmax over actions, Philox action sampling (the CPU's draws), log-probability and entropy
// in one pass; the loss gradients w.r.t. logits and values with the loss sums in one pass; the
// reward-map returns and their backward (adjoint recursion and the 3×3 filter gradient).
//
// Design decisions:
//  * Semantics and random numbers are rlmed/rl/pixel_a3c.hpp's: pixel i at step s draws word 0
//    of philox_block(seed, stream, (s << 32) | i) through pixel_action_bits (the same function),
//    and the inverse CDF runs over e_k = exp(z_k − max z) accumulated in T in channel order.
//    Device expf may differ from glibc's by an ulp, so an action can differ only when the draw
//    lies within an ulp of a cumulative boundary (the tests check that every mismatch is such a
//    tie and that they are rare).
//  * One thread per pixel, the A logits read with stride H·W (coalesced across threads). Each
//    pass reads the logits once: softmax, sample, log-prob and entropy (or the gradient) reuse
//    the max and the normaliser computed in registers.
//  * The loss sums (Σ (R−V)², Σ log π·A, Σ H) come out of the gradient kernel through the
//    deterministic reduction (reduce.cuh): the gradient is written as a side effect of the
//    reduction's term, so the whole step is one kernel plus the 1-block combine.
//  * Non-finite logits cannot throw inside a kernel: they set *bad_flag (if given) and the
//    pixel gets action 0 / zero gradient; the caller checks the flag when it syncs.
//  * The returns recursion is sequential in t (one launch per step); dL/dw sums all steps at
//    once with the deterministic reduction (9 sums).
// Roofline (fp32, A actions): sampling head reads 4A B and writes 12 B per pixel (action,
// log-prob, entropy), ~(20 + 8A) FLOP plus one Philox block (~100 integer ops): memory-bound
// for A ≥ 3 on an H100, Philox-bound near the ridge for A = 2. Gradient pass: reads 4A + 16 B,
// writes 4A + 4 B, ~30A FLOP: memory-bound. Returns: 8 B + 9 cached reads per pixel per step.
// CPU reference: sample_pixel_actions_into, pixel_log_prob_entropy_into, pixel_a3c_step_into,
// reward_map_returns_into, reward_map_returns_backward in rlmed/rl/pixel_a3c.hpp.
#pragma once

#include <cstdint>

#include "rlmed/core/tensor_cuda.hpp"
#include "rlmed/cuda/flag.cuh"
#include "rlmed/cuda/launch.cuh"
#include "rlmed/cuda/reduce.cuh"
#include "rlmed/rl/pixel_a3c.hpp"

namespace rlmed::kernels {

namespace pixel_gpu {

struct PixelDims {
  std::int64_t pixels = 0;  // B·H·W
  std::int64_t plane = 0;   // H·W
  std::int64_t actions = 0;  // A
};

/// Max over the pixel's A logits; sets *bad on a non-finite one and returns false.
template <class T>
__device__ __forceinline__ bool pixel_max(const T* z, std::int64_t stride, std::int64_t A, T& m, int* bad) {
  m = z[0];
  bool ok = true;
  for (std::int64_t k = 0; k < A; ++k) {
    const T v = z[k * stride];
    ok &= isfinite(v);
    m = v > m ? v : m;
  }
  if (!ok && bad) *bad = 1;
  return ok;
}

template <class T, bool Sample>
__global__ void policy_kernel(std::int32_t* __restrict__ actions, T* __restrict__ log_prob, T* __restrict__ entropy,
                              const T* __restrict__ logits, PixelDims d, rl::PixelSampleKey key, int* bad) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= d.pixels) return;
  const std::int64_t A = d.actions, S = d.plane;
  const T* zp = logits + (i / S) * A * S + i % S;
  T m;
  if (!pixel_max(zp, S, A, m, bad)) {
    actions[i] = 0;
    if (log_prob) log_prob[i] = T(0);
    if (entropy) entropy[i] = T(0);
    return;
  }
  T total = 0;
  for (std::int64_t k = 0; k < A; ++k) total += exp(zp[k * S] - m);
  std::int64_t chosen = -1;
  if constexpr (Sample) {
    const float u = u32_to_uniform_float(
        rl::pixel_action_bits(key.seed, key.stream, key.step, static_cast<std::uint64_t>(i)));
    const T target = static_cast<T>(u) * total;
    T acc = 0;
    std::int64_t last_positive = 0;
    for (std::int64_t k = 0; k < A; ++k) {
      const T e = exp(zp[k * S] - m);
      if (e > T(0)) last_positive = k;
      acc += e;
      if (target < acc) {
        chosen = k;
        break;
      }
    }
    if (chosen < 0) chosen = last_positive;
  } else {
    chosen = 0;
    for (std::int64_t k = 1; k < A; ++k)
      if (zp[k * S] > zp[chosen * S]) chosen = k;
  }
  actions[i] = static_cast<std::int32_t>(chosen);
  if (log_prob || entropy) {
    const T lse = m + log(total);
    if (entropy) {
      T h = 0;
      for (std::int64_t k = 0; k < A; ++k) {
        const T lp = zp[k * S] - lse;
        h -= exp(lp) * lp;
      }
      entropy[i] = h;
    }
    if (log_prob) log_prob[i] = zp[chosen * S] - lse;
  }
}

/// The reduction term of the loss gradient: writes dlogits/dvalue of pixel i, adds its sums.
template <class T>
struct LossGradTerm {
  T* dlogits;
  T* dvalue;
  const T* logits;
  const T* values;
  const std::int32_t* actions;
  const T* returns;
  const T* advantage;
  PixelDims d;
  T cv, cp, beta, scale;
  int* bad;

  __device__ void operator()(std::int64_t i, double* acc) const {
    const std::int64_t A = d.actions, S = d.plane;
    const std::int64_t off = (i / S) * A * S + i % S;
    const T* zp = logits + off;
    T* dzp = dlogits + off;
    T m;
    const std::int32_t a = actions[i];
    const bool ok = pixel_max(zp, S, A, m, bad) && a >= 0 && a < A && isfinite(values[i]) && isfinite(returns[i]) &&
                    isfinite(advantage[i]);
    if (!ok) {
      if (bad) *bad = 1;
      for (std::int64_t k = 0; k < A; ++k) dzp[k * S] = T(0);
      dvalue[i] = T(0);
      return;
    }
    T sum = 0;
    for (std::int64_t k = 0; k < A; ++k) sum += exp(zp[k * S] - m);
    const T lse = m + log(sum);
    T h = 0;
    for (std::int64_t k = 0; k < A; ++k) {
      const T lp = zp[k * S] - lse;
      h -= exp(lp) * lp;
    }
    const T adv = advantage[i];
    const T diff = returns[i] - values[i];
    const T lpa = zp[a * S] - lse;
    for (std::int64_t k = 0; k < A; ++k) {
      const T lp = zp[k * S] - lse, p = exp(lp);
      const T onehot = k == a ? T(1) : T(0);
      dzp[k * S] = scale * (-cp * adv * (onehot - p) + beta * p * (lp + h));
    }
    dvalue[i] = -T(2) * cv * scale * diff;
    acc[0] += double(diff) * double(diff);
    acc[1] += double(lpa) * double(adv);
    acc[2] += double(h);
  }
};

/// (w ∗ src)(y, x) of one H × W plane, zero padded (convolve_at of pixel_a3c.hpp).
template <class T>
__device__ __forceinline__ T convolve_at(const T* src, std::int64_t H, std::int64_t W, std::int64_t y, std::int64_t x,
                                         const T* w) {
  T s = 0;
  for (std::int64_t ky = 0; ky < 3; ++ky) {
    const std::int64_t sy = y - (ky - 1);
    if (sy < 0 || sy >= H) continue;
    for (std::int64_t kx = 0; kx < 3; ++kx) {
      const std::int64_t sx = x - (kx - 1);
      if (sx < 0 || sx >= W) continue;
      s += w[ky * 3 + kx] * src[sy * W + sx];
    }
  }
  return s;
}

/// (wᵀ ⋆ g)(y, x): the adjoint of convolve_at.
template <class T>
__device__ __forceinline__ T convolve_adjoint_at(const T* g, std::int64_t H, std::int64_t W, std::int64_t y,
                                                 std::int64_t x, const T* w) {
  T s = 0;
  for (std::int64_t ky = 0; ky < 3; ++ky) {
    const std::int64_t sy = y + (ky - 1);
    if (sy < 0 || sy >= H) continue;
    for (std::int64_t kx = 0; kx < 3; ++kx) {
      const std::int64_t sx = x + (kx - 1);
      if (sx < 0 || sx >= W) continue;
      s += w[ky * 3 + kx] * g[sy * W + sx];
    }
  }
  return s;
}

/// out[i] = r[i] + γ (w ∗ next)(i) over B planes of H × W.
template <class T>
__global__ void returns_step_kernel(T* __restrict__ out, const T* __restrict__ r, const T* __restrict__ next,
                                    const T* __restrict__ w, std::int64_t B, std::int64_t H, std::int64_t W, T gamma,
                                    int* bad) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * H * W) return;
  const std::int64_t plane = H * W, b = i / plane, y = (i % plane) / W, x = i % W;
  if (!isfinite(r[i]) && bad) *bad = 1;
  out[i] = r[i] + gamma * convolve_at(next + b * plane, H, W, y, x, w);
}

/// cur[i] += γ (wᵀ ⋆ prev)(i).
template <class T>
__global__ void adjoint_step_kernel(T* __restrict__ cur, const T* __restrict__ prev, const T* __restrict__ w,
                                    std::int64_t B, std::int64_t H, std::int64_t W, T gamma) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * H * W) return;
  const std::int64_t plane = H * W, b = i / plane, y = (i % plane) / W, x = i % W;
  cur[i] += gamma * convolve_adjoint_at(prev + b * plane, H, W, y, x, w);
}

/// Term of dL/dw: element (t, pixel) adds G^(t)(y, x) · R^(t+1)(y − dy, x − dx) for the 9 taps.
template <class T>
struct FilterGradTerm {
  const T* adjoint;    // [n, B, 1, H, W]
  const T* returns;    // [n, B, 1, H, W]
  const T* bootstrap;  // [B, 1, H, W]
  std::int64_t n, B, H, W;
  __device__ void operator()(std::int64_t e, double* acc) const {
    const std::int64_t step = B * H * W, t = e / step, i = e % step;
    const double gi = double(adjoint[e]);
    if (gi == 0.0) return;
    const std::int64_t plane = H * W, b = i / plane, y = (i % plane) / W, x = i % W;
    const T* src = (t + 1 < n ? returns + (t + 1) * step : bootstrap) + b * plane;
    for (std::int64_t ky = 0; ky < 3; ++ky) {
      const std::int64_t sy = y - (ky - 1);
      if (sy < 0 || sy >= H) continue;
      for (std::int64_t kx = 0; kx < 3; ++kx) {
        const std::int64_t sx = x - (kx - 1);
        if (sx < 0 || sx >= W) continue;
        acc[ky * 3 + kx] += gi * double(src[sy * W + sx]);
      }
    }
  }
};

/// dw[k] += γ · sums[k] (one thread).
template <class T>
__global__ void add_filter_grad_kernel(T* dw, const double* sums, double gamma) {
  if (threadIdx.x == 0 && blockIdx.x == 0)
    for (int k = 0; k < 9; ++k) dw[k] += static_cast<T>(gamma * sums[k]);
}

template <class T>
PixelDims dims_of(const Shape<4>& logits) {
  RLMED_CHECK(logits[0] >= 1 && logits[1] >= 1 && logits[2] >= 1 && logits[3] >= 1,
              "pixel head (cuda): logits must be [B, A, H, W] with every extent >= 1, found ", logits);
  return {logits[0] * logits[2] * logits[3], logits[2] * logits[3], logits[1]};
}

}  // namespace pixel_gpu

/// Scratch of the pixel head (grows, never shrinks): reduction partials and a device result block.
struct PixelHeadWorkspace {
  DeviceBuffer<double> partial;
  DeviceBuffer<double> sums{16};  // [0, 3): loss sums; [3, 12): filter gradient sums
};

/// Fused sampling head: actions [B, H, W] (PA3C's Philox draws, or the argmax when key is null),
/// and optionally log π(a|s) and H(π) [B, 1, H, W] (pass empty views to skip). Ordered on `stream`.
template <class T>
void pixel_policy(TensorView<std::int32_t, 3, cuda> actions, TensorView<T, 4, cuda> log_prob,
                  TensorView<T, 4, cuda> entropy, TensorView<const std::type_identity_t<T>, 4, cuda> logits,
                  const rl::PixelSampleKey* key, cudaStream_t stream, int* bad_flag = nullptr) {
  const pixel_gpu::PixelDims d = pixel_gpu::dims_of<T>(logits.shape());
  const Shape<3> want{logits.extent(0), logits.extent(2), logits.extent(3)};
  const Shape<4> map{logits.extent(0), 1, logits.extent(2), logits.extent(3)};
  RLMED_CHECK(actions.shape() == want, "pixel_policy (cuda): actions must be [B, H, W] = ", want, ", found ",
              actions.shape());
  RLMED_CHECK(!log_prob.data() || log_prob.shape() == map, "pixel_policy (cuda): log_prob must be ", map, ", found ",
              log_prob.shape());
  RLMED_CHECK(!entropy.data() || entropy.shape() == map, "pixel_policy (cuda): entropy must be ", map, ", found ",
              entropy.shape());
  RLMED_CHECK(d.pixels <= (index_t(1) << 32), "pixel_policy (cuda): ", d.pixels, " pixels exceed the 2^32 counter lane");
  if (key) {
    RLMED_CHECK(key->step < (std::uint64_t(1) << 32), "pixel_policy (cuda): step counter ", key->step,
                " exceeds 2^32 - 1");
    pixel_gpu::policy_kernel<T, true><<<grid_for(d.pixels), kDefaultBlock, 0, stream>>>(
        actions.data(), log_prob.data(), entropy.data(), logits.data(), d, *key, bad_flag);
  } else {
    pixel_gpu::policy_kernel<T, false><<<grid_for(d.pixels), kDefaultBlock, 0, stream>>>(
        actions.data(), log_prob.data(), entropy.data(), logits.data(), d, rl::PixelSampleKey{}, bad_flag);
  }
  RLMED_CUDA_CHECK_LAUNCH();
}

/// One step's PA3C gradients (pixel_a3c_step_into): dlogits [B, A, H, W], dvalue [B, 1, H, W]
/// overwritten, scaled by `scale` = 1/N; the unscaled sums (Σ (R−V)², Σ log π·A, Σ H) land in
/// device doubles ws.sums[0..3) (read them after syncing, or with read_loss_sums).
template <class T>
void pixel_a3c_step(TensorView<T, 4, cuda> dlogits, TensorView<T, 4, cuda> dvalue,
                    TensorView<const std::type_identity_t<T>, 4, cuda> logits,
                    TensorView<const std::type_identity_t<T>, 4, cuda> values,
                    TensorView<const std::int32_t, 3, cuda> actions,
                    TensorView<const std::type_identity_t<T>, 4, cuda> returns,
                    TensorView<const std::type_identity_t<T>, 4, cuda> advantage, const rl::PixelA3CLossWeights& weights,
                    double scale, PixelHeadWorkspace& ws, cudaStream_t stream, int* bad_flag = nullptr) {
  const pixel_gpu::PixelDims d = pixel_gpu::dims_of<T>(logits.shape());
  const Shape<4> map{logits.extent(0), 1, logits.extent(2), logits.extent(3)};
  const Shape<3> act{logits.extent(0), logits.extent(2), logits.extent(3)};
  RLMED_CHECK(values.shape() == map && returns.shape() == map && advantage.shape() == map,
              "pixel_a3c_step (cuda): values, returns and advantage must be [B, 1, H, W] = ", map, ", found ",
              values.shape(), ", ", returns.shape(), ", ", advantage.shape());
  RLMED_CHECK(actions.shape() == act, "pixel_a3c_step (cuda): actions must be [B, H, W] = ", act, ", found ",
              actions.shape());
  RLMED_CHECK(dlogits.shape() == logits.shape() && dvalue.shape() == map, "pixel_a3c_step (cuda): gradient buffers ",
              dlogits.shape(), " and ", dvalue.shape(), " must be ", logits.shape(), " and ", map);
  RLMED_CHECK(std::isfinite(scale) && scale > 0, "pixel_a3c_step (cuda): scale must be positive, found ", scale);
  const pixel_gpu::LossGradTerm<T> term{dlogits.data(), dvalue.data(), logits.data(), values.data(), actions.data(),
                                        returns.data(), advantage.data(), d,
                                        static_cast<T>(weights.value), static_cast<T>(weights.policy),
                                        static_cast<T>(weights.entropy), static_cast<T>(scale), bad_flag};
  deterministic_sums<3>(term, d.pixels, ws.sums.data(), ws.partial, stream);
}

/// The three loss sums of the last pixel_a3c_step (synchronises `stream`).
inline rl::PixelLossSums read_loss_sums(const PixelHeadWorkspace& ws, cudaStream_t stream) {
  double host[3] = {0, 0, 0};
  RLMED_CUDA_CHECK(cudaMemcpyAsync(host, ws.sums.data(), sizeof(host), cudaMemcpyDeviceToHost, stream));
  RLMED_CUDA_CHECK(cudaStreamSynchronize(stream));
  return {host[0], host[1], host[2]};
}

/// R^(t) = r^(t) + γ (w ∗ R^(t+1)), t = n−1 … 0, R^(n) = bootstrap (reward_map_returns_into).
/// returns, rewards [n, B, 1, H, W]; bootstrap [B, 1, H, W]; w [3, 3] on the device.
template <class T>
void reward_map_returns(TensorView<T, 5, cuda> returns, TensorView<const std::type_identity_t<T>, 5, cuda> rewards,
                        TensorView<const std::type_identity_t<T>, 4, cuda> bootstrap,
                        TensorView<const std::type_identity_t<T>, 2, cuda> w, double gamma, cudaStream_t stream,
                        int* bad_flag = nullptr) {
  const Shape<5> s = rewards.shape();
  RLMED_CHECK(std::isfinite(gamma) && gamma >= 0 && gamma <= 1, "reward_map_returns (cuda): gamma must be in [0, 1], found ",
              gamma);
  RLMED_CHECK(s[0] >= 1 && s[1] >= 1 && s[2] == 1 && s[3] >= 1 && s[4] >= 1,
              "reward_map_returns (cuda): rewards must be [n, B, 1, H, W] with n, B, H, W >= 1, found ", s);
  RLMED_CHECK(returns.shape() == s, "reward_map_returns (cuda): returns shape ", returns.shape(),
              " differs from rewards shape ", s);
  RLMED_CHECK(bootstrap.shape() == Shape<4>({s[1], 1, s[3], s[4]}), "reward_map_returns (cuda): bootstrap must be [",
              s[1], ", 1, ", s[3], ", ", s[4], "], found ", bootstrap.shape());
  RLMED_CHECK(w.shape() == Shape<2>({3, 3}), "reward_map_returns (cuda): the filter must be [3, 3], found ", w.shape());
  RLMED_CHECK(returns.data() != rewards.data(), "reward_map_returns (cuda): returns must not alias rewards");
  const index_t n = s[0], B = s[1], H = s[3], W = s[4], step = B * H * W;
  for (index_t t = n; t-- > 0;) {
    const T* next = t + 1 < n ? returns.data() + (t + 1) * step : bootstrap.data();
    pixel_gpu::returns_step_kernel<T><<<grid_for(step), kDefaultBlock, 0, stream>>>(
        returns.data() + t * step, rewards.data() + t * step, next, w.data(), B, H, W, static_cast<T>(gamma), bad_flag);
    RLMED_CUDA_CHECK_LAUNCH();
  }
}

/// Backward of reward_map_returns (reward_map_returns_backward): adjoint [n, B, 1, H, W] holds
/// the direct dL/dR^(t) on entry and the total G^(t) on exit; adds dL/dw into dw [3, 3].
template <class T>
void reward_map_returns_backward(TensorView<T, 5, cuda> adjoint, TensorView<const std::type_identity_t<T>, 5, cuda> returns,
                                 TensorView<const std::type_identity_t<T>, 4, cuda> bootstrap,
                                 TensorView<const std::type_identity_t<T>, 2, cuda> w, double gamma,
                                 TensorView<T, 2, cuda> dw, PixelHeadWorkspace& ws, cudaStream_t stream) {
  const Shape<5> s = returns.shape();
  RLMED_CHECK(adjoint.shape() == s, "reward_map_returns_backward (cuda): adjoint shape ", adjoint.shape(),
              " differs from returns shape ", s);
  RLMED_CHECK(bootstrap.shape() == Shape<4>({s[1], 1, s[3], s[4]}),
              "reward_map_returns_backward (cuda): bootstrap must be [", s[1], ", 1, ", s[3], ", ", s[4], "], found ",
              bootstrap.shape());
  RLMED_CHECK(w.shape() == Shape<2>({3, 3}) && dw.shape() == Shape<2>({3, 3}),
              "reward_map_returns_backward (cuda): w and dw must be [3, 3], found ", w.shape(), " and ", dw.shape());
  const index_t n = s[0], B = s[1], H = s[3], W = s[4], step = B * H * W;
  if (n * step == 0) return;
  for (index_t t = 1; t < n; ++t) {
    pixel_gpu::adjoint_step_kernel<T><<<grid_for(step), kDefaultBlock, 0, stream>>>(
        adjoint.data() + t * step, adjoint.data() + (t - 1) * step, w.data(), B, H, W, static_cast<T>(gamma));
    RLMED_CUDA_CHECK_LAUNCH();
  }
  const pixel_gpu::FilterGradTerm<T> term{adjoint.data(), returns.data(), bootstrap.data(), n, B, H, W};
  deterministic_sums<9>(term, n * step, ws.sums.data() + 3, ws.partial, stream);
  pixel_gpu::add_filter_grad_kernel<T><<<1, 1, 0, stream>>>(dw.data(), ws.sums.data() + 3, gamma);
  RLMED_CUDA_CHECK_LAUNCH();
}

}  // namespace rlmed::kernels
