// Patch extraction, pyramids, resampling, smoothing and normalisation (unit).
// References here are written independently of the library: per-voxel loops with explicit
// bounds tests, hand-computed values, and geometric identities.
#include <doctest/doctest.h>

#include <set>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "rlmed/core/random.hpp"
#include "rlmed/imaging/normalize.hpp"
#include "rlmed/imaging/patches.hpp"
#include "rlmed/imaging/pyramid.hpp"
#include "rlmed/imaging/resample.hpp"

using namespace rlmed;
using namespace rlmed::imaging;

namespace {

// Naive reference: every sample looked up one by one with an explicit bounds test.
template <class T>
T ref_sample3(const Tensor<T, 3>& vol, const Voxel<3>& c, const PatchGeometry<3>& g, index_t kx, index_t ky, index_t kz) {
  const index_t x = c[0] + (kx - g.size_xyz[0] / 2) * g.stride_xyz[0];
  const index_t y = c[1] + (ky - g.size_xyz[1] / 2) * g.stride_xyz[1];
  const index_t z = c[2] + (kz - g.size_xyz[2] / 2) * g.stride_xyz[2];
  if (x < 0 || y < 0 || z < 0 || x >= vol.extent(2) || y >= vol.extent(1) || z >= vol.extent(0)) return T(0);
  return vol(z, y, x);
}

template <class T>
void check_patches3(const Tensor<T, 4>& out, const Tensor<T, 3>& vol, const std::vector<Voxel<3>>& centres,
                    const PatchGeometry<3>& g) {
  REQUIRE(out.extent(0) == index_t(centres.size()));
  index_t mismatches = 0;
  for (index_t m = 0; m < out.extent(0); ++m)
    for (index_t kz = 0; kz < g.size_xyz[2]; ++kz)
      for (index_t ky = 0; ky < g.size_xyz[1]; ++ky)
        for (index_t kx = 0; kx < g.size_xyz[0]; ++kx)
          if (!(out(m, kz, ky, kx) == ref_sample3(vol, centres[std::size_t(m)], g, kx, ky, kz))) ++mismatches;
  CHECK(mismatches == 0);
}

Tensor<float, 3> random_volume(Shape<3> s, std::uint64_t seed) {
  Tensor<float, 3> v(s);
  PhiloxStream rng(seed, 0);
  fill_uniform(v.view(), rng, 1.0f, 2.0f);  // never 0: padding is distinguishable from data
  return v;
}

// Centres on, near and beyond every border of every axis, plus interior ones.
std::vector<Voxel<3>> border_centres(const Shape<3>& s, index_t reach) {
  std::vector<Voxel<3>> c;
  const index_t nx = s[2], ny = s[1], nz = s[0];
  auto coords = [&](index_t n) {
    return std::vector<index_t>{-reach - 3, -reach, -1, 0, 1, n / 2, n - 2, n - 1, n, n + reach};
  };
  for (index_t x : coords(nx)) c.push_back({x, ny / 2, nz / 2});
  for (index_t y : coords(ny)) c.push_back({nx / 2, y, nz / 2});
  for (index_t z : coords(nz)) c.push_back({nx / 2, ny / 2, z});
  for (index_t x : {index_t(-1), nx}) for (index_t y : {index_t(0), ny - 1}) for (index_t z : {index_t(-2), nz + 1})
    c.push_back({x, y, z});  // corners
  return c;
}

}  // namespace

TEST_CASE("3D patches match a per-voxel reference: odd/even sizes, strides, every border") {
  const Shape<3> s{9, 11, 13};  // D, H, W
  const auto vol = random_volume(s, 1);
  struct Case {
    std::array<index_t, 3> size, stride;
  };
  for (const Case& cs : {Case{{5, 5, 5}, {1, 1, 1}}, Case{{4, 6, 3}, {1, 1, 1}}, Case{{7, 4, 5}, {2, 1, 3}},
                         Case{{1, 1, 1}, {1, 1, 1}}, Case{{16, 15, 12}, {1, 2, 1}}}) {
    PatchGeometry<3> g;
    g.size_xyz = cs.size;
    g.stride_xyz = cs.stride;
    const auto centres = border_centres(s, 8);
    CAPTURE(cs.size);
    CAPTURE(cs.stride);
    // Pre-fill with NaN: every output element (padding included) must be written.
    const Shape<3> p = g.tensor_shape();
    Tensor<float, 4> out(Shape<4>{index_t(centres.size()), p[0], p[1], p[2]}, std::numeric_limits<float>::quiet_NaN());
    extract_patches_3d_into<float>(out.view(), vol.view(), centres, g);
    check_patches3(out, vol, centres, g);
    const auto alloc = extract_patches_3d<float>(vol.view(), centres, g);
    CHECK(bitwise_equal(alloc, out));
  }
}

