// rlmed/env/landmark.hpp — the multi-scale landmark-search environment of SYSTEMS.md S1
// (Ghesu et al. 2016/2019, Alansary et al. 2019), 2D and 3D.
//
// Design decisions:
//  * State is a compact, trivially copyable key — (volume, landmark, head, level, the last F
//    integer positions on that level) — and an observation is *rendered* from a key by the patch
//    extractor (imaging/patches.hpp). The environment, the acting agent and the replay buffer all
//    render through one LandmarkRenderer, so a replayed observation is the one the agent saw
//    (ARCHITECTURE.md principle 5); a 45³×4 float cube is 1.4 MB, its key 64 bytes.
//  * Positions are integer voxels (x, y[, z]) of the current pyramid level; an action moves one
//    voxel of that level (2·Dim actions: +x, −x, +y, −y[, +z, −z]). A move that would leave the
//    grid is refused (the agent stays); cubes near the border read 0 outside (rl-medical's zero
//    padding).
//  * Reward = ‖p_t − p*‖ − ‖p_{t+1} − p*‖ in world mm (voxel centres through the level's
//    geometry), clipped to [−clip, clip]. It is computed *after* a level hand-over, so the reward
//    of the step that changes level includes the (sub-voxel) snap to the finer grid.
//  * Oscillation = the new position equals one of the previous `oscillation_window` positions on
//    this level (covers 2-cycles and short loops; a refused move counts, the agent is stuck).
//    On a coarse level it hands the search over to the next finer level at the same physical
//    point (nearest fine voxel of the current voxel centre; Pyramid levels share world geometry);
//    the frame history restarts there. On the finest level it ends the episode and the answer is
//    the mean of the positions of the loop (mm). A total step budget and an optional per-level
//    budget end (or hand over) the search as well; without oscillation the answer is the last
//    position.
//  * Ends are reported as truncations, never terminations: the search could go on, so learners
//    bootstrap (the MDP has no absorbing state).
//  * Train starts are random (uniform within ±start_radius_mm of the target per axis, or the
//    inner 80 % of the volume when the radius is 0) on the coarsest search level; test starts are
//    fixed world points (e.g. the mean landmark position of the training set).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/image.hpp"
#include "rlmed/imaging/patches.hpp"
#include "rlmed/imaging/pyramid.hpp"
#include "rlmed/rl/spaces.hpp"

namespace rlmed::env {

using imaging::Vec;

/// One image with its landmarks: the Gaussian pyramid (level 0 = the image, finest) and the
/// target points in world mm.
template <std::size_t Dim>
struct LandmarkVolume {
  imaging::Pyramid<float, Dim> pyramid;
  std::vector<Vec<Dim>> landmarks_mm;
  std::string name;

  [[nodiscard]] index_t landmark_count() const noexcept { return static_cast<index_t>(landmarks_mm.size()); }
};

/// Builds the pyramid (σ = 1 fine voxel, factor 2) of an already normalised image.
template <std::size_t Dim>
LandmarkVolume<Dim> make_landmark_volume(const imaging::Image<float, Dim>& image, std::vector<Vec<Dim>> landmarks_mm,
                                         index_t levels, std::string name = {}) {
  RLMED_CHECK(levels >= 1 && levels <= 8, "make_landmark_volume: levels must be in [1, 8]; found ", levels);
  RLMED_CHECK(!landmarks_mm.empty(), "make_landmark_volume: volume '", name, "' has no landmarks");
  for (std::size_t i = 0; i < landmarks_mm.size(); ++i)
    for (double v : landmarks_mm[i])
      RLMED_CHECK(std::isfinite(v), "make_landmark_volume: landmark ", i, " of '", name, "' is ", landmarks_mm[i],
                  "; expected finite mm");
  for (index_t i = 0; i < image.voxels.size(); ++i)
    RLMED_CHECK(std::isfinite(image.voxels.data()[i]), "make_landmark_volume: voxel ", i, " of '", name,
                "' is not finite");
  LandmarkVolume<Dim> v;
  v.pyramid = imaging::build_pyramid(image, imaging::PyramidOptions{levels, 1.0});
  v.landmarks_mm = std::move(landmarks_mm);
  v.name = std::move(name);
  return v;
}

template <std::size_t Dim>
using LandmarkVolumes = std::shared_ptr<const std::vector<LandmarkVolume<Dim>>>;

/// The replay key of one observation (trivially copyable; 64 bytes in 3D with F = 4).
template <std::size_t Dim, index_t Frames>
struct LandmarkKey {
  static_assert(Frames >= 1 && Frames <= 16, "frame history must be in [1, 16]");
  std::int32_t volume = 0;
  std::int16_t landmark = 0;  ///< target index within the volume
  std::int8_t head = 0;       ///< Q-network head (agent) that acts on this observation
  std::int8_t level = 0;      ///< pyramid level of the positions
  std::array<std::array<std::int32_t, Dim>, static_cast<std::size_t>(Frames)> frames_xyz{};  ///< oldest first; last = now

