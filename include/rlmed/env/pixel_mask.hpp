// rlmed/env/pixel_mask.hpp — the batched per-pixel segmentation environment of PixelDRL-MG
// (SYSTEMS.md S6): every pixel of every image is an agent with two actions,
// 0 = set to zero (background) and 1 = keep (object).
//
// Design decisions:
//  * Two modes. `carve` is the paper's: the state image evolves X^(t+1) = X^(t) ⊙ a^(t), so a
//    pixel set to zero stays zero (irreversible), and the segmentation after a step is
//    f = 1[X ≠ 0]. Pixels of X^(0) that are exactly 0 are background from the start, so the
//    initial mask is f^(0) = 1[X^(0) ≠ 0]. `direct` is the ablation: the state is (original
//    image, current mask) as two channels, the action overwrites the mask (reversible), and the
//    initial mask is the same 1[X^(0) ≠ 0], so both modes start from the same segmentation and
//    their rewards are comparable.
//  * Per-pixel reward of step t: r = (f^(t−1) − G)² − (f^(t) − G)² with G ∈ {0, 1}; for binary
//    masks it is +1 when a pixel becomes right, −1 when it becomes wrong, 0 otherwise.
//  * Every episode lasts exactly t_max steps for the whole batch (the network sees the batch as
//    one tensor); the caller decides whether the end is terminal (PixelRL: yes, R = 0) or a
//    time limit to bootstrap from (rl/pixel_a3c.hpp, `bootstrap_at_episode_end`).
//  * Layout: images, labels, masks and rewards are [B, 1, H, W] like the network's value map;
//    actions are int32 [B, H, W] (one per pixel, no channel axis, as a categorical sample over
//    axis 1 of [B, A, H, W] logits gives). The observation for the network is [B, C, H, W] with
//    C = 1 (carve: X^(t)) or C = 2 (direct: image, mask).
//  * All buffers live in the environment and are resized on reset (Tensor::resize keeps a
//    fitting allocation): after the first reset of a given size nothing is allocated. Inputs
//    are validated completely before any state changes, so a rejected step leaves the episode
//    as it was. Elementwise work runs over rlmed::parallel_for: results never depend on the
//    thread count.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/metrics.hpp"

namespace rlmed::env {

enum class PixelMaskMode {
  carve,   ///< paper: X^(t+1) = X^(t) ⊙ a^(t), f = 1[X ≠ 0], irreversible
  direct,  ///< ablation: state (image, mask), the action writes the mask, reversible
};

struct PixelMaskConfig {
  PixelMaskMode mode = PixelMaskMode::carve;
  int t_max = 10;  ///< steps per episode (paper: 10)
};

/// The two per-pixel actions.
inline constexpr std::int32_t kPixelActionZero = 0;  ///< set to zero: background
inline constexpr std::int32_t kPixelActionKeep = 1;  ///< do nothing: object

template <class T>
class PixelMaskEnv {
  static_assert(std::is_floating_point_v<T>, "PixelMaskEnv holds float or double images");

 public:
  using value_type = T;
  static constexpr int num_actions = 2;

  explicit PixelMaskEnv(PixelMaskConfig cfg = {}) : config_(cfg) {
    RLMED_CHECK(cfg.t_max >= 1, "PixelMaskEnv: t_max must be >= 1, found ", cfg.t_max);
    RLMED_CHECK(cfg.mode == PixelMaskMode::carve || cfg.mode == PixelMaskMode::direct,
                "PixelMaskEnv: unknown mode ", static_cast<int>(cfg.mode));
  }

  [[nodiscard]] const PixelMaskConfig& config() const noexcept { return config_; }
  [[nodiscard]] PixelMaskMode mode() const noexcept { return config_.mode; }
  /// Channels of the observation: 1 (carve) or 2 (direct).
  [[nodiscard]] index_t observation_channels() const noexcept { return config_.mode == PixelMaskMode::carve ? 1 : 2; }

