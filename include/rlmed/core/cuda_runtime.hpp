// rlmed/core/cuda_runtime.hpp — CUDA runtime plumbing: error checks, device queries, streams.
//
// Design: compiled only with RLMED_WITH_CUDA (the rlmed::cuda target). Host code built by g++
// may call the CUDA runtime API directly; kernels live in kernels/ and need nvcc. Every CUDA
// error becomes an rlmed::Error with the failing call, its error name and message.
#pragma once

#if !defined(RLMED_WITH_CUDA)
#error "rlmed/core/cuda_runtime.hpp needs the rlmed::cuda target (RLMED_WITH_CUDA)"
#endif

#include <cuda_runtime_api.h>

#include <string>

#include "rlmed/core/error.hpp"

/// Throws rlmed::Error if a CUDA runtime call fails.
#define RLMED_CUDA_CHECK(call)                                                                \
  do {                                                                                        \
    const cudaError_t rlmed_err_ = (call);                                                    \
    if (rlmed_err_ != cudaSuccess) [[unlikely]]                                               \
      throw ::rlmed::Error(::rlmed::format(#call, " failed: ", cudaGetErrorName(rlmed_err_), \
                                           " (", cudaGetErrorString(rlmed_err_), ")"),       \
                           __FILE__, __LINE__);                                               \
  } while (false)

namespace rlmed::gpu {

/// Number of usable CUDA devices; 0 (never an exception) when there is no device or driver.
inline int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

/// Why there is no usable device, for skip messages.
inline std::string no_device_reason() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  (void)cudaGetLastError();
  if (err != cudaSuccess) return format(cudaGetErrorName(err), ": ", cudaGetErrorString(err));
  return n == 0 ? std::string("cudaGetDeviceCount reports 0 devices") : std::string();
}

/// An owned CUDA stream (non-blocking with respect to the legacy default stream).
class Stream {
 public:
  Stream() { RLMED_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  Stream(Stream&& o) noexcept : stream_(o.stream_) { o.stream_ = nullptr; }
  Stream& operator=(Stream&& o) noexcept {
    std::swap(stream_, o.stream_);
    return *this;
  }
  ~Stream() {
    if (stream_) cudaStreamDestroy(stream_);
  }
  [[nodiscard]] cudaStream_t get() const noexcept { return stream_; }
  operator cudaStream_t() const noexcept { return stream_; }
  void synchronize() const { RLMED_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  cudaStream_t stream_ = nullptr;
};

}  // namespace rlmed::gpu
