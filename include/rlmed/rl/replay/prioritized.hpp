// rlmed/rl/replay/prioritized.hpp — proportional prioritized experience replay (Schaul et al.,
// "Prioritized Experience Replay", ICLR 2016).
//
// Design decisions:
//  * Transition i is drawn with P(i) = p_i^α / Σ_k p_k^α; the sum tree stores p_i^α, a min tree
//    the smallest one. p_i = |δ_i| + ε after an update; a new transition gets the largest p seen so
//    far (1 at the start), so it is replayed at least once soon.
//  * Stratified sampling: [0, total) is cut into B equal segments and one mass is drawn uniformly
//    in each (the paper's Appendix B.2.1), which lowers the variance of the batch composition.
//  * Importance weights w_i = (N·P(i))^-β normalised by the largest weight any stored transition
//    could get, max_j w_j = (N·min_j P(j))^-β (as the OpenAI baselines implementation does), so
//    weights are in (0, 1] and do not depend on which other transitions share the batch.
//  * β anneals linearly from β0 to 1 over beta_steps; the step counter advances once per
//    sample_into call, or is set from outside (set_beta_step, e.g. to the environment step).
//  * The counter, the largest priority and the tree leaves are part of save/load: exact resume.
#pragma once

#include <algorithm>
#include <cmath>
#include <span>
#include <string>

#include "rlmed/core/philox.hpp"
#include "rlmed/rl/replay/sum_tree.hpp"
#include "rlmed/rl/replay/transition.hpp"
#include "rlmed/rl/replay/uniform.hpp"

namespace rlmed::rl::replay {

template <std::size_t ObsRank = 1>
struct PrioritizedConfig {
  index_t capacity = 100'000;
  Shape<ObsRank> obs_shape{};
  index_t action_dim = 1;
  double alpha = 0.6;              ///< priority exponent (0: uniform)
  double beta0 = 0.4;              ///< initial importance-sampling exponent
  std::int64_t beta_steps = 100'000;  ///< steps over which β reaches 1
  double epsilon = 1e-6;           ///< added to |δ| so no transition becomes unsampleable
};

template <class Obs = float, std::size_t ObsRank = 1, class Act = float>
class Prioritized {
 public:
  using obs_type = Obs;
  using action_type = Act;
  static constexpr std::size_t obs_rank = ObsRank;
  using batch_type = TransitionBatch<Obs, ObsRank, Act>;
  using obs_view = TensorView<const Obs, ObsRank>;
  using config_type = PrioritizedConfig<ObsRank>;

  explicit Prioritized(const config_type& config)
      : config_(config),
        storage_(config.capacity, config.obs_shape, config.action_dim),
        sums_(config.capacity),
        mins_(config.capacity) {
    RLMED_CHECK(config.alpha >= 0 && std::isfinite(config.alpha), "prioritized replay: alpha must be >= 0, found ",
                config.alpha);
    RLMED_CHECK(config.beta0 >= 0 && config.beta0 <= 1, "prioritized replay: beta0 must be in [0, 1], found ",
                config.beta0);
    RLMED_CHECK(config.beta_steps >= 1, "prioritized replay: beta_steps must be >= 1, found ", config.beta_steps);
    RLMED_CHECK(config.epsilon > 0 && std::isfinite(config.epsilon), "prioritized replay: epsilon must be > 0, found ",
                config.epsilon);
  }

  [[nodiscard]] const config_type& config() const noexcept { return config_; }
  [[nodiscard]] index_t capacity() const noexcept { return storage_.capacity(); }
  [[nodiscard]] index_t size() const noexcept { return storage_.size(); }
  [[nodiscard]] index_t cursor() const noexcept { return storage_.cursor(); }
  [[nodiscard]] const TransitionStorage<Obs, ObsRank, Act>& storage() const noexcept { return storage_; }
  [[nodiscard]] batch_type make_batch(index_t batch_size) const { return storage_.make_batch(batch_size); }

  /// β at the current step: β0 + (1 - β0) · min(1, step / beta_steps).
  [[nodiscard]] double beta() const noexcept {
    const double frac = std::min(1.0, static_cast<double>(beta_step_) / static_cast<double>(config_.beta_steps));
    return config_.beta0 + (1.0 - config_.beta0) * frac;
  }
  [[nodiscard]] std::int64_t beta_step() const noexcept { return beta_step_; }
  void set_beta_step(std::int64_t step) {
    RLMED_CHECK(step >= 0, "prioritized replay: beta step must be >= 0, found ", step);
    beta_step_ = step;
  }
  /// The largest raw priority |δ| + ε seen (new transitions get it, raised to α).
  [[nodiscard]] double max_priority() const noexcept { return max_priority_; }
  /// Stored p_i^α of a slot.
  [[nodiscard]] double priority_alpha(index_t slot) const { return sums_.get(slot); }
  /// P(i) of a slot.
  [[nodiscard]] double probability(index_t slot) const { return sums_.get(slot) / sums_.total(); }

