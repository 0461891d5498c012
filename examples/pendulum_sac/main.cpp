// pendulum_sac — Soft Actor-Critic (twin soft Q critics, tanh-squashed Gaussian actor, automatic
// temperature) on Pendulum-v1, through the shared training loop (rl/train_loop.hpp).
//
// Defaults: the paper's numbers (rl/agents/sac.hpp) except Adam 1e-3 instead of 3e-4 and 1,000
// uniform random start steps instead of 10,000 — what solves Pendulum in a few thousand steps —
// with two hidden ReLU layers of 64 units (--hidden 256 gives the paper's width).
// Everything is a function of --seed: the same command prints the same numbers (wall times
// aside). --out gets log.csv and checkpoint.safetensors; --resume continues a run exactly.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <string>

#include "rlmed/env/classic/pendulum.hpp"
#include "rlmed/rl/agents/sac.hpp"
#include "rlmed/rl/train_loop.hpp"

namespace {

using namespace rlmed;

struct Options {
  std::uint64_t seed = 1;
  std::int64_t steps = 20'000;
  std::string out;
  std::string resume;
  std::int64_t eval_every = 1'000;
  int eval_episodes = 20;
  std::int64_t log_every = 1'000;
  std::int64_t checkpoint_every = 5'000;
  double solve_at = -200.0;
  bool no_early_stop = false;
  int hidden = 64;
  double lr = 1e-3;
  index_t batch = 256;
  index_t buffer = 1'000'000;
  std::int64_t random_steps = 1'000;
  std::int64_t learning_starts = 1'000;
  double gamma = 0.99;
  double tau = 0.005;
  double initial_alpha = 1.0;
  double fixed_alpha = 0.0;
  std::string progress = "auto";
  int threads = 1;
};

template <int Hidden>
int run(const Options& o) {
  using Actor = nn::Sequential<nn::Linear<Hidden>, nn::ReLU, nn::Linear<Hidden>, nn::ReLU, nn::GaussianPolicyHead<1>>;
  using Critic = nn::Sequential<nn::Linear<Hidden>, nn::ReLU, nn::Linear<Hidden>, nn::ReLU, nn::Linear<1>>;
  using Agent = rl::agents::SAC<env::Pendulum, Actor, Critic>;

  rl::agents::SacConfig c;
  c.gamma = o.gamma;
  c.tau = o.tau;
  c.actor_lr = c.critic_lr = c.alpha_lr = o.lr;
  c.batch_size = o.batch;
  c.buffer_capacity = o.buffer;
  c.random_steps = o.random_steps;
  c.learning_starts = o.learning_starts;
  c.initial_alpha = o.fixed_alpha > 0 ? o.fixed_alpha : o.initial_alpha;
  c.auto_alpha = o.fixed_alpha <= 0;
  c.seed = o.seed;
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

  std::printf("\npendulum_sac summary (seed %llu, %d-%d ReLU networks)\n", static_cast<unsigned long long>(o.seed),
              Hidden, Hidden);
  std::printf("  environment steps   %lld (%lld episodes)\n", static_cast<long long>(r.env_steps),
              static_cast<long long>(r.episodes));
  std::printf("  gradient steps      %lld\n", static_cast<long long>(r.gradient_steps));
  std::printf("  temperature alpha   %.4f (target entropy %.1f)\n", agent.alpha(), agent.target_entropy());
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Soft Actor-Critic with automatic temperature on Pendulum-v1 (rlmed)"};
  Options o;
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
  app.add_option("--hidden", o.hidden, "units of each of the two hidden layers (64, or the paper's 256)")->check(CLI::IsMember({64, 256}))->capture_default_str();
  app.add_option("--lr", o.lr, "Adam learning rate of actor, critics and temperature (paper: 3e-4)")->capture_default_str();
  app.add_option("--batch", o.batch, "minibatch size")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--buffer", o.buffer, "replay capacity")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--random-steps", o.random_steps, "uniform random actions for the first steps")->capture_default_str();
  app.add_option("--learning-starts", o.learning_starts, "environment steps before the first update")->capture_default_str();
  app.add_option("--gamma", o.gamma, "discount")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--tau", o.tau, "Polyak rate of the target critics")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--initial-alpha", o.initial_alpha, "initial temperature")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--fixed-alpha", o.fixed_alpha, "> 0: a fixed temperature instead of the automatic one")->capture_default_str();
  app.add_option("--progress", o.progress, "auto | bar | lines | none")->check(CLI::IsMember({"auto", "bar", "lines", "none"}))->capture_default_str();
  app.add_option("--threads", o.threads, "OpenMP threads (small networks: 1 is fastest)")->check(CLI::PositiveNumber)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    set_num_threads(o.threads);
    return o.hidden == 256 ? run<256>(o) : run<64>(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pendulum_sac: %s\n", e.what());
    return 1;
  }
}
