// rlmed/rl/agents/dqn.hpp — the DQN family: DQN (Mnih et al. 2015), Double DQN (van Hasselt et
// al. 2016), dueling networks (Wang et al. 2016, via nn::DuelingHead in Net), prioritized replay
// (Schaul et al. 2016) and n-step returns (Sutton 1988; Rainbow), as one policy-based template:
//
//   DQN<Net, TdTarget, Replay, Exploration, TargetSync, Optimizer, Device>
//     Net          a bound nn module [B, obs_dim] -> [B, actions] (plain MLP or MLP + DuelingHead)
//     TdTarget     target::Plain  (max_a Q_target(s', a))  or  target::Double  (Q_target(s', argmax_a Q(s', a)))
//     Replay       replay::Uniform / replay::Prioritized, or replay::NStep<either> (one lane per env)
//     Exploration  explore::EpsilonGreedy<Schedule> or explore::Boltzmann<Schedule>
//     TargetSync   sync::Hard{every} or sync::Polyak{tau, every}, counted in gradient steps
//     Optimizer    nn::optim::Adam<float> (default), RMSprop, SGD
//     Device       rlmed::cpu (the only one for now)
//
// Design decisions:
//  * Structure is template arguments, numbers are DQNConfig (documented defaults below). The agent
//    implements the train_loop.hpp Agent protocol (act / observe / update / evaluate_actions /
//    save / load) and also exposes the pieces (q_values, compute_targets_into, learn_from) so
//    tests and custom loops can drive one gradient step on a constructed batch.
//  * One target formula for every replay: y = r + γ^steps (1 − done) · bootstrap(s'), where the
//    transition carries `steps` (1, or up to n for n-step returns, fewer at truncations) and
//    `done` only for termination. Time-limit truncations bootstrap from the final observation.
//  * Loss: Huber (δ = 1) on Q(s, a) − y, each sample weighted by its PER importance weight
//    (1 for uniform replay), mean over the batch; gradients clipped by global norm; priorities
//    updated to |Q(s, a) − y| + ε after every gradient step.
//  * Randomness: three Philox streams under the agent's seed — 0: network initialisation,
//    1: exploration, 2: replay sampling — whose positions are checkpointed, so save/load resumes
//    exactly (with the networks, Adam moments, target network, replay contents and priorities,
//    ε step and counters).
//  * Hot path: every tensor (stacked observations, Q, targets, gradients, module caches) is a
//    member reused between steps; after the first update nothing is allocated.
//  * Greedy ties go to the lowest action index (argmax); NaN Q-values, NaN observations or
//    rewards, out-of-range actions and observation size mismatches are rlmed::Error.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "rlmed/core/device.hpp"
#include "rlmed/core/error.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/random.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/nn/layers/activation.hpp"
#include "rlmed/nn/layers/dueling.hpp"
#include "rlmed/nn/layers/linear.hpp"
#include "rlmed/nn/loss.hpp"
#include "rlmed/nn/module.hpp"
#include "rlmed/nn/optim/optimizers.hpp"
#include "rlmed/nn/optim/param_list.hpp"
#include "rlmed/nn/sequential.hpp"
#include "rlmed/rl/environment.hpp"
#include "rlmed/rl/explore.hpp"
#include "rlmed/rl/replay/nstep.hpp"
#include "rlmed/rl/replay/prioritized.hpp"
#include "rlmed/rl/replay/uniform.hpp"
#include "rlmed/rl/target_sync.hpp"
#include "rlmed/rl/train_loop.hpp"

