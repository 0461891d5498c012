// rlmed/imaging/warp.hpp — the spatial transformer: warping images by dense displacement
// fields (forward and backward), composing and integrating fields, fields of affine and rigid
// transforms, Jacobian determinants, folding and the smoothness penalty of registration.
//
// Design decisions:
//  * Fields follow VoxelMorph: [Dim, *spatial] (batched [N, Dim, *spatial]) in voxel units, channel
//    c = displacement along tensor axis c (2D: dy, dx; 3D: dz, dy, dx). Output voxel p samples the
//    moving image at q = p + u(p) in tensor-axis coordinates, so a zero field copies the image. The
//    field grid is the moving image's grid: spatial shapes must match (resampling between
//    geometries is the sampling module's job).
//  * Sampling is PyTorch's grid_sample with align_corners=True, exactly, because learned
//    registration is trained against it:
//      Interp::linear   corners floor(q) and floor(q)+1 on each axis, weights 1-f and f.
//      Interp::nearest  index nearbyint(q): round half to even (grid_sample's rule), any T.
//      Padding::zeros   a corner outside the grid reads 0, so the image fades to 0 across the
//                       voxel-wide band just beyond its edge (this is scipy's mode='grid-constant';
//                       scipy's mode='constant' instead returns 0 anywhere outside [0, n-1]).
//      Padding::border  q is first clamped to [0, n-1]: edge values extend forever (scipy's
//                       mode='nearest').
//  * Gradients use the floor-based cell, one-sided at integer coordinates like grid_sample. The
//    field gradient is 0 where border padding clamps (q <= 0 or q >= n-1: the clamped point does not
//    move) and for nearest (piecewise constant).
//  * Backward is deterministic without atomics. The field gradient is a gather at each output
//    voxel. The image gradient is a scatter partitioned by destination: each task owns a slab of
//    planes along the slowest spatial axis of the moving image and visits, in ascending order, the
//    output planes whose stencils reach its slab (a cheap pre-pass records that range per output
//    plane). Every destination voxel therefore sums its contributions in ascending output-voxel
//    order whatever the partition: results are bit-identical for any thread count.
//  * A corner outside the grid gets weight 0 and an index moved onto its in-grid neighbour, so the
//    inner loops are branch-free; a stencil entirely outside the grid writes 0 directly.
//  * NaN in a field throws rlmed::Error from inside the kernel (no extra pass over the data); the
//    output is then unspecified. ±inf is a point far outside the image.
//  * compose_displacements samples the earlier field with border padding: a displacement field
//    is smooth and does not drop to zero beyond the grid, and zero padding would pull points that
//    leave the grid back towards the identity. With border padding composing two translations is
//    exact everywhere.
//  * Functions of fields alone cannot tell a batch of 2D fields [N, 2, H, W] from one 3D field
//    [3, D, H, W]; rank 3 means one 2D field, rank 5 a batch of 3D fields, and a rank-4 field needs
//    the spatial dimension spelled out: jacobian_determinant<3>(u) or jacobian_determinant<2>(u).
//  * Voxel-unit affine maps use index vectors in physical order (x, y, z), like every geometric
//    vector in rlmed; only the field channels are in tensor order.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/image.hpp"

namespace rlmed::imaging {

enum class Interp { linear, nearest };
enum class Padding { zeros, border };
/// Whether a backward pass overwrites its gradient outputs or adds to them.
enum class GradWrite { overwrite, accumulate };

/// Scratch of warp_backward, reused across calls (sized on the first one).
struct WarpWorkspace {
  std::vector<index_t> plane_reach;  // [N, planes, 2]: first and last moving plane each output plane reaches
};

namespace warp_detail {

/// A host Tensor or TensorView (const or not).
template <class X>
concept HostTensor = requires(const X& x) {
  typename X::value_type;
  typename X::device_type;
  { X::rank } -> std::convertible_to<std::size_t>;
  x.data();
  x.shape();
} && std::is_same_v<typename X::device_type, cpu>;

template <HostTensor X>
TensorView<const typename X::value_type, X::rank> cview(const X& x) noexcept {
  return {x.data(), x.shape()};
}

/// The same memory with `Lead` leading axes of extent 1.
template <std::size_t Lead, class T, std::size_t R>
TensorView<T, R + Lead> with_leading_ones(TensorView<T, R> v) noexcept {
  Shape<R + Lead> s{};
  for (std::size_t i = 0; i < Lead; ++i) s[i] = 1;
  for (std::size_t i = 0; i < R; ++i) s[Lead + i] = v.extent(i);
  return {v.data(), s};
}

template <class A, std::size_t RA, class B, std::size_t RB>
bool overlaps(TensorView<A, RA> a, TensorView<B, RB> b) noexcept {
  if (a.empty() || b.empty()) return false;
  const auto pa = reinterpret_cast<std::uintptr_t>(a.data()), pb = reinterpret_cast<std::uintptr_t>(b.data());
  return pa < pb + b.bytes() && pb < pa + a.bytes();
}

/// The spatial dimension of a field-only function's argument of rank `Rank` (see the header).
template <std::size_t Dim, std::size_t Rank>
constexpr std::size_t field_dims() {
  if constexpr (Dim != 0) {
    static_assert(Dim == 2 || Dim == 3, "fields are 2D or 3D");
    static_assert(Rank == Dim + 1 || Rank == Dim + 2, "a field is [Dim, *spatial] or a batch [N, Dim, *spatial]");
    return Dim;
  } else {
    static_assert(Rank != 4,
                  "a rank-4 field is one 3D field [3, D, H, W] or a batch of 2D fields [N, 2, H, W]: "
                  "name the spatial dimension, e.g. jacobian_determinant<3>(u)");
    static_assert(Rank == 3 || Rank == 5, "a field is [2, H, W], [N, 2, H, W], [3, D, H, W] or [N, 3, D, H, W]");
    return Rank == 3 ? 2 : 3;
  }
}

/// A field argument as a batch view [N, Dim, *spatial].
template <std::size_t Dim, class T, std::size_t R>
TensorView<T, Dim + 2> as_field_batch(TensorView<T, R> v) noexcept {
  if constexpr (R == Dim + 2) return v;
  else return with_leading_ones<1>(v);
}

/// Extents of a batch shape [N, C, *spatial] seen as rows along the fastest axis.
template <std::size_t Dim>
struct Grid {
  std::array<index_t, Dim> n{};  // spatial extents, tensor-axis order
  index_t voxels = 1;            // voxels of one channel
  index_t width = 1;             // voxels of one row (fastest axis)
  index_t rows = 0;              // rows of one channel
  index_t plane = 0;             // voxels of one plane along the slowest axis

