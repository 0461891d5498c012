// rlmed/core/cuda_context.hpp — what a GPU computation runs with: a stream, a cuBLAS handle
// (TF32 only on request), a cuDNN handle and a device arena.
//
// Design decisions:
//  * One context per worker thread: the stream orders all its work, the library handles are
//    bound to that stream, and nothing is shared, so no locking.
//  * Handles are created lazily (cuBLAS / cuDNN initialisation costs tens of milliseconds and
//    allocates device memory; kernels that need neither never pay for it).
//  * TF32 tensor-core GEMMs change results at the 1e-3 level, so they are an explicit opt-in
//    (Precision::tf32); the default is CUBLAS_PEDANTIC_MATH (plain fp32, no reduced-precision
//    shortcuts). cuBLAS is deterministic for a fixed handle,
//    stream and workspace; cuDNN algorithms are chosen by the caller (pick deterministic ones).
//  * DeviceArena: one cudaMalloc at set-up, bump allocation with 256-byte alignment, reset()
//    between steps; a request beyond the capacity throws rlmed::Error naming both sizes rather
//    than allocating behind the caller's back (principle 8: no allocation in the hot path).
//  * Every cuBLAS / cuDNN failure becomes an rlmed::Error with the library's status string.
#pragma once

#include <cublas_v2.h>
#include <cudnn.h>

#include <cstddef>
#include <cstdint>

#include "rlmed/core/cuda_runtime.hpp"
#include "rlmed/core/tensor_cuda.hpp"

/// Throws rlmed::Error if a cuBLAS call fails.
#define RLMED_CUBLAS_CHECK(call)                                                                     \
  do {                                                                                               \
    const cublasStatus_t rlmed_st_ = (call);                                                         \
    if (rlmed_st_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                                             \
      throw ::rlmed::Error(::rlmed::format(#call, " failed: ", cublasGetStatusName(rlmed_st_), " (", \
                                           cublasGetStatusString(rlmed_st_), ")"),                   \
                           __FILE__, __LINE__);                                                      \
  } while (false)

/// Throws rlmed::Error if a cuDNN call fails.
#define RLMED_CUDNN_CHECK(call)                                                                     \
  do {                                                                                              \
    const cudnnStatus_t rlmed_st_ = (call);                                                         \
    if (rlmed_st_ != CUDNN_STATUS_SUCCESS) [[unlikely]]                                             \
      throw ::rlmed::Error(::rlmed::format(#call, " failed: ", cudnnGetErrorString(rlmed_st_)),     \
                           __FILE__, __LINE__);                                                     \
  } while (false)

namespace rlmed::gpu {

/// Bump allocator over one device allocation.
class DeviceArena {
 public:
  static constexpr std::size_t kAlignment = 256;

  DeviceArena() = default;
  explicit DeviceArena(std::size_t capacity_bytes) { reserve(capacity_bytes); }

  /// Replaces the allocation (everything handed out before becomes invalid).
  void reserve(std::size_t capacity_bytes) {
    buffer_.reset(static_cast<index_t>(capacity_bytes));
    used_ = 0;
  }
  /// n elements of T, aligned to 256 bytes; rlmed::Error when the arena is too small.
  template <class T>
  T* allocate(std::size_t n) {
    const std::size_t begin = (used_ + kAlignment - 1) / kAlignment * kAlignment;
    const std::size_t bytes = n * sizeof(T);
    RLMED_CHECK(n <= (std::size_t(1) << 60) / sizeof(T) && begin + bytes <= capacity(), "DeviceArena: ", bytes,
                " bytes requested with ", used_, " of ", capacity(), " in use; reserve a larger arena at set-up");
    used_ = begin + bytes;
    return reinterpret_cast<T*>(buffer_.data() + begin);
  }
  /// A device view of the given shape carved from the arena.
  template <class T, std::size_t Rank>
  TensorView<T, Rank, cuda> view(const Shape<Rank>& shape) {
    return TensorView<T, Rank, cuda>(allocate<T>(static_cast<std::size_t>(checked_numel(shape))), shape);
  }
  /// Releases everything at once (the memory is kept).
  void reset() noexcept { used_ = 0; }
  [[nodiscard]] std::size_t used() const noexcept { return used_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return static_cast<std::size_t>(buffer_.size()); }

 private:
  DeviceBuffer<unsigned char> buffer_;
  std::size_t used_ = 0;
};

enum class Precision {
  fp32,  ///< full fp32 GEMMs (default)
  tf32,  ///< TF32 tensor cores for fp32 GEMMs (~1e-3 relative error, several times faster)
};

/// Stream, library handles and arena of one worker.
class CudaContext {
 public:
  explicit CudaContext(std::size_t arena_bytes = 0, Precision precision = Precision::fp32) : precision_(precision) {
    if (arena_bytes > 0) arena.reserve(arena_bytes);
  }
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;
  ~CudaContext() {
    if (cublas_) cublasDestroy(cublas_);
    if (cudnn_) cudnnDestroy(cudnn_);
  }

  [[nodiscard]] cudaStream_t stream() const noexcept { return stream_.get(); }
  void synchronize() const { stream_.synchronize(); }

  /// The cuBLAS handle bound to this stream (created on first use).
  cublasHandle_t cublas() {
    if (!cublas_) {
      RLMED_CUBLAS_CHECK(cublasCreate(&cublas_));
      RLMED_CUBLAS_CHECK(cublasSetStream(cublas_, stream_.get()));
      apply_precision();
    }
    return cublas_;
  }
  /// The cuDNN handle bound to this stream (created on first use).
  cudnnHandle_t cudnn() {
    if (!cudnn_) {
      RLMED_CUDNN_CHECK(cudnnCreate(&cudnn_));
      RLMED_CUDNN_CHECK(cudnnSetStream(cudnn_, stream_.get()));
    }
    return cudnn_;
  }

  [[nodiscard]] Precision precision() const noexcept { return precision_; }
  void set_precision(Precision p) {
    precision_ = p;
    if (cublas_) apply_precision();
  }

  DeviceArena arena;

 private:
  void apply_precision() {
    RLMED_CUBLAS_CHECK(cublasSetMathMode(
        cublas_, precision_ == Precision::tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH));
  }

  Stream stream_;
  cublasHandle_t cublas_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  Precision precision_ = Precision::fp32;
};

}  // namespace rlmed::gpu
