// rlmed/imaging/phantom.hpp — procedural phantoms with exact ground truth, deterministic by
// seed: 2D organ/lesion slices, a 3D head with named landmarks, and registration pairs.
//
// Design decisions:
//  * Every random number comes from rlmed::PhiloxStream streams derived from the seed (geometry,
//    texture, bias and noise each have their own stream id), and bulk noise uses the thread-count
//    independent fills of random.hpp: the same seed gives bit-identical phantoms on any machine
//    with the same floating-point behaviour, whatever the number of threads.
//  * Shapes are analytic. An irregular boundary is a star-shaped surface: a point is inside when
//    its normalised radius is below 1 + δ(direction), δ a short sum of random smooth harmonics
//    (2D: Fourier harmonics of the angle; 3D: sinusoids of the direction's projections on random
//    axes) with Σ|amplitude| bounded. Labels are evaluated at voxel centres. Landmarks are points
//    computed from the same formulas (centres, and points a fixed fraction of the way to the
//    boundary along an axis), so each provably lies inside the structure it names.
//  * Head layout (LPS: +x left, +y posterior, +z superior) lives in normalised field-of-view
//    coordinates q ∈ [-1, 1]³ (q = (i − (n−1)/2) / (n/2)), so it scales with the grid. Scalp, skull
//    and CSF are shells of one irregular head surface (thresholds of the same normalised radius,
//    so shells never vanish); the brain surface adds a gyral modulation; ventricles and nuclei are
//    irregular ellipsoids placed with margins that keep them disjoint for every seed.
//  * Appearance: piecewise-constant intensities per label + smoothed-noise texture inside the
//    object + a smooth multiplicative bias field in [1 − b, 1 + b] + Gaussian or Rician noise
//    (Rician: |(I + σ n₁) + i σ n₂|, the magnitude-MRI model).
//  * Registration pairs share one grid: the moving image is the phantom as given; the fixed image
//    is the moving one sampled at p + u(p) (VoxelMorph convention, u in voxels, channel c along
//    tensor axis c), so fixed(p) = moving(p + u(p)) holds by construction. Deformations are cubic
//    B-splines on a coarse random control grid, scaled to the requested maximum displacement and
//    then, if needed, scaled down until the central-difference Jacobian of u has Frobenius norm
//    ≤ max_gradient < 1 at every voxel, which implies det(I + ∇u) ≥ (1 − max_gradient)^Dim > 0 (no
//    folding). Rigid pairs use fixed(p) = moving(T(p)), T = rotation about the image centre plus a
//    translation (world mm), and also return the equivalent dense displacement.
//  * Warping uses the small linear/nearest samplers of resample.hpp (zero outside), not warp.hpp,
//    so phantoms do not depend on the spatial-transformer code they help to test.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>
#include <string_view>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/random.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/image.hpp"
#include "rlmed/imaging/resample.hpp"

namespace rlmed::imaging {

enum class NoiseModel { gaussian, rician };

namespace detail {

// Stream ids of the phantom generators (any fixed distinct values).
inline constexpr std::uint64_t kGeometryStream = 0x9E01;
inline constexpr std::uint64_t kTextureStream = 0x9E02;
inline constexpr std::uint64_t kNoiseStream = 0x9E03;
inline constexpr std::uint64_t kFieldStream = 0x9E04;
inline constexpr std::uint64_t kRigidStream = 0x9E05;

inline double uniform_in(PhiloxStream& rng, double lo, double hi) { return lo + (hi - lo) * rng.uniform_double(); }

/// A smooth random function of a unit direction: δ(w) = Σ_k a_k sin(f_k (w · v_k) + φ_k).
struct DirectionalHarmonics {
  struct Term {
    Vec<3> axis{};
    double frequency = 0, phase = 0, amplitude = 0;
  };
  std::vector<Term> terms;

  static DirectionalHarmonics random(PhiloxStream& rng, int count, double total_amplitude, double f_lo, double f_hi) {
    DirectionalHarmonics h;
    std::vector<double> weights(static_cast<std::size_t>(count));
    double sum = 0;
    for (auto& w : weights) sum += (w = uniform_in(rng, 0.3, 1.0));
    for (int k = 0; k < count; ++k) {
      Term t;
      const double z = uniform_in(rng, -1.0, 1.0), phi = uniform_in(rng, 0.0, 2.0 * std::numbers::pi);
      const double r = std::sqrt(std::max(0.0, 1.0 - z * z));
      t.axis = {r * std::cos(phi), r * std::sin(phi), z};
      t.frequency = uniform_in(rng, f_lo, f_hi);
      t.phase = uniform_in(rng, 0.0, 2.0 * std::numbers::pi);
      t.amplitude = total_amplitude * weights[std::size_t(k)] / sum;
      h.terms.push_back(t);
    }
    return h;
  }
  [[nodiscard]] double operator()(const Vec<3>& unit) const noexcept {
    double d = 0;
    for (const Term& t : terms)
      d += t.amplitude * std::sin(t.frequency * (unit[0] * t.axis[0] + unit[1] * t.axis[1] + unit[2] * t.axis[2]) + t.phase);
    return d;
  }
  [[nodiscard]] double bound() const noexcept {
    double b = 0;
    for (const Term& t : terms) b += std::abs(t.amplitude);
    return b;
  }
};

/// An axis-aligned ellipsoid in normalised coordinates with an irregular surface:
/// inside ⇔ |u| < 1 + δ(u / |u|), u = (q − centre) / semi_axes.
struct IrregularEllipsoid {
  Vec<3> centre{}, semi{};
  DirectionalHarmonics surface;

