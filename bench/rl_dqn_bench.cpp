// DQN benchmarks, the same work as bench/peers/rl_dqn_torch.py (PyTorch, 2 threads):
//   * DQN_Update/B: one full learning step at batch B — prioritized (stratified) sampling from a
//     3-step replay of 10,000 CartPole transitions, Double-DQN targets with the target network,
//     dueling 64-64 MLP forward/backward, PER-weighted Huber loss, global-norm clipping, Adam,
//     priority update, hard target sync every 500 steps. Counter: updates/s.
//   * DQN_CartPoleSolve: the learning test's run (seed 3; eval every 2,500 steps over 20 greedy
//     episodes, stop at mean >= 475, budget 50,000 steps): wall time to solve, plus env steps/s
//     and updates/s over the whole run.
// Run one at a time on the 2-core reference machine, alternating with the peer:
//   ./build/bench/bench/rl_dqn_bench --benchmark_filter=DQN_Update
#include <benchmark/benchmark.h>

#include "rlmed/env/classic/cartpole.hpp"
#include "rlmed/rl/agents/dqn.hpp"
#include "rlmed/rl/train_loop.hpp"

using namespace rlmed;

namespace {

using Net = nn::Model<rl::DuelingQMlp<64, 2>, float>;
using Per = rl::replay::Prioritized<float, 1, int>;
using Replay = rl::replay::NStep<Per>;
using Agent = rl::DQN<Net, rl::target::Double, Replay, rl::explore::EpsilonGreedy<rl::explore::LinearSchedule>,
                      rl::sync::Hard, nn::optim::Adam<float>>;

Agent make_agent(index_t batch, std::int64_t learning_starts, std::uint64_t seed) {
  rl::replay::PrioritizedConfig<1> per;
  per.capacity = 50'000;
  per.obs_shape = Shape<1>{4};
  per.beta_steps = 50'000;
  rl::DQNConfig cfg;
  cfg.batch_size = batch;
  cfg.learning_starts = learning_starts;
  cfg.train_every = 1;
  cfg.seed = seed;
  nn::optim::AdamConfig adam;
  adam.lr = 1e-3;
  return Agent(cfg, Replay(rl::replay::NStepConfig{3, 0.99, 1}, Per(per)),
               rl::explore::EpsilonGreedy<rl::explore::LinearSchedule>({1.0, 0.02, 10'000}), rl::sync::Hard{500},
               adam);
}

void DQN_Update(benchmark::State& state) {
  const index_t batch = state.range(0);
  // 10,000 transitions of random play (ε = 1 over the first 10k steps) by an agent that never learns.
  Agent collector = make_agent(batch, /*learning_starts=*/1'000'000'000, 1);
  rl::TrainConfig tc;
  tc.total_steps = 10'000;
  tc.eval_every = 0;
  tc.eval_at_end = false;
  tc.progress = rl::ProgressMode::none;
  rl::TrainLoop<env::CartPole, Agent> loop(tc, collector);
  loop.run();
  // The same state in an agent that learns from step 0 on: one gradient step per update() call.
  Agent learner = make_agent(batch, 0, 1);
  io::SafetensorsWriter w;
  collector.save(w, "");
  learner.load(io::SafetensorsReader::from_bytes(w.to_bytes()), "");
  std::int64_t step = learner.env_steps();
  for (auto _ : state) {
    const auto info = learner.update(++step);
    benchmark::DoNotOptimize(info.loss);
  }
  state.counters["updates/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void DQN_CartPoleSolve(benchmark::State& state) {
  for (auto _ : state) {
    Agent agent = make_agent(64, 1'000, 3);
    rl::TrainConfig tc;
    tc.total_steps = 50'000;
    tc.seed = 3;
    tc.eval_every = 2'500;
    tc.eval_episodes = 20;
    tc.stop_at_eval_return = 475.0;
    tc.progress = rl::ProgressMode::none;
    rl::TrainLoop<env::CartPole, Agent> loop(tc, agent);
    const auto r = loop.run();
    state.counters["solved_at_step"] = static_cast<double>(r.solved_at_step);
    state.counters["env_steps/s"] = static_cast<double>(r.env_steps) / r.wall_seconds;
    state.counters["updates/s"] = static_cast<double>(r.gradient_steps) / r.wall_seconds;
    state.counters["final_eval"] = r.last_eval ? r.last_eval->mean_return : -1.0;
  }
}

}  // namespace

BENCHMARK(DQN_Update)->Arg(64)->Arg(256)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(DQN_CartPoleSolve)->Iterations(1)->Repetitions(3)->Unit(benchmark::kSecond)->UseRealTime();

BENCHMARK_MAIN();
