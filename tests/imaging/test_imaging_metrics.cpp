// Unit tests of rlmed/imaging/{distance_transform,metrics,kmeans}.hpp: hand-computed cases,
// brute-force references written here independently of the library, finite-difference
// gradients of local NCC (double), determinism across thread counts, and rlmed::Error on bad
// inputs.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "rlmed/core/philox.hpp"
#include "rlmed/core/random.hpp"
#include "rlmed/imaging/distance_transform.hpp"
#include "rlmed/imaging/kmeans.hpp"
#include "rlmed/imaging/metrics.hpp"

using namespace rlmed;
using namespace rlmed::imaging;

namespace {

constexpr double kEps = kMetricEpsilon;
constexpr double kInf = std::numeric_limits<double>::infinity();

// Random 0/1 mask with about `p` foreground.
template <std::size_t R>
Tensor<std::uint8_t, R> random_mask(const Shape<R>& shape, double p, std::uint64_t seed) {
  Tensor<std::uint8_t, R> m(shape);
  PhiloxStream rng(seed, 7);
  for (auto& v : m) v = rng.uniform_double() < p ? 1 : 0;
  return m;
}

// Brute-force squared distance from every voxel to the nearest voxel whose state is `target`
// (optionally with a background layer around the image), O(n²).
template <std::size_t R>
std::vector<double> brute_force_sq(const Tensor<std::uint8_t, R>& m, bool target, const std::array<double, R>& sp,
                                   bool outside_target = false) {
  const auto& shape = m.shape();
  const index_t n = m.size();
  auto coords = [&](index_t i) {
    std::array<index_t, R> c{};
    for (std::size_t a = R; a-- > 0;) {
      c[a] = i % shape[a];
      i /= shape[a];
    }
    return c;
  };
  std::vector<double> out(static_cast<std::size_t>(n), kInf);
  for (index_t i = 0; i < n; ++i) {
    const auto ci = coords(i);
    double best = kInf;
    for (index_t j = 0; j < n; ++j) {
      if ((m.data()[j] != 0) != target) continue;
      const auto cj = coords(j);
      double d = 0;
      for (std::size_t a = 0; a < R; ++a) d += (sp[a] * double(ci[a] - cj[a])) * (sp[a] * double(ci[a] - cj[a]));
      best = std::min(best, d);
    }
    if (outside_target)
      for (std::size_t a = 0; a < R; ++a) {
        const double lo = sp[a] * double(ci[a] + 1), hi = sp[a] * double(shape[a] - ci[a]);
        best = std::min({best, lo * lo, hi * hi});
      }
    out[static_cast<std::size_t>(i)] = best;
  }
  return out;
}

template <class T, std::size_t R>
void check_against(const Tensor<T, R>& got, const std::vector<double>& want_sq, double rel) {
  REQUIRE(got.size() == index_t(want_sq.size()));
  for (index_t i = 0; i < got.size(); ++i) {
    const double want = std::sqrt(want_sq[std::size_t(i)]);
    const double g = double(got.data()[i]);
    if (std::isinf(want)) {
      CHECK(std::isinf(g));
    } else {
      INFO("voxel " << i << ": got " << g << ", want " << want);
      CHECK(std::abs(g - want) <= rel * std::max(want, 1e-300));
    }
  }
}

// Brute-force face-connected surface (outside = background when border_bg).
template <std::size_t R>
Tensor<std::uint8_t, R> brute_surface(const Tensor<std::uint8_t, R>& m, bool border_bg) {
  Tensor<std::uint8_t, R> s(m.shape());
  const auto& shape = m.shape();
  for (index_t i = 0; i < m.size(); ++i) {
    if (!m.data()[i]) continue;
    std::array<index_t, R> c{};
    index_t rest = i;
    for (std::size_t a = R; a-- > 0;) {
      c[a] = rest % shape[a];
      rest /= shape[a];
    }
    bool edge = false;
    for (std::size_t a = 0; a < R; ++a)
      for (int d : {-1, 1}) {
        auto nb = c;
        nb[a] += d;
        if (nb[a] < 0 || nb[a] >= shape[a]) {
          edge = edge || border_bg;
          continue;
        }
        index_t j = 0;
        for (std::size_t b = 0; b < R; ++b) j = j * shape[b] + nb[b];
        if (!m.data()[j]) edge = true;
      }
    s.data()[i] = edge;
  }
  return s;
}

}  // namespace

// =============================================================================================
// Distance transform
// =============================================================================================

TEST_CASE("EDT of a single background voxel gives the exact anisotropic distances (2D and 3D)") {
  Tensor<std::uint8_t, 2> m2(Shape<2>{7, 9}, 1);
  m2(3, 4) = 0;
  const auto d2 = distance_to_background<double>(m2, {2.0, 0.5});
  for (index_t y = 0; y < 7; ++y)
    for (index_t x = 0; x < 9; ++x) {
      const double want = std::sqrt(4.0 * double((y - 3) * (y - 3)) + 0.25 * double((x - 4) * (x - 4)));
      CHECK(d2(y, x) == doctest::Approx(want).epsilon(1e-14));
    }
  CHECK(d2(3, 4) == 0.0);

  Tensor<std::uint8_t, 3> m3(Shape<3>{5, 6, 7}, 1);
  m3(1, 4, 2) = 0;
  const auto d3 = distance_to_background<float>(m3, {1.5, 1.0, 0.7});
  for (index_t z = 0; z < 5; ++z)
    for (index_t y = 0; y < 6; ++y)
      for (index_t x = 0; x < 7; ++x) {
        const double want = std::sqrt(2.25 * double((z - 1) * (z - 1)) + double((y - 4) * (y - 4)) +
                                      0.49 * double((x - 2) * (x - 2)));
        CHECK(double(d3(z, y, x)) == doctest::Approx(want).epsilon(1e-6));
      }
}

