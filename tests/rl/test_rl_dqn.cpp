// The DQN family and the shared training loop: TD targets (plain vs Double) and the PER-weighted
// Huber gradient on hand-computed cases, priority updates, target sync, the update schedule,
// exact resume through TrainLoop (bitwise), evaluation that never perturbs training, the CSV log
// on resume, stream checkpoints, and rlmed::Error on bad inputs.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "rlmed/env/classic/cartpole.hpp"
#include "rlmed/rl/agents/dqn.hpp"
#include "rlmed/rl/train_loop.hpp"

using namespace rlmed;
namespace fs = std::filesystem;
using rl::explore::EpsilonGreedy;
using rl::explore::LinearSchedule;

namespace {

// Q(s) = W s + b with 3 actions on 3-dimensional observations.
using Linear3 = nn::Model<nn::Sequential<nn::Linear<3>>, float>;
using Linear2 = nn::Model<nn::Sequential<nn::Linear<2>>, float>;
using UniformReplay = rl::replay::Uniform<float, 1, int>;
using PerReplay = rl::replay::Prioritized<float, 1, int>;

template <class Target>
using LinearDqn = rl::DQN<Linear3, Target, UniformReplay>;

UniformReplay uniform_replay(index_t obs_dim, index_t capacity = 16) {
  rl::replay::UniformConfig<1> c;
  c.capacity = capacity;
  c.obs_shape = Shape<1>{obs_dim};
  return UniformReplay(c);
}

template <class Net>
void set_linear(Net& net, const std::vector<std::vector<float>>& w, const std::vector<float>& b) {
  auto& l = net.template layer<0>();
  for (std::size_t i = 0; i < w.size(); ++i)
    for (std::size_t j = 0; j < w[i].size(); ++j) l.weight.value(static_cast<index_t>(i), static_cast<index_t>(j)) = w[i][j];
  for (std::size_t i = 0; i < b.size(); ++i) l.bias.value(static_cast<index_t>(i)) = b[i];
}

template <class Batch>
void set_row(Batch& batch, index_t row, std::array<float, 3> next_obs, float reward, float done, int steps) {
  for (index_t j = 0; j < 3; ++j) batch.next_obs(row, j) = next_obs[static_cast<std::size_t>(j)];
  batch.reward(row) = reward;
  batch.done(row) = done;
  batch.steps(row) = steps;
}

std::vector<std::byte> state_bytes(const auto& agent) {
  io::SafetensorsWriter w;
  agent.save(w, "");
  return w.to_bytes();
}

std::vector<std::string> read_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

// A CSV row without its last three (wall-clock) columns.
std::string without_timing(const std::string& row) {
  std::string s = row;
  for (int k = 0; k < 3; ++k) s = s.substr(0, s.rfind(','));
  return s;
}

fs::path fresh_dir(const std::string& name) {
  const auto d = fs::temp_directory_path() / ("rlmed_dqn_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST_CASE("Double DQN bootstraps with the online argmax, plain DQN with the target max (constructed case)") {
  rl::DQNConfig cfg;
  cfg.gamma = 0.9;
  cfg.batch_size = 3;
  LinearDqn<rl::target::Plain> plain(cfg, uniform_replay(3));
  LinearDqn<rl::target::Double> dbl(cfg, uniform_replay(3));
  // Online Q(s') = s'; target Q(s') = s' with components 0 and 2 swapped.
  const std::vector<std::vector<float>> identity{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
  const std::vector<std::vector<float>> swap02{{0, 0, 1}, {0, 1, 0}, {1, 0, 0}};
  for (auto* net : {&plain.online(), &dbl.online()}) set_linear(*net, identity, {0, 0, 0});
  for (auto* net : {&plain.target_net(), &dbl.target_net()}) set_linear(*net, swap02, {0, 0, 0});

  auto batch = plain.replay().make_batch(3);
  set_row(batch, 0, {1.0f, 0.5f, 2.0f}, 0.5f, 0.0f, 1);   // online argmax 2; target Q = (2, .5, 1)
  set_row(batch, 1, {4.0f, 0.0f, 0.0f}, -1.0f, 1.0f, 1);  // terminal: y = r
  set_row(batch, 2, {0.2f, 0.9f, -1.0f}, 0.25f, 0.0f, 3);  // 3-step: gamma^3; both pick action 1
  Tensor<float, 1> y_plain, y_double;
  plain.compute_targets_into(batch, y_plain);
  dbl.compute_targets_into(batch, y_double);

  CHECK(y_plain(0) == doctest::Approx(0.5 + 0.9 * 2.0));   // max_a Q_target = 2 (action 0)
  CHECK(y_double(0) == doctest::Approx(0.5 + 0.9 * 1.0));  // Q_target(s', argmax Q_online = 2) = 1
  CHECK(y_plain(1) == doctest::Approx(-1.0));
  CHECK(y_double(1) == doctest::Approx(-1.0));
  CHECK(y_plain(2) == doctest::Approx(0.25 + 0.729 * 0.9));
  CHECK(y_double(2) == doctest::Approx(0.25 + 0.729 * 0.9));
}

TEST_CASE("PER importance weights scale each sample's Huber gradient; priorities become |TD| + eps") {
  rl::DQNConfig cfg;
  cfg.batch_size = 3;
  cfg.max_grad_norm = 0;  // no clipping: the update is exactly -lr * gradient
  rl::replay::PrioritizedConfig<1> pc;
  pc.capacity = 8;
  pc.obs_shape = Shape<1>{2};
  pc.alpha = 0.5;
  pc.epsilon = 1e-6;
  using Agent = rl::DQN<Linear2, rl::target::Plain, PerReplay, EpsilonGreedy<LinearSchedule>, rl::sync::Hard,
                        nn::optim::SGD<float>>;
  nn::optim::SgdConfig sgd;
  sgd.lr = 1.0;
  Agent agent(cfg, PerReplay(pc), {}, rl::sync::Hard{1000}, sgd);
  set_linear(agent.online(), {{0, 0}, {0, 0}}, {0, 0});
  set_linear(agent.target_net(), {{0, 0}, {0, 0}}, {0, 0});  // bootstrap 0: y = r
  const float zeros[2] = {0, 0};
  const int a0 = 0;
  for (int i = 0; i < 3; ++i)
    agent.replay().add(TensorView<const float, 1>(zeros, Shape<1>{2}), std::span<const int>(&a0, 1), 0.f,
                       TensorView<const float, 1>(zeros, Shape<1>{2}), false);

  auto batch = agent.replay().make_batch(3);
  const float s[3][2] = {{1, 2}, {3, -1}, {0, 1}};
  const int a[3] = {0, 1, 0};
  const float r[3] = {0.5f, -0.25f, 3.0f};  // TD d = Q - y = -r: -0.5, 0.25 (quadratic), -3 (linear)
  const float w[3] = {1.0f, 0.5f, 0.25f};
  for (index_t b = 0; b < 3; ++b) {
    batch.obs(b, 0) = s[b][0];
    batch.obs(b, 1) = s[b][1];
    batch.next_obs(b, 0) = batch.next_obs(b, 1) = 0;
    batch.action(b, 0) = a[b];
    batch.reward(b) = r[b];
    batch.done(b) = 0;
    batch.steps(b) = 1;
    batch.weight(b) = w[b];
    batch.index(b) = b;
  }
  const double loss = agent.learn_from(batch);
  // mean_b w_b huber(d_b): (1 * 0.125 + 0.5 * 0.03125 + 0.25 * (3 - 0.5)) / 3
  CHECK(loss == doctest::Approx(0.765625 / 3.0));
  // dL/dQ(s_b, a_b) = w_b * clip(d_b, ±1) / 3: -0.5/3, 0.125/3, -0.25/3
  const auto& W = agent.online().layer<0>().weight.value;
  const auto& bias = agent.online().layer<0>().bias.value;
  CHECK(W(0, 0) == doctest::Approx(0.5 / 3));          // -(g0 * 1 + g2 * 0)
  CHECK(W(0, 1) == doctest::Approx((1.0 + 0.25) / 3));  // -(g0 * 2 + g2 * 1)
  CHECK(W(1, 0) == doctest::Approx(-0.125));           // -(g1 * 3)
  CHECK(W(1, 1) == doctest::Approx(0.125 / 3));         // -(g1 * -1)
  CHECK(bias(0) == doctest::Approx(0.75 / 3));
  CHECK(bias(1) == doctest::Approx(-0.125 / 3));
  // Priorities p^alpha with p = |d| + eps, d measured before the step.
  CHECK(agent.replay().priority_alpha(0) == doctest::Approx(std::sqrt(0.5 + 1e-6)));
  CHECK(agent.replay().priority_alpha(1) == doctest::Approx(std::sqrt(0.25 + 1e-6)));
  CHECK(agent.replay().priority_alpha(2) == doctest::Approx(std::sqrt(3.0 + 1e-6)));
  CHECK(agent.replay().max_priority() == doctest::Approx(3.0 + 1e-6));
  // Hard sync every 1000 gradient steps: the target network is still zero.
  CHECK(agent.target_net().layer<0>().weight.value(0, 1) == 0.0f);
  CHECK(agent.gradient_steps() == 1);
}

TEST_CASE("target sync: hard copy every k gradient steps, Polyak blend") {
  rl::DQNConfig cfg;
  cfg.batch_size = 1;
  rl::replay::UniformConfig<1> uc;
  uc.capacity = 4;
  uc.obs_shape = Shape<1>{2};
  using Hard = rl::DQN<Linear2, rl::target::Plain, UniformReplay, EpsilonGreedy<LinearSchedule>, rl::sync::Hard>;
  using Soft = rl::DQN<Linear2, rl::target::Plain, UniformReplay, EpsilonGreedy<LinearSchedule>, rl::sync::Polyak>;
  Hard hard(cfg, UniformReplay(uc), {}, rl::sync::Hard{2});
  Soft soft(cfg, UniformReplay(uc), {}, rl::sync::Polyak{0.25, 1});
  auto batch = hard.replay().make_batch(1);
  batch.obs(0, 0) = 1;
  batch.obs(0, 1) = -2;
  batch.action(0, 0) = 1;
  batch.reward(0) = 1;
  batch.steps(0) = 1;
  const float before = hard.target_net().layer<0>().weight.value(1, 0);
  hard.learn_from(batch);
  CHECK(hard.target_net().layer<0>().weight.value(1, 0) == before);  // step 1: no sync
  hard.learn_from(batch);
  CHECK(bitwise_equal(hard.target_net().layer<0>().weight.value, hard.online().layer<0>().weight.value));

  const float t0 = soft.target_net().layer<0>().weight.value(1, 1);
  soft.learn_from(batch);
  const float o1 = soft.online().layer<0>().weight.value(1, 1);
  CHECK(o1 != t0);
  CHECK(soft.target_net().layer<0>().weight.value(1, 1) == doctest::Approx(0.25 * o1 + 0.75 * t0));
}

TEST_CASE("update runs train_every-spaced rounds from learning_starts on, gradient_steps each") {
  rl::DQNConfig cfg;
  cfg.batch_size = 2;
  cfg.learning_starts = 10;
  cfg.train_every = 4;
  cfg.gradient_steps = 2;
  rl::replay::UniformConfig<1> uc;
  uc.capacity = 64;
  uc.obs_shape = Shape<1>{4};
  using Agent = rl::DQN<nn::Model<rl::QMlp<8, 2>, float>, rl::target::Double, UniformReplay>;
  Agent agent(cfg, UniformReplay(uc));
  using Obs = env::CartPole::observation_type;
  std::vector<Obs> obs(3, Obs{0.1f, 0.f, -0.1f, 0.f});
  std::vector<int> actions(3);
  rl::VectorStep<Obs> step;
  step.resize(3);
  step.observation = obs;
  std::int64_t total = 0;
  std::vector<std::int64_t> per_call;
  for (std::int64_t env_steps = 3; env_steps <= 21; env_steps += 3) {
    agent.act(std::span<const Obs>(obs), std::span<int>(actions));
    agent.observe(std::span<const Obs>(obs), std::span<const int>(actions), step);
    const auto info = agent.update(env_steps);
    per_call.push_back(info.gradient_steps);
    total += info.gradient_steps;
    CHECK(info.exploration == doctest::Approx(agent.epsilon()));
  }
  // Rounds at env steps 12, 16 and 20 (multiples of 4 that are >= 10), reached at calls 12, 18, 21.
  CHECK(per_call == std::vector<std::int64_t>{0, 0, 0, 2, 0, 2, 2});
  CHECK(total == 6);
  CHECK(agent.gradient_steps() == 6);
  CHECK(agent.replay().size() == 21);
  CHECK(agent.exploration().step() == 21);  // ε advanced once per environment acted on
}

namespace {

using SmallNet = nn::Model<rl::DuelingQMlp<16, 2>, float>;
using SmallReplay = rl::replay::NStep<PerReplay>;
using SmallDqn = rl::DQN<SmallNet, rl::target::Double, SmallReplay>;

SmallDqn make_small_agent(std::uint64_t seed) {
  rl::replay::PrioritizedConfig<1> pc;
  pc.capacity = 4096;
  pc.obs_shape = Shape<1>{4};
  pc.beta_steps = 1000;
  rl::DQNConfig cfg;
  cfg.batch_size = 16;
  cfg.learning_starts = 200;
  cfg.train_every = 2;
  cfg.seed = seed;
  return SmallDqn(cfg, SmallReplay(rl::replay::NStepConfig{3, 0.99, 2}, PerReplay(pc)),
                  EpsilonGreedy<LinearSchedule>({1.0, 0.05, 1000}), rl::sync::Hard{50});
}

rl::TrainConfig small_loop(const fs::path& out, std::uint64_t seed) {
  rl::TrainConfig tc;
  tc.total_steps = 1200;
  tc.num_envs = 2;
  tc.seed = seed;
  tc.eval_every = 400;
  tc.eval_episodes = 3;
  tc.log_every = 150;
  tc.out_dir = out;
  tc.progress = rl::ProgressMode::none;
  return tc;
}

}  // namespace

TEST_CASE("TrainLoop: stopping at step k and resuming to n is bit-identical to running to n") {
  const auto dir_a = fresh_dir("uninterrupted");
  const auto dir_b = fresh_dir("interrupted");

  SmallDqn agent_a = make_small_agent(11);
  rl::TrainLoop<env::CartPole, SmallDqn> loop_a(small_loop(dir_a, 5), agent_a);
  const auto ra = loop_a.run();
  REQUIRE(ra.env_steps == 1200);
  CHECK(ra.gradient_steps > 400);  // it learned: (1200 - 200) / 2 rounds
  CHECK(ra.evaluations.size() == 3);

  // Interrupted mid-episode, mid-ε-schedule, with pending n-step entries.
  SmallDqn agent_b = make_small_agent(11);
  auto cfg_b = small_loop(dir_b, 5);
  cfg_b.stop_at_step = 702;
  rl::TrainLoop<env::CartPole, SmallDqn> loop_b(cfg_b, agent_b);
  const auto rb = loop_b.run();
  CHECK(rb.interrupted);
  CHECK(rb.env_steps == 702);
  REQUIRE(fs::exists(dir_b / "checkpoint.safetensors"));

  // Fresh agent and loop with other seeds: everything must come from the checkpoint.
  SmallDqn agent_c = make_small_agent(999);
  rl::TrainLoop<env::CartPole, SmallDqn> loop_c(small_loop(dir_b, 77), agent_c);
  loop_c.resume(dir_b / "checkpoint.safetensors");
  CHECK(loop_c.env_steps() == 702);
  const auto rc = loop_c.run();

  CHECK(rc.env_steps == ra.env_steps);
  CHECK(loop_c.episodes() == loop_a.episodes());
  CHECK(loop_c.gradient_steps() == loop_a.gradient_steps());
  CHECK(loop_c.evaluations_done() == loop_a.evaluations_done());
  REQUIRE(rc.last_eval);
  CHECK(rc.last_eval->returns == ra.last_eval->returns);
  // Networks, target, Adam moments, replay + priorities + pending n-step entries, ε, streams.
  CHECK(state_bytes(agent_c) == state_bytes(agent_a));
  for (std::size_t i = 0; i < 2; ++i) {
    CHECK(loop_c.observations()[i] == loop_a.observations()[i]);
    CHECK(loop_c.env(static_cast<index_t>(i)).state() == loop_a.env(static_cast<index_t>(i)).state());
  }
  // The resumed log equals the uninterrupted one row for row (wall-clock columns aside).
  const auto la = read_lines(dir_a / "log.csv"), lb = read_lines(dir_b / "log.csv");
  REQUIRE(la.size() == lb.size());
  CHECK(la[0] == lb[0]);
  for (std::size_t i = 1; i < la.size(); ++i) CHECK(without_timing(la[i]) == without_timing(lb[i]));
  CHECK(la.size() == 1 + 1200 / 150 + 2);  // log rows, plus evaluation rows at 400 and 800
  fs::remove_all(dir_a);
  fs::remove_all(dir_b);
}

TEST_CASE("TrainLoop: evaluation never perturbs training") {
  SmallDqn with_eval = make_small_agent(3);
  SmallDqn without_eval = make_small_agent(3);
  auto cfg = small_loop({}, 8);
  cfg.total_steps = 600;
  cfg.eval_every = 100;
  rl::TrainLoop<env::CartPole, SmallDqn> a(cfg, with_eval);
  const auto ra = a.run();
  CHECK(ra.evaluations.size() == 6);
  cfg.eval_every = 0;
  cfg.eval_at_end = false;
  rl::TrainLoop<env::CartPole, SmallDqn> b(cfg, without_eval);
  const auto rb = b.run();
  CHECK(rb.evaluations.empty());
  CHECK(state_bytes(with_eval) == state_bytes(without_eval));
  // evaluate() is a pure function of the agent and the evaluation index.
  const auto e1 = a.evaluate();
  const auto e2 = a.evaluate();
  CHECK(e1.returns == e2.returns);
  CHECK(e1.returns.size() == 3);
}

TEST_CASE("TrainLoop: solved runs stop early; a checkpoint of another loop shape is refused") {
  const auto dir = fresh_dir("shape");
  SmallDqn agent = make_small_agent(4);
  auto cfg = small_loop(dir, 2);
  cfg.total_steps = 400;
  cfg.eval_every = 200;
  cfg.stop_at_eval_return = 1.0;  // any episode returns >= 1: solved at the first evaluation
  rl::TrainLoop<env::CartPole, SmallDqn> loop(cfg, agent);
  const auto r = loop.run();
  CHECK(r.solved_at_step == 200);
  CHECK(r.env_steps == 200);

  SmallDqn other = make_small_agent(4);
  auto cfg3 = cfg;
  cfg3.num_envs = 3;
  rl::TrainLoop<env::CartPole, SmallDqn> wrong(cfg3, other);
  CHECK_THROWS_WITH_AS(wrong.resume(dir / "checkpoint.safetensors"),
                       doctest::Contains("checkpoint has 2 training environments, this loop 3"), Error);
  io::SafetensorsWriter w;
  w.add("x", Tensor<float, 1>(Shape<1>{1}));
  w.write(dir / "not_a_loop.safetensors");
  CHECK_THROWS_WITH_AS(wrong.resume(dir / "not_a_loop.safetensors"), doctest::Contains("not a training-loop checkpoint"),
                       Error);
  fs::remove_all(dir);
}

TEST_CASE("CsvLog: resuming drops rows written after the checkpoint's step; empty cells for NaN") {
  const auto dir = fresh_dir("csv");
  {
    rl::CsvLog log(dir / "log.csv", {"step", "value", "other"});
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (std::int64_t s : {100, 200, 300}) {
      const double v[] = {static_cast<double>(s) / 8, nan};
      log.row(s, v);
    }
  }
  CHECK(read_lines(dir / "log.csv") == std::vector<std::string>{"step,value,other", "100,12.5,", "200,25,", "300,37.5,"});
  {
    auto log = rl::CsvLog::resume(dir / "log.csv", {"step", "value", "other"}, 200);
    const double v[] = {1.0 / 3.0, 7};
    log.row(250, v);
  }
  CHECK(read_lines(dir / "log.csv") ==
        std::vector<std::string>{"step,value,other", "100,12.5,", "200,25,", "250,0.333333333,7"});
  CHECK(rl::Progress::format_duration(65) == "1:05");
  CHECK(rl::Progress::format_duration(3725) == "1:02:05");
  fs::remove_all(dir);
}

TEST_CASE("Progress: plain lines when the stream is not a terminal; the bar draws rate and ETA") {
  std::FILE* file = std::tmpfile();
  REQUIRE(file != nullptr);
  rl::Progress automatic(rl::ProgressMode::automatic, file, 1000, 0);
  CHECK(automatic.mode() == rl::ProgressMode::lines);  // a file is not a TTY
  automatic.line(500, "episodes 3");
  rl::Progress bar(rl::ProgressMode::bar, file, 1000, 0);
  int status_calls = 0;
  bar.tick(10, [&] { ++status_calls; return std::string("lazy"); });  // < 0.1 s after construction: no draw
  CHECK(status_calls == 0);
  bar.finish(1000, "done");
  std::fflush(file);
  std::rewind(file);
  std::string text;
  for (int c; (c = std::fgetc(file)) != EOF;) text += static_cast<char>(c);
  std::fclose(file);
  CHECK(text.find("step 500/1000 ( 50.0%)") != std::string::npos);
  CHECK(text.find("steps/s") != std::string::npos);
  CHECK(text.find("ETA") != std::string::npos);
  CHECK(text.find("| episodes 3\n") != std::string::npos);
  CHECK(text.find("\r[########################] step 1000/1000") != std::string::npos);
  CHECK(text.find("| done\x1b[K\n") != std::string::npos);
  CHECK(rl::Progress(rl::ProgressMode::bar, nullptr, 10, 0).mode() == rl::ProgressMode::none);
}

TEST_CASE("checkpoint helpers: a stream restored mid-block continues the same numbers") {
  PhiloxStream s(123, 7);
  for (int i = 0; i < 5; ++i) (void)s.next_u32();  // position 5: inside a block
  io::SafetensorsWriter w;
  rl::ckpt::save_stream(w, "rng", s);
  const auto r = io::SafetensorsReader::from_bytes(w.to_bytes());
  PhiloxStream t(1, 1);
  rl::ckpt::load_stream(r, "rng", t);
  CHECK(t == s);
  for (int i = 0; i < 9; ++i) CHECK(t.next_u32() == s.next_u32());
}

namespace {

// An agent that answers with action 5 in a 2-action environment.
struct OutOfRangeAgent {
  using Obs = env::CartPole::observation_type;
  void act(std::span<const Obs>, std::span<int> a) { std::fill(a.begin(), a.end(), 5); }
  void observe(std::span<const Obs>, std::span<const int>, const rl::VectorStep<Obs>&) {}
  rl::UpdateInfo update(std::int64_t) { return {}; }
  void evaluate_actions(std::span<const Obs>, std::span<int> a) { std::fill(a.begin(), a.end(), 0); }
  void save(io::SafetensorsWriter&, const std::string&) const {}
  void load(const io::SafetensorsReader&, const std::string&) {}
};

// An environment whose third step returns a NaN reward.
struct NanRewardEnv {
  using observation_type = std::array<float, 4>;
  using action_type = int;
  static constexpr rl::Discrete<2> action_space() { return {}; }
  static rl::Box<4> observation_space() { return rl::Box<4>::uniform(-1, 1); }
  observation_type reset(PhiloxStream&) {
    t = 0;
    return {};
  }
  rl::StepResult<observation_type> step(int) {
    ++t;
    return {{}, t == 3 ? std::numeric_limits<double>::quiet_NaN() : 1.0, false, false};
  }
  int t = 0;
};

}  // namespace

TEST_CASE("bad inputs are rlmed::Error: observation sizes, actions, NaN rewards and observations, configs") {
  SmallDqn agent = make_small_agent(1);
  using Obs = env::CartPole::observation_type;
  // Observation shape mismatch.
  std::vector<std::vector<float>> short_obs{{0.f, 0.f, 0.f}};
  std::vector<int> one(1);
  CHECK_THROWS_WITH_AS(agent.act(std::span<const std::vector<float>>(short_obs), std::span<int>(one)),
                       doctest::Contains("observation 0 has 3 components, expected 4"), Error);
  Tensor<float, 2> wrong(Shape<2>{2, 5});
  CHECK_THROWS_WITH_AS(agent.q_values(wrong.view()), doctest::Contains("expected [B >= 1, 4]"), Error);
  Tensor<float, 2> nan_obs(Shape<2>{1, 4});
  nan_obs(0, 2) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(agent.q_values(nan_obs.view()), doctest::Contains("component 2 is NaN"), Error);

  std::vector<Obs> obs(1, Obs{0.f, 0.f, 0.f, 0.f});
  rl::VectorStep<Obs> step;
  step.resize(1);
  step.observation = obs;
  // Action out of range.
  std::vector<int> bad_action{2};
  CHECK_THROWS_WITH_AS(agent.observe(std::span<const Obs>(obs), std::span<const int>(bad_action), step),
                       doctest::Contains("action 2 of env 0 is outside [0, 2)"), Error);
  std::vector<int> negative{-1};
  CHECK_THROWS_AS(agent.observe(std::span<const Obs>(obs), std::span<const int>(negative), step), Error);
  // NaN reward.
  std::vector<int> ok_action{1};
  step.reward[0] = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH_AS(agent.observe(std::span<const Obs>(obs), std::span<const int>(ok_action), step),
                       doctest::Contains("reward of env 0 is nan"), Error);
  // NaN in an observation reaching the replay.
  step.reward[0] = 1.0;
  step.observation[0][1] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(agent.observe(std::span<const Obs>(obs), std::span<const int>(ok_action), step),
                       doctest::Contains("NaN"), Error);
  CHECK(agent.replay().size() == 0);
  // Batch action out of range in a learning step.
  auto batch = agent.replay().make_batch(16);
  batch.action(3, 0) = 7;
  CHECK_THROWS_WITH_AS(agent.learn_from(batch), doctest::Contains("batch action 7 at row 3"), Error);

  // Invalid configuration.
  rl::DQNConfig cfg;
  cfg.gamma = 1.5;
  rl::replay::UniformConfig<1> uc;
  uc.obs_shape = Shape<1>{4};
  uc.capacity = 8;
  using U = rl::DQN<nn::Model<rl::QMlp<4, 2>, float>, rl::target::Plain, UniformReplay>;
  CHECK_THROWS_WITH_AS(U(cfg, UniformReplay(uc)), doctest::Contains("gamma must be in [0, 1]"), Error);
  cfg.gamma = 0.99;
  cfg.train_every = 0;
  CHECK_THROWS_AS(U(cfg, UniformReplay(uc)), Error);

  // The loop refuses an agent's out-of-range action before stepping, and a NaN reward.
  OutOfRangeAgent bad;
  rl::TrainConfig tc;
  tc.total_steps = 10;
  tc.progress = rl::ProgressMode::none;
  rl::TrainLoop<env::CartPole, OutOfRangeAgent> loop(tc, bad);
  CHECK_THROWS_WITH_AS(loop.run(), doctest::Contains("agent action 5 is outside Discrete<2>"), Error);
  SmallDqn fine = make_small_agent(2);
  rl::TrainLoop<NanRewardEnv, SmallDqn> nan_loop(tc, fine);
  CHECK_THROWS_WITH_AS(nan_loop.run(), doctest::Contains("reward nan"), Error);
  rl::TrainConfig bad_cfg;
  bad_cfg.num_envs = 0;
  CHECK_THROWS_WITH_AS((rl::TrainLoop<env::CartPole, SmallDqn>(bad_cfg, fine)), doctest::Contains("num_envs must be >= 1"),
                       Error);
}

TEST_CASE("Boltzmann exploration in DQN's slot: softmax(q / tau) frequencies, tau scheduled and checkpointed") {
  rl::DQNConfig cfg;
  cfg.batch_size = 1;
  rl::replay::UniformConfig<1> uc;
  uc.capacity = 4;
  uc.obs_shape = Shape<1>{3};
  using Soft = rl::DQN<Linear3, rl::target::Plain, UniformReplay, rl::explore::Boltzmann<LinearSchedule>>;
  static_assert(std::string_view(Soft::exploration_label) == "temperature");
  Soft agent(cfg, UniformReplay(uc), rl::explore::Boltzmann<LinearSchedule>({2.0, 0.5, 1000}));
  // Q(s) = W s + b: zero weights, biases (0, 1, 2) → Q = (0, 1, 2) for every observation.
  set_linear(agent.online(), {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}}, {0.f, 1.f, 2.f});
  const int n = 30000;
  std::vector<std::array<float, 3>> obs(static_cast<std::size_t>(n), std::array<float, 3>{0.3f, -1.f, 2.f});
  std::vector<int> actions(static_cast<std::size_t>(n));
  CHECK(agent.epsilon() == 2.0);
  agent.act(std::span<const std::array<float, 3>>(obs), std::span<int>(actions));  // all at tau = 2
  CHECK(agent.exploration().step() == n);
  CHECK(agent.epsilon() == doctest::Approx(0.5));  // the schedule ended at step 1000
  std::array<int, 3> counts{};
  for (int a : actions) ++counts[static_cast<std::size_t>(a)];
  const double z = 1 + std::exp(0.5) + std::exp(1.0);
  for (int a = 0; a < 3; ++a) {
    const double p = std::exp(0.5 * a) / z;  // softmax(q / 2)
    CHECK(std::abs(counts[static_cast<std::size_t>(a)] - n * p) < 5 * std::sqrt(n * p * (1 - p)));
  }
  io::SafetensorsWriter w;
  agent.save(w, "a.");
  Soft restored(cfg, UniformReplay(uc), rl::explore::Boltzmann<LinearSchedule>({2.0, 0.5, 1000}));
  restored.load(io::SafetensorsReader::from_bytes(w.to_bytes()), "a.");
  CHECK(restored.exploration().step() == n);
}

TEST_CASE("DQN load is all or nothing; an n-step replay must discount with the agent's gamma") {
  SmallDqn agent = make_small_agent(1);
  SmallDqn other = make_small_agent(2);
  const auto before = state_bytes(agent);
  // A checkpoint whose replay part is broken (another capacity): networks, optimiser and
  // exploration entries are fine and come first, so a naive load would change them.
  rl::replay::PrioritizedConfig<1> pc;
  pc.capacity = 64;
  pc.obs_shape = Shape<1>{4};
  rl::DQNConfig cfg;
  cfg.batch_size = 16;
  cfg.seed = 2;
  SmallDqn small_replay(cfg, SmallReplay(rl::replay::NStepConfig{3, 0.99, 2}, PerReplay(pc)),
                        EpsilonGreedy<LinearSchedule>({1.0, 0.05, 1000}), rl::sync::Hard{50});
  io::SafetensorsWriter w;
  small_replay.save(w, "");
  CHECK_THROWS_AS(agent.load(io::SafetensorsReader::from_bytes(w.to_bytes()), ""), Error);
  CHECK(state_bytes(agent) == before);
  // A good checkpoint loads.
  io::SafetensorsWriter good;
  other.save(good, "");
  agent.load(io::SafetensorsReader::from_bytes(good.to_bytes()), "");
  CHECK(state_bytes(agent) == state_bytes(other));

  rl::DQNConfig mismatch = cfg;
  mismatch.gamma = 0.9;
  CHECK_THROWS_WITH_AS(SmallDqn(mismatch, SmallReplay(rl::replay::NStepConfig{3, 0.99, 2}, PerReplay(pc))),
                       doctest::Contains("must agree"), Error);
}
