// rlmed/cuda/warp.cuh — the spatial transformer on the GPU: warp forward (linear / nearest,
// zeros / border padding) and its deterministic backward w.r.t. image and field.
//
// Design decisions:
//  * Semantics are those of rlmed/imaging/warp.hpp (grid_sample, align_corners=True; fields
//    [N, Dim, *S] in voxels, channel c = displacement along tensor axis c), the CPU reference the
//    tests compare against. One thread per output voxel (all channels), 64-bit indices.
//  * Backward without floating-point atomics:
//      - the field gradient is a gather at each output voxel (as on the CPU);
//      - the image gradient is an adjoint scatter turned into a gather by bucketing: each output
//        voxel o gets the key of its stencil's base cell (floor(q) per axis, shifted by one so
//        −1 is a valid cell; nearest: its nearest voxel; outside the grid: a sentinel). A stable
//        LSD radix sort (cub::DeviceRadixSort, deterministic) of (key, o) pairs lists, for every
//        cell, its output voxels in ascending order; a binary search per cell gives the segment
//        offsets. Each moving voxel t then gathers from the 2^Dim cells whose stencils contain
//        it (base t − bits), in a fixed order, and within a cell in ascending o, recomputing the
//        interpolation weight from the field. Every sum has a fixed order: bit-identical run to
//        run, any displacement (no bound on |u| is assumed).
//  * Keys and voxel ids are 32-bit (the sort is ~2× faster): N·V and N·Π(n_a + 1) must stay
//    below 2^32 − 1 (e.g. 2000 volumes of 128³); larger batches throw rlmed::Error.
//  * NaN displacements cannot throw inside a kernel: they make the stencil "outside" (output 0)
//    and set *nan_flag (if given); throw_if_nan() syncs and throws like the CPU path.
//  * A workspace kept by the caller holds the sort buffers; it only grows.
// Roofline (H100, fp32, C = 1, 3D): forward reads field 12 B + image ~4 B (the 8 taps hit L1/L2
// for smooth fields) and writes 4 B per voxel, ~40 FLOP: ~20 B/voxel, memory-bound (AI ≈ 2).
// Field gradient: 12 + 4 + 4 (grad_out) + 12 (write) B, ~80 FLOP: memory-bound. Image gradient:
// keys pass 12 B read + 8 B write, sort ~4 passes × 16 B, offsets ~4 B/cell, gather 2^Dim
// segments × (12 B field + 4 B grad_out) mostly cached + 4 B write: ~100 B/voxel, memory-bound.
// CPU reference: warp_forward_into / warp_backward_into in rlmed/imaging/warp.hpp.
#pragma once

#include <cub/device/device_radix_sort.cuh>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "rlmed/core/tensor_cuda.hpp"
#include "rlmed/cuda/flag.cuh"
#include "rlmed/cuda/launch.cuh"
#include "rlmed/imaging/warp.hpp"

