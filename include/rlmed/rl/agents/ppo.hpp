// rlmed/rl/agents/ppo.hpp — Proximal Policy Optimization (Schulman et al. 2017, "Proximal Policy
// Optimization Algorithms", clipped-surrogate variant) for discrete (categorical) and continuous
// (diagonal Gaussian) actions:
//
//   PPO<Env, NetSpec, T = float, Optimizer = nn::optim::Adam<T>>
//     Env        any VectorObservationEnv; Discrete<N> actions -> categorical, Box<D> -> Gaussian
//     NetSpec    Separate<PolicySpec, ValueSpec> or Shared<Spec> (on_policy.hpp)
//     Optimizer  Adam (default), RMSprop, SGD, AdamW
//
// Design decisions:
//  * PPOConfig defaults are Stable-Baselines3's (which follow the paper's MuJoCo settings):
//    n_steps 2048 per env, batch 64, 10 epochs, γ 0.99, GAE λ 0.95, clip ε 0.2, no value
//    clipping, advantage normalisation per minibatch, entropy coefficient 0, value coefficient
//    0.5, global gradient-norm clip 0.5, Adam lr 3e-4 with eps 1e-5, orthogonal initialisation.
//    Linear annealing of lr and ε to 0 (SB3's "lin_" schedules, the paper's Atari setting) is
//    switched on by anneal_steps > 0.
//  * Loss per minibatch, each term from on_policy.hpp with its gradient:
//      L = −mean min(r A, clip(r, 1 ± ε) A) − c_ent · mean H + c_v · L_V
//    with L_V = mean (V − R)², or with clip_range_vf > 0 the pessimistic clipped form of OpenAI
//    baselines' PPO2 (SB3 uses only the clipped value; the max is the original implementation).
//  * Minibatches: every epoch draws a fresh permutation of the S·N rollout samples by Fisher–Yates
//    from Philox stream 2 of config.seed; the last minibatch may be smaller (as SB3). With
//    target_kl > 0 the epochs stop before a step whose approximate KL exceeds 1.5·target_kl (SB3).
//  * The update is a deterministic function of (parameters, rollout, stream positions): runs are
//    bit-identical, and save/load (parameters, Adam moments and step, stream positions, the partial
//    rollout, counters) resumes exactly.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "rlmed/nn/optim/optimizers.hpp"
#include "rlmed/nn/optim/param_list.hpp"
#include "rlmed/rl/agents/on_policy.hpp"
#include "rlmed/rl/returns.hpp"
#include "rlmed/rl/train_loop.hpp"

namespace rlmed::rl {

struct PPOConfig {
  index_t n_steps = 2048;          ///< steps per environment per rollout
  index_t batch_size = 64;         ///< minibatch size
  int n_epochs = 10;               ///< passes over each rollout
  double gamma = 0.99;
  double gae_lambda = 0.95;
  double clip_range = 0.2;         ///< ε of the clipped ratio
  double clip_range_vf = 0.0;      ///< > 0: clip the value change to ±clip_range_vf
  bool normalize_advantage = true;  ///< per minibatch: (A − mean) / (std + 1e-8)
  double ent_coef = 0.0;
  double vf_coef = 0.5;
  double max_grad_norm = 0.5;      ///< global gradient-norm clip (<= 0: off)
  double target_kl = 0.0;          ///< > 0: early stop of the epochs (SB3)
  std::int64_t anneal_steps = 0;   ///< > 0: lr (and ε) decay linearly to 0 over this many env steps
  bool anneal_clip_range = true;   ///< with anneal_steps: also anneal ε (and clip_range_vf)
  std::uint64_t seed = 0;          ///< streams 0 init, 1 actions, 2 minibatch shuffling
  InitConfig init{};

