// rlmed/rl/agents/a3c.hpp — Asynchronous Advantage Actor-Critic (Mnih et al. 2016, "Asynchronous
// Methods for Deep Reinforcement Learning", Algorithm S3) with shared RMSprop statistics, and the
// training driver that evaluates, logs and checkpoints it like rl::TrainLoop.
//
//   A3C<Env, NetSpec, T = float, Optimizer = nn::optim::RMSprop<T>>
//
// Design decisions:
//  * Workers are std::threads. Worker w owns a copy of the network, envs_per_worker environment
//    copies (streams kTrainEnvStream + w·E + e under config.seed), and its own Philox streams
//    (initialisation / actions: 1000 + 4w + {0, 1}). It collects a t_max-step rollout with its
//    copy, computes the actor-critic gradient on it (n-step returns: GAE with λ = 1; entropy bonus
//    β), clips it by global norm, and then — holding the one mutex — writes it into the shared
//    network's gradients, steps the ONE shared optimiser (so RMSprop's statistics are shared, the
//    paper's "shared RMSProp"), and copies the new shared parameters back into its network.
//  * Asynchronous mode (deterministic = false, the paper's): workers apply their updates in
//    whatever order they finish. Results then depend on thread timing and are NOT bit-identical
//    from run to run (nor resumable bit for bit). That is the algorithm, not a defect.
//  * Deterministic mode (deterministic = true): update number u is done by worker u mod W and the
//    lock is taken in that round-robin order (a turn counter and a condition variable). Rollouts
//    and gradients still run concurrently; only the apply-and-pull sections take turns. Every
//    gradient is then computed from a parameter version fixed by the schedule (worker w's update u
//    uses the parameters it pulled after its update u − W: W − 1 updates stale, as an asynchronous
//    run with equal-speed workers), so runs are bit-identical and stop-and-resume is exact.
//  * train(updates) runs the threads for a number of updates and joins them; workers keep their
//    network copies, environments and streams between calls, so splitting a run into calls (for
//    evaluation, logging, checkpoints) changes nothing. Every worker thread sets its OpenMP thread
//    count to 1: the parallelism is the workers; nested teams would oversubscribe the cores.
//  * A3CConfig defaults: t_max 5, γ 0.99, β 0.01, RMSprop α 0.99 (the paper), lr 7e-4 and
//    eps 1e-5 (OpenAI baselines' A2C; the paper sampled lr per run), value coefficient 0.5, global
//    gradient-norm clip 40 (universe-starter-agent; the paper states none), 16 workers (the paper's
//    CPU runs). Initialisation: the orthogonal scheme of on_policy.hpp.
//  * A3CTrainLoop: the same TrainConfig, CSV columns, progress display, evaluation streams and
//    checkpoint file layout as rl::TrainLoop (the agent owns its environments here, so the loop
//    drives train(updates) between evaluation / log / checkpoint boundaries instead of stepping).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "rlmed/core/parallel.hpp"
#include "rlmed/nn/optim/optimizers.hpp"
#include "rlmed/nn/optim/param_list.hpp"
#include "rlmed/rl/agents/on_policy.hpp"
#include "rlmed/rl/environment.hpp"
#include "rlmed/rl/train_loop.hpp"

namespace rlmed::rl {

struct A3CConfig {
  int workers = 16;              ///< actor-learner threads
  index_t envs_per_worker = 1;   ///< environment copies per worker (the paper: 1)
  index_t t_max = 5;             ///< steps per environment per update
  double gamma = 0.99;
  double gae_lambda = 1.0;       ///< 1: the paper's n-step returns
  double ent_coef = 0.01;        ///< β
  double vf_coef = 0.5;
  double max_grad_norm = 40.0;   ///< global gradient-norm clip of each worker's gradient (<= 0: off)
  bool normalize_advantage = false;
  bool deterministic = false;    ///< round-robin updates: bit-identical runs (see the header)
  std::uint64_t seed = 0;
  InitConfig init{};

