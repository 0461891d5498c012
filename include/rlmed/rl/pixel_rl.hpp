// rlmed/rl/pixel_rl.hpp — PixelRL (Furuta et al.) as a PixelDRL-MG baseline (SYSTEMS.md S6):
// every pixel refines a coarse foreground probability map with 9 additive actions, learned by the
// pixel-wise advantage actor-critic with the reward-map convolution; and the generic per-pixel
// actor-critic learner that it, and the plain actor-critic baseline, run on.
//
// Design decisions:
//  * Environment (PixelRefineEnv): the state is (image, p) as two channels, p ∈ [0, 1] the current
//    probability map, starting from a coarse map (e.g. a briefly trained U-Net's sigmoid output).
//    Action k adds δ_k ∈ {−1.0, −0.4, −0.2, −0.1, 0, +0.1, +0.2, +0.4, +1.0} (index 4 = no change)
//    and clips to [0, 1]. Reward per pixel: r = (p − G)² − (p' − G)², the decrease of the squared
//    error to the binary label (PixelRL's denoising reward; the task of issue 6 says squared error,
//    SYSTEMS.md's "cross-entropy" would be unbounded at p ∈ {0, 1} after a ±1 action). The
//    segmentation is 1[p > 0.5]. Episodes last t_max steps and end terminally.
//  * Learner (PixelActorCriticLearner<Net, Env>): the PA3C rollout/loss of rl/pixel_a3c.hpp
//    (per-pixel Philox sampling, reward_map_returns_into/_backward, pixel_a3c_step_into) written
//    once for any environment with observation(), step_into(actions, rewards), done(),
//    steps_left(), started() and mean_dice() — PixelA3C itself is tied to env::PixelMaskEnv.
//    Same PixelA3CConfig, same parameter names ("reward_map.weight" after the network's), same
//    sampler counter, so results are comparable with PixelA3C run to run. With
//    learn_reward_map = false it is the plain actor-critic baseline (no reward-map convolution,
//    synchronous updates: no A3C asynchrony).
//  * Buffers are members kept across updates (no allocation after the first of a given size).
#pragma once

#include <algorithm>
#include <array>
#include <concepts>
#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/metrics.hpp"
#include "rlmed/nn/optim/param_list.hpp"
#include "rlmed/rl/pixel_a3c.hpp"

namespace rlmed::rl {

/// The 9 PixelRL refinement actions: amounts added to the probability (index 4 = do nothing).
inline constexpr std::array<double, 9> kPixelRefineDeltas{-1.0, -0.4, -0.2, -0.1, 0.0, 0.1, 0.2, 0.4, 1.0};
inline constexpr std::int32_t kPixelRefineNoop = 4;

struct PixelRefineConfig {
  int t_max = 5;             ///< steps per episode
  double threshold = 0.5;    ///< segmentation = 1[p > threshold]
};

template <class T>
class PixelRefineEnv {
  static_assert(std::is_floating_point_v<T>, "PixelRefineEnv holds float or double maps");

 public:
  using value_type = T;
  static constexpr int num_actions = 9;

  explicit PixelRefineEnv(PixelRefineConfig cfg = {}) : config_(cfg) {
    RLMED_CHECK(cfg.t_max >= 1, "PixelRefineEnv: t_max must be >= 1, found ", cfg.t_max);
    RLMED_CHECK(cfg.threshold > 0 && cfg.threshold < 1, "PixelRefineEnv: threshold must be in (0, 1), found ",
                cfg.threshold);
  }

