// rlmed/rl/replay/her.hpp — hindsight experience replay (Andrychowicz et al., NeurIPS 2017),
// the "future" strategy, in front of any replay buffer of flat float observations.
//
// Design decisions:
//  * Goal-conditioned steps arrive as (obs, desired goal, action, reward, next_obs, achieved goal
//    of next_obs, terminated) and are kept for the whole episode in preallocated tensors; at
//    end_episode every step t is stored once with its own goal and k more times with a goal
//    achieved later in the same episode: g' = achieved(next_obs_f), f ~ U{t, ..., T-1} (the goal
//    reached by step t itself is a valid "future" goal, as in the paper's implementation).
//    Relabelled rewards (and termination) come from the user's goal function, evaluated on the
//    achieved goal of next_obs_t and g'.
//  * The buffer stores policy inputs: concat(obs, goal) and concat(next_obs, goal), so the
//    learner needs no HER knowledge. The buffer's observation size must be obs_dim + goal_dim.
//  * Relabelling draws from the PhiloxStream passed to end_episode, in the fixed order
//    (t ascending, relabel j ascending): the stored data is a pure function of the stream.
//  * The open episode is part of save/load, so a resumed run stores the same transitions.
#pragma once

#include <algorithm>
#include <concepts>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "rlmed/core/philox.hpp"
#include "rlmed/rl/replay/transition.hpp"
#include "rlmed/rl/replay/uniform.hpp"

namespace rlmed::rl::replay {

/// What a goal function returns for (achieved goal, goal): the reward and whether it terminates.
struct GoalOutcome {
  float reward = 0.0f;
  bool terminated = false;
};

/// fn(achieved, goal) returning GoalOutcome, or a number (the reward; terminated = false).
template <class F>
concept GoalFunction = requires(F& f, std::span<const float> achieved, std::span<const float> goal) {
  requires std::same_as<std::invoke_result_t<F&, std::span<const float>, std::span<const float>>, GoalOutcome> ||
               std::is_arithmetic_v<std::invoke_result_t<F&, std::span<const float>, std::span<const float>>>;
};

struct HerConfig {
  index_t obs_dim = 0;
  index_t goal_dim = 0;
  index_t action_dim = 1;
  index_t max_episode_steps = 0;
  int k = 4;  ///< relabelled copies per transition (the paper's best for "future": 4 or 8)
};

template <ReplayBuffer Buffer, GoalFunction GoalFn>
  requires(Buffer::obs_rank == 1 && std::is_same_v<typename Buffer::obs_type, float>)
class Her {
 public:
  using buffer_type = Buffer;
  using action_type = typename Buffer::action_type;
  using batch_type = typename Buffer::batch_type;

  Her(const HerConfig& config, Buffer buffer, GoalFn goal_fn)
      : config_(config), buffer_(std::move(buffer)), goal_fn_(std::move(goal_fn)) {
    RLMED_CHECK(config.obs_dim >= 1 && config.goal_dim >= 1 && config.action_dim >= 1,
                "HER: obs_dim, goal_dim and action_dim must be >= 1, found ", config.obs_dim, ", ", config.goal_dim,
                ", ", config.action_dim);
    RLMED_CHECK(config.max_episode_steps >= 1, "HER: max_episode_steps must be >= 1, found ",
                config.max_episode_steps);
    RLMED_CHECK(config.k >= 0, "HER: k must be >= 0, found ", config.k);
    const auto probe = buffer_.make_batch(1);
    RLMED_CHECK(probe.obs.extent(1) == config.obs_dim + config.goal_dim && probe.action.extent(1) == config.action_dim,
                "HER: the buffer stores observations of size ", probe.obs.extent(1), " and actions of size ",
                probe.action.extent(1), "; expected obs_dim + goal_dim = ", config.obs_dim + config.goal_dim,
                " and action_dim = ", config.action_dim);
    const index_t t = config.max_episode_steps;
    obs_ = Tensor<float, 2>(Shape<2>{t, config.obs_dim});
    next_obs_ = Tensor<float, 2>(Shape<2>{t, config.obs_dim});
    desired_ = Tensor<float, 2>(Shape<2>{t, config.goal_dim});
    achieved_ = Tensor<float, 2>(Shape<2>{t, config.goal_dim});
    action_ = Tensor<action_type, 2>(Shape<2>{t, config.action_dim});
    reward_ = Tensor<float, 1>(Shape<1>{t});
    terminated_ = Tensor<std::uint8_t, 1>(Shape<1>{t});
    cat_obs_ = Tensor<float, 1>(Shape<1>{config.obs_dim + config.goal_dim});
    cat_next_ = Tensor<float, 1>(Shape<1>{config.obs_dim + config.goal_dim});
  }

