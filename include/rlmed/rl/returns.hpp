// rlmed/rl/returns.hpp — return and advantage estimators over rollouts: discounted returns,
// n-step returns, GAE(γ, λ), advantage normalisation.
//
// Design decisions:
//  * Rollouts are time-major [T, N] (T steps of N environments), the layout a VectorEnv fills
//    step by step. Flags are uint8 0/1 [T, N], as VectorStep reports them.
//  * Termination and truncation differ (Pardo et al., "Time Limits in RL", ICML 2018):
//      - terminated[t]: the episode reached a terminal state, the value after step t is 0;
//      - truncated[t]: the episode was cut, the value after step t is V(final observation),
//        NOT the value of the next row (which belongs to the new episode after auto-reset).
//    Both stop the recursion from flowing across the episode boundary. The caller therefore
//    passes next_values[t, i] = V(s_{t+1}) of the SAME episode: values[t+1, i] inside an
//    episode, V(final_observation) at a truncation, V(last observation) at t = T-1
//    (build_next_values_into assembles it). At a termination it is ignored.
//  * Recursions run backwards in double and are written once in T; environments are
//    independent columns processed by parallel_for (deterministic for any thread count).
//  * Advantage normalisation uses the unbiased standard deviation, like torch.Tensor.std used by
//    PPO implementations: (a − mean) / (std + eps).
#pragma once

#include <cmath>
#include <cstdint>
#include <span>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed::rl {

namespace detail {
template <class U>
void check_rollout_shape(const Shape<2>& expected, TensorView<U, 2> x, const char* name, const char* fn) {
  RLMED_CHECK(x.shape() == expected, fn, ": ", name, " has shape ", x.shape(), ", expected [T, N] = ", expected);
}
inline void check_gamma(double gamma, const char* fn) {
  RLMED_CHECK(gamma >= 0 && gamma <= 1, fn, ": gamma must be in [0, 1], found ", gamma);
}
inline void check_flags(TensorView<const std::uint8_t, 2> terminated, TensorView<const std::uint8_t, 2> truncated,
                        const char* fn) {
  for (index_t i = 0; i < terminated.size(); ++i)
    RLMED_CHECK(terminated.data()[i] <= 1 && truncated.data()[i] <= 1, fn, ": episode flags must be 0 or 1, found ",
                int(terminated.data()[i]), " and ", int(truncated.data()[i]), " at flat index ", i);
}
template <class T>
void check_finite_values(TensorView<const T, 2> x, const char* name, const char* fn) {
  for (index_t i = 0; i < x.size(); ++i)
    RLMED_CHECK(std::isfinite(x.data()[i]), fn, ": ", name, " element ", i, " is ", x.data()[i]);
}
}  // namespace detail

/// Discounted returns of ONE complete episode: G_t = r_t + γ G_{t+1}, G_T = 0.
template <class T>
void discounted_returns_into(std::span<const T> rewards, double gamma, std::span<T> out) {
  detail::check_gamma(gamma, "discounted_returns");
  RLMED_CHECK(out.size() == rewards.size(), "discounted_returns: ", out.size(), " outputs for ", rewards.size(),
              " rewards");
  double g = 0;
  for (std::size_t t = rewards.size(); t-- > 0;) {
    RLMED_CHECK(std::isfinite(rewards[t]), "discounted_returns: reward ", t, " is ", rewards[t]);
    g = static_cast<double>(rewards[t]) + gamma * g;
    out[t] = static_cast<T>(g);
  }
}

