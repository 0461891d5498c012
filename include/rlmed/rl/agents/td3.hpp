// rlmed/rl/agents/td3.hpp — deterministic-policy actor-critic: TD3 (Fujimoto et al., "Addressing
// Function Approximation Error in Actor-Critic Methods", ICML 2018) and, as its special case,
// DDPG (Lillicrap et al. 2016; see ddpg.hpp).
//
// Design decisions:
//  * One engine, DeterministicActorCritic<Env, Actor, Critic, NumCritics, Noise, ...>; TD3 is it
//    with two critics, target policy smoothing and delayed actor updates, DDPG with one critic,
//    no smoothing, an actor update every step and Ornstein–Uhlenbeck exploration. What differs in
//    structure is a template argument (number of critics, noise process), what differs in
//    numbers is the config (smoothing noise 0 and delay 1 for DDPG).
//  * The actor spec maps s to a ∈ [-1, 1]^A (ends in nn::Tanh); the critic spec maps [s, a] to one
//    value. Actions are normalised as in actor_critic_common.hpp.
//  * One gradient step (B the batch):
//      1. a' = clip(π̄(s') + clip(ε, −c, c), −1, 1), ε ~ N(0, σ̃²) per component (TD3's target
//         policy smoothing; σ̃ = 0 gives DDPG's a' = π̄(s'));
//      2. y = r + γ^n (1 − d) min_i Q̄_i(s', a');
//      3. critics: Σ_i mean (Q_i(s, a) − y)² (the TD3 reference's sum of MSEs), one step;
//      4. every policy_delay-th step: actor J = −mean Q_0(s, π(s)) through the first critic,
//         one step, then Polyak τ on the target actor and target critics.
//    Targets are updated with the actor (TD3's delayed target updates; every step for DDPG).
//  * Paper defaults. TD3 (td3_defaults): Adam 10⁻³ for actor and critics, batch 100, τ 0.005,
//    γ 0.99, σ̃ 0.2, c 0.5, delay 2, exploration N(0, 0.1²), 10⁴ uniform random start steps,
//    replay 10⁶ (the paper's 400-300 ReLU layers are the network specs' business).
//    DDPG (ddpg_defaults, documented in ddpg.hpp): actor 10⁻⁴, critic 10⁻³ with L2 weight decay 10⁻², τ 10⁻³,
//    batch 64, OU θ 0.15, σ 0.2 (dt = 1, the paper's process).
//  * Determinism and resume as for SAC: four Philox streams (initialisation 0, acting 1, replay
//    sampling 2, target smoothing 3); checkpoints hold networks, targets, optimisers, noise
//    states, counters, stream positions and the replay contents.
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <span>
#include <string>

#include "rlmed/nn/nn.hpp"
#include "rlmed/rl/agents/actor_critic_common.hpp"
#include "rlmed/rl/replay/uniform.hpp"
#include "rlmed/rl/target_sync.hpp"
#include "rlmed/rl/train_loop.hpp"

