// Learning test: GRPO solves the DigitSum<4> toy task — a 2x128 ReLU MLP over the autoregressive
// features (target, position, digits so far) emits 4 digits summing to the target. Criterion:
// greedy decoding answers >= 95 % of ALL 37 prompts (targets 0..36) exactly, checked every 25
// iterations, within a budget of 600 iterations (16 prompts x 16 outputs each, 4 inner epochs,
// shaped reward: 1 exact, else 0.5 (1 - |sum - S| / 36)) at seed 1. The same run twice is
// bit-identical (policy, reference, optimiser, streams, every evaluation).
// Budget: CTest TIMEOUT 90 s for both runs (about 5-15 s each in Release on one core).
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <numeric>

#include "rlmed/core/parallel.hpp"
#include "rlmed/env/toy/digit_sum.hpp"
#include "rlmed/rl/agents/grpo.hpp"

using namespace rlmed;

namespace {

constexpr std::uint64_t kSeed = 1;
constexpr int kIterationBudget = 600;
constexpr int kEvalEvery = 25;
constexpr double kSolved = 0.95;

using Task = env::toy::DigitSum<4>;
using Policy = nn::Sequential<nn::Linear<128>, nn::ReLU, nn::Linear<128>, nn::ReLU, nn::Linear<10>>;
using Agent = rl::agents::GRPO<Task, Policy>;

rl::agents::GrpoConfig config() {
  rl::agents::GrpoConfig c;  // paper's ε 0.2, β 0.04; the example's toy-task sizes
  c.prompts_per_iteration = 16;
  c.group_size = 16;
  c.inner_epochs = 4;
  c.lr = 1e-3;
  c.seed = kSeed;
  return c;
}

struct Run {
  int solved_at = -1;
  double accuracy = 0;
  std::vector<double> curve;
  std::vector<std::byte> state;
  double seconds = 0;
};

Run train_once() {
  Agent agent(config(), Task(env::toy::DigitSumConfig{env::toy::DigitSumReward::shaped}));
  std::vector<int> prompts(Task::num_prompts);
  std::iota(prompts.begin(), prompts.end(), 0);
  Run run;
  const auto t0 = std::chrono::steady_clock::now();
  for (int it = 1; it <= kIterationBudget; ++it) {
    const auto s = agent.iterate();
    if (it % kEvalEvery != 0) continue;
    run.accuracy = agent.greedy_accuracy(prompts);
    run.curve.push_back(run.accuracy);
    std::printf("iteration %d: sampled reward %.3f, sampled accuracy %.3f, kl %.3f, greedy accuracy %.3f\n", it,
                s.mean_reward, s.accuracy, s.kl, run.accuracy);
    if (run.accuracy >= kSolved) {
      run.solved_at = it;
      break;
    }
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  io::SafetensorsWriter w;
  agent.save(w, "");
  run.state = w.to_bytes();
  return run;
}

}  // namespace

TEST_CASE("GRPO answers >= 95% of all DigitSum<4> prompts within 600 iterations, bit-identically twice") {
  set_num_threads(1);
  const Run first = train_once();
  std::printf("GRPO DigitSum<4>: solved at iteration %d, greedy accuracy %.3f, %.1f s\n", first.solved_at,
              first.accuracy, first.seconds);
  CHECK(first.solved_at > 0);
  CHECK(first.solved_at <= kIterationBudget);
  CHECK(first.accuracy >= kSolved);

  const Run second = train_once();
  std::printf("second run: %.1f s\n", second.seconds);
  CHECK(second.solved_at == first.solved_at);
  CHECK(second.curve == first.curve);
  CHECK(second.state == first.state);
}