TEST_CASE("even patch sizes put the centre voxel at index P/2") {
  Tensor<float, 3> vol(Shape<3>{8, 8, 8});
  vol(3, 4, 5) = 7.0f;  // z=3, y=4, x=5
  const std::vector<Voxel<3>> c{{5, 4, 3}};
  const auto out = extract_patches_3d<float>(vol.view(), c, PatchGeometry<3>::cube(4));
  CHECK(out(0, 2, 2, 2) == 7.0f);
  float sum = 0;
  for (float v : out) sum += v;
  CHECK(sum == 7.0f);
  const auto odd = extract_patches_3d<float>(vol.view(), c, PatchGeometry<3>::cube(3));
  CHECK(odd(0, 1, 1, 1) == 7.0f);
}

TEST_CASE("zero padding: centres far outside give all-zero patches; mixed patches keep the inside") {
  const auto vol = random_volume(Shape<3>{6, 7, 8}, 2);
  const std::vector<Voxel<3>> c{{-100, 3, 3}, {3, 3, 1000}, {-3, -3, -3}};
  Tensor<float, 4> out(Shape<4>{3, 5, 5, 5}, 42.0f);
  extract_patches_3d_into<float>(out.view(), vol.view(), c, PatchGeometry<3>::cube(5));
  for (index_t i = 0; i < 2 * 125; ++i) CHECK(out.data()[i] == 0.0f);
  // Centre (-3,-3,-3), size 5: samples -5..-1 on every axis: all outside.
  for (index_t i = 250; i < 375; ++i) CHECK(out.data()[i] == 0.0f);
  const std::vector<Voxel<3>> c2{{-1, -1, -1}};
  const auto corner = extract_patches_3d<float>(vol.view(), c2, PatchGeometry<3>::cube(5));
  // samples -3..1 → only kx,ky,kz in {3,4} are inside (voxels 0, 1)
  for (index_t kz = 0; kz < 5; ++kz)
    for (index_t ky = 0; ky < 5; ++ky)
      for (index_t kx = 0; kx < 5; ++kx) {
        const bool inside = kx >= 3 && ky >= 3 && kz >= 3;
        CHECK(corner(0, kz, ky, kx) == (inside ? vol(kz - 3, ky - 3, kx - 3) : 0.0f));
      }
}

TEST_CASE("frame history [N, F, P, P, P] equals per-frame extraction, sample-major") {
  const Shape<3> s{10, 12, 9};
  const auto vol = random_volume(s, 3);
  const index_t n = 4, f = 3;
  std::vector<Voxel<3>> centres;
  PhiloxStream rng(7, 1);
  for (index_t i = 0; i < n * f; ++i)
    centres.push_back({index_t(rng.uniform_int(15)) - 3, index_t(rng.uniform_int(18)) - 3, index_t(rng.uniform_int(16)) - 3});
  const auto g = PatchGeometry<3>::cube(6, 2);
  const auto hist = extract_patches_3d<float>(vol.view(), centres, f, g);
  REQUIRE(hist.shape() == Shape<5>{n, f, 6, 6, 6});
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < f; ++j)
      for (index_t kz = 0; kz < 6; ++kz)
        for (index_t ky = 0; ky < 6; ++ky)
          for (index_t kx = 0; kx < 6; ++kx)
            REQUIRE(hist(i, j, kz, ky, kx) == ref_sample3(vol, centres[std::size_t(i * f + j)], g, kx, ky, kz));
  Tensor<float, 5> wrong(Shape<5>{n, f + 1, 6, 6, 6});
  CHECK_THROWS_AS((extract_patches_3d_into<float>(wrong.view(), vol.view(), centres, g)), Error);
}

