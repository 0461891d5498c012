// rlmed/rl/agents/grpo.hpp — Group Relative Policy Optimization (Shao et al., "DeepSeekMath",
// 2024, section 4.1) for autoregressive policies over a small vocabulary and verifiable rewards.
//
// Design decisions:
//  * No critic. For every prompt q a group of G outputs o_1..o_G is sampled from the current
//    policy (π_old); a verifier scores each, and the advantage of output i,
//        Â_i = (r_i − mean(r)) / (std(r) + ε_A),
//    is shared by all its tokens (outcome supervision). std is the sample standard deviation
//    (Bessel-corrected, as torch.std in TRL's GRPOTrainer); a group whose rewards are all equal
//    has Â = 0 and teaches nothing but the KL term.
//  * Objective, maximised, per iteration over the N = P·G outputs of P prompts, each of T tokens:
//        J = 1/N Σ_i 1/T Σ_t [ min(ρ_it Â_i, clip(ρ_it, 1 − ε, 1 + ε) Â_i) − β D_it ],
//        ρ_it = π_θ(o_it | q, o_i,<t) / π_old(o_it | q, o_i,<t),
//        D_it = π_ref/π_θ − log(π_ref/π_θ) − 1        (the k3 estimator of KL[π_θ ‖ π_ref]).
//    Gradients with respect to ℓ = log π_θ(o_it): d min(·)/dℓ = ρ Â where the unclipped term is
//    the active one (ρ Â ≤ clip(ρ) Â, or ρ inside the clip range) and 0 where the clipped term
//    is; dD/dℓ = 1 − π_ref/π_θ. Through the log-softmax: dℓ/dz_v = 1[v = o_it] − softmax(z)_v.
//    The loss handed to the optimiser is −J.
//  * The policy is any nn spec mapping the task's per-step features [B, F] to logits [B, V]
//    (V = vocabulary). All N·T steps of an iteration go through the network as one batch
//    (features of step t of output i are row t·N + i), so one forward/backward per inner epoch.
//  * The reference policy is a frozen copy of the initial policy (DeepSeekMath's π_ref, the SFT
//    model); `reference_sync_every` > 0 replaces it by the current policy every that many
//    iterations (the paper's iterative GRPO).
//  * Defaults: the paper's ε = 0.2, β = 0.04, μ = 1 update per batch, G = 64, with Adam; for the
//    toy task the learning rate (10⁻³ instead of 10⁻⁶) and group size are the caller's to set.
//  * A sequence task (concept VerifiableSequenceTask) supplies prompts, features of a prefix and
//    the reward; env/toy/digit_sum.hpp is one.
//  * Determinism and resume: Philox streams 0 (initialisation), 1 (prompts), 2 (token sampling),
//    3 (evaluation sampling); sampling walks outputs and steps in a fixed order with one uniform
//    per token. save/load hold policy, reference, optimiser moments, the iteration counter and
//    stream positions: a resumed run is bit-identical.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/safetensors.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/nn/nn.hpp"
#include "rlmed/rl/agents/actor_critic_common.hpp"
#include "rlmed/rl/target_sync.hpp"

