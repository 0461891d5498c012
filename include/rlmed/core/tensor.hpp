// rlmed/core/tensor.hpp — TensorView (non-owning) and Tensor (owning) for host memory.
//
// Design decisions:
//  * Contiguous row-major only. Every kernel in rlmed (im2col, patch extraction, warps) wants
//    dense memory; strided views are produced by copying, never implied. Slicing along the
//    leading axis keeps contiguity, so sub-batches and channels are zero-copy views.
//  * Rank and device are template arguments, extents are run-time (principle 1).
//  * Owning host buffers are 64-byte aligned and zero-filled unless `uninitialized` is asked
//    for, so a fresh tensor never carries stale values into a reproducible run.
//  * `resize` keeps the allocation when the new size fits: workspaces sized on the first step
//    do not allocate again (principle 8).
//  * Element access is unchecked for speed; `at()` is the bounds-checked variant.
//  * Views are trivially copyable and their accessors are host+device, so a view of device
//    memory can be passed by value to a CUDA kernel.
#pragma once

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "rlmed/core/config.hpp"
#include "rlmed/core/device.hpp"
#include "rlmed/core/error.hpp"
#include "rlmed/core/shape.hpp"

namespace rlmed {

template <class T>
concept TensorElement = std::is_trivially_copyable_v<std::remove_const_t<T>> &&
                        std::is_trivially_default_constructible_v<std::remove_const_t<T>>;

/// A non-owning, contiguous, row-major view of Rank dimensions on a device.
template <class T, std::size_t Rank, class Dev = cpu>
class TensorView {
  static_assert(TensorElement<T>, "tensor elements must be trivially copyable");
  static_assert(is_device_v<Dev>, "Dev must be rlmed::cpu or rlmed::cuda");

 public:
  using element_type = T;
  using value_type = std::remove_const_t<T>;
  using device_type = Dev;
  using shape_type = Shape<Rank>;
  static constexpr std::size_t rank = Rank;

  constexpr TensorView() noexcept = default;
  RLMED_HOST_DEVICE constexpr TensorView(T* data, const shape_type& shape) noexcept
      : data_(data), shape_(shape) {}

  /// A mutable view converts to a read-only one.
  template <class U>
    requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
  RLMED_HOST_DEVICE constexpr TensorView(const TensorView<U, Rank, Dev>& other) noexcept
      : data_(other.data()), shape_(other.shape()) {}

  RLMED_HOST_DEVICE constexpr T* data() const noexcept { return data_; }
  RLMED_HOST_DEVICE constexpr const shape_type& shape() const noexcept { return shape_; }
  RLMED_HOST_DEVICE constexpr index_t extent(std::size_t axis) const noexcept { return shape_[axis]; }
  RLMED_HOST_DEVICE constexpr index_t size() const noexcept { return numel(shape_); }
  RLMED_HOST_DEVICE constexpr std::size_t bytes() const noexcept {
    return static_cast<std::size_t>(size()) * sizeof(T);
  }
  RLMED_HOST_DEVICE constexpr bool empty() const noexcept { return size() == 0; }
  RLMED_HOST_DEVICE constexpr shape_type strides() const noexcept {
    return contiguous_strides(shape_);
  }

  /// Linear (row-major) offset of a multi-index. Unchecked.
  template <class... I>
    requires(sizeof...(I) == Rank && (std::is_integral_v<I> && ...))
  RLMED_HOST_DEVICE constexpr index_t offset(I... idx) const noexcept {
    if constexpr (Rank == 0) {
      return 0;
    } else {
      const index_t ids[] = {static_cast<index_t>(idx)...};
      index_t off = 0;
      for (std::size_t a = 0; a < Rank; ++a) off = off * shape_[a] + ids[a];
      return off;
    }
  }

  /// Unchecked element access.
  template <class... I>
    requires(sizeof...(I) == Rank && (std::is_integral_v<I> && ...))
  RLMED_HOST_DEVICE constexpr T& operator()(I... idx) const noexcept {
    return data_[offset(idx...)];
  }

