// rlmed/core/tensor_cuda.hpp — device memory: DeviceBuffer (cudaMalloc RAII), Tensor<T,R,cuda>,
// and stream-ordered copies between host and device.
//
// Design decisions:
//  * Device tensors are the same shape/view machinery as host ones with the `cuda` tag; a
//    TensorView<T,R,cuda> can be passed by value to a kernel.
//  * Allocation is plain cudaMalloc/cudaFree, done once at set-up (principle 8): steady-state
//    code reuses buffers through resize(), which keeps the allocation when the size fits.
//  * Copies take an explicit stream and are asynchronous; host buffers should be pinned for
//    true overlap (pageable memory is staged by the driver, still correct). The caller
//    synchronises before reading host results.
#pragma once

#include "rlmed/core/cuda_runtime.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed {

/// An owned, uninitialised device allocation of n elements of T.
template <class T>
class DeviceBuffer {
  static_assert(TensorElement<T> && !std::is_const_v<T>);

 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(index_t n) { reset(n); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), size_(o.size_) {
    o.ptr_ = nullptr;
    o.size_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(size_, o.size_);
    return *this;
  }
  ~DeviceBuffer() { release(); }

  /// Frees the old allocation and allocates n elements.
  void reset(index_t n) {
    RLMED_CHECK(n >= 0, "device buffer of ", n, " elements; expected n >= 0");
    release();
    if (n > 0) RLMED_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), static_cast<std::size_t>(n) * sizeof(T)));
    size_ = n;
  }
  [[nodiscard]] T* data() const noexcept { return ptr_; }
  [[nodiscard]] index_t size() const noexcept { return size_; }

 private:
  void release() noexcept {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    size_ = 0;
  }
  T* ptr_ = nullptr;
  index_t size_ = 0;
};

/// Owning, contiguous device tensor.
template <class T, std::size_t Rank>
class Tensor<T, Rank, cuda> {
 public:
  using value_type = T;
  using device_type = cuda;
  using shape_type = Shape<Rank>;
  using view_type = TensorView<T, Rank, cuda>;
  using const_view_type = TensorView<const T, Rank, cuda>;
  static constexpr std::size_t rank = Rank;

  Tensor() = default;
  /// Uninitialised device tensor (call zero() or copy into it).
  explicit Tensor(const shape_type& shape) { resize(shape); }

  void resize(const shape_type& shape) {
    const index_t n = checked_numel(shape);
    if (n > buffer_.size()) buffer_.reset(n);
    shape_ = shape;
  }
  /// Sets every byte to zero, ordered on `stream`.
  void zero(cudaStream_t stream = nullptr) {
    if (size()) RLMED_CUDA_CHECK(cudaMemsetAsync(data(), 0, bytes(), stream));
  }

  [[nodiscard]] T* data() const noexcept { return buffer_.data(); }
  [[nodiscard]] const shape_type& shape() const noexcept { return shape_; }
  [[nodiscard]] index_t extent(std::size_t axis) const noexcept { return shape_[axis]; }
  [[nodiscard]] index_t size() const noexcept { return numel(shape_); }
  [[nodiscard]] std::size_t bytes() const noexcept { return static_cast<std::size_t>(size()) * sizeof(T); }
  [[nodiscard]] view_type view() noexcept { return view_type(data(), shape_); }
  [[nodiscard]] const_view_type view() const noexcept { return const_view_type(data(), shape_); }
  operator view_type() noexcept { return view(); }
  operator const_view_type() const noexcept { return view(); }

 private:
  DeviceBuffer<T> buffer_;
  shape_type shape_{};
};

namespace detail {
template <class Dst, class Src>
concept CopyableElements = !std::is_const_v<Dst> && std::is_same_v<Dst, std::remove_const_t<Src>>;

template <class T, class U, std::size_t Rank, class DevDst, class DevSrc>
void copy_async_impl(TensorView<T, Rank, DevDst> dst, TensorView<U, Rank, DevSrc> src, cudaMemcpyKind kind,
                     cudaStream_t stream, const char* what) {
  RLMED_CHECK(dst.shape() == src.shape(), what, " copy: destination shape ", dst.shape(),
              " differs from source shape ", src.shape());
  if (src.size()) RLMED_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), src.bytes(), kind, stream));
}
}  // namespace detail

/// Host -> device copy ordered on `stream`; shapes must match.
template <class T, class U, std::size_t Rank>
  requires detail::CopyableElements<T, U>
void copy_async(TensorView<T, Rank, cuda> dst, TensorView<U, Rank, cpu> src, cudaStream_t stream) {
  detail::copy_async_impl(dst, src, cudaMemcpyHostToDevice, stream, "host->device");
}
/// Device -> host copy ordered on `stream`; synchronise the stream before reading dst.
template <class T, class U, std::size_t Rank>
  requires detail::CopyableElements<T, U>
void copy_async(TensorView<T, Rank, cpu> dst, TensorView<U, Rank, cuda> src, cudaStream_t stream) {
  detail::copy_async_impl(dst, src, cudaMemcpyDeviceToHost, stream, "device->host");
}
/// Device -> device copy ordered on `stream`.
template <class T, class U, std::size_t Rank>
  requires detail::CopyableElements<T, U>
void copy_async(TensorView<T, Rank, cuda> dst, TensorView<U, Rank, cuda> src, cudaStream_t stream) {
  detail::copy_async_impl(dst, src, cudaMemcpyDeviceToDevice, stream, "device->device");
}

/// A host view's contents in a new device tensor (synchronous on `stream`).
template <class T, std::size_t Rank>
Tensor<std::remove_const_t<T>, Rank, cuda> to_device(TensorView<T, Rank, cpu> src, cudaStream_t stream = nullptr) {
  Tensor<std::remove_const_t<T>, Rank, cuda> out(src.shape());
  copy_async(out.view(), src, stream);
  RLMED_CUDA_CHECK(cudaStreamSynchronize(stream));
  return out;
}
/// A device view's contents in a new host tensor (synchronous on `stream`).
template <class T, std::size_t Rank>
Tensor<std::remove_const_t<T>, Rank, cpu> to_host(TensorView<T, Rank, cuda> src, cudaStream_t stream = nullptr) {
  auto out = Tensor<std::remove_const_t<T>, Rank, cpu>::uninitialized(src.shape());
  copy_async(out.view(), src, stream);
  RLMED_CUDA_CHECK(cudaStreamSynchronize(stream));
  return out;
}

}  // namespace rlmed