  [[nodiscard]] imaging::Voxel<Dim> position() const noexcept {
    imaging::Voxel<Dim> v{};
    for (std::size_t a = 0; a < Dim; ++a) v[a] = frames_xyz.back()[a];
    return v;
  }
};

/// Renders observations [N, F, *cube] from keys with the batched patch extractor.
template <std::size_t Dim, index_t Frames>
class LandmarkRenderer {
 public:
  using key_type = LandmarkKey<Dim, Frames>;

  LandmarkRenderer() = default;
  LandmarkRenderer(LandmarkVolumes<Dim> volumes, index_t cube) : volumes_(std::move(volumes)), cube_(cube) {
    RLMED_CHECK(volumes_ && !volumes_->empty(), "LandmarkRenderer: no volumes");
    RLMED_CHECK(cube >= 1 && cube <= 512, "LandmarkRenderer: cube side must be in [1, 512]; found ", cube);
    geometry_ = imaging::PatchGeometry<Dim>::cube(cube);
  }

  [[nodiscard]] index_t cube() const noexcept { return cube_; }
  [[nodiscard]] const std::vector<LandmarkVolume<Dim>>& volumes() const { return *volumes_; }
  [[nodiscard]] const LandmarkVolumes<Dim>& shared_volumes() const noexcept { return volumes_; }

  /// Shape of one observation: [F, cube, cube(, cube)].
  [[nodiscard]] Shape<Dim + 1> obs_shape() const noexcept {
    Shape<Dim + 1> s{};
    s[0] = Frames;
    for (std::size_t t = 0; t < Dim; ++t) s[t + 1] = cube_;
    return s;
  }

  /// out[i] = observation of keys[i]; out [N, F, *cube]. Parallel over keys (each key's F
  /// patches written by one work item), so the result does not depend on the thread count.
  void render_batch(std::span<const key_type> keys, TensorView<float, Dim + 2> out) const {
    RLMED_CHECK(volumes_, "LandmarkRenderer: not set up");
    Shape<Dim + 2> want{};
    want[0] = static_cast<index_t>(keys.size());
    const Shape<Dim + 1> one = obs_shape();
    for (std::size_t t = 0; t < Dim + 1; ++t) want[t + 1] = one[t];
    RLMED_CHECK(out.shape() == want, "LandmarkRenderer: output has shape ", out.shape(), ", expected ", want);
    for (std::size_t i = 0; i < keys.size(); ++i) check_key(keys[i]);
    const index_t per_obs = numel(one);
    auto render_one = [&](index_t i) {
      const key_type& k = keys[static_cast<std::size_t>(i)];
      const auto& vol = (*volumes_)[static_cast<std::size_t>(k.volume)].pyramid.level(k.level);
      std::array<imaging::Voxel<Dim>, static_cast<std::size_t>(Frames)> centres{};
      for (std::size_t f = 0; f < centres.size(); ++f)
        for (std::size_t a = 0; a < Dim; ++a) centres[f][a] = k.frames_xyz[f][a];
      Shape<Dim + 1> fs{};
      fs[0] = Frames;
      for (std::size_t t = 0; t < Dim; ++t) fs[t + 1] = cube_;
      imaging::extract_patches_into<float, Dim>(TensorView<float, Dim + 1>(out.data() + i * per_obs, fs), vol.view(),
                                                std::span<const imaging::Voxel<Dim>>(centres), geometry_);
    };
    const auto n = static_cast<index_t>(keys.size());
    if (n == 1) render_one(0);  // the extractor parallelises over slabs itself
    else parallel_for(0, n, render_one, 1);
  }

  void check_key(const key_type& k) const {
    RLMED_CHECK(k.volume >= 0 && static_cast<std::size_t>(k.volume) < volumes_->size(), "landmark key: volume ",
                k.volume, " outside [0, ", volumes_->size(), ")");
    const auto& v = (*volumes_)[static_cast<std::size_t>(k.volume)];
    RLMED_CHECK(k.level >= 0 && k.level < v.pyramid.level_count(), "landmark key: level ", int(k.level),
                " outside the pyramid's [0, ", v.pyramid.level_count(), ")");
    RLMED_CHECK(k.landmark >= 0 && k.landmark < v.landmark_count(), "landmark key: landmark ", k.landmark,
                " outside [0, ", v.landmark_count(), ")");
  }