namespace rlmed::kernels {

using imaging::GradWrite;
using imaging::Interp;
using imaging::Padding;

/// Scratch of the deterministic warp backward (kept by the caller; grows, never shrinks).
struct WarpDeviceWorkspace {
  DeviceBuffer<std::uint32_t> keys_in, keys_out, ids_in, ids_out, offsets;
  DeviceBuffer<unsigned char> sort_temp;
};

/// Synchronises and throws rlmed::Error if a warp kernel saw a NaN displacement.
inline void throw_if_nan(DeviceFlag& flag, cudaStream_t stream, const char* what) {
  if (flag.test_and_clear(stream))
    RLMED_THROW(what, ": the displacement field holds NaN; displacements must be numbers "
                      "(+-inf means a point outside the image)");
}

namespace warp_gpu {

/// Spatial extents (tensor order, unused axes 1) and batch sizes of one warp call.
struct Dims {
  std::int64_t n[3] = {1, 1, 1};
  std::int64_t voxels = 0;    // voxels of one channel
  std::int64_t batch = 0;     // N
  std::int64_t channels = 0;  // C
};

template <int Dim>
__device__ __forceinline__ void coords_of(const Dims& d, std::int64_t v, std::int64_t (&p)[Dim]) {
  if (d.voxels <= 0xFFFFFFFFll) {  // 32-bit division is several times cheaper than 64-bit
    const std::uint32_t w = static_cast<std::uint32_t>(v);
    if constexpr (Dim == 2) {
      const std::uint32_t W = static_cast<std::uint32_t>(d.n[1]);
      p[1] = w % W;
      p[0] = w / W;
    } else {
      const std::uint32_t W = static_cast<std::uint32_t>(d.n[2]), H = static_cast<std::uint32_t>(d.n[1]);
      const std::uint32_t r = w / W;
      p[2] = w % W;
      p[1] = r % H;
      p[0] = r / H;
    }
    return;
  }
  if constexpr (Dim == 2) {
    p[1] = v % d.n[1];
    p[0] = v / d.n[1];
  } else {
    p[2] = v % d.n[2];
    const std::int64_t r = v / d.n[2];
    p[1] = r % d.n[1];
    p[0] = r / d.n[1];
  }
}

/// One axis of a linear stencil: base = floor(q) in [−1, n−1]; weights and slopes of both corners.
template <class F>
struct Tap {
  std::int64_t base = 0;
  F w0 = 0, w1 = 0, d0 = 0, d1 = 0;
  bool in0 = false, in1 = false;
};

/// linear_tap of warp.hpp; false when the stencil lies wholly outside (zeros) or q is NaN.
template <Padding P, class F>
__device__ __forceinline__ bool linear_tap(F q, std::int64_t n, Tap<F>& t, int* nan_flag) {
  F slope = F(1);
  if (q != q) {
    if (nan_flag) *nan_flag = 1;
    return false;
  }
  if constexpr (P == Padding::border) {
    const F last = F(n - 1);
    if (!(q > F(0))) {
      q = F(0);
      slope = F(0);
    } else if (q >= last) {
      q = last;
      slope = F(0);
    }
  } else {
    if (!(q >= F(-1) && q < F(n))) return false;
  }
  const F lower = floor(q);
  t.base = static_cast<std::int64_t>(lower);
  const F frac = q - lower;
  t.in0 = t.base >= 0;
  t.in1 = t.base + 1 < n;
  t.w0 = t.in0 ? F(1) - frac : F(0);
  t.w1 = t.in1 ? frac : F(0);
  t.d0 = t.in0 ? -slope : F(0);
  t.d1 = t.in1 ? slope : F(0);
  return true;
}

/// nearest_tap of warp.hpp (round half to even); false when outside (zeros) or NaN.
template <Padding P, class F>
__device__ __forceinline__ bool nearest_tap(F q, std::int64_t n, std::int64_t& i, int* nan_flag) {
  if (q != q) {
    if (nan_flag) *nan_flag = 1;
    return false;
  }
  if constexpr (P == Padding::border) {
    if (!(q > F(0))) q = F(0);
    else if (q > F(n - 1)) q = F(n - 1);
    i = static_cast<std::int64_t>(rint(q));
    return true;
  } else {
    if (!(q >= F(-1) && q < F(n))) return false;
    i = static_cast<std::int64_t>(rint(q));
    return i >= 0 && i < n;
  }
}

/// Linear stencil at output voxel v of item n: taps per axis; false when outside.
template <int Dim, Padding P, class F>
__device__ __forceinline__ bool linear_stencil(const Dims& d, const F* field_n, std::int64_t v, Tap<F> (&t)[Dim],
                                               int* nan_flag) {
  std::int64_t p[Dim];
  coords_of<Dim>(d, v, p);
  bool inside = true;
  for (int a = 0; a < Dim; ++a) inside &= linear_tap<P>(F(p[a]) + field_n[a * d.voxels + v], d.n[a], t[a], nan_flag);
  return inside;
}

/// Nearest voxel (tensor order) at output voxel v; false when outside.
template <int Dim, Padding P, class F>
__device__ __forceinline__ bool nearest_stencil(const Dims& d, const F* field_n, std::int64_t v,
                                                std::int64_t (&i)[Dim], int* nan_flag) {
  std::int64_t p[Dim];
  coords_of<Dim>(d, v, p);
  bool inside = true;
  for (int a = 0; a < Dim; ++a) inside &= nearest_tap<P>(F(p[a]) + field_n[a * d.voxels + v], d.n[a], i[a], nan_flag);
  return inside;
}

/// In-grid index of corner `bit` of a tap (an outside corner's index moves onto its neighbour,
/// its weight is 0).
template <class F>
__device__ __forceinline__ std::int64_t corner(const Tap<F>& t, int bit) {
  const std::int64_t i0 = t.in0 ? t.base : t.base + 1, i1 = t.in1 ? t.base + 1 : t.base;
  return bit ? i1 : i0;
}

// ---------------------------------------------------------------------------------------------
// Forward

template <int Dim, Interp I, Padding P, class T, class F>
__global__ void forward_kernel(T* __restrict__ out, const T* __restrict__ image, const F* __restrict__ field, Dims d,
                               int* nan_flag) {
  const std::int64_t gid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (gid >= d.batch * d.voxels) return;
  const std::int64_t n = gid / d.voxels, v = gid % d.voxels, V = d.voxels, C = d.channels;
  const F* u = field + n * Dim * V;
  const T* src = image + n * C * V;
  T* dst = out + n * C * V + v;
  if constexpr (I == Interp::linear) {
    using Acc = std::common_type_t<T, F>;
    Tap<F> t[Dim];
    if (!linear_stencil<Dim, P>(d, u, v, t, nan_flag)) {
      for (std::int64_t c = 0; c < C; ++c) dst[c * V] = T(0);
      return;
    }
    if constexpr (Dim == 2) {
      const std::int64_t W = d.n[1];
      const std::int64_t r0 = corner(t[0], 0) * W, r1 = corner(t[0], 1) * W;
      const std::int64_t x0 = corner(t[1], 0), x1 = corner(t[1], 1);
      for (std::int64_t c = 0; c < C; ++c) {
        const T* s = src + c * V;
        const Acc a0 = Acc(t[1].w0) * Acc(s[r0 + x0]) + Acc(t[1].w1) * Acc(s[r0 + x1]);
        const Acc a1 = Acc(t[1].w0) * Acc(s[r1 + x0]) + Acc(t[1].w1) * Acc(s[r1 + x1]);
        dst[c * V] = static_cast<T>(Acc(t[0].w0) * a0 + Acc(t[0].w1) * a1);
      }
    } else {
      const std::int64_t H = d.n[1], W = d.n[2];
      const std::int64_t z0 = corner(t[0], 0), z1 = corner(t[0], 1), y0 = corner(t[1], 0), y1 = corner(t[1], 1);
      const std::int64_t r00 = (z0 * H + y0) * W, r01 = (z0 * H + y1) * W, r10 = (z1 * H + y0) * W,
                         r11 = (z1 * H + y1) * W;
      const std::int64_t x0 = corner(t[2], 0), x1 = corner(t[2], 1);
      const Acc w00 = Acc(t[0].w0) * Acc(t[1].w0), w01 = Acc(t[0].w0) * Acc(t[1].w1);
      const Acc w10 = Acc(t[0].w1) * Acc(t[1].w0), w11 = Acc(t[0].w1) * Acc(t[1].w1);
      const Acc wx0 = t[2].w0, wx1 = t[2].w1;
      for (std::int64_t c = 0; c < C; ++c) {
        const T* s = src + c * V;
        const Acc a00 = wx0 * Acc(s[r00 + x0]) + wx1 * Acc(s[r00 + x1]);
        const Acc a01 = wx0 * Acc(s[r01 + x0]) + wx1 * Acc(s[r01 + x1]);
        const Acc a10 = wx0 * Acc(s[r10 + x0]) + wx1 * Acc(s[r10 + x1]);
        const Acc a11 = wx0 * Acc(s[r11 + x0]) + wx1 * Acc(s[r11 + x1]);
        dst[c * V] = static_cast<T>(w00 * a00 + w01 * a01 + w10 * a10 + w11 * a11);
      }
    }
  } else {
    std::int64_t i[Dim];
    const bool inside = nearest_stencil<Dim, P>(d, u, v, i, nan_flag);
    std::int64_t offset = 0;
    for (int a = 0; a < Dim; ++a) offset = offset * d.n[a] + (inside ? i[a] : 0);
    for (std::int64_t c = 0; c < C; ++c) dst[c * V] = inside ? src[c * V + offset] : T(0);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward: field gradient (gather per output voxel)

template <int Dim, Interp I, Padding P, class T, class F>
__global__ void field_grad_kernel(F* __restrict__ grad_field, const T* __restrict__ grad_out,
                                  const T* __restrict__ image, const F* __restrict__ field, Dims d, bool accumulate,
                                  int* nan_flag) {
  const std::int64_t gid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (gid >= d.batch * d.voxels) return;
  const std::int64_t n = gid / d.voxels, v = gid % d.voxels, V = d.voxels, C = d.channels;
  F* gf = grad_field + n * Dim * V + v;
  using Acc = std::common_type_t<T, F>;
  Acc g[Dim];
  for (int a = 0; a < Dim; ++a) g[a] = Acc(0);
  if constexpr (I == Interp::linear) {
    Tap<F> t[Dim];
    if (linear_stencil<Dim, P>(d, field + n * Dim * V, v, t, nan_flag)) {
      const T* src = image + n * C * V;
      const T* go = grad_out + n * C * V + v;
      if constexpr (Dim == 2) {
        const std::int64_t W = d.n[1];
        const std::int64_t r0 = corner(t[0], 0) * W, r1 = corner(t[0], 1) * W;
        const std::int64_t x0 = corner(t[1], 0), x1 = corner(t[1], 1);
        for (std::int64_t c = 0; c < C; ++c) {
          const T* s = src + c * V;
          const Acc g_out = go[c * V];
          const Acc v00 = s[r0 + x0], v01 = s[r0 + x1], v10 = s[r1 + x0], v11 = s[r1 + x1];
          const Acc a0 = Acc(t[1].w0) * v00 + Acc(t[1].w1) * v01, a1 = Acc(t[1].w0) * v10 + Acc(t[1].w1) * v11;
          const Acc b0 = Acc(t[1].d0) * v00 + Acc(t[1].d1) * v01, b1 = Acc(t[1].d0) * v10 + Acc(t[1].d1) * v11;
          g[0] += g_out * (Acc(t[0].d0) * a0 + Acc(t[0].d1) * a1);
          g[1] += g_out * (Acc(t[0].w0) * b0 + Acc(t[0].w1) * b1);
        }
      } else {
        const std::int64_t H = d.n[1], W = d.n[2];
        const std::int64_t z0 = corner(t[0], 0), z1 = corner(t[0], 1), y0 = corner(t[1], 0), y1 = corner(t[1], 1);
        const std::int64_t r00 = (z0 * H + y0) * W, r01 = (z0 * H + y1) * W, r10 = (z1 * H + y0) * W,
                           r11 = (z1 * H + y1) * W;
        const std::int64_t x0 = corner(t[2], 0), x1 = corner(t[2], 1);
        const Acc wx0 = t[2].w0, wx1 = t[2].w1, dx0 = t[2].d0, dx1 = t[2].d1;
        for (std::int64_t c = 0; c < C; ++c) {
          const T* s = src + c * V;
          const Acc g_out = go[c * V];
          const Acc v000 = s[r00 + x0], v001 = s[r00 + x1], v010 = s[r01 + x0], v011 = s[r01 + x1];
          const Acc v100 = s[r10 + x0], v101 = s[r10 + x1], v110 = s[r11 + x0], v111 = s[r11 + x1];
          const Acc a00 = wx0 * v000 + wx1 * v001, a01 = wx0 * v010 + wx1 * v011;
          const Acc a10 = wx0 * v100 + wx1 * v101, a11 = wx0 * v110 + wx1 * v111;
          const Acc b00 = dx0 * v000 + dx1 * v001, b01 = dx0 * v010 + dx1 * v011;
          const Acc b10 = dx0 * v100 + dx1 * v101, b11 = dx0 * v110 + dx1 * v111;
          const Acc plane0 = Acc(t[1].w0) * a00 + Acc(t[1].w1) * a01, plane1 = Acc(t[1].w0) * a10 + Acc(t[1].w1) * a11;
          g[0] += g_out * (Acc(t[0].d0) * plane0 + Acc(t[0].d1) * plane1);
          g[1] += g_out * (Acc(t[0].w0) * (Acc(t[1].d0) * a00 + Acc(t[1].d1) * a01) +
                           Acc(t[0].w1) * (Acc(t[1].d0) * a10 + Acc(t[1].d1) * a11));
          g[2] += g_out * (Acc(t[0].w0) * (Acc(t[1].w0) * b00 + Acc(t[1].w1) * b01) +
                           Acc(t[0].w1) * (Acc(t[1].w0) * b10 + Acc(t[1].w1) * b11));
        }
      }
    }
  } else {
    if (nan_flag) {  // only the NaN check: the nearest field gradient is 0
      std::int64_t i[Dim];
      (void)nearest_stencil<Dim, P>(d, field + n * Dim * V, v, i, nan_flag);
    }
  }
  for (int a = 0; a < Dim; ++a) gf[a * V] = accumulate ? static_cast<F>(gf[a * V] + static_cast<F>(g[a])) : static_cast<F>(g[a]);
}

// ---------------------------------------------------------------------------------------------
// Backward: image gradient (bucket by stencil cell, stable sort, gather)

/// Key space: cells (base_a + 1) in [0, n_a] per axis, per item; sentinel = N·Π(n_a + 1).
template <int Dim>
__host__ __device__ __forceinline__ std::int64_t cells_per_item(const Dims& d) {
  std::int64_t k = 1;
  for (int a = 0; a < Dim; ++a) k *= d.n[a] + 1;
  return k;
}

template <int Dim, Interp I, Padding P, class F>
__global__ void cell_keys_kernel(std::uint32_t* __restrict__ keys, std::uint32_t* __restrict__ ids,
                                 const F* __restrict__ field, Dims d, int* nan_flag) {
  const std::int64_t gid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (gid >= d.batch * d.voxels) return;
  const std::int64_t n = gid / d.voxels, v = gid % d.voxels;
  const F* u = field + n * Dim * d.voxels;
  const std::int64_t cells = cells_per_item<Dim>(d);
  std::int64_t key = d.batch * cells;  // sentinel: contributes nowhere
  std::int64_t base[Dim];
  bool inside;
  if constexpr (I == Interp::linear) {
    Tap<F> t[Dim];
    inside = linear_stencil<Dim, P>(d, u, v, t, nan_flag);
    for (int a = 0; a < Dim; ++a) base[a] = t[a].base;
  } else {
    inside = nearest_stencil<Dim, P>(d, u, v, base, nan_flag);
  }
  if (inside) {
    std::int64_t cell = 0;
    for (int a = 0; a < Dim; ++a) cell = cell * (d.n[a] + 1) + (base[a] + 1);
    key = n * cells + cell;
  }
  keys[gid] = static_cast<std::uint32_t>(key);
  ids[gid] = static_cast<std::uint32_t>(gid);
}

/// offsets[k] = first position of key >= k in the sorted keys (k in [0, count]).
template <class Key = std::uint32_t>
__global__ void segment_offsets_kernel(std::uint32_t* __restrict__ offsets, const Key* __restrict__ sorted_keys,
                                       std::int64_t m, std::int64_t count) {
  const std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k > count) return;
  std::int64_t lo = 0, hi = m;
  while (lo < hi) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (static_cast<std::int64_t>(sorted_keys[mid]) < k) lo = mid + 1;
    else hi = mid;
  }
  offsets[k] = static_cast<std::uint32_t>(lo);
}

inline constexpr int kChannelGroup = 4;  ///< channels accumulated per pass of the gather

template <int Dim, Interp I, Padding P, class T, class F>
__global__ void image_grad_gather_kernel(T* __restrict__ grad_image, const T* __restrict__ grad_out,
                                         const F* __restrict__ field, const std::uint32_t* __restrict__ offsets,
                                         const std::uint32_t* __restrict__ sorted_ids, Dims d, bool accumulate) {
  const std::int64_t gid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (gid >= d.batch * d.voxels) return;
  using Acc = std::common_type_t<T, F>;
  const std::int64_t n = gid / d.voxels, t = gid % d.voxels, V = d.voxels, C = d.channels;
  std::int64_t p[Dim];
  coords_of<Dim>(d, t, p);
  const std::int64_t cells = cells_per_item<Dim>(d);
  const F* u = field + n * Dim * V;
  const T* go = grad_out + n * C * V;
  T* gi = grad_image + n * C * V + t;
  constexpr int kCombos = I == Interp::linear ? (1 << Dim) : 1;
  for (std::int64_t c0 = 0; c0 < C; c0 += kChannelGroup) {
    const int group = static_cast<int>(C - c0 < kChannelGroup ? C - c0 : kChannelGroup);
    Acc acc[kChannelGroup];
    for (int j = 0; j < kChannelGroup; ++j) acc[j] = Acc(0);
    // Cells whose stencil holds t: base_a = p_a − bit_a (corner bit_a of that cell is t).
    for (int combo = 0; combo < kCombos; ++combo) {
      std::int64_t cell = 0;
      for (int a = 0; a < Dim; ++a) {
        const int bit = (combo >> (Dim - 1 - a)) & 1;
        cell = cell * (d.n[a] + 1) + (p[a] - bit + 1);
      }
      const std::int64_t key = n * cells + cell;
      const std::uint32_t begin = offsets[key], end = offsets[key + 1];
      for (std::uint32_t s = begin; s < end; ++s) {
        const std::int64_t o = static_cast<std::int64_t>(sorted_ids[s]) - n * V;  // output voxel in item n
        Acc w = Acc(1);
        if constexpr (I == Interp::linear) {
          Tap<F> tp[Dim];
          (void)linear_stencil<Dim, P>(d, u, o, tp, nullptr);  // inside: it was keyed to this cell
          for (int a = 0; a < Dim; ++a) {
            const int bit = (combo >> (Dim - 1 - a)) & 1;
            w *= Acc(bit ? tp[a].w1 : tp[a].w0);
          }
        }
        for (int j = 0; j < group; ++j) acc[j] += Acc(go[(c0 + j) * V + o]) * w;
      }
    }
    for (int j = 0; j < group; ++j) {
      T* dst = gi + (c0 + j) * V;
      *dst = accumulate ? static_cast<T>(*dst + static_cast<T>(acc[j])) : static_cast<T>(acc[j]);
    }
  }
}

/// x[i] = x[i] + y[i] (the composition's "+ a").
template <class F>
__global__ void add_kernel(F* __restrict__ x, const F* __restrict__ y, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = x[i] + y[i];
}

/// x[i] = y[i] · s.
template <class F>
__global__ void scale_kernel(F* __restrict__ x, const F* __restrict__ y, F s, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = y[i] * s;
}

template <std::size_t Dim, class Shp>
Dims dims_of(const Shp& image_shape) {
  Dims d;
  d.batch = image_shape[0];
  d.channels = image_shape[1];
  d.voxels = 1;
  for (std::size_t a = 0; a < Dim; ++a) {
    d.n[a] = image_shape[2 + a];
    d.voxels *= d.n[a];
  }
  return d;
}

template <std::size_t Dim, class T, class F>
void check_args(const char* what, const Shape<Dim + 2>& image, const Shape<Dim + 2>& field) {
  static_assert(Dim == 2 || Dim == 3, "warps are 2D or 3D");
  static_assert(std::is_floating_point_v<F>, "displacement fields hold float or double");
  bool spatial_ok = true;
  for (std::size_t a = 0; a < Dim; ++a) spatial_ok &= image[2 + a] == field[2 + a];
  RLMED_CHECK(field[0] == image[0] && field[1] == index_t(Dim) && spatial_ok, what, ": expected a field of shape [N=",
              image[0], ", ", Dim, ", *spatial of the image] for an image of shape [N, C, *spatial] = ", image,
              "; found field shape ", field);
}

template <int Dim, Interp I, Padding P, class T, class F>
void launch_forward(T* out, const T* image, const F* field, const Dims& d, int* nan_flag, cudaStream_t stream) {
  const std::int64_t total = d.batch * d.voxels;
  forward_kernel<Dim, I, P, T, F><<<grid_for(total), kDefaultBlock, 0, stream>>>(out, image, field, d, nan_flag);
  RLMED_CUDA_CHECK_LAUNCH();
}

template <int Dim, Interp I, Padding P, class T, class F>
void launch_backward(T* grad_image, F* grad_field, const T* grad_out, const T* image, const F* field, const Dims& d,
                     bool accumulate, WarpDeviceWorkspace& ws, int* nan_flag, cudaStream_t stream) {
  const std::int64_t total = d.batch * d.voxels;
  if (grad_field) {
    field_grad_kernel<Dim, I, P, T, F>
        <<<grid_for(total), kDefaultBlock, 0, stream>>>(grad_field, grad_out, image, field, d, accumulate, nan_flag);
    RLMED_CUDA_CHECK_LAUNCH();
  }
  if (!grad_image) return;
  const std::int64_t keys_count = d.batch * cells_per_item<Dim>(d);  // sentinel value = keys_count
  RLMED_CHECK(total < 0xFFFFFFFFll && keys_count < 0xFFFFFFFFll, "warp_backward (cuda): ", d.batch, " images of ",
              d.voxels, " voxels exceed the 32-bit voxel ids / cell keys of the deterministic image gradient; "
              "split the batch");
  if (ws.keys_in.size() < total) {
    ws.keys_in.reset(total);
    ws.keys_out.reset(total);
    ws.ids_in.reset(total);
    ws.ids_out.reset(total);
  }
  if (ws.offsets.size() < keys_count + 1) ws.offsets.reset(keys_count + 1);
  cell_keys_kernel<Dim, I, P, F>
      <<<grid_for(total), kDefaultBlock, 0, stream>>>(ws.keys_in.data(), ws.ids_in.data(), field, d, nan_flag);
  RLMED_CUDA_CHECK_LAUNCH();
  int end_bit = 1;
  while (end_bit < 32 && (std::int64_t(1) << end_bit) <= keys_count) ++end_bit;
  std::size_t temp_bytes = 0;
  RLMED_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, ws.keys_in.data(), ws.keys_out.data(),
                                                   ws.ids_in.data(), ws.ids_out.data(), total, 0, end_bit, stream));
  if (ws.sort_temp.size() < static_cast<index_t>(temp_bytes) || ws.sort_temp.size() == 0)
    ws.sort_temp.reset(static_cast<index_t>(temp_bytes > 0 ? temp_bytes : 1));
  temp_bytes = static_cast<std::size_t>(ws.sort_temp.size());
  RLMED_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(ws.sort_temp.data(), temp_bytes, ws.keys_in.data(),
                                                   ws.keys_out.data(), ws.ids_in.data(), ws.ids_out.data(), total, 0,
                                                   end_bit, stream));
  segment_offsets_kernel<std::uint32_t><<<grid_for(keys_count + 1), kDefaultBlock, 0, stream>>>(ws.offsets.data(), ws.keys_out.data(),
                                                                                 total, keys_count);
  RLMED_CUDA_CHECK_LAUNCH();
  image_grad_gather_kernel<Dim, I, P, T, F><<<grid_for(total), kDefaultBlock, 0, stream>>>(
      grad_image, grad_out, field, ws.offsets.data(), ws.ids_out.data(), d, accumulate);
  RLMED_CUDA_CHECK_LAUNCH();
}

}  // namespace warp_gpu

