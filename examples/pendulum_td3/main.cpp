// pendulum_td3 — TD3 (twin critics, clipped target policy smoothing, delayed actor updates) or,
// with --algo ddpg, DDPG (one critic, Ornstein–Uhlenbeck exploration) on Pendulum-v1, through the
// shared training loop (rl/train_loop.hpp).
//
// Defaults: each algorithm's paper numbers (rl/agents/td3.hpp: td3_defaults, ddpg_defaults) with
// two hidden ReLU layers of 64 units (--hidden 256 for wider ones; the papers used 400-300),
// batch 256 and 1,000 uniform random start steps. Any number given on the command line overrides
// the paper default. Everything is a function of --seed; --out gets log.csv and
// checkpoint.safetensors; --resume continues a run exactly.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>

#include "rlmed/env/classic/pendulum.hpp"
#include "rlmed/rl/agents/ddpg.hpp"
#include "rlmed/rl/agents/td3.hpp"
#include "rlmed/rl/train_loop.hpp"

namespace {

using namespace rlmed;

struct Options {
  std::string algo = "td3";
  std::uint64_t seed = 1;
  std::int64_t steps = 30'000;
  std::string out;
  std::string resume;
  std::int64_t eval_every = 1'000;
  int eval_episodes = 20;
  std::int64_t log_every = 1'000;
  std::int64_t checkpoint_every = 5'000;
  double solve_at = -200.0;
  bool no_early_stop = false;
  int hidden = 64;
  index_t batch = 256;
  index_t buffer = 1'000'000;
  std::int64_t random_steps = 1'000;
  std::int64_t learning_starts = 1'000;
  // unset: the algorithm's paper default
  std::optional<double> actor_lr, critic_lr, critic_weight_decay, tau, gamma, noise;
  std::optional<std::int64_t> policy_delay;
  std::string progress = "auto";
  int threads = 1;
};

template <class Agent>
int train(const Options& o) {
  auto c = Agent::paper_defaults();
  c.batch_size = o.batch;
  c.buffer_capacity = o.buffer;
  c.random_steps = o.random_steps;
  c.learning_starts = o.learning_starts;
  c.seed = o.seed;
  if (o.actor_lr) c.actor_lr = *o.actor_lr;
  if (o.critic_lr) c.critic_lr = *o.critic_lr;
  if (o.critic_weight_decay) c.critic_weight_decay = *o.critic_weight_decay;
  if (o.tau) c.tau = *o.tau;
  if (o.gamma) c.gamma = *o.gamma;
  if (o.noise) c.exploration.sigma = *o.noise;
  if (o.policy_delay) c.policy_delay = *o.policy_delay;
  Agent agent(c);

  rl::TrainConfig tc;
  tc.total_steps = o.steps;
  tc.seed = o.seed;
  tc.eval_every = o.eval_every;
  tc.eval_episodes = o.eval_episodes;
  tc.log_every = o.log_every;
  tc.checkpoint_every = o.checkpoint_every;
  tc.out_dir = o.out;
  if (!o.no_early_stop) tc.stop_at_eval_return = o.solve_at;
  tc.progress = o.progress == "bar"     ? rl::ProgressMode::bar
                : o.progress == "lines" ? rl::ProgressMode::lines
                : o.progress == "none"  ? rl::ProgressMode::none
                                        : rl::ProgressMode::automatic;
  rl::TrainLoop<env::Pendulum, Agent> loop(tc, agent);
  if (!o.resume.empty()) {
    loop.resume(o.resume);
    std::printf("resumed from %s at step %lld\n", o.resume.c_str(), static_cast<long long>(loop.env_steps()));
  }
  const rl::TrainResult r = loop.run();

  std::printf("\npendulum_td3 summary (--algo %s, seed %llu, %d-%d ReLU networks)\n", o.algo.c_str(),
              static_cast<unsigned long long>(o.seed), o.hidden, o.hidden);
  std::printf("  config              actor lr %g, critic lr %g (L2 %g), tau %g, batch %lld, delay %lld, "
              "target noise %g, exploration sigma %g\n",
              c.actor_lr, c.critic_lr, c.critic_weight_decay, c.tau, static_cast<long long>(c.batch_size),
              static_cast<long long>(c.policy_delay), c.target_noise, c.exploration.sigma);
  std::printf("  environment steps   %lld (%lld episodes)\n", static_cast<long long>(r.env_steps),
              static_cast<long long>(r.episodes));
  std::printf("  gradient steps      %lld (actor: %lld)\n", static_cast<long long>(r.gradient_steps),
              static_cast<long long>(agent.actor_updates()));
  if (r.last_eval)
    std::printf("  final evaluation    %.1f ± %.1f over %d deterministic episodes\n", r.last_eval->mean_return,
                r.last_eval->std_return, o.eval_episodes);
  if (r.solved_at_step >= 0)
    std::printf("  solved (>= %.0f) at step %lld\n", o.solve_at, static_cast<long long>(r.solved_at_step));
  else
    std::printf("  not solved (>= %.0f) within the step budget\n", o.solve_at);
  std::printf("  wall time           %.2f s (%.0f env steps/s, %.0f updates/s)\n", r.wall_seconds,
              r.wall_seconds > 0 ? static_cast<double>(r.env_steps) / r.wall_seconds : 0.0,
              r.wall_seconds > 0 ? static_cast<double>(r.gradient_steps) / r.wall_seconds : 0.0);
  if (!r.checkpoint.empty()) std::printf("  checkpoint          %s\n", r.checkpoint.string().c_str());
  return r.solved_at_step >= 0 || o.no_early_stop ? 0 : 2;
}

template <int Hidden>
int run(const Options& o) {
  using Actor = nn::Sequential<nn::Linear<Hidden>, nn::ReLU, nn::Linear<Hidden>, nn::ReLU, nn::Linear<1>, nn::Tanh>;
  using Critic = nn::Sequential<nn::Linear<Hidden>, nn::ReLU, nn::Linear<Hidden>, nn::ReLU, nn::Linear<1>>;
  if (o.algo == "ddpg") return train<rl::agents::DDPG<env::Pendulum, Actor, Critic>>(o);
  return train<rl::agents::TD3<env::Pendulum, Actor, Critic>>(o);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"TD3 (or DDPG with --algo ddpg) on Pendulum-v1 (rlmed)"};
  Options o;
  auto opt_double = [&](const char* name, std::optional<double>& slot, const char* help) {
    app.add_option_function<double>(name, [&slot](const double& v) { slot = v; }, help);
  };
  app.add_option("--algo", o.algo, "td3 | ddpg")->check(CLI::IsMember({"td3", "ddpg"}))->capture_default_str();
  app.add_option("--seed", o.seed, "seed of every random stream (agent and environments)")->capture_default_str();
  app.add_option("--steps", o.steps, "environment steps to train for")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--out", o.out, "output folder for log.csv and checkpoint.safetensors (empty: none)");
  app.add_option("--resume", o.resume, "checkpoint to continue from (exact continuation)")->check(CLI::ExistingFile);
  app.add_option("--eval-every", o.eval_every, "environment steps between evaluations")->capture_default_str();
  app.add_option("--eval-episodes", o.eval_episodes, "deterministic episodes per evaluation")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--log-every", o.log_every, "environment steps between log rows")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--checkpoint-every", o.checkpoint_every, "environment steps between checkpoints (0: at the end only)")->capture_default_str();
  app.add_option("--solve-at", o.solve_at, "stop once the evaluation mean return reaches this")->capture_default_str();
  app.add_flag("--no-early-stop", o.no_early_stop, "train for all --steps even once solved");
  app.add_option("--hidden", o.hidden, "units of each of the two hidden layers")->check(CLI::IsMember({64, 256}))->capture_default_str();
  app.add_option("--batch", o.batch, "minibatch size (papers: TD3 100, DDPG 64)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--buffer", o.buffer, "replay capacity")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--random-steps", o.random_steps, "uniform random actions for the first steps")->capture_default_str();
  app.add_option("--learning-starts", o.learning_starts, "environment steps before the first update")->capture_default_str();
  opt_double("--actor-lr", o.actor_lr, "actor Adam learning rate (TD3 1e-3, DDPG 1e-4)");
  opt_double("--critic-lr", o.critic_lr, "critic Adam learning rate (1e-3)");
  opt_double("--critic-l2", o.critic_weight_decay, "critic L2 weight decay (TD3 0, DDPG 1e-2)");
  opt_double("--tau", o.tau, "Polyak rate of the targets (TD3 0.005, DDPG 0.001)");
  opt_double("--gamma", o.gamma, "discount (0.99)");
  opt_double("--noise", o.noise, "exploration sigma in policy units (TD3 Gaussian 0.1, DDPG OU 0.2)");
  app.add_option_function<std::int64_t>("--policy-delay", [&o](const std::int64_t& v) { o.policy_delay = v; },
                                        "critic steps per actor step (TD3 2, DDPG 1)");
  app.add_option("--progress", o.progress, "auto | bar | lines | none")->check(CLI::IsMember({"auto", "bar", "lines", "none"}))->capture_default_str();
  app.add_option("--threads", o.threads, "OpenMP threads (small networks: 1 is fastest)")->check(CLI::PositiveNumber)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    set_num_threads(o.threads);
    return o.hidden == 256 ? run<256>(o) : run<64>(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pendulum_td3: %s\n", e.what());
    return 1;
  }
}