  void validate() const {
    RLMED_CHECK(workers >= 1, "A3C: workers must be >= 1, found ", workers);
    RLMED_CHECK(envs_per_worker >= 1, "A3C: envs_per_worker must be >= 1, found ", envs_per_worker);
    RolloutConfig{t_max, gamma, gae_lambda, seed, init, 0}.validate("A3C");
    RLMED_CHECK(std::isfinite(ent_coef) && vf_coef >= 0 && std::isfinite(vf_coef) && std::isfinite(max_grad_norm),
                "A3C: needs finite ent_coef, max_grad_norm and vf_coef >= 0");
  }
  [[nodiscard]] std::int64_t steps_per_update() const { return static_cast<std::int64_t>(t_max) * envs_per_worker; }
};

/// One finished training episode of some worker.
struct A3CEpisode {
  int worker = 0;
  double episode_return = 0;
  std::int64_t length = 0;
};

/// What a train() call did.
struct A3CRunInfo {
  std::int64_t updates = 0;
  double mean_loss = std::numeric_limits<double>::quiet_NaN();
  double mean_entropy = std::numeric_limits<double>::quiet_NaN();
  std::vector<A3CEpisode> episodes;  ///< in apply order (deterministic mode: reproducible)
};

template <VectorObservationEnv Env, class NetSpec, class T = float, class Optimizer = nn::optim::RMSprop<T>>
class A3C {
 public:
  using observation_type = typename Env::observation_type;
  using Base = RolloutAgentBase<Env, NetSpec, T>;
  using model_type = typename Base::model_type;
  using action_type = typename Base::action_type;
  using value_type = T;
  using optimizer_type = Optimizer;
  using optimizer_config = std::remove_cvref_t<decltype(std::declval<Optimizer&>().config)>;
  static constexpr const char* exploration_label = "entropy";
  static constexpr std::uint64_t kWorkerStreamBase = 1000;

  /// RMSprop lr 7e-4, α 0.99, eps 1e-5 (other optimisers: their own defaults).
  static optimizer_config default_optimizer() { return pg_detail::rmsprop_defaults<optimizer_config>(7e-4, 0.99, 1e-5); }

  /// The shared network is initialised from stream 0 of config.seed; every worker starts from a copy.
  explicit A3C(const A3CConfig& config, const Env& prototype = Env{},
               const optimizer_config& optimizer = default_optimizer())
      : config_(checked(config)), shared_(make_shared_model(config, prototype)), optimizer_(shared_, optimizer) {
    for (int w = 0; w < config_.workers; ++w) {
      workers_.push_back(std::make_unique<Worker>(w, config_, prototype));
      workers_.back()->model().copy_parameters_from(shared_);
    }
  }
  A3C(const A3C&) = delete;
  A3C& operator=(const A3C&) = delete;

  [[nodiscard]] const A3CConfig& config() const noexcept { return config_; }
  [[nodiscard]] model_type& shared_model() noexcept { return shared_; }
  [[nodiscard]] Optimizer& optimizer() noexcept { return optimizer_; }
  [[nodiscard]] std::int64_t updates() const noexcept { return updates_; }
  [[nodiscard]] std::int64_t env_steps() const noexcept { return updates_ * config_.steps_per_update(); }
  [[nodiscard]] std::int64_t episodes() const noexcept { return episodes_; }
  [[nodiscard]] int num_workers() const noexcept { return config_.workers; }
  /// Worker w's network copy (between train() calls).
  [[nodiscard]] model_type& worker_model(int w) { return workers_.at(static_cast<std::size_t>(w))->model(); }

  /// Runs the workers until `updates` more updates have been applied; returns their episodes and
  /// mean loss. Rethrows the first error a worker raised (the others stop at their next turn);
  /// the counters then hold the updates that were applied, and the run should be restarted
  /// from a checkpoint.
  A3CRunInfo train(std::int64_t updates) {
    RLMED_CHECK(updates >= 0, "A3C::train: negative update count ", updates);
    A3CRunInfo info;
    if (updates == 0) return info;
    run_ = RunState{};
    run_.first = updates_;
    run_.end = updates_ + updates;
    run_.next = updates_;
    run_.claimed.store(updates_);
    std::vector<std::thread> threads;
    threads.reserve(workers_.size());
    try {
      for (int w = 0; w < config_.workers; ++w) threads.emplace_back([this, w] { worker_main(w); });
    } catch (...) {  // could not start every thread: stop the started ones, then report
      {
        std::lock_guard<std::mutex> lock(mutex_);
        run_.abort = true;
      }
      turn_.notify_all();
      for (auto& t : threads) t.join();
      throw;
    }
    for (auto& t : threads) t.join();
    updates_ = run_.first + run_.applied;  // the updates that did reach the shared network
    episodes_ += static_cast<std::int64_t>(run_.episodes.size());
    if (run_.error) std::rethrow_exception(run_.error);
    info.updates = updates;
    info.mean_loss = run_.loss_sum / static_cast<double>(updates);
    info.mean_entropy = run_.entropy_sum / static_cast<double>(updates);
    info.episodes = std::move(run_.episodes);
    return info;
  }