  /// Bounds-checked element access (host memory only); throws rlmed::Error out of range.
  template <class... I>
    requires(sizeof...(I) == Rank && (std::is_integral_v<I> && ...))
  T& at(I... idx) const {
    static_assert(std::is_same_v<Dev, cpu>, "at() dereferences host memory");
    if constexpr (Rank > 0) {
      const index_t ids[] = {static_cast<index_t>(idx)...};
      for (std::size_t a = 0; a < Rank; ++a)
        RLMED_CHECK(ids[a] >= 0 && ids[a] < shape_[a], "index ", ids[a], " out of range [0, ",
                    shape_[a], ") on axis ", a, " of a tensor of shape ", shape_);
    }
    return data_[offset(idx...)];
  }

  /// Slice i along the leading axis: a view of rank Rank-1 (or the element for rank 1).
  RLMED_HOST_DEVICE constexpr decltype(auto) operator[](index_t i) const noexcept {
    if constexpr (Rank == 1) {
      return data_[i];
    } else {
      return TensorView<T, Rank - 1, Dev>(data_ + i * row_size(), tail_shape(shape_));
    }
  }

  /// Checked slice i along the leading axis (rank Rank-1).
  TensorView<T, Rank - 1, Dev> sub(index_t i) const
    requires(Rank >= 2)
  {
    RLMED_CHECK(i >= 0 && i < shape_[0], "slice ", i, " out of range [0, ", shape_[0],
                ") of a tensor of shape ", shape_);
    return (*this)[i];
  }

  /// Rows [begin, end) along the leading axis; same rank. Checked.
  TensorView slice(index_t begin, index_t end) const {
    static_assert(Rank >= 1, "slice needs rank >= 1");
    RLMED_CHECK(0 <= begin && begin <= end && end <= shape_[0], "slice [", begin, ", ", end,
                ") out of range [0, ", shape_[0], "] of a tensor of shape ", shape_);
    shape_type s = shape_;
    s[0] = end - begin;
    return TensorView(data_ + begin * row_size(), s);
  }

  /// Same data, another shape with the same element count. Checked.
  template <std::size_t NewRank>
  TensorView<T, NewRank, Dev> reshape(const Shape<NewRank>& new_shape) const {
    RLMED_CHECK(checked_numel(new_shape) == size(), "cannot reshape ", shape_, " (", size(),
                " elements) to ", new_shape);
    return TensorView<T, NewRank, Dev>(data_, new_shape);
  }

  /// All elements as one axis.
  RLMED_HOST_DEVICE constexpr TensorView<T, 1, Dev> flat() const noexcept {
    return TensorView<T, 1, Dev>(data_, Shape<1>{size()});
  }

  RLMED_HOST_DEVICE constexpr T* begin() const noexcept { return data_; }
  RLMED_HOST_DEVICE constexpr T* end() const noexcept { return data_ + size(); }

 private:
  RLMED_HOST_DEVICE constexpr index_t row_size() const noexcept {
    index_t n = 1;
    for (std::size_t a = 1; a < Rank; ++a) n *= shape_[a];
    return n;
  }

  T* data_ = nullptr;
  shape_type shape_{};
};

template <class T, std::size_t Rank, class Dev = cpu>
using ConstTensorView = TensorView<const T, Rank, Dev>;

namespace detail {

struct AlignedFree {
  void operator()(void* p) const noexcept { ::operator delete(p, std::align_val_t{kTensorAlignment}); }
};

inline void* aligned_allocate(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  return ::operator new(bytes, std::align_val_t{kTensorAlignment});
}

}  // namespace detail

/// Owning tensor. The primary template is specialised per device: host memory here,
/// device memory in rlmed/core/tensor_cuda.hpp (only with RLMED_WITH_CUDA).
template <class T, std::size_t Rank, class Dev = cpu>
class Tensor;

/// Owning, contiguous, 64-byte aligned host tensor of compile-time rank.
template <class T, std::size_t Rank>
class Tensor<T, Rank, cpu> {
  static_assert(TensorElement<T> && !std::is_const_v<T>, "Tensor<T> needs a mutable trivially copyable T");