namespace rlmed::rl::agents {

/// A task with prompts, a fixed answer length over a small vocabulary, per-step features of a
/// prefix, and a verifier's reward.
template <class Task>
concept VerifiableSequenceTask =
    requires(const Task& task, PhiloxStream& rng, const typename Task::prompt_type& prompt,
             std::span<const int> tokens, std::span<float> features) {
      typename Task::prompt_type;
      { Task::vocab_size } -> std::convertible_to<int>;
      { Task::length } -> std::convertible_to<int>;
      { Task::feature_size } -> std::convertible_to<int>;
      { task.sample_prompt(rng) } -> std::convertible_to<typename Task::prompt_type>;
      task.template features_into<float>(prompt, tokens, features);
      { task.reward(prompt, tokens) } -> std::convertible_to<double>;
    };

struct GrpoConfig {
  index_t prompts_per_iteration = 16;  ///< P prompts per batch
  index_t group_size = 64;             ///< G outputs per prompt
  double clip_epsilon = 0.2;           ///< ε of the clipped ratio
  double kl_beta = 0.04;               ///< β of the k3 KL penalty to the reference policy
  double advantage_epsilon = 1e-4;     ///< ε_A in Â = (r − mean) / (std + ε_A)
  index_t inner_epochs = 1;            ///< μ: optimiser steps on each sampled batch
  double lr = 1e-6;                    ///< Adam learning rate (the paper's, for a 7B model)
  double max_grad_norm = 1.0;          ///< clip gradients by global norm (0: off)
  std::int64_t reference_sync_every = 0;  ///< > 0: π_ref ← π_θ every that many iterations
  std::uint64_t seed = 0;
};

/// Group-relative advantages: Â_i = (r_i − mean_g) / (std_g + eps) within consecutive groups of
/// `group_size` rewards; std with Bessel's correction (0 for a group of one).
template <class T>
void group_advantages_into(std::span<const double> rewards, index_t group_size, double eps, std::span<T> out) {
  RLMED_CHECK(group_size >= 1 && !rewards.empty() && rewards.size() % static_cast<std::size_t>(group_size) == 0,
              "GRPO advantages: ", rewards.size(), " rewards do not split into groups of ", group_size);
  RLMED_CHECK(out.size() == rewards.size(), "GRPO advantages: ", out.size(), " outputs for ", rewards.size(), " rewards");
  RLMED_CHECK(eps > 0, "GRPO advantages: eps must be > 0, found ", eps);
  const auto G = static_cast<std::size_t>(group_size);
  for (std::size_t g0 = 0; g0 < rewards.size(); g0 += G) {
    double mean = 0;
    for (std::size_t i = 0; i < G; ++i) {
      RLMED_CHECK(std::isfinite(rewards[g0 + i]), "GRPO: reward ", g0 + i, " is ", rewards[g0 + i]);
      mean += rewards[g0 + i];
    }
    mean /= static_cast<double>(G);
    double sq = 0;
    for (std::size_t i = 0; i < G; ++i) sq += (rewards[g0 + i] - mean) * (rewards[g0 + i] - mean);
    const double std_dev = G > 1 ? std::sqrt(sq / static_cast<double>(G - 1)) : 0.0;
    for (std::size_t i = 0; i < G; ++i) out[g0 + i] = static_cast<T>((rewards[g0 + i] - mean) / (std_dev + eps));
  }
}

/// The k3 estimator of KL[π_θ ‖ π_ref] at one sampled token and its derivative with respect to
/// ℓ = log π_θ: D = e^{ℓ_ref − ℓ} − (ℓ_ref − ℓ) − 1 ≥ 0,  dD/dℓ = 1 − e^{ℓ_ref − ℓ}.
struct KlK3 {
  double value;
  double grad_logp;
};
inline KlK3 kl_k3(double logp, double logp_ref) {
  const double x = logp_ref - logp;
  const double e = std::exp(x);
  return {e - x - 1.0, 1.0 - e};
}

/// The clipped surrogate min(ρ Â, clip(ρ, 1 − ε, 1 + ε) Â) with ρ = exp(ℓ − ℓ_old), and its
/// derivative with respect to ℓ (ρ Â where the unclipped term is active, else 0).
struct ClippedSurrogate {
  double value;
  double grad_logp;
  bool clipped;  ///< the clipped term was the active one (and differs from the unclipped)
};
inline ClippedSurrogate clipped_surrogate(double logp, double logp_old, double advantage, double epsilon) {
  const double ratio = std::exp(logp - logp_old);
  const double unclipped = ratio * advantage;
  const double clipped = std::clamp(ratio, 1.0 - epsilon, 1.0 + epsilon) * advantage;
  if (unclipped <= clipped) return {unclipped, unclipped, false};
  return {clipped, 0.0, true};
}

/// The GRPO loss (−J) of one token and dL/dℓ for a batch normalised by `count` (N · T).
struct GrpoTokenLoss {
  double loss;
  double grad_logp;
  bool clipped;
  double kl;
};
inline GrpoTokenLoss grpo_token_loss(double logp, double logp_old, double logp_ref, double advantage, double epsilon,
                                     double beta, double count) {
  const ClippedSurrogate s = clipped_surrogate(logp, logp_old, advantage, epsilon);
  const KlK3 k = kl_k3(logp, logp_ref);
  return {-(s.value - beta * k.value) / count, -(s.grad_logp - beta * k.grad_logp) / count, s.clipped, k.value};
}

/// What one GRPO iteration did.
struct GrpoStats {
  std::int64_t iteration = 0;
  double mean_reward = 0.0;
  double accuracy = 0.0;        ///< fraction of sampled outputs the task's correct() accepts (NaN if none)
  double loss = 0.0;            ///< −J of the first inner epoch
  double kl = 0.0;              ///< mean k3 over tokens (first inner epoch)
  double clip_fraction = 0.0;   ///< fraction of tokens whose clipped term was active (last epoch)
  double entropy = 0.0;         ///< mean per-token entropy of π_old at the sampled prefixes
};

template <VerifiableSequenceTask Task, class PolicySpec, template <class> class Optimizer = nn::optim::Adam>
class GRPO {
 public:
  using T = float;
  using task_type = Task;
  using prompt_type = typename Task::prompt_type;
  using Policy = nn::Model<PolicySpec, T>;
  static constexpr index_t vocab = Task::vocab_size;
  static constexpr index_t steps = Task::length;
  static constexpr index_t features = Task::feature_size;
  static_assert(PolicySpec::out_channels(features) == vocab, "the GRPO policy must output one logit per token");

