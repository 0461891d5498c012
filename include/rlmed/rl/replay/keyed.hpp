// rlmed/rl/replay/keyed.hpp — replay that stores compact state keys and re-renders observations
// at sample time (ARCHITECTURE.md principle 5: "replay stores keys, not pictures").
//
// Design decisions:
//  * Image environments (landmark search, registration) have observations of 10^4-10^6 voxels
//    but are fully described by a few numbers (volume id, position, scale, transform). Storing a
//    trivially copyable Key per observation instead of the pixels makes a 10^6-transition buffer
//    fit in memory; a Renderer turns a batch of keys back into observations with the same
//    patch-extraction / warp code the environment uses, so what is replayed equals what was seen.
//  * Renderer protocol: renderer.render_batch(std::span<const Key> keys, TensorView<Obs, R + 1> out)
//    writes out[i] = observation of keys[i]. It is called twice per sample (obs, next_obs).
//  * Columns, cursors, batches and checkpoint layout are those of dense replay (transition.hpp);
//    keys are saved as raw bytes (U8 [size, sizeof(Key)]), so the round trip is bit-exact.
//  * Sampling is uniform; gather_into takes slots from any other sampler (e.g. a SumTree) so
//    prioritized keyed replay needs no second implementation.
//  * The key scratch vectors grow to the largest batch seen and are then reused (no allocation
//    in steady state).
#pragma once

#include <cmath>
#include <concepts>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "rlmed/core/philox.hpp"
#include "rlmed/rl/replay/transition.hpp"

namespace rlmed::rl::replay {

template <class R, class Key, class Obs, std::size_t ObsRank>
concept Renderer = requires(R& renderer, std::span<const Key> keys, TensorView<Obs, ObsRank + 1> out) {
  renderer.render_batch(keys, out);
};

template <std::size_t ObsRank = 1>
struct KeyedConfig {
  index_t capacity = 100'000;
  Shape<ObsRank> obs_shape{};  ///< shape of one rendered observation
  index_t action_dim = 1;
};

template <class Key, class Obs = float, std::size_t ObsRank = 1, class Act = float>
class Keyed {
  static_assert(std::is_trivially_copyable_v<Key>, "replay keys are stored as raw bytes: Key must be trivially copyable");
  static_assert(std::is_default_constructible_v<Key>, "replay keys are preallocated: Key must be default constructible");

 public:
  using key_type = Key;
  using obs_type = Obs;
  using action_type = Act;
  static constexpr std::size_t obs_rank = ObsRank;
  using batch_type = TransitionBatch<Obs, ObsRank, Act>;
  using config_type = KeyedConfig<ObsRank>;

  explicit Keyed(const config_type& config)
      : columns_(config.capacity, config.action_dim),
        obs_shape_(config.obs_shape),
        keys_(static_cast<std::size_t>(config.capacity)),
        next_keys_(static_cast<std::size_t>(config.capacity)) {
    for (std::size_t i = 0; i < ObsRank; ++i)
      RLMED_CHECK(config.obs_shape[i] >= 1, "keyed replay: observation shape ", config.obs_shape,
                  " needs positive extents");
  }

  [[nodiscard]] index_t capacity() const noexcept { return columns_.capacity(); }
  [[nodiscard]] index_t size() const noexcept { return columns_.size(); }
  [[nodiscard]] index_t cursor() const noexcept { return columns_.cursor(); }
  [[nodiscard]] const TransitionColumns<Act>& columns() const noexcept { return columns_; }
  [[nodiscard]] batch_type make_batch(index_t batch_size) const {
    return batch_type(batch_size, obs_shape_, columns_.action_dim());
  }
  [[nodiscard]] const Key& key(index_t slot) const { return keys_.at(checked(slot)); }
  [[nodiscard]] const Key& next_key(index_t slot) const { return next_keys_.at(checked(slot)); }

  /// Stores a transition by the keys of its two observations; returns the slot.
  index_t add(const Key& key, std::span<const Act> action, float reward, const Key& next_key, bool terminated,
              int steps = 1) {
    columns_.validate(action, reward, steps);
    const index_t slot = columns_.cursor();
    keys_[static_cast<std::size_t>(slot)] = key;
    next_keys_[static_cast<std::size_t>(slot)] = next_key;
    columns_.push(action, reward, terminated, steps);
    return slot;
  }