/// out [N, C, *S] = image warped by field [N, Dim, *S] (device views, ordered on `stream`).
/// Nearest works for any element type; linear needs float or double. nan_flag: see DeviceFlag.
template <std::size_t Dim, class T, class F = float>
void warp_forward(TensorView<T, Dim + 2, cuda> out, TensorView<const std::type_identity_t<T>, Dim + 2, cuda> image,
                  TensorView<const std::type_identity_t<F>, Dim + 2, cuda> field, Interp interp, Padding padding,
                  cudaStream_t stream, int* nan_flag = nullptr) {
  warp_gpu::check_args<Dim, T, F>("warp_forward (cuda)", image.shape(), field.shape());
  RLMED_CHECK(out.shape() == image.shape(), "warp_forward (cuda): output shape ", out.shape(),
              " differs from image shape ", image.shape());
  RLMED_CHECK(out.data() != image.data() || out.size() == 0, "warp_forward (cuda): the output must not alias the image");
  const warp_gpu::Dims d = warp_gpu::dims_of<Dim>(image.shape());
  if (d.batch * d.voxels == 0) return;
  constexpr int D = static_cast<int>(Dim);
  if (interp == Interp::linear) {
    if constexpr (std::is_floating_point_v<T>) {
      if (padding == Padding::zeros)
        warp_gpu::launch_forward<D, Interp::linear, Padding::zeros>(out.data(), image.data(), field.data(), d, nan_flag, stream);
      else
        warp_gpu::launch_forward<D, Interp::linear, Padding::border>(out.data(), image.data(), field.data(), d, nan_flag, stream);
    } else {
      RLMED_THROW("warp_forward (cuda): linear interpolation needs a float or double image; use Interp::nearest for labels");
    }
  } else {
    if (padding == Padding::zeros)
      warp_gpu::launch_forward<D, Interp::nearest, Padding::zeros>(out.data(), image.data(), field.data(), d, nan_flag, stream);
    else
      warp_gpu::launch_forward<D, Interp::nearest, Padding::border>(out.data(), image.data(), field.data(), d, nan_flag, stream);
  }
}

