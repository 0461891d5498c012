// Every file type in $RLMED_DATA_DIR read by rlmed and checked against facts computed
// independently by nibabel / PIL / numpy (tests/data/make_data_facts.py → data_facts.json):
// shapes, geometry in LPS, label sets, and checksums of the decoded values in tensor order.
// Exit code 77 (CTest "skipped") with a message when the data folder is missing.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include <nlohmann/json.hpp>

#include "rlmed/imaging/io/io.hpp"
#include "rlmed/imaging/metrics.hpp"

using namespace rlmed;
using namespace rlmed::imaging;
namespace fs = std::filesystem;

namespace {

fs::path data_dir() {
  if (const char* env = std::getenv("RLMED_DATA_DIR")) return env;
  return RLMED_TEST_DATA_DIR;
}

const nlohmann::json& facts() {
  static const nlohmann::json j = [] {
    std::ifstream in(RLMED_DATA_FACTS);
    REQUIRE_MESSAGE(in.good(), "cannot open " RLMED_DATA_FACTS);
    return nlohmann::json::parse(in);
  }();
  return j;
}

struct Sums {
  double sum = 0, wsum = 0, min = 1e300, max = -1e300;
};

template <class T>
Sums sums_of(const T* data, index_t n) {
  Sums s;
  for (index_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(data[i]);
    s.sum += v;
    s.wsum += v * double(i % 1009 + 1);
    s.min = std::min(s.min, v);
    s.max = std::max(s.max, v);
  }
  return s;
}

void check_sums(const Sums& s, const nlohmann::json& f) {
  CHECK(s.sum == doctest::Approx(f["sum"].get<double>()).epsilon(1e-10));
  CHECK(s.wsum == doctest::Approx(f["wsum"].get<double>()).epsilon(1e-10));
  CHECK(s.min == f["min"].get<double>());
  CHECK(s.max == f["max"].get<double>());
}

template <class T, std::size_t Dim>
void check_image(const Image<T, Dim>& img, const nlohmann::json& f, bool geometry = true) {
  const auto shape = f["shape"].get<std::vector<index_t>>();
  REQUIRE(shape.size() == Dim);
  for (std::size_t a = 0; a < Dim; ++a) CHECK(img.voxels.extent(a) == shape[a]);
  if (geometry) {
    const auto sp = f["spacing"].get<std::vector<double>>(), org = f["origin"].get<std::vector<double>>(),
               dir = f["direction"].get<std::vector<double>>();
    for (std::size_t a = 0; a < Dim; ++a) {
      CHECK(img.spacing_mm[a] == doctest::Approx(sp[a]).epsilon(1e-6));
      CHECK(img.origin_mm[a] == doctest::Approx(org[a]).epsilon(1e-6));
    }
    for (std::size_t k = 0; k < Dim * Dim; ++k) CHECK(img.direction[k] == doctest::Approx(dir[k]).epsilon(1e-6));
  }
  check_sums(sums_of(img.voxels.data(), img.voxels.size()), f);
  if (f.contains("labels") && !f["labels"].is_null()) {
    std::set<long long> got;
    for (const auto& v : img.voxels) got.insert(static_cast<long long>(v));
    const auto want = f["labels"].get<std::vector<long long>>();
    CHECK(std::vector<long long>(got.begin(), got.end()) == want);
  }
}

}  // namespace

TEST_CASE("NIfTI brains (antspy): MNI152, its AAL label map and Colin27") {
  for (const char* name : {"antspy/mni.nii.gz", "antspy/ch2.nii.gz"}) {
    INFO(name);
    check_image(read_nifti<float, 3>(data_dir() / name), facts()[name]);
  }
  const auto atlas = read_nifti<std::int16_t, 3>(data_dir() / "antspy/mnia.nii.gz");
  check_image(atlas, facts()["antspy/mnia.nii.gz"]);
  const auto mni = read_nifti<float, 3>(data_dir() / "antspy/mni.nii.gz");
  CHECK(same_geometry(mni, atlas));
  // The template's world origin lies inside the brain: (0, 0, 0) mm maps to an inside voxel.
  CHECK(mni.contains_index(mni.physical_to_index({0, 0, 0})));
}

TEST_CASE("JPEG brain slices (antspy)") {
  for (const char* name : {"antspy/r16slice.jpg", "antspy/r27slice.jpg", "antspy/r30slice.jpg", "antspy/r62slice.jpg",
                           "antspy/r64slice.jpg", "antspy/r85slice.jpg"}) {
    INFO(name);
    check_image(read_image<std::uint8_t, 2>(data_dir() / name), facts()[name], false);
  }
}

