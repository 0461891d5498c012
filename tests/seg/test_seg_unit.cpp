// Unit tests of the PixelDRL-MG baselines: segmentation data (seg/dataset.hpp), the PixelRL
// refinement environment (rl/pixel_rl.hpp), per-pixel Q-learning maths (rl/pixel_dqn.hpp),
// determinism of the learners and the SegMethod interface (seg/method.hpp).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>

#include <unistd.h>

#include "rlmed/imaging/io/io.hpp"
#include "rlmed/seg/method.hpp"

using namespace rlmed;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

Tensor<std::uint8_t, 2> gray(index_t h, index_t w, int base) {
  Tensor<std::uint8_t, 2> t(Shape<2>{h, w});
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<std::uint8_t>((base + 7 * i) % 256);
  return t;
}

Tensor<std::uint8_t, 2> square_mask(index_t h, index_t w, index_t lo, index_t hi, std::uint8_t on) {
  Tensor<std::uint8_t, 2> t(Shape<2>{h, w});
  for (index_t y = lo; y < hi; ++y)
    for (index_t x = lo; x < hi; ++x) t(y, x) = on;
  return t;
}

template <class T, std::size_t R>
bool same_bits(const Tensor<T, R>& a, const Tensor<T, R>& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(T) * std::size_t(a.size())) == 0;
}

}  // namespace

TEST_CASE("load_pair_folder: pairs matched by name across formats, numeric order, mask rule, downsampling") {
  TempDir dir("rlmed_seg_pairs");
  fs::create_directories(dir.path / "image");
  fs::create_directories(dir.path / "label");
  for (int i : {10, 2, 1}) {
    imaging::write_png(dir.path / "image" / (std::to_string(i) + ".png"), gray(8, 8, i).view());
    imaging::write_png(dir.path / "label" / (std::to_string(i) + ".png"), square_mask(8, 8, 2, 6, 255).view());
  }
  // A float TIFF image with a PNG mask: formats may differ within a pair.
  Tensor<float, 2> tif(Shape<2>{8, 8});
  for (index_t k = 0; k < tif.size(); ++k) tif.data()[k] = 0.5f * float(k);
  imaging::write_tiff<float>(dir.path / "image" / "3.tif", tif.view());
  imaging::write_png(dir.path / "label" / "3.png", square_mask(8, 8, 0, 4, 1).view());

  seg::LoadOptions raw;
  raw.zscore = false;
  const auto set = seg::load_pair_folder(dir.path, raw);
  REQUIRE(set.size() == 4);
  CHECK(set.names == std::vector<std::string>{"1", "2", "3", "10"});
  CHECK(set.images[0](0, 1) == 8.0f);            // (1 + 7·1) % 256 read back
  CHECK(set.images[2](0, 3) == 1.5f);            // the TIFF's float values
  CHECK(set.masks[0](3, 3) == 1.0f);             // 255 inside the square -> foreground
  CHECK(set.masks[0](0, 0) == 0.0f);
  CHECK(set.masks[2](1, 1) == 1.0f);             // label value 1 also counts (> 0)
  CHECK(set.masks[2](5, 5) == 0.0f);

  seg::LoadOptions low;                          // EM-style rule: foreground = value < 128
  low.mask_threshold = 128;
  low.foreground_is_low = true;
  low.downsample = 2;
  const auto small = seg::load_pair_folder(dir.path, low);
  CHECK(small.images[0].shape() == Shape<2>({4, 4}));
  CHECK(small.masks[0](0, 0) == 1.0f);           // the background block (0 < 128) is foreground now
  CHECK(small.masks[0](1, 1) == 0.0f);           // block (2..3, 2..3) lies in the 255 square
  double mean = 0;
  for (float v : small.images[1]) mean += v;
  CHECK(std::abs(mean / 16) < 1e-5);             // z-scored

  const auto split = seg::k_fold_split(set, 2, 1);
  CHECK(split.test.names == std::vector<std::string>{"3", "10"});
  CHECK(split.train.names == std::vector<std::string>{"1", "2"});
  CHECK_THROWS_AS(seg::k_fold_split(set, 5, 0), Error);

  // A mask without its image, and a shape mismatch, are errors that name the file.
  imaging::write_png(dir.path / "label" / "4.png", square_mask(8, 8, 0, 4, 1).view());
  CHECK_THROWS_WITH_AS(seg::load_pair_folder(dir.path), doctest::Contains("4.png"), Error);
  fs::remove(dir.path / "label" / "4.png");
  imaging::write_png(dir.path / "image" / "5.png", gray(8, 8, 5).view());
  imaging::write_png(dir.path / "label" / "5.png", square_mask(6, 8, 0, 4, 1).view());
  CHECK_THROWS_WITH_AS(seg::load_pair_folder(dir.path), doctest::Contains("shape"), Error);
  CHECK_THROWS_AS(seg::load_pair_folder(dir.path / "nowhere"), Error);
}

