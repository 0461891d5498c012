// rlmed/rl/replay/transition.hpp — what every replay buffer shares: the sampled batch, the
// ring-buffer columns (action, reward, terminated, bootstrap steps) and dense observation storage.
//
// Design decisions:
//  * Structure of arrays in preallocated tensors: one row per slot of a fixed-capacity ring.
//    Nothing is allocated after construction; sampling gathers rows into a TransitionBatch the
//    caller made once (make_batch) and reuses.
//  * Every transition carries `steps`, the number of environment steps between obs and next_obs,
//    so one target formula serves 1-step and n-step replay alike:
//        target = reward + gamma^steps * (1 - done) * V(next_obs).
//    `done` is 1 only for termination; a truncated episode bootstraps (done = 0).
//  * Rewards are stored as float32 (what the learners consume); observations keep their type
//    (float features, uint8 pictures), actions are int (discrete) or float (continuous) rows.
//  * Checkpoints: each column is a safetensors tensor "<prefix><column>" holding only the filled
//    rows, plus "<prefix>meta" = [capacity, size, cursor, total_added]. load() checks every name,
//    dtype and shape before changing anything, so a mismatching file leaves the buffer intact.
//  * Gathering copies rows in parallel (row i of the batch touches only row i): deterministic.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/safetensors.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed::rl::replay {

/// A sampled minibatch; allocate once with the buffer's make_batch(B) and reuse.
template <class Obs = float, std::size_t ObsRank = 1, class Act = float>
struct TransitionBatch {
  Tensor<Obs, ObsRank + 1> obs;        // [B, *obs_shape]
  Tensor<Act, 2> action;               // [B, action_dim]
  Tensor<float, 1> reward;             // [B] (n-step: the discounted sum)
  Tensor<Obs, ObsRank + 1> next_obs;   // [B, *obs_shape] bootstrap observation
  Tensor<float, 1> done;               // [B] 1 = terminated: no bootstrap
  Tensor<std::int32_t, 1> steps;       // [B] bootstrap with gamma^steps
  Tensor<float, 1> weight;             // [B] importance weights (1 for uniform replay)
  Tensor<std::int64_t, 1> index;       // [B] buffer slots, for priority updates

  TransitionBatch() = default;
  TransitionBatch(index_t batch_size, const Shape<ObsRank>& obs_shape, index_t action_dim) {
    RLMED_CHECK(batch_size >= 1, "TransitionBatch needs batch_size >= 1, found ", batch_size);
    Shape<ObsRank + 1> s{};
    s[0] = batch_size;
    for (std::size_t i = 0; i < ObsRank; ++i) s[i + 1] = obs_shape[i];
    obs = Tensor<Obs, ObsRank + 1>(s);
    next_obs = Tensor<Obs, ObsRank + 1>(s);
    action = Tensor<Act, 2>(Shape<2>{batch_size, action_dim});
    reward = Tensor<float, 1>(Shape<1>{batch_size});
    done = Tensor<float, 1>(Shape<1>{batch_size});
    steps = Tensor<std::int32_t, 1>(Shape<1>{batch_size});
    weight = Tensor<float, 1>(Shape<1>{batch_size}, 1.0f);
    index = Tensor<std::int64_t, 1>(Shape<1>{batch_size});
  }
  [[nodiscard]] index_t size() const noexcept { return reward.size(); }
};

namespace detail {

inline std::string column_name(const std::string& prefix, const char* column) { return prefix + column; }

/// Checks that `name` exists with the given dtype and shape (before anything is modified).
inline void expect_tensor(const io::SafetensorsReader& r, const std::string& name, io::DType dtype,
                          const std::vector<index_t>& shape) {
  const io::TensorInfo& t = r.info(name);
  RLMED_CHECK(t.dtype == dtype, r.source(), ": replay tensor '", name, "' has dtype ", io::dtype_name(t.dtype),
              ", expected ", io::dtype_name(dtype));
  RLMED_CHECK(t.shape == shape, r.source(), ": replay tensor '", name, "' has shape ", t.shape, ", expected ", shape);
}

template <class T, std::size_t R>
std::vector<index_t> rows_shape(index_t rows, const Tensor<T, R>& full) {
  std::vector<index_t> s(full.shape().begin(), full.shape().end());
  s[0] = rows;
  return s;
}

template <class T, std::size_t R>
void check_finite(TensorView<const T, R> x, const char* what) {
  if constexpr (std::is_floating_point_v<T>) {
    for (index_t i = 0; i < x.size(); ++i)
      RLMED_CHECK(!std::isnan(x.data()[i]), "replay: ", what, " element ", i, " is NaN");
  }
}

}  // namespace detail

