// rlmed/rl/environment.hpp — the Environment concept, step results and VectorEnv.
//
// Design decisions:
//  * An environment is any type with observation_type / action_type, observation_space() and
//    action_space() (static for the classic envs; a member is allowed where a space depends on a
//    config), reset(PhiloxStream&) -> observation and step(action) -> StepResult. It owns no
//    generator: randomness comes from the stream passed to reset, so an episode is a pure
//    function of (env config, stream position, actions). Environments that need randomness inside
//    an episode also provide step(action, PhiloxStream&) (StochasticEnvironment); VectorEnv then
//    passes them their own stream.
//  * Gymnasium's five-tuple without `info`: terminated (a terminal state: no bootstrap) and
//    truncated (a time limit or other cut: bootstrap from the last observation) are separate,
//    because every return estimator in rl/returns.hpp treats them differently.
//  * Rewards are double (classic-control rewards are exact small integers or float64 costs).
//    A non-finite reward is meaningless to every learner, so check_step turns it into an
//    rlmed::Error at the point where the result is consumed (VectorEnv calls it on every step).
//  * VectorEnv<Env> steps N copies over rlmed::parallel_for. Env i always draws from its own
//    stream PhiloxStream(seed, first_stream + i), and each env's step touches only slot i of the
//    result arrays, so results are bit-identical for any thread count. Episode ends reset the env
//    automatically: the returned observation is then the FIRST observation of the new episode, and
//    the last observation of the episode that ended is in final_observation (Gymnasium's
//    "same-step" autoreset), with the episode's return and length alongside.
//  * Flags are std::uint8_t, never std::vector<bool>: vector<bool> packs bits, and two threads
//    writing neighbouring bits would race.
#pragma once

#include <array>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/rl/spaces.hpp"

namespace rlmed::rl {

/// What one environment step returns.
template <class Obs>
struct StepResult {
  Obs observation{};       ///< observation after the step
  double reward = 0.0;
  bool terminated = false;  ///< reached a terminal state: do not bootstrap
  bool truncated = false;   ///< cut (time limit): bootstrap from `observation`
  [[nodiscard]] bool done() const noexcept { return terminated || truncated; }
};

template <class E>
concept Environment = std::move_constructible<E> &&
    requires(E& env, PhiloxStream& rng, const typename E::action_type& action) {
      typename E::observation_type;
      typename E::action_type;
      env.observation_space();
      env.action_space();
      { env.reset(rng) } -> std::same_as<typename E::observation_type>;
      { env.step(action) } -> std::same_as<StepResult<typename E::observation_type>>;
    };

/// An environment that draws random numbers during an episode (noise, random events).
template <class E>
concept StochasticEnvironment =
    Environment<E> && requires(E& env, PhiloxStream& rng, const typename E::action_type& action) {
      { env.step(action, rng) } -> std::same_as<StepResult<typename E::observation_type>>;
    };

/// Steps an environment, handing it `rng` when it draws random numbers during episodes.
template <Environment E>
StepResult<typename E::observation_type> step_environment(E& env, const typename E::action_type& action,
                                                          PhiloxStream& rng) {
  if constexpr (StochasticEnvironment<E>) {
    return env.step(action, rng);
  } else {
    (void)rng;
    return env.step(action);
  }
}

namespace detail {
template <class Obs>
void check_observation_finite(const Obs& obs, std::string_view source) {
  if constexpr (std::is_floating_point_v<Obs>) {
    RLMED_CHECK(!std::isnan(obs), source, ": observation is NaN");
  } else if constexpr (requires { obs.begin(); obs.end(); }) {
    using E = std::remove_cvref_t<decltype(*obs.begin())>;
    if constexpr (std::is_floating_point_v<E>) {
      std::size_t i = 0;
      for (auto it = obs.begin(); it != obs.end(); ++it, ++i)
        RLMED_CHECK(!std::isnan(*it), source, ": observation element ", i, " is NaN");
    }
  }
}
}  // namespace detail

/// Checks a step result before a learner consumes it: the reward must be finite and a floating
/// observation must hold no NaN. Throws rlmed::Error naming `source`.
template <class Obs>
void check_step(const StepResult<Obs>& result, std::string_view source = "environment") {
  RLMED_CHECK(std::isfinite(result.reward), source, ": step returned reward ", result.reward,
              "; expected a finite number");
  detail::check_observation_finite(result.observation, source);
}

/// Results of one VectorEnv step, one slot per environment (all vectors have num_envs entries).
template <class Obs>
struct VectorStep {
  /// Observation to act on next. Where done(i): the first observation of the NEW episode.
  std::vector<Obs> observation;
  /// Where done(i): the last observation of the episode that ended (bootstrap from it on
  /// truncation). Elsewhere: unspecified (left from an earlier episode end).
  std::vector<Obs> final_observation;
  std::vector<double> reward;
  std::vector<std::uint8_t> terminated;  ///< 0/1
  std::vector<std::uint8_t> truncated;   ///< 0/1
  /// Where done(i): the undiscounted return and step count of the episode that ended.
  std::vector<double> episode_return;
  std::vector<std::int64_t> episode_length;

