// rlmed/imaging/distance_transform.hpp — exact Euclidean distance transforms of masks, any
// spacing, in 1D, 2D and 3D.
//
// Design decisions:
//  * Algorithm: Felzenszwalb & Huttenlocher's separable transform ("Distance transforms of
//    sampled functions", 2012). One pass per tensor axis computes, along every line, the lower
//    envelope of the parabolas s²(x - p)² + f(p); the passes compose to the exact squared
//    Euclidean distance. O(n) per line, O(n) in total. Squared distances are kept in double
//    between passes: with unit spacing they are integers, so the result is exact (no drift
//    from float rounding of intermediate passes).
//  * Parallel over lines. A fixed number of groups each own a slice of the lines and a scratch
//    area in the workspace, so nothing allocates inside the loop; every output depends on its
//    own line only, so the result is bit-identical for any thread count. Lines along a strided
//    axis are gathered in tiles of adjacent columns (one cache line serves a whole tile).
//  * Semantics follow scipy.ndimage.distance_transform_edt(mask, sampling): nonzero voxels get
//    their distance to the nearest zero voxel; zero voxels get 0. `spacing` is given per tensor
//    axis (z, y, x) / (y, x) like scipy's `sampling`; the Image overloads reorder the image's
//    (x, y, z) spacing themselves.
//  * No target at all: when no background voxel exists (an all-foreground mask) every distance
//    is +infinity. scipy returns distances to a phantom voxel just before index 0 of the first
//    axis in that case (an artefact of its feature transform); we do not reproduce it.
//    `EdtOptions::outside_is_background` instead treats everything outside the image as
//    background (as if the mask were padded by one background voxel on every side, which is
//    what the boundary-IoU reference implementation does); distances are then always finite.
//  * Masks of any element type: nonzero = foreground (bool, integers, float). A NaN in a float
//    mask has no meaning and is an rlmed::Error.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/image.hpp"

