// Spaces, the Environment concept, the classic-control environments and VectorEnv:
// validation errors, reset distributions and determinism by seed, trajectories against an
// independent float64 transcription of Gymnasium's equations (tests/rl/make_classic_golden.py),
// termination/truncation steps, VectorEnv auto-reset and thread-count independence.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "rlmed/core/safetensors.hpp"
#include "rlmed/env/classic/classic.hpp"
#include "rlmed/rl/environment.hpp"
#include "rlmed/rl/spaces.hpp"

using namespace rlmed;

namespace {

const std::filesystem::path kGolden = std::filesystem::path(RLMED_RL_GOLDEN_DIR) / "classic_control.safetensors";

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool close(double found, double expected, double rel = 1e-12) {
  return std::abs(found - expected) <= rel * std::max(1.0, std::abs(expected));
}

// Replays one golden episode through `env` and compares every step.
template <class Env, class ActionOf>
void check_episode(Env& env, const io::SafetensorsReader& r, const std::string& prefix, ActionOf action_of,
                   int& steps_out) {
  const auto s0 = r.read<double, 1>(prefix + "initial_state");
  const auto states = r.read<double, 2>(prefix + "states");
  const auto obs = r.read<float, 2>(prefix + "observations");
  const auto rewards = r.read<double, 1>(prefix + "rewards");
  const auto term = r.read<std::uint8_t, 1>(prefix + "terminated");
  const auto trunc = r.read<std::uint8_t, 1>(prefix + "truncated");
  typename Env::state_type initial{};
  REQUIRE(s0.size() == static_cast<index_t>(initial.size()));
  for (std::size_t i = 0; i < initial.size(); ++i) initial[i] = s0(static_cast<index_t>(i));
  env.set_state(initial);
  const index_t steps = rewards.size();
  int mismatches = 0;
  for (index_t t = 0; t < steps; ++t) {
    const auto res = env.step(action_of(t));
    for (std::size_t i = 0; i < initial.size(); ++i)
      if (!close(env.state()[i], states(t, static_cast<index_t>(i)))) {
        if (++mismatches < 5)
          FAIL_CHECK(format(prefix, " step ", t, " state ", i, ": ", env.state()[i], " vs golden ", states(t, index_t(i))));
      }
    for (std::size_t i = 0; i < res.observation.size(); ++i) {
      const float g = obs(t, static_cast<index_t>(i));
      // The golden observation is the golden state rounded to float32; equal states round equally.
      if (std::abs(res.observation[i] - g) > 1.2e-7f * std::max(1.0f, std::abs(g))) {
        if (++mismatches < 5) FAIL_CHECK(format(prefix, " step ", t, " observation ", i, ": ", res.observation[i], " vs ", g));
      }
    }
    if (!close(res.reward, rewards(t))) {
      if (++mismatches < 5) FAIL_CHECK(format(prefix, " step ", t, " reward ", res.reward, " vs ", rewards(t)));
    }
    CHECK(res.terminated == (term(t) != 0));
    CHECK(res.truncated == (trunc(t) != 0));
    // The episode ends exactly at the last golden step.
    CHECK(res.done() == (t == steps - 1));
  }
  CHECK(mismatches == 0);
  CHECK(env.elapsed_steps() == steps);
  CHECK_THROWS_AS(env.step(action_of(0)), Error);  // stepping an ended episode is an error
  steps_out = static_cast<int>(steps);
}

}  // namespace

TEST_CASE("Discrete<N>: contains, validation messages, uniform samples") {
  using A = rl::Discrete<3>;
  CHECK(A::contains(0));
  CHECK(A::contains(2));
  CHECK_FALSE(A::contains(3));
  CHECK_FALSE(A::contains(-1));
  const std::string msg = error_of([] { A::validate(3); });
  CHECK(msg.find("action 3 is outside Discrete<3>") != std::string::npos);
  CHECK(msg.find("[0, 3)") != std::string::npos);
  CHECK_THROWS_AS(A::validate(-1), Error);
  const std::vector<int> batch{0, 1, 5};
  CHECK(error_of([&] { A::validate(std::span<const int>(batch)); }).find("batch index 2") != std::string::npos);
  PhiloxStream rng(7, 0);
  int counts[3] = {0, 0, 0};
  for (int i = 0; i < 3000; ++i) {
    const int a = A::sample(rng);
    REQUIRE(A::contains(a));
    ++counts[a];
  }
  for (int c : counts) CHECK(std::abs(c - 1000) < 150);  // ±4.7 standard deviations
}

