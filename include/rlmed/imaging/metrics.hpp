// rlmed/imaging/metrics.hpp — segmentation, registration and localisation metrics: overlap
// (Dice, IoU, PPV, sensitivity, multi-label Dice, boundary IoU), surface distances (Hausdorff,
// HD95, mean surface distance), intensity similarity (MSE, global NCC, VoxelMorph's local NCC
// with its gradient), landmark TRE, plane angle/offset errors and box IoU.
//
// Design decisions:
//  * Overlap scores follow the spec's smoothed forms with ε = 1e-4 (kMetricEpsilon):
//      Dice = (2TP+ε)/(T+P+ε), PPV = (TP+ε)/(TP+FP+ε), SEN = (TP+ε)/(TP+FN+ε),
//      IoU = (TP+ε)/(T+P−TP+ε),   T = label voxels, P = predicted voxels.
//    Two empty masks therefore score 1 and disjoint masks score ≈ 0. Masks of any element
//    type; nonzero = foreground; NaN in a float mask is an rlmed::Error.
//  * Multi-label Dice reports one score per requested label plus their mean. A label absent
//    from both maps has no meaningful Dice; AbsentLabel chooses: NaN (default, left out of the
//    mean), skip (dropped from the lists), smoothed (the ε rule: 1) or zero (VoxelMorph's
//    utils.dice). Without an explicit label list, every nonzero value present is a label.
//  * Boundary IoU (Cheng et al., CVPR 2021): band = mask minus its erosion by a (2d+1)-wide cube
//    (d iterations of a 3×3(×3) erosion in the reference code: chessboard distance to background
//    ≤ d), with d = max(1, round(0.02 · image diagonal in voxels)) by default. Like the reference implementation (which pads with zeros before eroding), the
//    outside of the image counts as background, so a mask touching the border has a band there.
//  * Surfaces for HD/HD95 are the mask voxels with a background face neighbour (6-neighbours in
//    3D, 4 in 2D); voxels on the image border are surface voxels (medpy: mask XOR
//    binary_erosion(mask, border_value=0)). Distances are the EDT of the other surface with
//    the given spacing (mm when the spacing is in mm). HD95 is the 95th percentile of the two
//    directed distance sets concatenated (medpy's hd95), with numpy's default linear
//    interpolation. Empty masks: both empty → 0; exactly one empty → `empty_distance`
//    (+inf by default; medpy raises instead).
//  * Local NCC is VoxelMorph's loss without the minus sign: zero-padded box sums over a window
//    (9 per axis by default) of I, J, I², J², IJ with the constant window size N,
//    cross = ΣIJ − ΣIΣJ/N, var = ΣI² − (ΣI)²/N, cc = cross²/(var_I var_J + 1e-5), value =
//    mean cc (the loss is −value). Box sums are separable running sums (O(n) per axis) in
//    double. The gradient with respect to the warped image J is analytic: the adjoint of a
//    zero-padded odd box filter is the same box filter, so dcc/dJ needs three more box sums.
//  * Every reduction is made over fixed chunks combined in index order, so results are
//    bit-identical for any thread count.
//  * Geometric errors (TRE, planes, boxes) are in mm; TRE can take voxel indices (x, y, z) and
//    map them through Image geometry first.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <set>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/distance_transform.hpp"
#include "rlmed/imaging/image.hpp"

