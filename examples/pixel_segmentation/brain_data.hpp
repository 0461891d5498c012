// brain_data.hpp — the cross-subject brain protocol of issue 6 (docs/systems/pixeldrl.md):
// train on axial slices of the voxelmorph subject with its deep grey nuclei (FreeSurfer
// thalamus, caudate, putamen, pallidum: 10-13 and 49-52) as foreground; test on axial slices
// of the MNI152 template with the AAL equivalents (71-78). Slices without foreground are removed.
//
// Design decisions:
//  * The voxelmorph array carries no orientation, so its axes are found from its own labels:
//    the left-right axis separates left and right thalamus (10 vs 49) the most; of the other
//    two, the anterior-posterior axis separates hippocampus (17) from amygdala (18) the most;
//    the remaining axis is superior-inferior, and axial slices are taken across it. MNI152 is
//    read through NIfTI and reoriented to RAS, so its axial axis is tensor axis 0.
//  * In-plane orientation of the two brains is not matched (training uses random flips); the
//    intensities are z-scored per slice like every other loader of seg/dataset.hpp.
#pragma once

#include <array>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "rlmed/imaging/io/io.hpp"
#include "rlmed/imaging/io/npy.hpp"
#include "rlmed/imaging/orientation.hpp"
#include "rlmed/seg/dataset.hpp"

namespace pixel_segmentation {

using namespace rlmed;

inline bool is_deep_grey_freesurfer(double l) {
  const int v = static_cast<int>(std::lround(l));
  return (v >= 10 && v <= 13) || (v >= 49 && v <= 52);
}
inline bool is_deep_grey_aal(double l) {
  const int v = static_cast<int>(std::lround(l));
  return v >= 71 && v <= 78;
}

namespace detail {

/// Centroid (tensor index space) of the voxels equal to `label`; throws when there are none.
inline std::array<double, 3> centroid_of(TensorView<const std::int32_t, 3> seg, int label, const char* source) {
  std::array<double, 3> c{0, 0, 0};
  double n = 0;
  for (index_t z = 0; z < seg.extent(0); ++z)
    for (index_t y = 0; y < seg.extent(1); ++y)
      for (index_t x = 0; x < seg.extent(2); ++x)
        if (seg(z, y, x) == label) {
          c[0] += double(z);
          c[1] += double(y);
          c[2] += double(x);
          n += 1;
        }
  RLMED_CHECK(n > 0, "brain data: ", source, " has no voxel of label ", label);
  for (double& v : c) v /= n;
  return c;
}

/// Axial slices across `axis` of (image, mask) volumes, keeping those with foreground.
template <class Img, class IsFg>
seg::SegmentationSet axial_slices(const Img& image, TensorView<const std::int32_t, 3> labels, std::size_t axis,
                                  IsFg&& is_fg, const std::string& prefix) {
  const std::array<index_t, 3> ext{labels.extent(0), labels.extent(1), labels.extent(2)};
  std::array<std::size_t, 2> in_plane{};
  for (std::size_t a = 0, k = 0; a < 3; ++a)
    if (a != axis) in_plane[k++] = a;
  const index_t H = ext[in_plane[0]], W = ext[in_plane[1]];
  seg::SegmentationSet set;
  for (index_t s = 0; s < ext[axis]; ++s) {
    Tensor<float, 2> im(Shape<2>{H, W}), mk(Shape<2>{H, W});
    bool any = false;
    for (index_t r = 0; r < H; ++r)
      for (index_t c = 0; c < W; ++c) {
        std::array<index_t, 3> idx{};
        idx[axis] = s;
        idx[in_plane[0]] = r;
        idx[in_plane[1]] = c;
        im(r, c) = static_cast<float>(image(idx[0], idx[1], idx[2]));
        const bool fg = is_fg(labels(idx[0], idx[1], idx[2]));
        mk(r, c) = fg ? 1.0f : 0.0f;
        any = any || fg;
      }
    if (!any) continue;
    seg::zscore_in_place(im);
    set.add(prefix + std::to_string(s), std::move(im), std::move(mk));
  }
  RLMED_CHECK(!set.empty(), "brain data: no ", prefix, " slice contains the deep grey nuclei");
  return set;
}

}  // namespace detail

/// Training slices of the voxelmorph subject (`<root>/voxelmorph/test_scan.npz`: vol, seg).
inline seg::SegmentationSet load_brain_train(const std::filesystem::path& root) {
  const auto path = root / "voxelmorph" / "test_scan.npz";
  RLMED_CHECK(std::filesystem::exists(path), "load_brain_train: '", path.string(),
              "' not found (set RLMED_DATA_DIR to the shared data folder)");
  const auto z = imaging::NpzArchive::open(path);
  const auto vol = z.tensor<double, 3>("vol");
  const auto seg = z.tensor<std::int32_t, 3>("seg");
  RLMED_CHECK(vol.shape() == seg.shape(), "load_brain_train: vol ", vol.shape(), " and seg ", seg.shape(), " differ");
  const auto src = path.string();
  const auto l = detail::centroid_of(seg.view(), 10, src.c_str()), r = detail::centroid_of(seg.view(), 49, src.c_str());
  const auto hip = detail::centroid_of(seg.view(), 17, src.c_str()), amy = detail::centroid_of(seg.view(), 18, src.c_str());
  std::size_t lr = 0;
  for (std::size_t a = 1; a < 3; ++a)
    if (std::abs(l[a] - r[a]) > std::abs(l[lr] - r[lr])) lr = a;
  std::size_t ap = 3, si = 3;
  for (std::size_t a = 0; a < 3; ++a) {
    if (a == lr) continue;
    if (ap == 3 || std::abs(hip[a] - amy[a]) > std::abs(hip[ap] - amy[ap])) ap = a;
  }
  for (std::size_t a = 0; a < 3; ++a)
    if (a != lr && a != ap) si = a;
  return detail::axial_slices(vol, seg.view(), si, [](std::int32_t v) { return is_deep_grey_freesurfer(v); },
                              "voxelmorph_axial_");
}

/// Test slices of MNI152 (`<root>/antspy/mni.nii.gz`) with the AAL labels (`mnia.nii.gz`).
inline seg::SegmentationSet load_brain_test(const std::filesystem::path& root) {
  const auto dir = root / "antspy";
  RLMED_CHECK(std::filesystem::exists(dir / "mni.nii.gz") && std::filesystem::exists(dir / "mnia.nii.gz"),
              "load_brain_test: '", dir.string(), "' lacks mni.nii.gz / mnia.nii.gz (set RLMED_DATA_DIR)");
  const auto img = imaging::reorient_to_ras(imaging::read_image<float, 3>(dir / "mni.nii.gz"));
  const auto lab = imaging::reorient_to_ras(imaging::read_image<float, 3>(dir / "mnia.nii.gz"));
  RLMED_CHECK(img.voxels.shape() == lab.voxels.shape(), "load_brain_test: image ", img.voxels.shape(), " and labels ",
              lab.voxels.shape(), " differ");
  Tensor<std::int32_t, 3> labels(lab.voxels.shape());
  for (index_t i = 0; i < labels.size(); ++i) labels.data()[i] = static_cast<std::int32_t>(std::lround(lab.voxels.data()[i]));
  return detail::axial_slices(img.voxels, labels.view(), 0, [](std::int32_t v) { return is_deep_grey_aal(v); },
                              "mni152_axial_");
}

}  // namespace pixel_segmentation
