// rlmed/rl/pixel_a3c.hpp — PA3C, the pixel-level advantage actor-critic of PixelDRL-MG and
// PixelRL (SYSTEMS.md S6): per-pixel action sampling, returns with the learnable reward-map
// convolution, the loss and its gradients, and a synchronous (A2C) update of any network with
// a per-pixel policy and value head.
//
// Design decisions:
//  * Network-agnostic. The learner needs a `PixelActorCritic`: forward(ctx, x [B, C, H, W],
//    cache) returning `.policy_logits` [B, A, H, W] and `.value` [B, 1, H, W], and
//    backward(ctx, cache, dlogits, dvalue) accumulating parameter gradients. nn::PixelDrlNet is
//    one; FusedPixelActorCritic adapts any plain module whose output is [B, A + 1, H, W].
//    One Cache per step holds what backward needs, so t_max forward passes run before any
//    backward (ARCHITECTURE.md principle 2).
//  * Sampling with Philox, one counter per (step, pixel): the draw of pixel p (flat index
//    (b·H + y)·W + x, < 2^32) at environment step s (the learner's running step counter, < 2^32)
//    is word 0 of philox_block(seed, stream, (s << 32) | p), turned into u ∈ [0, 1) by
//    u32_to_uniform_float (24 bits). The action is the inverse CDF over e_k = exp(z_k − max z):
//    the first k with u·Σe < e_0 + … + e_k, accumulated in T in channel order (if rounding
//    leaves none, the last k with e_k > 0). `stream` separates A3C workers. A GPU thread per
//    pixel computes the same block and the same sums, so both devices draw identical actions.
//    Greedy actions are the argmax (lowest index on ties).
//  * Returns with the reward-map filter w (3×3, identity at start), backwards over the rollout:
//      R^(t) = r^(t) + γ (w ∗ R^(t+1)),  R^(n) = V(s^(n)) or 0 when the episode is terminal,
//    with ∗ the true convolution of the paper's eq. 8, zero padded:
//      (w ∗ R)(y, x) = Σ_{dy,dx ∈ {−1,0,1}} w[1 + dy][1 + dx] · R(y − dy, x − dx)
//    (PyTorch's conv2d, a cross-correlation, computes the same with the kernel flipped in both
//    axes; with the identity start both agree). The bootstrap value is a constant (no gradient
//    into the network through it).
//  * The loss of a rollout of n steps over B images of H×W pixels, N = n·B·H·W (`mean`, the
//    default) or N = B·H·W (`sum` over steps, as PixelRL's code):
//      L = (1/N) Σ_{t,b,i} [ c_v (R − V)² − c_p log π(a|s) · sg(R − V) − β H(π(·|s)) ]
//    with c_v = value_weight = 0.5, c_p = policy_weight = 1, β = entropy_beta = 0.01. The
//    advantage is not back-propagated (sg: stop-gradient), so the policy term trains only the
//    policy; R depends on w, so the value term trains w: dL/dw flows through every R^(t).
//    (chainerrl/PixelRL accumulate v_loss_coef · ½(R − V)² with v_loss_coef = 0.5, i.e. an
//    effective 0.25 · (R − V)² summed over steps: value_weight = 0.25 with StepReduction::sum
//    reproduces that scale.)
//  * Gradients, with p = softmax(z), H = −Σ p log p, A = R − V:
//      dL/dz_k = (1/N) [ −c_p A (1[k = a] − p_k) + β p_k (log p_k + H) ]
//      dL/dV   = −(2 c_v / N) A,   direct dL/dR^(t) = (2 c_v / N) A,
//      adjoints backwards in the recursion: G^(t) = dL/dR^(t) + γ wᵀ⋆G^(t−1) (wᵀ⋆ the adjoint,
//      a correlation), dL/dw[1+dy][1+dx] = γ Σ_t Σ_{y,x} G^(t)(y, x) R^(t+1)(y − dy, x − dx).
//  * Deterministic: every reduction runs over fixed chunks combined in order, elementwise work
//    writes each output once, so sampling, returns, losses and the filter gradient are
//    bit-identical for any thread count. (Network parameter gradients follow the convolution
//    kernels' contract: bit-identical run to run for a given thread count.)
//  * Buffers (observations per step, actions, rewards, returns, caches, gradients) are kept
//    between updates; after the first update of a given size nothing is allocated.
//  * A3C: a worker owns a copy of the network and its own PixelA3C (own Philox stream); after
//    accumulate_gradients() it adds its gradients into the shared learner's
//    (a3c_push_gradients), the shared optimiser steps, and the worker copies the parameters
//    back (a3c_pull_parameters). The synchronous `update` is the A2C equivalent: all workers'
//    environments batched into one.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/env/pixel_mask.hpp"
#include "rlmed/nn/layers/concat.hpp"
#include "rlmed/nn/module.hpp"
#include "rlmed/nn/optim/param_list.hpp"

namespace rlmed::rl {

// ============================================================================================
// Networks the learner accepts
// ============================================================================================

/// The two per-pixel outputs of an actor-critic network.
template <class T>
struct PixelPolicyValue {
  TensorView<const T, 4> policy_logits;  ///< [B, A, H, W]
  TensorView<const T, 4> value;          ///< [B, 1, H, W]
};

/// A network with a per-pixel policy and value head (see the header comment).
template <class N>
concept PixelActorCritic = requires(N& net, nn::Context& ctx, typename N::Cache& cache,
                                    TensorView<const typename N::value_type, 4> x) {
  typename N::value_type;
  { net.forward(ctx, x, cache).policy_logits } -> std::convertible_to<TensorView<const typename N::value_type, 4>>;
  { net.forward(ctx, x, cache).value } -> std::convertible_to<TensorView<const typename N::value_type, 4>>;
  { net.backward(ctx, cache, x, x) } -> std::convertible_to<TensorView<const typename N::value_type, 4>>;
};

/// Adapts a plain module whose output is [B, A + 1, H, W] (channels [0, A): policy logits,
/// channel A: value) to the PixelActorCritic interface. Parameter names are the module's.
template <class M, index_t Actions = 2>
class FusedPixelActorCritic {
  static_assert(Actions >= 1, "a policy needs at least one action");