  [[nodiscard]] bool contains(const Vec<3>& q) const noexcept {
    const Vec<3> u{(q[0] - centre[0]) / semi[0], (q[1] - centre[1]) / semi[1], (q[2] - centre[2]) / semi[2]};
    const double rho = std::sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]);
    const double b = surface.bound();
    if (rho < 1.0 - b) return true;
    if (rho >= 1.0 + b) return false;
    return rho < 1.0 + surface({u[0] / rho, u[1] / rho, u[2] / rho});
  }
  /// The point a fraction t of the way from the centre to the surface along unit direction w (u-space).
  [[nodiscard]] Vec<3> point_towards(const Vec<3>& w, double t) const noexcept {
    const double r = t * (1.0 + surface(w));
    return {centre[0] + semi[0] * r * w[0], centre[1] + semi[1] * r * w[1], centre[2] + semi[2] * r * w[2]};
  }
};

/// Smooth bias in [−1, 1]: Σ c_j cos(π (f_j · q) + φ_j) / Σ|c_j| over normalised coordinates.
template <std::size_t Dim>
struct BiasField {
  struct Term {
    Vec<Dim> freq{};
    double phase = 0, weight = 0;
  };
  std::vector<Term> terms;
  double norm = 1;

  static BiasField random(PhiloxStream& rng, int count) {
    BiasField b;
    double sum = 0;
    for (int k = 0; k < count; ++k) {
      Term t;
      for (auto& f : t.freq) f = uniform_in(rng, -0.6, 0.6);
      t.phase = uniform_in(rng, 0.0, 2.0 * std::numbers::pi);
      t.weight = uniform_in(rng, -1.0, 1.0);
      sum += std::abs(t.weight);
      b.terms.push_back(t);
    }
    b.norm = sum > 0 ? sum : 1.0;
    return b;
  }
  [[nodiscard]] double operator()(const Vec<Dim>& q) const noexcept {
    double v = 0;
    for (const Term& t : terms) {
      double arg = t.phase;
      for (std::size_t a = 0; a < Dim; ++a) arg += std::numbers::pi * t.freq[a] * q[a];
      v += t.weight * std::cos(arg);
    }
    return v / norm;
  }
};

/// Standard deviation of unit white noise after the separable truncated Gaussian (interior voxels).
template <std::size_t R>
double smoothed_noise_std(double sigma_vox) {
  const auto taps = gaussian_kernel(sigma_vox);
  double s2 = 0;
  for (double w : taps) s2 += w * w;
  return std::pow(std::sqrt(s2), double(R));
}

/// Adds amplitude · (unit-std smoothed noise) where `where[i]` is non-zero.
template <std::size_t R>
void add_texture(TensorView<float, R> image, TensorView<const std::uint8_t, R> where, double amplitude, double sigma_vox,
                 std::uint64_t seed) {
  if (amplitude == 0) return;
  Tensor<float, R> white(image.shape());
  PhiloxStream rng(seed, kTextureStream);
  fill_normal(white.view(), rng);
  Tensor<float, R> smooth = gaussian_smooth<float, R>(white.view(), sigma_vox);
  const double scale = amplitude / smoothed_noise_std<R>(sigma_vox);
  float* x = image.data();
  const float* s = smooth.data();
  const std::uint8_t* m = where.data();
  for (index_t i = 0; i < image.size(); ++i)
    if (m[i]) x[i] += static_cast<float>(scale * double(s[i]));
}

/// Gaussian: I + σ n₁. Rician: sqrt((I + σ n₁)² + (σ n₂)²).
template <std::size_t R>
void add_noise(TensorView<float, R> image, NoiseModel model, double sigma, std::uint64_t seed) {
  if (sigma == 0) return;
  PhiloxStream rng(seed, kNoiseStream);
  Tensor<float, R> n1(image.shape());
  fill_normal(n1.view(), rng);
  Tensor<float, R> n2;
  if (model == NoiseModel::rician) {
    n2 = Tensor<float, R>(image.shape());
    fill_normal(n2.view(), rng);
  }
  float* x = image.data();
  for (index_t i = 0; i < image.size(); ++i) {
    const double re = double(x[i]) + sigma * double(n1.data()[i]);
    if (model == NoiseModel::rician) {
      const double im = sigma * double(n2.data()[i]);
      x[i] = static_cast<float>(std::sqrt(re * re + im * im));
    } else {
      x[i] = static_cast<float>(re);
    }
  }
}

inline void check_appearance(double texture_amplitude, double texture_sigma, double bias_amplitude, double noise_sigma,
                             const char* who) {
  RLMED_CHECK(std::isfinite(texture_amplitude) && texture_amplitude >= 0 && texture_amplitude <= 1, who,
              ": texture amplitude must be in [0, 1]; found ", texture_amplitude);
  RLMED_CHECK(std::isfinite(texture_sigma) && texture_sigma > 0 && texture_sigma <= 16, who,
              ": texture sigma must be in (0, 16] voxels; found ", texture_sigma);
  RLMED_CHECK(std::isfinite(bias_amplitude) && bias_amplitude >= 0 && bias_amplitude < 1, who,
              ": bias amplitude must be in [0, 1); found ", bias_amplitude);
  RLMED_CHECK(std::isfinite(noise_sigma) && noise_sigma >= 0 && noise_sigma <= 1, who,
              ": noise sigma must be in [0, 1]; found ", noise_sigma);
}

}  // namespace detail

// ---- (a) 2D slices: organ, lesions ---------------------------------------------------------------

/// Labels of the slice phantom.
enum SliceLabel : std::uint8_t { kSliceBackground = 0, kSliceOrgan = 1, kSliceLesion = 2 };

