// Learning test: the CPU-sized PixelDRL-MG network (nn::PixelDrlNet<float, 1, 8, 2, 16>: VggHalf
// Base 8, head width 16, 167 723 parameters) trained with PA3C (synchronous A2C updates, carve
// mode, t_max = 5, γ = 0.95, value weight 0.5, learnable reward-map filter, Adam 3e-4, batch 4)
// segments bright noisy blobs on a darker noisy background.
//
// Data (generated, a fresh batch every update): 32x32 images with 1-2 disks or ellipses
// (radii 4-9 px) of intensity 0.7 on a background of 0.3 with a random linear shading of
// ±0.1 and Gaussian noise σ = 0.12, then z-scored per image. Evaluation on 16 held-out images
// of the same kind: greedy (argmax) episodes, mean Dice after every step. Passes when Dice after
// t_max ≥ 0.90 and above the step-1 Dice. Budget: at most kMaxUpdates updates (stops at the
// first evaluation where the criterion holds); CTest TIMEOUT 180 s, RUN_SERIAL, 2 cores.
// (Phantoms from the imaging substrate will replace the generator later.)
//
// Two choices differ from the paper's defaults, both because of what carve mode does to a
// small network trained for a few hundred updates (observed; see the report):
//  * z-scored intensities: a carved pixel is an exact 0. With raw [0, 1] intensities 0 sits at
//    the dark end next to the background, so "carve the dark" and "carved pixels are neutral"
//    pull the policy apart and it drifts to carving everything; z-scored, 0 lies between
//    background (< 0) and object (> 0).
//  * β = 0.05 instead of 0.01: the background outnumbers the object ~4:1 and keeping an object
//    pixel only pays (1 − γ^k) more than carving it later, so with β = 0.01 the shared policy
//    saturates to "set to zero" (where its gradient vanishes) before it separates the classes.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>

#include "rlmed/env/pixel_mask.hpp"
#include "rlmed/nn/models/pixeldrl_net.hpp"
#include "rlmed/nn/optim/optimizers.hpp"
#include "rlmed/rl/pixel_a3c.hpp"

using namespace rlmed;

namespace {

constexpr index_t kSide = 32;
constexpr index_t kBatch = 4;
constexpr index_t kEvalImages = 16;
constexpr int kTMax = 5;
constexpr int kMaxUpdates = 500;
constexpr int kEvalEvery = 25;

using Net = nn::PixelDrlNet<float, 1, 8, 2, 16>;

void make_blobs(Tensor<float, 4>& images, Tensor<float, 4>& labels, PhiloxStream& rng) {
  const index_t B = images.extent(0);
  for (index_t b = 0; b < B; ++b) {
    for (index_t i = 0; i < kSide * kSide; ++i) labels[b].data()[i] = 0.0f;
    const int blobs = 1 + static_cast<int>(rng.uniform_int(2));
    for (int k = 0; k < blobs; ++k) {
      const double cy = rng.uniform(8.0f, 24.0f), cx = rng.uniform(8.0f, 24.0f);
      const double ry = rng.uniform(4.0f, 9.0f), rx = rng.uniform(4.0f, 9.0f);
      for (index_t y = 0; y < kSide; ++y)
        for (index_t x = 0; x < kSide; ++x) {
          const double u = (double(y) - cy) / ry, v = (double(x) - cx) / rx;
          if (u * u + v * v <= 1.0) labels(b, 0, y, x) = 1.0f;
        }
    }
    const double gy = rng.uniform(-0.1f, 0.1f), gx = rng.uniform(-0.1f, 0.1f);
    for (index_t y = 0; y < kSide; ++y)
      for (index_t x = 0; x < kSide; ++x) {
        const double shade = gy * (double(y) / (kSide - 1) * 2 - 1) + gx * (double(x) / (kSide - 1) * 2 - 1);
        const double v = (labels(b, 0, y, x) > 0 ? 0.7 : 0.3) + shade + 0.12 * rng.normal();
        images(b, 0, y, x) = static_cast<float>(v);
      }
    double sum = 0, sum2 = 0;
    for (float v : images[b]) {
      sum += v;
      sum2 += double(v) * v;
    }
    const double n = double(kSide * kSide), mean = sum / n, sd = std::sqrt(sum2 / n - mean * mean);
    for (float& v : images[b]) v = static_cast<float>((v - mean) / sd);
  }
}

}  // namespace

