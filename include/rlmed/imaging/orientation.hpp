// rlmed/imaging/orientation.hpp — axis permutations and flips, orientation codes, and
// reorientation to the canonical RAS voxel order.
//
// Design decisions:
//  * Reorientation only permutes and flips voxel axes (no interpolation), so it is exact and
//    every voxel keeps its world position; the geometry (direction, spacing, origin) is
//    rewritten to match. Obliquely acquired images go to the closest canonical order, with the
//    residual rotation kept in `direction`.
//  * Orientation codes follow nibabel's aff2axcodes: one letter per index axis (x, y, z) naming
//    the world direction in which that index increases — "RAS" means x runs to the patient's
//    Right, y Anterior, z Superior (i.e. direction ≈ diag(-1, -1, 1) in rlmed's LPS world).
#pragma once

#include <array>
#include <cmath>
#include <string>

#include "rlmed/imaging/image.hpp"

namespace rlmed::imaging {

/// Letters (index-increasing direction) for each index axis (x, y, z), e.g. "RAS" or "LPI".
template <class T, std::size_t Dim>
std::string orientation_code(const Image<T, Dim>& img) {
  static constexpr char positive[3] = {'L', 'P', 'S'}, negative[3] = {'R', 'A', 'I'};
  std::string code;
  for (std::size_t a = 0; a < Dim; ++a) {
    std::size_t w = 0;
    for (std::size_t r = 1; r < Dim; ++r)
      if (std::abs(img.direction[r * Dim + a]) > std::abs(img.direction[w * Dim + a])) w = r;
    code += img.direction[w * Dim + a] >= 0 ? positive[w] : negative[w];
  }
  return code;
}

/// New image whose index axis k is the old index axis perm[k] (physical order x, y, z),
/// reversed when flip[k]. Voxels keep their world positions exactly.
template <class T, std::size_t Dim>
Image<T, Dim> permute_flip_axes(const Image<T, Dim>& img, const std::array<std::size_t, Dim>& perm,
                                const std::array<bool, Dim>& flip) {
  std::array<bool, Dim> seen{};
  for (auto p : perm) {
    RLMED_CHECK(p < Dim && !seen[p], "permute_flip_axes: ", perm, " is not a permutation of the ", Dim, " axes");
    seen[p] = true;
  }
  const auto old_n = img.size_xyz();
  std::array<index_t, Dim> new_n{};
  for (std::size_t k = 0; k < Dim; ++k) new_n[k] = old_n[perm[k]];
  Shape<Dim> shape{};
  for (std::size_t k = 0; k < Dim; ++k) shape[tensor_axis<Dim>(k)] = new_n[k];
  Image<T, Dim> out;
  out.voxels = Tensor<T, Dim>::uninitialized(shape);
  // Old linear strides along each physical axis, and the walk that each new axis makes in them.
  std::array<index_t, Dim> old_stride{};
  {
    index_t s = 1;
    for (std::size_t a = 0; a < Dim; ++a) { old_stride[a] = s; s *= old_n[a]; }
  }
  index_t base = 0;
  std::array<index_t, Dim> step{};
  for (std::size_t k = 0; k < Dim; ++k) {
    step[k] = flip[k] ? -old_stride[perm[k]] : old_stride[perm[k]];
    if (flip[k]) base += (old_n[perm[k]] - 1) * old_stride[perm[k]];
  }
  const T* src = img.voxels.data();
  T* dst = out.voxels.data();
  std::array<index_t, Dim> idx{};
  const index_t total = out.voxels.size();
  index_t off = base;
  for (index_t i = 0; i < total; ++i) {  // new x fastest
    dst[i] = src[off];
    for (std::size_t k = 0; k < Dim; ++k) {
      off += step[k];
      if (++idx[k] < new_n[k]) break;
      off -= step[k] * new_n[k];
      idx[k] = 0;
    }
  }
  Vec<Dim> corner{};
  for (std::size_t k = 0; k < Dim; ++k) corner[perm[k]] = flip[k] ? double(old_n[perm[k]] - 1) : 0.0;
  out.origin_mm = img.index_to_physical(corner);
  for (std::size_t k = 0; k < Dim; ++k) {
    out.spacing_mm[k] = img.spacing_mm[perm[k]];
    for (std::size_t r = 0; r < Dim; ++r) out.direction[r * Dim + k] = (flip[k] ? -1.0 : 1.0) * img.direction[r * Dim + perm[k]];
  }
  return out;
}

/// The closest canonical RAS voxel order (3D; 2D images get "RA").
template <class T, std::size_t Dim>
Image<T, Dim> reorient_to_ras(const Image<T, Dim>& img) {
  std::array<std::size_t, Dim> perm{};
  std::array<bool, Dim> flip{}, used{};
  // World axis w takes the index axis most aligned with it, strongest pairs first (robust for
  // oblique scans, where a row of `direction` may have two sizeable entries).
  std::array<bool, Dim> world_done{};
  for (std::size_t round = 0; round < Dim; ++round) {
    double best = -1;
    std::size_t bw = 0, ba = 0;
    for (std::size_t w = 0; w < Dim; ++w) {
      if (world_done[w]) continue;
      for (std::size_t a = 0; a < Dim; ++a) {
        if (used[a]) continue;
        const double v = std::abs(img.direction[w * Dim + a]);
        if (v > best) { best = v; bw = w; ba = a; }
      }
    }
    world_done[bw] = true;
    used[ba] = true;
    perm[bw] = ba;
    const double desired = bw < 2 ? -1.0 : 1.0;  // R and A are negative LPS x and y
    flip[bw] = img.direction[bw * Dim + ba] * desired < 0;
  }
  return permute_flip_axes(img, perm, flip);
}

}  // namespace rlmed::imaging