struct SlicePhantomOptions {
  index_t height = 128, width = 128;
  index_t max_lesions = 3;              ///< lesion count drawn uniformly from [0, max_lesions] (<= 8)
  double organ_radius_fraction = 0.32;  ///< mean organ radius / min(height, width)
  double boundary_irregularity = 0.15;  ///< Σ|Fourier amplitudes| relative to the radius, [0, 0.4]
  int harmonics = 4;                    ///< random harmonics of orders 2 .. harmonics + 1
  double background = 0.05, organ = 0.45, lesion = 0.85;  ///< intensities before texture, bias, noise
  double texture_amplitude = 0.04, texture_sigma_px = 2.0;
  double bias_amplitude = 0.2;  ///< multiplicative field within [1 − b, 1 + b]
  NoiseModel noise = NoiseModel::rician;
  double noise_sigma = 0.02;
};

/// A lesion disc: centre (x, y) and radius, in pixels.
struct Disc {
  double x = 0, y = 0, radius = 0;
};

struct SlicePhantom {
  Tensor<float, 2> image;          // [H, W]
  Tensor<std::uint8_t, 2> labels;  // [H, W]: 0 background, 1 organ, 2 lesion
  double organ_centre_x = 0, organ_centre_y = 0, organ_radius = 0;  // pixels (mean radius)
  std::vector<Disc> lesions;
};

/// A 2D MRI/CT-like slice: irregular organ, 0..max_lesions lesions inside it, texture, bias, noise.
inline SlicePhantom make_slice_phantom(const SlicePhantomOptions& o, std::uint64_t seed) {
  RLMED_CHECK(o.height >= 16 && o.height <= 8192 && o.width >= 16 && o.width <= 8192,
              "make_slice_phantom: size must be in [16, 8192] per side; found ", o.height, "x", o.width);
  RLMED_CHECK(o.max_lesions >= 0 && o.max_lesions <= 8, "make_slice_phantom: max_lesions must be in [0, 8]; found ",
              o.max_lesions);
  RLMED_CHECK(o.harmonics >= 1 && o.harmonics <= 16, "make_slice_phantom: harmonics must be in [1, 16]; found ", o.harmonics);
  RLMED_CHECK(o.boundary_irregularity >= 0 && o.boundary_irregularity <= 0.4,
              "make_slice_phantom: boundary irregularity must be in [0, 0.4]; found ", o.boundary_irregularity);
  RLMED_CHECK(o.organ_radius_fraction > 0.05 && o.organ_radius_fraction * (1 + o.boundary_irregularity) <= 0.44,
              "make_slice_phantom: organ radius fraction ", o.organ_radius_fraction, " with irregularity ",
              o.boundary_irregularity, " does not fit the field of view (need fraction·(1+irregularity) <= 0.44)");
  for (double v : {o.background, o.organ, o.lesion})
    RLMED_CHECK(std::isfinite(v), "make_slice_phantom: intensities must be finite");
  detail::check_appearance(o.texture_amplitude, o.texture_sigma_px, o.bias_amplitude, o.noise_sigma, "make_slice_phantom");

  PhiloxStream rng(seed, detail::kGeometryStream);
  const double side = double(std::min(o.height, o.width));
  SlicePhantom p;
  p.organ_radius = o.organ_radius_fraction * side;
  p.organ_centre_x = 0.5 * double(o.width - 1) + detail::uniform_in(rng, -0.05, 0.05) * side;
  p.organ_centre_y = 0.5 * double(o.height - 1) + detail::uniform_in(rng, -0.05, 0.05) * side;
  struct Harmonic {
    int order;
    double amplitude, phase;
  };
  std::vector<Harmonic> harmonics;
  {
    std::vector<double> w(static_cast<std::size_t>(o.harmonics));
    double sum = 0;
    for (auto& v : w) sum += (v = detail::uniform_in(rng, 0.2, 1.0));
    for (int k = 0; k < o.harmonics; ++k)
      harmonics.push_back({k + 2, o.boundary_irregularity * w[std::size_t(k)] / sum,
                           detail::uniform_in(rng, 0.0, 2.0 * std::numbers::pi)});
  }
  // Lesions inside the disc of radius 0.75·r_min ⊂ organ (r(θ) >= r_min = R(1 − irregularity)).
  const double r_min = p.organ_radius * (1.0 - o.boundary_irregularity);
  const auto lesion_count = static_cast<index_t>(rng.uniform_int(static_cast<std::uint32_t>(o.max_lesions + 1)));
  for (index_t l = 0; l < lesion_count; ++l) {
    Disc d;
    d.radius = detail::uniform_in(rng, 0.08, 0.2) * r_min;
    const double dist = detail::uniform_in(rng, 0.0, 0.5) * r_min;
    const double ang = detail::uniform_in(rng, 0.0, 2.0 * std::numbers::pi);
    d.x = p.organ_centre_x + dist * std::cos(ang);
    d.y = p.organ_centre_y + dist * std::sin(ang);
    p.lesions.push_back(d);
  }
  const auto bias = detail::BiasField<2>::random(rng, 4);

  const Shape<2> shape{o.height, o.width};
  p.labels = Tensor<std::uint8_t, 2>(shape);
  p.image = Tensor<float, 2>(shape);
  parallel_for(0, o.height, [&](index_t y) {
    for (index_t x = 0; x < o.width; ++x) {
      const double dx = double(x) - p.organ_centre_x, dy = double(y) - p.organ_centre_y;
      const double r = std::sqrt(dx * dx + dy * dy);
      double boundary = 1.0;
      const double theta = std::atan2(dy, dx);
      for (const Harmonic& h : harmonics) boundary += h.amplitude * std::cos(h.order * theta + h.phase);
      std::uint8_t label = r < p.organ_radius * boundary ? kSliceOrgan : kSliceBackground;
      for (const Disc& d : p.lesions)
        if ((double(x) - d.x) * (double(x) - d.x) + (double(y) - d.y) * (double(y) - d.y) < d.radius * d.radius)
          label = kSliceLesion;
      p.labels(y, x) = label;
      p.image(y, x) = static_cast<float>(label == kSliceLesion ? o.lesion : label == kSliceOrgan ? o.organ : o.background);
    }
  }, 16);
  detail::add_texture<2>(p.image.view(), p.labels.view(), o.texture_amplitude, o.texture_sigma_px, seed);
  parallel_for(0, o.height, [&](index_t y) {
    for (index_t x = 0; x < o.width; ++x) {
      const Vec<2> q{(double(x) - 0.5 * double(o.width - 1)) / (0.5 * double(o.width)),
                     (double(y) - 0.5 * double(o.height - 1)) / (0.5 * double(o.height))};
      p.image(y, x) = static_cast<float>(double(p.image(y, x)) * (1.0 + o.bias_amplitude * bias(q)));
    }
  }, 16);
  detail::add_noise<2>(p.image.view(), o.noise, o.noise_sigma, seed);
  return p;
}