namespace rlmed::rl {

/// TD-target strategies: how the value of the next state is bootstrapped.
namespace target {

/// DQN (Mnih et al. 2015): max_a Q_target(s', a).
struct Plain {
  static constexpr bool needs_online_next = false;
  template <class T>
  static T bootstrap(std::span<const T> q_target_next, std::span<const T> /*q_online_next*/) {
    return q_target_next[static_cast<std::size_t>(explore::argmax(q_target_next))];
  }
};

/// Double DQN (van Hasselt et al. 2016): the online network picks, the target network values:
/// Q_target(s', argmax_a Q_online(s', a)).
struct Double {
  static constexpr bool needs_online_next = true;
  template <class T>
  static T bootstrap(std::span<const T> q_target_next, std::span<const T> q_online_next) {
    return q_target_next[static_cast<std::size_t>(explore::argmax(q_online_next))];
  }
};

}  // namespace target

/// Q-network specs for flat observations: two hidden ReLU layers of `Hidden` units, then a linear
/// head (QMlp) or a dueling head (DuelingQMlp). Bind with nn::Model<Spec, float>.
template <index_t Hidden, index_t Actions>
using QMlp = nn::Sequential<nn::Linear<Hidden>, nn::ReLU, nn::Linear<Hidden>, nn::ReLU, nn::Linear<Actions>>;
template <index_t Hidden, index_t Actions>
using DuelingQMlp = nn::Sequential<nn::Linear<Hidden>, nn::ReLU, nn::Linear<Hidden>, nn::ReLU, nn::DuelingHead<Actions>>;

/// Numbers of a DQN run. Defaults are the usual modern ones (SB3 / Rainbow-style), with the
/// CartPole-scale buffer of rl-baselines3-zoo; the learning test sets its own values.
struct DQNConfig {
  double gamma = 0.99;                 ///< discount (n-step transitions use γ^steps)
  index_t batch_size = 64;             ///< transitions per gradient step
  std::int64_t learning_starts = 1000;  ///< env steps (all envs) collected before the first update
  std::int64_t train_every = 4;        ///< env steps between training rounds (SB3 train_freq)
  int gradient_steps = 1;              ///< gradient steps per training round
  double huber_delta = 1.0;            ///< Huber threshold (smooth L1)
  double max_grad_norm = 10.0;         ///< global gradient-norm clip; <= 0 disables
  std::uint64_t seed = 0;              ///< agent streams: 0 init, 1 exploration, 2 replay sampling

  void validate() const {
    RLMED_CHECK(gamma >= 0 && gamma <= 1, "DQNConfig: gamma must be in [0, 1], found ", gamma);
    RLMED_CHECK(batch_size >= 1, "DQNConfig: batch_size must be >= 1, found ", batch_size);
    RLMED_CHECK(learning_starts >= 0, "DQNConfig: learning_starts must be >= 0, found ", learning_starts);
    RLMED_CHECK(train_every >= 1, "DQNConfig: train_every must be >= 1, found ", train_every);
    RLMED_CHECK(gradient_steps >= 1, "DQNConfig: gradient_steps must be >= 1, found ", gradient_steps);
    RLMED_CHECK(huber_delta > 0 && std::isfinite(huber_delta), "DQNConfig: huber_delta must be > 0, found ",
                huber_delta);
    RLMED_CHECK(!std::isnan(max_grad_norm), "DQNConfig: max_grad_norm is NaN");
  }
};

namespace dqn_detail {

/// Replays that take whole environment steps per lane (replay::NStep).
template <class R>
concept LaneReplay = requires(R& r, index_t lane, typename R::obs_view obs, std::span<const typename R::action_type> a) {
  r.add(lane, obs, a, 0.0, obs, false, false);
  r.buffer();
};

template <class R>
constexpr bool has_priorities() {
  if constexpr (LaneReplay<R>) return replay::PrioritizedReplayBuffer<typename R::buffer_type>;
  else return replay::PrioritizedReplayBuffer<R>;
}

/// Contiguous values of one observation (std::array, std::vector, Tensor).
template <class T, class Obs>
std::span<const T> values_of(const Obs& obs) {
  if constexpr (std::is_arithmetic_v<Obs>) {
    return std::span<const T>(&obs, 1);
  } else {
    static_assert(std::is_same_v<std::remove_cvref_t<decltype(*obs.data())>, T>,
                  "DQN: observation elements must have the network's scalar type");
    return std::span<const T>(obs.data(), static_cast<std::size_t>(obs.size()));
  }
}

}  // namespace dqn_detail

template <class Net, class TdTarget = target::Double,
          class Replay = replay::Prioritized<typename Net::value_type, 1, int>,
          class Exploration = explore::EpsilonGreedy<explore::LinearSchedule>, class TargetSync = sync::Hard,
          class Optimizer = nn::optim::Adam<typename Net::value_type>, class Device = cpu>
class DQN {
  static_assert(std::is_same_v<Device, cpu>, "DQN runs on the CPU only for now (Device = rlmed::cpu)");
  static_assert(Net::in_rank == 2 && Net::out_rank == 2, "DQN: Net maps [B, obs_dim] to [B, actions]");
  using T = typename Net::value_type;
  static_assert(std::is_same_v<typename Replay::obs_type, T> && Replay::obs_rank == 1,
                "DQN: the replay stores flat observations of the network's scalar type");
  static_assert(std::is_same_v<typename Replay::action_type, int>, "DQN: the replay stores int action indices");