TEST_CASE("2D patches and 2D frame history match the reference") {
  Tensor<double, 2> img(Shape<2>{9, 14});
  PhiloxStream rng(5, 0);
  fill_uniform(img.view(), rng, 1.0, 3.0);
  std::vector<Voxel<2>> centres;
  for (index_t x : {-9, -2, 0, 3, 13, 14, 20})
    for (index_t y : {-4, 0, 4, 8, 9, 12}) centres.push_back({x, y});
  for (auto [px, py, sx, sy] : {std::array<index_t, 4>{5, 5, 1, 1}, {6, 3, 2, 1}, {1, 8, 1, 3}}) {
    PatchGeometry<2> g;
    g.size_xyz = {px, py};
    g.stride_xyz = {sx, sy};
    const auto out = extract_patches_2d<double>(img.view(), centres, g);
    index_t bad = 0;
    for (std::size_t m = 0; m < centres.size(); ++m)
      for (index_t ky = 0; ky < py; ++ky)
        for (index_t kx = 0; kx < px; ++kx) {
          const index_t x = centres[m][0] + (kx - px / 2) * sx, y = centres[m][1] + (ky - py / 2) * sy;
          const double want = (x >= 0 && y >= 0 && x < 14 && y < 9) ? img(y, x) : 0.0;
          if (out(index_t(m), ky, kx) != want) ++bad;
        }
    CHECK(bad == 0);
    const auto hist = extract_patches_2d<double>(img.view(), centres, 6, g);
    REQUIRE(hist.extent(0) == index_t(centres.size()) / 6);
    CHECK(std::memcmp(hist.data(), out.data(), out.bytes()) == 0);
  }
}

TEST_CASE("patch extraction is bit-identical with 1 and 2 threads (parallel over patches and slabs)") {
  const auto vol = random_volume(Shape<3>{40, 38, 36}, 9);
  std::vector<Voxel<3>> one{{2, 37, 20}};  // N = 1: the slab split must carry the work
  std::vector<Voxel<3>> many = border_centres(vol.shape(), 20);
  const int threads = max_threads();
  for (const auto* c : {&one, &many}) {
    set_num_threads(1);
    const auto a = extract_patches_3d<float>(vol.view(), *c, PatchGeometry<3>::cube(31));
    set_num_threads(2);
    const auto b = extract_patches_3d<float>(vol.view(), *c, PatchGeometry<3>::cube(31));
    set_num_threads(threads);
    CHECK(bitwise_equal(a, b));
    check_patches3(a, vol, *c, PatchGeometry<3>::cube(31));
  }
}

TEST_CASE("world-point centres round to the nearest voxel through the image geometry") {
  Image<float, 3> img(random_volume(Shape<3>{6, 7, 8}, 11), Vec<3>{0.5, 2.0, 1.5}, Vec<3>{10.0, -4.0, 3.0});
  // index (x, y, z) = ((p - origin) / spacing); 2.24 → 2, 3.5 → 4 (ties up), -0.6 → -1
  const Vec<3> p{10.0 + 2.24 * 0.5, -4.0 + 3.5 * 2.0, 3.0 - 0.6 * 1.5};
  const Voxel<3> v = nearest_voxel(img, p);
  CHECK(v == Voxel<3>{2, 4, -1});
  const std::vector<Vec<3>> pts{p};
  const auto out = extract_patches<float, 3>(img, pts, PatchGeometry<3>::cube(3));
  const std::vector<Voxel<3>> c{v};
  CHECK(bitwise_equal(out, extract_patches_3d<float>(img.view(), c, PatchGeometry<3>::cube(3))));
  CHECK_THROWS_AS(nearest_voxel(img, Vec<3>{std::nan(""), 0.0, 0.0}), Error);
}

