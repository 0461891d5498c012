// cartpole_dqn — Double DQN with a dueling network, prioritized replay and n-step returns on
// CartPole-v1, through the shared training loop (rl/train_loop.hpp).
//
// Everything is a function of --seed: the same command prints the same numbers (wall times
// aside). --out gets log.csv (one row per --log-every steps and per evaluation) and
// checkpoint.safetensors (every --checkpoint-every steps and at the end); --resume continues a
// run from such a checkpoint exactly as if it had never stopped (give it the same options; the
// checkpoint holds the state, the options the hyper-parameters). Exit status: 0 when solved (or
// with --no-early-stop), 2 when the step budget ran out first, 1 on an error.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <string>

#include "rlmed/env/classic/cartpole.hpp"
#include "rlmed/rl/agents/dqn.hpp"
#include "rlmed/rl/replay/nstep.hpp"
#include "rlmed/rl/replay/prioritized.hpp"
#include "rlmed/rl/train_loop.hpp"

namespace {

using namespace rlmed;
using Net = nn::Model<rl::DuelingQMlp<64, 2>, float>;
using Replay = rl::replay::NStep<rl::replay::Prioritized<float, 1, int>>;
using Agent = rl::DQN<Net, rl::target::Double, Replay, rl::explore::EpsilonGreedy<rl::explore::LinearSchedule>,
                      rl::sync::Hard, nn::optim::Adam<float>>;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Double + Dueling + PER (+ n-step) DQN on CartPole-v1 (rlmed)"};
  std::uint64_t seed = 1;
  std::int64_t steps = 50'000;
  std::string out;
  std::string resume;
  std::int64_t eval_every = 2'500;
  int eval_episodes = 20;
  std::int64_t log_every = 1'000;
  std::int64_t checkpoint_every = 10'000;
  std::int64_t stop_at = 0;
  double solve_at = 475.0;
  bool no_early_stop = false;
  int n_step = 3;
  double lr = 1e-3;
  index_t batch = 64;
  index_t buffer = 50'000;
  std::int64_t learning_starts = 1'000;
  std::int64_t train_every = 1;
  std::int64_t target_every = 500;
  std::int64_t eps_steps = 10'000;
  double eps_end = 0.02;
  double gamma = 0.99;
  double alpha = 0.6, beta0 = 0.4;
  std::int64_t beta_steps = 50'000;
  std::string progress = "auto";
  int threads = 1;

