// rlmed/cuda/conv.cuh — dilated 2D and 3D convolution on the GPU: forward, backward-data and
// backward-weights (direct, deterministic).
//
// Design decisions:
//  * Semantics are nn::ConvModule<Dims, ...>'s (PyTorch's conv2d/conv3d): weight [Out, In, K…],
//    optional bias [Out], run-time stride, zero padding and dilation (the same on every axis),
//    out = (n + 2p − d(K−1) − 1)/s + 1. Gradient semantics follow ConvModule::backward: the
//    data gradient dx is OVERWRITTEN (the module returns a fresh cache.dx), the parameter
//    gradients dw and db are ACCUMULATED (dW += …, db += …, like Parameter::grad).
//  * Determinism: no floating-point atomics anywhere; every sum has an order fixed by the shapes
//    and the constants below (never by timing, scheduling or the GPU model): run twice → the same
//    bits, on any device.
//  * 2D forward: direct convolution with shared-memory tiles: a block computes a 16 × 16 tile of
//    output pixels for kOutTile output channels (each thread one pixel, kOutTile register
//    accumulators); input channels are staged in chunks (input patch with its dilated halo +
//    weights), each output summed by one thread in the order (input channel, ky, kx). Patches
//    beyond the shared budget (large strides × dilations) use a one-thread-per-output kernel.
//  * 2D backward-data at stride 1 (and p ≤ d(K−1)) is the forward kernel run on dy with the
//    flipped, transposed kernel [In, Out, K, K] and padding d(K−1) − p (kept in ConvWorkspace):
//    the adjoint of a stride-1 correlation is a correlation. Otherwise (strided, or padding
//    beyond the span) and in 3D, a direct gather: one thread per input voxel × kChanGroup input
//    channels sums over (oc, kz, ky, kx) the taps whose (i + p − k·d) is a non-negative
//    multiple of s with quotient < out — the exact adjoint, no scatter, no atomics.
//  * 3D forward: the same direct scheme as the gather, one thread per output voxel ×
//    kChanGroup output channels, weights of a chunk of input channels staged in shared memory.
//  * Backward-weights (2D and 3D) is a GEMM dW[Out, In·K^D] = dY[Out, N] · col[In·K^D, N]ᵀ over
//    N = B × output voxels, with the im2col columns formed while loading shared-memory tiles
//    (64 × 64 tile per block, 4 × 4 per thread, 16 positions per stage). N is split into chunks
//    whose count and length are functions of the shape only; pass 1 writes one fp32 partial per
//    (chunk, weight), each a sequential sum over the chunk's positions in ascending order;
//    pass 2 adds the chunks in ascending order in double and adds the result into dw. The bias
//    gradient uses the same chunks: per-(chunk, oc) sums in double with a fixed thread stride and
//    a fixed shared-memory tree, then the chunks in order.
// Rooflines are in docs/cuda.md (direct kernels: compute-bound on fp32 FMA; they use no tensor
// cores, so cuDNN's TF32 implicit-GEMM paths are faster — these are the deterministic paths).
// CPU reference: nn::ConvModule<Dims, In, Out, K, T> in rlmed/nn/layers/conv.hpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "rlmed/core/tensor_cuda.hpp"
#include "rlmed/cuda/launch.cuh"

