// rlmed/seg/unet_trainer.hpp — the supervised U-Net baseline of PixelDRL-MG (SYSTEMS.md S6):
// nn::UNet<2> with one logit channel, trained with BCE-with-logits + soft Dice by Adam on random
// crops, predicting sigmoid probabilities on whole images.
//
// Design decisions:
//  * The protocol of the EM learning test (tests/learning/test_learning_unet_em.cpp), which
//    reached held-out Dice 0.805: random crops with flips, Adam with a cosine decay to final_lr,
//    loss = bce_weight·BCE + dice_weight·softDice(sigmoid(logits)). The U-Net's width (Base) is a
//    template parameter; 8 is the CPU-sized default.
//  * Whole-image prediction pads each side with zeros up to a multiple of 8 (the U-Net's
//    requirement) and crops the result back, so any image size works; with z-scored inputs 0 is
//    the mean intensity.
//  * All training buffers are members resized per step (no allocation after the first step).
//    The crop stream is Philox (seed, 1): the same seed and set give bit-identical weights for a
//    given thread count.
//  * Checkpoints hold the network, Adam's state and the step (nn/checkpoint.hpp), so train() can
//    continue from a loaded checkpoint with the remaining steps.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>

#include "rlmed/nn/checkpoint.hpp"
#include "rlmed/nn/loss.hpp"
#include "rlmed/nn/models/unet.hpp"
#include "rlmed/nn/optim/optimizers.hpp"
#include "rlmed/nn/optim/schedule.hpp"
#include "rlmed/seg/dataset.hpp"

namespace rlmed::seg {

struct UNetTrainConfig {
  int steps = 1500;
  index_t batch = 4;
  index_t crop = 64;       ///< multiple of 8
  double lr = 3e-3;
  double final_lr = 1e-4;  ///< cosine decay from lr to final_lr over `steps`
  double bce_weight = 1, dice_weight = 1;
  bool flips = true;
  std::uint64_t seed = 1;
};

/// One training step's report to a progress callback.
struct StepReport {
  int step = 0, total = 0;
  double loss = 0;
};

/// Copies image [H, W] into x [1, C, H', W'] channel `channel`, zero padded to multiples of `m`.
inline void pad_into(Tensor<float, 4>& x, TensorView<const float, 2> image, index_t m, index_t channels = 1,
                     index_t channel = 0) {
  const index_t H = image.extent(0), W = image.extent(1);
  const Shape<4> s{1, channels, (H + m - 1) / m * m, (W + m - 1) / m * m};
  if (x.shape() != s) x = Tensor<float, 4>(s);
  for (index_t y = 0; y < s[2]; ++y)
    for (index_t c = 0; c < s[3]; ++c) x(0, channel, y, c) = y < H && c < W ? image(y, c) : 0.0f;
}

/// BCE-with-logits + soft Dice of sigmoid(logits), and its gradient with respect to the logits.
struct DiceBceLoss {
  double bce_weight = 1, dice_weight = 1;
  Tensor<float, 4> g_bce, prob, g_dice, grad;

  double operator()(TensorView<const float, 4> logits, TensorView<const float, 4> target) {
    prob.resize(logits.shape());
    grad.resize(logits.shape());
    const double bce = nn::loss::bce_with_logits<float, 4>(logits, target, g_bce);
    for (index_t i = 0; i < prob.size(); ++i) prob.data()[i] = 1.0f / (1.0f + std::exp(-logits.data()[i]));
    const double dice = nn::loss::soft_dice<float, 4>(prob.view(), target, g_dice);
    const auto wb = static_cast<float>(bce_weight), wd = static_cast<float>(dice_weight);
    for (index_t i = 0; i < grad.size(); ++i) {
      const float p = prob.data()[i];
      grad.data()[i] = wb * g_bce.data()[i] + wd * g_dice.data()[i] * p * (1 - p);
    }
    return bce_weight * bce + dice_weight * dice;
  }
};

template <index_t Base = 8>
class UNetSegmenter {
 public:
  using Net = nn::UNet<2, float, 1, 1, Base>;

  explicit UNetSegmenter(std::uint64_t seed = 1) : opt_(net) { initialize(seed); }
  UNetSegmenter(const UNetSegmenter&) = delete;  // the optimiser points into `net`
  UNetSegmenter& operator=(const UNetSegmenter&) = delete;

