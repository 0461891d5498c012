// Phantoms, registration pairs and pictures (unit): determinism by seed, label sets, landmarks
// inside the structures they name, folding-free deformations (Jacobians computed here by
// finite differences), and PNGs that read back with the expected sizes and colours.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <numbers>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

#include "rlmed/imaging/overlay.hpp"
#include "rlmed/imaging/patches.hpp"
#include "rlmed/imaging/phantom.hpp"
#include "rlmed/imaging/png.hpp"

using namespace rlmed;
using namespace rlmed::imaging;

namespace {

std::set<int> label_set(TensorView<const std::uint8_t, 2> l) {
  std::set<int> s;
  for (auto v : l) s.insert(v);
  return s;
}
std::set<int> label_set(TensorView<const std::uint8_t, 3> l) {
  std::set<int> s;
  for (auto v : l) s.insert(v);
  return s;
}

HeadPhantomOptions small_head() {
  HeadPhantomOptions o;
  o.size_xyz = {64, 64, 64};
  return o;
}

// det(I + J), J the central-difference Jacobian of u [Dim, *spatial] (interior voxels).
double min_jacobian_det_3d(const Tensor<float, 4>& u) {
  const index_t d = u.extent(1), h = u.extent(2), w = u.extent(3);
  double worst = INFINITY;
  for (index_t z = 1; z + 1 < d; ++z)
    for (index_t y = 1; y + 1 < h; ++y)
      for (index_t x = 1; x + 1 < w; ++x) {
        double m[3][3];
        for (int c = 0; c < 3; ++c) {
          m[c][0] = 0.5 * (double(u(c, z + 1, y, x)) - double(u(c, z - 1, y, x))) + (c == 0);
          m[c][1] = 0.5 * (double(u(c, z, y + 1, x)) - double(u(c, z, y - 1, x))) + (c == 1);
          m[c][2] = 0.5 * (double(u(c, z, y, x + 1)) - double(u(c, z, y, x - 1))) + (c == 2);
        }
        const double det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
                           m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
        worst = std::min(worst, det);
      }
  return worst;
}

double min_jacobian_det_2d(const Tensor<float, 3>& u) {
  const index_t h = u.extent(1), w = u.extent(2);
  double worst = INFINITY;
  for (index_t y = 1; y + 1 < h; ++y)
    for (index_t x = 1; x + 1 < w; ++x) {
      const double a = 1 + 0.5 * (double(u(0, y + 1, x)) - double(u(0, y - 1, x)));
      const double b = 0.5 * (double(u(0, y, x + 1)) - double(u(0, y, x - 1)));
      const double c = 0.5 * (double(u(1, y + 1, x)) - double(u(1, y - 1, x)));
      const double e = 1 + 0.5 * (double(u(1, y, x + 1)) - double(u(1, y, x - 1)));
      worst = std::min(worst, a * e - b * c);
    }
  return worst;
}

template <std::size_t R>
double max_norm(const Tensor<float, R>& u) {
  const index_t n = u.size() / u.extent(0);
  double best = 0;
  for (index_t i = 0; i < n; ++i) {
    double s = 0;
    for (index_t c = 0; c < u.extent(0); ++c) s += double(u.data()[c * n + i]) * double(u.data()[c * n + i]);
    best = std::max(best, std::sqrt(s));
  }
  return best;
}

std::filesystem::path temp_dir() {
  auto p = std::filesystem::temp_directory_path() / ("rlmed_phantom_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(p);
  return p;
}

Rgb pixel(const Tensor<std::uint8_t, 3>& rgb, index_t x, index_t y) { return {rgb(y, x, 0), rgb(y, x, 1), rgb(y, x, 2)}; }

}  // namespace

// ---- 2D slices ---------------------------------------------------------------------------------

TEST_CASE("slice phantom: bit-identical by seed and thread count, different seeds differ") {
  SlicePhantomOptions o;
  const int threads = max_threads();
  set_num_threads(1);
  const auto a = make_slice_phantom(o, 42);
  set_num_threads(2);
  const auto b = make_slice_phantom(o, 42);
  set_num_threads(threads);
  CHECK(bitwise_equal(a.image, b.image));
  CHECK(bitwise_equal(a.labels, b.labels));
  const auto c = make_slice_phantom(o, 43);
  CHECK_FALSE(bitwise_equal(a.image, c.image));
  CHECK_FALSE(bitwise_equal(a.labels, c.labels));
}

TEST_CASE("slice phantom: labels {0, 1, 2}, lesions inside the organ, lesion counts 0..3 all occur") {
  SlicePhantomOptions o;
  o.height = 96;
  o.width = 112;
  std::set<std::size_t> counts;
  for (std::uint64_t seed = 0; seed < 40; ++seed) {
    const auto p = make_slice_phantom(o, seed);
    CAPTURE(seed);
    REQUIRE(p.image.shape() == Shape<2>{96, 112});
    counts.insert(p.lesions.size());
    const auto labels = label_set(p.labels.view());
    CHECK(labels.count(0) == 1);
    CHECK(labels.count(1) == 1);
    CHECK(labels.count(2) == (p.lesions.empty() ? 0u : 1u));
    for (int l : labels) CHECK(l <= 2);
    // A lesion pixel never touches the background: lesions lie strictly inside the organ.
    index_t touching = 0;
    for (index_t y = 1; y + 1 < 96; ++y)
      for (index_t x = 1; x + 1 < 112; ++x)
        if (p.labels(y, x) == kSliceLesion)
          for (auto [dy, dx] : {std::array<int, 2>{0, 1}, {0, -1}, {1, 0}, {-1, 0}})
            if (p.labels(y + dy, x + dx) == kSliceBackground) ++touching;
    CHECK(touching == 0);
    // The lesion centres are labelled lesion; organ intensities differ from the background.
    for (const Disc& d : p.lesions) CHECK(p.labels(index_t(std::lround(d.y)), index_t(std::lround(d.x))) == kSliceLesion);
    double organ = 0, bg = 0;
    index_t no = 0, nb = 0;
    for (index_t i = 0; i < p.image.size(); ++i) {
      if (p.labels.data()[i] == kSliceOrgan) organ += p.image.data()[i], ++no;
      if (p.labels.data()[i] == kSliceBackground) bg += p.image.data()[i], ++nb;
    }
    CHECK(organ / double(no) > bg / double(nb) + 0.2);
    const auto fg = foreground_mask<2>(p.labels.view());
    for (index_t i = 0; i < fg.size(); ++i) CHECK(fg.data()[i] == (p.labels.data()[i] != 0 ? 1 : 0));
  }
  CHECK(counts == std::set<std::size_t>{0, 1, 2, 3});
}

TEST_CASE("slice phantom noise models and bad options") {
  SlicePhantomOptions o;
  o.noise = NoiseModel::gaussian;
  o.noise_sigma = 0.05;
  const auto g = make_slice_phantom(o, 5);
  bool negative = false;
  for (float v : g.image) negative = negative || v < 0;
  CHECK(negative);  // Gaussian noise on a dark background goes below 0
  o.noise = NoiseModel::rician;
  const auto r = make_slice_phantom(o, 5);
  for (float v : r.image) CHECK(v >= 0.0f);  // a magnitude is never negative
  SlicePhantomOptions bad;
  bad.max_lesions = 9;
  CHECK_THROWS_AS(make_slice_phantom(bad, 1), Error);
  bad = {};
  bad.organ_radius_fraction = 0.45;
  CHECK_THROWS_AS(make_slice_phantom(bad, 1), Error);
  bad = {};
  bad.noise_sigma = std::nan("");
  CHECK_THROWS_AS(make_slice_phantom(bad, 1), Error);
  bad = {};
  bad.height = 4;
  CHECK_THROWS_AS(make_slice_phantom(bad, 1), Error);
}

// ---- 3D head -------------------------------------------------------------------------------------

TEST_CASE("head phantom: deterministic, every label present, nested shells") {
  const auto a = make_head_phantom(small_head(), 7);
  const int threads = max_threads();
  set_num_threads(1);
  const auto b = make_head_phantom(small_head(), 7);
  set_num_threads(threads);
  CHECK(bitwise_equal(a.image.voxels, b.image.voxels));
  CHECK(bitwise_equal(a.labels.voxels, b.labels.voxels));
  const auto c = make_head_phantom(small_head(), 8);
  CHECK_FALSE(bitwise_equal(a.labels.voxels, c.labels.voxels));
  CHECK(label_set(a.labels.voxels.view()) == std::set<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  // Inner structures (CSF and inwards) never touch the scalp or the background: the skull closes.
  const auto& L = a.labels.voxels;
  index_t leaks = 0;
  for (index_t z = 1; z + 1 < 64; ++z)
    for (index_t y = 1; y + 1 < 64; ++y)
      for (index_t x = 1; x + 1 < 64; ++x) {
        if (L(z, y, x) < kCsf) continue;
        for (auto [dz, dy, dx] : {std::array<int, 3>{1, 0, 0}, {-1, 0, 0}, {0, 1, 0}, {0, -1, 0}, {0, 0, 1}, {0, 0, -1}})
          if (L(z + dz, y + dy, x + dx) <= kScalp) ++leaks;
      }
  CHECK(leaks == 0);
  // Brain is brighter than the skull on average (T1-like contrast survives bias and noise).
  double brain = 0, skull = 0;
  index_t nb = 0, ns = 0;
  for (index_t i = 0; i < L.size(); ++i) {
    if (L.data()[i] == kBrain) brain += a.image.voxels.data()[i], ++nb;
    if (L.data()[i] == kSkull) skull += a.image.voxels.data()[i], ++ns;
  }
  CHECK(brain / double(nb) > skull / double(ns) + 0.3);
}

TEST_CASE("head phantom landmarks lie inside the structures they name (several seeds and grids)") {
  HeadPhantomOptions aniso;
  aniso.size_xyz = {72, 80, 56};
  aniso.spacing_mm = {1.2, 1.0, 1.5};
  aniso.origin_mm = {-40.0, 25.0, 10.0};
  for (const HeadPhantomOptions& o : {small_head(), aniso})
    for (std::uint64_t seed : {1u, 2u, 3u, 4u}) {
      const auto h = make_head_phantom(o, seed);
      REQUIRE(h.landmarks.size() >= 6);
      std::set<std::string> names;
      for (const Landmark& l : h.landmarks) {
        CAPTURE(l.name);
        CAPTURE(seed);
        names.insert(l.name);
        const Voxel<3> v = nearest_voxel(h.labels, l.point_mm);
        REQUIRE(h.labels.contains_index(Vec<3>{double(v[0]), double(v[1]), double(v[2])}));
        CHECK(int(h.labels.voxels(v[2], v[1], v[0])) == int(l.label));
      }
      CHECK(names.size() == h.landmarks.size());
      CHECK(h.landmark("left_caudate_centre").label == kLeftCaudate);
      // LPS: the left caudate is at larger x than the right one; anterior horns at smaller y.
      CHECK(h.landmark("left_caudate_centre").point_mm[0] > h.landmark("right_caudate_centre").point_mm[0]);
      CHECK(h.landmark("left_ventricle_anterior_horn").point_mm[1] < h.landmark("left_ventricle_posterior_horn").point_mm[1]);
      CHECK(h.image.spacing_mm == o.spacing_mm);
    }
  CHECK_THROWS_AS((void)make_head_phantom(small_head(), 1).landmark("nose"), Error);
  HeadPhantomOptions bad = small_head();
  bad.size_xyz = {16, 64, 64};
  CHECK_THROWS_AS(make_head_phantom(bad, 1), Error);
  bad = small_head();
  bad.boundary_irregularity = 0.2;
  CHECK_THROWS_AS(make_head_phantom(bad, 1), Error);
}

// ---- deformations and registration pairs -----------------------------------------------------------

TEST_CASE("random smooth fields: bounded, smooth, no folding (finite-difference Jacobian > 0)") {
  DeformationOptions<3> o;
  o.control_points = 5;
  o.max_displacement_vox = 3.0;
  const auto u = random_smooth_field<3>(Shape<3>{30, 34, 38}, o, 11);
  REQUIRE(u.shape() == Shape<4>{3, 30, 34, 38});
  CHECK(max_norm(u) <= 3.0 + 1e-5);
  CHECK(max_norm(u) > 0.5);
  CHECK(min_jacobian_det_3d(u) > 0.0);
  // A displacement far too large for the grid: the folding cap must still hold.
  o.max_displacement_vox = 40.0;
  o.control_points = 8;
  const auto big = random_smooth_field<3>(Shape<3>{24, 24, 24}, o, 12);
  CHECK(min_jacobian_det_3d(big) > 0.0);
  CHECK(max_norm(big) < 40.0);
  DeformationOptions<2> o2;
  o2.max_displacement_vox = 25.0;
  o2.control_points = 7;
  const auto f2 = random_smooth_field<2>(Shape<2>{64, 80}, o2, 3);
  CHECK(min_jacobian_det_2d(f2) > 0.0);
  CHECK(bitwise_equal(f2, random_smooth_field<2>(Shape<2>{64, 80}, o2, 3)));
  CHECK_FALSE(bitwise_equal(f2, random_smooth_field<2>(Shape<2>{64, 80}, o2, 4)));
  o2.max_gradient = 1.5;
  CHECK_THROWS_AS((random_smooth_field<2>(Shape<2>{8, 8}, o2, 1)), Error);
  o2 = {};
  o2.control_points = 3;
  CHECK_THROWS_AS((random_smooth_field<2>(Shape<2>{8, 8}, o2, 1)), Error);
}

TEST_CASE("deformable head pair: fixed labels are the moving labels at p + u(p)") {
  HeadPhantomOptions ho;
  ho.size_xyz = {40, 44, 36};
  ho.spacing_mm = {2.0, 2.0, 2.0};
  const auto h = make_head_phantom(ho, 21);
  DeformationOptions<3> o;
  o.max_displacement_vox = 2.5;
  const auto pair = make_deformable_pair<3>(h.image, h.labels, o, 5);
  CHECK(bitwise_equal(pair.moving.voxels, h.image.voxels));
  CHECK(same_geometry(pair.fixed, h.image));
  const auto& u = pair.displacement_vox;
  CHECK(min_jacobian_det_3d(u) > 0.0);
  index_t bad = 0, changed = 0;
  for (index_t z = 0; z < 36; ++z)
    for (index_t y = 0; y < 44; ++y)
      for (index_t x = 0; x < 40; ++x) {
        const double cz = double(z) + u(0, z, y, x), cy = double(y) + u(1, z, y, x), cx = double(x) + u(2, z, y, x);
        const index_t iz = index_t(std::floor(cz + 0.5)), iy = index_t(std::floor(cy + 0.5)), ix = index_t(std::floor(cx + 0.5));
        std::uint8_t want = 0;
        if (iz >= 0 && iy >= 0 && ix >= 0 && iz < 36 && iy < 44 && ix < 40) want = h.labels.voxels(iz, iy, ix);
        if (pair.fixed_labels.voxels(z, y, x) != want) ++bad;
        if (pair.fixed_labels.voxels(z, y, x) != h.labels.voxels(z, y, x)) ++changed;
      }
  CHECK(bad == 0);
  CHECK(changed > 100);  // the deformation actually moved anatomy
  // Intensities: trilinear at p + u(p) for a few interior voxels.
  for (auto [z, y, x] : {std::array<index_t, 3>{18, 22, 20}, {10, 30, 12}, {25, 15, 28}}) {
    const double cz = double(z) + u(0, z, y, x), cy = double(y) + u(1, z, y, x), cx = double(x) + u(2, z, y, x);
    const index_t z0 = index_t(std::floor(cz)), y0 = index_t(std::floor(cy)), x0 = index_t(std::floor(cx));
    const double fz = cz - double(z0), fy = cy - double(y0), fx = cx - double(x0);
    double v = 0;
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b)
        for (int c = 0; c < 2; ++c)
          v += (a ? fz : 1 - fz) * (b ? fy : 1 - fy) * (c ? fx : 1 - fx) * h.image.voxels(z0 + a, y0 + b, x0 + c);
    CHECK(pair.fixed.voxels(z, y, x) == doctest::Approx(v).epsilon(1e-5));
  }
}

TEST_CASE("rigid head pair: orthonormal rotation within bounds, dense field consistent, landmarks follow") {
  const auto h = make_head_phantom(HeadPhantomOptions{}, 31);  // 96³: nucleus margins > 2 voxels
  RigidOptions o{8.0, 4.0};
  const auto pair = make_rigid_pair<3>(h.image, h.labels, o, 17);
  const auto& R = pair.transform.rotation;
  const Mat<3> rtr = mat_mul<3>(transpose<3>(R), R);
  for (int i = 0; i < 9; ++i) CHECK(rtr[std::size_t(i)] == doctest::Approx(i % 4 == 0 ? 1.0 : 0.0).epsilon(1e-12));
  CHECK(determinant<3>(R) == doctest::Approx(1.0));
  // Rotation angle from the trace: at most the composition of three 8° rotations.
  const double angle = std::acos(std::clamp((R[0] + R[4] + R[8] - 1.0) / 2.0, -1.0, 1.0)) * 180.0 / std::numbers::pi;
  CHECK(angle <= 24.0 + 1e-9);
  CHECK(angle > 0.0);
  for (double t : pair.transform.translation_mm) CHECK(std::abs(t) <= 4.0);
  const auto inv = pair.transform.inverse();
  const Vec<3> p{3.0, -7.0, 12.0};
  const Vec<3> back = inv.apply(pair.transform.apply(p));
  for (int i = 0; i < 3; ++i) CHECK(back[std::size_t(i)] == doctest::Approx(p[std::size_t(i)]).epsilon(1e-12));
  // Dense field at a voxel = moving index of T(world(voxel)) − voxel.
  const Vec<3> idx{20.0, 33.0, 41.0};  // x, y, z
  const Vec<3> moved = h.image.physical_to_index(pair.transform.apply(h.image.index_to_physical(idx)));
  CHECK(pair.displacement_vox(0, 41, 33, 20) == doctest::Approx(moved[2] - 41.0).epsilon(1e-5));
  CHECK(pair.displacement_vox(2, 41, 33, 20) == doctest::Approx(moved[0] - 20.0).epsilon(1e-5));
  // A nucleus centre mapped into fixed space with T⁻¹ keeps its label there.
  for (const char* name : {"left_caudate_centre", "right_thalamus_centre"}) {
    const Landmark& l = h.landmark(name);
    const Voxel<3> v = nearest_voxel(pair.fixed_labels, inv.apply(l.point_mm));
    CHECK(int(pair.fixed_labels.voxels(v[2], v[1], v[0])) == int(l.label));
  }
  CHECK_THROWS_AS((random_rigid_transform<3>(Vec<3>{}, RigidOptions{200.0, 1.0}, 1)), Error);
}

TEST_CASE("2D registration pair from a slice phantom") {
  const auto s = make_slice_phantom(SlicePhantomOptions{}, 3);
  Image<float, 2> img(s.image, Vec<2>{0.8, 0.8});
  Image<std::uint8_t, 2> lab(s.labels, Vec<2>{0.8, 0.8});
  DeformationOptions<2> o;
  o.max_displacement_vox = 6.0;
  const auto p = make_deformable_pair<2>(img, lab, o, 9);
  CHECK(min_jacobian_det_2d(p.displacement_vox) > 0.0);
  CHECK(label_set(p.fixed_labels.voxels.view()) == label_set(lab.voxels.view()));
  const auto r = make_rigid_pair<2>(img, lab, RigidOptions{15.0, 3.0}, 9);
  CHECK(determinant<2>(r.transform.rotation) == doctest::Approx(1.0));
  Image<std::uint8_t, 2> other(Tensor<std::uint8_t, 2>(Shape<2>{10, 10}), Vec<2>{0.8, 0.8});
  CHECK_THROWS_AS((make_deformable_pair<2>(img, other, o, 1)), Error);
}

// ---- pictures ------------------------------------------------------------------------------------

TEST_CASE("windowing to 8 bit") {
  Tensor<float, 2> s(Shape<2>{1, 5});
  const float v[5] = {-1.0f, 0.0f, 0.5f, 1.0f, 2.0f};
  for (int i = 0; i < 5; ++i) s(0, i) = v[i];
  const auto g = window_to_u8<float>(s.view(), Window{0.0, 1.0});
  CHECK(g(0, 0) == 0);
  CHECK(g(0, 1) == 0);
  CHECK(g(0, 2) == 128);  // round(127.5)
  CHECK(g(0, 3) == 255);
  CHECK(g(0, 4) == 255);
  const Window cw = Window::center_width(40, 400);
  CHECK(cw.low == -160.0);
  CHECK(cw.high == 240.0);
  s(0, 2) = std::nanf("");
  CHECK_THROWS_AS((window_to_u8<float>(s.view(), Window{0.0, 1.0})), Error);
  CHECK_THROWS_AS((window_to_u8<float>(s.view(), Window{1.0, 1.0})), Error);
}

TEST_CASE("overlay PNG: contours, landmarks and a trajectory read back with the expected colours") {
  const auto dir = temp_dir();
  const auto ph = make_slice_phantom(SlicePhantomOptions{}, 8);
  auto rgb = gray_to_rgb(window_to_u8<float>(ph.image.view(), percentile_window<float>(ph.image.view())).view());
  draw_contours(rgb.view(), ph.labels.view());
  // Landmarks: a cross at (20, 20) and a circle at (100, 30) radius 5; trajectory polyline.
  const std::vector<PixelXY> marks{{20, 20}, {100, 30}};
  draw_landmarks(rgb.view(), std::span<const PixelXY>(marks.data(), 1), MarkerShape::cross, 3);
  const std::vector<Rgb> second{default_palette()[1]};
  draw_landmarks(rgb.view(), std::span<const PixelXY>(marks.data() + 1, 1), MarkerShape::circle, 5, second);
  const std::vector<PixelXY> path{{10, 120}, {40, 120}, {40, 100}};
  draw_polyline(rgb.view(), path, Rgb{1, 2, 3});
  const auto file = dir / "overlay.png";
  write_png(file, rgb.view());
  const auto back = read_png_rgb(file);
  REQUIRE(back.shape() == Shape<3>{128, 128, 3});
  CHECK(bitwise_equal(back, rgb));
  const Rgb red = default_palette()[0], green = default_palette()[1];
  CHECK(pixel(back, 20, 20) == red);
  CHECK(pixel(back, 23, 20) == red);
  CHECK(pixel(back, 20, 17) == red);
  CHECK(pixel(back, 105, 30) == green);
  CHECK(pixel(back, 100, 25) == green);
  CHECK(pixel(back, 25, 120) == Rgb{1, 2, 3});
  CHECK(pixel(back, 40, 110) == Rgb{1, 2, 3});
  // Contours: every organ pixel next to background is red (label 1), interior organ pixels are grey.
  index_t contour = 0, wrong = 0;
  for (index_t y = 1; y < 127; ++y)
    for (index_t x = 1; x < 127; ++x) {
      if (ph.labels(y, x) != kSliceOrgan || (y >= 95 && x <= 45) || y <= 35) continue;  // away from the markers
      const bool edge = ph.labels(y - 1, x) != 1 || ph.labels(y + 1, x) != 1 || ph.labels(y, x - 1) != 1 || ph.labels(y, x + 1) != 1;
      const Rgb p = pixel(back, x, y);
      const bool grey = p[0] == p[1] && p[1] == p[2];
      if (edge) {
        ++contour;
        if (ph.labels(y - 1, x) != kSliceLesion && ph.labels(y + 1, x) != kSliceLesion && ph.labels(y, x - 1) != kSliceLesion &&
            ph.labels(y, x + 1) != kSliceLesion && p != red)
          ++wrong;
      } else if (!grey) {
        ++wrong;
      }
    }
  CHECK(contour > 50);
  CHECK(wrong == 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("Bresenham lines and circles hit the predicted pixels") {
  auto c = blank_canvas(20, 30);
  draw_line(c.view(), {2, 3}, {12, 8}, Rgb{255, 0, 0});  // slope 1/2: one pixel per column
  index_t count = 0;
  for (index_t i = 0; i < c.size(); i += 3) count += c.data()[i] == 255;
  CHECK(count == 11);
  CHECK(c(3, 2, 0) == 255);
  CHECK(c(8, 12, 0) == 255);
  CHECK(c(5, 6, 0) == 255);  // (6, 5): y = 3 + (6 − 2)/2 = 5
  auto d = blank_canvas(21, 21);
  draw_circle(d.view(), {10, 10}, 6, Rgb{0, 255, 0});
  for (auto [x, y] : {std::array<index_t, 2>{16, 10}, {4, 10}, {10, 16}, {10, 4}}) CHECK(d(y, x, 1) == 255);
  CHECK(d(10, 10, 1) == 0);
  // Off-canvas drawing clips instead of failing.
  draw_line(d.view(), {-50, -50}, {100, 100}, Rgb{9, 9, 9});
  CHECK(d(0, 0, 0) == 9);
  CHECK(d(20, 20, 0) == 9);
  Tensor<std::uint8_t, 3> not_rgb(Shape<3>{4, 4, 4});
  CHECK_THROWS_AS(draw_line(not_rgb.view(), {0, 0}, {1, 1}, Rgb{}), Error);
}

TEST_CASE("deformation grid picture: zero field gives a straight grid, a shift moves it") {
  Tensor<float, 3> zero(Shape<3>{2, 24, 32});
  const auto g = deformation_grid_picture<float>(zero.view(), 8);
  REQUIRE(g.shape() == Shape<3>{24, 32, 3});
  for (index_t y = 0; y < 24; ++y)
    for (index_t x = 0; x < 32; ++x) {
      const bool line = y % 8 == 0 || x % 8 == 0;
      CHECK(g(y, x, 0) == (line ? 255 : 0));
    }
  Tensor<float, 3> shift(Shape<3>{2, 24, 32});
  for (index_t i = 24 * 32; i < 2 * 24 * 32; ++i) shift.data()[i] = 2.0f;  // dx = +2 columns
  const auto s = deformation_grid_picture<float>(shift.view(), 8, Rgb{0, 0, 255});
  CHECK(s(12, 10, 2) == 255);  // vertical line x = 8 drawn at column 10
  CHECK(s(12, 8, 2) == 0);
  CHECK(s(12, 26, 2) == 255);
  CHECK_THROWS_AS((deformation_grid_picture<float>(TensorView<const float, 3>(zero.data(), Shape<3>{1, 48, 32}))), Error);
  // A real deformation of a phantom writes a valid PNG.
  DeformationOptions<2> o;
  o.max_displacement_vox = 5.0;
  const auto f = random_smooth_field<2>(Shape<2>{64, 64}, o, 2);
  const auto pic = deformation_grid_picture<float>(f.view(), 8);
  const auto dir = temp_dir();
  write_png(dir / "grid.png", pic.view());
  CHECK(read_png_rgb(dir / "grid.png").shape() == Shape<3>{64, 64, 3});
  std::filesystem::remove_all(dir);
}

TEST_CASE("montage: cells, gaps and tile placement") {
  auto a = blank_canvas(10, 12, Rgb{255, 0, 0});
  auto b = blank_canvas(8, 16, Rgb{0, 255, 0});
  auto c = blank_canvas(10, 10, Rgb{0, 0, 255});
  const std::vector<TensorView<const std::uint8_t, 3>> tiles{a.view(), b.view(), c.view()};
  const auto m = montage(tiles, 2, 3, Rgb{7, 7, 7});
  // cells 10 x 16, 2 columns, 2 rows, gap 3: (2·10 + 3) x (2·16 + 3)
  REQUIRE(m.shape() == Shape<3>{23, 35, 3});
  CHECK(pixel(m, 0, 0) == Rgb{255, 0, 0});
  CHECK(pixel(m, 11, 9) == Rgb{255, 0, 0});
  CHECK(pixel(m, 12, 0) == Rgb{7, 7, 7});    // beyond tile a inside its cell
  CHECK(pixel(m, 17, 5) == Rgb{7, 7, 7});    // gap column
  CHECK(pixel(m, 19, 0) == Rgb{0, 255, 0});  // tile b starts at x = 16 + 3
  CHECK(pixel(m, 34, 7) == Rgb{0, 255, 0});
  CHECK(pixel(m, 19, 8) == Rgb{7, 7, 7});
  CHECK(pixel(m, 0, 13) == Rgb{0, 0, 255});  // second row starts at y = 10 + 3
  CHECK(pixel(m, 20, 15) == Rgb{7, 7, 7});   // empty fourth cell
  const auto dir = temp_dir();
  write_png(dir / "montage.png", m.view());
  CHECK(bitwise_equal(read_png_rgb(dir / "montage.png"), m));
  std::filesystem::remove_all(dir);
  CHECK_THROWS_AS(montage(std::span<const TensorView<const std::uint8_t, 3>>{}, 2), Error);
  CHECK_THROWS_AS(montage(tiles, 0), Error);
}

TEST_CASE("volume slices pick the right planes") {
  Tensor<int, 3> v(Shape<3>{2, 3, 4});
  for (index_t i = 0; i < v.size(); ++i) v.data()[i] = int(i);
  const auto ax = volume_slice<int>(v.view(), 0, 1);
  CHECK(ax.shape() == Shape<2>{3, 4});
  CHECK(ax(2, 3) == v(1, 2, 3));
  const auto co = volume_slice<int>(v.view(), 1, 2);
  CHECK(co.shape() == Shape<2>{2, 4});
  CHECK(co(1, 0) == v(1, 2, 0));
  const auto sa = volume_slice<int>(v.view(), 2, 3);
  CHECK(sa.shape() == Shape<2>{2, 3});
  CHECK(sa(0, 1) == v(0, 1, 3));
  CHECK_THROWS_AS((volume_slice<int>(v.view(), 3, 0)), Error);
  CHECK_THROWS_AS((volume_slice<int>(v.view(), 0, 2)), Error);
}
