// rlmed/rl/pixel_dqn.hpp — per-pixel deep Q-learning, the DQN / Double DQN / Dueling DQN
// baselines of PixelDRL-MG (SYSTEMS.md S6): every pixel is an agent with its own Q-values, all
// computed by one fully convolutional network as Q maps [B, A, H, W], on the carve environment
// (env/pixel_mask.hpp) or any environment with the same step interface.
//
// Design decisions:
//  * Variants are template parameters (principle 1): PixelQTarget::plain uses
//    y = r + γ(1 − d) max_a Q_target(s', a); PixelQTarget::double_q evaluates the online argmax
//    with the target network, y = r + γ(1 − d) Q_target(s', argmax_a Q_online(s', a)) (lowest index
//    on ties). PixelQHead::plain reads A Q maps from the network; PixelQHead::dueling reads A
//    advantage maps and 1 value map (A + 1 channels) and combines them per pixel,
//    Q_a = V + adv_a − (1/A) Σ_k adv_k (Wang et al.), whose backward is
//    dadv_a = dQ_a − (1/A) Σ_k dQ_k, dV = Σ_k dQ_k.
//  * Loss: Huber (δ = 1) of Q(s, a) − y per pixel, averaged over the B·H·W pixels of the batch;
//    only the taken action's Q receives gradient. Targets are constants.
//  * Replay stores whole transitions per image: (state [C, H, W], action map [H, W], reward map
//    [1, H, W], next state, done) in preallocated columns (ring buffer; all images of one run have
//    the same size, e.g. training crops). Uniform sampling with Philox.
//  * ε-greedy per pixel with Philox, one counter per (step, pixel) like pixel_a3c's sampler:
//    words 0 and 1 of philox_block(seed, stream, (step << 32) | pixel) decide "explore" (u < ε)
//    and the random action (⌊u·A⌋). The environment step counter and the replay stream are
//    buffers, so a checkpoint resumes the draws.
//  * Episode end: by default terminal (d = 1 at t_max, as PixelA3C's default, R^(n) = 0);
//    terminal_at_episode_end = false treats it as a time limit and bootstraps.
//  * Target network: a copy of the online network made when the learner is constructed (so
//    initialise the online network first), synchronised every target_sync_every updates.
//    Buffers (caches, batches, maps) are members: no allocation after the first update.
#pragma once

#include <algorithm>
#include <cmath>
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
#include "rlmed/nn/module.hpp"
#include "rlmed/nn/optim/param_list.hpp"
#include "rlmed/rl/pixel_a3c.hpp"