 public:
  using value_type = typename M::value_type;
  using T = value_type;
  static constexpr index_t num_actions = Actions;

  struct Cache {
    typename M::Cache inner;
    Tensor<T, 4> policy, value;  // [B, A, H, W], [B, 1, H, W]
    Tensor<T, 4> dy;             // [B, A + 1, H, W]
  };

  FusedPixelActorCritic() = default;
  explicit FusedPixelActorCritic(M m) : module(std::move(m)) {}

  void initialize(PhiloxStream& rng) { module.initialize(rng); }

  PixelPolicyValue<T> forward(nn::Context& ctx, TensorView<const T, 4> x, Cache& c) {
    const auto y = module.forward(ctx, x, c.inner);
    RLMED_CHECK(y.extent(1) == Actions + 1, "FusedPixelActorCritic: the module returns ", y.extent(1),
                " channels, expected A + 1 = ", Actions + 1, " (", Actions, " logits, 1 value)");
    nn::slice_channels(y, 0, Actions, c.policy);
    nn::slice_channels(y, Actions, 1, c.value);
    return {c.policy.view(), c.value.view()};
  }

  TensorView<const T, 4> backward(nn::Context& ctx, Cache& c, TensorView<const T, 4> dlogits,
                                  TensorView<const T, 4> dvalue) {
    nn::detail::check_grad_shape(dlogits, c.policy.shape(), "FusedPixelActorCritic (policy)");
    nn::detail::check_grad_shape(dvalue, c.value.shape(), "FusedPixelActorCritic (value)");
    nn::concat_channels<T, 4>({dlogits, dvalue}, c.dy);
    return module.backward(ctx, c.inner, c.dy.view());
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    module.parameters(visit, prefix);
  }
  template <class V>
  void buffers(V&& visit, std::string_view prefix = {}) {
    module.buffers(visit, prefix);
  }

