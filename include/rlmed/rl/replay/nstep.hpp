// rlmed/rl/replay/nstep.hpp — n-step transitions (Rainbow, R2D2, Ape-X) in front of any replay buffer.
//
// Design decisions:
//  * The wrapper owns the buffer it feeds (any ReplayBuffer: uniform or prioritized) and keeps,
//    per lane (one lane per environment of a VectorEnv), the last n-1 (obs, action, reward)
//    entries whose n-step return is not complete yet. Lanes are independent: transitions of
//    different environments never mix.
//  * A complete window emits (obs_t, a_t, R = Σ_{k<n} γ^k r_{t+k}, obs_{t+n}, done = 0, steps = n).
//    At an episode end every pending entry is flushed with the sum cut at the end:
//      - termination: done = 1 (no bootstrap; the stored next_obs is the terminal observation);
//      - truncation: done = 0, bootstrap from the final observation with γ^steps, steps < n.
//    With steps stored per transition the learner's target is r + γ^steps (1 - done) V(next_obs)
//    for every transition (transition.hpp).
//  * R is summed in double in time order and rounded to float once.
//  * Pending entries live in preallocated tensors [lanes, n, ...]; save/load include them so a
//    run resumed mid-episode emits exactly the transitions the uninterrupted run would.
#pragma once

#include <cmath>
#include <span>
#include <string>
#include <utility>

#include "rlmed/rl/replay/transition.hpp"
#include "rlmed/rl/replay/uniform.hpp"

namespace rlmed::rl::replay {

struct NStepConfig {
  int n = 3;
  double gamma = 0.99;
  index_t lanes = 1;  ///< independent streams of transitions (environments)
};

template <ReplayBuffer Buffer>
class NStep {
 public:
  using buffer_type = Buffer;
  using obs_type = typename Buffer::obs_type;
  using action_type = typename Buffer::action_type;
  static constexpr std::size_t obs_rank = Buffer::obs_rank;
  using batch_type = typename Buffer::batch_type;
  using obs_view = TensorView<const obs_type, obs_rank>;

  NStep(const NStepConfig& config, Buffer buffer) : config_(config), buffer_(std::move(buffer)) {
    RLMED_CHECK(config.n >= 1, "n-step replay: n must be >= 1, found ", config.n);
    RLMED_CHECK(config.gamma >= 0 && config.gamma <= 1, "n-step replay: gamma must be in [0, 1], found ", config.gamma);
    RLMED_CHECK(config.lanes >= 1, "n-step replay: lanes must be >= 1, found ", config.lanes);
    const auto probe = buffer_.make_batch(1);
    Shape<obs_rank + 2> s{};
    s[0] = config.lanes;
    s[1] = config.n;
    for (std::size_t i = 0; i < obs_rank; ++i) s[i + 2] = probe.obs.extent(i + 1);
    obs_ = Tensor<obs_type, obs_rank + 2>(s);
    action_ = Tensor<action_type, 3>(Shape<3>{config.lanes, config.n, probe.action.extent(1)});
    reward_ = Tensor<double, 2>(Shape<2>{config.lanes, config.n});
    pending_ = Tensor<std::int64_t, 2>(Shape<2>{config.lanes, 2});  // [lane] = (first entry, count)
  }

  [[nodiscard]] const NStepConfig& config() const noexcept { return config_; }
  [[nodiscard]] Buffer& buffer() noexcept { return buffer_; }
  [[nodiscard]] const Buffer& buffer() const noexcept { return buffer_; }
  [[nodiscard]] batch_type make_batch(index_t b) const { return buffer_.make_batch(b); }
  [[nodiscard]] index_t size() const { return buffer_.size(); }
  void sample_into(PhiloxStream& rng, batch_type& batch) { buffer_.sample_into(rng, batch); }
  /// Entries of a lane still waiting for their n-step return.
  [[nodiscard]] index_t pending(index_t lane) const { return pending_.at(lane, 1); }

