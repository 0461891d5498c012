// rlmed/env/classic/acrobot.hpp — Acrobot-v1 exactly as Gymnasium defines it.
//
// Design decisions:
//  * Gymnasium 0.29.1 / 1.0.0's Acrobot-v1: the "book" dynamics (Sutton & Barto; the NeurIPS-1995
//    paper omits the dθ1² term of θ̈2), unit masses and lengths, centres of mass at 0.5, moments
//    of inertia 1, g 9.8, torques {-1, 0, +1}, one classical RK4 step over dt = 0.2 exactly as
//    Gymnasium's `rk4` helper (the torque rides along as a fifth state with zero derivative),
//    then θ1, θ2 wrapped into [-π, π] and the velocities clipped to ±4π and ±9π. Terminated when
//    -cos θ1 - cos(θ1 + θ2) > 1; reward -1, or 0 on the terminating step; truncated after 500 steps.
//  * Reset draws the four state components ~ U(-0.1, 0.1) and rounds them to float32, because
//    Gymnasium stores its reset state as a float32 array (later states are float64).
//  * Torque noise (torque_noise_max) is 0 in Acrobot-v1 and not provided.
//  * Operation order follows the reference so a float64 transcription agrees bit for bit when
//    both use the C library's sin/cos (Gymnasium calls NumPy's ufuncs, whose SIMD versions may
//    differ from libm in the last ulp depending on the CPU).
#pragma once

#include <array>
#include <cmath>
#include <numbers>

#include "rlmed/env/classic/common.hpp"
#include "rlmed/rl/environment.hpp"
#include "rlmed/rl/spaces.hpp"

namespace rlmed::env {

struct AcrobotConfig {
  int max_episode_steps = 500;  ///< Acrobot-v1
};

class Acrobot {
 public:
  using observation_type = std::array<float, 6>;  ///< cos θ1, sin θ1, cos θ2, sin θ2, θ̇1, θ̇2
  using action_type = int;                        ///< 0: torque -1, 1: 0, 2: +1
  using action_space_type = rl::Discrete<3>;
  using observation_space_type = rl::Box<6>;
  using state_type = std::array<double, 4>;  ///< θ1, θ2 (relative to link 1), θ̇1, θ̇2

  static constexpr double dt = 0.2;
  static constexpr double link_length_1 = 1.0;
  static constexpr double link_mass_1 = 1.0;
  static constexpr double link_mass_2 = 1.0;
  static constexpr double link_com_pos_1 = 0.5;
  static constexpr double link_com_pos_2 = 0.5;
  static constexpr double link_moi = 1.0;
  static constexpr double gravity = 9.8;
  static constexpr double max_vel_1 = 4 * std::numbers::pi;
  static constexpr double max_vel_2 = 9 * std::numbers::pi;
  static constexpr std::array<double, 3> available_torque{-1.0, 0.0, +1.0};

  explicit Acrobot(const AcrobotConfig& config = {}) : clock_(config.max_episode_steps) {}

  static constexpr action_space_type action_space() noexcept { return {}; }
  static observation_space_type observation_space() {
    const auto v1 = static_cast<float>(max_vel_1), v2 = static_cast<float>(max_vel_2);
    return observation_space_type({-1.0f, -1.0f, -1.0f, -1.0f, -v1, -v2}, {1.0f, 1.0f, 1.0f, 1.0f, v1, v2});
  }

  observation_type reset(PhiloxStream& rng) {
    for (double& s : state_) s = static_cast<double>(static_cast<float>(classic_detail::uniform(rng, -0.1, 0.1)));
    clock_.start();
    return observation();
  }

  rl::StepResult<observation_type> step(action_type action) {
    clock_.before_step("Acrobot");
    action_space_type::validate(action);
    const double torque = available_torque[static_cast<std::size_t>(action)];

    // One RK4 step of the augmented state (θ1, θ2, θ̇1, θ̇2, torque).
    using Aug = std::array<double, 5>;
    const Aug y0{state_[0], state_[1], state_[2], state_[3], torque};
    const double h = dt - 0.0, h2 = h / 2.0;
    auto offset = [](const Aug& y, double scale, const Aug& k) {
      Aug r;
      for (std::size_t i = 0; i < 5; ++i) r[i] = y[i] + scale * k[i];
      return r;
    };
    const Aug k1 = derivatives(y0);
    const Aug k2 = derivatives(offset(y0, h2, k1));
    const Aug k3 = derivatives(offset(y0, h2, k2));
    const Aug k4 = derivatives(offset(y0, h, k3));
    state_type next;
    for (std::size_t i = 0; i < 4; ++i) next[i] = y0[i] + h / 6.0 * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]);