 private:
  LandmarkVolumes<Dim> volumes_;
  index_t cube_ = 0;
  imaging::PatchGeometry<Dim> geometry_{};
};

/// Numbers of the environment (defaults: Alansary et al. 2019 / rl-medical).
struct LandmarkEnvConfig {
  index_t cube = 45;                  ///< observation cube side (voxels)
  index_t levels = 3;                 ///< search levels (1 = single scale); <= the pyramids' levels
  index_t max_steps = 200;            ///< step budget of one search over all levels
  index_t max_steps_per_level = 0;    ///< > 0: hand over (finest: end) after this many steps on a level
  index_t oscillation_window = 4;     ///< a revisit of one of the last k positions is an oscillation
  double reward_clip = 1.0;           ///< rewards clipped to [−clip, clip] (mm)
  double start_radius_mm = 0.0;       ///< train starts: ±radius around the target; 0: inner 80 % of the volume

  void validate() const {
    RLMED_CHECK(cube >= 1 && cube <= 512, "LandmarkEnvConfig: cube must be in [1, 512]; found ", cube);
    RLMED_CHECK(levels >= 1 && levels <= 8, "LandmarkEnvConfig: levels must be in [1, 8]; found ", levels);
    RLMED_CHECK(max_steps >= 1, "LandmarkEnvConfig: max_steps must be >= 1; found ", max_steps);
    RLMED_CHECK(max_steps_per_level >= 0, "LandmarkEnvConfig: max_steps_per_level must be >= 0; found ",
                max_steps_per_level);
    RLMED_CHECK(oscillation_window >= 1, "LandmarkEnvConfig: oscillation_window must be >= 1; found ",
                oscillation_window);
    RLMED_CHECK(reward_clip > 0 && std::isfinite(reward_clip), "LandmarkEnvConfig: reward_clip must be > 0; found ",
                reward_clip);
    RLMED_CHECK(start_radius_mm >= 0 && std::isfinite(start_radius_mm),
                "LandmarkEnvConfig: start_radius_mm must be >= 0; found ", start_radius_mm);
  }
};

/// What one step did.
struct LandmarkStepInfo {
  double reward = 0.0;         ///< clipped mm reward
  bool oscillated = false;     ///< the new position revisits a recent one
  bool level_changed = false;  ///< handed over to the next finer level
  bool done = false;           ///< the search ended (finest-level oscillation or a budget)
};

/// One agent searching one landmark in one volume.
template <std::size_t Dim = 3, index_t Frames = 4>
class LandmarkEnv {
  static_assert(Dim == 2 || Dim == 3, "landmark search is 2D or 3D");

 public:
  static constexpr int kActions = 2 * static_cast<int>(Dim);
  using key_type = LandmarkKey<Dim, Frames>;
  using renderer_type = LandmarkRenderer<Dim, Frames>;
  using observation_type = Tensor<float, Dim + 1>;
  using action_type = int;
  using action_space_type = rl::Discrete<kActions>;

  /// ±1 voxel along x, y(, z) of the current level: actions 2a (+) and 2a + 1 (−) move axis a.
  static action_space_type action_space() noexcept { return {}; }
  /// Observations are rendered cubes [F, cube, cube(, cube)] of intensities (normalised volumes:
  /// [0, 1], 0 outside the grid); no Box space fits a tensor, so the shape is the space.
  [[nodiscard]] Shape<Dim + 1> observation_shape() const noexcept { return renderer_.obs_shape(); }

  LandmarkEnv(LandmarkVolumes<Dim> volumes, const LandmarkEnvConfig& config)
      : config_(checked(config)), renderer_(std::move(volumes), config.cube) {
    for (const auto& v : renderer_.volumes())
      RLMED_CHECK(v.pyramid.level_count() >= config_.levels, "LandmarkEnv: volume '", v.name, "' has ",
                  v.pyramid.level_count(), " pyramid levels, the search needs ", config_.levels);
    level_path_.reserve(static_cast<std::size_t>(config_.max_steps + 1));
    trajectory_mm_.reserve(static_cast<std::size_t>(config_.max_steps + 1));
  }

