// rlmed/imaging/resample.hpp — resampling onto a new grid, anti-aliased down-sampling and
// separable Gaussian smoothing.
//
// Design decisions:
//  * A grid is (size, spacing, origin, direction). Output voxel j maps to the input's continuous
//    index through one affine map (index_out → world → index_in), precomputed once; entries within
//    1e-9 voxel of an integer are snapped, so grids that coincide up to rounding reproduce the
//    input bit for bit (identity resampling is exact).
//  * Outside handling follows scipy.ndimage.map_coordinates(mode='constant'): linear sampling is
//    defined on [0, n-1] per axis (corners at the last voxel are clamped) and anything beyond gets
//    the fill value; nearest sampling is defined on each voxel's box [-0.5, n-0.5). Nearest rounds
//    ties upwards (floor(x + 0.5)).
//  * Smoothing mirrors scipy.ndimage.gaussian_filter: kernel exp(-x²/2σ²) normalised to sum 1,
//    radius int(4σ + 0.5), axes filtered one after another in tensor order (z, y, x), each pass
//    rounded to T, boundary 'reflect' (d c b a | a b c d | d c b a, the half-sample symmetric
//    extension, applied periodically so radii larger than the axis are still defined).
//  * Anti-aliasing before down-sampling smooths with σ = max(0, (f − 1) / 2) input voxels per
//    axis, f = new spacing / old spacing — the rule of skimage.transform.rescale(anti_aliasing=
//    True), whose f is in_shape / out_shape (the same when the sizes divide exactly). Unlike
//    skimage's default (ndimage 'mirror'), the boundary mode is scipy's 'reflect', as above.
//  * Resampling to a new spacing keeps the physical extent of the voxel boxes: n' = round(n·s/s')
//    (at least 1) and the new grid is centred on the old one, so output voxel j samples the input
//    at (j + 0.5)·n/n' − 0.5 when n'·s' = n·s (skimage's resize mapping).
//  * Interpolation accumulates in double and rounds once to T.
#pragma once

#include <array>
#include <cmath>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/image.hpp"

namespace rlmed::imaging {

enum class Interpolation { nearest, linear };

/// Where an image's voxels lie: everything of an Image but the voxels.
template <std::size_t Dim>
struct Grid {
  std::array<index_t, Dim> size_xyz{};        // voxels along x, y(, z)
  Vec<Dim> spacing_mm = filled_vec<Dim>(1.0);  // (x, y, z)
  Vec<Dim> origin_mm{};
  Mat<Dim> direction = identity_matrix<Dim>();

  /// The tensor shape of voxels on this grid: [z, y, x] or [y, x].
  [[nodiscard]] Shape<Dim> tensor_shape() const noexcept {
    Shape<Dim> s{};
    for (std::size_t a = 0; a < Dim; ++a) s[tensor_axis<Dim>(a)] = size_xyz[a];
    return s;
  }

