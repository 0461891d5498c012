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
// altogether: the micro-kernel reads the weights (forward, data gradient) and dy (weight
// gradient) in place as strided A rows — no packing pass over them — and each work item packs
// its im2col columns straight into B panels (forward: kc x NR slices of col, mostly row
// pointers into x; dW: slices of col^T, transposed 16 x 16 in registers), with the bias fused
// into the micro-kernel's first store. Forward work items are few and large (each streams the
// whole weight matrix through L2). Where dW has >= 8 column panels per thread, each work item
// owns a panel of dW and sums all samples into it: no partials, bits independent of the thread
// count. The forward output is bit-identical for any thread count. Double precision, and float
// when gemm_isa() is `generic`, take the Eigen path.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "rlmed/core/gemm.hpp"
#include "rlmed/core/interop.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/nn/layers/window.hpp"

// Full unrolling keeps the 16 x 16 transpose in registers; nvcc (which also reads this header
// through the GPU tests) does not know GCC's pragma.
#if defined(__CUDACC__) || !defined(__GNUC__) || defined(__clang__)
#define RLMED_CONV_UNROLL(n)
#else
#define RLMED_CONV_UNROLL_STR(x) #x
#define RLMED_CONV_UNROLL(n) _Pragma(RLMED_CONV_UNROLL_STR(GCC unroll n))
#endif

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