  /// images, coarse, labels [B, 1, H, W]: finite images, coarse probabilities in [0, 1], labels 0/1.
  void reset(TensorView<const T, 4> images, TensorView<const T, 4> coarse, TensorView<const T, 4> labels) {
    const Shape<4> s = images.shape();
    RLMED_CHECK(s[0] >= 1 && s[1] == 1 && s[2] >= 1 && s[3] >= 1,
                "PixelRefineEnv::reset: images must be [B, 1, H, W] with B, H, W >= 1, found ", s);
    RLMED_CHECK(coarse.shape() == s && labels.shape() == s, "PixelRefineEnv::reset: coarse ", coarse.shape(),
                " and labels ", labels.shape(), " must have the images' shape ", s);
    RLMED_CHECK(s[0] * s[2] * s[3] <= (index_t(1) << 32), "PixelRefineEnv::reset: more than 2^32 pixels per batch");
    for (index_t i = 0; i < images.size(); ++i) {
      if (!std::isfinite(images.data()[i]))
        RLMED_THROW("PixelRefineEnv::reset: images must be finite, found ", images.data()[i], " at flat index ", i);
      const T p = coarse.data()[i], g = labels.data()[i];
      if (!(p >= T(0) && p <= T(1)))
        RLMED_THROW("PixelRefineEnv::reset: coarse probabilities must be in [0, 1], found ", p, " at flat index ", i);
      if (!(g == T(0) || g == T(1)))
        RLMED_THROW("PixelRefineEnv::reset: labels must be 0 or 1, found ", g, " at flat index ", i);
    }
    shape_ = s;
    labels_.resize(s);
    prob_.resize(s);
    mask_.resize(s);
    rewards_.resize(s);
    observation_.resize(Shape<4>{s[0], 2, s[2], s[3]});
    copy(labels_.view(), labels);
    copy(prob_.view(), coarse);
    const index_t plane = s[2] * s[3];
    for (index_t b = 0; b < s[0]; ++b) {
      std::copy(images.data() + b * plane, images.data() + (b + 1) * plane, observation_.data() + (2 * b) * plane);
      std::copy(coarse.data() + b * plane, coarse.data() + (b + 1) * plane, observation_.data() + (2 * b + 1) * plane);
    }
    update_mask();
    fill(rewards_.view(), T(0));
    t_ = 0;
    started_ = true;
  }

  /// actions [B, H, W] in [0, 9); rewards_out [B, 1, H, W]. Returns done().
  bool step_into(TensorView<const std::int32_t, 3> actions, TensorView<T, 4> rewards_out) {
    RLMED_CHECK(started_, "PixelRefineEnv::step: call reset before the first step");
    RLMED_CHECK(t_ < config_.t_max, "PixelRefineEnv::step: the episode ended after t_max = ", config_.t_max,
                " steps; call reset");
    const Shape<3> want{shape_[0], shape_[2], shape_[3]};
    RLMED_CHECK(actions.shape() == want, "PixelRefineEnv::step: actions must be [B, H, W] = ", want, ", found ",
                actions.shape());
    RLMED_CHECK(rewards_out.shape() == shape_, "PixelRefineEnv::step: rewards_out must be ", shape_, ", found ",
                rewards_out.shape());
    const std::int32_t* a = actions.data();
    for (index_t i = 0; i < actions.size(); ++i)
      if (a[i] < 0 || a[i] >= num_actions)
        RLMED_THROW("PixelRefineEnv::step: actions must be in [0, 9), found ", a[i], " at flat index ", i);
    const index_t plane = shape_[2] * shape_[3];
    T* p = prob_.data();
    T* obs = observation_.data();
    T* r = rewards_out.data();
    const T* g = labels_.data();
    parallel_for(0, shape_[0] * plane, [&](index_t i) {
      const T before = p[i];
      const T after = std::clamp(before + static_cast<T>(kPixelRefineDeltas[static_cast<std::size_t>(a[i])]), T(0), T(1));
      p[i] = after;
      obs[(2 * (i / plane) + 1) * plane + i % plane] = after;
      const T e0 = before - g[i], e1 = after - g[i];
      r[i] = e0 * e0 - e1 * e1;
    }, 4096);
    update_mask();
    ++t_;
    return done();
  }