  M module;
};

// ============================================================================================
// Per-pixel actions: sampling, greedy, log-probabilities and entropies
// ============================================================================================

/// Where the draws of one step come from (see the header comment for the counter layout).
struct PixelSampleKey {
  std::uint64_t seed = 0;    ///< Philox key
  std::uint64_t stream = 0;  ///< one per A3C worker
  std::uint64_t step = 0;    ///< environment step counter, < 2^32
};

/// The 32 random bits of pixel `pixel` at step `step`: word 0 of block (seed, stream, step·2^32 + pixel).
RLMED_HOST_DEVICE constexpr std::uint32_t pixel_action_bits(std::uint64_t seed, std::uint64_t stream,
                                                            std::uint64_t step, std::uint64_t pixel) noexcept {
  return philox_block(seed, stream, (step << 32) | (pixel & 0xFFFFFFFFu)).v[0];
}

namespace detail {

inline constexpr index_t kPixelGrain = 4096;  ///< pixels per parallel work item / reduction chunk

template <class T>
void check_logits(TensorView<const T, 4> logits, const char* fn) {
  RLMED_CHECK(logits.extent(0) >= 1 && logits.extent(1) >= 1 && logits.extent(2) >= 1 && logits.extent(3) >= 1,
              fn, ": logits must be [B, A, H, W] with every extent >= 1, found ", logits.shape());
}

template <class T>
Shape<3> action_shape_of(TensorView<const T, 4> logits) {
  return {logits.extent(0), logits.extent(2), logits.extent(3)};
}

[[noreturn]] inline void throw_bad_logit(double v, index_t pixel, const char* fn) {
  RLMED_THROW(fn, ": policy logits must be finite, found ", v, " at pixel ", pixel);
}

/// Max over the A channels of one pixel (elements z[0], z[stride], ...); throws on NaN/inf.
template <class T>
T pixel_max(const T* z, index_t stride, index_t A, index_t pixel, const char* fn) {
  T m = z[0];
  for (index_t k = 0; k < A; ++k) {
    const T v = z[k * stride];
    if (!std::isfinite(v)) throw_bad_logit(double(v), pixel, fn);
    m = v > m ? v : m;
  }
  return m;
}

/// Deterministic Σ over fixed chunks of [0, n): body(begin, end, double* acc) adds `width`
/// partial sums into acc; chunks are combined in chunk order into out[0..width).
template <class Body>
void chunked_sums(index_t n, index_t chunk, int width, std::vector<double>& partial, double* out, Body&& body) {
  const index_t chunks = (n + chunk - 1) / chunk;
  partial.assign(static_cast<std::size_t>(chunks * width), 0.0);
  parallel_for_chunks(0, n, chunk, [&](index_t b, index_t e) { body(b, e, partial.data() + (b / chunk) * width); });
  for (index_t c = 0; c < chunks; ++c)
    for (int k = 0; k < width; ++k) out[k] += partial[static_cast<std::size_t>(c * width + k)];
}

}  // namespace detail

/// Samples one action per pixel from softmax(logits): logits [B, A, H, W] -> actions [B, H, W].
template <class T>
void sample_pixel_actions_into(TensorView<std::int32_t, 3> actions, TensorView<const T, 4> logits,
                               const PixelSampleKey& key) {
  constexpr const char* fn = "sample_pixel_actions";
  detail::check_logits(logits, fn);
  RLMED_CHECK(actions.shape() == detail::action_shape_of(logits), fn, ": actions must be [B, H, W] = ",
              detail::action_shape_of(logits), ", found ", actions.shape());
  RLMED_CHECK(actions.size() <= (index_t(1) << 32), fn, ": ", actions.size(), " pixels exceed the 2^32 counter lane");
  RLMED_CHECK(key.step < (std::uint64_t(1) << 32), fn, ": step counter ", key.step, " exceeds 2^32 - 1");
  const index_t A = logits.extent(1), S = logits.extent(2) * logits.extent(3);
  const T* z = logits.data();
  std::int32_t* out = actions.data();
  parallel_for(0, actions.size(), [&](index_t i) {
    const index_t b = i / S, s = i % S;
    const T* zp = z + b * A * S + s;
    const T m = detail::pixel_max(zp, S, A, i, fn);
    T total = 0;
    for (index_t k = 0; k < A; ++k) total += std::exp(zp[k * S] - m);
    const float u = u32_to_uniform_float(
        pixel_action_bits(key.seed, key.stream, key.step, static_cast<std::uint64_t>(i)));
    const T target = static_cast<T>(u) * total;
    T acc = 0;
    index_t chosen = -1, last_positive = 0;
    for (index_t k = 0; k < A; ++k) {
      const T e = std::exp(zp[k * S] - m);
      if (e > T(0)) last_positive = k;
      acc += e;
      if (target < acc) {
        chosen = k;
        break;
      }
    }
    out[i] = static_cast<std::int32_t>(chosen >= 0 ? chosen : last_positive);
  }, detail::kPixelGrain);
}

/// Argmax action per pixel (lowest index on ties): logits [B, A, H, W] -> actions [B, H, W].
template <class T>
void greedy_pixel_actions_into(TensorView<std::int32_t, 3> actions, TensorView<const T, 4> logits) {
  constexpr const char* fn = "greedy_pixel_actions";
  detail::check_logits(logits, fn);
  RLMED_CHECK(actions.shape() == detail::action_shape_of(logits), fn, ": actions must be [B, H, W] = ",
              detail::action_shape_of(logits), ", found ", actions.shape());
  const index_t A = logits.extent(1), S = logits.extent(2) * logits.extent(3);
  const T* z = logits.data();
  std::int32_t* out = actions.data();
  parallel_for(0, actions.size(), [&](index_t i) {
    const T* zp = z + (i / S) * A * S + i % S;
    detail::pixel_max(zp, S, A, i, fn);  // validates
    index_t best = 0;
    for (index_t k = 1; k < A; ++k)
      if (zp[k * S] > zp[best * S]) best = k;
    out[i] = static_cast<std::int32_t>(best);
  }, detail::kPixelGrain);
}

/// log π(a|s) and the entropy H = −Σ p log p per pixel: log_prob, entropy [B, 1, H, W].
template <class T>
void pixel_log_prob_entropy_into(TensorView<T, 4> log_prob, TensorView<T, 4> entropy, TensorView<const T, 4> logits,
                                 TensorView<const std::int32_t, 3> actions) {
  constexpr const char* fn = "pixel_log_prob_entropy";
  detail::check_logits(logits, fn);
  const Shape<4> map{logits.extent(0), 1, logits.extent(2), logits.extent(3)};
  RLMED_CHECK(actions.shape() == detail::action_shape_of(logits), fn, ": actions must be [B, H, W] = ",
              detail::action_shape_of(logits), ", found ", actions.shape());
  RLMED_CHECK(log_prob.shape() == map && entropy.shape() == map, fn, ": outputs must be [B, 1, H, W] = ", map,
              ", found ", log_prob.shape(), " and ", entropy.shape());
  const index_t A = logits.extent(1), S = logits.extent(2) * logits.extent(3);
  const T* z = logits.data();
  const std::int32_t* a = actions.data();
  parallel_for(0, actions.size(), [&](index_t i) {
    const T* zp = z + (i / S) * A * S + i % S;
    const T m = detail::pixel_max(zp, S, A, i, fn);
    RLMED_CHECK(a[i] >= 0 && a[i] < A, fn, ": action ", a[i], " at pixel ", i, " outside [0, ", A, ")");
    T sum = 0;
    for (index_t k = 0; k < A; ++k) sum += std::exp(zp[k * S] - m);
    const T lse = m + std::log(sum);
    T h = 0;
    for (index_t k = 0; k < A; ++k) {
      const T lp = zp[k * S] - lse;
      h -= std::exp(lp) * lp;
    }
    log_prob.data()[i] = zp[a[i] * S] - lse;
    entropy.data()[i] = h;
  }, detail::kPixelGrain);
}

/// Convenience forms returning new tensors.
template <class T>
Tensor<std::int32_t, 3> sample_pixel_actions(TensorView<const T, 4> logits, const PixelSampleKey& key) {
  auto out = Tensor<std::int32_t, 3>::uninitialized(detail::action_shape_of(logits));
  sample_pixel_actions_into(out.view(), logits, key);
  return out;
}
template <class T>
Tensor<std::int32_t, 3> greedy_pixel_actions(TensorView<const T, 4> logits) {
  auto out = Tensor<std::int32_t, 3>::uninitialized(detail::action_shape_of(logits));
  greedy_pixel_actions_into(out.view(), logits);
  return out;
}

// ============================================================================================
// Reward-map convolution and returns
// ============================================================================================

/// The learnable 3×3 reward-map filter w (PixelRL's "reward map convolution"), identity at start.
template <class T>
struct RewardMapFilter {
  nn::Parameter<T, 2> weight{Shape<2>{3, 3}};  ///< w[1 + dy][1 + dx], see the header comment

  RewardMapFilter() { set_identity(); }
  void set_identity() {
    fill(weight.value, T(0));
    weight.value(1, 1) = T(1);
  }
  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    visit(nn::join_name(prefix, "weight"), weight);
  }
};