TEST_CASE("SegmentationSet rejects non-binary masks and crops are deterministic") {
  seg::SegmentationSet set;
  Tensor<float, 2> im(Shape<2>{16, 16}), mk(Shape<2>{16, 16});
  mk(3, 3) = 0.5f;
  CHECK_THROWS_AS(set.add("bad", im, mk), Error);
  CHECK_THROWS_AS(set.add("shape", im, Tensor<float, 2>(Shape<2>{8, 16})), Error);
  const auto phantoms = seg::make_phantom_set(3, 9, {32, 32});
  CHECK(phantoms.size() == 3);
  PhiloxStream a(4, 0), b(4, 0);
  Tensor<float, 4> x1, y1, x2, y2;
  seg::sample_crops(phantoms, 2, 16, true, a, x1, y1);
  seg::sample_crops(phantoms, 2, 16, true, b, x2, y2);
  CHECK(same_bits(x1, x2));
  CHECK(same_bits(y1, y2));
  CHECK_THROWS_AS(seg::sample_crops(phantoms, 2, 40, true, a, x1, y1), Error);
}

TEST_CASE("PixelRefineEnv: additive actions, clipping to [0, 1], squared-error reward on a 3x3 case") {
  Tensor<float, 4> img(Shape<4>{1, 1, 3, 3}), p(img.shape()), g(img.shape());
  const float coarse[9] = {0.5f, 0.5f, 0.95f, 0.05f, 0.3f, 0.3f, 1.0f, 0.0f, 0.6f};
  const float label[9] = {1, 0, 1, 0, 1, 0, 0, 1, 1};
  const std::int32_t act[9] = {8, 0, 7, 3, 6, 4, 0, 8, 2};  // +1, −1, +0.4, −0.1, +0.2, 0, −1, +1, −0.2
  for (int i = 0; i < 9; ++i) {
    p.data()[i] = coarse[i];
    g.data()[i] = label[i];
    img.data()[i] = float(i);
  }
  rl::PixelRefineEnv<float> env({2});
  env.reset(img.view(), p.view(), g.view());
  CHECK(env.mask()(0, 0, 0, 2) == 1.0f);
  CHECK(env.mask()(0, 0, 0, 0) == 0.0f);  // 0.5 is not > 0.5
  Tensor<std::int32_t, 3> a(Shape<3>{1, 3, 3});
  std::copy(act, act + 9, a.data());
  const auto r = env.step(a.view());
  const float after[9] = {1.0f, 0.0f, 1.0f, 0.0f, 0.5f, 0.3f, 0.0f, 1.0f, 0.4f};  // by hand, clipped
  for (int i = 0; i < 9; ++i) {
    CHECK(env.probability().data()[i] == doctest::Approx(after[i]).epsilon(1e-6));
    const double e0 = coarse[i] - label[i], e1 = after[i] - label[i];
    CHECK(r.data()[i] == doctest::Approx(e0 * e0 - e1 * e1).epsilon(1e-5));
    CHECK(env.observation()(0, 1, i / 3, i % 3) == env.probability().data()[i]);  // channel 1 = p
    CHECK(env.observation()(0, 0, i / 3, i % 3) == float(i));                     // channel 0 = image
  }
  CHECK(r.data()[0] == doctest::Approx(0.25));   // 0.5 -> 1 with label 1
  CHECK(r.data()[6] == doctest::Approx(1.0));    // 1 -> 0 with label 0
  CHECK_FALSE(env.done());
  a(0, 0, 0) = 9;
  CHECK_THROWS_AS(env.step(a.view()), Error);     // action outside [0, 9): nothing changes
  CHECK(env.t() == 1);
  p(0, 0, 0, 0) = 1.5f;
  CHECK_THROWS_AS(env.reset(img.view(), p.view(), g.view()), Error);
}

