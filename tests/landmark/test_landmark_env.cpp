// The landmark environment (env/landmark.hpp), its data loaders and augmentation: reward sign and
// size, oscillation detection and the loop answer, coarse-to-fine hand-over at the same physical
// point, frame history, zero-padded border cubes, replay keys re-rendering the identical
// observation, rl-medical files (good and bad), augmentation consistency, Collab routing, bad inputs.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "rlmed/env/landmark.hpp"
#include "rlmed/env/landmark_data.hpp"
#include "rlmed/env/landmark_train.hpp"
#include "rlmed/imaging/augment.hpp"
#include "rlmed/imaging/io/io.hpp"
#include "rlmed/rl/agents/collab_dqn.hpp"
#include "rlmed/rl/replay/keyed.hpp"

using namespace rlmed;
namespace fs = std::filesystem;
using env::Vec;

namespace {

/// A volume whose voxel value encodes its index (x + 100 y + 10000 z + 1), anisotropic spacing.
imaging::Image<float, 3> index_volume(index_t nx, index_t ny, index_t nz, Vec<3> spacing = {1.0, 1.5, 2.0},
                                      Vec<3> origin = {-10.0, 5.0, 3.0}) {
  Tensor<float, 3> t(Shape<3>{nz, ny, nx});
  for (index_t z = 0; z < nz; ++z)
    for (index_t y = 0; y < ny; ++y)
      for (index_t x = 0; x < nx; ++x) t(z, y, x) = float(x + 100 * y + 10000 * z + 1);
  return imaging::Image<float, 3>(std::move(t), spacing, origin);
}

env::LandmarkVolumes<3> one_volume(const imaging::Image<float, 3>& img, std::vector<Vec<3>> marks, index_t levels) {
  auto v = std::make_shared<std::vector<env::LandmarkVolume<3>>>();
  v->push_back(env::make_landmark_volume<3>(img, std::move(marks), levels, "test"));
  return v;
}

double dist(const Vec<3>& a, const Vec<3>& b) {
  return std::sqrt((a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) + (a[2] - b[2]) * (a[2] - b[2]));
}

}  // namespace

TEST_CASE("reward is the clipped decrease of the distance in mm, positive towards the target") {
  const auto img = index_volume(20, 20, 20);
  // Target: voxel (15, 10, 10) in world mm.
  const Vec<3> target = img.index_to_physical({15, 10, 10});
  env::LandmarkEnvConfig cfg;
  cfg.cube = 5;
  cfg.levels = 1;
  cfg.reward_clip = 100.0;  // unclipped first
  env::LandmarkEnv<3, 4> e(one_volume(img, {target}, 1), cfg);
  e.reset_at(0, 0, img.index_to_physical({5, 10, 10}));
  CHECK(e.distance_mm() == doctest::Approx(10.0));
  auto s = e.step_key(0);  // +x: 1 mm closer (x spacing 1 mm)
  CHECK(s.reward == doctest::Approx(1.0));
  s = e.step_key(2);  // +y: moves 1.5 mm off the line
  const double expect = 9.0 - std::sqrt(81.0 + 1.5 * 1.5);
  CHECK(s.reward == doctest::Approx(expect));
  CHECK(s.reward < 0);
  s = e.step_key(4);  // +z: 2 mm further off
  CHECK(s.reward < 0);

  cfg.reward_clip = 1.0;
  env::LandmarkEnv<3, 4> c(one_volume(img, {target}, 1), cfg);
  c.reset_at(0, 0, img.index_to_physical({5, 10, 10}));
  c.reset_at(0, 0, img.index_to_physical({15, 10, 2}));
  CHECK(c.step_key(4).reward == doctest::Approx(1.0));   // +z: 2 mm closer, clipped to 1
  CHECK(c.step_key(5).reward == doctest::Approx(-1.0));  // back: 2 mm further, clipped to −1
}

