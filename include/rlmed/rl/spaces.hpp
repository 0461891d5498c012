// rlmed/rl/spaces.hpp — action and observation spaces: Discrete<N>, Box<Dim>, MultiDiscrete.
//
// Design decisions:
//  * What is structure is compile-time: the number of discrete actions (Discrete<N>) and the
//    dimension of a box (Box<Dim>) are template arguments, so a Q-network's output width can be
//    checked against the action space with static_assert. Box bounds and the per-agent counts of
//    MultiDiscrete are data (run-time), as they come from configs.
//  * `contains` is a noexcept predicate; `validate` is the loud version that throws rlmed::Error
//    saying which component is wrong, what was expected and what was found. NaN is never
//    "contained", even in an unbounded box.
//  * Sampling follows Gymnasium's rules so a random policy behaves like Gymnasium's: uniform on
//    bounded components, standard normal on unbounded ones, shifted exponential on half-bounded
//    ones. Arithmetic is in double, so a float box spanning ±FLT_MAX does not overflow.
//  * Every sample draws from a PhiloxStream the caller passes in (no hidden generator state).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string_view>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed::rl {

/// N discrete actions {0, ..., N-1}.
template <int N>
struct Discrete {
  static_assert(N >= 1, "Discrete<N> needs at least one action");
  using value_type = int;
  static constexpr int n = N;

  [[nodiscard]] static constexpr bool contains(int a) noexcept { return a >= 0 && a < N; }
  /// Uniform over {0, ..., N-1}.
  [[nodiscard]] static int sample(PhiloxStream& rng) noexcept {
    return static_cast<int>(rng.uniform_int(static_cast<std::uint32_t>(N)));
  }
  /// Throws rlmed::Error when `a` is not in {0, ..., N-1}.
  static void validate(int a, std::string_view what = "action") {
    RLMED_CHECK(contains(a), what, " ", a, " is outside Discrete<", N, ">: expected an integer in [0, ", N, ")");
  }
  /// Validates a batch of discrete actions (one per environment).
  static void validate(std::span<const int> batch, std::string_view what = "action") {
    for (std::size_t i = 0; i < batch.size(); ++i)
      RLMED_CHECK(contains(batch[i]), what, " ", batch[i], " at batch index ", i, " is outside Discrete<", N,
                  ">: expected an integer in [0, ", N, ")");
  }
};

/// Dim-dimensional box [low, high] (componentwise; bounds may be infinite).
template <std::size_t Dim, class T = float>
struct Box {
  static_assert(Dim >= 1, "Box<Dim> needs at least one component");
  static_assert(std::is_floating_point_v<T>, "Box components are float or double");
  using value_type = std::array<T, Dim>;
  using scalar_type = T;
  static constexpr std::size_t dim = Dim;

  value_type low{};
  value_type high{};

  Box() {
    low.fill(-std::numeric_limits<T>::infinity());
    high.fill(std::numeric_limits<T>::infinity());
  }
  Box(const value_type& lo, const value_type& hi) : low(lo), high(hi) {
    for (std::size_t i = 0; i < Dim; ++i)
      RLMED_CHECK(!std::isnan(lo[i]) && !std::isnan(hi[i]) && lo[i] <= hi[i], "Box<", Dim, ">: component ", i,
                  " needs low <= high without NaN, found [", lo[i], ", ", hi[i], "]");
  }
  /// The same bounds on every component.
  static Box uniform(T lo, T hi) {
    value_type l, h;
    l.fill(lo);
    h.fill(hi);
    return Box(l, h);
  }

  [[nodiscard]] bool bounded_below(std::size_t i) const noexcept { return std::isfinite(low[i]); }
  [[nodiscard]] bool bounded_above(std::size_t i) const noexcept { return std::isfinite(high[i]); }

  /// True when x has Dim components, none NaN, each within [low, high].
  [[nodiscard]] bool contains(std::span<const T> x) const noexcept {
    if (x.size() != Dim) return false;
    for (std::size_t i = 0; i < Dim; ++i)
      if (std::isnan(x[i]) || x[i] < low[i] || x[i] > high[i]) return false;
    return true;
  }
  [[nodiscard]] bool contains(const value_type& x) const noexcept { return contains(std::span<const T>(x)); }

  /// Throws rlmed::Error on a size mismatch, a NaN component, or a component outside its bounds.
  void validate(std::span<const T> x, std::string_view what = "action") const {
    validate_finite(x, what);
    for (std::size_t i = 0; i < Dim; ++i)
      RLMED_CHECK(x[i] >= low[i] && x[i] <= high[i], what, " component ", i, " is ", x[i], ", outside the box [",
                  low[i], ", ", high[i], "]");
  }
  void validate(const value_type& x, std::string_view what = "action") const {
    validate(std::span<const T>(x), what);
  }
  /// Shape and NaN check only (observations may leave their nominal box, e.g. CartPole's last state).
  void validate_finite(std::span<const T> x, std::string_view what = "observation") const {
    RLMED_CHECK(x.size() == Dim, what, " has ", x.size(), " components, expected ", Dim);
    for (std::size_t i = 0; i < Dim; ++i)
      RLMED_CHECK(!std::isnan(x[i]), what, " component ", i, " is NaN");
  }
  /// Validates a batch [B, Dim] row by row.
  void validate(TensorView<const T, 2> batch, std::string_view what = "action") const {
    RLMED_CHECK(batch.extent(1) == static_cast<index_t>(Dim), what, " batch has shape ", batch.shape(),
                ", expected [B, ", Dim, "]");
    for (index_t b = 0; b < batch.extent(0); ++b)
      validate(std::span<const T>(batch.data() + b * static_cast<index_t>(Dim), Dim), what);
  }