 public:
  using value_type = T;
  using device_type = cpu;
  using shape_type = Shape<Rank>;
  using view_type = TensorView<T, Rank, cpu>;
  using const_view_type = TensorView<const T, Rank, cpu>;
  static constexpr std::size_t rank = Rank;

  Tensor() = default;

  /// Zero-filled tensor of the given shape.
  explicit Tensor(const shape_type& shape) { allocate(shape, /*zero=*/true); }

  /// Tensor of the given shape with every element set to `value`.
  Tensor(const shape_type& shape, T value) {
    allocate(shape, /*zero=*/false);
    std::fill(data(), data() + size(), value);
  }

  /// Tensor whose contents are unspecified (for buffers that are about to be overwritten).
  static Tensor uninitialized(const shape_type& shape) {
    Tensor t;
    t.allocate(shape, /*zero=*/false);
    return t;
  }

  /// Deep copy of a view's contents into a new tensor.
  static Tensor copy_of(TensorView<const T, Rank, cpu> src) {
    Tensor t = uninitialized(src.shape());
    if (src.size()) std::memcpy(t.data(), src.data(), src.bytes());
    return t;
  }

  Tensor(const Tensor& other) : Tensor(copy_of(other.view())) {}
  Tensor(Tensor&& other) noexcept
      : storage_(std::move(other.storage_)), shape_(other.shape_), capacity_(other.capacity_) {
    other.shape_ = {};
    other.capacity_ = 0;
  }
  Tensor& operator=(const Tensor& other) {
    if (this != &other) {
      resize(other.shape());
      if (size()) std::memcpy(data(), other.data(), bytes());
    }
    return *this;
  }
  Tensor& operator=(Tensor&& other) noexcept {
    storage_ = std::move(other.storage_);
    shape_ = other.shape_;
    capacity_ = other.capacity_;
    other.shape_ = {};
    other.capacity_ = 0;
    return *this;
  }
  ~Tensor() = default;

  /// Changes the shape. Reuses the allocation when the new size fits (contents then
  /// unspecified); allocates otherwise. Steady-state loops call it without allocating.
  void resize(const shape_type& shape) {
    const index_t n = checked_numel(shape);
    if (n > capacity_) {
      allocate(shape, /*zero=*/false);
    } else {
      shape_ = shape;
    }
  }

  [[nodiscard]] T* data() noexcept { return storage_.get(); }
  [[nodiscard]] const T* data() const noexcept { return storage_.get(); }
  [[nodiscard]] const shape_type& shape() const noexcept { return shape_; }
  [[nodiscard]] index_t extent(std::size_t axis) const noexcept { return shape_[axis]; }
  [[nodiscard]] index_t size() const noexcept { return numel(shape_); }
  [[nodiscard]] std::size_t bytes() const noexcept { return static_cast<std::size_t>(size()) * sizeof(T); }
  [[nodiscard]] index_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }

  [[nodiscard]] view_type view() noexcept { return view_type(data(), shape_); }
  [[nodiscard]] const_view_type view() const noexcept { return const_view_type(data(), shape_); }
  operator view_type() noexcept { return view(); }
  operator const_view_type() const noexcept { return view(); }

  template <class... I>
  T& operator()(I... idx) noexcept { return view()(idx...); }
  template <class... I>
  const T& operator()(I... idx) const noexcept { return view()(idx...); }
  template <class... I>
  T& at(I... idx) { return view().at(idx...); }
  template <class... I>
  const T& at(I... idx) const { return view().at(idx...); }
  decltype(auto) operator[](index_t i) noexcept { return view()[i]; }
  decltype(auto) operator[](index_t i) const noexcept { return view()[i]; }
  auto sub(index_t i) { return view().sub(i); }
  auto sub(index_t i) const { return view().sub(i); }
  view_type slice(index_t b, index_t e) { return view().slice(b, e); }
  const_view_type slice(index_t b, index_t e) const { return view().slice(b, e); }
  template <std::size_t N>
  auto reshape(const Shape<N>& s) { return view().reshape(s); }
  template <std::size_t N>
  auto reshape(const Shape<N>& s) const { return view().reshape(s); }
  auto flat() noexcept { return view().flat(); }
  auto flat() const noexcept { return view().flat(); }

