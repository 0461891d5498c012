// rlmed/imaging/augment.hpp — random affine (rotation, anisotropic scale, translation) and
// intensity augmentation applied consistently to an image and its landmarks (small-data
// training of landmark agents: ±15°, ±10 mm, ±10 % scale by default).
//
// Design decisions:
//  * The transform A(p) = M (p − c) + c + t acts on world points (mm) about a centre c (the
//    image centre by default); M = R · diag(s). The augmented image keeps the input's grid and
//    shows the anatomy moved by A: out(p) = in(A⁻¹ p), landmarks p* ↦ A p*. It is computed
//    without inverting anything per voxel: an image whose index→world map is A ∘ (input's map)
//    (direction M·D, origin A(o)) holds the same voxels, and resampling it onto the input grid
//    (imaging/resample.hpp, linear, 0 outside) is exactly out.
//  * Intensity jitter v ↦ a·v + b with a ∈ 1 ± intensity_scale, b ∈ ±intensity_shift (after the
//    caller's normalisation, so the ranges mean the same thing on every image).
//  * All draws come from one Philox stream in a fixed order (angles, scales, translation,
//    intensity), so an augmentation is reproducible from (seed, stream, position).
#pragma once

#include <cmath>
#include <numbers>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/imaging/image.hpp"
#include "rlmed/imaging/resample.hpp"

namespace rlmed::imaging {

struct AugmentOptions {
  double max_angle_deg = 15.0;        ///< each rotation angle uniform in ±max (3D: about x, y, z)
  double max_translation_mm = 10.0;   ///< each translation component uniform in ±max
  double max_scale = 0.10;            ///< each axis scale uniform in 1 ± max
  double intensity_scale = 0.10;      ///< a ∈ 1 ± this
  double intensity_shift = 0.05;      ///< b ∈ ± this

  void validate() const {
    RLMED_CHECK(std::isfinite(max_angle_deg) && max_angle_deg >= 0 && max_angle_deg <= 180,
                "AugmentOptions: max_angle_deg must be in [0, 180]; found ", max_angle_deg);
    RLMED_CHECK(std::isfinite(max_translation_mm) && max_translation_mm >= 0,
                "AugmentOptions: max_translation_mm must be >= 0; found ", max_translation_mm);
    RLMED_CHECK(std::isfinite(max_scale) && max_scale >= 0 && max_scale < 1,
                "AugmentOptions: max_scale must be in [0, 1); found ", max_scale);
    RLMED_CHECK(std::isfinite(intensity_scale) && intensity_scale >= 0 && intensity_scale < 1,
                "AugmentOptions: intensity_scale must be in [0, 1); found ", intensity_scale);
    RLMED_CHECK(std::isfinite(intensity_shift) && intensity_shift >= 0,
                "AugmentOptions: intensity_shift must be >= 0; found ", intensity_shift);
  }
};

/// p ↦ M (p − centre) + centre + translation (world mm).
template <std::size_t Dim>
struct AffineTransform {
  Mat<Dim> matrix = identity_matrix<Dim>();
  Vec<Dim> translation_mm{};
  Vec<Dim> centre_mm{};