  /// Componentwise clamp into the box (NaN is an error, not clamped).
  [[nodiscard]] value_type clip(const value_type& x) const {
    validate_finite(std::span<const T>(x), "value to clip");
    value_type out;
    for (std::size_t i = 0; i < Dim; ++i) out[i] = std::min(std::max(x[i], low[i]), high[i]);
    return out;
  }

  /// One random point: uniform on bounded components, N(0,1) on unbounded, low + Exp(1) / high - Exp(1)
  /// on half-bounded ones (Gymnasium's Box.sample rules). Writes Dim values.
  void sample_into(PhiloxStream& rng, std::span<T> out) const {
    RLMED_CHECK(out.size() == Dim, "Box<", Dim, ">::sample_into: output has ", out.size(), " components");
    for (std::size_t i = 0; i < Dim; ++i) {
      const double lo = low[i], hi = high[i];
      double v;
      if (std::isfinite(lo) && std::isfinite(hi)) {
        v = lo + (hi - lo) * rng.uniform_double();
      } else if (std::isfinite(lo)) {
        v = lo - std::log1p(-rng.uniform_double());  // 1 - u in (0, 1]
      } else if (std::isfinite(hi)) {
        v = hi + std::log1p(-rng.uniform_double());
      } else {
        v = rng.normal_double();
      }
      // Rounding to T may step past a bound by one ulp; clamp back inside.
      out[i] = std::min(std::max(static_cast<T>(v), low[i]), high[i]);
    }
  }
  [[nodiscard]] value_type sample(PhiloxStream& rng) const {
    value_type out;
    sample_into(rng, std::span<T>(out));
    return out;
  }
};

/// One discrete choice per agent: component i takes values {0, ..., counts[i]-1}.
class MultiDiscrete {
 public:
  MultiDiscrete() = default;
  explicit MultiDiscrete(std::vector<int> counts) : counts_(std::move(counts)) {
    RLMED_CHECK(!counts_.empty(), "MultiDiscrete needs at least one component");
    for (std::size_t i = 0; i < counts_.size(); ++i)
      RLMED_CHECK(counts_[i] >= 1, "MultiDiscrete component ", i, " needs at least one choice, found ", counts_[i]);
  }
  /// The same number of choices for each of `agents` components.
  static MultiDiscrete repeated(std::size_t agents, int choices) {
    return MultiDiscrete(std::vector<int>(agents, choices));
  }

  [[nodiscard]] std::size_t size() const noexcept { return counts_.size(); }
  [[nodiscard]] const std::vector<int>& counts() const noexcept { return counts_; }

  [[nodiscard]] bool contains(std::span<const int> a) const noexcept {
    if (a.size() != counts_.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
      if (a[i] < 0 || a[i] >= counts_[i]) return false;
    return true;
  }
  void validate(std::span<const int> a, std::string_view what = "action") const {
    RLMED_CHECK(a.size() == counts_.size(), what, " has ", a.size(), " components, expected ", counts_.size());
    for (std::size_t i = 0; i < a.size(); ++i)
      RLMED_CHECK(a[i] >= 0 && a[i] < counts_[i], what, " component ", i, " is ", a[i],
                  ", expected an integer in [0, ", counts_[i], ")");
  }
  void sample_into(PhiloxStream& rng, std::span<int> out) const {
    RLMED_CHECK(out.size() == counts_.size(), "MultiDiscrete::sample_into: output has ", out.size(),
                " components, expected ", counts_.size());
    for (std::size_t i = 0; i < out.size(); ++i)
      out[i] = static_cast<int>(rng.uniform_int(static_cast<std::uint32_t>(counts_[i])));
  }
  [[nodiscard]] std::vector<int> sample(PhiloxStream& rng) const {
    std::vector<int> out(counts_.size());
    sample_into(rng, out);
    return out;
  }

 private:
  std::vector<int> counts_;
};

/// Throws rlmed::Error when any element of a floating-point observation is NaN.
template <class T>
void validate_no_nan(std::span<const T> x, std::string_view what = "observation") {
  static_assert(std::is_floating_point_v<T>);
  for (std::size_t i = 0; i < x.size(); ++i) RLMED_CHECK(!std::isnan(x[i]), what, " element ", i, " is NaN");
}

}  // namespace rlmed::rl