  [[nodiscard]] const HerConfig& config() const noexcept { return config_; }
  [[nodiscard]] Buffer& buffer() noexcept { return buffer_; }
  [[nodiscard]] const Buffer& buffer() const noexcept { return buffer_; }
  [[nodiscard]] batch_type make_batch(index_t b) const { return buffer_.make_batch(b); }
  [[nodiscard]] index_t size() const { return buffer_.size(); }
  void sample_into(PhiloxStream& rng, batch_type& batch) { buffer_.sample_into(rng, batch); }
  /// Steps recorded in the open episode.
  [[nodiscard]] index_t episode_length() const noexcept { return length_; }

  /// Records one step of the open episode (nothing reaches the buffer before end_episode).
  void add(std::span<const float> obs, std::span<const float> desired_goal, std::span<const action_type> action,
           float reward, std::span<const float> next_obs, std::span<const float> next_achieved_goal, bool terminated) {
    RLMED_CHECK(length_ < config_.max_episode_steps, "HER: episode longer than max_episode_steps = ",
                config_.max_episode_steps, "; call end_episode");
    check_vector(obs, config_.obs_dim, "observation");
    check_vector(next_obs, config_.obs_dim, "next observation");
    check_vector(desired_goal, config_.goal_dim, "desired goal");
    check_vector(next_achieved_goal, config_.goal_dim, "achieved goal");
    RLMED_CHECK(static_cast<index_t>(action.size()) == config_.action_dim, "HER: action has ", action.size(),
                " components, expected ", config_.action_dim);
    RLMED_CHECK(std::isfinite(reward), "HER: reward is ", reward, "; expected a finite number");
    const index_t t = length_;
    std::copy(obs.begin(), obs.end(), obs_.sub(t).data());
    std::copy(next_obs.begin(), next_obs.end(), next_obs_.sub(t).data());
    std::copy(desired_goal.begin(), desired_goal.end(), desired_.sub(t).data());
    std::copy(next_achieved_goal.begin(), next_achieved_goal.end(), achieved_.sub(t).data());
    std::copy(action.begin(), action.end(), action_.sub(t).data());
    reward_(t) = reward;
    terminated_(t) = terminated ? 1 : 0;
    ++length_;
  }

  /// Stores the open episode: each step with its own goal, then k "future" relabels of it.
  void end_episode(PhiloxStream& rng) {
    const index_t steps = length_;
    for (index_t t = 0; t < steps; ++t) {
      store(t, desired_.sub(t), reward_(t), terminated_(t) != 0);
      for (int j = 0; j < config_.k; ++j) {
        const index_t f = t + static_cast<index_t>(rng.uniform_int(static_cast<std::uint32_t>(steps - t)));
        const auto goal = achieved_.sub(f);
        const GoalOutcome outcome = evaluate(span_of(achieved_.sub(t)), span_of(goal));
        RLMED_CHECK(std::isfinite(outcome.reward), "HER: goal function returned reward ", outcome.reward);
        store(t, goal, outcome.reward, outcome.terminated);
      }
    }
    length_ = 0;
  }
  /// Forgets the open episode without storing it.
  void discard_episode() noexcept { length_ = 0; }