  T* begin() noexcept { return data(); }
  T* end() noexcept { return data() + size(); }
  const T* begin() const noexcept { return data(); }
  const T* end() const noexcept { return data() + size(); }

 private:
  void allocate(const shape_type& shape, bool zero) {
    const index_t n = checked_numel(shape);
    RLMED_CHECK(static_cast<std::size_t>(n) <= std::numeric_limits<std::size_t>::max() / sizeof(T),
                "tensor of shape ", shape, " does not fit in memory");
    const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(T);
    storage_.reset(static_cast<T*>(detail::aligned_allocate(bytes)));
    if (zero && bytes) std::memset(static_cast<void*>(storage_.get()), 0, bytes);
    shape_ = shape;
    capacity_ = n;
  }

  std::unique_ptr<T[], detail::AlignedFree> storage_;
  shape_type shape_{};
  index_t capacity_ = 0;
};

/// Sets every element of a host view.
template <class T, std::size_t Rank>
void fill(TensorView<T, Rank, cpu> dst, std::type_identity_t<T> value) {
  std::fill(dst.begin(), dst.end(), value);
}
template <class T, std::size_t Rank>
void fill(Tensor<T, Rank, cpu>& dst, T value) { fill(dst.view(), value); }

/// Copies src into dst on the host; shapes must match exactly.
template <class T, std::size_t Rank>
void copy(TensorView<T, Rank, cpu> dst, TensorView<const T, Rank, cpu> src) {
  RLMED_CHECK(dst.shape() == src.shape(), "copy: destination shape ", dst.shape(),
              " differs from source shape ", src.shape());
  if (src.size() == 0 || dst.data() == src.data()) return;
  const auto* d = reinterpret_cast<const std::byte*>(dst.data());
  const auto* s = reinterpret_cast<const std::byte*>(src.data());
  const bool overlap = d < s + src.bytes() && s < d + src.bytes();
  if (overlap) {
    std::memmove(dst.data(), src.data(), src.bytes());
  } else {
    std::memcpy(dst.data(), src.data(), src.bytes());
  }
}
template <class T, std::size_t Rank>
void copy(TensorView<T, Rank, cpu> dst, TensorView<T, Rank, cpu> src) {
  copy(dst, TensorView<const T, Rank, cpu>(src));
}

template <class T, std::size_t Rank>
void copy(Tensor<T, Rank, cpu>& dst, const Tensor<T, Rank, cpu>& src) {
  copy(dst.view(), src.view());
}
template <class T, std::size_t Rank>
void copy(TensorView<T, Rank, cpu> dst, const Tensor<T, Rank, cpu>& src) {
  copy(dst, src.view());
}

/// Bitwise equality of shape and contents (what "bit-identical" means in rlmed's tests).
template <class T, class U, std::size_t Rank>
bool bitwise_equal(TensorView<T, Rank, cpu> a, TensorView<U, Rank, cpu> b) {
  static_assert(std::is_same_v<std::remove_const_t<T>, std::remove_const_t<U>>);
  return a.shape() == b.shape() && (a.size() == 0 || std::memcmp(a.data(), b.data(), a.bytes()) == 0);
}
template <class T, std::size_t Rank>
bool bitwise_equal(const Tensor<T, Rank, cpu>& a, const Tensor<T, Rank, cpu>& b) {
  return bitwise_equal(a.view(), b.view());
}
template <class T, class U, std::size_t Rank>
bool bitwise_equal(const Tensor<T, Rank, cpu>& a, TensorView<U, Rank, cpu> b) {
  return bitwise_equal(a.view(), b);
}

}  // namespace rlmed