  /// Greedy actions of the shared network (call between train() calls).
  void evaluate_actions(std::span<const observation_type> obs, std::span<action_type> actions) {
    RLMED_CHECK(obs.size() == actions.size(), "A3C::evaluate_actions: ", obs.size(), " observations and ",
                actions.size(), " action slots");
    if (obs.empty()) return;
    pg_detail::stack_obs_into(obs, eval_obs_, "A3C");
    nn::Context ctx;
    ctx.training = false;
    const auto out = shared_.net.forward(ctx, eval_obs_.view(), eval_cache_, Heads::policy);
    eval_actions_.resize(Shape<2>{eval_obs_.extent(0), Base::action_width});
    for (index_t i = 0; i < eval_obs_.extent(0); ++i)
      actions[static_cast<std::size_t>(i)] = shared_.dist.mode(out.policy.data() + i * Base::dist_type::param_width,
                                                                eval_actions_.data() + i * Base::action_width);
  }

  /// Complete state: shared network and optimiser, every worker's network copy, environments,
  /// observations, running returns and streams, counters.
  void save(io::SafetensorsWriter& w, const std::string& prefix) const {
    auto& self = const_cast<A3C&>(*this);
    ckpt::save_module(w, prefix + "shared.", self.shared_);
    ckpt::save_optimizer(w, prefix + "optim.", self.optimizer_);
    Tensor<std::int64_t, 1> c(Shape<1>{4});
    c(0) = updates_;
    c(1) = episodes_;
    c(2) = config_.workers;
    c(3) = config_.envs_per_worker;
    w.add(prefix + "counters", c);
    for (std::size_t k = 0; k < workers_.size(); ++k) workers_[k]->save(w, prefix + "worker" + std::to_string(k) + ".");
  }
  void load(const io::SafetensorsReader& r, const std::string& prefix) {
    ckpt::expect_shape(r, prefix + "counters", Shape<1>{4});
    const auto c = r.read<std::int64_t, 1>(prefix + "counters");
    RLMED_CHECK(c(2) == config_.workers && c(3) == config_.envs_per_worker, r.source(), ": checkpoint of an A3C with ",
                c(2), " workers x ", c(3), " envs; this one has ", config_.workers, " x ", config_.envs_per_worker);
    RLMED_CHECK(c(0) >= 0 && c(1) >= 0, r.source(), ": negative A3C counters");
    shared_.parameters([&](const std::string& n, auto& p) { ckpt::expect_shape(r, prefix + "shared." + n, p.value.shape()); });
    for (std::size_t k = 0; k < workers_.size(); ++k) workers_[k]->check(r, prefix + "worker" + std::to_string(k) + ".");
    ckpt::load_optimizer(r, prefix + "optim.", optimizer_);
    ckpt::load_module(r, prefix + "shared.", shared_);
    for (std::size_t k = 0; k < workers_.size(); ++k) workers_[k]->load(r, prefix + "worker" + std::to_string(k) + ".");
    updates_ = c(0);
    episodes_ = c(1);
  }

