// rlmed/rl/pixel_a3c_async.hpp — asynchronous PA3C (the "A" of PixelDRL-MG's A3C, SYSTEMS.md S6):
// several worker threads, each with its own copy of the network, its own environment and its own
// Philox stream, push their gradients into the shared learner and step one shared optimiser.
//
//   PixelA3CAsync<Net, Optimizer> workers(shared_learner, optimizer, env_config, {.workers = 2});
//   workers.train(updates, [&](std::int64_t u, Tensor<T, 4>& images, Tensor<T, 4>& labels) {...});
//
// Design decisions (the design of rl/agents/a3c.hpp, applied to pixel episodes):
//  * One update = one worker's full episode (t_max steps) on one batch of images: the worker
//    copies the batch that `source(u, images, labels)` gives for update index u, resets its
//    environment, collects with its network copy, computes the PA3C gradient (optionally clipped
//    by global norm), then — holding the one mutex — writes it into the shared learner's
//    gradients (network + reward-map filter), steps the shared optimiser (Adam's moments are
//    shared) and copies the new shared parameters back. The batch depends on u only, so the data
//    a run sees never depends on thread timing; `source` is called concurrently from several
//    threads and must be safe for that (e.g. read-only indexing into a data set).
//  * Draws: worker w samples from Philox stream shared.config.stream + 1 + w, and the step counter
//    of update u starts at u · t_max, so an update's actions depend on (seed, w, u) only.
//  * Asynchronous mode (deterministic = false, the paper's): updates are claimed from an atomic
//    counter and applied in whatever order the workers finish: not bit-identical run to run.
//  * Deterministic mode: update u is done by worker u mod W and the apply-and-pull sections take
//    turns in u order (turn counter + condition variable); rollouts and gradients still overlap.
//    Each gradient then comes from a parameter version fixed by the schedule, so runs are
//    bit-identical and splitting a run into train() calls changes nothing.
//  * Every worker thread sets its OpenMP thread count to 1: the workers are the parallelism.
//  * A worker's error is rethrown by train(); updates() then counts the updates that reached the
//    shared parameters. Asynchronous mode: the others stop at their next turn. Deterministic mode:
//    the updates before the earliest failing one u are still applied and the rest are not, so
//    updates() = u, as in a serial run (a later failure can only be seen after an earlier one).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include "rlmed/core/parallel.hpp"
#include "rlmed/rl/pixel_a3c.hpp"

namespace rlmed::rl {

/// Fills images / labels [B, 1, H, W] (resized by the callee as needed) for update index u.
template <class T>
using PixelBatchSource = std::function<void(std::int64_t u, Tensor<T, 4>& images, Tensor<T, 4>& labels)>;

struct PixelA3CAsyncConfig {
  int workers = 2;             ///< actor-learner threads
  bool deterministic = false;  ///< round-robin apply order: bit-identical runs (see the header)
  double max_grad_norm = 0;    ///< global-norm clip of each worker's gradient; 0 = none
};

struct PixelA3CAsyncInfo {
  std::int64_t updates = 0;
  double mean_loss = 0, mean_reward = 0, mean_entropy = 0;
};

template <class Net, class Optimizer>
  requires PixelActorCritic<Net>
class PixelA3CAsync {
  static_assert(std::is_copy_constructible_v<Net>, "PixelA3CAsync: workers copy the network");

 public:
  using T = typename Net::value_type;

  /// `shared` and `optimizer` (attached to `shared`, e.g. nn::optim::Adam<T> opt(shared)) must
  /// outlive this object. Workers start from copies of the shared parameters.
  PixelA3CAsync(PixelA3C<Net>& shared, Optimizer& optimizer, env::PixelMaskConfig env_config,
                PixelA3CAsyncConfig cfg = {})
      : config_(cfg), optimizer_(optimizer), shared_params_(shared) {
    RLMED_CHECK(cfg.workers >= 1, "PixelA3CAsync: workers must be >= 1, found ", cfg.workers);
    RLMED_CHECK(cfg.max_grad_norm >= 0, "PixelA3CAsync: max_grad_norm must be >= 0, found ", cfg.max_grad_norm);
    RLMED_CHECK(optimizer.params().size() == shared_params_.size(),
                "PixelA3CAsync: the optimiser holds ", optimizer.params().size(),
                " parameter tensors, the shared learner ", shared_params_.size(), " (attach it to the learner)");
    for (int w = 0; w < cfg.workers; ++w) {
      PixelA3CConfig wc = shared.config;
      wc.stream = shared.config.stream + 1 + static_cast<std::uint64_t>(w);
      wc.rollout_steps = 0;  // one update = one whole episode
      wc.max_grad_norm = 0;
      workers_.push_back(std::make_unique<Worker>(shared.net(), wc, env_config));
      a3c_pull_parameters(workers_.back()->params, shared_params_);
    }
  }
  PixelA3CAsync(const PixelA3CAsync&) = delete;
  PixelA3CAsync& operator=(const PixelA3CAsync&) = delete;

  [[nodiscard]] const PixelA3CAsyncConfig& config() const noexcept { return config_; }
  /// Updates applied to the shared parameters so far (the index of the next update).
  [[nodiscard]] std::int64_t updates() const noexcept { return updates_; }
  /// Continue from update u (after loading a checkpoint of the shared learner and optimiser).
  void set_updates(std::int64_t u) {
    RLMED_CHECK(u >= 0, "PixelA3CAsync::set_updates: negative update count ", u);
    updates_ = u;
    for (auto& w : workers_) a3c_pull_parameters(w->params, shared_params_);
  }
  [[nodiscard]] int num_workers() const noexcept { return config_.workers; }
  /// Worker w's network copy (between train() calls).
  [[nodiscard]] Net& worker_net(int w) { return workers_.at(static_cast<std::size_t>(w))->net; }

