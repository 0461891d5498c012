// Returns and advantages against hand-computed cases (GAE with a truncation and a termination
// in the middle of a rollout, discounted and n-step returns, normalisation), exploration
// (ε schedules and ε-greedy, Boltzmann, Gaussian and Ornstein–Uhlenbeck noise statistics) and
// target-network synchronisation (hard copies, Polyak averaging) on a small nn module.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "rlmed/nn/nn.hpp"
#include "rlmed/rl/explore.hpp"
#include "rlmed/rl/returns.hpp"
#include "rlmed/rl/target_sync.hpp"

using namespace rlmed;
namespace ex = rlmed::rl::explore;

namespace {

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A [T, N] tensor from values given time-major, row by row.
template <class T>
Tensor<T, 2> rollout(index_t steps, index_t envs, std::initializer_list<T> values) {
  REQUIRE(static_cast<index_t>(values.size()) == steps * envs);
  Tensor<T, 2> t(Shape<2>{steps, envs});
  std::copy(values.begin(), values.end(), t.data());
  return t;
}

}  // namespace

TEST_CASE("GAE equals a hand-computed case with a truncation and a termination mid-rollout") {
  // Two environments, T = 4, gamma = 0.9, lambda = 0.8 (gamma * lambda = 0.72).
  //  env 0: truncated after t = 1 with V(final observation) = 3; last value (after t = 3) 2.5.
  //  env 1: terminated at t = 2 (its next value, 100, must be ignored); last value 0.5.
  const auto rewards = rollout<double>(4, 2, {1, 1, 2, 1, 3, 1, 4, 1});
  const auto values = rollout<double>(4, 2, {0.5, 0, 1.0, 0, 1.5, 0, 2.0, 0});
  const auto truncation_values = rollout<double>(4, 2, {0, 0, 3.0, 0, 0, 0, 0, 0});
  const auto terminated = rollout<std::uint8_t>(4, 2, {0, 0, 0, 0, 0, 1, 0, 0});
  const auto truncated = rollout<std::uint8_t>(4, 2, {0, 0, 1, 0, 0, 0, 0, 0});
  Tensor<double, 1> last(Shape<1>{2});
  last(0) = 2.5;
  last(1) = 0.5;
  Tensor<double, 2> next(Shape<2>{4, 2});
  rl::build_next_values_into<double>(values.view(), last.view(), truncated.view(), truncation_values.view(),
                                     next.view());
  // By hand: env 0 -> [values[1], V(final), values[3], last] = [1, 3, 2, 2.5]; env 1 -> [0, 0, 0, 0.5].
  const double next_hand[4][2] = {{1.0, 0}, {3.0, 0}, {2.0, 0}, {2.5, 0.5}};
  for (index_t t = 0; t < 4; ++t)
    for (index_t i = 0; i < 2; ++i) CHECK(next(t, i) == next_hand[t][i]);
  next(2, 1) = 100.0;  // a terminal step's next value is never read

  Tensor<double, 2> adv(Shape<2>{4, 2}), ret(Shape<2>{4, 2});
  rl::gae_into<double>(rewards.view(), values.view(), next.view(), terminated.view(), truncated.view(), 0.9, 0.8,
                       adv.view(), ret.view());
  // env 0: d3 = 4 + .9*2.5 - 2 = 4.25, A3 = 4.25
  //        d2 = 3 + .9*2 - 1.5 = 3.3,   A2 = 3.3 + .72*4.25 = 6.36
  //        d1 = 2 + .9*3 - 1 = 3.7,     A1 = 3.7          (truncated: nothing flows back across)
  //        d0 = 1 + .9*1 - .5 = 1.4,    A0 = 1.4 + .72*3.7 = 4.064
  // env 1: d3 = 1 + .9*.5 = 1.45, A3 = 1.45; d2 = 1 (terminal), A2 = 1;
  //        A1 = 1 + .72*1 = 1.72; A0 = 1 + .72*1.72 = 2.2384
  const double adv_hand[4][2] = {{4.064, 2.2384}, {3.7, 1.72}, {6.36, 1.0}, {4.25, 1.45}};
  for (index_t t = 0; t < 4; ++t)
    for (index_t i = 0; i < 2; ++i) {
      CHECK(adv(t, i) == doctest::Approx(adv_hand[t][i]).epsilon(1e-12));
      CHECK(ret(t, i) == doctest::Approx(adv_hand[t][i] + values(t, i)).epsilon(1e-12));
    }

  // lambda = 1: advantages are the bootstrapped discounted returns minus the values.
  Tensor<double, 2> g(Shape<2>{4, 2});
  rl::discounted_returns_into<double>(rewards.view(), next.view(), terminated.view(), truncated.view(), 0.9, g.view());
  rl::gae_into<double>(rewards.view(), values.view(), next.view(), terminated.view(), truncated.view(), 0.9, 1.0,
                       adv.view(), ret.view());
  for (index_t k = 0; k < 8; ++k) CHECK(ret.data()[k] == doctest::Approx(g.data()[k]).epsilon(1e-12));
  // float32 rollouts give the same numbers to float precision.
  Tensor<float, 2> rf(Shape<2>{4, 2}), vf(Shape<2>{4, 2}), nf(Shape<2>{4, 2}), af(Shape<2>{4, 2}), tf(Shape<2>{4, 2});
  for (index_t k = 0; k < 8; ++k) {
    rf.data()[k] = float(rewards.data()[k]);
    vf.data()[k] = float(values.data()[k]);
    nf.data()[k] = float(next.data()[k]);
  }
  rl::gae_into<float>(rf.view(), vf.view(), nf.view(), terminated.view(), truncated.view(), 0.9, 0.8, af.view(),
                      tf.view());
  CHECK(af(0, 0) == doctest::Approx(4.064).epsilon(1e-6));
  // Bad inputs.
  Tensor<double, 2> short_values(Shape<2>{3, 2});
  CHECK(error_of([&] {
          rl::gae_into<double>(rewards.view(), short_values.view(), next.view(), terminated.view(), truncated.view(),
                               0.9, 0.8, adv.view(), ret.view());
        }).find("values has shape [3, 2], expected [T, N] = [4, 2]") != std::string::npos);
  CHECK_THROWS_AS(rl::gae_into<double>(rewards.view(), values.view(), next.view(), terminated.view(), truncated.view(),
                                       0.9, 1.5, adv.view(), ret.view()),
                  Error);
  auto bad_rewards = rewards;
  bad_rewards(1, 1) = NAN;
  CHECK_THROWS_AS(rl::gae_into<double>(bad_rewards.view(), values.view(), next.view(), terminated.view(),
                                       truncated.view(), 0.9, 0.8, adv.view(), ret.view()),
                  Error);
  auto bad_flags = terminated;
  bad_flags(0, 0) = 2;
  CHECK_THROWS_AS(rl::gae_into<double>(rewards.view(), values.view(), next.view(), bad_flags.view(), truncated.view(),
                                       0.9, 0.8, adv.view(), ret.view()),
                  Error);
}

