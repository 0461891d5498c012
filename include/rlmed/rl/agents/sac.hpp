// rlmed/rl/agents/sac.hpp — Soft Actor-Critic with twin soft Q critics, a tanh-squashed Gaussian
// actor and automatic temperature (Haarnoja et al., "Soft Actor-Critic Algorithms and
// Applications", 2018, the version with learnt α).
//
// Design decisions:
//  * Structure is template arguments: the environment (observation and action sizes), the actor
//    spec (an MLP ending in nn::GaussianPolicyHead<A>, whose output is (a, mean, log π) with the
//    tanh change-of-variables correction), the critic spec (an MLP over [s, a] ending in one
//    value), the replay strategy, the target-sync strategy and the optimiser template. Numbers
//    are SacConfig, whose defaults are the paper's (Table 1): Adam 3·10⁻⁴ for actor, critics and
//    α; batch 256; replay 10⁶; γ 0.99; τ 0.005 every gradient step; one gradient step per
//    environment step; target entropy −|A|; α₀ = 1 (softlearning / SB3). Exploration before
//    learning: `random_steps` uniform actions (Spinning Up's start_steps = 10⁴) and the first
//    gradient step at `learning_starts` (Spinning Up's update_after = 10³).
//  * One gradient step, with B the batch and α = exp(log α) read once at its start:
//      1. ã, log π(ã|s) ~ π(·|s) (reparameterised, noise from the update stream);
//      2. temperature: J(log α) = −log α · mean(log π(ã|s) + H̄), so dJ/dlog α = −mean(log π + H̄)
//         (the softlearning / SB3 form); one optimiser step on log α;
//      3. targets y = r + γ^n (1 − d) (min_i Q̄_i(s', a') − α log π(a'|s')), a' ~ π(·|s');
//      4. critics: J_Q = ½ Σ_i mean (Q_i(s, a) − y)², one optimiser step on both;
//      5. actor with the updated critics: J_π = mean(α log π(ã|s) − min_i Q_i(s, ã)); dJ/dã flows
//         through the critic that attains the minimum, dJ/dlog π = α / B, back through the head;
//      6. Polyak τ on the target critics.
//    This is SB3's order (α, critics, actor). Critic parameter gradients left over from step 5 are
//    cleared at the next step 4.
//  * Prioritised replay works unchanged: importance weights scale each sample's critic loss and
//    priorities are updated with the mean |Q_i − y| (only if Replay has update_priorities).
//  * Determinism: four Philox streams of the agent's seed — initialisation (0), acting (1), replay
//    sampling (2), update noise (3) — and fixed-order loops. A checkpoint holds all networks,
//    targets, optimiser moments, log α, counters, stream positions and the replay contents, so a
//    resumed run is bit-identical to an uninterrupted one.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <span>
#include <string>

#include "rlmed/nn/layers/gaussian_head.hpp"
#include "rlmed/nn/nn.hpp"
#include "rlmed/rl/agents/actor_critic_common.hpp"
#include "rlmed/rl/replay/uniform.hpp"
#include "rlmed/rl/target_sync.hpp"
#include "rlmed/rl/train_loop.hpp"

namespace rlmed::rl::agents {

struct SacConfig {
  double gamma = 0.99;                 ///< discount
  double tau = 0.005;                  ///< Polyak rate of the target critics
  std::int64_t target_update_every = 1;  ///< gradient steps between Polyak updates
  double actor_lr = 3e-4;
  double critic_lr = 3e-4;
  double alpha_lr = 3e-4;
  index_t batch_size = 256;
  index_t buffer_capacity = 1'000'000;
  std::int64_t random_steps = 10'000;     ///< uniform random actions for the first env steps
  std::int64_t learning_starts = 1'000;   ///< first gradient step at this many env steps
  std::int64_t train_every = 1;           ///< env steps between rounds of gradient steps
  std::int64_t gradient_steps = 1;        ///< gradient steps per round
  double initial_alpha = 1.0;             ///< α₀
  bool auto_alpha = true;                 ///< learn α toward the target entropy; else fixed α₀
  std::optional<double> target_entropy;   ///< default −|A|
  double max_grad_norm = 0.0;             ///< > 0: clip actor and critic gradients by global norm
  index_t num_envs = 1;                   ///< environments acted on at once
  std::uint64_t seed = 0;
};

/// The temperature as a one-parameter module (so any nn optimiser can step it).
template <class T>
struct Temperature {
  nn::Parameter<T, 1> log_alpha{Shape<1>{1}};
  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    visit(nn::join_name(prefix, "log_alpha"), log_alpha);
  }
  template <class V>
  void buffers(V&&, std::string_view = {}) {}
};

