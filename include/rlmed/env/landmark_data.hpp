// rlmed/env/landmark_data.hpp — landmark datasets as env::LandmarkVolume lists: the generated 3D
// head phantom, rl-medical's list-file format, and augmented copies for small data.
//
// Design decisions:
//  * Every image is percentile-normalised to [0, 1] (0.5–99.5 %) before its pyramid is built, so
//    the agents see the same intensity range whatever the scanner or file type.
//  * rl-medical landmark files hold voxel (x, y, z) of their image; they are converted to world mm
//    through the image geometry once, here, and everything downstream works in mm.
//  * Landmark selection (`--landmark-ids`) is checked against every file: a file with too few
//    landmarks is an rlmed::Error naming it.
//  * Brain protocol: the 12 landmarks are centroids of subcortical labels (FreeSurfer on the
//    voxelmorph subject, AAL on MNI152). voxelmorph's arrays carry no geometry; they are the
//    FreeSurfer "conformed" 1 mm grid cropped, i.e. numpy axes (0, 1, 2) run towards Left,
//    Inferior, Anterior (LIA) — declared here, not inferred from the labels, so the data test's
//    left/right check can fail. Both brains go to RAS voxel order and 1 mm, and their world
//    frames are made comparable by a translation only: the centroid of each brain's intensity
//    mask (voxels above 10 % of the normalised range) becomes the world origin. That gives a
//    test-time start (the mean training landmark) a meaning in the other brain without using
//    its labels.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/env/landmark.hpp"
#include "rlmed/imaging/augment.hpp"
#include "rlmed/imaging/io/io.hpp"
#include "rlmed/imaging/io/landmarks.hpp"
#include "rlmed/imaging/normalize.hpp"
#include "rlmed/imaging/orientation.hpp"
#include "rlmed/imaging/resample.hpp"
#include "rlmed/imaging/phantom.hpp"