TEST_CASE("Box<Dim>: bounds, NaN, size mismatch, clipping and Gymnasium's sampling rules") {
  using B = rl::Box<3>;
  const B box({-1.f, 0.f, -INFINITY}, {1.f, 2.f, INFINITY});
  CHECK(box.contains({0.f, 1.f, 1e30f}));
  CHECK_FALSE(box.contains({0.f, 2.5f, 0.f}));
  CHECK_FALSE(box.contains({NAN, 1.f, 0.f}));
  CHECK_FALSE(box.contains(std::span<const float>(std::vector<float>{0.f, 1.f})));
  CHECK(error_of([&] { box.validate({0.f, 1.f, NAN}); }).find("component 2 is NaN") != std::string::npos);
  CHECK(error_of([&] { box.validate({0.f, 3.f, 0.f}); }).find("component 1 is 3, outside the box [0, 2]") !=
        std::string::npos);
  const std::vector<float> short_action{0.f, 1.f};
  CHECK(error_of([&] { box.validate(std::span<const float>(short_action)); }).find("has 2 components, expected 3") !=
        std::string::npos);
  Tensor<float, 2> wrong(Shape<2>{4, 2});
  CHECK_THROWS_AS(box.validate(TensorView<const float, 2>(wrong.view())), Error);
  Tensor<float, 2> rows(Shape<2>{2, 3});
  rows(1, 0) = 5.f;
  CHECK(error_of([&] { box.validate(TensorView<const float, 2>(rows.view())); }).find("component 0 is 5") !=
        std::string::npos);
  CHECK_THROWS_AS(B({1.f, 0.f, 0.f}, {0.f, 1.f, 1.f}), Error);  // low > high
  CHECK_THROWS_AS(B({NAN, 0.f, 0.f}, {0.f, 1.f, 1.f}), Error);
  const auto clipped = box.clip({-3.f, 1.5f, -7.f});
  CHECK(clipped == std::array<float, 3>{-1.f, 1.5f, -7.f});
  CHECK_THROWS_AS((void)box.clip({NAN, 0.f, 0.f}), Error);

  // Sampling: bounded -> uniform in range; half-bounded -> low + Exp(1); unbounded -> N(0, 1).
  const B mixed({-1.f, 2.f, -INFINITY}, {1.f, INFINITY, INFINITY});
  PhiloxStream rng(3, 1);
  double sum_exp = 0, sum_n = 0, sum_n2 = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const auto x = mixed.sample(rng);
    REQUIRE(x[0] >= -1.f);
    REQUIRE(x[0] <= 1.f);
    REQUIRE(x[1] >= 2.f);
    sum_exp += x[1] - 2.0;
    sum_n += x[2];
    sum_n2 += double(x[2]) * x[2];
  }
  CHECK(sum_exp / n == doctest::Approx(1.0).epsilon(0.05));  // Exp(1) mean, SE 0.007
  CHECK(std::abs(sum_n / n) < 0.04);                          // N(0,1) mean, SE 0.007
  CHECK(sum_n2 / n == doctest::Approx(1.0).epsilon(0.05));
  // A float box spanning ±FLT_MAX (CartPole's velocities) samples finite values.
  const auto cp = env::CartPole::observation_space();
  for (int i = 0; i < 100; ++i) {
    const auto x = cp.sample(rng);
    for (float v : x) REQUIRE(std::isfinite(v));
    REQUIRE(cp.contains(x));
  }
}

