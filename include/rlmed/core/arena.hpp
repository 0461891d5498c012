// rlmed/core/arena.hpp — Workspace: a bump arena so hot loops allocate nothing after step one.
//
// Design decisions (principle 8 of the architecture):
//  * A training step asks the workspace for its temporaries (im2col buffers, caches, sampled
//    batches) and calls reset() when the step ends. Allocation is a pointer bump, 64-byte
//    aligned, no per-buffer free.
//  * Sizing is learned: during the first step(s) requests that do not fit go to overflow
//    blocks; at the next reset() the main block is regrown once to the high-water mark and the
//    overflow blocks are released. From then on the same sequence of requests allocates nothing,
//    which `system_allocations()` lets a test prove. `freeze()` turns any further growth into an
//    rlmed::Error, for code that must be allocation-free.
//  * Views handed out are valid until the next reset(). Not thread-safe: one workspace per
//    thread or worker.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed {

class Workspace {
 public:
  Workspace() = default;
  /// Pre-sizes the main block (bytes), e.g. from a previous run's high_water().
  explicit Workspace(std::size_t initial_bytes) { grow_main(initial_bytes); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  Workspace(Workspace&&) noexcept = default;
  Workspace& operator=(Workspace&&) noexcept = default;

  /// Uninitialised, 64-byte aligned storage for n elements of T.
  template <class T>
  std::span<T> array(index_t n) {
    static_assert(TensorElement<T>, "workspace holds trivially copyable elements only");
    RLMED_CHECK(n >= 0, "workspace request for ", n, " elements; expected n >= 0");
    RLMED_CHECK(static_cast<std::size_t>(n) <= (std::size_t(1) << 48) / sizeof(T),
                "workspace request for ", n, " elements of ", sizeof(T), " bytes is absurd");
    void* p = allocate_bytes(static_cast<std::size_t>(n) * sizeof(T));
    return {static_cast<T*>(p), static_cast<std::size_t>(n)};
  }

  /// Uninitialised tensor view of the given shape, valid until reset().
  template <class T, std::size_t Rank>
  TensorView<T, Rank, cpu> tensor(const Shape<Rank>& shape) {
    const index_t n = checked_numel(shape);
    return TensorView<T, Rank, cpu>(array<T>(n).data(), shape);
  }

  /// Zero-filled tensor view of the given shape, valid until reset().
  template <class T, std::size_t Rank>
  TensorView<T, Rank, cpu> zeros(const Shape<Rank>& shape) {
    auto v = tensor<T>(shape);
    if (v.size()) std::memset(static_cast<void*>(v.data()), 0, v.bytes());
    return v;
  }

  /// Ends a step: every view handed out becomes invalid. Regrows the main block once if the
  /// step overflowed it, so the next identical step fits without allocating.
  void reset() {
    if (!overflow_.empty()) {
      overflow_.clear();
      grow_main(step_high_water_);
    }
    offset_ = 0;
    step_bytes_ = 0;
    step_high_water_ = 0;
  }

  /// After freeze(), a request that does not fit throws instead of allocating.
  void freeze() noexcept { frozen_ = true; }
  void unfreeze() noexcept { frozen_ = false; }

  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  /// Bytes handed out (with alignment padding) since the last reset.
  [[nodiscard]] std::size_t used() const noexcept { return step_bytes_; }
  /// Largest used() seen in any step.
  [[nodiscard]] std::size_t high_water() const noexcept { return high_water_; }
  /// How many times the workspace asked the system for memory (main or overflow blocks).
  [[nodiscard]] std::uint64_t system_allocations() const noexcept { return system_allocations_; }

 private:
  static constexpr std::size_t round_up(std::size_t n) noexcept {
    return (n + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
  }

  void* allocate_bytes(std::size_t bytes) {
    const std::size_t need = round_up(bytes == 0 ? 1 : bytes);
    const bool fits = overflow_.empty() && offset_ + need <= capacity_;
    RLMED_CHECK(fits || !frozen_, "frozen workspace of ", capacity_, " bytes cannot grant ", need, " more bytes (",
                step_bytes_, " already handed out this step); size it larger before freeze()");
    step_bytes_ += need;
    if (step_bytes_ > step_high_water_) step_high_water_ = step_bytes_;
    if (step_bytes_ > high_water_) high_water_ = step_bytes_;
    if (fits) {
      void* p = main_.get() + offset_;
      offset_ += need;
      return p;
    }
    overflow_.emplace_back(static_cast<std::byte*>(detail::aligned_allocate(need)));
    ++system_allocations_;
    return overflow_.back().get();
  }

  void grow_main(std::size_t bytes) {
    bytes = round_up(bytes);
    if (bytes <= capacity_) return;
    main_.reset(static_cast<std::byte*>(detail::aligned_allocate(bytes)));
    capacity_ = bytes;
    ++system_allocations_;
  }

  std::unique_ptr<std::byte[], detail::AlignedFree> main_;
  std::vector<std::unique_ptr<std::byte[], detail::AlignedFree>> overflow_;
  std::size_t capacity_ = 0;
  std::size_t offset_ = 0;
  std::size_t step_bytes_ = 0;
  std::size_t step_high_water_ = 0;
  std::size_t high_water_ = 0;
  std::uint64_t system_allocations_ = 0;
  bool frozen_ = false;
};

}  // namespace rlmed
