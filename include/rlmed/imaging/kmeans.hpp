// rlmed/imaging/kmeans.hpp — k-means on voxel intensities (1-D values): k-means++ seeding with
// Philox, Lloyd iterations, clusters ordered by intensity; the label maps SPAC uses as
// pseudo-labels (k = 3).
//
// Design decisions:
//  * Deterministic: every random choice comes from the caller's PhiloxStream (which advances),
//    and every sum is taken over fixed chunks combined in chunk order, so the same seed gives
//    bit-identical centres and labels for any thread count.
//  * Clusters are sorted by centre after fitting: label 0 is the darkest, k−1 the brightest.
//    A voxel equidistant from two centres takes the darker label.
//  * Fitting set: every voxel (or every voxel inside the optional mask, nonzero = inside), or,
//    with max_samples > 0, that many voxels drawn uniformly *with replacement* from it. The
//    drawn ranks are sorted and collected in one scan, so subsampling costs O(n + m log m)
//    time and O(m) memory even on large volumes.
//  * Degenerate data: with fewer distinct values than k, k-means++ picks duplicate centres
//    (uniformly, since every distance is 0); a cluster left empty in a Lloyd step keeps its
//    centre. Such clusters end up with no voxels; nothing throws.
//  * Convergence: Lloyd stops when no centre moves by more than tolerance × (max − min) of the
//    fitted values, or after max_iterations.
//  * NaN or infinite intensities are an rlmed::Error (they would poison every centre).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/distance_transform.hpp"  // HostTensorLike, mask conventions
#include "rlmed/imaging/image.hpp"