namespace rlmed::imaging {

/// ε of the smoothed overlap scores (spec: Dice, PPV, SEN, IoU, boundary IoU).
inline constexpr double kMetricEpsilon = 1e-4;

namespace detail {

/// Elements per reduction chunk: partial results per chunk, summed in chunk order.
inline constexpr index_t kMetricChunk = index_t(1) << 14;

inline index_t metric_chunk_count(index_t n) noexcept { return (n + kMetricChunk - 1) / kMetricChunk; }

/// Σ body(b, e) over fixed chunks of [0, n), combined in chunk order (deterministic).
template <class Acc, class Body>
Acc metric_reduce(index_t n, Body&& body) {
  std::vector<Acc> partial(static_cast<std::size_t>(metric_chunk_count(n)));
  parallel_for_chunks(0, n, kMetricChunk, [&](index_t b, index_t e) { partial[std::size_t(b / kMetricChunk)] = body(b, e); });
  Acc total{};
  for (const Acc& p : partial) total += p;
  return total;
}

template <class A, class B>
void check_same_mask_shape(const A& a, const B& b, const char* what) {
  RLMED_CHECK(a.shape() == b.shape(), what, ": prediction shape ", a.shape(), " differs from label shape ", b.shape());
  RLMED_CHECK(a.size() > 0, what, ": expected non-empty masks, found shape ", a.shape());
}

template <class V>
double finite_value(V v, const char* what) {
  const double d = static_cast<double>(v);
  RLMED_CHECK(std::isfinite(d), what, ": expected finite values, found ", d);
  return d;
}

}  // namespace detail

// ============================================================================================
// Overlap of binary masks
// ============================================================================================

/// Voxel counts of a prediction against a label (nonzero = foreground).
struct ConfusionCounts {
  index_t tp = 0, fp = 0, fn = 0, tn = 0;
  /// T: label voxels.
  [[nodiscard]] index_t label_count() const noexcept { return tp + fn; }
  /// P: predicted voxels.
  [[nodiscard]] index_t prediction_count() const noexcept { return tp + fp; }
  ConfusionCounts& operator+=(const ConfusionCounts& o) noexcept {
    tp += o.tp;
    fp += o.fp;
    fn += o.fn;
    tn += o.tn;
    return *this;
  }
  friend bool operator==(const ConfusionCounts&, const ConfusionCounts&) = default;
};

/// The four smoothed overlap scores.
struct OverlapScores {
  double dice = 0, iou = 0, ppv = 0, sensitivity = 0;
};

template <HostTensorLike P, HostTensorLike L>
  requires(rank_of<P> == rank_of<L>)
ConfusionCounts confusion_counts(const P& prediction, const L& label) {
  const auto p = const_view_of(prediction);
  const auto l = const_view_of(label);
  detail::check_same_mask_shape(p, l, "confusion_counts");
  const auto* pd = p.data();
  const auto* ld = l.data();
  return detail::metric_reduce<ConfusionCounts>(p.size(), [&](index_t b, index_t e) {
    ConfusionCounts c;
    for (index_t i = b; i < e; ++i) {
      const bool pi = detail::mask_is_on(pd[i]), li = detail::mask_is_on(ld[i]);
      c.tp += pi && li;
      c.fp += pi && !li;
      c.fn += !pi && li;
      c.tn += !pi && !li;
    }
    return c;
  });
}

namespace detail {
inline void check_epsilon(double eps, const char* what) {
  RLMED_CHECK(std::isfinite(eps) && eps >= 0, what, ": epsilon must be finite and >= 0, found ", eps);
}
inline void check_counts(const ConfusionCounts& c) {
  RLMED_CHECK(c.tp >= 0 && c.fp >= 0 && c.fn >= 0 && c.tn >= 0, "confusion counts must be >= 0, found tp ", c.tp,
              ", fp ", c.fp, ", fn ", c.fn, ", tn ", c.tn);
}
}  // namespace detail

/// (2TP+ε)/(T+P+ε)
inline double dice(const ConfusionCounts& c, double eps = kMetricEpsilon) {
  detail::check_counts(c);
  detail::check_epsilon(eps, "dice");
  return (2.0 * double(c.tp) + eps) / (double(c.label_count()) + double(c.prediction_count()) + eps);
}
/// (TP+ε)/(T+P−TP+ε)
inline double iou(const ConfusionCounts& c, double eps = kMetricEpsilon) {
  detail::check_counts(c);
  detail::check_epsilon(eps, "iou");
  return (double(c.tp) + eps) / (double(c.label_count()) + double(c.prediction_count()) - double(c.tp) + eps);
}
/// (TP+ε)/(TP+FP+ε)
inline double ppv(const ConfusionCounts& c, double eps = kMetricEpsilon) {
  detail::check_counts(c);
  detail::check_epsilon(eps, "ppv");
  return (double(c.tp) + eps) / (double(c.tp) + double(c.fp) + eps);
}
/// (TP+ε)/(TP+FN+ε)
inline double sensitivity(const ConfusionCounts& c, double eps = kMetricEpsilon) {
  detail::check_counts(c);
  detail::check_epsilon(eps, "sensitivity");
  return (double(c.tp) + eps) / (double(c.tp) + double(c.fn) + eps);
}

inline OverlapScores overlap_scores(const ConfusionCounts& c, double eps = kMetricEpsilon) {
  return OverlapScores{dice(c, eps), iou(c, eps), ppv(c, eps), sensitivity(c, eps)};
}

/// Dice, IoU, PPV and sensitivity of two binary masks in one pass.
template <HostTensorLike P, HostTensorLike L>
  requires(rank_of<P> == rank_of<L>)
OverlapScores overlap_scores(const P& prediction, const L& label, double eps = kMetricEpsilon) {
  return overlap_scores(confusion_counts(prediction, label), eps);
}

template <HostTensorLike P, HostTensorLike L>
  requires(rank_of<P> == rank_of<L>)
double dice(const P& prediction, const L& label, double eps = kMetricEpsilon) {
  return dice(confusion_counts(prediction, label), eps);
}

// ---- multi-label Dice ----------------------------------------------------------------------

/// What a label absent from both maps reports (see the header).
enum class AbsentLabel { nan, skip, smoothed, zero };

struct MultiLabelDice {
  std::vector<std::int64_t> labels;  // reported labels, in the order asked for
  std::vector<double> dice;          // one per label
  double mean = 0;                   // mean over the non-NaN entries (NaN when there are none)
};

namespace detail {

/// A label-map element as an integer label; false when it is not integral (float maps).
template <class V>
bool label_value_of(V v, std::int64_t& out) {
  if constexpr (std::is_floating_point_v<V>) {
    RLMED_CHECK(std::isfinite(v), "label map holds ", v, "; expected finite label values");
    const double r = std::nearbyint(double(v));
    if (r != double(v) || std::abs(r) > 9.0e15) return false;
    out = static_cast<std::int64_t>(r);
    return true;
  } else if constexpr (std::is_same_v<V, bool>) {
    out = v ? 1 : 0;
    return true;
  } else {
    static_assert(std::is_integral_v<V>, "label maps hold integers, bool or floats");
    if constexpr (std::is_unsigned_v<V> && sizeof(V) >= sizeof(std::int64_t))
      RLMED_CHECK(v <= V(std::numeric_limits<std::int64_t>::max()), "label value ", v, " does not fit in int64");
    out = static_cast<std::int64_t>(v);
    return true;
  }
}

template <class V>
void collect_labels(TensorView<const V, 1> flat, std::set<std::int64_t>& found) {
  for (index_t i = 0; i < flat.size(); ++i) {
    std::int64_t l = 0;
    RLMED_CHECK(label_value_of(flat[i], l), "multi_label_dice: label map holds the non-integral value ",
                double(flat[i]), "; pass the labels explicitly or use integral label values");
    if (l != 0) found.insert(l);
  }
}

}  // namespace detail

/// Dice per label of two label maps (same shape), with the ε rule, and their mean.
template <HostTensorLike P, HostTensorLike L>
  requires(rank_of<P> == rank_of<L>)
MultiLabelDice multi_label_dice(const P& prediction, const L& label, const std::vector<std::int64_t>& labels,
                                AbsentLabel absent = AbsentLabel::nan, double eps = kMetricEpsilon) {
  const auto p = const_view_of(prediction);
  const auto l = const_view_of(label);
  detail::check_same_mask_shape(p, l, "multi_label_dice");
  detail::check_epsilon(eps, "multi_label_dice");
  RLMED_CHECK(!labels.empty(), "multi_label_dice: expected at least one label");
  // Sorted copy for lookup, remembering each label's position in the caller's list.
  std::vector<std::pair<std::int64_t, std::size_t>> sorted;
  for (std::size_t k = 0; k < labels.size(); ++k) sorted.emplace_back(labels[k], k);
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t k = 1; k < sorted.size(); ++k)
    RLMED_CHECK(sorted[k].first != sorted[k - 1].first, "multi_label_dice: label ", sorted[k].first,
                " is listed twice in ", labels);
  const std::size_t nl = labels.size();
  auto slot_of = [&](auto v) -> std::ptrdiff_t {
    std::int64_t x = 0;
    if (!detail::label_value_of(v, x)) return -1;
    auto it = std::lower_bound(sorted.begin(), sorted.end(), std::make_pair(x, std::size_t(0)));
    return it != sorted.end() && it->first == x ? std::ptrdiff_t(it->second) : -1;
  };
  // Per chunk and label: [tp, predicted, labelled].
  const index_t n = p.size();
  const index_t chunks = detail::metric_chunk_count(n);
  std::vector<index_t> partial(std::size_t(chunks) * nl * 3, 0);
  const auto* pd = p.data();
  const auto* ld = l.data();
  parallel_for_chunks(0, n, detail::kMetricChunk, [&](index_t b, index_t e) {
    index_t* acc = partial.data() + std::size_t(b / detail::kMetricChunk) * nl * 3;
    for (index_t i = b; i < e; ++i) {
      const std::ptrdiff_t sp = slot_of(pd[i]), sl = slot_of(ld[i]);
      if (sp >= 0) ++acc[std::size_t(sp) * 3 + 1];
      if (sl >= 0) ++acc[std::size_t(sl) * 3 + 2];
      if (sp >= 0 && sp == sl) ++acc[std::size_t(sp) * 3 + 0];
    }
  });
  std::vector<index_t> totals(nl * 3, 0);
  for (index_t c = 0; c < chunks; ++c)
    for (std::size_t k = 0; k < nl * 3; ++k) totals[k] += partial[std::size_t(c) * nl * 3 + k];

  MultiLabelDice out;
  double sum = 0;
  index_t counted = 0;
  for (std::size_t k = 0; k < nl; ++k) {
    const double tp = double(totals[k * 3]), pc = double(totals[k * 3 + 1]), lc = double(totals[k * 3 + 2]);
    double d;
    if (pc + lc == 0) {
      switch (absent) {
        case AbsentLabel::skip: continue;
        case AbsentLabel::nan: d = std::numeric_limits<double>::quiet_NaN(); break;
        case AbsentLabel::zero: d = 0.0; break;
        case AbsentLabel::smoothed: default: d = eps / eps; break;  // 1 (NaN when eps = 0)
      }
    } else {
      d = (2.0 * tp + eps) / (pc + lc + eps);
    }
    out.labels.push_back(labels[k]);
    out.dice.push_back(d);
    if (!std::isnan(d)) {
      sum += d;
      ++counted;
    }
  }
  out.mean = counted ? sum / double(counted) : std::numeric_limits<double>::quiet_NaN();
  return out;
}