namespace rlmed::rl {

enum class PixelQTarget { plain, double_q };
enum class PixelQHead { plain, dueling };

// ============================================================================================
// Per-pixel maths: dueling combination, targets, loss, ε-greedy
// ============================================================================================

/// q [B, A, H, W] from features [B, A + 1, H, W] (A advantages, then the value).
template <class T>
void dueling_q_into(TensorView<T, 4> q, TensorView<const T, 4> features) {
  const index_t A = features.extent(1) - 1, B = features.extent(0), S = features.extent(2) * features.extent(3);
  RLMED_CHECK(A >= 1, "dueling_q: features need A + 1 >= 2 channels, found ", features.shape());
  RLMED_CHECK(q.shape() == Shape<4>({B, A, features.extent(2), features.extent(3)}), "dueling_q: q must be ",
              Shape<4>{B, A, features.extent(2), features.extent(3)}, ", found ", q.shape());
  const T* f = features.data();
  T* out = q.data();
  parallel_for(0, B * S, [&](index_t i) {
    const index_t b = i / S, s = i % S;
    const T* fp = f + b * (A + 1) * S + s;
    T mean = 0;
    for (index_t k = 0; k < A; ++k) mean += fp[k * S];
    mean /= static_cast<T>(A);
    const T v = fp[A * S];
    for (index_t k = 0; k < A; ++k) out[b * A * S + k * S + s] = v + fp[k * S] - mean;
  }, 4096);
}

/// Backward of dueling_q_into: dfeatures [B, A + 1, H, W] from dq [B, A, H, W] (overwritten).
template <class T>
void dueling_q_backward_into(TensorView<T, 4> dfeatures, TensorView<const T, 4> dq) {
  const index_t A = dq.extent(1), B = dq.extent(0), S = dq.extent(2) * dq.extent(3);
  RLMED_CHECK(dfeatures.shape() == Shape<4>({B, A + 1, dq.extent(2), dq.extent(3)}),
              "dueling_q_backward: dfeatures must be ", Shape<4>{B, A + 1, dq.extent(2), dq.extent(3)}, ", found ",
              dfeatures.shape());
  const T* g = dq.data();
  T* out = dfeatures.data();
  parallel_for(0, B * S, [&](index_t i) {
    const index_t b = i / S, s = i % S;
    const T* gp = g + b * A * S + s;
    T sum = 0;
    for (index_t k = 0; k < A; ++k) sum += gp[k * S];
    const T mean = sum / static_cast<T>(A);
    T* op = out + b * (A + 1) * S + s;
    for (index_t k = 0; k < A; ++k) op[k * S] = gp[k * S] - mean;
    op[A * S] = sum;
  }, 4096);
}

/// y = r + γ (1 − done_b) Q_target(s', a*) per pixel, a* = argmax Q_target (plain) or argmax
/// Q_online (double; pass q_next_online). targets, rewards [B, 1, H, W]; q maps [B, A, H, W];
/// done [B] (0/1).
template <class T>
void pixel_q_targets_into(TensorView<T, 4> targets, TensorView<const T, 4> rewards, std::span<const std::uint8_t> done,
                          TensorView<const T, 4> q_next_target, TensorView<const T, 4> q_next_online,
                          PixelQTarget kind, double gamma) {
  constexpr const char* fn = "pixel_q_targets";
  const index_t B = q_next_target.extent(0), A = q_next_target.extent(1), H = q_next_target.extent(2),
                W = q_next_target.extent(3), S = H * W;
  const Shape<4> map{B, 1, H, W};
  RLMED_CHECK(A >= 1 && B >= 1, fn, ": Q maps must be [B, A, H, W] with B, A >= 1, found ", q_next_target.shape());
  RLMED_CHECK(targets.shape() == map && rewards.shape() == map, fn, ": targets ", targets.shape(), " and rewards ",
              rewards.shape(), " must be ", map);
  RLMED_CHECK(static_cast<index_t>(done.size()) == B, fn, ": ", done.size(), " done flags for a batch of ", B);
  RLMED_CHECK(std::isfinite(gamma) && gamma >= 0 && gamma <= 1, fn, ": gamma must be in [0, 1], found ", gamma);
  if (kind == PixelQTarget::double_q)
    RLMED_CHECK(q_next_online.shape() == q_next_target.shape(), fn, ": Double DQN needs online Q maps of shape ",
                q_next_target.shape(), ", found ", q_next_online.shape());
  const T g = static_cast<T>(gamma);
  parallel_for(0, B * S, [&](index_t i) {
    const index_t b = i / S, s = i % S;
    const T* qt = q_next_target.data() + b * A * S + s;
    const T* sel = kind == PixelQTarget::double_q ? q_next_online.data() + b * A * S + s : qt;
    index_t best = 0;
    for (index_t k = 1; k < A; ++k)
      if (sel[k * S] > sel[best * S]) best = k;
    const T r = rewards.data()[i];
    RLMED_CHECK(std::isfinite(r) && std::isfinite(qt[best * S]), fn, ": reward ", r, " or next Q ", qt[best * S],
                " at pixel ", i, " is not finite");
    targets.data()[i] = r + (done[static_cast<std::size_t>(b)] ? T(0) : g * qt[best * S]);
  }, 4096);
}

/// Huber(δ) of Q(s, a) − y averaged over B·H·W pixels; dq [B, A, H, W] is overwritten (zero
/// except at the taken actions). `partial` is reduction scratch.
template <class T>
double pixel_q_loss_into(TensorView<T, 4> dq, TensorView<const T, 4> q, TensorView<const std::int32_t, 3> actions,
                         TensorView<const T, 4> targets, double delta, std::vector<double>& partial) {
  constexpr const char* fn = "pixel_q_loss";
  const index_t B = q.extent(0), A = q.extent(1), H = q.extent(2), W = q.extent(3), S = H * W;
  RLMED_CHECK(dq.shape() == q.shape(), fn, ": dq ", dq.shape(), " must have q's shape ", q.shape());
  RLMED_CHECK(actions.shape() == Shape<3>({B, H, W}), fn, ": actions must be ", Shape<3>{B, H, W}, ", found ",
              actions.shape());
  RLMED_CHECK(targets.shape() == Shape<4>({B, 1, H, W}), fn, ": targets must be ", Shape<4>{B, 1, H, W}, ", found ",
              targets.shape());
  RLMED_CHECK(delta > 0, fn, ": Huber delta must be > 0, found ", delta);
  const double n = double(B * S);
  double sum = 0;
  detail::chunked_sums(B * S, detail::kPixelGrain, 1, partial, &sum, [&](index_t p0, index_t p1, double* acc) {
    for (index_t i = p0; i < p1; ++i) {
      const index_t b = i / S, s = i % S;
      const std::int32_t a = actions.data()[i];
      RLMED_CHECK(a >= 0 && a < A, fn, ": action ", a, " at pixel ", i, " outside [0, ", A, ")");
      T* g = dq.data() + b * A * S + s;
      for (index_t k = 0; k < A; ++k) g[k * S] = T(0);
      const double d = double(q.data()[b * A * S + a * S + s]) - double(targets.data()[i]);
      const double ad = std::abs(d);
      acc[0] += ad <= delta ? 0.5 * d * d : delta * (ad - 0.5 * delta);
      g[a * S] = static_cast<T>((ad <= delta ? d : (d > 0 ? delta : -delta)) / n);
    }
  });
  RLMED_CHECK(std::isfinite(sum), fn, ": the loss is ", sum);
  return sum / n;
}

/// ε-greedy per pixel (see the header comment): q [B, A, H, W] -> actions [B, H, W].
template <class T>
void epsilon_greedy_pixel_actions_into(TensorView<std::int32_t, 3> actions, TensorView<const T, 4> q, double epsilon,
                                       const PixelSampleKey& key) {
  constexpr const char* fn = "epsilon_greedy_pixel_actions";
  RLMED_CHECK(epsilon >= 0 && epsilon <= 1, fn, ": epsilon must be in [0, 1], found ", epsilon);
  RLMED_CHECK(key.step < (std::uint64_t(1) << 32), fn, ": step counter ", key.step, " exceeds 2^32 - 1");
  greedy_pixel_actions_into(actions, q);
  if (epsilon == 0) return;
  const index_t A = q.extent(1);
  std::int32_t* out = actions.data();
  parallel_for(0, actions.size(), [&](index_t i) {
    const auto blk = philox_block(key.seed, key.stream, (key.step << 32) | (static_cast<std::uint64_t>(i) & 0xFFFFFFFFu));
    if (double(u32_to_uniform_float(blk.v[0])) < epsilon) {
      const auto k = static_cast<index_t>(double(u32_to_uniform_float(blk.v[1])) * double(A));
      out[i] = static_cast<std::int32_t>(std::min(k, A - 1));
    }
  }, detail::kPixelGrain);
}

// ============================================================================================
// Replay of whole-image transitions
// ============================================================================================

template <class T>
class PixelReplay {
 public:
  explicit PixelReplay(index_t capacity = 512) : capacity_(capacity) {
    RLMED_CHECK(capacity >= 1, "PixelReplay: capacity must be >= 1, found ", capacity);
  }

