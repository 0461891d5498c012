// rlmed/env/toy/digit_sum.hpp — a verifiable toy sequence task: given a target sum S, emit K
// digits 0–9 whose sum is S. The task GRPO is demonstrated on (rl/agents/grpo.hpp).
//
// Design decisions:
//  * Prompts are the targets S ∈ [0, 9K]; every one has a solution. Prompts are drawn uniformly;
//    evaluation uses all 9K + 1 of them.
//  * Observations are what an autoregressive policy sees before emitting token t: one-hot(S)
//    [9K + 1] ⊕ one-hot(t) [K] ⊕ one-hot of each digit emitted so far [10 per position, zeros for
//    positions not yet emitted] — the raw prefix, not its running sum, so the policy has to learn
//    the arithmetic. K is a template argument because the observation is a fixed-size array.
//  * Rewards come from a verifier on the complete output: `exact` gives 1 when the digits sum to S
//    and 0 otherwise; `shaped` (the default) gives 1 when exact and partial credit
//    ½ (1 − |Σ − S| / 9K) ∈ [0, ½) otherwise, so a near miss beats a far miss and an exact answer
//    always beats any miss by at least ½. With uniform random digits an exact answer to S = 0 or
//    S = 9K has probability 10^−K, so with `exact` those prompts give no learning signal until the
//    policy generalises from the others; `shaped` removes that cold start.
//  * Two interfaces: the sequence-task interface GRPO uses (sample_prompt, features_into, reward),
//    and rl::Environment (reset draws S, step(digit) appends one digit, the reward arrives with
//    the K-th digit, which terminates the episode), so step-based agents can train on it too.
//    The environment is trivially copyable, so training-loop checkpoints store it as bytes.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <span>

#include "rlmed/core/error.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/rl/environment.hpp"
#include "rlmed/rl/spaces.hpp"

namespace rlmed::env::toy {

enum class DigitSumReward : std::int32_t { exact = 0, shaped = 1 };

struct DigitSumConfig {
  DigitSumReward reward = DigitSumReward::shaped;
};

template <int K>
class DigitSum {
  static_assert(K >= 1 && K <= 64, "DigitSum needs 1..64 digits");

 public:
  static constexpr int length = K;                    ///< digits per answer
  static constexpr int vocab_size = 10;               ///< tokens are the digits 0..9
  static constexpr int max_sum = 9 * K;
  static constexpr int num_prompts = max_sum + 1;     ///< targets 0..9K
  static constexpr int feature_size = num_prompts + K + 10 * K;
  using prompt_type = int;
  using observation_type = std::array<float, static_cast<std::size_t>(feature_size)>;
  using action_type = int;
  using action_space_type = rl::Discrete<vocab_size>;
  using observation_space_type = rl::Box<static_cast<std::size_t>(feature_size)>;

  explicit DigitSum(const DigitSumConfig& config = {}) : config_(config) {
    RLMED_CHECK(config.reward == DigitSumReward::exact || config.reward == DigitSumReward::shaped,
                "DigitSum: unknown reward mode ", static_cast<int>(config.reward));
  }
  [[nodiscard]] const DigitSumConfig& config() const noexcept { return config_; }

  // ------------------------------------------------------------ sequence-task interface
  /// A target drawn uniformly from [0, 9K] (one uniform integer).
  [[nodiscard]] static int sample_prompt(PhiloxStream& rng) noexcept {
    return static_cast<int>(rng.uniform_int(static_cast<std::uint32_t>(num_prompts)));
  }
  /// Prompt i of the evaluation set (all targets in order).
  [[nodiscard]] static int evaluation_prompt(int i) {
    RLMED_CHECK(i >= 0 && i < num_prompts, "DigitSum: evaluation prompt ", i, " outside [0, ", num_prompts, ")");
    return i;
  }
  static void check_prompt(int target) {
    RLMED_CHECK(target >= 0 && target <= max_sum, "DigitSum: target sum ", target, " outside [0, ", max_sum, "]");
  }