/// Same, over every nonzero label present in either map (ascending).
template <HostTensorLike P, HostTensorLike L>
  requires(rank_of<P> == rank_of<L>)
MultiLabelDice multi_label_dice(const P& prediction, const L& label, AbsentLabel absent = AbsentLabel::nan,
                                double eps = kMetricEpsilon) {
  const auto p = const_view_of(prediction);
  const auto l = const_view_of(label);
  detail::check_same_mask_shape(p, l, "multi_label_dice");
  std::set<std::int64_t> found;
  detail::collect_labels(p.flat(), found);
  detail::collect_labels(l.flat(), found);
  RLMED_CHECK(!found.empty(), "multi_label_dice: neither map holds a nonzero label; pass the labels explicitly");
  return multi_label_dice(p, l, std::vector<std::int64_t>(found.begin(), found.end()), absent, eps);
}

// ---- boundary IoU ---------------------------------------------------------------------------

/// max(1, round(0.02 × diagonal)), the diagonal in voxels: sqrt(Σ extent²).
template <std::size_t Rank>
double default_boundary_band_width(const Shape<Rank>& shape) {
  double s = 0;
  for (std::size_t a = 0; a < Rank; ++a) s += double(shape[a]) * double(shape[a]);
  return std::max(1.0, std::round(0.02 * std::sqrt(s)));
}

struct BoundaryIouOptions {
  double band_width_vox = 0;          // d; 0 selects default_boundary_band_width(shape)
  bool border_is_background = true;   // the outside of the image counts as background
  double epsilon = kMetricEpsilon;
};

/// band[i] = 1 where mask[i] is foreground and a background voxel lies within the cube of
/// half-side floor(width) around it: mask minus its erosion by a (2d+1)^Rank cube, which is what
/// the reference implementation's d iterations of a 3×3(×3) erosion compute (chessboard
/// distance ≤ d). The erosion is separable: one running-count pass per axis. `ws` is unused and
/// kept for API stability.
template <std::size_t Rank, HostTensorLike X>
  requires(rank_of<X> == Rank)
void boundary_band_into(TensorView<std::uint8_t, Rank> band, const X& mask, double width_vox,
                        bool border_is_background, EdtWorkspace& /*ws*/) {
  const auto m = const_view_of(mask);
  detail::check_nonempty_shape(m.shape(), "boundary_band");
  RLMED_CHECK(band.shape() == m.shape(), "boundary_band: output shape ", band.shape(), " differs from mask shape ", m.shape());
  RLMED_CHECK(std::isfinite(width_vox) && width_vox > 0, "boundary_band: band width must be positive and finite, found ",
              width_vox, " voxels");
  const index_t n = m.size();
  const index_t r = index_t(std::floor(width_vox));
  // eroded: 1 where the whole cube around the voxel is foreground (outside: background or ignored).
  Tensor<std::uint8_t, Rank> eroded(m.shape());
  {
    const auto* src = m.data();
    auto* dst = eroded.data();
    for (index_t i = 0; i < n; ++i) {
      const auto v = src[i];
      if constexpr (std::is_floating_point_v<std::remove_cvref_t<decltype(v)>>)
        RLMED_CHECK(!std::isnan(v), "boundary_band: NaN in the mask at element ", i);
      dst[i] = v != 0 ? 1 : 0;
    }
  }
  if (r > 0) {
    Tensor<std::uint8_t, Rank> next(m.shape());
    for (std::size_t axis = 0; axis < Rank; ++axis) {
      const index_t len = m.extent(axis);
      index_t stride = 1;
      for (std::size_t k = axis + 1; k < Rank; ++k) stride *= m.extent(k);
      const index_t lines = n / len;
      const std::uint8_t* in = eroded.data();
      std::uint8_t* out = next.data();
      parallel_for_chunks(0, lines, 64, [&](index_t lb, index_t le) {
        std::vector<index_t> prefix(std::size_t(len) + 1);
        for (index_t line = lb; line < le; ++line) {
          const index_t base = (line / stride) * len * stride + line % stride;
          prefix[0] = 0;
          for (index_t i = 0; i < len; ++i) prefix[std::size_t(i + 1)] = prefix[std::size_t(i)] + in[base + i * stride];
          for (index_t i = 0; i < len; ++i) {
            const index_t lo = i - r, hi = i + r;
            bool all;
            if (border_is_background && (lo < 0 || hi >= len)) {
              all = false;
            } else {
              const index_t a0 = std::max<index_t>(lo, 0), a1 = std::min<index_t>(hi, len - 1);
              all = prefix[std::size_t(a1 + 1)] - prefix[std::size_t(a0)] == a1 - a0 + 1;
            }
            out[base + i * stride] = all ? 1 : 0;
          }
        }
      });
      std::swap(eroded, next);
    }
  }
  const auto* src = m.data();
  const std::uint8_t* er = eroded.data();
  std::uint8_t* out = band.data();
  // Width < 1: every foreground voxel is at least 1 from background, so the band is empty.
  for (index_t i = 0; i < n; ++i) out[i] = r > 0 && src[i] != 0 && !er[i] ? 1 : 0;
}

/// IoU (ε rule) of the boundary bands of prediction and label.
template <HostTensorLike P, HostTensorLike L>
  requires(rank_of<P> == rank_of<L>)
double boundary_iou(const P& prediction, const L& label, const BoundaryIouOptions& options = {}) {
  constexpr std::size_t R = rank_of<P>;
  const auto p = const_view_of(prediction);
  const auto l = const_view_of(label);
  detail::check_same_mask_shape(p, l, "boundary_iou");
  detail::check_epsilon(options.epsilon, "boundary_iou");
  const double width = options.band_width_vox > 0 ? options.band_width_vox : default_boundary_band_width(p.shape());
  RLMED_CHECK(options.band_width_vox >= 0 && std::isfinite(options.band_width_vox),
              "boundary_iou: band width must be >= 0 (0 = default) and finite, found ", options.band_width_vox);
  Tensor<std::uint8_t, R> band_p(p.shape()), band_l(p.shape());
  EdtWorkspace ws;
  boundary_band_into<R>(band_p.view(), p, width, options.border_is_background, ws);
  boundary_band_into<R>(band_l.view(), l, width, options.border_is_background, ws);
  return iou(confusion_counts(band_p, band_l), options.epsilon);
}

// ============================================================================================
// Surface distances
// ============================================================================================

/// surface[i] = 1 for mask voxels with a background face neighbour (or, with
/// border_is_background, on the image border).
template <std::size_t Rank, HostTensorLike X>
  requires(rank_of<X> == Rank)
