// rlmed/rl/train_loop.hpp — the one training loop every RL example uses: N training environments,
// evaluation on separate environment copies, a CSV log, a progress bar, atomic checkpoints and
// exact resume.
//
// ─── API (stable; other agent families adopt it) ────────────────────────────────────────────────
//
//   Agent concept, for an environment type Env (Obs = Env::observation_type, Act = Env::action_type):
//     void       agent.act(std::span<const Obs> obs, std::span<Act> actions);
//                  exploratory actions for the N training envs (draws only from the agent's own
//                  Philox streams; may cache per-step data such as log-probs and values)
//     void       agent.observe(std::span<const Obs> obs, std::span<const Act> actions,
//                              const VectorStep<Obs>& step);
//                  the result of acting: obs[i] is what act() saw, step.observation[i] the next
//                  observation (already the FIRST one of a new episode where step.done(i)),
//                  step.final_observation[i] the last one of the episode that ended there
//                  (bootstrap from it when step.truncated[i]). Store transitions / rollouts here.
//     UpdateInfo agent.update(std::int64_t env_steps);
//                  called once after every observe with the total environment steps so far
//                  (summed over envs). The agent decides whether to learn (learning starts,
//                  train frequency, full rollout) and reports what it did.
//     void       agent.evaluate_actions(std::span<const Obs> obs, std::span<Act> actions);
//                  greedy / deterministic actions; must not change any learning state (no RNG
//                  draws, no counters) — evaluation never perturbs training.
//     void       agent.save(io::SafetensorsWriter& w, const std::string& prefix) const;
//     void       agent.load(const io::SafetensorsReader& r, const std::string& prefix);
//                  the COMPLETE learning state under tensor names "<prefix>...": networks,
//                  optimiser moments and step counts, RNG stream positions, replay / rollout
//                  contents, schedules, counters. Helpers below: ckpt::save_module,
//                  ckpt::save_optimizer, ckpt::save_stream, ckpt::save_i64, ckpt::save_f64.
//     optional:  static constexpr const char* exploration_label = "epsilon";  // or "entropy"
//                  names the UpdateInfo::exploration column of the CSV log.
//
//   struct UpdateInfo { gradient_steps (this call), loss (mean over them), exploration (ε or
//                       entropy, NaN when unknown) }.
//
//   TrainLoop<Env, Agent> loop(TrainConfig{...}, agent, Env{config});
//     loop.resume(path)            restore a checkpoint written by this loop (exact continuation;
//                                  the run's seed comes from the file, not from the config)
//     TrainResult r = loop.run();  train until total_steps, stop_at_step or stop_at_eval_return
//     loop.evaluate()              one evaluation now (separate env copies, own streams)
//     loop.save_checkpoint(path)   what run() writes every checkpoint_every steps
//   TrainConfig fields (defaults in the struct): total_steps, num_envs, seed, eval_every,
//     eval_episodes, log_every, checkpoint_every, out_dir (log.csv + checkpoint.safetensors),
//     stop_at_eval_return, stop_at_step, progress (automatic | bar | lines | none), env_grain.
//   Standalone pieces for loops that do not step an Environment (GRPO's toy task):
//     CsvLog (header, append, truncation of rows past a resumed step), Progress (bar on a TTY,
//     plain lines otherwise), evaluate_policy(agent, prototype, episodes, seed, stream_base).
//
//   Philox stream layout under TrainConfig::seed: agents use streams below 2^32 (DQN: 0 init,
//   1 exploration, 2 replay sampling); training env i uses kTrainEnvStream + i; episode j of
//   evaluation k uses kEvalStream + k·2^20 + j. Evaluation therefore costs no training RNG.
// ────────────────────────────────────────────────────────────────────────────────────────────────
//
// Design decisions:
//  * The loop, not the agent, owns the environments: stepping, auto-reset, episode returns and
//    the environment states in checkpoints are written once here for every algorithm. The agent
//    only maps observations to actions and results to learning (act / observe / update), which
//    fits off-policy learners (update every k steps from replay) and on-policy ones (update when
//    a rollout of T steps is complete) alike.
//  * Exact resume: a checkpoint holds the agent's complete state and the loop's: counters,
//    environment states (raw bytes of trivially copyable environments, or the environment's own
//    save/load), their stream positions, current observations, running returns and the CSV
//    window accumulators. Everything the loop does next is a function of that state, so stopping
//    at step k and resuming equals never stopping, bit for bit — also the CSV rows (except the
//    wall-clock columns). Schedule boundaries (eval, log, checkpoint) depend only on the step.
//  * Environments step over parallel_for with a grain (CartPole steps cost ~50 ns: threads only
//    pay off for many or heavy environments); env i touches only slot i, so results do not
//    depend on the thread count.
//  * Evaluation runs eval_episodes environment copies in lockstep, each for exactly one episode,
//    batching the greedy action query over the copies still running. Its streams are a function
//    of the evaluation's index: nothing to checkpoint, nothing shared with training.
//  * Checkpoints go through SafetensorsWriter (temporary file + fsync + rename): a crash leaves
//    the previous checkpoint intact. On resume the CSV keeps only rows up to the checkpoint's step.
//  * The progress display redraws one line with '\r' at most every 0.1 s when the stream is a
//    TTY (isatty), and prints plain lines at every log row otherwise (CI logs, files).
#pragma once

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/safetensors.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/nn/module.hpp"
#include "rlmed/nn/optim/optimizers.hpp"
#include "rlmed/rl/environment.hpp"

