// cartpole_a2c — policy-gradient agents on CartPole-v1: A2C, A3C and REINFORCE.
//
//   cartpole_a2c                     A2C: --envs environments stepped in lockstep through the shared
//                                    training loop, one gradient step per 5-step rollout (SB3 defaults)
//   cartpole_a2c --workers N         A3C: N worker threads, each with its own environment, network
//                                    copy and Philox streams, applying gradients to shared parameters
//                                    and shared RMSprop statistics; round-robin (deterministic) order
//   cartpole_a2c --workers N --async A3C in the paper's asynchronous order (not reproducible bit for bit)
//   cartpole_a2c --reinforce         REINFORCE (Williams 1992) with a learned baseline: one complete
//                                    episode per gradient step, Adam (--lr, default 1e-3), --envs 1
//
// Everything else is a function of --seed. --out gets log.csv and checkpoint.safetensors; --resume
// continues a run exactly (A3C: in deterministic mode).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

#include "rlmed/env/classic/cartpole.hpp"
#include "rlmed/rl/agents/a2c.hpp"
#include "rlmed/rl/agents/a3c.hpp"
#include "rlmed/rl/agents/reinforce.hpp"
#include "rlmed/rl/train_loop.hpp"

namespace {
using namespace rlmed;
using Net = rl::SeparateMlp<64>;
using A2CAgent = rl::A2C<env::CartPole, Net>;
using A3CAgent = rl::A3C<env::CartPole, Net>;
using ReinforceAgent = rl::Reinforce<env::CartPole, Net>;

rl::ProgressMode progress_mode(const std::string& s) {
  return s == "bar" ? rl::ProgressMode::bar
         : s == "lines" ? rl::ProgressMode::lines
         : s == "none"  ? rl::ProgressMode::none
                        : rl::ProgressMode::automatic;
}

void summary(const char* what, std::uint64_t seed, const rl::TrainResult& r, double solve_at, int eval_episodes) {
  std::printf("\ncartpole_a2c summary: %s (seed %llu)\n", what, static_cast<unsigned long long>(seed));
  std::printf("  environment steps   %lld (%lld episodes)\n", static_cast<long long>(r.env_steps),
              static_cast<long long>(r.episodes));
  std::printf("  gradient steps      %lld\n", static_cast<long long>(r.gradient_steps));
  if (r.last_eval)
    std::printf("  final evaluation    %.1f ± %.1f over %d greedy episodes\n", r.last_eval->mean_return,
                r.last_eval->std_return, eval_episodes);
  if (r.solved_at_step >= 0)
    std::printf("  solved (>= %.0f) at  step %lld\n", solve_at, static_cast<long long>(r.solved_at_step));
  else
    std::printf("  not solved (>= %.0f) within the step budget\n", solve_at);
  std::printf("  wall time           %.2f s (%.0f env steps/s, %.0f updates/s)\n", r.wall_seconds,
              r.wall_seconds > 0 ? static_cast<double>(r.env_steps) / r.wall_seconds : 0.0,
              r.wall_seconds > 0 ? static_cast<double>(r.gradient_steps) / r.wall_seconds : 0.0);
  if (!r.checkpoint.empty()) std::printf("  checkpoint          %s\n", r.checkpoint.string().c_str());
}
/// Continues from `resume` when given (an exact continuation), then trains.
template <class Loop>
rl::TrainResult resume_and_run(Loop& loop, const std::string& resume) {
  if (!resume.empty()) {
    loop.resume(resume);
    std::printf("resumed from %s at step %lld\n", resume.c_str(), static_cast<long long>(loop.env_steps()));
  }
  return loop.run();
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"A2C (or, with --workers, A3C; with --reinforce, REINFORCE) on CartPole-v1 (rlmed)"};
  std::uint64_t seed = 1;
  std::int64_t steps = 200'000;
  std::string out, resume;
  std::int64_t eval_every = 10'000, log_every = 2'000, checkpoint_every = 0;
  int eval_episodes = 20;
  double solve_at = 475.0;
  bool no_early_stop = false, async = false, reinforce = false;
  int workers = 0;
  index_t envs = 8, n_steps = 5;
  double gamma = 0.99, lambda = 1.0, lr = 7e-4, ent = -1.0, vf = 0.5, max_grad_norm = -1.0;
  std::string progress = "auto";
  int threads = 1;