TEST_CASE("EDT equals a brute-force search on random masks, to background and to foreground") {
  const auto m2 = random_mask(Shape<2>{15, 17}, 0.8, 1);
  const std::array<double, 2> s2{1.3, 0.6};
  check_against(distance_to_background<double>(m2, s2), brute_force_sq(m2, false, s2), 1e-13);
  check_against(distance_to_foreground<double>(m2, s2), brute_force_sq(m2, true, s2), 1e-13);
  check_against(distance_to_background<float>(m2, s2), brute_force_sq(m2, false, s2), 1e-6);

  const auto m3 = random_mask(Shape<3>{7, 8, 9}, 0.9, 2);
  const std::array<double, 3> s3{2.5, 1.0, 0.8};
  check_against(distance_to_background<double>(m3, s3), brute_force_sq(m3, false, s3), 1e-13);
  check_against(distance_to_foreground<double>(m3, s3), brute_force_sq(m3, true, s3), 1e-13);

  // Sparse foreground: long stretches without sites along every axis.
  const auto sparse = random_mask(Shape<3>{6, 9, 5}, 0.03, 3);
  check_against(distance_to_foreground<double>(sparse, s3), brute_force_sq(sparse, true, s3), 1e-13);

  // 1D.
  const auto m1 = random_mask(Shape<1>{40}, 0.85, 4);
  check_against(distance_to_background<double>(m1, {0.5}), brute_force_sq(m1, false, std::array<double, 1>{0.5}), 1e-13);
}

TEST_CASE("EDT with the outside as background equals a brute force with a background frame") {
  const auto m = random_mask(Shape<2>{11, 13}, 0.85, 5);
  const std::array<double, 2> s{0.7, 1.9};
  EdtOptions o;
  o.outside_is_background = true;
  check_against(distance_to_background<double>(m, s, o), brute_force_sq(m, false, s, true), 1e-13);
  const auto m3 = random_mask(Shape<3>{6, 7, 5}, 0.95, 6);
  const std::array<double, 3> s3{1.0, 2.0, 0.5};
  check_against(distance_to_background<double>(m3, s3, o), brute_force_sq(m3, false, s3, true), 1e-13);
}

TEST_CASE("EDT of all-background and all-foreground masks (documented behaviour)") {
  const Tensor<float, 2> zeros(Shape<2>{3, 4});
  const auto d0 = distance_to_background<double>(zeros);
  for (double v : d0) CHECK(v == 0.0);
  const auto f0 = distance_to_foreground<double>(zeros);
  for (double v : f0) CHECK(std::isinf(v));

  const Tensor<int, 2> ones(Shape<2>{3, 4}, 1);
  for (double v : distance_to_background<double>(ones)) CHECK(std::isinf(v));
  EdtOptions o;
  o.outside_is_background = true;
  const auto framed = distance_to_background<double>(ones, {2.0, 1.0}, o);
  for (index_t y = 0; y < 3; ++y)
    for (index_t x = 0; x < 4; ++x) {
      const double want = std::min({2.0 * double(y + 1), 2.0 * double(3 - y), double(x + 1), double(4 - x)});
      CHECK(framed(y, x) == want);
    }
}

TEST_CASE("EDT is bit-identical for 1 and 2 threads and reuses its workspace") {
  const auto m = random_mask(Shape<3>{24, 30, 33}, 0.9, 8);
  const int threads = max_threads();
  set_num_threads(1);
  const auto a = distance_to_background<float>(m, {1.2, 0.9, 0.4});
  set_num_threads(2);
  const auto b = distance_to_background<float>(m, {1.2, 0.9, 0.4});
  set_num_threads(threads);
  CHECK(bitwise_equal(a, b));

  EdtWorkspace ws;
  Tensor<float, 3> out(m.shape());
  distance_to_background_into<float, 3>(out.view(), m, {1.2, 0.9, 0.4}, ws);
  const auto* squared = ws.squared.data();
  const auto* tiles = ws.tiles.data();
  distance_to_background_into<float, 3>(out.view(), m, {1.2, 0.9, 0.4}, ws);
  CHECK(ws.squared.data() == squared);
  CHECK(ws.tiles.data() == tiles);
  CHECK(bitwise_equal(out, a));
}

TEST_CASE("EDT Image overloads reorder the (x, y) spacing to tensor axes") {
  Image<std::uint8_t, 2> img(Tensor<std::uint8_t, 2>(Shape<2>{5, 6}, 1), Vec<2>{0.5, 2.0});  // x: 0.5, y: 2
  img.voxels(0, 0) = 0;
  const auto d = distance_to_background<double>(img);
  CHECK(d.voxels(1, 0) == doctest::Approx(2.0));  // one row down = y = 2 mm
  CHECK(d.voxels(0, 1) == doctest::Approx(0.5));  // one column right = x = 0.5 mm
  CHECK(same_geometry(d, img));
  const auto f = distance_to_foreground<double>(img);
  CHECK(f.voxels(0, 0) == doctest::Approx(0.5));
}

TEST_CASE("EDT rejects bad inputs") {
  Tensor<float, 2> m(Shape<2>{4, 4}, 1.0f);
  m(1, 1) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(distance_to_background<float>(m), Error);
  const Tensor<std::uint8_t, 2> ok(Shape<2>{4, 4});
  CHECK_THROWS_AS(distance_to_background<float>(ok, {0.0, 1.0}), Error);
  CHECK_THROWS_AS(distance_to_background<float>(ok, {1.0, -1.0}), Error);
  CHECK_THROWS_AS(distance_to_background<float>(ok, {1.0, std::nan("")}), Error);
  EdtWorkspace ws;
  Tensor<float, 2> wrong(Shape<2>{4, 5});
  CHECK_THROWS_AS((distance_to_background_into<float, 2>(wrong.view(), ok, {1.0, 1.0}, ws)), Error);
  const Tensor<std::uint8_t, 2> empty(Shape<2>{0, 3});
  CHECK_THROWS_AS(distance_to_background<float>(empty), Error);
}

// =============================================================================================
// Overlap
// =============================================================================================