  [[nodiscard]] bool done(std::size_t i) const noexcept { return terminated[i] != 0 || truncated[i] != 0; }
  void resize(std::size_t n) {
    observation.resize(n);
    final_observation.resize(n);
    reward.assign(n, 0.0);
    terminated.assign(n, 0);
    truncated.assign(n, 0);
    episode_return.assign(n, 0.0);
    episode_length.assign(n, 0);
  }
};

struct VectorEnvConfig {
  index_t num_envs = 1;
  std::uint64_t seed = 0;
  std::uint64_t first_stream = 0;  ///< env i draws from stream first_stream + i
  index_t grain = 2;               ///< fewer envs than this step serially (threads cost ~µs)
};

/// N copies of an environment stepped in parallel with automatic reset.
template <Environment Env>
class VectorEnv {
 public:
  using env_type = Env;
  using observation_type = typename Env::observation_type;
  using action_type = typename Env::action_type;

  /// num_envs copies of `prototype`.
  explicit VectorEnv(const VectorEnvConfig& config, const Env& prototype = Env{})
    requires std::copy_constructible<Env>
      : config_(config) {
    RLMED_CHECK(config.num_envs >= 1, "VectorEnv needs num_envs >= 1, found ", config.num_envs);
    RLMED_CHECK(config.grain >= 1, "VectorEnv needs grain >= 1, found ", config.grain);
    envs_.assign(static_cast<std::size_t>(config.num_envs), prototype);
    init_streams();
  }
  /// Takes ownership of prepared environments (e.g. with different configs).
  VectorEnv(std::vector<Env> envs, std::uint64_t seed, std::uint64_t first_stream = 0, index_t grain = 2)
      : config_{static_cast<index_t>(envs.size()), seed, first_stream, grain}, envs_(std::move(envs)) {
    RLMED_CHECK(!envs_.empty(), "VectorEnv needs at least one environment");
    RLMED_CHECK(grain >= 1, "VectorEnv needs grain >= 1, found ", grain);
    init_streams();
  }

  [[nodiscard]] index_t num_envs() const noexcept { return static_cast<index_t>(envs_.size()); }
  [[nodiscard]] const VectorEnvConfig& config() const noexcept { return config_; }
  [[nodiscard]] Env& env(index_t i) { return envs_.at(static_cast<std::size_t>(i)); }
  /// Env i's generator; its position is part of a checkpoint of the run.
  [[nodiscard]] PhiloxStream& rng(index_t i) { return rngs_.at(static_cast<std::size_t>(i)); }

  /// Resets every environment (continuing each one's stream) and returns the observations.
  const std::vector<observation_type>& reset() {
    const std::size_t n = envs_.size();
    parallel_for(
        0, static_cast<index_t>(n),
        [&](index_t i) {
          const auto k = static_cast<std::size_t>(i);
          result_.observation[k] = envs_[k].reset(rngs_[k]);
          detail::check_observation_finite(result_.observation[k], "VectorEnv reset");
          running_return_[k] = 0.0;
          running_length_[k] = 0;
        },
        config_.grain);
    started_ = true;
    return result_.observation;
  }