namespace rlmed::rl {

/// Stream ids (under the run's seed) of training and evaluation environments; agents stay below 2^32.
inline constexpr std::uint64_t kTrainEnvStream = std::uint64_t{1} << 40;
inline constexpr std::uint64_t kEvalStream = std::uint64_t{2} << 40;

/// What one agent.update() call did.
struct UpdateInfo {
  std::int64_t gradient_steps = 0;                              ///< gradient steps taken in this call
  double loss = std::numeric_limits<double>::quiet_NaN();       ///< mean loss over them
  double exploration = std::numeric_limits<double>::quiet_NaN();  ///< ε or entropy; NaN: unknown
};

template <class A, class Env>
concept Agent = Environment<Env> &&
    requires(A& agent, const A& const_agent, std::span<const typename Env::observation_type> obs,
             std::span<typename Env::action_type> actions, std::span<const typename Env::action_type> taken,
             const VectorStep<typename Env::observation_type>& step, std::int64_t env_steps,
             io::SafetensorsWriter& w, const io::SafetensorsReader& r, const std::string& prefix) {
      agent.act(obs, actions);
      agent.observe(obs, taken, step);
      { agent.update(env_steps) } -> std::same_as<UpdateInfo>;
      agent.evaluate_actions(obs, actions);
      const_agent.save(w, prefix);
      agent.load(r, prefix);
    };

/// The CSV column name of UpdateInfo::exploration for an agent type.
template <class A>
constexpr const char* exploration_label() {
  if constexpr (requires { A::exploration_label; }) return A::exploration_label;
  else return "exploration";
}

// ─── checkpoint helpers shared by agents ─────────────────────────────────────────────────────────
namespace ckpt {

/// One int64 under `name` (shape [1]).
inline void save_i64(io::SafetensorsWriter& w, const std::string& name, std::int64_t v) {
  w.add(name, Tensor<std::int64_t, 1>(Shape<1>{1}, v));
}
inline std::int64_t load_i64(const io::SafetensorsReader& r, const std::string& name) {
  Tensor<std::int64_t, 1> t(Shape<1>{1});
  r.read_into(name, t.view());
  return t(0);
}
/// Doubles under `name` (shape [n]).
inline void save_f64(io::SafetensorsWriter& w, const std::string& name, std::span<const double> v) {
  Tensor<double, 1> t(Shape<1>{static_cast<index_t>(v.size())});
  std::copy(v.begin(), v.end(), t.data());
  w.add(name, t);
}
inline void load_f64(const io::SafetensorsReader& r, const std::string& name, std::span<double> out) {
  Tensor<double, 1> t(Shape<1>{static_cast<index_t>(out.size())});
  r.read_into(name, t.view());
  std::copy(t.begin(), t.end(), out.begin());
}

/// A stream's seed, id and position (I64 [3], bit-cast from uint64): restoring it resumes the
/// exact sequence of numbers.
inline void save_stream(io::SafetensorsWriter& w, const std::string& name, const PhiloxStream& s) {
  Tensor<std::int64_t, 1> t(Shape<1>{3});
  t(0) = std::bit_cast<std::int64_t>(s.seed());
  t(1) = std::bit_cast<std::int64_t>(s.stream());
  t(2) = std::bit_cast<std::int64_t>(s.position());
  w.add(name, t);
}
inline void load_stream(const io::SafetensorsReader& r, const std::string& name, PhiloxStream& s) {
  Tensor<std::int64_t, 1> t(Shape<1>{3});
  r.read_into(name, t.view());
  PhiloxStream restored(std::bit_cast<std::uint64_t>(t(0)), std::bit_cast<std::uint64_t>(t(1)));
  restored.seek(std::bit_cast<std::uint64_t>(t(2)));
  s = restored;
}

/// Checks that `name` exists with `shape` (before anything is modified).
template <class S>
void expect_shape(const io::SafetensorsReader& r, const std::string& name, const S& shape) {
  const std::vector<index_t> want(shape.begin(), shape.end());
  RLMED_CHECK(r.info(name).shape == want, r.source(), ": tensor '", name, "' has shape ", r.info(name).shape,
              ", expected ", want);
}

/// A module's parameters and buffers under "<prefix><module path>".
template <class M>
void save_module(io::SafetensorsWriter& w, const std::string& prefix, M& module) {
  module.parameters([&](const std::string& name, auto& p) { w.add(prefix + name, p.value); });
  module.buffers([&](const std::string& name, auto& t) { w.add(prefix + name, t); });
}
/// Loads what save_module wrote; every tensor is checked first, so a mismatch changes nothing.
template <class M>
void load_module(const io::SafetensorsReader& r, const std::string& prefix, M& module) {
  module.parameters([&](const std::string& name, auto& p) { expect_shape(r, prefix + name, p.value.shape()); });
  module.buffers([&](const std::string& name, auto& t) { expect_shape(r, prefix + name, t.shape()); });
  module.parameters([&](const std::string& name, auto& p) { r.read_into(prefix + name, p.value.view()); });
  module.buffers([&](const std::string& name, auto& t) { r.read_into(prefix + name, t.view()); });
}

/// An optimiser's state tensors and counters (Adam, RMSprop, SGD: anything with visit_state).
template <class Opt>
void save_optimizer(io::SafetensorsWriter& w, const std::string& prefix, Opt& opt) {
  using T = std::remove_cvref_t<decltype(*opt.params().slots()[0].value.data())>;
  nn::optim::StateVisitor<T> v;
  v.tensor = [&](const std::string& name, Tensor<T, 1>& t) { w.add(prefix + name, t); };
  v.counter = [&](const std::string& name, std::int64_t& c) { save_i64(w, prefix + name, c); };
  opt.visit_state(v);
  const double lr = opt.lr;
  save_f64(w, prefix + "lr", std::span<const double>(&lr, 1));
}
template <class Opt>
void load_optimizer(const io::SafetensorsReader& r, const std::string& prefix, Opt& opt) {
  using T = std::remove_cvref_t<decltype(*opt.params().slots()[0].value.data())>;
  nn::optim::StateVisitor<T> check;
  check.tensor = [&](const std::string& name, Tensor<T, 1>& t) { expect_shape(r, prefix + name, t.shape()); };
  check.counter = [&](const std::string& name, std::int64_t&) { expect_shape(r, prefix + name, Shape<1>{1}); };
  opt.visit_state(check);
  expect_shape(r, prefix + "lr", Shape<1>{1});
  nn::optim::StateVisitor<T> v;
  v.tensor = [&](const std::string& name, Tensor<T, 1>& t) { r.read_into(prefix + name, t.view()); };
  v.counter = [&](const std::string& name, std::int64_t& c) { c = load_i64(r, prefix + name); };
  opt.visit_state(v);
  double lr = 0;
  load_f64(r, prefix + "lr", std::span<double>(&lr, 1));
  opt.lr = lr;
}

/// Raw bytes of a trivially copyable value (environment state, observation) as U8 [sizeof(V)].
template <class V>
void save_bytes(io::SafetensorsWriter& w, const std::string& name, const V& value) {
  static_assert(std::is_trivially_copyable_v<V>);
  Tensor<std::uint8_t, 1> t(Shape<1>{static_cast<index_t>(sizeof(V))});
  std::memcpy(t.data(), &value, sizeof(V));
  w.add(name, t);
}
template <class V>
void load_bytes(const io::SafetensorsReader& r, const std::string& name, V& value) {
  static_assert(std::is_trivially_copyable_v<V>);
  const auto& info = r.info(name);
  RLMED_CHECK(info.dtype == io::DType::U8 && info.shape == std::vector<index_t>{static_cast<index_t>(sizeof(V))},
              r.source(), ": '", name, "' holds ", info.shape, " ", io::dtype_name(info.dtype), "; expected U8 [",
              sizeof(V), "] (a checkpoint of another environment type or build?)");
  Tensor<std::uint8_t, 1> t(Shape<1>{static_cast<index_t>(sizeof(V))});
  r.read_into(name, t.view());
  std::memcpy(static_cast<void*>(&value), t.data(), sizeof(V));
}

/// An environment's complete state: its own save/load when it has them, else its raw bytes.
template <class Env>
void save_env(io::SafetensorsWriter& w, const std::string& prefix, const Env& env) {
  if constexpr (requires { env.save(w, prefix); }) {
    env.save(w, prefix);
  } else {
    static_assert(std::is_trivially_copyable_v<Env>,
                  "checkpointing an environment needs save(writer, prefix)/load(reader, prefix) members "
                  "or a trivially copyable environment type");
    save_bytes(w, prefix + "bytes", env);
  }
}
template <class Env>
void load_env(const io::SafetensorsReader& r, const std::string& prefix, Env& env) {
  if constexpr (requires { env.load(r, prefix); }) {
    env.load(r, prefix);
  } else {
    load_bytes(r, prefix + "bytes", env);
  }
}

/// An observation: raw bytes when trivially copyable (std::array), else a host tensor.
template <class Obs>
void save_observation(io::SafetensorsWriter& w, const std::string& name, const Obs& obs) {
  if constexpr (std::is_trivially_copyable_v<Obs>) {
    save_bytes(w, name, obs);
  } else {
    w.add(name, obs);
  }
}
template <class Obs>
void load_observation(const io::SafetensorsReader& r, const std::string& name, Obs& obs) {
  if constexpr (std::is_trivially_copyable_v<Obs>) {
    load_bytes(r, name, obs);
  } else {
    r.read_into(name, obs.view());
  }
}

/// agent.load(r, prefix), all or nothing: the agent's state is saved to memory first and put
/// back if the load throws (a checkpoint with a bad entry late in its list would otherwise leave
/// networks loaded and the replay not). Costs one in-memory copy of the state, replay included.
template <class Agent>
void load_transactionally(Agent& agent, const io::SafetensorsReader& r, const std::string& prefix) {
  io::SafetensorsWriter backup;
  agent.save(backup, prefix);
  try {
    agent.load(r, prefix);
  } catch (...) {
    agent.load(io::SafetensorsReader::from_bytes(backup.to_bytes(), "<state before the failed load>"), prefix);
    throw;
  }
}

}  // namespace ckpt

// ─── CSV log ─────────────────────────────────────────────────────────────────────────────────────

/// A CSV file of numeric rows whose first column is the step. Empty cells stand for "no value"
/// (NaN). Numbers are printed with 9 (float-exact) to 17 significant digits.
class CsvLog {
 public:
  CsvLog() = default;
  /// Opens `path` for a new run (truncating it) and writes the header.
  CsvLog(const std::filesystem::path& path, std::vector<std::string> columns) : path_(path), columns_(std::move(columns)) {
    RLMED_CHECK(!columns_.empty(), "CsvLog needs at least one column");
    out_.open(path_, std::ios::out | std::ios::trunc);
    RLMED_CHECK(out_.good(), "cannot open the log '", path_.string(), "' for writing");
    write_header();
  }
  /// Reopens an existing log after a resume: keeps the header and the rows with step <= `step`
  /// (rows written after the checkpoint by an interrupted run are dropped), then appends.
  static CsvLog resume(const std::filesystem::path& path, std::vector<std::string> columns, std::int64_t step) {
    CsvLog log;
    log.path_ = path;
    log.columns_ = std::move(columns);
    std::vector<std::string> kept;
    {
      std::ifstream in(path);
      std::string line;
      bool first = true;
      while (in && std::getline(in, line)) {
        if (first) {
          first = false;
          continue;  // header: rewritten below
        }
        if (line.empty()) continue;
        const auto comma = line.find(',');
        const std::string cell = line.substr(0, comma);
        char* end = nullptr;
        const long long s = std::strtoll(cell.c_str(), &end, 10);
        if (end && *end == '\0' && s <= step) kept.push_back(line);
      }
    }
    log.out_.open(path, std::ios::out | std::ios::trunc);
    RLMED_CHECK(log.out_.good(), "cannot open the log '", path.string(), "' for writing");
    log.write_header();
    for (const auto& l : kept) log.out_ << l << '\n';
    log.out_.flush();
    return log;
  }