 private:
  /// A worker: the rollout machinery of RolloutAgentBase on its own environments.
  class Worker : public Base {
   public:
    Worker(int id, const A3CConfig& c, const Env& prototype)
        : Base("A3C worker",
               RolloutConfig{c.t_max, c.gamma, c.gae_lambda, c.seed, c.init, kWorkerStreamBase + 4 * static_cast<std::uint64_t>(id)},
               prototype),
          id_(id) {
      const auto E = static_cast<std::size_t>(c.envs_per_worker);
      envs_.assign(E, prototype);
      for (std::size_t e = 0; e < E; ++e)
        env_rngs_.emplace_back(c.seed, kTrainEnvStream + static_cast<std::uint64_t>(id) * E + e);
      obs_.resize(E);
      actions_.resize(E);
      step_.resize(E);
      running_return_.assign(E, 0.0);
      running_length_.assign(E, 0);
      for (std::size_t e = 0; e < E; ++e) {
        obs_[e] = envs_[e].reset(env_rngs_[e]);
        detail::check_observation_finite(obs_[e], "A3C worker reset");
      }
      params_ = nn::optim::ParamList<T>(this->model_);
    }

    /// t_max steps of every environment with this worker's network; finished episodes are
    /// appended to `episodes`.
    void collect(std::vector<A3CEpisode>& episodes) {
      for (index_t t = 0; t < this->base_config_.n_steps; ++t) {
        this->act(std::span<const observation_type>(obs_), std::span<action_type>(actions_));
        for (std::size_t e = 0; e < envs_.size(); ++e) {
          auto r = step_environment(envs_[e], actions_[e], env_rngs_[e]);
          check_step(r, "A3C worker environment");
          step_.reward[e] = r.reward;
          step_.terminated[e] = r.terminated ? 1 : 0;
          step_.truncated[e] = r.truncated ? 1 : 0;
          running_return_[e] += r.reward;
          running_length_[e] += 1;
          if (r.done()) {
            episodes.push_back({id_, running_return_[e], running_length_[e]});
            running_return_[e] = 0;
            running_length_[e] = 0;
            step_.final_observation[e] = std::move(r.observation);
            step_.observation[e] = envs_[e].reset(env_rngs_[e]);
            detail::check_observation_finite(step_.observation[e], "A3C worker auto-reset");
          } else {
            step_.observation[e] = std::move(r.observation);
          }
        }
        this->observe(std::span<const observation_type>(obs_), std::span<const action_type>(actions_), step_);
        std::swap(obs_, step_.observation);
      }
    }

    /// The actor-critic gradient of the collected rollout in this worker's parameters (clipped).
    ActorCriticLossStats gradients(const A3CConfig& c) {
      this->finish_rollout();
      params_.zero_grad();
      const auto st = this->actor_critic_backward(c.ent_coef, c.vf_coef, c.normalize_advantage);
      if (c.max_grad_norm > 0) nn::optim::clip_grad_norm(params_, c.max_grad_norm);
      this->rollout_.pos = 0;
      return st;
    }

    [[nodiscard]] const nn::optim::ParamList<T>& params() const noexcept { return params_; }

    void save(io::SafetensorsWriter& w, const std::string& prefix) const {
      this->save_base(w, prefix);
      ckpt::save_f64(w, prefix + "running_return", running_return_);
      Tensor<std::int64_t, 1> lengths(Shape<1>{static_cast<index_t>(envs_.size())});
      std::copy(running_length_.begin(), running_length_.end(), lengths.data());
      w.add(prefix + "running_length", lengths);
      for (std::size_t e = 0; e < envs_.size(); ++e) {
        const std::string p = prefix + "env" + std::to_string(e) + ".";
        ckpt::save_env(w, p, envs_[e]);
        ckpt::save_stream(w, p + "rng", env_rngs_[e]);
        ckpt::save_observation(w, p + "obs", obs_[e]);
      }
    }
    /// Validates this worker's part of a checkpoint (a dry run of the environment loads
    /// included); throws before anything changes.
    void check(const io::SafetensorsReader& r, const std::string& prefix) {
      this->check_base(r, prefix);
      const auto E = static_cast<index_t>(envs_.size());
      ckpt::expect_shape(r, prefix + "running_return", Shape<1>{E});
      ckpt::expect_shape(r, prefix + "running_length", Shape<1>{E});
      for (std::size_t e = 0; e < envs_.size(); ++e)
        ckpt::expect_shape(r, prefix + "env" + std::to_string(e) + ".rng", Shape<1>{3});
      std::vector<Env> envs = envs_;
      std::vector<PhiloxStream> rngs = env_rngs_;
      std::vector<observation_type> obs = obs_;
      read_envs(r, prefix, envs, rngs, obs);
    }
    void load(const io::SafetensorsReader& r, const std::string& prefix) {
      std::vector<Env> envs = envs_;
      std::vector<PhiloxStream> rngs = env_rngs_;
      std::vector<observation_type> obs = obs_;
      read_envs(r, prefix, envs, rngs, obs);
      this->load_base(r, prefix);
      ckpt::load_f64(r, prefix + "running_return", running_return_);
      Tensor<std::int64_t, 1> lengths(Shape<1>{static_cast<index_t>(envs_.size())});
      r.read_into(prefix + "running_length", lengths.view());
      running_length_.assign(lengths.begin(), lengths.end());
      envs_ = std::move(envs);
      env_rngs_ = std::move(rngs);
      obs_ = std::move(obs);
    }

