// PPO benchmarks, the same work as bench/peers/rl_ppo_torch.py (PyTorch, 2 threads):
//   * PPO_Update/B: one minibatch gradient step at batch B from a finished CartPole rollout —
//     gather, policy and value forward (separate 64-64 tanh MLPs), categorical log-probabilities
//     and entropy, advantage normalisation, clipped surrogate + value loss, backward, global-norm
//     clip at 0.5, Adam step. Counter: updates/s.
//   * PPO_CartPoleSolve: the learning test's run (rl-zoo CartPole settings: 8 envs x 32 steps,
//     batch 256, 20 epochs, γ 0.98, λ 0.8, lr 1e-3 and clip 0.2 annealed over 100k steps, seed 1;
//     evaluation every 10,000 steps over 20 greedy episodes, stop at mean >= 475): wall time to
//     solve, env steps/s and updates/s over the whole run.
// Run one at a time on the 2-core reference machine, alternating with the peer:
//   ./build/bench/bench/rl_ppo_bench --benchmark_filter=PPO_Update
#include <benchmark/benchmark.h>

#include <numeric>
#include <vector>

#include "rlmed/env/classic/cartpole.hpp"
#include "rlmed/rl/agents/ppo.hpp"
#include "rlmed/rl/train_loop.hpp"

using namespace rlmed;

namespace {

using Agent = rl::PPO<env::CartPole, rl::SeparateMlp<64>>;

rl::PPOConfig zoo_config(std::uint64_t seed) {
  rl::PPOConfig c;
  c.n_steps = 32;
  c.batch_size = 256;
  c.n_epochs = 20;
  c.gamma = 0.98;
  c.gae_lambda = 0.8;
  c.ent_coef = 0.0;
  c.anneal_steps = 100'000;
  c.seed = seed;
  return c;
}

Agent::optimizer_config zoo_adam() {
  auto a = Agent::default_optimizer();
  a.lr = 1e-3;
  return a;
}

void PPO_Update(benchmark::State& state) {
  const index_t batch = state.range(0);
  rl::PPOConfig c = zoo_config(1);
  c.n_steps = 128;  // 8 x 128 = 1024 stored samples to draw minibatches from
  Agent agent(c, env::CartPole{}, zoo_adam());
  rl::VectorEnv<env::CartPole> envs({8, 1});
  envs.reset();
  using Obs = env::CartPole::observation_type;
  std::vector<int> actions(8);
  for (index_t s = 0; s < c.n_steps; ++s) {
    const auto obs = envs.observations();
    agent.act(std::span<const Obs>(obs), std::span<int>(actions));
    agent.observe(std::span<const Obs>(obs), std::span<const int>(actions), envs.step(actions));
  }
  agent.finish_rollout();
  std::vector<index_t> perm(1024);
  std::iota(perm.begin(), perm.end(), index_t{0});
  PhiloxStream shuffle(7, 0);
  index_t start = 0;
  Agent::MinibatchResult res;
  for (auto _ : state) {
    if (start + batch > 1024) {
      for (index_t i = 1023; i > 0; --i)
        std::swap(perm[static_cast<std::size_t>(i)], perm[shuffle.uniform_int(static_cast<std::uint32_t>(i + 1))]);
      start = 0;
    }
    agent.loss_and_gradients(std::span<const index_t>(perm.data() + start, static_cast<std::size_t>(batch)), 0.2, 0.0, res);
    nn::optim::clip_grad_norm(agent.optimizer().params(), 0.5);
    agent.optimizer().step();
    start += batch;
    benchmark::DoNotOptimize(res.loss);
  }
  state.counters["updates/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void PPO_CartPoleSolve(benchmark::State& state) {
  for (auto _ : state) {
    Agent agent(zoo_config(1), env::CartPole{}, zoo_adam());
    rl::TrainConfig tc;
    tc.total_steps = 100'000;
    tc.num_envs = 8;
    tc.seed = 1;
    tc.eval_every = 10'000;
    tc.eval_episodes = 20;
    tc.log_every = 10'000;
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

BENCHMARK(PPO_Update)->Arg(64)->Arg(256)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(PPO_CartPoleSolve)->Iterations(1)->Repetitions(3)->Unit(benchmark::kSecond)->UseRealTime();

BENCHMARK_MAIN();
