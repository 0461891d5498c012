// rlmed/nn/layers/conv_gemm.hpp — tiled im2col + GEMM kernels behind every convolution.
//
// Design: the column matrix of a whole sample is K^d x In x P floats (283 MB for the 480-channel
// head of PixelDRL-MG at 128^2): writing it and reading it back costs more than the GEMM. So the
// output columns are cut into tiles whose column block fits in cache (~1 MiB), and every
// (sample, tile) pair is one work item: its im2col block is built in a per-thread buffer and
// multiplied at once by a single-threaded Eigen GEMM (Eigen does not thread inside an OpenMP
// region). Each output element is written by exactly one work item, so forward results do not
// depend on the schedule. Weight gradients accumulate per thread and are summed in thread order:
// deterministic for a given thread count, which is rlmed's reproducibility contract (same seed,
// same machine). The data gradient of a stride-1 convolution is itself a convolution of dy with
// the flipped, transposed kernel (padding d(K-1) - p), so it reuses the tiled forward.
// The scratch belongs to the module: two threads must not run the same module instance at once
// (A3C workers each own a copy); called from inside another parallel region the kernels run
// serially on scratch slot 0.
//   forward:   y[b][:, tile] = W [Out, KV] * col(x[b])[:, tile] + bias
//   dW:        dW += sum over (b, tile) of dy[b][:, tile] * col(x[b])[:, tile]^T
// Single precision on a CPU with AVX2+FMA or AVX-512 (core/gemm.hpp) skips the column block
// altogether: the weights are packed once per call into the GEMM's A panels, and each work
// item packs its im2col columns straight into B panels (forward: kc x NR slices of col; dW: the
// transposed slices of col^T), with the bias fused into the micro-kernel's first store. The
// forward output is then bit-identical for any thread count. Double precision, and float when
// gemm_isa() is `generic`, take the Eigen path.
#pragma once

#include <algorithm>
#include <type_traits>
#include <vector>

#include "rlmed/core/gemm.hpp"
#include "rlmed/core/interop.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/nn/layers/window.hpp"

