// rlmed/env/classic/mountain_car.hpp — MountainCar-v0 exactly as Gymnasium defines it.
//
// Design decisions:
//  * Gymnasium 0.29.1 / 1.0.0's MountainCar-v0 (Moore 1990): force 0.001, gravity 0.0025,
//    v += (a - 1)·force - cos(3x)·gravity, clipped to ±0.07; x += v, clipped to [-1.2, 0.6]; an
//    inelastic left wall (v = 0 when x hits -1.2 moving left); reward -1 per step; terminated
//    when x >= 0.5 and v >= goal_velocity (0); truncated after 200 steps; reset x ~ U(-0.6, -0.4),
//    v = 0.
//  * Float64 state, float32 observation, the reference's operation order (see cartpole.hpp).
#pragma once

#include <array>
#include <cmath>

#include "rlmed/env/classic/common.hpp"
#include "rlmed/rl/environment.hpp"
#include "rlmed/rl/spaces.hpp"

namespace rlmed::env {

struct MountainCarConfig {
  double goal_velocity = 0.0;
  int max_episode_steps = 200;
};

class MountainCar {
 public:
  using observation_type = std::array<float, 2>;  ///< position, velocity
  using action_type = int;                        ///< 0: accelerate left, 1: none, 2: right
  using action_space_type = rl::Discrete<3>;
  using observation_space_type = rl::Box<2>;
  using state_type = std::array<double, 2>;

  static constexpr double min_position = -1.2;
  static constexpr double max_position = 0.6;
  static constexpr double max_speed = 0.07;
  static constexpr double goal_position = 0.5;
  static constexpr double force = 0.001;
  static constexpr double gravity = 0.0025;

  explicit MountainCar(const MountainCarConfig& config = {})
      : goal_velocity_(config.goal_velocity), clock_(config.max_episode_steps) {
    RLMED_CHECK(std::isfinite(config.goal_velocity), "MountainCar: goal_velocity must be finite, found ",
                config.goal_velocity);
  }

  static constexpr action_space_type action_space() noexcept { return {}; }
  static observation_space_type observation_space() {
    return observation_space_type({static_cast<float>(min_position), static_cast<float>(-max_speed)},
                                  {static_cast<float>(max_position), static_cast<float>(max_speed)});
  }

  observation_type reset(PhiloxStream& rng) {
    state_ = {classic_detail::uniform(rng, -0.6, -0.4), 0.0};
    clock_.start();
    return observation();
  }

  rl::StepResult<observation_type> step(action_type action) {
    clock_.before_step("MountainCar");
    action_space_type::validate(action);
    double position = state_[0], velocity = state_[1];
    velocity = velocity + ((action - 1) * force + std::cos(3 * position) * (-gravity));
    velocity = classic_detail::clip(velocity, -max_speed, max_speed);
    position = position + velocity;
    position = classic_detail::clip(position, min_position, max_position);
    if (position == min_position && velocity < 0) velocity = 0;
    state_ = {position, velocity};

    const bool terminated = position >= goal_position && velocity >= goal_velocity_;
    const bool truncated = clock_.after_step(terminated);
    return {observation(), -1.0, terminated, truncated};
  }

  [[nodiscard]] const state_type& state() const noexcept { return state_; }
  void set_state(const state_type& state, int elapsed_steps = 0) {
    RLMED_CHECK(std::isfinite(state[0]) && std::isfinite(state[1]), "MountainCar state must be finite, found [",
                state[0], ", ", state[1], "]");
    state_ = state;
    clock_.start(elapsed_steps);
  }
  [[nodiscard]] int elapsed_steps() const noexcept { return clock_.elapsed(); }
  [[nodiscard]] int max_episode_steps() const noexcept { return clock_.max_steps(); }

 private:
  [[nodiscard]] observation_type observation() const noexcept {
    return {static_cast<float>(state_[0]), static_cast<float>(state_[1])};
  }

  double goal_velocity_;
  state_type state_{};
  EpisodeClock clock_;
};

static_assert(rl::Environment<MountainCar>);

}  // namespace rlmed::env