  /// Adds the B transitions of one batched step: obs, next_obs [B, C, H, W], actions [B, H, W],
  /// rewards [B, 1, H, W], done (the same for the whole batch).
  void push(TensorView<const T, 4> obs, TensorView<const std::int32_t, 3> actions, TensorView<const T, 4> rewards,
            TensorView<const T, 4> next_obs, bool done) {
    const Shape<4> s = obs.shape();
    RLMED_CHECK(next_obs.shape() == s && actions.shape() == Shape<3>({s[0], s[2], s[3]}) &&
                    rewards.shape() == Shape<4>({s[0], 1, s[2], s[3]}),
                "PixelReplay::push: shapes obs ", s, ", actions ", actions.shape(), ", rewards ", rewards.shape(),
                ", next ", next_obs.shape(), " do not match");
    if (size_ == 0 && obs_.size() == 0) {
      obs_.resize(Shape<4>{capacity_, s[1], s[2], s[3]});
      next_.resize(obs_.shape());
      actions_.resize(Shape<3>{capacity_, s[2], s[3]});
      rewards_.resize(Shape<4>{capacity_, 1, s[2], s[3]});
      done_.assign(static_cast<std::size_t>(capacity_), 0);
    }
    RLMED_CHECK(s[1] == obs_.extent(1) && s[2] == obs_.extent(2) && s[3] == obs_.extent(3),
                "PixelReplay::push: transitions are ", Shape<3>{s[1], s[2], s[3]}, " but the buffer holds ",
                Shape<3>{obs_.extent(1), obs_.extent(2), obs_.extent(3)});
    for (index_t b = 0; b < s[0]; ++b) {
      copy(obs_[cursor_], obs[b]);
      copy(next_[cursor_], next_obs[b]);
      copy(actions_[cursor_], actions[b]);
      copy(rewards_[cursor_], rewards[b]);
      done_[static_cast<std::size_t>(cursor_)] = done ? 1 : 0;
      cursor_ = (cursor_ + 1) % capacity_;
      size_ = std::min(size_ + 1, capacity_);
    }
  }