  explicit Grid(const Shape<Dim + 2>& batch_shape) {
    for (std::size_t a = 0; a < Dim; ++a) {
      n[a] = batch_shape[2 + a];
      voxels *= n[a];
    }
    width = n[Dim - 1];
    rows = width > 0 ? voxels / width : 0;
    plane = n[0] > 0 ? voxels / n[0] : 0;
  }
};

/// Grain for parallel_for over `items` rows: small jobs run serially (threads cost more).
inline index_t row_grain(index_t total_work, index_t items) noexcept {
  constexpr index_t kParallelWork = 1 << 15;
  return total_work < kParallelWork ? items + 1 : 1;
}

[[noreturn, gnu::cold, gnu::noinline]] inline void throw_nan_displacement(std::size_t channel) {
  RLMED_THROW("the displacement field holds NaN in channel ", channel,
              "; displacements must be numbers (+-inf means a point outside the image)");
}

/// The two linear-interpolation corners of one axis. Corners outside the grid carry weight 0 and
/// the index of their in-grid neighbour, so they can be read and written without branches.
template <class F>
struct LinearTap {
  index_t i0 = 0, i1 = 0;  // corner indices (inside the grid)
  F w0 = 0, w1 = 0;        // interpolation weights
  F d0 = 0, d1 = 0;        // d(weight)/dq: -1/+1, 0 for an outside corner or where border padding clamps
};

/// Stencil of coordinate q on an axis of n voxels; false when it lies wholly outside (zeros padding).
template <Padding P, class F>
RLMED_FORCE_INLINE bool linear_tap(F q, index_t n, std::size_t channel, LinearTap<F>& t) {
  F slope = F(1);
  if constexpr (P == Padding::border) {
    const F last = F(n - 1);
    if (!(q > F(0))) {
      if (q != q) throw_nan_displacement(channel);
      q = F(0);
      slope = F(0);
    } else if (q >= last) {
      q = last;
      slope = F(0);
    }
  } else {
    if (!(q >= F(-1) && q < F(n))) {
      if (q != q) throw_nan_displacement(channel);
      return false;
    }
  }
  const F lower = std::floor(q);
  const index_t i = static_cast<index_t>(lower);
  const F frac = q - lower;
  const bool in0 = i >= 0, in1 = i + 1 < n;
  t.i0 = in0 ? i : i + 1;
  t.i1 = in1 ? i + 1 : i;
  t.w0 = in0 ? F(1) - frac : F(0);
  t.w1 = in1 ? frac : F(0);
  t.d0 = in0 ? -slope : F(0);
  t.d1 = in1 ? slope : F(0);
  return true;
}

/// Nearest index of coordinate q on an axis of n voxels; false when it is outside (zeros padding).
template <Padding P, class F>
RLMED_FORCE_INLINE bool nearest_tap(F q, index_t n, std::size_t channel, index_t& i) {
  if constexpr (P == Padding::border) {
    if (!(q > F(0))) {
      if (q != q) throw_nan_displacement(channel);
      q = F(0);
    } else if (q > F(n - 1)) {
      q = F(n - 1);
    }
    i = static_cast<index_t>(std::nearbyint(q));
    return true;
  } else {
    if (!(q >= F(-1) && q < F(n))) {
      if (q != q) throw_nan_displacement(channel);
      return false;
    }
    i = static_cast<index_t>(std::nearbyint(q));
    return i >= 0 && i < n;
  }
}

template <class T, class V>
RLMED_FORCE_INLINE void store(T* p, V v, bool accumulate) noexcept {
  if (accumulate) *p += static_cast<T>(v);
  else *p = static_cast<T>(v);
}

// ---------------------------------------------------------------------------------------------
// Forward: one output row (fixed n and slow coordinates, x running) per call.

template <std::size_t Dim, class F>
struct RowCoords {
  std::array<F, Dim - 1> slow{};  // the row's coordinates along the slow axes
  index_t first = 0;              // linear index of the row's first voxel within one channel
};

template <std::size_t Dim, class F>
RowCoords<Dim, F> row_coords(const Grid<Dim>& g, index_t row) noexcept {
  RowCoords<Dim, F> rc;
  if constexpr (Dim == 2) {
    rc.slow[0] = F(row);
  } else {
    rc.slow[0] = F(row / g.n[1]);
    rc.slow[1] = F(row % g.n[1]);
  }
  rc.first = row * g.width;
  return rc;
}

// src: [C, *S] of one item; u: [Dim, *S] of one item; dst: [C, *S] of one item.
template <Padding P, class T, class F>
void forward_row_linear(const Grid<2>& g, index_t row, index_t C, const T* src, const F* u, T* dst) {
  using Acc = std::common_type_t<T, F>;
  const index_t V = g.voxels, W = g.width;
  const auto rc = row_coords<2, F>(g, row);
  const F* uy = u + rc.first;         // [W]
  const F* ux = u + V + rc.first;     // [W]
  T* out = dst + rc.first;            // [C] rows of [W], stride V
  for (index_t x = 0; x < W; ++x) {
    LinearTap<F> ty, tx;
    const bool inside = linear_tap<P>(rc.slow[0] + uy[x], g.n[0], 0, ty) & linear_tap<P>(F(x) + ux[x], W, 1, tx);
    if (!inside) {
      for (index_t c = 0; c < C; ++c) out[c * V + x] = T(0);
      continue;
    }
    const index_t r0 = ty.i0 * W, r1 = ty.i1 * W;
    for (index_t c = 0; c < C; ++c) {
      const T* s = src + c * V;
      const Acc a0 = Acc(tx.w0) * Acc(s[r0 + tx.i0]) + Acc(tx.w1) * Acc(s[r0 + tx.i1]);
      const Acc a1 = Acc(tx.w0) * Acc(s[r1 + tx.i0]) + Acc(tx.w1) * Acc(s[r1 + tx.i1]);
      out[c * V + x] = static_cast<T>(Acc(ty.w0) * a0 + Acc(ty.w1) * a1);
    }
  }
}

template <Padding P, class T, class F>
void forward_row_linear(const Grid<3>& g, index_t row, index_t C, const T* src, const F* u, T* dst) {
  using Acc = std::common_type_t<T, F>;
  const index_t V = g.voxels, W = g.width, H = g.n[1];
  const auto rc = row_coords<3, F>(g, row);
  const F* uz = u + rc.first;          // [W]
  const F* uy = u + V + rc.first;      // [W]
  const F* ux = u + 2 * V + rc.first;  // [W]
  T* out = dst + rc.first;
  for (index_t x = 0; x < W; ++x) {
    LinearTap<F> tz, ty, tx;
    const bool inside = linear_tap<P>(rc.slow[0] + uz[x], g.n[0], 0, tz) &
                        linear_tap<P>(rc.slow[1] + uy[x], H, 1, ty) & linear_tap<P>(F(x) + ux[x], W, 2, tx);
    if (!inside) {
      for (index_t c = 0; c < C; ++c) out[c * V + x] = T(0);
      continue;
    }
    const index_t r00 = (tz.i0 * H + ty.i0) * W, r01 = (tz.i0 * H + ty.i1) * W;
    const index_t r10 = (tz.i1 * H + ty.i0) * W, r11 = (tz.i1 * H + ty.i1) * W;
    const Acc w00 = Acc(tz.w0) * Acc(ty.w0), w01 = Acc(tz.w0) * Acc(ty.w1);
    const Acc w10 = Acc(tz.w1) * Acc(ty.w0), w11 = Acc(tz.w1) * Acc(ty.w1);
    const Acc wx0 = tx.w0, wx1 = tx.w1;
    for (index_t c = 0; c < C; ++c) {
      const T* s = src + c * V;
      const Acc a00 = wx0 * Acc(s[r00 + tx.i0]) + wx1 * Acc(s[r00 + tx.i1]);
      const Acc a01 = wx0 * Acc(s[r01 + tx.i0]) + wx1 * Acc(s[r01 + tx.i1]);
      const Acc a10 = wx0 * Acc(s[r10 + tx.i0]) + wx1 * Acc(s[r10 + tx.i1]);
      const Acc a11 = wx0 * Acc(s[r11 + tx.i0]) + wx1 * Acc(s[r11 + tx.i1]);
      out[c * V + x] = static_cast<T>(w00 * a00 + w01 * a01 + w10 * a10 + w11 * a11);
    }
  }
}

/// Nearest taps of every axis at output voxel x of a row; false when outside (zeros padding).
template <std::size_t Dim, Padding P, class F>
RLMED_FORCE_INLINE bool nearest_offset(const Grid<Dim>& g, const RowCoords<Dim, F>& rc, const F* u, index_t x,
                                       index_t& offset, index_t& slow_index) {
  bool inside = true;
  offset = 0;
  for (std::size_t a = 0; a < Dim; ++a) {
    const F p = a + 1 < Dim ? rc.slow[std::min<std::size_t>(a, Dim - 2)] : F(x);
    index_t i = 0;
    inside &= nearest_tap<P>(p + u[index_t(a) * g.voxels + rc.first + x], g.n[a], a, i);
    offset = offset * g.n[a] + i;
    if (a == 0) slow_index = i;
  }
  return inside;
}

template <std::size_t Dim, Padding P, class T, class F>
void forward_row_nearest(const Grid<Dim>& g, index_t row, index_t C, const T* src, const F* u, T* dst) {
  const index_t V = g.voxels, W = g.width;
  const auto rc = row_coords<Dim, F>(g, row);
  T* out = dst + rc.first;
  for (index_t x = 0; x < W; ++x) {
    index_t offset = 0, slow = 0;
    const bool inside = nearest_offset<Dim, P>(g, rc, u, x, offset, slow);
    for (index_t c = 0; c < C; ++c) out[c * V + x] = inside ? src[c * V + offset] : T(0);
  }
}

template <std::size_t Dim, Interp I, Padding P, class T, class F>
void forward_kernel(TensorView<T, Dim + 2> out, TensorView<const T, Dim + 2> image, TensorView<const F, Dim + 2> field) {
  const Grid<Dim> g(image.shape());
  const index_t N = image.extent(0), C = image.extent(1), V = g.voxels;
  const index_t rows = N * g.rows;
  if (rows == 0) return;
  parallel_for(0, rows, [&](index_t r) {
    const index_t n = r / g.rows, row = r % g.rows;
    const T* src = image.data() + n * C * V;               // [C, *S]
    const F* u = field.data() + n * index_t(Dim) * V;      // [Dim, *S]
    T* dst = out.data() + n * C * V;                       // [C, *S]
    if constexpr (I == Interp::linear) forward_row_linear<P>(g, row, C, src, u, dst);
    else forward_row_nearest<Dim, P>(g, row, C, src, u, dst);
  }, row_grain(N * (C + index_t(Dim)) * V, rows));
}

// ---------------------------------------------------------------------------------------------
// Backward: the same rows. A row call writes the field gradient of its voxels when `owner` and
// scatters image gradients into moving planes [slab_begin, slab_end) when `reaches`.

template <class T, class F>
struct BackwardItem {
  const T* image = nullptr;     // [C, *S]
  const T* grad_out = nullptr;  // [C, *S]
  const F* field = nullptr;     // [Dim, *S]
  T* grad_image = nullptr;      // [C, *S] (null: not wanted)
  F* grad_field = nullptr;      // [Dim, *S] (null: not wanted)
  index_t channels = 0;
  bool accumulate = false;
};

struct RowTask {
  index_t slab_begin, slab_end;  // moving planes this task may write
  bool owner;                    // writes the field gradient of this row
  bool reaches;                  // some stencil of this row's plane touches the slab
};

template <Padding P, bool WantImage, bool WantField, class T, class F>
void backward_row_linear(const Grid<2>& g, index_t row, const BackwardItem<T, F>& it, const RowTask& task) {
  using Acc = std::common_type_t<T, F>;
  const index_t V = g.voxels, W = g.width, C = it.channels;
  const auto rc = row_coords<2, F>(g, row);
  const F* uy = it.field + rc.first;
  const F* ux = it.field + V + rc.first;
  const T* go = it.grad_out + rc.first;  // [C] rows of [W], stride V
  for (index_t x = 0; x < W; ++x) {
    LinearTap<F> ty, tx;
    const bool inside = linear_tap<P>(rc.slow[0] + uy[x], g.n[0], 0, ty) & linear_tap<P>(F(x) + ux[x], W, 1, tx);
    const index_t r0 = ty.i0 * W, r1 = ty.i1 * W;
    if constexpr (WantField) {
      if (task.owner) {
        Acc gy = 0, gx = 0;
        if (inside) {
          for (index_t c = 0; c < C; ++c) {
            const T* s = it.image + c * V;
            const Acc g_out = go[c * V + x];
            const Acc v00 = s[r0 + tx.i0], v01 = s[r0 + tx.i1], v10 = s[r1 + tx.i0], v11 = s[r1 + tx.i1];
            const Acc a0 = Acc(tx.w0) * v00 + Acc(tx.w1) * v01, a1 = Acc(tx.w0) * v10 + Acc(tx.w1) * v11;
            const Acc b0 = Acc(tx.d0) * v00 + Acc(tx.d1) * v01, b1 = Acc(tx.d0) * v10 + Acc(tx.d1) * v11;
            gy += g_out * (Acc(ty.d0) * a0 + Acc(ty.d1) * a1);
            gx += g_out * (Acc(ty.w0) * b0 + Acc(ty.w1) * b1);
          }
        }
        store(it.grad_field + rc.first + x, gy, it.accumulate);
        store(it.grad_field + V + rc.first + x, gx, it.accumulate);
      }
    }
    if constexpr (WantImage) {
      if (task.reaches && inside) {
        const bool y0_in = ty.i0 >= task.slab_begin && ty.i0 < task.slab_end;
        const bool y1_in = ty.i1 >= task.slab_begin && ty.i1 < task.slab_end;
        for (index_t c = 0; c < C; ++c) {
          T* gi = it.grad_image + c * V;
          const Acc g_out = go[c * V + x];
          if (y0_in) {
            const Acc gw = g_out * Acc(ty.w0);
            gi[r0 + tx.i0] += static_cast<T>(gw * Acc(tx.w0));
            gi[r0 + tx.i1] += static_cast<T>(gw * Acc(tx.w1));
          }
          if (y1_in) {
            const Acc gw = g_out * Acc(ty.w1);
            gi[r1 + tx.i0] += static_cast<T>(gw * Acc(tx.w0));
            gi[r1 + tx.i1] += static_cast<T>(gw * Acc(tx.w1));
          }
        }
      }
    }
  }
}

template <Padding P, bool WantImage, bool WantField, class T, class F>
void backward_row_linear(const Grid<3>& g, index_t row, const BackwardItem<T, F>& it, const RowTask& task) {
  using Acc = std::common_type_t<T, F>;
  const index_t V = g.voxels, W = g.width, H = g.n[1], C = it.channels;
  const auto rc = row_coords<3, F>(g, row);
  const F* uz = it.field + rc.first;
  const F* uy = it.field + V + rc.first;
  const F* ux = it.field + 2 * V + rc.first;
  const T* go = it.grad_out + rc.first;
  for (index_t x = 0; x < W; ++x) {
    LinearTap<F> tz, ty, tx;
    const bool inside = linear_tap<P>(rc.slow[0] + uz[x], g.n[0], 0, tz) &
                        linear_tap<P>(rc.slow[1] + uy[x], H, 1, ty) & linear_tap<P>(F(x) + ux[x], W, 2, tx);
    const index_t r00 = (tz.i0 * H + ty.i0) * W, r01 = (tz.i0 * H + ty.i1) * W;
    const index_t r10 = (tz.i1 * H + ty.i0) * W, r11 = (tz.i1 * H + ty.i1) * W;
    const Acc wx0 = tx.w0, wx1 = tx.w1;
    if constexpr (WantField) {
      if (task.owner) {
        Acc gz = 0, gy = 0, gx = 0;
        if (inside) {
          const Acc dx0 = tx.d0, dx1 = tx.d1;
          for (index_t c = 0; c < C; ++c) {
            const T* s = it.image + c * V;
            const Acc g_out = go[c * V + x];
            const Acc v000 = s[r00 + tx.i0], v001 = s[r00 + tx.i1], v010 = s[r01 + tx.i0], v011 = s[r01 + tx.i1];
            const Acc v100 = s[r10 + tx.i0], v101 = s[r10 + tx.i1], v110 = s[r11 + tx.i0], v111 = s[r11 + tx.i1];
            // a: interpolated along x; b: differentiated along x (per (z, y) corner row)
            const Acc a00 = wx0 * v000 + wx1 * v001, a01 = wx0 * v010 + wx1 * v011;
            const Acc a10 = wx0 * v100 + wx1 * v101, a11 = wx0 * v110 + wx1 * v111;
            const Acc b00 = dx0 * v000 + dx1 * v001, b01 = dx0 * v010 + dx1 * v011;
            const Acc b10 = dx0 * v100 + dx1 * v101, b11 = dx0 * v110 + dx1 * v111;
            const Acc plane0 = Acc(ty.w0) * a00 + Acc(ty.w1) * a01, plane1 = Acc(ty.w0) * a10 + Acc(ty.w1) * a11;
            gz += g_out * (Acc(tz.d0) * plane0 + Acc(tz.d1) * plane1);
            gy += g_out * (Acc(tz.w0) * (Acc(ty.d0) * a00 + Acc(ty.d1) * a01) +
                           Acc(tz.w1) * (Acc(ty.d0) * a10 + Acc(ty.d1) * a11));
            gx += g_out * (Acc(tz.w0) * (Acc(ty.w0) * b00 + Acc(ty.w1) * b01) +
                           Acc(tz.w1) * (Acc(ty.w0) * b10 + Acc(ty.w1) * b11));
          }
        }
        store(it.grad_field + rc.first + x, gz, it.accumulate);
        store(it.grad_field + V + rc.first + x, gy, it.accumulate);
        store(it.grad_field + 2 * V + rc.first + x, gx, it.accumulate);
      }
    }
    if constexpr (WantImage) {
      if (task.reaches && inside) {
        const bool z0_in = tz.i0 >= task.slab_begin && tz.i0 < task.slab_end;
        const bool z1_in = tz.i1 >= task.slab_begin && tz.i1 < task.slab_end;
        for (index_t c = 0; c < C; ++c) {
          T* gi = it.grad_image + c * V;
          const Acc g_out = go[c * V + x];
          if (z0_in) {
            const Acc g0 = g_out * Acc(tz.w0) * Acc(ty.w0), g1 = g_out * Acc(tz.w0) * Acc(ty.w1);
            gi[r00 + tx.i0] += static_cast<T>(g0 * wx0);
            gi[r00 + tx.i1] += static_cast<T>(g0 * wx1);
            gi[r01 + tx.i0] += static_cast<T>(g1 * wx0);
            gi[r01 + tx.i1] += static_cast<T>(g1 * wx1);
          }
          if (z1_in) {
            const Acc g0 = g_out * Acc(tz.w1) * Acc(ty.w0), g1 = g_out * Acc(tz.w1) * Acc(ty.w1);
            gi[r10 + tx.i0] += static_cast<T>(g0 * wx0);
            gi[r10 + tx.i1] += static_cast<T>(g0 * wx1);
            gi[r11 + tx.i0] += static_cast<T>(g1 * wx0);
            gi[r11 + tx.i1] += static_cast<T>(g1 * wx1);
          }
        }
      }
    }
  }
}

template <std::size_t Dim, Padding P, bool WantImage, bool WantField, class T, class F>
void backward_row_nearest(const Grid<Dim>& g, index_t row, const BackwardItem<T, F>& it, const RowTask& task) {
  const index_t V = g.voxels, W = g.width, C = it.channels;
  const auto rc = row_coords<Dim, F>(g, row);
  for (index_t x = 0; x < W; ++x) {
    index_t offset = 0, slow = 0;
    const bool inside = nearest_offset<Dim, P>(g, rc, it.field, x, offset, slow);
    if constexpr (WantField) {
      if (task.owner && !it.accumulate)
        for (std::size_t a = 0; a < Dim; ++a) it.grad_field[index_t(a) * V + rc.first + x] = F(0);
    }
    if constexpr (WantImage) {
      if (task.reaches && inside && slow >= task.slab_begin && slow < task.slab_end)
        for (index_t c = 0; c < C; ++c) it.grad_image[c * V + offset] += it.grad_out[c * V + rc.first + x];
    }
  }
}

template <std::size_t Dim, Interp I, Padding P, bool WantImage, bool WantField, class T, class F>
void backward_row(const Grid<Dim>& g, index_t row, const BackwardItem<T, F>& it, const RowTask& task) {
  if constexpr (I == Interp::linear) backward_row_linear<P, WantImage, WantField>(g, row, it, task);
  else backward_row_nearest<Dim, P, WantImage, WantField>(g, row, it, task);
}

template <std::size_t Dim, Interp I, Padding P, bool WantImage, bool WantField, class T, class F>
void backward_kernel(TensorView<T, Dim + 2> grad_image, TensorView<F, Dim + 2> grad_field,
                     TensorView<const T, Dim + 2> grad_out, TensorView<const T, Dim + 2> image,
                     TensorView<const F, Dim + 2> field, bool accumulate, WarpWorkspace& workspace) {
  const Grid<Dim> g(image.shape());
  const index_t N = image.extent(0), C = image.extent(1), V = g.voxels;
  if (N * V == 0) return;
  const auto item = [&](index_t n) {
    BackwardItem<T, F> it;
    it.image = image.data() + n * C * V;
    it.grad_out = grad_out.data() + n * C * V;
    it.field = field.data() + n * index_t(Dim) * V;
    if constexpr (WantImage) it.grad_image = grad_image.data() + n * C * V;
    if constexpr (WantField) it.grad_field = grad_field.data() + n * index_t(Dim) * V;
    it.channels = C;
    it.accumulate = accumulate;
    return it;
  };
  const index_t work = N * (2 * C + index_t(Dim)) * V;
  if constexpr (!WantImage) {
    // Field gradient only: a gather, parallel over rows.
    const RowTask all{0, g.n[0], true, false};
    parallel_for(0, N * g.rows, [&](index_t r) {
      backward_row<Dim, I, P, false, WantField>(g, r % g.rows, item(r / g.rows), all);
    }, row_grain(work, N * g.rows));
  } else {
    const index_t planes = g.n[0], rows_per_plane = g.rows / planes;
    // Pre-pass: the moving planes each output plane's stencils reach, [first, last].
    workspace.plane_reach.resize(static_cast<std::size_t>(2 * N * planes));
    index_t* reach = workspace.plane_reach.data();
    parallel_for(0, N * planes, [&](index_t pi) {
      const index_t n = pi / planes, o = pi % planes;
      const F* uz = field.data() + n * index_t(Dim) * V + o * g.plane;  // channel 0 of plane o
      index_t first = planes, last = -1;
      for (index_t k = 0; k < g.plane; ++k) {
        if constexpr (I == Interp::linear) {
          LinearTap<F> t;
          if (linear_tap<P>(F(o) + uz[k], planes, 0, t)) {
            first = std::min(first, t.i0);
            last = std::max(last, t.i1);
          }
        } else {
          index_t i = 0;
          if (nearest_tap<P>(F(o) + uz[k], planes, 0, i)) {
            first = std::min(first, i);
            last = std::max(last, i);
          }
        }
      }
      reach[2 * pi] = first;
      reach[2 * pi + 1] = last;
    }, row_grain(N * V, N * planes));
    // Slabs of moving planes, one task each; any partition gives the same bits (see the header).
    const index_t slabs = work < (1 << 15) ? 1 : std::max<index_t>(1, std::min<index_t>(planes, max_threads()));
    parallel_for(0, N * slabs, [&](index_t task_index) {
      const index_t n = task_index / slabs, s = task_index % slabs;
      const index_t begin = planes * s / slabs, end = planes * (s + 1) / slabs;
      const BackwardItem<T, F> it = item(n);
      if (!accumulate)
        for (index_t c = 0; c < C; ++c)
          std::fill(it.grad_image + c * V + begin * g.plane, it.grad_image + c * V + end * g.plane, T(0));
      for (index_t o = 0; o < planes; ++o) {
        const index_t first = reach[2 * (n * planes + o)], last = reach[2 * (n * planes + o) + 1];
        const RowTask task{begin, end, WantField && o >= begin && o < end, first < end && last >= begin};
        if (!task.owner && !task.reaches) continue;
        for (index_t r = o * rows_per_plane; r < (o + 1) * rows_per_plane; ++r)
          backward_row<Dim, I, P, true, WantField>(g, r, it, task);
      }
    }, 2);
  }
}

// ---------------------------------------------------------------------------------------------
// Argument checks shared by the public entry points (all before anything is written).

template <std::size_t Dim, class T, class F>
void check_warp_args(const char* what, const Shape<Dim + 2>& image, const Shape<Dim + 2>& field) {
  static_assert(Dim == 2 || Dim == 3, "warps are 2D or 3D");
  static_assert(std::is_floating_point_v<F>, "displacement fields hold float or double");
  bool spatial_ok = true;
  for (std::size_t a = 0; a < Dim; ++a) spatial_ok &= image[2 + a] == field[2 + a];
  RLMED_CHECK(field[0] == image[0] && field[1] == index_t(Dim) && spatial_ok, what, ": expected a field of shape [N=",
              image[0], ", ", Dim, ", *spatial of the image] for an image of shape [N, C, *spatial] = ", image,
              "; found field shape ", field);
}

template <std::size_t Dim, class T, class F>
void dispatch_forward(TensorView<T, Dim + 2> out, TensorView<const T, Dim + 2> image, TensorView<const F, Dim + 2> field,
                      Interp interp, Padding padding) {
  if (interp == Interp::linear) {
    if constexpr (std::is_floating_point_v<T>) {
      if (padding == Padding::zeros) forward_kernel<Dim, Interp::linear, Padding::zeros>(out, image, field);
      else forward_kernel<Dim, Interp::linear, Padding::border>(out, image, field);
    } else {
      RLMED_THROW("warp: linear interpolation needs a float or double image; use Interp::nearest for labels");
    }
  } else {
    if (padding == Padding::zeros) forward_kernel<Dim, Interp::nearest, Padding::zeros>(out, image, field);
    else forward_kernel<Dim, Interp::nearest, Padding::border>(out, image, field);
  }
}

template <std::size_t Dim, Interp I, Padding P, class T, class F>
void dispatch_backward_wants(TensorView<T, Dim + 2> gi, TensorView<F, Dim + 2> gf, TensorView<const T, Dim + 2> go,
                             TensorView<const T, Dim + 2> image, TensorView<const F, Dim + 2> field, bool accumulate,
                             WarpWorkspace& ws) {
  const bool want_image = gi.data() != nullptr, want_field = gf.data() != nullptr;
  if (want_image && want_field) backward_kernel<Dim, I, P, true, true>(gi, gf, go, image, field, accumulate, ws);
  else if (want_image) backward_kernel<Dim, I, P, true, false>(gi, gf, go, image, field, accumulate, ws);
  else if (want_field) backward_kernel<Dim, I, P, false, true>(gi, gf, go, image, field, accumulate, ws);
}

template <std::size_t Dim, class T, class F>
void dispatch_backward(TensorView<T, Dim + 2> gi, TensorView<F, Dim + 2> gf, TensorView<const T, Dim + 2> go,
                       TensorView<const T, Dim + 2> image, TensorView<const F, Dim + 2> field, Interp interp,
                       Padding padding, bool accumulate, WarpWorkspace& ws) {
  if (interp == Interp::linear) {
    if (padding == Padding::zeros)
      dispatch_backward_wants<Dim, Interp::linear, Padding::zeros>(gi, gf, go, image, field, accumulate, ws);
    else
      dispatch_backward_wants<Dim, Interp::linear, Padding::border>(gi, gf, go, image, field, accumulate, ws);
  } else {
    if (padding == Padding::zeros)
      dispatch_backward_wants<Dim, Interp::nearest, Padding::zeros>(gi, gf, go, image, field, accumulate, ws);
    else
      dispatch_backward_wants<Dim, Interp::nearest, Padding::border>(gi, gf, go, image, field, accumulate, ws);
  }
}

/// Image and field ranks of a warp call: batched (equal ranks) or single (field one higher).
template <std::size_t ImageRank, std::size_t FieldRank>
constexpr std::size_t warp_dims() {
  static_assert(FieldRank == ImageRank || FieldRank == ImageRank + 1,
                "warp takes images [N, C, *spatial] with fields [N, Dim, *spatial], or one image [*spatial] "
                "with one field [Dim, *spatial]");
  constexpr std::size_t dims = FieldRank == ImageRank ? ImageRank - 2 : ImageRank;
  static_assert(dims == 2 || dims == 3, "warps are 2D or 3D");
  return dims;
}

template <std::size_t Dim, class T, std::size_t R>
TensorView<T, Dim + 2> as_image_batch(TensorView<T, R> v) noexcept {
  if constexpr (R == Dim + 2) return v;
  else return with_leading_ones<2>(v);
}

}  // namespace warp_detail

using warp_detail::HostTensor;

// =============================================================================================
// Warping

/// Warps `image` by `field` into `out` (same shape as the image; must not overlap the inputs).
///   batched: image [N, C, *spatial], field [N, Dim, *spatial]
///   single:  image [*spatial],       field [Dim, *spatial]
/// out(p) = image(p + field(p)); see the header for interpolation and padding.
template <HostTensor X, HostTensor U>
void warp_forward_into(TensorView<typename X::value_type, X::rank> out, const X& image, const U& field,
                       Interp interp = Interp::linear, Padding padding = Padding::zeros) {
  using T = typename X::value_type;
  using F = typename U::value_type;
  constexpr std::size_t Dim = warp_detail::warp_dims<X::rank, U::rank>();
  const auto img = warp_detail::as_image_batch<Dim>(warp_detail::cview(image));
  const auto fld = warp_detail::as_field_batch<Dim>(warp_detail::cview(field));
  const auto dst = warp_detail::as_image_batch<Dim>(out);
  warp_detail::check_warp_args<Dim, T, F>("warp_forward", img.shape(), fld.shape());
  RLMED_CHECK(out.shape() == image.shape(), "warp_forward: output shape ", out.shape(), " differs from image shape ",
              image.shape());
  RLMED_CHECK(!warp_detail::overlaps(out, img) && !warp_detail::overlaps(out, fld),
              "warp_forward: the output must not overlap the image or the field");
  warp_detail::dispatch_forward<Dim, T, F>(dst, img, fld, interp, padding);
}

/// Warped copy of `image` (shapes as in warp_forward_into).
template <HostTensor X, HostTensor U>
Tensor<typename X::value_type, X::rank> warp_forward(const X& image, const U& field, Interp interp = Interp::linear,
                                                     Padding padding = Padding::zeros) {
  auto out = Tensor<typename X::value_type, X::rank>::uninitialized(image.shape());
  warp_forward_into(out.view(), image, field, interp, padding);
  return out;
}

/// Warped copy of a moving image with the same geometry; field [Dim, *spatial] on its grid.
template <class T, std::size_t Dim, HostTensor U>
Image<T, Dim> warp_forward(const Image<T, Dim>& moving, const U& field, Interp interp = Interp::linear,
                           Padding padding = Padding::zeros) {
  static_assert(U::rank == Dim + 1, "an Image<T, Dim> is warped by one field [Dim, *spatial]");
  Image<T, Dim> out = image_like<T>(moving);
  warp_forward_into(out.voxels.view(), moving.voxels, field, interp, padding);
  return out;
}

/// Gradients of a warp: given dL/d(out), writes dL/d(image) and dL/d(field) (overwrite or
/// accumulate). Pass an empty view ({}) for a gradient that is not wanted. Shapes as in
/// warp_forward_into; the image must be float or double. Deterministic for any thread count.
template <HostTensor G, HostTensor X, HostTensor U>
void warp_backward_into(TensorView<typename X::value_type, X::rank> grad_image,
                        TensorView<typename U::value_type, U::rank> grad_field, const G& grad_out, const X& image,
                        const U& field, Interp interp = Interp::linear, Padding padding = Padding::zeros,
                        GradWrite write = GradWrite::overwrite, WarpWorkspace* workspace = nullptr) {
  using T = typename X::value_type;
  using F = typename U::value_type;
  static_assert(std::is_same_v<typename G::value_type, T> && G::rank == X::rank,
                "warp_backward: grad_out has the image's type and rank");
  static_assert(std::is_floating_point_v<T>, "warp_backward needs a float or double image");
  constexpr std::size_t Dim = warp_detail::warp_dims<X::rank, U::rank>();
  const auto img = warp_detail::as_image_batch<Dim>(warp_detail::cview(image));
  const auto fld = warp_detail::as_field_batch<Dim>(warp_detail::cview(field));
  const auto go = warp_detail::as_image_batch<Dim>(warp_detail::cview(grad_out));
  warp_detail::check_warp_args<Dim, T, F>("warp_backward", img.shape(), fld.shape());
  RLMED_CHECK(grad_out.shape() == image.shape(), "warp_backward: grad_out shape ", grad_out.shape(),
              " differs from the image shape ", image.shape());
  const bool want_image = grad_image.data() != nullptr, want_field = grad_field.data() != nullptr;
  if (want_image) {
    RLMED_CHECK(grad_image.shape() == image.shape(), "warp_backward: grad_image shape ", grad_image.shape(),
                " differs from the image shape ", image.shape());
    RLMED_CHECK(!warp_detail::overlaps(grad_image, img) && !warp_detail::overlaps(grad_image, fld) &&
                    !warp_detail::overlaps(grad_image, go),
                "warp_backward: grad_image must not overlap the inputs");
  }
  if (want_field) {
    RLMED_CHECK(grad_field.shape() == field.shape(), "warp_backward: grad_field shape ", grad_field.shape(),
                " differs from the field shape ", field.shape());
    RLMED_CHECK(!warp_detail::overlaps(grad_field, img) && !warp_detail::overlaps(grad_field, fld) &&
                    !warp_detail::overlaps(grad_field, go) && !warp_detail::overlaps(grad_field, grad_image),
                "warp_backward: grad_field must not overlap the inputs or grad_image");
  }
  WarpWorkspace local;
  TensorView<T, Dim + 2> gi;
  TensorView<F, Dim + 2> gf;
  if (want_image) gi = warp_detail::as_image_batch<Dim>(grad_image);
  if (want_field) gf = warp_detail::as_field_batch<Dim>(grad_field);
  warp_detail::dispatch_backward<Dim, T, F>(gi, gf, go, img, fld, interp, padding, write == GradWrite::accumulate,
                                            workspace ? *workspace : local);
}

template <class T, std::size_t ImageRank, class F, std::size_t FieldRank>
struct WarpGradients {
  Tensor<T, ImageRank> image;  // dL/d(image)
  Tensor<F, FieldRank> field;  // dL/d(field)
};

/// Both gradients of a warp as new tensors.
template <HostTensor G, HostTensor X, HostTensor U>
WarpGradients<typename X::value_type, X::rank, typename U::value_type, U::rank> warp_backward(
    const G& grad_out, const X& image, const U& field, Interp interp = Interp::linear, Padding padding = Padding::zeros) {
  WarpGradients<typename X::value_type, X::rank, typename U::value_type, U::rank> grads{
      Tensor<typename X::value_type, X::rank>::uninitialized(image.shape()),
      Tensor<typename U::value_type, U::rank>::uninitialized(field.shape())};
  warp_backward_into(grads.image.view(), grads.field.view(), grad_out, image, field, interp, padding);
  return grads;
}

// =============================================================================================
// Composition and integration of fields

/// out = a + u_prev ∘ (id + a): first displace by a, then by u_prev, i.e.
/// out(x) = a(x) + u_prev(x + a(x)), u_prev sampled linearly with border padding (see header).
/// Fields [Dim, *spatial] or [N, Dim, *spatial]; out must not overlap a or u_prev.
template <std::size_t Dim = 0, HostTensor A, HostTensor U>
void compose_displacements_into(TensorView<typename A::value_type, A::rank> out, const A& a, const U& u_prev) {
  using F = typename A::value_type;
  static_assert(std::is_same_v<typename U::value_type, F> && U::rank == A::rank,
                "compose_displacements: both fields have the same type and rank");
  constexpr std::size_t D = warp_detail::field_dims<Dim, A::rank>();
  const auto fa = warp_detail::as_field_batch<D>(warp_detail::cview(a));
  const auto fu = warp_detail::as_field_batch<D>(warp_detail::cview(u_prev));
  RLMED_CHECK(a.shape() == u_prev.shape() && fa.extent(1) == index_t(D), "compose_displacements: expected two fields [",
              D, ", *spatial] (or batches of them) of one shape; found ", a.shape(), " and ", u_prev.shape());
  RLMED_CHECK(out.shape() == a.shape(), "compose_displacements: output shape ", out.shape(), " differs from ", a.shape());
  RLMED_CHECK(!warp_detail::overlaps(out, fa) && !warp_detail::overlaps(out, fu),
              "compose_displacements: the output must not overlap the inputs");
  const auto dst = warp_detail::as_field_batch<D>(out);
  warp_detail::forward_kernel<D, Interp::linear, Padding::border>(dst, fu, fa);
  const index_t total = out.size();
  parallel_for_chunks(0, total, index_t(1) << 16, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) out.data()[i] += fa.data()[i];
  });
}