  explicit GRPO(const GrpoConfig& config, const Task& task = Task{})
      : config_(validated(config)),
        task_(task),
        init_rng_(config.seed, 0),
        prompt_rng_(config.seed, 1),
        sample_rng_(config.seed, 2),
        eval_rng_(config.seed, 3) {
    const auto out = policy_.setup(Shape<2>{1, features});
    RLMED_CHECK(out[1] == vocab, "GRPO policy outputs ", out[1], " logits, expected ", vocab);
    policy_.initialize(init_rng_);
    reference_ = policy_;
    optimizer_.emplace(make_optimizer<Optimizer, T>(policy_, config_.lr));
  }
  GRPO(const GRPO&) = delete;
  GRPO& operator=(const GRPO&) = delete;

  /// One iteration: sample P prompts × G outputs, score them, μ optimiser steps on the objective.
  GrpoStats iterate() {
    const index_t P = config_.prompts_per_iteration, G = config_.group_size, N = P * G;
    prompts_.resize(static_cast<std::size_t>(N));
    for (index_t p = 0; p < P; ++p) {
      const prompt_type q = task_.sample_prompt(prompt_rng_);
      for (index_t g = 0; g < G; ++g) prompts_[static_cast<std::size_t>(p * G + g)] = q;
    }
    GrpoStats stats;
    stats.iteration = iteration_ + 1;
    stats.entropy = sample_outputs(sample_rng_, /*greedy=*/false);  // fills tokens_, features_, logp_old_

    rewards_.resize(static_cast<std::size_t>(N));
    index_t correct = 0;
    bool has_correct = false;
    for (index_t n = 0; n < N; ++n) {
      const auto out = output(n);
      rewards_[static_cast<std::size_t>(n)] = task_.reward(prompts_[static_cast<std::size_t>(n)], out);
      if constexpr (requires { task_.correct(prompts_[0], out); }) {
        has_correct = true;
        correct += task_.correct(prompts_[static_cast<std::size_t>(n)], out) ? 1 : 0;
      }
      stats.mean_reward += rewards_[static_cast<std::size_t>(n)];
    }
    stats.mean_reward /= static_cast<double>(N);
    stats.accuracy = has_correct ? static_cast<double>(correct) / static_cast<double>(N)
                                 : std::numeric_limits<double>::quiet_NaN();
    advantages_.resize(static_cast<std::size_t>(N));
    group_advantages_into<double>(rewards_, G, config_.advantage_epsilon, std::span<double>(advantages_));

    // Reference log-probabilities of the sampled tokens (fixed during the inner epochs).
    nn::Context ctx;
    ctx.training = false;
    ctx.input_grad = false;
    log_probs_of_tokens(reference_, ctx, reference_cache_, logp_ref_);

    for (index_t epoch = 0; epoch < config_.inner_epochs; ++epoch) {
      optimizer_->zero_grad();
      nn::Context train;
      train.training = true;
      train.input_grad = false;
      const auto logits = policy_.forward(train, features_.view(), policy_cache_);  // [T·N, V]
      const index_t rows = logits.extent(0);
      dlogits_.resize(logits.shape());
      double loss = 0, kl = 0;
      index_t clipped = 0;
      const double count = static_cast<double>(rows);  // N outputs × T tokens, each weighted 1/(N·T)
      for (index_t r = 0; r < rows; ++r) {
        const index_t n = r % N;
        const int token = token_of_row(r);
        const double lse = log_sum_exp(logits, r);
        const double logp = static_cast<double>(logits(r, token)) - lse;
        const auto t = grpo_token_loss(logp, logp_old_(r), logp_ref_(r), advantages_[static_cast<std::size_t>(n)],
                                       config_.clip_epsilon, config_.kl_beta, count);
        loss += t.loss;
        kl += t.kl;
        clipped += t.clipped ? 1 : 0;
        // dL/dz_v = g (1[v = token] − softmax_v)
        for (index_t v = 0; v < vocab; ++v) {
          const double p = std::exp(static_cast<double>(logits(r, v)) - lse);
          dlogits_(r, v) = static_cast<T>(t.grad_logp * ((v == token ? 1.0 : 0.0) - p));
        }
      }
      RLMED_CHECK(std::isfinite(loss), "GRPO loss is ", loss, " at iteration ", iteration_ + 1);
      policy_.backward(train, policy_cache_, dlogits_.view());
      if (config_.max_grad_norm > 0) nn::optim::clip_grad_norm(optimizer_->params(), config_.max_grad_norm);
      optimizer_->step();
      if (epoch == 0) {
        stats.loss = loss;
        stats.kl = kl / count;
      }
      stats.clip_fraction = static_cast<double>(clipped) / count;
    }
    ++iteration_;
    if (config_.reference_sync_every > 0 && iteration_ % config_.reference_sync_every == 0) sync_reference();
    return stats;
  }

