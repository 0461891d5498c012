// pixeldrl_method.hpp — PixelDRL-MG and its ablations (paper Table 3) behind seg::SegMethod, so
// the pixel_segmentation CLI treats them like the baselines of seg/method.hpp.
//
//   pixeldrl  PixelDrlNet with SAM and dilated convolutions (conv4 dilation 2, heads 3-2-1)
//   pa3c      no SAM, no dilation (conv4 dilation 1, heads 1-1-1)
//   pa3c_sam  SAM, no dilation
//   pa3c_dc   dilation, no SAM
//
// Design decisions:
//  * Width is a template parameter of the network (Base 8 / head 16 = "cpu", Base 32 / head 64 =
//    "paper"); one class per width, chosen at the CLI boundary.
//  * Training is PA3C in carve mode on random crops (seg::sample_crops), the paper's loss
//    (γ, β 0.01, value weight 0.5, learnable reward-map filter), Adam with the paper's schedule
//    (lr × 0.9 every `decay_every` updates; the paper: every 25 epochs). workers == 1 runs the
//    synchronous A2C update; workers > 1 the asynchronous A3C workers of rl/pixel_a3c_async.hpp
//    (deterministic round-robin when `deterministic`), update u drawing its crops from Philox
//    stream u of the seed, so the data does not depend on thread timing.
//  * predict() pads the image to a multiple of 8 by edge replication (a zero would be "carved"),
//    runs t_max greedy steps and crops the per-step masks back.
//  * The checkpoint is the learner (network + reward-map filter + sampler step) with metadata
//    method / width / t_max; loading another method's or width's file is an error.
#pragma once

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>

#include "rlmed/env/pixel_mask.hpp"
#include "rlmed/nn/checkpoint.hpp"
#include "rlmed/nn/models/pixeldrl_net.hpp"
#include "rlmed/nn/optim/optimizers.hpp"
#include "rlmed/rl/pixel_a3c.hpp"
#include "rlmed/rl/pixel_a3c_async.hpp"
#include "rlmed/seg/method.hpp"

namespace pixel_segmentation {

using namespace rlmed;

inline bool is_pixeldrl_method(const std::string& name) {
  return name == "pixeldrl" || name == "pa3c" || name == "pa3c_sam" || name == "pa3c_dc";
}

inline nn::PixelDrlConfig pixeldrl_config_of(const std::string& method) {
  RLMED_CHECK(is_pixeldrl_method(method), "pixeldrl_config_of: unknown method '", method,
              "'; expected pixeldrl, pa3c, pa3c_sam or pa3c_dc");
  nn::PixelDrlConfig c;
  const bool sam = method == "pixeldrl" || method == "pa3c_sam";
  const bool dc = method == "pixeldrl" || method == "pa3c_dc";
  c.use_attention = sam;
  if (!dc) {
    c.conv4_dilation = 1;
    c.head_dilations = {1, 1, 1};
  }
  return c;
}

struct PixelDrlTrainExtras {
  int workers = 1;            ///< 1: synchronous A2C; > 1: A3C worker threads
  bool deterministic = true;  ///< A3C: round-robin apply order (bit-identical runs)
  int decay_every = 0;        ///< lr × 0.9 every this many updates; 0 = no decay
  double entropy_beta = 0.01;
};

template <index_t Base, index_t Width>
class PixelDrlMethod final : public seg::SegMethod {
 public:
  using Net = nn::PixelDrlNet<float, 1, Base, 2, Width>;
  static constexpr const char* kWidthName = Base == 32 ? "paper" : (Base == 8 ? "cpu" : "custom");

  PixelDrlMethod(std::string method, std::uint64_t seed, PixelDrlTrainExtras extras = {})
      : name_(std::move(method)), seed_(seed), extras_(extras), net_(pixeldrl_config_of(name_)),
        learner_(net_, config(seed, extras.entropy_beta)) {
    PhiloxStream rng(seed, 7);
    net_.initialize(rng);
  }
  static rl::PixelA3CConfig config(std::uint64_t seed, double beta) {
    rl::PixelA3CConfig c;  // paper: γ 0.95, β 0.01, value weight 0.5, learnable w
    c.seed = seed;
    c.stream = 17;
    c.entropy_beta = beta;
    return c;
  }
  [[nodiscard]] std::string name() const override { return name_; }

