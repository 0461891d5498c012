// rlmed/imaging/patches.hpp — batched 2D/3D patch extraction around agent positions (the
// landmark agent's hot path: every step crops N patches, with the last F positions as frames).
//
// Design decisions:
//  * Sample k (0-based) of a patch along an axis sits at voxel c + (k − P/2)·s, P the patch size
//    along that axis (integer division), s the stride (the level's spacing multiplier, 1 = every
//    voxel). Odd P: the centre is the middle sample, P/2 on each side. Even P: the centre voxel is
//    sample P/2, i.e. P/2 samples before it and P/2 − 1 after it (rl-medical's
//    [c − P/2·s, c + P/2·s] range with the same start, cropped to P samples).
//  * Samples outside the volume are 0 (rl-medical's zero padding); centres may lie anywhere,
//    including far outside (the patch is then all zeros).
//  * One pass over the output: per axis the in-bounds sample range [k_lo, k_hi) of a patch is
//    computed once (no per-voxel bounds test); in-bounds rows are memcpy'd (stride 1) or gathered
//    (stride > 1), the rest of the row and whole out-of-bounds rows/slabs are memset. No
//    allocation: callers pass the output view.
//  * Work items are (patch, slab) pairs — a slab is one z-plane of a 3D patch, one row of a 2D
//    patch — split statically over threads, so few large patches still use every core and the
//    result never depends on the thread count (each output byte is written by one item).
//  * Centres are integer voxels (x, y, z). World points (mm) go through Image::physical_to_index
//    and are rounded to the nearest voxel, ties upwards (floor(i + 0.5)), like nearest sampling.
//  * Frame history: out [N, F, *patch] takes N·F centres, sample-major (sample n's frames are
//    centres n·F .. n·F + F − 1, oldest first as the caller orders them); it is the same
//    extraction on the reshaped [N·F, *patch] output.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <span>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/image.hpp"

namespace rlmed::imaging {

/// An integer voxel index in physical axis order (x, y[, z]).
template <std::size_t Dim>
using Voxel = std::array<index_t, Dim>;

/// Patch size and stride per physical axis (x, y[, z]).
template <std::size_t Dim>
struct PatchGeometry {
  std::array<index_t, Dim> size_xyz{};  ///< samples per axis (>= 1; odd or even, see the header)
  std::array<index_t, Dim> stride_xyz = filled_stride();  ///< voxels between samples (>= 1)

  /// A cube (square) of `side` samples, `stride` voxels apart.
  static PatchGeometry cube(index_t side, index_t stride = 1) {
    PatchGeometry g;
    g.size_xyz.fill(side);
    g.stride_xyz.fill(stride);
    return g;
  }
  /// Patch tensor shape: [Pz, Py, Px] or [Py, Px].
  [[nodiscard]] Shape<Dim> tensor_shape() const noexcept {
    Shape<Dim> s{};
    for (std::size_t a = 0; a < Dim; ++a) s[tensor_axis<Dim>(a)] = size_xyz[a];
    return s;
  }
  void validate() const {
    for (std::size_t a = 0; a < Dim; ++a) {
      RLMED_CHECK(size_xyz[a] >= 1 && size_xyz[a] <= (index_t(1) << 20), "patch size must be in [1, 2^20] per axis; found ",
                  size_xyz);
      RLMED_CHECK(stride_xyz[a] >= 1 && stride_xyz[a] <= (index_t(1) << 20),
                  "patch stride must be in [1, 2^20] voxels per axis; found ", stride_xyz);
    }
  }