namespace rlmed::rl::agents {

template <class NoiseConfig>
struct DeterministicActorCriticConfig {
  double gamma = 0.99;
  double tau = 0.005;                  ///< Polyak rate of target actor and critics
  double actor_lr = 1e-3;
  double critic_lr = 1e-3;
  double critic_weight_decay = 0.0;    ///< L2 penalty in the critic optimiser (DDPG: 1e-2)
  index_t batch_size = 100;
  index_t buffer_capacity = 1'000'000;
  std::int64_t random_steps = 10'000;     ///< uniform random actions for the first env steps
  std::int64_t learning_starts = 10'000;  ///< first gradient step at this many env steps
  std::int64_t train_every = 1;
  std::int64_t gradient_steps = 1;
  std::int64_t policy_delay = 2;       ///< critic steps per actor (and target) step
  double target_noise = 0.2;           ///< σ̃ of the target policy smoothing (0: none)
  double target_noise_clip = 0.5;      ///< c
  NoiseConfig exploration{};           ///< exploration noise in policy units
  double max_grad_norm = 0.0;          ///< > 0: clip gradients by global norm
  index_t num_envs = 1;
  std::uint64_t seed = 0;
};

/// a'_bj = clip(μ_bj + clip(ε_bj, −c, c), −1, 1): TD3's smoothed target actions from the target
/// actor's output μ [B, A] and noise ε [B, A] (already scaled by σ̃).
template <class T>
void smoothed_target_actions_into(TensorView<const T, 2> mu, TensorView<const T, 2> noise, double noise_clip,
                                  TensorView<T, 2> out) {
  RLMED_CHECK(mu.shape() == noise.shape() && mu.shape() == out.shape(), "target smoothing: actions ", mu.shape(),
              ", noise ", noise.shape(), ", output ", out.shape(), " must have one shape");
  RLMED_CHECK(noise_clip >= 0, "target smoothing: noise clip must be >= 0, found ", noise_clip);
  const T c = static_cast<T>(noise_clip);
  for (index_t i = 0; i < mu.size(); ++i) {
    RLMED_CHECK(!std::isnan(mu.data()[i]) && !std::isnan(noise.data()[i]), "target smoothing: NaN at element ", i);
    const T e = std::clamp(noise.data()[i], -c, c);
    out.data()[i] = std::clamp(mu.data()[i] + e, T(-1), T(1));
  }
}

/// min_i q_ib into out [B] (clipped double-Q).
template <class T>
void min_over_critics_into(TensorView<const T, 2> q, TensorView<T, 1> out) {
  RLMED_CHECK(out.size() == q.extent(1), "min over critics: ", out.size(), " outputs for ", q.extent(1), " samples");
  for (index_t b = 0; b < q.extent(1); ++b) {
    T m = q(0, b);
    for (index_t i = 1; i < q.extent(0); ++i) m = std::min(m, q(i, b));
    out(b) = m;
  }
}

using Td3Config = DeterministicActorCriticConfig<noise::Gaussian::Config>;

/// TD3's paper defaults (Fujimoto et al. 2018, section 6 and appendix C).
inline Td3Config td3_defaults() {
  Td3Config c;
  c.gamma = 0.99;
  c.tau = 0.005;
  c.actor_lr = 1e-3;
  c.critic_lr = 1e-3;
  c.batch_size = 100;
  c.random_steps = 10'000;
  c.learning_starts = 10'000;
  c.policy_delay = 2;
  c.target_noise = 0.2;
  c.target_noise_clip = 0.5;
  c.exploration.sigma = 0.1;
  return c;
}

/// DDPG's paper defaults (Lillicrap et al. 2016; see ddpg.hpp).
using DdpgConfig = DeterministicActorCriticConfig<noise::OrnsteinUhlenbeck::Config>;
inline DdpgConfig ddpg_defaults() {
  DdpgConfig c;
  c.gamma = 0.99;
  c.tau = 0.001;
  c.actor_lr = 1e-4;
  c.critic_lr = 1e-3;
  c.critic_weight_decay = 1e-2;
  c.batch_size = 64;
  c.random_steps = 0;
  c.learning_starts = 64;
  c.policy_delay = 1;
  c.target_noise = 0.0;
  c.target_noise_clip = 0.0;
  c.exploration = explore::OrnsteinUhlenbeckConfig{0.15, 0.2, 1.0, 0.0, 0.0};
  return c;
}

template <ContinuousControlEnv Env, class ActorSpec, class CriticSpec, int NumCritics, ActionNoise Noise,
          class Replay = replay::Uniform<float, 1, float>, class TargetSync = sync::Polyak,
          template <class> class Optimizer = nn::optim::Adam>
class DeterministicActorCritic {
  using Traits = ContinuousEnvTraits<Env>;

 public:
  using T = float;
  using env_type = Env;
  using observation_type = typename Traits::observation_type;
  using action_type = typename Traits::action_type;
  static constexpr index_t obs_dim = Traits::obs_dim;
  static constexpr index_t act_dim = Traits::act_dim;
  static constexpr int num_critics = NumCritics;
  using Actor = nn::Model<ActorSpec, T>;
  using Critics = CriticEnsemble<CriticSpec, T, NumCritics>;
  using replay_type = Replay;
  using config_type = DeterministicActorCriticConfig<typename Noise::Config>;
  /// The CSV column of UpdateInfo::exploration: the exploration noise scale σ (policy units).
  static constexpr const char* exploration_label = "noise_sigma";
  static_assert(ActorSpec::out_channels(obs_dim) == act_dim,
                "the actor must output one value in [-1, 1] per action component (end in nn::Tanh)");
  static_assert(replay::ReplayBuffer<Replay>, "Replay must be an rl::replay buffer");

