// Spatial transformer microbenchmarks, the same work as bench/peers/imaging_warp_torch.py
// (torch.nn.functional.grid_sample, 2 threads):
//   * 3D: one 128^3 float image, one channel, warped by a smooth field (amplitude 3 voxels),
//     trilinear, zeros padding: forward, and forward + backward (gradients of image and field);
//   * 2D: the same at 256^2, bilinear.
// Backward reuses its workspace and outputs (no allocation per iteration), as a training loop does.
// Counter: output voxels per second. Run:  ./build/bench/bench/imaging_warp_bench
#include <benchmark/benchmark.h>

#include <cmath>
#include <numbers>

#include "rlmed/core/random.hpp"
#include "rlmed/imaging/warp.hpp"

using namespace rlmed;
using namespace rlmed::imaging;

namespace {

// u_c(p) = 3 sin(2π (p_a / n_a + c / 4)), a = (c + 1) mod Dim: smooth, up to 3 voxels (the peer's formula).
template <std::size_t Dim>
Tensor<float, Dim + 2> smooth_field(const Shape<Dim>& spatial) {
  Shape<Dim + 2> s{};
  s[0] = 1;
  s[1] = index_t(Dim);
  for (std::size_t a = 0; a < Dim; ++a) s[2 + a] = spatial[a];
  Tensor<float, Dim + 2> u(s);
  const auto strides = contiguous_strides(spatial);
  const index_t voxels = numel(spatial);
  for (std::size_t c = 0; c < Dim; ++c) {
    const std::size_t a = (c + 1) % Dim;
    for (index_t i = 0; i < voxels; ++i) {
      const index_t p = (i / strides[a]) % spatial[a];
      u.data()[index_t(c) * voxels + i] =
          float(3.0 * std::sin(2.0 * std::numbers::pi * (double(p) / double(spatial[a]) + double(c) / 4.0)));
    }
  }
  return u;
}

template <std::size_t Dim>
void warp_bench(benchmark::State& state, index_t side, bool backward) {
  Shape<Dim> spatial{};
  spatial.fill(side);
  Shape<Dim + 2> image_shape{};
  image_shape[0] = image_shape[1] = 1;
  for (std::size_t a = 0; a < Dim; ++a) image_shape[2 + a] = side;
  PhiloxStream rng(1, 0);
  Tensor<float, Dim + 2> image(image_shape), out(image_shape), grad_out(image_shape), grad_image(image_shape);
  fill_uniform(image.view(), rng);
  fill_normal(grad_out.view(), rng);
  const auto field = smooth_field<Dim>(spatial);
  Tensor<float, Dim + 2> grad_field(field.shape());
  WarpWorkspace workspace;
  for (auto _ : state) {
    warp_forward_into(out.view(), image, field, Interp::linear, Padding::zeros);
    benchmark::DoNotOptimize(out.data());
    if (backward) {
      warp_backward_into(grad_image.view(), grad_field.view(), grad_out, image, field, Interp::linear, Padding::zeros,
                         GradWrite::overwrite, &workspace);
      benchmark::DoNotOptimize(grad_image.data());
      benchmark::DoNotOptimize(grad_field.data());
    }
  }
  state.counters["voxels/s"] =
      benchmark::Counter(double(numel(spatial)), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Warp3D_128_fwd(benchmark::State& s) { warp_bench<3>(s, 128, false); }
void BM_Warp3D_128_fwdbwd(benchmark::State& s) { warp_bench<3>(s, 128, true); }
void BM_Warp2D_256_fwd(benchmark::State& s) { warp_bench<2>(s, 256, false); }
void BM_Warp2D_256_fwdbwd(benchmark::State& s) { warp_bench<2>(s, 256, true); }

BENCHMARK(BM_Warp3D_128_fwd)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Warp3D_128_fwdbwd)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Warp2D_256_fwd)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Warp2D_256_fwdbwd)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  set_num_threads(2);  // the reference machine's cores; the peer uses torch.set_num_threads(2)
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
