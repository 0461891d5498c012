// Off-policy continuous control (DDPG, TD3, SAC): the squashed-Gaussian log-probability against an
// independent change-of-variables formula and finite differences; the temperature loss gradient
// and the direction α moves; the SAC and TD3 actor gradients through the critics by finite
// differences (double); TD3's clipped target smoothing, clipped double-Q and bootstrap targets on
// constructed cases; critic loss and gradient; action scaling; delayed actor updates; bit-exact
// determinism, resume exactness through the shared training loop (SAC, TD3, DDPG with its OU
// state); bad inputs → rlmed::Error with nothing changed.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numbers>
#include <random>
#include <vector>

#include "rlmed/env/classic/pendulum.hpp"
#include "rlmed/rl/agents/ddpg.hpp"
#include "rlmed/rl/agents/sac.hpp"
#include "rlmed/rl/agents/td3.hpp"
#include "rlmed/rl/replay/prioritized.hpp"
#include "rlmed/rl/train_loop.hpp"

using namespace rlmed;
namespace ag = rlmed::rl::agents;
namespace fs = std::filesystem;

namespace {

using SacActor = nn::Sequential<nn::Linear<16>, nn::ReLU, nn::GaussianPolicyHead<1>>;
using DetActor = nn::Sequential<nn::Linear<16>, nn::ReLU, nn::Linear<1>, nn::Tanh>;
using Critic = nn::Sequential<nn::Linear<16>, nn::ReLU, nn::Linear<1>>;
using Sac = ag::SAC<env::Pendulum, SacActor, Critic>;
using Td3 = ag::TD3<env::Pendulum, DetActor, Critic>;
using Ddpg = ag::DDPG<env::Pendulum, DetActor, Critic>;

static_assert(rl::Agent<Sac, env::Pendulum>);
static_assert(rl::Agent<Td3, env::Pendulum>);
static_assert(rl::Agent<Ddpg, env::Pendulum>);
static_assert(Td3::num_critics == 2 && Ddpg::num_critics == 1 && Sac::Critics::size == 2);

ag::SacConfig small_sac(std::uint64_t seed = 5) {
  ag::SacConfig c;
  c.batch_size = 32;
  c.buffer_capacity = 2'000;
  c.random_steps = 100;
  c.learning_starts = 100;
  c.actor_lr = c.critic_lr = c.alpha_lr = 1e-3;
  c.seed = seed;
  return c;
}
ag::Td3Config small_td3(std::uint64_t seed = 5) {
  ag::Td3Config c = ag::td3_defaults();
  c.batch_size = 32;
  c.buffer_capacity = 2'000;
  c.random_steps = 100;
  c.learning_starts = 100;
  c.seed = seed;
  return c;
}
ag::DdpgConfig small_ddpg(std::uint64_t seed = 5) {
  ag::DdpgConfig c = ag::ddpg_defaults();
  c.batch_size = 32;
  c.buffer_capacity = 2'000;
  c.learning_starts = 100;
  c.seed = seed;
  return c;
}

template <class Agent>
std::vector<std::byte> state_bytes(const Agent& agent) {
  io::SafetensorsWriter w;
  agent.save(w, "");
  return w.to_bytes();
}

rl::TrainConfig loop_config(std::int64_t steps, const fs::path& out, std::int64_t stop_at = 0) {
  rl::TrainConfig tc;
  tc.total_steps = steps;
  tc.seed = 11;
  tc.eval_every = 200;
  tc.eval_episodes = 2;
  tc.log_every = 100;
  tc.out_dir = out;
  tc.stop_at_step = stop_at;
  tc.progress = rl::ProgressMode::none;
  return tc;
}

fs::path temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("rlmed_test_rl_ac_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

double rel_error(double a, double b) { return std::abs(a - b) / std::max({std::abs(a), std::abs(b), 1e-12}); }

}  // namespace

// ------------------------------------------------------------------------------------------------
TEST_CASE("squashed Gaussian log-probability: change of variables, evaluation mode, finite differences") {
  nn::GaussianPolicyHeadModule<2, double> head(3);
  PhiloxStream init(3, 0);
  head.initialize(init);
  Tensor<double, 2> x(Shape<2>{4, 3});
  PhiloxStream xr(4, 0);
  fill_normal(x.view(), xr);
  PhiloxStream noise(8, 1);
  const PhiloxStream noise_start = noise;
  nn::Context ctx;
  ctx.rng = &noise;
  nn::GaussianPolicyHeadModule<2, double>::Cache cache;
  const auto y = head.forward(ctx, x.view(), cache);  // [4, 5] = (a, mean, log pi)
  const double half_log_2pi = 0.5 * std::log(2.0 * std::numbers::pi);
  for (index_t b = 0; b < 4; ++b) {
    double expected = 0;
    for (index_t j = 0; j < 2; ++j) {
      // mean and log-std straight from the two linear layers' weights
      double mu = head.mean.bias.value(j), ls = head.log_std.bias.value(j);
      for (index_t k = 0; k < 3; ++k) {
        mu += head.mean.weight.value(j, k) * x(b, k);
        ls += head.log_std.weight.value(j, k) * x(b, k);
      }
      CHECK(y(b, 2 + j) == doctest::Approx(mu).epsilon(1e-12));
      const double a = y(b, j), sigma = std::exp(ls);
      REQUIRE(std::abs(a) < 1.0);
      // density of a = tanh(u), u ~ N(mu, sigma^2): N(atanh(a); mu, sigma) / (1 - a^2)
      const double u = std::atanh(a), z = (u - mu) / sigma;
      expected += -0.5 * z * z - std::log(sigma) - half_log_2pi - std::log(1.0 - a * a + 1e-6);
    }
    CHECK(rel_error(y(b, 4), expected) < 1e-8);
  }

  // evaluation: a = tanh(mean), no random numbers drawn
  nn::Context eval;
  eval.training = false;
  PhiloxStream untouched(8, 1);
  eval.rng = &untouched;
  nn::GaussianPolicyHeadModule<2, double>::Cache eval_cache;
  const auto ye = head.forward(eval, x.view(), eval_cache);
  for (index_t b = 0; b < 4; ++b)
    for (index_t j = 0; j < 2; ++j) CHECK(ye(b, j) == doctest::Approx(std::tanh(ye(b, 2 + j))).epsilon(1e-14));
  CHECK(untouched.position() == 0);

  // d log pi / d(x, parameters) by central differences at a fixed noise position
  auto logp_sum = [&]() {
    noise = noise_start;
    nn::GaussianPolicyHeadModule<2, double>::Cache c;
    const auto out = head.forward(ctx, x.view(), c);
    double s = 0;
    for (index_t b = 0; b < 4; ++b) s += (b + 1.0) * out(b, 4);
    return s;
  };
  noise = noise_start;
  nn::zero_grad(head);
  nn::GaussianPolicyHeadModule<2, double>::Cache c;
  const auto out = head.forward(ctx, x.view(), c);
  Tensor<double, 2> dy(out.shape());
  for (index_t b = 0; b < 4; ++b) dy(b, 4) = b + 1.0;
  const auto dx = head.backward(ctx, c, dy.view());
  Tensor<double, 2> dx_copy = Tensor<double, 2>::copy_of(dx);
  const double h = 1e-6;
  for (index_t i = 0; i < x.size(); ++i) {
    const double keep = x.data()[i];
    x.data()[i] = keep + h;
    const double lp = logp_sum();
    x.data()[i] = keep - h;
    const double lm = logp_sum();
    x.data()[i] = keep;
    CHECK(rel_error(dx_copy.data()[i], (lp - lm) / (2 * h)) < 1e-6);
  }
  head.parameters([&](const std::string& name, auto& p) {
    for (index_t i = 0; i < p.value.size(); ++i) {
      const double keep = p.value.data()[i];
      p.value.data()[i] = keep + h;
      const double lp = logp_sum();
      p.value.data()[i] = keep - h;
      const double lm = logp_sum();
      p.value.data()[i] = keep;
      INFO(name, "[", i, "]");
      CHECK(rel_error(p.grad.data()[i], (lp - lm) / (2 * h)) < 1e-6);
    }
  });
}

TEST_CASE("SAC temperature: loss gradient by finite differences, alpha rises when entropy is too low") {
  const std::vector<double> logp{-0.3, 0.8, 1.7, -2.0};
  const double target = -1.0, log_alpha = 0.37;
  const auto t = ag::sac_temperature_loss<double>(log_alpha, logp, target);
  // mean(log pi + target) = (−0.3 + 0.8 + 1.7 − 2.0)/4 − 1 = −0.95
  CHECK(t.grad_log_alpha == doctest::Approx(0.95).epsilon(1e-14));
  CHECK(t.loss == doctest::Approx(-log_alpha * -0.95).epsilon(1e-14));
  const double h = 1e-6;
  const double fd = (ag::sac_temperature_loss<double>(log_alpha + h, logp, target).loss -
                     ag::sac_temperature_loss<double>(log_alpha - h, logp, target).loss) /
                    (2 * h);
  CHECK(rel_error(t.grad_log_alpha, fd) < 1e-8);

  // a low-entropy policy (log pi well above −H̄) makes the gradient negative: α must grow
  ag::Temperature<float> temp;
  temp.log_alpha.value(0) = 0.0f;
  auto adam = ag::make_optimizer<nn::optim::Adam, float>(temp, 1e-2);
  const std::vector<float> confident{3.0f, 2.5f, 4.0f};
  const auto up = ag::sac_temperature_loss<float>(0.0, confident, -1.0);
  CHECK(up.grad_log_alpha < 0);
  temp.log_alpha.grad(0) = static_cast<float>(up.grad_log_alpha);
  adam.step();
  CHECK(temp.log_alpha.value(0) > 0.0f);
  CHECK_THROWS_AS(ag::sac_temperature_loss<double>(0.0, std::vector<double>{}, -1.0), Error);
  CHECK_THROWS_AS(ag::sac_temperature_loss<double>(0.0, std::vector<double>{NAN}, -1.0), Error);
}

TEST_CASE("SAC actor gradient through twin critics and the squashed head matches finite differences") {
  using Actor = nn::Model<nn::Sequential<nn::Linear<8>, nn::Tanh, nn::GaussianPolicyHead<2>>, double>;
  using Critics = ag::CriticEnsemble<nn::Sequential<nn::Linear<8>, nn::Tanh, nn::Linear<1>>, double, 2>;
  Actor actor;
  actor.setup(Shape<2>{1, 3});
  Critics critics(3, 2);
  PhiloxStream init(21, 0);
  actor.initialize(init);
  critics.initialize(init);
  Tensor<double, 2> obs(Shape<2>{6, 3});
  PhiloxStream xr(22, 0);
  fill_normal(obs.view(), xr);
  const double alpha = 0.3;
  const PhiloxStream noise_start(23, 3);
  PhiloxStream noise = noise_start;
  nn::Context ctx;
  ctx.rng = &noise;
  ctx.input_grad = false;

  auto objective = [&](bool with_grad) {
    noise = noise_start;
    Actor::Cache cache;
    const auto pi = actor.forward(ctx, obs.view(), cache);
    Tensor<double, 2> act(Shape<2>{6, 2});
    std::vector<double> logp(6);
    for (index_t b = 0; b < 6; ++b) {
      act(b, 0) = pi(b, 0);
      act(b, 1) = pi(b, 1);
      logp[static_cast<std::size_t>(b)] = pi(b, 4);
    }
    const auto q = critics.forward(ctx, obs.view(), act.view());
    Tensor<double, 2> dq;
    const double j = ag::sac_actor_loss_into<double>(q, logp, alpha, dq);
    if (with_grad) {
      nn::zero_grad(actor);
      const auto dact = critics.backward(ctx, dq.view(), true);
      Tensor<double, 2> dpi;
      ag::sac_policy_output_grad_into<double>(dact, alpha, dpi);
      actor.backward(ctx, cache, dpi.view());
    }
    return j;
  };
  // J by hand on the same forward: mean(α log π − min(Q1, Q2))
  objective(true);
  const double h = 1e-6;
  int checked = 0;
  actor.parameters([&](const std::string& name, auto& p) {
    for (index_t i = 0; i < p.value.size(); ++i) {
      const double keep = p.value.data()[i];
      p.value.data()[i] = keep + h;
      const double jp = objective(false);
      p.value.data()[i] = keep - h;
      const double jm = objective(false);
      p.value.data()[i] = keep;
      INFO(name, "[", i, "] analytic ", p.grad.data()[i], " numeric ", (jp - jm) / (2 * h));
      CHECK(std::abs(p.grad.data()[i] - (jp - jm) / (2 * h)) <= 1e-6 * std::max(1.0, std::abs(p.grad.data()[i])));
      ++checked;
    }
  });
  CHECK(checked > 50);

  // the loss itself on a constructed case: critic 1 is the minimum in sample 0, critic 0 in sample 1
  Tensor<double, 2> q(Shape<2>{2, 2});
  q(0, 0) = 2.0;
  q(1, 0) = 1.5;
  q(0, 1) = -1.0;
  q(1, 1) = 0.5;
  Tensor<double, 2> dq;
  const double j = ag::sac_actor_loss_into<double>(q.view(), std::vector<double>{0.2, -0.4}, 0.5, dq);
  CHECK(j == doctest::Approx(((0.5 * 0.2 - 1.5) + (0.5 * -0.4 + 1.0)) / 2).epsilon(1e-14));
  CHECK(dq(0, 0) == 0.0);
  CHECK(dq(1, 0) == -0.5);
  CHECK(dq(0, 1) == -0.5);
  CHECK(dq(1, 1) == 0.0);
}

TEST_CASE("TD3 actor gradient −mean Q0(s, π(s)) through the first critic matches finite differences") {
  using Actor = nn::Model<nn::Sequential<nn::Linear<8>, nn::Tanh, nn::Linear<2>, nn::Tanh>, double>;
  using Critics = ag::CriticEnsemble<nn::Sequential<nn::Linear<8>, nn::Tanh, nn::Linear<1>>, double, 2>;
  Actor actor;
  actor.setup(Shape<2>{1, 3});
  Critics critics(3, 2);
  PhiloxStream init(31, 0);
  actor.initialize(init);
  critics.initialize(init);
  Tensor<double, 2> obs(Shape<2>{5, 3});
  PhiloxStream xr(32, 0);
  fill_normal(obs.view(), xr);
  nn::Context ctx;
  ctx.input_grad = false;
  auto objective = [&](bool with_grad) {
    Actor::Cache cache;
    const auto mu = actor.forward(ctx, obs.view(), cache);
    const auto q = critics.forward(ctx, obs.view(), mu);
    Tensor<double, 2> dq(q.shape());
    double j = 0;
    for (index_t b = 0; b < 5; ++b) {
      j -= q(0, b) / 5.0;
      dq(0, b) = -1.0 / 5.0;
    }
    if (with_grad) {
      nn::zero_grad(actor);
      actor.backward(ctx, cache, critics.backward(ctx, dq.view(), true));
    }
    return j;
  };
  objective(true);
  const double h = 1e-6;
  actor.parameters([&](const std::string& name, auto& p) {
    for (index_t i = 0; i < p.value.size(); ++i) {
      const double keep = p.value.data()[i];
      p.value.data()[i] = keep + h;
      const double jp = objective(false);
      p.value.data()[i] = keep - h;
      const double jm = objective(false);
      p.value.data()[i] = keep;
      INFO(name, "[", i, "]");
      CHECK(std::abs(p.grad.data()[i] - (jp - jm) / (2 * h)) <= 1e-6 * std::max(1.0, std::abs(p.grad.data()[i])));
    }
  });
}

TEST_CASE("TD3 targets on a constructed case: clipped smoothing noise, clipped double-Q, bootstrap") {
  // μ' + clip(ε, −0.5, 0.5), then clip to [−1, 1]
  Tensor<float, 2> mu(Shape<2>{4, 1}), eps(Shape<2>{4, 1}), out(Shape<2>{4, 1});
  const float m[] = {0.9f, -0.95f, 0.0f, 0.3f}, e[] = {0.7f, -0.2f, -0.6f, 0.1f};
  for (index_t i = 0; i < 4; ++i) {
    mu(i, 0) = m[i];
    eps(i, 0) = e[i];
  }
  ag::smoothed_target_actions_into<float>(mu.view(), eps.view(), 0.5, out.view());
  CHECK(out(0, 0) == 1.0f);              // 0.9 + 0.5 (noise clipped) → 1.4 → 1
  CHECK(out(1, 0) == -1.0f);             // −0.95 − 0.2 → −1.15 → −1
  CHECK(out(2, 0) == doctest::Approx(-0.5f));  // noise −0.6 clipped to −0.5
  CHECK(out(3, 0) == doctest::Approx(0.4f));   // unclipped
  // noise clip 0: the target actions are the target policy's
  ag::smoothed_target_actions_into<float>(mu.view(), eps.view(), 0.0, out.view());
  for (index_t i = 0; i < 4; ++i) CHECK(out(i, 0) == mu(i, 0));
  eps(2, 0) = NAN;
  CHECK_THROWS_AS(ag::smoothed_target_actions_into<float>(mu.view(), eps.view(), 0.5, out.view()), Error);

  // y = r + γ^n (1 − d) min(Q1', Q2')
  Tensor<float, 2> q(Shape<2>{2, 3});
  const float q1[] = {1.0f, 5.0f, -2.0f}, q2[] = {3.0f, 4.0f, -1.0f};
  for (index_t b = 0; b < 3; ++b) {
    q(0, b) = q1[b];
    q(1, b) = q2[b];
  }
  Tensor<float, 1> v(Shape<1>{3}), y(Shape<1>{3});
  ag::min_over_critics_into<float>(q.view(), v.view());
  CHECK(v(0) == 1.0f);
  CHECK(v(1) == 4.0f);
  CHECK(v(2) == -2.0f);
  Tensor<float, 1> r(Shape<1>{3}), done(Shape<1>{3});
  Tensor<std::int32_t, 1> n(Shape<1>{3});
  r(0) = 0.5f;
  r(1) = -1.0f;
  r(2) = 2.0f;
  done(1) = 1.0f;
  n(0) = 1;
  n(1) = 1;
  n(2) = 3;
  ag::bootstrap_targets_into<float>(r.view(), done.view(), n.view(), v.view(), 0.9, y.view());
  CHECK(y(0) == doctest::Approx(0.5 + 0.9 * 1.0));
  CHECK(y(1) == doctest::Approx(-1.0));                 // terminal: no bootstrap
  CHECK(y(2) == doctest::Approx(2.0 + 0.729 * -2.0));  // 3-step transition: γ³
}

TEST_CASE("critic loss and gradient on a constructed case; weighted; NaN is an error") {
  Tensor<double, 2> q(Shape<2>{2, 2});
  q(0, 0) = 1.0;
  q(1, 0) = 2.0;
  q(0, 1) = 0.0;
  q(1, 1) = -1.0;
  Tensor<double, 1> y(Shape<1>{2});
  y(0) = 1.5;
  y(1) = 1.0;
  Tensor<double, 2> dq;
  Tensor<float, 1> td;
  // scale 1: Σ_i mean_b (q − y)² = ((−.5)² + 1²)/2 + (.5² + 2²)/2 = 0.625 + 2.125
  const double l = ag::critic_loss_into<double>(q.view(), y.view(), {}, 1.0, dq, td);
  CHECK(l == doctest::Approx(2.75));
  CHECK(dq(0, 0) == doctest::Approx(2 * -0.5 / 2));
  CHECK(dq(1, 1) == doctest::Approx(2 * -2.0 / 2));
  CHECK(td(0) == doctest::Approx(0.5));
  CHECK(td(1) == doctest::Approx(1.5));
  const std::vector<float> w{2.0f, 0.0f};
  const double lw = ag::critic_loss_into<double>(q.view(), y.view(), w, 0.5, dq, td);
  CHECK(lw == doctest::Approx(0.5 * 2.0 * (0.25 + 0.25) / 2));
  CHECK(dq(0, 1) == 0.0);
  q(1, 1) = NAN;
  CHECK_THROWS_AS(ag::critic_loss_into<double>(q.view(), y.view(), {}, 1.0, dq, td), Error);
}

TEST_CASE("action scaling between [-1, 1] and the action box") {
  const ag::ActionScale<1> scale(env::Pendulum::action_space());
  const std::vector<float> policy{-1.0f, 0.0f, 0.25f, 1.0f};
  for (float u : policy) {
    float a = 0, back = 0;
    scale.to_env(std::span<const float>(&u, 1), std::span<float>(&a, 1));
    CHECK(a == doctest::Approx(2.0 * u));
    scale.to_policy(std::span<const float>(&a, 1), std::span<float>(&back, 1));
    CHECK(back == doctest::Approx(u));
  }
  float over = 3.0f, sink = 0;
  CHECK_THROWS_AS(scale.to_policy(std::span<const float>(&over, 1), std::span<float>(&sink, 1)), Error);
  CHECK_THROWS_AS(ag::ActionScale<1>(rl::Box<1>()), Error);  // unbounded
}

TEST_CASE("TD3 updates the actor every policy_delay critic steps; DDPG every step with one critic") {
  Td3 td3(small_td3());
  Ddpg ddpg(small_ddpg());
  env::Pendulum e;
  PhiloxStream rng(1, 9);
  auto obs = e.reset(rng);
  for (int t = 0; t < 160; ++t) {
    const auto a = td3.act(obs);
    const auto b = ddpg.act(obs);
    auto r = e.step(a);
    td3.observe(obs, a, r.reward, r.observation, r.terminated, r.truncated);
    ddpg.observe(obs, b, r.reward, r.observation, r.terminated, r.truncated);
    td3.update(td3.env_steps());
    ddpg.update(ddpg.env_steps());
    obs = r.done() ? e.reset(rng) : r.observation;
  }
  CHECK(td3.updates() == 61);  // steps 100..160
  CHECK(td3.actor_updates() == 30);
  CHECK(ddpg.updates() == 61);  // learning_starts 100 in small_ddpg
  CHECK(ddpg.actor_updates() == ddpg.updates());
}

TEST_CASE("SAC: learns α toward the target entropy and stays finite on a short run; PER replay works") {
  Sac agent(small_sac());
  CHECK(agent.alpha() == doctest::Approx(1.0));
  CHECK(agent.target_entropy() == -1.0);
  env::Pendulum e;
  PhiloxStream rng(2, 9);
  auto obs = e.reset(rng);
  ag::OffPolicyStats last;
  for (int t = 0; t < 300; ++t) {
    const auto a = agent.act(obs);
    CHECK(std::abs(a[0]) <= 2.0f);
    auto r = e.step(a);
    agent.observe(obs, a, r.reward, r.observation, r.terminated, r.truncated);
    const auto info = agent.update(agent.env_steps());
    if (info.gradient_steps > 0) {
      last = agent.last_stats();
      CHECK(std::isfinite(info.loss));
      CHECK(info.exploration == doctest::Approx(last.entropy));
    }
    obs = r.done() ? e.reset(rng) : r.observation;
  }
  CHECK(agent.updates() == 201);
  CHECK(std::isfinite(last.critic_loss));
  CHECK(agent.alpha() < 1.0);  // entropy of the initial policy exceeds −|A|: α decreases

  using PerSac = ag::SAC<env::Pendulum, SacActor, Critic, rl::replay::Prioritized<float, 1, float>>;
  PerSac per(small_sac());
  obs = e.reset(rng);
  for (int t = 0; t < 120; ++t) {
    const auto a = per.act(obs);
    auto r = e.step(a);
    per.observe(obs, a, r.reward, r.observation, r.terminated, r.truncated);
    per.update(per.env_steps());
    obs = r.done() ? e.reset(rng) : r.observation;
  }
  CHECK(per.updates() == 21);
}

TEST_CASE("same seed, same run: SAC, TD3 and DDPG are bit-identical; another seed differs") {
  auto run = [](auto& agent) {
    env::Pendulum e;
    PhiloxStream rng(3, 9);
    auto obs = e.reset(rng);
    for (int t = 0; t < 180; ++t) {
      const auto a = agent.act(obs);
      auto r = e.step(a);
      agent.observe(obs, a, r.reward, r.observation, r.terminated, r.truncated);
      agent.update(agent.env_steps());
      obs = r.done() ? e.reset(rng) : r.observation;
    }
    return state_bytes(agent);
  };
  Sac s1(small_sac()), s2(small_sac()), s3(small_sac(6));
  const auto b1 = run(s1);
  CHECK(b1 == run(s2));
  CHECK(b1 != run(s3));
  Td3 t1(small_td3()), t2(small_td3());
  CHECK(run(t1) == run(t2));
  Ddpg d1(small_ddpg()), d2(small_ddpg());
  CHECK(run(d1) == run(d2));
}

TEST_CASE("resume through the training loop is bit-identical to an uninterrupted run (SAC, TD3, DDPG)") {
  auto check_resume = [](auto make_agent, const std::string& name) {
    using Agent = std::remove_reference_t<decltype(*make_agent())>;
    const fs::path full = temp_dir(name + "_full"), part = temp_dir(name + "_part");
    auto a1 = make_agent();
    rl::TrainLoop<env::Pendulum, Agent> l1(loop_config(500, full), *a1);
    const auto r1 = l1.run();
    const auto uninterrupted = state_bytes(*a1);

    auto a2 = make_agent();
    rl::TrainLoop<env::Pendulum, Agent> l2(loop_config(500, part, 260), *a2);
    const auto r2 = l2.run();
    CHECK(r2.interrupted);
    CHECK(r2.env_steps == 260);
    auto a3 = make_agent();
    rl::TrainLoop<env::Pendulum, Agent> l3(loop_config(500, part), *a3);
    l3.resume(part / "checkpoint.safetensors");
    const auto r3 = l3.run();
    CHECK(r3.env_steps == 500);
    CHECK(r3.gradient_steps == r1.gradient_steps);
    REQUIRE(r3.last_eval);
    REQUIRE(r1.last_eval);
    CHECK(r3.last_eval->returns == r1.last_eval->returns);
    CHECK(state_bytes(*a3) == uninterrupted);
    // the CSV rows (without wall-clock columns) match too
    auto rows = [](const fs::path& p) {
      std::ifstream in(p);
      std::vector<std::string> out;
      std::string line;
      while (std::getline(in, line)) {
        // drop the last three columns: updates_per_s, steps_per_s, wall_s
        for (int k = 0; k < 3; ++k) line = line.substr(0, line.rfind(','));
        out.push_back(line);
      }
      return out;
    };
    CHECK(rows(full / "log.csv") == rows(part / "log.csv"));
    fs::remove_all(full);
    fs::remove_all(part);
  };
  check_resume([] { return std::make_unique<Sac>(small_sac()); }, "sac");
  check_resume([] { return std::make_unique<Td3>(small_td3()); }, "td3");
  check_resume([] { return std::make_unique<Ddpg>(small_ddpg()); }, "ddpg");
}

TEST_CASE("DDPG's Ornstein-Uhlenbeck state is saved and restored exactly") {
  Ddpg a(small_ddpg());
  env::Pendulum e;
  PhiloxStream rng(4, 9);
  auto obs = e.reset(rng);
  for (int t = 0; t < 30; ++t) {
    const auto act = a.act(obs);
    auto r = e.step(act);
    a.observe(obs, act, r.reward, r.observation, r.terminated, r.truncated);
    obs = r.observation;
  }
  const double x = a.exploration_noise().processes[0].state()(0);
  CHECK(x != 0.0);
  io::SafetensorsWriter w;
  a.save(w, "p.");
  Ddpg b(small_ddpg());
  b.load(io::SafetensorsReader::from_bytes(w.to_bytes()), "p.");
  CHECK(b.exploration_noise().processes[0].state()(0) == x);
  CHECK(a.act(obs)[0] == b.act(obs)[0]);
  CHECK(state_bytes(a) == state_bytes(b));
}

TEST_CASE("bad inputs are rlmed::Error and leave the agent unchanged") {
  Sac agent(small_sac());
  env::Pendulum e;
  PhiloxStream rng(5, 9);
  const auto obs = e.reset(rng);
  const env::Pendulum::action_type ok{0.5f};
  CHECK_THROWS_AS(agent.observe(obs, ok, NAN, obs, false), Error);                      // NaN reward
  CHECK_THROWS_AS(agent.observe(obs, ok, INFINITY, obs, false), Error);
  CHECK_THROWS_AS(agent.observe(obs, env::Pendulum::action_type{3.0f}, 0.0, obs, false), Error);  // outside box
  CHECK_THROWS_AS(agent.observe(obs, env::Pendulum::action_type{NAN}, 0.0, obs, false), Error);
  auto bad_obs = obs;
  bad_obs[1] = NAN;
  CHECK_THROWS_AS(agent.observe(bad_obs, ok, 0.0, obs, false), Error);                 // NaN observation
  CHECK_THROWS_AS(agent.observe(obs, ok, 0.0, obs, false, false, 1), Error);           // env index
  CHECK(agent.env_steps() == 0);
  CHECK(agent.replay().size() == 0);
  std::vector<env::Pendulum::observation_type> two(2, obs);
  std::vector<env::Pendulum::action_type> acts(2);
  CHECK_THROWS_AS(agent.act(two, acts), Error);  // 2 observations for num_envs = 1
  CHECK_THROWS_AS((void)agent.act(bad_obs), Error);
  auto cfg = small_sac();
  cfg.gamma = 1.5;
  CHECK_THROWS_AS(Sac{cfg}, Error);
  cfg = small_sac();
  cfg.initial_alpha = 0;
  CHECK_THROWS_AS(Sac{cfg}, Error);
  auto tcfg = small_td3();
  tcfg.policy_delay = 0;
  CHECK_THROWS_AS(Td3{tcfg}, Error);

  // a checkpoint of another architecture is rejected before anything changes
  using WideSac = ag::SAC<env::Pendulum, nn::Sequential<nn::Linear<32>, nn::ReLU, nn::GaussianPolicyHead<1>>, Critic>;
  WideSac wide(small_sac());
  io::SafetensorsWriter w;
  wide.save(w, "");
  const auto before = state_bytes(agent);
  CHECK_THROWS_AS(agent.load(io::SafetensorsReader::from_bytes(w.to_bytes()), ""), Error);
  CHECK(state_bytes(agent) == before);
}