   private:
    static void read_envs(const io::SafetensorsReader& r, const std::string& prefix, std::vector<Env>& envs,
                          std::vector<PhiloxStream>& rngs, std::vector<observation_type>& obs) {
      for (std::size_t e = 0; e < envs.size(); ++e) {
        const std::string p = prefix + "env" + std::to_string(e) + ".";
        ckpt::load_env(r, p, envs[e]);
        ckpt::load_stream(r, p + "rng", rngs[e]);
        ckpt::load_observation(r, p + "obs", obs[e]);
      }
    }

    int id_;
    std::vector<Env> envs_;
    std::vector<PhiloxStream> env_rngs_;
    std::vector<observation_type> obs_;
    std::vector<action_type> actions_;
    VectorStep<observation_type> step_;
    std::vector<double> running_return_;
    std::vector<std::int64_t> running_length_;
    nn::optim::ParamList<T> params_;
  };

  struct RunState {
    std::int64_t first = 0, end = 0;
    std::int64_t next = 0;                 // deterministic mode: the update whose turn it is
    std::int64_t applied = 0;              // updates applied to the shared network in this run
    std::atomic<std::int64_t> claimed{0};  // asynchronous mode: next update index to claim
    bool abort = false;
    std::exception_ptr error;
    std::vector<A3CEpisode> episodes;
    double loss_sum = 0, entropy_sum = 0;
    RunState() = default;
    RunState& operator=(RunState&& o) noexcept {
      first = o.first;
      end = o.end;
      next = o.next;
      applied = o.applied;
      claimed.store(o.claimed.load());
      abort = o.abort;
      error = o.error;
      episodes = std::move(o.episodes);
      loss_sum = o.loss_sum;
      entropy_sum = o.entropy_sum;
      return *this;
    }
  };

  static const A3CConfig& checked(const A3CConfig& c) {
    c.validate();
    return c;
  }
  static model_type make_shared_model(const A3CConfig& c, const Env& prototype) {
    model_type m(Base::make_dist(prototype));
    m.setup(Base::obs_dim);
    PhiloxStream rng(c.seed, 0);
    m.initialize(rng, c.init);
    return m;
  }

  void worker_main(int w) {
    set_num_threads(1);  // this thread's OpenMP teams: the workers are the parallelism
    Worker& worker = *workers_[static_cast<std::size_t>(w)];
    std::vector<A3CEpisode> finished;
    const auto W = static_cast<std::int64_t>(config_.workers);
    try {
      std::int64_t u = -1;
      if (config_.deterministic) {
        u = run_.first + ((w - run_.first % W) % W + W) % W;  // first update index ≡ w (mod W)
      }
      for (;;) {
        if (!config_.deterministic) u = run_.claimed.fetch_add(1);
        if (u >= run_.end) break;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          if (run_.abort) break;
        }
        finished.clear();
        worker.collect(finished);
        const auto st = worker.gradients(config_);
        std::unique_lock<std::mutex> lock(mutex_);
        if (config_.deterministic) turn_.wait(lock, [&] { return run_.next == u || run_.abort; });
        if (run_.abort) break;
        apply_and_pull(worker);
        ++run_.applied;
        run_.loss_sum += st.loss;
        run_.entropy_sum += st.entropy;
        run_.episodes.insert(run_.episodes.end(), finished.begin(), finished.end());
        ++run_.next;
        lock.unlock();
        if (config_.deterministic) {
          turn_.notify_all();
          u += W;
        }
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!run_.error) run_.error = std::current_exception();
      run_.abort = true;
    }
    turn_.notify_all();
  }