TEST_CASE("MetaImage CT (itkelastix): 2D head pair with masks, 3D lung masks") {
  for (const auto& [name, f] : facts().items()) {
    if (!name.starts_with("itkelastix-ct/") || !name.ends_with(".mha")) continue;
    INFO(name);
    if (f["shape"].size() == 2) check_image(read_metaimage<std::int16_t, 2>(data_dir() / name), f);
    else check_image(read_metaimage<std::uint8_t, 3>(data_dir() / name), f);
  }
}

TEST_CASE("elastix point files (itkelastix): 3D lung correspondences in mm") {
  for (const auto& [name, f] : facts().items()) {
    if (!name.starts_with("itkelastix-ct/") || !name.ends_with(".txt")) continue;
    INFO(name);
    const auto ps = read_elastix_points<3>(data_dir() / name);
    CHECK(ps.is_index == (f["kind"] == "index"));
    CHECK(ps.points.size() == f["count"].get<std::size_t>());
    std::vector<double> flat;
    for (const auto& p : ps.points) flat.insert(flat.end(), p.begin(), p.end());
    check_sums(sums_of(flat.data(), index_t(flat.size())), f);
  }
  // The corrected fixed/moving sets correspond one to one.
  CHECK(read_elastix_points<3>(data_dir() / "itkelastix-ct/CT_3D_lung_fixed_point_set_corrected.txt").points.size() ==
        read_elastix_points<3>(data_dir() / "itkelastix-ct/CT_3D_lung_moving_point_set_corrected.txt").points.size());
}

TEST_CASE("NumPy .npz (voxelmorph): the T1 scan, its FreeSurfer labels and the Dice label list") {
  const auto z = NpzArchive::open(data_dir() / "voxelmorph/test_scan.npz");
  const auto vol = z.tensor<double, 3>("vol");
  const auto& fv = facts()["voxelmorph/test_scan.npz:vol"];
  for (std::size_t a = 0; a < 3; ++a) CHECK(vol.extent(a) == fv["shape"][a].get<index_t>());
  check_sums(sums_of(vol.data(), vol.size()), fv);
  const auto seg = z.tensor<std::int32_t, 3>("seg");
  Image<std::int32_t, 3> seg_img;
  seg_img.voxels = seg;
  check_image(seg_img, facts()["voxelmorph/test_scan.npz:seg"], false);
  const auto labels = NpzArchive::open(data_dir() / "voxelmorph/labels.npz").tensor<std::int64_t, 1>("labels");
  const auto want = facts()["voxelmorph/labels.npz:labels"]["values"].get<std::vector<std::int64_t>>();
  REQUIRE(labels.size() == index_t(want.size()));
  for (index_t i = 0; i < labels.size(); ++i) CHECK(labels(i) == want[std::size_t(i)]);
}

TEST_CASE("MNIST IDX (gzip)") {
  const auto images = read_idx_images(data_dir() / "mnist/t10k-images-idx3-ubyte.gz");
  const auto labels = read_idx_labels(data_dir() / "mnist/t10k-labels-idx1-ubyte.gz");
  Image<std::uint8_t, 3> im;
  im.voxels = images;
  check_image(im, facts()["mnist/t10k-images-idx3-ubyte.gz"], false);
  check_sums(sums_of(labels.data(), labels.size()), facts()["mnist/t10k-labels-idx1-ubyte.gz"]);
  CHECK(labels.size() == images.extent(0));
}

TEST_CASE("ISBI 2012 EM PNGs: 30 images and 30 membrane labels") {
  int n = 0;
  for (const auto& [name, f] : facts().items()) {
    if (!name.starts_with("isbi2012-em/")) continue;
    INFO(name);
    check_image(read_image<std::uint8_t, 2>(data_dir() / name), f, false);
    ++n;
  }
  CHECK(n == 60);
}