  void validate() const {
    RolloutConfig{n_steps, gamma, gae_lambda, seed, init, 0}.validate("PPO");
    RLMED_CHECK(batch_size >= 1, "PPO: batch_size must be >= 1, found ", batch_size);
    RLMED_CHECK(n_epochs >= 1, "PPO: n_epochs must be >= 1, found ", n_epochs);
    RLMED_CHECK(clip_range > 0 && std::isfinite(clip_range), "PPO: clip_range must be positive, found ", clip_range);
    RLMED_CHECK(clip_range_vf >= 0 && std::isfinite(clip_range_vf), "PPO: clip_range_vf must be >= 0, found ", clip_range_vf);
    RLMED_CHECK(std::isfinite(ent_coef) && vf_coef >= 0 && std::isfinite(vf_coef), "PPO: needs finite ent_coef and vf_coef >= 0, found ",
                ent_coef, ", ", vf_coef);
    RLMED_CHECK(std::isfinite(max_grad_norm) && std::isfinite(target_kl) && target_kl >= 0,
                "PPO: max_grad_norm and target_kl must be finite (target_kl >= 0)");
    RLMED_CHECK(anneal_steps >= 0, "PPO: anneal_steps must be >= 0, found ", anneal_steps);
  }
};

/// What the last update did (means over its minibatch steps).
struct PPOStats {
  std::int64_t gradient_steps = 0;
  double loss = std::numeric_limits<double>::quiet_NaN();
  double policy_loss = std::numeric_limits<double>::quiet_NaN();
  double value_loss = std::numeric_limits<double>::quiet_NaN();
  double entropy = std::numeric_limits<double>::quiet_NaN();
  double approx_kl = std::numeric_limits<double>::quiet_NaN();
  double clip_fraction = std::numeric_limits<double>::quiet_NaN();
  double explained_variance = std::numeric_limits<double>::quiet_NaN();
  double learning_rate = std::numeric_limits<double>::quiet_NaN();
  double clip_range = std::numeric_limits<double>::quiet_NaN();
  bool stopped_early = false;  ///< target_kl stopped the epochs
};

template <VectorObservationEnv Env, class NetSpec, class T = float, class Optimizer = nn::optim::Adam<T>>
class PPO : public RolloutAgentBase<Env, NetSpec, T> {
  using Base = RolloutAgentBase<Env, NetSpec, T>;

 public:
  using typename Base::action_type;
  using typename Base::dist_type;
  using typename Base::model_type;
  using typename Base::observation_type;
  using optimizer_type = Optimizer;
  using optimizer_config = std::remove_cvref_t<decltype(std::declval<Optimizer&>().config)>;

  /// The terms of one minibatch evaluation.
  struct MinibatchResult {
    double loss = 0, policy_loss = 0, value_loss = 0, entropy = 0, approx_kl = 0, clip_fraction = 0;
  };

  /// SB3's optimiser for PPO: Adam, lr 3e-4, eps 1e-5 (other optimisers: their own defaults).
  static optimizer_config default_optimizer() { return pg_detail::adam_defaults<optimizer_config>(3e-4, 1e-5); }

  explicit PPO(const PPOConfig& config, const Env& prototype = Env{},
               const optimizer_config& optimizer = default_optimizer())
      : Base("PPO", rollout_config(checked(config)), prototype),
        config_(config),
        optimizer_(this->model_, optimizer),
        base_lr_(optimizer.lr) {}

  [[nodiscard]] const PPOConfig& config() const noexcept { return config_; }
  [[nodiscard]] Optimizer& optimizer() noexcept { return optimizer_; }
  [[nodiscard]] const PPOStats& last_stats() const noexcept { return stats_; }
  [[nodiscard]] std::int64_t updates() const noexcept { return updates_; }

  /// Learns when the rollout is full (every n_steps act/observe rounds); otherwise does nothing.
  UpdateInfo update(std::int64_t env_steps) {
    UpdateInfo info;
    info.exploration = this->last_act_entropy_;
    if (!this->rollout_.allocated() || !this->rollout_.full()) return info;
    RLMED_CHECK(env_steps >= 0, "PPO::update: negative env_steps ", env_steps);
    this->finish_rollout();
    const double frac = config_.anneal_steps > 0
                            ? std::max(0.0, 1.0 - static_cast<double>(env_steps) / static_cast<double>(config_.anneal_steps))
                            : 1.0;
    optimizer_.lr = base_lr_ * frac;
    const double clip_scale = config_.anneal_steps > 0 && config_.anneal_clip_range ? frac : 1.0;
    learn(config_.clip_range * clip_scale, config_.clip_range_vf * clip_scale);
    this->rollout_.pos = 0;
    ++updates_;
    info.gradient_steps = stats_.gradient_steps;
    info.loss = stats_.loss;
    info.exploration = stats_.entropy;
    return info;
  }