namespace rlmed::nn {

namespace detail {

/// Columns [p0, p1) of im2col(x) into col [KV, p1 - p0] (row-major), zero outside the input.
template <class T>
void im2col_columns(const T* x, index_t channels, const Window3& w, index_t p0, index_t p1, T* col) {
  const index_t kvol = w.kernel_size(), isize = w.in_size(), n = p1 - p0;
  const index_t oxy = w.out[1] * w.out[2];
  for (index_t row = 0; row < channels * kvol; ++row) {
    const index_t c = row / kvol;
    index_t k = row % kvol;
    const index_t kx = k % w.kernel[2];
    k /= w.kernel[2];
    const index_t ky = k % w.kernel[1];
    const index_t kz = k / w.kernel[1];
    const T* xc = x + c * isize;
    T* out = col + row * n;
    index_t oz = p0 / oxy, oy = (p0 % oxy) / w.out[2], ox = p0 % w.out[2];
    index_t j = 0;
    while (j < n) {
      // One run along x within the current output row.
      const index_t run = std::min(n - j, w.out[2] - ox);
      const index_t iz = oz * w.stride[0] - w.pad[0] + kz * w.dil[0];
      const index_t iy = oy * w.stride[1] - w.pad[1] + ky * w.dil[1];
      T* o = out + j;
      if (iz < 0 || iz >= w.in[0] || iy < 0 || iy >= w.in[1]) {
        std::fill(o, o + run, T(0));
      } else {
        const T* xr = xc + (iz * w.in[1] + iy) * w.in[2];
        const index_t base = kx * w.dil[2] - w.pad[2];
        for (index_t t = 0; t < run; ++t) {
          const index_t ix = base + (ox + t) * w.stride[2];
          o[t] = (ix >= 0 && ix < w.in[2]) ? xr[ix] : T(0);
        }
      }
      j += run;
      ox = 0;
      if (++oy == w.out[1]) {
        oy = 0;
        ++oz;
      }
    }
  }
}

/// Output position (oz, oy, ox) of flat output index p.
struct OutPos {
  index_t z, y, x;
};
inline OutPos out_pos(const Window3& w, index_t p) {
  const index_t oxy = w.out[1] * w.out[2];
  return {p / oxy, (p % oxy) / w.out[2], p % w.out[2]};
}

/// im2col row (kz, ky, kx) of one input channel xc for `count` output positions starting at
/// `pos`, written to out[t * out_stride]; zero where the window reads padding.
inline void im2col_row_segment(const float* xc, const Window3& w, index_t kz, index_t ky, index_t kx, OutPos pos,
                               index_t count, float* out, index_t out_stride) {
  index_t j = 0;
  while (j < count) {
    const index_t run = std::min(count - j, w.out[2] - pos.x);
    const index_t iz = pos.z * w.stride[0] - w.pad[0] + kz * w.dil[0];
    const index_t iy = pos.y * w.stride[1] - w.pad[1] + ky * w.dil[1];
    float* o = out + j * out_stride;
    if (iz < 0 || iz >= w.in[0] || iy < 0 || iy >= w.in[1]) {
      for (index_t t = 0; t < run; ++t) o[t * out_stride] = 0.0f;
    } else {
      const float* xr = xc + (iz * w.in[1] + iy) * w.in[2];
      const index_t ix0 = pos.x * w.stride[2] - w.pad[2] + kx * w.dil[2];
      if (w.stride[2] == 1) {
        const index_t lo = std::clamp<index_t>(-ix0, 0, run), hi = std::clamp<index_t>(w.in[2] - ix0, lo, run);
        if (out_stride == 1) {
          std::fill(o, o + lo, 0.0f);
          std::copy(xr + ix0 + lo, xr + ix0 + hi, o + lo);
          std::fill(o + hi, o + run, 0.0f);
        } else {
          for (index_t t = 0; t < lo; ++t) o[t * out_stride] = 0.0f;
          for (index_t t = lo; t < hi; ++t) o[t * out_stride] = xr[ix0 + t];
          for (index_t t = hi; t < run; ++t) o[t * out_stride] = 0.0f;
        }
      } else {
        for (index_t t = 0; t < run; ++t) {
          const index_t ix = ix0 + t * w.stride[2];
          o[t * out_stride] = (ix >= 0 && ix < w.in[2]) ? xr[ix] : 0.0f;
        }
      }
    }
    j += run;
    pos.x = 0;
    if (++pos.y == w.out[1]) {
      pos.y = 0;
      ++pos.z;
    }
  }
}

/// Row `row` of the column matrix as (channel, kz, ky, kx), stepped row by row.
struct ColRow {
  index_t c, kz, ky, kx;
  ColRow(const Window3& w, index_t row) {
    const index_t kvol = w.kernel_size();
    c = row / kvol;
    index_t k = row % kvol;
    kx = k % w.kernel[2];
    k /= w.kernel[2];
    ky = k % w.kernel[1];
    kz = k / w.kernel[1];
  }
  void next(const Window3& w) {
    if (++kx < w.kernel[2]) return;
    kx = 0;
    if (++ky < w.kernel[1]) return;
    ky = 0;
    if (++kz < w.kernel[0]) return;
    kz = 0;
    ++c;
  }
};

/// NR (<= 64) zeros: the B row of a window tap that lies wholly in the padding.
inline const float* zero_row() {
  alignas(64) static const float zeros[64] = {};
  return zeros;
}

/// Output columns per work item of the packed-GEMM path: no column block to bound, so tiles
/// only balance the threads (>= 4 items per thread where the size allows), multiples of 32.
inline index_t packed_tile_columns(index_t batch, index_t p, index_t max_tile) {
  const index_t want_items = 4 * static_cast<index_t>(max_threads());
  index_t tiles = std::max<index_t>((want_items + batch - 1) / batch, (p + max_tile - 1) / max_tile);
  tiles = std::max<index_t>(1, std::min(tiles, (p + 31) / 32));
  const index_t tile = ((p + tiles - 1) / tiles + 31) / 32 * 32;
  return std::min(tile, p);
}

/// Scratch slot of the calling thread: its OpenMP thread number inside our own parallel_for,
/// 0 when parallel_for ran serially because it was nested in someone else's parallel region.
inline std::size_t scratch_slot(bool nested) { return nested ? 0 : static_cast<std::size_t>(thread_index()); }

/// Output columns per tile: the column block (KV x tile) stays around 1 MiB.
inline index_t conv_tile_columns(index_t kv, index_t p) {
  const index_t target = (index_t(1) << 18) / std::max<index_t>(kv, 1);
  const index_t tile = std::max<index_t>(64, (target + 15) / 16 * 16);
  return std::min(tile, p);
}

}  // namespace detail

/// Scratch of the tiled kernels, one buffer per thread; kept by the module between calls.
template <class T>
struct ConvScratch {
  std::vector<Tensor<T, 2>> col;      // per thread [KV, tile]
  std::vector<Tensor<T, 2>> partial;  // per thread [Out, KV] weight-gradient partials
  Tensor<T, 2> flipped;               // [In, Out * K^d] transposed flipped kernel
  std::vector<GemmBuffers> gemm;      // per thread packing buffers of the packed-GEMM path
  std::vector<float> packed_weights;  // A panels of the weights (packed-GEMM forward)
  void ensure_threads() {
    const auto n = static_cast<std::size_t>(max_threads());
    if (col.size() < n) col.resize(n);
    if (partial.size() < n) partial.resize(n);
    if (gemm.size() < n) gemm.resize(n);
  }
};

namespace detail {

/// Packed-GEMM forward: y[b][:, tile] = Wmat * col(x[b])[:, tile] (+ bias), im2col fused into
/// the B panels, which mostly are row pointers straight into x (stride 1 along x); the weights
/// are packed once per call.
inline void conv_forward_packed(const float* x, index_t batch, index_t in_ch, const Window3& w, const float* wmat,
                                index_t out_ch, const float* bias, float* y, ConvScratch<float>& scratch) {
  const index_t P = w.out_size(), KV = in_ch * w.kernel_size(), isize = w.in_size();
  const GemmKernel kern = gemm_kernel();
  scratch.ensure_threads();
  const bool nested = in_parallel_region();
  const index_t Mpad = (out_ch + kern.mr - 1) / kern.mr * kern.mr;
  float* packed_w = gemm_detail::aligned_floats(scratch.packed_weights, gemm_prepacked_a_size(out_ch, KV, kern.mr));
  gemm_prepack_a(wmat, KV, 1, out_ch, KV, kern.mr, packed_w);
  const index_t tile = packed_tile_columns(batch, P, 4096), tiles = (P + tile - 1) / tile;
  const bool pointwise = w.is_pointwise();
  parallel_for(0, batch * tiles, [&](index_t item) {
    const index_t b = item / tiles, p0 = (item % tiles) * tile, n = std::min(P, p0 + tile) - p0;
    const float* xb = x + b * in_ch * isize;
    gemm_blocked<true>(
        kern, out_ch, n, KV,
        [&](index_t i0, index_t, index_t k0, index_t kc, float*) {
          return static_cast<const float*>(packed_w + k0 * Mpad + i0 * kc);
        },
        [&](index_t k0, index_t kc, index_t j0, index_t nr, float* dst, const float** rows) {
          // Row k of the panel is im2col row k0 + k at output columns p0 + j0 ..: where those NR
          // values are NR consecutive input floats (or all padding) point at them, else copy.
          const index_t NR = kern.nr;
          const auto copied = [&](index_t k) {
            std::fill(dst + k * NR + nr, dst + (k + 1) * NR, 0.0f);
            rows[k] = dst + k * NR;
          };
          if (pointwise) {
            for (index_t k = 0; k < kc; ++k) {
              const float* src = xb + (k0 + k) * isize + p0 + j0;
              if (nr == NR) {
                rows[k] = src;
              } else {
                std::copy(src, src + nr, dst + k * NR);
                copied(k);
              }
            }
            return;
          }
          const OutPos pos = out_pos(w, p0 + j0);
          const bool contiguous = nr == NR && pos.x + NR <= w.out[2] && w.stride[2] == 1;
          ColRow row(w, k0);
          for (index_t k = 0; k < kc; ++k, row.next(w)) {
            const float* xc = xb + row.c * isize;
            if (contiguous) {
              const index_t iz = pos.z * w.stride[0] - w.pad[0] + row.kz * w.dil[0];
              const index_t iy = pos.y * w.stride[1] - w.pad[1] + row.ky * w.dil[1];
              const index_t ix0 = pos.x - w.pad[2] + row.kx * w.dil[2];
              if (iz < 0 || iz >= w.in[0] || iy < 0 || iy >= w.in[1]) {
                rows[k] = zero_row();
                continue;
              }
              if (ix0 >= 0 && ix0 + NR <= w.in[2]) {
                rows[k] = xc + (iz * w.in[1] + iy) * w.in[2] + ix0;
                continue;
              }
            }
            im2col_row_segment(xc, w, row.kz, row.ky, row.kx, pos, nr, dst + k * NR, 1);
            copied(k);
          }
        },
        y + b * out_ch * P + p0, P, false, bias, scratch.gemm[scratch_slot(nested)]);
  }, 1);
}

/// Packed-GEMM weight gradient: dW += sum over (b, tile) of dy[b][:, tile] col(x[b])[:, tile]^T,
/// per-thread partials summed in thread order (deterministic for a given thread count).
inline void conv_weight_grad_packed(const float* x, const float* dy, index_t batch, index_t in_ch, const Window3& w,
                                    index_t out_ch, float* dw, ConvScratch<float>& scratch) {
  const index_t P = w.out_size(), KV = in_ch * w.kernel_size(), isize = w.in_size();
  const GemmKernel kern = gemm_kernel();
  scratch.ensure_threads();
  const bool nested = in_parallel_region();
  const int threads = nested ? 1 : max_threads();
  for (int t = 0; t < threads; ++t) {
    auto& part = scratch.partial[static_cast<std::size_t>(t)];
    part.resize(Shape<2>{out_ch, KV});
    fill(part.view(), 0.0f);
  }
  const index_t tile = packed_tile_columns(batch, P, 2048), tiles = (P + tile - 1) / tile;
  parallel_for(0, batch * tiles, [&](index_t item) {
    const index_t b = item / tiles, p0 = (item % tiles) * tile, n = std::min(P, p0 + tile) - p0;
    const float* xb = x + b * in_ch * isize;
    const float* dyb = dy + b * out_ch * P + p0;  // [Out, n] with row stride P
    gemm_blocked(
        kern, out_ch, KV, n,
        [&](index_t i0, index_t m, index_t k0, index_t kc, float* dst) {
          gemm_pack_a(dyb, P, 1, i0, m, k0, kc, kern.mr, dst);
          return static_cast<const float*>(dst);
        },
        [&](index_t k0, index_t kc, index_t j0, index_t nr, float* dst) {
          // Panel of col^T: rows = output positions p0 + k0 .., columns = col rows j0 .. j0 + nr.
          const index_t NR = kern.nr;
          const OutPos pos = out_pos(w, p0 + k0);
          ColRow row(w, j0);
          for (index_t r = 0; r < nr; ++r, row.next(w)) {
            if (w.is_pointwise()) {
              const float* src = xb + (j0 + r) * isize + p0 + k0;
              for (index_t k = 0; k < kc; ++k) dst[k * NR + r] = src[k];
            } else {
              im2col_row_segment(xb + row.c * isize, w, row.kz, row.ky, row.kx, pos, kc, dst + r, NR);
            }
          }
          for (index_t r = nr; r < NR; ++r)
            for (index_t k = 0; k < kc; ++k) dst[k * NR + r] = 0.0f;
        },
        scratch.partial[scratch_slot(nested)].data(), KV, true, nullptr, scratch.gemm[scratch_slot(nested)]);
  }, 1);
  for (int t = 0; t < threads; ++t) {
    const float* part = scratch.partial[static_cast<std::size_t>(t)].data();
    for (index_t i = 0; i < out_ch * KV; ++i) dw[i] += part[i];
  }
}

}  // namespace detail

/// y[b] = Wmat * im2col(x[b]) (+ bias): x [B, In, in...], Wmat [Out, In * kvol], y [B, Out, out...].
template <class T>
void conv_forward_tiled(const T* x, index_t batch, index_t in_ch, const Window3& w, const T* wmat, index_t out_ch,
                        const T* bias, T* y, ConvScratch<T>& scratch) {
  if constexpr (std::is_same_v<T, float>) {
    if (gemm_isa() != GemmIsa::generic) return detail::conv_forward_packed(x, batch, in_ch, w, wmat, out_ch, bias, y, scratch);
  }
  const index_t P = w.out_size(), KV = in_ch * w.kernel_size(), isize = w.in_size();
  const index_t tile = detail::conv_tile_columns(KV, P), tiles = (P + tile - 1) / tile;
  scratch.ensure_threads();
  const bool nested = in_parallel_region();
  const Eigen::Map<const EigenRowMajorMatrix<T>> W(wmat, out_ch, KV);
  parallel_for(0, batch * tiles, [&](index_t item) {
    const index_t b = item / tiles, p0 = (item % tiles) * tile, p1 = std::min(P, p0 + tile), n = p1 - p0;
    const T* xb = x + b * in_ch * isize;
    Eigen::Map<EigenRowMajorMatrix<T>, 0, Eigen::OuterStride<>> yt(y + b * out_ch * P + p0, out_ch, n,
                                                                    Eigen::OuterStride<>(P));
    if (w.is_pointwise()) {
      const Eigen::Map<const EigenRowMajorMatrix<T>, 0, Eigen::OuterStride<>> xt(xb + p0, in_ch, n, Eigen::OuterStride<>(P));
      yt.noalias() = W * xt;
    } else {
      auto& col = scratch.col[detail::scratch_slot(nested)];
      col.resize(Shape<2>{KV, n});
      detail::im2col_columns(xb, in_ch, w, p0, p1, col.data());
      yt.noalias() = W * as_eigen_matrix(col.view());
    }
    if (bias) yt.colwise() += Eigen::Map<const EigenVector<T>>(bias, out_ch);
  }, 1);
}

/// dW [Out, In * kvol] += sum_b dy[b] * im2col(x[b])^T, tiled and reduced in thread order.
template <class T>
void conv_weight_grad_tiled(const T* x, const T* dy, index_t batch, index_t in_ch, const Window3& w, index_t out_ch,
                            T* dw, ConvScratch<T>& scratch) {
  if constexpr (std::is_same_v<T, float>) {
    if (gemm_isa() != GemmIsa::generic) return detail::conv_weight_grad_packed(x, dy, batch, in_ch, w, out_ch, dw, scratch);
  }
  const index_t P = w.out_size(), KV = in_ch * w.kernel_size(), isize = w.in_size();
  const index_t tile = detail::conv_tile_columns(KV, P), tiles = (P + tile - 1) / tile;
  scratch.ensure_threads();
  const bool nested = in_parallel_region();
  const int threads = nested ? 1 : max_threads();
  for (int t = 0; t < threads; ++t) {
    auto& part = scratch.partial[static_cast<std::size_t>(t)];
    part.resize(Shape<2>{out_ch, KV});
    fill(part.view(), T(0));
  }
  parallel_for(0, batch * tiles, [&](index_t item) {
    const index_t b = item / tiles, p0 = (item % tiles) * tile, p1 = std::min(P, p0 + tile), n = p1 - p0;
    auto& part = scratch.partial[detail::scratch_slot(nested)];
    const Eigen::Map<const EigenRowMajorMatrix<T>, 0, Eigen::OuterStride<>> g(dy + b * out_ch * P + p0, out_ch, n,
                                                                           Eigen::OuterStride<>(P));
    const T* xb = x + b * in_ch * isize;
    if (w.is_pointwise()) {
      const Eigen::Map<const EigenRowMajorMatrix<T>, 0, Eigen::OuterStride<>> xt(xb + p0, in_ch, n, Eigen::OuterStride<>(P));
      as_eigen_matrix(part.view()).noalias() += g * xt.transpose();
    } else {
      auto& col = scratch.col[detail::scratch_slot(nested)];
      col.resize(Shape<2>{KV, n});
      detail::im2col_columns(xb, in_ch, w, p0, p1, col.data());
      as_eigen_matrix(part.view()).noalias() += g * as_eigen_matrix(col.view()).transpose();
    }
  }, 1);
  Eigen::Map<EigenRowMajorMatrix<T>> DW(dw, out_ch, KV);
  for (int t = 0; t < threads; ++t) DW += as_eigen_matrix(scratch.partial[static_cast<std::size_t>(t)].view());
}

}  // namespace rlmed::nn
