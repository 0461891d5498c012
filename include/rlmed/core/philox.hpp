// rlmed/core/philox.hpp — Philox4x32-10 counter-based random numbers, host and device.
//
// Design decisions:
//  * Counter-based (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011):
//    the i-th number of a stream is a pure function of (seed, stream, counter), so CPU and GPU
//    draw identical bits, any worker can jump to any position, and resuming a run only needs
//    the counter — no hidden state to checkpoint (principle 4).
//  * Keying: key = the 64-bit seed; the 128-bit counter = (counter lo, counter hi, stream lo,
//    stream hi). One block yields 4 x 32 bits; a `PhiloxStream` consumes them in order.
//  * Everything here is RLMED_HOST_DEVICE and free of libc calls except the transcendental
//    functions of Box-Muller, so the same code compiles under g++ and nvcc.
//  * Floats: uniform float = top 24 bits * 2^-24 in [0, 1) (exact, identical on both devices);
//    uniform double = 53 bits from two words. Box-Muller uses u in (0, 1] so log never sees 0.
#pragma once

#include <cmath>
#include <cstdint>

#include "rlmed/core/config.hpp"

namespace rlmed {

/// Four 32-bit words: a Philox counter or output block.
struct PhiloxBlock {
  std::uint32_t v[4];
  RLMED_HOST_DEVICE constexpr std::uint32_t operator[](int i) const noexcept { return v[i]; }
  RLMED_HOST_DEVICE constexpr bool operator==(const PhiloxBlock& o) const noexcept {
    return v[0] == o.v[0] && v[1] == o.v[1] && v[2] == o.v[2] && v[3] == o.v[3];
  }
};

/// Two 32-bit words: a Philox key.
struct PhiloxKey {
  std::uint32_t v[2];
};

namespace detail {

inline constexpr std::uint32_t kPhiloxM0 = 0xD2511F53u;  // round multipliers (Salmon et al.)
inline constexpr std::uint32_t kPhiloxM1 = 0xCD9E8D57u;
inline constexpr std::uint32_t kPhiloxW0 = 0x9E3779B9u;  // Weyl key increments: golden ratio,
inline constexpr std::uint32_t kPhiloxW1 = 0xBB67AE85u;  // sqrt(3) - 1

RLMED_HOST_DEVICE RLMED_FORCE_INLINE void mulhilo32(std::uint32_t a, std::uint32_t b,
                                                    std::uint32_t& hi, std::uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  lo = a * b;
  hi = __umulhi(a, b);
#else
  const std::uint64_t p = static_cast<std::uint64_t>(a) * b;
  lo = static_cast<std::uint32_t>(p);
  hi = static_cast<std::uint32_t>(p >> 32);
#endif
}

}  // namespace detail

/// The Philox4x32 bijection with `Rounds` rounds (10 is the standard, crush-resistant choice).
template <int Rounds = 10>
RLMED_HOST_DEVICE constexpr PhiloxBlock philox4x32(PhiloxBlock ctr, PhiloxKey key) noexcept {
  static_assert(Rounds >= 1 && Rounds <= 16, "Philox4x32 is defined for 1..16 rounds");
  for (int r = 0; r < Rounds; ++r) {
    if (r > 0) {
      key.v[0] += detail::kPhiloxW0;
      key.v[1] += detail::kPhiloxW1;
    }
    std::uint32_t hi0, lo0, hi1, lo1;
    detail::mulhilo32(detail::kPhiloxM0, ctr.v[0], hi0, lo0);
    detail::mulhilo32(detail::kPhiloxM1, ctr.v[2], hi1, lo1);
    ctr = PhiloxBlock{{hi1 ^ ctr.v[1] ^ key.v[0], lo1, hi0 ^ ctr.v[3] ^ key.v[1], lo0}};
  }
  return ctr;
}

/// The block at position `counter` of stream `stream` under `seed`.
RLMED_HOST_DEVICE constexpr PhiloxBlock philox_block(std::uint64_t seed, std::uint64_t stream,
                                                     std::uint64_t counter) noexcept {
  const PhiloxBlock ctr{{static_cast<std::uint32_t>(counter), static_cast<std::uint32_t>(counter >> 32),
                         static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)}};
  const PhiloxKey key{{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)}};
  return philox4x32<10>(ctr, key);
}

/// Word `index` (any 64-bit position) of a stream: block index/4, lane index%4. Stateless, so a
/// GPU thread i and the host loop at i read the same number.
RLMED_HOST_DEVICE constexpr std::uint32_t philox_u32_at(std::uint64_t seed, std::uint64_t stream,
                                                        std::uint64_t index) noexcept {
  return philox_block(seed, stream, index >> 2).v[index & 3];
}

/// [0, 1) from the top 24 bits: every value exactly representable in float.
RLMED_HOST_DEVICE constexpr float u32_to_uniform_float(std::uint32_t x) noexcept {
  return static_cast<float>(x >> 8) * (1.0f / 16777216.0f);
}
/// (0, 1]: used where a logarithm follows.
RLMED_HOST_DEVICE constexpr float u32_to_uniform_float_open0(std::uint32_t x) noexcept {
  return static_cast<float>((x >> 8) + 1u) * (1.0f / 16777216.0f);
}
/// [0, 1) from 53 bits of two words.
RLMED_HOST_DEVICE constexpr double u32x2_to_uniform_double(std::uint32_t hi, std::uint32_t lo) noexcept {
  const std::uint64_t bits = (static_cast<std::uint64_t>(hi) << 21) ^ (lo >> 11);
  return static_cast<double>(bits & ((std::uint64_t{1} << 53) - 1)) * (1.0 / 9007199254740992.0);
}