  /// Uniform sample of `batch` transitions (with replacement) into the batch tensors.
  void sample(index_t batch, PhiloxStream& rng, Tensor<T, 4>& obs, Tensor<std::int32_t, 3>& actions,
              Tensor<T, 4>& rewards, Tensor<T, 4>& next_obs, std::vector<std::uint8_t>& done) const {
    RLMED_CHECK(size_ >= 1, "PixelReplay::sample: the buffer is empty");
    RLMED_CHECK(batch >= 1, "PixelReplay::sample: batch must be >= 1, found ", batch);
    obs.resize(Shape<4>{batch, obs_.extent(1), obs_.extent(2), obs_.extent(3)});
    next_obs.resize(obs.shape());
    actions.resize(Shape<3>{batch, obs_.extent(2), obs_.extent(3)});
    rewards.resize(Shape<4>{batch, 1, obs_.extent(2), obs_.extent(3)});
    done.resize(static_cast<std::size_t>(batch));
    for (index_t b = 0; b < batch; ++b) {
      const index_t k = rng.uniform_int(static_cast<std::uint32_t>(size_));
      copy(obs[b], TensorView<const T, 3>(obs_[k]));
      copy(next_obs[b], TensorView<const T, 3>(next_[k]));
      copy(actions[b], TensorView<const std::int32_t, 2>(actions_[k]));
      copy(rewards[b], TensorView<const T, 3>(rewards_[k]));
      done[static_cast<std::size_t>(b)] = done_[static_cast<std::size_t>(k)];
    }
  }

  [[nodiscard]] index_t size() const noexcept { return size_; }
  [[nodiscard]] index_t capacity() const noexcept { return capacity_; }

 private:
  index_t capacity_, size_ = 0, cursor_ = 0;
  Tensor<T, 4> obs_, next_, rewards_;
  Tensor<std::int32_t, 3> actions_;
  std::vector<std::uint8_t> done_;
};

// ============================================================================================
// The learner
// ============================================================================================

struct PixelDqnConfig {
  double gamma = 0.95;
  double huber_delta = 1.0;
  index_t batch = 4;                 ///< transitions (images) per update
  index_t replay_capacity = 512;     ///< transitions (images)
  index_t learn_start = 16;          ///< transitions before the first update
  int target_sync_every = 100;       ///< updates between target-network copies
  double epsilon_start = 1.0, epsilon_end = 0.05;
  std::int64_t epsilon_decay_steps = 1000;  ///< environment steps of linear decay
  bool terminal_at_episode_end = true;
  double max_grad_norm = 10;         ///< 0 = no clipping
  std::uint64_t seed = 0;
  std::uint64_t stream = 0;
};

struct PixelDqnStats {
  double loss = 0;        ///< last update's loss (0 when no update ran)
  double mean_q = 0;      ///< mean Q(s, a) of the updated batch
  double epsilon = 0;
  double mean_reward = 0; ///< mean per-pixel reward of the environment step
  bool updated = false;
};

/// Net: a module x [B, C, H, W] -> [B, K, H, W] with K = A (plain head) or A + 1 (dueling).
template <class Net, PixelQTarget Target = PixelQTarget::double_q, PixelQHead Head = PixelQHead::plain>
class PixelDqn {
 public:
  using value_type = typename Net::value_type;
  using T = value_type;
  static constexpr PixelQTarget target_kind = Target;
  static constexpr PixelQHead head_kind = Head;