template <std::size_t Dim = 0, HostTensor A, HostTensor U>
Tensor<typename A::value_type, A::rank> compose_displacements(const A& a, const U& u_prev) {
  auto out = Tensor<typename A::value_type, A::rank>::uninitialized(a.shape());
  compose_displacements_into<Dim>(out.view(), a, u_prev);
  return out;
}

/// Gradients of compose_displacements: given dL/d(out), dL/da = dL/d(out) + (warp field gradient)
/// and dL/du_prev = (warp image gradient). Empty views skip a gradient.
template <std::size_t Dim = 0, HostTensor G, HostTensor A, HostTensor U>
void compose_displacements_backward_into(TensorView<typename A::value_type, A::rank> grad_a,
                                         TensorView<typename A::value_type, A::rank> grad_u_prev, const G& grad_out,
                                         const A& a, const U& u_prev, GradWrite write = GradWrite::overwrite,
                                         WarpWorkspace* workspace = nullptr) {
  using F = typename A::value_type;
  static_assert(std::is_same_v<typename U::value_type, F> && U::rank == A::rank &&
                    std::is_same_v<typename G::value_type, F> && G::rank == A::rank,
                "compose_displacements_backward: all fields have the same type and rank");
  constexpr std::size_t D = warp_detail::field_dims<Dim, A::rank>();
  RLMED_CHECK(a.shape() == u_prev.shape() && grad_out.shape() == a.shape(),
              "compose_displacements_backward: expected a, u_prev and grad_out of one shape; found ", a.shape(), ", ",
              u_prev.shape(), " and ", grad_out.shape());
  const auto fa = warp_detail::as_field_batch<D>(warp_detail::cview(a));
  const auto fu = warp_detail::as_field_batch<D>(warp_detail::cview(u_prev));
  const auto go = warp_detail::as_field_batch<D>(warp_detail::cview(grad_out));
  TensorView<F, D + 2> ga, gu;
  if (grad_a.data()) ga = warp_detail::as_field_batch<D>(grad_a);
  if (grad_u_prev.data()) gu = warp_detail::as_field_batch<D>(grad_u_prev);
  // u_prev plays the image (C = D channels), a the field.
  warp_backward_into(gu, ga, go, fu, fa, Interp::linear, Padding::border, write, workspace);
  if (grad_a.data()) {
    parallel_for_chunks(0, grad_a.size(), index_t(1) << 16, [&](index_t b, index_t e) {
      for (index_t i = b; i < e; ++i) grad_a.data()[i] += go.data()[i];
    });
  }
}