  /// Steps env i with actions[i]; ended episodes are reset at once (see VectorStep).
  const VectorStep<observation_type>& step(std::span<const action_type> actions) {
    RLMED_CHECK(started_, "VectorEnv::step before reset()");
    RLMED_CHECK(actions.size() == envs_.size(), "VectorEnv::step got ", actions.size(), " actions for ",
                envs_.size(), " environments");
    parallel_for(
        0, num_envs(),
        [&](index_t i) {
          const auto k = static_cast<std::size_t>(i);
          auto r = step_environment(envs_[k], actions[k], rngs_[k]);
          check_step(r, "VectorEnv environment");
          result_.reward[k] = r.reward;
          result_.terminated[k] = r.terminated ? 1 : 0;
          result_.truncated[k] = r.truncated ? 1 : 0;
          running_return_[k] += r.reward;
          running_length_[k] += 1;
          if (r.terminated || r.truncated) {
            result_.episode_return[k] = running_return_[k];
            result_.episode_length[k] = running_length_[k];
            running_return_[k] = 0.0;
            running_length_[k] = 0;
            result_.final_observation[k] = std::move(r.observation);
            result_.observation[k] = envs_[k].reset(rngs_[k]);
            detail::check_observation_finite(result_.observation[k], "VectorEnv auto-reset");
          } else {
            result_.observation[k] = std::move(r.observation);
          }
        },
        config_.grain);
    for (std::size_t k = 0; k < envs_.size(); ++k) episodes_completed_ += result_.done(k) ? 1 : 0;
    return result_;
  }
  const VectorStep<observation_type>& step(const std::vector<action_type>& actions) {
    return step(std::span<const action_type>(actions));
  }

  /// The observations to act on (after reset() or the last step()).
  [[nodiscard]] const std::vector<observation_type>& observations() const noexcept { return result_.observation; }
  [[nodiscard]] const VectorStep<observation_type>& last_step() const noexcept { return result_; }
  /// Return and length so far of env i's current episode.
  [[nodiscard]] double current_return(index_t i) const { return running_return_.at(static_cast<std::size_t>(i)); }
  [[nodiscard]] std::int64_t current_length(index_t i) const {
    return running_length_.at(static_cast<std::size_t>(i));
  }
  /// Episodes finished over all envs since construction.
  [[nodiscard]] std::int64_t episodes_completed() const noexcept { return episodes_completed_; }

 private:
  void init_streams() {
    const std::size_t n = envs_.size();
    rngs_.clear();
    rngs_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) rngs_.emplace_back(config_.seed, config_.first_stream + i);
    result_.resize(n);
    running_return_.assign(n, 0.0);
    running_length_.assign(n, 0);
  }

  VectorEnvConfig config_;
  std::vector<Env> envs_;
  std::vector<PhiloxStream> rngs_;
  VectorStep<observation_type> result_;
  std::vector<double> running_return_;
  std::vector<std::int64_t> running_length_;
  std::int64_t episodes_completed_ = 0;
  bool started_ = false;
};

/// Copies array observations [N] into a batch tensor [N, K] (what a network consumes).
template <class T, std::size_t K>
void stack_observations_into(std::span<const std::array<T, K>> observations, TensorView<T, 2> out) {
  RLMED_CHECK(out.extent(0) == static_cast<index_t>(observations.size()) && out.extent(1) == static_cast<index_t>(K),
              "stack_observations_into: output shape ", out.shape(), ", expected [", observations.size(), ", ", K, "]");
  for (std::size_t i = 0; i < observations.size(); ++i)
    std::copy(observations[i].begin(), observations[i].end(), out.data() + static_cast<index_t>(i * K));
}
template <class T, std::size_t K>
void stack_observations_into(const std::vector<std::array<T, K>>& observations, TensorView<T, 2> out) {
  stack_observations_into(std::span<const std::array<T, K>>(observations), out);
}

}  // namespace rlmed::rl
