// rlmed/env/landmark_train.hpp — training and evaluation drivers for landmark agents
// (rl::LandmarkDQN over env::LandmarkEnv), shared by the example trainer and the tests.
//
// Design decisions:
//  * K agents (agent k searches landmark_ids[k] with Q head k) form a group that moves in one
//    volume and steps together; G groups run side by side (different volumes / starts). A group
//    restarts, on a random training volume, when all its agents have ended. K = 1 with G > 1 is
//    the single-agent case; K > 1 needs a multi-head network (Collab-DQN).
//  * Each step renders the keys of all active agents in one batch and chooses all their actions
//    with one forward pass; one gradient step per `train_every` agent steps.
//  * Every random choice (volumes, starts, exploration, replay) comes from Philox streams of the
//    seed, and rendering/networks are thread-count independent: same seed, same run.
//  * Evaluation starts every agent at a fixed world point (default: the mean of its landmark over
//    the training volumes) and reports the error of the answer in mm, steps and wall time.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/env/landmark.hpp"

namespace rlmed::env {

struct LandmarkTrainConfig {
  std::int64_t steps = 20'000;       ///< agent steps in total (all agents, all groups)
  index_t groups = 1;                ///< groups stepped side by side
  std::int64_t train_every = 1;      ///< agent steps per gradient step
  std::vector<int> landmark_ids{0};  ///< agent k searches landmark_ids[k] (head k)
  std::uint64_t seed = 0;            ///< stream 3 of the seed picks volumes and starts
  std::int64_t log_every = 0;        ///< > 0: progress callback every this many agent steps