TEST_CASE("oscillation on the finest level ends the search with the mean of the loop") {
  const auto img = index_volume(16, 16, 16);
  env::LandmarkEnvConfig cfg;
  cfg.cube = 3;
  cfg.levels = 1;
  cfg.oscillation_window = 4;
  env::LandmarkEnv<3, 4> e(one_volume(img, {img.index_to_physical({2, 2, 2})}, 1), cfg);
  e.reset_at(0, 0, img.index_to_physical({8, 8, 8}));
  auto s = e.step_key(0);  // (9, 8, 8)
  CHECK_FALSE(s.oscillated);
  CHECK_FALSE(s.done);
  s = e.step_key(2);  // (9, 9, 8)
  CHECK_FALSE(s.oscillated);
  s = e.step_key(1);  // (8, 9, 8)
  CHECK_FALSE(s.oscillated);
  s = e.step_key(3);  // (8, 8, 8): the start again -> a 4-loop
  CHECK(s.oscillated);
  CHECK(s.done);
  CHECK(e.done());
  const Vec<3> mean = img.index_to_physical({8.5, 8.5, 8});
  for (std::size_t a = 0; a < 3; ++a) CHECK(e.answer_mm()[a] == doctest::Approx(mean[a]));
  CHECK_THROWS_AS(e.step_key(0), Error);

  // A loop longer than the window is no oscillation.
  cfg.oscillation_window = 2;
  env::LandmarkEnv<3, 4> w(one_volume(img, {img.index_to_physical({2, 2, 2})}, 1), cfg);
  w.reset_at(0, 0, img.index_to_physical({8, 8, 8}));
  for (int a : {0, 2, 1}) CHECK_FALSE(w.step_key(a).oscillated);
  CHECK_FALSE(w.step_key(3).oscillated);  // (8, 8, 8): 4 steps back, outside the window
  CHECK_FALSE(w.step_key(0).oscillated);  // (9, 8, 8): 4 steps back as well
  CHECK(w.step_key(1).oscillated);        // (8, 8, 8): 2 steps back -> 2-cycle
}

TEST_CASE("a 2-cycle on a coarse level hands over to the next finer level at the same physical point") {
  const auto img = index_volume(40, 36, 32);
  env::LandmarkEnvConfig cfg;
  cfg.cube = 5;
  cfg.levels = 3;
  env::LandmarkEnv<3, 4> e(one_volume(img, {img.index_to_physical({30, 20, 10})}, 3), cfg);
  e.reset_at(0, 0, img.index_to_physical({12, 12, 12}));
  CHECK(e.level() == 2);
  const Vec<3> start_mm = e.position_mm();
  CHECK_FALSE(e.step_key(0).oscillated);
  const auto s = e.step_key(1);  // back: 2-cycle on level 2
  CHECK(s.oscillated);
  CHECK(s.level_changed);
  CHECK_FALSE(s.done);
  CHECK(e.level() == 1);
  // The nearest level-1 voxel of the level-2 voxel centre: within half a level-1 voxel per axis.
  const Vec<3> fine_mm = e.position_mm();
  const Vec<3> sp1 = e.volume().pyramid.level(1).spacing_mm;
  for (std::size_t a = 0; a < 3; ++a) CHECK(std::abs(fine_mm[a] - start_mm[a]) <= 0.5 * sp1[a] + 1e-9);
  CHECK(dist(fine_mm, start_mm) < 0.5 * std::sqrt(sp1[0] * sp1[0] + sp1[1] * sp1[1] + sp1[2] * sp1[2]) + 1e-9);
  // Frame history restarts at the new position.
  for (const auto& f : e.key().frames_xyz)
    for (std::size_t a = 0; a < 3; ++a) CHECK(f[a] == e.key().frames_xyz.back()[a]);
  // Level 1 -> level 0 the same way; level 0 oscillation then ends the search.
  e.step_key(2);
  CHECK(e.step_key(3).level_changed);
  CHECK(e.level() == 0);
  e.step_key(4);
  CHECK(e.step_key(5).done);
}