 public:
  using net_type = Net;
  using replay_type = Replay;
  using value_type = T;
  using batch_type = typename Replay::batch_type;
  using optimizer_config = std::remove_cvref_t<decltype(std::declval<Optimizer&>().config)>;
  static constexpr const char* exploration_label = Exploration::label;
  static constexpr bool prioritized = dqn_detail::has_priorities<Replay>();

  /// Builds the online network for observations of the replay's size, initialises it from stream
  /// 0 of config.seed, copies it into the target network and attaches the optimiser.
  DQN(const DQNConfig& config, Replay replay, Exploration exploration = Exploration{}, TargetSync sync = TargetSync{},
      const optimizer_config& optimizer = optimizer_config{})
      : config_(checked(config)),
        replay_(std::move(replay)),
        obs_dim_(replay_.make_batch(1).obs.extent(1)),
        init_rng_(config.seed, 0),
        explore_rng_(config.seed, 1),
        replay_rng_(config.seed, 2),
        online_(make_online(obs_dim_, init_rng_)),
        target_(online_),
        optimizer_(online_, optimizer),
        pairs_(online_, target_),
        exploration_(std::move(exploration)),
        sync_(sync),
        batch_(replay_.make_batch(config.batch_size)) {
    actions_ = online_.output_shape(Shape<2>{1, obs_dim_})[1];
    RLMED_CHECK(actions_ >= 1, "DQN: the network has no outputs");
    if constexpr (dqn_detail::LaneReplay<Replay>)  // the replay sums n rewards with its γ, the agent bootstraps with γ^n
      RLMED_CHECK(replay_.config().gamma == config_.gamma, "DQN: the n-step replay discounts with gamma ",
                  replay_.config().gamma, " but the agent with ", config_.gamma, "; they must agree");
  }
  DQN(const DQN&) = delete;  // the optimiser and target pairing hold views of this agent's tensors
  DQN& operator=(const DQN&) = delete;
  DQN(DQN&&) = default;  // tensors keep their heap buffers: the views stay valid