TEST_CASE("patch extraction rejects bad arguments") {
  const auto vol = random_volume(Shape<3>{5, 5, 5}, 4);
  const std::vector<Voxel<3>> c{{2, 2, 2}};
  Tensor<float, 4> out(Shape<4>{1, 3, 3, 3});
  CHECK_THROWS_AS((extract_patches_3d_into<float>(out.view(), vol.view(), c, PatchGeometry<3>::cube(4))), Error);  // shape
  Tensor<float, 4> two(Shape<4>{2, 3, 3, 3});
  CHECK_THROWS_AS((extract_patches_3d_into<float>(two.view(), vol.view(), c, PatchGeometry<3>::cube(3))), Error);  // count
  CHECK_THROWS_AS((extract_patches_3d<float>(vol.view(), c, PatchGeometry<3>::cube(0))), Error);
  CHECK_THROWS_AS((extract_patches_3d<float>(vol.view(), c, PatchGeometry<3>::cube(3, 0))), Error);
  const std::vector<Voxel<3>> huge{{index_t(1) << 50, 0, 0}};
  CHECK_THROWS_AS((extract_patches_3d<float>(vol.view(), huge, PatchGeometry<3>::cube(3))), Error);
  const std::vector<Voxel<3>> three{{0, 0, 0}, {1, 1, 1}, {2, 2, 2}};
  CHECK_THROWS_AS((extract_patches_3d<float>(vol.view(), three, 2, PatchGeometry<3>::cube(3))), Error);  // 3 % 2
}

// ---- resampling ------------------------------------------------------------------------------------

TEST_CASE("resampling onto the identity grid returns the input exactly (linear and nearest)") {
  const double c = std::cos(0.3), s = std::sin(0.3);
  const Mat<3> rot{c, -s, 0, s, c, 0, 0, 0, 1};
  for (const Mat<3>& dir : {identity_matrix<3>(), rot}) {
    Image<float, 3> img(random_volume(Shape<3>{5, 6, 7}, 12), Vec<3>{0.7, 1.1, 2.3}, Vec<3>{-3.0, 5.5, 1.25}, dir);
    for (auto mode : {Interpolation::linear, Interpolation::nearest}) {
      const auto out = resample(img, grid_of(img), mode, -1.0f);
      CHECK(bitwise_equal(out.voxels, img.voxels));
      CHECK(same_geometry(out, img, 0.0));
    }
  }
  Image<std::uint8_t, 2> labels(Tensor<std::uint8_t, 2>(Shape<2>{3, 4}, 5), Vec<2>{1.0, 1.0});
  labels.voxels(1, 2) = 9;
  CHECK(bitwise_equal(resample(labels, grid_of(labels), Interpolation::nearest).voxels, labels.voxels));
}

TEST_CASE("resampling by a whole-voxel shift moves values exactly and fills the outside") {
  Image<double, 2> img(Tensor<double, 2>(Shape<2>{4, 5}), Vec<2>{2.0, 3.0}, Vec<2>{0.0, 0.0});
  for (index_t i = 0; i < 20; ++i) img.voxels.data()[i] = double(i) + 1.0;
  Grid<2> g = grid_of(img);
  g.origin_mm = {4.0, -3.0};  // +2 voxels in x, -1 voxel in y
  const auto out = resample(img, g, Interpolation::linear, -7.0);
  for (index_t y = 0; y < 4; ++y)
    for (index_t x = 0; x < 5; ++x) {
      const index_t sx = x + 2, sy = y - 1;
      const double want = (sx < 5 && sy >= 0) ? img.voxels(sy, sx) : -7.0;
      CHECK(out.voxels(y, x) == want);
    }
  // Half-voxel shift along x: the mean of neighbours; the last column has no right neighbour inside.
  Grid<2> h = grid_of(img);
  h.origin_mm = {1.0, 0.0};
  const auto half = resample(img, h, Interpolation::linear, -7.0);
  CHECK(half.voxels(2, 1) == doctest::Approx(0.5 * (img.voxels(2, 1) + img.voxels(2, 2))));
  CHECK(half.voxels(2, 4) == -7.0);
  const auto near = resample(img, h, Interpolation::nearest, -7.0);
  CHECK(near.voxels(2, 1) == img.voxels(2, 2));  // 1.5 rounds up
  CHECK(near.voxels(2, 4) == -7.0);              // 4.5 is outside the last voxel's box
}