TEST_CASE("confusion counts and the four smoothed scores on a hand-computed case, any mask type") {
  const Tensor<std::uint8_t, 1> p8 = [] {
    Tensor<std::uint8_t, 1> t(Shape<1>{5});
    const std::uint8_t v[] = {1, 3, 0, 0, 1};
    std::copy(v, v + 5, t.begin());
    return t;
  }();
  Tensor<float, 1> lf(Shape<1>{5});
  const float lv[] = {0.5f, 0.0f, -2.0f, 0.0f, 1.0f};
  std::copy(lv, lv + 5, lf.begin());
  const auto c = confusion_counts(p8, lf);
  CHECK(c == ConfusionCounts{2, 1, 1, 1});
  CHECK(c.label_count() == 3);
  CHECK(c.prediction_count() == 3);
  const auto s = overlap_scores(p8, lf);
  CHECK(s.dice == doctest::Approx((4 + kEps) / (6 + kEps)).epsilon(1e-15));
  CHECK(s.iou == doctest::Approx((2 + kEps) / (4 + kEps)).epsilon(1e-15));
  CHECK(s.ppv == doctest::Approx((2 + kEps) / (3 + kEps)).epsilon(1e-15));
  CHECK(s.sensitivity == doctest::Approx((2 + kEps) / (3 + kEps)).epsilon(1e-15));

  Tensor<bool, 1> pb(Shape<1>{5});
  pb(0) = pb(1) = pb(4) = true;
  CHECK(confusion_counts(pb, lf) == c);
  Tensor<int, 1> pi(Shape<1>{5});
  pi(0) = 1;
  pi(1) = -1;
  pi(4) = 7;
  CHECK(confusion_counts(pi.view(), lf.view()) == c);

  // FP != FN so PPV and sensitivity differ.
  const ConfusionCounts asym{3, 1, 4, 10};
  CHECK(ppv(asym) == doctest::Approx((3 + kEps) / (4 + kEps)).epsilon(1e-15));
  CHECK(sensitivity(asym) == doctest::Approx((3 + kEps) / (7 + kEps)).epsilon(1e-15));
  CHECK(dice(asym) == doctest::Approx((6 + kEps) / (11 + kEps)).epsilon(1e-15));
  CHECK(iou(asym) == doctest::Approx((3 + kEps) / (8 + kEps)).epsilon(1e-15));
}

TEST_CASE("overlap of empty, identical and disjoint masks; masks touching the border") {
  const Tensor<std::uint8_t, 2> empty(Shape<2>{6, 5});
  auto s = overlap_scores(empty, empty);
  CHECK(s.dice == 1.0);
  CHECK(s.iou == 1.0);
  CHECK(s.ppv == 1.0);
  CHECK(s.sensitivity == 1.0);

  const auto m = random_mask(Shape<2>{6, 5}, 0.5, 11);
  index_t t = 0;
  for (auto v : m) t += v;
  REQUIRE(t > 0);
  s = overlap_scores(m, m);
  CHECK(s.dice == 1.0);
  CHECK(s.iou == 1.0);

  s = overlap_scores(empty, m);  // nothing predicted
  CHECK(s.dice == doctest::Approx(kEps / (double(t) + kEps)).epsilon(1e-15));
  CHECK(s.sensitivity == doctest::Approx(kEps / (double(t) + kEps)).epsilon(1e-15));
  CHECK(s.ppv == 1.0);  // (0 + ε) / (0 + 0 + ε)

  Tensor<std::uint8_t, 2> inverse(m.shape());
  for (index_t i = 0; i < m.size(); ++i) inverse.data()[i] = !m.data()[i];
  s = overlap_scores(m, inverse);
  CHECK(s.dice == doctest::Approx(kEps / (30 + kEps)).epsilon(1e-15));
  CHECK(s.iou == doctest::Approx(kEps / (30 + kEps)).epsilon(1e-15));

  // A full-image mask (touches every border) against a half.
  const Tensor<std::uint8_t, 2> full(Shape<2>{4, 4}, 1);
  Tensor<std::uint8_t, 2> half(Shape<2>{4, 4});
  for (index_t x = 0; x < 4; ++x) half(0, x) = half(1, x) = 1;
  CHECK(dice(full, half) == doctest::Approx((16 + kEps) / (24 + kEps)).epsilon(1e-15));
}

TEST_CASE("multi-label Dice with every absent-label policy") {
  // pred: labels 1 (3 voxels), 2 (2); label: 1 (2 voxels, 1 shared), 2 (2, both shared), 4 (1).
  Tensor<std::int32_t, 2> pred(Shape<2>{2, 5}), lab(Shape<2>{2, 5});
  const std::int32_t pv[] = {1, 1, 1, 2, 2, 0, 0, 0, 0, 0};
  const std::int32_t lv[] = {1, 0, 0, 2, 2, 1, 0, 0, 4, 0};
  std::copy(pv, pv + 10, pred.begin());
  std::copy(lv, lv + 10, lab.begin());
  const double d1 = (2 * 1 + kEps) / (3 + 2 + kEps), d2 = (2 * 2 + kEps) / (2 + 2 + kEps), d4 = kEps / (1 + kEps);

  auto r = multi_label_dice(pred, lab, {4, 1, 3, 2});
  REQUIRE(r.dice.size() == 4);
  CHECK(r.labels == std::vector<std::int64_t>{4, 1, 3, 2});
  CHECK(r.dice[0] == doctest::Approx(d4).epsilon(1e-15));
  CHECK(r.dice[1] == doctest::Approx(d1).epsilon(1e-15));
  CHECK(std::isnan(r.dice[2]));  // label 3 is in neither map
  CHECK(r.dice[3] == doctest::Approx(d2).epsilon(1e-15));
  CHECK(r.mean == doctest::Approx((d1 + d2 + d4) / 3).epsilon(1e-15));

  r = multi_label_dice(pred, lab, {4, 1, 3, 2}, AbsentLabel::skip);
  CHECK(r.labels == std::vector<std::int64_t>{4, 1, 2});
  CHECK(r.mean == doctest::Approx((d1 + d2 + d4) / 3).epsilon(1e-15));
  r = multi_label_dice(pred, lab, {4, 1, 3, 2}, AbsentLabel::smoothed);
  CHECK(r.dice[2] == 1.0);
  CHECK(r.mean == doctest::Approx((d1 + d2 + d4 + 1.0) / 4).epsilon(1e-15));
  r = multi_label_dice(pred, lab, {4, 1, 3, 2}, AbsentLabel::zero);
  CHECK(r.dice[2] == 0.0);
  CHECK(r.mean == doctest::Approx((d1 + d2 + d4) / 4).epsilon(1e-15));

  r = multi_label_dice(pred, lab);  // every nonzero label present: 1, 2, 4
  CHECK(r.labels == std::vector<std::int64_t>{1, 2, 4});
  CHECK(r.dice[2] == doctest::Approx(d4).epsilon(1e-15));

  r = multi_label_dice(pred, lab, {3});
  CHECK(std::isnan(r.mean));
  CHECK_THROWS_AS(multi_label_dice(pred, lab, {1, 1}), Error);
  CHECK_THROWS_AS(multi_label_dice(pred, lab, std::vector<std::int64_t>{}), Error);
  const Tensor<std::int32_t, 2> zeros(Shape<2>{2, 5});
  CHECK_THROWS_AS(multi_label_dice(zeros, zeros), Error);
  Tensor<float, 2> frac(Shape<2>{2, 5});
  frac(0, 0) = 0.5f;
  CHECK_THROWS_AS(multi_label_dice(frac, frac), Error);
}