TEST_CASE("MultiDiscrete: per-agent counts") {
  CHECK_THROWS_AS(rl::MultiDiscrete(std::vector<int>{3, 0}), Error);
  CHECK_THROWS_AS(rl::MultiDiscrete(std::vector<int>{}), Error);
  const rl::MultiDiscrete md({2, 5, 3});
  CHECK(md.size() == 3);
  const std::vector<int> ok{1, 4, 0}, bad{1, 5, 0}, short_a{1, 4};
  CHECK(md.contains(ok));
  CHECK_FALSE(md.contains(bad));
  CHECK_FALSE(md.contains(short_a));
  CHECK(error_of([&] { md.validate(bad); }).find("component 1 is 5, expected an integer in [0, 5)") !=
        std::string::npos);
  CHECK(error_of([&] { md.validate(short_a); }).find("has 2 components, expected 3") != std::string::npos);
  PhiloxStream rng(1, 2);
  std::vector<int> seen(5, 0);
  for (int i = 0; i < 1000; ++i) {
    const auto a = md.sample(rng);
    REQUIRE(md.contains(a));
    ++seen[static_cast<std::size_t>(a[1])];
  }
  for (int c : seen) CHECK(c > 120);  // each of 5 choices ~200 times
  CHECK(rl::MultiDiscrete::repeated(4, 6).counts() == std::vector<int>(4, 6));
}

TEST_CASE("check_step rejects non-finite rewards and NaN observations") {
  rl::StepResult<std::array<float, 2>> r{{0.f, 1.f}, 1.0, false, false};
  CHECK_NOTHROW(rl::check_step(r));
  r.reward = std::nan("");
  CHECK(error_of([&] { rl::check_step(r, "MyEnv"); }).find("MyEnv: step returned reward nan") != std::string::npos);
  r.reward = INFINITY;
  CHECK_THROWS_AS(rl::check_step(r), Error);
  r.reward = 0.0;
  r.observation[1] = NAN;
  CHECK(error_of([&] { rl::check_step(r); }).find("observation element 1 is NaN") != std::string::npos);
}

TEST_CASE("classic environments satisfy the concept and reject invalid use") {
  static_assert(rl::Environment<env::CartPole> && rl::Environment<env::Pendulum> &&
                rl::Environment<env::MountainCar> && rl::Environment<env::Acrobot>);
  static_assert(!rl::StochasticEnvironment<env::CartPole>);
  env::CartPole cp;
  CHECK(error_of([&] { (void)cp.step(0); }).find("call reset() first") != std::string::npos);
  PhiloxStream rng(1, 0);
  (void)cp.reset(rng);
  CHECK(error_of([&] { (void)cp.step(2); }).find("outside Discrete<2>") != std::string::npos);
  env::Pendulum pd;
  (void)pd.reset(rng);
  CHECK(error_of([&] { (void)pd.step({NAN}); }).find("torque is NaN") != std::string::npos);
  CHECK_THROWS_AS(env::CartPole(env::CartPoleConfig{0}), Error);
  CHECK_THROWS_AS(cp.set_state({0, NAN, 0, 0}), Error);
  env::MountainCar mc;
  (void)mc.reset(rng);
  CHECK_THROWS_AS((void)mc.step(3), Error);
  env::Acrobot ab;
  (void)ab.reset(rng);
  CHECK_THROWS_AS((void)ab.step(-1), Error);
  // Spaces as Gymnasium declares them.
  CHECK(env::CartPole::observation_space().high[0] == doctest::Approx(4.8));
  CHECK(env::CartPole::observation_space().high[2] == doctest::Approx(24 * std::numbers::pi / 180));
  CHECK(env::Pendulum::action_space().high[0] == 2.0f);
  CHECK(env::Acrobot::observation_space().high[5] == static_cast<float>(9 * std::numbers::pi));
  CHECK(env::MountainCar::observation_space().low[1] == -0.07f);
}

