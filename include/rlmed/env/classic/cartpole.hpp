// rlmed/env/classic/cartpole.hpp — CartPole-v1 exactly as Gymnasium defines it.
//
// Design decisions:
//  * Constants, equations (Barto, Sutton & Anderson 1983 via Florian's corrected derivation),
//    explicit Euler integration, termination thresholds, the 500-step limit and the reset
//    distribution U(-0.05, 0.05)^4 are Gymnasium 0.29.1 / 1.0.0's CartPole-v1 (identical in both).
//    The expressions keep the reference's operation order, so a float64 transcription of the
//    published equations reproduces the trajectory bit for bit (tests/rl/make_classic_golden.py).
//  * State is float64; the observation is the state rounded to float32, as Gymnasium returns it.
//  * Reward is +1 on every step including the terminating one (Gymnasium's default; the
//    Sutton-Barto reward variant of 1.0 is not provided).
#pragma once

#include <array>
#include <cmath>
#include <limits>
#include <numbers>

#include "rlmed/env/classic/common.hpp"
#include "rlmed/rl/environment.hpp"
#include "rlmed/rl/spaces.hpp"

namespace rlmed::env {

struct CartPoleConfig {
  int max_episode_steps = 500;  ///< CartPole-v1 (v0: 200)
};

class CartPole {
 public:
  using observation_type = std::array<float, 4>;  ///< x, x_dot, theta, theta_dot
  using action_type = int;                        ///< 0: push left, 1: push right
  using action_space_type = rl::Discrete<2>;
  using observation_space_type = rl::Box<4>;
  using state_type = std::array<double, 4>;

  static constexpr double gravity = 9.8;
  static constexpr double masscart = 1.0;
  static constexpr double masspole = 0.1;
  static constexpr double total_mass = masspole + masscart;
  static constexpr double length = 0.5;  // half the pole's length
  static constexpr double polemass_length = masspole * length;
  static constexpr double force_mag = 10.0;
  static constexpr double tau = 0.02;  // seconds per step
  static constexpr double theta_threshold_radians = 12 * 2 * std::numbers::pi / 360;
  static constexpr double x_threshold = 2.4;

  explicit CartPole(const CartPoleConfig& config = {}) : clock_(config.max_episode_steps) {}

  static constexpr action_space_type action_space() noexcept { return {}; }
  /// Gymnasium's bounds: twice the termination thresholds, velocities unbounded (±FLT_MAX).
  static observation_space_type observation_space() {
    constexpr float big = std::numeric_limits<float>::max();
    const auto x = static_cast<float>(x_threshold * 2), th = static_cast<float>(theta_threshold_radians * 2);
    return observation_space_type({-x, -big, -th, -big}, {x, big, th, big});
  }

  /// Every state component ~ U(-0.05, 0.05), drawn in order x, x_dot, theta, theta_dot.
  observation_type reset(PhiloxStream& rng) {
    for (double& s : state_) s = classic_detail::uniform(rng, -0.05, 0.05);
    clock_.start();
    return observation();
  }

  rl::StepResult<observation_type> step(action_type action) {
    clock_.before_step("CartPole");
    action_space_type::validate(action);
    auto [x, x_dot, theta, theta_dot] = state_;
    const double force = action == 1 ? force_mag : -force_mag;
    const double costheta = std::cos(theta);
    const double sintheta = std::sin(theta);
    const double temp = (force + polemass_length * (theta_dot * theta_dot) * sintheta) / total_mass;
    const double thetaacc =
        (gravity * sintheta - costheta * temp) /
        (length * (4.0 / 3.0 - masspole * (costheta * costheta) / total_mass));
    const double xacc = temp - polemass_length * thetaacc * costheta / total_mass;
    x = x + tau * x_dot;  // explicit Euler: positions move with the old velocities
    x_dot = x_dot + tau * xacc;
    theta = theta + tau * theta_dot;
    theta_dot = theta_dot + tau * thetaacc;
    state_ = {x, x_dot, theta, theta_dot};

    const bool terminated = x < -x_threshold || x > x_threshold || theta < -theta_threshold_radians ||
                            theta > theta_threshold_radians;
    const bool truncated = clock_.after_step(terminated);
    return {observation(), 1.0, terminated, truncated};
  }

  [[nodiscard]] const state_type& state() const noexcept { return state_; }
  /// Starts an episode from a given state (fixed initial states in tests, curricula).
  void set_state(const state_type& state, int elapsed_steps = 0) {
    for (std::size_t i = 0; i < 4; ++i)
      RLMED_CHECK(std::isfinite(state[i]), "CartPole state component ", i, " is ", state[i], "; expected finite");
    state_ = state;
    clock_.start(elapsed_steps);
  }
  [[nodiscard]] int elapsed_steps() const noexcept { return clock_.elapsed(); }
  [[nodiscard]] int max_episode_steps() const noexcept { return clock_.max_steps(); }

 private:
  [[nodiscard]] observation_type observation() const noexcept {
    return {static_cast<float>(state_[0]), static_cast<float>(state_[1]), static_cast<float>(state_[2]),
            static_cast<float>(state_[3])};
  }

  state_type state_{};
  EpisodeClock clock_;
};

static_assert(rl::Environment<CartPole>);

}  // namespace rlmed::env