  [[nodiscard]] bool is_open() const { return out_.is_open(); }
  [[nodiscard]] const std::vector<std::string>& columns() const noexcept { return columns_; }

  /// Writes one row: the step, then one value per remaining column (NaN → empty cell).
  void row(std::int64_t step, std::span<const double> values) {
    if (!out_.is_open()) return;
    RLMED_CHECK(values.size() + 1 == columns_.size(), "CsvLog: ", values.size() + 1, " values for ", columns_.size(),
                " columns");
    out_ << step;
    char buf[64];
    for (double v : values) {
      out_ << ',';
      if (std::isnan(v)) continue;
      if (v == std::floor(v) && std::abs(v) < 1e15) {
        std::snprintf(buf, sizeof buf, "%.0f", v);
      } else {
        std::snprintf(buf, sizeof buf, "%.9g", v);
      }
      out_ << buf;
    }
    out_ << '\n';
    out_.flush();
  }

 private:
  void write_header() {
    for (std::size_t i = 0; i < columns_.size(); ++i) out_ << (i ? "," : "") << columns_[i];
    out_ << '\n';
    out_.flush();
  }
  std::filesystem::path path_;
  std::vector<std::string> columns_;
  std::ofstream out_;
};

// ─── progress display ────────────────────────────────────────────────────────────────────────────

enum class ProgressMode { automatic, bar, lines, none };

/// A one-line progress bar with rate and ETA on a terminal; plain lines elsewhere.
class Progress {
 public:
  Progress() = default;
  Progress(ProgressMode mode, std::FILE* stream, std::int64_t total, std::int64_t start)
      : stream_(stream), total_(total), start_step_(start), begin_(Clock::now()), last_draw_(begin_) {
    if (mode == ProgressMode::automatic) mode = (stream && ::isatty(::fileno(stream))) ? ProgressMode::bar : ProgressMode::lines;
    mode_ = stream ? mode : ProgressMode::none;
  }