/// Binary foreground (1 where label > 0) of a label map of any rank.
template <std::size_t R>
Tensor<std::uint8_t, R> foreground_mask(TensorView<const std::uint8_t, R> labels) {
  auto out = Tensor<std::uint8_t, R>::uninitialized(labels.shape());
  for (index_t i = 0; i < labels.size(); ++i) out.data()[i] = labels.data()[i] != 0 ? 1 : 0;
  return out;
}

// ---- (b) 3D head with named landmarks ------------------------------------------------------------

/// Labels of the head phantom.
enum HeadLabel : std::uint8_t {
  kHeadBackground = 0,
  kScalp = 1,
  kSkull = 2,
  kCsf = 3,
  kBrain = 4,
  kVentricle = 5,
  kLeftCaudate = 6,
  kRightCaudate = 7,
  kLeftThalamus = 8,
  kRightThalamus = 9,
};
inline constexpr int kHeadLabelCount = 10;

struct HeadPhantomOptions {
  std::array<index_t, 3> size_xyz{96, 96, 96};  ///< voxels, each in [32, 512]
  Vec<3> spacing_mm{1.0, 1.0, 1.0};
  Vec<3> origin_mm{0.0, 0.0, 0.0};
  double boundary_irregularity = 0.04;  ///< Σ|harmonic amplitudes| of every surface, [0, 0.05]
  /// Intensity per label (background, scalp, skull, CSF, brain, ventricle, caudates, thalami): T1-like.
  std::array<double, kHeadLabelCount> intensity{0.0, 0.55, 0.12, 0.2, 0.72, 0.12, 0.5, 0.5, 0.56, 0.56};
  double texture_amplitude = 0.03, texture_sigma_vox = 1.5;
  double bias_amplitude = 0.15;
  NoiseModel noise = NoiseModel::rician;
  double noise_sigma = 0.02;
};

/// A named point in world mm and the label of the structure it lies in.
struct Landmark {
  std::string name;
  Vec<3> point_mm{};
  std::uint8_t label = 0;
};

struct HeadPhantom {
  Image<float, 3> image;
  Image<std::uint8_t, 3> labels;
  std::vector<Landmark> landmarks;

  [[nodiscard]] const Landmark& landmark(std::string_view name) const {
    for (const Landmark& l : landmarks)
      if (l.name == name) return l;
    RLMED_THROW("head phantom has no landmark named '", name, "' (", landmarks.size(), " landmarks)");
  }
};

namespace detail {

/// The random geometry of one head (normalised coordinates; see the header).
struct HeadGeometry {
  Vec<3> head_centre{}, head_semi{};
  DirectionalHarmonics head_surface, gyri;
  double gyri_depth = 0.04;
  IrregularEllipsoid ventricle[2], caudate[2], thalamus[2];  // [0] left (+x), [1] right

  // Shell thresholds of the head's normalised radius ρ = |u| / (1 + δ(u/|u|)).
  static constexpr double kSkullOuter = 0.9, kSkullInner = 0.8, kBrainOuter = 0.74;

  static HeadGeometry random(PhiloxStream& rng, double irregularity) {
    HeadGeometry g;
    auto jitter = [&](double v, double j) { return v + uniform_in(rng, -j, j); };
    const double scale = uniform_in(rng, 0.97, 1.0);
    g.head_centre = {jitter(0.0, 0.01), jitter(0.0, 0.01), jitter(0.0, 0.01)};
    g.head_semi = {0.78 * scale, 0.90 * scale, 0.84 * scale};
    g.head_surface = DirectionalHarmonics::random(rng, 4, irregularity, 1.0, 3.0);
    g.gyri = DirectionalHarmonics::random(rng, 6, 1.0, 6.0, 12.0);
    auto structure = [&](Vec<3> c, Vec<3> semi) {
      IrregularEllipsoid e;
      for (std::size_t a = 0; a < 3; ++a) {
        e.centre[a] = g.head_centre[a] + jitter(c[a], 0.01);
        e.semi[a] = semi[a] * uniform_in(rng, 0.95, 1.05);
      }
      e.surface = DirectionalHarmonics::random(rng, 4, irregularity, 1.0, 3.0);
      return e;
    };
    for (int side = 0; side < 2; ++side) {
      const double sx = side == 0 ? 1.0 : -1.0;  // +x is the patient's left (LPS)
      g.ventricle[side] = structure({sx * 0.10, -0.02, 0.12}, {0.06, 0.30, 0.10});
      g.caudate[side] = structure({sx * 0.27, -0.18, 0.10}, {0.06, 0.08, 0.08});
      g.thalamus[side] = structure({sx * 0.11, 0.10, -0.10}, {0.07, 0.10, 0.07});
    }
    return g;
  }