TEST_CASE("boundary IoU on hand-computed bands, border handling and default width") {
  CHECK(default_boundary_band_width(Shape<2>{100, 100}) == 3.0);  // round(0.02 · 141.4)
  CHECK(default_boundary_band_width(Shape<2>{10, 10}) == 1.0);
  CHECK(default_boundary_band_width(Shape<3>{200, 200, 200}) == 7.0);  // round(6.93)

  Tensor<std::uint8_t, 2> p(Shape<2>{6, 7}), l(Shape<2>{6, 7});
  for (index_t y = 1; y <= 4; ++y)
    for (index_t x = 1; x <= 4; ++x) p(y, x) = 1;  // 4×4: band of 12
  for (index_t y = 1; y <= 4; ++y)
    for (index_t x = 1; x <= 5; ++x) l(y, x) = 1;  // 4×5: band of 14
  BoundaryIouOptions o;
  o.band_width_vox = 1;
  CHECK(boundary_iou(p, l, o) == doctest::Approx((10 + kEps) / (16 + kEps)).epsilon(1e-15));
  CHECK(boundary_iou(p, p, o) == 1.0);
  // Width 2 covers both masks completely: plain IoU 16/20.
  o.band_width_vox = 2;
  CHECK(boundary_iou(p, l, o) == doctest::Approx((16 + kEps) / (20 + kEps)).epsilon(1e-15));

  // Masks touching the top border of a 5×5 image.
  Tensor<std::uint8_t, 2> a(Shape<2>{5, 5}), b(Shape<2>{5, 5});
  for (index_t x = 0; x < 5; ++x) {
    a(0, x) = a(1, x) = a(2, x) = 1;
    b(0, x) = b(1, x) = 1;
  }
  o.band_width_vox = 1;
  CHECK(boundary_iou(a, b, o) == doctest::Approx((7 + kEps) / (15 + kEps)).epsilon(1e-15));
  o.border_is_background = false;
  CHECK(boundary_iou(a, b, o) == doctest::Approx(kEps / (10 + kEps)).epsilon(1e-15));

  Tensor<std::uint8_t, 2> band(Shape<2>{5, 5});
  EdtWorkspace ws;
  boundary_band_into<2>(band.view(), a, 1.0, true, ws);
  index_t count = 0;
  for (auto v : band) count += v;
  CHECK(count == 12);
  CHECK(band(1, 0) == 1);
  CHECK(band(1, 2) == 0);

  // A diamond |x| + |y| <= 3 (25 voxels): the reference's 3×3 erosion keeps only |x| + |y| <= 1,
  // so the width-1 band holds 20 voxels (a Euclidean band would hold 12).
  Tensor<std::uint8_t, 2> diamond(Shape<2>{9, 9}), diamond_band(Shape<2>{9, 9});
  for (index_t y = 0; y < 9; ++y)
    for (index_t x = 0; x < 9; ++x) diamond(y, x) = std::abs(y - 4) + std::abs(x - 4) <= 3 ? 1 : 0;
  boundary_band_into<2>(diamond_band.view(), diamond, 1.0, true, ws);
  index_t diamond_count = 0;
  for (auto v : diamond_band) diamond_count += v;
  CHECK(diamond_count == 20);
  CHECK(diamond_band(4, 4) == 0);
  CHECK(diamond_band(3, 3) == 1);
  boundary_band_into<2>(diamond_band.view(), diamond, 0.5, true, ws);
  for (auto v : diamond_band) CHECK(v == 0);

  const Tensor<std::uint8_t, 2> empty(Shape<2>{5, 5});
  CHECK(boundary_iou(empty, empty) == 1.0);
  o.band_width_vox = -1;
  CHECK_THROWS_AS(boundary_iou(a, b, o), Error);
}

// =============================================================================================
// Surface distances
// =============================================================================================

TEST_CASE("percentile_linear matches numpy's default") {
  CHECK(percentile_linear({4, 1, 3, 2}, 95) == doctest::Approx(3.85).epsilon(1e-15));
  CHECK(percentile_linear({4, 1, 3, 2}, 50) == doctest::Approx(2.5).epsilon(1e-15));
  CHECK(percentile_linear({4, 1, 3, 2}, 0) == 1.0);
  CHECK(percentile_linear({4, 1, 3, 2}, 100) == 4.0);
  CHECK(percentile_linear({5}, 95) == 5.0);
  CHECK_THROWS_AS(percentile_linear({}, 95), Error);
  CHECK_THROWS_AS(percentile_linear({1, 2}, 101), Error);
}