  [[nodiscard]] ProgressMode mode() const noexcept { return mode_; }
  /// Seconds since construction.
  [[nodiscard]] double elapsed() const { return std::chrono::duration<double>(Clock::now() - begin_).count(); }

  /// Called often (every environment step); redraws the bar at most every 0.1 s (bar mode
  /// only). `status` is a string or a callable returning one: a callable is only invoked when the
  /// bar is drawn, so the per-step call formats and allocates nothing.
  template <class Status>
  void tick(std::int64_t step, const Status& status) {
    if (mode_ != ProgressMode::bar) return;
    const auto now = Clock::now();
    if (std::chrono::duration<double>(now - last_draw_).count() < 0.1) return;
    last_draw_ = now;
    if constexpr (std::is_invocable_v<const Status&>) draw(step, status());
    else draw(step, status);
  }
  /// Called at log rows: a plain line (lines mode) or a forced redraw (bar mode).
  void line(std::int64_t step, const std::string& status) {
    last_line_step_ = step;
    if (mode_ == ProgressMode::lines) {
      std::fprintf(stream_, "%s\n", compose(step, status, false).c_str());
      std::fflush(stream_);
    } else if (mode_ == ProgressMode::bar) {
      last_draw_ = Clock::now();
      draw(step, status);
    }
  }
  /// Ends the bar's line.
  void finish(std::int64_t step, const std::string& status) {
    if (mode_ == ProgressMode::bar) {
      draw(step, status);
      std::fprintf(stream_, "\n");
      std::fflush(stream_);
    } else if (mode_ == ProgressMode::lines && last_line_step_ != step) {
      line(step, status);
    }
  }

  /// "1:02:03" / "2:03".
  static std::string format_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    const auto s = static_cast<long long>(seconds + 0.5);
    char buf[32];
    if (s >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
    else std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
    return buf;
  }

 private:
  using Clock = std::chrono::steady_clock;

  std::string compose(std::int64_t step, const std::string& status, bool with_bar) const {
    const double secs = elapsed();
    const double rate = secs > 0 ? static_cast<double>(step - start_step_) / secs : 0.0;
    const double eta = rate > 0 ? static_cast<double>(total_ - step) / rate : std::numeric_limits<double>::infinity();
    const double frac = total_ > 0 ? std::min(1.0, static_cast<double>(step) / static_cast<double>(total_)) : 1.0;
    std::string s;
    if (with_bar) {
      constexpr int width = 24;
      const int filled = static_cast<int>(frac * width);
      s += '[';
      s.append(static_cast<std::size_t>(filled), '#');
      s.append(static_cast<std::size_t>(width - filled), '.');
      s += "] ";
    }
    char buf[160];
    std::snprintf(buf, sizeof buf, "step %lld/%lld (%5.1f%%) | %.0f steps/s | elapsed %s | ETA %s",
                  static_cast<long long>(step), static_cast<long long>(total_), 100.0 * frac, rate,
                  format_duration(secs).c_str(), format_duration(eta).c_str());
    s += buf;
    if (!status.empty()) s += " | " + status;
    return s;
  }
  void draw(std::int64_t step, const std::string& status) {
    std::fprintf(stream_, "\r%s\x1b[K", compose(step, status, true).c_str());
    std::fflush(stream_);
  }

