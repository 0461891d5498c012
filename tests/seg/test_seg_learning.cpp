// Learning test of the PixelDRL-MG baselines through the SegMethod interface (seg/method.hpp),
// on generated slice phantoms (imaging/phantom.hpp: irregular organ with lesions, texture, bias
// field, Rician noise σ 0.08, bias 0.3), 32×32, organ + lesions as foreground, z-scored; 24 training and 8
// held-out phantoms (other seeds). Mean held-out Dice (ε = 1e-4) of:
//  * unet     supervised U-Net, 400 Adam steps of 4 crops          -> Dice >= 0.90
//  * pixelrl  coarse U-Net of 10 steps refined by PixelRL (300 updates, t_max 5) -> Dice above the coarse
//             map's own Dice + 0.01 (the same 10-step U-Net, trained identically by the unet method)
//  * ddqn     per-pixel Double DQN on the carve environment, 600 steps -> Dice >= 0.90
//  * dqn, dueling (600 steps), ac (300 updates) -> Dice above the all-foreground mask + 0.2
// Budget: CTest TIMEOUT 240 s, RUN_SERIAL, 2 cores; every number is printed.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>

#include "rlmed/imaging/metrics.hpp"
#include "rlmed/seg/method.hpp"

using namespace rlmed;

namespace {

constexpr double kDdqnDice = 0.90;  // measured 0.980 (seed 5, 600 steps)
constexpr int kCoarseSteps = 10;
constexpr int kPixelRlUpdates = 300;

seg::PhantomSetOptions phantom_options() {
  seg::PhantomSetOptions o;
  o.height = o.width = 32;
  o.phantom.noise_sigma = 0.08;  // harder than the default 0.02: noisy boundaries
  o.phantom.bias_amplitude = 0.3;
  return o;
}

struct Data {
  seg::SegmentationSet train = seg::make_phantom_set(24, 1000, phantom_options());
  seg::SegmentationSet test = seg::make_phantom_set(8, 5000, phantom_options());
};
const Data& data() {
  static const Data d;
  return d;
}

seg::TrainOptions options(int steps) {
  seg::TrainOptions o;
  o.steps = steps;
  o.batch = 4;
  o.crop = 32;
  o.t_max = 5;
  return o;
}

double mean_dice(seg::SegMethod& m, std::vector<double>* per_step = nullptr) {
  const auto& test = data().test;
  double d = 0;
  for (std::size_t i = 0; i < test.size(); ++i) {
    const auto p = m.predict(test.images[i].view());
    d += imaging::dice(p.mask, test.masks[i]) / double(test.size());
    if (per_step) {
      per_step->resize(p.steps.size());
      for (std::size_t t = 0; t < p.steps.size(); ++t)
        (*per_step)[t] += imaging::dice(p.steps[t], test.masks[i]) / double(test.size());
    }
  }
  return d;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string curve(const std::vector<double>& v) {
  std::string s;
  char buf[32];
  for (double x : v) {
    std::snprintf(buf, sizeof buf, "%s%.3f", s.empty() ? "" : " ", x);
    s += buf;
  }
  return s;
}

}  // namespace

TEST_CASE("supervised U-Net on phantoms: held-out Dice >= 0.90") {
  const auto t0 = std::chrono::steady_clock::now();
  auto m = seg::make_seg_method("unet", 3);
  m->train(data().train, options(400));
  const double d = mean_dice(*m);
  MESSAGE("unet (" << m->parameter_count() << " parameters): held-out Dice " << d << " in " << seconds_since(t0) << " s");
  CHECK(d >= 0.90);
}

TEST_CASE("PixelRL refinement improves the coarse U-Net map") {
  const auto t0 = std::chrono::steady_clock::now();
  auto coarse = seg::make_seg_method("unet", 4);
  coarse->train(data().train, options(kCoarseSteps));
  const double coarse_dice = mean_dice(*coarse);
  auto m = seg::make_seg_method("pixelrl", 4);
  auto o = options(kPixelRlUpdates);
  o.coarse_steps = kCoarseSteps;
  m->train(data().train, o);
  std::vector<double> steps;
  const double d = mean_dice(*m, &steps);
  MESSAGE("pixelrl (" << m->parameter_count() << " parameters incl. coarse U-Net): coarse Dice " << coarse_dice
                      << " -> refined " << d << "; per step " << curve(steps) << "; " << seconds_since(t0) << " s");
  CHECK(d > coarse_dice + 0.01);
}

TEST_CASE("per-pixel Double DQN on the carve environment reaches the stated Dice") {
  const auto t0 = std::chrono::steady_clock::now();
  auto m = seg::make_seg_method("ddqn", 5);
  m->train(data().train, options(600));
  std::vector<double> steps;
  const double d = mean_dice(*m, &steps);
  MESSAGE("ddqn (" << m->parameter_count() << " parameters): held-out Dice " << d << "; per step " << curve(steps)
                   << "; " << seconds_since(t0) << " s");
  CHECK(d >= kDdqnDice);
}

TEST_CASE("DQN, Dueling DQN and the plain actor-critic beat the keep-everything mask") {
  // The carve environment starts from "everything is object": an agent that learned nothing keeps
  // it, so its Dice is the all-foreground Dice. Each method must beat it clearly.
  double all_foreground = 0;
  const auto& test = data().test;
  for (std::size_t i = 0; i < test.size(); ++i) {
    Tensor<float, 2> ones(test.masks[i].shape());
    fill(ones, 1.0f);
    all_foreground += imaging::dice(ones, test.masks[i]) / double(test.size());
  }
  for (const char* name : {"dqn", "dueling", "ac"}) {
    const auto t0 = std::chrono::steady_clock::now();
    auto m = seg::make_seg_method(name, 6);
    m->train(data().train, options(std::string(name) == "ac" ? 300 : 600));
    std::vector<double> steps;
    const double d = mean_dice(*m, &steps);
    MESSAGE(std::string(name) << " (" << m->parameter_count() << " parameters): held-out Dice " << d << " (all-foreground "
                 << all_foreground << "); per step " << curve(steps) << "; " << seconds_since(t0) << " s");
    CHECK(d > all_foreground + 0.2);
  }
}