TEST_CASE("frame history holds the last F positions, oldest first") {
  const auto img = index_volume(20, 20, 20);
  env::LandmarkEnvConfig cfg;
  cfg.cube = 3;
  cfg.levels = 1;
  cfg.oscillation_window = 1;
  env::LandmarkEnv<3, 4> e(one_volume(img, {img.index_to_physical({2, 2, 2})}, 1), cfg);
  e.reset_at(0, 0, img.index_to_physical({5, 5, 5}));
  e.step_key(0);  // (6,5,5)
  e.step_key(2);  // (6,6,5)
  e.step_key(4);  // (6,6,6)
  const auto& f = e.key().frames_xyz;
  CHECK(f[0] == std::array<std::int32_t, 3>{5, 5, 5});
  CHECK(f[1] == std::array<std::int32_t, 3>{6, 5, 5});
  CHECK(f[2] == std::array<std::int32_t, 3>{6, 6, 5});
  CHECK(f[3] == std::array<std::int32_t, 3>{6, 6, 6});
  // Rendered frame f is the cube around frames[f]: its centre voxel value encodes the position.
  const auto obs = e.observation();  // [4, 3, 3, 3]
  for (int k = 0; k < 4; ++k) CHECK(obs(k, 1, 1, 1) == float(f[k][0] + 100 * f[k][1] + 10000 * f[k][2] + 1));
}

TEST_CASE("cubes at the border read 0 outside the volume") {
  const auto img = index_volume(10, 10, 10);
  env::LandmarkEnvConfig cfg;
  cfg.cube = 5;
  cfg.levels = 1;
  env::LandmarkEnv<3, 4> e(one_volume(img, {img.index_to_physical({5, 5, 5})}, 1), cfg);
  e.reset_at(0, 0, img.index_to_physical({0, 9, 1}));
  const auto obs = e.observation();  // [4, 5, 5, 5]
  index_t zeros = 0;
  for (index_t k = 0; k < 4; ++k)
    for (index_t dz = 0; dz < 5; ++dz)
      for (index_t dy = 0; dy < 5; ++dy)
        for (index_t dx = 0; dx < 5; ++dx) {
          const index_t x = 0 + dx - 2, y = 9 + dy - 2, z = 1 + dz - 2;
          const bool inside = x >= 0 && x < 10 && y >= 0 && y < 10 && z >= 0 && z < 10;
          const float want = inside ? float(x + 100 * y + 10000 * z + 1) : 0.0f;
          CHECK(obs(k, dz, dy, dx) == want);
          zeros += !inside;
        }
  CHECK(zeros > 0);
  // A move out of the grid is refused.
  const auto before = e.key().position();
  e.step_key(1);  // −x at x = 0
  CHECK(e.key().position() == before);
}

TEST_CASE("a key stored in the keyed replay renders the identical observation") {
  imaging::HeadPhantomOptions o;
  o.size_xyz = {48, 48, 48};
  auto vols = std::make_shared<std::vector<env::LandmarkVolume<3>>>(env::phantom_landmark_volumes(2, 7, o, 2));
  env::LandmarkEnvConfig cfg;
  cfg.cube = 9;
  cfg.levels = 2;
  env::LandmarkEnv<3, 4> e(vols, cfg);
  PhiloxStream rng(3, 0);
  e.reset_random(rng, 1, 2);
  for (int a : {0, 2, 4, 0}) e.step_key(a);
  const auto key = e.key();
  const auto want = e.observation();
  e.step_key(2);
  const auto next_key = e.key();
  const auto want_next = e.observation();
  using Key = env::LandmarkKey<3, 4>;
  rl::replay::Keyed<Key, float, 4, int> replay({1, want.shape(), 1});
  const int action = 2;
  replay.add(key, std::span<const int>(&action, 1), 0.5f, next_key, false);
  auto batch = replay.make_batch(3);
  PhiloxStream sample_rng(1, 1);
  env::LandmarkRenderer<3, 4> renderer(vols, cfg.cube);
  replay.sample_into(sample_rng, renderer, batch);
  for (index_t b = 0; b < 3; ++b) {
    CHECK(std::equal(want.data(), want.data() + want.size(), batch.obs.data() + b * want.size()));
    CHECK(std::equal(want_next.data(), want_next.data() + want_next.size(), batch.next_obs.data() + b * want.size()));
  }
  // The observation is not trivially constant.
  CHECK(*std::max_element(want.data(), want.data() + want.size()) > *std::min_element(want.data(), want.data() + want.size()));
}

