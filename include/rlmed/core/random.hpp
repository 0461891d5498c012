// rlmed/core/random.hpp — filling tensors and sampling with Philox on the host.
//
// Design: bulk fills are stateless per element — element i of a fill that starts at stream
// position p uses words p + k*i ... (k words per element) — so the result does not depend on
// the number of OpenMP threads, and the CUDA kernels (kernels/rlmed/cuda/philox.cuh) reproduce
// it bit for bit. After the fill the stream has advanced by k*n words.
#pragma once

#include <cmath>
#include <span>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed {

/// Elements per work item of the bulk fills (a multiple of 4: whole Philox blocks).
inline constexpr index_t kFillChunk = 4096;

/// Uniform [lo, hi) into every element (1 word per element).
template <class T, std::size_t Rank>
void fill_uniform(TensorView<T, Rank, cpu> dst, PhiloxStream& rng, T lo = T(0), T hi = T(1)) {
  static_assert(std::is_floating_point_v<T>, "fill_uniform fills float or double tensors");
  RLMED_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, "fill_uniform needs finite lo <= hi, found [",
              lo, ", ", hi, ")");
  const std::uint64_t seed = rng.seed(), stream = rng.stream(), start = rng.position();
  T* out = dst.data();
  // Fixed chunks, each walking its own copy of the stream: one Philox block per 4 elements,
  // and chunk boundaries (hence results) independent of the thread count.
  parallel_for_chunks(0, dst.size(), kFillChunk, [&](index_t b, index_t e) {
    PhiloxStream local(seed, stream);
    local.seek(start + static_cast<std::uint64_t>(b));
    for (index_t i = b; i < e; ++i) out[i] = lo + (hi - lo) * static_cast<T>(local.uniform());
  });
  rng.seek(start + static_cast<std::uint64_t>(dst.size()));
}

/// Normal(mean, stddev) into every element (Box-Muller, 2 words per element).
template <class T, std::size_t Rank>
void fill_normal(TensorView<T, Rank, cpu> dst, PhiloxStream& rng, T mean = T(0), T stddev = T(1)) {
  static_assert(std::is_floating_point_v<T>, "fill_normal fills float or double tensors");
  RLMED_CHECK(std::isfinite(mean) && std::isfinite(stddev) && stddev >= 0,
              "fill_normal needs finite mean and stddev >= 0, found mean ", mean, ", stddev ", stddev);
  const std::uint64_t seed = rng.seed(), stream = rng.stream(), start = rng.position();
  T* out = dst.data();
  parallel_for_chunks(0, dst.size(), kFillChunk, [&](index_t b, index_t e) {
    PhiloxStream local(seed, stream);
    local.seek(start + 2 * static_cast<std::uint64_t>(b));
    for (index_t i = b; i < e; ++i) out[i] = mean + stddev * static_cast<T>(local.normal());
  });
  rng.seek(start + 2 * static_cast<std::uint64_t>(dst.size()));
}

/// Index drawn with probability proportional to `weights` (validated: finite, >= 0, sum > 0).
template <class Real>
int sample_categorical(PhiloxStream& rng, std::span<const Real> weights) {
  RLMED_CHECK(!weights.empty(), "categorical sampling needs at least one weight");
  Real total = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    RLMED_CHECK(std::isfinite(weights[i]) && weights[i] >= 0, "categorical weight ", i,
                " must be finite and >= 0, found ", weights[i]);
    total += weights[i];
  }
  RLMED_CHECK(total > 0 && std::isfinite(total), "categorical weights sum to ", total,
              "; expected a positive, finite sum");
  return rng.categorical(weights.data(), static_cast<int>(weights.size()));
}

}  // namespace rlmed