/// Scaling and squaring of a stationary velocity field v: u = v / 2^steps, then `steps` times
/// u <- u + u ∘ (id + u). out has v's shape; `scratch` is resized once and reused.
template <std::size_t Dim = 0, HostTensor X>
void integrate_velocity_into(TensorView<typename X::value_type, X::rank> out, const X& velocity, int steps,
                             Tensor<typename X::value_type, X::rank>& scratch) {
  using F = typename X::value_type;
  constexpr std::size_t D = warp_detail::field_dims<Dim, X::rank>();
  RLMED_CHECK(steps >= 0 && steps <= 30, "integrate_velocity: steps must be in [0, 30]; found ", steps);
  RLMED_CHECK(out.shape() == velocity.shape(), "integrate_velocity: output shape ", out.shape(), " differs from ",
              velocity.shape());
  const auto v = warp_detail::cview(velocity);
  RLMED_CHECK(warp_detail::as_field_batch<D>(v).extent(1) == index_t(D), "integrate_velocity: expected a field [", D,
              ", *spatial] (or a batch of them); found shape ", velocity.shape());
  RLMED_CHECK(!warp_detail::overlaps(out, v), "integrate_velocity: the output must not overlap the velocity field");
  const F scale = static_cast<F>(std::ldexp(1.0, -steps));
  for (index_t i = 0; i < v.size(); ++i) out.data()[i] = v.data()[i] * scale;
  scratch.resize(velocity.shape());
  TensorView<F, X::rank> current = out, next = scratch.view();
  for (int s = 0; s < steps; ++s) {
    compose_displacements_into<D>(next, current, current);
    std::swap(current, next);
  }
  if (current.data() != out.data()) copy(out, TensorView<const F, X::rank>(current));
}