namespace rlmed::imaging {

/// Spacing per tensor axis (slowest first: (z, y, x) in 3D, (y, x) in 2D) — scipy's `sampling`.
template <std::size_t Rank>
using AxisSpacing = std::array<double, Rank>;

template <std::size_t Rank>
constexpr AxisSpacing<Rank> unit_spacing() noexcept {
  AxisSpacing<Rank> s{};
  for (auto& v : s) v = 1.0;
  return s;
}

/// An image's (x, y, z) spacing reordered per tensor axis (z, y, x).
template <class T, std::size_t Dim>
AxisSpacing<Dim> spacing_per_tensor_axis(const Image<T, Dim>& image) noexcept {
  AxisSpacing<Dim> s{};
  for (std::size_t a = 0; a < Dim; ++a) s[tensor_axis<Dim>(a)] = image.spacing_mm[a];
  return s;
}

struct EdtOptions {
  /// Treat voxels outside the image as background (distance to the nearest background voxel or
  /// image border). Default false: like scipy, the outside does not exist.
  bool outside_is_background = false;
};

/// Reusable buffers of the distance transforms: after the first call of a given size, later
/// calls do not allocate.
struct EdtWorkspace {
  std::vector<double> squared;  // [numel] squared distances (unused when the output is double)
  std::vector<double> tiles;    // per group: f tile [B, n], d tile [B, n], vf [n + 2], z [n + 3]
  std::vector<index_t> sites;   // per group: v [n + 2]
};

namespace detail {

/// Views and tensors, const or not, as a read-only view (the mask arguments of this area).
template <class X>
struct HostViewTraits;
template <class T, std::size_t R>
struct HostViewTraits<TensorView<T, R, cpu>> {
  using value_type = std::remove_const_t<T>;
  static constexpr std::size_t rank = R;
  static TensorView<const value_type, R> view(const TensorView<T, R, cpu>& v) noexcept { return v; }
};
template <class T, std::size_t R>
struct HostViewTraits<Tensor<T, R, cpu>> {
  using value_type = T;
  static constexpr std::size_t rank = R;
  static TensorView<const T, R> view(const Tensor<T, R, cpu>& t) noexcept { return t.view(); }
};

}  // namespace detail

/// A host TensorView (const or mutable elements) or a host Tensor.
template <class X>
concept HostTensorLike = requires { detail::HostViewTraits<std::remove_cvref_t<X>>::rank; };

template <HostTensorLike X>
inline constexpr std::size_t rank_of = detail::HostViewTraits<std::remove_cvref_t<X>>::rank;
template <HostTensorLike X>
using element_of = typename detail::HostViewTraits<std::remove_cvref_t<X>>::value_type;
template <HostTensorLike X>
auto const_view_of(const X& x) noexcept {
  return detail::HostViewTraits<std::remove_cvref_t<X>>::view(x);
}

namespace detail {

/// Foreground test of one mask element: nonzero; NaN is an error.
template <class M>
inline bool mask_is_on(M value) {
  if constexpr (std::is_floating_point_v<M>) {
    RLMED_CHECK(!std::isnan(value), "mask holds NaN; expected finite values (nonzero = foreground)");
    return value != M(0);
  } else if constexpr (std::is_same_v<M, bool>) {
    return value;
  } else {
    return value != M(0);
  }
}

template <std::size_t Rank>
void check_axis_spacing(const AxisSpacing<Rank>& spacing, const char* what) {
  for (std::size_t a = 0; a < Rank; ++a)
    RLMED_CHECK(std::isfinite(spacing[a]) && spacing[a] > 0, what, ": spacing must be positive and finite on every axis; found ",
                spacing, " (per tensor axis)");
}

template <std::size_t Rank>
void check_nonempty_shape(const Shape<Rank>& shape, const char* what) {
  for (std::size_t a = 0; a < Rank; ++a)
    RLMED_CHECK(shape[a] >= 1, what, ": expected a non-empty mask, found shape ", shape);
}

/// Lower envelope of the parabolas s2·(x − p)² + f(p) over the sites p with finite f (plus
/// sites with f = 0 at −1 and n when `wall_sites`), evaluated at x = 0 .. n−1 into `out`.
/// Scratch: v, vf of n + 2 entries; z of n + 3 entries. No site at all gives +inf everywhere.
inline void lower_envelope_line(const double* f, index_t n, double s2, bool wall_sites, double* out, index_t* v,
                                double* vf, double* z) noexcept {
  constexpr double inf = std::numeric_limits<double>::infinity();
  index_t k = -1;  // index of the rightmost parabola of the envelope so far
  auto add_site = [&](index_t q, double fq) {
    if (k < 0) {
      k = 0;
      v[0] = q;
      vf[0] = fq;
      z[0] = -inf;
      z[1] = inf;
      return;
    }
    double s;
    for (;;) {
      const double dq = double(q), dv = double(v[k]);
      // Abscissa where the parabola of q overtakes the one of v[k] (index units).
      s = ((fq - vf[k]) / s2 + (dq * dq - dv * dv)) / (2.0 * (dq - dv));
      if (s > z[k]) break;
      --k;  // z[0] = -inf, so k stays >= 0
    }
    ++k;
    v[k] = q;
    vf[k] = fq;
    z[k] = s;
    z[k + 1] = inf;
  };
  if (wall_sites) add_site(-1, 0.0);
  for (index_t j = 0; j < n; ++j)
    if (f[j] != inf) add_site(j, f[j]);
  if (wall_sites) add_site(n, 0.0);
  if (k < 0) {
    std::fill(out, out + n, inf);
    return;
  }
  index_t e = 0;
  for (index_t x = 0; x < n; ++x) {
    while (z[e + 1] < double(x)) ++e;
    const double dx = double(x - v[e]);
    out[x] = s2 * dx * dx + vf[e];
  }
}

/// Columns per tile when lines are strided (adjacent lines share cache lines).
inline constexpr index_t kEdtTileColumns = 16;

/// One separable pass along `axis`: for every line, f = gather(flat index) (+inf = no site), the
/// envelope is written to sq at the same flat indices. In place is safe (a tile is gathered
/// completely before it is written).
template <std::size_t Rank, class Gather>
void edt_pass(double* sq, const Shape<Rank>& shape, std::size_t axis, double spacing, bool walls, Gather&& gather,
              EdtWorkspace& ws) {
  index_t outer = 1, inner = 1;
  for (std::size_t a = 0; a < axis; ++a) outer *= shape[a];
  for (std::size_t a = axis + 1; a < Rank; ++a) inner *= shape[a];
  const index_t n = shape[axis];
  const index_t tile = inner == 1 ? 1 : std::min(inner, kEdtTileColumns);
  const index_t tiles_per_outer = (inner + tile - 1) / tile;
  const index_t units = outer * tiles_per_outer;
  const index_t groups = std::max<index_t>(1, std::min<index_t>(units, max_threads()));
  const index_t tile_doubles = 2 * tile * n + (n + 2) + (n + 3);
  const index_t site_count = n + 2;
  if (ws.tiles.size() < std::size_t(groups * tile_doubles)) ws.tiles.resize(std::size_t(groups * tile_doubles));
  if (ws.sites.size() < std::size_t(groups * site_count)) ws.sites.resize(std::size_t(groups * site_count));
  const double s2 = spacing * spacing;
  parallel_for(
      0, groups,
      [&](index_t g) {
        double* f_tile = ws.tiles.data() + g * tile_doubles;  // [tile, n]
        double* d_tile = f_tile + tile * n;                    // [tile, n]
        double* vf = d_tile + tile * n;                        // [n + 2]
        double* z = vf + (n + 2);                              // [n + 3]
        index_t* v = ws.sites.data() + g * site_count;         // [n + 2]
        const index_t unit_begin = units * g / groups, unit_end = units * (g + 1) / groups;
        for (index_t u = unit_begin; u < unit_end; ++u) {
          const index_t o = u / tiles_per_outer;
          const index_t c0 = (u % tiles_per_outer) * tile;
          const index_t width = std::min(tile, inner - c0);
          const index_t base = o * n * inner + c0;
          for (index_t j = 0; j < n; ++j)
            for (index_t c = 0; c < width; ++c) f_tile[c * n + j] = gather(base + j * inner + c);
          for (index_t c = 0; c < width; ++c) lower_envelope_line(f_tile + c * n, n, s2, walls, d_tile + c * n, v, vf, z);
          for (index_t j = 0; j < n; ++j)
            for (index_t c = 0; c < width; ++c) sq[base + j * inner + c] = d_tile[c * n + j];
        }
      },
      1);
}

/// Squared distance of every voxel to the nearest voxel whose mask state equals `target_on`
/// (false: distance to background; true: distance to foreground), into sq[numel].
template <class M, std::size_t Rank>
void squared_edt(double* sq, TensorView<const M, Rank> mask, bool target_on, const AxisSpacing<Rank>& spacing,
                 const EdtOptions& options, EdtWorkspace& ws) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  const M* m = mask.data();
  const auto& shape = mask.shape();
  // First pass along the fastest axis reads the mask; later passes refine sq in place.
  edt_pass<Rank>(
      sq, shape, Rank - 1, spacing[Rank - 1], options.outside_is_background,
      [&](index_t i) { return mask_is_on(m[i]) == target_on ? 0.0 : inf; }, ws);
  for (std::size_t a = Rank - 1; a-- > 0;)
    edt_pass<Rank>(sq, shape, a, spacing[a], options.outside_is_background, [&](index_t i) { return sq[i]; }, ws);
}

template <class Out, class M, std::size_t Rank>
void edt_into(TensorView<Out, Rank> out, TensorView<const M, Rank> mask, bool target_on,
              const AxisSpacing<Rank>& spacing, const EdtOptions& options, EdtWorkspace& ws, const char* what) {
  static_assert(std::is_floating_point_v<Out>, "distances are written as float or double");
  static_assert(Rank >= 1 && Rank <= 3, "distance transforms are provided for 1D, 2D and 3D masks");
  check_nonempty_shape(mask.shape(), what);
  RLMED_CHECK(out.shape() == mask.shape(), what, ": output shape ", out.shape(), " differs from mask shape ", mask.shape());
  check_axis_spacing(spacing, what);
  const index_t n = mask.size();
  double* sq;
  if constexpr (std::is_same_v<Out, double>) {
    sq = out.data();
  } else {
    if (ws.squared.size() < std::size_t(n)) ws.squared.resize(std::size_t(n));
    sq = ws.squared.data();
  }
  squared_edt(sq, mask, target_on, spacing, options, ws);
  Out* o = out.data();
  parallel_for_chunks(0, n, 1 << 15, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) o[i] = static_cast<Out>(std::sqrt(sq[i]));
  });
}

}  // namespace detail

