// rlmed/core/gemm.hpp — packed single-precision GEMM with AVX-512 / AVX2+FMA micro-kernels.
//
// Design decisions:
//  * BLIS-style: A is packed in MR-row panels, B in NR-column panels (k-major inside a panel),
//    both zero-padded at the edges, so the micro-kernel never branches on shape; it keeps the
//    MR x NR tile of C in vector registers for the whole k block and touches C once per block.
//  * A may also be read in place as strided rows (GemmStridedA; lda != 0 in the micro-kernel):
//    for convolution weights and dy this measured as fast as packed panels and saves a pass.
//  * Packing is a functor (pack_a / pack_b below): convolutions pack im2col columns straight
//    into B panels (nn/layers/conv_gemm.hpp) and pre-pack the weights once per call, so no
//    column matrix is ever written.
//  * Loop order per call: M blocks (MC) -> K blocks (balanced, at most KC_MAX) -> one B panel
//    (stays in L1) -> every A panel of the block (stream from L2).
//  * Determinism: element (i, j) is bias + the k blocks summed in order, each block accumulated
//    k by k in one register lane. The blocking depends on K and the kernel only, never on N
//    tiling, thread count or schedule: results are bit-identical for any thread count, given the
//    same kernel (ISA). Different ISAs round differently.
//  * Kernels are compiled with __attribute__((target)) and chosen at run time from cpuid, so
//    builds without -march still get them; set_gemm_isa() (or RLMED_GEMM=generic|avx2|avx512 in
//    the environment) forces one, which is how tests exercise every path. `generic` is portable
//    C++ (and tells convolutions to use their Eigen path instead).
//  * Single precision only: double (gradient checks) stays on Eigen.
//  * Buffers: callers hand a GemmBuffers (grown, never shrunk); the convenience gemm() uses a
//    thread_local one, so steady-state calls do not allocate.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "rlmed/core/config.hpp"
#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RLMED_GEMM_X86 1
#include <immintrin.h>
#else
#define RLMED_GEMM_X86 0
#endif

namespace rlmed {

enum class GemmIsa { generic = 0, avx2 = 1, avx512 = 2 };

inline const char* gemm_isa_name(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::avx512: return "avx512";
    case GemmIsa::avx2: return "avx2";
    default: return "generic";
  }
}

/// Micro-kernel: C[mr, nr] (+)= A[mr, kc] * Bpanel[kc, NR]. A is a packed panel (lda == 0:
/// element (r, k) at a[k * MR + r]) or lda-strided rows read in place (element (r, k) at
/// a[r * lda + k]; rows >= mr are never read). When !accumulate the tile is overwritten and
/// initialised with bias[r] (if bias) before the products are added.
using GemmMicroKernel = void (*)(index_t kc, const float* a, index_t lda, const float* b, float* c, index_t ldc, int mr,
                                 int nr, bool accumulate, const float* bias);

/// The same with B given as kc row pointers, each to NR readable floats (k-th row of the
/// panel): lets a convolution point straight into its input instead of copying im2col rows.
using GemmRowsMicroKernel = void (*)(index_t kc, const float* a, index_t lda, const float* const* b_rows, float* c,
                                     index_t ldc, int mr, int nr, bool accumulate, const float* bias);

/// A block handed to the driver in place instead of packed: element (i, k) of the block at
/// data[i * row_stride + k] (weights [Out, In*K^d] of a convolution are used like this; reading
/// them in place costs the micro-kernel nothing and saves a pass over the weights per call).
struct GemmStridedA {
  const float* data;
  index_t row_stride;
};

struct GemmKernel {
  GemmIsa isa;
  int mr, nr;
  GemmMicroKernel fn;
  GemmRowsMicroKernel fn_rows;
};