template <std::size_t Dim = 0, HostTensor X>
Tensor<typename X::value_type, X::rank> integrate_velocity(const X& velocity, int steps = 7) {
  auto out = Tensor<typename X::value_type, X::rank>::uninitialized(velocity.shape());
  Tensor<typename X::value_type, X::rank> scratch;
  integrate_velocity_into<Dim>(out.view(), velocity, steps, scratch);
  return out;
}

// =============================================================================================
// Affine and rigid transforms as fields

/// y = matrix · (x - center) + center + translation (ITK's matrix-offset form). Vectors in
/// physical axis order (x, y, z); units those of x (mm in world space, voxels in index space).
template <std::size_t Dim>
struct AffineTransform {
  Mat<Dim> matrix = identity_matrix<Dim>();
  Vec<Dim> translation{};
  Vec<Dim> center{};

  [[nodiscard]] Vec<Dim> apply(const Vec<Dim>& x) const noexcept {
    Vec<Dim> d{};
    for (std::size_t a = 0; a < Dim; ++a) d[a] = x[a] - center[a];
    Vec<Dim> y = mat_vec<Dim>(matrix, d);
    for (std::size_t a = 0; a < Dim; ++a) y[a] += center[a] + translation[a];
    return y;
  }
};

/// Rotation by theta (radians) in the x-y plane, from +x towards +y.
inline Mat<2> rotation_matrix_2d(double theta_rad) noexcept {
  const double c = std::cos(theta_rad), s = std::sin(theta_rad);
  return {c, -s, s, c};
}

