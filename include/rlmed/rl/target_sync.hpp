// rlmed/rl/target_sync.hpp — target networks: hard copies every N steps (DQN) and Polyak
// averaging with rate τ (DDPG, TD3, SAC).
//
// Design decisions:
//  * Works on any two modules exposing parameters(visit) / buffers(visit) (nn/module.hpp). The
//    pairing of online and target tensors is built once, matched by module path and checked for
//    equal shapes, so a sync is a loop over flat views with no lookup and no allocation.
//  * Parameters are copied (hard) or blended target ← τ·online + (1 − τ)·target (Polyak, computed
//    in double and rounded once). Buffers (batch-norm running statistics, counters) are always
//    copied byte for byte, as Stable-Baselines3 does: averaging the statistics of two different
//    networks means nothing, and counters are integers.
//  * Elementwise updates run over rlmed::parallel_for; every element is independent, so results
//    do not depend on the thread count.
//  * The schedule structs sync::Hard / sync::Polyak are the compile-time strategy an agent takes
//    as a template argument (ARCHITECTURE.md principle 1); their numbers are run-time config.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed::rl::sync {

/// Flat views of matching (online, target) tensors of two modules with scalar type T.
template <class T>
class TargetPairs {
 public:
  TargetPairs() = default;
  template <class Online, class Target>
  TargetPairs(Online& online, Target& target) {
    std::vector<Slot> from_online, from_target;
    collect(online, from_online);
    collect(target, from_target);
    RLMED_CHECK(from_online.size() == from_target.size(), "target sync: the online module has ", from_online.size(),
                " tensors, the target module ", from_target.size());
    for (std::size_t i = 0; i < from_online.size(); ++i) {
      const Slot& o = from_online[i];
      const Slot& t = from_target[i];
      RLMED_CHECK(o.name == t.name && o.is_buffer == t.is_buffer, "target sync: tensor ", i, " is '", o.name,
                  "' in the online module but '", t.name, "' in the target module");
      RLMED_CHECK(o.shape == t.shape && o.element_bytes == t.element_bytes, "target sync: '", o.name, "' has shape ",
                  o.shape, " online and ", t.shape, " in the target");
      RLMED_CHECK(o.bytes != t.bytes, "target sync: online and target share the tensor '", o.name, "'");
      if (o.is_buffer) {
        buffers_.push_back({o.name, o.bytes, t.bytes, o.numel * o.element_bytes});
      } else {
        params_.push_back({o.name, TensorView<T, 1>(reinterpret_cast<T*>(o.bytes), Shape<1>{o.numel}),
                           TensorView<T, 1>(reinterpret_cast<T*>(t.bytes), Shape<1>{t.numel})});
      }
    }
  }

  /// Number of paired tensors (parameters and buffers).
  [[nodiscard]] std::size_t size() const noexcept { return params_.size() + buffers_.size(); }
  /// Number of paired parameter scalars.
  [[nodiscard]] index_t parameter_numel() const noexcept {
    index_t n = 0;
    for (const auto& p : params_) n += p.online.size();
    return n;
  }

  /// target <- online for every parameter and buffer.
  void hard_copy() const {
    for (const auto& p : params_) copy(p.target, TensorView<const T, 1>(p.online));
    copy_buffers();
  }

  /// target <- tau * online + (1 - tau) * target for parameters; buffers copied.
  void polyak(double tau) const {
    RLMED_CHECK(tau >= 0 && tau <= 1, "Polyak rate tau must be in [0, 1], found ", tau);
    for (const auto& p : params_) {
      const T* src = p.online.data();
      T* dst = p.target.data();
      parallel_for(
          0, p.online.size(),
          [&](index_t i) {
            dst[i] = static_cast<T>(tau * static_cast<double>(src[i]) + (1.0 - tau) * static_cast<double>(dst[i]));
          },
          1 << 14);
    }
    copy_buffers();
  }

 private:
  struct Slot {
    std::string name;
    std::vector<index_t> shape;
    std::byte* bytes;
    index_t numel;
    std::size_t element_bytes;
    bool is_buffer;
  };
  struct ParamPair {
    std::string name;
    TensorView<T, 1> online;
    TensorView<T, 1> target;
  };
  // Buffers may hold other element types (BatchNorm's int64 num_batches_tracked): raw bytes.
  struct BufferPair {
    std::string name;
    std::byte* online;
    std::byte* target;
    std::size_t bytes;
  };

  void copy_buffers() const {
    for (const auto& b : buffers_)
      if (b.bytes) std::memcpy(b.target, b.online, b.bytes);
  }

  template <class M>
  static void collect(M& module, std::vector<Slot>& out) {
    module.parameters([&](const std::string& name, auto& p) {
      using V = typename std::remove_reference_t<decltype(p.value)>::value_type;
      static_assert(std::is_same_v<V, T>, "target sync: module scalar type differs from TargetPairs<T>");
      out.push_back({name, {p.value.shape().begin(), p.value.shape().end()},
                     reinterpret_cast<std::byte*>(p.value.data()), p.value.size(), sizeof(V), false});
    });
    if constexpr (requires { module.buffers([](const std::string&, auto&) {}); }) {
      module.buffers([&](const std::string& name, auto& b) {
        using V = typename std::remove_reference_t<decltype(b)>::value_type;
        out.push_back({name, {b.shape().begin(), b.shape().end()}, reinterpret_cast<std::byte*>(b.data()), b.size(),
                       sizeof(V), true});
      });
    }
  }

  std::vector<ParamPair> params_;
  std::vector<BufferPair> buffers_;
};

/// Hard copy after every `every`-th gradient step (DQN: every 10^4 frames / 2500 updates).
struct Hard {
  std::int64_t every = 1000;
  /// Call after gradient step `step` (counted from 1); returns true when it synced.
  template <class T>
  bool update(const TargetPairs<T>& pairs, std::int64_t step) const {
    RLMED_CHECK(every >= 1, "sync::Hard: every must be >= 1, found ", every);
    if (step % every != 0) return false;
    pairs.hard_copy();
    return true;
  }
};

/// Polyak averaging with rate tau after every `every`-th gradient step (TD3/SAC: tau 0.005, every 1).
struct Polyak {
  double tau = 0.005;
  std::int64_t every = 1;
  template <class T>
  bool update(const TargetPairs<T>& pairs, std::int64_t step) const {
    RLMED_CHECK(every >= 1, "sync::Polyak: every must be >= 1, found ", every);
    if (step % every != 0) return false;
    pairs.polyak(tau);
    return true;
  }
};

/// One-off target ← online (builds the pairing; hold a TargetPairs in a training loop instead).
template <class T, class Online, class Target>
void hard_update(Target& target, Online& online) {
  TargetPairs<T>(online, target).hard_copy();
}
/// One-off Polyak update (builds the pairing; hold a TargetPairs in a training loop instead).
template <class T, class Online, class Target>
void polyak_update(Target& target, Online& online, double tau) {
  TargetPairs<T>(online, target).polyak(tau);
}

}  // namespace rlmed::rl::sync