#if RLMED_GEMM_X86
/// im2col_row_segment() for stride 1 along x into contiguous memory, 16 lanes at a time: each
/// piece is one masked load (lanes in the left/right padding read as zero; AVX-512 masked loads
/// do not touch masked-off addresses) and one store. Narrow maps (16^2 at NR = 32) otherwise
/// spend more time in the per-run copy calls than in the multiply-adds.
__attribute__((target("avx512f"))) inline void im2col_row_segment_x1_avx512(const float* xc, const Window3& w,
                                                                             index_t kz, index_t ky, index_t kx,
                                                                             OutPos pos, index_t count, float* out) {
  index_t j = 0;
  while (j < count) {
    const index_t run = std::min(count - j, w.out[2] - pos.x);
    const index_t iz = pos.z * w.stride[0] - w.pad[0] + kz * w.dil[0];
    const index_t iy = pos.y * w.stride[1] - w.pad[1] + ky * w.dil[1];
    float* o = out + j;
    if (iz < 0 || iz >= w.in[0] || iy < 0 || iy >= w.in[1]) {
      for (index_t t = 0; t < run; t += 16)
        _mm512_mask_storeu_ps(o + t, static_cast<__mmask16>((1u << std::min<index_t>(16, run - t)) - 1u),
                              _mm512_setzero_ps());
    } else {
      const auto row_addr = reinterpret_cast<std::uintptr_t>(xc + (iz * w.in[1] + iy) * w.in[2]);
      const index_t ix0 = pos.x - w.pad[2] + kx * w.dil[2];
      for (index_t t = 0; t < run; t += 16) {
        const index_t n = std::min<index_t>(16, run - t);
        const index_t lo = std::clamp<index_t>(-(ix0 + t), 0, n), hi = std::clamp<index_t>(w.in[2] - (ix0 + t), lo, n);
        const auto mask = static_cast<__mmask16>(((1u << hi) - 1u) & ~((1u << lo) - 1u));
        // Address arithmetic in integers: lanes before the row start are never dereferenced.
        const auto* src = reinterpret_cast<const float*>(row_addr + static_cast<std::uintptr_t>((ix0 + t) * 4));
        _mm512_mask_storeu_ps(o + t, static_cast<__mmask16>((1u << n) - 1u), _mm512_maskz_loadu_ps(mask, src));
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

/// dst[c * ld_dst + r] = src[r * ld_src + c] for a 16 x 16 block (r, c < 16), in registers.
__attribute__((target("avx512f"))) inline void transpose16x16_avx512(const float* src, index_t ld_src, float* dst,
                                                                      index_t ld_dst) {
  __m512 r[16], t[16];
RLMED_CONV_UNROLL(16)
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ld_src);
  // Within each 128-bit lane: pairs of rows interleaved, then groups of four rows.
  // (All-lanes masked forms throughout: GCC 12's unmasked unpack/shuffle intrinsics trip
  // -Wuninitialized.)
RLMED_CONV_UNROLL(8)
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_mask_unpacklo_ps(r[2 * i], 0xFFFF, r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_mask_unpackhi_ps(r[2 * i], 0xFFFF, r[2 * i], r[2 * i + 1]);
  }
RLMED_CONV_UNROLL(4)
  for (int g = 0; g < 4; ++g) {  // u[4g + j] lane L = rows 4g..4g+3 at column 4L + j
    r[4 * g + 0] = _mm512_mask_shuffle_ps(t[4 * g], 0xFFFF, t[4 * g], t[4 * g + 2], 0x44);
    r[4 * g + 1] = _mm512_mask_shuffle_ps(t[4 * g], 0xFFFF, t[4 * g], t[4 * g + 2], 0xEE);
    r[4 * g + 2] = _mm512_mask_shuffle_ps(t[4 * g + 1], 0xFFFF, t[4 * g + 1], t[4 * g + 3], 0x44);
    r[4 * g + 3] = _mm512_mask_shuffle_ps(t[4 * g + 1], 0xFFFF, t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  // Across lanes: column 4L + j gathers lane L of r[j], r[4 + j], r[8 + j], r[12 + j].
RLMED_CONV_UNROLL(4)
  for (int j = 0; j < 4; ++j) {
    const __m512 v_even = _mm512_mask_shuffle_f32x4(r[j], 0xFFFF, r[j], r[4 + j], 0x88), v_odd = _mm512_mask_shuffle_f32x4(r[j], 0xFFFF, r[j], r[4 + j], 0xDD);
    const __m512 w_even = _mm512_mask_shuffle_f32x4(r[8 + j], 0xFFFF, r[8 + j], r[12 + j], 0x88),
                 w_odd = _mm512_mask_shuffle_f32x4(r[8 + j], 0xFFFF, r[8 + j], r[12 + j], 0xDD);
    _mm512_storeu_ps(dst + (0 + j) * ld_dst, _mm512_mask_shuffle_f32x4(v_even, 0xFFFF, v_even, w_even, 0x88));
    _mm512_storeu_ps(dst + (4 + j) * ld_dst, _mm512_mask_shuffle_f32x4(v_odd, 0xFFFF, v_odd, w_odd, 0x88));
    _mm512_storeu_ps(dst + (8 + j) * ld_dst, _mm512_mask_shuffle_f32x4(v_even, 0xFFFF, v_even, w_even, 0xDD));
    _mm512_storeu_ps(dst + (12 + j) * ld_dst, _mm512_mask_shuffle_f32x4(v_odd, 0xFFFF, v_odd, w_odd, 0xDD));
  }
}
#endif

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

/// Output columns per work item of the packed-GEMM path, a multiple of 32. Few large items:
/// every item streams the whole weight matrix through L2 once per K block, so the fewest
/// items that keep every thread equally busy (a multiple of the thread count when the size
/// allows) and stay <= max_tile columns.
inline index_t packed_tile_columns(index_t batch, index_t p, index_t max_tile) {
  const index_t threads = static_cast<index_t>(max_threads()), max_tiles = std::max<index_t>(1, (p + 31) / 32);
  index_t tiles = std::min(max_tiles, (p + max_tile - 1) / max_tile);
  while (tiles < max_tiles && (batch * tiles) % threads != 0) ++tiles;
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
  std::vector<std::vector<float>> col_rows;  // per thread [NR, kc] im2col rows before transposing
  void ensure_threads() {
    const auto n = static_cast<std::size_t>(max_threads());
    if (col.size() < n) col.resize(n);
    if (partial.size() < n) partial.resize(n);
    if (gemm.size() < n) gemm.resize(n);
    if (col_rows.size() < n) col_rows.resize(n);
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
  const index_t tile = packed_tile_columns(batch, P, 4096), tiles = (P + tile - 1) / tile;
  const bool pointwise = w.is_pointwise();
  [[maybe_unused]] const bool x_unit_stride_avx512 = kern.isa == GemmIsa::avx512 && w.stride[2] == 1;
  parallel_for(0, batch * tiles, [&](index_t item) {
    const index_t b = item / tiles, p0 = (item % tiles) * tile, n = std::min(P, p0 + tile) - p0;
    const float* xb = x + b * in_ch * isize;
    gemm_blocked<true>(
        kern, out_ch, n, KV,
        [&](index_t i0, index_t, index_t k0, index_t, float*) { return GemmStridedA{wmat + i0 * KV + k0, KV}; },
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
#if RLMED_GEMM_X86
            if (x_unit_stride_avx512)
              im2col_row_segment_x1_avx512(xc, w, row.kz, row.ky, row.kx, pos, nr, dst + k * NR);
            else
#endif
              im2col_row_segment(xc, w, row.kz, row.ky, row.kx, pos, nr, dst + k * NR, 1);
            copied(k);
          }
        },
        y + b * out_ch * P + p0, P, false, bias, scratch.gemm[scratch_slot(nested)]);
  }, 1);
}

/// B panel of col(x_b)^T for the weight gradient: dst[k][r] = col[j0 + r][p0 + k] (k < kc,
/// r < nr; zero for r >= nr). With AVX-512 and stride 1 along x the NR im2col rows are copied
/// contiguously (masked loads) and transposed 16 x 16 in registers; otherwise scalar.
inline void pack_col_transposed_panel(const float* xb, index_t isize, const Window3& w, index_t j0, index_t nr,
                                      index_t p0, index_t kc, index_t NR, float* dst, float* rows_tmp) {
  const OutPos pos = out_pos(w, p0);
  ColRow row(w, j0);
#if RLMED_GEMM_X86
  if (rows_tmp != nullptr && NR == 32) {
    const index_t ld = (kc + 15) / 16 * 16;
    for (index_t r = 0; r < nr; ++r, row.next(w))
      im2col_row_segment_x1_avx512(xb + row.c * isize, w, row.kz, row.ky, row.kx, pos, kc, rows_tmp + r * ld);
    for (index_t r = nr; r < NR; ++r) std::fill(rows_tmp + r * ld, rows_tmp + r * ld + kc, 0.0f);
    index_t k = 0;
    for (; k + 16 <= kc; k += 16) {
      transpose16x16_avx512(rows_tmp + k, ld, dst + k * NR, NR);
      transpose16x16_avx512(rows_tmp + 16 * ld + k, ld, dst + k * NR + 16, NR);
    }
    for (; k < kc; ++k)
      for (index_t r = 0; r < NR; ++r) dst[k * NR + r] = rows_tmp[r * ld + k];
    return;
  }
#endif
  for (index_t r = 0; r < nr; ++r, row.next(w)) {
    if (w.is_pointwise()) {
      const float* src = xb + (j0 + r) * isize + p0;
      for (index_t k = 0; k < kc; ++k) dst[k * NR + r] = src[k];
    } else {
      im2col_row_segment(xb + row.c * isize, w, row.kz, row.ky, row.kx, pos, kc, dst + r, NR);
    }
  }
  for (index_t r = nr; r < NR; ++r)
    for (index_t k = 0; k < kc; ++k) dst[k * NR + r] = 0.0f;
}

/// Packed-GEMM weight gradient split over the columns of dW (the rows of the column matrix):
/// one work item per NR-column panel of dW sums every sample's pixels into it, samples and K
/// blocks in order. No per-thread partials, no reduction pass, and the bits do not depend on
/// the thread count. dy is packed once per call (per sample) into the GEMM's A panels.
inline void conv_weight_grad_packed_columns(const float* x, const float* dy, index_t batch, index_t in_ch,
                                            const Window3& w, index_t out_ch, float* dw, ConvScratch<float>& scratch) {
  const index_t P = w.out_size(), KV = in_ch * w.kernel_size(), isize = w.in_size();
  const GemmKernel kern = gemm_kernel();
  const index_t NR = kern.nr;
  scratch.ensure_threads();
  const bool nested = in_parallel_region();
  const bool transpose_in_registers = kern.isa == GemmIsa::avx512 && NR == 32 && w.stride[2] == 1;
  const index_t panels = (KV + NR - 1) / NR, KC = gemm_k_block(P);
  parallel_for(0, panels, [&](index_t panel) {
    const index_t j0 = panel * NR, n = std::min(NR, KV - j0);
    const std::size_t slot = scratch_slot(nested);
    float* rows_tmp =
        transpose_in_registers ? gemm_detail::aligned_floats(scratch.col_rows[slot], NR * ((KC + 15) / 16 * 16)) : nullptr;
    for (index_t b = 0; b < batch; ++b) {
      const float* xb = x + b * in_ch * isize;
      const float* dyb = dy + b * out_ch * P;  // [Out, P], read in place as the A operand
      gemm_blocked(
          kern, out_ch, n, P, [&](index_t i0, index_t, index_t k0, index_t, float*) { return GemmStridedA{dyb + i0 * P + k0, P}; },
          [&](index_t k0, index_t kc, index_t jj, index_t nr, float* dst) {
            pack_col_transposed_panel(xb, isize, w, j0 + jj, nr, k0, kc, NR, dst, rows_tmp);
          },
          dw + j0, KV, true, nullptr, scratch.gemm[slot]);
    }
  }, 1);
}

/// Packed-GEMM weight gradient: dW += sum over (b, tile) of dy[b][:, tile] col(x[b])[:, tile]^T,
/// per-thread partials summed in thread order (deterministic for a given thread count). Used
/// where dW has too few column panels to keep every thread busy (first layers, 1x1 heads).
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
        [&](index_t i0, index_t, index_t k0, index_t, float*) { return GemmStridedA{dyb + i0 * P + k0, P}; },
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
    if (gemm_isa() != GemmIsa::generic) {
      const index_t panels = (in_ch * w.kernel_size() + gemm_kernel().nr - 1) / gemm_kernel().nr;
      if (panels >= 8 * static_cast<index_t>(max_threads()))
        return detail::conv_weight_grad_packed_columns(x, dy, batch, in_ch, w, out_ch, dw, scratch);
      return detail::conv_weight_grad_packed(x, dy, batch, in_ch, w, out_ch, dw, scratch);
    }
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