namespace detail {

template <class T>
void check_filter(TensorView<const T, 2> w, const char* fn) {
  RLMED_CHECK(w.shape() == Shape<2>({3, 3}), fn, ": the reward-map filter must be [3, 3], found ", w.shape());
  for (index_t i = 0; i < 9; ++i)
    RLMED_CHECK(std::isfinite(w.data()[i]), fn, ": the reward-map filter holds ", w.data()[i], " at ", i);
}

/// (w ∗ src)(y, x) of one plane (H × W), zero padded.
template <class T>
T convolve_at(const T* src, index_t H, index_t W, index_t y, index_t x, const T* w) {
  T s = 0;
  for (index_t ky = 0; ky < 3; ++ky) {
    const index_t sy = y - (ky - 1);
    if (sy < 0 || sy >= H) continue;
    for (index_t kx = 0; kx < 3; ++kx) {
      const index_t sx = x - (kx - 1);
      if (sx < 0 || sx >= W) continue;
      s += w[ky * 3 + kx] * src[sy * W + sx];
    }
  }
  return s;
}

/// (wᵀ ⋆ g)(y, x) = Σ w[ky][kx] g(y + ky − 1, x + kx − 1): the adjoint of convolve_at.
template <class T>
T convolve_adjoint_at(const T* g, index_t H, index_t W, index_t y, index_t x, const T* w) {
  T s = 0;
  for (index_t ky = 0; ky < 3; ++ky) {
    const index_t sy = y + (ky - 1);
    if (sy < 0 || sy >= H) continue;
    for (index_t kx = 0; kx < 3; ++kx) {
      const index_t sx = x + (kx - 1);
      if (sx < 0 || sx >= W) continue;
      s += w[ky * 3 + kx] * g[sy * W + sx];
    }
  }
  return s;
}

/// Rows of B·H per parallel item / reduction chunk (depends on W only, never on threads).
inline index_t rows_per_chunk(index_t W) { return std::max<index_t>(1, kPixelGrain / std::max<index_t>(W, 1)); }

template <class T>
void check_map(TensorView<const T, 4> m, const Shape<4>& want, const char* what, const char* fn) {
  RLMED_CHECK(m.shape() == want, fn, ": ", what, " must be [B, 1, H, W] = ", want, ", found ", m.shape());
}

}  // namespace detail

/// out = w ∗ in for every image of [B, 1, H, W] (zero padding; out must not alias in).
template <class T>
void reward_map_convolve_into(TensorView<T, 4> out, TensorView<const T, 4> in, TensorView<const T, 2> w) {
  constexpr const char* fn = "reward_map_convolve";
  detail::check_filter(w, fn);
  RLMED_CHECK(in.extent(1) == 1, fn, ": input must be [B, 1, H, W], found ", in.shape());
  detail::check_map(TensorView<const T, 4>(out), in.shape(), "output", fn);
  RLMED_CHECK(out.data() != in.data() || in.size() == 0, fn, ": output must not alias the input");
  const index_t H = in.extent(2), W = in.extent(3);
  parallel_for(0, in.extent(0) * H, [&](index_t row) {
    const index_t b = row / H, y = row % H;
    for (index_t x = 0; x < W; ++x)
      out.data()[row * W + x] = detail::convolve_at(in.data() + b * H * W, H, W, y, x, w.data());
  }, detail::rows_per_chunk(W));
}

/// R^(t) = r^(t) + γ (w ∗ R^(t+1)) for t = n−1 … 0 with R^(n) = bootstrap.
/// rewards, returns [n, B, 1, H, W]; bootstrap [B, 1, H, W] (zeros for a terminal end).
template <class T>
void reward_map_returns_into(TensorView<T, 5> returns, TensorView<const T, 5> rewards, TensorView<const T, 4> bootstrap,
                             TensorView<const T, 2> w, double gamma) {
  constexpr const char* fn = "reward_map_returns";
  detail::check_filter(w, fn);
  RLMED_CHECK(std::isfinite(gamma) && gamma >= 0 && gamma <= 1, fn, ": gamma must be in [0, 1], found ", gamma);
  const Shape<5> s = rewards.shape();
  RLMED_CHECK(s[0] >= 1 && s[1] >= 1 && s[2] == 1 && s[3] >= 1 && s[4] >= 1, fn,
              ": rewards must be [n, B, 1, H, W] with n, B, H, W >= 1, found ", s);
  RLMED_CHECK(returns.shape() == s, fn, ": returns shape ", returns.shape(), " differs from rewards shape ", s);
  detail::check_map(bootstrap, Shape<4>{s[1], 1, s[3], s[4]}, "bootstrap", fn);
  RLMED_CHECK(returns.data() != rewards.data(), fn, ": returns must not alias rewards");
  for (index_t i = 0; i < bootstrap.size(); ++i)
    RLMED_CHECK(std::isfinite(bootstrap.data()[i]), fn, ": bootstrap value ", bootstrap.data()[i], " at ", i);
  const index_t n = s[0], B = s[1], H = s[3], W = s[4], plane = H * W;
  const T g = static_cast<T>(gamma);
  for (index_t t = n; t-- > 0;) {
    const T* next = t + 1 < n ? returns.data() + (t + 1) * B * plane : bootstrap.data();
    const T* r = rewards.data() + t * B * plane;
    T* out = returns.data() + t * B * plane;
    parallel_for(0, B * H, [&](index_t row) {
      const index_t b = row / H, y = row % H;
      for (index_t x = 0; x < W; ++x) {
        const index_t i = row * W + x;
        RLMED_CHECK(std::isfinite(r[i]), fn, ": reward ", r[i], " at step ", t, ", flat pixel ", i);
        out[i] = r[i] + g * detail::convolve_at(next + b * plane, H, W, y, x, w.data());
      }
    }, detail::rows_per_chunk(W));
  }
}