  [[nodiscard]] const LandmarkEnvConfig& config() const noexcept { return config_; }
  [[nodiscard]] const renderer_type& renderer() const noexcept { return renderer_; }
  [[nodiscard]] const key_type& key() const noexcept { return key_; }
  [[nodiscard]] index_t level() const noexcept { return key_.level; }
  [[nodiscard]] bool done() const noexcept { return done_; }
  [[nodiscard]] index_t steps() const noexcept { return steps_; }
  [[nodiscard]] const LandmarkVolume<Dim>& volume() const { return renderer_.volumes()[static_cast<std::size_t>(key_.volume)]; }
  [[nodiscard]] const Vec<Dim>& target_mm() const { return volume().landmarks_mm[static_cast<std::size_t>(key_.landmark)]; }
  /// World position (mm) of the current voxel centre.
  [[nodiscard]] Vec<Dim> position_mm() const { return voxel_mm(key_.level, key_.position()); }
  [[nodiscard]] double distance_mm() const { return imaging::distance_mm<Dim>(position_mm(), target_mm()); }
  /// The answer: the mean of the final loop's positions (finest-level oscillation) or the last position.
  [[nodiscard]] const Vec<Dim>& answer_mm() const noexcept { return answer_mm_; }
  /// Positions (mm) visited since reset, one per step (for trajectory pictures).
  [[nodiscard]] const std::vector<Vec<Dim>>& trajectory_mm() const noexcept { return trajectory_mm_; }

  /// Starts a search for `landmark` of `volume` at the world point `start_mm` (snapped to the
  /// nearest voxel of the coarsest search level, clamped into its grid).
  void reset_at(index_t volume, index_t landmark, const Vec<Dim>& start_mm, int head = 0) {
    RLMED_CHECK(volume >= 0 && volume < static_cast<index_t>(renderer_.volumes().size()), "LandmarkEnv: volume ",
                volume, " outside [0, ", renderer_.volumes().size(), ")");
    const auto& v = renderer_.volumes()[static_cast<std::size_t>(volume)];
    RLMED_CHECK(landmark >= 0 && landmark < v.landmark_count(), "LandmarkEnv: landmark ", landmark, " outside [0, ",
                v.landmark_count(), ") of volume '", v.name, "'");
    RLMED_CHECK(head >= 0 && head < 128, "LandmarkEnv: head ", head, " outside [0, 128)");
    key_.volume = static_cast<std::int32_t>(volume);
    key_.landmark = static_cast<std::int16_t>(landmark);
    key_.head = static_cast<std::int8_t>(head);
    steps_ = 0;
    done_ = false;
    trajectory_mm_.clear();
    enter_level(config_.levels - 1, start_mm);
    trajectory_mm_.push_back(position_mm());
    answer_mm_ = position_mm();
  }

  /// Random train start (see the header); draws Dim uniforms from rng.
  void reset_random(PhiloxStream& rng, index_t volume, index_t landmark, int head = 0) {
    RLMED_CHECK(volume >= 0 && volume < static_cast<index_t>(renderer_.volumes().size()), "LandmarkEnv: volume ",
                volume, " outside [0, ", renderer_.volumes().size(), ")");
    const auto& v = renderer_.volumes()[static_cast<std::size_t>(volume)];
    RLMED_CHECK(landmark >= 0 && landmark < v.landmark_count(), "LandmarkEnv: landmark ", landmark, " outside [0, ",
                v.landmark_count(), ")");
    Vec<Dim> start{};
    if (config_.start_radius_mm > 0) {
      const Vec<Dim>& t = v.landmarks_mm[static_cast<std::size_t>(landmark)];
      for (std::size_t a = 0; a < Dim; ++a)
        start[a] = t[a] + config_.start_radius_mm * (2.0 * rng.uniform_double() - 1.0);
    } else {
      const auto& fine = v.pyramid.level(0);
      const auto n = fine.size_xyz();
      Vec<Dim> idx{};
      for (std::size_t a = 0; a < Dim; ++a) idx[a] = (0.1 + 0.8 * rng.uniform_double()) * double(n[a] - 1);
      start = fine.index_to_physical(idx);
    }
    reset_at(volume, landmark, start, head);
  }