/// Gradients of a warp on the device, deterministic (see the header). Pass an empty view for a
/// gradient that is not wanted. Shapes as in warp_forward.
template <std::size_t Dim, class T, class F = float>
void warp_backward(TensorView<T, Dim + 2, cuda> grad_image, TensorView<std::type_identity_t<F>, Dim + 2, cuda> grad_field,
                   TensorView<const std::type_identity_t<T>, Dim + 2, cuda> grad_out,
                   TensorView<const std::type_identity_t<T>, Dim + 2, cuda> image,
                   TensorView<const std::type_identity_t<F>, Dim + 2, cuda> field, Interp interp, Padding padding,
                   GradWrite write, WarpDeviceWorkspace& workspace, cudaStream_t stream, int* nan_flag = nullptr) {
  static_assert(std::is_floating_point_v<T>, "warp_backward needs a float or double image");
  warp_gpu::check_args<Dim, T, F>("warp_backward (cuda)", image.shape(), field.shape());
  RLMED_CHECK(grad_out.shape() == image.shape(), "warp_backward (cuda): grad_out shape ", grad_out.shape(),
              " differs from the image shape ", image.shape());
  T* gi = grad_image.data();
  F* gf = grad_field.data();
  if (gi) {
    RLMED_CHECK(grad_image.shape() == image.shape(), "warp_backward (cuda): grad_image shape ", grad_image.shape(),
                " differs from the image shape ", image.shape());
    RLMED_CHECK(gi != image.data() && gi != grad_out.data(), "warp_backward (cuda): grad_image must not alias the inputs");
  }
  if (gf) {
    RLMED_CHECK(grad_field.shape() == field.shape(), "warp_backward (cuda): grad_field shape ", grad_field.shape(),
                " differs from the field shape ", field.shape());
    RLMED_CHECK(gf != field.data(), "warp_backward (cuda): grad_field must not alias the field");
  }
  const warp_gpu::Dims d = warp_gpu::dims_of<Dim>(image.shape());
  if (d.batch * d.voxels == 0 || (!gi && !gf)) return;
  const bool acc = write == GradWrite::accumulate;
  constexpr int D = static_cast<int>(Dim);
  const T* go = grad_out.data();
  const T* im = image.data();
  const F* u = field.data();
  if (interp == Interp::linear) {
    if (padding == Padding::zeros)
      warp_gpu::launch_backward<D, Interp::linear, Padding::zeros>(gi, gf, go, im, u, d, acc, workspace, nan_flag, stream);
    else
      warp_gpu::launch_backward<D, Interp::linear, Padding::border>(gi, gf, go, im, u, d, acc, workspace, nan_flag, stream);
  } else {
    if (padding == Padding::zeros)
      warp_gpu::launch_backward<D, Interp::nearest, Padding::zeros>(gi, gf, go, im, u, d, acc, workspace, nan_flag, stream);
    else
      warp_gpu::launch_backward<D, Interp::nearest, Padding::border>(gi, gf, go, im, u, d, acc, workspace, nan_flag, stream);
  }
}