namespace rlmed::kernels {

/// Stride, zero padding and dilation of a square (2D) or cubic (3D) convolution.
struct ConvParams {
  index_t stride = 1;
  index_t padding = 0;
  index_t dilation = 1;
};
using Conv2dParams = ConvParams;
using Conv3dParams = ConvParams;

/// Device scratch of the convolution gradients; grows on first use, then is reused (no
/// allocation in the steady state). One per stream (calls on one stream run in order).
template <class T>
struct ConvWorkspace {
  DeviceBuffer<T> flipped;             ///< [In, Out, K, K]: stride-1 data-gradient kernel
  DeviceBuffer<T> weight_partial;      ///< [chunks, Out, In·K^D]: pass-1 weight-gradient sums
  DeviceBuffer<double> bias_partial;   ///< [Out, chunks]: pass-1 bias-gradient sums
};

namespace conv_gpu {

inline constexpr int kTile = 16;                         ///< output pixels per block side
inline constexpr int kOutTile = 8;                       ///< output channels per block
inline constexpr std::size_t kSharedBudget = 40 * 1024;  ///< bytes of staged input + weights

struct ConvDims {
  std::int64_t batch, in_ch, out_ch, H, W, OH, OW, K, stride, padding, dilation;
  std::int64_t patch;  // staged input patch side: (kTile − 1)·stride + (K − 1)·dilation + 1
  std::int64_t chunk;  // input channels staged per pass
};

template <class T>
__global__ void __launch_bounds__(kTile* kTile) conv2d_tiled_kernel(T* __restrict__ y, const T* __restrict__ x,
                                                                    const T* __restrict__ w,
                                                                    const T* __restrict__ bias, ConvDims d) {
  extern __shared__ unsigned char smem_raw[];
  T* patch = reinterpret_cast<T*>(smem_raw);                   // [chunk, patch, patch]
  T* wsh = patch + d.chunk * d.patch * d.patch;                // [kOutTile, chunk, K, K]
  const int tx = static_cast<int>(threadIdx.x % kTile), ty = static_cast<int>(threadIdx.x / kTile);
  const std::int64_t tiles_x = (d.OW + kTile - 1) / kTile;
  const std::int64_t ox0 = (blockIdx.x % tiles_x) * kTile, oy0 = (blockIdx.x / tiles_x) * kTile;
  const std::int64_t oc0 = static_cast<std::int64_t>(blockIdx.y) * kOutTile;
  const std::int64_t b = blockIdx.z;
  const std::int64_t ox = ox0 + tx, oy = oy0 + ty;
  const std::int64_t ix0 = ox0 * d.stride - d.padding, iy0 = oy0 * d.stride - d.padding;  // patch origin
  const std::int64_t KK = d.K * d.K;
  T acc[kOutTile];
  for (int j = 0; j < kOutTile; ++j) acc[j] = T(0);
  const int threads = kTile * kTile;
  for (std::int64_t c0 = 0; c0 < d.in_ch; c0 += d.chunk) {
    const std::int64_t cn = d.chunk < d.in_ch - c0 ? d.chunk : d.in_ch - c0;
    __syncthreads();  // the previous chunk is consumed
    const std::int64_t patch_elems = cn * d.patch * d.patch;
    for (std::int64_t e = threadIdx.x; e < patch_elems; e += threads) {
      const std::int64_t c = e / (d.patch * d.patch), r = e % (d.patch * d.patch);
      const std::int64_t iy = iy0 + r / d.patch, ix = ix0 + r % d.patch;
      patch[e] = (iy >= 0 && iy < d.H && ix >= 0 && ix < d.W) ? x[((b * d.in_ch + c0 + c) * d.H + iy) * d.W + ix] : T(0);
    }
    const std::int64_t w_elems = kOutTile * cn * KK;
    for (std::int64_t e = threadIdx.x; e < w_elems; e += threads) {
      const std::int64_t j = e / (cn * KK), r = e % (cn * KK);
      const std::int64_t oc = oc0 + j;
      wsh[e] = oc < d.out_ch ? w[(oc * d.in_ch + c0) * KK + r] : T(0);
    }
    __syncthreads();
    if (ox < d.OW && oy < d.OH) {
      for (std::int64_t c = 0; c < cn; ++c) {
        const T* pc = patch + c * d.patch * d.patch + (ty * d.stride) * d.patch + tx * d.stride;
        for (std::int64_t ky = 0; ky < d.K; ++ky)
          for (std::int64_t kx = 0; kx < d.K; ++kx) {
            const T v = pc[ky * d.dilation * d.patch + kx * d.dilation];
            const std::int64_t widx = c * KK + ky * d.K + kx;
            for (int j = 0; j < kOutTile; ++j) acc[j] += wsh[j * cn * KK + widx] * v;
          }
      }
    }
  }
  if (ox < d.OW && oy < d.OH)
    for (int j = 0; j < kOutTile; ++j) {
      const std::int64_t oc = oc0 + j;
      if (oc < d.out_ch) y[((b * d.out_ch + oc) * d.OH + oy) * d.OW + ox] = acc[j] + (bias ? bias[oc] : T(0));
    }
}

/// One thread per output element, the same summation order (input channel, ky, kx).
template <class T>
__global__ void conv2d_plain_kernel(T* __restrict__ y, const T* __restrict__ x, const T* __restrict__ w,
                                    const T* __restrict__ bias, ConvDims d) {
  const std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= d.batch * d.out_ch * d.OH * d.OW) return;
  const std::int64_t ox = e % d.OW, oy = (e / d.OW) % d.OH, oc = (e / (d.OW * d.OH)) % d.out_ch,
                     b = e / (d.OW * d.OH * d.out_ch);
  T acc = 0;
  for (std::int64_t c = 0; c < d.in_ch; ++c)
    for (std::int64_t ky = 0; ky < d.K; ++ky) {
      const std::int64_t iy = oy * d.stride - d.padding + ky * d.dilation;
      for (std::int64_t kx = 0; kx < d.K; ++kx) {
        const std::int64_t ix = ox * d.stride - d.padding + kx * d.dilation;
        const T v = (iy >= 0 && iy < d.H && ix >= 0 && ix < d.W) ? x[((b * d.in_ch + c) * d.H + iy) * d.W + ix] : T(0);
        acc += w[((oc * d.in_ch + c) * d.K + ky) * d.K + kx] * v;
      }
    }
  y[e] = acc + (bias ? bias[oc] : T(0));
}

// ---- shared by the direct 3D / gather kernels and the weight gradient -----------------------

/// A convolution as 3 spatial axes (z, y, x); 2D is depth 1 with a 1-tap, unit-stride z axis.
struct ConvGeom {
  std::int64_t batch, in_ch, out_ch;
  std::int64_t in[3], out[3], k[3], stride[3], pad[3], dil[3];
  std::int64_t in_vol, out_vol, k_vol;  // products of in, out and k
};

inline constexpr int kChanGroup = 8;        ///< channels per thread in the direct kernels (registers)
inline constexpr int kDirectBlock = 128;    ///< voxels per block in the direct kernels
inline constexpr std::size_t kWeightStageBudget = 32 * 1024;  ///< bytes of staged weights per block
inline constexpr std::size_t kWeightStageMax = 48 * 1024;     ///< beyond this per channel: unstaged

/// acc[j] += wk[j] · v for j < kChanGroup, wk in shared memory (two 16-byte loads for float).
template <class T>
__device__ __forceinline__ void fma_group(T* acc, const T* wk, T v) {
  if constexpr (std::is_same_v<T, float>) {
    const float4 a = reinterpret_cast<const float4*>(wk)[0], b = reinterpret_cast<const float4*>(wk)[1];
    acc[0] += a.x * v;
    acc[1] += a.y * v;
    acc[2] += a.z * v;
    acc[3] += a.w * v;
    acc[4] += b.x * v;
    acc[5] += b.y * v;
    acc[6] += b.z * v;
    acc[7] += b.w * v;
  } else {
    for (int j = 0; j < kChanGroup; ++j) acc[j] += wk[j] * v;
  }
}

/// Forward, direct: block (b · pos_blocks + voxel block, output-channel group). Each thread owns
/// one output voxel and kChanGroup output channels and sums in the order (c, kz, ky, kx).
/// Staged: the group's weights for `chunk` input channels sit in shared memory as
/// [c, tap, kChanGroup]; otherwise they are read from global memory.
template <class T, bool Staged>
__global__ void __launch_bounds__(kDirectBlock)
    conv_direct_forward_kernel(T* __restrict__ y, const T* __restrict__ x, const T* __restrict__ w,
                               const T* __restrict__ bias, ConvGeom g, std::int64_t pos_blocks, std::int64_t chunk) {
  extern __shared__ __align__(16) unsigned char conv_direct_smem[];
  T* wsh = reinterpret_cast<T*>(conv_direct_smem);
  const std::int64_t b = blockIdx.x / pos_blocks;
  const std::int64_t o = (blockIdx.x % pos_blocks) * kDirectBlock + threadIdx.x;  // output voxel
  const std::int64_t oc0 = static_cast<std::int64_t>(blockIdx.y) * kChanGroup;
  const bool active = o < g.out_vol;
  const std::int64_t ox = o % g.out[2], oy = (o / g.out[2]) % g.out[1], oz = o / (g.out[2] * g.out[1]);
  const std::int64_t z0 = oz * g.stride[0] - g.pad[0], y0 = oy * g.stride[1] - g.pad[1],
                     x0 = ox * g.stride[2] - g.pad[2];
  const std::int64_t KV = g.k_vol;
  T acc[kChanGroup];
  for (int j = 0; j < kChanGroup; ++j) acc[j] = T(0);
  for (std::int64_t c0 = 0; c0 < g.in_ch; c0 += chunk) {
    const std::int64_t cn = chunk < g.in_ch - c0 ? chunk : g.in_ch - c0;
    if constexpr (Staged) {
      __syncthreads();  // the previous chunk is consumed
      const std::int64_t run = cn * KV;  // contiguous weights of one output channel in this chunk
      for (std::int64_t e = threadIdx.x; e < run * kChanGroup; e += blockDim.x) {
        const std::int64_t r = e % run, j = e / run, oc = oc0 + j;  // r = c·KV + tap
        wsh[r * kChanGroup + j] = oc < g.out_ch ? w[(oc * g.in_ch + c0) * KV + r] : T(0);
      }
      __syncthreads();
    }
    if (!active) continue;
    for (std::int64_t c = 0; c < cn; ++c) {
      const T* xc = x + (b * g.in_ch + c0 + c) * g.in_vol;
      for (std::int64_t kz = 0; kz < g.k[0]; ++kz) {
        const std::int64_t iz = z0 + kz * g.dil[0];
        if (iz < 0 || iz >= g.in[0]) continue;
        for (std::int64_t ky = 0; ky < g.k[1]; ++ky) {
          const std::int64_t iy = y0 + ky * g.dil[1];
          if (iy < 0 || iy >= g.in[1]) continue;
          const T* xrow = xc + (iz * g.in[1] + iy) * g.in[2];
          for (std::int64_t kx = 0; kx < g.k[2]; ++kx) {
            const std::int64_t ix = x0 + kx * g.dil[2];
            if (ix < 0 || ix >= g.in[2]) continue;
            const T v = xrow[ix];
            const std::int64_t tap = (kz * g.k[1] + ky) * g.k[2] + kx;
            if constexpr (Staged) {
              fma_group(acc, wsh + (c * KV + tap) * kChanGroup, v);
            } else {
              for (int j = 0; j < kChanGroup; ++j) {
                const std::int64_t oc = oc0 + j;
                acc[j] += (oc < g.out_ch ? w[(oc * g.in_ch + c0 + c) * KV + tap] : T(0)) * v;
              }
            }
          }
        }
      }
    }
  }
  if (!active) return;
  for (int j = 0; j < kChanGroup; ++j) {
    const std::int64_t oc = oc0 + j;
    if (oc < g.out_ch) y[(b * g.out_ch + oc) * g.out_vol + o] = acc[j] + (bias ? bias[oc] : T(0));
  }
}

/// Backward-data, direct gather (the exact adjoint of the forward): block (b · pos_blocks +
/// voxel block, input-channel group). Each thread owns one input voxel i and kChanGroup input
/// channels: dx[c, i] = Σ_(oc, kz, ky, kx) w[oc, c, k] · dy[oc, o] over the taps with
/// o·s = i + p − k·d, in that order. Staged weights: [oc, tap, kChanGroup] for `chunk` outputs.
template <class T, bool Staged>
__global__ void __launch_bounds__(kDirectBlock)
    conv_direct_backward_data_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ w, ConvGeom g,
                                     std::int64_t pos_blocks, std::int64_t chunk) {
  extern __shared__ __align__(16) unsigned char conv_direct_smem[];
  T* wsh = reinterpret_cast<T*>(conv_direct_smem);
  const std::int64_t b = blockIdx.x / pos_blocks;
  const std::int64_t i = (blockIdx.x % pos_blocks) * kDirectBlock + threadIdx.x;  // input voxel
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.y) * kChanGroup;
  const bool active = i < g.in_vol;
  const std::int64_t ix = i % g.in[2], iy = (i / g.in[2]) % g.in[1], iz = i / (g.in[2] * g.in[1]);
  const std::int64_t KV = g.k_vol;
  T acc[kChanGroup];
  for (int j = 0; j < kChanGroup; ++j) acc[j] = T(0);
  for (std::int64_t oc0 = 0; oc0 < g.out_ch; oc0 += chunk) {
    const std::int64_t on = chunk < g.out_ch - oc0 ? chunk : g.out_ch - oc0;
    if constexpr (Staged) {
      __syncthreads();
      const std::int64_t run = on * KV;  // r = ocl·KV + tap
      for (std::int64_t e = threadIdx.x; e < run * kChanGroup; e += blockDim.x) {
        const std::int64_t r = e % run, j = e / run, c = c0 + j;
        wsh[r * kChanGroup + j] = c < g.in_ch ? w[((oc0 + r / KV) * g.in_ch + c) * KV + r % KV] : T(0);
      }
      __syncthreads();
    }
    if (!active) continue;
    for (std::int64_t ocl = 0; ocl < on; ++ocl) {
      const T* dyo = dy + (b * g.out_ch + oc0 + ocl) * g.out_vol;
      for (std::int64_t kz = 0; kz < g.k[0]; ++kz) {
        const std::int64_t tz = iz + g.pad[0] - kz * g.dil[0];
        if (tz < 0) break;  // decreasing in kz: no later tap reaches an output either
        if (tz % g.stride[0] != 0) continue;
        const std::int64_t oz = tz / g.stride[0];
        if (oz >= g.out[0]) continue;
        for (std::int64_t ky = 0; ky < g.k[1]; ++ky) {
          const std::int64_t ty = iy + g.pad[1] - ky * g.dil[1];
          if (ty < 0) break;
          if (ty % g.stride[1] != 0) continue;
          const std::int64_t oy = ty / g.stride[1];
          if (oy >= g.out[1]) continue;
          const T* dyrow = dyo + (oz * g.out[1] + oy) * g.out[2];
          for (std::int64_t kx = 0; kx < g.k[2]; ++kx) {
            const std::int64_t tx = ix + g.pad[2] - kx * g.dil[2];
            if (tx < 0) break;
            if (tx % g.stride[2] != 0) continue;
            const std::int64_t ox = tx / g.stride[2];
            if (ox >= g.out[2]) continue;
            const T v = dyrow[ox];
            const std::int64_t tap = (kz * g.k[1] + ky) * g.k[2] + kx;
            if constexpr (Staged) {
              fma_group(acc, wsh + (ocl * KV + tap) * kChanGroup, v);
            } else {
              for (int j = 0; j < kChanGroup; ++j) {
                const std::int64_t c = c0 + j;
                acc[j] += (c < g.in_ch ? w[((oc0 + ocl) * g.in_ch + c) * KV + tap] : T(0)) * v;
              }
            }
          }
        }
      }
    }
  }
  if (!active) return;
  for (int j = 0; j < kChanGroup; ++j) {
    const std::int64_t c = c0 + j;
    if (c < g.in_ch) dx[(b * g.in_ch + c) * g.in_vol + i] = acc[j];
  }
}