TEST_CASE("discounted and n-step returns at episode boundaries") {
  // One complete episode.
  const std::vector<double> r{1, 1, 1};
  std::vector<double> g(3);
  rl::discounted_returns_into<double>(r, 0.5, g);
  CHECK(g == std::vector<double>{1.75, 1.5, 1.0});
  std::vector<double> g2(2);
  CHECK_THROWS_AS(rl::discounted_returns_into<double>(r, 0.5, g2), Error);
  CHECK_THROWS_AS(rl::discounted_returns_into<double>(r, -0.1, g), Error);

  // Rollout T = 5, one env, gamma = 0.5, terminated at t = 2, next_values 10..50.
  const auto rewards = rollout<double>(5, 1, {1, 2, 3, 4, 5});
  const auto next = rollout<double>(5, 1, {10, 20, 30, 40, 50});
  const auto term = rollout<std::uint8_t>(5, 1, {0, 0, 1, 0, 0});
  const auto no_trunc = rollout<std::uint8_t>(5, 1, {0, 0, 0, 0, 0});
  Tensor<double, 2> out(Shape<2>{5, 1});
  rl::discounted_returns_into<double>(rewards.view(), next.view(), term.view(), no_trunc.view(), 0.5, out.view());
  // t=4: 5 + .5*50 = 30; t=3: 4 + .5*30 = 19; t=2: 3 (terminal); t=1: 2 + 1.5 = 3.5; t=0: 1 + 1.75 = 2.75.
  CHECK(out(4, 0) == 30.0);
  CHECK(out(3, 0) == 19.0);
  CHECK(out(2, 0) == 3.0);
  CHECK(out(1, 0) == 3.5);
  CHECK(out(0, 0) == 2.75);

  // n = 2: G0 = 1 + .5*2 + .25*next[1] = 7; G1 = 2 + .5*3 (window hits the termination) = 3.5;
  // G2 = 3; G3 = 4 + .5*5 + .25*next[4] = 19; G4 = 5 + .5*next[4] = 30 (rollout ends).
  rl::nstep_returns_into<double>(rewards.view(), next.view(), term.view(), no_trunc.view(), 0.5, 2, out.view());
  const double nstep_hand[5] = {7, 3.5, 3, 19, 30};
  for (index_t t = 0; t < 5; ++t) CHECK(out(t, 0) == nstep_hand[t]);
  // Truncation at t = 1 instead: G0 = 1 + .5*2 + .25*next[1] (bootstrap from the final obs value);
  // G1 = 2 + .5*next[1] = 12; G2 = 3 + .5*4 + .25*40 = 15.
  const auto trunc = rollout<std::uint8_t>(5, 1, {0, 1, 0, 0, 0});
  const auto no_term = no_trunc;
  rl::nstep_returns_into<double>(rewards.view(), next.view(), no_term.view(), trunc.view(), 0.5, 2, out.view());
  CHECK(out(0, 0) == 7.0);
  CHECK(out(1, 0) == 12.0);
  CHECK(out(2, 0) == 15.0);
  // n = 1 is the one-step TD target r + gamma * next.
  rl::nstep_returns_into<double>(rewards.view(), next.view(), no_term.view(), no_trunc.view(), 0.5, 1, out.view());
  for (index_t t = 0; t < 5; ++t) CHECK(out(t, 0) == rewards(t, 0) + 0.5 * next(t, 0));
  CHECK_THROWS_AS(rl::nstep_returns_into<double>(rewards.view(), next.view(), no_term.view(), no_trunc.view(), 0.5, 0,
                                                 out.view()),
                  Error);
}