TEST_CASE("resample_to_spacing keeps the physical extent and centre") {
  Image<float, 3> img(random_volume(Shape<3>{10, 9, 12}, 13), Vec<3>{1.0, 1.0, 2.0}, Vec<3>{5.0, 6.0, 7.0});
  const auto out = resample_to_spacing(img, Vec<3>{2.0, 1.5, 1.0});
  CHECK(out.size_xyz() == std::array<index_t, 3>{6, 6, 20});  // round(12/2), round(9/1.5), round(20/1)
  const auto centre = [](const auto& im) {
    const auto n = im.size_xyz();
    return im.index_to_physical(Vec<3>{0.5 * double(n[0] - 1), 0.5 * double(n[1] - 1), 0.5 * double(n[2] - 1)});
  };
  const Vec<3> a = centre(img), b = centre(out);
  for (std::size_t i = 0; i < 3; ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-12));
  CHECK(out.spacing_mm == Vec<3>{2.0, 1.5, 1.0});
  // A constant image stays constant through smoothing and interpolation.
  Image<float, 3> flat(Tensor<float, 3>(Shape<3>{7, 8, 9}, 3.0f), Vec<3>{1.0, 1.0, 1.0});
  for (float v : resample_to_spacing(flat, Vec<3>{2.5, 3.0, 1.7}).voxels) CHECK(v == doctest::Approx(3.0f).epsilon(1e-6));
  CHECK(anti_alias_sigma_vox<3>(Vec<3>{1, 1, 2}, Vec<3>{3, 0.5, 2}) == Vec<3>{1.0, 0.0, 0.0});
  CHECK_THROWS_AS(resample_to_spacing(img, Vec<3>{0.0, 1.0, 1.0}), Error);
}

TEST_CASE("Gaussian smoothing: scipy's kernel, 'reflect' boundaries, constants preserved") {
  const auto k = gaussian_kernel(1.0);
  REQUIRE(k.size() == 9);  // radius int(4·1 + 0.5) = 4
  double sum = 0;
  for (double v : k) sum += v;
  CHECK(sum == doctest::Approx(1.0).epsilon(1e-15));
  CHECK(k[4] / k[5] == doctest::Approx(std::exp(0.5)));
  CHECK(gaussian_kernel(0.6).size() == 5);  // int(2.4 + 0.5) = 2
  // reflect: (d c b a | a b c d | d c b a)
  CHECK(imaging::detail::reflect_index(-1, 4) == 0);
  CHECK(imaging::detail::reflect_index(-2, 4) == 1);
  CHECK(imaging::detail::reflect_index(4, 4) == 3);
  CHECK(imaging::detail::reflect_index(5, 4) == 2);
  CHECK(imaging::detail::reflect_index(9, 4) == 1);
  CHECK(imaging::detail::reflect_index(-5, 4) == 3);
  CHECK(imaging::detail::reflect_index(-9, 4) == 0);
  // Impulse response in the interior is the kernel.
  Tensor<double, 1> impulse(Shape<1>{21});
  impulse(10) = 1.0;
  const auto r = gaussian_smooth<double, 1>(impulse.view(), 1.0);
  for (index_t i = 0; i < 9; ++i) CHECK(r(6 + i) == doctest::Approx(k[std::size_t(i)]).epsilon(1e-14));
  // 1D reflect at the border by hand, σ with radius 1: taps (w1, w0, w1).
  Tensor<double, 1> line(Shape<1>{3});
  line(0) = 1;
  line(1) = 2;
  line(2) = 4;
  const auto t = gaussian_kernel(0.3);  // radius int(1.2 + 0.5) = 1
  REQUIRE(t.size() == 3);
  const auto sm = gaussian_smooth<double, 1>(line.view(), 0.3);
  CHECK(sm(0) == doctest::Approx(t[0] * 1 + t[1] * 1 + t[2] * 2));
  CHECK(sm(2) == doctest::Approx(t[0] * 2 + t[1] * 4 + t[2] * 4));
  // A constant 3D volume stays constant, even with radii larger than the axes.
  Tensor<float, 3> c(Shape<3>{3, 4, 5}, 2.5f);
  for (float v : gaussian_smooth<float, 3>(c.view(), std::array<double, 3>{3.0, 0.0, 7.0})) CHECK(v == doctest::Approx(2.5f));
  Tensor<float, 1> scratch;
  Tensor<float, 3> out(c.shape());
  CHECK_THROWS_AS((gaussian_smooth_into<float, 3>(c.view(), c.view(), {1.0, 1.0, 1.0}, scratch)), Error);  // alias
  CHECK_THROWS_AS((gaussian_smooth_into<float, 3>(out.view(), c.view(), {-1.0, 1.0, 1.0}, scratch)), Error);
}