  /// Answers to `prompts` (one per prompt) written to `answers` [prompts × T]: greedy (argmax at
  /// every step; no random numbers) or sampled from the evaluation stream.
  void generate(std::span<const prompt_type> prompts, std::span<int> answers, bool greedy = true) {
    RLMED_CHECK(!prompts.empty() && answers.size() == prompts.size() * static_cast<std::size_t>(steps),
                "GRPO generate: ", answers.size(), " answer slots for ", prompts.size(), " prompts of ", steps,
                " tokens");
    prompts_.assign(prompts.begin(), prompts.end());
    sample_outputs(eval_rng_, greedy);
    const index_t N = static_cast<index_t>(prompts.size());
    for (index_t n = 0; n < N; ++n)
      for (index_t t = 0; t < steps; ++t) answers[static_cast<std::size_t>(n * steps + t)] = tokens_(n, t);
  }

  /// Fraction of prompts answered correctly (task.correct) by greedy decoding.
  double greedy_accuracy(std::span<const prompt_type> prompts) {
    std::vector<int> answers(prompts.size() * static_cast<std::size_t>(steps));
    generate(prompts, answers, true);
    index_t ok = 0;
    for (std::size_t i = 0; i < prompts.size(); ++i)
      ok += task_.correct(prompts[i], std::span<const int>(answers.data() + i * static_cast<std::size_t>(steps),
                                                           static_cast<std::size_t>(steps)))
                ? 1
                : 0;
    return static_cast<double>(ok) / static_cast<double>(prompts.size());
  }

