// rlmed/imaging/image.hpp — Image<T, Dim>: voxels plus the geometry that places them in space.
//
// Design decisions (the conventions every imaging function follows):
//  * Voxels are a row-major Tensor<T, Dim> whose axes run slowest to fastest as (z, y, x) in
//    3D and (y, x) in 2D — the memory order of NIfTI, MetaImage, PNG and TIFF files and of
//    PyTorch's [D, H, W]. Reading a file never transposes.
//  * Every geometric vector (index, spacing, origin, point, displacement in mm) is written in
//    physical axis order (x, y, z), as ITK, SimpleITK, elastix and rl-medical do. The helper
//    `tensor_axis(a)` maps a physical axis to the tensor axis that moves along it.
//  * World coordinates are ITK's LPS millimetres (x to the patient's Left, y Posterior,
//    z Superior). NIfTI (RAS) is converted on read and back on write, so a point read from an
//    elastix point file and a voxel of a NIfTI volume meet in the same space.
//  * point_mm = origin_mm + direction · (spacing_mm ⊙ index_xyz); `direction` is row-major with
//    columns the world directions of the x, y, z index axes.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <string>

#include "rlmed/core/error.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed::imaging {

/// A geometric vector in physical axis order (x, y[, z]).
template <std::size_t Dim>
using Vec = std::array<double, Dim>;

/// A Dim×Dim matrix, row-major: m[r * Dim + c].
template <std::size_t Dim>
using Mat = std::array<double, Dim * Dim>;

template <std::size_t Dim>
constexpr Mat<Dim> identity_matrix() noexcept {
  Mat<Dim> m{};
  for (std::size_t i = 0; i < Dim; ++i) m[i * Dim + i] = 1.0;
  return m;
}

template <std::size_t Dim>
constexpr Vec<Dim> filled_vec(double v) noexcept {
  Vec<Dim> r{};
  for (auto& x : r) x = v;
  return r;
}

template <std::size_t Dim>
Vec<Dim> mat_vec(const Mat<Dim>& m, const Vec<Dim>& v) noexcept {
  Vec<Dim> r{};
  for (std::size_t i = 0; i < Dim; ++i)
    for (std::size_t j = 0; j < Dim; ++j) r[i] += m[i * Dim + j] * v[j];
  return r;
}

template <std::size_t Dim>
Mat<Dim> mat_mul(const Mat<Dim>& a, const Mat<Dim>& b) noexcept {
  Mat<Dim> r{};
  for (std::size_t i = 0; i < Dim; ++i)
    for (std::size_t k = 0; k < Dim; ++k)
      for (std::size_t j = 0; j < Dim; ++j) r[i * Dim + j] += a[i * Dim + k] * b[k * Dim + j];
  return r;
}

template <std::size_t Dim>
Mat<Dim> transpose(const Mat<Dim>& m) noexcept {
  Mat<Dim> r{};
  for (std::size_t i = 0; i < Dim; ++i)
    for (std::size_t j = 0; j < Dim; ++j) r[j * Dim + i] = m[i * Dim + j];
  return r;
}

/// Inverse of a 2×2 or 3×3 matrix; rlmed::Error when it is singular.
template <std::size_t Dim>
Mat<Dim> inverse(const Mat<Dim>& m) {
  static_assert(Dim == 2 || Dim == 3, "inverse is provided for 2×2 and 3×3 matrices");
  Mat<Dim> r{};
  double det;
  if constexpr (Dim == 2) {
    det = m[0] * m[3] - m[1] * m[2];
    RLMED_CHECK(std::abs(det) > 1e-300 && std::isfinite(det), "matrix is singular (determinant ", det, ")");
    r = {m[3] / det, -m[1] / det, -m[2] / det, m[0] / det};
  } else {
    const double a = m[0], b = m[1], c = m[2], d = m[3], e = m[4], f = m[5], g = m[6], h = m[7], i = m[8];
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g);
    RLMED_CHECK(std::abs(det) > 1e-300 && std::isfinite(det), "matrix is singular (determinant ", det, ")");
    r = {(e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det,
         (f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det,
         (d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det};
  }
  return r;
}

template <std::size_t Dim>
double determinant(const Mat<Dim>& m) noexcept {
  if constexpr (Dim == 2) return m[0] * m[3] - m[1] * m[2];
  else if constexpr (Dim == 3)
    return m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6]);
  else static_assert(Dim == 2 || Dim == 3);
}