  app.add_option("--seed", seed, "seed of every random stream (agent and environments)")->capture_default_str();
  app.add_option("--steps", steps, "environment steps to train for")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--out", out, "output folder for log.csv and checkpoint.safetensors (empty: none)");
  app.add_option("--resume", resume,
                 "checkpoint to continue from (exact continuation; pass the interrupted run's other options)")
      ->check(CLI::ExistingFile);
  app.add_option("--eval-every", eval_every, "environment steps between evaluations")->capture_default_str();
  app.add_option("--eval-episodes", eval_episodes, "greedy episodes per evaluation")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--log-every", log_every, "environment steps between log rows")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--checkpoint-every", checkpoint_every, "environment steps between checkpoints (0: at the end only)")->capture_default_str();
  app.add_option("--stop-at", stop_at, "stop at this step as if interrupted, writing a checkpoint (0: never)")
      ->capture_default_str();
  app.add_option("--solve-at", solve_at, "stop once the evaluation mean return reaches this")->capture_default_str();
  app.add_flag("--no-early-stop", no_early_stop, "train for all --steps even once solved");
  app.add_option("--n-step", n_step, "n of the n-step returns (1: plain one-step TD)")->check(CLI::Range(1, 20))->capture_default_str();
  app.add_option("--lr", lr, "Adam learning rate")->capture_default_str();
  app.add_option("--batch", batch, "minibatch size")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--buffer", buffer, "replay capacity")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--learning-starts", learning_starts, "steps before the first update")->capture_default_str();
  app.add_option("--train-every", train_every, "environment steps between gradient steps")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--target-every", target_every, "gradient steps between hard target updates")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--eps-steps", eps_steps, "steps over which epsilon falls from 1 to --eps-end")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--eps-end", eps_end, "final epsilon")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--gamma", gamma, "discount")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--alpha", alpha, "PER priority exponent")->capture_default_str();
  app.add_option("--beta0", beta0, "PER initial importance exponent")->capture_default_str();
  app.add_option("--beta-steps", beta_steps, "gradient steps over which the PER exponent reaches 1")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--progress", progress, "auto | bar | lines | none")->check(CLI::IsMember({"auto", "bar", "lines", "none"}))->capture_default_str();
  app.add_option("--threads", threads, "OpenMP threads")->check(CLI::PositiveNumber)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    set_num_threads(threads);
    rl::replay::PrioritizedConfig<1> per;
    per.capacity = buffer;
    per.obs_shape = Shape<1>{4};
    per.alpha = alpha;
    per.beta0 = beta0;
    per.beta_steps = beta_steps;
    Replay replay(rl::replay::NStepConfig{n_step, gamma, 1}, rl::replay::Prioritized<float, 1, int>(per));

    rl::DQNConfig dqn;
    dqn.gamma = gamma;
    dqn.batch_size = batch;
    dqn.learning_starts = learning_starts;
    dqn.train_every = train_every;
    dqn.seed = seed;
    nn::optim::AdamConfig adam;
    adam.lr = lr;
    Agent agent(dqn, std::move(replay),
                rl::explore::EpsilonGreedy<rl::explore::LinearSchedule>({1.0, eps_end, eps_steps}),
                rl::sync::Hard{target_every}, adam);

    rl::TrainConfig tc;
    tc.total_steps = steps;
    tc.seed = seed;
    tc.eval_every = eval_every;
    tc.eval_episodes = eval_episodes;
    tc.log_every = log_every;
    tc.checkpoint_every = checkpoint_every;
    tc.out_dir = out;
    tc.stop_at_step = stop_at;
    if (!no_early_stop) tc.stop_at_eval_return = solve_at;
    tc.progress = progress == "bar"     ? rl::ProgressMode::bar
                  : progress == "lines" ? rl::ProgressMode::lines
                  : progress == "none"  ? rl::ProgressMode::none
                                        : rl::ProgressMode::automatic;
    rl::TrainLoop<env::CartPole, Agent> loop(tc, agent);
    if (!resume.empty()) {
      loop.resume(resume);
      std::printf("resumed from %s at step %lld\n", resume.c_str(), static_cast<long long>(loop.env_steps()));
    }
    const rl::TrainResult r = loop.run();

    std::printf("\ncartpole_dqn summary (seed %llu)\n", static_cast<unsigned long long>(seed));
    std::printf("  environment steps   %lld (%lld episodes)\n", static_cast<long long>(r.env_steps),
                static_cast<long long>(r.episodes));
    std::printf("  gradient steps      %lld\n", static_cast<long long>(r.gradient_steps));
    if (r.last_eval)
      std::printf("  final evaluation    %.1f ± %.1f over %d greedy episodes\n", r.last_eval->mean_return,
                  r.last_eval->std_return, eval_episodes);
    if (r.solved_at_step >= 0)
      std::printf("  solved (>= %.0f) at  step %lld\n", solve_at, static_cast<long long>(r.solved_at_step));
    else if (!r.interrupted)
      std::printf("  not solved (>= %.0f) within the step budget\n", solve_at);
    std::printf("  wall time           %.2f s this run (%.0f env steps/s, %.0f updates/s)\n", r.wall_seconds,
                r.wall_seconds > 0 ? static_cast<double>(r.env_steps - r.start_env_steps) / r.wall_seconds : 0.0,
                r.wall_seconds > 0 ? static_cast<double>(r.gradient_steps - r.start_gradient_steps) / r.wall_seconds
                                   : 0.0);
    if (!r.checkpoint.empty()) std::printf("  checkpoint          %s\n", r.checkpoint.string().c_str());
    if (r.interrupted) {
      std::printf("  stopped at step %lld as asked (--stop-at); continue with --resume\n",
                  static_cast<long long>(r.env_steps));
      return 0;
    }
    return r.solved_at_step >= 0 || no_early_stop ? 0 : 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cartpole_dqn: %s\n", e.what());
    return 1;
  }
}