  // Under the mutex: shared.grad = worker.grad; shared optimiser step; worker.value = shared.value.
  void apply_and_pull(Worker& worker) {
    const auto& shared = optimizer_.params().slots();
    const auto& local = worker.params().slots();
    RLMED_CHECK(shared.size() == local.size(), "A3C: worker and shared networks differ");
    for (std::size_t i = 0; i < shared.size(); ++i) std::copy(local[i].grad.begin(), local[i].grad.end(), shared[i].grad.data());
    optimizer_.step();
    for (std::size_t i = 0; i < shared.size(); ++i) std::copy(shared[i].value.begin(), shared[i].value.end(), local[i].value.data());
  }

  A3CConfig config_;
  model_type shared_;
  Optimizer optimizer_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::int64_t updates_ = 0;
  std::int64_t episodes_ = 0;
  std::mutex mutex_;
  std::condition_variable turn_;
  RunState run_;
  typename model_type::Cache eval_cache_;
  Tensor<T, 2> eval_obs_, eval_actions_;
};

// ============================================================================================
// Training driver
// ============================================================================================

namespace pg_detail {
/// Lets evaluate_policy query an agent that only offers greedy actions: the learning half of the
/// Agent protocol is not available through this view and throws.
template <class A, class Env>
struct GreedyView {
  using Obs = typename Env::observation_type;
  using Act = typename Env::action_type;
  A* agent;
  void act(std::span<const Obs>, std::span<Act>) { RLMED_THROW("GreedyView: evaluation only"); }
  void observe(std::span<const Obs>, std::span<const Act>, const VectorStep<Obs>&) {
    RLMED_THROW("GreedyView: evaluation only");
  }
  UpdateInfo update(std::int64_t) { RLMED_THROW("GreedyView: evaluation only"); }
  void evaluate_actions(std::span<const Obs> obs, std::span<Act> actions) { agent->evaluate_actions(obs, actions); }
  void save(io::SafetensorsWriter& w, const std::string& prefix) const { agent->save(w, prefix); }
  void load(const io::SafetensorsReader& r, const std::string& prefix) { agent->load(r, prefix); }
};
}  // namespace pg_detail

/// rl::TrainLoop's schedule, log, progress display, evaluation and checkpoints for A3C. Uses
/// TrainConfig's total_steps, seed (evaluation streams only: the agent seeds its workers),
/// eval_every, eval_episodes, eval_at_end, log_every, checkpoint_every, out_dir,
/// stop_at_eval_return, stop_at_step, progress; num_envs and env_grain are the agent's business.
/// Steps advance in whole updates (t_max · envs_per_worker environment steps each), so a boundary
/// is reached at the first update that crosses it.
template <VectorObservationEnv Env, class A>
class A3CTrainLoop {
 public:
  A3CTrainLoop(const TrainConfig& config, A& agent, const Env& prototype = Env{})
      : config_(config), agent_(agent), prototype_(prototype) {
    config_.num_envs = 1;
    config_.validate();
  }

  [[nodiscard]] std::int64_t env_steps() const noexcept { return agent_.env_steps(); }
  [[nodiscard]] std::filesystem::path log_path() const { return config_.out_dir / "log.csv"; }
  [[nodiscard]] std::filesystem::path checkpoint_path() const { return config_.out_dir / "checkpoint.safetensors"; }
  [[nodiscard]] static std::vector<std::string> log_columns() {
    return {"step",     "episodes",       "train_return_mean", "train_return_last", "eval_mean",
            "eval_std", "loss",           "entropy",           "gradient_steps",    "updates_per_s",
            "steps_per_s", "wall_s"};
  }

  EvalResult evaluate() {
    const std::uint64_t base = kEvalStream + (static_cast<std::uint64_t>(eval_count_) << 20);
    pg_detail::GreedyView<A, Env> view{&agent_};
    EvalResult r = evaluate_policy(view, prototype_, config_.eval_episodes, config_.seed, base);
    r.step = agent_.env_steps();
    return r;
  }