TEST_CASE("reset distributions: ranges, float32 Acrobot states, determinism by seed") {
  constexpr int n = 2000;
  PhiloxStream a(11, 3), b(11, 3), c(12, 3);
  env::CartPole e1, e2, e3;
  bool any_difference = false;
  double mean = 0;
  for (int i = 0; i < n; ++i) {
    const auto o1 = e1.reset(a);
    const auto o2 = e2.reset(b);
    const auto o3 = e3.reset(c);
    REQUIRE(std::memcmp(o1.data(), o2.data(), sizeof o1) == 0);
    any_difference |= std::memcmp(o1.data(), o3.data(), sizeof o1) != 0;
    for (double s : e1.state()) REQUIRE((s >= -0.05 && s < 0.05));
    mean += e1.state()[2];
  }
  CHECK(any_difference);
  CHECK(std::abs(mean / n) < 0.004);  // U(-0.05, 0.05): SE 0.00065
  CHECK(a.position() == 4 * 2 * n);   // 4 components x 2 words each per reset

  env::Pendulum pd;
  double max_abs_theta = 0;
  for (int i = 0; i < n; ++i) {
    (void)pd.reset(a);
    REQUIRE((pd.state()[0] >= -std::numbers::pi && pd.state()[0] < std::numbers::pi));
    REQUIRE((pd.state()[1] >= -1.0 && pd.state()[1] < 1.0));
    max_abs_theta = std::max(max_abs_theta, std::abs(pd.state()[0]));
  }
  CHECK(max_abs_theta > 3.0);
  env::MountainCar mc;
  for (int i = 0; i < n; ++i) {
    const auto o = mc.reset(a);
    REQUIRE((mc.state()[0] >= -0.6 && mc.state()[0] < -0.4));
    REQUIRE(mc.state()[1] == 0.0);
    REQUIRE(o[1] == 0.0f);
  }
  env::Acrobot ab;
  for (int i = 0; i < n; ++i) {
    (void)ab.reset(a);
    for (double s : ab.state()) {
      REQUIRE((s >= -0.1 && s <= 0.1));
      REQUIRE(static_cast<double>(static_cast<float>(s)) == s);  // Gymnasium's float32 reset state
    }
  }
}

TEST_CASE("CartPole-v1 trajectories equal the float64 transcription of Gymnasium's equations") {
  const auto r = io::SafetensorsReader::open(kGolden);
  env::CartPole env;
  int steps[4];
  for (int k = 0; k < 4; ++k) {
    const std::string p = "cartpole." + std::to_string(k) + ".";
    const auto actions = r.read<std::int32_t, 1>(p + "actions");
    check_episode(env, r, p, [&](index_t t) { return actions(t); }, steps[k]);
  }
  CHECK(steps[2] == 500);  // the controller balances until the v1 time limit
  CHECK(steps[3] < 10);    // a start near the 12-degree threshold falls within a few steps
  // The limit counts from set_state's elapsed steps.
  env.set_state({0, 0, 0, 0}, 499);
  const auto last = env.step(1);
  CHECK(last.truncated);
  CHECK_FALSE(last.terminated);
}

TEST_CASE("Pendulum-v1 trajectories (clipped torques, angle normalisation) equal the reference") {
  const auto r = io::SafetensorsReader::open(kGolden);
  env::Pendulum env;
  bool clipped = false;
  for (int k = 0; k < 3; ++k) {
    const std::string p = "pendulum." + std::to_string(k) + ".";
    const auto actions = r.read<float, 2>(p + "actions");
    for (float u : actions) clipped |= std::abs(u) > 2.0f;
    int steps = 0;
    check_episode(env, r, p, [&](index_t t) { return std::array<float, 1>{actions(t, 0)}; }, steps);
    CHECK(steps == 200);
  }
  CHECK(clipped);  // the fixtures exercise torque clipping
  CHECK(env::Pendulum::angle_normalize(3 * std::numbers::pi) == doctest::Approx(-std::numbers::pi));
  CHECK(env::Pendulum::angle_normalize(-0.5) == doctest::Approx(-0.5));
}

