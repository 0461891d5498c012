// Learning test: TD3 (twin critics, clipped target policy smoothing, delayed actor and target
// updates) reaches Pendulum-v1 mean return >= -200 over 20 deterministic evaluation episodes within
// a budget of 15,000 environment steps at seed 1, through the shared training loop, with the
// hyper-parameters of examples/pendulum_td3 (the paper's numbers — Adam 1e-3, tau 0.005, target
// noise 0.2 clipped at 0.5, delay 2, exploration N(0, 0.1^2) — with 64-64 ReLU networks, batch
// 256 and 1,000 uniform random steps first). The same run twice is bit-identical.
// Budget: CTest TIMEOUT 120 s for both runs (about 15-25 s each in Release on one core).
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>

#include "rlmed/core/parallel.hpp"
#include "rlmed/env/classic/pendulum.hpp"
#include "rlmed/rl/agents/td3.hpp"
#include "rlmed/rl/train_loop.hpp"

using namespace rlmed;

namespace {

constexpr std::uint64_t kSeed = 1;
constexpr std::int64_t kStepBudget = 15'000;
constexpr double kSolved = -200.0;

using Actor = nn::Sequential<nn::Linear<64>, nn::ReLU, nn::Linear<64>, nn::ReLU, nn::Linear<1>, nn::Tanh>;
using Critic = nn::Sequential<nn::Linear<64>, nn::ReLU, nn::Linear<64>, nn::ReLU, nn::Linear<1>>;
using Agent = rl::agents::TD3<env::Pendulum, Actor, Critic>;

rl::agents::Td3Config config() {
  rl::agents::Td3Config c = rl::agents::td3_defaults();
  c.batch_size = 256;
  c.buffer_capacity = kStepBudget;
  c.random_steps = 1'000;
  c.learning_starts = 1'000;
  c.seed = kSeed;
  return c;
}

struct Run {
  rl::TrainResult result;
  std::vector<std::byte> state;
  double seconds = 0;
};

Run train_once() {
  Agent agent(config());
  rl::TrainConfig tc;
  tc.total_steps = kStepBudget;
  tc.seed = kSeed;
  tc.eval_every = 1'000;
  tc.eval_episodes = 20;
  tc.log_every = 1'000;
  tc.stop_at_eval_return = kSolved;
  tc.progress = rl::ProgressMode::lines;
  rl::TrainLoop<env::Pendulum, Agent> loop(tc, agent);
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

TEST_CASE("TD3 reaches Pendulum-v1 mean return >= -200 within 15k steps, bit-identically twice") {
  set_num_threads(1);  // 64-wide MLPs gain nothing from a second thread; one thread is immune to contention
  const Run first = train_once();
  const auto& r = first.result;
  std::printf("TD3 Pendulum: solved at step %lld (%lld gradient steps), eval %.1f +- %.1f, %.1f s\n",
              static_cast<long long>(r.solved_at_step), static_cast<long long>(r.gradient_steps),
              r.last_eval ? r.last_eval->mean_return : 0.0, r.last_eval ? r.last_eval->std_return : 0.0, first.seconds);
  REQUIRE(r.last_eval);
  CHECK(r.solved_at_step > 0);
  CHECK(r.solved_at_step <= kStepBudget);
  CHECK(r.last_eval->returns.size() == 20);
  CHECK(r.last_eval->mean_return >= kSolved);

  const Run second = train_once();
  std::printf("second run: %.1f s\n", second.seconds);
  CHECK(second.result.solved_at_step == r.solved_at_step);
  CHECK(second.result.gradient_steps == r.gradient_steps);
  REQUIRE(second.result.evaluations.size() == r.evaluations.size());
  for (std::size_t i = 0; i < r.evaluations.size(); ++i)
    CHECK(second.result.evaluations[i].returns == r.evaluations[i].returns);
  CHECK(second.state == first.state);
}