  /// π_ref ← π_θ.
  void sync_reference() { sync::hard_update<T>(reference_, policy_); }

  // ---------------------------------------------------------------- state
  template <class V>
  void visit_state(V& visit, const std::string& prefix) {
    state::visit_module(visit, prefix + "policy.", policy_);
    state::visit_module(visit, prefix + "reference.", reference_);
    visit_optimizer_state<T>(visit, prefix + "optim.", *optimizer_);
    state::visit_stream(visit, prefix + "rng.prompt", prompt_rng_);
    state::visit_stream(visit, prefix + "rng.sample", sample_rng_);
    state::visit_stream(visit, prefix + "rng.eval", eval_rng_);
    state::visit_counter(visit, prefix + "iteration", iteration_);
  }
  void save(io::SafetensorsWriter& w, const std::string& prefix = "") const { save_agent_state(*this, w, prefix); }
  void load(const io::SafetensorsReader& r, const std::string& prefix = "") { load_agent_state(*this, r, prefix); }

  [[nodiscard]] std::int64_t iteration() const noexcept { return iteration_; }
  [[nodiscard]] const GrpoConfig& config() const noexcept { return config_; }
  [[nodiscard]] const Task& task() const noexcept { return task_; }
  Policy& policy() noexcept { return policy_; }
  Policy& reference() noexcept { return reference_; }
  /// The last batch: sampled tokens [N, T], π_old log-probs (row t·N + i), rewards, advantages.
  [[nodiscard]] const Tensor<int, 2>& tokens() const noexcept { return tokens_; }
  [[nodiscard]] std::span<const double> rewards() const noexcept { return rewards_; }
  [[nodiscard]] std::span<const double> advantages() const noexcept { return advantages_; }

 private:
  static GrpoConfig validated(const GrpoConfig& c) {
    RLMED_CHECK(c.prompts_per_iteration >= 1 && c.group_size >= 2, "GRPO: needs prompts_per_iteration >= 1 and ",
                "group_size >= 2, found ", c.prompts_per_iteration, ", ", c.group_size);
    RLMED_CHECK(c.clip_epsilon > 0 && c.clip_epsilon < 1, "GRPO: clip_epsilon must be in (0, 1), found ", c.clip_epsilon);
    RLMED_CHECK(c.kl_beta >= 0 && c.advantage_epsilon > 0 && c.inner_epochs >= 1 && c.lr >= 0 &&
                    c.max_grad_norm >= 0 && c.reference_sync_every >= 0,
                "GRPO: invalid config (kl_beta ", c.kl_beta, ", advantage_epsilon ", c.advantage_epsilon,
                ", inner_epochs ", c.inner_epochs, ", lr ", c.lr, ")");
    return c;
  }

  std::span<const int> output(index_t n) const {
    return {tokens_.data() + n * steps, static_cast<std::size_t>(steps)};
  }
  int token_of_row(index_t r) const {
    const index_t N = tokens_.extent(0);
    return tokens_(r % N, r / N);
  }
  static double log_sum_exp(TensorView<const T, 2> logits, index_t r) {
    double m = logits(r, 0);
    for (index_t v = 1; v < vocab; ++v) m = std::max(m, static_cast<double>(logits(r, v)));
    double s = 0;
    for (index_t v = 0; v < vocab; ++v) s += std::exp(static_cast<double>(logits(r, v)) - m);
    return m + std::log(s);
  }