  void initialize(std::uint64_t seed) {
    PhiloxStream rng(seed, 0);
    net.initialize(rng);
    opt_ = nn::optim::Adam<float>(net);
    step_ = 0;
  }

  /// Trains for config.steps - steps_done() more steps (all of them on a fresh network).
  void train(const SegmentationSet& set, const UNetTrainConfig& cfg,
             const std::function<void(const StepReport&)>& progress = {}) {
    RLMED_CHECK(cfg.crop >= 8 && cfg.crop % 8 == 0, "UNetSegmenter: crop must be a positive multiple of 8, found ",
                cfg.crop);
    RLMED_CHECK(cfg.steps >= 0 && cfg.batch >= 1 && cfg.lr > 0, "UNetSegmenter: steps ", cfg.steps, ", batch ",
                cfg.batch, ", lr ", cfg.lr, " (expected steps >= 0, batch >= 1, lr > 0)");
    loss_.bce_weight = cfg.bce_weight;
    loss_.dice_weight = cfg.dice_weight;
    const nn::optim::CosineSchedule schedule{std::max(cfg.steps, 1), cfg.final_lr};
    nn::Context ctx;
    ctx.input_grad = false;
    for (; step_ < cfg.steps; ++step_) {
      PhiloxStream crops(cfg.seed, 1);  // position = 2^20 words per step: a resumed run draws the same crops
      crops.seek(std::uint64_t(step_) << 20);
      sample_crops(set, cfg.batch, cfg.crop, cfg.flips, crops, x_, y_);
      opt_.lr = schedule(cfg.lr, step_);
      opt_.zero_grad();
      const auto logits = net.forward(ctx, x_.view(), cache_);
      const double l = loss_(logits, y_.view());
      net.backward(ctx, cache_, loss_.grad.view());
      opt_.step();
      if (progress) progress({step_ + 1, cfg.steps, l});
    }
  }

  /// Sigmoid probability map [H, W] of one image [H, W].
  void predict_probability_into(TensorView<const float, 2> image, Tensor<float, 2>& prob) {
    pad_into(px_, image, 8);
    nn::Context ctx;
    ctx.training = false;
    ctx.input_grad = false;
    const auto logits = net.forward(ctx, px_.view(), eval_cache_);
    const index_t H = image.extent(0), W = image.extent(1);
    if (prob.shape() != Shape<2>({H, W})) prob = Tensor<float, 2>(Shape<2>{H, W});
    for (index_t y = 0; y < H; ++y)
      for (index_t x = 0; x < W; ++x) prob(y, x) = 1.0f / (1.0f + std::exp(-logits(0, 0, y, x)));
  }

  /// Binary mask (probability > 0.5).
  Tensor<float, 2> predict_mask(TensorView<const float, 2> image) {
    Tensor<float, 2> p;
    predict_probability_into(image, p);
    for (float& v : p) v = v > 0.5f ? 1.0f : 0.0f;
    return p;
  }

  [[nodiscard]] int steps_done() const noexcept { return step_; }
  index_t parameter_count() { return nn::parameter_count(net); }

  /// Parameters under "unet.", Adam state, and the step counter.
  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    net.parameters(visit, nn::join_name(prefix, "unet"));
  }
  template <class V>
  void buffers(V&& visit, std::string_view prefix = {}) {
    step_tensor_(0) = step_;
    visit(nn::join_name(prefix, "unet_step"), step_tensor_);
  }
  using value_type = float;

  void save(const std::filesystem::path& path, const std::map<std::string, std::string>& metadata = {}) {
    nn::save_checkpoint(path, *this, &opt_, metadata);
  }
  std::map<std::string, std::string> load(const std::filesystem::path& path) {
    auto meta = nn::load_checkpoint(path, *this, &opt_);
    step_ = static_cast<int>(step_tensor_(0));
    return meta;
  }

  Net net;

 private:
  nn::optim::Adam<float> opt_;
  typename Net::Cache cache_, eval_cache_;
  DiceBceLoss loss_;
  Tensor<float, 4> x_, y_, px_;
  Tensor<std::int64_t, 1> step_tensor_{Shape<1>{1}};
  int step_ = 0;
};

}  // namespace rlmed::seg
