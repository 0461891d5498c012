// Core microbenchmarks: Philox throughput and tensor copy bandwidth against memcpy.
//
//   cmake --preset bench && cmake --build --preset bench && ./build/bench/bench/bench_core
//
// Philox: one Philox4x32-10 block per 4 words; the bulk fill is stateless per element so it
// scales over threads. Copy: rlmed::copy must cost what memcpy costs (it is one memmove after a
// shape check) — the ratio is reported in docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <cstring>

#include "rlmed/core/random.hpp"
#include "rlmed/core/tensor.hpp"

namespace {

void BM_PhiloxStreamNextU32(benchmark::State& state) {
  rlmed::PhiloxStream rng(1, 0);
  std::uint32_t acc = 0;
  for (auto _ : state) {
    for (int i = 0; i < 1024; ++i) acc ^= rng.next_u32();
    benchmark::DoNotOptimize(acc);
  }
  state.SetItemsProcessed(state.iterations() * 1024);
  state.SetBytesProcessed(state.iterations() * 1024 * 4);
}
BENCHMARK(BM_PhiloxStreamNextU32);

void BM_FillUniform(benchmark::State& state) {
  const auto n = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  const int saved = rlmed::max_threads();
  rlmed::set_num_threads(threads);
  rlmed::Tensor<float, 1> t(rlmed::Shape<1>{n});
  rlmed::PhiloxStream rng(2, 0);
  for (auto _ : state) {
    rlmed::fill_uniform(t.view(), rng);
    benchmark::ClobberMemory();
  }
  rlmed::set_num_threads(saved);
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * n * 4);
}
BENCHMARK(BM_FillUniform)->Args({1 << 20, 1})->Args({1 << 20, 2})->UseRealTime();

void BM_FillNormal(benchmark::State& state) {
  const auto n = state.range(0);
  rlmed::Tensor<float, 1> t(rlmed::Shape<1>{n});
  rlmed::PhiloxStream rng(3, 0);
  for (auto _ : state) {
    rlmed::fill_normal(t.view(), rng);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_FillNormal)->Arg(1 << 20)->UseRealTime();

// Copies of n floats: rlmed::copy (shape-checked) vs a bare memcpy of the same bytes.
void BM_TensorCopy(benchmark::State& state) {
  const auto n = state.range(0);
  rlmed::Tensor<float, 2> a(rlmed::Shape<2>{n / 64, 64}, 1.f), b(rlmed::Shape<2>{n / 64, 64});
  for (auto _ : state) {
    rlmed::copy(b.view(), a.view());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(a.bytes()));
}
void BM_Memcpy(benchmark::State& state) {
  const auto n = state.range(0);
  rlmed::Tensor<float, 2> a(rlmed::Shape<2>{n / 64, 64}, 1.f), b(rlmed::Shape<2>{n / 64, 64});
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), a.bytes());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(a.bytes()));
}
// 16 KiB (L1), 1 MiB (L2/L3), 64 MiB (DRAM)
BENCHMARK(BM_TensorCopy)->Arg(1 << 12)->Arg(1 << 18)->Arg(1 << 24);
BENCHMARK(BM_Memcpy)->Arg(1 << 12)->Arg(1 << 18)->Arg(1 << 24);

}  // namespace

BENCHMARK_MAIN();