  [[nodiscard]] std::uint8_t label_at(const Vec<3>& q) const noexcept {
    const Vec<3> u{(q[0] - head_centre[0]) / head_semi[0], (q[1] - head_centre[1]) / head_semi[1],
                   (q[2] - head_centre[2]) / head_semi[2]};
    const double len = std::sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]);
    if (len >= 1.0 + head_surface.bound()) return kHeadBackground;
    const Vec<3> dir = len > 0 ? Vec<3>{u[0] / len, u[1] / len, u[2] / len} : Vec<3>{0, 0, 1};
    const double rho = len / (1.0 + head_surface(dir));
    if (rho >= 1.0) return kHeadBackground;
    if (rho >= kSkullOuter) return kScalp;
    if (rho >= kSkullInner) return kSkull;
    // Gyral modulation in [−depth, 0]: deeper sulci, never into the skull.
    const double g = -gyri_depth * 0.5 * (1.0 + gyri(dir) / gyri.bound());
    if (rho >= kBrainOuter + g) return kCsf;
    for (int s = 0; s < 2; ++s) {
      if (caudate[s].contains(q)) return s == 0 ? kLeftCaudate : kRightCaudate;
      if (thalamus[s].contains(q)) return s == 0 ? kLeftThalamus : kRightThalamus;
      if (ventricle[s].contains(q)) return kVentricle;
    }
    return kBrain;
  }
};

}  // namespace detail

/// A 3D T1-like head: scalp, skull, CSF, brain, lateral ventricles, caudates and thalami, with
/// named landmarks (structure centres, ventricle horn points, the skull vertex) in world mm.
inline HeadPhantom make_head_phantom(const HeadPhantomOptions& o, std::uint64_t seed) {
  for (std::size_t a = 0; a < 3; ++a)
    RLMED_CHECK(o.size_xyz[a] >= 32 && o.size_xyz[a] <= 512, "make_head_phantom: size must be in [32, 512] per axis; found ",
                o.size_xyz);
  RLMED_CHECK(o.boundary_irregularity >= 0 && o.boundary_irregularity <= 0.05,
              "make_head_phantom: boundary irregularity must be in [0, 0.05]; found ", o.boundary_irregularity);
  for (double v : o.intensity) RLMED_CHECK(std::isfinite(v), "make_head_phantom: intensities must be finite; found ", o.intensity);
  detail::check_appearance(o.texture_amplitude, o.texture_sigma_vox, o.bias_amplitude, o.noise_sigma, "make_head_phantom");

  PhiloxStream rng(seed, detail::kGeometryStream);
  const detail::HeadGeometry g = detail::HeadGeometry::random(rng, o.boundary_irregularity);
  const auto bias = detail::BiasField<3>::random(rng, 5);

  const Shape<3> shape{o.size_xyz[2], o.size_xyz[1], o.size_xyz[0]};
  HeadPhantom h;
  h.image = Image<float, 3>(Tensor<float, 3>(shape), o.spacing_mm, o.origin_mm);
  h.labels = Image<std::uint8_t, 3>(Tensor<std::uint8_t, 3>(shape), o.spacing_mm, o.origin_mm);
  auto to_q = [&](std::size_t a, index_t i) { return (double(i) - 0.5 * double(o.size_xyz[a] - 1)) / (0.5 * double(o.size_xyz[a])); };
  parallel_for(0, shape[0], [&](index_t z) {
    for (index_t y = 0; y < shape[1]; ++y)
      for (index_t x = 0; x < shape[2]; ++x) {
        const std::uint8_t l = g.label_at({to_q(0, x), to_q(1, y), to_q(2, z)});
        h.labels.voxels(z, y, x) = l;
        h.image.voxels(z, y, x) = static_cast<float>(o.intensity[l]);
      }
  }, 1);
  detail::add_texture<3>(h.image.view(), h.labels.view(), o.texture_amplitude, o.texture_sigma_vox, seed);
  parallel_for(0, shape[0], [&](index_t z) {
    for (index_t y = 0; y < shape[1]; ++y)
      for (index_t x = 0; x < shape[2]; ++x) {
        const double b = 1.0 + o.bias_amplitude * bias({to_q(0, x), to_q(1, y), to_q(2, z)});
        h.image.voxels(z, y, x) = static_cast<float>(double(h.image.voxels(z, y, x)) * b);
      }
  }, 1);
  detail::add_noise<3>(h.image.view(), o.noise, o.noise_sigma, seed);

  // Landmarks: normalised q → continuous index → world mm.
  auto world = [&](const Vec<3>& q) {
    Vec<3> idx{};
    for (std::size_t a = 0; a < 3; ++a) idx[a] = q[a] * 0.5 * double(o.size_xyz[a]) + 0.5 * double(o.size_xyz[a] - 1);
    return h.image.index_to_physical(idx);
  };
  const char* side_name[2] = {"left", "right"};
  for (int s = 0; s < 2; ++s) {
    h.landmarks.push_back({std::string(side_name[s]) + "_caudate_centre", world(g.caudate[s].centre),
                           s == 0 ? kLeftCaudate : kRightCaudate});
    h.landmarks.push_back({std::string(side_name[s]) + "_thalamus_centre", world(g.thalamus[s].centre),
                           s == 0 ? kLeftThalamus : kRightThalamus});
    // Horn points: 3/4 of the way to the ventricle surface along −y (anterior) and +y (posterior).
    h.landmarks.push_back({std::string(side_name[s]) + "_ventricle_anterior_horn",
                           world(g.ventricle[s].point_towards({0, -1, 0}, 0.75)), kVentricle});
    h.landmarks.push_back({std::string(side_name[s]) + "_ventricle_posterior_horn",
                           world(g.ventricle[s].point_towards({0, 1, 0}, 0.75)), kVentricle});
  }
  {
    // Skull vertex: mid-thickness of the skull straight above the head centre (+z, superior).
    const Vec<3> w{0, 0, 1};
    const double r = 0.5 * (detail::HeadGeometry::kSkullOuter + detail::HeadGeometry::kSkullInner) * (1.0 + g.head_surface(w));
    h.landmarks.push_back(
        {"skull_vertex", world({g.head_centre[0], g.head_centre[1], g.head_centre[2] + g.head_semi[2] * r}), kSkull});
  }
  return h;
}

