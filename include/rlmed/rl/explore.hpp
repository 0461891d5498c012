// rlmed/rl/explore.hpp — exploration: ε schedules and ε-greedy, Boltzmann (softmax) selection,
// Gaussian and Ornstein–Uhlenbeck action noise.
//
// Design decisions:
//  * Schedules are pure functions of a step index (like nn/optim/schedule.hpp), so the only state
//    to checkpoint is an integer; EpsilonGreedy holds that integer and saves/loads it.
//    The step advances only when the caller says so (advance(k), k = environments stepped), so
//    greedy evaluation runs do not move the schedule.
//  * Every random choice draws from a PhiloxStream passed in; nothing hides a generator.
//  * Greedy ties go to the lowest index (like torch.argmax / np.argmax); NaN values are an
//    rlmed::Error, because a NaN Q-value would otherwise be silently never (or always) chosen.
//  * Boltzmann sampling subtracts the maximum before exponentiating (no overflow at small
//    temperatures) and walks the unnormalised weights twice instead of allocating a buffer.
//  * OU noise follows the usual Euler–Maruyama discretisation (as DDPG and SB3 use):
//    x ← x + θ(μ − x)dt + σ√dt·N(0, 1); its state is kept, reset and checkpointed.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/safetensors.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed::rl::explore {

/// start → end linearly over `steps` steps, then constant at end.
struct LinearSchedule {
  double start = 1.0;
  double end = 0.05;
  std::int64_t steps = 100'000;

  [[nodiscard]] double operator()(std::int64_t step) const {
    RLMED_CHECK(step >= 0, "LinearSchedule: step must be >= 0, found ", step);
    RLMED_CHECK(steps >= 1, "LinearSchedule: steps must be >= 1, found ", steps);
    const double frac = std::min(1.0, static_cast<double>(step) / static_cast<double>(steps));
    return start + (end - start) * frac;
  }
};

/// end + (start − end)·exp(−step / decay_steps): decays by a factor e every decay_steps steps.
struct ExponentialSchedule {
  double start = 1.0;
  double end = 0.05;
  double decay_steps = 10'000;

  [[nodiscard]] double operator()(std::int64_t step) const {
    RLMED_CHECK(step >= 0, "ExponentialSchedule: step must be >= 0, found ", step);
    RLMED_CHECK(decay_steps > 0, "ExponentialSchedule: decay_steps must be > 0, found ", decay_steps);
    return end + (start - end) * std::exp(-static_cast<double>(step) / decay_steps);
  }
};

/// Index of the largest value (lowest index on ties); rlmed::Error on NaN or an empty span.
template <class T>
int argmax(std::span<const T> values) {
  RLMED_CHECK(!values.empty(), "argmax of an empty set of values");
  int best = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    RLMED_CHECK(!std::isnan(values[i]), "action value ", i, " is NaN");
    if (values[i] > values[static_cast<std::size_t>(best)]) best = static_cast<int>(i);
  }
  return best;
}

/// What the scheduled exploration policies share (CRTP): the schedule position, which is their
/// whole state, batched selection in row order, and save/load of the position under
/// Derived::state_key. Derived provides `select(rng, q)`, `label` and `name`.
template <class Derived, class Schedule>
class ScheduledExploration {
 public:
  /// The scheduled quantity at the current position (the agents' log column, named `label`).
  [[nodiscard]] double value() const { return schedule_(step_); }
  [[nodiscard]] std::int64_t step() const noexcept { return step_; }
  void set_step(std::int64_t step) {
    RLMED_CHECK(step >= 0, Derived::name, ": step must be >= 0, found ", step);
    step_ = step;
  }
  /// Moves the schedule by k steps (k = number of environment steps taken).
  void advance(std::int64_t k = 1) { set_step(step_ + k); }
  [[nodiscard]] const Schedule& schedule() const noexcept { return schedule_; }

  /// Actions for a batch q [B, A] (one row per environment), in row order.
  template <class T>
  void select_into(PhiloxStream& rng, TensorView<const T, 2> q, std::span<int> actions) const {
    RLMED_CHECK(static_cast<index_t>(actions.size()) == q.extent(0), Derived::name, ": ", actions.size(),
                " action slots for ", q.extent(0), " rows of action values");
    const auto a = static_cast<std::size_t>(q.extent(1));
    const auto& self = static_cast<const Derived&>(*this);
    for (index_t b = 0; b < q.extent(0); ++b)
      actions[static_cast<std::size_t>(b)] = self.select(rng, std::span<const T>(q.data() + b * q.extent(1), a));
  }

