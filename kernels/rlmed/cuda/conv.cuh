// rlmed/cuda/conv.cuh — dilated 2D convolution forward on the GPU (direct, deterministic).
//
// Design decisions:
//  * Semantics are nn::ConvModule<2, ...>'s (PyTorch's conv2d): weight [Out, In, K, K], optional
//    bias [Out], run-time stride, zero padding and dilation, y = (H + 2p − d(K−1) − 1)/s + 1.
//  * Direct convolution with shared-memory tiles: a block computes a 16 × 16 tile of output
//    pixels for kOutTile output channels (each thread one pixel, kOutTile register
//    accumulators). Input channels are walked in chunks: the chunk's input patch (tile plus
//    dilated halo) and its weights are staged in shared memory, then every thread runs its
//    K·K·chunk multiply-adds from shared memory. Each output is summed by one thread in the
//    fixed order (input channel, ky, kx): deterministic, no atomics, no split-K.
//  * When even one input channel's patch does not fit the shared-memory budget (large strides ×
//    dilations) a plain one-thread-per-output kernel with the same summation order runs instead.
//  * Forward only (priority 5 of issue 8); backward-data / backward-weights are not written yet.
// Roofline (PixelRL's 64 → 64 channels, 3 × 3, dilation 1–4, 256², fp32): 2·64·9 = 1152 FLOP per
// output element; with the tile reuse each input element is read from DRAM about once per
// block column of Out/kOutTile blocks, so ≈ 4·(1 + Out/kOutTile·(halo overhead)) B per output:
// arithmetic intensity ≫ 18 FLOP/B, i.e. compute-bound on fp32 FMA throughput (no tensor cores:
// cuDNN's TF32/implicit-GEMM kernels will be faster; this kernel is the deterministic reference).
// CPU reference: nn::ConvModule<2, In, Out, K, T>::forward in rlmed/nn/layers/conv.hpp.
#pragma once

#include <algorithm>
#include <cstdint>

#include "rlmed/core/tensor_cuda.hpp"
#include "rlmed/cuda/launch.cuh"

namespace rlmed::kernels {

/// Stride, zero padding and dilation of a square 2D convolution.
struct Conv2dParams {
  index_t stride = 1;
  index_t padding = 0;
  index_t dilation = 1;
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

}  // namespace rlmed::kernels