  PixelDqn(Net& online, PixelDqnConfig cfg = {}) : config(cfg), online_(online), target_(online), replay_(cfg.replay_capacity) {
    RLMED_CHECK(cfg.gamma >= 0 && cfg.gamma <= 1, "PixelDqn: gamma must be in [0, 1], found ", cfg.gamma);
    RLMED_CHECK(cfg.batch >= 1 && cfg.learn_start >= 1 && cfg.target_sync_every >= 1 && cfg.epsilon_decay_steps >= 1,
                "PixelDqn: batch, learn_start, target_sync_every and epsilon_decay_steps must be >= 1");
    RLMED_CHECK(cfg.epsilon_start >= 0 && cfg.epsilon_start <= 1 && cfg.epsilon_end >= 0 && cfg.epsilon_end <= 1,
                "PixelDqn: epsilons must be in [0, 1]");
    counters_ = Tensor<std::int64_t, 1>(Shape<1>{3});  // env steps, updates, replay draws
    online_params_ = nn::optim::ParamList<T>(online_);
    target_params_ = nn::optim::ParamList<T>(target_);
  }
  PixelDqn(const PixelDqn&) = delete;
  PixelDqn& operator=(const PixelDqn&) = delete;

  /// The online network's parameters (what the optimiser trains and checkpoints hold).
  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    online_.parameters(visit, prefix);
  }
  /// The target network's parameters under "target." and the counters.
  template <class V>
  void buffers(V&& visit, std::string_view prefix = {}) {
    target_.parameters([&](const std::string& name, auto& p) { visit(name, p.value); }, nn::join_name(prefix, "target"));
    visit(nn::join_name(prefix, "dqn_counters"), counters_);
  }

  [[nodiscard]] double epsilon() const {
    const double f = std::min(1.0, double(counters_(0)) / double(config.epsilon_decay_steps));
    return config.epsilon_start + (config.epsilon_end - config.epsilon_start) * f;
  }
  [[nodiscard]] std::int64_t env_steps() const noexcept { return counters_(0); }
  [[nodiscard]] std::int64_t updates() const noexcept { return counters_(1); }
  [[nodiscard]] const PixelReplay<T>& replay() const noexcept { return replay_; }

  /// Q maps [B, A, H, W] of observations (online network, evaluation mode).
  TensorView<const T, 4> q_values(TensorView<const T, 4> obs) {
    nn::Context ctx;
    ctx.training = false;
    ctx.input_grad = false;
    return q_of(online_.forward(ctx, obs, act_cache_), act_q_);
  }

  /// One ε-greedy step of every pixel of `env`, stored in replay, then one update when the
  /// replay holds learn_start transitions. Requires a started, unfinished episode.
  template <class Env, class Optimizer>
  PixelDqnStats step(Env& env, Optimizer& optimizer) {
    RLMED_CHECK(env.started() && !env.done(), "PixelDqn::step: start an episode with env.reset");
    PixelDqnStats st;
    st.epsilon = epsilon();
    const auto obs = env.observation();
    obs_before_.resize(obs.shape());
    copy(obs_before_.view(), obs);
    const auto q = q_values(obs_before_.view());
    acts_.resize(Shape<3>{q.extent(0), q.extent(2), q.extent(3)});
    rewards_.resize(Shape<4>{q.extent(0), 1, q.extent(2), q.extent(3)});
    epsilon_greedy_pixel_actions_into(acts_.view(), q, st.epsilon,
                                      PixelSampleKey{config.seed, config.stream, static_cast<std::uint64_t>(counters_(0))});
    const bool done = env.step_into(TensorView<const std::int32_t, 3>(acts_), rewards_.view());
    counters_(0) += 1;
    replay_.push(obs_before_.view(), acts_.view(), rewards_.view(), env.observation(),
                 done && config.terminal_at_episode_end);
    double rs = 0;
    for (T r : rewards_) rs += double(r);
    st.mean_reward = rs / double(rewards_.size());
    if (replay_.size() >= config.learn_start) {
      const auto [loss, mean_q] = update(optimizer);
      st.loss = loss;
      st.mean_q = mean_q;
      st.updated = true;
    }
    return st;
  }