TEST_CASE("HD, HD95 and mean surface distance on a hand-computed line") {
  Tensor<std::uint8_t, 2> p(Shape<2>{1, 7}), l(Shape<2>{1, 7});
  for (index_t x = 0; x < 3; ++x) p(0, x) = 1;
  for (index_t x = 0; x < 5; ++x) l(0, x) = 1;
  // Border counts as background: every voxel is a surface voxel.
  // p→l: 0 0 0; l→p: 0 0 0 1 2 (spacing 1) → sorted 0×6, 1, 2.
  auto s = surface_distance_summary(p, l);
  CHECK(s.hausdorff == 2.0);
  CHECK(s.percentile == doctest::Approx(1.65).epsilon(1e-14));  // index 7 · 0.95 = 6.65, between 1 and 2
  CHECK(s.mean == doctest::Approx(3.0 / 8.0).epsilon(1e-15));
  CHECK(hd95(p, l) == doctest::Approx(1.65).epsilon(1e-14));
  CHECK(hausdorff_distance(p, l, {1.0, 0.5}) == 1.0);  // x spacing 0.5 mm
  // Border not background: surfaces are x = 2 and x = 4 only.
  SurfaceDistanceOptions o;
  o.border_is_background = false;
  s = surface_distance_summary(p, l, {1.0, 1.0}, 95, o);
  CHECK(s.hausdorff == 2.0);
  CHECK(s.percentile == 2.0);
  CHECK(s.mean == 2.0);
  const auto d = surface_distances(p, l, {1.0, 1.0}, o);
  CHECK(d.prediction_to_label == std::vector<double>{2.0});
  CHECK(d.label_to_prediction == std::vector<double>{2.0});
}

TEST_CASE("surface distances equal a brute force on random anisotropic 3D masks") {
  const auto p = random_mask(Shape<3>{6, 7, 8}, 0.5, 21);
  const auto l = random_mask(Shape<3>{6, 7, 8}, 0.4, 22);
  const std::array<double, 3> sp{2.0, 0.8, 1.1};
  const auto sp_ = brute_surface(p, true), sl_ = brute_surface(l, true);
  CHECK(bitwise_equal(surface_voxels(p), sp_));
  CHECK(bitwise_equal(surface_voxels(l, false), brute_surface(l, false)));
  const auto to_l = brute_force_sq(sl_, true, sp), to_p = brute_force_sq(sp_, true, sp);
  std::vector<double> all;
  double max = 0, sum = 0;
  for (index_t i = 0; i < p.size(); ++i) {
    if (sp_.data()[i]) all.push_back(std::sqrt(to_l[std::size_t(i)]));
  }
  for (index_t i = 0; i < p.size(); ++i) {
    if (sl_.data()[i]) all.push_back(std::sqrt(to_p[std::size_t(i)]));
  }
  for (double v : all) {
    max = std::max(max, v);
    sum += v;
  }
  std::sort(all.begin(), all.end());
  const double pos = 0.95 * double(all.size() - 1);
  const auto lo = std::size_t(pos);
  const double want95 = all[lo] + (all[std::min(lo + 1, all.size() - 1)] - all[lo]) * (pos - double(lo));
  const auto s = surface_distance_summary(p, l, sp);
  CHECK(s.hausdorff == doctest::Approx(max).epsilon(1e-14));
  CHECK(s.percentile == doctest::Approx(want95).epsilon(1e-12));
  CHECK(s.mean == doctest::Approx(sum / double(all.size())).epsilon(1e-12));

  Image<std::uint8_t, 3> pi(p, Vec<3>{1.1, 0.8, 2.0}), li(l, Vec<3>{1.1, 0.8, 2.0});  // (x, y, z)
  CHECK(hd95(pi, li) == doctest::Approx(want95).epsilon(1e-12));
  Image<std::uint8_t, 3> other(l, Vec<3>{1.0, 0.8, 2.0});
  CHECK_THROWS_AS(hd95(pi, other), Error);
}

TEST_CASE("surface distances of empty masks (documented values)") {
  const Tensor<std::uint8_t, 2> empty(Shape<2>{5, 5});
  Tensor<std::uint8_t, 2> m(Shape<2>{5, 5});
  m(2, 2) = 1;
  auto s = surface_distance_summary(empty, empty);
  CHECK(s.hausdorff == 0.0);
  CHECK(s.percentile == 0.0);
  CHECK(s.mean == 0.0);
  CHECK(std::isinf(hd95(empty, m)));
  CHECK(std::isinf(hausdorff_distance(m, empty)));
  SurfaceDistanceOptions o;
  o.empty_distance = 123.0;
  CHECK(hd95(m, empty, {1.0, 1.0}, o) == 123.0);
  CHECK(surface_distances(m, empty).label_empty);
  CHECK(hd95(m, m) == 0.0);
}

// =============================================================================================
// Intensity similarity
// =============================================================================================