  ProgressMode mode_ = ProgressMode::none;
  std::FILE* stream_ = nullptr;
  std::int64_t total_ = 0;
  std::int64_t start_step_ = 0;
  std::int64_t last_line_step_ = -1;
  Clock::time_point begin_{};
  Clock::time_point last_draw_{};
};

// ─── evaluation ──────────────────────────────────────────────────────────────────────────────────

struct EvalResult {
  std::int64_t step = 0;       ///< training env steps when it ran
  double mean_return = 0.0;
  double std_return = 0.0;     ///< population standard deviation (np.std)
  double mean_length = 0.0;
  std::vector<double> returns;  ///< one per episode, in episode order
};

/// Runs `episodes` greedy episodes on copies of `prototype`, episode j reset from
/// PhiloxStream(seed, stream_base + j), all in lockstep with batched agent.evaluate_actions.
template <Environment Env, class A>
  requires Agent<A, Env>
EvalResult evaluate_policy(A& agent, const Env& prototype, int episodes, std::uint64_t seed, std::uint64_t stream_base,
                           std::int64_t max_steps_per_episode = 1'000'000) {
  using Obs = typename Env::observation_type;
  using Act = typename Env::action_type;
  RLMED_CHECK(episodes >= 1, "evaluate_policy: episodes must be >= 1, found ", episodes);
  const auto n = static_cast<std::size_t>(episodes);
  std::vector<Env> envs(n, prototype);
  std::vector<PhiloxStream> rngs;
  rngs.reserve(n);
  std::vector<Obs> obs(n);
  for (std::size_t j = 0; j < n; ++j) {
    rngs.emplace_back(seed, stream_base + j);
    obs[j] = envs[j].reset(rngs[j]);
    detail::check_observation_finite(obs[j], "evaluation reset");
  }
  std::vector<double> returns(n, 0.0);
  std::vector<std::int64_t> lengths(n, 0);
  std::vector<std::size_t> active(n);
  for (std::size_t j = 0; j < n; ++j) active[j] = j;
  std::vector<Obs> batch_obs;
  std::vector<Act> batch_act;
  while (!active.empty()) {
    batch_obs.resize(active.size());
    batch_act.resize(active.size());
    for (std::size_t k = 0; k < active.size(); ++k) batch_obs[k] = obs[active[k]];
    agent.evaluate_actions(std::span<const Obs>(batch_obs), std::span<Act>(batch_act));
    std::size_t kept = 0;
    for (std::size_t k = 0; k < active.size(); ++k) {
      const std::size_t j = active[k];
      auto r = step_environment(envs[j], batch_act[k], rngs[j]);
      check_step(r, "evaluation environment");
      returns[j] += r.reward;
      ++lengths[j];
      RLMED_CHECK(lengths[j] <= max_steps_per_episode, "evaluation episode ", j, " ran past ", max_steps_per_episode,
                  " steps without ending");
      if (!r.done()) {
        obs[j] = std::move(r.observation);
        active[kept++] = j;
      }
    }
    active.resize(kept);
  }
  EvalResult out;
  out.returns = returns;
  double sum = 0, len = 0;
  for (std::size_t j = 0; j < n; ++j) {
    sum += returns[j];
    len += static_cast<double>(lengths[j]);
  }
  out.mean_return = sum / static_cast<double>(n);
  out.mean_length = len / static_cast<double>(n);
  double sq = 0;
  for (double r : returns) sq += (r - out.mean_return) * (r - out.mean_return);
  out.std_return = std::sqrt(sq / static_cast<double>(n));
  return out;
}

// ─── the loop ────────────────────────────────────────────────────────────────────────────────────

struct TrainConfig {
  std::int64_t total_steps = 100'000;    ///< environment steps (summed over envs) to train for
  index_t num_envs = 1;                  ///< training environments stepped together
  std::uint64_t seed = 0;                ///< seeds the environment streams (see the stream layout)
  std::int64_t eval_every = 10'000;      ///< env steps between evaluations (0: only at the end)
  int eval_episodes = 20;                ///< greedy episodes per evaluation
  bool eval_at_end = true;               ///< evaluate after the last step (unless just done)
  std::int64_t log_every = 1'000;        ///< env steps between CSV rows / progress lines
  std::int64_t checkpoint_every = 0;     ///< env steps between checkpoints (0: only at the end / stop)
  std::filesystem::path out_dir;         ///< log.csv and checkpoint.safetensors; empty: write nothing
  std::optional<double> stop_at_eval_return;  ///< stop once an evaluation's mean return reaches this
  std::int64_t stop_at_step = 0;         ///< stop as if interrupted at this step (checkpoint written); 0: never
  ProgressMode progress = ProgressMode::automatic;
  std::FILE* progress_stream = stdout;
  index_t env_grain = 64;                ///< fewer envs than this step serially

  void validate() const {
    RLMED_CHECK(total_steps >= 1, "TrainConfig: total_steps must be >= 1, found ", total_steps);
    RLMED_CHECK(num_envs >= 1, "TrainConfig: num_envs must be >= 1, found ", num_envs);
    RLMED_CHECK(eval_every >= 0 && log_every >= 1 && checkpoint_every >= 0 && stop_at_step >= 0,
                "TrainConfig: needs eval_every >= 0, log_every >= 1, checkpoint_every >= 0, stop_at_step >= 0; found ",
                eval_every, ", ", log_every, ", ", checkpoint_every, ", ", stop_at_step);
    RLMED_CHECK(eval_episodes >= 1, "TrainConfig: eval_episodes must be >= 1, found ", eval_episodes);
    RLMED_CHECK(env_grain >= 1, "TrainConfig: env_grain must be >= 1, found ", env_grain);
    RLMED_CHECK(!stop_at_eval_return || std::isfinite(*stop_at_eval_return),
                "TrainConfig: stop_at_eval_return must be finite");
  }
};

struct TrainResult {
  std::int64_t env_steps = 0;            ///< totals at the end (including steps before a resume)
  std::int64_t episodes = 0;
  std::int64_t gradient_steps = 0;
  std::int64_t start_env_steps = 0;      ///< totals when this run() call began (rates: the difference)
  std::int64_t start_gradient_steps = 0;
  std::vector<EvalResult> evaluations;  ///< those run by this run() call
  std::optional<EvalResult> last_eval;
  std::int64_t solved_at_step = -1;     ///< first step whose evaluation reached stop_at_eval_return
  bool interrupted = false;             ///< stopped at stop_at_step
  double wall_seconds = 0.0;            ///< this run() call
  std::filesystem::path checkpoint;     ///< last checkpoint written ("" if none)
};

template <Environment Env, class A>
  requires Agent<A, Env>
class TrainLoop {
 public:
  using env_type = Env;
  using agent_type = A;
  using observation_type = typename Env::observation_type;
  using action_type = typename Env::action_type;