  /// Starts one episode per image. images [B, 1, H, W] finite; labels [B, 1, H, W] with values
  /// exactly 0 or 1. Both are copied; the environment keeps no reference to them.
  void reset(TensorView<const T, 4> images, TensorView<const T, 4> labels) {
    const Shape<4> s = images.shape();
    RLMED_CHECK(s[0] >= 1 && s[1] == 1 && s[2] >= 1 && s[3] >= 1,
                "PixelMaskEnv::reset: images must be [B, 1, H, W] with B, H, W >= 1, found ", s);
    RLMED_CHECK(labels.shape() == s, "PixelMaskEnv::reset: labels shape ", labels.shape(), " differs from images shape ",
                s);
    RLMED_CHECK(s[0] * s[2] * s[3] <= (index_t(1) << 32),
                "PixelMaskEnv::reset: B*H*W = ", s[0] * s[2] * s[3], " exceeds 2^32 pixels per batch");
    const T* img = images.data();
    const T* lab = labels.data();
    for (index_t i = 0; i < images.size(); ++i) {
      if (!std::isfinite(img[i])) {
        RLMED_THROW("PixelMaskEnv::reset: images must be finite, found ", img[i], " at flat index ", i, " of ", s);
      }
      if (!(lab[i] == T(0) || lab[i] == T(1))) {
        RLMED_THROW("PixelMaskEnv::reset: labels must be 0 or 1, found ", lab[i], " at flat index ", i, " of ", s);
      }
    }
    shape_ = s;
    const index_t C = observation_channels();
    images_.resize(s);
    labels_.resize(s);
    mask_.resize(s);
    rewards_.resize(s);
    observation_.resize(Shape<4>{s[0], C, s[2], s[3]});
    copy(images_.view(), images);
    copy(labels_.view(), labels);
    const index_t plane = s[2] * s[3];
    T* obs = observation_.data();
    T* mask = mask_.data();
    parallel_for(0, s[0] * plane, [&](index_t i) {
      const index_t b = i / plane, p = i % plane;
      const T x = img[i];
      mask[i] = x != T(0) ? T(1) : T(0);
      if (C == 1) {
        obs[i] = x;  // X^(0)
      } else {
        obs[(b * 2) * plane + p] = x;
        obs[(b * 2 + 1) * plane + p] = mask[i];
      }
    }, kGrain);
    fill(rewards_.view(), T(0));
    t_ = 0;
    started_ = true;
  }

  /// One step of every pixel: actions [B, H, W] in {0, 1}; writes the per-pixel rewards into
  /// rewards_out [B, 1, H, W]. Returns true when the episode has reached t_max (done).
  bool step_into(TensorView<const std::int32_t, 3> actions, TensorView<T, 4> rewards_out) {
    RLMED_CHECK(started_, "PixelMaskEnv::step: call reset before the first step");
    RLMED_CHECK(t_ < config_.t_max, "PixelMaskEnv::step: the episode ended after t_max = ", config_.t_max,
                " steps; call reset");
    const Shape<3> want{shape_[0], shape_[2], shape_[3]};
    RLMED_CHECK(actions.shape() == want, "PixelMaskEnv::step: actions must be [B, H, W] = ", want, ", found ",
                actions.shape());
    RLMED_CHECK(rewards_out.shape() == shape_, "PixelMaskEnv::step: rewards_out must be [B, 1, H, W] = ", shape_,
                ", found ", rewards_out.shape());
    const std::int32_t* a = actions.data();
    for (index_t i = 0; i < actions.size(); ++i) {
      if (a[i] != kPixelActionZero && a[i] != kPixelActionKeep) {
        RLMED_THROW("PixelMaskEnv::step: actions must be 0 (set to zero) or 1 (keep), found ", a[i],
                    " at flat index ", i, " of ", actions.shape());
      }
    }
    const index_t plane = shape_[2] * shape_[3];
    const bool carve = config_.mode == PixelMaskMode::carve;
    T* obs = observation_.data();
    T* mask = mask_.data();
    T* r = rewards_out.data();
    const T* g = labels_.data();
    parallel_for(0, shape_[0] * plane, [&](index_t i) {
      const index_t b = i / plane, p = i % plane;
      const T before = mask[i];
      T after;
      if (carve) {
        T& x = obs[i];                                   // X^(t) -> X^(t+1) = X^(t) ⊙ a
        if (a[i] == kPixelActionZero) x = T(0);
        after = x != T(0) ? T(1) : T(0);
      } else {
        after = a[i] == kPixelActionKeep ? T(1) : T(0);  // the action writes the mask
        obs[(b * 2 + 1) * plane + p] = after;
      }
      mask[i] = after;
      const T e0 = before - g[i], e1 = after - g[i];
      r[i] = e0 * e0 - e1 * e1;
    }, kGrain);
    ++t_;
    return done();
  }

