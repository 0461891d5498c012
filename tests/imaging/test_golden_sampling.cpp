// Sampling against SciPy / scikit-image / NumPy fixtures (tests/golden/make_golden_sampling.py):
// Gaussian smoothing, linear resampling on rotated grids, anti-aliased down-sampling, the Gaussian
// pyramid (float32, relative error < 1e-5) and rl-medical-style patch crops (exact).
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "rlmed/core/safetensors.hpp"
#include "rlmed/imaging/patches.hpp"
#include "rlmed/imaging/pyramid.hpp"
#include "rlmed/imaging/resample.hpp"

using namespace rlmed;
using namespace rlmed::imaging;
using io::SafetensorsReader;

namespace {

SafetensorsReader fixture(const std::string& name) {
  return SafetensorsReader::open(std::string(RLMED_GOLDEN_DIR) + "/imaging/" + name + ".safetensors");
}

template <class U, class T, std::size_t R>
double rel_error(TensorView<U, R> got, const Tensor<T, R>& want) {
  REQUIRE(got.shape() == want.shape());
  double num = 0, den = 0;
  for (index_t i = 0; i < want.size(); ++i) {
    const double d = double(got.data()[i]) - double(want.data()[i]);
    num += d * d;
    den += double(want.data()[i]) * double(want.data()[i]);
  }
  REQUIRE(den > 0);
  return std::sqrt(num / den);
}

template <std::size_t N>
std::array<double, N> vec(const SafetensorsReader& r, const std::string& name) {
  const auto t = r.read<double, 1>(name);
  REQUIRE(t.size() == index_t(N));
  std::array<double, N> a{};
  for (std::size_t i = 0; i < N; ++i) a[i] = t.data()[i];
  return a;
}

template <std::size_t Dim>
void check_resample_case(const SafetensorsReader& r, const std::string& p) {
  Image<float, Dim> in(r.read<float, Dim>(p + "x"), vec<Dim>(r, p + "in_spacing"), vec<Dim>(r, p + "in_origin"),
                       vec<Dim * Dim>(r, p + "in_direction"));
  Grid<Dim> g;
  const auto size = r.read<std::int64_t, 1>(p + "out_size");
  for (std::size_t a = 0; a < Dim; ++a) g.size_xyz[a] = size.data()[a];
  g.spacing_mm = vec<Dim>(r, p + "out_spacing");
  g.origin_mm = vec<Dim>(r, p + "out_origin");
  g.direction = vec<Dim * Dim>(r, p + "out_direction");
  const auto fill = static_cast<float>(vec<1>(r, p + "fill")[0]);
  const auto out = resample(in, g, Interpolation::linear, fill);
  const auto want = r.read<float, Dim>(p + "y");
  const double err = rel_error(out.view(), want);
  INFO(p << " relative error " << err);
  CHECK(err < 1e-5);
  // Every filled voxel must be exactly the fill value on both sides (no interpolation leaking).
  index_t filled = 0, mismatched = 0;
  for (index_t i = 0; i < want.size(); ++i)
    if (want.data()[i] == fill) {
      ++filled;
      mismatched += out.voxels.data()[i] != fill;
    }
  CHECK(filled > 0);
  CHECK(mismatched == 0);
}

}  // namespace

TEST_CASE("gaussian smoothing matches scipy.ndimage.gaussian_filter (reflect, truncate 4)") {
  const auto r = fixture("sampling_gaussian");
  {
    const auto x = r.read<float, 3>("g3.x");
    const auto s = vec<3>(r, "g3.sigma");
    const auto y = gaussian_smooth<float, 3>(x.view(), s);
    const double err = rel_error(y.view(), r.read<float, 3>("g3.y"));
    INFO("3D relative error " << err);
    CHECK(err < 1e-5);
  }
  {
    const auto x = r.read<float, 2>("g2.x");
    const auto s = vec<2>(r, "g2.sigma");
    const auto y = gaussian_smooth<float, 2>(x.view(), s);
    const double err = rel_error(y.view(), r.read<float, 2>("g2.y"));
    INFO("2D relative error (radius larger than the axis) " << err);
    CHECK(err < 1e-5);
  }
}

TEST_CASE("linear resampling onto rotated anisotropic grids matches map_coordinates(order=1, mode='constant')") {
  const auto r = fixture("sampling_resample");
  check_resample_case<3>(r, "r3.");
  check_resample_case<2>(r, "r2.");
}

TEST_CASE("anti-aliased down-sampling matches skimage.transform.rescale and scipy primitives") {
  const auto r = fixture("sampling_rescale");
  {
    Image<float, 3> in(r.read<float, 3>("sk.x"), Vec<3>{1.0, 1.0, 1.0});
    // skimage scale (z, y, x) = (1/2, 1/4, 1/3) ⇔ new spacing (x, y, z) = (3, 4, 2) mm
    const auto out = resample_to_spacing(in, Vec<3>{3.0, 4.0, 2.0});
    const double err = rel_error(out.view(), r.read<float, 3>("sk.y"));
    INFO("skimage rescale relative error " << err);
    CHECK(err < 1e-5);
  }
  {
    Image<float, 3> in(r.read<float, 3>("aa.x"), Vec<3>{1.0, 1.0, 1.0});
    const auto out = resample_to_spacing(in, vec<3>(r, "aa.new_spacing_xyz"));
    const double err = rel_error(out.view(), r.read<float, 3>("aa.y"));
    INFO("non-dividing sizes relative error " << err);
    CHECK(err < 1e-5);
  }
}

TEST_CASE("Gaussian pyramid levels match gaussian_filter + samples at 2j + 0.5") {
  const auto r = fixture("sampling_pyramid");
  Image<float, 3> in(r.read<float, 3>("level0"), Vec<3>{1.0, 1.0, 1.0});
  const auto p = build_pyramid(in, PyramidOptions{3, 1.0});
  for (int l = 1; l < 3; ++l) {
    const double err = rel_error(p.level(l).view(), r.read<float, 3>("level" + std::to_string(l)));
    INFO("level " << l << " relative error " << err);
    CHECK(err < 1e-5);
  }
}

TEST_CASE("patch extraction equals rl-medical's NumPy slicing with zero padding, exactly") {
  const auto r = fixture("sampling_patches");
  const auto vol = r.read<float, 3>("volume");
  const auto c = r.read<std::int64_t, 2>("centres_xyz");
  std::vector<Voxel<3>> centres(std::size_t(c.extent(0)));
  for (index_t i = 0; i < c.extent(0); ++i) centres[std::size_t(i)] = {c(i, 0), c(i, 1), c(i, 2)};
  for (const std::string name : {"odd", "even_strided", "big"}) {
    PatchGeometry<3> g;
    const auto size = r.read<std::int64_t, 1>(name + ".size_xyz"), stride = r.read<std::int64_t, 1>(name + ".stride_xyz");
    for (std::size_t a = 0; a < 3; ++a) {
      g.size_xyz[a] = size.data()[a];
      g.stride_xyz[a] = stride.data()[a];
    }
    const auto got = extract_patches_3d<float>(vol.view(), centres, g);
    const auto want = r.read<float, 4>(name + ".patches");
    INFO(name);
    CHECK(bitwise_equal(got, want));
  }
}