  void validate() const {
    RLMED_CHECK(steps >= 1, "LandmarkTrainConfig: steps must be >= 1; found ", steps);
    RLMED_CHECK(groups >= 1, "LandmarkTrainConfig: groups must be >= 1; found ", groups);
    RLMED_CHECK(train_every >= 1, "LandmarkTrainConfig: train_every must be >= 1; found ", train_every);
    RLMED_CHECK(!landmark_ids.empty() && landmark_ids.size() <= 127,
                "LandmarkTrainConfig: 1..127 landmark ids expected; found ", landmark_ids.size());
  }
};

struct LandmarkTrainProgress {
  std::int64_t steps = 0, gradient_steps = 0, episodes = 0;
  double epsilon = 0, mean_loss = 0, mean_final_distance_mm = 0;  ///< since the previous report
};

/// Trains `agent` on volumes[train_volumes]; calls progress(p) every log_every agent steps.
template <class Agent, std::size_t Dim, index_t Frames>
LandmarkTrainProgress train_landmark_agent(Agent& agent, const LandmarkVolumes<Dim>& volumes,
                                           std::span<const index_t> train_volumes, const LandmarkEnvConfig& env_config,
                                           const LandmarkTrainConfig& config,
                                           const std::function<void(const LandmarkTrainProgress&)>& progress = {}) {
  config.validate();
  RLMED_CHECK(!train_volumes.empty(), "train_landmark_agent: no training volumes");
  using Env = LandmarkEnv<Dim, Frames>;
  using Key = typename Env::key_type;
  const auto K = static_cast<index_t>(config.landmark_ids.size());
  const index_t G = config.groups;
  PhiloxStream rng(config.seed, 3);
  std::vector<Env> envs;
  envs.reserve(static_cast<std::size_t>(G * K));
  for (index_t i = 0; i < G * K; ++i) envs.emplace_back(volumes, env_config);
  auto reset_group = [&](index_t g) {
    const index_t v = train_volumes[rng.uniform_int(static_cast<std::uint32_t>(train_volumes.size()))];
    for (index_t k = 0; k < K; ++k)
      envs[static_cast<std::size_t>(g * K + k)].reset_random(rng, v, config.landmark_ids[static_cast<std::size_t>(k)],
                                                             static_cast<int>(k));
  };
  for (index_t g = 0; g < G; ++g) reset_group(g);

  std::vector<Key> keys;
  std::vector<index_t> active;
  std::vector<int> actions;
  keys.reserve(envs.size());
  active.reserve(envs.size());
  actions.reserve(envs.size());
  LandmarkTrainProgress total, window;
  double loss_sum = 0, dist_sum = 0;
  std::int64_t loss_count = 0, dist_count = 0, since_learn = 0, next_log = config.log_every;
  while (total.steps < config.steps) {
    keys.clear();
    active.clear();
    for (std::size_t i = 0; i < envs.size(); ++i)
      if (!envs[i].done()) {
        keys.push_back(envs[i].key());
        active.push_back(static_cast<index_t>(i));
      }
    actions.resize(keys.size());
    agent.act(std::span<const Key>(keys), std::span<int>(actions));
    for (std::size_t j = 0; j < active.size(); ++j) {
      Env& e = envs[static_cast<std::size_t>(active[j])];
      const LandmarkStepInfo info = e.step_key(actions[j]);
      agent.observe(keys[j], actions[j], info.reward, e.key(), /*terminated=*/false);
      if (info.done) {
        dist_sum += imaging::distance_mm<Dim>(e.answer_mm(), e.target_mm());
        ++dist_count;
        ++total.episodes;
      }
    }
    total.steps += static_cast<std::int64_t>(active.size());
    since_learn += static_cast<std::int64_t>(active.size());
    while (since_learn >= config.train_every) {
      since_learn -= config.train_every;
      const double l = agent.learn();
      if (!std::isnan(l)) {
        loss_sum += l;
        ++loss_count;
      }
    }
    for (index_t g = 0; g < G; ++g) {
      bool all_done = true;
      for (index_t k = 0; k < K; ++k) all_done = all_done && envs[static_cast<std::size_t>(g * K + k)].done();
      if (all_done) reset_group(g);
    }
    total.gradient_steps = agent.gradient_steps();
    total.epsilon = agent.epsilon();
    if (config.log_every > 0 && total.steps >= next_log) {
      next_log += config.log_every;
      window = total;
      window.mean_loss = loss_count ? loss_sum / double(loss_count) : std::nan("");
      window.mean_final_distance_mm = dist_count ? dist_sum / double(dist_count) : std::nan("");
      loss_sum = dist_sum = 0;
      loss_count = dist_count = 0;
      if (progress) progress(window);
    }
  }
  return total;
}

/// One landmark search of an evaluation.
template <std::size_t Dim>
struct LandmarkResult {
  index_t volume = 0, landmark = 0;
  double error_mm = 0, start_error_mm = 0;
  index_t steps = 0;
  double ms = 0;  ///< wall time of the group's search divided by its agents
  Vec<Dim> answer_mm{}, target_mm{};
  std::vector<Vec<Dim>> trajectory_mm;
};

/// Mean position of each landmark over the given volumes (fixed test starts).
template <std::size_t Dim>
std::vector<Vec<Dim>> mean_landmarks_mm(const std::vector<LandmarkVolume<Dim>>& volumes, std::span<const index_t> which,
                                        std::span<const int> landmark_ids) {
  RLMED_CHECK(!which.empty(), "mean_landmarks_mm: no volumes");
  std::vector<Vec<Dim>> out(landmark_ids.size(), Vec<Dim>{});
  for (std::size_t k = 0; k < landmark_ids.size(); ++k)
    for (index_t v : which) {
      const auto& vol = volumes.at(static_cast<std::size_t>(v));
      RLMED_CHECK(landmark_ids[k] >= 0 && landmark_ids[k] < vol.landmark_count(), "mean_landmarks_mm: landmark ",
                  landmark_ids[k], " outside [0, ", vol.landmark_count(), ") of '", vol.name, "'");
      for (std::size_t a = 0; a < Dim; ++a)
        out[k][a] += vol.landmarks_mm[static_cast<std::size_t>(landmark_ids[k])][a] / double(which.size());
    }
  return out;
}

/// Greedy searches from fixed starts (starts_mm[k] for agent k) on each test volume.
template <class Agent, std::size_t Dim, index_t Frames>
std::vector<LandmarkResult<Dim>> evaluate_landmark_agent(Agent& agent, const LandmarkVolumes<Dim>& volumes,
                                                         std::span<const index_t> test_volumes,
                                                         const LandmarkEnvConfig& env_config,
                                                         std::span<const int> landmark_ids,
                                                         std::span<const Vec<Dim>> starts_mm, bool keep_trajectories = false) {
  RLMED_CHECK(starts_mm.size() == landmark_ids.size(), "evaluate_landmark_agent: ", starts_mm.size(),
              " starts for ", landmark_ids.size(), " agents");
  using Env = LandmarkEnv<Dim, Frames>;
  using Key = typename Env::key_type;
  const auto K = landmark_ids.size();
  std::vector<Env> envs;
  envs.reserve(K);
  for (std::size_t k = 0; k < K; ++k) envs.emplace_back(volumes, env_config);
  std::vector<LandmarkResult<Dim>> results;
  std::vector<Key> keys;
  std::vector<std::size_t> active;
  std::vector<int> actions;
  for (index_t v : test_volumes) {
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t k = 0; k < K; ++k) envs[k].reset_at(v, landmark_ids[k], starts_mm[k], static_cast<int>(k));
    std::vector<double> start_err(K);
    for (std::size_t k = 0; k < K; ++k) start_err[k] = envs[k].distance_mm();
    for (;;) {
      keys.clear();
      active.clear();
      for (std::size_t k = 0; k < K; ++k)
        if (!envs[k].done()) {
          keys.push_back(envs[k].key());
          active.push_back(k);
        }
      if (keys.empty()) break;
      actions.resize(keys.size());
      agent.greedy(std::span<const Key>(keys), std::span<int>(actions));
      for (std::size_t j = 0; j < active.size(); ++j) envs[active[j]].step_key(actions[j]);
    }
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / double(K);
    for (std::size_t k = 0; k < K; ++k) {
      LandmarkResult<Dim> r;
      r.volume = v;
      r.landmark = landmark_ids[k];
      r.answer_mm = envs[k].answer_mm();
      r.target_mm = envs[k].target_mm();
      r.error_mm = imaging::distance_mm<Dim>(r.answer_mm, r.target_mm);
      r.start_error_mm = start_err[k];
      r.steps = envs[k].steps();
      r.ms = ms;
      if (keep_trajectories) r.trajectory_mm = envs[k].trajectory_mm();
      results.push_back(std::move(r));
    }
  }
  return results;
}

