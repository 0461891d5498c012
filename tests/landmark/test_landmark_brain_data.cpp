// Brain protocol data (label data in $RLMED_DATA_DIR): the 12 subcortical-centroid landmarks of
// the voxelmorph subject (FreeSurfer) and of MNI152 (AAL), after RAS + 1 mm + centring.
// Checks: each landmark lies in the brain and within 3 mm of a voxel of its own structure (a
// centroid of a curved structure such as the caudate may fall just outside it); left landmarks
// lie on the patient's left of the brain midline (x < midline x in LPS is Right) and right ones
// on the right; corresponding landmarks of the two brains, whose frames are only translated onto
// each other, are within 15 mm (affinely normalised adult brains differ by a few mm in
// subcortical positions; 15 mm is half the caudate–hippocampus spacing, so a swapped or
// misoriented landmark fails). The RAS grids are checked against their orientation code.
// Exit code 77 (CTest "skipped") with a message when the data folder is missing.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

#include "rlmed/env/landmark_data.hpp"

using namespace rlmed;
namespace fs = std::filesystem;

namespace {

fs::path data_dir() {
  if (const char* env = std::getenv("RLMED_DATA_DIR")) return env;
  return RLMED_TEST_DATA_DIR;
}

const env::LabelledBrain& voxelmorph() {
  static const env::LabelledBrain b = env::load_voxelmorph_brain(data_dir());
  return b;
}
const env::LabelledBrain& mni() {
  static const env::LabelledBrain b = env::load_mni_brain(data_dir());
  return b;
}

double distance_mm(const env::Vec<3>& a, const env::Vec<3>& b) {
  return std::sqrt((a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) + (a[2] - b[2]) * (a[2] - b[2]));
}

// Label at the voxel nearest to p, and whether a voxel of `label` lies within radius_mm of p.
bool near_label(const imaging::Image<std::int32_t, 3>& labels, const env::Vec<3>& p, int label, double radius_mm,
                std::int32_t* at) {
  const auto idx = labels.physical_to_index(p);
  const auto n = labels.size_xyz();
  const index_t cx = std::lround(idx[0]), cy = std::lround(idx[1]), cz = std::lround(idx[2]);
  REQUIRE((cx >= 0 && cy >= 0 && cz >= 0 && cx < n[0] && cy < n[1] && cz < n[2]));
  *at = labels.voxels(cz, cy, cx);
  const index_t r = static_cast<index_t>(std::ceil(radius_mm));
  for (index_t z = std::max<index_t>(0, cz - r); z <= std::min(n[2] - 1, cz + r); ++z)
    for (index_t y = std::max<index_t>(0, cy - r); y <= std::min(n[1] - 1, cy + r); ++y)
      for (index_t x = std::max<index_t>(0, cx - r); x <= std::min(n[0] - 1, cx + r); ++x)
        if (labels.voxels(z, y, x) == label &&
            distance_mm(labels.index_to_physical(env::Vec<3>{double(x), double(y), double(z)}), p) <= radius_mm)
          return true;
  return false;
}

void check_brain(const env::LabelledBrain& b) {
  CHECK(imaging::orientation_code(b.image) == "RAS");
  CHECK(imaging::orientation_code(b.labels) == "RAS");
  for (double s : b.image.spacing_mm) CHECK(s == doctest::Approx(1.0));
  const auto& specs = env::brain_landmark_specs();
  REQUIRE(b.landmarks_mm.size() == specs.size());
  // Midline: the x centroid of the labelled brain (every voxel with a label), independent of the
  // 12 structures and of the intensity mask used for centring.
  double sx = 0;
  std::int64_t count = 0;
  const auto n = b.labels.size_xyz();
  for (index_t z = 0; z < n[2]; ++z)
    for (index_t y = 0; y < n[1]; ++y)
      for (index_t x = 0; x < n[0]; ++x)
        if (b.labels.voxels(z, y, x) > 0) {
          sx += b.labels.index_to_physical(env::Vec<3>{double(x), double(y), double(z)})[0];
          ++count;
        }
  REQUIRE(count > 0);
  const double midline_x = sx / double(count);
  for (std::size_t k = 0; k < specs.size(); ++k) {
    INFO(b.name, " ", specs[k].name, " at ", b.landmarks_mm[k], " mm");
    std::int32_t at = 0;
    CHECK(near_label(b.labels, b.landmarks_mm[k], b.landmark_labels[k], 3.0, &at));
    CHECK(at > 0);  // inside the labelled brain
    const bool left = std::string(specs[k].name).ends_with("_L");
    if (left) CHECK(b.landmarks_mm[k][0] > midline_x);  // LPS: +x is the patient's left
    else CHECK(b.landmarks_mm[k][0] < midline_x);
  }
}

}  // namespace

TEST_CASE("voxelmorph subject: 12 FreeSurfer centroids in the brain, left/right correct") { check_brain(voxelmorph()); }

TEST_CASE("MNI152 / AAL: 12 centroids in the brain, left/right correct") { check_brain(mni()); }

TEST_CASE("the two brains' corresponding landmarks lie within 15 mm after RAS, 1 mm and centring") {
  const auto& specs = env::brain_landmark_specs();
  double mean = 0;
  for (std::size_t k = 0; k < specs.size(); ++k) {
    const double d = distance_mm(voxelmorph().landmarks_mm[k], mni().landmarks_mm[k]);
    INFO(specs[k].name, ": voxelmorph ", voxelmorph().landmarks_mm[k], " mni ", mni().landmarks_mm[k], " -> ", d, " mm");
    CHECK(d < 15.0);
    mean += d / double(specs.size());
  }
  MESSAGE("mean distance between corresponding landmarks: " << mean << " mm");
  // Each landmark is closer to its counterpart than to any other landmark of the other brain.
  for (std::size_t k = 0; k < specs.size(); ++k)
    for (std::size_t j = 0; j < specs.size(); ++j)
      if (j != k) CHECK(distance_mm(voxelmorph().landmarks_mm[k], mni().landmarks_mm[k]) <
                        distance_mm(voxelmorph().landmarks_mm[k], mni().landmarks_mm[j]));
}

TEST_CASE("brain landmark volumes: selection and errors") {
  const std::vector<int> ids{0, 5, 11};
  const auto v = env::brain_landmark_volume(mni(), ids, 1);
  REQUIRE(v.landmark_count() == 3);
  CHECK(v.landmarks_mm[1] == mni().landmarks_mm[5]);
  const std::vector<int> bad{12};
  CHECK_THROWS_AS(env::brain_landmark_volume(mni(), bad, 1), Error);
  CHECK_THROWS_AS(env::load_voxelmorph_brain(data_dir() / "no_such_folder"), Error);
}

int main(int argc, char** argv) {
  if (!fs::exists(data_dir() / "voxelmorph" / "test_scan.npz") || !fs::exists(data_dir() / "antspy" / "mnia.nii.gz")) {
    std::cout << "SKIPPED: brain data not found under '" << data_dir().string()
              << "' (needs voxelmorph/test_scan.npz and antspy/mni*.nii.gz; set RLMED_DATA_DIR or the CMake cache "
                 "variable RLMED_DATA_DIR)\n";
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