/// flipped[c, oc, K·K − 1 − tap] = w[oc, c, tap]: the stride-1 data gradient's kernel.
template <class T>
__global__ void flip_transpose_kernel(T* __restrict__ flipped, const T* __restrict__ w, std::int64_t out_ch,
                                      std::int64_t in_ch, std::int64_t taps) {
  const std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= out_ch * in_ch * taps) return;
  const std::int64_t tap = e % taps, c = (e / taps) % in_ch, oc = e / (taps * in_ch);
  flipped[(c * out_ch + oc) * taps + (taps - 1 - tap)] = w[e];
}

// ---- backward-weights: chunked GEMM dY · colᵀ, then a fixed-order sum over chunks -----------

inline constexpr int kWgTile = 64;     ///< output channels × (input channel, tap) per block tile
inline constexpr int kWgStep = 16;     ///< positions per shared-memory stage
inline constexpr int kWgThreads = 256; ///< 16 × 16 threads, 4 × 4 accumulators each
inline constexpr int kBiasThreads = 256;

/// partial[chunk, oc, ck] = Σ_(n in chunk, ascending) dy[b, oc, o] · x[b, c, o·s − p + tap·d]
/// for the block's 64 × 64 tile (grid: ck tiles, oc tiles, chunks), ck = c·K^D + tap.
template <class T>
__global__ void __launch_bounds__(kWgThreads)
    conv_weight_grad_partial_kernel(T* __restrict__ partial, const T* __restrict__ x, const T* __restrict__ dy,
                                    ConvGeom g, std::int64_t chunk_len) {
  // [position, oc] and [position, ck]; the +1 turns the 16-way bank conflicts of a warp's
  // position-major stores (16 positions × 2 rows) into at most 2-way ones.
  __shared__ T sdy[kWgStep][kWgTile + 1];
  __shared__ T scol[kWgStep][kWgTile + 1];
  const int tid = static_cast<int>(threadIdx.x);
  const int tx = tid % 16, ty = tid / 16;            // compute role: ck = tx + 16j, oc = ty + 16i
  const int lane = tid % kWgStep, row0 = tid / kWgStep;  // load role: position lane, rows row0 + 16r
  const std::int64_t KV = g.k_vol, CK = g.in_ch * KV, total = g.batch * g.out_vol;
  const std::int64_t ck0 = static_cast<std::int64_t>(blockIdx.x) * kWgTile;
  const std::int64_t oc0 = static_cast<std::int64_t>(blockIdx.y) * kWgTile;
  const std::int64_t n_begin = static_cast<std::int64_t>(blockIdx.z) * chunk_len;
  const std::int64_t n_end = n_begin + chunk_len < total ? n_begin + chunk_len : total;
  // The column rows this thread loads are fixed for the block: decode (c, tap) once.
  std::int64_t col_c[4], col_z[4], col_y[4], col_x[4];
  bool col_ok[4];
  for (int r = 0; r < 4; ++r) {
    const std::int64_t ck = ck0 + row0 + 16 * r;
    col_ok[r] = ck < CK;
    const std::int64_t c = ck / KV, tap = ck % KV;
    const std::int64_t kz = tap / (g.k[1] * g.k[2]), ky = (tap / g.k[2]) % g.k[1], kx = tap % g.k[2];
    col_c[r] = c;
    col_z[r] = kz * g.dil[0] - g.pad[0];
    col_y[r] = ky * g.dil[1] - g.pad[1];
    col_x[r] = kx * g.dil[2] - g.pad[2];
  }
  T acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = T(0);
  for (std::int64_t n0 = n_begin; n0 < n_end; n0 += kWgStep) {
    const std::int64_t n = n0 + lane;
    const bool n_ok = n < n_end;
    std::int64_t b = 0, o = 0, oz = 0, oy = 0, ox = 0;
    if (n_ok) {
      b = n / g.out_vol;
      o = n - b * g.out_vol;
      ox = o % g.out[2];
      oy = (o / g.out[2]) % g.out[1];
      oz = o / (g.out[2] * g.out[1]);
    }
    for (int r = 0; r < 4; ++r) {
      const int row = row0 + 16 * r;
      const std::int64_t oc = oc0 + row;
      sdy[lane][row] = (n_ok && oc < g.out_ch) ? dy[(b * g.out_ch + oc) * g.out_vol + o] : T(0);
      T v = T(0);
      if (n_ok && col_ok[r]) {
        const std::int64_t iz = oz * g.stride[0] + col_z[r], iy = oy * g.stride[1] + col_y[r],
                           ix = ox * g.stride[2] + col_x[r];
        if (iz >= 0 && iz < g.in[0] && iy >= 0 && iy < g.in[1] && ix >= 0 && ix < g.in[2])
          v = x[(b * g.in_ch + col_c[r]) * g.in_vol + (iz * g.in[1] + iy) * g.in[2] + ix];
      }
      scol[lane][row] = v;
    }
    __syncthreads();
    for (int kk = 0; kk < kWgStep; ++kk) {
      T a[4], bb[4];
      for (int i = 0; i < 4; ++i) a[i] = sdy[kk][ty + 16 * i];
      for (int j = 0; j < 4; ++j) bb[j] = scol[kk][tx + 16 * j];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * bb[j];
    }
    __syncthreads();
  }
  T* part = partial + static_cast<std::int64_t>(blockIdx.z) * g.out_ch * CK;
  for (int i = 0; i < 4; ++i) {
    const std::int64_t oc = oc0 + ty + 16 * i;
    if (oc >= g.out_ch) continue;
    for (int j = 0; j < 4; ++j) {
      const std::int64_t ck = ck0 + tx + 16 * j;
      if (ck < CK) part[oc * CK + ck] = acc[i][j];
    }
  }
}