  TrainLoop(const TrainConfig& config, A& agent, const Env& prototype = Env{})
      : config_(config), agent_(agent), prototype_(prototype) {
    config_.validate();
    const auto n = static_cast<std::size_t>(config_.num_envs);
    envs_.assign(n, prototype_);
    rngs_.clear();
    for (std::size_t i = 0; i < n; ++i) rngs_.emplace_back(config_.seed, kTrainEnvStream + i);
    obs_.resize(n);
    actions_.resize(n);
    step_.resize(n);
    running_return_.assign(n, 0.0);
    running_length_.assign(n, 0);
    for (std::size_t i = 0; i < n; ++i) {
      obs_[i] = envs_[i].reset(rngs_[i]);
      detail::check_observation_finite(obs_[i], "training reset");
    }
  }

  [[nodiscard]] const TrainConfig& config() const noexcept { return config_; }
  [[nodiscard]] std::int64_t env_steps() const noexcept { return env_steps_; }
  [[nodiscard]] std::int64_t episodes() const noexcept { return episodes_; }
  [[nodiscard]] std::int64_t gradient_steps() const noexcept { return gradient_steps_; }
  [[nodiscard]] std::int64_t evaluations_done() const noexcept { return eval_count_; }
  [[nodiscard]] std::span<const observation_type> observations() const noexcept { return obs_; }
  [[nodiscard]] Env& env(index_t i) { return envs_.at(static_cast<std::size_t>(i)); }
  [[nodiscard]] std::filesystem::path log_path() const { return config_.out_dir / "log.csv"; }
  [[nodiscard]] std::filesystem::path checkpoint_path() const { return config_.out_dir / "checkpoint.safetensors"; }

  /// CSV columns: step first, then the values of each row.
  [[nodiscard]] static std::vector<std::string> log_columns() {
    return {"step",       "episodes",       "train_return_mean", "train_return_last", "eval_mean",
            "eval_std",   "loss",           exploration_label<A>(), "gradient_steps", "updates_per_s",
            "steps_per_s", "wall_s"};
  }

  /// One evaluation now on separate environment copies; counts as evaluation number
  /// evaluations_done() for its streams but changes nothing else.
  EvalResult evaluate() {
    const std::uint64_t base = kEvalStream + (static_cast<std::uint64_t>(eval_count_) << 20);
    EvalResult r = evaluate_policy(agent_, prototype_, config_.eval_episodes, config_.seed, base);
    r.step = env_steps_;
    return r;
  }

  /// Writes the loop's and the agent's complete state atomically.
  void save_checkpoint(const std::filesystem::path& path) const {
    io::SafetensorsWriter w;
    agent_.save(w, "agent.");
    const std::int64_t counters[] = {env_steps_, episodes_, gradient_steps_, eval_count_, window_episodes_,
                                     window_loss_count_, window_updates_, static_cast<std::int64_t>(envs_.size())};
    Tensor<std::int64_t, 1> c(Shape<1>{8});
    std::copy(std::begin(counters), std::end(counters), c.data());
    w.add("loop.counters", c);
    ckpt::save_i64(w, "loop.seed", std::bit_cast<std::int64_t>(config_.seed));
    const double sums[] = {window_return_sum_, window_loss_sum_, last_return_, last_exploration_,
                           wall_before_ + (progress_ ? progress_->elapsed() : 0.0),
                           last_eval_ ? last_eval_->mean_return : std::numeric_limits<double>::quiet_NaN(),
                           last_eval_ ? last_eval_->std_return : std::numeric_limits<double>::quiet_NaN(),
                           last_eval_ ? static_cast<double>(last_eval_->step) : -1.0};
    ckpt::save_f64(w, "loop.window", sums);
    ckpt::save_f64(w, "loop.running_return", running_return_);
    Tensor<std::int64_t, 1> lengths(Shape<1>{static_cast<index_t>(envs_.size())});
    std::copy(running_length_.begin(), running_length_.end(), lengths.data());
    w.add("loop.running_length", lengths);
    for (std::size_t i = 0; i < envs_.size(); ++i) {
      const std::string p = "loop.env" + std::to_string(i) + ".";
      ckpt::save_env(w, p, envs_[i]);
      ckpt::save_stream(w, p + "rng", rngs_[i]);
      ckpt::save_observation(w, p + "obs", obs_[i]);
    }
    w.set_metadata("format", "rlmed-train-loop");
    w.set_metadata("env_steps", std::to_string(env_steps_));
    w.write(path);
  }