  [[nodiscard]] const DQNConfig& config() const noexcept { return config_; }
  [[nodiscard]] index_t obs_dim() const noexcept { return obs_dim_; }
  [[nodiscard]] index_t num_actions() const noexcept { return actions_; }
  [[nodiscard]] Net& online() noexcept { return online_; }
  [[nodiscard]] Net& target_net() noexcept { return target_; }
  [[nodiscard]] Optimizer& optimizer() noexcept { return optimizer_; }
  [[nodiscard]] Replay& replay() noexcept { return replay_; }
  [[nodiscard]] const Replay& replay() const noexcept { return replay_; }
  [[nodiscard]] Exploration& exploration() noexcept { return exploration_; }
  /// Current value of the exploration schedule (ε for ε-greedy, τ for Boltzmann).
  [[nodiscard]] double epsilon() const { return exploration_.value(); }
  [[nodiscard]] std::int64_t gradient_steps() const noexcept { return gradient_steps_; }
  [[nodiscard]] std::int64_t env_steps() const noexcept { return env_steps_; }
  /// The batch of the last gradient step (obs, actions, weights, slots).
  [[nodiscard]] const batch_type& last_batch() const noexcept { return batch_; }
  /// TD errors Q(s, a) − y of the last gradient step [B].
  [[nodiscard]] TensorView<const T, 1> last_td_errors() const noexcept { return td_.view(); }

  // ─── acting ──────────────────────────────────────────────────────────────────────────────────

  /// Q-values of a batch of observations [B, obs_dim] -> [B, actions] (inference; a view of an
  /// internal buffer, valid until the next call).
  TensorView<const T, 2> q_values(TensorView<const T, 2> obs) {
    check_obs_batch(obs);
    nn::Context ctx;
    ctx.training = false;
    return online_.forward(ctx, obs, infer_cache_);
  }

  /// ε-greedy actions for the training environments; advances the ε schedule by obs.size().
  template <class Obs>
  void act(std::span<const Obs> obs, std::span<int> actions) {
    RLMED_CHECK(actions.size() == obs.size(), "DQN::act: ", actions.size(), " action slots for ", obs.size(),
                " observations");
    stack_into(obs, act_obs_);
    const auto q = q_values(act_obs_.view());
    exploration_.select_into(explore_rng_, q, actions);
    exploration_.advance(static_cast<std::int64_t>(obs.size()));
  }

  /// Greedy actions (no exploration, no RNG, no counters).
  template <class Obs>
  void evaluate_actions(std::span<const Obs> obs, std::span<int> actions) {
    RLMED_CHECK(actions.size() == obs.size(), "DQN::evaluate_actions: ", actions.size(), " action slots for ",
                obs.size(), " observations");
    stack_into(obs, eval_obs_);
    const auto q = q_values(eval_obs_.view());
    for (index_t b = 0; b < q.extent(0); ++b)
      actions[static_cast<std::size_t>(b)] =
          explore::argmax(std::span<const T>(q.data() + b * actions_, static_cast<std::size_t>(actions_)));
  }

  // ─── storing experience ──────────────────────────────────────────────────────────────────────

  /// Stores the transitions of one environment step (env i = replay lane i for n-step replay).
  template <class Obs>
  void observe(std::span<const Obs> obs, std::span<const int> actions, const VectorStep<Obs>& step) {
    const std::size_t n = obs.size();
    RLMED_CHECK(actions.size() == n && step.reward.size() == n && step.observation.size() == n,
                "DQN::observe: ", n, " observations, ", actions.size(), " actions and ", step.reward.size(),
                " step results; expected one of each per environment");
    for (std::size_t i = 0; i < n; ++i) {
      RLMED_CHECK(actions[i] >= 0 && actions[i] < actions_, "DQN::observe: action ", actions[i], " of env ", i,
                  " is outside [0, ", actions_, ")");
      RLMED_CHECK(std::isfinite(step.reward[i]), "DQN::observe: reward of env ", i, " is ", step.reward[i],
                  "; expected a finite number");
      const bool done = step.done(i);
      const auto o = obs_view(dqn_detail::values_of<T>(obs[i]), "observation");
      const auto next = obs_view(dqn_detail::values_of<T>(done ? step.final_observation[i] : step.observation[i]),
                                 "next observation");
      const std::span<const int> a(&actions[i], 1);
      if constexpr (dqn_detail::LaneReplay<Replay>) {
        replay_.add(static_cast<index_t>(i), o, a, step.reward[i], next, step.terminated[i] != 0,
                    step.truncated[i] != 0);
      } else {
        replay_.add(o, a, static_cast<float>(step.reward[i]), next, step.terminated[i] != 0, 1);
      }
    }
  }