namespace gemm_detail {

inline constexpr index_t kc_max = 320;  // B panel kc x NR(32) floats = 40 KiB: L1-resident
inline constexpr index_t mc_max = 264;  // multiple of 6 and 8; A block mc x kc <= 330 KiB: L2

// Stores a finished register tile held in tmp[MR * NR] (edge tiles only).
inline void store_edge(const float* tmp, int NR, float* c, index_t ldc, int mr, int nr, bool accumulate) {
  for (int r = 0; r < mr; ++r)
    for (int j = 0; j < nr; ++j) c[r * ldc + j] = accumulate ? c[r * ldc + j] + tmp[r * NR + j] : tmp[r * NR + j];
}

// Portable kernel (4 x 8): the compiler may vectorise it for whatever ISA the build targets.
// B row k: packed panels are NR floats apart; row-pointer panels give one pointer per k.
inline const float* b_row(const float* b, index_t k, int NR) { return b + k * NR; }
inline const float* b_row(const float* const* b, index_t k, int) { return b[k]; }

// Row r of a strided A, clamped to the last valid row (its products land in discarded rows).
inline const float* a_row(const float* a, index_t lda, int r, int mr) { return a + std::min(r, mr - 1) * lda; }

template <class BRows>
inline void kernel_generic(index_t kc, const float* a, index_t lda, BRows b, float* c, index_t ldc, int mr, int nr,
                           bool accumulate, const float* bias) {
  constexpr int MR = 4, NR = 8;
  float acc[MR * NR];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) acc[r * NR + j] = (!accumulate && bias && r < mr) ? bias[r] : 0.0f;
  const float* rows[MR];
  for (int r = 0; r < MR; ++r) rows[r] = a_row(a, lda, r, mr);
  for (index_t k = 0; k < kc; ++k) {
    const float* bk = b_row(b, k, NR);
    for (int r = 0; r < MR; ++r) {
      const float ar = lda == 0 ? a[k * MR + r] : rows[r][k];
      for (int j = 0; j < NR; ++j) acc[r * NR + j] += ar * bk[j];
    }
  }
  store_edge(acc, NR, c, ldc, mr, nr, accumulate);
}

#if RLMED_GEMM_X86
// The register tile is spelled out as named variables (an array of vectors gets spilled to the
// stack by GCC when it is also stored through memory on the edge path).
#define RLMED_GEMM_ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define RLMED_GEMM_ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

// AVX2 + FMA, 6 x 16: 12 accumulators + 2 B vectors + 1 broadcast of the 16 ymm registers.
template <class BRows>
__attribute__((target("avx2,fma"))) inline void kernel_avx2(index_t kc, const float* a, index_t lda, BRows b,
                                                               float* c, index_t ldc, int mr, int nr, bool accumulate,
                                                               const float* bias) {
  constexpr int MR = 6, NR = 16;
#define RLMED_INIT(r)                                                                                   \
  __m256 c0_##r = (!accumulate && bias && r < mr) ? _mm256_set1_ps(bias[r]) : _mm256_setzero_ps(); \
  __m256 c1_##r = c0_##r;
  RLMED_GEMM_ROWS6(RLMED_INIT)
#undef RLMED_INIT
#define RLMED_STEP(r, addr)                           \
  {                                                   \
    const __m256 ar = _mm256_broadcast_ss(addr);      \
    c0_##r = _mm256_fmadd_ps(ar, b0, c0_##r);         \
    c1_##r = _mm256_fmadd_ps(ar, b1, c1_##r);         \
  }
  if (lda == 0) {
    for (index_t k = 0; k < kc; ++k, a += MR) {
      const float* bk = b_row(b, k, NR);
      const __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8);
#define RLMED_PACKED(r) RLMED_STEP(r, a + r)
      RLMED_GEMM_ROWS6(RLMED_PACKED)
#undef RLMED_PACKED
    }
  } else {
#define RLMED_ROWPTR(r) const float* a##r = a_row(a, lda, r, mr);
    RLMED_GEMM_ROWS6(RLMED_ROWPTR)
#undef RLMED_ROWPTR
    for (index_t k = 0; k < kc; ++k) {
      const float* bk = b_row(b, k, NR);
      const __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8);
#define RLMED_STRIDED(r) RLMED_STEP(r, a##r + k)
      RLMED_GEMM_ROWS6(RLMED_STRIDED)
#undef RLMED_STRIDED
    }
  }
