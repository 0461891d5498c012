// On-policy agents (include/rlmed/rl/agents/{on_policy,reinforce,a2c,a3c,ppo}.hpp): distribution
// gradients and the PPO loss against finite differences in double, loss terms on constructed
// cases, returns on a hand-computable environment, the act/observe protocol's errors, exact resume
// through rl::TrainLoop, and A3C's deterministic mode (bit-identical twice, independent of how the
// run is split, exact resume).
#include <doctest/doctest.h>

#include <unistd.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <vector>

#include "rlmed/env/classic/cartpole.hpp"
#include "rlmed/env/classic/pendulum.hpp"
#include "rlmed/nn/layers/activation.hpp"
#include "rlmed/nn/layers/linear.hpp"
#include "rlmed/rl/agents/a2c.hpp"
#include "rlmed/rl/agents/a3c.hpp"
#include "rlmed/rl/agents/ppo.hpp"
#include "rlmed/rl/agents/reinforce.hpp"
#include "rlmed/rl/train_loop.hpp"

using namespace rlmed;
namespace fs = std::filesystem;

namespace {

using Pi2 = nn::Sequential<nn::Linear<8>, nn::Tanh, nn::Linear<2>>;
using Pi1 = nn::Sequential<nn::Linear<8>, nn::Tanh, nn::Linear<1>>;
using Vf = nn::Sequential<nn::Linear<8>, nn::Tanh, nn::Linear<1>>;
using SmallNet = rl::Separate<Pi2, Vf>;
using SharedNet = rl::Shared<nn::Sequential<nn::Linear<8>, nn::Tanh, nn::Linear<3>>>;

double rel_err(double a, double b) { return std::abs(a - b) / std::max({1.0, std::abs(a), std::abs(b)}); }

// A deterministic toy: observation (step, 1), reward = step + 1, terminates (or, with
// `truncate`, is cut) after `length` steps. Returns are computable by hand.
struct Countdown {
  using observation_type = std::array<float, 2>;
  using action_type = int;
  using action_space_type = rl::Discrete<2>;
  static constexpr rl::Discrete<2> action_space() noexcept { return {}; }
  static rl::Box<2> observation_space() { return rl::Box<2>::uniform(-10.f, 10.f); }
  int length = 3;
  bool truncate = false;
  int nan_at = -1;  ///< >= 0: the reward of that step (counted over the env's life) is NaN
  int t = 0;
  int life = 0;
  observation_type reset(PhiloxStream&) {
    t = 0;
    return {0.f, 1.f};
  }
  rl::StepResult<observation_type> step(int a) {
    rl::Discrete<2>::validate(a);
    const double r = life++ == nan_at ? std::nan("") : t + 1.0;
    ++t;
    const bool end = t >= length;
    return {{static_cast<float>(t), 1.f}, r, end && !truncate, end && truncate};
  }
};
static_assert(rl::Environment<Countdown>);

template <class Agent, class Env>
void drive(Agent& agent, rl::VectorEnv<Env>& envs, int steps) {
  std::vector<typename Env::action_type> actions(static_cast<std::size_t>(envs.num_envs()));
  for (int s = 0; s < steps; ++s) {
    const auto obs = envs.observations();
    agent.act(std::span<const typename Env::observation_type>(obs), std::span<typename Env::action_type>(actions));
    const auto& step = envs.step(actions);
    agent.observe(std::span<const typename Env::observation_type>(obs), std::span<const typename Env::action_type>(actions), step);
    agent.update((s + 1) * envs.num_envs());
  }
}

template <class M>
std::vector<Tensor<typename M::value_type, 1>> snapshot(M& model) {
  std::vector<Tensor<typename M::value_type, 1>> out;
  model.parameters([&](const std::string&, auto& p) { out.push_back(Tensor<typename M::value_type, 1>::copy_of(p.value.flat())); });
  return out;
}
template <class T>
bool same_bits(const std::vector<Tensor<T, 1>>& a, const std::vector<Tensor<T, 1>>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!bitwise_equal(a[i], b[i])) return false;
  return true;
}