/// J(log α) = −log α · mean_b(log π_b + H̄) and its derivative −mean_b(log π_b + H̄).
struct TemperatureLoss {
  double loss;
  double grad_log_alpha;
};
template <class T>
TemperatureLoss sac_temperature_loss(double log_alpha, std::span<const T> log_prob, double target_entropy) {
  RLMED_CHECK(!log_prob.empty(), "SAC temperature loss needs at least one log-probability");
  RLMED_CHECK(std::isfinite(log_alpha) && std::isfinite(target_entropy), "SAC temperature loss: log_alpha ", log_alpha,
              ", target entropy ", target_entropy, "; expected finite values");
  double s = 0;
  for (std::size_t b = 0; b < log_prob.size(); ++b) {
    RLMED_CHECK(std::isfinite(log_prob[b]), "SAC: log-probability ", b, " is ", log_prob[b]);
    s += static_cast<double>(log_prob[b]) + target_entropy;
  }
  const double m = s / static_cast<double>(log_prob.size());
  return {-log_alpha * m, -m};
}

/// Soft state values v_b = min_i q_ib − α log π_b (the bootstrap of the soft Bellman target).
template <class T>
void soft_values_into(TensorView<const T, 2> q, std::span<const T> log_prob, double alpha, TensorView<T, 1> out) {
  const index_t N = q.extent(0), B = q.extent(1);
  RLMED_CHECK(static_cast<index_t>(log_prob.size()) == B && out.size() == B, "soft values: ", B, " q per critic, ",
              log_prob.size(), " log-probabilities, ", out.size(), " outputs");
  for (index_t b = 0; b < B; ++b) {
    T m = q(0, b);
    for (index_t i = 1; i < N; ++i) m = std::min(m, q(i, b));
    out(b) = static_cast<T>(static_cast<double>(m) - alpha * static_cast<double>(log_prob[static_cast<std::size_t>(b)]));
  }
}

/// J_π = mean_b(α log π_b − min_i q_ib): writes dJ/dq [N, B] (−1/B on the minimising critic, the
/// lowest index on ties) and returns J_π. dJ/dlog π_b = α / B for every b.
template <class T>
double sac_actor_loss_into(TensorView<const T, 2> q, std::span<const T> log_prob, double alpha, Tensor<T, 2>& dq) {
  const index_t N = q.extent(0), B = q.extent(1);
  RLMED_CHECK(static_cast<index_t>(log_prob.size()) == B && B >= 1, "SAC actor loss: ", B, " q per critic, ",
              log_prob.size(), " log-probabilities");
  dq.resize(q.shape());
  fill(dq.view(), T(0));
  double total = 0;
  for (index_t b = 0; b < B; ++b) {
    index_t best = 0;
    for (index_t i = 1; i < N; ++i)
      if (q(i, b) < q(best, b)) best = i;
    total += alpha * static_cast<double>(log_prob[static_cast<std::size_t>(b)]) - static_cast<double>(q(best, b));
    dq(best, b) = static_cast<T>(-1.0 / static_cast<double>(B));
  }
  const double loss = total / static_cast<double>(B);
  RLMED_CHECK(std::isfinite(loss), "SAC actor loss is ", loss);
  return loss;
}

/// The actor's output gradient dJ_π/d(a, mean, log π) [B, 2A + 1] of SAC's policy loss: dJ/dã from
/// the critics (dact [B, A]), nothing on the mean, α / B on log π.
template <class T>
void sac_policy_output_grad_into(TensorView<const T, 2> dact, double alpha, Tensor<T, 2>& dpi) {
  const index_t B = dact.extent(0), A = dact.extent(1);
  dpi.resize(Shape<2>{B, 2 * A + 1});
  fill(dpi.view(), T(0));
  for (index_t b = 0; b < B; ++b) {
    for (index_t j = 0; j < A; ++j) dpi(b, j) = dact(b, j);
    dpi(b, 2 * A) = static_cast<T>(alpha / static_cast<double>(B));
  }
}

template <ContinuousControlEnv Env, class ActorSpec, class CriticSpec,
          class Replay = replay::Uniform<float, 1, float>, class TargetSync = sync::Polyak,
          template <class> class Optimizer = nn::optim::Adam>