// ---- distance to the nearest background voxel (scipy's distance_transform_edt) -------------

/// out[i] = distance (in the units of `spacing`) from voxel i to the nearest background (zero)
/// voxel; 0 on background; +inf everywhere when there is no background (see the header).
template <class Out, std::size_t Rank, HostTensorLike X>
  requires(rank_of<X> == Rank)
void distance_to_background_into(TensorView<Out, Rank> out, const X& mask, const AxisSpacing<Rank>& spacing,
                                 EdtWorkspace& ws, const EdtOptions& options = {}) {
  detail::edt_into<Out, element_of<X>, Rank>(out, const_view_of(mask), false, spacing, options, ws,
                                             "distance_to_background");
}

template <class Out = float, HostTensorLike X>
Tensor<Out, rank_of<X>> distance_to_background(const X& mask,
                                               const AxisSpacing<rank_of<X>>& spacing = unit_spacing<rank_of<X>>(),
                                               const EdtOptions& options = {}) {
  auto v = const_view_of(mask);
  auto out = Tensor<Out, rank_of<X>>::uninitialized(v.shape());
  EdtWorkspace ws;
  distance_to_background_into<Out, rank_of<X>>(out.view(), v, spacing, ws, options);
  return out;
}

/// Same, with the image's spacing (mm); the result carries the mask's geometry.
template <class Out = float, class M, std::size_t Dim>
Image<Out, Dim> distance_to_background(const Image<M, Dim>& mask, const EdtOptions& options = {}) {
  Image<Out, Dim> out = image_like<Out>(mask);
  EdtWorkspace ws;
  distance_to_background_into<Out, Dim>(out.view(), mask.view(), spacing_per_tensor_axis(mask), ws, options);
  return out;
}