  /// The paper defaults of this variant: DDPG's with one critic and OU noise, else TD3's.
  static config_type paper_defaults() {
    if constexpr (std::is_same_v<config_type, DdpgConfig> && NumCritics == 1) {
      return ddpg_defaults();
    } else if constexpr (std::is_same_v<config_type, Td3Config>) {
      return td3_defaults();
    } else {
      return config_type{};
    }
  }

  explicit DeterministicActorCritic(const config_type& config = paper_defaults(),
                                    const Box<static_cast<std::size_t>(act_dim)>& action_space = Env::action_space())
      : config_(validated(config)),
        scale_(action_space),
        critics_(obs_dim, act_dim),
        critics_target_(obs_dim, act_dim),
        noise_(config.exploration),
        replay_(replay_config(config)),
        init_rng_(config.seed, 0),
        act_rng_(config.seed, 1),
        sample_rng_(config.seed, 2),
        update_rng_(config.seed, 3) {
    const auto out = actor_.setup(Shape<2>{1, obs_dim});
    RLMED_CHECK(out[1] == act_dim, "actor outputs ", out[1], " values, expected ", act_dim);
    actor_target_.setup(Shape<2>{1, obs_dim});
    actor_.initialize(init_rng_);
    critics_.initialize(init_rng_);
    sync::hard_update<T>(actor_target_, actor_);
    sync::hard_update<T>(critics_target_, critics_);
    actor_opt_.emplace(make_optimizer<Optimizer, T>(actor_, config_.actor_lr));
    critic_opt_.emplace(make_optimizer<Optimizer, T>(critics_, config_.critic_lr, config_.critic_weight_decay));
    actor_pairs_ = sync::TargetPairs<T>(actor_, actor_target_);
    critic_pairs_ = sync::TargetPairs<T>(critics_, critics_target_);
    if constexpr (requires { sync_.tau; }) sync_.tau = config_.tau;
    noise_.resize(config_.num_envs, act_dim);
    batch_ = replay_.make_batch(config_.batch_size);
  }
  DeterministicActorCritic(const DeterministicActorCritic&) = delete;
  DeterministicActorCritic& operator=(const DeterministicActorCritic&) = delete;

  // ---------------------------------------------------------------- acting
  /// Exploratory actions (environment units): uniform during the first random_steps env steps,
  /// then clip(π(s) + noise, −1, 1) mapped to the action box.
  void act(std::span<const observation_type> obs, std::span<action_type> actions) {
    check_batch(obs.size(), actions.size());
    check_observations(obs);
    if (clock_.env_steps < config_.random_steps) {
      for (auto& a : actions) {
        std::array<T, act_dim> u;
        for (auto& x : u) x = act_rng_.uniform(-1.0f, 1.0f);
        scale_.to_env(std::span<const T>(u), std::span<float>(a));
      }
      return;
    }
    const auto mu = policy(obs);
    for (std::size_t i = 0; i < obs.size(); ++i) {
      std::array<T, act_dim> u;
      for (index_t j = 0; j < act_dim; ++j) u[static_cast<std::size_t>(j)] = mu(static_cast<index_t>(i), j);
      noise_.apply(act_rng_, static_cast<index_t>(i), std::span<T>(u));
      for (auto& x : u) x = std::clamp(x, T(-1), T(1));
      scale_.to_env(std::span<const T>(u), std::span<float>(actions[i]));
    }
  }
  [[nodiscard]] action_type act(const observation_type& obs) {
    action_type a{};
    act(std::span<const observation_type>(&obs, 1), std::span<action_type>(&a, 1));
    return a;
  }
  /// The deterministic policy π(s) (evaluation); draws no random numbers.
  void evaluate_actions(std::span<const observation_type> obs, std::span<action_type> actions) {
    RLMED_CHECK(obs.size() == actions.size() && !obs.empty(), "actor-critic: ", obs.size(), " observations for ",
                actions.size(), " actions");
    const auto mu = policy(obs);
    for (std::size_t i = 0; i < obs.size(); ++i)
      scale_.to_env(std::span<const T>(mu.data() + static_cast<index_t>(i) * act_dim, static_cast<std::size_t>(act_dim)),
                    std::span<float>(actions[i]));
  }
  [[nodiscard]] action_type greedy_action(const observation_type& obs) {
    action_type a{};
    evaluate_actions(std::span<const observation_type>(&obs, 1), std::span<action_type>(&a, 1));
    return a;
  }

