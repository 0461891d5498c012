// rlmed/seg/method.hpp — one interface over every 2D segmentation method of the PixelDRL-MG
// comparison, so a CLI trainer/evaluator (examples/pixel_segmentation) treats them alike:
//
//   auto m = seg::make_seg_method("ddqn", seed);     // unet | pixelrl | dqn | ddqn | dueling | ac
//   m->train(train_set, options, [](const seg::TrainReport& r) { ... });
//   seg::SegPrediction p = m->predict(image);         // p.mask [H, W] in {0, 1};
//                                                      // p.steps[t] = mask after step t+1 (RL methods)
//   m->save("run/model.safetensors");  m2->load(...);  m->parameter_count();  m->name();
//
// Methods (all CPU-sized; the network of each is fixed here, the budgets are TrainOptions):
//  * unet     supervised U-Net (seg/unet_trainer.hpp, Base 8), BCE + soft Dice, Adam, crops.
//             steps = optimiser steps (default 1500).
//  * pixelrl  PixelRL refinement (rl/pixel_rl.hpp): a U-Net trained for coarse_steps (default 300)
//             gives the coarse probability map; a PixelFcn<2 → 9 + 1> actor-critic with the
//             learnable reward-map convolution refines it in t_max steps. steps = RL updates
//             (default 400). The checkpoint holds both networks.
//  * dqn, ddqn, dueling  per-pixel Q-learning on the carve environment (rl/pixel_dqn.hpp) with a
//             PixelFcn<1 → 2> (dueling: 2 advantages + 1 value): DQN = plain max target,
//             ddqn = Double target, dueling = Double target + dueling head. steps = environment
//             steps of `batch` crops, each followed by one update (default 1500).
//  * ac       plain per-pixel actor-critic on the carve environment: PixelActorCriticLearner with
//             learn_reward_map = false (no reward-map convolution) and synchronous updates (no
//             A3C asynchrony), PixelFcn<1 → 2 + 1>. steps = updates (default 400).
// Design decisions:
//  * Run-time polymorphism (a virtual base) only here, at the CLI boundary; everything below is
//    templates. predict() handles any image size (the U-Net pads to multiples of 8; PixelFcn is
//    size-agnostic) and returns masks of the image's size.
//  * RL methods train on episodes over random crops (TrainOptions.crop) and predict with greedy
//    actions for t_max steps on the whole image; their per-step masks are the paper's Fig. 4.
//  * The carve environment needs intensities where 0 is not the dark end (seg/dataset.hpp
//    z-scores by default); the actor-critic uses β = 0.05 rather than the paper's 0.01 (the PA3C
//    learning test's finding: with 0.01 a small policy saturates to "set to zero").
//  * Checkpoints are safetensors with metadata "method"; loading another method's file is an
//    error. RL checkpoints hold parameters and learner counters, not optimiser state.
#pragma once

#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "rlmed/env/pixel_mask.hpp"
#include "rlmed/nn/checkpoint.hpp"
#include "rlmed/nn/optim/optimizers.hpp"
#include "rlmed/rl/pixel_a3c.hpp"
#include "rlmed/rl/pixel_dqn.hpp"
#include "rlmed/rl/pixel_rl.hpp"
#include "rlmed/seg/dataset.hpp"
#include "rlmed/seg/pixel_fcn.hpp"
#include "rlmed/seg/unet_trainer.hpp"