/// Ring-buffer bookkeeping plus the per-transition scalar columns: action, reward, terminated, steps.
template <class Act = float>
class TransitionColumns {
  static_assert(std::is_arithmetic_v<Act>, "actions are stored as int or floating-point rows");

 public:
  TransitionColumns() = default;
  TransitionColumns(index_t capacity, index_t action_dim) : capacity_(capacity) {
    RLMED_CHECK(capacity >= 1 && capacity <= index_t{0xFFFFFFFF}, "replay capacity must be in [1, 2^32), found ",
                capacity);  // slots are drawn with 32-bit uniform integers
    RLMED_CHECK(action_dim >= 1, "replay action_dim must be >= 1, found ", action_dim);
    action_ = Tensor<Act, 2>(Shape<2>{capacity, action_dim});
    reward_ = Tensor<float, 1>(Shape<1>{capacity});
    terminated_ = Tensor<std::uint8_t, 1>(Shape<1>{capacity});
    steps_ = Tensor<std::int32_t, 1>(Shape<1>{capacity});
  }

  [[nodiscard]] index_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] index_t size() const noexcept { return size_; }
  /// Slot the next add() writes (the oldest transition once the ring is full).
  [[nodiscard]] index_t cursor() const noexcept { return cursor_; }
  [[nodiscard]] std::int64_t total_added() const noexcept { return total_added_; }
  [[nodiscard]] index_t action_dim() const noexcept { return action_.extent(1); }

  /// Validates the scalar fields of a transition (call before writing anything).
  void validate(std::span<const Act> action, float reward, int steps) const {
    RLMED_CHECK(static_cast<index_t>(action.size()) == action_dim(), "replay: action has ", action.size(),
                " components, expected ", action_dim());
    if constexpr (std::is_floating_point_v<Act>)
      for (std::size_t i = 0; i < action.size(); ++i)
        RLMED_CHECK(!std::isnan(action[i]), "replay: action component ", i, " is NaN");
    RLMED_CHECK(std::isfinite(reward), "replay: reward is ", reward, "; expected a finite number");
    RLMED_CHECK(steps >= 1, "replay: bootstrap steps must be >= 1, found ", steps);
  }

  /// Writes the scalar fields into the cursor slot and advances the ring; returns the slot.
  index_t push(std::span<const Act> action, float reward, bool terminated, int steps) {
    const index_t slot = cursor_;
    std::copy(action.begin(), action.end(), action_.data() + slot * action_dim());
    reward_(slot) = reward;
    terminated_(slot) = terminated ? 1 : 0;
    steps_(slot) = steps;
    cursor_ = (cursor_ + 1) % capacity_;
    if (size_ < capacity_) ++size_;
    ++total_added_;
    return slot;
  }

  /// Copies slot `slot` into batch row `row`.
  template <class Obs, std::size_t R>
  void gather_row(index_t slot, index_t row, TransitionBatch<Obs, R, Act>& batch) const {
    const index_t a = action_dim();
    std::copy(action_.data() + slot * a, action_.data() + (slot + 1) * a, batch.action.data() + row * a);
    batch.reward(row) = reward_(slot);
    batch.done(row) = terminated_(slot) ? 1.0f : 0.0f;
    batch.steps(row) = steps_(slot);
    batch.index(row) = slot;
  }

  /// Checks a batch's scalar columns against this buffer.
  template <class Obs, std::size_t R>
  void check_batch(const TransitionBatch<Obs, R, Act>& batch) const {
    const index_t b = batch.size();
    RLMED_CHECK(b >= 1 && batch.action.shape() == (Shape<2>{b, action_dim()}) && batch.done.size() == b &&
                    batch.steps.size() == b && batch.weight.size() == b && batch.index.size() == b,
                "replay: batch was not made for this buffer (action shape ", batch.action.shape(), ", expected [", b,
                ", ", action_dim(), "]); use make_batch");
  }

  [[nodiscard]] float reward(index_t slot) const { return reward_.at(slot); }
  [[nodiscard]] bool terminated(index_t slot) const { return terminated_.at(slot) != 0; }
  [[nodiscard]] int steps(index_t slot) const { return steps_.at(slot); }
  [[nodiscard]] std::span<const Act> action(index_t slot) const {
    RLMED_CHECK(slot >= 0 && slot < capacity_, "replay slot ", slot, " outside [0, ", capacity_, ")");
    return {action_.data() + slot * action_dim(), static_cast<std::size_t>(action_dim())};
  }

  void save(io::SafetensorsWriter& w, const std::string& prefix) const {
    Tensor<std::int64_t, 1> meta(Shape<1>{4});
    meta(0) = capacity_;
    meta(1) = size_;
    meta(2) = cursor_;
    meta(3) = total_added_;
    w.add(detail::column_name(prefix, "meta"), meta);
    w.add(detail::column_name(prefix, "action"), action_.slice(0, size_));
    w.add(detail::column_name(prefix, "reward"), reward_.slice(0, size_));
    w.add(detail::column_name(prefix, "terminated"), terminated_.slice(0, size_));
    w.add(detail::column_name(prefix, "steps"), steps_.slice(0, size_));
  }

  /// Validates the file's columns; returns the stored size. Modifies nothing.
  index_t check_load(const io::SafetensorsReader& r, const std::string& prefix) const {
    const std::string meta_name = detail::column_name(prefix, "meta");
    detail::expect_tensor(r, meta_name, io::DType::I64, {4});
    const auto meta = r.read<std::int64_t, 1>(meta_name);
    RLMED_CHECK(meta(0) == capacity_, r.source(), ": replay '", prefix, "' was saved with capacity ", meta(0),
                ", this buffer has ", capacity_);
    const index_t size = meta(1), cursor = meta(2);
    RLMED_CHECK(size >= 0 && size <= capacity_ && cursor >= 0 && cursor < capacity_ &&
                    (size == capacity_ || cursor == size) && meta(3) >= size,
                r.source(), ": replay '", prefix, "' has inconsistent cursors (size ", size, ", cursor ", cursor,
                ", total ", meta(3), ", capacity ", capacity_, ")");
    detail::expect_tensor(r, detail::column_name(prefix, "action"), io::dtype_of<Act>(),
                          detail::rows_shape(size, action_));
    detail::expect_tensor(r, detail::column_name(prefix, "reward"), io::DType::F32, {size});
    detail::expect_tensor(r, detail::column_name(prefix, "terminated"), io::DType::U8, {size});
    detail::expect_tensor(r, detail::column_name(prefix, "steps"), io::DType::I32, {size});
    return size;
  }

  /// Loads what save() wrote (call check_load first; it validates).
  void load_checked(const io::SafetensorsReader& r, const std::string& prefix) {
    const auto meta = r.read<std::int64_t, 1>(detail::column_name(prefix, "meta"));
    size_ = meta(1);
    cursor_ = meta(2);
    total_added_ = meta(3);
    r.read_into(detail::column_name(prefix, "action"), action_.slice(0, size_));
    r.read_into(detail::column_name(prefix, "reward"), reward_.slice(0, size_));
    r.read_into(detail::column_name(prefix, "terminated"), terminated_.slice(0, size_));
    r.read_into(detail::column_name(prefix, "steps"), steps_.slice(0, size_));
  }

 private:
  index_t capacity_ = 0;
  index_t size_ = 0;
  index_t cursor_ = 0;
  std::int64_t total_added_ = 0;
  Tensor<Act, 2> action_;             // [capacity, action_dim]
  Tensor<float, 1> reward_;           // [capacity]
  Tensor<std::uint8_t, 1> terminated_;  // [capacity]
  Tensor<std::int32_t, 1> steps_;     // [capacity]
};