  /// Records one environment step of `lane`; writes every n-step transition it completes.
  void add(index_t lane, obs_view obs, std::span<const action_type> action, double reward, obs_view next_obs,
           bool terminated, bool truncated) {
    RLMED_CHECK(lane >= 0 && lane < config_.lanes, "n-step replay: lane ", lane, " outside [0, ", config_.lanes, ")");
    const auto expected_shape = obs_.sub(0).sub(0).shape();
    RLMED_CHECK(obs.shape() == expected_shape && next_obs.shape() == expected_shape,
                "n-step replay: observation shapes ", obs.shape(), " and ", next_obs.shape(), ", expected ",
                expected_shape);
    RLMED_CHECK(static_cast<index_t>(action.size()) == action_.extent(2), "n-step replay: action has ", action.size(),
                " components, expected ", action_.extent(2));
    RLMED_CHECK(std::isfinite(reward), "n-step replay: reward is ", reward, "; expected a finite number");
    detail::check_finite(obs, "observation");
    detail::check_finite(next_obs, "next observation");
    const index_t n = config_.n;
    index_t& first = pending_(lane, 0);
    index_t& count = pending_(lane, 1);
    const index_t slot = (first + count) % n;
    copy(obs_.sub(lane).sub(slot), obs);
    std::copy(action.begin(), action.end(), action_.sub(lane).sub(slot).data());
    reward_(lane, slot) = reward;
    ++count;

    if (terminated || truncated) {
      while (count > 0) emit(lane, next_obs, terminated);
      first = 0;
    } else if (count == n) {
      emit(lane, next_obs, false);
    }
  }

  /// Drops a lane's pending entries (e.g. the environment was reset from outside).
  void clear_lane(index_t lane) {
    RLMED_CHECK(lane >= 0 && lane < config_.lanes, "n-step replay: lane ", lane, " outside [0, ", config_.lanes, ")");
    pending_(lane, 0) = 0;
    pending_(lane, 1) = 0;
  }

  /// Buffer contents (under `prefix`) and pending entries (under `prefix` + "nstep.").
  void save(io::SafetensorsWriter& w, const std::string& prefix) const {
    buffer_.save(w, prefix);
    w.add(prefix + "nstep.obs", obs_);
    w.add(prefix + "nstep.action", action_);
    w.add(prefix + "nstep.reward", reward_);
    w.add(prefix + "nstep.pending", pending_);
  }
  void load(const io::SafetensorsReader& r, const std::string& prefix) {
    detail::expect_tensor(r, prefix + "nstep.obs", io::dtype_of<obs_type>(), {obs_.shape().begin(), obs_.shape().end()});
    detail::expect_tensor(r, prefix + "nstep.action", io::dtype_of<action_type>(),
                          {action_.shape().begin(), action_.shape().end()});
    detail::expect_tensor(r, prefix + "nstep.reward", io::DType::F64, {config_.lanes, config_.n});
    detail::expect_tensor(r, prefix + "nstep.pending", io::DType::I64, {config_.lanes, 2});
    const auto pending = r.read<std::int64_t, 2>(prefix + "nstep.pending");
    for (index_t l = 0; l < config_.lanes; ++l)
      RLMED_CHECK(pending(l, 0) >= 0 && pending(l, 0) < config_.n && pending(l, 1) >= 0 && pending(l, 1) < config_.n,
                  r.source(), ": n-step lane ", l, " has first ", pending(l, 0), " and count ", pending(l, 1),
                  "; expected both in [0, ", config_.n, ")");
    buffer_.load(r, prefix);
    r.read_into(prefix + "nstep.obs", obs_.view());
    r.read_into(prefix + "nstep.action", action_.view());
    r.read_into(prefix + "nstep.reward", reward_.view());
    copy(pending_, pending);
  }

 private:
  // Writes the oldest pending entry of `lane` with its return summed over every pending entry.
  void emit(index_t lane, obs_view bootstrap_obs, bool done) {
    const index_t n = config_.n;
    index_t& first = pending_(lane, 0);
    index_t& count = pending_(lane, 1);
    double ret = 0.0, discount = 1.0;
    for (index_t k = 0; k < count; ++k) {
      ret += discount * reward_(lane, (first + k) % n);
      discount *= config_.gamma;
    }
    const auto a = action_.sub(lane).sub(first);
    buffer_.add(TensorView<const obs_type, obs_rank>(obs_.sub(lane).sub(first)),
                std::span<const action_type>(a.data(), static_cast<std::size_t>(a.size())), static_cast<float>(ret),
                bootstrap_obs, done, static_cast<int>(count));
    first = (first + 1) % n;
    --count;
  }

  NStepConfig config_;
  Buffer buffer_;
  Tensor<obs_type, obs_rank + 2> obs_;  // [lanes, n, *obs_shape]
  Tensor<action_type, 3> action_;       // [lanes, n, action_dim]
  Tensor<double, 2> reward_;            // [lanes, n]
  Tensor<std::int64_t, 2> pending_;     // [lanes, 2]: first entry, count
};

}  // namespace rlmed::rl::replay