/// dw[e] += Σ_(chunk ascending) partial[chunk, e] (double), e < count = Out·In·K^D.
template <class T>
__global__ void conv_weight_grad_finish_kernel(T* __restrict__ dw, const T* __restrict__ partial, std::int64_t chunks,
                                               std::int64_t count) {
  const std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= count) return;
  double s = 0.0;
  for (std::int64_t ch = 0; ch < chunks; ++ch) s += static_cast<double>(partial[ch * count + e]);
  dw[e] = static_cast<T>(static_cast<double>(dw[e]) + s);
}

/// partial[oc, chunk] = Σ dy[b, oc, o] over the chunk's positions n = b·out_vol + o (grid:
/// chunks, Out): thread t sums n = begin + t, t + kBiasThreads, … in double, then a fixed tree.
template <class T>
__global__ void __launch_bounds__(kBiasThreads)
    conv_bias_grad_partial_kernel(double* __restrict__ partial, const T* __restrict__ dy, ConvGeom g,
                                  std::int64_t chunk_len, std::int64_t chunks) {
  __shared__ double sh[kBiasThreads];
  const std::int64_t oc = blockIdx.y, total = g.batch * g.out_vol;
  const std::int64_t n_begin = static_cast<std::int64_t>(blockIdx.x) * chunk_len;
  const std::int64_t n_end = n_begin + chunk_len < total ? n_begin + chunk_len : total;
  double acc = 0.0;
  for (std::int64_t n = n_begin + threadIdx.x; n < n_end; n += kBiasThreads) {
    const std::int64_t b = n / g.out_vol, o = n - b * g.out_vol;
    acc += static_cast<double>(dy[(b * g.out_ch + oc) * g.out_vol + o]);
  }
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kBiasThreads / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[oc * chunks + blockIdx.x] = sh[0];
}