  app.add_option("--seed", seed, "seed of every random stream (agent and environments)")->capture_default_str();
  app.add_option("--steps", steps, "environment steps to train for (summed over environments / workers)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--out", out, "output folder for log.csv and checkpoint.safetensors (empty: none)");
  app.add_option("--resume", resume, "checkpoint to continue from (exact continuation)")->check(CLI::ExistingFile);
  app.add_option("--workers", workers, "A3C worker threads (0: synchronous A2C)")->check(CLI::Range(0, 256))->capture_default_str();
  app.add_flag("--reinforce", reinforce, "REINFORCE with a learned baseline instead of A2C (uses --gamma, --lr, --ent, --vf, --max-grad-norm)");
  app.add_flag("--async", async, "A3C: apply updates in arrival order (the paper's; not bit-reproducible)");
  app.add_option("--envs", envs, "A2C: environments stepped together; A3C: environments per worker")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--eval-every", eval_every, "environment steps between evaluations")->capture_default_str();
  app.add_option("--eval-episodes", eval_episodes, "greedy episodes per evaluation")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--log-every", log_every, "environment steps between log rows")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--checkpoint-every", checkpoint_every, "environment steps between checkpoints (0: at the end only)")->capture_default_str();
  app.add_option("--solve-at", solve_at, "stop once the evaluation mean return reaches this")->capture_default_str();
  app.add_flag("--no-early-stop", no_early_stop, "train for all --steps even once solved");
  app.add_option("--n-steps", n_steps, "steps per environment per update (A3C: t_max)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--gamma", gamma, "discount")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--lambda", lambda, "GAE lambda (1: n-step returns)")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--lr", lr, "learning rate (RMSprop for A2C/A3C; REINFORCE: Adam, default 1e-3)")->capture_default_str();
  app.add_option("--ent", ent, "entropy coefficient (default: 0 for A2C, 0.01 for A3C)");
  app.add_option("--vf", vf, "value-loss coefficient")->capture_default_str();
  app.add_option("--max-grad-norm", max_grad_norm, "global gradient-norm clip (default: 0.5 for A2C, 40 for A3C; 0: off)");
  app.add_option("--progress", progress, "auto | bar | lines | none")->check(CLI::IsMember({"auto", "bar", "lines", "none"}))->capture_default_str();
  app.add_option("--threads", threads, "OpenMP threads (A2C; A3C workers run one each)")->check(CLI::PositiveNumber)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    set_num_threads(threads);
    rl::TrainConfig tc;
    tc.total_steps = steps;
    tc.seed = seed;
    tc.eval_every = eval_every;
    tc.eval_episodes = eval_episodes;
    tc.log_every = log_every;
    tc.checkpoint_every = checkpoint_every;
    tc.out_dir = out;
    if (!no_early_stop) tc.stop_at_eval_return = solve_at;
    tc.progress = progress_mode(progress);

    rl::TrainResult r;
    if (reinforce) {
      RLMED_CHECK(workers == 0 && !async, "--reinforce does not take --workers or --async");
      rl::ReinforceConfig c;
      c.gamma = gamma;
      c.ent_coef = ent >= 0 ? ent : 0.0;
      c.vf_coef = vf;
      c.max_grad_norm = max_grad_norm >= 0 ? max_grad_norm : 0.0;
      c.seed = seed;
      auto opt = ReinforceAgent::default_optimizer();
      opt.lr = app.count("--lr") ? lr : 1e-3;
      ReinforceAgent agent(c, env::CartPole{}, opt);
      tc.num_envs = app.count("--envs") ? envs : 1;
      rl::TrainLoop<env::CartPole, ReinforceAgent> loop(tc, agent);
      r = resume_and_run(loop, resume);
      summary("REINFORCE with baseline", seed, r, solve_at, eval_episodes);
    } else if (workers == 0) {
      if (async) std::fprintf(stderr, "cartpole_a2c: --async has no effect without --workers\n");
      rl::A2CConfig c;
      c.n_steps = n_steps;
      c.gamma = gamma;
      c.gae_lambda = lambda;
      c.ent_coef = ent >= 0 ? ent : 0.0;
      c.vf_coef = vf;
      c.max_grad_norm = max_grad_norm >= 0 ? max_grad_norm : 0.5;
      c.seed = seed;
      auto opt = A2CAgent::default_optimizer();
      opt.lr = lr;
      A2CAgent agent(c, env::CartPole{}, opt);
      tc.num_envs = envs;
      rl::TrainLoop<env::CartPole, A2CAgent> loop(tc, agent);
      r = resume_and_run(loop, resume);
      summary("A2C", seed, r, solve_at, eval_episodes);
    } else {
      rl::A3CConfig c;
      c.workers = workers;
      c.envs_per_worker = app.count("--envs") ? envs : 1;
      c.t_max = n_steps;
      c.gamma = gamma;
      c.gae_lambda = lambda;
      c.ent_coef = ent >= 0 ? ent : 0.01;
      c.vf_coef = vf;
      c.max_grad_norm = max_grad_norm >= 0 ? max_grad_norm : 40.0;
      c.deterministic = !async;
      c.seed = seed;
      auto opt = A3CAgent::default_optimizer();
      opt.lr = lr;
      A3CAgent agent(c, env::CartPole{}, opt);
      rl::A3CTrainLoop<env::CartPole, A3CAgent> loop(tc, agent);
      r = resume_and_run(loop, resume);
      const std::string what = "A3C, " + std::to_string(workers) + " workers x " + std::to_string(c.envs_per_worker) +
                               " env, " + (async ? "asynchronous" : "deterministic round-robin");
      summary(what.c_str(), seed, r, solve_at, eval_episodes);
    }
    return r.solved_at_step >= 0 || no_early_stop ? 0 : 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cartpole_a2c: %s\n", e.what());
    return 1;
  }
}