/// A position in one Philox stream that hands out words in order. Its whole state is
/// (seed, stream, counter, lane): copy it to checkpoint it, set it to resume exactly.
class PhiloxStream {
 public:
  RLMED_HOST_DEVICE constexpr PhiloxStream() noexcept = default;
  RLMED_HOST_DEVICE constexpr PhiloxStream(std::uint64_t seed, std::uint64_t stream,
                                           std::uint64_t counter = 0) noexcept
      : seed_(seed), stream_(stream), counter_(counter) {}

  /// Next 32 random bits.
  RLMED_HOST_DEVICE constexpr std::uint32_t next_u32() noexcept {
    if (lane_ == 0) block_ = philox_block(seed_, stream_, counter_);
    const std::uint32_t x = block_.v[lane_];
    if (++lane_ == 4) {
      lane_ = 0;
      ++counter_;
    }
    return x;
  }
  RLMED_HOST_DEVICE constexpr std::uint64_t next_u64() noexcept {
    const std::uint64_t hi = next_u32();
    return (hi << 32) | next_u32();
  }

  /// Uniform in [0, 1).
  RLMED_HOST_DEVICE constexpr float uniform() noexcept { return u32_to_uniform_float(next_u32()); }
  /// Uniform in [lo, hi).
  RLMED_HOST_DEVICE constexpr float uniform(float lo, float hi) noexcept {
    return lo + (hi - lo) * uniform();
  }
  /// Uniform double in [0, 1) with 53 random bits.
  RLMED_HOST_DEVICE constexpr double uniform_double() noexcept {
    const std::uint32_t hi = next_u32();
    return u32x2_to_uniform_double(hi, next_u32());
  }

  /// Unbiased integer in [0, n) (Lemire's multiply-and-reject; n must be > 0).
  RLMED_HOST_DEVICE constexpr std::uint32_t uniform_int(std::uint32_t n) noexcept {
    std::uint64_t m = static_cast<std::uint64_t>(next_u32()) * n;
    auto low = static_cast<std::uint32_t>(m);
    if (low < n) {
      const std::uint32_t threshold = static_cast<std::uint32_t>(-n) % n;
      while (low < threshold) {
        m = static_cast<std::uint64_t>(next_u32()) * n;
        low = static_cast<std::uint32_t>(m);
      }
    }
    return static_cast<std::uint32_t>(m >> 32);
  }

  /// Standard normal by Box-Muller; draws two words per call (the second variate is not
  /// cached, so the stream position depends only on the number of calls).
  RLMED_HOST_DEVICE float normal() noexcept {
    const float u1 = u32_to_uniform_float_open0(next_u32());
    const float u2 = u32_to_uniform_float(next_u32());
    constexpr float two_pi = 6.283185307179586f;
    return sqrtf(-2.0f * logf(u1)) * cosf(two_pi * u2);
  }
  RLMED_HOST_DEVICE float normal(float mean, float stddev) noexcept { return mean + stddev * normal(); }
  /// Standard normal in double precision (53-bit uniforms).
  RLMED_HOST_DEVICE double normal_double() noexcept {
    const double u1 = 1.0 - uniform_double();  // (0, 1]
    const double u2 = uniform_double();
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
  }

  /// Index drawn with probability proportional to weights[i] (inverse CDF, one word).
  /// Weights must be non-negative with a positive sum; the caller validates (see random.hpp).
  template <class Real>
  RLMED_HOST_DEVICE int categorical(const Real* weights, int n) noexcept {
    Real total = 0;
    for (int i = 0; i < n; ++i) total += weights[i];
    const Real u = static_cast<Real>(uniform()) * total;
    Real acc = 0;
    int last_positive = 0;
    for (int i = 0; i < n; ++i) {
      if (weights[i] > 0) last_positive = i;
      acc += weights[i];
      if (u < acc) return i;
    }
    return last_positive;  // u rounded up to the total: the last index that can be drawn
  }

  RLMED_HOST_DEVICE constexpr std::uint64_t seed() const noexcept { return seed_; }
  RLMED_HOST_DEVICE constexpr std::uint64_t stream() const noexcept { return stream_; }
  /// Position in words from the start of the stream (4 per block).
  RLMED_HOST_DEVICE constexpr std::uint64_t position() const noexcept { return counter_ * 4 + lane_; }
  /// Jumps to word `pos` of the stream.
  RLMED_HOST_DEVICE constexpr void seek(std::uint64_t pos) noexcept {
    counter_ = pos >> 2;
    lane_ = static_cast<int>(pos & 3);
    if (lane_ != 0) block_ = philox_block(seed_, stream_, counter_);
  }
  /// A stream with the same seed and another stream id (e.g. one per A3C worker).
  RLMED_HOST_DEVICE constexpr PhiloxStream fork(std::uint64_t new_stream) const noexcept {
    return PhiloxStream(seed_, new_stream);
  }

  RLMED_HOST_DEVICE constexpr bool operator==(const PhiloxStream& o) const noexcept {
    return seed_ == o.seed_ && stream_ == o.stream_ && position() == o.position();
  }

 private:
  std::uint64_t seed_ = 0;
  std::uint64_t stream_ = 0;
  std::uint64_t counter_ = 0;
  int lane_ = 0;
  PhiloxBlock block_{};
};

}  // namespace rlmed
