// rlmed/env/classic/common.hpp — what the classic-control environments share: the time limit
// and the few NumPy/Python numerics their reference implementation relies on.
//
// Design decisions:
//  * The episode clock reproduces Gymnasium's TimeLimit wrapper: truncated is set on the step
//    whose count reaches max_episode_steps, also when that step terminates (both flags true).
//  * Stepping an episode that has ended, or before the first reset, is an rlmed::Error rather
//    than Gymnasium's warning and undefined behaviour: a learner that does it has a bug.
//  * The helpers mirror the reference arithmetic exactly (Python's float modulo, np.clip), so
//    trajectories agree with an independent float64 transcription to the last bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "rlmed/core/error.hpp"
#include "rlmed/core/philox.hpp"

namespace rlmed::env {

/// Episode bookkeeping shared by the classic environments.
class EpisodeClock {
 public:
  explicit EpisodeClock(int max_episode_steps = 0) : max_steps_(max_episode_steps) {
    RLMED_CHECK(max_episode_steps >= 1, "max_episode_steps must be >= 1, found ", max_episode_steps);
  }
  void start(int elapsed = 0) {
    RLMED_CHECK(elapsed >= 0 && elapsed < max_steps_, "elapsed steps ", elapsed, " outside [0, ", max_steps_, ")");
    elapsed_ = elapsed;
    running_ = true;
  }
  /// Checks that a step is allowed; `env` names the environment in the message.
  void before_step(const char* env) const {
    RLMED_CHECK(running_, env, ": step() needs a running episode; call reset() first (the last episode ",
                elapsed_ > 0 ? "ended" : "never started", ")");
  }
  /// Counts the step and returns truncated; ends the episode when terminated or truncated.
  bool after_step(bool terminated) {
    ++elapsed_;
    const bool truncated = elapsed_ >= max_steps_;
    if (terminated || truncated) running_ = false;
    return truncated;
  }
  [[nodiscard]] int elapsed() const noexcept { return elapsed_; }
  [[nodiscard]] int max_steps() const noexcept { return max_steps_; }
  [[nodiscard]] bool running() const noexcept { return running_; }

 private:
  int max_steps_;
  int elapsed_ = 0;
  bool running_ = false;
};

namespace classic_detail {

/// Python's float `x % m` (result has the sign of m), as NumPy's remainder computes it.
inline double python_mod(double x, double m) noexcept {
  double r = std::fmod(x, m);
  if (r != 0.0) {
    if ((m < 0) != (r < 0)) r += m;
  } else {
    r = std::copysign(0.0, m);
  }
  return r;
}

/// np.clip for scalars.
inline double clip(double x, double lo, double hi) noexcept { return std::min(std::max(x, lo), hi); }

/// NumPy's Generator.uniform(low, high): low + (high - low) * U[0, 1), with a 53-bit uniform.
inline double uniform(PhiloxStream& rng, double lo, double hi) noexcept {
  return lo + (hi - lo) * rng.uniform_double();
}

}  // namespace classic_detail
}  // namespace rlmed::env
