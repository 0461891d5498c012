// cartpole_ppo — PPO (clipped surrogate, GAE, minibatch epochs) on CartPole-v1 through the shared
// training loop (rl/train_loop.hpp), with rl-baselines3-zoo's CartPole settings as defaults:
// 8 environments x 32 steps per rollout, minibatch 256, 20 epochs, γ 0.98, λ 0.8, Adam 1e-3 and
// clip range 0.2 both annealed linearly to 0 over --steps, separate 64-64 tanh networks.
//
// Everything is a function of --seed: the same command prints the same numbers (wall times aside).
// --out gets log.csv and checkpoint.safetensors; --resume continues a run exactly.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

#include "rlmed/env/classic/cartpole.hpp"
#include "rlmed/rl/agents/ppo.hpp"
#include "rlmed/rl/train_loop.hpp"

namespace {
using namespace rlmed;
using Agent = rl::PPO<env::CartPole, rl::SeparateMlp<64>>;

rl::ProgressMode progress_mode(const std::string& s) {
  return s == "bar" ? rl::ProgressMode::bar
         : s == "lines" ? rl::ProgressMode::lines
         : s == "none"  ? rl::ProgressMode::none
                        : rl::ProgressMode::automatic;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"PPO on CartPole-v1 (rlmed)"};
  std::uint64_t seed = 1;
  std::int64_t steps = 100'000;
  std::string out, resume;
  std::int64_t eval_every = 10'000, log_every = 2'000, checkpoint_every = 0;
  int eval_episodes = 20;
  double solve_at = 475.0;
  bool no_early_stop = false, no_anneal = false;
  index_t envs = 8, n_steps = 32, batch = 256;
  int epochs = 20;
  double gamma = 0.98, lambda = 0.8, lr = 1e-3, clip = 0.2, clip_vf = 0.0, ent = 0.0, vf = 0.5, max_grad_norm = 0.5;
  std::string progress = "auto";
  int threads = 1;

  app.add_option("--seed", seed, "seed of every random stream (agent and environments)")->capture_default_str();
  app.add_option("--steps", steps, "environment steps to train for (summed over environments)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--out", out, "output folder for log.csv and checkpoint.safetensors (empty: none)");
  app.add_option("--resume", resume, "checkpoint to continue from (exact continuation)")->check(CLI::ExistingFile);
  app.add_option("--eval-every", eval_every, "environment steps between evaluations")->capture_default_str();
  app.add_option("--eval-episodes", eval_episodes, "greedy episodes per evaluation")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--log-every", log_every, "environment steps between log rows")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--checkpoint-every", checkpoint_every, "environment steps between checkpoints (0: at the end only)")->capture_default_str();
  app.add_option("--solve-at", solve_at, "stop once the evaluation mean return reaches this")->capture_default_str();
  app.add_flag("--no-early-stop", no_early_stop, "train for all --steps even once solved");
  app.add_option("--envs", envs, "training environments stepped together")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--n-steps", n_steps, "steps per environment per rollout")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--batch", batch, "minibatch size")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--epochs", epochs, "passes over each rollout")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--gamma", gamma, "discount")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--lambda", lambda, "GAE lambda")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--lr", lr, "Adam learning rate (start value when annealed)")->capture_default_str();
  app.add_option("--clip", clip, "clip range of the probability ratio")->capture_default_str();
  app.add_option("--clip-vf", clip_vf, "value clip range (0: no value clipping)")->capture_default_str();
  app.add_option("--ent", ent, "entropy coefficient")->capture_default_str();
  app.add_option("--vf", vf, "value-loss coefficient")->capture_default_str();
  app.add_option("--max-grad-norm", max_grad_norm, "global gradient-norm clip (0: off)")->capture_default_str();
  app.add_flag("--no-anneal", no_anneal, "constant learning rate and clip range");
  app.add_option("--progress", progress, "auto | bar | lines | none")->check(CLI::IsMember({"auto", "bar", "lines", "none"}))->capture_default_str();
  app.add_option("--threads", threads, "OpenMP threads")->check(CLI::PositiveNumber)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    set_num_threads(threads);
    rl::PPOConfig c;
    c.n_steps = n_steps;
    c.batch_size = batch;
    c.n_epochs = epochs;
    c.gamma = gamma;
    c.gae_lambda = lambda;
    c.clip_range = clip;
    c.clip_range_vf = clip_vf;
    c.ent_coef = ent;
    c.vf_coef = vf;
    c.max_grad_norm = max_grad_norm;
    c.anneal_steps = no_anneal ? 0 : steps;
    c.seed = seed;
    auto adam = Agent::default_optimizer();
    adam.lr = lr;
    Agent agent(c, env::CartPole{}, adam);

    rl::TrainConfig tc;
    tc.total_steps = steps;
    tc.num_envs = envs;
    tc.seed = seed;
    tc.eval_every = eval_every;
    tc.eval_episodes = eval_episodes;
    tc.log_every = log_every;
    tc.checkpoint_every = checkpoint_every;
    tc.out_dir = out;
    if (!no_early_stop) tc.stop_at_eval_return = solve_at;
    tc.progress = progress_mode(progress);
    rl::TrainLoop<env::CartPole, Agent> loop(tc, agent);
    if (!resume.empty()) {
      loop.resume(resume);
      std::printf("resumed from %s at step %lld\n", resume.c_str(), static_cast<long long>(loop.env_steps()));
    }
    const rl::TrainResult r = loop.run();

    const auto& st = agent.last_stats();
    std::printf("\ncartpole_ppo summary (seed %llu)\n", static_cast<unsigned long long>(seed));
    std::printf("  environment steps   %lld (%lld episodes, %lld rollouts)\n", static_cast<long long>(r.env_steps),
                static_cast<long long>(r.episodes), static_cast<long long>(agent.updates()));
    std::printf("  gradient steps      %lld\n", static_cast<long long>(r.gradient_steps));
    std::printf("  last update         loss %.4g, entropy %.3f, approx KL %.4f, clip fraction %.3f, explained variance %.3f\n",
                st.loss, st.entropy, st.approx_kl, st.clip_fraction, st.explained_variance);
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
    return r.solved_at_step >= 0 || no_early_stop ? 0 : 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cartpole_ppo: %s\n", e.what());
    return 1;
  }
}