TEST_CASE("rl-medical list files load with landmarks in mm; bad files are clear errors") {
  const auto dir = fs::temp_directory_path() / "rlmed_test_landmark_env";
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto img = index_volume(12, 14, 16, {1.0, 1.0, 1.0}, {0, 0, 0});
  img.spacing_mm = {1.0, 2.0, 1.5};
  img.origin_mm = {3.0, -4.0, 7.0};
  imaging::write_image(dir / "a.nii.gz", img);
  auto write = [&](const fs::path& p, const std::string& text) {
    std::ofstream f(p);
    f << text;
  };
  write(dir / "a.txt", "1,2,3\n4 5 6\n# comment\n7,8,9\n");
  write(dir / "images.txt", "a.nii.gz\n");
  write(dir / "marks.txt", "a.txt\n");
  const std::vector<int> ids{2, 0};
  const auto vols = env::load_rlmedical_volumes(dir / "images.txt", dir / "marks.txt", ids, 2);
  REQUIRE(vols.size() == 1);
  REQUIRE(vols[0].landmarks_mm.size() == 2);
  const Vec<3> want0{3.0 + 7.0 * 1.0, -4.0 + 8.0 * 2.0, 7.0 + 9.0 * 1.5};
  for (std::size_t a = 0; a < 3; ++a) CHECK(vols[0].landmarks_mm[0][a] == doctest::Approx(want0[a]));
  const Vec<3> want1{3.0 + 1.0, -4.0 + 4.0, 7.0 + 4.5};
  for (std::size_t a = 0; a < 3; ++a) CHECK(vols[0].landmarks_mm[1][a] == doctest::Approx(want1[a]));
  CHECK(vols[0].pyramid.level_count() == 2);

  const std::vector<int> too_many{3};
  CHECK_THROWS_WITH_AS(env::load_rlmedical_volumes(dir / "images.txt", dir / "marks.txt", too_many, 1),
                       doctest::Contains("landmark id 3"), Error);
  write(dir / "bad.txt", "1,2,x\n");
  write(dir / "marks_bad.txt", "bad.txt\n");
  CHECK_THROWS_AS(env::load_rlmedical_volumes(dir / "images.txt", dir / "marks_bad.txt", ids, 1), Error);
  write(dir / "short.txt", "1,2\n");
  write(dir / "marks_short.txt", "short.txt\n");
  CHECK_THROWS_AS(env::load_rlmedical_volumes(dir / "images.txt", dir / "marks_short.txt", ids, 1), Error);
  write(dir / "marks_two.txt", "a.txt\na.txt\n");
  CHECK_THROWS_WITH_AS(env::load_rlmedical_volumes(dir / "images.txt", dir / "marks_two.txt", ids, 1),
                       doctest::Contains("landmark files"), Error);
  write(dir / "images_missing.txt", "missing.nii.gz\n");
  CHECK_THROWS_AS(env::load_rlmedical_volumes(dir / "images_missing.txt", dir / "marks.txt", ids, 1), Error);
  fs::remove_all(dir);
}