  // ─── learning ────────────────────────────────────────────────────────────────────────────────

  /// Runs the training rounds due at `env_steps` (every train_every env steps from
  /// learning_starts on, gradient_steps each); reports their mean loss and the current ε.
  UpdateInfo update(std::int64_t env_steps) {
    RLMED_CHECK(env_steps >= env_steps_, "DQN::update: env_steps went back from ", env_steps_, " to ", env_steps);
    const std::int64_t te = config_.train_every;
    const std::int64_t from = std::max(env_steps_, config_.learning_starts - 1);
    const std::int64_t rounds = env_steps >= config_.learning_starts ? env_steps / te - from / te : 0;
    env_steps_ = env_steps;
    UpdateInfo info;
    info.exploration = exploration_.value();
    if (rounds <= 0 || replay_.size() == 0) return info;
    double loss_sum = 0;
    for (std::int64_t r = 0; r < rounds; ++r)
      for (int g = 0; g < config_.gradient_steps; ++g) {
        replay_.sample_into(replay_rng_, batch_);
        loss_sum += learn_from(batch_);
        ++info.gradient_steps;
      }
    info.loss = loss_sum / static_cast<double>(info.gradient_steps);
    return info;
  }

  /// TD targets y_b = r_b + γ^steps_b (1 − done_b) · TdTarget::bootstrap(Q_target(s'_b), Q(s'_b)) [B].
  void compute_targets_into(const batch_type& batch, Tensor<T, 1>& y) {
    const index_t B = batch.size();
    check_obs_batch(TensorView<const T, 2>(batch.next_obs.view()));
    nn::Context ctx;
    ctx.training = false;
    const auto q_target = target_.forward(ctx, batch.next_obs.view(), next_target_cache_);  // [B, A]
    TensorView<const T, 2> q_online;
    if constexpr (TdTarget::needs_online_next) q_online = online_.forward(ctx, batch.next_obs.view(), next_online_cache_);
    y.resize(Shape<1>{B});
    const auto a = static_cast<std::size_t>(actions_);
    for (index_t b = 0; b < B; ++b) {
      const std::span<const T> qt(q_target.data() + b * actions_, a);
      std::span<const T> qo;
      if constexpr (TdTarget::needs_online_next) qo = std::span<const T>(q_online.data() + b * actions_, a);
      const int steps = batch.steps(b);
      RLMED_CHECK(steps >= 1, "DQN: transition ", b, " has ", steps, " bootstrap steps");
      const double discount = std::pow(config_.gamma, steps) * (1.0 - static_cast<double>(batch.done(b)));
      const double boot = discount != 0.0 ? static_cast<double>(TdTarget::bootstrap(qt, qo)) : 0.0;
      y(b) = static_cast<T>(static_cast<double>(batch.reward(b)) + discount * boot);
    }
  }