/// db[oc] += Σ_(chunk ascending) partial[oc, chunk].
template <class T>
__global__ void conv_bias_grad_finish_kernel(T* __restrict__ db, const double* __restrict__ partial,
                                             std::int64_t chunks, std::int64_t out_ch) {
  const std::int64_t oc = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (oc >= out_ch) return;
  double s = 0.0;
  for (std::int64_t ch = 0; ch < chunks; ++ch) s += partial[oc * chunks + ch];
  db[oc] = static_cast<T>(static_cast<double>(db[oc]) + s);
}

// ---- host side ---------------------------------------------------------------------------------

/// Validates parameters and shapes (x [B, In, spatial…], w [Out, In, K…]) and returns the
/// geometry; Dims = 2 maps onto depth 1.
template <int Dims>
ConvGeom make_geom(const Shape<Dims + 2>& x, const Shape<Dims + 2>& w, const ConvParams& p, const char* name) {
  static_assert(Dims == 2 || Dims == 3);
  RLMED_CHECK(p.stride >= 1 && p.dilation >= 1 && p.padding >= 0, name, ": stride ", p.stride, ", dilation ",
              p.dilation, ", padding ", p.padding, "; expected stride, dilation >= 1, padding >= 0");
  bool cubic = w[2] >= 1;
  for (int a = 3; a < Dims + 2; ++a) cubic = cubic && w[a] == w[2];
  RLMED_CHECK(w[1] == x[1] && w[0] >= 1 && x[1] >= 1 && cubic, name, ": weight ", w, " must be [Out >= 1, In = ", x[1],
              Dims == 2 ? ", K, K]" : ", K, K, K]", " with K >= 1 (input ", x, ")");
  ConvGeom g{};
  g.batch = x[0];
  g.in_ch = x[1];
  g.out_ch = w[0];
  const index_t K = w[2], span = p.dilation * (K - 1) + 1;
  for (int t = 0; t < 3; ++t) {
    const bool real = t >= 3 - Dims;  // 2D: axis 0 is a unit depth
    g.in[t] = real ? x[2 + t - (3 - Dims)] : 1;
    g.k[t] = real ? K : 1;
    g.stride[t] = real ? p.stride : 1;
    g.pad[t] = real ? p.padding : 0;
    g.dil[t] = real ? p.dilation : 1;
    if (real)
      RLMED_CHECK(g.in[t] + 2 * p.padding >= span, name, ": input ", x, " with padding ", p.padding,
                  " is smaller than the dilated kernel (", span, ") on a spatial axis");
    g.out[t] = real ? (g.in[t] + 2 * p.padding - span) / p.stride + 1 : 1;
  }
  g.in_vol = g.in[0] * g.in[1] * g.in[2];
  g.out_vol = g.out[0] * g.out[1] * g.out[2];
  g.k_vol = g.k[0] * g.k[1] * g.k[2];
  return g;
}

template <int Dims>
Shape<Dims + 2> output_shape_of(const ConvGeom& g) {
  Shape<Dims + 2> s{};
  s[0] = g.batch;
  s[1] = g.out_ch;
  for (int a = 0; a < Dims; ++a) s[2 + a] = g.out[3 - Dims + a];
  return s;
}

/// Input channels (or output channels) staged per pass so that chunk · K^D · kChanGroup values
/// fit the budget; 0 when even one channel exceeds kWeightStageMax (then weights stay global).
template <class T>
std::int64_t staged_chunk(const ConvGeom& g, std::int64_t channels) {
  const std::size_t per_channel = static_cast<std::size_t>(g.k_vol) * kChanGroup * sizeof(T);
  if (per_channel > kWeightStageMax) return 0;
  const auto fit = static_cast<std::int64_t>(std::max<std::size_t>(1, kWeightStageBudget / per_channel));
  return std::min(channels, fit);
}