  void validate() const {
    for (std::size_t a = 0; a < Dim; ++a)
      RLMED_CHECK(size_xyz[a] >= 1, "grid size must be >= 1 voxel per axis; found ", size_xyz);
    Image<float, Dim> probe;
    probe.spacing_mm = spacing_mm;
    probe.origin_mm = origin_mm;
    probe.direction = direction;
    probe.validate_geometry();
  }
};

template <class T, std::size_t Dim>
Grid<Dim> grid_of(const Image<T, Dim>& image) noexcept {
  return Grid<Dim>{image.size_xyz(), image.spacing_mm, image.origin_mm, image.direction};
}

/// A zero-filled image on a grid.
template <class T, std::size_t Dim>
Image<T, Dim> image_on_grid(const Grid<Dim>& grid) {
  grid.validate();
  Image<T, Dim> out(grid.tensor_shape());
  out.spacing_mm = grid.spacing_mm;
  out.origin_mm = grid.origin_mm;
  out.direction = grid.direction;
  return out;
}

namespace detail {

/// Continuous input index (x, y, z) = matrix · output index (x, y, z) + offset.
template <std::size_t Dim>
struct IndexMap {
  Mat<Dim> matrix{};
  Vec<Dim> offset{};
};

inline double snap_to_integer(double v) noexcept {
  const double r = std::round(v);
  return std::abs(v - r) < 1e-9 ? r : v;
}

template <std::size_t Dim>
IndexMap<Dim> index_map(const Grid<Dim>& out, const Grid<Dim>& in) {
  // index_in = S_in⁻¹ D_in⁻¹ (D_out S_out index_out + o_out − o_in)
  const Mat<Dim> in_inv = inverse<Dim>(in.direction);
  IndexMap<Dim> m;
  Vec<Dim> d{};
  for (std::size_t r = 0; r < Dim; ++r) d[r] = out.origin_mm[r] - in.origin_mm[r];
  const Vec<Dim> od = mat_vec<Dim>(in_inv, d);
  const Mat<Dim> rot = mat_mul<Dim>(in_inv, out.direction);
  for (std::size_t r = 0; r < Dim; ++r) {
    for (std::size_t c = 0; c < Dim; ++c)
      m.matrix[r * Dim + c] = snap_to_integer(rot[r * Dim + c] * out.spacing_mm[c] / in.spacing_mm[r]);
    m.offset[r] = snap_to_integer(od[r] / in.spacing_mm[r]);
  }
  return m;
}

/// Linear interpolation at continuous tensor-axis coordinates; false when outside [0, n-1].
template <class T, std::size_t Dim>
bool sample_linear(TensorView<const T, Dim> in, const std::array<double, Dim>& coord_tensor, double& value) noexcept {
  std::array<index_t, Dim> i0{}, i1{};
  std::array<double, Dim> w1{};
  for (std::size_t t = 0; t < Dim; ++t) {
    const double c = coord_tensor[t];
    const index_t n = in.extent(t);
    if (!(c >= 0.0 && c <= double(n - 1))) return false;
    const double f = std::floor(c);
    i0[t] = static_cast<index_t>(f);
    w1[t] = c - f;
    i1[t] = i0[t] + 1 < n ? i0[t] + 1 : i0[t];
  }
  double acc = 0;
  for (unsigned corner = 0; corner < (1u << Dim); ++corner) {
    double w = 1.0;
    index_t off = 0;
    for (std::size_t t = 0; t < Dim; ++t) {
      const bool hi = (corner >> (Dim - 1 - t)) & 1u;
      w *= hi ? w1[t] : 1.0 - w1[t];
      off = off * in.extent(t) + (hi ? i1[t] : i0[t]);
    }
    if (w != 0.0) acc += w * double(in.data()[off]);
  }
  value = acc;
  return true;
}

/// Nearest-voxel lookup at continuous tensor-axis coordinates; false outside the voxel boxes.
template <class T, std::size_t Dim>
bool sample_nearest(TensorView<const T, Dim> in, const std::array<double, Dim>& coord_tensor, T& value) noexcept {
  index_t off = 0;
  for (std::size_t t = 0; t < Dim; ++t) {
    const double c = coord_tensor[t];
    const index_t n = in.extent(t);
    if (!(c >= -0.5 && c < double(n) - 0.5)) return false;
    index_t i = static_cast<index_t>(std::floor(c + 0.5));
    if (i > n - 1) i = n - 1;
    off = off * n + i;
  }
  value = in.data()[off];
  return true;
}

/// scipy.ndimage 'reflect' boundary: (d c b a | a b c d | d c b a), periodic with period 2n.
inline index_t reflect_index(index_t i, index_t n) noexcept {
  if (n == 1) return 0;
  const index_t period = 2 * n;
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - 1 - i;
}

}  // namespace detail

/// Resamples `in` onto `out_grid`, writing `out` (shape = out_grid.tensor_shape()). Points outside
/// the input (see the header) get `fill`. Linear interpolation needs a floating-point T.
template <class T, std::size_t Dim>
void resample_into(TensorView<T, Dim> out, const Grid<Dim>& out_grid, const Image<T, Dim>& in,
                   Interpolation mode = Interpolation::linear, T fill = T(0)) {
  static_assert(Dim == 2 || Dim == 3);
  out_grid.validate();
  in.validate_geometry();
  RLMED_CHECK(out.shape() == out_grid.tensor_shape(), "resample_into: output view has shape ", out.shape(),
              ", expected ", out_grid.tensor_shape(), " for grid size (x, y, z) ", out_grid.size_xyz);
  RLMED_CHECK(in.voxels.size() > 0, "resample_into: the input image is empty (shape ", in.shape(), ")");
  RLMED_CHECK(mode == Interpolation::nearest || std::is_floating_point_v<T>,
              "resample_into: linear interpolation needs float or double voxels; use nearest for labels");
  const auto map = detail::index_map<Dim>(out_grid, grid_of(in));
  const TensorView<const T, Dim> src = in.view();
  const index_t nx = out_grid.size_xyz[0];
  const index_t rows = out.size() / nx;  // one row = one run along x
  parallel_for(
      0, rows,
      [&](index_t row) {
        // Output index (x = 0, y, z) of this row.
        Vec<Dim> j{};
        j[1] = double(row % out_grid.size_xyz[1]);
        if constexpr (Dim == 3) j[2] = double(row / out_grid.size_xyz[1]);
        T* dst = out.data() + row * nx;
        for (index_t x = 0; x < nx; ++x) {
          j[0] = double(x);
          std::array<double, Dim> coord{};  // tensor-axis order
          for (std::size_t r = 0; r < Dim; ++r) {
            double v = map.offset[r];
            for (std::size_t c = 0; c < Dim; ++c) v += map.matrix[r * Dim + c] * j[c];
            coord[tensor_axis<Dim>(r)] = v;
          }
          if (mode == Interpolation::nearest) {
            T v;
            dst[x] = detail::sample_nearest<T, Dim>(src, coord, v) ? v : fill;
          } else {
            double v;
            dst[x] = detail::sample_linear<T, Dim>(src, coord, v) ? static_cast<T>(v) : fill;
          }
        }
      },
      /*grain=*/64);
}

/// Resamples `in` onto a new grid (allocating).
template <class T, std::size_t Dim>
Image<T, Dim> resample(const Image<T, Dim>& in, const Grid<Dim>& grid, Interpolation mode = Interpolation::linear,
                       T fill = T(0)) {
  Image<T, Dim> out = image_on_grid<T, Dim>(grid);
  resample_into(out.view(), grid, in, mode, fill);
  return out;
}

// ---- Gaussian smoothing ------------------------------------------------------------------------

/// scipy's truncated Gaussian kernel: taps exp(-x²/2σ²) for x in [-r, r], r = int(truncate·σ + 0.5),
/// normalised to sum 1. σ = 0 gives the single tap {1}.
inline std::vector<double> gaussian_kernel(double sigma_vox, double truncate = 4.0) {
  RLMED_CHECK(std::isfinite(sigma_vox) && sigma_vox >= 0, "gaussian_kernel: sigma must be finite and >= 0 voxels; found ",
              sigma_vox);
  RLMED_CHECK(std::isfinite(truncate) && truncate > 0, "gaussian_kernel: truncate must be positive; found ", truncate);
  const auto radius = static_cast<index_t>(truncate * sigma_vox + 0.5);
  RLMED_CHECK(radius <= 100000, "gaussian_kernel: sigma ", sigma_vox, " gives a radius of ", radius,
              " voxels; expected at most 100000");
  std::vector<double> taps(static_cast<std::size_t>(2 * radius + 1));
  if (radius == 0) {
    taps[0] = 1.0;
    return taps;
  }
  double sum = 0;
  for (index_t x = -radius; x <= radius; ++x) {
    const double v = std::exp(-0.5 * double(x * x) / (sigma_vox * sigma_vox));
    taps[static_cast<std::size_t>(x + radius)] = v;
    sum += v;
  }
  for (double& v : taps) v /= sum;
  return taps;
}

namespace detail {

/// One 1D pass of a symmetric kernel along tensor axis `axis` with 'reflect' boundaries.
template <class T, std::size_t R>
void correlate_axis(TensorView<T, R> out, TensorView<const T, R> in, std::size_t axis, const std::vector<double>& taps) {
  const index_t radius = (static_cast<index_t>(taps.size()) - 1) / 2;
  const index_t n = in.extent(axis);
  index_t outer = 1, inner = 1;
  for (std::size_t a = 0; a < axis; ++a) outer *= in.extent(a);
  for (std::size_t a = axis + 1; a < R; ++a) inner *= in.extent(a);
  const T* src = in.data();
  T* dst = out.data();
  if (inner == 1) {
    // Contiguous lines: interior taps without index mapping, borders through reflect_index.
    parallel_for(
        0, outer,
        [&](index_t o) {
          const T* line = src + o * n;
          T* res = dst + o * n;
          for (index_t i = 0; i < n; ++i) {
            double acc = 0;
            if (i >= radius && i + radius < n) {
              const T* p = line + (i - radius);
              for (index_t k = 0; k <= 2 * radius; ++k) acc += taps[std::size_t(k)] * double(p[k]);
            } else {
              for (index_t k = 0; k <= 2 * radius; ++k)
                acc += taps[std::size_t(k)] * double(line[reflect_index(i + k - radius, n)]);
            }
            res[i] = static_cast<T>(acc);
          }
        },
        /*grain=*/std::max<index_t>(1, 16384 / std::max<index_t>(1, n * (2 * radius + 1))));
  } else {
    // Whole rows of the faster axes at once: row (o, i) = Σ_k w_k · row (o, reflect(i + k − r)).
    parallel_for(
        0, outer * n,
        [&](index_t oi) {
          const index_t o = oi / n, i = oi % n;
          T* res = dst + oi * inner;
          const T* base = src + o * n * inner;
          {
            const T* p = base + reflect_index(i - radius, n) * inner;
            const T w = static_cast<T>(taps[0]);
            for (index_t e = 0; e < inner; ++e) res[e] = w * p[e];
          }
          for (index_t k = 1; k <= 2 * radius; ++k) {
            const T* p = base + reflect_index(i + k - radius, n) * inner;
            const T w = static_cast<T>(taps[std::size_t(k)]);
            for (index_t e = 0; e < inner; ++e) res[e] += w * p[e];
          }
        },
        /*grain=*/std::max<index_t>(1, 16384 / std::max<index_t>(1, inner * (2 * radius + 1))));
  }
}

}  // namespace detail

/// Separable Gaussian smoothing of a tensor, σ in voxels per tensor axis (0 = leave that axis).
/// `scratch` is a reusable buffer for the intermediate passes (grows once); only the small
/// per-axis kernel tables are allocated per call. Passes along the last axis accumulate in double,
/// the others in T (float results differ from SciPy's double accumulation by ~1e-7 relative).
/// `out` must not alias `in`.
template <class T, std::size_t R>
void gaussian_smooth_into(TensorView<T, R> out, TensorView<const T, R> in,
                          const std::array<double, R>& sigma_vox_by_tensor_axis, Tensor<T, 1>& scratch,
                          double truncate = 4.0) {
  static_assert(std::is_floating_point_v<T>, "gaussian smoothing works on float or double tensors");
  RLMED_CHECK(out.shape() == in.shape(), "gaussian_smooth_into: output shape ", out.shape(), " differs from input shape ",
              in.shape());
  RLMED_CHECK(in.size() == 0 || out.data() != in.data(), "gaussian_smooth_into: output must not alias the input");
  std::array<std::vector<double>, R> kernels;
  std::vector<std::size_t> active;
  for (std::size_t a = 0; a < R; ++a) {
    kernels[a] = gaussian_kernel(sigma_vox_by_tensor_axis[a], truncate);
    if (sigma_vox_by_tensor_axis[a] > 1e-15) active.push_back(a);  // scipy skips σ <= 1e-15
  }
  if (in.size() == 0) return;
  if (active.empty()) {
    copy(out, in);
    return;
  }
  if (active.size() > 1) scratch.resize(Shape<1>{in.size()});
  const TensorView<T, R> temp(scratch.data(), in.shape());
  // Ping-pong so that the last pass lands in `out`.
  TensorView<const T, R> src = in;
  for (std::size_t p = 0; p < active.size(); ++p) {
    const bool to_out = ((active.size() - 1 - p) % 2) == 0;
    const TensorView<T, R> dst = to_out ? out : temp;
    detail::correlate_axis<T, R>(dst, src, active[p], kernels[active[p]]);
    src = dst;
  }
}

/// Gaussian smoothing of a tensor (allocating), σ in voxels per tensor axis.
template <class T, std::size_t R>
Tensor<T, R> gaussian_smooth(TensorView<const T, R> in, const std::array<double, R>& sigma_vox_by_tensor_axis,
                             double truncate = 4.0) {
  auto out = Tensor<T, R>::uninitialized(in.shape());
  Tensor<T, 1> scratch;
  gaussian_smooth_into<T, R>(out.view(), in, sigma_vox_by_tensor_axis, scratch, truncate);
  return out;
}

/// Isotropic Gaussian smoothing of a tensor, σ in voxels.
template <class T, std::size_t R>
Tensor<T, R> gaussian_smooth(TensorView<const T, R> in, double sigma_vox, double truncate = 4.0) {
  std::array<double, R> s{};
  s.fill(sigma_vox);
  return gaussian_smooth<T, R>(in, s, truncate);
}

/// Gaussian smoothing of an image, σ in voxels along (x, y, z). Geometry is kept.
template <class T, std::size_t Dim>
  requires(Dim == 2 || Dim == 3)
Image<T, Dim> gaussian_smooth(const Image<T, Dim>& in, const Vec<Dim>& sigma_vox_xyz, double truncate = 4.0) {
  std::array<double, Dim> by_axis{};
  for (std::size_t a = 0; a < Dim; ++a) by_axis[tensor_axis<Dim>(a)] = sigma_vox_xyz[a];
  Image<T, Dim> out = image_like<T>(in);
  Tensor<T, 1> scratch;
  gaussian_smooth_into<T, Dim>(out.view(), in.view(), by_axis, scratch, truncate);
  return out;
}

// ---- resampling to a new spacing ---------------------------------------------------------------

struct ResampleOptions {
  Interpolation mode = Interpolation::linear;
  bool anti_alias = true;  ///< Gaussian pre-filter when down-sampling (linear mode only)
  double fill = 0.0;       ///< value outside the input
};

/// The grid with spacing `new_spacing_mm` covering the same physical box as `in` (see header).
template <class T, std::size_t Dim>
Grid<Dim> grid_with_spacing(const Image<T, Dim>& in, const Vec<Dim>& new_spacing_mm) {
  in.validate_geometry();
  Grid<Dim> g = grid_of(in);
  Vec<Dim> shift_vox{};  // in input voxels, along x, y, z
  for (std::size_t a = 0; a < Dim; ++a) {
    RLMED_CHECK(std::isfinite(new_spacing_mm[a]) && new_spacing_mm[a] > 0,
                "grid_with_spacing: new spacing must be positive and finite; found ", new_spacing_mm, " mm");
    const index_t n = g.size_xyz[a];
    const double extent_mm = double(n) * in.spacing_mm[a];
    const double ratio = extent_mm / new_spacing_mm[a];
    RLMED_CHECK(ratio < 1e9, "grid_with_spacing: spacing ", new_spacing_mm, " mm would need ", ratio, " voxels along axis ", a);
    const index_t n_new = std::max<index_t>(1, static_cast<index_t>(std::llround(ratio)));
    // Centre of the new grid = centre of the old one: index (n − 1)/2 in both.
    const double step = new_spacing_mm[a] / in.spacing_mm[a];
    shift_vox[a] = 0.5 * double(n - 1) - 0.5 * double(n_new - 1) * step;
    g.size_xyz[a] = n_new;
    g.spacing_mm[a] = new_spacing_mm[a];
  }
  g.origin_mm = in.index_to_physical(shift_vox);
  return g;
}

/// σ (input voxels, x, y, z) of the anti-aliasing pre-filter for a spacing change: (f − 1)/2, f ≥ 1.
template <std::size_t Dim>
Vec<Dim> anti_alias_sigma_vox(const Vec<Dim>& old_spacing_mm, const Vec<Dim>& new_spacing_mm) noexcept {
  Vec<Dim> s{};
  for (std::size_t a = 0; a < Dim; ++a) s[a] = std::max(0.0, (new_spacing_mm[a] / old_spacing_mm[a] - 1.0) / 2.0);
  return s;
}

/// Resamples to a new spacing over the same physical extent (e.g. to 1 mm isotropic), with a
/// Gaussian anti-aliasing pre-filter on axes that get coarser (linear mode).
template <class T, std::size_t Dim>
Image<T, Dim> resample_to_spacing(const Image<T, Dim>& in, const Vec<Dim>& new_spacing_mm,
                                  const ResampleOptions& options = {}) {
  const Grid<Dim> grid = grid_with_spacing(in, new_spacing_mm);
  const T fill = static_cast<T>(options.fill);
  // Anti-aliasing applies to intensities only: label images (integer T) are never smoothed.
  if constexpr (std::is_floating_point_v<T>) {
    if (options.mode == Interpolation::linear && options.anti_alias) {
      const Vec<Dim> sigma = anti_alias_sigma_vox<Dim>(in.spacing_mm, new_spacing_mm);
      bool any = false;
      for (double s : sigma) any = any || s > 0;
      if (any) return resample(gaussian_smooth(in, sigma), grid, options.mode, fill);
    }
  }
  return resample(in, grid, options.mode, fill);
}

/// Down-samples by `factor_xyz` (> 0; > 1 is coarser): resample_to_spacing with spacing · factor.
template <class T, std::size_t Dim>
Image<T, Dim> rescale(const Image<T, Dim>& in, const Vec<Dim>& factor_xyz, const ResampleOptions& options = {}) {
  Vec<Dim> s{};
  for (std::size_t a = 0; a < Dim; ++a) {
    RLMED_CHECK(std::isfinite(factor_xyz[a]) && factor_xyz[a] > 0, "rescale: factors must be positive; found ", factor_xyz);
    s[a] = in.spacing_mm[a] * factor_xyz[a];
  }
  return resample_to_spacing(in, s, options);
}

}  // namespace rlmed::imaging