/// R = Rz(rz) · Ry(ry) · Rx(rx): rotate about x first, then y, then z (fixed axes, right-handed,
/// radians) — the "ZYX" order of ITK's Euler3DTransform with ComputeZYX on.
inline Mat<3> rotation_matrix_3d(double rx_rad, double ry_rad, double rz_rad) noexcept {
  const double cx = std::cos(rx_rad), sx = std::sin(rx_rad), cy = std::cos(ry_rad), sy = std::sin(ry_rad);
  const double cz = std::cos(rz_rad), sz = std::sin(rz_rad);
  const Mat<3> rx{1, 0, 0, 0, cx, -sx, 0, sx, cx};
  const Mat<3> ry{cy, 0, sy, 0, 1, 0, -sy, 0, cy};
  const Mat<3> rz{cz, -sz, 0, sz, cz, 0, 0, 0, 1};
  return mat_mul<3>(rz, mat_mul<3>(ry, rx));
}

/// Rigid 2D transform: rotation theta_rad about `center`, then translation (tx, ty).
inline AffineTransform<2> rigid_2d(double tx, double ty, double theta_rad, const Vec<2>& center = {}) noexcept {
  return {rotation_matrix_2d(theta_rad), {tx, ty}, center};
}

/// Rigid 3D transform: rotation_matrix_3d(rx, ry, rz) about `center`, then translation (tx, ty, tz).
inline AffineTransform<3> rigid_3d(double tx, double ty, double tz, double rx_rad, double ry_rad, double rz_rad,
                                   const Vec<3>& center = {}) noexcept {
  return {rotation_matrix_3d(rx_rad, ry_rad, rz_rad), {tx, ty, tz}, center};
}