// ---- pyramid ---------------------------------------------------------------------------------------

TEST_CASE("pyramid levels keep a physical point on the same structure") {
  // A bright ball (radius 9 mm) at an off-centre point; anisotropic spacing, rotated axes.
  const double c = std::cos(0.2), s = std::sin(0.2);
  const Mat<3> dir{c, 0, s, 0, 1, 0, -s, 0, c};
  Image<float, 3> img(Tensor<float, 3>(Shape<3>{40, 44, 48}), Vec<3>{1.0, 0.9, 1.2}, Vec<3>{-20.0, 10.0, 4.0}, dir);
  const Vec<3> ball = img.index_to_physical(Vec<3>{30.3, 17.6, 22.1});
  for (index_t z = 0; z < 40; ++z)
    for (index_t y = 0; y < 44; ++y)
      for (index_t x = 0; x < 48; ++x)
        img.voxels(z, y, x) = distance_mm<3>(img.index_to_physical(Vec<3>{double(x), double(y), double(z)}), ball) < 9.0 ? 1.0f : 0.0f;
  const auto pyr = build_pyramid(img, PyramidOptions{3, 1.0});
  REQUIRE(pyr.level_count() == 3);
  const Vec<3> outside = img.index_to_physical(Vec<3>{8.0, 30.0, 6.0});
  for (index_t l = 0; l < 3; ++l) {
    const auto& lev = pyr.level(l);
    const auto v = pyr.voxel_at_level(l, ball);
    CHECK(lev.voxels(v[2], v[1], v[0]) > 0.5f);
    const auto o = pyr.voxel_at_level(l, outside);
    CHECK(lev.voxels(o[2], o[1], o[0]) < 0.1f);
    if (l == 0) continue;
    const auto& fine = pyr.level(l - 1);
    // Geometry: halved sizes, doubled spacing, coarse voxel j at the fine continuous index 2j + 0.5.
    for (std::size_t a = 0; a < 3; ++a) {
      CHECK(lev.size_xyz()[a] == fine.size_xyz()[a] / 2);
      CHECK(lev.spacing_mm[a] == 2.0 * fine.spacing_mm[a]);
    }
    const Vec<3> j{3.0, 5.0, 2.0};
    const Vec<3> pc = lev.index_to_physical(j), pf = fine.index_to_physical(Vec<3>{6.5, 10.5, 4.5});
    for (std::size_t a = 0; a < 3; ++a) CHECK(pc[a] == doctest::Approx(pf[a]).epsilon(1e-12));
    const Vec<3> back = pyr.map_index(l, j, l - 1);
    CHECK(back[0] == doctest::Approx(6.5));
    CHECK(back[2] == doctest::Approx(4.5));
  }
  // A constant image is constant on every level ('reflect' smoothing, interior samples).
  Image<double, 2> flat(Tensor<double, 2>(Shape<2>{13, 9}, 4.0), Vec<2>{1.0, 1.0});
  const auto fp = build_pyramid(flat, PyramidOptions{4, 1.0});
  CHECK(fp.level(3).size_xyz() == std::array<index_t, 2>{1, 1});
  for (index_t l = 0; l < 4; ++l)
    for (double v : fp.level(l).voxels) CHECK(v == doctest::Approx(4.0).epsilon(1e-12));
  CHECK_THROWS_AS(build_pyramid(flat, PyramidOptions{0, 1.0}), Error);
  CHECK_THROWS_AS(build_pyramid(flat, PyramidOptions{2, -1.0}), Error);
  CHECK_THROWS_AS((void)fp.level(4), Error);
}

// ---- normalisation ---------------------------------------------------------------------------------