TEST_CASE("MSE and global NCC") {
  Tensor<double, 1> a(Shape<1>{3}), b(Shape<1>{3});
  a(0) = 1;
  a(1) = 2;
  a(2) = 3;
  b(0) = 1;
  CHECK(mean_squared_error(a, b) == doctest::Approx(13.0 / 3.0).epsilon(1e-15));

  Tensor<float, 2> x(Shape<2>{9, 8}), y(Shape<2>{9, 8}), z(Shape<2>{9, 8}), c(Shape<2>{9, 8}, 4.0f);
  PhiloxStream rng(3, 1);
  fill_uniform(x.view(), rng);
  for (index_t i = 0; i < x.size(); ++i) {
    y.data()[i] = 2.0f * x.data()[i] + 3.0f;
    z.data()[i] = -x.data()[i];
  }
  CHECK(global_ncc(x, y) == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(global_ncc(x, z) == doctest::Approx(-1.0).epsilon(1e-6));
  CHECK(global_ncc(x, c) == 0.0);
  Tensor<float, 2> tenth(Shape<2>{9, 8}, 0.1f);  // a mean that does not round to 0.1f exactly
  CHECK(global_ncc(tenth, x) == 0.0);
  fill_uniform(y.view(), rng);
  const double r = global_ncc(x, y);
  CHECK(std::abs(r) < 0.5);
  CHECK(std::abs(r) > 0.0);

  CHECK_THROWS_AS(mean_squared_error(x, Tensor<float, 2>(Shape<2>{8, 9})), Error);
  x(0, 0) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(mean_squared_error(x, y), Error);
}

TEST_CASE("local NCC on a hand-computed 1D case") {
  Tensor<double, 1> i(Shape<1>{3}), j(Shape<1>{3});
  i(0) = 1;
  i(1) = 2;
  i(2) = 4;
  j(0) = 2;
  j(1) = 1;
  j(2) = 3;
  LocalNccOptions<1> o;
  o.window = {3};
  const double cc0 = 1.0 / (4.0 + 1e-5), cc1 = 4.0 / (28.0 / 3.0 + 1e-5), cc2 = 36.0 / (112.0 / 3.0 + 1e-5);
  CHECK(local_ncc(i, j, o) == doctest::Approx((cc0 + cc1 + cc2) / 3.0).epsilon(1e-13));
}

TEST_CASE("local NCC of an image with itself (and a scaled copy) is 1") {
  Tensor<float, 2> a(Shape<2>{20, 18}), b(Shape<2>{20, 18});
  PhiloxStream rng(5, 0);
  fill_uniform(a.view(), rng, 10.0f, 20.0f);
  for (index_t k = 0; k < a.size(); ++k) b.data()[k] = 3.0f * a.data()[k];
  CHECK(local_ncc(a, a) == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(local_ncc(a, b) == doctest::Approx(1.0).epsilon(1e-6));
  // An offset is not invisible: the zero padding does not move with it (VoxelMorph's behaviour).
  for (index_t k = 0; k < a.size(); ++k) b.data()[k] = a.data()[k] - 5.0f;
  CHECK(local_ncc(a, b) < 0.9999);
  Tensor<double, 3> v(Shape<3>{8, 9, 10});
  fill_uniform(v.view(), rng);
  LocalNccOptions<3> o;
  o.window = {3, 5, 3};
  CHECK(local_ncc(v, v, o) == doctest::Approx(1.0).epsilon(1e-3));  // small windows: var ~ 0.3
  // Unrelated noise correlates weakly.
  Tensor<double, 3> w(v.shape());
  fill_uniform(w.view(), rng);
  CHECK(local_ncc(v, w, o) < 0.3);
}

namespace {

template <std::size_t R>
double ncc_gradient_relative_error(const Shape<R>& shape, const LocalNccOptions<R>& o, std::uint64_t seed) {
  Tensor<double, R> i(shape), j(shape);
  PhiloxStream rng(seed, 0);
  fill_uniform(i.view(), rng);
  fill_uniform(j.view(), rng);
  for (index_t k = 0; k < i.size(); ++k) j.data()[k] = 0.6 * i.data()[k] + 0.4 * j.data()[k];  // correlated
  Tensor<double, R> grad(shape);
  LocalNccWorkspace ws;
  const double v = local_ncc_with_gradient_into<double, R>(grad.view(), i, j, o, ws);
  CHECK(v == doctest::Approx(local_ncc(i, j, o)).epsilon(1e-15));
  const double h = 1e-5;
  double num = 0, den = 0;
  for (index_t k = 0; k < j.size(); ++k) {
    const double keep = j.data()[k];
    j.data()[k] = keep + h;
    const double up = local_ncc(i, j, o, ws);
    j.data()[k] = keep - h;
    const double down = local_ncc(i, j, o, ws);
    j.data()[k] = keep;
    const double fd = (up - down) / (2 * h);
    num += (fd - grad.data()[k]) * (fd - grad.data()[k]);
    den += fd * fd;
  }
  return std::sqrt(num / den);
}

}  // namespace

TEST_CASE("gradcheck: local NCC gradient w.r.t. the warped image, 2D and 3D (double)") {
  LocalNccOptions<2> o2;
  o2.window = {5, 5};
  const double e2 = ncc_gradient_relative_error(Shape<2>{13, 11}, o2, 1);
  INFO("2D relative error " << e2);
  CHECK(e2 < 1e-6);
  LocalNccOptions<2> o9;  // VoxelMorph's 9×9, window larger than parts of the image
  const double e9 = ncc_gradient_relative_error(Shape<2>{12, 10}, o9, 2);
  INFO("2D 9x9 relative error " << e9);
  CHECK(e9 < 1e-6);
  LocalNccOptions<3> o3;
  o3.window = {3, 5, 3};
  const double e3 = ncc_gradient_relative_error(Shape<3>{6, 7, 5}, o3, 3);
  INFO("3D relative error " << e3);
  CHECK(e3 < 1e-6);
}

TEST_CASE("batched local NCC is the mean over planes; its gradient matches the per-plane one") {
  Tensor<double, 4> fixed(Shape<4>{2, 1, 9, 8}), warped(Shape<4>{2, 1, 9, 8});
  PhiloxStream rng(9, 0);
  fill_uniform(fixed.view(), rng);
  fill_uniform(warped.view(), rng);
  LocalNccOptions<2> o;
  o.window = {3, 3};
  Tensor<double, 4> grad(fixed.shape());
  LocalNccWorkspace ws;
  const double v = local_ncc_batched_with_gradient_into<double, 4>(grad.view(), fixed, warped, o, ws);
  CHECK(v == doctest::Approx(local_ncc_batched(fixed, warped, o, ws)).epsilon(1e-15));
  double want = 0;
  for (index_t b = 0; b < 2; ++b) {
    const auto [vb, gb] = local_ncc_with_gradient(fixed[b][0], warped[b][0], o);
    want += vb / 2;
    for (index_t k = 0; k < gb.size(); ++k) CHECK(grad[b][0].data()[k] == doctest::Approx(gb.data()[k] / 2).epsilon(1e-14));
  }
  CHECK(v == doctest::Approx(want).epsilon(1e-14));
}

TEST_CASE("local NCC is bit-identical across thread counts and rejects bad inputs") {
  Tensor<float, 3> a(Shape<3>{20, 21, 22}), b(Shape<3>{20, 21, 22});
  PhiloxStream rng(4, 0);
  fill_uniform(a.view(), rng);
  fill_uniform(b.view(), rng);
  const int threads = max_threads();
  set_num_threads(1);
  const auto [v1, g1] = local_ncc_with_gradient(a, b);
  set_num_threads(2);
  const auto [v2, g2] = local_ncc_with_gradient(a, b);
  set_num_threads(threads);
  CHECK(v1 == v2);
  CHECK(bitwise_equal(g1, g2));

  LocalNccOptions<3> even;
  even.window = {9, 8, 9};
  CHECK_THROWS_AS(local_ncc(a, b, even), Error);
  LocalNccOptions<3> no_eps;
  no_eps.epsilon = 0;
  CHECK_THROWS_AS(local_ncc(a, b, no_eps), Error);
  CHECK_THROWS_AS(local_ncc(a, Tensor<float, 3>(Shape<3>{20, 21, 21})), Error);
  b(3, 3, 3) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(local_ncc(a, b), Error);
  Tensor<float, 3> g(Shape<3>{1, 2, 3});
  LocalNccWorkspace ws;
  CHECK_THROWS_AS((local_ncc_with_gradient_into<float, 3>(g.view(), a, a, LocalNccOptions<3>{}, ws)), Error);
}

// =============================================================================================
// Geometric errors
// =============================================================================================

TEST_CASE("TRE in mm and from voxel indices through image geometry") {
  const std::vector<Vec<3>> a{{0, 0, 0}, {1, 1, 1}}, b{{3, 4, 0}, {1, 1, 1}};
  const auto t = target_registration_error(a, b);
  CHECK(t.per_point_mm == std::vector<double>{5.0, 0.0});
  CHECK(t.mean_mm == 2.5);
  CHECK(t.std_mm == 2.5);
  CHECK(t.max_mm == 5.0);
  CHECK(t.median_mm == 2.5);

  // Image with spacing (2, 1, 3) mm, origin (10, 0, 0), x and y axes swapped in the world.
  Mat<3> dir{0, 1, 0, 1, 0, 0, 0, 0, 1};
  Image<float, 3> img(Tensor<float, 3>(Shape<3>{2, 2, 2}), Vec<3>{2, 1, 3}, Vec<3>{10, 0, 0}, dir);
  // index (1, 0, 0) -> x-step 2 mm along world y; index (0, 0, 1) -> 3 mm along world z.
  const auto ti = target_registration_error(img, {{1, 0, 0}}, {{0, 0, 1}});
  CHECK(ti.mean_mm == doctest::Approx(std::sqrt(4.0 + 9.0)).epsilon(1e-15));
  Image<float, 3> moved = img;
  moved.origin_mm = {10, 0, 4};
  const auto t2 = target_registration_error(img, {{0, 0, 0}}, moved, {{0, 0, 0}});
  CHECK(t2.mean_mm == doctest::Approx(4.0).epsilon(1e-15));

  CHECK_THROWS_AS(target_registration_error(a, std::vector<Vec<3>>{{0, 0, 0}}), Error);
  CHECK_THROWS_AS(target_registration_error(std::vector<Vec<3>>{}, std::vector<Vec<3>>{}), Error);
  CHECK_THROWS_AS(target_registration_error(std::vector<Vec<2>>{{0, std::nan("")}}, std::vector<Vec<2>>{{0, 0}}), Error);
}

TEST_CASE("plane angle and offset errors are orientation-invariant") {
  const Plane<3> p{{0, 0, 1}, 5};
  const Plane<3> q{{0, 0, -2}, -14};  // z = 7 written with a flipped, unnormalised normal
  CHECK(plane_angle_error_deg(p, q) == doctest::Approx(0.0));
  CHECK(plane_offset_error_mm(p, q) == doctest::Approx(2.0).epsilon(1e-15));
  CHECK(plane_angle_error_deg(p, Plane<3>{{0, 1, 1}, 0}) == doctest::Approx(45.0).epsilon(1e-13));
  CHECK(plane_angle_error_deg(p, Plane<3>{{0, 1, -1}, 0}) == doctest::Approx(45.0).epsilon(1e-13));
  CHECK(plane_angle_error_deg(p, Plane<3>{{1, 0, 0}, 0}) == doctest::Approx(90.0).epsilon(1e-13));
  CHECK(plane_angle_error_deg(Plane<2>{{1, 0}, 0}, Plane<2>{{1, std::sqrt(3.0)}, 0}) == doctest::Approx(60.0).epsilon(1e-13));

  const auto t = plane_through_points({0, 0, 3}, {1, 0, 3}, {0, 1, 3});
  CHECK(plane_angle_error_deg(t, p) == doctest::Approx(0.0));
  CHECK(plane_offset_error_mm(t, p) == doctest::Approx(2.0).epsilon(1e-15));
  CHECK_THROWS_AS(plane_through_points({0, 0, 0}, {1, 1, 1}, {2, 2, 2}), Error);
  CHECK_THROWS_AS(plane_angle_error_deg(p, Plane<3>{{0, 0, 0}, 1}), Error);
}

TEST_CASE("axis-aligned box IoU in 2D and 3D") {
  CHECK(box_iou(Box<2>{{0, 0}, {2, 2}}, Box<2>{{1, 1}, {3, 3}}) == doctest::Approx(1.0 / 7.0).epsilon(1e-15));
  CHECK(box_iou(Box<3>{{0, 0, 0}, {1, 1, 1}}, Box<3>{{0.5, 0, 0}, {1.5, 1, 1}}) == doctest::Approx(1.0 / 3.0).epsilon(1e-15));
  CHECK(box_iou(Box<3>{{0, 0, 0}, {1, 1, 1}}, Box<3>{{2, 0, 0}, {3, 1, 1}}) == 0.0);
  CHECK(box_iou(Box<2>{{0, 0}, {4, 4}}, Box<2>{{1, 1}, {2, 2}}) == doctest::Approx(1.0 / 16.0).epsilon(1e-15));
  CHECK(box_iou(Box<2>{{1, 1}, {1, 1}}, Box<2>{{1, 1}, {1, 1}}) == 1.0);
  CHECK(box_iou(Box<2>{{1, 1}, {1, 1}}, Box<2>{{2, 1}, {2, 1}}) == 0.0);
  CHECK_THROWS_AS(box_iou(Box<2>{{1, 0}, {0, 1}}, Box<2>{{0, 0}, {1, 1}}), Error);
}

// =============================================================================================
// k-means
// =============================================================================================

namespace {
// 40×40 image of three intensity populations (means 100, 10, 50 ± 1) at random positions.
struct ThreeClusters {
  Tensor<float, 2> image{Shape<2>{40, 40}};
  Tensor<std::uint8_t, 2> truth{Shape<2>{40, 40}};  // 0 = darkest
  ThreeClusters() {
    PhiloxStream rng(77, 3);
    const float means[] = {100.0f, 10.0f, 50.0f};
    const std::uint8_t rank[] = {2, 0, 1};
    for (index_t i = 0; i < image.size(); ++i) {
      const int c = int(rng.uniform_int(3));
      image.data()[i] = means[c] + rng.normal();
      truth.data()[i] = rank[c];
    }
  }
};
}  // namespace

TEST_CASE("k-means recovers three well-separated intensity clusters, darkest first") {
  const ThreeClusters data;
  PhiloxStream rng(2024, 0);
  const auto r = kmeans_intensities(data.image, KMeansOptions{}, rng);
  REQUIRE(r.centres().size() == 3);
  CHECK(r.centres()[0] == doctest::Approx(10.0).epsilon(0.02));
  CHECK(r.centres()[1] == doctest::Approx(50.0).epsilon(0.01));
  CHECK(r.centres()[2] == doctest::Approx(100.0).epsilon(0.01));
  CHECK(r.fit.converged);
  CHECK(r.fit.fitted_values == 1600);
  CHECK(bitwise_equal(r.labels, data.truth));
  index_t total = 0;
  for (auto c : r.counts) total += c;
  CHECK(total == 1600);
  CHECK(r.fit.inertia > 0);
  CHECK(r.fit.inertia < 1600 * 2.0);  // ≈ 1 per voxel (unit variance)
}

TEST_CASE("k-means is bit-identical for the same seed and any thread count") {
  const ThreeClusters data;
  const int threads = max_threads();
  set_num_threads(1);
  PhiloxStream r1(99, 0);
  const auto a = kmeans_intensities(data.image, KMeansOptions{}, r1);
  set_num_threads(2);
  PhiloxStream r2(99, 0);
  const auto b = kmeans_intensities(data.image, KMeansOptions{}, r2);
  set_num_threads(threads);
  CHECK(a.centres() == b.centres());
  CHECK(bitwise_equal(a.labels, b.labels));
  CHECK(a.fit.inertia == b.fit.inertia);
  CHECK(r1 == r2);  // the streams advanced identically
}

TEST_CASE("k-means with a mask, subsampling, and degenerate data") {
  const ThreeClusters data;
  Tensor<std::uint8_t, 2> mask(data.image.shape());
  for (index_t y = 0; y < 40; ++y)
    for (index_t x = 0; x < 20; ++x) mask(y, x) = 1;
  PhiloxStream rng(5, 0);
  const auto r = kmeans_intensities(data.image, mask, KMeansOptions{}, rng);
  CHECK(r.fit.fitted_values == 800);
  for (index_t y = 0; y < 40; ++y)
    for (index_t x = 0; x < 40; ++x) CHECK(r.labels(y, x) == (x < 20 ? data.truth(y, x) : 255));

  KMeansOptions sub;
  sub.max_samples = 200;
  PhiloxStream rs(6, 0);
  const auto s = kmeans_intensities(data.image, sub, rs);
  CHECK(s.fit.fitted_values == 200);
  CHECK(s.centres()[0] == doctest::Approx(10.0).epsilon(0.05));
  CHECK(s.centres()[2] == doctest::Approx(100.0).epsilon(0.02));
  CHECK(bitwise_equal(s.labels, data.truth));  // every voxel is labelled with the subsampled fit

  // Two distinct values, k = 3: a duplicate centre, no throw, labels 0 and 1 (or 2) only.
  Tensor<double, 1> two(Shape<1>{10});
  for (index_t i = 5; i < 10; ++i) two(i) = 1.0;
  PhiloxStream rt(1, 0);
  const auto d = kmeans_intensities(two, KMeansOptions{}, rt);
  CHECK(d.centres().front() == 0.0);
  CHECK(d.centres().back() == 1.0);
  CHECK(d.labels(0) == 0);
  CHECK(d.labels(9) != 0);

  // Applying fitted centres to another image.
  Tensor<std::uint8_t, 2> labels(data.image.shape());
  const auto counts = assign_clusters_into<2>(labels.view(), data.image, r.centres());
  CHECK(bitwise_equal(labels, data.truth));
  CHECK(counts.size() == 3);
}

TEST_CASE("k-means rejects bad inputs") {
  const ThreeClusters data;
  PhiloxStream rng(1, 0);
  KMeansOptions o;
  o.clusters = 0;
  CHECK_THROWS_AS(kmeans_intensities(data.image, o, rng), Error);
  o.clusters = 255;
  CHECK_THROWS_AS(kmeans_intensities(data.image, o, rng), Error);
  o = {};
  o.unmasked_label = 2;
  CHECK_THROWS_AS(kmeans_intensities(data.image, o, rng), Error);
  o = {};
  o.max_iterations = 0;
  CHECK_THROWS_AS(kmeans_intensities(data.image, o, rng), Error);
  Tensor<float, 2> bad = data.image;
  bad(3, 3) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(kmeans_intensities(bad, KMeansOptions{}, rng), Error);
  const Tensor<std::uint8_t, 2> empty_mask(data.image.shape());
  CHECK_THROWS_AS(kmeans_intensities(data.image, empty_mask, KMeansOptions{}, rng), Error);
  CHECK_THROWS_AS(kmeans_intensities(data.image, Tensor<std::uint8_t, 2>(Shape<2>{4, 4}), KMeansOptions{}, rng), Error);
  Tensor<std::uint8_t, 2> labels(data.image.shape());
  CHECK_THROWS_AS(assign_clusters_into<2>(labels.view(), data.image, std::vector<double>{3.0, 1.0}), Error);
}
