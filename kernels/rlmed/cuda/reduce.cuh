// rlmed/cuda/reduce.cuh — deterministic sums on the GPU: W running sums (double) over n terms,
// each term produced by a device functor, with a summation order fixed by n alone.
//
// Design decisions:
//  * No atomics. Pass 1: block b owns the fixed chunk [b·kReduceChunk, (b+1)·kReduceChunk);
//    thread t adds the chunk's elements t, t + kReduceBlock, … in ascending order, then the block
//    combines its threads with a fixed shared-memory tree. Pass 2: one block combines the
//    partials the same way. The order depends only on n and the two constants, never on timing
//    or on the GPU model, so results are bit-identical run to run and across devices.
//  * Terms are accumulated in double (the CPU losses sum in double too), so the GPU sums agree
//    with the CPU's chunked sums to ~1e-15 relative although the orders differ.
//  * The functor interface (`term(i, acc)` adds element i's W terms into acc[0..W)) fuses the
//    reduction with whatever produces the terms: a loss never writes its per-pixel terms.
//  * Scratch (the partials) is a caller-kept DeviceBuffer that only grows, so steady-state calls
//    allocate nothing.
// Roofline: bound by reading the terms' inputs (8 B of partials per 8192 elements is noise);
// e.g. a float array sum reads 4 B per element, ~0.25 FLOP/B: memory-bound.
// CPU reference: detail::chunked_sums in rlmed/rl/pixel_a3c.hpp (same results up to double rounding).
#pragma once

#include <cstdint>

#include "rlmed/core/tensor_cuda.hpp"
#include "rlmed/cuda/launch.cuh"

namespace rlmed::kernels {

inline constexpr int kReduceBlock = 256;                 ///< threads per reduction block (power of two)
inline constexpr std::int64_t kReduceChunk = 16384;      ///< elements per pass-1 block

namespace reduce_detail {

/// Fixed-shape tree over the block's sh[w][0..kReduceBlock): sh[w][0] ends with the total.
template <int W>
__device__ void block_tree(double (*sh)[kReduceBlock]) {
  const int tid = static_cast<int>(threadIdx.x);
  for (int s = kReduceBlock / 2; s > 0; s >>= 1) {
    if (tid < s)
      for (int w = 0; w < W; ++w) sh[w][tid] += sh[w][tid + s];
    __syncthreads();
  }
}

template <int W, class Term>
__global__ void __launch_bounds__(kReduceBlock) reduce_chunks_kernel(Term term, std::int64_t n, double* partial) {
  __shared__ double sh[W][kReduceBlock];
  double acc[W];
  for (int w = 0; w < W; ++w) acc[w] = 0.0;
  const std::int64_t begin = static_cast<std::int64_t>(blockIdx.x) * kReduceChunk;
  const std::int64_t end = begin + kReduceChunk < n ? begin + kReduceChunk : n;
  for (std::int64_t i = begin + threadIdx.x; i < end; i += kReduceBlock) term(i, acc);
  for (int w = 0; w < W; ++w) sh[w][threadIdx.x] = acc[w];
  __syncthreads();
  block_tree<W>(sh);
  if (threadIdx.x == 0)
    for (int w = 0; w < W; ++w) partial[static_cast<std::int64_t>(blockIdx.x) * W + w] = sh[w][0];
}

template <int W>
__global__ void __launch_bounds__(kReduceBlock) reduce_partials_kernel(const double* partial, std::int64_t blocks,
                                                                       double* out, bool accumulate) {
  __shared__ double sh[W][kReduceBlock];
  double acc[W];
  for (int w = 0; w < W; ++w) acc[w] = 0.0;
  for (std::int64_t b = threadIdx.x; b < blocks; b += kReduceBlock)
    for (int w = 0; w < W; ++w) acc[w] += partial[b * W + w];
  for (int w = 0; w < W; ++w) sh[w][threadIdx.x] = acc[w];
  __syncthreads();
  block_tree<W>(sh);
  if (threadIdx.x == 0)
    for (int w = 0; w < W; ++w) out[w] = accumulate ? out[w] + sh[w][0] : sh[w][0];
}

/// Term of a plain array sum.
template <class T>
struct ArrayTerm {
  const T* x;
  __device__ void operator()(std::int64_t i, double* acc) const { acc[0] += static_cast<double>(x[i]); }
};

}  // namespace reduce_detail

/// out[0..W) (device doubles) = Σ_{i<n} term(i) (or += with accumulate), ordered on `stream`.
/// `scratch` holds the partials; it grows when needed and is otherwise reused.
template <int W, class Term>
void deterministic_sums(Term term, std::int64_t n, double* out, DeviceBuffer<double>& scratch, cudaStream_t stream,
                        bool accumulate = false) {
  static_assert(W >= 1 && W <= 16, "deterministic_sums: 1 to 16 sums at a time");
  RLMED_CHECK(n >= 0, "deterministic_sums: ", n, " terms; expected n >= 0");
  RLMED_CHECK(out != nullptr, "deterministic_sums: no output");
  const std::int64_t blocks = n > 0 ? (n + kReduceChunk - 1) / kReduceChunk : 0;
  RLMED_CHECK(blocks <= 0x7FFFFFFF, "deterministic_sums: ", n, " terms exceed the grid limit");
  if (blocks == 0) {
    if (!accumulate) RLMED_CUDA_CHECK(cudaMemsetAsync(out, 0, W * sizeof(double), stream));
    return;
  }
  if (scratch.size() < blocks * W) scratch.reset(blocks * W);
  reduce_detail::reduce_chunks_kernel<W, Term>
      <<<static_cast<unsigned>(blocks), kReduceBlock, 0, stream>>>(term, n, scratch.data());
  RLMED_CUDA_CHECK_LAUNCH();
  reduce_detail::reduce_partials_kernel<W><<<1, kReduceBlock, 0, stream>>>(scratch.data(), blocks, out, accumulate);
  RLMED_CUDA_CHECK_LAUNCH();
}

/// *out (device double) = Σ x[i] over a device array, deterministic.
template <class T>
void deterministic_sum(const T* x, std::int64_t n, double* out, DeviceBuffer<double>& scratch, cudaStream_t stream) {
  deterministic_sums<1>(reduce_detail::ArrayTerm<T>{x}, n, out, scratch, stream);
}

}  // namespace rlmed::kernels