template <class T>
void launch_direct_forward(T* y, const T* x, const T* w, const T* bias, const ConvGeom& g, cudaStream_t stream) {
  const std::int64_t pos_blocks = (g.out_vol + kDirectBlock - 1) / kDirectBlock;
  const std::int64_t groups = (g.out_ch + kChanGroup - 1) / kChanGroup;
  RLMED_CHECK(g.batch * pos_blocks <= 0x7FFFFFFF && groups <= 65535, "conv forward (cuda): ", g.batch, " × ",
              g.out_vol, " outputs × ", g.out_ch, " channels exceed the grid limits");
  const dim3 grid(static_cast<unsigned>(g.batch * pos_blocks), static_cast<unsigned>(groups));
  const std::int64_t chunk = staged_chunk<T>(g, g.in_ch);
  if (chunk > 0) {
    const std::size_t smem = static_cast<std::size_t>(chunk * g.k_vol * kChanGroup) * sizeof(T);
    conv_direct_forward_kernel<T, true><<<grid, kDirectBlock, smem, stream>>>(y, x, w, bias, g, pos_blocks, chunk);
  } else {
    conv_direct_forward_kernel<T, false><<<grid, kDirectBlock, 0, stream>>>(y, x, w, bias, g, pos_blocks, g.in_ch);
  }
  RLMED_CUDA_CHECK_LAUNCH();
}

template <class T>
void launch_direct_backward_data(T* dx, const T* dy, const T* w, const ConvGeom& g, cudaStream_t stream) {
  const std::int64_t pos_blocks = (g.in_vol + kDirectBlock - 1) / kDirectBlock;
  const std::int64_t groups = (g.in_ch + kChanGroup - 1) / kChanGroup;
  RLMED_CHECK(g.batch * pos_blocks <= 0x7FFFFFFF && groups <= 65535, "conv backward-data (cuda): ", g.batch, " × ",
              g.in_vol, " inputs × ", g.in_ch, " channels exceed the grid limits");
  const dim3 grid(static_cast<unsigned>(g.batch * pos_blocks), static_cast<unsigned>(groups));
  const std::int64_t chunk = staged_chunk<T>(g, g.out_ch);
  if (chunk > 0) {
    const std::size_t smem = static_cast<std::size_t>(chunk * g.k_vol * kChanGroup) * sizeof(T);
    conv_direct_backward_data_kernel<T, true><<<grid, kDirectBlock, smem, stream>>>(dx, dy, w, g, pos_blocks, chunk);
  } else {
    conv_direct_backward_data_kernel<T, false><<<grid, kDirectBlock, 0, stream>>>(dx, dy, w, g, pos_blocks, g.out_ch);
  }
  RLMED_CUDA_CHECK_LAUNCH();
}

/// How the weight-gradient reduction over N = B · out_vol positions is split: a function of the
/// shape only (never of the device), so the summation order is the same on every GPU.
struct WeightGradPlan {
  std::int64_t chunks, chunk_len;
};

inline WeightGradPlan plan_weight_grad(const ConvGeom& g) {
  constexpr std::int64_t kTargetBlocks = 1024;      // enough blocks to fill an H100 several times
  constexpr std::int64_t kMinLen = 256;             // positions per chunk, at least …
  constexpr std::int64_t kMaxLen = 8192;            // … and at most, while the workspace allows
  constexpr std::int64_t kMaxPartial = 16 << 20;    // elements of pass-1 partials (64 MiB fp32)
  const std::int64_t total = g.batch * g.out_vol, weights = g.out_ch * g.in_ch * g.k_vol;
  const std::int64_t tiles = ((g.in_ch * g.k_vol + kWgTile - 1) / kWgTile) * ((g.out_ch + kWgTile - 1) / kWgTile);
  std::int64_t chunks = std::max((kTargetBlocks + tiles - 1) / tiles, (total + kMaxLen - 1) / kMaxLen);
  chunks = std::min(chunks, std::max<std::int64_t>(1, total / kMinLen));
  chunks = std::min(chunks, std::max<std::int64_t>(1, kMaxPartial / std::max<std::int64_t>(1, weights)));
  chunks = std::clamp<std::int64_t>(chunks, 1, 65535);
  std::int64_t len = (total + chunks - 1) / chunks;
  len = std::max<std::int64_t>(kWgStep, (len + kWgStep - 1) / kWgStep * kWgStep);
  return {std::max<std::int64_t>(1, (total + len - 1) / len), len};
}

/// dw [Out, In·K^D] += Σ dY colᵀ; db [Out] += Σ dY (db may be null). Two passes each.
template <class T>
void launch_weight_grad(T* dw, T* db, const T* x, const T* dy, const ConvGeom& g, ConvWorkspace<T>& ws,
                        cudaStream_t stream) {
  const std::int64_t CK = g.in_ch * g.k_vol, weights = g.out_ch * CK;
  const WeightGradPlan plan = plan_weight_grad(g);
  const std::int64_t ck_tiles = (CK + kWgTile - 1) / kWgTile, oc_tiles = (g.out_ch + kWgTile - 1) / kWgTile;
  RLMED_CHECK(ck_tiles <= 0x7FFFFFFF && oc_tiles <= 65535 && g.out_ch <= 65535, "conv backward-weights (cuda): ",
              g.out_ch, " × ", CK, " weights exceed the grid limits");
  if (ws.weight_partial.size() < plan.chunks * weights) ws.weight_partial.reset(plan.chunks * weights);
  const dim3 grid(static_cast<unsigned>(ck_tiles), static_cast<unsigned>(oc_tiles), static_cast<unsigned>(plan.chunks));
  conv_weight_grad_partial_kernel<T><<<grid, kWgThreads, 0, stream>>>(ws.weight_partial.data(), x, dy, g, plan.chunk_len);
  RLMED_CUDA_CHECK_LAUNCH();
  conv_weight_grad_finish_kernel<T><<<grid_for(weights), kDefaultBlock, 0, stream>>>(dw, ws.weight_partial.data(),
                                                                                     plan.chunks, weights);
  RLMED_CUDA_CHECK_LAUNCH();
  if (!db) return;
  if (ws.bias_partial.size() < plan.chunks * g.out_ch) ws.bias_partial.reset(plan.chunks * g.out_ch);
  const dim3 bgrid(static_cast<unsigned>(plan.chunks), static_cast<unsigned>(g.out_ch));
  conv_bias_grad_partial_kernel<T><<<bgrid, kBiasThreads, 0, stream>>>(ws.bias_partial.data(), dy, g, plan.chunk_len,
                                                                       plan.chunks);
  RLMED_CUDA_CHECK_LAUNCH();
  conv_bias_grad_finish_kernel<T><<<grid_for(g.out_ch), kDefaultBlock, 0, stream>>>(db, ws.bias_partial.data(),
                                                                                    plan.chunks, g.out_ch);
  RLMED_CUDA_CHECK_LAUNCH();
}

