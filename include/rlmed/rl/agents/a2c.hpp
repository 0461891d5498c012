// rlmed/rl/agents/a2c.hpp — Advantage Actor-Critic, the synchronous variant of A3C (Mnih et al.
// 2016, "Asynchronous Methods for Deep Reinforcement Learning"; A2C as in OpenAI baselines / SB3):
// N environments step in lockstep (the training loop's batched environments, or an rl::VectorEnv
// driven by hand), and every n_steps rounds one gradient step is taken on the whole [n_steps, N]
// rollout.
//
//   A2C<Env, NetSpec, T = float, Optimizer = nn::optim::RMSprop<T>>
//
// Design decisions:
//  * A2CConfig defaults are SB3's: n_steps 5, γ 0.99, GAE λ 1 (= bootstrapped n-step returns, the
//    paper's estimator), entropy coefficient 0, value coefficient 0.5, gradient-norm clip 0.5, no
//    advantage normalisation, RMSprop lr 7e-4, α 0.99, eps 1e-5, orthogonal initialisation.
//  * Loss on the rollout (on_policy.hpp terms): L = −mean(A log π) − c_ent · mean H + c_v · mean (V − R)²,
//    with A and R from the values stored at collection (no gradient through them).
//  * Same act/observe/evaluate protocol, checkpoint layout and determinism as PPO: an update is a
//    deterministic function of (parameters, rollout), and save/load resumes exactly.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>

#include "rlmed/nn/optim/optimizers.hpp"
#include "rlmed/nn/optim/param_list.hpp"
#include "rlmed/rl/agents/on_policy.hpp"
#include "rlmed/rl/returns.hpp"
#include "rlmed/rl/train_loop.hpp"

namespace rlmed::rl {

struct A2CConfig {
  index_t n_steps = 5;              ///< steps per environment per update
  double gamma = 0.99;
  double gae_lambda = 1.0;          ///< 1: n-step returns; < 1: GAE
  double ent_coef = 0.0;
  double vf_coef = 0.5;
  double max_grad_norm = 0.5;       ///< global gradient-norm clip (<= 0: off)
  bool normalize_advantage = false;
  std::int64_t anneal_steps = 0;    ///< > 0: lr decays linearly to 0 over this many env steps
  std::uint64_t seed = 0;           ///< streams 0 init, 1 actions
  InitConfig init{};

  void validate() const {
    RolloutConfig{n_steps, gamma, gae_lambda, seed, init, 0}.validate("A2C");
    RLMED_CHECK(std::isfinite(ent_coef) && vf_coef >= 0 && std::isfinite(vf_coef), "A2C: needs finite ent_coef and vf_coef >= 0, found ",
                ent_coef, ", ", vf_coef);
    RLMED_CHECK(std::isfinite(max_grad_norm), "A2C: max_grad_norm must be finite");
    RLMED_CHECK(anneal_steps >= 0, "A2C: anneal_steps must be >= 0, found ", anneal_steps);
  }
};

/// What the last A2C update did.
struct A2CStats {
  double loss = std::numeric_limits<double>::quiet_NaN();
  double policy_loss = std::numeric_limits<double>::quiet_NaN();
  double value_loss = std::numeric_limits<double>::quiet_NaN();
  double entropy = std::numeric_limits<double>::quiet_NaN();
  double explained_variance = std::numeric_limits<double>::quiet_NaN();
  double grad_norm = std::numeric_limits<double>::quiet_NaN();  ///< before clipping
  double learning_rate = std::numeric_limits<double>::quiet_NaN();
};

template <VectorObservationEnv Env, class NetSpec, class T = float, class Optimizer = nn::optim::RMSprop<T>>
class A2C : public RolloutAgentBase<Env, NetSpec, T> {
  using Base = RolloutAgentBase<Env, NetSpec, T>;

 public:
  using typename Base::action_type;
  using typename Base::model_type;
  using typename Base::observation_type;
  using optimizer_type = Optimizer;
  using optimizer_config = std::remove_cvref_t<decltype(std::declval<Optimizer&>().config)>;

  /// SB3's optimiser for A2C: RMSprop lr 7e-4, α 0.99, eps 1e-5 (other optimisers: their defaults).
  static optimizer_config default_optimizer() { return pg_detail::rmsprop_defaults<optimizer_config>(7e-4, 0.99, 1e-5); }

  explicit A2C(const A2CConfig& config, const Env& prototype = Env{},
               const optimizer_config& optimizer = default_optimizer())
      : Base("A2C", rollout_config(checked(config)), prototype),
        config_(config),
        optimizer_(this->model_, optimizer),
        base_lr_(optimizer.lr) {}

  [[nodiscard]] const A2CConfig& config() const noexcept { return config_; }
  [[nodiscard]] Optimizer& optimizer() noexcept { return optimizer_; }
  [[nodiscard]] const A2CStats& last_stats() const noexcept { return stats_; }
  [[nodiscard]] std::int64_t updates() const noexcept { return updates_; }

  /// One gradient step when the rollout is full (every n_steps rounds); otherwise nothing.
  UpdateInfo update(std::int64_t env_steps) {
    UpdateInfo info;
    info.exploration = this->last_act_entropy_;
    if (!this->rollout_.allocated() || !this->rollout_.full()) return info;
    RLMED_CHECK(env_steps >= 0, "A2C::update: negative env_steps ", env_steps);
    this->finish_rollout();
    if (config_.anneal_steps > 0)
      optimizer_.lr = base_lr_ * std::max(0.0, 1.0 - static_cast<double>(env_steps) / static_cast<double>(config_.anneal_steps));
    learn();
    this->rollout_.pos = 0;
    ++updates_;
    info.gradient_steps = 1;
    info.loss = stats_.loss;
    info.exploration = stats_.entropy;
    return info;
  }

  void save(io::SafetensorsWriter& w, const std::string& prefix) const {
    this->save_base(w, prefix);
    ckpt::save_optimizer(w, prefix + "optim.", const_cast<Optimizer&>(optimizer_));
    ckpt::save_i64(w, prefix + "updates", updates_);
  }
  void load(const io::SafetensorsReader& r, const std::string& prefix) {
    this->check_base(r, prefix);
    ckpt::expect_shape(r, prefix + "updates", Shape<1>{1});
    ckpt::load_optimizer(r, prefix + "optim.", optimizer_);
    this->load_base(r, prefix);
    updates_ = ckpt::load_i64(r, prefix + "updates");
  }

 private:
  static const A2CConfig& checked(const A2CConfig& c) {
    c.validate();
    return c;
  }
  static RolloutConfig rollout_config(const A2CConfig& c) { return {c.n_steps, c.gamma, c.gae_lambda, c.seed, c.init, 0}; }

  void learn() {
    optimizer_.zero_grad();
    const auto st = this->actor_critic_backward(config_.ent_coef, config_.vf_coef, config_.normalize_advantage);
    stats_.grad_norm = config_.max_grad_norm > 0 ? nn::optim::clip_grad_norm(optimizer_.params(), config_.max_grad_norm)
                                                 : nn::optim::grad_norm(optimizer_.params());
    optimizer_.step();
    stats_.loss = st.loss;
    stats_.policy_loss = st.policy_loss;
    stats_.value_loss = st.value_loss;
    stats_.entropy = st.entropy;
    stats_.explained_variance = st.explained_variance;
    stats_.learning_rate = optimizer_.lr;
  }

  A2CConfig config_;
  Optimizer optimizer_;
  double base_lr_;
  A2CStats stats_;
  std::int64_t updates_ = 0;
};

}  // namespace rlmed::rl