/// Discounted returns over a rollout [T, N] with episode boundaries, bootstrapped where the data
/// stops short of the episode's end: G_t = r_t + γ·(terminated ? 0 : (truncated or t = T-1 ?
/// next_values[t] : G_{t+1})).
template <class T>
void discounted_returns_into(TensorView<const T, 2> rewards, TensorView<const T, 2> next_values,
                             TensorView<const std::uint8_t, 2> terminated, TensorView<const std::uint8_t, 2> truncated,
                             double gamma, TensorView<T, 2> out) {
  constexpr const char* fn = "discounted_returns";
  const Shape<2> s = rewards.shape();
  detail::check_rollout_shape(s, next_values, "next_values", fn);
  detail::check_rollout_shape(s, terminated, "terminated", fn);
  detail::check_rollout_shape(s, truncated, "truncated", fn);
  detail::check_rollout_shape(s, out, "out", fn);
  detail::check_gamma(gamma, fn);
  detail::check_flags(terminated, truncated, fn);
  detail::check_finite_values(rewards, "rewards", fn);
  detail::check_finite_values(next_values, "next_values", fn);
  const index_t steps = s[0], envs = s[1];
  parallel_for(
      0, envs,
      [&](index_t i) {
        double g = 0;
        for (index_t t = steps - 1; t >= 0; --t) {
          double next;
          if (terminated(t, i)) next = 0;
          else if (truncated(t, i) || t == steps - 1) next = static_cast<double>(next_values(t, i));
          else next = g;
          g = static_cast<double>(rewards(t, i)) + gamma * next;
          out(t, i) = static_cast<T>(g);
        }
      },
      64);
}

/// n-step returns over a rollout [T, N]: G_t = Σ_{k<m} γ^k r_{t+k} + γ^m·V, where the window of
/// m ≤ n steps stops at the episode's end or the rollout's end, and V = next_values[t+m-1]
/// (0 when step t+m-1 terminated).
template <class T>
void nstep_returns_into(TensorView<const T, 2> rewards, TensorView<const T, 2> next_values,
                        TensorView<const std::uint8_t, 2> terminated, TensorView<const std::uint8_t, 2> truncated,
                        double gamma, int n, TensorView<T, 2> out) {
  constexpr const char* fn = "nstep_returns";
  RLMED_CHECK(n >= 1, fn, ": n must be >= 1, found ", n);
  const Shape<2> s = rewards.shape();
  detail::check_rollout_shape(s, next_values, "next_values", fn);
  detail::check_rollout_shape(s, terminated, "terminated", fn);
  detail::check_rollout_shape(s, truncated, "truncated", fn);
  detail::check_rollout_shape(s, out, "out", fn);
  detail::check_gamma(gamma, fn);
  detail::check_flags(terminated, truncated, fn);
  detail::check_finite_values(rewards, "rewards", fn);
  detail::check_finite_values(next_values, "next_values", fn);
  const index_t steps = s[0], envs = s[1];
  parallel_for(
      0, envs,
      [&](index_t i) {
        for (index_t t = 0; t < steps; ++t) {
          double g = 0, discount = 1;
          for (index_t k = 0; k < n; ++k) {
            const index_t u = t + k;
            g += discount * static_cast<double>(rewards(u, i));
            discount *= gamma;
            if (terminated(u, i)) break;
            if (truncated(u, i) || k == n - 1 || u == steps - 1) {
              g += discount * static_cast<double>(next_values(u, i));
              break;
            }
          }
          out(t, i) = static_cast<T>(g);
        }
      },
      64);
}