  /// One gradient step on a replay batch; returns (loss, mean Q of the taken actions).
  template <class Optimizer>
  std::pair<double, double> update(Optimizer& optimizer) {
    PhiloxStream rng(config.seed, 0x5EED0000u + config.stream);
    rng.seek(static_cast<std::uint64_t>(counters_(2)));
    replay_.sample(config.batch, rng, b_obs_, b_actions_, b_rewards_, b_next_, b_done_);
    counters_(2) = static_cast<std::int64_t>(rng.position());
    nn::Context eval;
    eval.training = false;
    eval.input_grad = false;
    const auto qt = q_of(target_.forward(eval, b_next_.view(), target_cache_), next_target_q_);
    TensorView<const T, 4> qo{};
    if constexpr (Target == PixelQTarget::double_q) qo = q_of(online_.forward(eval, b_next_.view(), act_cache_), next_online_q_);
    targets_.resize(b_rewards_.shape());
    pixel_q_targets_into(targets_.view(), TensorView<const T, 4>(b_rewards_), std::span<const std::uint8_t>(b_done_), qt,
                         qo, Target, config.gamma);
    optimizer.zero_grad();
    nn::Context ctx;
    ctx.training = true;
    ctx.input_grad = false;
    const auto q = q_of(online_.forward(ctx, b_obs_.view(), train_cache_), train_q_);
    dq_.resize(q.shape());
    const double loss = pixel_q_loss_into(dq_.view(), q, TensorView<const std::int32_t, 3>(b_actions_),
                                          TensorView<const T, 4>(targets_), config.huber_delta, partial_);
    double mq = 0;
    {
      const index_t A = q.extent(1), S = q.extent(2) * q.extent(3);
      for (index_t i = 0; i < b_actions_.size(); ++i)
        mq += double(q.data()[(i / S) * A * S + b_actions_.data()[i] * S + i % S]);
      mq /= double(b_actions_.size());
    }
    if constexpr (Head == PixelQHead::dueling) {
      dfeatures_.resize(Shape<4>{q.extent(0), q.extent(1) + 1, q.extent(2), q.extent(3)});
      dueling_q_backward_into(dfeatures_.view(), TensorView<const T, 4>(dq_));
      online_.backward(ctx, train_cache_, TensorView<const T, 4>(dfeatures_));
    } else {
      online_.backward(ctx, train_cache_, TensorView<const T, 4>(dq_));
    }
    if (config.max_grad_norm > 0) nn::optim::clip_grad_norm(optimizer.params(), config.max_grad_norm);
    optimizer.step();
    counters_(1) += 1;
    if (counters_(1) % config.target_sync_every == 0) sync_target();
    return {loss, mq};
  }

  /// Copies the online parameters into the target network.
  void sync_target() { a3c_pull_parameters(target_params_, online_params_); }

  /// Runs the episode to its end greedily; on_step(k) after step k (optional).
  template <class Env, class OnStep = void (*)(int)>
  void run_episode(Env& env, OnStep on_step = nullptr) {
    RLMED_CHECK(env.started() && !env.done(), "PixelDqn::run_episode: start an episode with env.reset");
    for (int k = 0; !env.done(); ++k) {
      const auto q = q_values(env.observation());
      acts_.resize(Shape<3>{q.extent(0), q.extent(2), q.extent(3)});
      rewards_.resize(Shape<4>{q.extent(0), 1, q.extent(2), q.extent(3)});
      greedy_pixel_actions_into(acts_.view(), q);
      env.step_into(TensorView<const std::int32_t, 3>(acts_), rewards_.view());
      if constexpr (!std::is_same_v<OnStep, void (*)(int)>) on_step(k);
      else if (on_step) on_step(k);
    }
  }

  PixelDqnConfig config;

 private:
  /// Q maps from the network output: the output itself (plain) or the dueling combination.
  TensorView<const T, 4> q_of(TensorView<const T, 4> out, Tensor<T, 4>& buffer) {
    if constexpr (Head == PixelQHead::dueling) {
      buffer.resize(Shape<4>{out.extent(0), out.extent(1) - 1, out.extent(2), out.extent(3)});
      dueling_q_into(buffer.view(), out);
      return buffer.view();
    } else {
      return out;
    }
  }

  Net& online_;
  Net target_;
  PixelReplay<T> replay_;
  typename Net::Cache act_cache_, target_cache_, train_cache_;
  Tensor<T, 4> act_q_, next_target_q_, next_online_q_, train_q_;
  Tensor<T, 4> obs_before_, rewards_, b_obs_, b_rewards_, b_next_, targets_, dq_, dfeatures_;
  Tensor<std::int32_t, 3> acts_, b_actions_;
  std::vector<std::uint8_t> b_done_;
  std::vector<double> partial_;
  Tensor<std::int64_t, 1> counters_;
  nn::optim::ParamList<T> online_params_, target_params_;
};

}  // namespace rlmed::rl
