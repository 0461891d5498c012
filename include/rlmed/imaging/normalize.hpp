// rlmed/imaging/normalize.hpp — intensity normalisation: percentile clip + rescale, z-score
// (optionally with statistics from a mask), min-max to [0, 1].
//
// Design decisions:
//  * Statistics are computed in double over fixed chunks whose partial sums are combined in
//    chunk order: results are bit-identical whatever the thread count. Standard deviations are
//    population ones (ddof = 0), from a second pass over (x − mean)², as NumPy's std.
//  * Percentiles are NumPy's default ('linear'): position p/100 · (n − 1) between order
//    statistics, found with nth_element on a scratch copy (reused when the caller passes one),
//    interpolated with NumPy's lerp (from the upper value when the fraction is >= 0.5).
//  * Any non-finite voxel (NaN or ±inf) in the statistics' support is an rlmed::Error: a NaN
//    would silently turn every output into NaN. Degenerate ranges are not errors: a constant
//    image maps to out_low (percentile), 0 (min-max) and 0 (z-score).
//  * Masks are uint8 tensors of the image's shape; non-zero = inside. An empty mask view means
//    "every voxel". The z-score normalises every voxel with the mask's statistics and can zero the
//    outside (nnU-Net's use_mask_for_norm).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/image.hpp"