// rlmed's metrics on real masks against the scipy/numpy definitions of
// tests/golden/make_golden_metrics.py, evaluated by make_data_facts.py.
template <std::size_t R>
void check_mask_metrics(TensorView<const std::uint8_t, R> pred, TensorView<const std::uint8_t, R> label,
                        const AxisSpacing<R>& spacing, const nlohmann::json& f) {
  const auto want = f["scores"].get<std::vector<double>>(), surf = f["surface"].get<std::vector<double>>();
  const auto s = overlap_scores(pred, label);
  CHECK(s.dice == doctest::Approx(want[0]).epsilon(1e-12));
  CHECK(s.iou == doctest::Approx(want[1]).epsilon(1e-12));
  CHECK(s.ppv == doctest::Approx(want[2]).epsilon(1e-12));
  CHECK(s.sensitivity == doctest::Approx(want[3]).epsilon(1e-12));
  CHECK(boundary_iou(pred, label) == doctest::Approx(want[4]).epsilon(1e-12));
  CHECK(default_boundary_band_width(pred.shape()) == want[5]);
  const auto d = surface_distance_summary(pred, label, spacing, 95.0);
  CHECK(d.percentile == doctest::Approx(surf[0]).epsilon(1e-9));
  CHECK(d.hausdorff == doctest::Approx(surf[1]).epsilon(1e-9));
  CHECK(d.mean == doctest::Approx(surf[2]).epsilon(1e-9));
}

template <class T, std::size_t R>
Tensor<std::uint8_t, R> binary(TensorView<const T, R> v, double threshold) {
  Tensor<std::uint8_t, R> m(v.shape());
  for (index_t i = 0; i < v.size(); ++i) m.data()[i] = double(v.data()[i]) > threshold ? 1 : 0;
  return m;
}

TEST_CASE("Metrics on real masks: CT head and lung masks, EM membrane labels") {
  const auto ct = data_dir() / "itkelastix-ct";
  {
    const auto fixed = read_metaimage<std::uint8_t, 2>(ct / "CT_2D_head_fixed_mask.mha");
    const auto moving = read_metaimage<std::uint8_t, 2>(ct / "CT_2D_head_moving_mask.mha");
    check_mask_metrics<2>(binary<std::uint8_t, 2>(moving.view(), 0).view(), binary<std::uint8_t, 2>(fixed.view(), 0).view(),
                          spacing_per_tensor_axis(fixed), facts()["metrics:ct2d_head_masks"]);
  }
  {
    const auto fixed = read_metaimage<std::uint8_t, 3>(ct / "CT_3D_lung_fixed_mask.mha");
    const auto moving = read_metaimage<std::uint8_t, 3>(ct / "CT_3D_lung_moving_mask.mha");
    // The moving grid is larger: compare its leading corner of the fixed grid's size.
    Tensor<std::uint8_t, 3> corner(fixed.shape());
    for (index_t z = 0; z < fixed.voxels.extent(0); ++z)
      for (index_t y = 0; y < fixed.voxels.extent(1); ++y)
        for (index_t x = 0; x < fixed.voxels.extent(2); ++x) corner(z, y, x) = moving.voxels(z, y, x) != 0;
    check_mask_metrics<3>(corner.view(), binary<std::uint8_t, 3>(fixed.view(), 0).view(), spacing_per_tensor_axis(fixed),
                          facts()["metrics:ct3d_lung_masks"]);
  }
  const auto labels = data_dir() / "isbi2012-em/data/membrane/train/label";
  const auto l0 = read_png_gray(labels / "0.png"), l1 = read_png_gray(labels / "1.png");
  check_mask_metrics<2>(binary<std::uint8_t, 2>(l1.view(), 127).view(), binary<std::uint8_t, 2>(l0.view(), 127).view(),
                        {1.0, 1.0}, facts()["metrics:em_labels_0_1"]);
}

TEST_CASE("Data files survive rlmed's own round trip (read → write → read is exact)") {
  const auto tmp = fs::temp_directory_path() / "rlmed_test_imaging_data";
  fs::create_directories(tmp);
  const auto atlas = read_nifti<std::int16_t, 3>(data_dir() / "antspy/mnia.nii.gz");
  write_nifti(tmp / "mnia.nii.gz", atlas);
  const auto back = read_nifti<std::int16_t, 3>(tmp / "mnia.nii.gz");
  CHECK(bitwise_equal(back.voxels, atlas.voxels));
  CHECK(same_geometry(back, atlas));
  const auto ct = read_metaimage<std::int16_t, 2>(data_dir() / "itkelastix-ct/CT_2D_head_moving.mha");
  write_metaimage(tmp / "ct.mha", ct, true);
  CHECK(bitwise_equal(read_metaimage<std::int16_t, 2>(tmp / "ct.mha").voxels, ct.voxels));
}

int main(int argc, char** argv) {
  if (!fs::exists(data_dir() / "README.md")) {
    std::cout << "SKIPPED: real data not found at '" << data_dir().string()
              << "' (set RLMED_DATA_DIR or the CMake cache variable RLMED_DATA_DIR)\n";
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