  index_t add(obs_view obs, std::span<const Act> action, float reward, obs_view next_obs, bool terminated,
              int steps = 1) {
    const index_t slot = storage_.add(obs, action, reward, next_obs, terminated, steps);
    const double p = std::pow(max_priority_, config_.alpha);
    sums_.set(slot, p);
    mins_.set(slot, p);
    return slot;
  }

  /// Stratified proportional sample of batch.size() transitions with importance weights at the
  /// current β; then advances the β step by one.
  void sample_into(PhiloxStream& rng, batch_type& batch) {
    RLMED_CHECK(size() > 0, "prioritized replay: cannot sample from an empty buffer");
    storage_.check_batch(batch);
    const index_t b = batch.size();
    const double total = sums_.total();
    const double segment = total / static_cast<double>(b);
    const double n = static_cast<double>(size());
    const double beta_now = beta();
    const double max_weight = std::pow(n * (mins_.min() / total), -beta_now);
    auto* slots = batch.index.data();
    for (index_t i = 0; i < b; ++i) {
      const double mass = (static_cast<double>(i) + rng.uniform_double()) * segment;
      slots[i] = sums_.find_prefix(mass);
      const double w = std::pow(n * (sums_.get(slots[i]) / total), -beta_now);
      batch.weight(i) = static_cast<float>(w / max_weight);
    }
    storage_.gather_into(std::span<const std::int64_t>(slots, static_cast<std::size_t>(b)), batch);
    ++beta_step_;
  }

  /// Sets p_i = |δ_i| + ε for the sampled slots (batch.index) from their TD errors.
  void update_priorities(std::span<const std::int64_t> slots, std::span<const float> td_errors) {
    RLMED_CHECK(slots.size() == td_errors.size(), "prioritized replay: ", slots.size(), " slots but ",
                td_errors.size(), " TD errors");
    for (std::size_t i = 0; i < slots.size(); ++i) {
      RLMED_CHECK(slots[i] >= 0 && slots[i] < size(), "prioritized replay: slot ", slots[i],
                  " outside the filled range [0, ", size(), ")");
      RLMED_CHECK(std::isfinite(td_errors[i]), "prioritized replay: TD error ", i, " is ", td_errors[i],
                  "; expected a finite number");
    }
    for (std::size_t i = 0; i < slots.size(); ++i) {
      const double p = std::abs(static_cast<double>(td_errors[i])) + config_.epsilon;
      max_priority_ = std::max(max_priority_, p);
      const double pa = std::pow(p, config_.alpha);
      sums_.set(slots[i], pa);
      mins_.set(slots[i], pa);
    }
  }
  void update_priorities(const Tensor<std::int64_t, 1>& slots, const Tensor<float, 1>& td_errors) {
    update_priorities(std::span<const std::int64_t>(slots.data(), static_cast<std::size_t>(slots.size())),
                      std::span<const float>(td_errors.data(), static_cast<std::size_t>(td_errors.size())));
  }

  void save(io::SafetensorsWriter& w, const std::string& prefix) const {
    storage_.save(w, prefix);
    sums_.save(w, prefix + "priority");
    Tensor<double, 1> state(Shape<1>{2});
    state(0) = max_priority_;
    state(1) = static_cast<double>(beta_step_);
    w.add(prefix + "per_state", state);
  }
  void load(const io::SafetensorsReader& r, const std::string& prefix) {
    storage_.check_load(r, prefix);
    sums_.check_load(r, prefix + "priority");
    detail::expect_tensor(r, prefix + "per_state", io::DType::F64, {2});
    const auto state = r.read<double, 1>(prefix + "per_state");
    RLMED_CHECK(state(0) > 0 && std::isfinite(state(0)) && state(1) >= 0, r.source(), ": prioritized replay '", prefix,
                "' has max priority ", state(0), " and beta step ", state(1));
    storage_.load_checked(r, prefix);
    sums_.load(r, prefix + "priority");
    for (index_t i = 0; i < capacity(); ++i) {
      const double p = sums_.get(i);
      mins_.set(i, i < size() ? p : MinOp::identity());
    }
    max_priority_ = state(0);
    beta_step_ = static_cast<std::int64_t>(state(1));
  }

 private:
  config_type config_;
  TransitionStorage<Obs, ObsRank, Act> storage_;
  SumTree sums_;   // p_i^α
  MinTree mins_;   // p_i^α (+inf for empty slots)
  double max_priority_ = 1.0;
  std::int64_t beta_step_ = 0;
};

static_assert(PrioritizedReplayBuffer<Prioritized<float, 1, float>>);

}  // namespace rlmed::rl::replay
