// Landmark-detection benchmarks (SYSTEMS.md S1), the same work as bench/peers/landmark_torch.py
// (rl-medical's NumPy environment and PyTorch Double-DQN update, 2 threads):
//   Landmark_EnvStep/<cube>: one move of env::LandmarkEnv (3D, frame history 4, single scale) and
//     the rendering of the new observation [4, cube³] — what acting needs per step. Random
//     actions; a finished search restarts at a random point. Counter: steps/s.
//   Landmark_RenderKeys/<cube>: the observations [48, 4, cube³] of 48 replay keys rendered in one
//     batch — what sampling a batch of 48 costs (once for obs, once for next obs). Counter: keys/s.
//   Landmark_DoubleDqnUpdate/<net>: one Double-DQN learn() at batch 48 — sample 48 keys, render obs
//     and next obs, target and online forward on next obs, online forward + backward, Huber loss,
//     global-norm clip 10, Adam 1e-3 — with the S1 network (45³ cubes, conv 32-32-64-64, FC
//     512-256-128, dueling head) or the CPU-sized one of the example (11³ cubes). Counter: updates/s.
// Design decisions:
//  * The volume is the 3D head phantom at the voxelmorph brain's size (224 × 192 × 160 voxels,
//    1 mm): the time of a step does not depend on the content; the peer uses the same size.
//  * The replay is filled by random steps before timing (500 transitions for the update); one
//    untimed update allocates every buffer, so the timed loop shows the steady state.
//  * Threads: 2 (the reference machine's cores), like torch.set_num_threads(2) in the peer.
// Run one at a time on the 2-core reference machine, alternating with the peer:
//   ./build/bench/bench/landmark_env_bench --benchmark_filter='Landmark_EnvStep'
#include <benchmark/benchmark.h>

#include <memory>
#include <vector>

#include "rlmed/core/parallel.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/env/landmark.hpp"
#include "rlmed/env/landmark_data.hpp"
#include "rlmed/nn/models/landmark_qnet.hpp"
#include "rlmed/rl/agents/collab_dqn.hpp"

using namespace rlmed;

namespace {

constexpr index_t kBatch = 48;

const env::LandmarkVolumes<3>& bench_volumes() {
  static const env::LandmarkVolumes<3> v = [] {
    imaging::HeadPhantomOptions o;
    o.size_xyz = {224, 192, 160};
    auto vols = std::make_shared<std::vector<env::LandmarkVolume<3>>>(env::phantom_landmark_volumes(1, 5, o, 1));
    return env::LandmarkVolumes<3>(vols);
  }();
  return v;
}

env::LandmarkEnvConfig bench_env_config(index_t cube) {
  env::LandmarkEnvConfig c;
  c.cube = cube;
  c.levels = 1;
  c.max_steps = 200;
  c.start_radius_mm = 30.0;
  return c;
}

void Landmark_EnvStep(benchmark::State& state) {
  set_num_threads(2);
  const index_t cube = state.range(0);
  env::LandmarkEnv<3, 4> e(bench_volumes(), bench_env_config(cube));
  PhiloxStream rng(3, 0);
  e.reset_random(rng, 0, 0);
  Tensor<float, 4> obs(e.renderer().obs_shape());  // [4, cube, cube, cube]
  for (auto _ : state) {
    const auto info = e.step_key(static_cast<int>(rng.uniform_int(6)));
    e.observation_into(obs.view());
    benchmark::DoNotOptimize(obs.data());
    if (info.done) e.reset_random(rng, 0, 0);
  }
  state.SetItemsProcessed(state.iterations());
}

std::vector<env::LandmarkKey<3, 4>> random_keys(index_t cube, index_t count) {
  env::LandmarkEnv<3, 4> e(bench_volumes(), bench_env_config(cube));
  PhiloxStream rng(4, 0);
  e.reset_random(rng, 0, 0);
  std::vector<env::LandmarkKey<3, 4>> keys;
  while (static_cast<index_t>(keys.size()) < count) {
    if (e.step_key(static_cast<int>(rng.uniform_int(6))).done) e.reset_random(rng, 0, 0);
    keys.push_back(e.key());
  }
  return keys;
}

void Landmark_RenderKeys(benchmark::State& state) {
  set_num_threads(2);
  const index_t cube = state.range(0);
  const auto keys = random_keys(cube, kBatch);
  env::LandmarkRenderer<3, 4> r(bench_volumes(), cube);
  Tensor<float, 5> out(Shape<5>{kBatch, 4, cube, cube, cube});
  for (auto _ : state) {
    r.render_batch(std::span<const env::LandmarkKey<3, 4>>(keys), out.view());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}

template <class Net>
void run_update(benchmark::State& state, Net net, index_t cube) {
  set_num_threads(2);
  using Agent = rl::LandmarkDQN<Net, rl::target::Double>;
  rl::LandmarkDQNConfig c;
  c.batch_size = kBatch;
  c.replay_capacity = 10'000;
  c.learning_starts = 500;
  c.seed = 1;
  rl::explore::EpsilonGreedy<rl::explore::LinearSchedule> eps(rl::explore::LinearSchedule{1.0, 0.1, 10'000});
  Agent agent(c, std::move(net), env::LandmarkRenderer<3, 4>(bench_volumes(), cube), eps, rl::sync::Hard{1000},
              nn::optim::AdamConfig{1e-3});
  env::LandmarkEnv<3, 4> e(bench_volumes(), bench_env_config(cube));
  PhiloxStream rng(5, 0);
  e.reset_random(rng, 0, 0);
  for (int i = 0; i < 500; ++i) {
    const auto key = e.key();
    const int a = static_cast<int>(rng.uniform_int(6));
    const auto info = e.step_key(a);
    agent.observe(key, a, info.reward, e.key(), false);
    if (info.done) e.reset_random(rng, 0, 0);
  }
  agent.learn();  // allocates every buffer
  for (auto _ : state) benchmark::DoNotOptimize(agent.learn());
  state.SetItemsProcessed(state.iterations());
}

void Landmark_DoubleDqnUpdate_S1(benchmark::State& state) {
  run_update(state, nn::SingleHeadQNet<nn::LandmarkQNet<float>>(45), 45);
}

// The example's CPU-sized network (examples/landmark_detection): 11³ cubes, conv 4→8 (3³),
// max-pool 2, conv 8→16 (3³), 64 leaky-ReLU units, dueling head.
using SmallTrunk = nn::Sequential<nn::Conv<3, 4, 8, 3>, nn::MaxPool<3, 2>, nn::LeakyReLU, nn::Conv<3, 8, 16, 3>,
                                  nn::LeakyReLU, nn::Flatten>;
using SmallHead = nn::Sequential<nn::Linear<64>, nn::LeakyReLU, nn::DuelingHead<6>>;

void Landmark_DoubleDqnUpdate_Small(benchmark::State& state) {
  run_update(state, nn::CollabQNet<float, SmallTrunk, SmallHead, 1>(Shape<5>{1, 4, 11, 11, 11}), 11);
}

}  // namespace

BENCHMARK(Landmark_EnvStep)->Arg(45)->Arg(25)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(Landmark_RenderKeys)->Arg(45)->Arg(25)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(Landmark_DoubleDqnUpdate_S1)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(Landmark_DoubleDqnUpdate_Small)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