void surface_voxels_into(TensorView<std::uint8_t, Rank> surface, const X& mask, bool border_is_background = true) {
  const auto m = const_view_of(mask);
  detail::check_nonempty_shape(m.shape(), "surface_voxels");
  RLMED_CHECK(surface.shape() == m.shape(), "surface_voxels: output shape ", surface.shape(), " differs from mask shape ",
              m.shape());
  const auto& shape = m.shape();
  const auto strides = contiguous_strides(shape);
  const index_t line = shape[Rank - 1];
  const index_t lines = m.size() / line;
  const auto* md = m.data();
  std::uint8_t* out = surface.data();
  parallel_for(
      0, lines,
      [&](index_t r) {
        std::array<index_t, Rank> idx{};  // coordinates of the line start
        index_t rest = r;
        for (std::size_t a = Rank - 1; a-- > 0;) {
          idx[a] = rest % shape[a];
          rest /= shape[a];
        }
        for (index_t x = 0; x < line; ++x) {
          idx[Rank - 1] = x;
          const index_t i = r * line + x;
          bool edge = false;
          if (detail::mask_is_on(md[i])) {
            for (std::size_t a = 0; a < Rank && !edge; ++a) {
              if (idx[a] == 0 || idx[a] == shape[a] - 1) edge = border_is_background;
              if (idx[a] > 0 && !detail::mask_is_on(md[i - strides[a]])) edge = true;
              if (idx[a] < shape[a] - 1 && !detail::mask_is_on(md[i + strides[a]])) edge = true;
            }
          }
          out[i] = edge ? 1 : 0;
        }
      },
      std::max<index_t>(1, (index_t(1) << 15) / line));
}

template <HostTensorLike X>
Tensor<std::uint8_t, rank_of<X>> surface_voxels(const X& mask, bool border_is_background = true) {
  const auto m = const_view_of(mask);
  auto out = Tensor<std::uint8_t, rank_of<X>>::uninitialized(m.shape());
  surface_voxels_into<rank_of<X>>(out.view(), m, border_is_background);
  return out;
}

/// numpy.percentile(values, q) with the default 'linear' method; q in [0, 100].
inline double percentile_linear(std::vector<double> values, double q) {
  RLMED_CHECK(!values.empty(), "percentile of an empty set is undefined");
  RLMED_CHECK(q >= 0 && q <= 100, "percentile q must be in [0, 100], found ", q);
  for (double v : values) RLMED_CHECK(!std::isnan(v), "percentile: values hold NaN");
  const index_t n = index_t(values.size());
  const double virtual_index = double(n - 1) * (q / 100.0);
  index_t lo = static_cast<index_t>(std::floor(virtual_index));
  lo = std::clamp<index_t>(lo, 0, n - 1);
  const index_t hi = std::min(lo + 1, n - 1);
  const double gamma = virtual_index - double(lo);
  std::nth_element(values.begin(), values.begin() + lo, values.end());
  const double a = values[std::size_t(lo)];
  const double b = hi == lo ? a : *std::min_element(values.begin() + lo + 1, values.end());
  const double diff = b - a;
  return gamma >= 0.5 ? b - diff * (1.0 - gamma) : a + diff * gamma;  // numpy's _lerp
}

struct SurfaceDistanceOptions {
  bool border_is_background = true;  // voxels on the image border are surface voxels (medpy)
  double empty_distance = std::numeric_limits<double>::infinity();  // exactly one mask empty
};

/// Directed surface distances, in the units of the spacing, in row-major voxel order.
struct SurfaceDistances {
  std::vector<double> prediction_to_label;  // per prediction surface voxel: to the nearest label surface voxel
  std::vector<double> label_to_prediction;  // per label surface voxel: to the nearest prediction surface voxel
  bool prediction_empty = false;
  bool label_empty = false;
};

struct SurfaceDistanceSummary {
  double hausdorff = 0;   // max of both directed sets
  double percentile = 0;  // q-th percentile of both sets together (q = 95: HD95)
  double mean = 0;        // average symmetric surface distance (mean of both sets together)
};

template <HostTensorLike P, HostTensorLike L>
  requires(rank_of<P> == rank_of<L>)
SurfaceDistances surface_distances(const P& prediction, const L& label,
                                   const AxisSpacing<rank_of<P>>& spacing = unit_spacing<rank_of<P>>(),
                                   const SurfaceDistanceOptions& options = {}) {
  constexpr std::size_t R = rank_of<P>;
  const auto p = const_view_of(prediction);
  const auto l = const_view_of(label);
  detail::check_same_mask_shape(p, l, "surface_distances");
  detail::check_axis_spacing(spacing, "surface_distances");
  Tensor<std::uint8_t, R> surf_p = surface_voxels(p, options.border_is_background);
  Tensor<std::uint8_t, R> surf_l = surface_voxels(l, options.border_is_background);
  SurfaceDistances out;
  const index_t n = p.size();
  const index_t count_p = std::count(surf_p.begin(), surf_p.end(), std::uint8_t(1));
  const index_t count_l = std::count(surf_l.begin(), surf_l.end(), std::uint8_t(1));
  out.prediction_empty = count_p == 0;  // a nonempty mask always has a surface voxel
  out.label_empty = count_l == 0;
  if (out.prediction_empty || out.label_empty) return out;
  Tensor<double, R> dist(p.shape());
  EdtWorkspace ws;
  auto gather = [&](const Tensor<std::uint8_t, R>& from, index_t count, std::vector<double>& into) {
    into.reserve(std::size_t(count));
    for (index_t i = 0; i < n; ++i)
      if (from.data()[i]) into.push_back(dist.data()[i]);
  };
  distance_to_foreground_into<double, R>(dist.view(), surf_l, spacing, ws);
  gather(surf_p, count_p, out.prediction_to_label);
  distance_to_foreground_into<double, R>(dist.view(), surf_p, spacing, ws);
  gather(surf_l, count_l, out.label_to_prediction);
  return out;
}

/// Hausdorff, q-th percentile and mean of surface distances (empty masks: see the header).
inline SurfaceDistanceSummary summarize_surface_distances(const SurfaceDistances& d, double q = 95.0,
                                                          double empty_distance = std::numeric_limits<double>::infinity()) {
  RLMED_CHECK(q >= 0 && q <= 100, "surface distance percentile must be in [0, 100], found ", q);
  SurfaceDistanceSummary s;
  if (d.prediction_empty && d.label_empty) return s;  // zeros: the masks agree
  if (d.prediction_empty || d.label_empty) {
    s.hausdorff = s.percentile = s.mean = empty_distance;
    return s;
  }
  std::vector<double> all;
  all.reserve(d.prediction_to_label.size() + d.label_to_prediction.size());
  all.insert(all.end(), d.prediction_to_label.begin(), d.prediction_to_label.end());
  all.insert(all.end(), d.label_to_prediction.begin(), d.label_to_prediction.end());
  s.hausdorff = *std::max_element(all.begin(), all.end());
  double sum = 0;
  for (double v : all) sum += v;
  s.mean = sum / double(all.size());
  s.percentile = percentile_linear(std::move(all), q);
  return s;
}

template <HostTensorLike P, HostTensorLike L>
  requires(rank_of<P> == rank_of<L>)
SurfaceDistanceSummary surface_distance_summary(const P& prediction, const L& label,
                                                const AxisSpacing<rank_of<P>>& spacing = unit_spacing<rank_of<P>>(),
                                                double q = 95.0, const SurfaceDistanceOptions& options = {}) {
  return summarize_surface_distances(surface_distances(prediction, label, spacing, options), q, options.empty_distance);
}

/// 95th percentile Hausdorff distance (medpy's hd95; empty masks: see the header).
template <HostTensorLike P, HostTensorLike L>
  requires(rank_of<P> == rank_of<L>)