  // ---------------------------------------------------------------- learning
  /// Stores one transition (action in environment units); an ended episode resets env's noise.
  void observe(const observation_type& obs, const action_type& action, double reward, const observation_type& next_obs,
               bool terminated, bool truncated = false, index_t env = 0) {
    RLMED_CHECK(env >= 0 && env < config_.num_envs, "actor-critic: environment index ", env, " outside [0, ",
                config_.num_envs, ")");
    RLMED_CHECK(std::isfinite(reward), "actor-critic: reward is ", reward, "; expected a finite number");
    std::array<float, act_dim> a;
    scale_.to_policy(std::span<const float>(action), std::span<float>(a));
    replay_.add(TensorView<const float, 1>(obs.data(), Shape<1>{obs_dim}), std::span<const float>(a),
                static_cast<float>(reward), TensorView<const float, 1>(next_obs.data(), Shape<1>{obs_dim}), terminated, 1);
    if (terminated || truncated) noise_.reset(env);
    ++clock_.env_steps;
  }
  void observe(std::span<const observation_type> obs, std::span<const action_type> actions,
               const VectorStep<observation_type>& step) {
    check_batch(obs.size(), actions.size());
    RLMED_CHECK(step.reward.size() == obs.size(), "actor-critic: a step of ", step.reward.size(),
                " environments for ", obs.size(), " observations");
    for (std::size_t i = 0; i < obs.size(); ++i) {
      const bool done = step.done(i);
      observe(obs[i], actions[i], step.reward[i], done ? step.final_observation[i] : step.observation[i],
              step.terminated[i] != 0, step.truncated[i] != 0, static_cast<index_t>(i));
    }
  }

  /// The training loop's entry point (train_loop.hpp): runs the gradient steps due and reports the
  /// mean critic loss and the exploration column. The agent counts observed transitions itself,
  /// so `env_steps` (the loop's count) is informational.
  UpdateInfo update(std::int64_t /*env_steps*/) {
    last_stats_ = update();
    UpdateInfo info;
    info.gradient_steps = last_stats_.gradient_steps;
    if (last_stats_.gradient_steps > 0) info.loss = last_stats_.critic_loss;
    info.exploration = exploration_value();
    return info;
  }
  /// Runs the gradient steps due after the observed env steps (none during warm-up).
  OffPolicyStats update() {
    OffPolicyStats stats;
    const std::int64_t due = clock_.due(config_.train_every, config_.gradient_steps, config_.learning_starts);
    index_t actor_steps = 0;
    for (std::int64_t k = 0; k < due; ++k) {
      if (replay_.size() < 1) break;
      actor_steps += gradient_step(stats) ? 1 : 0;
    }
    if (stats.gradient_steps > 0) {
      stats.critic_loss /= static_cast<double>(stats.gradient_steps);
      stats.mean_q /= static_cast<double>(stats.gradient_steps);
    }
    if (actor_steps > 0) stats.actor_loss /= static_cast<double>(actor_steps);
    return stats;
  }