template <class T>
void check_bias_grad(TensorView<T, 1, cuda> db, const ConvGeom& g, const char* name) {
  RLMED_CHECK(!db.data() || db.shape() == Shape<1>{g.out_ch}, name, ": bias gradient shape ", db.shape(),
              ", expected [", g.out_ch, "] (or an empty view for no bias)");
}

}  // namespace conv_gpu

/// y [B, Out, OH, OW] = conv2d(x [B, In, H, W], w [Out, In, K, K]) + bias [Out] (bias may be
/// null), ordered on `stream`. Deterministic; allocates nothing.
template <class T>
void conv2d_forward(TensorView<T, 4, cuda> y, TensorView<const std::type_identity_t<T>, 4, cuda> x,
                    TensorView<const std::type_identity_t<T>, 4, cuda> w, const T* bias, const Conv2dParams& p,
                    cudaStream_t stream) {
  RLMED_CHECK(p.stride >= 1 && p.dilation >= 1 && p.padding >= 0, "conv2d_forward (cuda): stride ", p.stride,
              ", dilation ", p.dilation, ", padding ", p.padding, "; expected stride, dilation >= 1, padding >= 0");
  RLMED_CHECK(w.extent(1) == x.extent(1) && w.extent(2) == w.extent(3) && w.extent(2) >= 1,
              "conv2d_forward (cuda): weight ", w.shape(), " must be [Out, In = ", x.extent(1), ", K, K]");
  conv_gpu::ConvDims d{};
  d.batch = x.extent(0);
  d.in_ch = x.extent(1);
  d.out_ch = w.extent(0);
  d.H = x.extent(2);
  d.W = x.extent(3);
  d.K = w.extent(2);
  d.stride = p.stride;
  d.padding = p.padding;
  d.dilation = p.dilation;
  const index_t span = p.dilation * (d.K - 1) + 1;
  RLMED_CHECK(d.H + 2 * p.padding >= span && d.W + 2 * p.padding >= span, "conv2d_forward (cuda): input ", x.shape(),
              " with padding ", p.padding, " is smaller than the dilated kernel (", span, ")");
  d.OH = (d.H + 2 * p.padding - span) / p.stride + 1;
  d.OW = (d.W + 2 * p.padding - span) / p.stride + 1;
  const Shape<4> want{d.batch, d.out_ch, d.OH, d.OW};
  RLMED_CHECK(y.shape() == want, "conv2d_forward (cuda): output shape ", y.shape(), ", expected ", want);
  if (y.size() == 0) return;
  d.patch = (conv_gpu::kTile - 1) * p.stride + (d.K - 1) * p.dilation + 1;
  const std::size_t per_channel = static_cast<std::size_t>(d.patch * d.patch + conv_gpu::kOutTile * d.K * d.K) * sizeof(T);
  const std::int64_t tiles = ((d.OW + conv_gpu::kTile - 1) / conv_gpu::kTile) * ((d.OH + conv_gpu::kTile - 1) / conv_gpu::kTile);
  const std::int64_t oc_blocks = (d.out_ch + conv_gpu::kOutTile - 1) / conv_gpu::kOutTile;
  if (per_channel <= conv_gpu::kSharedBudget && tiles <= 0x7FFFFFFF && oc_blocks <= 65535 && d.batch <= 65535) {
    d.chunk = std::min<std::int64_t>(d.in_ch, static_cast<std::int64_t>(conv_gpu::kSharedBudget / per_channel));
    const std::size_t smem = static_cast<std::size_t>(d.chunk) * per_channel;
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(oc_blocks), static_cast<unsigned>(d.batch));
    conv_gpu::conv2d_tiled_kernel<T><<<grid, conv_gpu::kTile * conv_gpu::kTile, smem, stream>>>(y.data(), x.data(),
                                                                                              w.data(), bias, d);
  } else {
    d.chunk = 1;
    conv_gpu::conv2d_plain_kernel<T><<<grid_for(y.size()), kDefaultBlock, 0, stream>>>(y.data(), x.data(), w.data(),
                                                                                      bias, d);
  }
  RLMED_CUDA_CHECK_LAUNCH();
}


/// dx [B, In, H, W] = ∂L/∂x of y = conv2d(x, w) given dy [B, Out, OH, OW] (OVERWRITTEN, like
/// ConvModule::backward's fresh cache.dx). Stride 1 with p ≤ d(K−1): the tiled forward kernel
/// on dy with the flipped kernel (staged in ws.flipped); otherwise the direct gather.
/// Deterministic; allocates only when ws must grow.
template <class T>
void conv2d_backward_data(TensorView<T, 4, cuda> dx, TensorView<const std::type_identity_t<T>, 4, cuda> dy,
                          TensorView<const std::type_identity_t<T>, 4, cuda> w, const ConvParams& p,
                          ConvWorkspace<T>& ws, cudaStream_t stream) {
  const conv_gpu::ConvGeom g = conv_gpu::make_geom<2>(dx.shape(), w.shape(), p, "conv2d_backward_data (cuda)");
  const Shape<4> want = conv_gpu::output_shape_of<2>(g);
  RLMED_CHECK(dy.shape() == want, "conv2d_backward_data (cuda): output gradient shape ", dy.shape(), ", expected ",
              want, " for input ", dx.shape(), " and weight ", w.shape());
  if (dx.size() == 0) return;
  const index_t K = w.extent(2), span = p.dilation * (K - 1);
  if (p.stride == 1 && p.padding <= span) {
    const index_t n = g.in_ch * g.out_ch * K * K;
    if (ws.flipped.size() < n) ws.flipped.reset(n);
    conv_gpu::flip_transpose_kernel<T><<<grid_for(n), kDefaultBlock, 0, stream>>>(ws.flipped.data(), w.data(),
                                                                                 g.out_ch, g.in_ch, K * K);
    RLMED_CUDA_CHECK_LAUNCH();
    const TensorView<const T, 4, cuda> flipped(ws.flipped.data(), Shape<4>{g.in_ch, g.out_ch, K, K});
    conv2d_forward<T>(dx, dy, flipped, nullptr, ConvParams{1, span - p.padding, p.dilation}, stream);
    return;
  }
  conv_gpu::launch_direct_backward_data<T>(dx.data(), dy.data(), w.data(), g, stream);
}