  /// Autoregressive sampling of one answer per entry of prompts_ with the current policy: fills
  /// tokens_ [N, T], features_ [T·N, F] and logp_old_ [T·N]; returns the mean entropy.
  double sample_outputs(PhiloxStream& rng, bool greedy) {
    const index_t N = static_cast<index_t>(prompts_.size());
    tokens_.resize(Shape<2>{N, steps});
    features_.resize(Shape<2>{steps * N, features});
    logp_old_.resize(Shape<1>{steps * N});
    nn::Context ctx;
    ctx.training = false;
    ctx.input_grad = false;
    double entropy = 0;
    probs_.resize(static_cast<std::size_t>(vocab));
    for (index_t t = 0; t < steps; ++t) {
      auto step_features = features_.slice(t * N, (t + 1) * N);  // [N, F]
      for (index_t n = 0; n < N; ++n)
        task_.template features_into<T>(prompts_[static_cast<std::size_t>(n)],
                                        std::span<const int>(tokens_.data() + n * steps, static_cast<std::size_t>(t)),
                                        std::span<T>(step_features.data() + n * features, static_cast<std::size_t>(features)));
      const auto logits = policy_.forward(ctx, TensorView<const T, 2>(step_features), sample_cache_);  // [N, V]
      for (index_t n = 0; n < N; ++n) {
        double m = logits(n, 0);
        for (index_t v = 1; v < vocab; ++v) m = std::max(m, static_cast<double>(logits(n, v)));
        double z = 0;
        for (index_t v = 0; v < vocab; ++v) {
          probs_[static_cast<std::size_t>(v)] = std::exp(static_cast<double>(logits(n, v)) - m);
          z += probs_[static_cast<std::size_t>(v)];
        }
        int token = 0;
        if (greedy) {
          for (index_t v = 1; v < vocab; ++v)
            if (logits(n, v) > logits(n, token)) token = static_cast<int>(v);
        } else {
          const double u = rng.uniform_double() * z;  // inverse CDF, one 53-bit uniform per token
          double acc = 0;
          token = static_cast<int>(vocab - 1);
          for (index_t v = 0; v < vocab; ++v) {
            acc += probs_[static_cast<std::size_t>(v)];
            if (u < acc) {
              token = static_cast<int>(v);
              break;
            }
          }
        }
        tokens_(n, t) = token;
        // log π_old of the token, and the entropy of π_old at this prefix
        const double lse = log_sum_exp(logits, n);
        logp_old_(t * N + n) = static_cast<double>(logits(n, token)) - lse;
        for (index_t v = 0; v < vocab; ++v) {
          const double lp = static_cast<double>(logits(n, v)) - lse;
          entropy -= std::exp(lp) * lp;
        }
      }
    }
    return entropy / static_cast<double>(N * steps);
  }

  /// log π(token) of every row of features_ under `net` into out [T·N].
  void log_probs_of_tokens(Policy& net, nn::Context& ctx, typename Policy::Cache& cache, Tensor<double, 1>& out) {
    const auto logits = net.forward(ctx, features_.view(), cache);
    const index_t rows = logits.extent(0);
    out.resize(Shape<1>{rows});
    for (index_t r = 0; r < rows; ++r) out(r) = static_cast<double>(logits(r, token_of_row(r))) - log_sum_exp(logits, r);
  }

  GrpoConfig config_;
  Task task_;
  Policy policy_, reference_;
  std::optional<Optimizer<T>> optimizer_;
  PhiloxStream init_rng_, prompt_rng_, sample_rng_, eval_rng_;
  std::int64_t iteration_ = 0;

  std::vector<prompt_type> prompts_;  // [N]
  Tensor<int, 2> tokens_;             // [N, T]
  Tensor<T, 2> features_;             // [T·N, F], row t·N + n
  Tensor<double, 1> logp_old_;        // [T·N]
  Tensor<double, 1> logp_ref_;        // [T·N]
  std::vector<double> rewards_;       // [N]
  std::vector<double> advantages_;    // [N]
  std::vector<double> probs_;         // [V]
  Tensor<T, 2> dlogits_;              // [T·N, V]
  typename Policy::Cache policy_cache_, reference_cache_, sample_cache_;
};

}  // namespace rlmed::rl::agents