  TensorView<const T, 4> step(TensorView<const std::int32_t, 3> actions) {
    step_into(actions, rewards_.view());
    return rewards_.view();
  }

  /// [B, 2, H, W]: image, current probability.
  [[nodiscard]] TensorView<const T, 4> observation() const { return observation_.view(); }
  /// Current probability map [B, 1, H, W].
  [[nodiscard]] TensorView<const T, 4> probability() const { return prob_.view(); }
  /// Current segmentation 1[p > threshold] [B, 1, H, W].
  [[nodiscard]] TensorView<const T, 4> mask() const { return mask_.view(); }
  [[nodiscard]] TensorView<const T, 4> labels() const { return labels_.view(); }
  [[nodiscard]] TensorView<const T, 4> rewards() const { return rewards_.view(); }
  [[nodiscard]] const Shape<4>& shape() const noexcept { return shape_; }
  [[nodiscard]] int t() const noexcept { return t_; }
  [[nodiscard]] int t_max() const noexcept { return config_.t_max; }
  [[nodiscard]] int steps_left() const noexcept { return config_.t_max - t_; }
  [[nodiscard]] bool done() const noexcept { return t_ >= config_.t_max; }
  [[nodiscard]] bool started() const noexcept { return started_; }

  [[nodiscard]] double mean_dice() const {
    RLMED_CHECK(started_, "PixelRefineEnv::dice: call reset first");
    double s = 0;
    for (index_t b = 0; b < shape_[0]; ++b) s += imaging::dice(mask_[b], labels_[b]);
    return s / double(shape_[0]);
  }

 private:
  void update_mask() {
    const T th = static_cast<T>(config_.threshold);
    for (index_t i = 0; i < prob_.size(); ++i) mask_.data()[i] = prob_.data()[i] > th ? T(1) : T(0);
  }

  PixelRefineConfig config_;
  Shape<4> shape_{};
  Tensor<T, 4> labels_, prob_, mask_, rewards_, observation_;
  int t_ = 0;
  bool started_ = false;
};

/// What the learner needs of an environment.
template <class E, class T>
concept PixelEpisodeEnv = requires(E& e, const E& ce, TensorView<const std::int32_t, 3> a, TensorView<T, 4> r) {
  { ce.observation() } -> std::convertible_to<TensorView<const T, 4>>;
  { e.step_into(a, r) } -> std::convertible_to<bool>;
  { ce.done() } -> std::convertible_to<bool>;
  { ce.steps_left() } -> std::convertible_to<int>;
  { ce.started() } -> std::convertible_to<bool>;
  { ce.mean_dice() } -> std::convertible_to<double>;
};

/// The synchronous per-pixel actor-critic learner on any PixelEpisodeEnv (see the header comment).
template <class Net, class Env>
  requires PixelActorCritic<Net> && PixelEpisodeEnv<Env, typename Net::value_type>
class PixelActorCriticLearner {
 public:
  using value_type = typename Net::value_type;
  using T = value_type;

  explicit PixelActorCriticLearner(Net& net, PixelA3CConfig cfg = {}) : config(cfg), net_(net) {
    RLMED_CHECK(cfg.gamma >= 0 && cfg.gamma <= 1, "PixelActorCriticLearner: gamma must be in [0, 1], found ", cfg.gamma);
    RLMED_CHECK(cfg.entropy_beta >= 0 && cfg.value_weight >= 0 && cfg.policy_weight >= 0,
                "PixelActorCriticLearner: loss weights must be >= 0");
    RLMED_CHECK(cfg.rollout_steps >= 0 && cfg.max_grad_norm >= 0,
                "PixelActorCriticLearner: rollout_steps and max_grad_norm must be >= 0");
    sample_step_ = Tensor<std::int64_t, 1>(Shape<1>{1});
  }
  PixelActorCriticLearner(const PixelActorCriticLearner&) = delete;
  PixelActorCriticLearner& operator=(const PixelActorCriticLearner&) = delete;

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    net_.parameters(visit, prefix);
    reward_map.parameters(visit, nn::join_name(prefix, "reward_map"));
  }
  template <class V>
  void buffers(V&& visit, std::string_view prefix = {}) {
    if constexpr (requires { net_.buffers(visit, prefix); }) net_.buffers(visit, prefix);
    visit(nn::join_name(prefix, "sampler_step"), sample_step_);
  }

