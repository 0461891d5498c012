// Learning test: Double DQN with a dueling network, prioritized replay and 3-step returns solves
// CartPole-v1 — mean return >= 475 over 20 greedy evaluation episodes — within a budget of
// 50,000 environment steps at seed 3, through the shared training loop. The same run twice is
// bit-identical (networks, optimiser, replay, streams, evaluation returns).
// Budget: CTest TIMEOUT 240 s for both runs (about 10-25 s each in Release on 2 cores).
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>

#include "rlmed/env/classic/cartpole.hpp"
#include "rlmed/rl/agents/dqn.hpp"
#include "rlmed/rl/train_loop.hpp"

using namespace rlmed;

namespace {

constexpr std::uint64_t kSeed = 3;
constexpr std::int64_t kStepBudget = 50'000;
constexpr double kSolved = 475.0;

using Net = nn::Model<rl::DuelingQMlp<64, 2>, float>;
using Per = rl::replay::Prioritized<float, 1, int>;
using Replay = rl::replay::NStep<Per>;
using Agent = rl::DQN<Net, rl::target::Double, Replay, rl::explore::EpsilonGreedy<rl::explore::LinearSchedule>,
                      rl::sync::Hard, nn::optim::Adam<float>>;

// The hyper-parameters of examples/cartpole_dqn (its defaults).
Agent make_agent() {
  rl::replay::PrioritizedConfig<1> per;
  per.capacity = 50'000;
  per.obs_shape = Shape<1>{4};
  per.alpha = 0.6;
  per.beta0 = 0.4;
  per.beta_steps = kStepBudget;
  rl::DQNConfig cfg;
  cfg.gamma = 0.99;
  cfg.batch_size = 64;
  cfg.learning_starts = 1'000;
  cfg.train_every = 1;
  cfg.gradient_steps = 1;
  cfg.max_grad_norm = 10.0;
  cfg.seed = kSeed;
  nn::optim::AdamConfig adam;
  adam.lr = 1e-3;
  return Agent(cfg, Replay(rl::replay::NStepConfig{3, 0.99, 1}, Per(per)),
               rl::explore::EpsilonGreedy<rl::explore::LinearSchedule>({1.0, 0.02, 10'000}), rl::sync::Hard{500},
               adam);
}

struct Run {
  rl::TrainResult result;
  std::vector<std::byte> state;
  double seconds = 0;
};

Run train_once() {
  Agent agent = make_agent();
  rl::TrainConfig tc;
  tc.total_steps = kStepBudget;
  tc.seed = kSeed;
  tc.eval_every = 2'500;
  tc.eval_episodes = 20;
  tc.log_every = 2'500;
  tc.stop_at_eval_return = kSolved;
  tc.progress = rl::ProgressMode::lines;
  rl::TrainLoop<env::CartPole, Agent> loop(tc, agent);
  const auto t0 = std::chrono::steady_clock::now();
  Run run;
  run.result = loop.run();
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  io::SafetensorsWriter w;
  agent.save(w, "");
  run.state = w.to_bytes();
  return run;
}

}  // namespace

TEST_CASE("Double + Dueling + PER + 3-step DQN solves CartPole-v1 within 50k steps, bit-identically twice") {
  const Run first = train_once();
  const auto& r = first.result;
  std::printf("DQN CartPole: solved at step %lld (%lld gradient steps), eval %.1f +- %.1f, %.1f s\n",
              static_cast<long long>(r.solved_at_step), static_cast<long long>(r.gradient_steps),
              r.last_eval ? r.last_eval->mean_return : -1.0, r.last_eval ? r.last_eval->std_return : -1.0,
              first.seconds);
  REQUIRE(r.last_eval);
  CHECK(r.solved_at_step > 0);
  CHECK(r.solved_at_step <= kStepBudget);
  CHECK(r.last_eval->returns.size() == 20);
  CHECK(r.last_eval->mean_return >= kSolved);

  const Run second = train_once();
  std::printf("second run: %.1f s\n", second.seconds);
  CHECK(second.result.solved_at_step == r.solved_at_step);
  CHECK(second.result.gradient_steps == r.gradient_steps);
  CHECK(second.result.episodes == r.episodes);
  REQUIRE(second.result.evaluations.size() == r.evaluations.size());
  for (std::size_t i = 0; i < r.evaluations.size(); ++i)
    CHECK(second.result.evaluations[i].returns == r.evaluations[i].returns);
  CHECK(second.state == first.state);  // every network, optimiser, replay and stream byte
}
