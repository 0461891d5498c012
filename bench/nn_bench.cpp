// nn microbenchmarks, the same work as bench/peers/nn_torch.py (PyTorch, 2 threads):
//   * every convolution shape of the PixelDRL-MG network at 128x128, batch 2 (the paper's),
//     forward and forward+backward;
//   * the S1 landmark Q-network update: batch 48 of 4 x 45^3 cubes, dueling head, Huber loss,
//     backward, Adam step;
//   * a full 2D U-Net train step at 1 x 128 x 128 (base width 16, BCE loss, Adam).
// Counters: GFLOP/s (multiply-adds x 2, forward 1x, backward 2x) and the process's peak RSS.
// Run one filter at a time for per-benchmark peak memory:
//   ./build/bench/bench/nn_bench --benchmark_filter=UNet2D
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <string>

#include "rlmed/nn/nn.hpp"

using namespace rlmed;

namespace {

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

template <index_t In, index_t Out, index_t K>
void conv_bench(benchmark::State& state, index_t side, index_t dilation, bool backward) {
  nn::ConvModule<2, In, Out, K, float> conv(nn::ConvConfig<2>::same(K, dilation));
  PhiloxStream rng(1, 0);
  conv.initialize(rng);
  Tensor<float, 4> x(Shape<4>{2, In, side, side});
  fill_normal(x.view(), rng);
  Tensor<float, 4> dy(Shape<4>{2, Out, side, side});
  fill_normal(dy.view(), rng);
  nn::Context ctx;
  typename decltype(conv)::Cache cache;
  for (auto _ : state) {
    auto y = conv.forward(ctx, x.view(), cache);
    benchmark::DoNotOptimize(y.data());
    if (backward) {
      auto dx = conv.backward(ctx, cache, dy.view());
      benchmark::DoNotOptimize(dx.data());
    }
  }
  const double macs = 2.0 * Out * side * side * In * K * K;
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * macs * (backward ? 3 : 1) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_MB"] = peak_rss_mb();
}

template <index_t In, index_t Out, index_t K>
void register_conv(const std::string& name, index_t side, index_t dilation) {
  for (bool backward : {false, true})
    benchmark::RegisterBenchmark((name + (backward ? "_fwdbwd" : "_fwd")).c_str(),
                                 [=](benchmark::State& st) { conv_bench<In, Out, K>(st, side, dilation, backward); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
}

// PixelDRL-MG (half width) convolutions at 128x128 input: name, In, Out, K, side, dilation.
void register_pixeldrl_convs() {
  register_conv<1, 32, 3>("conv1_1", 128, 1);
  register_conv<32, 32, 3>("conv1_2", 128, 1);
  register_conv<32, 64, 3>("conv2_1", 64, 1);
  register_conv<64, 64, 3>("conv2_2", 64, 1);
  register_conv<64, 128, 3>("conv3_1", 32, 1);
  register_conv<128, 128, 3>("conv3_2", 32, 1);
  register_conv<128, 256, 3>("conv4_1", 16, 2);
  register_conv<256, 256, 3>("conv4_2", 16, 2);
  register_conv<480, 64, 3>("head1_d3", 128, 3);
  register_conv<64, 64, 3>("head2_d2", 128, 2);
  register_conv<64, 64, 3>("head3_d1", 128, 1);
  register_conv<64, 2, 1>("head_out_1x1", 128, 1);
}

void BM_LandmarkQNetUpdate(benchmark::State& state) {
  nn::LandmarkQNet<float, true> net(45);
  PhiloxStream rng(2, 0);
  net.initialize(rng);
  nn::optim::Adam<float> opt(net, {1e-3});
  Tensor<float, 5> x(Shape<5>{48, 4, 45, 45, 45});
  fill_normal(x.view(), rng);
  Tensor<float, 2> target(Shape<2>{48, 6}), grad;
  fill_normal(target.view(), rng);
  nn::Context ctx;
  ctx.input_grad = false;  // like PyTorch, no gradient for the observation batch
  decltype(net)::Cache cache;
  for (auto _ : state) {
    opt.zero_grad();
    const auto q = net.forward(ctx, x.view(), cache);
    nn::loss::huber<float, 2>(q, target.view(), grad);
    net.backward(ctx, cache, grad.view());
    opt.step();
  }
  // conv MACs per sample: 43^3*32*4*125 + 19^3*32*32*125 + 8^3*64*32*64 + 2^3*64*64*27, FC ~0.7 M
  const double macs = 48.0 * (43.0 * 43 * 43 * 32 * 4 * 125 + 19.0 * 19 * 19 * 32 * 32 * 125 + 512.0 * 64 * 32 * 64 +
                              8.0 * 64 * 64 * 27 + 512.0 * 512 + 512.0 * 256 + 256.0 * 128 + 128.0 * 7);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * macs * 3 * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_MB"] = peak_rss_mb();
}
BENCHMARK(BM_LandmarkQNetUpdate)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

void BM_UNet2DTrainStep(benchmark::State& state) {
  nn::UNet<2, float, 1, 1, 16> net;
  PhiloxStream rng(3, 0);
  net.initialize(rng);
  nn::optim::Adam<float> opt(net, {1e-3});
  Tensor<float, 4> x(Shape<4>{1, 1, 128, 128}), target(Shape<4>{1, 1, 128, 128}), grad;
  fill_normal(x.view(), rng);
  fill_uniform(target.view(), rng);
  nn::Context ctx;
  ctx.input_grad = false;  // like PyTorch, no gradient for the input image
  decltype(net)::Cache cache;
  for (auto _ : state) {
    opt.zero_grad();
    const auto y = net.forward(ctx, x.view(), cache);
    nn::loss::bce_with_logits<float, 4>(y, target.view(), grad);
    net.backward(ctx, cache, grad.view());
    opt.step();
  }
  state.counters["peak_MB"] = peak_rss_mb();
}
BENCHMARK(BM_UNet2DTrainStep)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  register_pixeldrl_convs();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