  /// Restores a checkpoint written by save_checkpoint (same agent and environment types, same
  /// num_envs). The continuation is bit-identical to the run that wrote it.
  void resume(const std::filesystem::path& path) {
    const auto r = io::SafetensorsReader::open(path);
    const auto meta = r.metadata().find("format");
    RLMED_CHECK(meta != r.metadata().end() && meta->second == "rlmed-train-loop", path.string(),
                ": not a training-loop checkpoint (metadata 'format' is ",
                meta == r.metadata().end() ? std::string("missing") : meta->second, ")");
    ckpt::expect_shape(r, "loop.counters", Shape<1>{8});
    const auto c = r.read<std::int64_t, 1>("loop.counters");
    RLMED_CHECK(c(7) == static_cast<std::int64_t>(envs_.size()), path.string(), ": checkpoint has ", c(7),
                " training environments, this loop ", envs_.size());
    RLMED_CHECK(c(0) >= 0 && c(1) >= 0 && c(2) >= 0 && c(3) >= 0, path.string(), ": negative counters in the checkpoint");
    ckpt::expect_shape(r, "loop.seed", Shape<1>{1});
    std::vector<Env> envs = envs_;
    std::vector<PhiloxStream> rngs = rngs_;
    std::vector<observation_type> obs = obs_;
    for (std::size_t i = 0; i < envs.size(); ++i) {
      const std::string p = "loop.env" + std::to_string(i) + ".";
      ckpt::load_env(r, p, envs[i]);
      ckpt::load_stream(r, p + "rng", rngs[i]);
      ckpt::load_observation(r, p + "obs", obs[i]);
    }
    std::vector<double> running_return(envs_.size());
    ckpt::load_f64(r, "loop.running_return", running_return);
    Tensor<std::int64_t, 1> lengths(Shape<1>{static_cast<index_t>(envs_.size())});
    r.read_into("loop.running_length", lengths.view());
    double window[8];
    ckpt::load_f64(r, "loop.window", window);
    ckpt::load_transactionally(agent_, r, "agent.");  // last of the reads that can fail

    envs_ = std::move(envs);
    rngs_ = std::move(rngs);
    obs_ = std::move(obs);
    running_return_ = std::move(running_return);
    running_length_.assign(lengths.begin(), lengths.end());
    config_.seed = std::bit_cast<std::uint64_t>(ckpt::load_i64(r, "loop.seed"));  // evaluation streams
    env_steps_ = c(0);
    episodes_ = c(1);
    gradient_steps_ = c(2);
    eval_count_ = c(3);
    window_episodes_ = c(4);
    window_loss_count_ = c(5);
    window_updates_ = c(6);
    window_return_sum_ = window[0];
    window_loss_sum_ = window[1];
    last_return_ = window[2];
    last_exploration_ = window[3];
    wall_before_ = window[4];
    if (!std::isnan(window[5])) {
      last_eval_ = EvalResult{};
      last_eval_->mean_return = window[5];
      last_eval_->std_return = window[6];
      last_eval_->step = static_cast<std::int64_t>(window[7]);
    } else {
      last_eval_.reset();
    }
    resumed_ = true;
  }

  /// Trains until total_steps (or a stop condition), evaluating, logging and checkpointing.
  TrainResult run() {
    TrainResult result;
    result.start_env_steps = env_steps_;
    result.start_gradient_steps = gradient_steps_;
    const bool writing = !config_.out_dir.empty();
    if (writing) {
      std::filesystem::create_directories(config_.out_dir);
      log_ = resumed_ ? CsvLog::resume(log_path(), log_columns(), env_steps_) : CsvLog(log_path(), log_columns());
    }
    progress_.emplace(config_.progress, config_.progress_stream, config_.total_steps, env_steps_);
    window_begin_wall_ = progress_->elapsed();
    window_begin_step_ = env_steps_;
    window_begin_updates_ = gradient_steps_;
    const auto n = static_cast<std::int64_t>(envs_.size());
    bool solved = false;

    while (env_steps_ < config_.total_steps) {
      if (config_.stop_at_step > 0 && env_steps_ >= config_.stop_at_step) {
        result.interrupted = true;
        break;
      }
      step_once();
      const std::int64_t before = env_steps_ - n;
      bool evaluated = false;
      if (config_.eval_every > 0 && crossed(before, env_steps_, config_.eval_every)) {
        run_evaluation(result);
        evaluated = true;
        if (config_.stop_at_eval_return && last_eval_->mean_return >= *config_.stop_at_eval_return) {
          solved = true;
          if (result.solved_at_step < 0) result.solved_at_step = env_steps_;
        }
      }
      if (evaluated || crossed(before, env_steps_, config_.log_every)) write_row(evaluated);
      if (writing && config_.checkpoint_every > 0 && crossed(before, env_steps_, config_.checkpoint_every)) {
        save_checkpoint(checkpoint_path());
        result.checkpoint = checkpoint_path();
      }
      progress_->tick(env_steps_, [this] { return status(); });
      if (solved) break;
    }
    if (!result.interrupted && !solved && config_.eval_at_end && (!last_eval_ || last_eval_->step != env_steps_)) {
      run_evaluation(result);
      write_row(true);
      if (config_.stop_at_eval_return && last_eval_->mean_return >= *config_.stop_at_eval_return)
        result.solved_at_step = env_steps_;
    }
    if (writing) {
      save_checkpoint(checkpoint_path());
      result.checkpoint = checkpoint_path();
    }
    progress_->finish(env_steps_, status());
    result.env_steps = env_steps_;
    result.episodes = episodes_;
    result.gradient_steps = gradient_steps_;
    result.last_eval = last_eval_;
    result.wall_seconds = progress_->elapsed();
    wall_before_ += result.wall_seconds;
    progress_.reset();
    resumed_ = true;  // a later run() continues this log
    return result;
  }

 private:
  static bool crossed(std::int64_t before, std::int64_t after, std::int64_t every) {
    return after / every != before / every;
  }

