// Unit tests of the asynchronous PA3C workers (rl/pixel_a3c_async.hpp) on a tiny PixelDRL-MG
// network (Base 2, head width 4) and 16×16 synthetic images:
//  * deterministic mode: the same run twice is bit-identical, and train(3) + train(3) equals train(6);
//  * one deterministic worker reproduces the synchronous A2C update sequence bit for bit (same
//    draws: stream + 1, step counter u · t_max; one thread on both sides);
//  * asynchronous mode applies exactly the requested number of updates and changes the parameters;
//  * a batch source that throws stops the run and its error reaches the caller.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "rlmed/core/parallel.hpp"
#include "rlmed/env/pixel_mask.hpp"
#include "rlmed/nn/models/pixeldrl_net.hpp"
#include "rlmed/nn/optim/optimizers.hpp"
#include "rlmed/rl/pixel_a3c.hpp"
#include "rlmed/rl/pixel_a3c_async.hpp"

using namespace rlmed;

namespace {

using Net = nn::PixelDrlNet<float, 1, 2, 2, 4>;
constexpr index_t kSide = 16;
constexpr int kTMax = 3;

/// Batch u: 2 images with a bright square whose position depends on u (a function of u only).
void batch_of(std::int64_t u, Tensor<float, 4>& images, Tensor<float, 4>& labels) {
  images.resize(Shape<4>{2, 1, kSide, kSide});
  labels.resize(images.shape());
  PhiloxStream rng(99, static_cast<std::uint64_t>(u));
  for (index_t b = 0; b < 2; ++b) {
    const index_t y0 = 2 + static_cast<index_t>(rng.uniform_int(6)), x0 = 2 + static_cast<index_t>(rng.uniform_int(6));
    for (index_t y = 0; y < kSide; ++y)
      for (index_t x = 0; x < kSide; ++x) {
        const bool in = y >= y0 && y < y0 + 6 && x >= x0 && x < x0 + 6;
        labels(b, 0, y, x) = in ? 1.0f : 0.0f;
        images(b, 0, y, x) = (in ? 0.8f : 0.2f) + 0.05f * rng.normal();
      }
  }
}

struct Setup {
  Net net;
  rl::PixelA3C<Net> learner;
  nn::optim::Adam<float> opt;
  Setup() : net(), learner(net, config()), opt(learner, {.lr = 1e-3}) {
    PhiloxStream rng(5, 0);
    net.initialize(rng);
  }
  static rl::PixelA3CConfig config() {
    rl::PixelA3CConfig c;
    c.seed = 11;
    return c;
  }
  std::vector<float> flat() {
    std::vector<float> out;
    learner.parameters([&](const std::string&, auto& p) { out.insert(out.end(), p.value.begin(), p.value.end()); });
    return out;
  }
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

const env::PixelMaskConfig kEnv{env::PixelMaskMode::carve, kTMax};

}  // namespace

TEST_CASE("deterministic A3C workers: bit-identical runs, and splitting a run changes nothing") {
  auto run = [](std::vector<std::int64_t> chunks) {
    Setup s;
    rl::PixelA3CAsync<Net, nn::optim::Adam<float>> a3c(s.learner, s.opt, kEnv, {.workers = 3, .deterministic = true});
    for (auto c : chunks) a3c.train(c, batch_of);
    CHECK(a3c.updates() == 6);
    return s.flat();
  };
  Setup fresh;
  const auto init = fresh.flat();
  const auto a = run({6}), b = run({6}), c = run({3, 3});
  CHECK(same_bits(a, b));
  CHECK(same_bits(a, c));
  CHECK_FALSE(same_bits(a, init));
}

TEST_CASE("one deterministic worker reproduces the synchronous A2C updates bit for bit") {
  const int threads = max_threads();
  set_num_threads(1);
  Setup sync;
  sync.learner.config.stream = 1;  // the worker's stream: shared stream + 1 + w
  env::PixelMaskEnv<float> env(kEnv);
  Tensor<float, 4> images, labels;
  for (std::int64_t u = 0; u < 4; ++u) {
    batch_of(u, images, labels);
    env.reset(images.view(), labels.view());
    sync.learner.set_sample_step(static_cast<std::uint64_t>(u * kTMax));
    sync.learner.update(env, sync.opt);
  }
  set_num_threads(threads);
  Setup async;
  rl::PixelA3CAsync<Net, nn::optim::Adam<float>> a3c(async.learner, async.opt, kEnv, {.workers = 1, .deterministic = true});
  a3c.train(4, batch_of);
  CHECK(same_bits(sync.flat(), async.flat()));
}

TEST_CASE("asynchronous A3C workers apply exactly the requested updates") {
  Setup s;
  const auto init = s.flat();
  rl::PixelA3CAsync<Net, nn::optim::Adam<float>> a3c(s.learner, s.opt, kEnv, {.workers = 2, .max_grad_norm = 1.0});
  const auto info = a3c.train(5, batch_of);
  CHECK(info.updates == 5);
  CHECK(a3c.updates() == 5);
  CHECK(std::isfinite(info.mean_loss));
  CHECK_FALSE(same_bits(s.flat(), init));
  // The worker that applied the last update holds the shared parameters (the others may be older).
  std::vector<float> shared;
  s.net.parameters([&](const std::string&, auto& p) { shared.insert(shared.end(), p.value.begin(), p.value.end()); });
  int holding = 0;
  for (int w = 0; w < 2; ++w) {
    std::vector<float> worker;
    a3c.worker_net(w).parameters([&](const std::string&, auto& p) { worker.insert(worker.end(), p.value.begin(), p.value.end()); });
    holding += same_bits(worker, shared) ? 1 : 0;
  }
  CHECK(holding >= 1);
}

TEST_CASE("errors: bad configuration, and a failing batch source reaches the caller") {
  Setup s;
  using A = rl::PixelA3CAsync<Net, nn::optim::Adam<float>>;
  CHECK_THROWS_AS(A(s.learner, s.opt, kEnv, {.workers = 0}), Error);
  CHECK_THROWS_AS(A(s.learner, s.opt, kEnv, {.workers = 1, .max_grad_norm = -1}), Error);
  A a3c(s.learner, s.opt, kEnv, {.workers = 2, .deterministic = true});
  CHECK_THROWS_AS(a3c.train(-1, batch_of), Error);
  auto failing = [](std::int64_t u, Tensor<float, 4>& images, Tensor<float, 4>& labels) {
    if (u == 2) RLMED_THROW("batch ", u, " is unreadable");
    batch_of(u, images, labels);
  };
  CHECK_THROWS_WITH_AS(a3c.train(4, failing), doctest::Contains("batch 2 is unreadable"), Error);
  CHECK(a3c.updates() == 2);  // updates 0 and 1 were applied in turn before update 2 failed
}