TEST_CASE("MountainCar-v0 trajectories (goal, time limit, inelastic wall) equal the reference") {
  const auto r = io::SafetensorsReader::open(kGolden);
  env::MountainCar env;
  int steps[3];
  for (int k = 0; k < 3; ++k) {
    const std::string p = "mountain_car." + std::to_string(k) + ".";
    const auto actions = r.read<std::int32_t, 1>(p + "actions");
    check_episode(env, r, p, [&](index_t t) { return actions(t); }, steps[k]);
  }
  CHECK(steps[0] == 200);
  CHECK(steps[1] < 200);
  // Episode 2 starts at the left wall moving left: the golden data must contain the collision.
  const auto states = r.read<double, 2>("mountain_car.2.states");
  bool hit_wall = false;
  for (index_t t = 0; t < states.extent(0); ++t) hit_wall |= states(t, 0) == -1.2 && states(t, 1) == 0.0;
  CHECK(hit_wall);
}

TEST_CASE("Acrobot-v1 trajectories (RK4, book dynamics) equal the reference") {
  const auto r = io::SafetensorsReader::open(kGolden);
  env::Acrobot env;
  int steps[2];
  for (int k = 0; k < 2; ++k) {
    const std::string p = "acrobot." + std::to_string(k) + ".";
    const auto actions = r.read<std::int32_t, 1>(p + "actions");
    check_episode(env, r, p, [&](index_t t) { return actions(t); }, steps[k]);
  }
  CHECK(steps[0] == 500);
  CHECK(steps[1] < 500);
  const auto rewards = r.read<double, 1>("acrobot.1.rewards");
  CHECK(rewards(rewards.size() - 1) == 0.0);  // reaching the height is rewarded 0
  CHECK(rewards(0) == -1.0);
  CHECK(env::Acrobot::wrap(7.0, -std::numbers::pi, std::numbers::pi) == doctest::Approx(7.0 - 2 * std::numbers::pi));
}

namespace {
// A test environment: reward NaN at a chosen step; stochastic steps to check stream routing.
struct NoisyCounter {
  using observation_type = std::array<float, 1>;
  using action_type = int;
  static rl::Discrete<2> action_space() { return {}; }
  static rl::Box<1> observation_space() { return rl::Box<1>::uniform(-1e9f, 1e9f); }
  int t = 0, episode_length = 5, nan_at = -1;
  float value = 0;
  observation_type reset(PhiloxStream& rng) {
    t = 0;
    value = rng.uniform();
    return {value};
  }
  rl::StepResult<observation_type> step(int) { return step_impl(0.f); }
  rl::StepResult<observation_type> step(int a, PhiloxStream& rng) { return step_impl(rng.uniform() + float(a)); }
  rl::StepResult<observation_type> step_impl(float noise) {
    ++t;
    value += noise;
    const double reward = t == nan_at ? std::nan("") : double(value);
    return {{value}, reward, t == episode_length, false};
  }
};
}  // namespace

