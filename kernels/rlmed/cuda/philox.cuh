// rlmed/cuda/philox.cuh — Philox fills on the GPU, bit-identical to rlmed/core/random.hpp.
//
// Design: element i reads the stream words the host fill gives it (uniform: word p+i; normal:
// words p+2i, p+2i+1), so a CPU run and a GPU run draw the same numbers. Uniform floats are
// bit-identical; normals agree to a few ulp (device logf/cosf differ from glibc's).
// Roofline: one Philox4x32-10 block costs ~10 x (2 IMAD.HI + 2 IMAD + 6 LOP) ≈ 100 integer ops
// per 16 bytes produced; the fill is compute-bound on integer throughput, not memory-bound.
// CPU reference: fill_uniform / fill_normal in rlmed/core/random.hpp.
#pragma once

#include "rlmed/core/philox.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/cuda/launch.cuh"

namespace rlmed::kernels {

template <class T>
__global__ void philox_uniform_kernel(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream,
                                      std::uint64_t start, T lo, T hi) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float u = u32_to_uniform_float(philox_u32_at(seed, stream, start + static_cast<std::uint64_t>(i)));
  out[i] = lo + (hi - lo) * static_cast<T>(u);
}

template <class T>
__global__ void philox_normal_kernel(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream,
                                     std::uint64_t start, T mean, T stddev) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  PhiloxStream local(seed, stream);
  local.seek(start + 2 * static_cast<std::uint64_t>(i));
  out[i] = mean + stddev * static_cast<T>(local.normal());
}

/// Uniform [lo, hi) into a device view from `rng`'s position; advances rng like the host fill.
template <class T, std::size_t Rank>
void fill_uniform(TensorView<T, Rank, cuda> dst, PhiloxStream& rng, T lo, T hi, cudaStream_t stream) {
  const std::int64_t n = dst.size();
  if (n > 0) {
    philox_uniform_kernel<T><<<grid_for(n), kDefaultBlock, 0, stream>>>(dst.data(), n, rng.seed(), rng.stream(),
                                                                        rng.position(), lo, hi);
    RLMED_CUDA_CHECK_LAUNCH();
  }
  rng.seek(rng.position() + static_cast<std::uint64_t>(n));
}

/// Normal(mean, stddev) into a device view; advances rng like the host fill (2 words each).
template <class T, std::size_t Rank>
void fill_normal(TensorView<T, Rank, cuda> dst, PhiloxStream& rng, T mean, T stddev, cudaStream_t stream) {
  const std::int64_t n = dst.size();
  if (n > 0) {
    philox_normal_kernel<T><<<grid_for(n), kDefaultBlock, 0, stream>>>(dst.data(), n, rng.seed(), rng.stream(),
                                                                       rng.position(), mean, stddev);
    RLMED_CUDA_CHECK_LAUNCH();
  }
  rng.seek(rng.position() + 2 * static_cast<std::uint64_t>(n));
}

/// Raw Philox blocks: out[4*b .. 4*b+3] = philox_block(seed, stream, first_counter + b).
template <class Word = std::uint32_t>
__global__ void philox_blocks_kernel(Word* out, std::int64_t blocks, std::uint64_t seed,
                                            std::uint64_t stream, std::uint64_t first_counter) {
  const std::int64_t b = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= blocks) return;
  const PhiloxBlock r = philox_block(seed, stream, first_counter + static_cast<std::uint64_t>(b));
  reinterpret_cast<uint4*>(out)[b] = make_uint4(r.v[0], r.v[1], r.v[2], r.v[3]);
}

}  // namespace rlmed::kernels