class SAC {
  using Traits = ContinuousEnvTraits<Env>;

 public:
  using T = float;
  using env_type = Env;
  using observation_type = typename Traits::observation_type;
  using action_type = typename Traits::action_type;
  static constexpr index_t obs_dim = Traits::obs_dim;
  static constexpr index_t act_dim = Traits::act_dim;
  using Actor = nn::Model<ActorSpec, T>;
  using Critics = CriticEnsemble<CriticSpec, T, 2>;
  using replay_type = Replay;
  /// The CSV column of UpdateInfo::exploration: −mean log π of the sampled actions.
  static constexpr const char* exploration_label = "entropy";
  static_assert(ActorSpec::out_channels(obs_dim) == 2 * act_dim + 1,
                "SAC actor must end in nn::GaussianPolicyHead<A> (output width 2A + 1)");
  static_assert(replay::ReplayBuffer<Replay>, "Replay must be an rl::replay buffer");

  explicit SAC(const SacConfig& config = {}, const Box<static_cast<std::size_t>(act_dim)>& action_space = Env::action_space())
      : config_(validated(config)),
        scale_(action_space),
        critics_(obs_dim, act_dim),
        critics_target_(obs_dim, act_dim),
        replay_(replay_config(config)),
        init_rng_(config.seed, 0),
        act_rng_(config.seed, 1),
        sample_rng_(config.seed, 2),
        update_rng_(config.seed, 3) {
    const auto out = actor_.setup(Shape<2>{1, obs_dim});
    RLMED_CHECK(out[1] == 2 * act_dim + 1, "SAC actor outputs ", out[1], " values, expected ", 2 * act_dim + 1);
    actor_.initialize(init_rng_);
    critics_.initialize(init_rng_);
    sync::hard_update<T>(critics_target_, critics_);
    temperature_.log_alpha.value(0) = static_cast<T>(std::log(config_.initial_alpha));
    actor_opt_.emplace(make_optimizer<Optimizer, T>(actor_, config_.actor_lr));
    critic_opt_.emplace(make_optimizer<Optimizer, T>(critics_, config_.critic_lr));
    alpha_opt_.emplace(make_optimizer<Optimizer, T>(temperature_, config_.alpha_lr));
    target_pairs_ = sync::TargetPairs<T>(critics_, critics_target_);
    if constexpr (requires { sync_.tau; }) sync_.tau = config_.tau;
    sync_.every = config_.target_update_every;
    batch_ = replay_.make_batch(config_.batch_size);
  }
  SAC(const SAC&) = delete;
  SAC& operator=(const SAC&) = delete;