  void save_checkpoint(const std::filesystem::path& path) const {
    io::SafetensorsWriter w;
    agent_.save(w, "agent.");
    Tensor<std::int64_t, 1> c(Shape<1>{4});
    c(0) = eval_count_;
    c(1) = window_episodes_;
    c(2) = window_loss_count_;
    c(3) = window_updates_;
    w.add("loop.counters", c);
    const double sums[] = {window_return_sum_, window_loss_sum_, last_return_, last_entropy_,
                           wall_before_ + (progress_ ? progress_->elapsed() : 0.0),
                           last_eval_ ? last_eval_->mean_return : std::numeric_limits<double>::quiet_NaN(),
                           last_eval_ ? last_eval_->std_return : std::numeric_limits<double>::quiet_NaN(),
                           last_eval_ ? static_cast<double>(last_eval_->step) : -1.0};
    ckpt::save_f64(w, "loop.window", sums);
    w.set_metadata("format", "rlmed-a3c-train-loop");
    w.set_metadata("env_steps", std::to_string(agent_.env_steps()));
    w.write(path);
  }

  void resume(const std::filesystem::path& path) {
    const auto r = io::SafetensorsReader::open(path);
    const auto meta = r.metadata().find("format");
    RLMED_CHECK(meta != r.metadata().end() && meta->second == "rlmed-a3c-train-loop", path.string(),
                ": not an A3C training-loop checkpoint");
    ckpt::expect_shape(r, "loop.counters", Shape<1>{4});
    ckpt::expect_shape(r, "loop.window", Shape<1>{8});
    const auto c = r.read<std::int64_t, 1>("loop.counters");
    double window[8];
    ckpt::load_f64(r, "loop.window", window);
    agent_.load(r, "agent.");
    eval_count_ = c(0);
    window_episodes_ = c(1);
    window_loss_count_ = c(2);
    window_updates_ = c(3);
    window_return_sum_ = window[0];
    window_loss_sum_ = window[1];
    last_return_ = window[2];
    last_entropy_ = window[3];
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

  TrainResult run() {
    TrainResult result;
    const bool writing = !config_.out_dir.empty();
    if (writing) {
      std::filesystem::create_directories(config_.out_dir);
      log_ = resumed_ ? CsvLog::resume(log_path(), log_columns(), agent_.env_steps()) : CsvLog(log_path(), log_columns());
    }
    progress_.emplace(config_.progress, config_.progress_stream, config_.total_steps, agent_.env_steps());
    window_begin_wall_ = progress_->elapsed();
    window_begin_step_ = agent_.env_steps();
    window_begin_updates_ = agent_.updates();
    const std::int64_t per_update = agent_.config().steps_per_update();
    bool solved = false;
    while (agent_.env_steps() < config_.total_steps) {
      const std::int64_t before = agent_.env_steps();
      if (config_.stop_at_step > 0 && before >= config_.stop_at_step) {
        result.interrupted = true;
        break;
      }
      // Run to the next boundary (evaluation, log, checkpoint, stop or end), in whole updates.
      std::int64_t target = config_.total_steps;
      auto next_multiple = [&](std::int64_t every) { return (before / every + 1) * every; };
      if (config_.eval_every > 0) target = std::min(target, next_multiple(config_.eval_every));
      target = std::min(target, next_multiple(config_.log_every));
      if (writing && config_.checkpoint_every > 0) target = std::min(target, next_multiple(config_.checkpoint_every));
      if (config_.stop_at_step > 0) target = std::min(target, config_.stop_at_step);
      const std::int64_t updates = std::max<std::int64_t>(1, (target - before + per_update - 1) / per_update);
      A3CRunInfo info = agent_.train(updates);
      window_updates_ += info.updates;
      window_loss_sum_ += info.mean_loss * static_cast<double>(info.updates);
      window_loss_count_ += info.updates;
      last_entropy_ = info.mean_entropy;
      for (const auto& e : info.episodes) {
        ++window_episodes_;
        window_return_sum_ += e.episode_return;
        last_return_ = e.episode_return;
      }
      const std::int64_t after = agent_.env_steps();
      bool evaluated = false;
      if (config_.eval_every > 0 && crossed(before, after, config_.eval_every)) {
        run_evaluation(result);
        evaluated = true;
        if (config_.stop_at_eval_return && last_eval_->mean_return >= *config_.stop_at_eval_return) {
          solved = true;
          if (result.solved_at_step < 0) result.solved_at_step = after;
        }
      }
      if (evaluated || crossed(before, after, config_.log_every)) write_row(evaluated);
      if (writing && config_.checkpoint_every > 0 && crossed(before, after, config_.checkpoint_every)) {
        save_checkpoint(checkpoint_path());
        result.checkpoint = checkpoint_path();
      }
      progress_->tick(after, [this] { return status(); });
      if (solved) break;
    }
    if (!result.interrupted && !solved && config_.eval_at_end && (!last_eval_ || last_eval_->step != agent_.env_steps())) {
      run_evaluation(result);
      write_row(true);
      if (config_.stop_at_eval_return && last_eval_->mean_return >= *config_.stop_at_eval_return)
        result.solved_at_step = agent_.env_steps();
    }
    if (writing) {
      save_checkpoint(checkpoint_path());
      result.checkpoint = checkpoint_path();
    }
    progress_->finish(agent_.env_steps(), status());
    result.env_steps = agent_.env_steps();
    result.episodes = agent_.episodes();
    result.gradient_steps = agent_.updates();
    result.last_eval = last_eval_;
    result.wall_seconds = progress_->elapsed();
    wall_before_ += result.wall_seconds;
    progress_.reset();
    resumed_ = true;
    return result;
  }

 private:
  static bool crossed(std::int64_t before, std::int64_t after, std::int64_t every) {
    return after / every != before / every;
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
        static_cast<double>(agent_.episodes()),
        window_episodes_ > 0 ? window_return_sum_ / static_cast<double>(window_episodes_) : nan,
        agent_.episodes() > 0 ? last_return_ : nan,
        with_eval ? last_eval_->mean_return : nan,
        with_eval ? last_eval_->std_return : nan,
        window_loss_count_ > 0 ? window_loss_sum_ / static_cast<double>(window_loss_count_) : nan,
        last_entropy_,
        static_cast<double>(agent_.updates()),
        dt > 0 ? static_cast<double>(agent_.updates() - window_begin_updates_) / dt : nan,
        dt > 0 ? static_cast<double>(agent_.env_steps() - window_begin_step_) / dt : nan,
        wall_before_ + now,
    };
    log_.row(agent_.env_steps(), values);
    progress_->line(agent_.env_steps(), status());
    window_begin_wall_ = now;
    window_begin_step_ = agent_.env_steps();
    window_begin_updates_ = agent_.updates();
    window_episodes_ = 0;
    window_return_sum_ = 0;
    window_loss_sum_ = 0;
    window_loss_count_ = 0;
    window_updates_ = 0;
  }
  std::string status() const {
    char buf[192];
    std::string s;
    std::snprintf(buf, sizeof buf, "episodes %lld", static_cast<long long>(agent_.episodes()));
    s += buf;
    if (agent_.episodes() > 0) {
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
    if (!std::isnan(last_entropy_)) {
      std::snprintf(buf, sizeof buf, " | entropy %.3f", last_entropy_);
      s += buf;
    }
    return s;
  }

  TrainConfig config_;
  A& agent_;
  Env prototype_;
  std::int64_t eval_count_ = 0;
  std::optional<EvalResult> last_eval_;
  std::int64_t window_episodes_ = 0;
  double window_return_sum_ = 0.0;
  double window_loss_sum_ = 0.0;
  std::int64_t window_loss_count_ = 0;
  std::int64_t window_updates_ = 0;
  double last_return_ = std::numeric_limits<double>::quiet_NaN();
  double last_entropy_ = std::numeric_limits<double>::quiet_NaN();
  double wall_before_ = 0.0;
  double window_begin_wall_ = 0.0;
  std::int64_t window_begin_step_ = 0;
  std::int64_t window_begin_updates_ = 0;
  bool resumed_ = false;
  CsvLog log_;
  std::optional<Progress> progress_;
};

}  // namespace rlmed::rl
