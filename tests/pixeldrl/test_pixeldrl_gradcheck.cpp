// Finite-difference gradient checks (double precision, relative error < 1e-6) of PixelDRL-MG:
//  * the network alone (policy and value maps, input and every parameter);
//  * the full PA3C loss (value + policy + entropy, returns through the learnable reward-map
//    filter) of a rollout of a tiny PixelDRL net (Base 2, head width 4, 16x16 images — VggHalf
//    needs multiples of 8, so not 12x12 — batch 2, t_max 3) with respect to ALL parameters:
//    every network tensor (3 random unit directions each) and the 9 filter taps one by one. The
//    sampled actions (hence states and rewards) are held fixed between evaluations, and so is
//    the stop-gradient advantage of the policy term, which the test first checks equals R − V.
//    The reference loss is written out here independently of the library: its own return
//    recursion, log-softmax and entropy.
// The loss is only piecewise smooth (ReLU, max-pooling) and its deep tensors are weakly coupled
// (directional derivatives down to ~1e-6 against a loss of ~0.3), so (a) the test point is the
// first initialisation seed whose rollout keeps every ReLU input at least 1e-5 from its kink,
// and (b) each derivative is a five-point stencil chosen on a ladder of step sizes by the
// agreement of neighbouring estimates (see directional_fd) — never by the analytic value.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "../gradcheck/gradcheck.hpp"
#include "rlmed/env/pixel_mask.hpp"
#include "rlmed/nn/models/pixeldrl_net.hpp"
#include "rlmed/rl/pixel_a3c.hpp"

using namespace rlmed;

namespace {

template <index_t In>
using TinyDrl = nn::PixelDrlNet<double, In, 2, 2, 4>;

// The maps here are 16x16 with a few channels: OpenMP regions cost far more than they compute
// (and waiting threads spin), so the checks run on one thread.
struct SingleThread {
  int saved = max_threads();
  SingleThread() { set_num_threads(1); }
  ~SingleThread() { set_num_threads(saved); }
};

// Presents the two maps as one [B, A + 1, H, W] output so test::gradcheck can drive the net.
template <class Net>
struct ConcatenatedOutputs {
  using value_type = double;
  static constexpr std::size_t in_rank = 4;
  static constexpr std::size_t out_rank = 4;
  struct Cache {
    typename Net::Cache inner;
    Tensor<double, 4> y, dpolicy, dvalue;
  };
  Net& net;
  TensorView<const double, 4> forward(nn::Context& ctx, TensorView<const double, 4> x, Cache& c) {
    const auto out = net.forward(ctx, x, c.inner);
    nn::concat_channels<double, 4>({out.policy_logits, out.value}, c.y);
    return c.y.view();
  }
  TensorView<const double, 4> backward(nn::Context& ctx, Cache& c, TensorView<const double, 4> dy) {
    nn::slice_channels(dy, 0, Net::num_actions, c.dpolicy);
    nn::slice_channels(dy, Net::num_actions, 1, c.dvalue);
    return net.backward(ctx, c.inner, c.dpolicy.view(), c.dvalue.view());
  }
  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    net.parameters(visit, prefix);
  }
};

// Bright noisy disks on a darker noisy background, labels = the disks.
void make_batch(Tensor<double, 4>& images, Tensor<double, 4>& labels, std::uint64_t seed) {
  const index_t B = images.extent(0), H = images.extent(2), W = images.extent(3);
  PhiloxStream rng(seed, 0);
  for (index_t b = 0; b < B; ++b) {
    const double cy = rng.uniform(5.0f, float(H - 5)), cx = rng.uniform(5.0f, float(W - 5));
    const double r2 = rng.uniform(9.0f, 20.0f);
    for (index_t y = 0; y < H; ++y)
      for (index_t x = 0; x < W; ++x) {
        const bool in = (double(y) - cy) * (double(y) - cy) + (double(x) - cx) * (double(x) - cx) < r2;
        labels(b, 0, y, x) = in ? 1.0 : 0.0;
        images(b, 0, y, x) = (in ? 0.8 : 0.3) + 0.1 * rng.normal_double();
      }
  }
}

// A generic test point for finite differences. He initialisation leaves every bias at 0, so in
// carve mode (zeroed pixels) whole windows sit exactly on a ReLU kink; random biases move them
// off it. On the 2x2 map of a 16x16 input the dilated conv4 kernels see only their centre tap,
// so He's 9-tap fan-in shrinks the signal ~3x per layer and the SAM parameters would barely
// touch the loss (their gradients drown in rounding noise); the conv4 weights are scaled back.
template <class Net>
void prepare_test_point(Net& net, PhiloxStream& rng) {
  net.parameters([&](const std::string& name, auto& p) {
    if (name.ends_with(".bias")) fill_uniform(p.value.view(), rng, -0.1, 0.1);
    if (name.starts_with("backbone.conv4_") && name.ends_with(".weight"))
      for (double& v : p.value) v *= 3.0;
  });
}