fs::path temp_dir(const char* tag) {
  auto d = fs::temp_directory_path() / (std::string("rlmed_onpolicy_") + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST_CASE("categorical log-prob and entropy: hand cases, gradients by finite differences, sampling") {
  rl::CategoricalPolicy<4, double> dist;
  // Uniform logits: log π = −log 4, H = log 4.
  Tensor<double, 2> z(Shape<2>{2, 4}, 0.7), a(Shape<2>{2, 1});
  a(0, 0) = 2;
  a(1, 0) = 0;
  Tensor<double, 1> lp(Shape<1>{2}), h(Shape<1>{2});
  dist.log_prob_entropy(z.view(), a.view(), lp.view(), h.view());
  CHECK(lp(0) == doctest::Approx(-std::log(4.0)).epsilon(1e-14));
  CHECK(h(1) == doctest::Approx(std::log(4.0)).epsilon(1e-14));
  // A hand case: z = (0, log 3) over two actions: p = (1/4, 3/4).
  rl::CategoricalPolicy<2, double> two;
  Tensor<double, 2> z2(Shape<2>{1, 2}), a2(Shape<2>{1, 1}, 1.0);
  z2(0, 1) = std::log(3.0);
  Tensor<double, 1> lp2(Shape<1>{1}), h2(Shape<1>{1});
  two.log_prob_entropy(z2.view(), a2.view(), lp2.view(), h2.view());
  CHECK(lp2(0) == doctest::Approx(std::log(0.75)).epsilon(1e-14));
  CHECK(h2(0) == doctest::Approx(-(0.25 * std::log(0.25) + 0.75 * std::log(0.75))).epsilon(1e-14));

  // Gradient of L = Σ_b g_b log π_b + e_b H_b with respect to the logits.
  const index_t B = 5;
  Tensor<double, 2> logits(Shape<2>{B, 4}), actions(Shape<2>{B, 1}), dlogits(Shape<2>{B, 4});
  Tensor<double, 1> g(Shape<1>{B}), e(Shape<1>{B}), lpb(Shape<1>{B}), hb(Shape<1>{B});
  PhiloxStream rng(11, 0);
  fill_normal(logits.view(), rng, 0.0, 2.0);
  fill_normal(g.view(), rng);
  fill_normal(e.view(), rng);
  for (index_t b = 0; b < B; ++b) actions(b, 0) = static_cast<double>(b % 4);
  dist.backward(logits.view(), actions.view(), g.view(), e.view(), dlogits.view());
  auto loss = [&] {
    dist.log_prob_entropy(logits.view(), actions.view(), lpb.view(), hb.view());
    double l = 0;
    for (index_t b = 0; b < B; ++b) l += g(b) * lpb(b) + e(b) * hb(b);
    return l;
  };
  double worst = 0;
  for (index_t i = 0; i < logits.size(); ++i) {
    const double x = logits.data()[i], step = 1e-6;
    logits.data()[i] = x + step;
    const double up = loss();
    logits.data()[i] = x - step;
    const double down = loss();
    logits.data()[i] = x;
    worst = std::max(worst, rel_err((up - down) / (2 * step), dlogits.data()[i]));
  }
  CHECK(worst < 1e-6);

  // Sampling frequencies follow softmax; the mode is the argmax (lowest index on ties).
  rl::CategoricalPolicy<3, float> d3;
  const float zz[3] = {0.f, std::log(2.f), std::log(2.f)};
  float stored[1];
  CHECK(d3.mode(zz, stored) == 1);
  PhiloxStream s(5, 1);
  int counts[3] = {0, 0, 0};
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) ++counts[d3.sample(zz, s, stored)];
  CHECK(counts[0] / double(draws) == doctest::Approx(0.2).epsilon(0.1));
  CHECK(counts[1] / double(draws) == doctest::Approx(0.4).epsilon(0.05));
  CHECK(s.position() == static_cast<std::uint64_t>(draws));  // one word per draw
  const float bad[3] = {0.f, std::nanf(""), 1.f};
  CHECK_THROWS_AS(d3.sample(bad, s, stored), Error);
}

TEST_CASE("diagonal Gaussian log-prob and entropy: hand case, mean and log-std gradients by finite differences") {
  using Dist = rl::DiagGaussianPolicy<2, float, double>;
  Dist dist(rl::Box<2>::uniform(-1.f, 1.f));
  // a = μ, σ = 1: log π = −log 2π (two dimensions), H = 1 + log 2π.
  Tensor<double, 2> mu(Shape<2>{1, 2}, 0.3), act(Shape<2>{1, 2}, 0.3);
  Tensor<double, 1> lp(Shape<1>{1}), h(Shape<1>{1});
  dist.log_prob_entropy(mu.view(), act.view(), lp.view(), h.view());
  CHECK(lp(0) == doctest::Approx(-std::log(2 * std::numbers::pi)).epsilon(1e-14));
  CHECK(h(0) == doctest::Approx(1 + std::log(2 * std::numbers::pi)).epsilon(1e-14));

  const index_t B = 4;
  Tensor<double, 2> mean(Shape<2>{B, 2}), actions(Shape<2>{B, 2}), dmean(Shape<2>{B, 2});
  Tensor<double, 1> g(Shape<1>{B}), e(Shape<1>{B}), lpb(Shape<1>{B}), hb(Shape<1>{B});
  PhiloxStream rng(3, 0);
  fill_normal(mean.view(), rng);
  fill_normal(actions.view(), rng);
  fill_normal(g.view(), rng);
  fill_normal(e.view(), rng);
  dist.log_std.value(0) = -0.4;
  dist.log_std.value(1) = 0.3;
  dist.log_std.zero_grad();
  dist.backward(mean.view(), actions.view(), g.view(), e.view(), dmean.view());
  auto loss = [&] {
    dist.log_prob_entropy(mean.view(), actions.view(), lpb.view(), hb.view());
    double l = 0;
    for (index_t b = 0; b < B; ++b) l += g(b) * lpb(b) + e(b) * hb(b);
    return l;
  };
  auto fd = [&](double& x) {
    const double x0 = x, step = 1e-6;
    x = x0 + step;
    const double up = loss();
    x = x0 - step;
    const double down = loss();
    x = x0;
    return (up - down) / (2 * step);
  };
  double worst = 0;
  for (index_t i = 0; i < mean.size(); ++i) worst = std::max(worst, rel_err(fd(mean.data()[i]), dmean.data()[i]));
  for (index_t j = 0; j < 2; ++j) worst = std::max(worst, rel_err(fd(dist.log_std.value(j)), dist.log_std.grad(j)));
  CHECK(worst < 1e-6);

  // Environment actions are clipped to the box; the stored sample is not.
  const double far[2] = {5.0, -5.0};
  double stored[2];
  const auto env_action = dist.mode(far, stored);
  CHECK(env_action[0] == 1.f);
  CHECK(env_action[1] == -1.f);
  CHECK(stored[0] == 5.0);
}

TEST_CASE("PPO clipped surrogate on a constructed case, and its gradient by finite differences") {
  // ratios r and advantages A chosen to hit every branch of min(r A, clip(r, 0.8, 1.2) A).
  const std::vector<double> r = {1.5, 1.5, 0.5, 0.5, 1.1};
  const std::vector<double> adv = {1.0, -1.0, 1.0, -1.0, 2.0};
  std::vector<double> old_lp(5, -0.7), lp(5), grad(5);
  for (int i = 0; i < 5; ++i) lp[i] = old_lp[i] + std::log(r[i]);
  const auto s = rl::clipped_surrogate<double>(lp, old_lp, adv, 0.2, grad);
  // terms: clipped 1.2, unclipped -1.5, unclipped 0.5, clipped -0.8, unclipped 2.2
  CHECK(s.loss == doctest::Approx(-(1.2 - 1.5 + 0.5 - 0.8 + 2.2) / 5).epsilon(1e-12));
  CHECK(grad[0] == 0.0);  // clipped from above with A > 0: no gradient
  CHECK(grad[1] == doctest::Approx(1.5 / 5).epsilon(1e-12));
  CHECK(grad[2] == doctest::Approx(-0.5 / 5).epsilon(1e-12));
  CHECK(grad[3] == 0.0);  // clipped from below with A < 0
  CHECK(grad[4] == doctest::Approx(-2.2 / 5).epsilon(1e-12));
  CHECK(s.clip_fraction == doctest::Approx(0.8));
  double kl = 0;
  for (double x : r) kl += (x - 1) - std::log(x);
  CHECK(s.approx_kl == doctest::Approx(kl / 5).epsilon(1e-12));

  // Finite differences at random points (away from the kinks with probability ~1).
  PhiloxStream rng(9, 0);
  std::vector<double> a(16), l(16), o(16), g(16);
  for (int i = 0; i < 16; ++i) {
    a[i] = rng.normal_double();
    o[i] = rng.normal_double();
    l[i] = o[i] + 0.4 * rng.normal_double();
  }
  rl::clipped_surrogate<double>(l, o, a, 0.2, g);
  double worst = 0;
  std::vector<double> scratch(16);
  for (int i = 0; i < 16; ++i) {
    const double x = l[i], h = 1e-7;
    l[i] = x + h;
    const double up = rl::clipped_surrogate<double>(l, o, a, 0.2, scratch).loss;
    l[i] = x - h;
    const double down = rl::clipped_surrogate<double>(l, o, a, 0.2, scratch).loss;
    l[i] = x;
    worst = std::max(worst, rel_err((up - down) / (2 * h), g[i]));
  }
  CHECK(worst < 1e-6);
  CHECK_THROWS_AS(rl::clipped_surrogate<double>(l, o, std::vector<double>(3), 0.2, g), Error);
}

TEST_CASE("value loss: plain and clipped (PPO2) on a constructed case") {
  const std::vector<double> v = {1.0, 2.0, 0.0}, ret = {0.0, 0.0, 1.0}, old = {0.9, 1.0, 0.5};
  std::vector<double> g(3);
  const double plain = rl::value_loss<double>(v, ret, {}, 0.0, g);
  CHECK(plain == doctest::Approx((1.0 + 4.0 + 1.0) / 3));
  CHECK(g[1] == doctest::Approx(2 * 2.0 / 3));
  // ε_v = 0.2: V^clip = (1.0, 1.2, 0.3); squared errors unclipped (1, 4, 1), clipped (1, 1.44, 0.49).
  const double clipped = rl::value_loss<double>(v, ret, old, 0.2, g);
  CHECK(clipped == doctest::Approx((1.0 + 4.0 + 1.0) / 3));  // max picks the unclipped everywhere
  const std::vector<double> v2 = {0.95, 1.5, 0.6};  // unclipped (0.9025, 2.25, 0.16), clipped (0.9025, 1.44, 0.16)
  const double c2 = rl::value_loss<double>(v2, ret, old, 0.2, g);
  CHECK(c2 == doctest::Approx((0.9025 + 2.25 + 0.16) / 3));
  CHECK(g[1] == doctest::Approx(2 * 1.5 / 3));          // the unclipped error is larger: its gradient
  CHECK(g[2] == doctest::Approx(2 * (0.6 - 1.0) / 3));  // |V − V_old| = 0.1 inside the clip: plain gradient
  // Env 2 moved 0.4 toward its return: V^clip = 0.7 has the larger error (0.09 > 0.01) and is
  // constant in V, so no gradient flows.
  const std::vector<double> v3 = {0.95, 1.5, 0.9};
  const double c3 = rl::value_loss<double>(v3, ret, old, 0.2, g);
  CHECK(c3 == doctest::Approx((0.9025 + 2.25 + 0.09) / 3));
  CHECK(g[2] == 0.0);
}

TEST_CASE("PPO's minibatch loss gradient matches finite differences through the networks (double)") {
  for (int shared = 0; shared < 2; ++shared) {
    rl::PPOConfig c;
    c.n_steps = 12;
    c.ent_coef = 0.05;
    c.clip_range_vf = 0.1;
    c.seed = 4;
    auto check = [&](auto& agent) {
      rl::VectorEnv<env::CartPole> envs({2, 8});
      envs.reset();
      using Obs = env::CartPole::observation_type;
      std::vector<int> actions(2);
      for (int s = 0; s < c.n_steps; ++s) {
        const auto obs = envs.observations();
        agent.act(std::span<const Obs>(obs), std::span<int>(actions));
        const auto& step = envs.step(actions);
        agent.observe(std::span<const Obs>(obs), std::span<const int>(actions), step);
      }
      agent.finish_rollout();
      // Move the policy away from the one that collected: ratios leave 1, clipping is active.
      PhiloxStream noise(21, 0);
      agent.model().parameters([&](const std::string&, auto& p) {
        for (auto& x : p.value) x += 0.3 * noise.normal_double();
      });
      std::vector<index_t> idx(24);
      for (index_t i = 0; i < 24; ++i) idx[static_cast<std::size_t>(i)] = i;
      typename std::remove_reference_t<decltype(agent)>::MinibatchResult res;
      REQUIRE(agent.loss_and_gradients(idx, 0.2, 0.1, res));
      CHECK(res.clip_fraction > 0);
      std::vector<double*> values;
      std::vector<double> grads;
      agent.model().parameters([&](const std::string&, auto& p) {
        for (index_t i = 0; i < p.value.size(); ++i) {
          values.push_back(p.value.data() + i);
          grads.push_back(p.grad.data()[i]);
        }
      });
      double worst = 0;
      for (std::size_t k = 0; k < values.size(); ++k) {
        const double x = *values[k], h = 1e-6;
        *values[k] = x + h;
        agent.loss_and_gradients(idx, 0.2, 0.1, res);
        const double up = res.loss;
        *values[k] = x - h;
        agent.loss_and_gradients(idx, 0.2, 0.1, res);
        const double down = res.loss;
        *values[k] = x;
        worst = std::max(worst, rel_err((up - down) / (2 * h), grads[k]));
      }
      CHECK(worst < 1e-6);
    };
    if (shared) {
      rl::PPO<env::CartPole, SharedNet, double> agent(c);
      check(agent);
    } else {
      rl::PPO<env::CartPole, SmallNet, double> agent(c);
      check(agent);
    }
  }
}

TEST_CASE("Gaussian PPO's loss gradient (means and log-std) matches finite differences") {
  rl::PPOConfig c;
  c.n_steps = 10;
  c.ent_coef = 0.01;
  c.seed = 2;
  rl::PPO<env::Pendulum, rl::Separate<Pi1, Vf>, double> agent(c);
  rl::VectorEnv<env::Pendulum> envs({2, 3});
  envs.reset();
  drive(agent, envs, 10 - 1);  // not full yet: update() does nothing
  CHECK(agent.updates() == 0);
  using Obs = env::Pendulum::observation_type;
  std::vector<env::Pendulum::action_type> actions(2);
  const auto obs = envs.observations();
  agent.act(std::span<const Obs>(obs), std::span<env::Pendulum::action_type>(actions));
  agent.observe(std::span<const Obs>(obs), std::span<const env::Pendulum::action_type>(actions), envs.step(actions));
  agent.finish_rollout();
  agent.model().dist.log_std.value(0) = -0.5;
  std::vector<index_t> idx(20);
  for (index_t i = 0; i < 20; ++i) idx[static_cast<std::size_t>(i)] = i;
  decltype(agent)::MinibatchResult res;
  REQUIRE(agent.loss_and_gradients(idx, 0.2, 0.0, res));
  std::vector<double*> values;
  std::vector<double> grads;
  agent.model().parameters([&](const std::string&, auto& p) {
    for (index_t i = 0; i < p.value.size(); ++i) {
      values.push_back(p.value.data() + i);
      grads.push_back(p.grad.data()[i]);
    }
  });
  double worst = 0;
  for (std::size_t k = 0; k < values.size(); ++k) {
    const double x = *values[k], h = 1e-6;
    *values[k] = x + h;
    agent.loss_and_gradients(idx, 0.2, 0.0, res);
    const double up = res.loss;
    *values[k] = x - h;
    agent.loss_and_gradients(idx, 0.2, 0.0, res);
    const double down = res.loss;
    *values[k] = x;
    worst = std::max(worst, rel_err((up - down) / (2 * h), grads[k]));
  }
  CHECK(worst < 1e-6);
}

TEST_CASE("rollout returns and REINFORCE returns on a hand-computable environment") {
  const double gamma = 0.9;
  // A2C with n_steps 4 on Countdown(length 3, terminated): rewards 1 2 3 | 1 ...
  rl::A2CConfig c;
  c.n_steps = 4;
  c.gamma = gamma;
  rl::A2C<Countdown, SmallNet, double> a2c(c);
  rl::VectorEnv<Countdown> envs({1, 0});
  envs.reset();
  drive(a2c, envs, 3);
  using Obs = Countdown::observation_type;
  std::vector<int> act(1);
  const auto obs = envs.observations();
  a2c.act(std::span<const Obs>(obs), std::span<int>(act));
  a2c.observe(std::span<const Obs>(obs), std::span<const int>(act), envs.step(act));
  a2c.finish_rollout();
  const auto& ro = a2c.rollout();
  // Values of the stored observations and of the observation after the rollout (obs (1, 1)).
  Tensor<double, 2> next(Shape<2>{1, 2});
  next(0, 0) = 1;
  next(0, 1) = 1;
  const double v_last = a2c.values_of(next.view())(0, 0);
  CHECK(ro.returns(3, 0) == doctest::Approx(1 + gamma * v_last).epsilon(1e-12));
  CHECK(ro.returns(2, 0) == doctest::Approx(3.0).epsilon(1e-12));
  CHECK(ro.returns(1, 0) == doctest::Approx(2 + gamma * 3).epsilon(1e-12));
  CHECK(ro.returns(0, 0) == doctest::Approx(1 + gamma * 2 + gamma * gamma * 3).epsilon(1e-12));
  CHECK(ro.advantages(0, 0) == doctest::Approx(ro.returns(0, 0) - ro.values(0, 0)).epsilon(1e-12));

  // Truncated episodes bootstrap from V(final observation) = V((3, 1)).
  rl::A2C<Countdown, SmallNet, double> a2c_cut(c);
  rl::VectorEnv<Countdown> cut({1, 0}, Countdown{3, true});
  cut.reset();
  drive(a2c_cut, cut, 3);
  const auto obs2 = cut.observations();
  a2c_cut.act(std::span<const Obs>(obs2), std::span<int>(act));
  a2c_cut.observe(std::span<const Obs>(obs2), std::span<const int>(act), cut.step(act));
  a2c_cut.finish_rollout();
  Tensor<double, 2> fin(Shape<2>{1, 2});
  fin(0, 0) = 3;
  fin(0, 1) = 1;
  const double v_fin = a2c_cut.values_of(fin.view())(0, 0);
  CHECK(a2c_cut.rollout().returns(2, 0) == doctest::Approx(3 + gamma * v_fin).epsilon(1e-12));

  // REINFORCE: one episode per update; the loss's policy term is −mean((G − V) log π).
  rl::ReinforceConfig rc;
  rc.gamma = gamma;
  rc.episodes_per_update = 2;
  rl::Reinforce<Countdown, SmallNet, double> reinforce(rc);
  rl::VectorEnv<Countdown> one({1, 0});
  one.reset();
  drive(reinforce, one, 3);
  CHECK(reinforce.pending_episodes() == 1);
  CHECK(reinforce.pending_steps() == 3);
  drive(reinforce, one, 3);
  CHECK(reinforce.updates() == 1);
  CHECK(reinforce.pending_steps() == 0);
  CHECK(std::isfinite(reinforce.last_stats().value_loss));
}

TEST_CASE("bad input: NaN rewards, actions out of range or not chosen, observation count mismatches") {
  rl::PPOConfig c;
  c.n_steps = 4;
  rl::PPO<env::CartPole, SmallNet> ppo(c);
  using Obs = env::CartPole::observation_type;
  std::vector<Obs> obs(2, Obs{0.01f, 0.f, 0.02f, 0.f});
  std::vector<int> actions(2);
  rl::VectorStep<Obs> step;
  step.resize(2);
  step.observation = obs;
  CHECK_THROWS_AS(ppo.observe(std::span<const Obs>(obs), std::span<const int>(actions), step), Error);  // no act yet
  ppo.act(std::span<const Obs>(obs), std::span<int>(actions));
  step.reward[1] = std::nan("");
  CHECK_THROWS_WITH_AS(ppo.observe(std::span<const Obs>(obs), std::span<const int>(actions), step),
                       doctest::Contains("reward of env 1 is nan"), Error);
  step.reward[1] = 1.0;
  std::vector<int> wrong = actions;
  wrong[0] = 7;
  CHECK_THROWS_WITH_AS(ppo.observe(std::span<const Obs>(obs), std::span<const int>(wrong), step),
                       doctest::Contains("outside Discrete<2>"), Error);
  wrong[0] = 1 - actions[0];
  CHECK_THROWS_WITH_AS(ppo.observe(std::span<const Obs>(obs), std::span<const int>(wrong), step),
                       doctest::Contains("not the one act() chose"), Error);
  ppo.observe(std::span<const Obs>(obs), std::span<const int>(actions), step);
  // The rollout was set up for 2 environments.
  std::vector<Obs> three(3, obs[0]);
  std::vector<int> a3(3);
  CHECK_THROWS_WITH_AS(ppo.act(std::span<const Obs>(three), std::span<int>(a3)), doctest::Contains("set up for 2"), Error);
  CHECK_THROWS_AS(ppo.act(std::span<const Obs>(obs), std::span<int>(a3)), Error);
  // Observation batch of the wrong width.
  Tensor<float, 2> wide(Shape<2>{2, 5});
  CHECK_THROWS_WITH_AS(ppo.values_of(wide.view()), doctest::Contains("expected [B, 4]"), Error);
  // NaN observations.
  std::vector<Obs> nan_obs = obs;
  nan_obs[1][2] = std::nanf("");
  CHECK_THROWS_WITH_AS(ppo.act(std::span<const Obs>(nan_obs), std::span<int>(actions)), doctest::Contains("is NaN"), Error);
  // Bad configurations.
  rl::PPOConfig bad;
  bad.clip_range = 0;
  CHECK_THROWS_AS((rl::PPO<env::CartPole, SmallNet>(bad)), Error);
  rl::A2CConfig bad2;
  bad2.gamma = 1.5;
  CHECK_THROWS_AS((rl::A2C<env::CartPole, SmallNet>(bad2)), Error);
  rl::A3CConfig bad3;
  bad3.workers = 0;
  CHECK_THROWS_AS((rl::A3C<env::CartPole, SmallNet>(bad3)), Error);

  // REINFORCE rejects the same inputs.
  rl::Reinforce<env::CartPole, SmallNet> reinforce(rl::ReinforceConfig{});
  reinforce.act(std::span<const Obs>(obs), std::span<int>(actions));
  step.reward[0] = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(reinforce.observe(std::span<const Obs>(obs), std::span<const int>(actions), step), Error);
}

namespace {

// Runs `total` steps through rl::TrainLoop; if `stop` > 0 the first loop stops (checkpoint) at
// `stop` and a fresh agent resumes from the checkpoint. Returns the final parameters and log.
template <class Agent, class Env, class Make>
std::pair<std::vector<Tensor<typename Agent::value_type, 1>>, std::string> loop_run(Make make, std::int64_t total,
                                                                                   std::int64_t stop, index_t envs,
                                                                                   const fs::path& dir) {
  rl::TrainConfig tc;
  tc.total_steps = total;
  tc.num_envs = envs;
  tc.seed = 17;
  tc.eval_every = 400;
  tc.eval_episodes = 2;
  tc.log_every = 200;
  tc.out_dir = dir;
  tc.progress = rl::ProgressMode::none;
  auto read_log = [&] {
    std::ifstream in(dir / "log.csv");
    std::string s, line;
    while (std::getline(in, line)) {
      // drop the wall-clock columns (rates and wall_s)
      std::size_t cut = line.size();
      for (int k = 0; k < 3; ++k) cut = line.rfind(',', cut - 1);
      s += line.substr(0, cut) + "\n";
    }
    return s;
  };
  if (stop <= 0) {
    auto agent = make();
    rl::TrainLoop<Env, Agent> loop(tc, *agent);
    loop.run();
    return {snapshot(agent->model()), read_log()};
  }
  {
    auto agent = make();
    rl::TrainConfig first = tc;
    first.stop_at_step = stop;
    rl::TrainLoop<Env, Agent> loop(first, *agent);
    const auto r = loop.run();
    REQUIRE(r.interrupted);
  }
  auto agent = make();
  rl::TrainLoop<Env, Agent> loop(tc, *agent);
  loop.resume(dir / "checkpoint.safetensors");
  loop.run();
  return {snapshot(agent->model()), read_log()};
}

}  // namespace

TEST_CASE("stop and resume through rl::TrainLoop is bit-identical (PPO discrete and Gaussian, A2C, REINFORCE)") {
  const auto dir = temp_dir("resume");
  SUBCASE("PPO CartPole") {
    using Agent = rl::PPO<env::CartPole, SmallNet>;
    auto make = [] {
      rl::PPOConfig c;
      c.n_steps = 64;
      c.batch_size = 32;
      c.n_epochs = 3;
      c.ent_coef = 0.01;
      c.anneal_steps = 2000;
      c.seed = 5;
      return std::make_unique<Agent>(c);
    };
    const auto a = loop_run<Agent, env::CartPole>(make, 1600, 0, 2, dir / "a");
    const auto b = loop_run<Agent, env::CartPole>(make, 1600, 700, 2, dir / "b");  // mid-rollout stop
    CHECK(same_bits(a.first, b.first));
    CHECK(a.second == b.second);
    const auto again = loop_run<Agent, env::CartPole>(make, 1600, 0, 2, dir / "c");
    CHECK(same_bits(a.first, again.first));
  }
  SUBCASE("PPO Pendulum (Gaussian)") {
    using Agent = rl::PPO<env::Pendulum, rl::Separate<Pi1, Vf>>;
    auto make = [] {
      rl::PPOConfig c;
      c.n_steps = 50;
      c.batch_size = 25;
      c.n_epochs = 2;
      c.clip_range_vf = 0.2;
      c.seed = 8;
      return std::make_unique<Agent>(c);
    };
    const auto a = loop_run<Agent, env::Pendulum>(make, 1200, 0, 2, dir / "a");
    const auto b = loop_run<Agent, env::Pendulum>(make, 1200, 530, 2, dir / "b");
    CHECK(same_bits(a.first, b.first));
    CHECK(a.second == b.second);
  }
  SUBCASE("A2C CartPole") {
    using Agent = rl::A2C<env::CartPole, SharedNet>;
    auto make = [] {
      rl::A2CConfig c;
      c.ent_coef = 0.01;
      c.seed = 6;
      return std::make_unique<Agent>(c);
    };
    const auto a = loop_run<Agent, env::CartPole>(make, 2000, 0, 4, dir / "a");
    const auto b = loop_run<Agent, env::CartPole>(make, 2000, 1004, 4, dir / "b");
    CHECK(same_bits(a.first, b.first));
    CHECK(a.second == b.second);
  }
  SUBCASE("REINFORCE CartPole") {
    using Agent = rl::Reinforce<env::CartPole, SmallNet>;
    auto make = [] {
      rl::ReinforceConfig c;
      c.episodes_per_update = 2;
      c.seed = 7;
      return std::make_unique<Agent>(c);
    };
    const auto a = loop_run<Agent, env::CartPole>(make, 2000, 0, 3, dir / "a");
    const auto b = loop_run<Agent, env::CartPole>(make, 2000, 999, 3, dir / "b");
    CHECK(same_bits(a.first, b.first));
    CHECK(a.second == b.second);
  }
  fs::remove_all(dir);
}

TEST_CASE("A3C deterministic mode: bit-identical twice, independent of how the run is split, exact resume") {
  rl::A3CConfig c;
  c.workers = 3;
  c.t_max = 5;
  c.deterministic = true;
  c.seed = 12;
  using Agent = rl::A3C<env::CartPole, SmallNet>;
  Agent one(c), two(c), split(c);
  one.train(120);
  two.train(120);
  split.train(7);
  split.train(50);
  split.train(63);
  CHECK(one.updates() == 120);
  CHECK(one.env_steps() == 600);
  CHECK(same_bits(snapshot(one.shared_model()), snapshot(two.shared_model())));
  CHECK(same_bits(snapshot(one.shared_model()), snapshot(split.shared_model())));
  CHECK(one.episodes() == split.episodes());
  CHECK(one.episodes() > 0);

  // Resume: checkpoint after 57 updates (in memory), load into a fresh agent, run 63 more.
  Agent first(c);
  first.train(57);
  io::SafetensorsWriter w;
  first.save(w, "a3c.");
  const auto r = io::SafetensorsReader::from_bytes(w.to_bytes());
  Agent resumed(c);
  resumed.load(r, "a3c.");
  resumed.train(63);
  CHECK(same_bits(snapshot(one.shared_model()), snapshot(resumed.shared_model())));
  for (int k = 0; k < 3; ++k) CHECK(same_bits(snapshot(one.worker_model(k)), snapshot(resumed.worker_model(k))));

  // The workers really do differ from each other (own streams and environments).
  CHECK_FALSE(same_bits(snapshot(one.worker_model(0)), snapshot(one.worker_model(1))));

  // Asynchronous mode applies exactly the requested number of updates.
  c.deterministic = false;
  Agent async(c);
  const auto info = async.train(90);
  CHECK(info.updates == 90);
  CHECK(async.updates() == 90);
  CHECK(std::isfinite(info.mean_loss));

  // A checkpoint of another worker count is refused and changes nothing.
  rl::A3CConfig c4 = c;
  c4.workers = 4;
  Agent four(c4);
  const auto before = snapshot(four.shared_model());
  CHECK_THROWS_WITH_AS(four.load(r, "a3c."), doctest::Contains("3 workers"), Error);
  CHECK(same_bits(before, snapshot(four.shared_model())));
}

TEST_CASE("A3C: a worker's error reaches the caller in both modes; the counters keep the applied updates") {
  for (bool deterministic : {true, false}) {
    rl::A3CConfig c;
    c.workers = 2;
    c.deterministic = deterministic;
    rl::A3C<Countdown, SmallNet> agent(c, Countdown{3, false, 42});
    CHECK_THROWS_WITH_AS(agent.train(1000), doctest::Contains("A3C worker environment"), Error);
    CHECK(agent.updates() < 1000);
    CHECK(agent.updates() >= 8);  // 42 steps of either worker cover 8 updates of 5 steps
  }
}

TEST_CASE("A3CTrainLoop: evaluation, log and stop/resume equal to an uninterrupted run") {
  const auto dir = temp_dir("a3c_loop");
  rl::A3CConfig c;
  c.workers = 2;
  c.deterministic = true;
  c.seed = 3;
  using Agent = rl::A3C<env::CartPole, SmallNet>;
  rl::TrainConfig tc;
  tc.total_steps = 3000;
  tc.seed = 1;
  tc.eval_every = 1000;
  tc.eval_episodes = 3;
  tc.log_every = 500;
  tc.progress = rl::ProgressMode::none;
  tc.out_dir = dir / "a";
  Agent a(c);
  const auto ra = rl::A3CTrainLoop<env::CartPole, Agent>(tc, a).run();
  CHECK(ra.env_steps == 3000);
  CHECK(ra.evaluations.size() == 3);
  CHECK(fs::exists(dir / "a" / "log.csv"));

  tc.out_dir = dir / "b";
  {
    Agent b(c);
    rl::TrainConfig stop = tc;
    stop.stop_at_step = 1230;
    const auto rb = rl::A3CTrainLoop<env::CartPole, Agent>(stop, b).run();
    CHECK(rb.interrupted);
  }
  Agent b(c);
  rl::A3CTrainLoop<env::CartPole, Agent> loop(tc, b);
  loop.resume(dir / "b" / "checkpoint.safetensors");
  const auto rb = loop.run();
  CHECK(rb.env_steps == 3000);
  CHECK(same_bits(snapshot(a.shared_model()), snapshot(b.shared_model())));
  REQUIRE(rb.last_eval.has_value());
  CHECK(rb.last_eval->mean_return == ra.last_eval->mean_return);
  fs::remove_all(dir);
}
