// rlmed/cuda/launch.cuh — launch helpers shared by the hand-written kernels.
//
// Design: grid sizes are computed in one place with 64-bit element counts; every launch is
// followed by RLMED_CUDA_CHECK(cudaGetLastError()) so configuration errors surface at the call.
#pragma once

#include <cstdint>

#include "rlmed/core/cuda_runtime.hpp"

namespace rlmed::kernels {

inline constexpr int kDefaultBlock = 256;

/// Blocks needed to cover n elements with `block` threads each (at least one block).
inline unsigned grid_for(std::int64_t n, int block = kDefaultBlock) {
  const std::int64_t g = (n + block - 1) / block;
  return static_cast<unsigned>(g > 0 ? g : 1);
}

}  // namespace rlmed::kernels

/// Checks the most recent kernel launch.
#define RLMED_CUDA_CHECK_LAUNCH() RLMED_CUDA_CHECK(cudaGetLastError())