 private:
  static constexpr std::array<index_t, Dim> filled_stride() noexcept {
    std::array<index_t, Dim> s{};
    for (auto& v : s) v = 1;
    return s;
  }
};

namespace detail {

/// Largest |centre| accepted: keeps c + k·s far from index_t overflow.
inline constexpr index_t kMaxPatchCentre = index_t(1) << 40;

/// In-bounds sample range [lo, hi) along one axis for first sample voxel `first`, stride s, extent n.
struct SampleRange {
  index_t first = 0, lo = 0, hi = 0;
};

inline SampleRange sample_range(index_t centre, index_t size, index_t stride, index_t extent) noexcept {
  SampleRange r;
  r.first = centre - (size / 2) * stride;
  // lo = smallest k >= 0 with first + k·s >= 0; hi = smallest k with first + k·s >= extent.
  auto ceil_div = [](index_t a, index_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); };
  r.lo = std::clamp<index_t>(ceil_div(-r.first, stride), 0, size);
  r.hi = std::clamp<index_t>(ceil_div(extent - r.first, stride), 0, size);
  if (r.hi < r.lo) r.hi = r.lo;
  return r;
}

/// One patch row: samples [lo, hi) from `src_row` (voxel first + k·s), zeros elsewhere.
template <class T>
RLMED_FORCE_INLINE void fill_patch_row(T* dst, const T* src_row, const SampleRange& rx, index_t size, index_t stride) {
  if (rx.lo > 0) std::memset(static_cast<void*>(dst), 0, static_cast<std::size_t>(rx.lo) * sizeof(T));
  if (rx.hi > rx.lo) {
    const T* s = src_row + rx.first + rx.lo * stride;
    if (stride == 1) {
      std::memcpy(static_cast<void*>(dst + rx.lo), s, static_cast<std::size_t>(rx.hi - rx.lo) * sizeof(T));
    } else if (stride == 2) {  // a constant stride lets the compiler vectorise the gather
      T* d = dst + rx.lo;
      const index_t count = rx.hi - rx.lo;
      for (index_t k = 0; k < count; ++k) d[k] = s[2 * k];
    } else {
      for (index_t k = rx.lo; k < rx.hi; ++k, s += stride) dst[k] = *s;
    }
  }
  if (rx.hi < size) std::memset(static_cast<void*>(dst + rx.hi), 0, static_cast<std::size_t>(size - rx.hi) * sizeof(T));
}

template <std::size_t Dim>
void check_centres(std::span<const Voxel<Dim>> centres) {
  for (std::size_t i = 0; i < centres.size(); ++i)
    for (std::size_t a = 0; a < Dim; ++a)
      RLMED_CHECK(std::abs(centres[i][a]) <= kMaxPatchCentre, "patch centre ", i, " is ", centres[i],
                  "; expected coordinates within ±2^40 voxels");
}

}  // namespace detail

/// Extracts one patch per centre: out [M, *patch] from volume [D, H, W] (or image [H, W]), M =
/// centres.size(). Zeros outside the volume; no allocation; parallel over (patch, slab).
template <class T, std::size_t Dim>
void extract_patches_into(TensorView<T, Dim + 1> out, TensorView<const T, Dim> volume,
                          std::span<const Voxel<Dim>> centres_xyz, const PatchGeometry<Dim>& geometry) {
  static_assert(Dim == 2 || Dim == 3, "patches are 2D or 3D");
  geometry.validate();
  const Shape<Dim> patch = geometry.tensor_shape();
  Shape<Dim + 1> want{};
  want[0] = static_cast<index_t>(centres_xyz.size());
  for (std::size_t t = 0; t < Dim; ++t) want[t + 1] = patch[t];
  RLMED_CHECK(out.shape() == want, "extract_patches_into: output has shape ", out.shape(), ", expected ", want, " for ",
              centres_xyz.size(), " centres and patch size (x, y, z) ", geometry.size_xyz);
  RLMED_CHECK(volume.data() != nullptr || volume.size() == 0, "extract_patches_into: volume has no data");
  detail::check_centres<Dim>(centres_xyz);
  if (out.size() == 0) return;

  const index_t px = geometry.size_xyz[0], sx = geometry.stride_xyz[0];
  const index_t py = geometry.size_xyz[1], sy = geometry.stride_xyz[1];
  const index_t vx = volume.extent(Dim - 1), vy = volume.extent(Dim - 2);
  const index_t row_len = vx;
  const index_t patch_elems = numel(patch);
  const index_t m_count = want[0];
  const T* vol = volume.data();
  T* dst_all = out.data();

  if constexpr (Dim == 3) {
    const index_t pz = geometry.size_xyz[2], sz = geometry.stride_xyz[2];
    const index_t vz = volume.extent(0);
    const index_t slab = py * px;
    const index_t plane = vy * vx;
    parallel_for(
        0, m_count * pz,
        [&](index_t item) {
          const index_t m = item / pz, kz = item % pz;
          const Voxel<3>& c = centres_xyz[static_cast<std::size_t>(m)];
          T* dst = dst_all + m * patch_elems + kz * slab;
          const index_t z = c[2] + (kz - pz / 2) * sz;
          if (z < 0 || z >= vz) {
            std::memset(static_cast<void*>(dst), 0, static_cast<std::size_t>(slab) * sizeof(T));
            return;
          }
          const detail::SampleRange ry = detail::sample_range(c[1], py, sy, vy);
          const detail::SampleRange rx = detail::sample_range(c[0], px, sx, vx);
          if (ry.lo > 0) std::memset(static_cast<void*>(dst), 0, static_cast<std::size_t>(ry.lo * px) * sizeof(T));
          const T* src_plane = vol + z * plane;
          for (index_t ky = ry.lo; ky < ry.hi; ++ky)
            detail::fill_patch_row(dst + ky * px, src_plane + (ry.first + ky * sy) * row_len, rx, px, sx);
          if (ry.hi < py)
            std::memset(static_cast<void*>(dst + ry.hi * px), 0, static_cast<std::size_t>((py - ry.hi) * px) * sizeof(T));
        },
        /*grain=*/std::max<index_t>(2, 65536 / std::max<index_t>(1, slab)));
  } else {
    parallel_for(
        0, m_count * py,
        [&](index_t item) {
          const index_t m = item / py, ky = item % py;
          const Voxel<2>& c = centres_xyz[static_cast<std::size_t>(m)];
          T* dst = dst_all + m * patch_elems + ky * px;
          const index_t y = c[1] + (ky - py / 2) * sy;
          if (y < 0 || y >= vy) {
            std::memset(static_cast<void*>(dst), 0, static_cast<std::size_t>(px) * sizeof(T));
            return;
          }
          const detail::SampleRange rx = detail::sample_range(c[0], px, sx, vx);
          detail::fill_patch_row(dst, vol + y * row_len, rx, px, sx);
        },
        /*grain=*/std::max<index_t>(2, 65536 / std::max<index_t>(1, px)));
  }
}