  /// Complete learning state: model, Adam state, streams, partial rollout, counters.
  void save(io::SafetensorsWriter& w, const std::string& prefix) const {
    this->save_base(w, prefix);
    ckpt::save_optimizer(w, prefix + "optim.", const_cast<Optimizer&>(optimizer_));
    ckpt::save_i64(w, prefix + "updates", updates_);
  }
  void load(const io::SafetensorsReader& r, const std::string& prefix) {
    this->check_base(r, prefix);
    ckpt::expect_shape(r, prefix + "updates", Shape<1>{1});
    ckpt::load_optimizer(r, prefix + "optim.", optimizer_);  // checks its tensors before reading
    this->load_base(r, prefix);
    updates_ = ckpt::load_i64(r, prefix + "updates");
  }

 private:
  using Base::span_of;
  static const PPOConfig& checked(const PPOConfig& c) {
    c.validate();
    return c;
  }
  static RolloutConfig rollout_config(const PPOConfig& c) { return {c.n_steps, c.gamma, c.gae_lambda, c.seed, c.init, 0}; }

  void learn(double clip_range, double clip_range_vf) {
    auto& ro = this->rollout_;
    const index_t M = ro.steps() * ro.envs();
    const index_t B = std::min(config_.batch_size, M);
    perm_.resize(static_cast<std::size_t>(M));
    stats_ = PPOStats{};
    stats_.learning_rate = optimizer_.lr;
    stats_.clip_range = clip_range;
    stats_.explained_variance = explained_variance<T>(std::span<const T>(ro.values.data(), static_cast<std::size_t>(M)),
                                                      std::span<const T>(ro.returns.data(), static_cast<std::size_t>(M)));
    double sum_loss = 0, sum_pg = 0, sum_v = 0, sum_h = 0, sum_kl = 0, sum_clip = 0;
    std::int64_t steps = 0;
    for (int epoch = 0; epoch < config_.n_epochs && !stats_.stopped_early; ++epoch) {
      std::iota(perm_.begin(), perm_.end(), index_t{0});
      for (index_t i = M - 1; i > 0; --i) {
        const auto j = static_cast<index_t>(this->shuffle_rng_.uniform_int(static_cast<std::uint32_t>(i + 1)));
        std::swap(perm_[static_cast<std::size_t>(i)], perm_[static_cast<std::size_t>(j)]);
      }
      for (index_t start = 0; start < M; start += B) {
        const index_t end = std::min(start + B, M);
        const std::span<const index_t> idx(perm_.data() + start, static_cast<std::size_t>(end - start));
        MinibatchResult res;
        if (!minibatch_step(idx, clip_range, clip_range_vf, res)) {
          stats_.stopped_early = true;
          break;
        }
        sum_loss += res.loss;
        sum_pg += res.policy_loss;
        sum_v += res.value_loss;
        sum_h += res.entropy;
        sum_kl += res.approx_kl;
        sum_clip += res.clip_fraction;
        ++steps;
      }
    }
    stats_.gradient_steps = steps;
    if (steps > 0) {
      const double n = static_cast<double>(steps);
      stats_.loss = sum_loss / n;
      stats_.policy_loss = sum_pg / n;
      stats_.value_loss = sum_v / n;
      stats_.entropy = sum_h / n;
      stats_.approx_kl = sum_kl / n;
      stats_.clip_fraction = sum_clip / n;
    }
  }

  bool minibatch_step(std::span<const index_t> idx, double clip_range, double clip_range_vf, MinibatchResult& res) {
    if (!loss_and_gradients(idx, clip_range, clip_range_vf, res)) return false;
    if (config_.max_grad_norm > 0) nn::optim::clip_grad_norm(optimizer_.params(), config_.max_grad_norm);
    optimizer_.step();
    return true;
  }