  [[nodiscard]] Net& net() noexcept { return net_; }
  [[nodiscard]] std::uint64_t sample_step() const noexcept { return static_cast<std::uint64_t>(sample_step_(0)); }
  void set_sample_step(std::uint64_t s) {
    RLMED_CHECK(s < (std::uint64_t(1) << 32), "PixelActorCriticLearner: sample step ", s, " exceeds 2^32 - 1");
    sample_step_(0) = static_cast<std::int64_t>(s);
  }

  /// Runs up to rollout_steps (0: the rest of the episode) sampled steps, keeping what the loss needs.
  void collect(Env& env) {
    RLMED_CHECK(env.started() && !env.done(), "PixelActorCriticLearner::collect: start an episode with env.reset");
    const int n = config.rollout_steps > 0 ? std::min(config.rollout_steps, env.steps_left()) : env.steps_left();
    const Shape<4> os = env.observation().shape();
    const index_t B = os[0], H = os[2], W = os[3];
    observations_.resize(Shape<5>{n, B, os[1], H, W});
    actions_.resize(Shape<4>{n, B, H, W});
    rewards_.resize(Shape<5>{n, B, 1, H, W});
    bootstrap_.resize(Shape<4>{B, 1, H, W});
    if (static_cast<int>(caches_.size()) < n) caches_.resize(static_cast<std::size_t>(n));
    maps_.resize(static_cast<std::size_t>(n));
    n_ = 0;
    nn::Context ctx;
    ctx.training = true;
    ctx.input_grad = false;
    for (int t = 0; t < n; ++t) {
      copy(observations_[t], env.observation());
      const auto out = net_.forward(ctx, TensorView<const T, 4>(observations_[t]), caches_[static_cast<std::size_t>(t)]);
      maps_[static_cast<std::size_t>(t)] = PixelPolicyValue<T>{out.policy_logits, out.value};
      check_outputs(maps_[static_cast<std::size_t>(t)], B, H, W);
      sample_pixel_actions_into(actions_[t], TensorView<const T, 4>(out.policy_logits),
                                PixelSampleKey{config.seed, config.stream, sample_step()});
      set_sample_step(sample_step() + 1);
      env.step_into(TensorView<const std::int32_t, 3>(actions_[t]), rewards_[t]);
    }
    if (!env.done() || config.bootstrap_at_episode_end) {
      nn::Context eval = ctx;
      eval.training = false;
      const auto out = net_.forward(eval, env.observation(), boot_cache_);
      check_outputs(PixelPolicyValue<T>{out.policy_logits, out.value}, B, H, W);
      copy(bootstrap_.view(), TensorView<const T, 4>(out.value));
    } else {
      fill(bootstrap_.view(), T(0));
    }
    n_ = n;
    consumed_ = false;
  }