TEST_CASE("percentiles follow NumPy's linear rule") {
  Tensor<double, 1> v(Shape<1>{5});
  const double vals[5] = {5, 1, 4, 2, 3};
  for (int i = 0; i < 5; ++i) v(i) = vals[i];
  CHECK(percentile<double, 1>(v.view(), 25) == 2.0);   // np.percentile([1..5], 25)
  CHECK(percentile<double, 1>(v.view(), 10) == doctest::Approx(1.4));
  CHECK(percentile<double, 1>(v.view(), 0) == 1.0);
  CHECK(percentile<double, 1>(v.view(), 100) == 5.0);
  CHECK(percentile<double, 1>(v.view(), 62.5) == doctest::Approx(3.5));
  Tensor<std::uint8_t, 1> m(Shape<1>{5});
  m(0) = m(2) = 1;  // {5, 4}
  CHECK(percentile<double, 1>(v.view(), 50, m.view()) == 4.5);
  CHECK_THROWS_AS((percentile<double, 1>(v.view(), 101)), Error);
}

TEST_CASE("percentile clip + rescale, z-score, min-max: hand cases") {
  Tensor<float, 1> v(Shape<1>{5});
  for (int i = 0; i < 5; ++i) v(i) = float(i + 1);  // 1..5
  PercentileClip clip{25, 75, -1.0, 1.0};            // range [2, 4] → [-1, 1]
  const auto p = percentile_normalize<float, 1>(v.view(), clip);
  const float want_p[5] = {-1, -1, 0, 1, 1};
  for (int i = 0; i < 5; ++i) CHECK(p(i) == doctest::Approx(want_p[i]));

  Tensor<double, 1> z(Shape<1>{3});
  z(0) = 1;
  z(1) = 2;
  z(2) = 3;
  const auto zs = zscore_normalize<double, 1>(z.view());
  const double sd = std::sqrt(2.0 / 3.0);
  CHECK(zs(0) == doctest::Approx(-1.0 / sd));
  CHECK(zs(1) == doctest::Approx(0.0));
  CHECK(zs(2) == doctest::Approx(1.0 / sd));
  Tensor<std::uint8_t, 1> mask(Shape<1>{3});
  mask(1) = mask(2) = 1;  // stats of {2, 3}: mean 2.5, std 0.5
  const auto zm = zscore_normalize<double, 1>(z.view(), mask.view());
  CHECK(zm(0) == doctest::Approx(-3.0));
  CHECK(zm(2) == doctest::Approx(1.0));
  const auto zo = zscore_normalize<double, 1>(z.view(), mask.view(), true);
  CHECK(zo(0) == 0.0);
  CHECK(zo(1) == doctest::Approx(-1.0));

  Tensor<float, 2> mm(Shape<2>{1, 3});
  mm(0, 0) = 2;
  mm(0, 1) = 4;
  mm(0, 2) = 6;
  const auto r = minmax_normalize<float, 2>(mm.view());
  CHECK(r(0, 0) == 0.0f);
  CHECK(r(0, 1) == 0.5f);
  CHECK(r(0, 2) == 1.0f);
  // Constant images: documented degenerate outputs, not NaN.
  Tensor<float, 1> c(Shape<1>{4}, 3.0f);
  for (float x : minmax_normalize<float, 1>(c.view())) CHECK(x == 0.0f);
  for (float x : zscore_normalize<float, 1>(c.view())) CHECK(x == 0.0f);
  for (float x : percentile_normalize<float, 1>(c.view())) CHECK(x == 0.0f);
  const auto st = intensity_stats<float, 1>(v.view());
  CHECK(st.mean == 3.0);
  CHECK(st.stddev == doctest::Approx(std::sqrt(2.0)));
  CHECK(st.min == 1.0);
  CHECK(st.max == 5.0);
  CHECK(st.count == 5);
}

TEST_CASE("normalisation statistics are identical with 1 and 2 threads") {
  Tensor<float, 3> big(Shape<3>{20, 50, 90});
  PhiloxStream rng(3, 3);
  fill_normal(big.view(), rng, 100.0f, 15.0f);
  const int threads = max_threads();
  set_num_threads(1);
  const auto a = zscore_normalize<float, 3>(big.view());
  set_num_threads(2);
  const auto b = zscore_normalize<float, 3>(big.view());
  set_num_threads(threads);
  CHECK(bitwise_equal(a, b));
  const auto s = intensity_stats<float, 3>(a.view());
  CHECK(std::abs(s.mean) < 1e-6);
  CHECK(s.stddev == doctest::Approx(1.0).epsilon(1e-6));
}