  /// One critic step and, when due, an actor and target step; returns whether the actor moved.
  bool gradient_step(OffPolicyStats& stats) {
    replay_.sample_into(sample_rng_, batch_);
    const index_t B = batch_.size();
    nn::Context ctx;
    ctx.training = true;
    ctx.rng = &update_rng_;
    ctx.input_grad = false;
    nn::Context eval_ctx = ctx;
    eval_ctx.training = false;

    // 1-2. targets
    const auto mu_next = actor_target_.forward(eval_ctx, batch_.next_obs.view(), actor_target_cache_);  // [B, A]
    next_action_.resize(mu_next.shape());
    smoothing_noise_.resize(mu_next.shape());
    for (index_t i = 0; i < smoothing_noise_.size(); ++i)
      smoothing_noise_.data()[i] =
          config_.target_noise > 0 ? static_cast<T>(config_.target_noise * update_rng_.normal_double()) : T(0);
    smoothed_target_actions_into<T>(mu_next, smoothing_noise_.view(), config_.target_noise_clip, next_action_.view());
    const auto q_next = critics_target_.forward(eval_ctx, batch_.next_obs.view(), next_action_.view());  // [N, B]
    next_value_.resize(Shape<1>{B});
    min_over_critics_into<T>(q_next, next_value_.view());
    target_.resize(Shape<1>{B});
    bootstrap_targets_into<T>(batch_.reward.view(), batch_.done.view(), batch_.steps.view(), next_value_.view(),
                              config_.gamma, target_.view());
    // 3. critics
    critic_opt_->zero_grad();
    const auto q = critics_.forward(ctx, batch_.obs.view(), TensorView<const T, 2>(batch_.action.view()));
    const bool weighted = replay::PrioritizedReplayBuffer<Replay>;
    const double critic_loss = critic_loss_into<T>(
        q, target_.view(),
        weighted ? std::span<const float>(batch_.weight.data(), static_cast<std::size_t>(B)) : std::span<const float>(),
        1.0, dq_, td_abs_);
    double mean_q = 0;
    for (index_t b = 0; b < B; ++b) mean_q += static_cast<double>(q(0, b));
    critics_.backward(ctx, dq_.view(), /*action_grad=*/false);
    clip(critic_opt_->params());
    critic_opt_->step();
    if constexpr (replay::PrioritizedReplayBuffer<Replay>)
      replay_.update_priorities(std::span<const std::int64_t>(batch_.index.data(), static_cast<std::size_t>(B)),
                                std::span<const float>(td_abs_.data(), static_cast<std::size_t>(B)));
    ++clock_.updates;
    stats.gradient_steps += 1;
    stats.critic_loss += critic_loss;
    stats.mean_q += mean_q / static_cast<double>(B);
    if (clock_.updates % config_.policy_delay != 0) return false;

    // 4. actor through the first critic, then the targets
    actor_opt_->zero_grad();
    const auto mu = actor_.forward(ctx, batch_.obs.view(), actor_cache_);  // [B, A]
    const auto q_pi = critics_.forward(ctx, batch_.obs.view(), mu);       // [N, B]
    dq_pi_.resize(q_pi.shape());
    fill(dq_pi_.view(), T(0));
    double actor_loss = 0;
    for (index_t b = 0; b < B; ++b) {
      actor_loss -= static_cast<double>(q_pi(0, b));
      dq_pi_(0, b) = static_cast<T>(-1.0 / static_cast<double>(B));
    }
    const auto dact = critics_.backward(ctx, dq_pi_.view(), /*action_grad=*/true);  // [B, A]
    actor_.backward(ctx, actor_cache_, dact);
    clip(actor_opt_->params());
    actor_opt_->step();
    ++actor_updates_;
    sync_.update(actor_pairs_, actor_updates_);
    sync_.update(critic_pairs_, actor_updates_);
    stats.actor_loss += actor_loss / static_cast<double>(B);
    return true;
  }

  // ---------------------------------------------------------------- state
  template <class V>
  void visit_state(V& visit, const std::string& prefix) {
    state::visit_module(visit, prefix + "actor.", actor_);
    state::visit_module(visit, prefix + "actor_target.", actor_target_);
    state::visit_module(visit, prefix + "critic.", critics_);
    state::visit_module(visit, prefix + "critic_target.", critics_target_);
    visit_optimizer_state<T>(visit, prefix + "optim.actor.", *actor_opt_);
    visit_optimizer_state<T>(visit, prefix + "optim.critic.", *critic_opt_);
    noise_.visit_state(visit, prefix + "noise.");
    state::visit_stream(visit, prefix + "rng.act", act_rng_);
    state::visit_stream(visit, prefix + "rng.sample", sample_rng_);
    state::visit_stream(visit, prefix + "rng.update", update_rng_);
    clock_.visit_state(visit, prefix + "clock.");
    state::visit_counter(visit, prefix + "clock.actor_updates", actor_updates_);
  }
  void save(io::SafetensorsWriter& w, const std::string& prefix = "") const {
    save_agent_state(*this, w, prefix);
    replay_.save(w, prefix + "replay.");
  }
  void load(const io::SafetensorsReader& r, const std::string& prefix = "") {
    CheckVisitor check{r};
    visit_state(check, prefix);
    replay_.load(r, prefix + "replay.");
    LoadVisitor load{r};
    visit_state(load, prefix);
  }

  // ---------------------------------------------------------------- introspection
  /// Details of the last update(env_steps) call.
  [[nodiscard]] const OffPolicyStats& last_stats() const noexcept { return last_stats_; }
  [[nodiscard]] double exploration_value() const { return config_.exploration.sigma; }
  [[nodiscard]] std::int64_t env_steps() const noexcept { return clock_.env_steps; }
  [[nodiscard]] std::int64_t updates() const noexcept { return clock_.updates; }
  [[nodiscard]] std::int64_t actor_updates() const noexcept { return actor_updates_; }
  [[nodiscard]] const config_type& config() const noexcept { return config_; }
  [[nodiscard]] const ActionScale<static_cast<std::size_t>(act_dim)>& action_scale() const noexcept { return scale_; }
  Actor& actor() noexcept { return actor_; }
  Actor& target_actor() noexcept { return actor_target_; }
  Critics& critics() noexcept { return critics_; }
  Critics& target_critics() noexcept { return critics_target_; }
  Replay& replay() noexcept { return replay_; }
  Noise& exploration_noise() noexcept { return noise_; }