  /// Uniform sample with replacement; observations rendered from the stored keys.
  template <class R>
    requires Renderer<R, Key, Obs, ObsRank>
  void sample_into(PhiloxStream& rng, R& renderer, batch_type& batch) {
    RLMED_CHECK(size() > 0, "keyed replay: cannot sample from an empty buffer");
    check_batch(batch);
    auto* slots = batch.index.data();
    for (index_t i = 0; i < batch.size(); ++i) slots[i] = rng.uniform_int(static_cast<std::uint32_t>(size()));
    fill(batch.weight, 1.0f);
    gather_into(std::span<const std::int64_t>(slots, static_cast<std::size_t>(batch.size())), renderer, batch);
  }

  /// Gathers the given slots and renders their observations (weights are left as they are).
  template <class R>
    requires Renderer<R, Key, Obs, ObsRank>
  void gather_into(std::span<const std::int64_t> slots, R& renderer, batch_type& batch) {
    check_batch(batch);
    const index_t b = batch.size();
    RLMED_CHECK(static_cast<index_t>(slots.size()) == b, "keyed replay: ", slots.size(), " slots for a batch of ", b);
    if (scratch_keys_.size() < slots.size()) {
      scratch_keys_.resize(slots.size());
      scratch_next_keys_.resize(slots.size());
    }
    for (std::size_t i = 0; i < slots.size(); ++i) {
      RLMED_CHECK(slots[i] >= 0 && slots[i] < size(), "keyed replay: slot ", slots[i], " outside the filled range [0, ",
                  size(), ")");
      const auto s = static_cast<std::size_t>(slots[i]);
      scratch_keys_[i] = keys_[s];
      scratch_next_keys_[i] = next_keys_[s];
      columns_.gather_row(slots[i], static_cast<index_t>(i), batch);
    }
    renderer.render_batch(std::span<const Key>(scratch_keys_.data(), slots.size()), batch.obs.view());
    renderer.render_batch(std::span<const Key>(scratch_next_keys_.data(), slots.size()), batch.next_obs.view());
    detail::check_finite(TensorView<const Obs, ObsRank + 1>(batch.obs.view()), "rendered observation");
    detail::check_finite(TensorView<const Obs, ObsRank + 1>(batch.next_obs.view()), "rendered next observation");
  }

  void save(io::SafetensorsWriter& w, const std::string& prefix) const {
    columns_.save(w, prefix);
    w.add(prefix + "keys", key_bytes(keys_));
    w.add(prefix + "next_keys", key_bytes(next_keys_));
  }
  void load(const io::SafetensorsReader& r, const std::string& prefix) {
    const index_t n = columns_.check_load(r, prefix);
    const std::vector<index_t> shape{n, static_cast<index_t>(sizeof(Key))};
    detail::expect_tensor(r, prefix + "keys", io::DType::U8, shape);
    detail::expect_tensor(r, prefix + "next_keys", io::DType::U8, shape);
    columns_.load_checked(r, prefix);
    load_keys(r, prefix + "keys", keys_, n);
    load_keys(r, prefix + "next_keys", next_keys_, n);
  }

 private:
  std::size_t checked(index_t slot) const {
    RLMED_CHECK(slot >= 0 && slot < size(), "keyed replay: slot ", slot, " outside the filled range [0, ", size(), ")");
    return static_cast<std::size_t>(slot);
  }
  void check_batch(const batch_type& batch) const {
    columns_.check_batch(batch);
    Shape<ObsRank + 1> s{};
    s[0] = batch.size();
    for (std::size_t i = 0; i < ObsRank; ++i) s[i + 1] = obs_shape_[i];
    RLMED_CHECK(batch.obs.shape() == s && batch.next_obs.shape() == s, "keyed replay: batch observation shape ",
                batch.obs.shape(), ", expected ", s, "; use make_batch");
  }
  Tensor<std::uint8_t, 2> key_bytes(const std::vector<Key>& keys) const {
    Tensor<std::uint8_t, 2> bytes(Shape<2>{size(), static_cast<index_t>(sizeof(Key))});
    if (size() > 0) std::memcpy(bytes.data(), keys.data(), static_cast<std::size_t>(size()) * sizeof(Key));
    return bytes;
  }
  static void load_keys(const io::SafetensorsReader& r, const std::string& name, std::vector<Key>& keys, index_t n) {
    const auto raw = r.raw(name);
    if (n > 0) std::memcpy(static_cast<void*>(keys.data()), raw.data(), static_cast<std::size_t>(n) * sizeof(Key));
  }

  TransitionColumns<Act> columns_;
  Shape<ObsRank> obs_shape_{};
  std::vector<Key> keys_;       // [capacity]
  std::vector<Key> next_keys_;  // [capacity]
  std::vector<Key> scratch_keys_;
  std::vector<Key> scratch_next_keys_;
};

}  // namespace rlmed::rl::replay
