// PixelDRL-MG training-iteration benchmark, the same work as bench/peers/pixeldrl_torch.py
// (PyTorch, 2 threads):
//   PixelDrl_Iteration/<width>/<side>: one synchronous PA3C (A2C) update of nn::PixelDrlNet on a
//   batch of 2 synthetic H×W images — environment reset, t_max = 10 forward passes with
//   per-pixel sampling and carve steps, returns through the learnable 3×3 reward map
//   (γ 0.95, terminal episode end), the loss (value 0.5, policy 1, entropy 0.01, mean over
//   steps and pixels), backward through all 10 steps, the global gradient norm and one Adam
//   step (lr 1e-3). width cpu = Base 8 (heads 16), paper = Base 32 (heads 64).
//   Counter: iterations/s; the parameter count is printed once per width.
// Design decisions:
//  * The images are synthetic (a bright disc on a noisy background, no exact zeros), because
//    the time of one update does not depend on the pixel values; the peer draws its own.
//  * One untimed update before the timed loop: every buffer is allocated by then, so the timed
//    iterations show the steady state (the trainer runs thousands of them).
//  * Threads: 2 (the reference machine's cores), like torch.set_num_threads(2) in the peer.
// Run one shape at a time on the 2-core reference machine, alternating with the peer:
//   ./build/bench/bench/pixeldrl_step_bench --benchmark_filter=PixelDrl_Iteration/cpu/64/
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>

#include "rlmed/core/parallel.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/env/pixel_mask.hpp"
#include "rlmed/nn/models/pixeldrl_net.hpp"
#include "rlmed/nn/optim/optimizers.hpp"
#include "rlmed/rl/pixel_a3c.hpp"

using namespace rlmed;

namespace {

constexpr index_t kBatch = 2;
constexpr int kTMax = 10;

/// images, labels [B, 1, side, side]: disc of radius side/4 (label 1, intensity ~0.8) on ~0.3.
void synthetic_batch(index_t side, Tensor<float, 4>& images, Tensor<float, 4>& labels) {
  images = Tensor<float, 4>(Shape<4>{kBatch, 1, side, side});
  labels = Tensor<float, 4>(images.shape());
  PhiloxStream rng(11, 0);
  for (index_t b = 0; b < kBatch; ++b) {
    const double cy = side * (0.4 + 0.2 * double(b)), cx = side * 0.5, r = side / 4.0;
    for (index_t y = 0; y < side; ++y)
      for (index_t x = 0; x < side; ++x) {
        const bool inside = (double(y) - cy) * (double(y) - cy) + (double(x) - cx) * (double(x) - cx) <= r * r;
        labels(b, 0, y, x) = inside ? 1.0f : 0.0f;
        images(b, 0, y, x) = (inside ? 0.8f : 0.3f) + 0.1f * (rng.uniform() - 0.5f);
      }
  }
}

template <index_t Base, index_t Width>
void PixelDrl_Iteration(benchmark::State& state) {
  set_num_threads(2);
  const index_t side = state.range(0);
  using Net = nn::PixelDrlNet<float, 1, Base, 2, Width>;
  Net net;
  PhiloxStream init_rng(1, 7);
  net.initialize(init_rng);
  rl::PixelA3CConfig cfg;  // γ 0.95, β 0.01, value weight 0.5, learnable reward map, full episode
  cfg.seed = 1;
  rl::PixelA3C<Net> learner(net, cfg);
  nn::optim::Adam<float> opt(learner, {.lr = 1e-3});
  env::PixelMaskEnv<float> env({env::PixelMaskMode::carve, kTMax});
  Tensor<float, 4> images, labels;
  synthetic_batch(side, images, labels);
  static bool printed[2] = {false, false};
  if (!printed[Base == 32]) {
    std::printf("PixelDrlNet<Base %lld, Width %lld> parameters (net only): %lld\n", static_cast<long long>(Base),
                static_cast<long long>(Width), static_cast<long long>(net.parameter_count()));
    printed[Base == 32] = true;
  }
  env.reset(images.view(), labels.view());
  learner.update(env, opt);  // warm-up: allocates every buffer
  double loss = 0;
  for (auto _ : state) {
    env.reset(images.view(), labels.view());
    const auto st = learner.update(env, opt);
    benchmark::DoNotOptimize(st.loss);  // const overload: the non-const one (benchmark 1.7.1) reported a garbage loss here
    loss = st.loss;
  }
  state.counters["iterations/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["final_loss"] = loss;
}

}  // namespace

BENCHMARK(PixelDrl_Iteration<8, 16>)
    ->Name("PixelDrl_Iteration/cpu")
    ->Arg(64)->Arg(128)->Arg(256)
    ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);
BENCHMARK(PixelDrl_Iteration<32, 64>)
    ->Name("PixelDrl_Iteration/paper")
    ->Arg(64)->Arg(128)->Arg(256)
    ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);

BENCHMARK_MAIN();