/// Backward of reward_map_returns_into. On entry `adjoint[t]` holds the direct dL/dR^(t) (the
/// loss's own dependence on R^(t)); on exit the total G^(t) (through all earlier returns).
/// Adds dL/dw into dw. `partial` is reduction scratch (kept by the caller to avoid allocation).
template <class T>
void reward_map_returns_backward(TensorView<T, 5> adjoint, TensorView<const T, 5> returns,
                                 TensorView<const T, 4> bootstrap, TensorView<const T, 2> w, double gamma,
                                 TensorView<T, 2> dw, std::vector<double>& partial) {
  constexpr const char* fn = "reward_map_returns_backward";
  detail::check_filter(w, fn);
  const Shape<5> s = returns.shape();
  RLMED_CHECK(adjoint.shape() == s, fn, ": adjoint shape ", adjoint.shape(), " differs from returns shape ", s);
  detail::check_map(bootstrap, Shape<4>{s[1], 1, s[3], s[4]}, "bootstrap", fn);
  RLMED_CHECK(dw.shape() == Shape<2>({3, 3}), fn, ": dw must be [3, 3], found ", dw.shape());
  const index_t n = s[0], B = s[1], H = s[3], W = s[4], plane = H * W;
  const T g = static_cast<T>(gamma);
  const index_t rows = detail::rows_per_chunk(W);
  // G^(t) = direct^(t) + γ wᵀ ⋆ G^(t−1): R^(t) feeds R^(t−1).
  for (index_t t = 1; t < n; ++t) {
    const T* prev = adjoint.data() + (t - 1) * B * plane;
    T* cur = adjoint.data() + t * B * plane;
    parallel_for(0, B * H, [&](index_t row) {
      const index_t b = row / H, y = row % H;
      for (index_t x = 0; x < W; ++x)
        cur[row * W + x] += g * detail::convolve_adjoint_at(prev + b * plane, H, W, y, x, w.data());
    }, rows);
  }
  // dL/dw[k] = γ Σ_t Σ_i G^(t)_i · R^(t+1)(i − d_k).
  double sums[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  for (index_t t = 0; t < n; ++t) {
    const T* G = adjoint.data() + t * B * plane;
    const T* next = t + 1 < n ? returns.data() + (t + 1) * B * plane : bootstrap.data();
    detail::chunked_sums(B * H, rows, 9, partial, sums, [&](index_t r0, index_t r1, double* acc) {
      for (index_t row = r0; row < r1; ++row) {
        const index_t b = row / H, y = row % H;
        const T* src = next + b * plane;
        for (index_t x = 0; x < W; ++x) {
          const double gi = double(G[row * W + x]);
          if (gi == 0.0) continue;
          for (index_t ky = 0; ky < 3; ++ky) {
            const index_t sy = y - (ky - 1);
            if (sy < 0 || sy >= H) continue;
            for (index_t kx = 0; kx < 3; ++kx) {
              const index_t sx = x - (kx - 1);
              if (sx < 0 || sx >= W) continue;
              acc[ky * 3 + kx] += gi * double(src[sy * W + sx]);
            }
          }
        }
      }
    });
  }
  for (int k = 0; k < 9; ++k) dw.data()[k] += static_cast<T>(double(gamma) * sums[k]);
}

// ============================================================================================
// The loss of one step and its gradients
// ============================================================================================

/// Weights of the three loss terms (defaults: the paper's β, the PixelRL code's value weight).
struct PixelA3CLossWeights {
  double value = 0.5;     ///< c_v on (R − V)²
  double policy = 1.0;    ///< c_p on −log π(a|s)·A
  double entropy = 0.01;  ///< β on −H
};

/// Unscaled sums over the pixels of one step.
struct PixelLossSums {
  double squared_error = 0;  ///< Σ (R − V)²
  double log_prob_adv = 0;   ///< Σ log π(a|s) · sg(A)
  double entropy = 0;        ///< Σ H
  PixelLossSums& operator+=(const PixelLossSums& o) {
    squared_error += o.squared_error;
    log_prob_adv += o.log_prob_adv;
    entropy += o.entropy;
    return *this;
  }
};

/// Gradients of one step's contribution to L (see the header comment), scaled by `scale` = 1/N:
/// dlogits [B, A, H, W] and dvalue [B, 1, H, W] are overwritten. `advantage` is the stop-gradient
/// A of the policy term (normally R − V at the same parameters). Returns the unscaled sums.
template <class T>
PixelLossSums pixel_a3c_step_into(TensorView<T, 4> dlogits, TensorView<T, 4> dvalue, TensorView<const T, 4> logits,
                                  TensorView<const T, 4> values, TensorView<const std::int32_t, 3> actions,
                                  TensorView<const T, 4> returns, TensorView<const T, 4> advantage,
                                  const PixelA3CLossWeights& weights, double scale, std::vector<double>& partial) {
  constexpr const char* fn = "pixel_a3c_step";
  detail::check_logits(logits, fn);
  const Shape<4> map{logits.extent(0), 1, logits.extent(2), logits.extent(3)};
  detail::check_map(values, map, "values", fn);
  detail::check_map(returns, map, "returns", fn);
  detail::check_map(advantage, map, "advantage", fn);
  RLMED_CHECK(actions.shape() == detail::action_shape_of(logits), fn, ": actions must be [B, H, W] = ",
              detail::action_shape_of(logits), ", found ", actions.shape());
  RLMED_CHECK(dlogits.shape() == logits.shape() && dvalue.shape() == map, fn, ": gradient buffers ",
              dlogits.shape(), " and ", dvalue.shape(), " must be ", logits.shape(), " and ", map);
  RLMED_CHECK(std::isfinite(scale) && scale > 0, fn, ": scale must be positive, found ", scale);
  const index_t A = logits.extent(1), S = logits.extent(2) * logits.extent(3);
  const T cv = static_cast<T>(weights.value), cp = static_cast<T>(weights.policy), beta = static_cast<T>(weights.entropy);
  const T sc = static_cast<T>(scale);
  const T* z = logits.data();
  const T *v = values.data(), *R = returns.data(), *adv = advantage.data();
  const std::int32_t* a = actions.data();
  T* dz = dlogits.data();
  T* dv = dvalue.data();
  double sums[3] = {0, 0, 0};
  detail::chunked_sums(actions.size(), detail::kPixelGrain, 3, partial, sums, [&](index_t p0, index_t p1, double* acc) {
    for (index_t i = p0; i < p1; ++i) {
      const index_t off = (i / S) * A * S + i % S;
      const T* zp = z + off;
      T* dzp = dz + off;
      const T m = detail::pixel_max(zp, S, A, i, fn);
      RLMED_CHECK(a[i] >= 0 && a[i] < A, fn, ": action ", a[i], " at pixel ", i, " outside [0, ", A, ")");
      RLMED_CHECK(std::isfinite(v[i]) && std::isfinite(R[i]) && std::isfinite(adv[i]), fn, ": value ", v[i],
                  ", return ", R[i], ", advantage ", adv[i], " at pixel ", i, " (expected finite)");
      T sum = 0;
      for (index_t k = 0; k < A; ++k) sum += std::exp(zp[k * S] - m);
      const T lse = m + std::log(sum);
      T h = 0;
      for (index_t k = 0; k < A; ++k) {
        const T lp = zp[k * S] - lse;
        h -= std::exp(lp) * lp;
      }
      const T diff = R[i] - v[i];
      const T lpa = zp[a[i] * S] - lse;
      for (index_t k = 0; k < A; ++k) {
        const T lp = zp[k * S] - lse, p = std::exp(lp);
        const T onehot = k == a[i] ? T(1) : T(0);
        dzp[k * S] = sc * (-cp * adv[i] * (onehot - p) + beta * p * (lp + h));
      }
      dv[i] = -T(2) * cv * sc * diff;
      acc[0] += double(diff) * double(diff);
      acc[1] += double(lpa) * double(adv[i]);
      acc[2] += double(h);
    }
  });
  return {sums[0], sums[1], sums[2]};
}

// ============================================================================================
// The learner
// ============================================================================================

enum class StepReduction {
  mean,  ///< the loss is averaged over steps too (N = n·B·H·W)
  sum,   ///< summed over steps, averaged over batch and pixels (N = B·H·W; PixelRL's code)
};

enum class PixelPolicy { greedy, sample };

struct PixelA3CConfig {
  double gamma = 0.95;          ///< paper: 0.95
  double entropy_beta = 0.01;   ///< β
  double value_weight = 0.5;    ///< c_v
  double policy_weight = 1.0;   ///< c_p
  StepReduction step_reduction = StepReduction::mean;
  int rollout_steps = 0;        ///< steps per update; 0 = to the end of the episode
  bool bootstrap_at_episode_end = false;  ///< false: the episode end is terminal, R^(n) = 0
  bool learn_reward_map = true;           ///< false: w stays the identity (plain discounted returns)
  double max_grad_norm = 0;     ///< global gradient-norm clip in update(); 0 = none
  std::uint64_t seed = 0;       ///< Philox key of the action draws
  std::uint64_t stream = 0;     ///< Philox stream (one per A3C worker)
};

/// What one rollout's loss was.
struct PixelA3CStats {
  int steps = 0;
  double loss = 0;          ///< value_loss + policy_loss + entropy_loss
  double value_loss = 0;    ///< c_v/N Σ (R − V)²
  double policy_loss = 0;   ///< −c_p/N Σ log π(a|s)·A
  double entropy_loss = 0;  ///< −β/N Σ H
  double mean_entropy = 0;  ///< mean per-pixel entropy (nats) over the rollout
  double mean_reward = 0;   ///< mean per-pixel reward per step
  double grad_norm = 0;     ///< global gradient norm before clipping (update() only)
};

template <class Net>
  requires PixelActorCritic<Net>
class PixelA3C {
 public:
  using value_type = typename Net::value_type;
  using T = value_type;

  explicit PixelA3C(Net& net, PixelA3CConfig cfg = {}) : config(cfg), net_(net) {
    RLMED_CHECK(cfg.gamma >= 0 && cfg.gamma <= 1, "PixelA3C: gamma must be in [0, 1], found ", cfg.gamma);
    RLMED_CHECK(cfg.entropy_beta >= 0 && cfg.value_weight >= 0 && cfg.policy_weight >= 0,
                "PixelA3C: loss weights must be >= 0, found value ", cfg.value_weight, ", policy ", cfg.policy_weight,
                ", entropy ", cfg.entropy_beta);
    RLMED_CHECK(cfg.rollout_steps >= 0, "PixelA3C: rollout_steps must be >= 0, found ", cfg.rollout_steps);
    RLMED_CHECK(cfg.max_grad_norm >= 0, "PixelA3C: max_grad_norm must be >= 0, found ", cfg.max_grad_norm);
    sample_step_ = Tensor<std::int64_t, 1>(Shape<1>{1});
  }

  /// The network's parameters under their own names, then "reward_map.weight".
  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    net_.parameters(visit, prefix);
    reward_map.parameters(visit, nn::join_name(prefix, "reward_map"));
  }
  /// The network's buffers, then "sampler_step" (the Philox step counter: resuming continues the draws).
  template <class V>
  void buffers(V&& visit, std::string_view prefix = {}) {
    if constexpr (requires { net_.buffers(visit, prefix); }) net_.buffers(visit, prefix);
    visit(nn::join_name(prefix, "sampler_step"), sample_step_);
  }

  [[nodiscard]] Net& net() noexcept { return net_; }
  /// Environment steps sampled so far (the `step` of the next PixelSampleKey).
  [[nodiscard]] std::uint64_t sample_step() const noexcept { return static_cast<std::uint64_t>(sample_step_(0)); }
  void set_sample_step(std::uint64_t s) {
    RLMED_CHECK(s < (std::uint64_t(1) << 32), "PixelA3C: sample step ", s, " exceeds 2^32 - 1");
    sample_step_(0) = static_cast<std::int64_t>(s);
  }

  /// Runs up to rollout_steps (default: the rest of the episode) steps of `env` with sampled
  /// actions, keeping every step's observation, cache, action and reward, and the bootstrap
  /// value V(s^(n)) (zeros when the episode ended and the end is terminal).
  void collect(env::PixelMaskEnv<T>& env) {
    RLMED_CHECK(env.started() && !env.done(), "PixelA3C::collect: the environment episode ",
                env.started() ? "has ended" : "was never started", "; call env.reset first");
    const int n = config.rollout_steps > 0 ? std::min(config.rollout_steps, env.steps_left()) : env.steps_left();
    const Shape<4> obs_shape = env.observation().shape();
    const index_t B = obs_shape[0], C = obs_shape[1], H = obs_shape[2], W = obs_shape[3];
    observations_.resize(Shape<5>{n, B, C, H, W});
    actions_.resize(Shape<4>{n, B, H, W});
    rewards_.resize(Shape<5>{n, B, 1, H, W});
    bootstrap_.resize(Shape<4>{B, 1, H, W});
    if (static_cast<int>(caches_.size()) < n) caches_.resize(static_cast<std::size_t>(n));
    maps_.resize(static_cast<std::size_t>(n));
    n_ = 0;  // invalid until the rollout completes
    nn::Context ctx;
    ctx.training = true;
    ctx.input_grad = false;
    for (int t = 0; t < n; ++t) {
      copy(observations_[t], env.observation());
      const auto out = net_.forward(ctx, TensorView<const T, 4>(observations_[t]), caches_[static_cast<std::size_t>(t)]);
      const PixelPolicyValue<T> pv{out.policy_logits, out.value};
      check_outputs(pv, B, H, W);
      maps_[static_cast<std::size_t>(t)] = pv;
      sample_pixel_actions_into(actions_[t], pv.policy_logits, PixelSampleKey{config.seed, config.stream, sample_step()});
      set_sample_step(sample_step() + 1);
      env.step_into(TensorView<const std::int32_t, 3>(actions_[t]), rewards_[t]);
    }
    if (!env.done() || config.bootstrap_at_episode_end) {
      nn::Context eval = ctx;
      eval.training = false;
      const auto out = net_.forward(eval, env.observation(), boot_cache_);
      check_outputs(PixelPolicyValue<T>{out.policy_logits, out.value}, B, H, W);
      copy(bootstrap_.view(), TensorView<const T, 4>(out.value));
    } else {
      fill(bootstrap_.view(), T(0));
    }
    n_ = n;
    n_consumed_ = false;
  }

  /// Loss of the collected rollout and backward through every step: ADDS the gradients into the
  /// network's parameters and into reward_map.weight.grad (when learn_reward_map). Call once per
  /// collect(), with the parameters collect() ran with.
  PixelA3CStats accumulate_gradients() {
    RLMED_CHECK(n_ >= 1, "PixelA3C::accumulate_gradients: no rollout; call collect first");
    RLMED_CHECK(!n_consumed_, "PixelA3C::accumulate_gradients: this rollout's gradients were already accumulated; "
                "call collect again");
    const Shape<5> s = rewards_.shape();
    const index_t n = n_, B = s[1], H = s[3], W = s[4], pixels = B * H * W;
    const double N = double(config.step_reduction == StepReduction::mean ? n : 1) * double(pixels);
    const double scale = 1.0 / N;
    returns_.resize(s);
    advantages_.resize(s);
    adjoint_.resize(s);
    reward_map_returns_into(returns_.view(), TensorView<const T, 5>(rewards_), TensorView<const T, 4>(bootstrap_),
                            TensorView<const T, 2>(reward_map.weight.value), config.gamma);
    const T direct = static_cast<T>(2.0 * config.value_weight * scale);
    double reward_sum = 0;
    for (index_t t = 0; t < n; ++t) {
      const T* R = returns_[t].data();
      const T* V = maps_[static_cast<std::size_t>(t)].value.data();
      T* adv = advantages_[t].data();
      T* adj = adjoint_[t].data();
      const T* r = rewards_[t].data();
      for (index_t i = 0; i < pixels; ++i) {
        adv[i] = R[i] - V[i];
        adj[i] = direct * adv[i];
        reward_sum += double(r[i]);
      }
    }
    if (config.learn_reward_map) {
      reward_map_returns_backward(adjoint_.view(), TensorView<const T, 5>(returns_), TensorView<const T, 4>(bootstrap_),
                                  TensorView<const T, 2>(reward_map.weight.value), config.gamma,
                                  reward_map.weight.grad.view(), partial_);
    }
    const PixelA3CLossWeights weights{config.value_weight, config.policy_weight, config.entropy_beta};
    PixelLossSums sums;
    nn::Context ctx;
    ctx.training = true;
    ctx.input_grad = false;
    for (index_t t = n; t-- > 0;) {
      const auto& pv = maps_[static_cast<std::size_t>(t)];
      dlogits_.resize(pv.policy_logits.shape());
      dvalue_.resize(pv.value.shape());
      sums += pixel_a3c_step_into(dlogits_.view(), dvalue_.view(), pv.policy_logits, pv.value,
                                  TensorView<const std::int32_t, 3>(actions_[t]), TensorView<const T, 4>(returns_[t]),
                                  TensorView<const T, 4>(advantages_[t]), weights, scale, partial_);
      net_.backward(ctx, caches_[static_cast<std::size_t>(t)], TensorView<const T, 4>(dlogits_),
                    TensorView<const T, 4>(dvalue_));
    }
    PixelA3CStats st;
    st.steps = static_cast<int>(n);
    st.value_loss = config.value_weight * sums.squared_error * scale;
    st.policy_loss = -config.policy_weight * sums.log_prob_adv * scale;
    st.entropy_loss = -config.entropy_beta * sums.entropy * scale;
    st.loss = st.value_loss + st.policy_loss + st.entropy_loss;
    st.mean_entropy = sums.entropy / (double(n) * double(pixels));
    st.mean_reward = reward_sum / (double(n) * double(pixels));
    RLMED_CHECK(std::isfinite(st.loss), "PixelA3C: the loss is ", st.loss, " (value ", st.value_loss, ", policy ",
                st.policy_loss, ", entropy ", st.entropy_loss, ")");
    n_consumed_ = true;
    return st;
  }

  /// One synchronous update (A2C): zero gradients, collect, accumulate_gradients, optional
  /// gradient clipping, optimizer.step(). The optimiser must be attached to this learner (its
  /// parameters include reward_map.weight), e.g. nn::optim::Adam<T> opt(learner).
  template <class Optimizer>
  PixelA3CStats update(env::PixelMaskEnv<T>& env, Optimizer& optimizer) {
    optimizer.zero_grad();
    collect(env);
    PixelA3CStats st = accumulate_gradients();
    st.grad_norm = nn::optim::grad_norm(optimizer.params());
    RLMED_CHECK(std::isfinite(st.grad_norm), "PixelA3C: gradient norm is ", st.grad_norm);
    if (config.max_grad_norm > 0) nn::optim::clip_grad_norm(optimizer.params(), config.max_grad_norm);
    optimizer.step();
    return st;
  }

  /// Runs `env` from its current state to the end of the episode without learning, with greedy
  /// (argmax) or sampled actions; dice_after_step[k] receives the mean Dice after the k-th step
  /// taken here (pass an empty span to skip, or one of size env.steps_left()).
  void run_episode(env::PixelMaskEnv<T>& env, PixelPolicy policy, std::span<double> dice_after_step = {}) {
    RLMED_CHECK(env.started() && !env.done(), "PixelA3C::run_episode: start an episode with env.reset first");
    RLMED_CHECK(dice_after_step.empty() || static_cast<int>(dice_after_step.size()) == env.steps_left(),
                "PixelA3C::run_episode: dice_after_step has ", dice_after_step.size(), " entries, expected ",
                env.steps_left(), " (the steps left) or 0");
    nn::Context ctx;
    ctx.training = false;
    ctx.input_grad = false;
    const Shape<4> s = env.observation().shape();
    eval_actions_.resize(Shape<3>{s[0], s[2], s[3]});
    for (std::size_t k = 0; !env.done(); ++k) {
      const auto out = net_.forward(ctx, env.observation(), boot_cache_);
      check_outputs(PixelPolicyValue<T>{out.policy_logits, out.value}, s[0], s[2], s[3]);
      if (policy == PixelPolicy::greedy) {
        greedy_pixel_actions_into(eval_actions_.view(), TensorView<const T, 4>(out.policy_logits));
      } else {
        sample_pixel_actions_into(eval_actions_.view(), TensorView<const T, 4>(out.policy_logits),
                                  PixelSampleKey{config.seed, config.stream, sample_step()});
        set_sample_step(sample_step() + 1);
      }
      env.step(TensorView<const std::int32_t, 3>(eval_actions_));
      if (!dice_after_step.empty()) dice_after_step[k] = env.mean_dice();
    }
  }

  // ---- the last rollout (valid after collect; returns/advantages after accumulate_gradients) ----
  [[nodiscard]] int rollout_length() const noexcept { return static_cast<int>(n_); }
  [[nodiscard]] TensorView<const T, 4> observation(int t) const { return observations_.sub(t); }
  [[nodiscard]] TensorView<const std::int32_t, 3> actions(int t) const { return actions_.sub(t); }
  [[nodiscard]] TensorView<const T, 4> rewards(int t) const { return rewards_.sub(t); }
  [[nodiscard]] TensorView<const T, 4> returns(int t) const { return returns_.sub(t); }
  [[nodiscard]] TensorView<const T, 4> advantages(int t) const { return advantages_.sub(t); }
  [[nodiscard]] TensorView<const T, 4> bootstrap() const { return bootstrap_.view(); }

  PixelA3CConfig config;
  RewardMapFilter<T> reward_map;

 private:
  static void check_outputs(const PixelPolicyValue<T>& pv, index_t B, index_t H, index_t W) {
    RLMED_CHECK(pv.policy_logits.extent(0) == B && pv.policy_logits.extent(1) >= 1 && pv.policy_logits.extent(2) == H &&
                    pv.policy_logits.extent(3) == W,
                "PixelA3C: policy logits have shape ", pv.policy_logits.shape(), ", expected [", B, ", A, ", H, ", ",
                W, "]");
    RLMED_CHECK(pv.value.shape() == Shape<4>({B, 1, H, W}), "PixelA3C: value map has shape ", pv.value.shape(),
                ", expected ", Shape<4>{B, 1, H, W});
  }

  Net& net_;
  std::vector<typename Net::Cache> caches_;
  typename Net::Cache boot_cache_;
  std::vector<PixelPolicyValue<T>> maps_;
  Tensor<T, 5> observations_;          // [n, B, C, H, W]
  Tensor<std::int32_t, 4> actions_;    // [n, B, H, W]
  Tensor<T, 5> rewards_, returns_, advantages_, adjoint_;  // [n, B, 1, H, W]
  Tensor<T, 4> bootstrap_;             // [B, 1, H, W]
  Tensor<T, 4> dlogits_, dvalue_;      // one step's gradients
  Tensor<std::int32_t, 3> eval_actions_;
  Tensor<std::int64_t, 1> sample_step_;
  std::vector<double> partial_;
  index_t n_ = 0;
  bool n_consumed_ = false;
};