namespace rlmed::imaging {

/// Mean, population standard deviation, extremes and count of the voxels in a support.
struct IntensityStats {
  double mean = 0, stddev = 0, min = 0, max = 0;
  index_t count = 0;
};

namespace detail {

inline constexpr index_t kStatsChunk = 1 << 15;

template <class T, std::size_t R>
void check_mask_shape(TensorView<const T, R> in, TensorView<const std::uint8_t, R> mask, const char* who) {
  if (mask.data() == nullptr) return;
  RLMED_CHECK(mask.shape() == in.shape(), who, ": mask shape ", mask.shape(), " differs from image shape ", in.shape());
}

}  // namespace detail

/// Statistics of the voxels inside `mask` (all voxels when the mask view is empty).
/// rlmed::Error on a non-finite voxel inside the support or an empty support.
template <class T, std::size_t R>
IntensityStats intensity_stats(TensorView<const T, R> in, TensorView<const std::uint8_t, R> mask = {}) {
  detail::check_mask_shape(in, mask, "intensity_stats");
  const index_t n = in.size();
  const index_t chunks = (n + detail::kStatsChunk - 1) / detail::kStatsChunk;
  struct Partial {
    double sum = 0, sq = 0, lo = INFINITY, hi = -INFINITY;
    index_t count = 0, bad = -1;
  };
  std::vector<Partial> parts(static_cast<std::size_t>(chunks));
  const T* x = in.data();
  const std::uint8_t* m = mask.data();
  parallel_for_chunks(0, n, detail::kStatsChunk, [&](index_t b, index_t e) {
    Partial& p = parts[static_cast<std::size_t>(b / detail::kStatsChunk)];
    for (index_t i = b; i < e; ++i) {
      if (m && !m[i]) continue;
      const double v = double(x[i]);
      if (!std::isfinite(v)) {
        if (p.bad < 0) p.bad = i;
        continue;
      }
      p.sum += v;
      p.lo = std::min(p.lo, v);
      p.hi = std::max(p.hi, v);
      ++p.count;
    }
  });
  IntensityStats s;
  double sum = 0;
  s.min = INFINITY;
  s.max = -INFINITY;
  for (const Partial& p : parts) {
    RLMED_CHECK(p.bad < 0, "intensity statistics: voxel ", p.bad, " (flat index) is ", double(x[p.bad]),
                "; expected finite intensities (NaN/inf are not normalisable)");
    sum += p.sum;
    s.count += p.count;
    s.min = std::min(s.min, p.lo);
    s.max = std::max(s.max, p.hi);
  }
  RLMED_CHECK(s.count > 0, "intensity statistics need at least one voxel; the ",
              m ? "mask selects none of the " : "image has ", n, " voxels");
  s.mean = sum / double(s.count);
  parallel_for_chunks(0, n, detail::kStatsChunk, [&](index_t b, index_t e) {
    Partial& p = parts[static_cast<std::size_t>(b / detail::kStatsChunk)];
    for (index_t i = b; i < e; ++i) {
      if (m && !m[i]) continue;
      const double d = double(x[i]) - s.mean;
      p.sq += d * d;
    }
  });
  double sq = 0;
  for (const Partial& p : parts) sq += p.sq;
  s.stddev = std::sqrt(sq / double(s.count));
  return s;
}

/// NumPy's 'linear' percentiles of the voxels inside `mask` (all when empty), p in [0, 100].
/// `scratch` receives a copy of the support (reused between calls).
template <class T, std::size_t R, std::size_t K>
std::array<double, K> percentiles(TensorView<const T, R> in, const std::array<double, K>& p_percent,
                                  TensorView<const std::uint8_t, R> mask, std::vector<T>& scratch) {
  detail::check_mask_shape(in, mask, "percentiles");
  for (double p : p_percent)
    RLMED_CHECK(p >= 0 && p <= 100, "percentiles: p must be in [0, 100]; found ", p_percent);
  scratch.clear();
  const T* x = in.data();
  for (index_t i = 0; i < in.size(); ++i) {
    if (mask.data() && !mask.data()[i]) continue;
    RLMED_CHECK(std::isfinite(double(x[i])), "percentiles: voxel ", i, " (flat index) is ", double(x[i]),
                "; expected finite intensities");
    scratch.push_back(x[i]);
  }
  RLMED_CHECK(!scratch.empty(), "percentiles need at least one voxel; the ", mask.data() ? "mask selects none" : "image is empty");
  const auto n = static_cast<index_t>(scratch.size());
  std::array<double, K> out{};
  for (std::size_t q = 0; q < K; ++q) {
    const double pos = p_percent[q] / 100.0 * double(n - 1);
    const auto k = std::min<index_t>(static_cast<index_t>(std::floor(pos)), n - 1);
    const double t = pos - double(k);
    std::nth_element(scratch.begin(), scratch.begin() + k, scratch.end());
    const double a = double(scratch[static_cast<std::size_t>(k)]);
    double b = a;
    if (k + 1 < n) b = double(*std::min_element(scratch.begin() + k + 1, scratch.end()));
    const double diff = b - a;
    out[q] = t >= 0.5 ? b - diff * (1.0 - t) : a + diff * t;  // NumPy's _lerp
  }
  return out;
}

/// One percentile (see percentiles).
template <class T, std::size_t R>
double percentile(TensorView<const T, R> in, double p_percent, TensorView<const std::uint8_t, R> mask = {}) {
  std::vector<T> scratch;
  return percentiles<T, R, 1>(in, {p_percent}, mask, scratch)[0];
}

struct PercentileClip {
  double p_low = 0.5, p_high = 99.5;   ///< percentiles (0..100) clipped to
  double out_low = 0.0, out_high = 1.0;  ///< target range
};

/// Clips to the [p_low, p_high] percentiles (computed inside `mask`, or everywhere) and maps that
/// range linearly onto [out_low, out_high]. A zero-width range maps every voxel to out_low.
template <class T, std::size_t R>
void percentile_normalize_into(TensorView<T, R> out, TensorView<const T, R> in, const PercentileClip& clip,
                               TensorView<const std::uint8_t, R> mask, std::vector<T>& scratch) {
  static_assert(std::is_floating_point_v<T>, "normalisation writes float or double voxels");
  RLMED_CHECK(out.shape() == in.shape(), "percentile_normalize_into: output shape ", out.shape(),
              " differs from input shape ", in.shape());
  RLMED_CHECK(clip.p_low <= clip.p_high, "percentile_normalize: p_low ", clip.p_low, " must be <= p_high ", clip.p_high);
  RLMED_CHECK(std::isfinite(clip.out_low) && std::isfinite(clip.out_high), "percentile_normalize: output range [",
              clip.out_low, ", ", clip.out_high, "] must be finite");
  for (index_t i = 0; i < in.size(); ++i)
    RLMED_CHECK(std::isfinite(double(in.data()[i])), "percentile_normalize: voxel ", i, " (flat index) is ",
                double(in.data()[i]), "; expected finite intensities");
  const auto pr = percentiles<T, R, 2>(in, {clip.p_low, clip.p_high}, mask, scratch);
  const double lo = pr[0], hi = pr[1];
  const double scale = hi > lo ? (clip.out_high - clip.out_low) / (hi - lo) : 0.0;
  const T* x = in.data();
  T* y = out.data();
  parallel_for(0, in.size(), [&](index_t i) {
    const double v = std::clamp(double(x[i]), lo, hi);
    y[i] = static_cast<T>(clip.out_low + (v - lo) * scale);
  }, 1 << 15);
}

template <class T, std::size_t R>
Tensor<T, R> percentile_normalize(TensorView<const T, R> in, const PercentileClip& clip = {},
                                  TensorView<const std::uint8_t, R> mask = {}) {
  auto out = Tensor<T, R>::uninitialized(in.shape());
  std::vector<T> scratch;
  percentile_normalize_into<T, R>(out.view(), in, clip, mask, scratch);
  return out;
}

/// (x − mean) / std with the statistics of the voxels inside `mask` (all when empty); a constant
/// support gives 0. With zero_outside_mask, voxels outside the mask are set to 0.
template <class T, std::size_t R>
void zscore_normalize_into(TensorView<T, R> out, TensorView<const T, R> in, TensorView<const std::uint8_t, R> mask = {},
                           bool zero_outside_mask = false) {
  static_assert(std::is_floating_point_v<T>, "normalisation writes float or double voxels");
  RLMED_CHECK(out.shape() == in.shape(), "zscore_normalize_into: output shape ", out.shape(),
              " differs from input shape ", in.shape());
  const IntensityStats s = intensity_stats<T, R>(in, mask);
  if (mask.data())  // voxels outside the mask still get normalised: they must be finite too
    for (index_t i = 0; i < in.size(); ++i)
      RLMED_CHECK(std::isfinite(double(in.data()[i])), "zscore_normalize: voxel ", i, " (flat index) is ",
                  double(in.data()[i]), "; expected finite intensities");
  const double inv = s.stddev > 0 ? 1.0 / s.stddev : 0.0;
  const T* x = in.data();
  const std::uint8_t* m = mask.data();
  T* y = out.data();
  parallel_for(0, in.size(), [&](index_t i) {
    y[i] = (zero_outside_mask && m && !m[i]) ? T(0) : static_cast<T>((double(x[i]) - s.mean) * inv);
  }, 1 << 15);
}

template <class T, std::size_t R>
Tensor<T, R> zscore_normalize(TensorView<const T, R> in, TensorView<const std::uint8_t, R> mask = {},
                              bool zero_outside_mask = false) {
  auto out = Tensor<T, R>::uninitialized(in.shape());
  zscore_normalize_into<T, R>(out.view(), in, mask, zero_outside_mask);
  return out;
}

/// (x − min) / (max − min) into [0, 1]; a constant image gives 0.
template <class T, std::size_t R>
void minmax_normalize_into(TensorView<T, R> out, TensorView<const T, R> in) {
  static_assert(std::is_floating_point_v<T>, "normalisation writes float or double voxels");
  RLMED_CHECK(out.shape() == in.shape(), "minmax_normalize_into: output shape ", out.shape(),
              " differs from input shape ", in.shape());
  const IntensityStats s = intensity_stats<T, R>(in);
  const double inv = s.max > s.min ? 1.0 / (s.max - s.min) : 0.0;
  const T* x = in.data();
  T* y = out.data();
  parallel_for(0, in.size(), [&](index_t i) { y[i] = static_cast<T>((double(x[i]) - s.min) * inv); }, 1 << 15);
}

template <class T, std::size_t R>
Tensor<T, R> minmax_normalize(TensorView<const T, R> in) {
  auto out = Tensor<T, R>::uninitialized(in.shape());
  minmax_normalize_into<T, R>(out.view(), in);
  return out;
}

// Image overloads: same geometry, normalised voxels.
template <class T, std::size_t Dim>
  requires(Dim == 2 || Dim == 3)
Image<T, Dim> percentile_normalize(const Image<T, Dim>& in, const PercentileClip& clip = {}) {
  Image<T, Dim> out = image_like<T>(in);
  std::vector<T> scratch;
  percentile_normalize_into<T, Dim>(out.view(), in.view(), clip, {}, scratch);
  return out;
}
template <class T, std::size_t Dim>
  requires(Dim == 2 || Dim == 3)
Image<T, Dim> zscore_normalize(const Image<T, Dim>& in, const Image<std::uint8_t, Dim>* mask = nullptr,
                               bool zero_outside_mask = false) {
  Image<T, Dim> out = image_like<T>(in);
  zscore_normalize_into<T, Dim>(out.view(), in.view(), mask ? mask->view() : TensorView<const std::uint8_t, Dim>{},
                                zero_outside_mask);
  return out;
}
template <class T, std::size_t Dim>
  requires(Dim == 2 || Dim == 3)
Image<T, Dim> minmax_normalize(const Image<T, Dim>& in) {
  Image<T, Dim> out = image_like<T>(in);
  minmax_normalize_into<T, Dim>(out.view(), in.view());
  return out;
}

}  // namespace rlmed::imaging