/// Frame history: out [N, F, *patch] from N·F centres, sample-major (see the header).
template <class T, std::size_t Dim>
void extract_patch_history_into(TensorView<T, Dim + 2> out, TensorView<const T, Dim> volume,
                                std::span<const Voxel<Dim>> centres_xyz, const PatchGeometry<Dim>& geometry) {
  const index_t n = out.extent(0), f = out.extent(1);
  RLMED_CHECK(n * f == static_cast<index_t>(centres_xyz.size()), "extract_patch_history_into: output [N, F, ...] = ",
              out.shape(), " needs N·F = ", n * f, " centres; found ", centres_xyz.size());
  Shape<Dim + 1> flat{};
  flat[0] = n * f;
  for (std::size_t t = 0; t < Dim; ++t) flat[t + 1] = out.extent(t + 2);
  extract_patches_into<T, Dim>(TensorView<T, Dim + 1>(out.data(), flat), volume, centres_xyz, geometry);
}

// Named wrappers ------------------------------------------------------------------------------

/// out [N, Pz, Py, Px] from volume [D, H, W] and N centres (x, y, z).
template <class T>
void extract_patches_3d_into(TensorView<T, 4> out, TensorView<const T, 3> volume, std::span<const Voxel<3>> centres_xyz,
                             const PatchGeometry<3>& geometry) {
  extract_patches_into<T, 3>(out, volume, centres_xyz, geometry);
}
/// out [N, F, Pz, Py, Px] from N·F centres (frame history).
template <class T>
void extract_patches_3d_into(TensorView<T, 5> out, TensorView<const T, 3> volume, std::span<const Voxel<3>> centres_xyz,
                             const PatchGeometry<3>& geometry) {
  extract_patch_history_into<T, 3>(out, volume, centres_xyz, geometry);
}
/// out [N, Py, Px] from image [H, W] and N centres (x, y).
template <class T>
void extract_patches_2d_into(TensorView<T, 3> out, TensorView<const T, 2> image, std::span<const Voxel<2>> centres_xy,
                             const PatchGeometry<2>& geometry) {
  extract_patches_into<T, 2>(out, image, centres_xy, geometry);
}
/// out [N, F, Py, Px] from N·F centres (frame history).
template <class T>
void extract_patches_2d_into(TensorView<T, 4> out, TensorView<const T, 2> image, std::span<const Voxel<2>> centres_xy,
                             const PatchGeometry<2>& geometry) {
  extract_patch_history_into<T, 2>(out, image, centres_xy, geometry);
}