namespace rlmed::imaging {

struct KMeansOptions {
  int clusters = 3;                   // k, in [1, 254]
  int max_iterations = 100;           // Lloyd iterations at most (>= 1)
  double tolerance = 1e-6;            // relative to the value range of the fitted voxels
  index_t max_samples = 0;            // 0: fit on every (masked) voxel
  std::uint8_t unmasked_label = 255;  // label written outside the mask (must be >= clusters)
};

/// Centres and fit statistics of 1-D k-means.
struct KMeansFit {
  std::vector<double> centres;  // ascending: centre of label 0 first
  int iterations = 0;           // Lloyd iterations run
  bool converged = false;
  double inertia = 0;           // Σ squared distance of the fitted values to their centre
  index_t fitted_values = 0;
};

template <std::size_t Rank>
struct KMeansResult {
  KMeansFit fit;
  Tensor<std::uint8_t, Rank> labels;  // same shape as the image
  std::vector<index_t> counts;        // voxels per label (masked voxels only)
  [[nodiscard]] const std::vector<double>& centres() const noexcept { return fit.centres; }
};

namespace detail {

inline constexpr index_t kKMeansChunk = index_t(1) << 14;

inline void check_kmeans_options(const KMeansOptions& o) {
  RLMED_CHECK(o.clusters >= 1 && o.clusters <= 254, "kmeans: clusters must be in [1, 254], found ", o.clusters);
  RLMED_CHECK(o.max_iterations >= 1, "kmeans: max_iterations must be >= 1, found ", o.max_iterations);
  RLMED_CHECK(std::isfinite(o.tolerance) && o.tolerance >= 0, "kmeans: tolerance must be finite and >= 0, found ",
              o.tolerance);
  RLMED_CHECK(o.max_samples >= 0, "kmeans: max_samples must be >= 0 (0 = all voxels), found ", o.max_samples);
  RLMED_CHECK(int(o.unmasked_label) >= o.clusters, "kmeans: unmasked_label ", int(o.unmasked_label),
              " collides with a cluster label (clusters 0..", o.clusters - 1, ")");
}

/// Uniform index in [0, n), n >= 1 (unbiased below 2^32; 64-bit modulo beyond, bias < 2^-32).
inline index_t kmeans_draw_index(PhiloxStream& rng, index_t n) {
  if (n <= index_t(std::numeric_limits<std::uint32_t>::max())) return index_t(rng.uniform_int(std::uint32_t(n)));
  return index_t(rng.next_u64() % std::uint64_t(n));
}

/// Index of the nearest centre (ties: the lower index).
inline int kmeans_nearest(double v, const double* centres, int k) noexcept {
  int best = 0;
  double best_d = std::abs(v - centres[0]);
  for (int c = 1; c < k; ++c) {
    const double d = std::abs(v - centres[c]);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

template <class T>
double kmeans_value(T v) {
  const double d = static_cast<double>(v);
  RLMED_CHECK(std::isfinite(d), "kmeans: image holds ", d, "; expected finite intensities");
  return d;
}

/// The fitting values: all selected voxels in row-major order, or `max_samples` of them drawn
/// with replacement (sorted by position).
template <class T, class InMask>
std::vector<double> kmeans_fitting_values(const T* image, index_t n, InMask&& in_mask, const KMeansOptions& o,
                                          PhiloxStream& rng) {
  index_t selected = 0;
  for (index_t i = 0; i < n; ++i) selected += in_mask(i) ? 1 : 0;
  RLMED_CHECK(selected > 0, "kmeans: the mask selects no voxel; nothing to fit");
  std::vector<double> values;
  if (o.max_samples == 0 || o.max_samples >= selected) {
    values.reserve(std::size_t(selected));
    for (index_t i = 0; i < n; ++i)
      if (in_mask(i)) values.push_back(kmeans_value(image[i]));
    return values;
  }
  std::vector<index_t> ranks(static_cast<std::size_t>(o.max_samples));
  for (auto& r : ranks) r = kmeans_draw_index(rng, selected);
  std::sort(ranks.begin(), ranks.end());
  values.reserve(ranks.size());
  std::size_t next = 0;
  index_t rank = 0;
  for (index_t i = 0; i < n && next < ranks.size(); ++i) {
    if (!in_mask(i)) continue;
    while (next < ranks.size() && ranks[next] == rank) {
      values.push_back(kmeans_value(image[i]));
      ++next;
    }
    ++rank;
  }
  return values;
}

}  // namespace detail

/// k-means++ then Lloyd on 1-D values (order matters only through the random draws).
inline KMeansFit kmeans_1d(const std::vector<double>& values, const KMeansOptions& options, PhiloxStream& rng) {
  detail::check_kmeans_options(options);
  RLMED_CHECK(!values.empty(), "kmeans: no values to fit");
  const index_t m = index_t(values.size());
  const int k = options.clusters;
  const double* x = values.data();
  double lo = x[0], hi = x[0];
  for (double v : values) {
    RLMED_CHECK(std::isfinite(v), "kmeans: value ", v, " is not finite");
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  const index_t chunks = (m + detail::kKMeansChunk - 1) / detail::kKMeansChunk;
  auto chunk_of = [](index_t b) { return std::size_t(b / detail::kKMeansChunk); };

  // ---- k-means++: each next centre drawn with probability ∝ squared distance to the nearest.
  std::vector<double> centres;
  centres.reserve(std::size_t(k));
  centres.push_back(x[detail::kmeans_draw_index(rng, m)]);
  std::vector<double> d2(static_cast<std::size_t>(m));
  std::vector<double> chunk_sum(static_cast<std::size_t>(chunks));
  parallel_for_chunks(0, m, detail::kKMeansChunk, [&](index_t b, index_t e) {
    double s = 0;
    for (index_t i = b; i < e; ++i) {
      const double d = x[i] - centres[0];
      d2[std::size_t(i)] = d * d;
      s += d * d;
    }
    chunk_sum[chunk_of(b)] = s;
  });
  while (int(centres.size()) < k) {
    double total = 0;
    for (double s : chunk_sum) total += s;
    index_t pick;
    if (!(total > 0)) {
      pick = detail::kmeans_draw_index(rng, m);  // every value is already a centre
    } else {
      const double u = rng.uniform_double() * total;
      double acc = 0;
      index_t c = 0;
      while (c + 1 < chunks && acc + chunk_sum[std::size_t(c)] <= u) acc += chunk_sum[std::size_t(c++)];
      const index_t b = c * detail::kKMeansChunk, e = std::min(m, b + detail::kKMeansChunk);
      pick = -1;
      index_t last_positive = -1;
      for (index_t i = b; i < e; ++i) {
        if (d2[std::size_t(i)] > 0) last_positive = i;
        acc += d2[std::size_t(i)];
        if (u < acc) {
          pick = i;
          break;
        }
      }
      if (pick < 0) pick = last_positive;  // u rounded up to the chunk's end
      if (pick < 0) pick = b;
    }
    const double c_new = x[pick];
    centres.push_back(c_new);
    parallel_for_chunks(0, m, detail::kKMeansChunk, [&](index_t b, index_t e) {
      double s = 0;
      for (index_t i = b; i < e; ++i) {
        const double d = x[i] - c_new;
        d2[std::size_t(i)] = std::min(d2[std::size_t(i)], d * d);
        s += d2[std::size_t(i)];
      }
      chunk_sum[chunk_of(b)] = s;
    });
  }
  std::sort(centres.begin(), centres.end());

  // ---- Lloyd: per chunk and cluster [sum, count]; combined in chunk order.
  std::vector<double> partial(std::size_t(chunks) * std::size_t(k) * 2);
  KMeansFit fit;
  const double threshold = options.tolerance * (hi - lo);
  for (int it = 0; it < options.max_iterations; ++it) {
    std::fill(partial.begin(), partial.end(), 0.0);
    parallel_for_chunks(0, m, detail::kKMeansChunk, [&](index_t b, index_t e) {
      double* acc = partial.data() + chunk_of(b) * std::size_t(k) * 2;
      for (index_t i = b; i < e; ++i) {
        const int c = detail::kmeans_nearest(x[i], centres.data(), k);
        acc[2 * c] += x[i];
        acc[2 * c + 1] += 1.0;
      }
    });
    double shift = 0;
    for (int c = 0; c < k; ++c) {
      double sum = 0, count = 0;
      for (index_t ch = 0; ch < chunks; ++ch) {
        sum += partial[(std::size_t(ch) * std::size_t(k) + std::size_t(c)) * 2];
        count += partial[(std::size_t(ch) * std::size_t(k) + std::size_t(c)) * 2 + 1];
      }
      if (count > 0) {
        const double updated = sum / count;
        shift = std::max(shift, std::abs(updated - centres[std::size_t(c)]));
        centres[std::size_t(c)] = updated;
      }
    }
    fit.iterations = it + 1;
    if (shift <= threshold) {
      fit.converged = true;
      break;
    }
  }
  std::sort(centres.begin(), centres.end());

  std::fill(chunk_sum.begin(), chunk_sum.end(), 0.0);
  parallel_for_chunks(0, m, detail::kKMeansChunk, [&](index_t b, index_t e) {
    double s = 0;
    for (index_t i = b; i < e; ++i) {
      const double d = x[i] - centres[std::size_t(detail::kmeans_nearest(x[i], centres.data(), k))];
      s += d * d;
    }
    chunk_sum[chunk_of(b)] = s;
  });
  for (double s : chunk_sum) fit.inertia += s;
  fit.centres = std::move(centres);
  fit.fitted_values = m;
  return fit;
}

namespace detail {

template <class T, std::size_t Rank, class InMask>
std::vector<index_t> kmeans_assign(TensorView<std::uint8_t, Rank> labels, const T* image, InMask&& in_mask,
                                   const std::vector<double>& centres, std::uint8_t unmasked_label) {
  const index_t n = labels.size();
  const int k = int(centres.size());
  const index_t chunks = (n + kKMeansChunk - 1) / kKMeansChunk;
  std::vector<index_t> partial(std::size_t(chunks) * std::size_t(k), 0);
  std::uint8_t* out = labels.data();
  parallel_for_chunks(0, n, kKMeansChunk, [&](index_t b, index_t e) {
    index_t* acc = partial.data() + std::size_t(b / kKMeansChunk) * std::size_t(k);
    for (index_t i = b; i < e; ++i) {
      if (!in_mask(i)) {
        out[i] = unmasked_label;
        continue;
      }
      const int c = kmeans_nearest(kmeans_value(image[i]), centres.data(), k);
      out[i] = std::uint8_t(c);
      ++acc[c];
    }
  });
  std::vector<index_t> counts(std::size_t(k), 0);
  for (index_t ch = 0; ch < chunks; ++ch)
    for (int c = 0; c < k; ++c) counts[std::size_t(c)] += partial[std::size_t(ch) * std::size_t(k) + std::size_t(c)];
  return counts;
}

inline void check_centres_for_labels(const std::vector<double>& centres, std::uint8_t unmasked_label) {
  RLMED_CHECK(!centres.empty() && centres.size() <= 254, "kmeans: expected 1..254 centres, found ", centres.size());
  RLMED_CHECK(std::is_sorted(centres.begin(), centres.end()), "kmeans: centres must be ascending, found ", centres);
  for (double c : centres) RLMED_CHECK(std::isfinite(c), "kmeans: centre ", c, " is not finite");
  RLMED_CHECK(std::size_t(unmasked_label) >= centres.size(), "kmeans: unmasked_label ", int(unmasked_label),
              " collides with a cluster label (", centres.size(), " clusters)");
}

}  // namespace detail

/// labels[i] = index of the nearest (ascending) centre; returns voxels per label.
template <std::size_t Rank, HostTensorLike X>
  requires(rank_of<X> == Rank)
std::vector<index_t> assign_clusters_into(TensorView<std::uint8_t, Rank> labels, const X& image,
                                          const std::vector<double>& centres) {
  const auto v = const_view_of(image);
  RLMED_CHECK(labels.shape() == v.shape(), "assign_clusters: label shape ", labels.shape(), " differs from image shape ",
              v.shape());
  detail::check_centres_for_labels(centres, 255);
  return detail::kmeans_assign<element_of<X>, Rank>(labels, v.data(), [](index_t) { return true; }, centres, 255);
}

/// Same inside a mask (nonzero = inside); `unmasked_label` elsewhere.
template <std::size_t Rank, HostTensorLike X, HostTensorLike M>
  requires(rank_of<X> == Rank && rank_of<M> == Rank)
std::vector<index_t> assign_clusters_into(TensorView<std::uint8_t, Rank> labels, const X& image, const M& mask,
                                          const std::vector<double>& centres, std::uint8_t unmasked_label = 255) {
  const auto v = const_view_of(image);
  const auto mv = const_view_of(mask);
  RLMED_CHECK(labels.shape() == v.shape() && mv.shape() == v.shape(), "assign_clusters: label shape ", labels.shape(),
              ", image shape ", v.shape(), " and mask shape ", mv.shape(), " must agree");
  detail::check_centres_for_labels(centres, unmasked_label);
  const auto* md = mv.data();
  return detail::kmeans_assign<element_of<X>, Rank>(
      labels, v.data(), [md](index_t i) { return detail::mask_is_on(md[i]); }, centres, unmasked_label);
}

/// k-means of an image's intensities and its label map (label 0 = darkest cluster).
template <HostTensorLike X>
KMeansResult<rank_of<X>> kmeans_intensities(const X& image, const KMeansOptions& options, PhiloxStream& rng) {
  constexpr std::size_t R = rank_of<X>;
  detail::check_kmeans_options(options);
  const auto v = const_view_of(image);
  RLMED_CHECK(v.size() > 0, "kmeans: expected a non-empty image, found shape ", v.shape());
  auto all = [](index_t) { return true; };
  KMeansResult<R> out;
  out.fit = kmeans_1d(detail::kmeans_fitting_values(v.data(), v.size(), all, options, rng), options, rng);
  out.labels = Tensor<std::uint8_t, R>::uninitialized(v.shape());
  out.counts = detail::kmeans_assign<element_of<X>, R>(out.labels.view(), v.data(), all, out.fit.centres,
                                                       options.unmasked_label);
  return out;
}

/// Same, fitted on and labelling only the voxels inside `mask` (nonzero); `unmasked_label`
/// elsewhere.
template <HostTensorLike X, HostTensorLike M>
  requires(rank_of<X> == rank_of<M>)
KMeansResult<rank_of<X>> kmeans_intensities(const X& image, const M& mask, const KMeansOptions& options,
                                            PhiloxStream& rng) {
  constexpr std::size_t R = rank_of<X>;
  detail::check_kmeans_options(options);
  const auto v = const_view_of(image);
  const auto mv = const_view_of(mask);
  RLMED_CHECK(v.shape() == mv.shape(), "kmeans: image shape ", v.shape(), " differs from mask shape ", mv.shape());
  RLMED_CHECK(v.size() > 0, "kmeans: expected a non-empty image, found shape ", v.shape());
  const auto* md = mv.data();
  auto inside = [md](index_t i) { return detail::mask_is_on(md[i]); };
  KMeansResult<R> out;
  out.fit = kmeans_1d(detail::kmeans_fitting_values(v.data(), v.size(), inside, options, rng), options, rng);
  out.labels = Tensor<std::uint8_t, R>::uninitialized(v.shape());
  out.counts = detail::kmeans_assign<element_of<X>, R>(out.labels.view(), v.data(), inside, out.fit.centres,
                                                       options.unmasked_label);
  return out;
}

/// Image overload: the label map is returned as an image with the input's geometry.
template <class T, std::size_t Dim>
std::pair<KMeansFit, Image<std::uint8_t, Dim>> kmeans_label_image(const Image<T, Dim>& image, const KMeansOptions& options,
                                                                  PhiloxStream& rng) {
  auto r = kmeans_intensities(image.voxels, options, rng);
  Image<std::uint8_t, Dim> labels = image_like<std::uint8_t>(image);
  labels.voxels = std::move(r.labels);
  return {std::move(r.fit), std::move(labels)};
}

}  // namespace rlmed::imaging