/// Columns plus dense observations: the storage of uniform and prioritized replay.
template <class Obs = float, std::size_t ObsRank = 1, class Act = float>
class TransitionStorage {
 public:
  using batch_type = TransitionBatch<Obs, ObsRank, Act>;
  using obs_view = TensorView<const Obs, ObsRank>;

  TransitionStorage() = default;
  TransitionStorage(index_t capacity, const Shape<ObsRank>& obs_shape, index_t action_dim)
      : columns_(capacity, action_dim), obs_shape_(obs_shape) {
    for (std::size_t i = 0; i < ObsRank; ++i)
      RLMED_CHECK(obs_shape[i] >= 1, "replay observation shape ", obs_shape, " needs positive extents");
    Shape<ObsRank + 1> s{};
    s[0] = capacity;
    for (std::size_t i = 0; i < ObsRank; ++i) s[i + 1] = obs_shape[i];
    obs_ = Tensor<Obs, ObsRank + 1>(s);
    next_obs_ = Tensor<Obs, ObsRank + 1>(s);
  }

  [[nodiscard]] index_t capacity() const noexcept { return columns_.capacity(); }
  [[nodiscard]] index_t size() const noexcept { return columns_.size(); }
  [[nodiscard]] index_t cursor() const noexcept { return columns_.cursor(); }
  [[nodiscard]] std::int64_t total_added() const noexcept { return columns_.total_added(); }
  [[nodiscard]] const Shape<ObsRank>& obs_shape() const noexcept { return obs_shape_; }
  [[nodiscard]] index_t action_dim() const noexcept { return columns_.action_dim(); }
  [[nodiscard]] const TransitionColumns<Act>& columns() const noexcept { return columns_; }