// ============================================================================================
// A3C: workers with their own network copy and shared parameters
// ============================================================================================

/// Copies the shared parameters into a worker's (same architecture, same visiting order).
template <class T>
void a3c_pull_parameters(const nn::optim::ParamList<T>& local, const nn::optim::ParamList<T>& shared) {
  RLMED_CHECK(local.size() == shared.size(), "a3c_pull_parameters: ", local.size(), " local vs ", shared.size(),
              " shared parameter tensors");
  for (std::size_t i = 0; i < local.size(); ++i) {
    const auto& l = local.slots()[i];
    const auto& s = shared.slots()[i];
    RLMED_CHECK(l.name == s.name && l.value.size() == s.value.size(), "a3c_pull_parameters: parameter ", i, " is '",
                l.name, "' (", l.value.size(), ") locally but '", s.name, "' (", s.value.size(), ") shared");
    copy(l.value, TensorView<const T, 1>(s.value));
  }
}

/// Adds a worker's gradients into the shared parameters' gradients.
template <class T>
void a3c_push_gradients(const nn::optim::ParamList<T>& shared, const nn::optim::ParamList<T>& local) {
  RLMED_CHECK(local.size() == shared.size(), "a3c_push_gradients: ", local.size(), " local vs ", shared.size(),
              " shared parameter tensors");
  for (std::size_t i = 0; i < local.size(); ++i) {
    const auto& l = local.slots()[i];
    const auto& s = shared.slots()[i];
    RLMED_CHECK(l.name == s.name && l.grad.size() == s.grad.size(), "a3c_push_gradients: parameter ", i, " is '",
                l.name, "' (", l.grad.size(), ") locally but '", s.name, "' (", s.grad.size(), ") shared");
    for (index_t k = 0; k < l.grad.size(); ++k) s.grad.data()[k] += l.grad.data()[k];
  }
}

}  // namespace rlmed::rl