 private:
  static config_type validated(const config_type& c) {
    RLMED_CHECK(c.gamma >= 0 && c.gamma <= 1, "actor-critic: gamma must be in [0, 1], found ", c.gamma);
    RLMED_CHECK(c.tau >= 0 && c.tau <= 1, "actor-critic: tau must be in [0, 1], found ", c.tau);
    RLMED_CHECK(c.batch_size >= 1 && c.buffer_capacity >= 1 && c.num_envs >= 1,
                "actor-critic: batch_size, buffer_capacity and num_envs must be >= 1, found ", c.batch_size, ", ",
                c.buffer_capacity, ", ", c.num_envs);
    RLMED_CHECK(c.random_steps >= 0 && c.learning_starts >= 0 && c.train_every >= 1 && c.gradient_steps >= 0 &&
                    c.policy_delay >= 1,
                "actor-critic: invalid schedule (random_steps ", c.random_steps, ", learning_starts ",
                c.learning_starts, ", train_every ", c.train_every, ", gradient_steps ", c.gradient_steps,
                ", policy_delay ", c.policy_delay, ")");
    RLMED_CHECK(c.target_noise >= 0 && c.target_noise_clip >= 0 && c.max_grad_norm >= 0,
                "actor-critic: target_noise, target_noise_clip and max_grad_norm must be >= 0");
    return c;
  }
  static typename Replay::config_type replay_config(const config_type& c) {
    typename Replay::config_type r{};
    r.capacity = c.buffer_capacity;
    r.obs_shape = Shape<1>{obs_dim};
    r.action_dim = act_dim;
    return r;
  }
  void check_batch(std::size_t obs, std::size_t actions) const {
    RLMED_CHECK(static_cast<index_t>(obs) == config_.num_envs && actions == obs, "actor-critic: ", obs,
                " observations and ", actions, " action slots, expected ", config_.num_envs,
                " of each (config.num_envs)");
  }
  template <class P>
  void clip(const P& params) const {
    if (config_.max_grad_norm > 0) nn::optim::clip_grad_norm(params, config_.max_grad_norm);
  }
  TensorView<const T, 2> policy(std::span<const observation_type> obs) {
    stack_into<T>(obs, act_obs_);
    nn::Context ctx;
    ctx.training = false;
    ctx.input_grad = false;
    return actor_.forward(ctx, act_obs_.view(), act_cache_);
  }

  config_type config_;
  ActionScale<static_cast<std::size_t>(act_dim)> scale_;
  Actor actor_, actor_target_;
  Critics critics_, critics_target_;
  Noise noise_;
  std::optional<Optimizer<T>> actor_opt_, critic_opt_;
  sync::TargetPairs<T> actor_pairs_, critic_pairs_;
  TargetSync sync_{};
  Replay replay_;
  typename Replay::batch_type batch_;
  PhiloxStream init_rng_, act_rng_, sample_rng_, update_rng_;
  UpdateClock clock_;
  OffPolicyStats last_stats_;
  std::int64_t actor_updates_ = 0;

  typename Actor::Cache actor_cache_, actor_target_cache_, act_cache_;
  Tensor<T, 2> act_obs_;          // [num_envs, O]
  Tensor<T, 2> next_action_;      // [B, A]
  Tensor<T, 2> smoothing_noise_;  // [B, A]
  Tensor<T, 1> next_value_;       // [B]
  Tensor<T, 1> target_;           // [B]
  Tensor<T, 2> dq_, dq_pi_;       // [N, B]
  Tensor<float, 1> td_abs_;       // [B]
};

/// TD3: twin critics, target policy smoothing, delayed actor and target updates.
template <ContinuousControlEnv Env, class ActorSpec, class CriticSpec, class Replay = replay::Uniform<float, 1, float>,
          class TargetSync = sync::Polyak, template <class> class Optimizer = nn::optim::Adam>
using TD3 = DeterministicActorCritic<Env, ActorSpec, CriticSpec, 2, noise::Gaussian, Replay, TargetSync, Optimizer>;

}  // namespace rlmed::rl::agents