  /// step_into with the environment's own reward buffer; returns a view of the rewards.
  TensorView<const T, 4> step(TensorView<const std::int32_t, 3> actions) {
    RLMED_CHECK(started_, "PixelMaskEnv::step: call reset before the first step");
    step_into(actions, rewards_.view());
    return rewards_.view();
  }

  /// Network input [B, C, H, W]: carve X^(t); direct (image, mask).
  [[nodiscard]] TensorView<const T, 4> observation() const { return observation_.view(); }
  /// Current segmentation f^(t) [B, 1, H, W] in {0, 1}.
  [[nodiscard]] TensorView<const T, 4> mask() const { return mask_.view(); }
  [[nodiscard]] TensorView<const T, 4> labels() const { return labels_.view(); }
  /// The images the episode started from (X^(0)).
  [[nodiscard]] TensorView<const T, 4> images() const { return images_.view(); }
  /// Rewards of the last step() (zero after reset).
  [[nodiscard]] TensorView<const T, 4> rewards() const { return rewards_.view(); }
  /// [B, 1, H, W] of the current episode.
  [[nodiscard]] const Shape<4>& shape() const noexcept { return shape_; }
  [[nodiscard]] index_t batch() const noexcept { return shape_[0]; }
  /// Steps taken in this episode.
  [[nodiscard]] int t() const noexcept { return t_; }
  [[nodiscard]] int t_max() const noexcept { return config_.t_max; }
  [[nodiscard]] int steps_left() const noexcept { return config_.t_max - t_; }
  [[nodiscard]] bool done() const noexcept { return t_ >= config_.t_max; }
  [[nodiscard]] bool started() const noexcept { return started_; }

  /// Dice (ε = 1e-4, imaging::dice) of the current mask against the label, per image.
  void dice_into(std::span<double> out) const {
    RLMED_CHECK(started_, "PixelMaskEnv::dice: call reset first");
    RLMED_CHECK(static_cast<index_t>(out.size()) == shape_[0], "PixelMaskEnv::dice: expected ", shape_[0],
                " outputs (one per image), found ", out.size());
    for (index_t b = 0; b < shape_[0]; ++b) out[static_cast<std::size_t>(b)] = imaging::dice(mask_[b], labels_[b]);
  }
  /// Mean over the batch of the per-image Dice.
  [[nodiscard]] double mean_dice() const {
    RLMED_CHECK(started_, "PixelMaskEnv::dice: call reset first");
    double s = 0;
    for (index_t b = 0; b < shape_[0]; ++b) s += imaging::dice(mask_[b], labels_[b]);
    return s / double(shape_[0]);
  }

 private:
  static constexpr index_t kGrain = 4096;  ///< pixels below which the elementwise loops stay serial

  PixelMaskConfig config_;
  Shape<4> shape_{};
  Tensor<T, 4> images_, labels_, mask_, rewards_;
  Tensor<T, 4> observation_;  // [B, C, H, W]
  int t_ = 0;
  bool started_ = false;
};

}  // namespace rlmed::env