// Smallest |input| of any ReLU of the network over the forward passes of a rollout.
template <class Net, class Learner>
double relu_margin(Net& net, Learner& learner) {
  typename Net::Cache c;
  nn::Context ctx;
  double m = 1e300;
  auto scan = [&](const auto& y) {
    for (double v : y) m = std::min(m, std::abs(v));
  };
  for (int t = 0; t < learner.rollout_length(); ++t) {
    net.forward(ctx, learner.observation(t), c);
    const auto& b = c.backbone;
    const std::array<const Tensor<double, 4>*, 16> pre_activations{
        &b.c11.y, &b.c12.y, &b.c21.y, &b.c22.y, &b.c31.y, &b.c32.y, &b.c33.y, &b.c41.y,
        &b.c42.y, &b.c43.y, &c.policy.c1.y, &c.policy.c2.y, &c.policy.c3.y, &c.value.c1.y, &c.value.c2.y, &c.value.c3.y};
    for (const auto* y : pre_activations) scan(*y);
  }
  return m;
}

struct LossCase {
  env::PixelMaskMode mode;
  int t_max;
  int rollout_steps;  // < t_max: the rollout bootstraps from V(s(n))
  rl::StepReduction reduction;
  double value_weight, policy_weight, entropy_beta, gamma;
};