// ---- (c) registration pairs ----------------------------------------------------------------------

template <std::size_t Dim>
struct DeformationOptions {
  index_t control_points = 6;          ///< cubic B-spline control points per axis (>= 4)
  double max_displacement_vox = 4.0;   ///< largest |u| over the image before the folding cap
  double max_gradient = 0.5;           ///< cap on ||central-difference ∇u||_F per voxel, (0, 0.9]
};

struct RigidOptions {
  double max_angle_deg = 10.0;       ///< each rotation angle uniform in ±max
  double max_translation_mm = 5.0;   ///< each translation component uniform in ±max
};

/// p ↦ R (p − centre) + centre + translation, world mm.
template <std::size_t Dim>
struct RigidTransform {
  Mat<Dim> rotation = identity_matrix<Dim>();
  Vec<Dim> translation_mm{};
  Vec<Dim> centre_mm{};

  [[nodiscard]] Vec<Dim> apply(const Vec<Dim>& p) const noexcept {
    Vec<Dim> d{};
    for (std::size_t a = 0; a < Dim; ++a) d[a] = p[a] - centre_mm[a];
    Vec<Dim> r = mat_vec<Dim>(rotation, d);
    for (std::size_t a = 0; a < Dim; ++a) r[a] += centre_mm[a] + translation_mm[a];
    return r;
  }
  [[nodiscard]] RigidTransform inverse() const noexcept {
    RigidTransform inv;
    inv.rotation = transpose<Dim>(rotation);
    inv.centre_mm = centre_mm;
    const Vec<Dim> t = mat_vec<Dim>(inv.rotation, translation_mm);
    for (std::size_t a = 0; a < Dim; ++a) inv.translation_mm[a] = -t[a];
    return inv;
  }
};

namespace detail {

inline double cubic_bspline(double s) noexcept {
  s = std::abs(s);
  if (s < 1.0) return (4.0 - 6.0 * s * s + 3.0 * s * s * s) / 6.0;
  if (s < 2.0) return (2.0 - s) * (2.0 - s) * (2.0 - s) / 6.0;
  return 0.0;
}

/// data [outer, k, inner] → [outer, n, inner] with weights [n, k].
inline std::vector<double> contract_axis(const std::vector<double>& data, index_t outer, index_t k, index_t inner,
                                         const std::vector<double>& weights, index_t n) {
  std::vector<double> out(static_cast<std::size_t>(outer * n * inner), 0.0);
  for (index_t o = 0; o < outer; ++o)
    for (index_t i = 0; i < n; ++i)
      for (index_t c = 0; c < k; ++c) {
        const double w = weights[static_cast<std::size_t>(i * k + c)];
        if (w == 0.0) continue;
        const double* src = data.data() + (o * k + c) * inner;
        double* dst = out.data() + (o * n + i) * inner;
        for (index_t e = 0; e < inner; ++e) dst[e] += w * src[e];
      }
  return out;
}

/// Largest Frobenius norm over voxels of the central-difference Jacobian of u [Dim, *spatial]
/// (one-sided differences on the borders, 0 along axes of one voxel).
template <std::size_t Dim>
double max_gradient_norm(TensorView<const float, Dim + 1> u) {
  Shape<Dim> spatial{};
  for (std::size_t t = 0; t < Dim; ++t) spatial[t] = u.extent(t + 1);
  const Shape<Dim> strides = contiguous_strides(spatial);
  const index_t n = numel(spatial);
  double best = 0;
  for (index_t i = 0; i < n; ++i) {
    double f2 = 0;
    for (std::size_t t = 0; t < Dim; ++t) {
      const index_t pos = (i / strides[t]) % spatial[t];
      if (spatial[t] < 2) continue;
      const index_t lo = pos > 0 ? i - strides[t] : i, hi = pos + 1 < spatial[t] ? i + strides[t] : i;
      const double h = double((hi - lo) / strides[t]);
      for (std::size_t c = 0; c < Dim; ++c) {
        const float* ch = u.data() + index_t(c) * n;
        const double d = (double(ch[hi]) - double(ch[lo])) / h;
        f2 += d * d;
      }
    }
    best = std::max(best, std::sqrt(f2));
  }
  return best;
}

/// out(p) = src(p + u(p)) with linear or nearest sampling, `fill` outside.
template <class T, std::size_t Dim>
void warp_with_field(TensorView<T, Dim> out, TensorView<const T, Dim> src, TensorView<const float, Dim + 1> u,
                     Interpolation mode) {
  const Shape<Dim> shape = src.shape();
  const Shape<Dim> strides = contiguous_strides(shape);
  const index_t n = numel(shape);
  parallel_for(0, n, [&](index_t i) {
    std::array<double, Dim> c{};
    for (std::size_t t = 0; t < Dim; ++t) c[t] = double((i / strides[t]) % shape[t]) + double(u.data()[index_t(t) * n + i]);
    if (mode == Interpolation::linear) {
      double v;
      out.data()[i] = sample_linear<T, Dim>(src, c, v) ? static_cast<T>(v) : T(0);
    } else {
      T v;
      out.data()[i] = sample_nearest<T, Dim>(src, c, v) ? v : T(0);
    }
  }, 4096);
}

}  // namespace detail