/// Writes the field of a voxel-space affine map into out [Dim, *spatial]:
/// u(p) = transform(p) - p with p the voxel index (x, y, z), stored in tensor-axis channels.
template <class F, std::size_t Dim>
void affine_to_displacement_into(TensorView<F, Dim + 1> out, const AffineTransform<Dim>& transform_vox) {
  static_assert(std::is_floating_point_v<F>, "displacement fields hold float or double");
  RLMED_CHECK(out.extent(0) == index_t(Dim), "affine_to_displacement: expected an output [", Dim,
              ", *spatial]; found shape ", out.shape());
  for (double v : transform_vox.matrix)
    RLMED_CHECK(std::isfinite(v), "affine_to_displacement: the matrix must be finite; found ", transform_vox.matrix);
  for (std::size_t a = 0; a < Dim; ++a)
    RLMED_CHECK(std::isfinite(transform_vox.translation[a]) && std::isfinite(transform_vox.center[a]),
                "affine_to_displacement: translation and center must be finite; found ", transform_vox.translation,
                " and ", transform_vox.center);
  Shape<Dim + 2> batch{};
  batch[0] = 1;
  batch[1] = index_t(Dim);
  for (std::size_t a = 0; a < Dim; ++a) batch[2 + a] = out.extent(1 + a);
  const warp_detail::Grid<Dim> g(batch);
  const index_t V = g.voxels;
  parallel_for(0, g.rows, [&](index_t row) {
    Vec<Dim> p{};  // (x, y, z)
    if constexpr (Dim == 2) {
      p[1] = double(row);
    } else {
      p[2] = double(row / g.n[1]);
      p[1] = double(row % g.n[1]);
    }
    for (index_t x = 0; x < g.width; ++x) {
      p[0] = double(x);
      const Vec<Dim> q = transform_vox.apply(p);
      for (std::size_t c = 0; c < Dim; ++c) {
        const std::size_t axis = Dim - 1 - c;  // physical axis of channel c
        out.data()[index_t(c) * V + row * g.width + x] = static_cast<F>(q[axis] - p[axis]);
      }
    }
  }, warp_detail::row_grain(V * index_t(Dim), g.rows));
}

/// Field [Dim, *shape] (shape in tensor order) of the voxel-space map y = matrix·(x - center) + center
/// + translation, with x, y, center and translation voxel indices in (x, y, z) order.
template <class F = float, std::size_t Dim>
Tensor<F, Dim + 1> affine_to_displacement(const Mat<Dim>& matrix, const Vec<Dim>& translation, const Shape<Dim>& shape,
                                          const Vec<Dim>& center) {
  Shape<Dim + 1> s{};
  s[0] = index_t(Dim);
  for (std::size_t a = 0; a < Dim; ++a) s[1 + a] = shape[a];
  Tensor<F, Dim + 1> out = Tensor<F, Dim + 1>::uninitialized(s);
  affine_to_displacement_into<F, Dim>(out.view(), AffineTransform<Dim>{matrix, translation, center});
  return out;
}

/// The voxel-space form of a world-space (mm, LPS) transform on an image's grid: index p maps
/// to the continuous index of transform(world(p)).
template <class T, std::size_t Dim>
AffineTransform<Dim> world_to_voxel_transform(const Image<T, Dim>& image, const AffineTransform<Dim>& world_transform) {
  image.validate_geometry();
  // world(p) = M p + o with M = direction · diag(spacing): index' = M⁻¹ (T(M p + o) - o).
  Mat<Dim> m = image.direction;
  for (std::size_t r = 0; r < Dim; ++r)
    for (std::size_t c = 0; c < Dim; ++c) m[r * Dim + c] *= image.spacing_mm[c];
  const Mat<Dim> m_inv = inverse<Dim>(m);
  AffineTransform<Dim> vox;
  vox.matrix = mat_mul<Dim>(m_inv, mat_mul<Dim>(world_transform.matrix, m));
  const Vec<Dim> image_of_origin = world_transform.apply(image.origin_mm);
  Vec<Dim> shift{};
  for (std::size_t a = 0; a < Dim; ++a) shift[a] = image_of_origin[a] - image.origin_mm[a];
  vox.translation = mat_vec<Dim>(m_inv, shift);
  vox.center = Vec<Dim>{};
  return vox;
}

/// Field [Dim, *image shape] of a world-space transform (mm) on the image's grid: warping an image
/// with this geometry by it resamples it at transform(x) for every voxel centre x, i.e. the
/// transform maps output (fixed) points to moving points, as in ITK's resampling.
template <class F = float, class T, std::size_t Dim>
Tensor<F, Dim + 1> affine_to_displacement(const Image<T, Dim>& image, const AffineTransform<Dim>& world_transform) {
  const AffineTransform<Dim> vox = world_to_voxel_transform(image, world_transform);
  return affine_to_displacement<F, Dim>(vox.matrix, vox.translation, image.shape(), vox.center);
}

// =============================================================================================
// Jacobian determinant and folding

namespace warp_detail {

/// det(I + ∇u) at voxel `offset` (coordinates p, tensor order) of one field u [Dim, *S]:
/// central differences inside, one-sided at the border, 0 along an axis of one voxel (np.gradient).
template <std::size_t Dim, class F>
double jacobian_at(const F* u, const Grid<Dim>& g, const std::array<index_t, Dim>& p, index_t offset) noexcept {
  double jac[Dim][Dim];
  index_t stride = 1;
  for (std::size_t b = Dim; b-- > 0;) {
    index_t lo = offset, hi = offset;
    double scale = 0;
    if (g.n[b] > 1) {
      if (p[b] == 0) {
        hi = offset + stride;
        scale = 1;
      } else if (p[b] == g.n[b] - 1) {
        lo = offset - stride;
        scale = 1;
      } else {
        lo = offset - stride;
        hi = offset + stride;
        scale = 0.5;
      }
    }
    for (std::size_t a = 0; a < Dim; ++a)
      jac[a][b] = (a == b ? 1.0 : 0.0) + scale * (double(u[index_t(a) * g.voxels + hi]) - double(u[index_t(a) * g.voxels + lo]));
    stride *= g.n[b];
  }
  if constexpr (Dim == 2) {
    return jac[0][0] * jac[1][1] - jac[0][1] * jac[1][0];
  } else {
    return jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1]) -
           jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0]) +
           jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0]);
  }
}

/// Calls row_sink(n, first, det_at) for every row of a field batch [N, Dim, *S], rows in parallel:
/// `first` is the row's first voxel within one channel and det_at(x) the determinant at column x.
template <std::size_t Dim, class F, class RowSink>
void for_each_jacobian_row(TensorView<const F, Dim + 2> field, RowSink&& row_sink) {
  const Grid<Dim> g(field.shape());
  const index_t N = field.extent(0);
  if (N * g.voxels == 0) return;
  parallel_for(0, N * g.rows, [&](index_t r) {
    const index_t n = r / g.rows, row = r % g.rows;
    const F* u = field.data() + n * index_t(Dim) * g.voxels;
    std::array<index_t, Dim> p{};
    if constexpr (Dim == 2) {
      p[0] = row;
    } else {
      p[0] = row / g.n[1];
      p[1] = row % g.n[1];
    }
    row_sink(n, row * g.width, [&](index_t x) {
      p[Dim - 1] = x;
      return jacobian_at<Dim, F>(u, g, p, row * g.width + x);
    });
  }, row_grain(N * g.voxels * index_t(Dim * Dim), N * g.rows));
}

}  // namespace warp_detail