TEST_CASE("PixelDRL-MG (Base 8) with PA3C learns to segment noisy blobs: greedy Dice >= 0.90 at t_max") {
  const auto start = std::chrono::steady_clock::now();
  Net net;
  PhiloxStream init_rng(2024, 0);
  net.initialize(init_rng);
  rl::PixelA3CConfig cfg;  // γ 0.95, value weight 0.5, mean over steps, terminal end
  cfg.entropy_beta = 0.05;
  cfg.seed = 7;
  cfg.max_grad_norm = 5.0;
  rl::PixelA3C<Net> learner(net, cfg);
  nn::optim::Adam<float> opt(learner, {.lr = 3e-4});
  MESSAGE("network: " << net.parameter_count() << " parameters (PixelDrlNet<float, 1, 8, 2, 16>)");

  PhiloxStream data_rng(1, 0), eval_rng(2, 0);
  Tensor<float, 4> images(Shape<4>{kBatch, 1, kSide, kSide}), labels(images.shape());
  Tensor<float, 4> eval_images(Shape<4>{kEvalImages, 1, kSide, kSide}), eval_labels(eval_images.shape());
  make_blobs(eval_images, eval_labels, eval_rng);
  env::PixelMaskEnv<float> env({env::PixelMaskMode::carve, kTMax});
  env::PixelMaskEnv<float> eval_env({env::PixelMaskMode::carve, kTMax});

  std::vector<double> dice(kTMax);
  auto evaluate = [&]() {
    eval_env.reset(eval_images.view(), eval_labels.view());
    const double before = eval_env.mean_dice();
    learner.run_episode(eval_env, rl::PixelPolicy::greedy, dice);
    return before;
  };
  const double initial = evaluate();
  std::printf("initial mask (every pixel object) Dice %.4f; untrained greedy Dice after step 1..%d:", initial, kTMax);
  for (double d : dice) std::printf(" %.4f", d);
  std::printf("\n");

  int updates = 0;
  double loss_avg = 0, reward_avg = 0;
  bool passed = false;
  while (updates < kMaxUpdates) {
    make_blobs(images, labels, data_rng);
    env.reset(images.view(), labels.view());
    const auto st = learner.update(env, opt);
    ++updates;
    loss_avg += st.loss;
    reward_avg += st.mean_reward;
    if (updates % kEvalEvery == 0) {
      evaluate();
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("update %4d (%6.1f s): loss %+.4f, mean reward %.4f, entropy %.3f | greedy Dice per step:", updates,
                  secs, loss_avg / kEvalEvery, reward_avg / kEvalEvery, st.mean_entropy);
      for (double d : dice) std::printf(" %.4f", d);
      std::printf("\n");
      std::fflush(stdout);
      loss_avg = reward_avg = 0;
      if (dice[kTMax - 1] >= 0.90 && dice[kTMax - 1] > dice[0]) {
        passed = true;
        break;
      }
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("reward-map filter after training:");
  for (index_t i = 0; i < 9; ++i) std::printf(" %.4f", double(learner.reward_map.weight.value.data()[i]));
  std::printf("\n%d updates of batch %lld, %.1f s\n", updates, static_cast<long long>(kBatch), secs);
  INFO("greedy Dice after step 1: " << dice[0] << ", after step t_max = " << kTMax << ": " << dice[kTMax - 1]);
  CHECK(passed);
  CHECK(dice[kTMax - 1] >= 0.90);
  CHECK(dice[kTMax - 1] > dice[0]);
}