  void save(io::SafetensorsWriter& w, const std::string& prefix) const {
    Tensor<std::int64_t, 1> s(Shape<1>{1}, step_);
    w.add(prefix + Derived::state_key, s);
  }
  void load(const io::SafetensorsReader& r, const std::string& prefix) {
    Tensor<std::int64_t, 1> s(Shape<1>{1});
    r.read_into(prefix + Derived::state_key, s.view());
    set_step(s(0));
  }

 protected:
  ScheduledExploration() = default;
  ScheduledExploration(const Schedule& schedule, std::int64_t step) : schedule_(schedule) { set_step(step); }

 private:
  Schedule schedule_{};
  std::int64_t step_ = 0;
};

/// With probability ε a uniformly random action, otherwise the greedy one; ε from a schedule.
template <class Schedule = LinearSchedule>
class EpsilonGreedy : public ScheduledExploration<EpsilonGreedy<Schedule>, Schedule> {
  using Base = ScheduledExploration<EpsilonGreedy<Schedule>, Schedule>;

 public:
  static constexpr const char* label = "epsilon";
  static constexpr const char* name = "EpsilonGreedy";
  static constexpr const char* state_key = "epsilon_step";

  EpsilonGreedy() = default;
  explicit EpsilonGreedy(const Schedule& schedule, std::int64_t step = 0) : Base(schedule, step) {}

  [[nodiscard]] double epsilon() const { return this->value(); }

  /// One action from action values q [A] at the current ε. Draws a 53-bit uniform (2 words),
  /// plus a uniform integer when exploring.
  template <class T>
  int select(PhiloxStream& rng, std::span<const T> q) const {
    const int greedy = argmax(q);  // validates q even when exploring
    if (rng.uniform_double() < epsilon())
      return static_cast<int>(rng.uniform_int(static_cast<std::uint32_t>(q.size())));
    return greedy;
  }
};

/// Softmax probabilities of q / temperature into `probs` (same size).
template <class T>
void boltzmann_probabilities_into(std::span<const T> q, double temperature, std::span<T> probs) {
  RLMED_CHECK(temperature > 0 && std::isfinite(temperature), "Boltzmann temperature must be > 0 and finite, found ",
              temperature);
  RLMED_CHECK(probs.size() == q.size(), "Boltzmann: ", probs.size(), " outputs for ", q.size(), " action values");
  const double top = static_cast<double>(q[static_cast<std::size_t>(argmax(q))]);
  double total = 0;
  for (std::size_t i = 0; i < q.size(); ++i) total += std::exp((static_cast<double>(q[i]) - top) / temperature);
  for (std::size_t i = 0; i < q.size(); ++i)
    probs[i] = static_cast<T>(std::exp((static_cast<double>(q[i]) - top) / temperature) / total);
}

/// Action drawn with probability softmax(q / temperature); two uniform words.
template <class T>
int boltzmann_select(PhiloxStream& rng, std::span<const T> q, double temperature) {
  RLMED_CHECK(temperature > 0 && std::isfinite(temperature), "Boltzmann temperature must be > 0 and finite, found ",
              temperature);
  const double top = static_cast<double>(q[static_cast<std::size_t>(argmax(q))]);
  double total = 0;
  for (std::size_t i = 0; i < q.size(); ++i) total += std::exp((static_cast<double>(q[i]) - top) / temperature);
  const double u = rng.uniform_double() * total;
  double acc = 0;
  for (std::size_t i = 0; i < q.size(); ++i) {
    acc += std::exp((static_cast<double>(q[i]) - top) / temperature);
    if (u < acc) return static_cast<int>(i);
  }
  return argmax(q);  // u rounded up to the total: the largest weight (always positive) is a valid draw
}

/// Boltzmann (softmax) exploration as a value-based agent's policy: action a with probability
/// softmax(q / τ)_a, τ from a schedule over environment steps (e.g. LinearSchedule{1.0, 0.01, n}
/// anneals from near-uniform towards greedy). Same interface as EpsilonGreedy, so it plugs into
/// DQN's Exploration slot; its state is the schedule step.
template <class Schedule = LinearSchedule>
class Boltzmann : public ScheduledExploration<Boltzmann<Schedule>, Schedule> {
  using Base = ScheduledExploration<Boltzmann<Schedule>, Schedule>;

 public:
  static constexpr const char* label = "temperature";
  static constexpr const char* name = "Boltzmann";
  static constexpr const char* state_key = "temperature_step";

  Boltzmann() = default;
  explicit Boltzmann(const Schedule& schedule, std::int64_t step = 0) : Base(schedule, step) {}

  [[nodiscard]] double temperature() const { return this->value(); }

  /// One action from action values q [A] at the current temperature (two uniform words).
  template <class T>
  int select(PhiloxStream& rng, std::span<const T> q) const {
    return boltzmann_select(rng, q, temperature());
  }
};