  void train(const seg::SegmentationSet& set, const seg::TrainOptions& o, const seg::ProgressFn& progress = {}) override {
    RLMED_CHECK(o.steps >= 0 && o.batch >= 1 && o.crop >= 8 && o.crop % 8 == 0 && o.t_max >= 1 && o.gamma >= 0 &&
                    o.gamma <= 1 && o.lr >= 0,
                name_, ": bad training options (steps ", o.steps, ", batch ", o.batch, ", crop ", o.crop, ", t_max ",
                o.t_max, ", gamma ", o.gamma, ", lr ", o.lr, ")");
    t_max_ = o.t_max;
    learner_.config.gamma = o.gamma;
    const int total = o.steps > 0 ? o.steps : 300;
    const double lr0 = o.lr > 0 ? o.lr : 1e-3;
    nn::optim::Adam<float> opt(learner_, {.lr = lr0});
    auto lr_at = [&](int u) {
      return extras_.decay_every > 0 ? lr0 * std::pow(0.9, double(u / extras_.decay_every)) : lr0;
    };
    const env::PixelMaskConfig env_cfg{env::PixelMaskMode::carve, o.t_max};
    auto crops_of = [&](std::int64_t u, Tensor<float, 4>& x, Tensor<float, 4>& y) {
      PhiloxStream rng(seed_, 1000 + static_cast<std::uint64_t>(u));
      seg::sample_crops(set, o.batch, o.crop, true, rng, x, y);
    };
    if (extras_.workers <= 1) {
      env::PixelMaskEnv<float> env(env_cfg);
      Tensor<float, 4> x, y;
      for (int u = 0; u < total; ++u) {
        opt.config.lr = lr_at(u);
        crops_of(u, x, y);
        env.reset(x.view(), y.view());
        const auto st = learner_.update(env, opt);
        if (progress) progress({"rl", u + 1, total, st.loss, env.mean_dice()});
      }
    } else {
      rl::PixelA3CAsync<Net, nn::optim::Adam<float>> a3c(
          learner_, opt, env_cfg, {.workers = extras_.workers, .deterministic = extras_.deterministic});
      const int chunk = std::max(1, std::min(25, extras_.decay_every > 0 ? extras_.decay_every : 25));
      for (int u = 0; u < total; u += chunk) {
        opt.config.lr = lr_at(u);
        const int n = std::min(chunk, total - u);
        const auto info = a3c.train(n, crops_of);
        if (progress) progress({"rl", u + n, total, info.mean_loss, std::numeric_limits<double>::quiet_NaN()});
      }
    }
  }

  seg::SegPrediction predict(TensorView<const float, 2> image) override {
    const index_t H = image.extent(0), W = image.extent(1);
    const index_t Hp = (H + 7) / 8 * 8, Wp = (W + 7) / 8 * 8;
    Tensor<float, 4> x(Shape<4>{1, 1, Hp, Wp}), g(x.shape());
    for (index_t y = 0; y < Hp; ++y)
      for (index_t xx = 0; xx < Wp; ++xx) x(0, 0, y, xx) = image(std::min(y, H - 1), std::min(xx, W - 1));
    env::PixelMaskEnv<float> env({env::PixelMaskMode::carve, t_max_});
    env.reset(x.view(), g.view());
    nn::Context ctx;
    ctx.training = false;
    ctx.input_grad = false;
    Tensor<std::int32_t, 3> actions(Shape<3>{1, Hp, Wp});
    seg::SegPrediction out;
    while (!env.done()) {
      const auto pv = net_.forward(ctx, env.observation(), cache_);
      rl::greedy_pixel_actions_into(actions.view(), pv.policy_logits);
      env.step(TensorView<const std::int32_t, 3>(actions));
      Tensor<float, 2> m(Shape<2>{H, W});
      for (index_t y = 0; y < H; ++y)
        for (index_t xx = 0; xx < W; ++xx) m(y, xx) = env.mask()(0, 0, y, xx);
      out.steps.push_back(std::move(m));
    }
    out.mask = out.steps.back();
    return out;
  }

  void save(const std::filesystem::path& path) override {
    nn::save_checkpoint(path, learner_, static_cast<nn::NoOptimizer*>(nullptr),
                        {{"method", name_}, {"width", kWidthName}, {"t_max", std::to_string(t_max_)}});
  }
  void load(const std::filesystem::path& path) override {
    const auto meta0 = io::SafetensorsReader::open(path).metadata();
    seg::detail::check_method(meta0, name_, path);
    const auto w = meta0.find("width");
    RLMED_CHECK(w != meta0.end() && w->second == kWidthName, "PixelDrlMethod::load: ", path.string(), " holds width '",
                w == meta0.end() ? std::string("(none)") : w->second, "', expected '", kWidthName, "' (use --width)");
    const auto meta = nn::load_checkpoint(path, learner_);
    if (meta.count("t_max")) t_max_ = std::stoi(meta.at("t_max"));
  }
  index_t parameter_count() override { return net_.parameter_count(); }

 private:
  std::string name_;
  std::uint64_t seed_;
  PixelDrlTrainExtras extras_;
  Net net_;
  rl::PixelA3C<Net> learner_;
  typename Net::Cache cache_;
  int t_max_ = 10;
};

/// PixelDRL-MG (or an ablation) at width "cpu" (Base 8, head 16) or "paper" (Base 32, head 64).
inline std::unique_ptr<seg::SegMethod> make_pixeldrl_method(const std::string& method, const std::string& width,
                                                            std::uint64_t seed, PixelDrlTrainExtras extras = {}) {
  if (width == "cpu") return std::make_unique<PixelDrlMethod<8, 16>>(method, seed, extras);
  if (width == "paper") return std::make_unique<PixelDrlMethod<32, 64>>(method, seed, extras);
  RLMED_THROW("make_pixeldrl_method: unknown width '", width, "'; expected cpu or paper");
}

}  // namespace pixel_segmentation