namespace rlmed::seg {

struct TrainOptions {
  int steps = 0;            ///< 0: the method's default (see the header comment)
  index_t batch = 4;        ///< crops per step / update
  index_t crop = 64;        ///< training crop side (multiple of 8)
  double lr = 0;            ///< 0: the method's default (unet 3e-3, RL 1e-3)
  int t_max = 5;            ///< RL episode length
  double gamma = 0.95;      ///< RL discount (paper 0.95)
  int coarse_steps = 300;   ///< pixelrl: U-Net steps of the coarse model
};

struct TrainReport {
  std::string phase;        ///< "unet", "coarse", "rl"
  int step = 0, total = 0;
  double loss = 0;
  double dice = std::numeric_limits<double>::quiet_NaN();  ///< training-episode Dice (RL), else NaN
};
using ProgressFn = std::function<void(const TrainReport&)>;

struct SegPrediction {
  Tensor<float, 2> mask;               ///< [H, W] in {0, 1}
  std::vector<Tensor<float, 2>> steps; ///< RL: mask after step 1 … t_max; empty for unet
};

class SegMethod {
 public:
  virtual ~SegMethod() = default;
  [[nodiscard]] virtual std::string name() const = 0;
  virtual void train(const SegmentationSet& set, const TrainOptions& options, const ProgressFn& progress = {}) = 0;
  virtual SegPrediction predict(TensorView<const float, 2> image) = 0;
  virtual void save(const std::filesystem::path& path) = 0;
  virtual void load(const std::filesystem::path& path) = 0;
  virtual index_t parameter_count() = 0;
};

inline const std::vector<std::string>& seg_method_names() {
  static const std::vector<std::string> names{"unet", "pixelrl", "dqn", "ddqn", "dueling", "ac"};
  return names;
}

namespace detail {

inline void check_options(const TrainOptions& o, const char* who) {
  RLMED_CHECK(o.steps >= 0 && o.batch >= 1 && o.crop >= 8 && o.crop % 8 == 0 && o.lr >= 0 && o.t_max >= 1 &&
                  o.gamma >= 0 && o.gamma <= 1 && o.coarse_steps >= 0,
              who, ": bad TrainOptions (steps ", o.steps, ", batch ", o.batch, ", crop ", o.crop, ", lr ", o.lr,
              ", t_max ", o.t_max, ", gamma ", o.gamma, "); expected steps, coarse_steps >= 0, batch >= 1, crop a "
              "positive multiple of 8, lr >= 0, t_max >= 1, gamma in [0, 1]");
}

inline void check_method(const std::map<std::string, std::string>& meta, const std::string& name,
                         const std::filesystem::path& path) {
  const auto it = meta.find("method");
  RLMED_CHECK(it != meta.end() && it->second == name, "SegMethod::load: ", path.string(), " holds method '",
              it == meta.end() ? std::string("(none)") : it->second, "', expected '", name, "'");
}

/// Mask [H, W] of channel 0 of a [1, 1, H, W] map.
inline Tensor<float, 2> plane_of(TensorView<const float, 4> m) {
  Tensor<float, 2> out(Shape<2>{m.extent(2), m.extent(3)});
  std::copy(m.data(), m.data() + out.size(), out.data());
  return out;
}

/// Saves/loads two modules under prefixes (parameters and buffers).
template <class A, class B>
struct PairModule {
  using value_type = float;
  A& a;
  B& b;
  const char* pa;
  const char* pb;
  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    a.parameters(visit, nn::join_name(prefix, pa));
    b.parameters(visit, nn::join_name(prefix, pb));
  }
  template <class V>
  void buffers(V&& visit, std::string_view prefix = {}) {
    a.buffers(visit, nn::join_name(prefix, pa));
    b.buffers(visit, nn::join_name(prefix, pb));
  }
};

}  // namespace detail

// ---- unet ---------------------------------------------------------------------------------------

class UNetMethod final : public SegMethod {
 public:
  explicit UNetMethod(std::uint64_t seed = 1) : seed_(seed), unet_(seed) {}
  [[nodiscard]] std::string name() const override { return "unet"; }
  void train(const SegmentationSet& set, const TrainOptions& o, const ProgressFn& progress = {}) override {
    detail::check_options(o, "unet");
    UNetTrainConfig c;
    c.steps = o.steps > 0 ? o.steps : 1500;
    c.batch = o.batch;
    c.crop = o.crop;
    c.lr = o.lr > 0 ? o.lr : 3e-3;
    c.seed = seed_;
    unet_.train(set, c, [&](const StepReport& r) {
      if (progress) progress({"unet", r.step, r.total, r.loss});
    });
  }
  SegPrediction predict(TensorView<const float, 2> image) override { return {unet_.predict_mask(image), {}}; }
  void save(const std::filesystem::path& path) override { unet_.save(path, {{"method", name()}}); }
  void load(const std::filesystem::path& path) override {
    detail::check_method(io::SafetensorsReader::open(path).metadata(), name(), path);
    unet_.load(path);
  }
  index_t parameter_count() override { return unet_.parameter_count(); }

