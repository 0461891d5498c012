// rlmed/imaging/pyramid.hpp — Gaussian image pyramids whose levels share one world geometry
// (multi-scale landmark search: an agent moves from coarse to fine at the same physical point).
//
// Design decisions:
//  * Level l+1 halves level l along every axis with at least 2 voxels: n' = floor(n / 2), and
//    coarse voxel j covers the fine voxels 2j and 2j+1. Its centre is the fine continuous index
//    2j + 0.5, so spacing doubles and the origin moves by half a fine voxel along each index
//    axis (through the direction matrix). A world point therefore lands on the same anatomy on
//    every level; axes of one voxel keep their size, spacing and origin.
//  * Before halving, level l is smoothed with a Gaussian of σ = 1 fine voxel by default (ITK's
//    multi-resolution pyramid uses σ = factor / 2 = 1 for a factor of 2), 'reflect' boundaries;
//    the coarse value is then the linear sample at 2j + 0.5, i.e. the mean of the two smoothed
//    fine voxels per axis.
//  * Levels are Images: geometry helpers (index_at_level, voxel_at_level, map_index) go through
//    Image::physical_to_index, never through ad-hoc factors of 2.
#pragma once

#include <vector>

#include "rlmed/imaging/image.hpp"
#include "rlmed/imaging/resample.hpp"

namespace rlmed::imaging {

struct PyramidOptions {
  index_t levels = 3;      ///< number of levels including the input (>= 1)
  double sigma_vox = 1.0;  ///< pre-smoothing in voxels of the finer level (>= 0)
};

/// The grid one level coarser than `fine`: halved sizes, doubled spacing, origin at the centre
/// of the merged voxels (see the header).
template <std::size_t Dim>
Grid<Dim> coarser_grid(const Grid<Dim>& fine) {
  fine.validate();
  Grid<Dim> g = fine;
  Vec<Dim> shift_vox{};
  for (std::size_t a = 0; a < Dim; ++a) {
    if (fine.size_xyz[a] < 2) continue;
    g.size_xyz[a] = fine.size_xyz[a] / 2;
    g.spacing_mm[a] = 2.0 * fine.spacing_mm[a];
    shift_vox[a] = 0.5;
  }
  Vec<Dim> scaled{};
  for (std::size_t a = 0; a < Dim; ++a) scaled[a] = shift_vox[a] * fine.spacing_mm[a];
  const Vec<Dim> moved = mat_vec<Dim>(fine.direction, scaled);
  for (std::size_t a = 0; a < Dim; ++a) g.origin_mm[a] = fine.origin_mm[a] + moved[a];
  return g;
}

/// Levels 0 (the input) to L-1 (coarsest) of a Gaussian pyramid.
template <class T, std::size_t Dim>
struct Pyramid {
  std::vector<Image<T, Dim>> levels;

  [[nodiscard]] index_t level_count() const noexcept { return static_cast<index_t>(levels.size()); }

  [[nodiscard]] const Image<T, Dim>& level(index_t l) const {
    RLMED_CHECK(l >= 0 && l < level_count(), "pyramid level ", l, " out of range [0, ", level_count(), ")");
    return levels[static_cast<std::size_t>(l)];
  }

  /// Continuous index (x, y, z) of a world point on level l.
  [[nodiscard]] Vec<Dim> index_at_level(index_t l, const Vec<Dim>& point_mm) const {
    return level(l).physical_to_index(point_mm);
  }

  /// Nearest voxel (x, y, z) of a world point on level l (may lie outside the level's grid).
  [[nodiscard]] std::array<index_t, Dim> voxel_at_level(index_t l, const Vec<Dim>& point_mm) const {
    const Vec<Dim> c = index_at_level(l, point_mm);
    std::array<index_t, Dim> v{};
    for (std::size_t a = 0; a < Dim; ++a) {
      RLMED_CHECK(std::isfinite(c[a]) && std::abs(c[a]) < 1e15, "voxel_at_level: point ", point_mm,
                  " maps to a non-representable index ", c);
      v[a] = static_cast<index_t>(std::floor(c[a] + 0.5));
    }
    return v;
  }

  /// The same world point: continuous index on level `from` → continuous index on level `to`.
  [[nodiscard]] Vec<Dim> map_index(index_t from, const Vec<Dim>& index_xyz, index_t to) const {
    return level(to).physical_to_index(level(from).index_to_physical(index_xyz));
  }
};

/// Builds a Gaussian pyramid (see the header for geometry and filtering).
template <class T, std::size_t Dim>
Pyramid<T, Dim> build_pyramid(const Image<T, Dim>& image, const PyramidOptions& options = {}) {
  static_assert(std::is_floating_point_v<T>, "pyramids are built from float or double images");
  RLMED_CHECK(options.levels >= 1 && options.levels <= 32, "build_pyramid: levels must be in [1, 32]; found ",
              options.levels);
  RLMED_CHECK(std::isfinite(options.sigma_vox) && options.sigma_vox >= 0,
              "build_pyramid: sigma must be finite and >= 0 voxels; found ", options.sigma_vox);
  RLMED_CHECK(image.voxels.size() > 0, "build_pyramid: the image is empty (shape ", image.shape(), ")");
  image.validate_geometry();
  Pyramid<T, Dim> p;
  p.levels.reserve(static_cast<std::size_t>(options.levels));
  p.levels.push_back(image);
  Tensor<T, 1> scratch;
  for (index_t l = 1; l < options.levels; ++l) {
    const Image<T, Dim>& fine = p.levels.back();
    const Grid<Dim> g = coarser_grid(grid_of(fine));
    std::array<double, Dim> sigma{};
    for (std::size_t a = 0; a < Dim; ++a)
      sigma[tensor_axis<Dim>(a)] = g.size_xyz[a] != fine.size_xyz()[a] ? options.sigma_vox : 0.0;
    Image<T, Dim> smoothed = image_like<T>(fine);
    gaussian_smooth_into<T, Dim>(smoothed.view(), fine.view(), sigma, scratch);
    Image<T, Dim> coarse = resample(smoothed, g, Interpolation::linear, T(0));
    p.levels.push_back(std::move(coarse));
  }
  return p;
}

}  // namespace rlmed::imaging