  void save(io::SafetensorsWriter& w, const std::string& prefix) const {
    buffer_.save(w, prefix);
    const index_t t = length_;
    w.add(prefix + "her.obs", obs_.slice(0, t));
    w.add(prefix + "her.next_obs", next_obs_.slice(0, t));
    w.add(prefix + "her.desired", desired_.slice(0, t));
    w.add(prefix + "her.achieved", achieved_.slice(0, t));
    w.add(prefix + "her.action", action_.slice(0, t));
    w.add(prefix + "her.reward", reward_.slice(0, t));
    w.add(prefix + "her.terminated", terminated_.slice(0, t));
  }
  void load(const io::SafetensorsReader& r, const std::string& prefix) {
    const io::TensorInfo& info = r.info(prefix + "her.reward");
    RLMED_CHECK(info.shape.size() == 1 && info.shape[0] >= 0 && info.shape[0] <= config_.max_episode_steps, r.source(),
                ": HER episode has shape ", info.shape, "; expected at most ", config_.max_episode_steps, " steps");
    const index_t t = info.shape[0];
    detail::expect_tensor(r, prefix + "her.obs", io::DType::F32, {t, config_.obs_dim});
    detail::expect_tensor(r, prefix + "her.next_obs", io::DType::F32, {t, config_.obs_dim});
    detail::expect_tensor(r, prefix + "her.desired", io::DType::F32, {t, config_.goal_dim});
    detail::expect_tensor(r, prefix + "her.achieved", io::DType::F32, {t, config_.goal_dim});
    detail::expect_tensor(r, prefix + "her.action", io::dtype_of<action_type>(), {t, config_.action_dim});
    detail::expect_tensor(r, prefix + "her.reward", io::DType::F32, {t});
    detail::expect_tensor(r, prefix + "her.terminated", io::DType::U8, {t});
    buffer_.load(r, prefix);
    r.read_into(prefix + "her.obs", obs_.slice(0, t));
    r.read_into(prefix + "her.next_obs", next_obs_.slice(0, t));
    r.read_into(prefix + "her.desired", desired_.slice(0, t));
    r.read_into(prefix + "her.achieved", achieved_.slice(0, t));
    r.read_into(prefix + "her.action", action_.slice(0, t));
    r.read_into(prefix + "her.reward", reward_.slice(0, t));
    r.read_into(prefix + "her.terminated", terminated_.slice(0, t));
    length_ = t;
  }

 private:
  static std::span<const float> span_of(TensorView<const float, 1> v) {
    return {v.data(), static_cast<std::size_t>(v.size())};
  }
  static std::span<const float> span_of(TensorView<float, 1> v) {
    return {v.data(), static_cast<std::size_t>(v.size())};
  }
  static void check_vector(std::span<const float> v, index_t expected, const char* what) {
    RLMED_CHECK(static_cast<index_t>(v.size()) == expected, "HER: ", what, " has ", v.size(), " components, expected ",
                expected);
    for (std::size_t i = 0; i < v.size(); ++i) RLMED_CHECK(!std::isnan(v[i]), "HER: ", what, " component ", i, " is NaN");
  }

  GoalOutcome evaluate(std::span<const float> achieved, std::span<const float> goal) {
    using R = std::invoke_result_t<GoalFn&, std::span<const float>, std::span<const float>>;
    if constexpr (std::is_same_v<R, GoalOutcome>) {
      return goal_fn_(achieved, goal);
    } else {
      return GoalOutcome{static_cast<float>(goal_fn_(achieved, goal)), false};
    }
  }

  // Writes step t with goal g: concat(obs_t, g) -> concat(next_obs_t, g).
  void store(index_t t, TensorView<const float, 1> goal, float reward, bool terminated) {
    const index_t od = config_.obs_dim;
    std::copy(obs_.sub(t).begin(), obs_.sub(t).end(), cat_obs_.data());
    std::copy(goal.begin(), goal.end(), cat_obs_.data() + od);
    std::copy(next_obs_.sub(t).begin(), next_obs_.sub(t).end(), cat_next_.data());
    std::copy(goal.begin(), goal.end(), cat_next_.data() + od);
    const auto a = action_.sub(t);
    buffer_.add(cat_obs_.view(), std::span<const action_type>(a.data(), static_cast<std::size_t>(a.size())), reward,
                cat_next_.view(), terminated, 1);
  }
  void store(index_t t, TensorView<float, 1> goal, float reward, bool terminated) {
    store(t, TensorView<const float, 1>(goal), reward, terminated);
  }

  HerConfig config_;
  Buffer buffer_;
  GoalFn goal_fn_;
  index_t length_ = 0;
  Tensor<float, 2> obs_;                // [T, obs_dim]
  Tensor<float, 2> next_obs_;           // [T, obs_dim]
  Tensor<float, 2> desired_;            // [T, goal_dim]
  Tensor<float, 2> achieved_;           // [T, goal_dim] achieved goal of next_obs
  Tensor<action_type, 2> action_;       // [T, action_dim]
  Tensor<float, 1> reward_;             // [T]
  Tensor<std::uint8_t, 1> terminated_;  // [T]
  Tensor<float, 1> cat_obs_;            // [obs_dim + goal_dim] scratch
  Tensor<float, 1> cat_next_;           // [obs_dim + goal_dim] scratch
};

}  // namespace rlmed::rl::replay