/// Jacobian determinant of x + u(x) at every voxel: field [Dim, *S] → out [*S], or a batch
/// [N, Dim, *S] → [N, *S]. Central differences inside, one-sided at the border (VoxelMorph's
/// jacobian_determinant, numpy.gradient). Voxel units; equal to the physical-space determinant.
template <std::size_t Dim = 0, HostTensor X>
void jacobian_determinant_into(TensorView<typename X::value_type, X::rank - 1> out, const X& field) {
  using F = typename X::value_type;
  static_assert(std::is_floating_point_v<F>, "displacement fields hold float or double");
  constexpr std::size_t D = warp_detail::field_dims<Dim, X::rank>();
  const auto u = warp_detail::as_field_batch<D>(warp_detail::cview(field));
  Shape<D + 1> expected{};
  expected[0] = u.extent(0);
  for (std::size_t a = 0; a < D; ++a) expected[1 + a] = u.extent(2 + a);
  RLMED_CHECK(u.extent(1) == index_t(D), "jacobian_determinant: expected a field [", D,
              ", *spatial] (or a batch of them); found shape ", field.shape());
  const auto dst = TensorView<F, D + 1>(out.data(), expected);
  bool shape_ok = true;
  for (std::size_t a = 0; a < D; ++a) shape_ok &= out.extent(X::rank - 1 - D + a) == u.extent(2 + a);
  if constexpr (X::rank == D + 2) shape_ok &= out.extent(0) == u.extent(0);
  RLMED_CHECK(shape_ok, "jacobian_determinant: output shape ", out.shape(), " does not match field shape ",
              field.shape(), " without its channel axis");
  RLMED_CHECK(!warp_detail::overlaps(out, u), "jacobian_determinant: the output must not overlap the field");
  const index_t V = u.size() / std::max<index_t>(1, u.extent(0) * index_t(D));
  warp_detail::for_each_jacobian_row<D, F>(u, [&](index_t n, index_t first, auto&& det_at) {
    const index_t W = u.extent(D + 1);
    F* row = dst.data() + n * V + first;
    for (index_t x = 0; x < W; ++x) row[x] = static_cast<F>(det_at(x));
  });
}

/// Jacobian determinants as a new tensor: [Dim, *S] → [*S], [N, Dim, *S] → [N, *S].
template <std::size_t Dim = 0, HostTensor X>
Tensor<typename X::value_type, X::rank - 1> jacobian_determinant(const X& field) {
  constexpr std::size_t D = warp_detail::field_dims<Dim, X::rank>();
  constexpr std::size_t channel_axis = X::rank == D + 1 ? 0 : 1;
  Shape<X::rank - 1> s{};
  for (std::size_t a = 0, k = 0; a < X::rank; ++a)
    if (a != channel_axis) s[k++] = field.extent(a);
  auto out = Tensor<typename X::value_type, X::rank - 1>::uninitialized(s);
  jacobian_determinant_into<D>(out.view(), field);
  return out;
}

/// Share of voxels (over the whole batch) whose Jacobian determinant is <= 0: where the map
/// folds or collapses. rlmed::Error for an empty or non-finite field.
template <std::size_t Dim = 0, HostTensor X>
double folding_fraction(const X& field) {
  using F = typename X::value_type;
  static_assert(std::is_floating_point_v<F>, "displacement fields hold float or double");
  constexpr std::size_t D = warp_detail::field_dims<Dim, X::rank>();
  const auto u = warp_detail::as_field_batch<D>(warp_detail::cview(field));
  RLMED_CHECK(u.extent(1) == index_t(D), "folding_fraction: expected a field [", D,
              ", *spatial] (or a batch of them); found shape ", field.shape());
  const index_t voxels = u.size() / index_t(D);
  RLMED_CHECK(voxels > 0, "folding_fraction: the field ", field.shape(), " has no voxels");
  std::atomic<index_t> folded{0};
  std::atomic<bool> non_finite{false};
  warp_detail::for_each_jacobian_row<D, F>(u, [&](index_t, index_t, auto&& det_at) {
    index_t count = 0;
    bool bad = false;
    for (index_t x = 0; x < u.extent(D + 1); ++x) {
      const double det = det_at(x);
      bad |= !std::isfinite(det);
      count += det <= 0.0 ? 1 : 0;
    }
    folded.fetch_add(count, std::memory_order_relaxed);  // integer sum: order-independent
    if (bad) non_finite.store(true, std::memory_order_relaxed);
  });
  RLMED_CHECK(!non_finite.load(), "folding_fraction: the field holds NaN or inf, so its Jacobian is undefined");
  return double(folded.load()) / double(voxels);
}

namespace warp_detail {

/// λ/Dim · Σ_a mean((u[p + e_a] - u[p])²) over a field batch [N, Dim, *S] and, when grad is not
/// null, its gradient. Sums per fixed chunk of rows, combined in chunk order: deterministic.
template <std::size_t Dim, class F>
double smoothness_kernel(TensorView<const F, Dim + 2> u, F* grad, double lambda, bool accumulate) {
  const Grid<Dim> g(u.shape());
  const index_t channels = u.extent(0) * index_t(Dim), V = g.voxels, W = g.width;
  const index_t rows = channels * g.rows;
  if (rows == 0) return 0.0;
  std::array<index_t, Dim> stride{};
  std::array<double, Dim> coef{};  // λ / (Dim · number of differences along the axis)
  index_t s = 1;
  for (std::size_t a = Dim; a-- > 0;) {
    stride[a] = s;
    s *= g.n[a];
    const index_t count = channels * (g.n[a] - 1) * (V / g.n[a]);
    coef[a] = count > 0 ? lambda / (double(Dim) * double(count)) : 0.0;
  }
  constexpr index_t kChunks = 64;
  std::array<std::array<double, Dim>, kChunks> partial{};
  parallel_for(0, kChunks, [&](index_t k) {
    std::array<double, Dim> sum{};
    for (index_t r = rows * k / kChunks; r < rows * (k + 1) / kChunks; ++r) {
      const index_t ch = r / g.rows, row = r % g.rows;
      const F* base = u.data() + ch * V;
      std::array<index_t, Dim> p{};
      if constexpr (Dim == 2) {
        p[0] = row;
      } else {
        p[0] = row / g.n[1];
        p[1] = row % g.n[1];
      }
      for (index_t x = 0; x < W; ++x) {
        p[Dim - 1] = x;
        const index_t off = row * W + x;
        const double v = base[off];
        double dv = 0;
        for (std::size_t a = 0; a < Dim; ++a) {
          if (p[a] + 1 < g.n[a]) {
            const double d = double(base[off + stride[a]]) - v;
            sum[a] += d * d;
            dv -= 2.0 * coef[a] * d;
          }
          if (p[a] > 0) dv += 2.0 * coef[a] * (v - double(base[off - stride[a]]));
        }
        if (grad) store(grad + ch * V + off, dv, accumulate);
      }
    }
    partial[static_cast<std::size_t>(k)] = sum;
  }, row_grain(channels * V * index_t(Dim), kChunks));
  double value = 0;
  for (std::size_t a = 0; a < Dim; ++a) {
    double total = 0;
    for (const auto& chunk : partial) total += chunk[a];
    value += coef[a] * total;
  }
  return value;
}

}  // namespace warp_detail

/// Smoothness penalty of a field [Dim, *S] or batch [N, Dim, *S] (VoxelMorph's Grad('l2')):
///   L = λ / Dim · Σ_axes a mean over (n, c, p) of (u_c[p + e_a] - u_c[p])²
/// (forward differences along each spatial axis; an axis of one voxel contributes 0). Writes
/// dL/du into grad (overwrite or accumulate) and returns L.
template <std::size_t Dim = 0, HostTensor X>
double spatial_gradient_l2(const X& field, TensorView<typename X::value_type, X::rank> grad, double lambda = 1.0,
                           GradWrite write = GradWrite::overwrite) {
  using F = typename X::value_type;
  static_assert(std::is_floating_point_v<F>, "displacement fields hold float or double");
  constexpr std::size_t D = warp_detail::field_dims<Dim, X::rank>();
  const auto u = warp_detail::as_field_batch<D>(warp_detail::cview(field));
  RLMED_CHECK(u.extent(1) == index_t(D), "spatial_gradient_l2: expected a field [", D,
              ", *spatial] (or a batch of them); found shape ", field.shape());
  RLMED_CHECK(std::isfinite(lambda), "spatial_gradient_l2: lambda must be finite; found ", lambda);
  if (grad.data() != nullptr) {
    RLMED_CHECK(grad.shape() == field.shape(), "spatial_gradient_l2: gradient shape ", grad.shape(),
                " differs from field shape ", field.shape());
    RLMED_CHECK(!warp_detail::overlaps(grad, u), "spatial_gradient_l2: the gradient must not overlap the field");
  }
  const double value = warp_detail::smoothness_kernel<D, F>(u, grad.data(), lambda, write == GradWrite::accumulate);
  RLMED_CHECK(std::isfinite(value), "spatial_gradient_l2: the penalty is not finite (", value,
              "); the field holds NaN or inf");
  return value;
}

/// The smoothness penalty's value alone.
template <std::size_t Dim = 0, HostTensor X>
double spatial_gradient_l2(const X& field, double lambda = 1.0) {
  return spatial_gradient_l2<Dim>(field, TensorView<typename X::value_type, X::rank>{}, lambda);
}

}  // namespace rlmed::imaging