  [[nodiscard]] Vec<Dim> apply(const Vec<Dim>& p) const noexcept {
    Vec<Dim> d{};
    for (std::size_t a = 0; a < Dim; ++a) d[a] = p[a] - centre_mm[a];
    Vec<Dim> r = mat_vec<Dim>(matrix, d);
    for (std::size_t a = 0; a < Dim; ++a) r[a] += centre_mm[a] + translation_mm[a];
    return r;
  }
};

/// World centre of an image's voxel grid.
template <class T, std::size_t Dim>
Vec<Dim> image_centre_mm(const Image<T, Dim>& image) {
  const auto n = image.size_xyz();
  Vec<Dim> idx{};
  for (std::size_t a = 0; a < Dim; ++a) idx[a] = 0.5 * double(n[a] - 1);
  return image.index_to_physical(idx);
}

/// A random affine transform about `centre_mm` (draw order: angles, scales, translation).
template <std::size_t Dim>
AffineTransform<Dim> random_affine(const Vec<Dim>& centre_mm, const AugmentOptions& o, PhiloxStream& rng) {
  static_assert(Dim == 2 || Dim == 3);
  o.validate();
  auto uni = [&](double m) { return m * (2.0 * rng.uniform_double() - 1.0); };
  const double max_rad = o.max_angle_deg * std::numbers::pi / 180.0;
  Mat<Dim> rot{};
  if constexpr (Dim == 2) {
    const double a = uni(max_rad);
    rot = {std::cos(a), -std::sin(a), std::sin(a), std::cos(a)};
  } else {
    const double ax = uni(max_rad), ay = uni(max_rad), az = uni(max_rad);
    const Mat<3> rx{1, 0, 0, 0, std::cos(ax), -std::sin(ax), 0, std::sin(ax), std::cos(ax)};
    const Mat<3> ry{std::cos(ay), 0, std::sin(ay), 0, 1, 0, -std::sin(ay), 0, std::cos(ay)};
    const Mat<3> rz{std::cos(az), -std::sin(az), 0, std::sin(az), std::cos(az), 0, 0, 0, 1};
    rot = mat_mul<3>(rz, mat_mul<3>(ry, rx));
  }
  Mat<Dim> scale{};
  for (std::size_t a = 0; a < Dim; ++a) scale[a * Dim + a] = 1.0 + uni(o.max_scale);
  AffineTransform<Dim> t;
  t.matrix = mat_mul<Dim>(rot, scale);
  t.centre_mm = centre_mm;
  for (std::size_t a = 0; a < Dim; ++a) t.translation_mm[a] = uni(o.max_translation_mm);
  return t;
}

/// out(p) = in(A⁻¹ p) on the input's grid (linear, 0 outside).
template <std::size_t Dim>
Image<float, Dim> apply_affine(const Image<float, Dim>& in, const AffineTransform<Dim>& transform) {
  in.validate_geometry();
  Image<float, Dim> moved;
  moved.voxels = in.voxels;  // a copy: same voxels, moved geometry
  moved.spacing_mm = in.spacing_mm;
  moved.direction = mat_mul<Dim>(transform.matrix, in.direction);
  moved.origin_mm = transform.apply(in.origin_mm);
  moved.validate_geometry();
  return resample(moved, grid_of(in), Interpolation::linear, 0.0f);
}

template <std::size_t Dim>
struct AugmentedCase {
  Image<float, Dim> image;
  std::vector<Vec<Dim>> points_mm;
  AffineTransform<Dim> transform;
  double intensity_scale = 1.0, intensity_shift = 0.0;
};

/// A random augmentation of (image, points): affine about the image centre, then intensity jitter.
template <std::size_t Dim>
AugmentedCase<Dim> augment(const Image<float, Dim>& image, const std::vector<Vec<Dim>>& points_mm,
                           const AugmentOptions& options, PhiloxStream& rng) {
  AugmentedCase<Dim> out;
  out.transform = random_affine<Dim>(image_centre_mm(image), options, rng);
  out.intensity_scale = 1.0 + options.intensity_scale * (2.0 * rng.uniform_double() - 1.0);
  out.intensity_shift = options.intensity_shift * (2.0 * rng.uniform_double() - 1.0);
  out.image = apply_affine<Dim>(image, out.transform);
  const auto a = static_cast<float>(out.intensity_scale), b = static_cast<float>(out.intensity_shift);
  float* v = out.image.voxels.data();
  for (index_t i = 0; i < out.image.voxels.size(); ++i) v[i] = a * v[i] + b;
  out.points_mm.reserve(points_mm.size());
  for (const auto& p : points_mm) out.points_mm.push_back(out.transform.apply(p));
  return out;
}

}  // namespace rlmed::imaging