TEST_CASE("NaN and other bad input to normalisation throw rlmed::Error") {
  Tensor<float, 1> v(Shape<1>{4}, 1.0f);
  v(2) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS((zscore_normalize<float, 1>(v.view())), doctest::Contains("NaN"), Error);
  CHECK_THROWS_AS((minmax_normalize<float, 1>(v.view())), Error);
  CHECK_THROWS_AS((percentile_normalize<float, 1>(v.view())), Error);
  Tensor<std::uint8_t, 1> mask(Shape<1>{4});
  mask(0) = 1;  // the NaN is outside the mask but z-score still normalises it
  CHECK_THROWS_AS((zscore_normalize<float, 1>(v.view(), mask.view())), Error);
  v(2) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS((minmax_normalize<float, 1>(v.view())), Error);
  Tensor<float, 1> ok(Shape<1>{4}, 1.0f);
  Tensor<std::uint8_t, 1> none(Shape<1>{4});
  CHECK_THROWS_WITH_AS((zscore_normalize<float, 1>(ok.view(), none.view())), doctest::Contains("mask selects none"), Error);
  Tensor<std::uint8_t, 1> short_mask(Shape<1>{3});
  CHECK_THROWS_AS((zscore_normalize<float, 1>(ok.view(), short_mask.view())), Error);
  CHECK_THROWS_AS((percentile_normalize<float, 1>(ok.view(), PercentileClip{80, 20, 0, 1})), Error);
  Tensor<float, 1> wrong(Shape<1>{3});
  CHECK_THROWS_AS((minmax_normalize_into<float, 1>(wrong.view(), ok.view())), Error);
}

TEST_CASE("resampling and grids reject bad input") {
  Image<float, 2> img(Tensor<float, 2>(Shape<2>{4, 4}), Vec<2>{1.0, 1.0});
  Grid<2> g = grid_of(img);
  Tensor<float, 2> wrong(Shape<2>{4, 5});
  CHECK_THROWS_AS(resample_into(wrong.view(), g, img), Error);
  g.size_xyz = {0, 4};
  CHECK_THROWS_AS(resample(img, g), Error);
  g = grid_of(img);
  g.spacing_mm = {1.0, -1.0};
  CHECK_THROWS_AS(resample(img, g), Error);
  g = grid_of(img);
  g.direction = {1, 0, 1, 0};  // singular
  CHECK_THROWS_AS(resample(img, g), Error);
  Image<std::uint8_t, 2> labels(Tensor<std::uint8_t, 2>(Shape<2>{4, 4}), Vec<2>{1.0, 1.0});
  CHECK_THROWS_AS(resample(labels, grid_of(labels), Interpolation::linear), Error);
  CHECK_THROWS_AS(gaussian_kernel(std::nan("")), Error);
}

TEST_CASE("resample_to_spacing and rescale accept integer label images (nearest, never smoothed)") {
  Image<std::uint8_t, 3> labels(Shape<3>{4, 6, 8});
  for (index_t z = 0; z < 4; ++z)
    for (index_t y = 0; y < 6; ++y)
      for (index_t x = 0; x < 8; ++x) labels.voxels(z, y, x) = std::uint8_t(x < 4 ? 3 : 7);
  ResampleOptions nearest;
  nearest.mode = Interpolation::nearest;
  const auto coarse = resample_to_spacing(labels, Vec<3>{2.0, 2.0, 2.0}, nearest);
  CHECK(coarse.size_xyz() == std::array<index_t, 3>{4, 3, 2});
  std::set<int> values;
  for (auto v : coarse.voxels) values.insert(v);
  CHECK(values == std::set<int>{3, 7});
  const auto same = rescale(labels, Vec<3>{1.0, 1.0, 1.0}, nearest);
  CHECK(bitwise_equal(same.voxels, labels.voxels));
}
