// TD3 benchmarks, the same work as bench/peers/rl_td3_torch.py (PyTorch):
//   * Td3Update/<hidden>: one TD3 gradient step at batch 256 on a replay of 10,000 Pendulum
//     transitions (twin critics with target policy smoothing every step; actor and Polyak targets
//     every second step, so one "update" here is the mean of a critic-only and a full step), two
//     hidden ReLU layers of 64 units or of 256 units; counter updates/s.
//   * Td3SolvePendulum: wall time of the learning test's run (tests/rl/test_rl_td3_learning.cpp,
//     examples/pendulum_td3 defaults: the paper's TD3 numbers with 64-64 networks, batch 256 and
//     1,000 random steps) until 20 deterministic evaluation episodes average >= -200, evaluating
//     every 1,000 steps; counters solved_at_step and updates/s.
// Threads: OMP_NUM_THREADS (the peer: PEER_THREADS, default 2).
#include <benchmark/benchmark.h>

#include "rlmed/env/classic/pendulum.hpp"
#include "rlmed/rl/agents/td3.hpp"
#include "rlmed/rl/train_loop.hpp"

using namespace rlmed;

namespace {

template <int Hidden>
using Actor = nn::Sequential<nn::Linear<Hidden>, nn::ReLU, nn::Linear<Hidden>, nn::ReLU, nn::Linear<1>, nn::Tanh>;
template <int Hidden>
using Critic = nn::Sequential<nn::Linear<Hidden>, nn::ReLU, nn::Linear<Hidden>, nn::ReLU, nn::Linear<1>>;
template <int Hidden>
using Agent = rl::agents::TD3<env::Pendulum, Actor<Hidden>, Critic<Hidden>>;

rl::agents::Td3Config config(std::int64_t random_steps, index_t capacity) {
  rl::agents::Td3Config c = rl::agents::td3_defaults();
  c.batch_size = 256;
  c.buffer_capacity = capacity;
  c.random_steps = random_steps;
  c.learning_starts = random_steps;
  c.seed = 1;
  return c;
}

template <int Hidden>
void td3_update(benchmark::State& state) {
  Agent<Hidden> agent(config(1'000'000, 100'000));  // acting stays uniform: only the update is timed
  env::Pendulum e;
  PhiloxStream rng(1, 1u << 20);
  auto obs = e.reset(rng);
  for (int t = 0; t < 10'000; ++t) {
    const auto a = agent.act(obs);
    const auto r = e.step(a);
    agent.observe(obs, a, r.reward, r.observation, r.terminated, r.truncated);
    obs = r.done() ? e.reset(rng) : r.observation;
  }
  rl::agents::OffPolicyStats stats;
  for (int k = 0; k < 10; ++k) agent.gradient_step(stats);  // workspaces sized
  for (auto _ : state) {
    agent.gradient_step(stats);
    benchmark::ClobberMemory();
  }
  state.counters["updates/s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
}

void td3_solve_pendulum(benchmark::State& state) {
  for (auto _ : state) {
    Agent<64> agent(config(1'000, 15'000));
    rl::TrainConfig tc;
    tc.total_steps = 15'000;
    tc.seed = 1;
    tc.eval_every = 1'000;
    tc.eval_episodes = 20;
    tc.log_every = 1'000;
    tc.stop_at_eval_return = -200.0;
    tc.progress = rl::ProgressMode::none;
    rl::TrainLoop<env::Pendulum, Agent<64>> loop(tc, agent);
    const auto r = loop.run();
    state.counters["solved_at_step"] = static_cast<double>(r.solved_at_step);
    state.counters["eval_return"] = r.last_eval ? r.last_eval->mean_return : 0.0;
    state.counters["updates/s"] = r.wall_seconds > 0 ? static_cast<double>(r.gradient_steps) / r.wall_seconds : 0.0;
  }
}

}  // namespace

BENCHMARK(td3_update<64>)->Name("Td3Update/64")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(td3_update<256>)->Name("Td3Update/256")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(td3_solve_pendulum)->Name("Td3SolvePendulum")->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);

BENCHMARK_MAIN();
