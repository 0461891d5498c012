// Batched patch extraction, the landmark agent's hot path: 192 patches of 45³ voxels from a
// 182 × 218 × 182 float volume (MNI-sized), centres up to 20 voxels beyond every border, into a
// preallocated [192, 45, 45, 45] batch. Same centres and work as bench/peers/imaging_patches_numpy.py.
// Counter GB/s = bytes of patches written per second.
//   ./build/bench/bench/imaging_patches_bench --benchmark_repetitions=9 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <vector>

#include "rlmed/core/random.hpp"
#include "rlmed/imaging/patches.hpp"

using namespace rlmed;
using namespace rlmed::imaging;

namespace {

constexpr index_t kPatches = 192, kSide = 45, kMargin = 20;
constexpr std::array<index_t, 3> kVolumeXyz{182, 218, 182};

// Deterministic centres in [-20, n + 20) per axis; the NumPy peer computes the same formula.
std::vector<Voxel<3>> bench_centres() {
  constexpr std::array<index_t, 3> mul{7919, 104729, 1299709}, add{13, 71, 29};
  std::vector<Voxel<3>> c(kPatches);
  for (index_t i = 0; i < kPatches; ++i)
    for (std::size_t a = 0; a < 3; ++a)
      c[std::size_t(i)][a] = (i * mul[a] + add[a]) % (kVolumeXyz[a] + 2 * kMargin) - kMargin;
  return c;
}

void BM_ExtractPatches(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const index_t stride = state.range(1);
  const int saved = max_threads();
  set_num_threads(threads);
  Tensor<float, 3> volume(Shape<3>{kVolumeXyz[2], kVolumeXyz[1], kVolumeXyz[0]});
  PhiloxStream rng(1, 0);
  fill_uniform(volume.view(), rng);
  const auto centres = bench_centres();
  Tensor<float, 4> out(Shape<4>{kPatches, kSide, kSide, kSide});
  const auto geometry = PatchGeometry<3>::cube(kSide, stride);
  for (auto _ : state) {
    extract_patches_3d_into<float>(out.view(), volume.view(), centres, geometry);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(double(out.bytes()) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  set_num_threads(saved);
}

}  // namespace

// Args: threads, stride (1 = full resolution; 2 = the coarser-scale view of a multi-scale agent).
BENCHMARK(BM_ExtractPatches)
    ->ArgNames({"threads", "stride"})
    ->Args({2, 1})
    ->Args({1, 1})
    ->Args({2, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK_MAIN();
