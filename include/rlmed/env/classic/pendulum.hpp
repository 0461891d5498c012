// rlmed/env/classic/pendulum.hpp — Pendulum-v1 exactly as Gymnasium defines it.
//
// Design decisions:
//  * Gymnasium 0.29.1 / 1.0.0's Pendulum-v1: max_speed 8, max_torque 2, dt 0.05, g 10 (configurable,
//    as Gymnasium's `g` argument), m 1, l 1; reward -(angle_normalize(θ)² + 0.1 θ̇² + 0.001 u²)
//    computed from the state BEFORE the update; semi-implicit Euler (θ moves with the new θ̇);
//    θ̇ clipped to ±8; no termination; truncation after 200 steps; reset θ ~ U(-π, π),
//    θ̇ ~ U(-1, 1), drawn in that order.
//  * Out-of-range torques are clipped to ±2 (Gymnasium clips silently); a NaN torque is an
//    rlmed::Error, since clipping would hide it.
//  * Arithmetic is float64 throughout with the reference's operation order. Gymnasium under
//    NumPy 1.x evaluates the same way (NumPy scalar × Python float promotes to float64); under
//    NumPy 2 (NEP 50) its float32 action keeps the torque terms in float32, a ~1e-7 relative
//    difference in those terms only.
#pragma once

#include <array>
#include <cmath>
#include <numbers>

#include "rlmed/env/classic/common.hpp"
#include "rlmed/rl/environment.hpp"
#include "rlmed/rl/spaces.hpp"

namespace rlmed::env {

struct PendulumConfig {
  double g = 10.0;
  int max_episode_steps = 200;
};

class Pendulum {
 public:
  using observation_type = std::array<float, 3>;  ///< cos θ, sin θ, θ̇
  using action_type = std::array<float, 1>;       ///< torque in N·m
  using action_space_type = rl::Box<1>;
  using observation_space_type = rl::Box<3>;
  using state_type = std::array<double, 2>;  ///< θ (0 = upright, not wrapped), θ̇

  static constexpr double max_speed = 8;
  static constexpr double max_torque = 2.0;
  static constexpr double dt = 0.05;
  static constexpr double m = 1.0;
  static constexpr double l = 1.0;

  explicit Pendulum(const PendulumConfig& config = {}) : g_(config.g), clock_(config.max_episode_steps) {
    RLMED_CHECK(std::isfinite(config.g), "Pendulum: g must be finite, found ", config.g);
  }

  static action_space_type action_space() {
    return action_space_type({static_cast<float>(-max_torque)}, {static_cast<float>(max_torque)});
  }
  static observation_space_type observation_space() {
    const auto v = static_cast<float>(max_speed);
    return observation_space_type({-1.0f, -1.0f, -v}, {1.0f, 1.0f, v});
  }

  observation_type reset(PhiloxStream& rng) {
    state_[0] = classic_detail::uniform(rng, -std::numbers::pi, std::numbers::pi);
    state_[1] = classic_detail::uniform(rng, -1.0, 1.0);
    clock_.start();
    return observation();
  }

  rl::StepResult<observation_type> step(const action_type& action) {
    clock_.before_step("Pendulum");
    RLMED_CHECK(!std::isnan(action[0]), "Pendulum: torque is NaN");
    const double th = state_[0], thdot = state_[1];
    const double u = classic_detail::clip(static_cast<double>(action[0]), -max_torque, max_torque);
    const double th_norm = angle_normalize(th);
    const double costs = th_norm * th_norm + 0.1 * (thdot * thdot) + 0.001 * (u * u);

    double newthdot = thdot + (3 * g_ / (2 * l) * std::sin(th) + 3.0 / (m * (l * l)) * u) * dt;
    newthdot = classic_detail::clip(newthdot, -max_speed, max_speed);
    const double newth = th + newthdot * dt;
    state_ = {newth, newthdot};

    const bool truncated = clock_.after_step(false);
    return {observation(), -costs, false, truncated};
  }

  /// θ mapped to [-π, π): ((θ + π) mod 2π) - π with Python's modulo.
  static double angle_normalize(double theta) noexcept {
    return classic_detail::python_mod(theta + std::numbers::pi, 2 * std::numbers::pi) - std::numbers::pi;
  }

  [[nodiscard]] const state_type& state() const noexcept { return state_; }
  void set_state(const state_type& state, int elapsed_steps = 0) {
    RLMED_CHECK(std::isfinite(state[0]) && std::isfinite(state[1]), "Pendulum state must be finite, found [",
                state[0], ", ", state[1], "]");
    state_ = state;
    clock_.start(elapsed_steps);
  }
  [[nodiscard]] double g() const noexcept { return g_; }
  [[nodiscard]] int elapsed_steps() const noexcept { return clock_.elapsed(); }
  [[nodiscard]] int max_episode_steps() const noexcept { return clock_.max_steps(); }

 private:
  [[nodiscard]] observation_type observation() const noexcept {
    return {static_cast<float>(std::cos(state_[0])), static_cast<float>(std::sin(state_[0])),
            static_cast<float>(state_[1])};
  }

  double g_;
  state_type state_{};
  EpisodeClock clock_;
};

static_assert(rl::Environment<Pendulum>);

}  // namespace rlmed::env