TEST_CASE("augmentation moves the image and its landmarks together") {
  // A smooth bright blob at a known point; after augmentation the blob's peak is at the mapped point.
  const index_t n = 48;
  Tensor<float, 3> t(Shape<3>{n, n, n});
  const Vec<3> blob_vox{30, 20, 25};
  for (index_t z = 0; z < n; ++z)
    for (index_t y = 0; y < n; ++y)
      for (index_t x = 0; x < n; ++x) {
        const double d2 = (x - blob_vox[0]) * (x - blob_vox[0]) + (y - blob_vox[1]) * (y - blob_vox[1]) +
                          (z - blob_vox[2]) * (z - blob_vox[2]);
        t(z, y, x) = float(std::exp(-d2 / 18.0));
      }
  imaging::Image<float, 3> img(std::move(t), {1.2, 1.0, 0.9}, {-5, 2, 1});
  const Vec<3> blob_mm = img.index_to_physical(blob_vox);
  imaging::AugmentOptions o;
  o.intensity_scale = 0;
  o.intensity_shift = 0;
  PhiloxStream rng(11, 0);
  for (int trial = 0; trial < 3; ++trial) {
    const auto a = imaging::augment<3>(img, {blob_mm}, o, rng);
    CHECK(dist(a.points_mm[0], blob_mm) > 0.1);  // it did move
    // The brightest voxel of the augmented image lies at the mapped landmark (within a voxel).
    index_t best = 0;
    for (index_t i = 0; i < a.image.voxels.size(); ++i)
      if (a.image.voxels.data()[i] > a.image.voxels.data()[best]) best = i;
    const Vec<3> peak = a.image.index_to_physical({double(best % n), double((best / n) % n), double(best / (n * n))});
    CHECK(dist(peak, a.points_mm[0]) < 1.5);
  }
  o.max_angle_deg = 200;
  CHECK_THROWS_AS(imaging::augment<3>(img, {blob_mm}, o, rng), Error);
}

TEST_CASE("bad inputs are rlmed::Error") {
  const auto img = index_volume(16, 16, 16);
  env::LandmarkEnvConfig cfg;
  cfg.cube = 3;
  cfg.levels = 2;
  env::LandmarkEnv<3, 4> e(one_volume(img, {img.index_to_physical({2, 2, 2})}, 2), cfg);
  CHECK_THROWS_AS(e.reset_at(1, 0, {0, 0, 0}), Error);
  CHECK_THROWS_AS(e.reset_at(0, 1, {0, 0, 0}), Error);
  e.reset_at(0, 0, img.index_to_physical({8, 8, 8}));
  CHECK_THROWS_AS(e.step_key(6), Error);
  CHECK_THROWS_AS(e.step_key(-1), Error);
  cfg.levels = 3;  // the pyramid has 2
  CHECK_THROWS_AS((env::LandmarkEnv<3, 4>(one_volume(img, {img.index_to_physical({2, 2, 2})}, 2), cfg)), Error);
  cfg.levels = 1;
  cfg.cube = 0;
  CHECK_THROWS_AS((env::LandmarkEnv<3, 4>(one_volume(img, {img.index_to_physical({2, 2, 2})}, 1), cfg)), Error);
  CHECK_THROWS_AS(env::make_landmark_volume<3>(img, {}, 1), Error);
  env::LandmarkRenderer<3, 4> r(one_volume(img, {img.index_to_physical({2, 2, 2})}, 1), 3);
  env::LandmarkKey<3, 4> k;
  k.level = 1;
  Tensor<float, 5> out(Shape<5>{1, 4, 3, 3, 3});
  CHECK_THROWS_AS(r.render_batch(std::span<const env::LandmarkKey<3, 4>>(&k, 1), out.view()), Error);
}

TEST_CASE("2D search: 4 actions, reward and oscillation") {
  Tensor<float, 2> t(Shape<2>{20, 20});
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = float(i);
  imaging::Image<float, 2> img(std::move(t), {1.0, 1.0});
  auto v = std::make_shared<std::vector<env::LandmarkVolume<2>>>();
  v->push_back(env::make_landmark_volume<2>(img, {Vec<2>{15, 10}}, 1));
  env::LandmarkEnvConfig cfg;
  cfg.cube = 5;
  cfg.levels = 1;
  env::LandmarkEnv<2, 4> e(v, cfg);
  static_assert(env::LandmarkEnv<2, 4>::kActions == 4);
  e.reset_at(0, 0, {5, 10});
  CHECK(e.step_key(0).reward == doctest::Approx(1.0));
  const auto s = e.step_key(1);
  CHECK(s.reward == doctest::Approx(-1.0));
  CHECK(s.done);
  CHECK_THROWS_AS(e.step_key(4), Error);
  CHECK(e.observation().shape() == Shape<3>{4, 5, 5});
}