TEST_CASE("VectorEnv: auto-reset returns the new episode's first observation; final_observation the last") {
  constexpr index_t n = 3;
  constexpr std::uint64_t seed = 99;
  rl::VectorEnv<env::CartPole> venv({n, seed, /*first_stream=*/10, /*grain=*/1});
  CHECK_THROWS_AS(venv.step(std::vector<int>(n, 0)), Error);  // before reset
  const auto first = venv.reset();
  // Reference: each env by hand with its own stream (seed, first_stream + i).
  std::vector<env::CartPole> ref(n);
  std::vector<PhiloxStream> ref_rng;
  std::vector<std::array<float, 4>> ref_obs(n);
  std::vector<double> ref_return(n, 0.0);
  std::vector<std::int64_t> ref_length(n, 0);
  for (index_t i = 0; i < n; ++i) {
    ref_rng.emplace_back(seed, 10 + static_cast<std::uint64_t>(i));
    ref_obs[std::size_t(i)] = ref[std::size_t(i)].reset(ref_rng.back());
    CHECK(ref_obs[std::size_t(i)] == first[std::size_t(i)]);
  }
  PhiloxStream policy(5, 0);
  int episodes = 0;
  for (int step = 0; step < 400; ++step) {
    std::vector<int> actions(n);
    for (auto& a : actions) a = rl::Discrete<2>::sample(policy);
    const auto& out = venv.step(actions);
    for (index_t i = 0; i < n; ++i) {
      const auto k = std::size_t(i);
      const auto res = ref[k].step(actions[k]);
      ref_return[k] += res.reward;
      ref_length[k] += 1;
      REQUIRE(out.reward[k] == res.reward);
      REQUIRE(out.terminated[k] == (res.terminated ? 1 : 0));
      REQUIRE(out.truncated[k] == (res.truncated ? 1 : 0));
      if (res.done()) {
        ++episodes;
        REQUIRE(out.final_observation[k] == res.observation);
        REQUIRE(out.episode_return[k] == ref_return[k]);
        REQUIRE(out.episode_length[k] == ref_length[k]);
        ref_obs[k] = ref[k].reset(ref_rng[k]);
        ref_return[k] = 0;
        ref_length[k] = 0;
      } else {
        ref_obs[k] = res.observation;
      }
      REQUIRE(out.observation[k] == ref_obs[k]);
      REQUIRE(venv.current_length(i) == ref_length[k]);
      REQUIRE(venv.rng(i) == ref_rng[k]);
    }
  }
  CHECK(episodes > 10);  // random pushes end CartPole episodes after ~10-40 steps
  CHECK(venv.episodes_completed() == episodes);
  Tensor<float, 2> batch(Shape<2>{n, 4});
  rl::stack_observations_into(venv.observations(), batch.view());
  CHECK(batch(2, 3) == venv.observations()[2][3]);
  CHECK_THROWS_AS(venv.step(std::vector<int>(n + 1, 0)), Error);
}

TEST_CASE("VectorEnv results are bit-identical with 1 and 2 threads") {
  auto run = [](int threads) {
    set_num_threads(threads);
    rl::VectorEnv<env::Acrobot> venv({6, 2024, 0, /*grain=*/1}, env::Acrobot(env::AcrobotConfig{40}));
    venv.reset();
    PhiloxStream policy(8, 0);
    std::vector<float> trace;
    for (int s = 0; s < 120; ++s) {
      std::vector<int> actions(6);
      for (auto& a : actions) a = rl::Discrete<3>::sample(policy);
      const auto& out = venv.step(actions);
      for (std::size_t i = 0; i < 6; ++i) {
        trace.insert(trace.end(), out.observation[i].begin(), out.observation[i].end());
        trace.push_back(static_cast<float>(out.reward[i]));
        trace.push_back(out.truncated[i]);
        for (double v : venv.env(index_t(i)).state()) trace.push_back(static_cast<float>(v));
      }
    }
    return trace;
  };
  const int restore = max_threads();
  const auto one = run(1);
  const auto two = run(2);
  set_num_threads(restore);
  REQUIRE(one.size() == two.size());
  CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
}

TEST_CASE("VectorEnv hands stochastic environments their own stream and rejects NaN rewards") {
  static_assert(rl::StochasticEnvironment<NoisyCounter>);
  rl::VectorEnv<NoisyCounter> venv({2, 77, 0, 1});
  venv.reset();
  NoisyCounter ref;
  PhiloxStream ref_rng(77, 1);
  (void)ref.reset(ref_rng);
  for (int s = 0; s < 12; ++s) {
    const auto& out = venv.step(std::vector<int>{0, 1});
    const auto r = ref.step(1, ref_rng);
    if (r.done()) {
      CHECK(out.final_observation[1] == r.observation);
      (void)ref.reset(ref_rng);
    }
    CHECK(out.observation[1][0] == ref.value);
  }
  NoisyCounter bad;
  bad.nan_at = 3;
  rl::VectorEnv<NoisyCounter> nan_env({2, 1, 0, 1}, bad);
  nan_env.reset();
  (void)nan_env.step(std::vector<int>{0, 0});
  (void)nan_env.step(std::vector<int>{0, 0});
  CHECK(error_of([&] { (void)nan_env.step(std::vector<int>{0, 0}); }).find("reward nan") != std::string::npos);
}
