// rlmed/cuda/flag.cuh — a device-side error flag for data errors a kernel cannot throw.
//
// Design: kernels that find invalid data (NaN displacements, non-finite logits) store 1 into an
// int the caller owns (a plain store: every writer writes the same value, so the race is
// benign and the result deterministic). The caller reads it when it synchronises anyway and
// turns it into an rlmed::Error, so validation never adds a sync to the hot path.
#pragma once

#include "rlmed/core/tensor_cuda.hpp"

namespace rlmed::kernels {

/// A device int, 0 when created; kernels set it to 1 on invalid data.
class DeviceFlag {
 public:
  DeviceFlag() : flag_(1) { RLMED_CUDA_CHECK(cudaMemset(flag_.data(), 0, sizeof(int))); }
  [[nodiscard]] int* get() const noexcept { return flag_.data(); }
  /// Waits for `stream`, reads the flag and clears it; true when it was set.
  bool test_and_clear(cudaStream_t stream) {
    int host = 0;
    RLMED_CUDA_CHECK(cudaMemcpyAsync(&host, flag_.data(), sizeof(int), cudaMemcpyDeviceToHost, stream));
    RLMED_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (host) {
      RLMED_CUDA_CHECK(cudaMemsetAsync(flag_.data(), 0, sizeof(int), stream));
      RLMED_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    return host != 0;
  }

 private:
  DeviceBuffer<int> flag_;
};

}  // namespace rlmed::kernels