  /// Loss of the collected rollout; ADDS gradients into the network and reward_map.weight.grad.
  PixelA3CStats accumulate_gradients() {
    RLMED_CHECK(n_ >= 1 && !consumed_, "PixelActorCriticLearner::accumulate_gradients: call collect first (once per rollout)");
    const Shape<5> s = rewards_.shape();
    const index_t n = n_, pixels = s[1] * s[3] * s[4];
    const double scale = 1.0 / (double(config.step_reduction == StepReduction::mean ? n : 1) * double(pixels));
    returns_.resize(s);
    advantages_.resize(s);
    adjoint_.resize(s);
    reward_map_returns_into(returns_.view(), TensorView<const T, 5>(rewards_), TensorView<const T, 4>(bootstrap_),
                            TensorView<const T, 2>(reward_map.weight.value), config.gamma);
    const T direct = static_cast<T>(2.0 * config.value_weight * scale);
    double reward_sum = 0;
    for (index_t t = 0; t < n; ++t) {
      const T* R = returns_[t].data();
      const T* V = maps_[static_cast<std::size_t>(t)].value.data();
      const T* r = rewards_[t].data();
      T* adv = advantages_[t].data();
      T* adj = adjoint_[t].data();
      for (index_t i = 0; i < pixels; ++i) {
        adv[i] = R[i] - V[i];
        adj[i] = direct * adv[i];
        reward_sum += double(r[i]);
      }
    }
    if (config.learn_reward_map)
      reward_map_returns_backward(adjoint_.view(), TensorView<const T, 5>(returns_), TensorView<const T, 4>(bootstrap_),
                                  TensorView<const T, 2>(reward_map.weight.value), config.gamma,
                                  reward_map.weight.grad.view(), partial_);
    const PixelA3CLossWeights weights{config.value_weight, config.policy_weight, config.entropy_beta};
    PixelLossSums sums;
    nn::Context ctx;
    ctx.training = true;
    ctx.input_grad = false;
    for (index_t t = n; t-- > 0;) {
      const auto& pv = maps_[static_cast<std::size_t>(t)];
      dlogits_.resize(pv.policy_logits.shape());
      dvalue_.resize(pv.value.shape());
      sums += pixel_a3c_step_into(dlogits_.view(), dvalue_.view(), pv.policy_logits, pv.value,
                                  TensorView<const std::int32_t, 3>(actions_[t]), TensorView<const T, 4>(returns_[t]),
                                  TensorView<const T, 4>(advantages_[t]), weights, scale, partial_);
      net_.backward(ctx, caches_[static_cast<std::size_t>(t)], TensorView<const T, 4>(dlogits_),
                    TensorView<const T, 4>(dvalue_));
    }
    PixelA3CStats st;
    st.steps = static_cast<int>(n);
    st.value_loss = config.value_weight * sums.squared_error * scale;
    st.policy_loss = -config.policy_weight * sums.log_prob_adv * scale;
    st.entropy_loss = -config.entropy_beta * sums.entropy * scale;
    st.loss = st.value_loss + st.policy_loss + st.entropy_loss;
    st.mean_entropy = sums.entropy / (double(n) * double(pixels));
    st.mean_reward = reward_sum / (double(n) * double(pixels));
    RLMED_CHECK(std::isfinite(st.loss), "PixelActorCriticLearner: the loss is ", st.loss);
    consumed_ = true;
    return st;
  }

  /// zero_grad, collect, accumulate, optional clip, step. The optimiser is attached to this learner.
  template <class Optimizer>
  PixelA3CStats update(Env& env, Optimizer& optimizer) {
    optimizer.zero_grad();
    collect(env);
    PixelA3CStats st = accumulate_gradients();
    st.grad_norm = nn::optim::grad_norm(optimizer.params());
    RLMED_CHECK(std::isfinite(st.grad_norm), "PixelActorCriticLearner: gradient norm is ", st.grad_norm);
    if (config.max_grad_norm > 0) nn::optim::clip_grad_norm(optimizer.params(), config.max_grad_norm);
    optimizer.step();
    return st;
  }