TEST_CASE("Collab net routes each row through its agent's head; the trunk is shared") {
  using Trunk = nn::Sequential<nn::Conv<3, 4, 2, 3>, nn::ReLU, nn::Flatten>;
  using Head = nn::Sequential<nn::Linear<5>, nn::ReLU, nn::DuelingHead<6>>;
  nn::CollabQNet<float, Trunk, Head, 3> net(Shape<5>{1, 4, 5, 5, 5});
  PhiloxStream rng(5, 0);
  net.initialize(rng);
  Tensor<float, 5> x(Shape<5>{4, 4, 5, 5, 5});
  fill_normal(x.view(), rng);
  const std::vector<int> heads{2, 0, 2, 1};
  nn::Context ctx;
  ctx.training = false;
  decltype(net)::Cache cache;
  const auto q = net.forward(ctx, TensorView<const float, 5>(x.view()), heads, cache);
  Tensor<float, 2> qcopy(q.shape());
  std::copy(q.data(), q.data() + q.size(), qcopy.data());
  // Row b alone through head heads[b] gives the same values.
  for (index_t b = 0; b < 4; ++b) {
    decltype(net)::Cache c1;
    const std::vector<int> h{heads[static_cast<std::size_t>(b)]};
    const auto xb = TensorView<const float, 5>(x.data() + b * 500, Shape<5>{1, 4, 5, 5, 5});
    const auto q1 = net.forward(ctx, xb, h, c1);
    for (index_t a = 0; a < 6; ++a) CHECK(q1(0, a) == doctest::Approx(qcopy(b, a)).epsilon(1e-5));
    // A different head gives different values.
    decltype(net)::Cache c2;
    const std::vector<int> other{(heads[static_cast<std::size_t>(b)] + 1) % 3};
    const auto q2 = net.forward(ctx, xb, other, c2);
    bool differs = false;
    for (index_t a = 0; a < 6; ++a) differs = differs || std::abs(q2(0, a) - qcopy(b, a)) > 1e-6f;
    CHECK(differs);
  }
  const std::vector<int> bad{0, 3, 0, 0};
  CHECK_THROWS_AS(net.forward(ctx, TensorView<const float, 5>(x.view()), bad, cache), Error);
  // The LandmarkQNet adapter accepts head 0 only.
  nn::SingleHeadQNet<nn::LandmarkQNet<float, true, 4, 6, 4>> single(35);
  single.initialize(rng);
  Tensor<float, 5> xs(Shape<5>{1, 4, 35, 35, 35});
  nn::LandmarkQNet<float, true, 4, 6, 4>::Cache sc;
  const std::vector<int> h1{1};
  CHECK_THROWS_AS(single.forward(ctx, TensorView<const float, 5>(xs.view()), h1, sc), Error);
}

TEST_CASE("spaces: 2·Dim discrete actions, observations shaped [F, cube...]") {
  const auto img = index_volume(12, 12, 12);
  env::LandmarkEnvConfig cfg;
  cfg.cube = 5;
  cfg.levels = 1;
  env::LandmarkEnv<3, 4> e(one_volume(img, {img.index_to_physical({6, 6, 6})}, 1), cfg);
  using Space = env::LandmarkEnv<3, 4>::action_space_type;
  CHECK(Space::n == 6);
  CHECK(e.action_space().contains(5));
  CHECK_FALSE(e.action_space().contains(6));
  CHECK(e.observation_shape() == Shape<4>{4, 5, 5, 5});
  e.reset_at(0, 0, img.index_to_physical({6, 6, 6}));
  CHECK(e.observation().shape() == e.observation_shape());
  CHECK(env::LandmarkEnv<2, 3>::action_space_type::n == 4);
}
