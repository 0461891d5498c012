// rlmed/rl/replay/uniform.hpp — experience replay with uniform sampling (DQN, DDPG, TD3, SAC).
//
// Design decisions:
//  * A fixed-capacity ring over preallocated tensors (transition.hpp); the oldest transition is
//    overwritten once full. Sampling is with replacement (as the DQN paper and SB3 do), indices
//    drawn serially from the caller's PhiloxStream so the batch is a pure function of the stream
//    position, then rows are gathered in parallel.
//  * save/load write and restore the filled rows and the cursors: a resumed run samples exactly
//    what an uninterrupted one would (together with the stream position).
//  * The replay concepts at the bottom let agents take the strategy as a template argument
//    (principle 1) and call update_priorities only where it exists.
#pragma once

#include <concepts>
#include <span>
#include <string>

#include "rlmed/core/philox.hpp"
#include "rlmed/rl/replay/transition.hpp"

namespace rlmed::rl::replay {

template <std::size_t ObsRank = 1>
struct UniformConfig {
  index_t capacity = 100'000;
  Shape<ObsRank> obs_shape{};
  index_t action_dim = 1;  ///< 1 for a discrete action index
};

template <class Obs = float, std::size_t ObsRank = 1, class Act = float>
class Uniform {
 public:
  using obs_type = Obs;
  using action_type = Act;
  static constexpr std::size_t obs_rank = ObsRank;
  using batch_type = TransitionBatch<Obs, ObsRank, Act>;
  using obs_view = TensorView<const Obs, ObsRank>;
  using config_type = UniformConfig<ObsRank>;

  explicit Uniform(const config_type& config) : storage_(config.capacity, config.obs_shape, config.action_dim) {}

  [[nodiscard]] index_t capacity() const noexcept { return storage_.capacity(); }
  [[nodiscard]] index_t size() const noexcept { return storage_.size(); }
  [[nodiscard]] index_t cursor() const noexcept { return storage_.cursor(); }
  [[nodiscard]] std::int64_t total_added() const noexcept { return storage_.total_added(); }
  [[nodiscard]] const TransitionStorage<Obs, ObsRank, Act>& storage() const noexcept { return storage_; }
  [[nodiscard]] batch_type make_batch(index_t batch_size) const { return storage_.make_batch(batch_size); }

  /// Stores a transition; `steps` > 1 for n-step transitions (see transition.hpp). Returns the slot.
  index_t add(obs_view obs, std::span<const Act> action, float reward, obs_view next_obs, bool terminated,
              int steps = 1) {
    return storage_.add(obs, action, reward, next_obs, terminated, steps);
  }

  /// Fills `batch` with batch.size() transitions drawn uniformly with replacement; weights are 1.
  void sample_into(PhiloxStream& rng, batch_type& batch) const {
    RLMED_CHECK(size() > 0, "replay: cannot sample from an empty buffer");
    storage_.check_batch(batch);
    const index_t b = batch.size();
    auto* slots = batch.index.data();  // the slots double as the batch's index column
    for (index_t i = 0; i < b; ++i) slots[i] = rng.uniform_int(static_cast<std::uint32_t>(size()));
    fill(batch.weight, 1.0f);
    storage_.gather_into(std::span<const std::int64_t>(slots, static_cast<std::size_t>(b)), batch);
  }

  void save(io::SafetensorsWriter& w, const std::string& prefix) const { storage_.save(w, prefix); }
  void load(const io::SafetensorsReader& r, const std::string& prefix) {
    storage_.check_load(r, prefix);
    storage_.load_checked(r, prefix);
  }

 private:
  TransitionStorage<Obs, ObsRank, Act> storage_;
};

/// What an agent needs from any replay buffer of dense observations.
template <class B>
concept ReplayBuffer = requires(B& buf, const B& cbuf, PhiloxStream& rng, typename B::batch_type& batch,
                                typename B::obs_view obs, std::span<const typename B::action_type> action,
                                io::SafetensorsWriter& w, const io::SafetensorsReader& r, const std::string& prefix) {
  { buf.add(obs, action, 1.0f, obs, false, 1) } -> std::same_as<index_t>;
  { cbuf.make_batch(index_t{1}) } -> std::same_as<typename B::batch_type>;
  { cbuf.size() } -> std::convertible_to<index_t>;
  buf.sample_into(rng, batch);
  buf.save(w, prefix);
  buf.load(r, prefix);
};

/// A buffer whose sampling probabilities follow priorities updated from TD errors.
template <class B>
concept PrioritizedReplayBuffer =
    ReplayBuffer<B> && requires(B& buf, std::span<const std::int64_t> slots, std::span<const float> td) {
      buf.update_priorities(slots, td);
    };

static_assert(ReplayBuffer<Uniform<float, 1, float>>);

}  // namespace rlmed::rl::replay