  // One act → step → observe → update iteration over all training environments.
  void step_once() {
    const auto n = static_cast<index_t>(envs_.size());
    agent_.act(std::span<const observation_type>(obs_), std::span<action_type>(actions_));
    if constexpr (requires(const Env& e, const action_type& a) { e.action_space().validate(a, "agent action"); }) {
      for (std::size_t i = 0; i < envs_.size(); ++i) envs_[i].action_space().validate(actions_[i], "agent action");
    }
    parallel_for(
        0, n,
        [&](index_t i) {
          const auto k = static_cast<std::size_t>(i);
          auto r = step_environment(envs_[k], actions_[k], rngs_[k]);
          check_step(r, "training environment");
          step_.reward[k] = r.reward;
          step_.terminated[k] = r.terminated ? 1 : 0;
          step_.truncated[k] = r.truncated ? 1 : 0;
          running_return_[k] += r.reward;
          running_length_[k] += 1;
          if (r.done()) {
            step_.episode_return[k] = running_return_[k];
            step_.episode_length[k] = running_length_[k];
            running_return_[k] = 0.0;
            running_length_[k] = 0;
            step_.final_observation[k] = std::move(r.observation);
            step_.observation[k] = envs_[k].reset(rngs_[k]);
            detail::check_observation_finite(step_.observation[k], "training auto-reset");
          } else {
            step_.observation[k] = std::move(r.observation);
          }
        },
        config_.env_grain);
    agent_.observe(std::span<const observation_type>(obs_), std::span<const action_type>(actions_), step_);
    env_steps_ += n;
    for (std::size_t k = 0; k < envs_.size(); ++k) {
      if (!step_.done(k)) continue;
      ++episodes_;
      ++window_episodes_;
      window_return_sum_ += step_.episode_return[k];
      last_return_ = step_.episode_return[k];
    }
    std::swap(obs_, step_.observation);
    const UpdateInfo info = agent_.update(env_steps_);
    RLMED_CHECK(info.gradient_steps >= 0, "agent.update reported ", info.gradient_steps, " gradient steps");
    gradient_steps_ += info.gradient_steps;
    window_updates_ += info.gradient_steps;
    if (info.gradient_steps > 0 && !std::isnan(info.loss)) {
      window_loss_sum_ += info.loss;
      ++window_loss_count_;
    }
    if (!std::isnan(info.exploration)) last_exploration_ = info.exploration;
  }

  void run_evaluation(TrainResult& result) {
    EvalResult e = evaluate();
    ++eval_count_;
    last_eval_ = e;
    result.evaluations.push_back(std::move(e));
  }

  void write_row(bool with_eval) {
    const double now = progress_->elapsed();
    const double dt = now - window_begin_wall_;
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double values[] = {
        static_cast<double>(episodes_),
        window_episodes_ > 0 ? window_return_sum_ / static_cast<double>(window_episodes_) : nan,
        episodes_ > 0 ? last_return_ : nan,
        with_eval ? last_eval_->mean_return : nan,
        with_eval ? last_eval_->std_return : nan,
        window_loss_count_ > 0 ? window_loss_sum_ / static_cast<double>(window_loss_count_) : nan,
        last_exploration_,
        static_cast<double>(gradient_steps_),
        dt > 0 ? static_cast<double>(gradient_steps_ - window_begin_updates_) / dt : nan,
        dt > 0 ? static_cast<double>(env_steps_ - window_begin_step_) / dt : nan,
        wall_before_ + now,
    };
    log_.row(env_steps_, values);
    progress_->line(env_steps_, status());
    window_begin_wall_ = now;
    window_begin_step_ = env_steps_;
    window_begin_updates_ = gradient_steps_;
    window_episodes_ = 0;
    window_return_sum_ = 0;
    window_loss_sum_ = 0;
    window_loss_count_ = 0;
    window_updates_ = 0;
  }

  std::string status() const {
    char buf[192];
    std::string s;
    std::snprintf(buf, sizeof buf, "episodes %lld", static_cast<long long>(episodes_));
    s += buf;
    if (episodes_ > 0) {
      std::snprintf(buf, sizeof buf, " | return %.1f", last_return_);
      s += buf;
    }
    if (last_eval_) {
      std::snprintf(buf, sizeof buf, " | eval %.1f±%.1f", last_eval_->mean_return, last_eval_->std_return);
      s += buf;
    }
    if (window_loss_count_ > 0) {
      std::snprintf(buf, sizeof buf, " | loss %.4g", window_loss_sum_ / static_cast<double>(window_loss_count_));
      s += buf;
    }
    if (!std::isnan(last_exploration_)) {
      std::snprintf(buf, sizeof buf, " | %s %.3f", exploration_label<A>(), last_exploration_);
      s += buf;
    }
    return s;
  }

  TrainConfig config_;
  A& agent_;
  Env prototype_;
  std::vector<Env> envs_;
  std::vector<PhiloxStream> rngs_;
  std::vector<observation_type> obs_;  // what the next act() sees
  std::vector<action_type> actions_;
  VectorStep<observation_type> step_;
  std::vector<double> running_return_;
  std::vector<std::int64_t> running_length_;

  std::int64_t env_steps_ = 0;
  std::int64_t episodes_ = 0;
  std::int64_t gradient_steps_ = 0;
  std::int64_t eval_count_ = 0;
  std::optional<EvalResult> last_eval_;

  // Accumulators of the current CSV window (part of checkpoints: resumed rows are identical).
  std::int64_t window_episodes_ = 0;
  double window_return_sum_ = 0.0;
  double window_loss_sum_ = 0.0;
  std::int64_t window_loss_count_ = 0;
  std::int64_t window_updates_ = 0;
  double last_return_ = std::numeric_limits<double>::quiet_NaN();
  double last_exploration_ = std::numeric_limits<double>::quiet_NaN();

  // Wall-clock bookkeeping (not part of the learning state).
  double wall_before_ = 0.0;
  double window_begin_wall_ = 0.0;
  std::int64_t window_begin_step_ = 0;
  std::int64_t window_begin_updates_ = 0;
  bool resumed_ = false;
  CsvLog log_;
  std::optional<Progress> progress_;
};

}  // namespace rlmed::rl