double hd95(const P& prediction, const L& label, const AxisSpacing<rank_of<P>>& spacing = unit_spacing<rank_of<P>>(),
            const SurfaceDistanceOptions& options = {}) {
  return surface_distance_summary(prediction, label, spacing, 95.0, options).percentile;
}

/// Symmetric Hausdorff distance between the surfaces (max of both directed distances).
template <HostTensorLike P, HostTensorLike L>
  requires(rank_of<P> == rank_of<L>)
double hausdorff_distance(const P& prediction, const L& label,
                          const AxisSpacing<rank_of<P>>& spacing = unit_spacing<rank_of<P>>(),
                          const SurfaceDistanceOptions& options = {}) {
  return surface_distance_summary(prediction, label, spacing, 95.0, options).hausdorff;
}

namespace detail {
template <class A, class B, std::size_t Dim>
void check_mask_geometry(const Image<A, Dim>& a, const Image<B, Dim>& b, const char* what) {
  RLMED_CHECK(same_geometry(a, b), what, ": prediction and label images differ in geometry (shape ", a.shape(), " vs ",
              b.shape(), ", spacing ", a.spacing_mm, " vs ", b.spacing_mm, " mm, origin ", a.origin_mm, " vs ",
              b.origin_mm, ")");
  a.validate_geometry();
}
}  // namespace detail

/// Surface distance summary in mm, from the images' spacing (geometries must agree).
template <class A, class B, std::size_t Dim>
SurfaceDistanceSummary surface_distance_summary(const Image<A, Dim>& prediction, const Image<B, Dim>& label,
                                                double q = 95.0, const SurfaceDistanceOptions& options = {}) {
  detail::check_mask_geometry(prediction, label, "surface_distance_summary");
  return surface_distance_summary(prediction.view(), label.view(), spacing_per_tensor_axis(prediction), q, options);
}
template <class A, class B, std::size_t Dim>
double hd95(const Image<A, Dim>& prediction, const Image<B, Dim>& label, const SurfaceDistanceOptions& options = {}) {
  return surface_distance_summary(prediction, label, 95.0, options).percentile;
}
template <class A, class B, std::size_t Dim>
double hausdorff_distance(const Image<A, Dim>& prediction, const Image<B, Dim>& label,
                          const SurfaceDistanceOptions& options = {}) {
  return surface_distance_summary(prediction, label, 95.0, options).hausdorff;
}

// ============================================================================================
// Intensity similarity
// ============================================================================================

/// mean((a − b)²) over all elements, in double.
template <HostTensorLike A, HostTensorLike B>
  requires(rank_of<A> == rank_of<B>)
double mean_squared_error(const A& a, const B& b) {
  const auto av = const_view_of(a);
  const auto bv = const_view_of(b);
  RLMED_CHECK(av.shape() == bv.shape(), "mean_squared_error: shapes differ: ", av.shape(), " vs ", bv.shape());
  RLMED_CHECK(av.size() > 0, "mean_squared_error: expected non-empty images, found shape ", av.shape());
  const auto* ad = av.data();
  const auto* bd = bv.data();
  const double sum = detail::metric_reduce<double>(av.size(), [&](index_t s, index_t e) {
    double acc = 0;
    for (index_t i = s; i < e; ++i) {
      const double d = double(ad[i]) - double(bd[i]);
      acc += d * d;
    }
    return acc;
  });
  return detail::finite_value(sum / double(av.size()), "mean_squared_error");
}

/// Pearson correlation of all elements: Σ(a−ā)(b−b̄) / sqrt(Σ(a−ā)² Σ(b−b̄)²).
/// Returns 0 when either image is constant (no correlation is defined).
template <HostTensorLike A, HostTensorLike B>
  requires(rank_of<A> == rank_of<B>)
double global_ncc(const A& a, const B& b) {
  const auto av = const_view_of(a);
  const auto bv = const_view_of(b);
  RLMED_CHECK(av.shape() == bv.shape(), "global_ncc: shapes differ: ", av.shape(), " vs ", bv.shape());
  RLMED_CHECK(av.size() > 0, "global_ncc: expected non-empty images, found shape ", av.shape());
  const auto* ad = av.data();
  const auto* bd = bv.data();
  const index_t n = av.size();
  struct Sums {
    double a = 0, b = 0, aa = 0, bb = 0, ab = 0;
    bool a_constant = true, b_constant = true;  // every element equals element 0
    Sums& operator+=(const Sums& o) noexcept {
      a += o.a; b += o.b; aa += o.aa; bb += o.bb; ab += o.ab;
      a_constant = a_constant && o.a_constant;
      b_constant = b_constant && o.b_constant;
      return *this;
    }
  };
  const double a0 = double(ad[0]), b0 = double(bd[0]);
  const Sums mean_sums = detail::metric_reduce<Sums>(n, [&](index_t s, index_t e) {
    Sums acc;
    for (index_t i = s; i < e; ++i) {
      acc.a += double(ad[i]);
      acc.b += double(bd[i]);
      acc.a_constant = acc.a_constant && double(ad[i]) == a0;
      acc.b_constant = acc.b_constant && double(bd[i]) == b0;
    }
    return acc;
  });
  const double ma = detail::finite_value(mean_sums.a / double(n), "global_ncc (mean of a)");
  const double mb = detail::finite_value(mean_sums.b / double(n), "global_ncc (mean of b)");
  // Exactly constant images: no correlation is defined (a rounded mean would fake one).
  if (mean_sums.a_constant || mean_sums.b_constant) return 0.0;
  const Sums c = detail::metric_reduce<Sums>(n, [&](index_t s, index_t e) {
    Sums acc;
    for (index_t i = s; i < e; ++i) {
      const double x = double(ad[i]) - ma, y = double(bd[i]) - mb;
      acc.aa += x * x;
      acc.bb += y * y;
      acc.ab += x * y;
    }
    return acc;
  });
  if (c.aa <= 0 || c.bb <= 0) return 0.0;
  return c.ab / std::sqrt(c.aa * c.bb);
}

// ---- local (windowed) NCC, VoxelMorph ------------------------------------------------------

template <std::size_t Rank>
struct LocalNccOptions {
  std::array<index_t, Rank> window = [] {
    std::array<index_t, Rank> w{};
    w.fill(9);
    return w;
  }();                     // odd window side per tensor axis
  double epsilon = 1e-5;   // added to var_I · var_J (VoxelMorph's 1e-5)
};

/// Buffers of local NCC: six double fields of the image size and per-chunk partial sums.
struct LocalNccWorkspace {
  std::vector<double> fields;
  std::vector<double> partial;
};