 private:
  std::uint64_t seed_;
  UNetSegmenter<8> unet_;
};

// ---- pixelrl ------------------------------------------------------------------------------------

class PixelRLMethod final : public SegMethod {
 public:
  using Fcn = PixelFcn<float, 2, 10, 16>;
  using Net = rl::FusedPixelActorCritic<Fcn, 9>;

  explicit PixelRLMethod(std::uint64_t seed = 1) : seed_(seed), coarse_(seed), learner_(net_, config(seed)) {
    PhiloxStream rng(seed, 7);
    net_.initialize(rng);
  }
  [[nodiscard]] std::string name() const override { return "pixelrl"; }

  static rl::PixelA3CConfig config(std::uint64_t seed) {
    rl::PixelA3CConfig c;
    c.seed = seed;
    c.stream = 11;
    c.max_grad_norm = 10;
    return c;
  }

  void train(const SegmentationSet& set, const TrainOptions& o, const ProgressFn& progress = {}) override {
    detail::check_options(o, "pixelrl");
    UNetTrainConfig c;
    c.steps = o.coarse_steps;
    c.batch = o.batch;
    c.crop = o.crop;
    c.lr = 3e-3;
    c.seed = seed_;
    coarse_.train(set, c, [&](const StepReport& r) {
      if (progress) progress({"coarse", r.step, r.total, r.loss});
    });
    t_max_ = o.t_max;
    learner_.config.gamma = o.gamma;
    nn::optim::Adam<float> opt(learner_, {o.lr > 0 ? o.lr : 1e-3});
    rl::PixelRefineEnv<float> env({o.t_max});
    const int total = o.steps > 0 ? o.steps : 400;
    PhiloxStream crops(seed_, 21);
    Tensor<float, 4> x, y, p;
    for (int u = 0; u < total; ++u) {
      sample_crops(set, o.batch, o.crop, true, crops, x, y);
      coarse_batch(x, p);
      env.reset(x.view(), p.view(), y.view());
      const auto st = learner_.update(env, opt);
      if (progress) progress({"rl", u + 1, total, st.loss, env.mean_dice()});
    }
  }

  SegPrediction predict(TensorView<const float, 2> image) override {
    const index_t H = image.extent(0), W = image.extent(1);
    Tensor<float, 2> prob;
    coarse_.predict_probability_into(image, prob);
    Tensor<float, 4> x(Shape<4>{1, 1, H, W}), p(x.shape()), g(x.shape());
    std::copy(image.data(), image.data() + image.size(), x.data());
    std::copy(prob.data(), prob.data() + prob.size(), p.data());
    rl::PixelRefineEnv<float> env({t_max_});
    env.reset(x.view(), p.view(), g.view());
    SegPrediction out;
    learner_.run_episode(env, rl::PixelPolicy::greedy, {}, [&](int) { out.steps.push_back(detail::plane_of(env.mask())); });
    out.mask = out.steps.back();
    return out;
  }

  /// Coarse probability of a batch of crops x [B, 1, c, c] (c a multiple of 8).
  void coarse_batch(const Tensor<float, 4>& x, Tensor<float, 4>& p) {
    nn::Context ctx;
    ctx.training = false;
    ctx.input_grad = false;
    const auto logits = coarse_.net.forward(ctx, x.view(), coarse_cache_);
    p.resize(x.shape());
    for (index_t i = 0; i < p.size(); ++i) p.data()[i] = 1.0f / (1.0f + std::exp(-logits.data()[i]));
  }