/// A smooth random displacement field [Dim, *spatial] in voxels (channel c along tensor axis c),
/// folding-free (see the header).
template <std::size_t Dim>
Tensor<float, Dim + 1> random_smooth_field(const Shape<Dim>& spatial, const DeformationOptions<Dim>& o, std::uint64_t seed) {
  static_assert(Dim == 2 || Dim == 3);
  for (std::size_t t = 0; t < Dim; ++t)
    RLMED_CHECK(spatial[t] >= 1 && spatial[t] <= 4096, "random_smooth_field: extents must be in [1, 4096]; found ", spatial);
  RLMED_CHECK(o.control_points >= 4 && o.control_points <= 64, "random_smooth_field: control points must be in [4, 64]; found ",
              o.control_points);
  RLMED_CHECK(std::isfinite(o.max_displacement_vox) && o.max_displacement_vox >= 0,
              "random_smooth_field: max displacement must be finite and >= 0 voxels; found ", o.max_displacement_vox);
  RLMED_CHECK(o.max_gradient > 0 && o.max_gradient <= 0.9, "random_smooth_field: max_gradient must be in (0, 0.9]; found ",
              o.max_gradient);
  const index_t k = o.control_points;
  const index_t n_total = numel(spatial);
  // Weights [n_t, k] per tensor axis: control point c sits at (c − 1)·h, h = (n − 1)/(k − 3).
  std::array<std::vector<double>, Dim> weights;
  for (std::size_t t = 0; t < Dim; ++t) {
    const double h = spatial[t] > 1 ? double(spatial[t] - 1) / double(k - 3) : 1.0;
    weights[t].resize(static_cast<std::size_t>(spatial[t] * k));
    for (index_t i = 0; i < spatial[t]; ++i)
      for (index_t c = 0; c < k; ++c)
        weights[t][static_cast<std::size_t>(i * k + c)] = detail::cubic_bspline(double(i) / h - double(c - 1));
  }
  PhiloxStream rng(seed, detail::kFieldStream);
  Shape<Dim + 1> fshape{};
  fshape[0] = Dim;
  for (std::size_t t = 0; t < Dim; ++t) fshape[t + 1] = spatial[t];
  std::vector<double> field(static_cast<std::size_t>(Dim * n_total));
  index_t k_pow = 1;
  for (std::size_t t = 0; t < Dim; ++t) k_pow *= k;
  for (std::size_t ch = 0; ch < Dim; ++ch) {
    std::vector<double> data(static_cast<std::size_t>(k_pow));
    for (auto& v : data) v = detail::uniform_in(rng, -1.0, 1.0);
    // Contract the control axes one after another: [k, k, k] → [n0, k, k] → [n0, n1, k] → [n0, n1, n2].
    index_t outer = 1;
    for (std::size_t t = 0; t < Dim; ++t) {
      index_t inner = 1;
      for (std::size_t s = t + 1; s < Dim; ++s) inner *= k;
      data = detail::contract_axis(data, outer, k, inner, weights[t], spatial[t]);
      outer *= spatial[t];
    }
    std::copy(data.begin(), data.end(), field.begin() + static_cast<std::ptrdiff_t>(ch * n_total));
  }
  double max_norm = 0;
  for (index_t i = 0; i < n_total; ++i) {
    double s = 0;
    for (std::size_t ch = 0; ch < Dim; ++ch) s += field[ch * n_total + i] * field[ch * n_total + i];
    max_norm = std::max(max_norm, std::sqrt(s));
  }
  double scale = max_norm > 0 ? o.max_displacement_vox / max_norm : 0.0;
  Tensor<float, Dim + 1> out(fshape);
  auto write = [&] {
    for (index_t i = 0; i < index_t(Dim) * n_total; ++i) out.data()[i] = static_cast<float>(scale * field[std::size_t(i)]);
  };
  write();
  const double g = detail::max_gradient_norm<Dim>(out.view());
  if (g > o.max_gradient) {
    scale *= o.max_gradient / g * (1.0 - 1e-6);
    write();
  }
  return out;
}