/// dw [Out, In, K, K] += ∂L/∂w and db [Out] += ∂L/∂b (pass an empty view for no bias) of
/// y = conv2d(x, w) + b given x [B, In, H, W] and dy [B, Out, OH, OW]: ACCUMULATED, like
/// ConvModule::backward into Parameter::grad (zero them first for a plain gradient).
/// Deterministic two-pass reduction; partials in ws (grows on first use, then reused).
template <class T>
void conv2d_backward_weights(TensorView<T, 4, cuda> dw, TensorView<T, 1, cuda> db,
                             TensorView<const std::type_identity_t<T>, 4, cuda> x,
                             TensorView<const std::type_identity_t<T>, 4, cuda> dy, const ConvParams& p,
                             ConvWorkspace<T>& ws, cudaStream_t stream) {
  const conv_gpu::ConvGeom g = conv_gpu::make_geom<2>(x.shape(), dw.shape(), p, "conv2d_backward_weights (cuda)");
  const Shape<4> want = conv_gpu::output_shape_of<2>(g);
  RLMED_CHECK(dy.shape() == want, "conv2d_backward_weights (cuda): output gradient shape ", dy.shape(), ", expected ",
              want, " for input ", x.shape(), " and weight ", dw.shape());
  conv_gpu::check_bias_grad(db, g, "conv2d_backward_weights (cuda)");
  if (dy.size() == 0) return;  // empty batch: nothing to add
  conv_gpu::launch_weight_grad<T>(dw.data(), db.data(), x.data(), dy.data(), g, ws, stream);
}

/// y [B, Out, OD, OH, OW] = conv3d(x [B, In, D, H, W], w [Out, In, K, K, K]) + bias [Out] (bias
/// may be null), ordered on `stream`. Direct kernel, summation order (c, kz, ky, kx) per output;
/// deterministic; allocates nothing.
template <class T>
void conv3d_forward(TensorView<T, 5, cuda> y, TensorView<const std::type_identity_t<T>, 5, cuda> x,
                    TensorView<const std::type_identity_t<T>, 5, cuda> w, const T* bias, const ConvParams& p,
                    cudaStream_t stream) {
  const conv_gpu::ConvGeom g = conv_gpu::make_geom<3>(x.shape(), w.shape(), p, "conv3d_forward (cuda)");
  const Shape<5> want = conv_gpu::output_shape_of<3>(g);
  RLMED_CHECK(y.shape() == want, "conv3d_forward (cuda): output shape ", y.shape(), ", expected ", want);
  if (y.size() == 0) return;
  conv_gpu::launch_direct_forward<T>(y.data(), x.data(), w.data(), bias, g, stream);
}

/// dx [B, In, D, H, W] (OVERWRITTEN) = ∂L/∂x of conv3d given dy [B, Out, OD, OH, OW]: the direct
/// gather over (oc, kz, ky, kx). Deterministic; allocates nothing.
template <class T>
void conv3d_backward_data(TensorView<T, 5, cuda> dx, TensorView<const std::type_identity_t<T>, 5, cuda> dy,
                          TensorView<const std::type_identity_t<T>, 5, cuda> w, const ConvParams& p,
                          cudaStream_t stream) {
  const conv_gpu::ConvGeom g = conv_gpu::make_geom<3>(dx.shape(), w.shape(), p, "conv3d_backward_data (cuda)");
  const Shape<5> want = conv_gpu::output_shape_of<3>(g);
  RLMED_CHECK(dy.shape() == want, "conv3d_backward_data (cuda): output gradient shape ", dy.shape(), ", expected ",
              want, " for input ", dx.shape(), " and weight ", w.shape());
  if (dx.size() == 0) return;
  conv_gpu::launch_direct_backward_data<T>(dx.data(), dy.data(), w.data(), g, stream);
}

/// dw [Out, In, K, K, K] += ∂L/∂w, db [Out] += ∂L/∂b (empty view: no bias) of conv3d given
/// x [B, In, D, H, W] and dy [B, Out, OD, OH, OW]: ACCUMULATED like ConvModule::backward.
template <class T>
void conv3d_backward_weights(TensorView<T, 5, cuda> dw, TensorView<T, 1, cuda> db,
                             TensorView<const std::type_identity_t<T>, 5, cuda> x,
                             TensorView<const std::type_identity_t<T>, 5, cuda> dy, const ConvParams& p,
                             ConvWorkspace<T>& ws, cudaStream_t stream) {
  const conv_gpu::ConvGeom g = conv_gpu::make_geom<3>(x.shape(), dw.shape(), p, "conv3d_backward_weights (cuda)");
  const Shape<5> want = conv_gpu::output_shape_of<3>(g);
  RLMED_CHECK(dy.shape() == want, "conv3d_backward_weights (cuda): output gradient shape ", dy.shape(), ", expected ",
              want, " for input ", x.shape(), " and weight ", dw.shape());
  conv_gpu::check_bias_grad(db, g, "conv3d_backward_weights (cuda)");
  if (dy.size() == 0) return;
  conv_gpu::launch_weight_grad<T>(dw.data(), db.data(), x.data(), dy.data(), g, ws, stream);
}

}  // namespace rlmed::kernels