TEST_CASE("per-pixel Q targets: plain max vs Double (online argmax, target value) on a constructed case") {
  // Two pixels, two actions. Pixel 0: the target net prefers action 1 (5 vs 1) but the online net
  // prefers action 0, so Double evaluates Q_target(s', 0) = 1 and plain takes max = 5.
  Tensor<float, 4> qt(Shape<4>{1, 2, 1, 2}), qo(qt.shape()), r(Shape<4>{1, 1, 1, 2}), y(r.shape());
  qt(0, 0, 0, 0) = 1;  qt(0, 1, 0, 0) = 5;
  qt(0, 0, 0, 1) = -2; qt(0, 1, 0, 1) = -3;
  qo(0, 0, 0, 0) = 9;  qo(0, 1, 0, 0) = 0;
  qo(0, 0, 0, 1) = 0;  qo(0, 1, 0, 1) = 4;
  r(0, 0, 0, 0) = 0.5f;
  r(0, 0, 0, 1) = -1.0f;
  const std::vector<std::uint8_t> live{0}, done{1};
  rl::pixel_q_targets_into<float>(y.view(), r.view(), live, qt.view(), qo.view(), rl::PixelQTarget::plain, 0.9);
  CHECK(y(0, 0, 0, 0) == doctest::Approx(0.5 + 0.9 * 5));
  CHECK(y(0, 0, 0, 1) == doctest::Approx(-1.0 + 0.9 * -2));
  rl::pixel_q_targets_into<float>(y.view(), r.view(), live, qt.view(), qo.view(), rl::PixelQTarget::double_q, 0.9);
  CHECK(y(0, 0, 0, 0) == doctest::Approx(0.5 + 0.9 * 1));
  CHECK(y(0, 0, 0, 1) == doctest::Approx(-1.0 + 0.9 * -3));
  rl::pixel_q_targets_into<float>(y.view(), r.view(), done, qt.view(), qo.view(), rl::PixelQTarget::double_q, 0.9);
  CHECK(y(0, 0, 0, 0) == 0.5f);  // terminal: the reward only
  CHECK_THROWS_AS(rl::pixel_q_targets_into<float>(y.view(), r.view(), live, qt.view(), TensorView<const float, 4>{},
                                                   rl::PixelQTarget::double_q, 0.9),
                  Error);

  // Loss: Huber of the taken action only, averaged over pixels (targets: the terminal ones).
  Tensor<float, 4> dq(qt.shape());
  Tensor<std::int32_t, 3> a(Shape<3>{1, 1, 2});
  a(0, 0, 0) = 1;  // Q = 5, target 0.5 -> d = 4.5 > 1: 4.5 − 0.5 = 4, gradient +1
  a(0, 0, 1) = 0;  // Q = −2, target −1 -> d = −1 (quadratic side): 0.5, gradient −1
  std::vector<double> scratch;
  const double l = rl::pixel_q_loss_into<float>(dq.view(), qt.view(), a.view(), y.view(), 1.0, scratch);
  CHECK(l == doctest::Approx((4.0 + 0.5) / 2).epsilon(1e-6));
  CHECK(dq(0, 1, 0, 0) == doctest::Approx(0.5));
  CHECK(dq(0, 0, 0, 0) == 0.0f);
  CHECK(dq(0, 0, 0, 1) == doctest::Approx(-0.5));
  CHECK(dq(0, 1, 0, 1) == 0.0f);
}