  void save(const std::filesystem::path& path) override {
    detail::PairModule<UNetSegmenter<8>, rl::PixelRL<Net>> both{coarse_, learner_, "coarse", "agent"};
    nn::save_checkpoint(path, both, static_cast<nn::NoOptimizer*>(nullptr),
                        {{"method", name()}, {"t_max", std::to_string(t_max_)}});
  }
  void load(const std::filesystem::path& path) override {
    detail::check_method(io::SafetensorsReader::open(path).metadata(), name(), path);
    detail::PairModule<UNetSegmenter<8>, rl::PixelRL<Net>> both{coarse_, learner_, "coarse", "agent"};
    const auto meta = nn::load_checkpoint(path, both);
    if (meta.count("t_max")) t_max_ = std::stoi(meta.at("t_max"));
  }
  index_t parameter_count() override {
    return coarse_.parameter_count() + nn::parameter_count(learner_);
  }
 private:
  std::uint64_t seed_;
  UNetSegmenter<8> coarse_;
  typename UNetSegmenter<8>::Net::Cache coarse_cache_;
  Net net_;
  rl::PixelRL<Net> learner_;
  int t_max_ = 5;  // used by predict: set by train, stored in checkpoints
};

// ---- carve-environment methods: dqn, ddqn, dueling, ac -------------------------------------------

namespace detail {

/// Greedy carve episode on one whole image; returns the per-step masks.
template <class RunEpisode>
SegPrediction carve_predict(TensorView<const float, 2> image, int t_max, RunEpisode&& run) {
  const index_t H = image.extent(0), W = image.extent(1);
  Tensor<float, 4> x(Shape<4>{1, 1, H, W}), g(x.shape());
  std::copy(image.data(), image.data() + image.size(), x.data());
  env::PixelMaskEnv<float> env({env::PixelMaskMode::carve, t_max});
  env.reset(x.view(), g.view());
  SegPrediction out;
  run(env, [&](int) { out.steps.push_back(plane_of(env.mask())); });
  out.mask = out.steps.back();
  return out;
}

}  // namespace detail

template <rl::PixelQTarget Target, rl::PixelQHead Head>
class PixelDqnMethod final : public SegMethod {
 public:
  static constexpr index_t kOut = Head == rl::PixelQHead::dueling ? 3 : 2;
  using Net = PixelFcn<float, 1, kOut, 16>;
  using Learner = rl::PixelDqn<Net, Target, Head>;

  PixelDqnMethod(std::string name, std::uint64_t seed) : name_(std::move(name)), seed_(seed) {
    PhiloxStream rng(seed, 7);
    net_.initialize(rng);
    rl::PixelDqnConfig c;
    c.seed = seed;
    learner_ = std::make_unique<Learner>(net_, c);
  }
  [[nodiscard]] std::string name() const override { return name_; }

  void train(const SegmentationSet& set, const TrainOptions& o, const ProgressFn& progress = {}) override {
    detail::check_options(o, name_.c_str());
    t_max_ = o.t_max;
    const int total = o.steps > 0 ? o.steps : 1500;
    learner_->config.gamma = o.gamma;
    learner_->config.batch = o.batch;
    learner_->config.epsilon_decay_steps = std::max(1, total / 2);
    nn::optim::Adam<float> opt(*learner_, {o.lr > 0 ? o.lr : 1e-3});
    env::PixelMaskEnv<float> env({env::PixelMaskMode::carve, o.t_max});
    PhiloxStream crops(seed_, 21);
    Tensor<float, 4> x, y;
    double last_loss = 0;
    for (int s = 0; s < total; ++s) {
      if (!env.started() || env.done()) {
        sample_crops(set, o.batch, o.crop, true, crops, x, y);
        env.reset(x.view(), y.view());
      }
      const auto st = learner_->step(env, opt);
      if (st.updated) last_loss = st.loss;
      if (progress) progress({"rl", s + 1, total, last_loss, env.done() ? env.mean_dice() : std::nan("")});
    }
  }

  SegPrediction predict(TensorView<const float, 2> image) override {
    return detail::carve_predict(image, t_max_, [&](auto& env, auto&& on_step) { learner_->run_episode(env, on_step); });
  }
  void save(const std::filesystem::path& path) override {
    nn::save_checkpoint(path, *learner_, static_cast<nn::NoOptimizer*>(nullptr),
                        {{"method", name_}, {"t_max", std::to_string(t_max_)}});
  }
  void load(const std::filesystem::path& path) override {
    detail::check_method(io::SafetensorsReader::open(path).metadata(), name_, path);
    const auto meta = nn::load_checkpoint(path, *learner_);
    if (meta.count("t_max")) t_max_ = std::stoi(meta.at("t_max"));
  }
  index_t parameter_count() override { return net_.parameter_count(); }
  Learner& learner() { return *learner_; }

