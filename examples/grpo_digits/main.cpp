// grpo_digits — GRPO (group relative policy optimisation, no critic, clipped ratio + k3 KL to a
// frozen reference policy) teaches a small autoregressive MLP to emit K digits that sum to a given
// target (env/toy/digit_sum.hpp).
//
// One iteration samples --prompts targets, --group-size answers per target, scores them with the
// verifier (--reward shaped: 1 if exact, else 0.5 (1 - |sum - S| / 9K); --reward exact: 1 or 0)
// and takes --epochs optimiser steps on the GRPO objective. Every --eval-every iterations all
// 9K + 1 targets are answered greedily; the run stops once --solve-at of them are right.
// The training loop's CsvLog and Progress are used directly (this task steps no Environment);
// --out gets log.csv and checkpoint.safetensors, --resume continues a run exactly.
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "rlmed/env/toy/digit_sum.hpp"
#include "rlmed/rl/agents/grpo.hpp"
#include "rlmed/rl/train_loop.hpp"

namespace {

using namespace rlmed;

struct Options {
  std::uint64_t seed = 1;
  std::int64_t steps = 1'000;  // iterations
  std::string out;
  std::string resume;
  int digits = 4;
  std::string reward = "shaped";
  index_t prompts = 16;
  index_t group_size = 16;
  index_t epochs = 4;
  double lr = 1e-3;
  double beta = 0.04;
  double clip = 0.2;
  std::int64_t ref_sync = 0;
  std::int64_t eval_every = 25;
  std::int64_t log_every = 25;
  std::int64_t checkpoint_every = 250;
  double solve_at = 0.95;
  bool no_early_stop = false;
  std::string progress = "auto";
  int threads = 1;
};

constexpr const char* kFormat = "rlmed-grpo-digits";

template <int K>
int run(const Options& o) {
  using Task = env::toy::DigitSum<K>;
  using Policy = nn::Sequential<nn::Linear<128>, nn::ReLU, nn::Linear<128>, nn::ReLU, nn::Linear<10>>;
  using Agent = rl::agents::GRPO<Task, Policy>;

  rl::agents::GrpoConfig c;
  c.prompts_per_iteration = o.prompts;
  c.group_size = o.group_size;
  c.inner_epochs = o.epochs;
  c.lr = o.lr;
  c.kl_beta = o.beta;
  c.clip_epsilon = o.clip;
  c.reference_sync_every = o.ref_sync;
  c.seed = o.seed;
  env::toy::DigitSumConfig tc;
  tc.reward = o.reward == "exact" ? env::toy::DigitSumReward::exact : env::toy::DigitSumReward::shaped;
  Agent agent(c, Task(tc));

  const std::filesystem::path out_dir = o.out;
  const bool writing = !o.out.empty();
  if (!o.resume.empty()) {
    const auto r = io::SafetensorsReader::open(o.resume);
    const auto meta = r.metadata().find("format");
    RLMED_CHECK(meta != r.metadata().end() && meta->second == kFormat, o.resume, ": not a grpo_digits checkpoint");
    agent.load(r, "agent.");
    std::printf("resumed from %s at iteration %lld\n", o.resume.c_str(), static_cast<long long>(agent.iteration()));
  }
  auto save = [&](const std::filesystem::path& path) {
    io::SafetensorsWriter w;
    agent.save(w, "agent.");
    w.set_metadata("format", kFormat);
    w.set_metadata("digits", std::to_string(K));
    w.write(path);
  };

  const std::vector<std::string> columns{"iteration", "mean_reward", "sampled_accuracy", "loss", "kl",
                                         "clip_fraction", "entropy", "greedy_accuracy", "wall_s"};
  rl::CsvLog log;
  if (writing) {
    std::filesystem::create_directories(out_dir);
    log = o.resume.empty() ? rl::CsvLog(out_dir / "log.csv", columns)
                           : rl::CsvLog::resume(out_dir / "log.csv", columns, agent.iteration());
  }
  const rl::ProgressMode mode = o.progress == "bar"     ? rl::ProgressMode::bar
                                : o.progress == "lines" ? rl::ProgressMode::lines
                                : o.progress == "none"  ? rl::ProgressMode::none
                                                        : rl::ProgressMode::automatic;
  rl::Progress progress(mode, stdout, o.steps, agent.iteration());

  std::vector<int> prompts(Task::num_prompts);
  std::iota(prompts.begin(), prompts.end(), 0);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  double accuracy = nan;
  std::int64_t solved_at = -1;
  char status[160] = "";
  while (agent.iteration() < o.steps) {
    const auto s = agent.iterate();
    const std::int64_t it = agent.iteration();
    const bool evaluate = o.eval_every > 0 && it % o.eval_every == 0;
    if (evaluate) accuracy = agent.greedy_accuracy(prompts);
    std::snprintf(status, sizeof status, "reward %.3f | sampled acc %.3f | kl %.3f | greedy acc %.3f", s.mean_reward,
                  s.accuracy, s.kl, accuracy);
    if (evaluate || it % o.log_every == 0) {
      const double row[] = {s.mean_reward, s.accuracy, s.loss, s.kl, s.clip_fraction, s.entropy,
                            evaluate ? accuracy : nan, progress.elapsed()};
      log.row(it, row);
      progress.line(it, status);
    } else {
      progress.tick(it, status);
    }
    if (writing && o.checkpoint_every > 0 && it % o.checkpoint_every == 0) save(out_dir / "checkpoint.safetensors");
    if (evaluate && accuracy >= o.solve_at && solved_at < 0) {
      solved_at = it;
      if (!o.no_early_stop) break;
    }
  }
  progress.finish(agent.iteration(), status);
  if (std::isnan(accuracy) || agent.iteration() % std::max<std::int64_t>(o.eval_every, 1) != 0)
    accuracy = agent.greedy_accuracy(prompts);
  if (writing) save(out_dir / "checkpoint.safetensors");

  std::printf("\ngrpo_digits summary (seed %llu, K = %d digits, %s reward)\n", static_cast<unsigned long long>(o.seed),
              K, o.reward.c_str());
  std::printf("  iterations          %lld (%lld sampled answers)\n", static_cast<long long>(agent.iteration()),
              static_cast<long long>(agent.iteration() * o.prompts * o.group_size));
  std::printf("  greedy accuracy     %.1f %% of the %d targets\n", 100.0 * accuracy, Task::num_prompts);
  if (solved_at >= 0)
    std::printf("  solved (>= %.0f %%) at iteration %lld\n", 100.0 * o.solve_at, static_cast<long long>(solved_at));
  else
    std::printf("  not solved (>= %.0f %%) within the iteration budget\n", 100.0 * o.solve_at);
  std::vector<int> answers(static_cast<std::size_t>(Task::num_prompts * K));
  agent.generate(prompts, answers, true);
  std::printf("  greedy answers      ");
  for (int target : {0, Task::max_sum / 3, Task::max_sum / 2, Task::max_sum}) {
    std::printf("%d:", target);
    int sum = 0;
    for (int t = 0; t < K; ++t) {
      const int d = answers[static_cast<std::size_t>(target * K + t)];
      sum += d;
      std::printf("%d", d);
    }
    std::printf("%s  ", sum == target ? "" : "(wrong)");
  }
  std::printf("\n  wall time           %.2f s\n", progress.elapsed());
  if (writing) std::printf("  checkpoint          %s\n", (out_dir / "checkpoint.safetensors").string().c_str());
  return solved_at >= 0 || o.no_early_stop ? 0 : 2;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"GRPO on a verifiable toy task: emit K digits that sum to a target (rlmed)"};
  Options o;
  app.add_option("--seed", o.seed, "seed of every random stream")->capture_default_str();
  app.add_option("--steps", o.steps, "GRPO iterations to train for")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--out", o.out, "output folder for log.csv and checkpoint.safetensors (empty: none)");
  app.add_option("--resume", o.resume, "checkpoint to continue from (exact continuation)")->check(CLI::ExistingFile);
  app.add_option("--digits", o.digits, "K, digits per answer")->check(CLI::IsMember({3, 4, 5}))->capture_default_str();
  app.add_option("--reward", o.reward, "shaped | exact")->check(CLI::IsMember({"shaped", "exact"}))->capture_default_str();
  app.add_option("--prompts", o.prompts, "targets per iteration")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--group-size", o.group_size, "answers sampled per target (G)")->check(CLI::Range(2, 4096))->capture_default_str();
  app.add_option("--epochs", o.epochs, "optimiser steps per sampled batch (mu)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--lr", o.lr, "Adam learning rate")->capture_default_str();
  app.add_option("--beta", o.beta, "KL penalty weight (k3 estimator)")->capture_default_str();
  app.add_option("--clip", o.clip, "ratio clip epsilon")->capture_default_str();
  app.add_option("--ref-sync", o.ref_sync, "> 0: reference policy <- current policy every that many iterations")->capture_default_str();
  app.add_option("--eval-every", o.eval_every, "iterations between greedy evaluations of all targets")->capture_default_str();
  app.add_option("--log-every", o.log_every, "iterations between log rows")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--checkpoint-every", o.checkpoint_every, "iterations between checkpoints (0: at the end only)")->capture_default_str();
  app.add_option("--solve-at", o.solve_at, "stop once this fraction of targets is answered right")->capture_default_str();
  app.add_flag("--no-early-stop", o.no_early_stop, "train for all --steps even once solved");
  app.add_option("--progress", o.progress, "auto | bar | lines | none")->check(CLI::IsMember({"auto", "bar", "lines", "none"}))->capture_default_str();
  app.add_option("--threads", o.threads, "OpenMP threads")->check(CLI::PositiveNumber)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    set_num_threads(o.threads);
    switch (o.digits) {
      case 3: return run<3>(o);
      case 5: return run<5>(o);
      default: return run<4>(o);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "grpo_digits: %s\n", e.what());
    return 1;
  }
}