namespace detail {

/// One zero-padded box-sum pass of radius r along `axis`: out[i] = Σ_{|j−i_axis| ≤ r} src(j).
/// Running sums per line; lines (or column blocks of strided axes) in parallel.
template <std::size_t Rank, class Src>
void box_sum_pass(const Shape<Rank>& shape, std::size_t axis, index_t r, Src&& src, double* out) {
  index_t outer = 1, inner = 1;
  for (std::size_t a = 0; a < axis; ++a) outer *= shape[a];
  for (std::size_t a = axis + 1; a < Rank; ++a) inner *= shape[a];
  const index_t n = shape[axis];
  const index_t head = std::min(r, n - 1);  // the first window covers [0, head]
  if (inner == 1) {
    parallel_for(
        0, outer,
        [&](index_t o) {
          const index_t base = o * n;
          double s = 0;
          for (index_t j = 0; j <= head; ++j) s += src(base + j);
          out[base] = s;
          for (index_t i = 1; i < n; ++i) {
            if (i + r < n) s += src(base + i + r);
            if (i - r - 1 >= 0) s -= src(base + i - r - 1);
            out[base + i] = s;
          }
        },
        std::max<index_t>(1, (index_t(1) << 15) / n));
    return;
  }
  constexpr index_t block = 256;
  const index_t blocks = (inner + block - 1) / block;
  parallel_for(
      0, outer * blocks,
      [&](index_t u) {
        const index_t o = u / blocks;
        const index_t c0 = (u % blocks) * block, c1 = std::min(inner, c0 + block);
        const index_t base = o * n * inner;
        double* row0 = out + base;
        for (index_t c = c0; c < c1; ++c) row0[c] = 0;
        for (index_t j = 0; j <= head; ++j)
          for (index_t c = c0; c < c1; ++c) row0[c] += src(base + j * inner + c);
        for (index_t i = 1; i < n; ++i) {
          const double* prev = out + base + (i - 1) * inner;
          double* cur = out + base + i * inner;
          const bool add = i + r < n, sub = i - r - 1 >= 0;
          const index_t add_row = base + (i + r) * inner, sub_row = base + (i - r - 1) * inner;
          for (index_t c = c0; c < c1; ++c) {
            double s = prev[c];
            if (add) s += src(add_row + c);
            if (sub) s -= src(sub_row + c);
            cur[c] = s;
          }
        }
      },
      std::max<index_t>(1, (index_t(1) << 15) / (n * std::min(inner, block))));
}

/// Separable zero-padded box sum of radii r over all axes; src read only by the first pass.
/// The passes alternate between `result` and `scratch` so the last one lands in `result`.
template <std::size_t Rank, class Src>
void box_sum(const Shape<Rank>& shape, const std::array<index_t, Rank>& radius, Src&& src, double* result,
             double* scratch) {
  for (std::size_t k = 0; k < Rank; ++k) {
    const std::size_t axis = Rank - 1 - k;  // fastest axis first
    double* dst = (Rank - 1 - k) % 2 == 0 ? result : scratch;
    if (k == 0) {
      box_sum_pass<Rank>(shape, axis, radius[axis], src, dst);
    } else {
      const double* prev = dst == result ? scratch : result;
      box_sum_pass<Rank>(shape, axis, radius[axis], [prev](index_t i) { return prev[i]; }, dst);
    }
  }
}

template <std::size_t Rank>
void check_ncc_options(const LocalNccOptions<Rank>& options) {
  for (std::size_t a = 0; a < Rank; ++a)
    RLMED_CHECK(options.window[a] >= 1 && options.window[a] % 2 == 1, "local_ncc: window must be odd and >= 1 on every axis; found ",
                options.window);
  RLMED_CHECK(std::isfinite(options.epsilon) && options.epsilon > 0, "local_ncc: epsilon must be positive and finite, found ",
              options.epsilon);
}

/// Mean local cc of one image pair; with grad != nullptr also writes grad = scale · d(mean cc)/dJ.
template <class TI, class TJ, std::size_t Rank>
double local_ncc_plane(const TI* I, const TJ* J, const Shape<Rank>& shape, const LocalNccOptions<Rank>& options,
                       LocalNccWorkspace& ws, TJ* grad, double grad_scale) {
  const index_t n = numel(shape);
  if (ws.fields.size() < std::size_t(6 * n)) ws.fields.resize(std::size_t(6 * n));
  double* s_i = ws.fields.data();  // each field [numel]
  double* s_j = s_i + n;
  double* s_ii = s_j + n;
  double* s_jj = s_ii + n;
  double* s_ij = s_jj + n;
  double* scratch = s_ij + n;
  std::array<index_t, Rank> radius{};
  double window_volume = 1;
  for (std::size_t a = 0; a < Rank; ++a) {
    radius[a] = options.window[a] / 2;
    window_volume *= double(options.window[a]);
  }
  box_sum<Rank>(shape, radius, [I](index_t i) { return double(I[i]); }, s_i, scratch);
  box_sum<Rank>(shape, radius, [J](index_t i) { return double(J[i]); }, s_j, scratch);
  box_sum<Rank>(shape, radius, [I](index_t i) { return double(I[i]) * double(I[i]); }, s_ii, scratch);
  box_sum<Rank>(shape, radius, [J](index_t i) { return double(J[i]) * double(J[i]); }, s_jj, scratch);
  box_sum<Rank>(shape, radius, [I, J](index_t i) { return double(I[i]) * double(J[i]); }, s_ij, scratch);

  const index_t chunks = metric_chunk_count(n);
  if (ws.partial.size() < std::size_t(chunks)) ws.partial.resize(std::size_t(chunks));
  const double inv_n_win = 1.0 / window_volume;
  const double eps = options.epsilon;
  const bool want_grad = grad != nullptr;
  parallel_for_chunks(0, n, kMetricChunk, [&](index_t b, index_t e) {
    double acc = 0;
    for (index_t i = b; i < e; ++i) {
      const double cross = s_ij[i] - s_i[i] * s_j[i] * inv_n_win;
      const double var_i = s_ii[i] - s_i[i] * s_i[i] * inv_n_win;
      const double var_j = s_jj[i] - s_j[i] * s_j[i] * inv_n_win;
      const double den = var_i * var_j + eps;
      acc += cross * cross / den;
      if (want_grad) {
        // Partial derivatives of cc at this centre w.r.t. the box sums that contain J.
        const double d_sij = 2.0 * cross / den;                      // dcc/dΣIJ
        const double d_sjj = -cross * cross * var_i / (den * den);   // dcc/dΣJ²
        const double d_sj = -(d_sij * s_i[i] + 2.0 * d_sjj * s_j[i]) * inv_n_win;  // dcc/dΣJ
        s_ij[i] = d_sij;
        s_jj[i] = d_sjj;
        s_j[i] = d_sj;
      }
    }
    ws.partial[std::size_t(b / kMetricChunk)] = acc;
  });
  double total = 0;
  for (index_t c = 0; c < chunks; ++c) total += ws.partial[std::size_t(c)];
  const double value = total / double(n);
  RLMED_CHECK(std::isfinite(value), "local_ncc is ", value, "; expected finite images (NaN or inf in the inputs?)");
  if (!want_grad) return value;

  // Adjoint of the box sums (the same odd, zero-padded box): dL/dJ(q) = Σ over centres p whose
  // window holds q of dcc(p)/dΣ · dΣ/dJ(q).
  box_sum<Rank>(shape, radius, [s_ij](index_t i) { return s_ij[i]; }, s_i, scratch);   // box(dcc/dΣIJ) -> s_i
  box_sum<Rank>(shape, radius, [s_jj](index_t i) { return s_jj[i]; }, s_ii, scratch);  // box(dcc/dΣJ²) -> s_ii
  box_sum<Rank>(shape, radius, [s_j](index_t i) { return s_j[i]; }, s_ij, scratch);    // box(dcc/dΣJ) -> s_ij
  const double scale = grad_scale / double(n);
  parallel_for_chunks(0, n, kMetricChunk, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i)
      grad[i] = static_cast<TJ>(scale * (s_i[i] * double(I[i]) + 2.0 * s_ii[i] * double(J[i]) + s_ij[i]));
  });
  return value;
}

}  // namespace detail

