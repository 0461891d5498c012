// rlmed/core/device.hpp — device tags: where a tensor's memory lives and where an op runs.
//
// Design: devices are empty tag types used as template arguments (principle 3 of the
// architecture), so the choice is made at compile time and CPU-only builds never see CUDA.
#pragma once

#include <string_view>
#include <type_traits>

namespace rlmed {

/// Host memory, CPU execution (OpenMP + Eigen). The reference implementation of every op.
struct cpu {
  static constexpr std::string_view name = "cpu";
};

/// CUDA device memory, GPU execution. Usable only when compiled with RLMED_WITH_CUDA.
struct cuda {
  static constexpr std::string_view name = "cuda";
};

template <class D>
inline constexpr bool is_device_v = std::is_same_v<D, cpu> || std::is_same_v<D, cuda>;

template <class D>
concept Device = is_device_v<D>;

/// True when rlmed was compiled with the CUDA backend (the rlmed::cuda target).
inline constexpr bool cuda_enabled =
#if defined(RLMED_WITH_CUDA)
    true;
#else
    false;
#endif

}  // namespace rlmed