/// Independent N(0, σ²) noise per component, optionally clipped to ±noise_clip (TD3's target
/// policy smoothing) and the sum clipped into [low, high].
struct GaussianNoise {
  double sigma = 0.1;
  double noise_clip = std::numeric_limits<double>::infinity();

  /// action += noise (one normal draw = 2 words per component).
  template <class T>
  void apply(PhiloxStream& rng, std::span<T> action) const {
    check();
    for (auto& a : action) a = static_cast<T>(static_cast<double>(a) + draw(rng));
  }
  /// action = clip(action + noise, low, high) componentwise.
  template <class T>
  void apply(PhiloxStream& rng, std::span<T> action, std::span<const T> low, std::span<const T> high) const {
    check();
    RLMED_CHECK(low.size() == action.size() && high.size() == action.size(), "GaussianNoise: bounds of sizes ",
                low.size(), " and ", high.size(), " for an action of ", action.size(), " components");
    for (std::size_t i = 0; i < action.size(); ++i) {
      const double v = static_cast<double>(action[i]) + draw(rng);
      action[i] = static_cast<T>(std::min(std::max(v, static_cast<double>(low[i])), static_cast<double>(high[i])));
    }
  }

 private:
  void check() const {
    RLMED_CHECK(sigma >= 0 && std::isfinite(sigma), "GaussianNoise: sigma must be >= 0 and finite, found ", sigma);
    RLMED_CHECK(noise_clip >= 0, "GaussianNoise: noise_clip must be >= 0, found ", noise_clip);
  }
  double draw(PhiloxStream& rng) const {
    const double n = sigma * rng.normal_double();
    return std::min(std::max(n, -noise_clip), noise_clip);
  }
};

struct OrnsteinUhlenbeckConfig {
  double theta = 0.15;  ///< mean reversion rate
  double sigma = 0.2;   ///< diffusion
  double dt = 1e-2;
  double mu = 0.0;      ///< long-run mean
  double x0 = 0.0;      ///< state after reset()
};

/// Temporally correlated noise for deterministic policies (DDPG).
class OrnsteinUhlenbeck {
 public:
  OrnsteinUhlenbeck() = default;
  OrnsteinUhlenbeck(index_t dim, const OrnsteinUhlenbeckConfig& config = {}) : config_(config) {
    RLMED_CHECK(dim >= 1, "OrnsteinUhlenbeck: dim must be >= 1, found ", dim);
    RLMED_CHECK(config.theta >= 0 && config.sigma >= 0 && config.dt > 0 && std::isfinite(config.mu) &&
                    std::isfinite(config.x0),
                "OrnsteinUhlenbeck: needs theta >= 0, sigma >= 0, dt > 0 and finite mu, x0; found theta ",
                config.theta, ", sigma ", config.sigma, ", dt ", config.dt, ", mu ", config.mu, ", x0 ", config.x0);
    state_ = Tensor<double, 1>(Shape<1>{dim}, config.x0);
  }

  [[nodiscard]] const OrnsteinUhlenbeckConfig& config() const noexcept { return config_; }
  [[nodiscard]] index_t dim() const noexcept { return state_.size(); }
  [[nodiscard]] TensorView<const double, 1> state() const noexcept { return state_.view(); }
  /// Back to x0 (call at episode starts).
  void reset() { fill(state_, config_.x0); }

  /// Advances the process one step (2 words per component) and returns the new state.
  TensorView<const double, 1> sample(PhiloxStream& rng) {
    const double diffusion = config_.sigma * std::sqrt(config_.dt);
    for (double& x : state_) x = x + config_.theta * (config_.mu - x) * config_.dt + diffusion * rng.normal_double();
    return state_.view();
  }
  /// action += next noise sample.
  template <class T>
  void apply(PhiloxStream& rng, std::span<T> action) {
    RLMED_CHECK(static_cast<index_t>(action.size()) == dim(), "OrnsteinUhlenbeck: action has ", action.size(),
                " components, the process ", dim());
    const auto x = sample(rng);
    for (std::size_t i = 0; i < action.size(); ++i)
      action[i] = static_cast<T>(static_cast<double>(action[i]) + x(static_cast<index_t>(i)));
  }

  void save(io::SafetensorsWriter& w, const std::string& prefix) const { w.add(prefix + "ou_state", state_); }
  void load(const io::SafetensorsReader& r, const std::string& prefix) {
    Tensor<double, 1> s(state_.shape());
    r.read_into(prefix + "ou_state", s.view());
    for (double v : s) RLMED_CHECK(std::isfinite(v), r.source(), ": OU state holds ", v);
    state_ = std::move(s);
  }

 private:
  OrnsteinUhlenbeckConfig config_{};
  Tensor<double, 1> state_;  // [dim]
};

}  // namespace rlmed::rl::explore