 private:
  std::string name_;
  std::uint64_t seed_;
  Net net_;
  std::unique_ptr<Learner> learner_;
  int t_max_ = 5;
};

class ActorCriticMethod final : public SegMethod {
 public:
  using Fcn = PixelFcn<float, 1, 3, 16>;
  using Net = rl::FusedPixelActorCritic<Fcn, 2>;
  using Learner = rl::PixelActorCriticLearner<Net, env::PixelMaskEnv<float>>;

  explicit ActorCriticMethod(std::uint64_t seed = 1) : seed_(seed), learner_(net_, config(seed)) {
    PhiloxStream rng(seed, 7);
    net_.initialize(rng);
  }
  static rl::PixelA3CConfig config(std::uint64_t seed) {
    rl::PixelA3CConfig c;
    c.seed = seed;
    c.stream = 13;
    c.learn_reward_map = false;  // plain actor-critic: no reward-map convolution
    c.entropy_beta = 0.05;
    c.max_grad_norm = 10;
    return c;
  }
  [[nodiscard]] std::string name() const override { return "ac"; }

  void train(const SegmentationSet& set, const TrainOptions& o, const ProgressFn& progress = {}) override {
    detail::check_options(o, "ac");
    t_max_ = o.t_max;
    learner_.config.gamma = o.gamma;
    nn::optim::Adam<float> opt(net_, {o.lr > 0 ? o.lr : 1e-3});  // w is fixed: only the network trains
    env::PixelMaskEnv<float> env({env::PixelMaskMode::carve, o.t_max});
    const int total = o.steps > 0 ? o.steps : 400;
    PhiloxStream crops(seed_, 21);
    Tensor<float, 4> x, y;
    for (int u = 0; u < total; ++u) {
      sample_crops(set, o.batch, o.crop, true, crops, x, y);
      env.reset(x.view(), y.view());
      const auto st = learner_.update(env, opt);
      if (progress) progress({"rl", u + 1, total, st.loss, env.mean_dice()});
    }
  }
  SegPrediction predict(TensorView<const float, 2> image) override {
    return detail::carve_predict(image, t_max_, [&](auto& env, auto&& on_step) {
      learner_.run_episode(env, rl::PixelPolicy::greedy, {}, on_step);
    });
  }
  void save(const std::filesystem::path& path) override {
    nn::save_checkpoint(path, learner_, static_cast<nn::NoOptimizer*>(nullptr),
                        {{"method", name()}, {"t_max", std::to_string(t_max_)}});
  }
  void load(const std::filesystem::path& path) override {
    detail::check_method(io::SafetensorsReader::open(path).metadata(), name(), path);
    const auto meta = nn::load_checkpoint(path, learner_);
    if (meta.count("t_max")) t_max_ = std::stoi(meta.at("t_max"));
  }
  index_t parameter_count() override { return nn::parameter_count(net_); }

 private:
  std::uint64_t seed_;
  Net net_;
  Learner learner_;
  int t_max_ = 5;
};

/// The method called `name` (one of seg_method_names()), initialised from `seed`.
inline std::unique_ptr<SegMethod> make_seg_method(std::string_view name, std::uint64_t seed = 1) {
  using rl::PixelQHead;
  using rl::PixelQTarget;
  if (name == "unet") return std::make_unique<UNetMethod>(seed);
  if (name == "pixelrl") return std::make_unique<PixelRLMethod>(seed);
  if (name == "dqn") return std::make_unique<PixelDqnMethod<PixelQTarget::plain, PixelQHead::plain>>("dqn", seed);
  if (name == "ddqn") return std::make_unique<PixelDqnMethod<PixelQTarget::double_q, PixelQHead::plain>>("ddqn", seed);
  if (name == "dueling")
    return std::make_unique<PixelDqnMethod<PixelQTarget::double_q, PixelQHead::dueling>>("dueling", seed);
  if (name == "ac") return std::make_unique<ActorCriticMethod>(seed);
  RLMED_THROW("make_seg_method: unknown method '", name, "'; expected unet, pixelrl, dqn, ddqn, dueling or ac");
}

}  // namespace rlmed::seg