#undef RLMED_STEP
  if (mr == MR && nr == NR) {
#define RLMED_STORE(r)                                               \
  {                                                                  \
    float* cr = c + r * ldc;                                         \
    if (accumulate) {                                                \
      c0_##r = _mm256_add_ps(_mm256_loadu_ps(cr), c0_##r);           \
      c1_##r = _mm256_add_ps(_mm256_loadu_ps(cr + 8), c1_##r);       \
    }                                                                \
    _mm256_storeu_ps(cr, c0_##r);                                    \
    _mm256_storeu_ps(cr + 8, c1_##r);                                \
  }
    RLMED_GEMM_ROWS6(RLMED_STORE)
#undef RLMED_STORE
    return;
  }
  alignas(32) float tmp[MR * NR];
#define RLMED_SPILL(r)                        \
  _mm256_store_ps(tmp + r * NR, c0_##r);      \
  _mm256_store_ps(tmp + r * NR + 8, c1_##r);
  RLMED_GEMM_ROWS6(RLMED_SPILL)
#undef RLMED_SPILL
  store_edge(tmp, NR, c, ldc, mr, nr, accumulate);
}

// AVX-512, 8 x 32: 16 accumulators, 2 B vectors, broadcasts folded into the FMAs ({1to16}).
template <class BRows>
__attribute__((target("avx512f"))) inline void kernel_avx512(index_t kc, const float* a, index_t lda, BRows b,
                                                              float* c, index_t ldc, int mr, int nr, bool accumulate,
                                                              const float* bias) {
  constexpr int MR = 8, NR = 32;
#define RLMED_INIT(r)                                                                                   \
  __m512 c0_##r = (!accumulate && bias && r < mr) ? _mm512_set1_ps(bias[r]) : _mm512_setzero_ps(); \
  __m512 c1_##r = c0_##r;
  RLMED_GEMM_ROWS8(RLMED_INIT)
#undef RLMED_INIT
#define RLMED_STEP(r, value)                          \
  {                                                   \
    const __m512 ar = _mm512_set1_ps(value);          \
    c0_##r = _mm512_fmadd_ps(ar, b0, c0_##r);         \
    c1_##r = _mm512_fmadd_ps(ar, b1, c1_##r);         \
  }
  if (lda == 0) {
    for (index_t k = 0; k < kc; ++k, a += MR) {
      const float* bk = b_row(b, k, NR);
      const __m512 b0 = _mm512_loadu_ps(bk), b1 = _mm512_loadu_ps(bk + 16);
#define RLMED_PACKED(r) RLMED_STEP(r, a[r])
      RLMED_GEMM_ROWS8(RLMED_PACKED)
#undef RLMED_PACKED
    }
  } else {
#define RLMED_ROWPTR(r) const float* a##r = a_row(a, lda, r, mr);
    RLMED_GEMM_ROWS8(RLMED_ROWPTR)
#undef RLMED_ROWPTR
    for (index_t k = 0; k < kc; ++k) {
      const float* bk = b_row(b, k, NR);
      const __m512 b0 = _mm512_loadu_ps(bk), b1 = _mm512_loadu_ps(bk + 16);
#define RLMED_STRIDED(r) RLMED_STEP(r, a##r[k])
      RLMED_GEMM_ROWS8(RLMED_STRIDED)
#undef RLMED_STRIDED
    }
  }
#undef RLMED_STEP
  if (mr == MR && nr == NR) {
#define RLMED_STORE(r)                                               \
  {                                                                  \
    float* cr = c + r * ldc;                                         \
    if (accumulate) {                                                \
      c0_##r = _mm512_add_ps(_mm512_loadu_ps(cr), c0_##r);           \
      c1_##r = _mm512_add_ps(_mm512_loadu_ps(cr + 16), c1_##r);      \
    }                                                                \
    _mm512_storeu_ps(cr, c0_##r);                                    \
    _mm512_storeu_ps(cr + 16, c1_##r);                               \
  }
    RLMED_GEMM_ROWS8(RLMED_STORE)
#undef RLMED_STORE
    return;
  }
  alignas(64) float tmp[MR * NR];
#define RLMED_SPILL(r)                        \
  _mm512_store_ps(tmp + r * NR, c0_##r);      \
  _mm512_store_ps(tmp + r * NR + 16, c1_##r);
  RLMED_GEMM_ROWS8(RLMED_SPILL)
#undef RLMED_SPILL
  store_edge(tmp, NR, c, ldc, mr, nr, accumulate);
}
#undef RLMED_GEMM_ROWS6
#undef RLMED_GEMM_ROWS8
#endif

inline bool cpu_has(GemmIsa isa) {
  if (isa == GemmIsa::generic) return true;
#if RLMED_GEMM_X86
  __builtin_cpu_init();
  if (isa == GemmIsa::avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

inline GemmIsa best_isa() {
  if (const char* env = std::getenv("RLMED_GEMM")) {
    const std::string s(env);
    const GemmIsa want = s == "avx512" ? GemmIsa::avx512 : s == "avx2" ? GemmIsa::avx2 : GemmIsa::generic;
    RLMED_CHECK(s == "avx512" || s == "avx2" || s == "generic", "RLMED_GEMM=", s,
                ": expected one of generic, avx2, avx512");
    RLMED_CHECK(cpu_has(want), "RLMED_GEMM=", s, ": this CPU does not support it");
    return want;
  }
  if (cpu_has(GemmIsa::avx512)) return GemmIsa::avx512;
  if (cpu_has(GemmIsa::avx2)) return GemmIsa::avx2;
  return GemmIsa::generic;
}

inline std::atomic<int>& isa_selection() {
  static std::atomic<int> sel{static_cast<int>(best_isa())};
  return sel;
}

// 64-byte aligned view into a growable vector.
inline float* aligned_floats(std::vector<float>& storage, index_t n) {
  const auto need = static_cast<std::size_t>(n) + 16;
  if (storage.size() < need) storage.resize(need);
  auto addr = reinterpret_cast<std::uintptr_t>(storage.data());
  return reinterpret_cast<float*>((addr + 63) & ~std::uintptr_t(63));
}

}  // namespace gemm_detail

/// Whether this CPU can run the kernels of `isa`.
inline bool gemm_isa_supported(GemmIsa isa) { return gemm_detail::cpu_has(isa); }

/// The kernel family in use (the best the CPU supports unless forced).
inline GemmIsa gemm_isa() { return static_cast<GemmIsa>(gemm_detail::isa_selection().load(std::memory_order_relaxed)); }

/// Forces a kernel family for all later calls (process-wide; call between computations).
inline void set_gemm_isa(GemmIsa isa) {
  RLMED_CHECK(gemm_isa_supported(isa), "set_gemm_isa(", gemm_isa_name(isa), "): this CPU does not support it");
  gemm_detail::isa_selection().store(static_cast<int>(isa), std::memory_order_relaxed);
}

/// Micro-kernel and its register tile for `isa` (must be supported).
inline GemmKernel gemm_kernel(GemmIsa isa = gemm_isa()) {
#if RLMED_GEMM_X86
  using gemm_detail::kernel_avx2;
  using gemm_detail::kernel_avx512;
  if (isa == GemmIsa::avx512) return {isa, 8, 32, &kernel_avx512<const float*>, &kernel_avx512<const float* const*>};
  if (isa == GemmIsa::avx2) return {isa, 6, 16, &kernel_avx2<const float*>, &kernel_avx2<const float* const*>};
#endif
  using gemm_detail::kernel_generic;
  return {GemmIsa::generic, 4, 8, &kernel_generic<const float*>, &kernel_generic<const float* const*>};
}

/// K blocks of a GEMM over K: nblocks balanced blocks of at most kc_max (depends on K only).
inline index_t gemm_k_block(index_t K) {
  const index_t blocks = (K + gemm_detail::kc_max - 1) / gemm_detail::kc_max;
  return blocks == 0 ? 0 : (K + blocks - 1) / blocks;
}

/// Per-thread packing buffers (grown on demand, never shrunk).
struct GemmBuffers {
  std::vector<float> a_storage, b_storage;
  std::vector<const float*> row_storage;
  float* a(index_t n) { return gemm_detail::aligned_floats(a_storage, n); }
  float* b(index_t n) { return gemm_detail::aligned_floats(b_storage, n); }
  const float** rows(index_t n) {
    if (row_storage.size() < static_cast<std::size_t>(n)) row_storage.resize(static_cast<std::size_t>(n));
    return row_storage.data();
  }
};

namespace gemm_detail {
#if RLMED_GEMM_X86
// One full 8-row panel of a row-major A (column stride 1): 8 x 8 blocks transposed in AVX
// registers (24 shuffles per 64 floats instead of 64 strided scalar loads), scalar tail.
__attribute__((target("avx"))) inline void pack_a_panel8_rowmajor(const float* src, index_t rs, index_t kc,
                                                                   float* dst) {
  index_t k = 0;
  for (; k + 8 <= kc; k += 8, dst += 64) {
    const __m256 r0 = _mm256_loadu_ps(src + 0 * rs + k), r1 = _mm256_loadu_ps(src + 1 * rs + k);
    const __m256 r2 = _mm256_loadu_ps(src + 2 * rs + k), r3 = _mm256_loadu_ps(src + 3 * rs + k);
    const __m256 r4 = _mm256_loadu_ps(src + 4 * rs + k), r5 = _mm256_loadu_ps(src + 5 * rs + k);
    const __m256 r6 = _mm256_loadu_ps(src + 6 * rs + k), r7 = _mm256_loadu_ps(src + 7 * rs + k);
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    // Column j of the 8 x 8 block (k + j) = lane j of every row: low halves give k..k+3.
    _mm256_storeu_ps(dst + 0, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + 8, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 16, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 24, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 32, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 40, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 48, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 56, _mm256_permute2f128_ps(u3, u7, 0x31));
  }
  for (; k < kc; ++k, dst += 8)
    for (int r = 0; r < 8; ++r) dst[r] = src[r * rs + k];
}
#endif
}  // namespace gemm_detail

/// Packs rows [i0, i0 + m) x cols [k0, k0 + kc) of a strided A into MR-row panels (zero-padded).
inline void gemm_pack_a(const float* A, index_t rs, index_t cs, index_t i0, index_t m, index_t k0, index_t kc, int MR,
                        float* dst) {
  for (index_t p = 0; p < m; p += MR) {
    const index_t rows = std::min<index_t>(MR, m - p);
#if RLMED_GEMM_X86
    if (MR == 8 && rows == 8 && cs == 1 && gemm_detail::cpu_has(GemmIsa::avx2)) {
      gemm_detail::pack_a_panel8_rowmajor(A + (i0 + p) * rs + k0, rs, kc, dst);
      dst += 8 * kc;
      continue;
    }
#endif
    for (index_t k = 0; k < kc; ++k) {
      const float* src = A + (i0 + p) * rs + (k0 + k) * cs;
      index_t r = 0;
      for (; r < rows; ++r) dst[r] = src[r * rs];
      for (; r < MR; ++r) dst[r] = 0.0f;
      dst += MR;
    }
  }
}

/// Packs rows [k0, k0 + kc) x cols [j0, j0 + nr) of a strided B into one NR-column panel.
inline void gemm_pack_b(const float* B, index_t rs, index_t cs, index_t k0, index_t kc, index_t j0, index_t nr,
                        int NR, float* dst) {
  for (index_t k = 0; k < kc; ++k) {
    const float* src = B + (k0 + k) * rs + j0 * cs;
    index_t j = 0;
    if (cs == 1)
      for (; j < nr; ++j) dst[j] = src[j];
    else
      for (; j < nr; ++j) dst[j] = src[j * cs];
    for (; j < NR; ++j) dst[j] = 0.0f;
    dst += NR;
  }
}

/// The blocked driver. pack_a(i0, m, k0, kc, dst) -> const float* returns the packed panels of
/// A[i0:i0+m, k0:k0+kc] (it may ignore dst and return pre-packed memory), or -> GemmStridedA the
/// block read in place (no packing; the ablock buffer is then unused); pack_b(k0, kc, j0, nr,
/// dst) fills one panel of B[k0:k0+kc, j0:j0+nr]. C [M, N] with row stride ldc; accumulate: C +=
/// A B, else C = A B (+ bias[i] per row when bias is given).
/// With RowsB, pack_b(k0, kc, j0, nr, scratch, rows) instead fills rows[0 .. kc) with pointers to
/// NR readable floats each (into its data, or into scratch [kc, NR] where it had to copy).
template <bool RowsB = false, class PackA, class PackB>
void gemm_blocked(const GemmKernel& kern, index_t M, index_t N, index_t K, PackA&& pack_a, PackB&& pack_b, float* C,
                  index_t ldc, bool accumulate, const float* bias, GemmBuffers& buf) {
  if (M <= 0 || N <= 0) return;
  if (K == 0) {
    if (!accumulate)
      for (index_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, bias ? bias[i] : 0.0f);
    return;
  }
  const int MR = kern.mr, NR = kern.nr;
  const index_t KC = gemm_k_block(K), MC = gemm_detail::mc_max / MR * MR;
  float* bpanel = buf.b(KC * NR);
  const float** brows = RowsB ? buf.rows(KC) : nullptr;
  constexpr bool a_in_place = std::is_same_v<std::invoke_result_t<PackA&, index_t, index_t, index_t, index_t, float*>,
                                             GemmStridedA>;
  float* ablock = a_in_place ? nullptr : buf.a(std::min(MC, (M + MR - 1) / MR * MR) * KC);
  for (index_t ic = 0; ic < M; ic += MC) {
    const index_t mc = std::min(MC, M - ic);
    for (index_t pc = 0; pc < K; pc += KC) {
      const index_t kc = std::min(KC, K - pc);
      const bool acc = accumulate || pc > 0;
      const float* bias_block = (!acc && bias) ? bias + ic : nullptr;
      // Packed panels are kc apart; an in-place block (GemmStridedA) has its rows lda apart.
      const float* ap;
      index_t lda = 0, panel_step = kc;
      if constexpr (a_in_place) {
        const GemmStridedA blk = pack_a(ic, mc, pc, kc, ablock);
        ap = blk.data;
        lda = panel_step = blk.row_stride;
      } else {
        ap = pack_a(ic, mc, pc, kc, ablock);
      }
      for (index_t jr = 0; jr < N; jr += NR) {
        const index_t nr = std::min<index_t>(NR, N - jr);
        if constexpr (RowsB)
          pack_b(pc, kc, jr, nr, bpanel, brows);
        else
          pack_b(pc, kc, jr, nr, bpanel);
        for (index_t ir = 0; ir < mc; ir += MR) {
          const int mr = static_cast<int>(std::min<index_t>(MR, mc - ir));
          float* ct = C + (ic + ir) * ldc + jr;
          const float* bias_tile = bias_block ? bias_block + ir : nullptr;
          const float* a_tile = ap + ir * panel_step;
          if constexpr (RowsB)
            kern.fn_rows(kc, a_tile, lda, brows, ct, ldc, mr, static_cast<int>(nr), acc, bias_tile);
          else
            kern.fn(kc, a_tile, lda, bpanel, ct, ldc, mr, static_cast<int>(nr), acc, bias_tile);
        }
      }
    }
  }
}

/// Strided matrix operand: element (i, j) at data[i * row_stride + j * col_stride] (a transpose
/// is the same memory with the strides swapped).
struct GemmOperand {
  const float* data;
  index_t row_stride, col_stride;
};

/// C [M, N] (row stride ldc) = A [M, K] B [K, N] (+ bias[i] per row), or C += A B when
/// accumulate. Single-threaded; safe to call from inside parallel regions.
inline void gemm(index_t M, index_t N, index_t K, GemmOperand A, GemmOperand B, float* C, index_t ldc,
                 bool accumulate = false, const float* bias = nullptr, GemmBuffers* buffers = nullptr) {
  RLMED_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: sizes M=", M, " N=", N, " K=", K, ", expected non-negative");
  RLMED_CHECK(M == 0 || N == 0 || (C != nullptr && ldc >= N), "gemm: C needs row stride >= N=", N, ", found ", ldc);
  RLMED_CHECK(M == 0 || N == 0 || K == 0 || (A.data && B.data), "gemm: null operand for M=", M, " N=", N, " K=", K);
  thread_local GemmBuffers local;
  GemmBuffers& buf = buffers ? *buffers : local;
  const GemmKernel kern = gemm_kernel();
  gemm_blocked(
      kern, M, N, K,
      [&](index_t i0, index_t m, index_t k0, index_t kc, float* dst) {
        gemm_pack_a(A.data, A.row_stride, A.col_stride, i0, m, k0, kc, kern.mr, dst);
        return static_cast<const float*>(dst);
      },
      [&](index_t k0, index_t kc, index_t j0, index_t nr, float* dst) {
        gemm_pack_b(B.data, B.row_stride, B.col_stride, k0, kc, j0, nr, kern.nr, dst);
      },
      C, ldc, accumulate, bias, buf);
}

/// gemm() split over column blocks of a fixed width on rlmed::parallel_for: each element is
/// computed exactly as by gemm(), so the result is bit-identical for any thread count.
inline void gemm_parallel(index_t M, index_t N, index_t K, GemmOperand A, GemmOperand B, float* C, index_t ldc,
                          bool accumulate = false, const float* bias = nullptr) {
  constexpr index_t block = 256;
  const index_t blocks = (N + block - 1) / block;
  if (blocks <= 1 || in_parallel_region()) return gemm(M, N, K, A, B, C, ldc, accumulate, bias);
  parallel_for(0, blocks, [&](index_t blk) {
    const index_t j0 = blk * block, n = std::min(block, N - j0);
    gemm(M, n, K, A, GemmOperand{B.data + j0 * B.col_stride, B.row_stride, B.col_stride}, C + j0, ldc, accumulate,
         bias);
  }, 1);
}

}  // namespace rlmed