  /// One move; rlmed::Error for an action outside [0, 2·Dim) or a step after the end.
  LandmarkStepInfo step_key(int action) {
    RLMED_CHECK(action >= 0 && action < kActions, "LandmarkEnv: action ", action, " outside [0, ", kActions, ")");
    RLMED_CHECK(!done_, "LandmarkEnv: step after the search ended; call reset_at or reset_random");
    LandmarkStepInfo info;
    const double before = distance_mm();
    imaging::Voxel<Dim> p = key_.position();
    const auto axis = static_cast<std::size_t>(action / 2);
    p[axis] += (action % 2 == 0) ? 1 : -1;
    const auto n = level_image().size_xyz();
    if (p[axis] < 0 || p[axis] >= n[axis]) p = key_.position();  // refused: stays
    ++steps_;
    ++level_steps_;
    // Oscillation: p equals one of the last k positions of this level.
    const auto len = static_cast<index_t>(level_path_.size());
    index_t loop_start = -1;
    for (index_t j = len - 1; j >= std::max<index_t>(0, len - config_.oscillation_window); --j)
      if (level_path_[static_cast<std::size_t>(j)] == p) {
        loop_start = j;
        break;
      }
    info.oscillated = loop_start >= 0;
    push_frame(p);
    level_path_.push_back(p);
    const bool finest = key_.level == 0;
    const bool level_budget = config_.max_steps_per_level > 0 && level_steps_ >= config_.max_steps_per_level;
    const bool budget = steps_ >= config_.max_steps;
    if (info.oscillated && finest) {
      Vec<Dim> mean{};
      const auto count = static_cast<double>(len - loop_start);
      for (index_t j = loop_start; j < len; ++j) {
        const Vec<Dim> w = voxel_mm(0, level_path_[static_cast<std::size_t>(j)]);
        for (std::size_t a = 0; a < Dim; ++a) mean[a] += w[a] / count;
      }
      answer_mm_ = mean;
      info.done = true;
    } else if ((info.oscillated || level_budget) && !finest && !budget) {
      enter_level(key_.level - 1, voxel_mm(key_.level, p));
      info.level_changed = true;
    } else if (budget || level_budget) {
      answer_mm_ = position_mm();
      info.done = true;
    }
    done_ = info.done;
    trajectory_mm_.push_back(position_mm());
    const double after = distance_mm();
    info.reward = std::clamp(before - after, -config_.reward_clip, config_.reward_clip);
    return info;
  }

  /// Renders the current observation [F, *cube].
  void observation_into(TensorView<float, Dim + 1> out) const {
    Shape<Dim + 2> s{};
    s[0] = 1;
    for (std::size_t t = 0; t < Dim + 1; ++t) s[t + 1] = out.extent(t);
    renderer_.render_batch(std::span<const key_type>(&key_, 1), TensorView<float, Dim + 2>(out.data(), s));
  }
  [[nodiscard]] observation_type observation() const {
    observation_type o(renderer_.obs_shape());
    observation_into(o.view());
    return o;
  }

 private:
  static const LandmarkEnvConfig& checked(const LandmarkEnvConfig& c) {
    c.validate();
    return c;
  }
  [[nodiscard]] const imaging::Image<float, Dim>& level_image() const { return volume().pyramid.level(key_.level); }
  [[nodiscard]] Vec<Dim> voxel_mm(index_t level, const imaging::Voxel<Dim>& v) const {
    Vec<Dim> idx{};
    for (std::size_t a = 0; a < Dim; ++a) idx[a] = double(v[a]);
    return volume().pyramid.level(level).index_to_physical(idx);
  }
  void push_frame(const imaging::Voxel<Dim>& p) {
    for (std::size_t f = 0; f + 1 < key_.frames_xyz.size(); ++f) key_.frames_xyz[f] = key_.frames_xyz[f + 1];
    for (std::size_t a = 0; a < Dim; ++a) key_.frames_xyz.back()[a] = static_cast<std::int32_t>(p[a]);
  }
  /// Moves to `level` at the voxel nearest `point_mm`, clamped into the grid; history restarts.
  void enter_level(index_t level, const Vec<Dim>& point_mm) {
    key_.level = static_cast<std::int8_t>(level);
    const auto& img = level_image();
    imaging::Voxel<Dim> v = volume().pyramid.voxel_at_level(level, point_mm);
    const auto n = img.size_xyz();
    for (std::size_t a = 0; a < Dim; ++a) v[a] = std::clamp<index_t>(v[a], 0, n[a] - 1);
    for (auto& f : key_.frames_xyz)
      for (std::size_t a = 0; a < Dim; ++a) f[a] = static_cast<std::int32_t>(v[a]);
    level_path_.clear();
    level_path_.push_back(v);
    level_steps_ = 0;
  }

  LandmarkEnvConfig config_;
  renderer_type renderer_;
  key_type key_{};
  index_t steps_ = 0, level_steps_ = 0;
  bool done_ = true;
  Vec<Dim> answer_mm_{};
  std::vector<imaging::Voxel<Dim>> level_path_;  // positions on the current level, in order
  std::vector<Vec<Dim>> trajectory_mm_;
};

}  // namespace rlmed::env