/// out = a + u_prev ∘ (id + a) on the device (compose_displacements_into of warp.hpp: u_prev
/// sampled linearly with border padding). Fields [N, Dim, *S]; out must not alias a or u_prev.
template <std::size_t Dim, class F>
void compose_displacements(TensorView<F, Dim + 2, cuda> out, TensorView<const std::type_identity_t<F>, Dim + 2, cuda> a,
                           TensorView<const std::type_identity_t<F>, Dim + 2, cuda> u_prev, cudaStream_t stream,
                           int* nan_flag = nullptr) {
  static_assert(std::is_floating_point_v<F>, "displacement fields hold float or double");
  RLMED_CHECK(a.shape() == u_prev.shape() && out.shape() == a.shape() && a.extent(1) == index_t(Dim),
              "compose_displacements (cuda): expected fields [N, ", Dim, ", *spatial] of one shape; found out ",
              out.shape(), ", a ", a.shape(), ", u_prev ", u_prev.shape());
  RLMED_CHECK(out.data() != a.data() && out.data() != u_prev.data(),
              "compose_displacements (cuda): the output must not alias the inputs");
  const warp_gpu::Dims d = warp_gpu::dims_of<Dim>(a.shape());  // u_prev is the image: C = Dim channels
  if (d.batch * d.voxels == 0) return;
  warp_gpu::launch_forward<static_cast<int>(Dim), Interp::linear, Padding::border>(out.data(), u_prev.data(), a.data(),
                                                                                  d, nan_flag, stream);
  warp_gpu::add_kernel<F><<<grid_for(out.size()), kDefaultBlock, 0, stream>>>(out.data(), a.data(), out.size());
  RLMED_CUDA_CHECK_LAUNCH();
}