  /// Runs the episode to its end without learning; dice_after_step[k] = mean Dice after step k
  /// (empty span: skip). `on_step(k)` (optional) is called after each step, e.g. to save masks.
  template <class OnStep = void (*)(int)>
  void run_episode(Env& env, PixelPolicy policy, std::span<double> dice_after_step = {}, OnStep on_step = nullptr) {
    RLMED_CHECK(env.started() && !env.done(), "PixelActorCriticLearner::run_episode: start an episode with env.reset");
    RLMED_CHECK(dice_after_step.empty() || static_cast<int>(dice_after_step.size()) == env.steps_left(),
                "PixelActorCriticLearner::run_episode: dice_after_step has ", dice_after_step.size(),
                " entries, expected ", env.steps_left(), " or 0");
    nn::Context ctx;
    ctx.training = false;
    ctx.input_grad = false;
    const Shape<4> s = env.observation().shape();
    eval_actions_.resize(Shape<3>{s[0], s[2], s[3]});
    eval_rewards_.resize(Shape<4>{s[0], 1, s[2], s[3]});
    for (int k = 0; !env.done(); ++k) {
      const auto out = net_.forward(ctx, env.observation(), boot_cache_);
      check_outputs(PixelPolicyValue<T>{out.policy_logits, out.value}, s[0], s[2], s[3]);
      if (policy == PixelPolicy::greedy) {
        greedy_pixel_actions_into(eval_actions_.view(), TensorView<const T, 4>(out.policy_logits));
      } else {
        sample_pixel_actions_into(eval_actions_.view(), TensorView<const T, 4>(out.policy_logits),
                                  PixelSampleKey{config.seed, config.stream, sample_step()});
        set_sample_step(sample_step() + 1);
      }
      env.step_into(TensorView<const std::int32_t, 3>(eval_actions_), eval_rewards_.view());
      if (!dice_after_step.empty()) dice_after_step[static_cast<std::size_t>(k)] = env.mean_dice();
      if constexpr (!std::is_same_v<OnStep, void (*)(int)>) on_step(k);
      else if (on_step) on_step(k);
    }
  }

  [[nodiscard]] int rollout_length() const noexcept { return static_cast<int>(n_); }
  [[nodiscard]] TensorView<const std::int32_t, 3> actions(int t) const { return actions_.sub(t); }
  [[nodiscard]] TensorView<const T, 4> rewards(int t) const { return rewards_.sub(t); }
  [[nodiscard]] TensorView<const T, 4> returns(int t) const { return returns_.sub(t); }

  PixelA3CConfig config;
  RewardMapFilter<T> reward_map;

 private:
  static void check_outputs(const PixelPolicyValue<T>& pv, index_t B, index_t H, index_t W) {
    RLMED_CHECK(pv.policy_logits.extent(0) == B && pv.policy_logits.extent(2) == H && pv.policy_logits.extent(3) == W,
                "PixelActorCriticLearner: policy logits have shape ", pv.policy_logits.shape(), ", expected [", B,
                ", A, ", H, ", ", W, "]");
    RLMED_CHECK(pv.value.shape() == Shape<4>({B, 1, H, W}), "PixelActorCriticLearner: value map has shape ",
                pv.value.shape(), ", expected ", Shape<4>{B, 1, H, W});
  }

  Net& net_;
  std::vector<typename Net::Cache> caches_;
  typename Net::Cache boot_cache_;
  std::vector<PixelPolicyValue<T>> maps_;
  Tensor<T, 5> observations_;                               // [n, B, C, H, W]
  Tensor<std::int32_t, 4> actions_;                         // [n, B, H, W]
  Tensor<T, 5> rewards_, returns_, advantages_, adjoint_;   // [n, B, 1, H, W]
  Tensor<T, 4> bootstrap_, dlogits_, dvalue_, eval_rewards_;
  Tensor<std::int32_t, 3> eval_actions_;
  Tensor<std::int64_t, 1> sample_step_;
  std::vector<double> partial_;
  index_t n_ = 0;
  bool consumed_ = false;
};

/// PixelRL: the learner on the refinement environment.
template <class Net>
using PixelRL = PixelActorCriticLearner<Net, PixelRefineEnv<typename Net::value_type>>;

}  // namespace rlmed::rl
