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
#pragma once

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

}  // namespace rlmed::env