/// Scaling and squaring (integrate_velocity_into of warp.hpp): u = v / 2^steps, then `steps`
/// times u <- u + u ∘ (id + u). `scratch` (device) is resized once and reused.
template <std::size_t Dim, class F>
void integrate_velocity(TensorView<F, Dim + 2, cuda> out, TensorView<const std::type_identity_t<F>, Dim + 2, cuda> velocity,
                        int steps, Tensor<F, Dim + 2, cuda>& scratch, cudaStream_t stream, int* nan_flag = nullptr) {
  RLMED_CHECK(steps >= 0 && steps <= 30, "integrate_velocity (cuda): steps must be in [0, 30]; found ", steps);
  RLMED_CHECK(out.shape() == velocity.shape() && velocity.extent(1) == index_t(Dim),
              "integrate_velocity (cuda): expected out and velocity [N, ", Dim, ", *spatial] of one shape; found ",
              out.shape(), " and ", velocity.shape());
  RLMED_CHECK(out.data() != velocity.data(), "integrate_velocity (cuda): the output must not alias the velocity");
  if (out.size() == 0) return;
  const F scale = static_cast<F>(std::ldexp(1.0, -steps));
  warp_gpu::scale_kernel<F><<<grid_for(out.size()), kDefaultBlock, 0, stream>>>(out.data(), velocity.data(), scale,
                                                                                out.size());
  RLMED_CUDA_CHECK_LAUNCH();
  scratch.resize(velocity.shape());
  TensorView<F, Dim + 2, cuda> current = out, next = scratch.view();
  for (int s = 0; s < steps; ++s) {
    compose_displacements<Dim, F>(next, current, current, stream, nan_flag);
    std::swap(current, next);
  }
  if (current.data() != out.data())
    RLMED_CUDA_CHECK(cudaMemcpyAsync(out.data(), current.data(), out.bytes(), cudaMemcpyDeviceToDevice, stream));
}

}  // namespace rlmed::kernels