    next[0] = wrap(next[0], -std::numbers::pi, std::numbers::pi);
    next[1] = wrap(next[1], -std::numbers::pi, std::numbers::pi);
    next[2] = classic_detail::clip(next[2], -max_vel_1, max_vel_1);
    next[3] = classic_detail::clip(next[3], -max_vel_2, max_vel_2);
    state_ = next;

    const bool terminated = -std::cos(state_[0]) - std::cos(state_[1] + state_[0]) > 1.0;
    const bool truncated = clock_.after_step(terminated);
    return {observation(), terminated ? 0.0 : -1.0, terminated, truncated};
  }

  /// Time derivative of the augmented state (book dynamics).
  static std::array<double, 5> derivatives(const std::array<double, 5>& s) noexcept {
    constexpr double m1 = link_mass_1, m2 = link_mass_2, l1 = link_length_1;
    constexpr double lc1 = link_com_pos_1, lc2 = link_com_pos_2, I1 = link_moi, I2 = link_moi, g = gravity;
    constexpr double pi = std::numbers::pi;
    const double a = s[4];
    const double theta1 = s[0], theta2 = s[1], dtheta1 = s[2], dtheta2 = s[3];
    const double d1 = m1 * (lc1 * lc1) + m2 * ((l1 * l1) + (lc2 * lc2) + 2 * l1 * lc2 * std::cos(theta2)) + I1 + I2;
    const double d2 = m2 * ((lc2 * lc2) + l1 * lc2 * std::cos(theta2)) + I2;
    const double phi2 = m2 * lc2 * g * std::cos(theta1 + theta2 - pi / 2.0);
    const double phi1 = -m2 * l1 * lc2 * (dtheta2 * dtheta2) * std::sin(theta2) -
                        2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * std::sin(theta2) +
                        (m1 * lc1 + m2 * l1) * g * std::cos(theta1 - pi / 2) + phi2;
    const double ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * (dtheta1 * dtheta1) * std::sin(theta2) - phi2) /
                            (m2 * (lc2 * lc2) + I2 - (d2 * d2) / d1);
    const double ddtheta1 = -(d2 * ddtheta2 + phi1) / d1;
    return {dtheta1, dtheta2, ddtheta1, ddtheta2, 0.0};
  }

  /// Gymnasium's `wrap`: shifts x by whole periods (M - m) until m <= x <= M.
  static double wrap(double x, double m, double M) noexcept {
    const double diff = M - m;
    while (x > M) x = x - diff;
    while (x < m) x = x + diff;
    return x;
  }

  [[nodiscard]] const state_type& state() const noexcept { return state_; }
  void set_state(const state_type& state, int elapsed_steps = 0) {
    for (std::size_t i = 0; i < 4; ++i)
      RLMED_CHECK(std::isfinite(state[i]), "Acrobot state component ", i, " is ", state[i], "; expected finite");
    state_ = state;
    clock_.start(elapsed_steps);
  }
  [[nodiscard]] int elapsed_steps() const noexcept { return clock_.elapsed(); }
  [[nodiscard]] int max_episode_steps() const noexcept { return clock_.max_steps(); }

 private:
  [[nodiscard]] observation_type observation() const noexcept {
    return {static_cast<float>(std::cos(state_[0])), static_cast<float>(std::sin(state_[0])),
            static_cast<float>(std::cos(state_[1])), static_cast<float>(std::sin(state_[1])),
            static_cast<float>(state_[2]),           static_cast<float>(state_[3])};
  }

  state_type state_{};
  EpisodeClock clock_;
};

static_assert(rl::Environment<Acrobot>);

}  // namespace rlmed::env