/// Mean local cc of fixed image I and warped image J (same shape, rank 1–3); VoxelMorph's NCC
/// loss is −value. The workspace makes repeated calls allocation-free.
template <HostTensorLike F, HostTensorLike W>
  requires(rank_of<F> == rank_of<W>)
double local_ncc(const F& fixed, const W& warped, const LocalNccOptions<rank_of<F>>& options, LocalNccWorkspace& ws) {
  constexpr std::size_t R = rank_of<F>;
  static_assert(R >= 1 && R <= 3, "local_ncc takes 1D, 2D or 3D images");
  const auto i = const_view_of(fixed);
  const auto j = const_view_of(warped);
  RLMED_CHECK(i.shape() == j.shape(), "local_ncc: fixed shape ", i.shape(), " differs from warped shape ", j.shape());
  detail::check_nonempty_shape(i.shape(), "local_ncc");
  detail::check_ncc_options(options);
  return detail::local_ncc_plane<element_of<F>, element_of<W>, R>(i.data(), j.data(), i.shape(), options, ws, nullptr, 1.0);
}

template <HostTensorLike F, HostTensorLike W>
  requires(rank_of<F> == rank_of<W>)
double local_ncc(const F& fixed, const W& warped, const LocalNccOptions<rank_of<F>>& options = {}) {
  LocalNccWorkspace ws;
  return local_ncc(fixed, warped, options, ws);
}

/// Mean local cc, and grad_warped = d(mean cc)/dJ (shape of J; analytic, see the header).
template <class TJ, std::size_t Rank, HostTensorLike F, HostTensorLike W>
  requires(rank_of<F> == Rank && rank_of<W> == Rank && std::is_same_v<element_of<W>, TJ>)
double local_ncc_with_gradient_into(TensorView<TJ, Rank> grad_warped, const F& fixed, const W& warped,
                                    const LocalNccOptions<Rank>& options, LocalNccWorkspace& ws) {
  static_assert(std::is_floating_point_v<TJ>, "the gradient needs a float or double warped image");
  static_assert(Rank >= 1 && Rank <= 3, "local_ncc takes 1D, 2D or 3D images");
  const auto i = const_view_of(fixed);
  const auto j = const_view_of(warped);
  RLMED_CHECK(i.shape() == j.shape(), "local_ncc: fixed shape ", i.shape(), " differs from warped shape ", j.shape());
  RLMED_CHECK(grad_warped.shape() == j.shape(), "local_ncc: gradient shape ", grad_warped.shape(),
              " differs from warped shape ", j.shape());
  detail::check_nonempty_shape(i.shape(), "local_ncc");
  detail::check_ncc_options(options);
  return detail::local_ncc_plane<element_of<F>, TJ, Rank>(i.data(), j.data(), i.shape(), options, ws,
                                                          grad_warped.data(), 1.0);
}

template <HostTensorLike F, HostTensorLike W>
  requires(rank_of<F> == rank_of<W>)
std::pair<double, Tensor<element_of<W>, rank_of<W>>> local_ncc_with_gradient(
    const F& fixed, const W& warped, const LocalNccOptions<rank_of<F>>& options = {}) {
  const auto j = const_view_of(warped);
  auto grad = Tensor<element_of<W>, rank_of<W>>::uninitialized(j.shape());
  LocalNccWorkspace ws;
  const double v = local_ncc_with_gradient_into<element_of<W>, rank_of<W>>(grad.view(), fixed, warped, options, ws);
  return {v, std::move(grad)};
}

namespace detail {
template <class TI, class TJ, std::size_t BatchRank>
double local_ncc_batched_impl(TensorView<const TI, BatchRank> fixed, TensorView<const TJ, BatchRank> warped, TJ* grad,
                              const LocalNccOptions<BatchRank - 2>& options, LocalNccWorkspace& ws) {
  static_assert(BatchRank >= 3 && BatchRank <= 5, "batched local NCC takes [N, C, *spatial] with 1-3 spatial axes");
  constexpr std::size_t R = BatchRank - 2;
  RLMED_CHECK(fixed.shape() == warped.shape(), "local_ncc_batched: fixed shape ", fixed.shape(),
              " differs from warped shape ", warped.shape());
  for (std::size_t a = 0; a < BatchRank; ++a)
    RLMED_CHECK(fixed.extent(a) >= 1, "local_ncc_batched: expected a non-empty [N, C, *spatial] batch, found ",
                fixed.shape());
  check_ncc_options(options);
  Shape<R> spatial{};
  for (std::size_t a = 0; a < R; ++a) spatial[a] = fixed.extent(a + 2);
  const index_t planes = fixed.extent(0) * fixed.extent(1);
  const index_t plane = numel(spatial);
  double total = 0;
  for (index_t pl = 0; pl < planes; ++pl)
    total += local_ncc_plane<TI, TJ, R>(fixed.data() + pl * plane, warped.data() + pl * plane, spatial, options, ws,
                                        grad ? grad + pl * plane : nullptr, 1.0 / double(planes));
  return total / double(planes);
}
}  // namespace detail

/// Batched local NCC of [N, C, *spatial] images: the mean of cc over every batch item, channel
/// and voxel (VoxelMorph's reduction).
template <HostTensorLike F, HostTensorLike W>
  requires(rank_of<F> == rank_of<W> && rank_of<F> >= 3)
double local_ncc_batched(const F& fixed, const W& warped, const LocalNccOptions<rank_of<F> - 2>& options,
                         LocalNccWorkspace& ws) {
  return detail::local_ncc_batched_impl<element_of<F>, element_of<W>, rank_of<F>>(
      const_view_of(fixed), const_view_of(warped), nullptr, options, ws);
}

/// Same, and grad_warped = d(mean)/dJ for the whole batch.
template <class TJ, std::size_t BatchRank, HostTensorLike F, HostTensorLike W>
  requires(rank_of<F> == BatchRank && rank_of<W> == BatchRank && std::is_same_v<element_of<W>, TJ>)
double local_ncc_batched_with_gradient_into(TensorView<TJ, BatchRank> grad_warped, const F& fixed, const W& warped,
                                            const LocalNccOptions<BatchRank - 2>& options, LocalNccWorkspace& ws) {
  static_assert(std::is_floating_point_v<TJ>, "the gradient needs a float or double warped image");
  RLMED_CHECK(grad_warped.shape() == const_view_of(warped).shape(), "local_ncc_batched: gradient shape ",
              grad_warped.shape(), " differs from warped shape ", const_view_of(warped).shape());
  return detail::local_ncc_batched_impl<element_of<F>, TJ, BatchRank>(const_view_of(fixed), const_view_of(warped),
                                                                      grad_warped.data(), options, ws);
}

// ============================================================================================
// Geometric errors
// ============================================================================================

struct TargetRegistrationError {
  std::vector<double> per_point_mm;
  double mean_mm = 0, std_mm = 0, median_mm = 0, max_mm = 0;  // std: population (÷ n)
};