 public:
  /// The PPO loss on rollout samples `idx` (flat indices t·N + i of a finished rollout) with the
  /// parameters' gradients written (zeroed first; not clipped, no step). Returns false without
  /// touching the gradients when target_kl > 0 and the approximate KL exceeds 1.5·target_kl.
  /// update() calls it per minibatch; tests check it against finite differences.
  bool loss_and_gradients(std::span<const index_t> idx, double clip_range, double clip_range_vf, MinibatchResult& res) {
    auto& ro = this->rollout_;
    constexpr index_t K = Base::obs_dim, Aw = Base::action_width;
    const auto n = static_cast<index_t>(idx.size());
    const auto un = idx.size();
    RLMED_CHECK(n >= 1, "PPO: empty minibatch");
    mb_obs_.resize(Shape<2>{n, K});
    mb_actions_.resize(Shape<2>{n, Aw});
    for (auto* t : {&mb_old_logp_, &mb_adv_, &mb_returns_, &mb_old_values_, &logp_, &entropy_, &dlogp_, &dentropy_,
                    &values_flat_, &dvalue_flat_})
      t->resize(Shape<1>{n});
    const index_t M = ro.steps() * ro.envs();
    const T* obs = ro.obs.data();
    const T* act = ro.actions.data();
    for (index_t b = 0; b < n; ++b) {
      const index_t s = idx[static_cast<std::size_t>(b)];
      RLMED_CHECK(s >= 0 && s < M, "PPO: sample index ", s, " outside the rollout [0, ", M, ")");
      std::copy(obs + s * K, obs + (s + 1) * K, mb_obs_.data() + b * K);
      std::copy(act + s * Aw, act + (s + 1) * Aw, mb_actions_.data() + b * Aw);
      mb_old_logp_(b) = ro.log_probs.data()[s];
      mb_adv_(b) = ro.advantages.data()[s];
      mb_returns_(b) = ro.returns.data()[s];
      mb_old_values_(b) = ro.values.data()[s];
    }
    if (config_.normalize_advantage && n > 1) normalize_advantages(mb_adv_.view());

    nn::Context ctx;
    ctx.training = true;
    ctx.input_grad = false;
    const auto out = this->model_.net.forward(ctx, mb_obs_.view(), train_cache_);
    this->model_.dist.log_prob_entropy(out.policy, mb_actions_.view(), logp_.view(), entropy_.view());
    const auto sur = clipped_surrogate<T>(span_of(logp_), span_of(mb_old_logp_), span_of(mb_adv_), clip_range,
                                          std::span<T>(dlogp_.data(), un));
    if (config_.target_kl > 0 && sur.approx_kl > 1.5 * config_.target_kl) return false;
    for (index_t b = 0; b < n; ++b) values_flat_(b) = out.value(b, 0);
    const double vl = value_loss<T>(span_of(values_flat_), span_of(mb_returns_), span_of(mb_old_values_),
                                    clip_range_vf, std::span<T>(dvalue_flat_.data(), un));
    const double h = mean_entropy<T>(span_of(entropy_), -config_.ent_coef, std::span<T>(dentropy_.data(), un));
    dvalue_.resize(Shape<2>{n, 1});
    for (index_t b = 0; b < n; ++b) dvalue_(b, 0) = static_cast<T>(config_.vf_coef * static_cast<double>(dvalue_flat_(b)));

    optimizer_.zero_grad();
    dpolicy_.resize(out.policy.shape());
    this->model_.dist.backward(out.policy, mb_actions_.view(), dlogp_.view(), dentropy_.view(), dpolicy_.view());
    this->model_.net.backward(ctx, train_cache_, dpolicy_.view(), dvalue_.view());

    res.policy_loss = sur.loss;
    res.value_loss = vl;
    res.entropy = h;
    res.approx_kl = sur.approx_kl;
    res.clip_fraction = sur.clip_fraction;
    res.loss = sur.loss - config_.ent_coef * h + config_.vf_coef * vl;
    return true;
  }

 private:
  PPOConfig config_;
  Optimizer optimizer_;
  double base_lr_;
  PPOStats stats_;
  std::int64_t updates_ = 0;
  std::vector<index_t> perm_;
  typename model_type::Cache train_cache_;
  Tensor<T, 2> mb_obs_, mb_actions_, dpolicy_, dvalue_;
  Tensor<T, 1> mb_old_logp_, mb_adv_, mb_returns_, mb_old_values_, logp_, entropy_, dlogp_, dentropy_, values_flat_,
      dvalue_flat_;
};

}  // namespace rlmed::rl