namespace rlmed::env {

/// Picks landmark_ids from a list of points; rlmed::Error naming `what` when one is missing.
template <std::size_t Dim>
std::vector<Vec<Dim>> select_landmarks(const std::vector<Vec<Dim>>& all, std::span<const int> ids, const std::string& what) {
  std::vector<Vec<Dim>> out;
  for (int id : ids) {
    RLMED_CHECK(id >= 0 && static_cast<std::size_t>(id) < all.size(), what, " has ", all.size(),
                " landmarks; landmark id ", id, " was requested");
    out.push_back(all[static_cast<std::size_t>(id)]);
  }
  return out;
}

/// An rl-medical dataset (image list + landmark list, voxel x,y,z per line) as landmark volumes
/// whose landmark k is landmark_ids[k] of the files.
inline std::vector<LandmarkVolume<3>> load_rlmedical_volumes(const std::filesystem::path& image_list,
                                                             const std::filesystem::path& landmark_list,
                                                             std::span<const int> landmark_ids, index_t levels) {
  const auto cases = imaging::read_landmark_dataset(image_list, landmark_list);
  std::vector<LandmarkVolume<3>> out;
  for (const auto& c : cases) {
    const auto img = imaging::percentile_normalize(imaging::read_image<float, 3>(c.image));
    std::vector<Vec<3>> mm;
    for (const auto& v : c.landmarks_vox) mm.push_back(img.index_to_physical(v));
    std::string what = "the landmark file of ";
    what.append(c.image.string());
    out.push_back(make_landmark_volume<3>(img, select_landmarks<3>(mm, landmark_ids, what), levels,
                                          c.image.filename().string()));
  }
  return out;
}

/// Head phantoms (seeds seed, seed+1, ...) with all their landmarks (names in `names` if given).
inline std::vector<LandmarkVolume<3>> phantom_landmark_volumes(index_t count, std::uint64_t seed,
                                                               const imaging::HeadPhantomOptions& options, index_t levels,
                                                               std::vector<std::string>* names = nullptr) {
  RLMED_CHECK(count >= 1, "phantom_landmark_volumes: count must be >= 1; found ", count);
  std::vector<LandmarkVolume<3>> out;
  for (index_t i = 0; i < count; ++i) {
    const auto h = imaging::make_head_phantom(options, seed + static_cast<std::uint64_t>(i));
    std::vector<Vec<3>> mm;
    for (const auto& l : h.landmarks) mm.push_back(l.point_mm);
    if (names && i == 0) {
      names->clear();
      for (const auto& l : h.landmarks) names->push_back(l.name);
    }
    out.push_back(make_landmark_volume<3>(imaging::percentile_normalize(h.image), std::move(mm), levels,
                                          "phantom" + std::to_string(seed + static_cast<std::uint64_t>(i))));
  }
  return out;
}

/// `copies` random affine + intensity augmentations of the finest level of `v` (stream `stream`
/// of `seed`), each with its transformed landmarks.
inline std::vector<LandmarkVolume<3>> augmented_volumes(const LandmarkVolume<3>& v, index_t copies,
                                                        const imaging::AugmentOptions& options, std::uint64_t seed,
                                                        std::uint64_t stream, index_t levels) {
  PhiloxStream rng(seed, stream);
  std::vector<LandmarkVolume<3>> out;
  for (index_t i = 0; i < copies; ++i) {
    auto a = imaging::augment<3>(v.pyramid.level(0), v.landmarks_mm, options, rng);
    out.push_back(make_landmark_volume<3>(a.image, std::move(a.points_mm), levels, v.name + "_aug" + std::to_string(i)));
  }
  return out;
}

/// One landmark of the brain protocol: the centroid of a subcortical structure.
struct BrainLandmarkSpec {
  const char* name;
  int freesurfer_label;  ///< label in voxelmorph's `seg`
  int aal_label;         ///< label in antspy's `mnia` (AAL-116 numbering)
};

/// The 12 landmarks of the brain protocol, in protocol order (../shared/data/README.md).
inline const std::array<BrainLandmarkSpec, 12>& brain_landmark_specs() {
  static const std::array<BrainLandmarkSpec, 12> specs{{
      {"thalamus_L", 10, 77},    {"thalamus_R", 49, 78},   {"caudate_L", 11, 71},     {"caudate_R", 50, 72},
      {"putamen_L", 12, 73},     {"putamen_R", 51, 74},    {"pallidum_L", 13, 75},    {"pallidum_R", 52, 76},
      {"hippocampus_L", 17, 37}, {"hippocampus_R", 53, 38}, {"amygdala_L", 18, 41},   {"amygdala_R", 54, 42},
  }};
  return specs;
}

/// A brain of the protocol: intensity image normalised to [0, 1] and its label map on the same
/// grid (RAS, 1 mm, world origin at the intensity-mask centroid), with the 12 landmarks in mm.
struct LabelledBrain {
  imaging::Image<float, 3> image;
  imaging::Image<std::int32_t, 3> labels;
  std::vector<Vec<3>> landmarks_mm;  ///< brain_landmark_specs() order
  std::vector<int> landmark_labels;  ///< the label of each landmark in `labels`
  std::string name;
};

/// Centroid (world mm) of the voxels equal to `label`; rlmed::Error naming `what` when absent.
inline Vec<3> label_centroid_mm(const imaging::Image<std::int32_t, 3>& labels, int label, const std::string& what) {
  const auto n = labels.size_xyz();
  double sx = 0, sy = 0, sz = 0;
  std::int64_t count = 0;
  const std::int32_t* v = labels.voxels.data();
  for (index_t z = 0, i = 0; z < n[2]; ++z)
    for (index_t y = 0; y < n[1]; ++y)
      for (index_t x = 0; x < n[0]; ++x, ++i)
        if (v[i] == label) { sx += double(x); sy += double(y); sz += double(z); ++count; }
  RLMED_CHECK(count > 0, what, ": label ", label, " has no voxels; expected a labelled structure");
  const double c = double(count);
  return labels.index_to_physical(Vec<3>{sx / c, sy / c, sz / c});
}

/// Centroid (world mm) of the voxels of `image` above `threshold`.
inline Vec<3> mask_centroid_mm(const imaging::Image<float, 3>& image, float threshold) {
  const auto n = image.size_xyz();
  double sx = 0, sy = 0, sz = 0;
  std::int64_t count = 0;
  const float* v = image.voxels.data();
  for (index_t z = 0, i = 0; z < n[2]; ++z)
    for (index_t y = 0; y < n[1]; ++y)
      for (index_t x = 0; x < n[0]; ++x, ++i)
        if (v[i] > threshold) { sx += double(x); sy += double(y); sz += double(z); ++count; }
  RLMED_CHECK(count > 0, "mask_centroid_mm: no voxel above ", threshold);
  const double c = double(count);
  return image.index_to_physical(Vec<3>{sx / c, sy / c, sz / c});
}

namespace detail {

/// RAS + 1 mm + origin at the intensity-mask centroid, then the landmarks from the label map.
inline LabelledBrain finish_brain(imaging::Image<float, 3> image, imaging::Image<std::int32_t, 3> labels, bool aal,
                                  std::string name) {
  RLMED_CHECK(image.voxels.shape() == labels.voxels.shape(), name, ": image shape ", image.voxels.shape(),
              " differs from label shape ", labels.voxels.shape());
  image = imaging::reorient_to_ras(image);
  labels = imaging::reorient_to_ras(labels);
  const Vec<3> one{1.0, 1.0, 1.0};
  bool is_1mm = true;
  for (double s : image.spacing_mm) is_1mm = is_1mm && std::abs(s - 1.0) < 1e-6;
  if (!is_1mm) {
    image = imaging::resample_to_spacing(image, one);
    labels = imaging::resample_to_spacing(labels, one, imaging::ResampleOptions{imaging::Interpolation::nearest, false, 0.0});
  }
  image = imaging::percentile_normalize(image);
  const Vec<3> centre = mask_centroid_mm(image, 0.1f);
  for (std::size_t a = 0; a < 3; ++a) {
    image.origin_mm[a] -= centre[a];
    labels.origin_mm[a] -= centre[a];
  }
  LabelledBrain b;
  for (const auto& s : brain_landmark_specs()) {
    const int label = aal ? s.aal_label : s.freesurfer_label;
    b.landmarks_mm.push_back(label_centroid_mm(labels, label, name + " (" + s.name + ")"));
    b.landmark_labels.push_back(label);
  }
  b.image = std::move(image);
  b.labels = std::move(labels);
  b.name = std::move(name);
  return b;
}

}  // namespace detail

/// The voxelmorph subject (data_dir/voxelmorph/test_scan.npz: `vol`, FreeSurfer `seg`).
inline LabelledBrain load_voxelmorph_brain(const std::filesystem::path& data_dir) {
  const auto z = imaging::NpzArchive::open(data_dir / "voxelmorph" / "test_scan.npz");
  imaging::Image<float, 3> image;
  {
    const auto vol = z.tensor<double, 3>("vol");  // [160, 192, 224] numpy axes L, I, A
    image.voxels = Tensor<float, 3>::uninitialized(vol.shape());
    for (index_t i = 0; i < vol.size(); ++i) image.voxels.data()[i] = static_cast<float>(vol.data()[i]);
  }
  imaging::Image<std::int32_t, 3> labels;
  labels.voxels = z.tensor<std::int32_t, 3>("seg");
  // Index x = numpy axis 2 (Anterior = −y LPS), y = axis 1 (Inferior = −z), z = axis 0 (Left = +x).
  const imaging::Mat<3> lia{0, 0, 1, -1, 0, 0, 0, -1, 0};
  image.direction = labels.direction = lia;
  return detail::finish_brain(std::move(image), std::move(labels), false, "voxelmorph");
}

/// MNI152 with its AAL labels (data_dir/antspy/mni.nii.gz, mnia.nii.gz).
inline LabelledBrain load_mni_brain(const std::filesystem::path& data_dir) {
  auto image = imaging::read_image<float, 3>(data_dir / "antspy" / "mni.nii.gz");
  auto labels = imaging::read_image<std::int32_t, 3>(data_dir / "antspy" / "mnia.nii.gz");
  RLMED_CHECK(labels.origin_mm == image.origin_mm && labels.spacing_mm == image.spacing_mm &&
                  labels.direction == image.direction,
              "antspy/mnia.nii.gz: geometry differs from mni.nii.gz; expected the same grid");
  return detail::finish_brain(std::move(image), std::move(labels), true, "mni");
}

/// The brain as a landmark volume with the landmarks `ids` (indices into brain_landmark_specs()).
inline LandmarkVolume<3> brain_landmark_volume(const LabelledBrain& b, std::span<const int> ids, index_t levels) {
  return make_landmark_volume<3>(b.image, select_landmarks<3>(b.landmarks_mm, ids, b.name), levels, b.name);
}

}  // namespace rlmed::env