  /// One gradient step on `batch`: Huber(Q(s, a) − y) weighted by batch.weight, clip, optimiser
  /// step, priority update (PER), target sync. Returns the loss.
  double learn_from(const batch_type& batch) {
    const index_t B = batch.size();
    RLMED_CHECK(batch.action.extent(1) == 1, "DQN: batch actions have ", batch.action.extent(1),
                " components, expected 1 (an action index)");
    for (index_t b = 0; b < B; ++b) {
      const int a = batch.action(b, 0);
      RLMED_CHECK(a >= 0 && a < actions_, "DQN: batch action ", a, " at row ", b, " is outside [0, ", actions_, ")");
      RLMED_CHECK(std::isfinite(batch.weight(b)) && batch.weight(b) >= 0, "DQN: importance weight ", batch.weight(b),
                  " at row ", b, " must be finite and >= 0");
    }
    compute_targets_into(batch, y_);
    nn::Context ctx;
    ctx.training = true;
    ctx.input_grad = false;
    optimizer_.zero_grad();
    const auto q = online_.forward(ctx, batch.obs.view(), train_cache_);  // [B, A]
    q_taken_.resize(Shape<1>{B});
    td_.resize(Shape<1>{B});
    for (index_t b = 0; b < B; ++b) {
      q_taken_(b) = q(b, batch.action(b, 0));
      td_(b) = q_taken_(b) - y_(b);
    }
    const std::span<const T> weights(batch.weight.data(), static_cast<std::size_t>(B));
    const double loss = nn::loss::huber<T, 1>(q_taken_.view(), y_.view(), grad_taken_, config_.huber_delta, weights);
    dq_.resize(q.shape());
    fill(dq_.view(), T(0));
    for (index_t b = 0; b < B; ++b) dq_(b, batch.action(b, 0)) = grad_taken_(b);
    online_.backward(ctx, train_cache_, dq_.view());
    if (config_.max_grad_norm > 0) nn::optim::clip_grad_norm(optimizer_.params(), config_.max_grad_norm);
    optimizer_.step();
    ++gradient_steps_;
    if constexpr (prioritized) {
      const std::span<const std::int64_t> slots(batch.index.data(), static_cast<std::size_t>(B));
      const std::span<const float> td(td_.data(), static_cast<std::size_t>(B));
      priority_buffer().update_priorities(slots, td);
    }
    sync_.update(pairs_, gradient_steps_);
    return loss;
  }

  // ─── checkpoints ─────────────────────────────────────────────────────────────────────────────

  /// Complete learning state under `prefix`: networks, optimiser, ε step, replay (with pending
  /// n-step entries and priorities), stream positions, counters.
  void save(io::SafetensorsWriter& w, const std::string& prefix) const {
    auto& self = const_cast<DQN&>(*this);  // module visitors are non-const; nothing is modified
    ckpt::save_module(w, prefix + "online.", self.online_);
    ckpt::save_module(w, prefix + "target.", self.target_);
    ckpt::save_optimizer(w, prefix + "optim.", self.optimizer_);
    exploration_.save(w, prefix + "explore.");
    replay_.save(w, prefix + "replay.");
    ckpt::save_stream(w, prefix + "rng.init", init_rng_);
    ckpt::save_stream(w, prefix + "rng.explore", explore_rng_);
    ckpt::save_stream(w, prefix + "rng.replay", replay_rng_);
    Tensor<std::int64_t, 1> counters(Shape<1>{3});
    counters(0) = env_steps_;
    counters(1) = gradient_steps_;
    counters(2) = actions_;
    w.add(prefix + "counters", counters);
  }
  /// Restores save()'s state, all or nothing: on a bad entry the agent is left as it was.
  void load(const io::SafetensorsReader& r, const std::string& prefix) {
    io::SafetensorsWriter backup;
    save(backup, prefix);
    try {
      load_state(r, prefix);
    } catch (...) {
      load_state(io::SafetensorsReader::from_bytes(backup.to_bytes(), "<state before the failed load>"), prefix);
      throw;
    }
  }