template <index_t In>
void check_full_pa3c_loss(const LossCase& lc) {
  using Net = TinyDrl<In>;
  const index_t B = 2, H = 16, W = 16;
  Tensor<double, 4> images(Shape<4>{B, 1, H, W}), labels(images.shape());
  make_batch(images, labels, 3);
  env::PixelMaskEnv<double> env({lc.mode, lc.t_max});

  rl::PixelA3CConfig cfg;
  cfg.gamma = lc.gamma;
  cfg.value_weight = lc.value_weight;
  cfg.policy_weight = lc.policy_weight;
  cfg.entropy_beta = lc.entropy_beta;
  cfg.step_reduction = lc.reduction;
  cfg.rollout_steps = lc.rollout_steps;
  cfg.seed = 8;
  Net net;
  rl::PixelA3C<Net> learner(net, cfg);
  // The test point: the first initialisation seed whose rollout keeps every ReLU input at least
  // 1e-5 from the kink (finite differences across a kink measure a one-sided mixture).
  double margin = 0;
  std::uint64_t seed = 21;
  for (;; ++seed) {
    REQUIRE(seed < 21 + 64);
    PhiloxStream rng(seed, 0);
    net.initialize(rng);
    prepare_test_point(net, rng);
    // A filter far from the identity, so every tap matters.
    fill_normal(learner.reward_map.weight.value.view(), rng, 0.0, 0.3);
    learner.reward_map.weight.value(1, 1) += 0.8;
    env.reset(images.view(), labels.view());
    learner.collect(env);
    margin = relu_margin(net, learner);
    if (margin >= 1e-5) break;
  }
  MESSAGE("test point: initialisation seed " << seed << ", smallest |ReLU input| over the rollout " << margin);
  const int n = learner.rollout_length();
  REQUIRE(n == lc.rollout_steps);
  nn::zero_grad(learner);
  const auto stats = learner.accumulate_gradients();

  // Both actions were taken and rewards of both signs occurred: the loss exercises everything.
  index_t zeros = 0, pixels_total = 0, positive = 0, negative = 0;
  for (int t = 0; t < n; ++t) {
    for (auto a : learner.actions(t)) zeros += a == 0, ++pixels_total;
    for (double r : learner.rewards(t)) positive += r > 0, negative += r < 0;
  }
  CHECK(zeros > 0);
  CHECK(zeros < pixels_total);
  CHECK(positive > 0);
  CHECK(negative > 0);

  // The bootstrap: V(s(n)) of the network when the rollout stops early.
  typename Net::Cache cache;
  nn::Context ctx;
  if (n < lc.t_max) {
    const auto out = net.forward(ctx, env.observation(), cache);
    CHECK(bitwise_equal(TensorView<const double, 4>(learner.bootstrap()), out.value));
  }

  // Reference loss, written independently of the library.
  const double N = double(lc.reduction == rl::StepReduction::mean ? n : 1) * double(B * H * W);
  auto reference_loss = [&](bool check_advantage) {
    const auto& w = learner.reward_map.weight.value;
    std::vector<Tensor<double, 4>> R(static_cast<std::size_t>(n), Tensor<double, 4>(Shape<4>{B, 1, H, W}));
    for (int t = n - 1; t >= 0; --t) {
      const Tensor<double, 4> next_copy = t + 1 < n ? R[std::size_t(t + 1)] : Tensor<double, 4>::copy_of(learner.bootstrap());
      for (index_t b = 0; b < B; ++b)
        for (index_t y = 0; y < H; ++y)
          for (index_t x = 0; x < W; ++x) {
            double conv = 0;
            for (int dy = -1; dy <= 1; ++dy)
              for (int dx = -1; dx <= 1; ++dx) {
                const index_t sy = y - dy, sx = x - dx;
                if (sy >= 0 && sy < H && sx >= 0 && sx < W) conv += w(1 + dy, 1 + dx) * next_copy(b, 0, sy, sx);
              }
            R[std::size_t(t)](b, 0, y, x) = learner.rewards(t)(b, 0, y, x) + lc.gamma * conv;
          }
    }
    double total = 0;
    for (int t = 0; t < n; ++t) {
      const auto out = net.forward(ctx, learner.observation(t), cache);
      for (index_t b = 0; b < B; ++b)
        for (index_t y = 0; y < H; ++y)
          for (index_t x = 0; x < W; ++x) {
            const double z0 = out.policy_logits(b, 0, y, x), z1 = out.policy_logits(b, 1, y, x);
            const double m = std::max(z0, z1);
            const double lse = m + std::log(std::exp(z0 - m) + std::exp(z1 - m));
            const double lp0 = z0 - lse, lp1 = z1 - lse;
            const double entropy = -(std::exp(lp0) * lp0 + std::exp(lp1) * lp1);
            const double lpa = learner.actions(t)(b, y, x) == 0 ? lp0 : lp1;
            const double Rv = R[std::size_t(t)](b, 0, y, x), V = out.value(b, 0, y, x);
            const double adv = learner.advantages(t)(b, 0, y, x);  // held fixed (stop-gradient)
            if (check_advantage) {
              REQUIRE(std::abs(adv - (Rv - V)) < 1e-12);
              REQUIRE(std::abs(learner.returns(t)(b, 0, y, x) - Rv) < 1e-12);
            }
            total += lc.value_weight * (Rv - V) * (Rv - V) - lc.policy_weight * lpa * adv - lc.entropy_beta * entropy;
          }
    }
    return total / N;
  };
  const double L0 = reference_loss(true);
  CHECK(stats.loss == doctest::Approx(L0).epsilon(1e-12));

  // Analytic gradients of every tensor, then directional finite differences (3 random unit
  // directions per tensor) and element-wise differences for the 9 filter taps.
  struct Slot {
    std::string name;
    double* value;
    std::vector<double> grad;
  };
  std::vector<Slot> slots;
  learner.parameters([&](const std::string& name, auto& p) {
    slots.push_back({name, p.value.data(), std::vector<double>(p.grad.begin(), p.grad.end())});
  });
  REQUIRE(slots.back().name == "reward_map.weight");
  REQUIRE(slots.size() == 38 + 1);
  const bool spatial_attention = net.sam.axis == nn::AttentionAxis::spatial;
  PhiloxStream dir_rng(31, 0);
  double worst = 0;
  // Derivative of the reference loss along v: five-point stencils (truncation O(h^4)) on a
  // ladder of steps h_k = 1e-7 * 10^(k/2), k = 0..8. Too small a step drowns in rounding noise
  // (~1e-15 / h: the deep tensors' derivatives are ~1e-5), too large a step puts a ReLU kink
  // inside the stencil (the loss is only piecewise smooth); in between, consecutive estimates
  // agree. The first pair agreeing to 1e-8 (relative) is taken, else the best-agreeing pair.
  // The choice uses the finite differences alone, never the analytic value.
  auto directional_fd = [&](double* values, const std::vector<double>& saved, const std::vector<double>& v) {
    auto at = [&](double step) {
      for (std::size_t i = 0; i < saved.size(); ++i) values[i] = saved[i] + step * v[i];
      return reference_loss(false);
    };
    std::array<double, 9> d{};
    double result = 0, best_gap = 1e300;
    for (std::size_t k = 0; k < d.size(); ++k) {
      const double h = 1e-7 * std::pow(10.0, 0.5 * double(k));
      d[k] = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h);
      if (k == 0) continue;
      const double gap = std::abs(d[k] - d[k - 1]);
      if (gap < best_gap) {
        best_gap = gap;
        result = d[k - 1];
      }
      if (gap <= 1e-8 * std::max(std::abs(d[k]), std::abs(d[k - 1]))) break;
    }
    for (std::size_t i = 0; i < saved.size(); ++i) values[i] = saved[i];
    return result;
  };
  for (auto& s : slots) {
    const std::size_t size = s.grad.size();
    std::vector<double> analytic, numeric;
    std::vector<double> saved(s.value, s.value + size), v(size);
    for (int k = 0; k < 3; ++k) {
      double norm = 0;
      for (auto& e : v) {
        e = dir_rng.normal_double();
        norm += e * e;
      }
      double dot = 0;
      for (std::size_t i = 0; i < size; ++i) {
        v[i] /= std::sqrt(norm);
        dot += s.grad[i] * v[i];
      }
      analytic.push_back(dot);
      numeric.push_back(directional_fd(s.value, saved, v));
    }
    if (s.name == "reward_map.weight") {
      for (std::size_t i = 0; i < size; ++i) {
        std::fill(v.begin(), v.end(), 0.0);
        v[i] = 1;
        analytic.push_back(s.grad[i]);
        numeric.push_back(directional_fd(s.value, saved, v));
      }
    }
    double mag = 0, num_mag = 0;
    for (double a : analytic) mag = std::max(mag, std::abs(a));
    for (double v2 : numeric) num_mag = std::max(num_mag, std::abs(v2));
    if (s.name == "sam.proj.bias" && spatial_attention) {
      // A per-channel constant added before a softmax over that channel's positions: no effect.
      INFO("sam.proj.bias: analytic " << mag << ", numeric " << num_mag << " (both should be 0)");
      CHECK(mag < 1e-15);
      CHECK(num_mag < 1e-9);
      continue;
    }
    const double err = test::detail::rel_error(analytic, numeric);
    INFO(s.name << ": relative error " << err << " (analytic " << analytic[0] << ", numeric " << numeric[0] << ")");
    CHECK(err < 1e-6);
    INFO(s.name << ": largest analytic directional derivative " << mag);
    CHECK(mag > 1e-9);  // every tensor really receives a gradient
    worst = std::max(worst, err);
  }
  MESSAGE("full PA3C loss (" << (lc.mode == env::PixelMaskMode::carve ? std::string("carve") : std::string("direct")) << ", " << n
                             << " steps): worst relative error over " << slots.size() << " tensors " << worst);
}

}  // namespace