/// Per-landmark summary of an evaluation.
struct LandmarkSummary {
  int landmark = 0;
  index_t count = 0;
  double mean_mm = 0, sd_mm = 0, within2 = 0, within4 = 0, within10 = 0, mean_steps = 0, mean_ms = 0,
         mean_start_mm = 0;
};

template <std::size_t Dim>
std::vector<LandmarkSummary> summarize_landmarks(const std::vector<LandmarkResult<Dim>>& results,
                                                 std::span<const int> landmark_ids) {
  std::vector<LandmarkSummary> out;
  for (int id : landmark_ids) {
    LandmarkSummary s;
    s.landmark = id;
    for (const auto& r : results)
      if (r.landmark == id) {
        ++s.count;
        s.mean_mm += r.error_mm;
        s.within2 += r.error_mm <= 2.0;
        s.within4 += r.error_mm <= 4.0;
        s.within10 += r.error_mm <= 10.0;
        s.mean_steps += double(r.steps);
        s.mean_ms += r.ms;
        s.mean_start_mm += r.start_error_mm;
      }
    if (s.count == 0) {
      out.push_back(s);
      continue;
    }
    const double n = double(s.count);
    s.mean_mm /= n;
    s.within2 /= n;
    s.within4 /= n;
    s.within10 /= n;
    s.mean_steps /= n;
    s.mean_ms /= n;
    s.mean_start_mm /= n;
    double var = 0;
    for (const auto& r : results)
      if (r.landmark == id) var += (r.error_mm - s.mean_mm) * (r.error_mm - s.mean_mm);
    s.sd_mm = s.count > 1 ? std::sqrt(var / (n - 1)) : 0.0;
    out.push_back(s);
  }
  return out;
}

}  // namespace rlmed::env