 private:
  void load_state(const io::SafetensorsReader& r, const std::string& prefix) {
    ckpt::expect_shape(r, prefix + "counters", Shape<1>{3});
    const auto counters = r.read<std::int64_t, 1>(prefix + "counters");
    RLMED_CHECK(counters(2) == actions_, r.source(), ": the checkpoint's DQN has ", counters(2),
                " actions, this one ", actions_);
    RLMED_CHECK(counters(0) >= 0 && counters(1) >= 0, r.source(), ": negative DQN counters");
    // Check the networks first (the common mismatch: another architecture) for a clear message.
    online_.parameters([&](const std::string& name, auto& p) { ckpt::expect_shape(r, prefix + "online." + name, p.value.shape()); });
    target_.parameters([&](const std::string& name, auto& p) { ckpt::expect_shape(r, prefix + "target." + name, p.value.shape()); });
    ckpt::load_module(r, prefix + "online.", online_);
    ckpt::load_module(r, prefix + "target.", target_);
    ckpt::load_optimizer(r, prefix + "optim.", optimizer_);
    exploration_.load(r, prefix + "explore.");
    replay_.load(r, prefix + "replay.");
    ckpt::load_stream(r, prefix + "rng.init", init_rng_);
    ckpt::load_stream(r, prefix + "rng.explore", explore_rng_);
    ckpt::load_stream(r, prefix + "rng.replay", replay_rng_);
    env_steps_ = counters(0);
    gradient_steps_ = counters(1);
  }

  static const DQNConfig& checked(const DQNConfig& c) {
    c.validate();
    return c;
  }
  static Net make_online(index_t obs_dim, PhiloxStream& rng) {
    RLMED_CHECK(obs_dim >= 1, "DQN: observations need at least one component, found ", obs_dim);
    Net net;
    net.setup(Shape<2>{1, obs_dim});
    net.initialize(rng);
    return net;
  }

  auto& priority_buffer() {
    if constexpr (dqn_detail::LaneReplay<Replay>) return replay_.buffer();
    else return replay_;
  }

  void check_obs_batch(TensorView<const T, 2> obs) const {
    RLMED_CHECK(obs.extent(1) == obs_dim_ && obs.extent(0) >= 1, "DQN: observation batch has shape ", obs.shape(),
                ", expected [B >= 1, ", obs_dim_, "]");
    for (index_t i = 0; i < obs.size(); ++i)
      RLMED_CHECK(!std::isnan(obs.data()[i]), "DQN: observation ", i / obs_dim_, " component ", i % obs_dim_,
                  " is NaN");
  }

  TensorView<const T, 1> obs_view(std::span<const T> values, const char* what) const {
    RLMED_CHECK(static_cast<index_t>(values.size()) == obs_dim_, "DQN: ", what, " has ", values.size(),
                " components, expected ", obs_dim_);
    return TensorView<const T, 1>(values.data(), Shape<1>{obs_dim_});
  }

  template <class Obs>
  void stack_into(std::span<const Obs> obs, Tensor<T, 2>& out) const {
    RLMED_CHECK(!obs.empty(), "DQN: no observations to act on");
    out.resize(Shape<2>{static_cast<index_t>(obs.size()), obs_dim_});
    for (std::size_t i = 0; i < obs.size(); ++i) {
      const auto v = dqn_detail::values_of<T>(obs[i]);
      RLMED_CHECK(static_cast<index_t>(v.size()) == obs_dim_, "DQN: observation ", i, " has ", v.size(),
                  " components, expected ", obs_dim_);
      std::copy(v.begin(), v.end(), out.data() + static_cast<index_t>(i) * obs_dim_);
    }
  }

  DQNConfig config_;
  Replay replay_;
  index_t obs_dim_;
  index_t actions_ = 0;
  PhiloxStream init_rng_, explore_rng_, replay_rng_;
  Net online_;
  Net target_;
  Optimizer optimizer_;
  sync::TargetPairs<T> pairs_;
  Exploration exploration_;
  TargetSync sync_;
  std::int64_t env_steps_ = 0;
  std::int64_t gradient_steps_ = 0;

  // Reused buffers (no allocation after the first step).
  batch_type batch_;
  typename Net::Cache train_cache_, next_target_cache_, next_online_cache_, infer_cache_;
  Tensor<T, 2> act_obs_, eval_obs_;  // [N, obs_dim]
  Tensor<T, 1> y_, q_taken_, td_, grad_taken_;  // [B]
  Tensor<T, 2> dq_;                  // [B, A]
};

}  // namespace rlmed::rl