  /// Runs the workers until `updates` more updates have been applied.
  PixelA3CAsyncInfo train(std::int64_t updates, const PixelBatchSource<T>& source) {
    RLMED_CHECK(updates >= 0, "PixelA3CAsync::train: negative update count ", updates);
    RLMED_CHECK(static_cast<bool>(source), "PixelA3CAsync::train: no batch source");
    PixelA3CAsyncInfo info;
    if (updates == 0) return info;
    run_.first = updates_;
    run_.end = updates_ + updates;
    run_.next = updates_;
    run_.claimed.store(updates_);
    run_.applied = 0;
    run_.abort = false;
    run_.fail_at = run_.end;
    run_.error = nullptr;
    run_.loss = run_.reward = run_.entropy = 0;
    std::vector<std::thread> threads;
    threads.reserve(workers_.size());
    try {
      for (int w = 0; w < config_.workers; ++w) threads.emplace_back([this, w, &source] { worker_main(w, source); });
    } catch (...) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        run_.abort = true;
      }
      turn_.notify_all();
      for (auto& t : threads) t.join();
      throw;
    }
    for (auto& t : threads) t.join();
    updates_ = run_.first + run_.applied;
    if (run_.error) std::rethrow_exception(run_.error);
    info.updates = updates;
    info.mean_loss = run_.loss / double(updates);
    info.mean_reward = run_.reward / double(updates);
    info.mean_entropy = run_.entropy / double(updates);
    return info;
  }

 private:
  struct Worker {
    Worker(const Net& prototype, const PixelA3CConfig& cfg, const env::PixelMaskConfig& env_cfg)
        : net(prototype), learner(net, cfg), params(learner), env(env_cfg) {}
    Net net;
    PixelA3C<Net> learner;
    nn::optim::ParamList<T> params;
    env::PixelMaskEnv<T> env;
    Tensor<T, 4> images, labels;
  };

  struct RunState {
    std::int64_t first = 0, end = 0, next = 0, applied = 0;
    std::int64_t fail_at = 0;  // deterministic mode: the earliest update that failed (end: none)
    std::atomic<std::int64_t> claimed{0};
    bool abort = false;
    std::exception_ptr error;
    double loss = 0, reward = 0, entropy = 0;
  };

  void worker_main(int w, const PixelBatchSource<T>& source) {
    set_num_threads(1);
    Worker& worker = *workers_[static_cast<std::size_t>(w)];
    const auto W = static_cast<std::int64_t>(config_.workers);
    const bool det = config_.deterministic;
    // Stop before update u: any error (asynchronous), an error at or before u (deterministic).
    auto stopped = [&](std::int64_t k) { return det ? k >= run_.fail_at : run_.abort; };
    std::int64_t u = -1;
    try {
      if (det) u = run_.first + ((w - run_.first % W) % W + W) % W;  // first u ≡ w (mod W)
      for (;;) {
        if (!det) u = run_.claimed.fetch_add(1);
        if (u >= run_.end) break;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          if (stopped(u)) break;
        }
        source(u, worker.images, worker.labels);
        worker.env.reset(worker.images.view(), worker.labels.view());
        const auto start_step = static_cast<std::uint64_t>(u) * static_cast<std::uint64_t>(worker.env.t_max());
        worker.learner.set_sample_step(start_step);
        worker.params.zero_grad();
        worker.learner.collect(worker.env);
        const PixelA3CStats st = worker.learner.accumulate_gradients();
        const double norm = nn::optim::grad_norm(worker.params);
        RLMED_CHECK(std::isfinite(norm), "PixelA3CAsync: worker ", w, " gradient norm is ", norm, " at update ", u);
        if (config_.max_grad_norm > 0) nn::optim::clip_grad_norm(worker.params, config_.max_grad_norm);
        std::unique_lock<std::mutex> lock(mutex_);
        if (det) turn_.wait(lock, [&] { return run_.next == u || stopped(u); });
        if (stopped(u)) break;
        optimizer_.zero_grad();
        a3c_push_gradients(optimizer_.params(), worker.params);
        optimizer_.step();
        a3c_pull_parameters(worker.params, optimizer_.params());
        ++run_.applied;
        ++run_.next;
        run_.loss += st.loss;
        run_.reward += st.mean_reward;
        run_.entropy += st.mean_entropy;
        lock.unlock();
        if (det) {
          turn_.notify_all();
          u += W;
        }
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      // Deterministic mode reports the error of the earliest failing update (the one a serial run meets).
      if (!run_.error || (det && u < run_.fail_at)) run_.error = std::current_exception();
      if (u >= 0 && u < run_.fail_at) run_.fail_at = u;
      if (u < 0) run_.fail_at = run_.first;
      run_.abort = true;
    }
    turn_.notify_all();
  }

  PixelA3CAsyncConfig config_;
  Optimizer& optimizer_;
  nn::optim::ParamList<T> shared_params_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::int64_t updates_ = 0;
  std::mutex mutex_;
  std::condition_variable turn_;
  RunState run_;
};

}  // namespace rlmed::rl