  /// A batch of B rows shaped for this storage.
  [[nodiscard]] batch_type make_batch(index_t batch_size) const {
    return batch_type(batch_size, obs_shape_, action_dim());
  }

  /// Stores one transition (validated first: shapes, NaN, finite reward); returns its slot.
  index_t add(obs_view obs, std::span<const Act> action, float reward, obs_view next_obs, bool terminated,
              int steps = 1) {
    RLMED_CHECK(obs.shape() == obs_shape_ && next_obs.shape() == obs_shape_, "replay: observation shapes ",
                obs.shape(), " and ", next_obs.shape(), ", expected ", obs_shape_);
    detail::check_finite(obs, "observation");
    detail::check_finite(next_obs, "next observation");
    columns_.validate(action, reward, steps);
    const index_t slot = columns_.cursor();
    copy(obs_.sub(slot), obs);
    copy(next_obs_.sub(slot), next_obs);
    columns_.push(action, reward, terminated, steps);
    return slot;
  }

  /// Copies the given slots into the batch rows (in parallel; each row independent).
  void gather_into(std::span<const std::int64_t> slots, batch_type& batch) const {
    check_batch(batch);
    RLMED_CHECK(static_cast<index_t>(slots.size()) == batch.size(), "replay: ", slots.size(),
                " slots for a batch of ", batch.size());
    for (std::size_t i = 0; i < slots.size(); ++i)
      RLMED_CHECK(slots[i] >= 0 && slots[i] < size(), "replay: slot ", slots[i], " outside the filled range [0, ",
                  size(), ")");
    const index_t row = numel(obs_shape_);
    parallel_for(
        0, batch.size(),
        [&](index_t b) {
          const index_t s = slots[static_cast<std::size_t>(b)];
          std::memcpy(batch.obs.data() + b * row, obs_.data() + s * row, static_cast<std::size_t>(row) * sizeof(Obs));
          std::memcpy(batch.next_obs.data() + b * row, next_obs_.data() + s * row,
                      static_cast<std::size_t>(row) * sizeof(Obs));
          columns_.gather_row(s, b, batch);
        },
        /*grain=*/row >= 4096 ? 2 : 256);
  }

  void check_batch(const batch_type& batch) const {
    columns_.check_batch(batch);
    Shape<ObsRank + 1> s = obs_.shape();
    s[0] = batch.size();
    RLMED_CHECK(batch.obs.shape() == s && batch.next_obs.shape() == s, "replay: batch observation shape ",
                batch.obs.shape(), ", expected ", s, "; use make_batch");
  }

  /// Stored observation of a slot (tests, debugging, HER).
  [[nodiscard]] TensorView<const Obs, ObsRank> obs(index_t slot) const { return obs_.sub(slot); }
  [[nodiscard]] TensorView<const Obs, ObsRank> next_obs(index_t slot) const { return next_obs_.sub(slot); }

  void save(io::SafetensorsWriter& w, const std::string& prefix) const {
    columns_.save(w, prefix);
    w.add(detail::column_name(prefix, "obs"), obs_.slice(0, size()));
    w.add(detail::column_name(prefix, "next_obs"), next_obs_.slice(0, size()));
  }
  index_t check_load(const io::SafetensorsReader& r, const std::string& prefix) const {
    const index_t n = columns_.check_load(r, prefix);
    detail::expect_tensor(r, detail::column_name(prefix, "obs"), io::dtype_of<Obs>(), detail::rows_shape(n, obs_));
    detail::expect_tensor(r, detail::column_name(prefix, "next_obs"), io::dtype_of<Obs>(),
                          detail::rows_shape(n, next_obs_));
    return n;
  }
  void load_checked(const io::SafetensorsReader& r, const std::string& prefix) {
    columns_.load_checked(r, prefix);
    r.read_into(detail::column_name(prefix, "obs"), obs_.slice(0, size()));
    r.read_into(detail::column_name(prefix, "next_obs"), next_obs_.slice(0, size()));
  }

 private:
  TransitionColumns<Act> columns_;
  Shape<ObsRank> obs_shape_{};
  Tensor<Obs, ObsRank + 1> obs_;       // [capacity, *obs_shape]
  Tensor<Obs, ObsRank + 1> next_obs_;  // [capacity, *obs_shape]
};

}  // namespace rlmed::rl::replay