TEST_CASE("advantage normalisation uses the unbiased standard deviation") {
  std::vector<double> a{1, 2, 3, 4};
  rl::normalize_advantages<double>(a, 0.0);
  const double sd = std::sqrt(5.0 / 3.0);  // sum of squares 5 over n - 1 = 3
  CHECK(a[0] == doctest::Approx(-1.5 / sd).epsilon(1e-12));
  CHECK(a[3] == doctest::Approx(1.5 / sd).epsilon(1e-12));
  Tensor<float, 2> t(Shape<2>{2, 2}, 3.f);
  rl::normalize_advantages(t.view());  // constant: zero after centring, eps keeps it finite
  for (float v : t) CHECK(v == 0.f);
  std::vector<double> one{1};
  CHECK_THROWS_AS(rl::normalize_advantages<double>(one), Error);
  std::vector<double> bad{1, NAN};
  CHECK_THROWS_AS(rl::normalize_advantages<double>(bad), Error);
}

TEST_CASE("epsilon schedules and epsilon-greedy selection") {
  const ex::LinearSchedule lin{1.0, 0.1, 10};
  CHECK(lin(0) == 1.0);
  CHECK(lin(5) == doctest::Approx(0.55));
  CHECK(lin(10) == doctest::Approx(0.1));
  CHECK(lin(1000) == doctest::Approx(0.1));
  CHECK_THROWS_AS((void)lin(-1), Error);
  const ex::ExponentialSchedule expo{1.0, 0.1, 10.0};
  CHECK(expo(0) == 1.0);
  CHECK(expo(10) == doctest::Approx(0.1 + 0.9 / std::exp(1.0)));
  CHECK(expo(1'000'000) == doctest::Approx(0.1));

  const std::vector<float> q{0.5f, 2.0f, 2.0f, -1.0f};
  PhiloxStream rng(12, 0);
  ex::EpsilonGreedy<ex::LinearSchedule> greedy(ex::LinearSchedule{0.0, 0.0, 1});
  for (int i = 0; i < 100; ++i) CHECK(greedy.select<float>(rng, q) == 1);  // ties: lowest index
  ex::EpsilonGreedy<ex::LinearSchedule> eg(ex::LinearSchedule{1.0, 0.2, 100});
  std::vector<int> counts(4, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[std::size_t(eg.select<float>(rng, q))];
  for (int c : counts) CHECK(std::abs(c - n / 4) < 300);  // eps = 1: uniform (sd ~ 61)
  eg.advance(100);
  CHECK(eg.epsilon() == doctest::Approx(0.2));
  std::fill(counts.begin(), counts.end(), 0);
  for (int i = 0; i < n; ++i) ++counts[std::size_t(eg.select<float>(rng, q))];
  CHECK(std::abs(counts[1] - int(n * (0.8 + 0.05))) < 300);  // greedy 0.8 + 0.2/4
  CHECK(std::abs(counts[3] - int(n * 0.05)) < 150);
  // Batched selection, one row per environment.
  Tensor<float, 2> qb(Shape<2>{3, 4});
  qb(0, 2) = 1.f;
  qb(1, 0) = 1.f;
  qb(2, 3) = 1.f;
  std::vector<int> actions(3);
  greedy.select_into<float>(rng, qb.view(), actions);
  CHECK(actions == std::vector<int>{2, 0, 3});
  const std::vector<float> nan_q{0.f, NAN};
  CHECK(error_of([&] { (void)greedy.select<float>(rng, nan_q); }).find("action value 1 is NaN") != std::string::npos);
  // The schedule position is the whole state: save/load restores it.
  io::SafetensorsWriter w;
  eg.save(w, "explore.");
  ex::EpsilonGreedy<ex::LinearSchedule> restored(ex::LinearSchedule{1.0, 0.2, 100});
  restored.load(io::SafetensorsReader::from_bytes(w.to_bytes()), "explore.");
  CHECK(restored.step() == 100);
  CHECK_THROWS_AS(eg.set_step(-5), Error);
}

TEST_CASE("Boltzmann exploration: softmax probabilities and sampling frequencies") {
  const std::vector<double> q{1.0, 2.0, 3.0};
  std::vector<double> p(3);
  ex::boltzmann_probabilities_into<double>(q, 1.0, p);
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  for (int i = 0; i < 3; ++i) CHECK(p[std::size_t(i)] == doctest::Approx(std::exp(i + 1.0) / z).epsilon(1e-12));
  ex::boltzmann_probabilities_into<double>(q, 2.0, p);
  CHECK(p[2] / p[1] == doctest::Approx(std::exp(0.5)));
  // Large values at a tiny temperature: no overflow, all mass on the maximum.
  const std::vector<double> big{1000.0, 1001.0};
  std::vector<double> pb(2);
  ex::boltzmann_probabilities_into<double>(big, 1e-3, pb);
  CHECK(pb[1] == 1.0);
  PhiloxStream rng(2, 9);
  std::vector<int> counts(3, 0);
  const int n = 30000;
  for (int i = 0; i < n; ++i) ++counts[std::size_t(ex::boltzmann_select<double>(rng, q, 1.0))];
  ex::boltzmann_probabilities_into<double>(q, 1.0, p);
  for (int i = 0; i < 3; ++i) CHECK(std::abs(counts[std::size_t(i)] - n * p[std::size_t(i)]) < 5 * std::sqrt(n * 0.25));
  CHECK_THROWS_AS((void)ex::boltzmann_select<double>(rng, q, 0.0), Error);
  CHECK_THROWS_AS(ex::boltzmann_probabilities_into<double>(q, -1.0, p), Error);
}

TEST_CASE("Gaussian action noise: moments, noise clip and action bounds") {
  PhiloxStream rng(31, 0);
  const ex::GaussianNoise noise{0.3};
  double s = 0, s2 = 0;
  const int n = 50000;
  for (int i = 0; i < n; ++i) {
    std::vector<double> a{1.0};
    noise.apply<double>(rng, a);
    s += a[0] - 1.0;
    s2 += (a[0] - 1.0) * (a[0] - 1.0);
  }
  CHECK(std::abs(s / n) < 0.01);                            // SE 0.0013
  CHECK(std::sqrt(s2 / n) == doctest::Approx(0.3).epsilon(0.02));
  const ex::GaussianNoise clipped{1.0, 0.5};
  const std::vector<float> low{-1.f, -1.f}, high{1.f, 0.2f};
  for (int i = 0; i < 1000; ++i) {
    std::vector<float> a{0.f, 0.f};
    clipped.apply<float>(rng, a, low, high);
    REQUIRE(std::abs(a[0]) <= 0.5f);  // |noise| <= noise_clip
    REQUIRE(a[1] <= 0.2f);            // then clipped into the box
  }
  const ex::GaussianNoise bad{-1.0};
  std::vector<float> a{0.f};
  CHECK_THROWS_AS(bad.apply<float>(rng, a), Error);
}

TEST_CASE("Ornstein-Uhlenbeck noise: stationary mean, variance and autocorrelation; reset; save/load") {
  // x <- x + theta (mu - x) dt + sigma sqrt(dt) N(0,1) is an AR(1) process with coefficient
  // rho = 1 - theta dt and stationary variance sigma^2 dt / (1 - rho^2).
  const ex::OrnsteinUhlenbeckConfig cfg{/*theta=*/0.5, /*sigma=*/0.2, /*dt=*/0.1, /*mu=*/0.3, /*x0=*/0.0};
  ex::OrnsteinUhlenbeck ou(2, cfg);
  PhiloxStream rng(77, 1);
  for (int i = 0; i < 2000; ++i) (void)ou.sample(rng);  // burn-in (rho^2000 ~ 0)
  const int n = 1'000'000;
  double s = 0, s2 = 0, lag = 0, prev = ou.state()(0);
  double cross = 0;
  for (int i = 0; i < n; ++i) {
    const auto x = ou.sample(rng);
    s += x(0);
    s2 += x(0) * x(0);
    lag += (x(0) - cfg.mu) * (prev - cfg.mu);
    cross += (x(0) - cfg.mu) * (x(1) - cfg.mu);
    prev = x(0);
  }
  const double rho = 1 - cfg.theta * cfg.dt;
  const double var = cfg.sigma * cfg.sigma * cfg.dt / (1 - rho * rho);
  const double mean = s / n;
  const double sample_var = s2 / n - mean * mean;
  // Effective sample size n (1 - rho) / (1 + rho) ~ 25,600: SE(mean) ~ 0.0013, SE(var)/var ~ 0.9%.
  CHECK(std::abs(mean - cfg.mu) < 0.008);
  CHECK(sample_var == doctest::Approx(var).epsilon(0.05));
  CHECK(lag / n / var == doctest::Approx(rho).epsilon(0.01));
  CHECK(std::abs(cross / n / var) < 0.05);  // components are independent
  // Save/load restores the state; reset returns to x0.
  io::SafetensorsWriter w;
  ou.save(w, "ou.");
  ex::OrnsteinUhlenbeck restored(2, cfg);
  restored.load(io::SafetensorsReader::from_bytes(w.to_bytes()), "ou.");
  PhiloxStream r1(3, 3), r2(3, 3);
  CHECK(ou.sample(r1)(1) == restored.sample(r2)(1));
  ou.reset();
  CHECK(ou.state()(0) == 0.0);
  std::vector<float> action{1.f, 1.f};
  ou.apply<float>(rng, action);
  CHECK(action[0] == static_cast<float>(1.0 + ou.state()(0)));
  std::vector<float> wrong{1.f};
  CHECK_THROWS_AS(ou.apply<float>(rng, wrong), Error);
  CHECK_THROWS_AS(ex::OrnsteinUhlenbeck(2, {0.5, -1.0}), Error);
}

namespace {
using SmallNet = nn::Model<nn::Sequential<nn::Linear<5>, nn::BatchNorm<5>, nn::ReLU, nn::Linear<2>>, float>;
using OtherNet = nn::Model<nn::Sequential<nn::Linear<6>, nn::BatchNorm<6>, nn::ReLU, nn::Linear<2>>, float>;

template <class Net>
Net make_net(std::uint64_t seed, float running_mean) {
  Net net;
  net.setup(Shape<2>{4, 3});
  PhiloxStream rng(seed, 0);
  net.initialize(rng);
  net.buffers([&](const std::string&, auto& b) {
    using V = typename std::remove_reference_t<decltype(b)>::value_type;
    fill(b, static_cast<V>(running_mean));
  });
  return net;
}

std::vector<float> flat_state(SmallNet& net) {
  std::vector<float> v;
  net.parameters([&](const std::string&, auto& p) { v.insert(v.end(), p.value.begin(), p.value.end()); });
  net.buffers([&](const std::string&, auto& b) {
    for (auto x : b) v.push_back(static_cast<float>(x));
  });
  return v;
}
std::vector<float> flat_params(SmallNet& net) {
  std::vector<float> v;
  net.parameters([&](const std::string&, auto& p) { v.insert(v.end(), p.value.begin(), p.value.end()); });
  return v;
}
}  // namespace

TEST_CASE("target sync: Polyak averaging and hard copies on a small nn module") {
  auto online = make_net<SmallNet>(1, 0.25f);
  auto target = make_net<SmallNet>(2, -4.0f);
  rl::sync::TargetPairs<float> pairs(online, target);
  CHECK(pairs.size() == 9);  // Linear, BatchNorm, Linear: weight + bias each; 3 BatchNorm buffers
  CHECK(pairs.parameter_numel() == (3 * 5 + 5) + (5 + 5) + (5 * 2 + 2));
  const auto o = flat_params(online);
  const auto t_before = flat_params(target);
  REQUIRE(o != t_before);
  pairs.polyak(0.25);
  const auto t_after = flat_params(target);
  for (std::size_t i = 0; i < o.size(); ++i)
    REQUIRE(t_after[i] == static_cast<float>(0.25 * double(o[i]) + 0.75 * double(t_before[i])));
  // Buffers (running statistics, the batch counter) are copied, not averaged.
  target.buffers([&](const std::string& name, auto& b) {
    using V = typename std::remove_reference_t<decltype(b)>::value_type;
    for (auto v : b) CHECK(v == static_cast<V>(0.25f));
    (void)name;
  });
  CHECK(flat_params(online) == o);  // the online network is never touched

  // Hard sync every 3 steps: only steps 3 and 6 copy.
  auto target2 = make_net<SmallNet>(3, 9.0f);
  rl::sync::TargetPairs<float> pairs2(online, target2);
  const rl::sync::Hard hard{3};
  int synced = 0;
  for (std::int64_t step = 1; step <= 6; ++step) {
    online.parameters([&](const std::string&, auto& p) { fill(p.value, float(step)); });
    const bool did = hard.update(pairs2, step);
    synced += did;
    if (did) CHECK(flat_state(target2) == flat_state(online));
    else CHECK(flat_params(target2) != flat_params(online));
  }
  CHECK(synced == 2);
  const rl::sync::Polyak every_other{0.5, 2};
  CHECK_FALSE(every_other.update(pairs2, 3));
  CHECK(every_other.update(pairs2, 4));

  // One-off helpers and errors.
  auto target3 = make_net<SmallNet>(4, 1.0f);
  rl::sync::hard_update<float>(target3, online);
  CHECK(flat_state(target3) == flat_state(online));
  rl::sync::polyak_update<float>(target3, online, 1.0);
  CHECK(flat_state(target3) == flat_state(online));
  CHECK_THROWS_AS(pairs.polyak(1.5), Error);
  auto other = make_net<OtherNet>(5, 0.f);
  CHECK(error_of([&] { rl::sync::TargetPairs<float>(online, other); }).find("has shape") != std::string::npos);
  CHECK_THROWS_AS(rl::sync::TargetPairs<float>(online, online), Error);  // a network is not its own target
}
