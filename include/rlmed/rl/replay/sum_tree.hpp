// rlmed/rl/replay/sum_tree.hpp — segment trees over a fixed number of leaves: sums (sampling
// proportional to priority in O(log n)) and minima (the largest importance weight).
//
// Design decisions:
//  * Implicit binary heap layout: leaves at [P, 2P) with P the capacity rounded up to a power of
//    two, node i = op(node 2i, node 2i+1). Leaves beyond the capacity hold the identity (0 for
//    sums, +inf for minima).
//  * An update recomputes each ancestor from its two children instead of adding a delta, so every
//    node is a pure function of the leaves: no drift over millions of updates, and a tree rebuilt
//    from saved leaves is bit-identical to the one that was saved.
//  * Values are double: priorities near 1e-6 must still be sampled in proportion next to a total
//    of 1e6.
//  * find_prefix never returns a zero-mass leaf while the total is positive, even when `mass`
//    rounds to (or beyond) the total.
#pragma once

#include <cmath>
#include <limits>
#include <string>

#include "rlmed/core/error.hpp"
#include "rlmed/core/safetensors.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed::rl::replay {

namespace detail {
inline index_t next_pow2(index_t n) {
  index_t p = 1;
  while (p < n) p <<= 1;
  return p;
}
}  // namespace detail

/// Segment tree with an associative operation Op (a struct with static identity() and combine()).
template <class Op>
class SegmentTree {
 public:
  SegmentTree() = default;
  explicit SegmentTree(index_t capacity) : capacity_(capacity) {
    RLMED_CHECK(capacity >= 1, "segment tree capacity must be >= 1, found ", capacity);
    leaves_ = detail::next_pow2(capacity);
    nodes_ = Tensor<double, 1>(Shape<1>{2 * leaves_}, Op::identity());
  }

  [[nodiscard]] index_t capacity() const noexcept { return capacity_; }

  void set(index_t i, double value) {
    RLMED_CHECK(i >= 0 && i < capacity_, "segment tree index ", i, " outside [0, ", capacity_, ")");
    RLMED_CHECK(!std::isnan(value), "segment tree value at ", i, " is NaN");
    index_t node = i + leaves_;
    nodes_(node) = value;
    for (node >>= 1; node >= 1; node >>= 1) nodes_(node) = Op::combine(nodes_(2 * node), nodes_(2 * node + 1));
  }
  [[nodiscard]] double get(index_t i) const {
    RLMED_CHECK(i >= 0 && i < capacity_, "segment tree index ", i, " outside [0, ", capacity_, ")");
    return nodes_(i + leaves_);
  }
  /// op over all leaves.
  [[nodiscard]] double root() const noexcept { return nodes_(1); }

  /// Leaves [capacity] for checkpoints (the inner nodes are recomputed on load).
  void save(io::SafetensorsWriter& w, const std::string& name) const {
    w.add(name, TensorView<const double, 1>(nodes_.data() + leaves_, Shape<1>{capacity_}));
  }
  void check_load(const io::SafetensorsReader& r, const std::string& name) const {
    const io::TensorInfo& t = r.info(name);
    RLMED_CHECK(t.dtype == io::DType::F64 && t.shape == std::vector<index_t>{capacity_}, r.source(), ": tree '", name,
                "' is ", io::dtype_name(t.dtype), " ", t.shape, ", expected F64 [", capacity_, "]");
  }
  void load(const io::SafetensorsReader& r, const std::string& name) {
    check_load(r, name);
    const auto leaves = r.read<double, 1>(name);
    for (index_t i = 0; i < capacity_; ++i) RLMED_CHECK(!std::isnan(leaves(i)), r.source(), ": tree '", name, "' leaf ", i, " is NaN");
    for (index_t i = 0; i < capacity_; ++i) nodes_(leaves_ + i) = leaves(i);
    for (index_t node = leaves_ - 1; node >= 1; --node)
      nodes_(node) = Op::combine(nodes_(2 * node), nodes_(2 * node + 1));
  }

 protected:
  index_t capacity_ = 0;
  index_t leaves_ = 0;
  Tensor<double, 1> nodes_;  // [2 * leaves]; nodes_[0] unused
};

struct SumOp {
  static constexpr double identity() noexcept { return 0.0; }
  static constexpr double combine(double a, double b) noexcept { return a + b; }
};
struct MinOp {
  static constexpr double identity() noexcept { return std::numeric_limits<double>::infinity(); }
  static constexpr double combine(double a, double b) noexcept { return a < b ? a : b; }
};

/// Sums of non-negative priorities with prefix-sum search.
class SumTree : public SegmentTree<SumOp> {
 public:
  SumTree() = default;
  explicit SumTree(index_t capacity) : SegmentTree<SumOp>(capacity) {}

  void set(index_t i, double priority) {
    RLMED_CHECK(priority >= 0 && std::isfinite(priority), "sum tree priority at ", i, " must be finite and >= 0, found ",
                priority);
    SegmentTree<SumOp>::set(i, priority);
  }
  [[nodiscard]] double total() const noexcept { return root(); }

  /// The leaf i whose cumulative interval [sum_{j<i} p_j, sum_{j<=i} p_j) contains `mass`
  /// (mass in [0, total)); masses rounding past the total select the last positive leaf.
  [[nodiscard]] index_t find_prefix(double mass) const {
    RLMED_CHECK(total() > 0, "sum tree: cannot sample, all priorities are zero");
    RLMED_CHECK(mass >= 0 && !std::isnan(mass), "sum tree: prefix mass must be >= 0, found ", mass);
    index_t node = 1;
    while (node < leaves_) {
      const double left = nodes_(2 * node);
      if (mass < left || nodes_(2 * node + 1) <= 0) {
        node = 2 * node;  // a right subtree without mass is never entered
      } else {
        mass -= left;
        node = 2 * node + 1;
      }
    }
    return node - leaves_;
  }
};

/// Minimum over leaves (+inf where unset).
class MinTree : public SegmentTree<MinOp> {
 public:
  MinTree() = default;
  explicit MinTree(index_t capacity) : SegmentTree<MinOp>(capacity) {}
  [[nodiscard]] double min() const noexcept { return root(); }
};

}  // namespace rlmed::rl::replay