TEST_CASE("PixelDrlNet gradients (Base 2, head width 4, 16x24, batch 2): input and every parameter") {
  SingleThread one;
  TinyDrl<1> net;
  PhiloxStream rng(5, 0);
  net.initialize(rng);
  prepare_test_point(net, rng);
  ConcatenatedOutputs<TinyDrl<1>> module{net};
  auto x = test::random_tensor(Shape<4>{2, 1, 16, 24}, 6);
  test::GradcheckOptions opt;
  opt.directional = true;
  opt.zero_gradient = {"sam.proj.bias"};  // a per-channel constant: the spatial softmax ignores it
  const double worst = test::gradcheck(module, x, opt);
  MESSAGE("PixelDrlNet alone: worst relative error " << worst);
  // The same with the per-pixel channel softmax in SAM and two input channels (direct mode).
  TinyDrl<2> net2(nn::PixelDrlConfig{2, {3, 2, 1}, nn::AttentionAxis::channels});
  net2.initialize(rng);
  prepare_test_point(net2, rng);
  ConcatenatedOutputs<TinyDrl<2>> module2{net2};
  auto x2 = test::random_tensor(Shape<4>{2, 2, 16, 16}, 7);
  opt.zero_gradient.clear();  // over channels, the bias matters
  test::gradcheck(module2, x2, opt);
}

TEST_CASE("full PA3C loss, carve mode, terminal end, mean over steps: all parameters and the filter") {
  SingleThread one;
  check_full_pa3c_loss<1>({env::PixelMaskMode::carve, 3, 3, rl::StepReduction::mean, 0.5, 1.0, 0.01, 0.95});
}

TEST_CASE("full PA3C loss, direct mode, bootstrapped rollout, sum over steps, other weights") {
  SingleThread one;
  check_full_pa3c_loss<2>({env::PixelMaskMode::direct, 3, 2, rl::StepReduction::sum, 0.25, 0.7, 0.05, 0.9});
}