/// A random rigid transform about `centre_mm`: angles (3D: about x, then y, then z) and
/// translations uniform within the bounds.
template <std::size_t Dim>
RigidTransform<Dim> random_rigid_transform(const Vec<Dim>& centre_mm, const RigidOptions& o, std::uint64_t seed) {
  static_assert(Dim == 2 || Dim == 3);
  RLMED_CHECK(std::isfinite(o.max_angle_deg) && o.max_angle_deg >= 0 && o.max_angle_deg <= 180,
              "random_rigid_transform: max angle must be in [0, 180] degrees; found ", o.max_angle_deg);
  RLMED_CHECK(std::isfinite(o.max_translation_mm) && o.max_translation_mm >= 0,
              "random_rigid_transform: max translation must be finite and >= 0 mm; found ", o.max_translation_mm);
  PhiloxStream rng(seed, detail::kRigidStream);
  const double max_rad = o.max_angle_deg * std::numbers::pi / 180.0;
  RigidTransform<Dim> t;
  t.centre_mm = centre_mm;
  if constexpr (Dim == 2) {
    const double a = detail::uniform_in(rng, -max_rad, max_rad);
    t.rotation = {std::cos(a), -std::sin(a), std::sin(a), std::cos(a)};
  } else {
    const double ax = detail::uniform_in(rng, -max_rad, max_rad), ay = detail::uniform_in(rng, -max_rad, max_rad),
                 az = detail::uniform_in(rng, -max_rad, max_rad);
    const Mat<3> rx{1, 0, 0, 0, std::cos(ax), -std::sin(ax), 0, std::sin(ax), std::cos(ax)};
    const Mat<3> ry{std::cos(ay), 0, std::sin(ay), 0, 1, 0, -std::sin(ay), 0, std::cos(ay)};
    const Mat<3> rz{std::cos(az), -std::sin(az), 0, std::sin(az), std::cos(az), 0, 0, 0, 1};
    t.rotation = mat_mul<3>(rz, mat_mul<3>(ry, rx));
  }
  for (std::size_t a = 0; a < Dim; ++a) t.translation_mm[a] = detail::uniform_in(rng, -o.max_translation_mm, o.max_translation_mm);
  return t;
}

/// The dense displacement [Dim, *spatial] (voxels, tensor-axis channels) of a world transform on
/// one grid: u(p) = index(T(world(p))) − p.
template <class T, std::size_t Dim>
Tensor<float, Dim + 1> rigid_displacement_field(const Image<T, Dim>& grid_image, const RigidTransform<Dim>& transform) {
  const Shape<Dim> spatial = grid_image.shape();
  Shape<Dim + 1> fshape{};
  fshape[0] = Dim;
  for (std::size_t t = 0; t < Dim; ++t) fshape[t + 1] = spatial[t];
  Tensor<float, Dim + 1> out(fshape);
  const Shape<Dim> strides = contiguous_strides(spatial);
  const index_t n = numel(spatial);
  const Mat<Dim> inv_dir = inverse<Dim>(grid_image.direction);  // validates once, outside the loop
  parallel_for(0, n, [&](index_t i) {
    Vec<Dim> idx{};
    for (std::size_t t = 0; t < Dim; ++t) idx[Dim - 1 - t] = double((i / strides[t]) % spatial[t]);
    const Vec<Dim> q = transform.apply(grid_image.index_to_physical(idx));
    Vec<Dim> d{};
    for (std::size_t a = 0; a < Dim; ++a) d[a] = q[a] - grid_image.origin_mm[a];
    Vec<Dim> j = mat_vec<Dim>(inv_dir, d);
    for (std::size_t a = 0; a < Dim; ++a) {
      j[a] /= grid_image.spacing_mm[a];
      out.data()[index_t(tensor_axis<Dim>(a)) * n + i] = static_cast<float>(j[a] - idx[a]);
    }
  }, 4096);
  return out;
}

template <std::size_t Dim>
struct RegistrationPair {
  Image<float, Dim> fixed, moving;
  Image<std::uint8_t, Dim> fixed_labels, moving_labels;
  Tensor<float, Dim + 1> displacement_vox;  ///< [Dim, *spatial]: fixed(p) = moving(p + u(p))
  RigidTransform<Dim> transform;            ///< fixed world point → moving world point (identity if deformable)
};

namespace detail {
template <std::size_t Dim>
RegistrationPair<Dim> pair_from_field(const Image<float, Dim>& image, const Image<std::uint8_t, Dim>& labels,
                                      Tensor<float, Dim + 1> field) {
  RLMED_CHECK(same_geometry(image, labels), "registration pair: image and labels must share one grid; found shapes ",
              image.shape(), " and ", labels.shape());
  RegistrationPair<Dim> p;
  p.moving = image;
  p.moving_labels = labels;
  p.fixed = image_like<float>(image);
  p.fixed_labels = image_like<std::uint8_t>(labels);
  warp_with_field<float, Dim>(p.fixed.view(), image.view(), field.view(), Interpolation::linear);
  warp_with_field<std::uint8_t, Dim>(p.fixed_labels.view(), labels.view(), field.view(), Interpolation::nearest);
  p.displacement_vox = std::move(field);
  return p;
}
}  // namespace detail

/// Deformable pair: fixed(p) = moving(p + u(p)), u a random smooth folding-free field.
template <std::size_t Dim>
RegistrationPair<Dim> make_deformable_pair(const Image<float, Dim>& image, const Image<std::uint8_t, Dim>& labels,
                                           const DeformationOptions<Dim>& options, std::uint64_t seed) {
  return detail::pair_from_field<Dim>(image, labels, random_smooth_field<Dim>(image.shape(), options, seed));
}

/// Rigid pair: fixed(p) = moving(T(p)), T a random rotation about the image centre + translation.
template <std::size_t Dim>
RegistrationPair<Dim> make_rigid_pair(const Image<float, Dim>& image, const Image<std::uint8_t, Dim>& labels,
                                      const RigidOptions& options, std::uint64_t seed) {
  image.validate_geometry();
  Vec<Dim> centre_idx{};
  const auto n = image.size_xyz();
  for (std::size_t a = 0; a < Dim; ++a) centre_idx[a] = 0.5 * double(n[a] - 1);
  const RigidTransform<Dim> t = random_rigid_transform<Dim>(image.index_to_physical(centre_idx), options, seed);
  RegistrationPair<Dim> p = detail::pair_from_field<Dim>(image, labels, rigid_displacement_field(image, t));
  p.transform = t;
  return p;
}

}  // namespace rlmed::imaging