  // ---------------------------------------------------------------- acting
  /// Exploratory actions (environment units) for observations of config.num_envs environments:
  /// uniform random during the first random_steps env steps, then samples of π(·|s).
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
    policy_actions(obs, actions, /*stochastic=*/true);
  }
  [[nodiscard]] action_type act(const observation_type& obs) {
    action_type a{};
    act(std::span<const observation_type>(&obs, 1), std::span<action_type>(&a, 1));
    return a;
  }
  /// Deterministic actions tanh(mean) (evaluation); draws no random numbers.
  void evaluate_actions(std::span<const observation_type> obs, std::span<action_type> actions) {
    RLMED_CHECK(obs.size() == actions.size() && !obs.empty(), "SAC: ", obs.size(), " observations for ",
                actions.size(), " actions");
    policy_actions(obs, actions, /*stochastic=*/false);
  }
  [[nodiscard]] action_type greedy_action(const observation_type& obs) {
    action_type a{};
    evaluate_actions(std::span<const observation_type>(&obs, 1), std::span<action_type>(&a, 1));
    return a;
  }

  // ---------------------------------------------------------------- learning
  /// Stores one transition (action in environment units). A truncated episode bootstraps from
  /// next_obs; `env` selects the exploration state to reset when the episode ended.
  void observe(const observation_type& obs, const action_type& action, double reward, const observation_type& next_obs,
               bool terminated, bool truncated = false, index_t env = 0) {
    RLMED_CHECK(env >= 0 && env < config_.num_envs, "SAC: environment index ", env, " outside [0, ", config_.num_envs, ")");
    RLMED_CHECK(std::isfinite(reward), "SAC: reward is ", reward, "; expected a finite number");
    std::array<float, act_dim> a;
    scale_.to_policy(std::span<const float>(action), std::span<float>(a));
    replay_.add(TensorView<const float, 1>(obs.data(), Shape<1>{obs_dim}), std::span<const float>(a),
                static_cast<float>(reward), TensorView<const float, 1>(next_obs.data(), Shape<1>{obs_dim}), terminated, 1);
    (void)truncated;
    ++clock_.env_steps;
  }
  /// Stores one VectorEnv step: obs were acted on with actions; step is what VectorEnv returned.
  void observe(std::span<const observation_type> obs, std::span<const action_type> actions,
               const VectorStep<observation_type>& step) {
    check_batch(obs.size(), actions.size());
    RLMED_CHECK(step.reward.size() == obs.size(), "SAC: a step of ", step.reward.size(), " environments for ",
                obs.size(), " observations");
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
    for (std::int64_t k = 0; k < due; ++k) {
      if (replay_.size() < 1) break;
      gradient_step(stats);
    }
    if (stats.gradient_steps > 0) {
      const double n = static_cast<double>(stats.gradient_steps);
      stats.critic_loss /= n;
      stats.actor_loss /= n;
      stats.entropy /= n;
      stats.mean_q /= n;
    }
    stats.alpha = alpha();
    return stats;
  }

  /// One SAC gradient step on a sampled batch (also callable directly, e.g. by benchmarks).
  void gradient_step(OffPolicyStats& stats) {
    replay_.sample_into(sample_rng_, batch_);
    const index_t B = batch_.size();
    const double a = alpha();
    nn::Context ctx;
    ctx.training = true;
    ctx.rng = &update_rng_;
    ctx.input_grad = false;

    // 1. ã ~ π(·|s), log π(ã|s)
    const auto pi = actor_.forward(ctx, obs_view(batch_.obs), actor_cache_);  // [B, 2A + 1]
    split_policy_output(pi, pi_action_, pi_logp_);
    // 2. temperature
    if (config_.auto_alpha) {
      const auto t = sac_temperature_loss<T>(static_cast<double>(temperature_.log_alpha.value(0)),
                                             std::span<const T>(pi_logp_.data(), static_cast<std::size_t>(B)),
                                             target_entropy());
      temperature_.log_alpha.grad(0) = static_cast<T>(t.grad_log_alpha);
      alpha_opt_->step();
    }
    // 3. soft Bellman targets
    const auto pi_next = actor_.forward(ctx, obs_view(batch_.next_obs), actor_next_cache_);
    split_policy_output(pi_next, next_action_, next_logp_);
    nn::Context eval_ctx = ctx;
    eval_ctx.training = false;
    const auto q_next = critics_target_.forward(eval_ctx, next_action_obs(), next_action_.view());  // [2, B]
    next_value_.resize(Shape<1>{B});
    soft_values_into<T>(q_next, std::span<const T>(next_logp_.data(), static_cast<std::size_t>(B)), a,
                        next_value_.view());
    target_.resize(Shape<1>{B});
    bootstrap_targets_into<T>(batch_.reward.view(), batch_.done.view(), batch_.steps.view(), next_value_.view(),
                              config_.gamma, target_.view());
    // 4. critics
    critic_opt_->zero_grad();
    const auto q = critics_.forward(ctx, obs_view(batch_.obs), TensorView<const T, 2>(batch_.action.view()));
    const bool weighted = replay::PrioritizedReplayBuffer<Replay>;
    const double critic_loss = critic_loss_into<T>(
        q, target_.view(),
        weighted ? std::span<const float>(batch_.weight.data(), static_cast<std::size_t>(B)) : std::span<const float>(),
        0.5, dq_, td_abs_);
    double mean_q = 0;
    for (index_t b = 0; b < B; ++b) mean_q += static_cast<double>(q(0, b));
    critics_.backward(ctx, dq_.view(), /*action_grad=*/false);
    clip(critic_opt_->params());
    critic_opt_->step();
    if constexpr (replay::PrioritizedReplayBuffer<Replay>)
      replay_.update_priorities(std::span<const std::int64_t>(batch_.index.data(), static_cast<std::size_t>(B)),
                                std::span<const float>(td_abs_.data(), static_cast<std::size_t>(B)));
    // 5. actor through the updated critics
    actor_opt_->zero_grad();
    const auto q_pi = critics_.forward(ctx, obs_view(batch_.obs), pi_action_.view());
    const double actor_loss =
        sac_actor_loss_into<T>(q_pi, std::span<const T>(pi_logp_.data(), static_cast<std::size_t>(B)), a, dq_pi_);
    const auto dact = critics_.backward(ctx, dq_pi_.view(), /*action_grad=*/true);  // [B, A]
    sac_policy_output_grad_into<T>(dact, a, dpi_);
    actor_.backward(ctx, actor_cache_, dpi_.view());
    clip(actor_opt_->params());
    actor_opt_->step();
    // 6. targets
    ++clock_.updates;
    sync_.update(target_pairs_, clock_.updates);

    double entropy = 0;
    for (index_t b = 0; b < B; ++b) entropy -= static_cast<double>(pi_logp_(b));
    stats.gradient_steps += 1;
    stats.critic_loss += critic_loss;
    stats.actor_loss += actor_loss;
    stats.entropy += entropy / static_cast<double>(B);
    stats.mean_q += mean_q / static_cast<double>(B);
  }

  // ---------------------------------------------------------------- state
  /// Every tensor of the agent's state except the replay (see save/load), under `prefix`.
  template <class V>
  void visit_state(V& visit, const std::string& prefix) {
    state::visit_module(visit, prefix + "actor.", actor_);
    state::visit_module(visit, prefix + "critic.", critics_);
    state::visit_module(visit, prefix + "critic_target.", critics_target_);
    state::visit_module(visit, prefix + "temperature.", temperature_);
    visit_optimizer_state<T>(visit, prefix + "optim.actor.", *actor_opt_);
    visit_optimizer_state<T>(visit, prefix + "optim.critic.", *critic_opt_);
    visit_optimizer_state<T>(visit, prefix + "optim.temperature.", *alpha_opt_);
    state::visit_stream(visit, prefix + "rng.act", act_rng_);
    state::visit_stream(visit, prefix + "rng.sample", sample_rng_);
    state::visit_stream(visit, prefix + "rng.update", update_rng_);
    clock_.visit_state(visit, prefix + "clock.");
  }
  /// Writes the complete state (networks, optimisers, α, streams, counters, replay contents).
  void save(io::SafetensorsWriter& w, const std::string& prefix = "") const {
    save_agent_state(*this, w, prefix);
    replay_.save(w, prefix + "replay.");
  }
  /// Restores what save() wrote; every tensor is checked before the agent changes.
  void load(const io::SafetensorsReader& r, const std::string& prefix = "") {
    CheckVisitor check{r};
    visit_state(check, prefix);
    replay_.load(r, prefix + "replay.");  // validates its own columns before changing
    LoadVisitor load{r};
    visit_state(load, prefix);
  }

  // ---------------------------------------------------------------- introspection
  /// Details of the last update(env_steps) call.
  [[nodiscard]] const OffPolicyStats& last_stats() const noexcept { return last_stats_; }
  [[nodiscard]] double exploration_value() const {
    return last_stats_.gradient_steps > 0 ? last_stats_.entropy : std::numeric_limits<double>::quiet_NaN();
  }
  [[nodiscard]] double alpha() const { return std::exp(static_cast<double>(temperature_.log_alpha.value(0))); }
  [[nodiscard]] double target_entropy() const {
    return config_.target_entropy.value_or(-static_cast<double>(act_dim));
  }
  [[nodiscard]] std::int64_t env_steps() const noexcept { return clock_.env_steps; }
  [[nodiscard]] std::int64_t updates() const noexcept { return clock_.updates; }
  [[nodiscard]] const SacConfig& config() const noexcept { return config_; }
  [[nodiscard]] const ActionScale<static_cast<std::size_t>(act_dim)>& action_scale() const noexcept { return scale_; }
  Actor& actor() noexcept { return actor_; }
  Critics& critics() noexcept { return critics_; }
  Critics& target_critics() noexcept { return critics_target_; }
  Replay& replay() noexcept { return replay_; }
  Temperature<T>& temperature() noexcept { return temperature_; }

 private:
  static SacConfig validated(const SacConfig& c) {
    RLMED_CHECK(c.gamma >= 0 && c.gamma <= 1, "SAC: gamma must be in [0, 1], found ", c.gamma);
    RLMED_CHECK(c.tau >= 0 && c.tau <= 1, "SAC: tau must be in [0, 1], found ", c.tau);
    RLMED_CHECK(c.batch_size >= 1 && c.buffer_capacity >= 1 && c.num_envs >= 1,
                "SAC: batch_size, buffer_capacity and num_envs must be >= 1, found ", c.batch_size, ", ",
                c.buffer_capacity, ", ", c.num_envs);
    RLMED_CHECK(c.initial_alpha > 0 && std::isfinite(c.initial_alpha), "SAC: initial_alpha must be > 0, found ",
                c.initial_alpha);
    RLMED_CHECK(c.random_steps >= 0 && c.learning_starts >= 0 && c.train_every >= 1 && c.gradient_steps >= 0 &&
                    c.target_update_every >= 1,
                "SAC: invalid schedule (random_steps ", c.random_steps, ", learning_starts ", c.learning_starts,
                ", train_every ", c.train_every, ", gradient_steps ", c.gradient_steps, ")");
    RLMED_CHECK(c.max_grad_norm >= 0, "SAC: max_grad_norm must be >= 0, found ", c.max_grad_norm);
    return c;
  }
  static typename Replay::config_type replay_config(const SacConfig& c) {
    typename Replay::config_type r{};
    r.capacity = c.buffer_capacity;
    r.obs_shape = Shape<1>{obs_dim};
    r.action_dim = act_dim;
    return r;
  }
  void check_batch(std::size_t obs, std::size_t actions) const {
    RLMED_CHECK(static_cast<index_t>(obs) == config_.num_envs && actions == obs, "SAC: ", obs, " observations and ",
                actions, " action slots, expected ", config_.num_envs, " of each (config.num_envs)");
  }
  template <class P>
  void clip(const P& params) const {
    if (config_.max_grad_norm > 0) nn::optim::clip_grad_norm(params, config_.max_grad_norm);
  }
  static TensorView<const T, 2> obs_view(const Tensor<float, 2>& t) { return t.view(); }
  TensorView<const T, 2> next_action_obs() const { return batch_.next_obs.view(); }

  /// (a [B, A], log π [B]) out of the head's [B, 2A + 1].
  static void split_policy_output(TensorView<const T, 2> pi, Tensor<T, 2>& action, Tensor<T, 1>& logp) {
    const index_t B = pi.extent(0);
    action.resize(Shape<2>{B, act_dim});
    logp.resize(Shape<1>{B});
    for (index_t b = 0; b < B; ++b) {
      for (index_t j = 0; j < act_dim; ++j) action(b, j) = pi(b, j);
      logp(b) = pi(b, 2 * act_dim);
    }
  }

  void policy_actions(std::span<const observation_type> obs, std::span<action_type> actions, bool stochastic) {
    stack_into<T>(obs, act_obs_);
    nn::Context ctx;
    ctx.training = stochastic;
    ctx.rng = &act_rng_;
    ctx.input_grad = false;
    const auto pi = actor_.forward(ctx, act_obs_.view(), act_cache_);
    for (std::size_t i = 0; i < obs.size(); ++i) {
      const index_t b = static_cast<index_t>(i);
      std::array<T, act_dim> u;
      for (index_t j = 0; j < act_dim; ++j)
        u[static_cast<std::size_t>(j)] = stochastic ? pi(b, j) : std::tanh(pi(b, act_dim + j));
      scale_.to_env(std::span<const T>(u), std::span<float>(actions[i]));
    }
  }

  SacConfig config_;
  ActionScale<static_cast<std::size_t>(act_dim)> scale_;
  Actor actor_;
  Critics critics_, critics_target_;
  Temperature<T> temperature_;
  std::optional<Optimizer<T>> actor_opt_, critic_opt_, alpha_opt_;
  sync::TargetPairs<T> target_pairs_;
  TargetSync sync_{};
  Replay replay_;
  typename Replay::batch_type batch_;
  PhiloxStream init_rng_, act_rng_, sample_rng_, update_rng_;
  UpdateClock clock_;
  OffPolicyStats last_stats_;

  // workspaces, kept between steps
  typename Actor::Cache actor_cache_, actor_next_cache_, act_cache_;
  Tensor<T, 2> act_obs_;      // [num_envs, O]
  Tensor<T, 2> pi_action_;    // [B, A] ã
  Tensor<T, 1> pi_logp_;      // [B]
  Tensor<T, 2> next_action_;  // [B, A] a'
  Tensor<T, 1> next_logp_;    // [B]
  Tensor<T, 1> next_value_;   // [B]
  Tensor<T, 1> target_;       // [B] y
  Tensor<T, 2> dq_, dq_pi_;   // [2, B]
  Tensor<float, 1> td_abs_;   // [B]
  Tensor<T, 2> dpi_;          // [B, 2A + 1]
};

}  // namespace rlmed::rl::agents