/// Generalised advantage estimation (Schulman et al. 2016) over a rollout [T, N]:
///   δ_t = r_t + γ (1 − terminated_t) next_values_t − values_t
///   A_t = δ_t + γλ (1 − terminated_t)(1 − truncated_t) A_{t+1},   A_T = 0
///   returns_t = A_t + values_t  (the value-function targets)
template <class T>
void gae_into(TensorView<const T, 2> rewards, TensorView<const T, 2> values, TensorView<const T, 2> next_values,
              TensorView<const std::uint8_t, 2> terminated, TensorView<const std::uint8_t, 2> truncated, double gamma,
              double lambda, TensorView<T, 2> advantages, TensorView<T, 2> returns) {
  constexpr const char* fn = "gae";
  const Shape<2> s = rewards.shape();
  detail::check_rollout_shape(s, values, "values", fn);
  detail::check_rollout_shape(s, next_values, "next_values", fn);
  detail::check_rollout_shape(s, terminated, "terminated", fn);
  detail::check_rollout_shape(s, truncated, "truncated", fn);
  detail::check_rollout_shape(s, advantages, "advantages", fn);
  detail::check_rollout_shape(s, returns, "returns", fn);
  detail::check_gamma(gamma, fn);
  RLMED_CHECK(lambda >= 0 && lambda <= 1, fn, ": lambda must be in [0, 1], found ", lambda);
  detail::check_flags(terminated, truncated, fn);
  detail::check_finite_values(rewards, "rewards", fn);
  detail::check_finite_values(values, "values", fn);
  detail::check_finite_values(next_values, "next_values", fn);
  const index_t steps = s[0], envs = s[1];
  parallel_for(
      0, envs,
      [&](index_t i) {
        double a = 0;
        for (index_t t = steps - 1; t >= 0; --t) {
          const double alive = terminated(t, i) ? 0.0 : 1.0;
          const double continues = (terminated(t, i) || truncated(t, i)) ? 0.0 : 1.0;
          const double delta = static_cast<double>(rewards(t, i)) + gamma * alive * static_cast<double>(next_values(t, i)) -
                               static_cast<double>(values(t, i));
          a = delta + gamma * lambda * continues * a;
          advantages(t, i) = static_cast<T>(a);
          returns(t, i) = static_cast<T>(a + static_cast<double>(values(t, i)));
        }
      },
      64);
}

/// next_values for the estimators above: next[t] = truncation_values[t] where truncated[t],
/// else values[t+1], and last_values at t = T-1 (values of the observations after the rollout).
/// truncation_values [T, N] holds V(final_observation); only its truncated entries are read.
template <class T>
void build_next_values_into(TensorView<const T, 2> values, TensorView<const T, 1> last_values,
                            TensorView<const std::uint8_t, 2> truncated, TensorView<const T, 2> truncation_values,
                            TensorView<T, 2> next_values) {
  constexpr const char* fn = "build_next_values";
  const Shape<2> s = values.shape();
  detail::check_rollout_shape(s, truncated, "truncated", fn);
  detail::check_rollout_shape(s, truncation_values, "truncation_values", fn);
  detail::check_rollout_shape(s, next_values, "next_values", fn);
  RLMED_CHECK(last_values.extent(0) == s[1], fn, ": last_values has ", last_values.extent(0), " entries for ", s[1],
              " environments");
  for (index_t t = 0; t < s[0]; ++t)
    for (index_t i = 0; i < s[1]; ++i)
      next_values(t, i) = truncated(t, i) ? truncation_values(t, i) : (t + 1 < s[0] ? values(t + 1, i) : last_values(i));
}

/// In place: (a − mean) / (std + eps) with the unbiased std; needs at least 2 elements.
template <class T>
void normalize_advantages(std::span<T> a, double eps = 1e-8) {
  RLMED_CHECK(a.size() >= 2, "normalize_advantages needs at least 2 advantages, found ", a.size());
  RLMED_CHECK(eps >= 0, "normalize_advantages: eps must be >= 0, found ", eps);
  double sum = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    RLMED_CHECK(std::isfinite(a[i]), "normalize_advantages: advantage ", i, " is ", a[i]);
    sum += static_cast<double>(a[i]);
  }
  const double mean = sum / static_cast<double>(a.size());
  double sq = 0;
  for (T v : a) sq += (static_cast<double>(v) - mean) * (static_cast<double>(v) - mean);
  const double stddev = std::sqrt(sq / static_cast<double>(a.size() - 1));
  for (T& v : a) v = static_cast<T>((static_cast<double>(v) - mean) / (stddev + eps));
}
template <class T, std::size_t R>
void normalize_advantages(TensorView<T, R> a, double eps = 1e-8) {
  normalize_advantages(std::span<T>(a.data(), static_cast<std::size_t>(a.size())), eps);
}

}  // namespace rlmed::rl