// ---- distance to the nearest foreground voxel (edt of the inverted mask) --------------------

/// out[i] = distance from voxel i to the nearest foreground (nonzero) voxel; 0 on foreground;
/// +inf everywhere when there is no foreground (the outside of the image never counts as
/// foreground, so there is no options argument).
template <class Out, std::size_t Rank, HostTensorLike X>
  requires(rank_of<X> == Rank)
void distance_to_foreground_into(TensorView<Out, Rank> out, const X& mask, const AxisSpacing<Rank>& spacing,
                                 EdtWorkspace& ws) {
  detail::edt_into<Out, element_of<X>, Rank>(out, const_view_of(mask), true, spacing, EdtOptions{}, ws,
                                             "distance_to_foreground");
}

template <class Out = float, HostTensorLike X>
Tensor<Out, rank_of<X>> distance_to_foreground(const X& mask,
                                               const AxisSpacing<rank_of<X>>& spacing = unit_spacing<rank_of<X>>()) {
  auto v = const_view_of(mask);
  auto out = Tensor<Out, rank_of<X>>::uninitialized(v.shape());
  EdtWorkspace ws;
  distance_to_foreground_into<Out, rank_of<X>>(out.view(), v, spacing, ws);
  return out;
}

template <class Out = float, class M, std::size_t Dim>
Image<Out, Dim> distance_to_foreground(const Image<M, Dim>& mask) {
  Image<Out, Dim> out = image_like<Out>(mask);
  EdtWorkspace ws;
  distance_to_foreground_into<Out, Dim>(out.view(), mask.view(), spacing_per_tensor_axis(mask), ws);
  return out;
}

}  // namespace rlmed::imaging