/// Distances between corresponding points given in mm (physical (x, y, z) order).
template <std::size_t Dim>
TargetRegistrationError target_registration_error(const std::vector<Vec<Dim>>& a_mm, const std::vector<Vec<Dim>>& b_mm) {
  RLMED_CHECK(a_mm.size() == b_mm.size(), "target_registration_error: ", a_mm.size(), " points against ", b_mm.size(),
              "; expected corresponding point sets of equal size");
  RLMED_CHECK(!a_mm.empty(), "target_registration_error: expected at least one point pair");
  TargetRegistrationError out;
  out.per_point_mm.reserve(a_mm.size());
  for (std::size_t k = 0; k < a_mm.size(); ++k) {
    for (std::size_t c = 0; c < Dim; ++c)
      RLMED_CHECK(std::isfinite(a_mm[k][c]) && std::isfinite(b_mm[k][c]), "target_registration_error: point ", k,
                  " is not finite: ", a_mm[k], " vs ", b_mm[k]);
    out.per_point_mm.push_back(distance_mm<Dim>(a_mm[k], b_mm[k]));
  }
  const double n = double(out.per_point_mm.size());
  double sum = 0, sq = 0;
  for (double d : out.per_point_mm) sum += d;
  out.mean_mm = sum / n;
  for (double d : out.per_point_mm) sq += (d - out.mean_mm) * (d - out.mean_mm);
  out.std_mm = std::sqrt(sq / n);
  out.max_mm = *std::max_element(out.per_point_mm.begin(), out.per_point_mm.end());
  out.median_mm = percentile_linear(out.per_point_mm, 50.0);
  return out;
}

/// TRE of points given as voxel indices (x, y, z; fractional allowed) of two images: each set
/// is mapped to mm through its own image's geometry first.
template <class A, class B, std::size_t Dim>
TargetRegistrationError target_registration_error(const Image<A, Dim>& a_geometry, const std::vector<Vec<Dim>>& a_index,
                                                  const Image<B, Dim>& b_geometry, const std::vector<Vec<Dim>>& b_index) {
  a_geometry.validate_geometry();
  b_geometry.validate_geometry();
  std::vector<Vec<Dim>> a_mm, b_mm;
  a_mm.reserve(a_index.size());
  b_mm.reserve(b_index.size());
  for (const auto& p : a_index) a_mm.push_back(a_geometry.index_to_physical(p));
  for (const auto& p : b_index) b_mm.push_back(b_geometry.index_to_physical(p));
  return target_registration_error(a_mm, b_mm);
}

/// TRE of two index point sets in the same image.
template <class A, std::size_t Dim>
TargetRegistrationError target_registration_error(const Image<A, Dim>& geometry, const std::vector<Vec<Dim>>& a_index,
                                                  const std::vector<Vec<Dim>>& b_index) {
  return target_registration_error(geometry, a_index, geometry, b_index);
}

/// A plane (a line in 2D) {x : normal · x = offset_mm}, in world mm.
template <std::size_t Dim>
struct Plane {
  Vec<Dim> normal{};
  double offset_mm = 0;
};

/// The same plane with a unit normal; rlmed::Error for a zero or non-finite normal.
template <std::size_t Dim>
Plane<Dim> normalized(const Plane<Dim>& p) {
  double len = 0;
  for (double v : p.normal) len += v * v;
  len = std::sqrt(len);
  RLMED_CHECK(std::isfinite(len) && len > 0 && std::isfinite(p.offset_mm), "plane needs a finite nonzero normal and a finite offset; found normal ",
              p.normal, ", offset ", p.offset_mm);
  Plane<Dim> q;
  for (std::size_t c = 0; c < Dim; ++c) q.normal[c] = p.normal[c] / len;
  q.offset_mm = p.offset_mm / len;
  return q;
}

/// The plane through three points (mm); rlmed::Error when they are collinear.
inline Plane<3> plane_through_points(const Vec<3>& p0, const Vec<3>& p1, const Vec<3>& p2) {
  const Vec<3> u{p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2]};
  const Vec<3> v{p2[0] - p0[0], p2[1] - p0[1], p2[2] - p0[2]};
  const Vec<3> n{u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]};
  const double len = std::sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
  const double scale = std::sqrt((u[0] * u[0] + u[1] * u[1] + u[2] * u[2]) * (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]));
  RLMED_CHECK(std::isfinite(len) && len > 1e-12 * scale && len > 0, "plane_through_points: points ", p0, ", ", p1, ", ", p2,
              " are collinear (or not finite)");
  return normalized(Plane<3>{n, n[0] * p0[0] + n[1] * p0[1] + n[2] * p0[2]});
}

/// Angle in degrees between the planes' normals, ignoring orientation: in [0, 90].
template <std::size_t Dim>
double plane_angle_error_deg(const Plane<Dim>& a, const Plane<Dim>& b) {
  const Plane<Dim> p = normalized(a), q = normalized(b);
  double dot = 0;
  for (std::size_t c = 0; c < Dim; ++c) dot += p.normal[c] * q.normal[c];
  return std::acos(std::clamp(std::abs(dot), 0.0, 1.0)) * (180.0 / 3.14159265358979323846);
}

/// |offset_a − offset_b| (mm) after normalising both normals and orienting b like a.
template <std::size_t Dim>
double plane_offset_error_mm(const Plane<Dim>& a, const Plane<Dim>& b) {
  const Plane<Dim> p = normalized(a), q = normalized(b);
  double dot = 0;
  for (std::size_t c = 0; c < Dim; ++c) dot += p.normal[c] * q.normal[c];
  return std::abs(p.offset_mm - (dot < 0 ? -q.offset_mm : q.offset_mm));
}

/// An axis-aligned box [min_corner, max_corner] in continuous coordinates (mm or voxels).
template <std::size_t Dim>
struct Box {
  Vec<Dim> min_corner{};
  Vec<Dim> max_corner{};
};

/// Volume(a ∩ b) / volume(a ∪ b). Corners are continuous (no +1 pixel convention). Boxes of
/// zero volume: IoU 1 when they are identical, 0 otherwise.
template <std::size_t Dim>
double box_iou(const Box<Dim>& a, const Box<Dim>& b) {
  double va = 1, vb = 1, vi = 1;
  for (std::size_t c = 0; c < Dim; ++c) {
    RLMED_CHECK(std::isfinite(a.min_corner[c]) && std::isfinite(a.max_corner[c]) && a.min_corner[c] <= a.max_corner[c],
                "box_iou: box a needs finite min_corner <= max_corner, found ", a.min_corner, " .. ", a.max_corner);
    RLMED_CHECK(std::isfinite(b.min_corner[c]) && std::isfinite(b.max_corner[c]) && b.min_corner[c] <= b.max_corner[c],
                "box_iou: box b needs finite min_corner <= max_corner, found ", b.min_corner, " .. ", b.max_corner);
    va *= a.max_corner[c] - a.min_corner[c];
    vb *= b.max_corner[c] - b.min_corner[c];
    vi *= std::max(0.0, std::min(a.max_corner[c], b.max_corner[c]) - std::max(a.min_corner[c], b.min_corner[c]));
  }
  const double vu = va + vb - vi;
  if (vu <= 0) return a.min_corner == b.min_corner && a.max_corner == b.max_corner ? 1.0 : 0.0;
  return vi / vu;
}

}  // namespace rlmed::imaging