TEST_CASE("dueling Q maps: V + A - mean(A) per pixel, and ε-greedy extremes") {
  Tensor<float, 4> f(Shape<4>{1, 3, 1, 1}), q(Shape<4>{1, 2, 1, 1});
  f(0, 0, 0, 0) = 1;
  f(0, 1, 0, 0) = 3;
  f(0, 2, 0, 0) = 10;
  rl::dueling_q_into<float>(q.view(), f.view());
  CHECK(q(0, 0, 0, 0) == 9.0f);
  CHECK(q(0, 1, 0, 0) == 11.0f);

  Tensor<float, 4> qm(Shape<4>{2, 3, 8, 8});
  PhiloxStream rng(3, 0);
  fill_normal(qm.view(), rng);
  Tensor<std::int32_t, 3> greedy(Shape<3>{2, 8, 8}), eps0(greedy.shape()), eps1(greedy.shape()), again(greedy.shape());
  rl::greedy_pixel_actions_into<float>(greedy.view(), qm.view());
  rl::epsilon_greedy_pixel_actions_into<float>(eps0.view(), qm.view(), 0.0, {1, 0, 0});
  CHECK(same_bits(greedy, eps0));
  rl::epsilon_greedy_pixel_actions_into<float>(eps1.view(), qm.view(), 1.0, {1, 0, 0});
  rl::epsilon_greedy_pixel_actions_into<float>(again.view(), qm.view(), 1.0, {1, 0, 0});
  CHECK(same_bits(eps1, again));
  int counts[3] = {0, 0, 0}, differ = 0;
  for (index_t i = 0; i < eps1.size(); ++i) {
    counts[eps1.data()[i]]++;
    differ += eps1.data()[i] != greedy.data()[i];
  }
  for (int c : counts) CHECK(c > 20);  // 128 uniform draws over 3 actions
  CHECK(differ > 40);
}

namespace {

seg::SegmentationSet tiny_set() { return seg::make_phantom_set(4, 100, {16, 16}); }

seg::TrainOptions tiny_options() {
  seg::TrainOptions o;
  o.steps = 6;
  o.batch = 2;
  o.crop = 16;
  o.t_max = 3;
  o.coarse_steps = 3;
  return o;
}

}  // namespace

TEST_CASE("every method: same seed twice gives bit-identical predictions; checkpoints round-trip") {
  const auto set = tiny_set();
  TempDir dir("rlmed_seg_methods");
  for (const auto& name : seg::seg_method_names()) {
    CAPTURE(name);
    auto a = seg::make_seg_method(name, 5), b = seg::make_seg_method(name, 5);
    CHECK(a->name() == name);
    CHECK(a->parameter_count() > 0);
    a->train(set, tiny_options());
    b->train(set, tiny_options());
    const auto pa = a->predict(set.images[0].view()), pb = b->predict(set.images[0].view());
    CHECK(same_bits(pa.mask, pb.mask));
    CHECK(pa.mask.shape() == set.images[0].shape());
    CHECK(pa.steps.size() == (name == "unet" ? 0u : 3u));
    const auto file = dir.path / (name + ".safetensors");
    a->save(file);
    auto c = seg::make_seg_method(name, 77);  // different initialisation, then loaded
    c->load(file);
    CHECK(same_bits(c->predict(set.images[1].view()).mask, a->predict(set.images[1].view()).mask));
    auto other = seg::make_seg_method(name == "unet" ? "ac" : "unet", 1);
    CHECK_THROWS_WITH_AS(other->load(file), doctest::Contains("method"), Error);
  }
  CHECK_THROWS_AS(seg::make_seg_method("svm"), Error);
}

TEST_CASE("PixelDqn: learner state after a few steps is bit-identical run to run") {
  using Net = seg::PixelFcn<float, 1, 3, 4>;
  const auto set = tiny_set();
  auto run = [&](Net& net) {
    PhiloxStream init(1, 0);
    net.initialize(init);
    rl::PixelDqnConfig c;
    c.seed = 2;
    c.learn_start = 2;
    c.target_sync_every = 3;
    c.batch = 2;
    rl::PixelDqn<Net, rl::PixelQTarget::double_q, rl::PixelQHead::dueling> dqn(net, c);
    nn::optim::Adam<float> opt(dqn, {1e-3});
    env::PixelMaskEnv<float> env({env::PixelMaskMode::carve, 2});
    PhiloxStream crops(3, 0);
    Tensor<float, 4> x, y;
    std::vector<double> losses;
    for (int s = 0; s < 8; ++s) {
      if (!env.started() || env.done()) {
        seg::sample_crops(set, 2, 16, true, crops, x, y);
        env.reset(x.view(), y.view());
      }
      const auto st = dqn.step(env, opt);
      losses.push_back(st.loss);
    }
    CHECK(dqn.updates() == 8);  // 2 transitions per step: learning starts at step 1
    CHECK(dqn.replay().size() == 16);
    return losses;
  };
  Net n1, n2;
  const auto l1 = run(n1), l2 = run(n2);
  CHECK(l1 == l2);
  CHECK(l1.back() != 0.0);
  CHECK(same_bits(n1.last.weight.value, n2.last.weight.value));
}