  /// The observation before token prefix.size(): one-hot(S) ⊕ one-hot(t) ⊕ one-hot(prefix digits).
  template <class T>
  static void features_into(int target, std::span<const int> prefix, std::span<T> out) {
    check_prompt(target);
    RLMED_CHECK(prefix.size() < static_cast<std::size_t>(K), "DigitSum: a prefix of ", prefix.size(),
                " digits leaves no token to emit (answers have ", K, ")");
    RLMED_CHECK(out.size() == static_cast<std::size_t>(feature_size), "DigitSum: feature buffer of ", out.size(),
                ", expected ", feature_size);
    for (auto& v : out) v = T(0);
    out[static_cast<std::size_t>(target)] = T(1);
    out[static_cast<std::size_t>(num_prompts) + prefix.size()] = T(1);
    for (std::size_t i = 0; i < prefix.size(); ++i) {
      action_space_type::validate(prefix[i], "DigitSum digit");
      out[static_cast<std::size_t>(num_prompts + K) + 10 * i + static_cast<std::size_t>(prefix[i])] = T(1);
    }
  }

  /// True when the K digits sum to the target.
  [[nodiscard]] static bool correct(int target, std::span<const int> digits) {
    return digit_sum(target, digits) == target;
  }
  /// The verifier's reward of a complete answer (see the header comment).
  [[nodiscard]] double reward(int target, std::span<const int> digits) const {
    const int sum = digit_sum(target, digits);
    if (sum == target) return 1.0;
    if (config_.reward == DigitSumReward::exact) return 0.0;
    return 0.5 * (1.0 - std::abs(sum - target) / static_cast<double>(max_sum));
  }

  // ------------------------------------------------------------ rl::Environment interface
  static action_space_type action_space() { return {}; }
  static observation_space_type observation_space() { return observation_space_type::uniform(0.0f, 1.0f); }

  observation_type reset(PhiloxStream& rng) {
    target_ = sample_prompt(rng);
    emitted_ = 0;
    running_ = true;
    return observation();
  }
  rl::StepResult<observation_type> step(const action_type& digit) {
    RLMED_CHECK(running_, "DigitSum: step() needs a running episode; call reset() first");
    action_space_type::validate(digit, "DigitSum digit");
    digits_[static_cast<std::size_t>(emitted_++)] = digit;
    if (emitted_ < K) return {observation(), 0.0, false, false};
    running_ = false;
    const double r = reward(target_, std::span<const int>(digits_.data(), static_cast<std::size_t>(K)));
    observation_type last{};  // terminal: nothing left to emit
    last[static_cast<std::size_t>(target_)] = 1.0f;
    return {last, r, true, false};
  }
  [[nodiscard]] int target() const noexcept { return target_; }
  [[nodiscard]] int emitted() const noexcept { return emitted_; }

 private:
  static int digit_sum(int target, std::span<const int> digits) {
    check_prompt(target);
    RLMED_CHECK(digits.size() == static_cast<std::size_t>(K), "DigitSum: an answer has ", K, " digits, found ",
                digits.size());
    int sum = 0;
    for (std::size_t i = 0; i < digits.size(); ++i) {
      action_space_type::validate(digits[i], "DigitSum digit");
      sum += digits[i];
    }
    return sum;
  }
  [[nodiscard]] observation_type observation() const {
    observation_type o{};
    features_into<float>(target_, std::span<const int>(digits_.data(), static_cast<std::size_t>(emitted_)),
                         std::span<float>(o));
    return o;
  }

  DigitSumConfig config_;
  int target_ = 0;
  int emitted_ = 0;
  bool running_ = false;
  std::array<int, static_cast<std::size_t>(K)> digits_{};
};

static_assert(rl::Environment<DigitSum<3>>);

}  // namespace rlmed::env::toy
