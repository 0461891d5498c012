// rlmed/core/config.hpp — compiler portability macros shared by host and device code.
//
// Design: one header decides how functions are annotated, so that elementwise math and the
// Philox generator are written once and compiled by g++ for the host and by nvcc for both sides.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define RLMED_HOST_DEVICE __host__ __device__
#define RLMED_DEVICE __device__
#else
#define RLMED_HOST_DEVICE
#define RLMED_DEVICE
#endif

#if defined(__GNUC__) || defined(__clang__)
#define RLMED_FORCE_INLINE inline __attribute__((always_inline))
#else
#define RLMED_FORCE_INLINE inline
#endif

#define RLMED_VERSION_MAJOR 0
#define RLMED_VERSION_MINOR 1
#define RLMED_VERSION_PATCH 0

namespace rlmed {

/// Signed index type of every shape, stride and loop bound (negative sizes are caught, not wrapped).
using index_t = std::int64_t;

/// Alignment of every owning host buffer: one cache line, also enough for AVX-512 loads.
inline constexpr std::size_t kTensorAlignment = 64;

}  // namespace rlmed