/// Allocating: [N, Pz, Py, Px].
template <class T>
Tensor<T, 4> extract_patches_3d(TensorView<const T, 3> volume, std::span<const Voxel<3>> centres_xyz,
                                const PatchGeometry<3>& geometry) {
  geometry.validate();
  const Shape<3> p = geometry.tensor_shape();
  auto out = Tensor<T, 4>::uninitialized(Shape<4>{static_cast<index_t>(centres_xyz.size()), p[0], p[1], p[2]});
  extract_patches_3d_into<T>(out.view(), volume, centres_xyz, geometry);
  return out;
}
/// Allocating: [N, F, Pz, Py, Px] with F frames per sample.
template <class T>
Tensor<T, 5> extract_patches_3d(TensorView<const T, 3> volume, std::span<const Voxel<3>> centres_xyz, index_t frames,
                                const PatchGeometry<3>& geometry) {
  geometry.validate();
  RLMED_CHECK(frames >= 1 && static_cast<index_t>(centres_xyz.size()) % frames == 0, "extract_patches_3d: ",
              centres_xyz.size(), " centres are not a whole number of samples of ", frames, " frames");
  const Shape<3> p = geometry.tensor_shape();
  auto out = Tensor<T, 5>::uninitialized(
      Shape<5>{static_cast<index_t>(centres_xyz.size()) / frames, frames, p[0], p[1], p[2]});
  extract_patches_3d_into<T>(out.view(), volume, centres_xyz, geometry);
  return out;
}
/// Allocating: [N, Py, Px].
template <class T>
Tensor<T, 3> extract_patches_2d(TensorView<const T, 2> image, std::span<const Voxel<2>> centres_xy,
                                const PatchGeometry<2>& geometry) {
  geometry.validate();
  const Shape<2> p = geometry.tensor_shape();
  auto out = Tensor<T, 3>::uninitialized(Shape<3>{static_cast<index_t>(centres_xy.size()), p[0], p[1]});
  extract_patches_2d_into<T>(out.view(), image, centres_xy, geometry);
  return out;
}
/// Allocating: [N, F, Py, Px] with F frames per sample.
template <class T>
Tensor<T, 4> extract_patches_2d(TensorView<const T, 2> image, std::span<const Voxel<2>> centres_xy, index_t frames,
                                const PatchGeometry<2>& geometry) {
  geometry.validate();
  RLMED_CHECK(frames >= 1 && static_cast<index_t>(centres_xy.size()) % frames == 0, "extract_patches_2d: ",
              centres_xy.size(), " centres are not a whole number of samples of ", frames, " frames");
  const Shape<2> p = geometry.tensor_shape();
  auto out = Tensor<T, 4>::uninitialized(Shape<4>{static_cast<index_t>(centres_xy.size()) / frames, frames, p[0], p[1]});
  extract_patches_2d_into<T>(out.view(), image, centres_xy, geometry);
  return out;
}

// World points ------------------------------------------------------------------------------

/// Nearest voxel (x, y, z) of a world point, ties upwards; rlmed::Error for non-finite points.
template <class T, std::size_t Dim>
Voxel<Dim> nearest_voxel(const Image<T, Dim>& image, const Vec<Dim>& point_mm) {
  const Vec<Dim> c = image.physical_to_index(point_mm);
  Voxel<Dim> v{};
  for (std::size_t a = 0; a < Dim; ++a) {
    RLMED_CHECK(std::isfinite(c[a]) && std::abs(c[a]) <= double(detail::kMaxPatchCentre), "point ", point_mm,
                " mm maps to index ", c, "; expected a finite index within ±2^40 voxels");
    v[a] = static_cast<index_t>(std::floor(c[a] + 0.5));
  }
  return v;
}

/// Nearest voxels of world points into a caller-owned span of the same length (no allocation).
template <class T, std::size_t Dim>
void nearest_voxels_into(std::span<Voxel<Dim>> out, const Image<T, Dim>& image, std::span<const Vec<Dim>> points_mm) {
  RLMED_CHECK(out.size() == points_mm.size(), "nearest_voxels_into: ", out.size(), " outputs for ", points_mm.size(),
              " points");
  for (std::size_t i = 0; i < points_mm.size(); ++i) out[i] = nearest_voxel(image, points_mm[i]);
}

/// Patches around world points (mm) of an Image: [N, *patch].
template <class T, std::size_t Dim>
Tensor<T, Dim + 1> extract_patches(const Image<T, Dim>& image, std::span<const Vec<Dim>> points_mm,
                                   const PatchGeometry<Dim>& geometry) {
  std::vector<Voxel<Dim>> centres(points_mm.size());
  nearest_voxels_into<T, Dim>(centres, image, points_mm);
  geometry.validate();
  Shape<Dim + 1> s{};
  s[0] = static_cast<index_t>(centres.size());
  const Shape<Dim> p = geometry.tensor_shape();
  for (std::size_t t = 0; t < Dim; ++t) s[t + 1] = p[t];
  auto out = Tensor<T, Dim + 1>::uninitialized(s);
  extract_patches_into<T, Dim>(out.view(), image.view(), std::span<const Voxel<Dim>>(centres), geometry);
  return out;
}

}  // namespace rlmed::imaging