template <std::size_t Dim>
double distance_mm(const Vec<Dim>& a, const Vec<Dim>& b) noexcept {
  double s = 0;
  for (std::size_t i = 0; i < Dim; ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(s);
}

/// The tensor axis that moves along physical axis `a` (x is the last, fastest tensor axis).
template <std::size_t Dim>
constexpr std::size_t tensor_axis(std::size_t physical_axis) noexcept { return Dim - 1 - physical_axis; }

/// Voxels and their placement in world space (LPS mm). See the conventions at the top.
template <class T, std::size_t Dim>
struct Image {
  static_assert(Dim == 2 || Dim == 3, "images are 2D or 3D");
  using value_type = T;
  static constexpr std::size_t dims = Dim;

  Tensor<T, Dim> voxels;                       // [z, y, x] (3D) or [y, x] (2D)
  Vec<Dim> spacing_mm = filled_vec<Dim>(1.0);  // (x, y, z)
  Vec<Dim> origin_mm{};                        // world position of voxel index 0 (LPS mm)
  Mat<Dim> direction = identity_matrix<Dim>(); // columns: world directions of index axes x, y, z

  Image() = default;
  explicit Image(const Shape<Dim>& shape) : voxels(shape) {}
  Image(Tensor<T, Dim> v, const Vec<Dim>& spacing, const Vec<Dim>& origin = {},
        const Mat<Dim>& dir = identity_matrix<Dim>())
      : voxels(std::move(v)), spacing_mm(spacing), origin_mm(origin), direction(dir) {
    validate_geometry();
  }

  [[nodiscard]] const Shape<Dim>& shape() const noexcept { return voxels.shape(); }
  /// Number of voxels along each physical axis, in (x, y, z) order.
  [[nodiscard]] std::array<index_t, Dim> size_xyz() const noexcept {
    std::array<index_t, Dim> s{};
    for (std::size_t a = 0; a < Dim; ++a) s[a] = voxels.extent(tensor_axis<Dim>(a));
    return s;
  }
  [[nodiscard]] TensorView<T, Dim> view() noexcept { return voxels.view(); }
  [[nodiscard]] TensorView<const T, Dim> view() const noexcept { return voxels.view(); }

  /// Throws rlmed::Error unless spacing is positive and finite and direction is invertible.
  void validate_geometry() const {
    for (std::size_t a = 0; a < Dim; ++a) {
      RLMED_CHECK(std::isfinite(spacing_mm[a]) && spacing_mm[a] > 0, "image spacing must be positive and finite; found ",
                  spacing_mm, " mm");
      RLMED_CHECK(std::isfinite(origin_mm[a]), "image origin must be finite; found ", origin_mm);
    }
    for (double v : direction) RLMED_CHECK(std::isfinite(v), "image direction must be finite; found ", direction);
    RLMED_CHECK(std::abs(determinant<Dim>(direction)) > 1e-6, "image direction matrix is singular: ", direction);
  }

  /// Index (x, y, z; may be fractional) to world point in mm.
  [[nodiscard]] Vec<Dim> index_to_physical(const Vec<Dim>& index_xyz) const noexcept {
    Vec<Dim> scaled{};
    for (std::size_t a = 0; a < Dim; ++a) scaled[a] = index_xyz[a] * spacing_mm[a];
    Vec<Dim> p = mat_vec<Dim>(direction, scaled);
    for (std::size_t a = 0; a < Dim; ++a) p[a] += origin_mm[a];
    return p;
  }

  /// World point in mm to a continuous index (x, y, z).
  [[nodiscard]] Vec<Dim> physical_to_index(const Vec<Dim>& point_mm) const {
    Vec<Dim> d{};
    for (std::size_t a = 0; a < Dim; ++a) d[a] = point_mm[a] - origin_mm[a];
    Vec<Dim> idx = mat_vec<Dim>(inverse<Dim>(direction), d);
    for (std::size_t a = 0; a < Dim; ++a) idx[a] /= spacing_mm[a];
    return idx;
  }

  /// The 4×4 (3D) or 3×3 (2D) homogeneous index→world matrix, row-major.
  [[nodiscard]] std::array<double, (Dim + 1) * (Dim + 1)> index_to_physical_matrix() const noexcept {
    std::array<double, (Dim + 1) * (Dim + 1)> m{};
    for (std::size_t r = 0; r < Dim; ++r) {
      for (std::size_t c = 0; c < Dim; ++c) m[r * (Dim + 1) + c] = direction[r * Dim + c] * spacing_mm[c];
      m[r * (Dim + 1) + Dim] = origin_mm[r];
    }
    m[(Dim + 1) * (Dim + 1) - 1] = 1.0;
    return m;
  }

  /// True when the continuous index lies inside the voxel grid [0, n-1] on every axis.
  [[nodiscard]] bool contains_index(const Vec<Dim>& index_xyz) const noexcept {
    const auto n = size_xyz();
    for (std::size_t a = 0; a < Dim; ++a)
      if (!(index_xyz[a] >= 0.0 && index_xyz[a] <= double(n[a] - 1))) return false;
    return true;
  }
};

/// A new image with the same geometry as `like` and voxels of type U (zeroed).
template <class U, class T, std::size_t Dim>
Image<U, Dim> image_like(const Image<T, Dim>& like) {
  Image<U, Dim> out;
  out.voxels = Tensor<U, Dim>(like.shape());
  out.spacing_mm = like.spacing_mm;
  out.origin_mm = like.origin_mm;
  out.direction = like.direction;
  return out;
}

/// Same geometry (shape, spacing, origin, direction) up to `tol` (mm, and unitless for direction).
template <class T, class U, std::size_t Dim>
bool same_geometry(const Image<T, Dim>& a, const Image<U, Dim>& b, double tol = 1e-6) noexcept {
  if (a.shape() != b.shape()) return false;
  for (std::size_t i = 0; i < Dim; ++i)
    if (std::abs(a.spacing_mm[i] - b.spacing_mm[i]) > tol || std::abs(a.origin_mm[i] - b.origin_mm[i]) > tol) return false;
  for (std::size_t i = 0; i < Dim * Dim; ++i)
    if (std::abs(a.direction[i] - b.direction[i]) > tol) return false;
  return true;
}

}  // namespace rlmed::imaging
