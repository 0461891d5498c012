// GPU kernels (issue 8): warp 3D forward / deterministic backward, batched patch extraction,
// the fused pixel head (sample + log-prob + entropy, and the PA3C gradient step), Adam,
// dilated 2D and 3D convolution (forward, backward-data, backward-weights) against cuDNN, and
// the device-to-device copy bandwidth the memory-bound kernels are measured against.
// Times are CUDA-event times of the kernels alone (manual time); counters report GB/s on the
// bytes each kernel must move (docs/cuda.md lists them). Peer: bench/peers/cuda_torch.py.
// Without a device every benchmark reports an error and the program exits normally.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "rlmed/core/cuda_context.hpp"
#include "rlmed/core/random.hpp"
#include "rlmed/core/tensor_cuda.hpp"
#include "rlmed/cuda/adam.cuh"
#include "rlmed/cuda/conv.cuh"
#include "rlmed/cuda/patches.cuh"
#include "rlmed/cuda/philox.cuh"
#include "rlmed/cuda/pixel_head.cuh"
#include "rlmed/cuda/warp.cuh"

using namespace rlmed;

namespace {

bool have_device(benchmark::State& state) {
  if (gpu::device_count() > 0) return true;
  state.SkipWithError("no CUDA device");
  return false;
}

/// Times `body` (enqueued on `stream`) with CUDA events, one iteration per benchmark iteration.
template <class Body>
void time_on_device(benchmark::State& state, cudaStream_t stream, Body&& body) {
  cudaEvent_t start, stop;
  RLMED_CUDA_CHECK(cudaEventCreate(&start));
  RLMED_CUDA_CHECK(cudaEventCreate(&stop));
  body();  // warm-up (first-use allocations in workspaces)
  RLMED_CUDA_CHECK(cudaStreamSynchronize(stream));
  for (auto _ : state) {
    RLMED_CUDA_CHECK(cudaEventRecord(start, stream));
    body();
    RLMED_CUDA_CHECK(cudaEventRecord(stop, stream));
    RLMED_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    RLMED_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(double(ms) * 1e-3);
  }
  RLMED_CUDA_CHECK(cudaEventDestroy(start));
  RLMED_CUDA_CHECK(cudaEventDestroy(stop));
}

void set_bandwidth(benchmark::State& state, double bytes_per_iteration) {
  state.counters["GB/s"] = benchmark::Counter(bytes_per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

template <class T, std::size_t R>
Tensor<T, R, rlmed::cuda> device_uniform(const Shape<R>& shape, std::uint64_t seed, float lo, float hi, cudaStream_t stream) {
  Tensor<T, R, rlmed::cuda> t(shape);
  PhiloxStream rng(seed, 0);
  kernels::fill_uniform(t.view(), rng, T(lo), T(hi), stream);
  return t;
}

// ---- copy bandwidth (the roofline reference) ---------------------------------------------------

void BM_DeviceCopy(benchmark::State& state) {
  if (!have_device(state)) return;
  const index_t n = state.range(0);
  gpu::Stream stream;
  Tensor<float, 1, rlmed::cuda> a(Shape<1>{n}), b(Shape<1>{n});
  a.zero(stream);
  time_on_device(state, stream, [&] { copy_async(b.view(), TensorView<const float, 1, rlmed::cuda>(a.view()), stream); });
  set_bandwidth(state, 2.0 * 4.0 * double(n));
}
BENCHMARK(BM_DeviceCopy)->Arg(128 * 128 * 128)->Arg(64 << 20)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ---- warp 3D, C = 1 ------------------------------------------------------------------------------

void BM_Warp3dForward(benchmark::State& state) {
  if (!have_device(state)) return;
  const index_t n = state.range(0);
  gpu::Stream stream;
  const Shape<5> s{1, 1, n, n, n}, fs{1, 3, n, n, n};
  auto image = device_uniform<float>(s, 1, -1.f, 1.f, stream);
  auto field = device_uniform<float>(fs, 2, -2.f, 2.f, stream);
  Tensor<float, 5, rlmed::cuda> out(s);
  time_on_device(state, stream, [&] {
    kernels::warp_forward<3, float, float>(out.view(), image.view(), field.view(), kernels::Interp::linear,
                                           kernels::Padding::zeros, stream);
  });
  set_bandwidth(state, double(n * n * n) * (12.0 + 4.0 + 4.0));  // field + image + out
}
BENCHMARK(BM_Warp3dForward)->Arg(64)->Arg(128)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_Warp3dBackward(benchmark::State& state) {
  if (!have_device(state)) return;
  const index_t n = state.range(0);
  gpu::Stream stream;
  const Shape<5> s{1, 1, n, n, n}, fs{1, 3, n, n, n};
  auto image = device_uniform<float>(s, 1, -1.f, 1.f, stream);
  auto field = device_uniform<float>(fs, 2, -2.f, 2.f, stream);
  auto grad_out = device_uniform<float>(s, 3, -1.f, 1.f, stream);
  Tensor<float, 5, rlmed::cuda> gi(s), gf(fs);
  kernels::WarpDeviceWorkspace ws;
  time_on_device(state, stream, [&] {
    kernels::warp_backward<3, float, float>(gi.view(), gf.view(), grad_out.view(), image.view(), field.view(),
                                            kernels::Interp::linear, kernels::Padding::zeros,
                                            kernels::GradWrite::overwrite, ws, stream);
  });
  set_bandwidth(state, double(n * n * n) * (12.0 + 4.0 + 4.0 + 12.0 + 4.0));  // minimum traffic
}
BENCHMARK(BM_Warp3dBackward)->Arg(64)->Arg(128)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ---- patch extraction: 64 samples × 4 frames of 45³ from a 256³ volume -----------------------

void BM_Patches3d(benchmark::State& state) {
  if (!have_device(state)) return;
  const index_t side = state.range(0), stride = state.range(1), samples = 64, frames = 4;
  gpu::Stream stream;
  auto volume = device_uniform<float>(Shape<3>{256, 256, 256}, 4, 0.f, 1.f, stream);
  Tensor<std::int64_t, 2> centres(Shape<2>{samples * frames, 3});
  PhiloxStream rng(5, 0);
  for (index_t i = 0; i < centres.size(); ++i) centres.data()[i] = index_t(rng.uniform(20.f, 236.f));
  auto d_centres = to_device(centres.view(), stream);
  Tensor<float, 5, rlmed::cuda> out(Shape<5>{samples, frames, side, side, side});
  const auto g = imaging::PatchGeometry<3>::cube(side, stride);
  time_on_device(state, stream, [&] { kernels::extract_patches<3>(out.view(), volume.view(), d_centres.view(), g, stream); });
  set_bandwidth(state, 2.0 * double(out.bytes()));  // one read and one write per element
}
BENCHMARK(BM_Patches3d)->Args({45, 1})->Args({45, 2})->UseManualTime()->Unit(benchmark::kMicrosecond);

// ---- pixel head: PixelRL sizes (A = 9 actions, 70 × 70 crops, batch 64) -----------------------

void BM_PixelPolicy(benchmark::State& state) {
  if (!have_device(state)) return;
  const index_t B = state.range(0), A = state.range(1), H = state.range(2), W = H;
  gpu::Stream stream;
  auto logits = device_uniform<float>(Shape<4>{B, A, H, W}, 6, -3.f, 3.f, stream);
  Tensor<std::int32_t, 3, rlmed::cuda> actions(Shape<3>{B, H, W});
  Tensor<float, 4, rlmed::cuda> logp(Shape<4>{B, 1, H, W}), ent(Shape<4>{B, 1, H, W});
  rl::PixelSampleKey key{7, 0, 0};
  time_on_device(state, stream, [&] {
    kernels::pixel_policy<float>(actions.view(), logp.view(), ent.view(), logits.view(), &key, stream);
    ++key.step;
  });
  set_bandwidth(state, double(B * H * W) * (4.0 * double(A) + 12.0));
}
BENCHMARK(BM_PixelPolicy)->Args({64, 9, 70})->Args({8, 9, 256})->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_PixelA3CStep(benchmark::State& state) {
  if (!have_device(state)) return;
  const index_t B = state.range(0), A = state.range(1), H = state.range(2), W = H;
  gpu::Stream stream;
  const Shape<4> shape{B, A, H, W}, map{B, 1, H, W};
  auto logits = device_uniform<float>(shape, 6, -3.f, 3.f, stream);
  auto values = device_uniform<float>(map, 7, -1.f, 1.f, stream);
  auto returns = device_uniform<float>(map, 8, -1.f, 1.f, stream);
  auto adv = device_uniform<float>(map, 9, -1.f, 1.f, stream);
  Tensor<std::int32_t, 3, rlmed::cuda> actions(Shape<3>{B, H, W});
  const rl::PixelSampleKey key{7, 0, 0};
  kernels::pixel_policy<float>(actions.view(), {}, {}, logits.view(), &key, stream);
  Tensor<float, 4, rlmed::cuda> dz(shape), dv(map);
  kernels::PixelHeadWorkspace ws;
  time_on_device(state, stream, [&] {
    kernels::pixel_a3c_step<float>(dz.view(), dv.view(), logits.view(), values.view(), actions.view(), returns.view(),
                                   adv.view(), rl::PixelA3CLossWeights{}, 1e-5, ws, stream);
  });
  set_bandwidth(state, double(B * H * W) * (8.0 * double(A) + 20.0));
}
BENCHMARK(BM_PixelA3CStep)->Args({64, 9, 70})->UseManualTime()->Unit(benchmark::kMicrosecond);

// ---- Adam on 10M parameters -------------------------------------------------------------------

void BM_Adam(benchmark::State& state) {
  if (!have_device(state)) return;
  const index_t n = state.range(0);
  gpu::Stream stream;
  auto p = device_uniform<float>(Shape<1>{n}, 10, -1.f, 1.f, stream);
  auto g = device_uniform<float>(Shape<1>{n}, 11, -1.f, 1.f, stream);
  Tensor<float, 1, rlmed::cuda> m(Shape<1>{n}), v(Shape<1>{n});
  m.zero(stream);
  v.zero(stream);
  std::int64_t step = 0;
  const nn::optim::AdamConfig config;
  time_on_device(state, stream, [&] {
    kernels::adam_step<float, 1>(p.view(), g.view(), m.view(), v.view(),
                                 kernels::adam_constants<float>(config, config.lr, ++step), stream);
  });
  set_bandwidth(state, double(n) * 28.0);
}
BENCHMARK(BM_Adam)->Arg(10 << 20)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ---- dilated 3x3 convolution, C -> C channels, n x n, "same" padding: ours vs cuDNN -----------
// impl 0: rlmed's direct kernel; 1: cuDNN with CUDNN_FMA_MATH (plain fp32, like ours);
// 2: cuDNN with CUDNN_DEFAULT_MATH (may use TF32 tensor cores). cuDNN's algorithm is the fastest
// cudnnFindConvolutionForwardAlgorithm reports.

void BM_Conv2dDilated(benchmark::State& state) {
  if (!have_device(state)) return;
  const index_t C = state.range(0), n = state.range(1), dil = state.range(2), impl = state.range(3);
  gpu::CudaContext ctx;
  cudaStream_t stream = ctx.stream();
  auto x = device_uniform<float>(Shape<4>{1, C, n, n}, 12, -1.f, 1.f, stream);
  auto w = device_uniform<float>(Shape<4>{C, C, 3, 3}, 13, -0.1f, 0.1f, stream);
  Tensor<float, 4, rlmed::cuda> y(Shape<4>{1, C, n, n});
  if (impl == 0) {
    const kernels::Conv2dParams p{1, dil, dil};
    time_on_device(state, stream, [&] { kernels::conv2d_forward<float>(y.view(), x.view(), w.view(), nullptr, p, stream); });
  } else {
    cudnnHandle_t h = ctx.cudnn();
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    RLMED_CUDNN_CHECK(cudnnCreateTensorDescriptor(&xd));
    RLMED_CUDNN_CHECK(cudnnCreateTensorDescriptor(&yd));
    RLMED_CUDNN_CHECK(cudnnCreateFilterDescriptor(&wd));
    RLMED_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&cd));
    const int ci = static_cast<int>(C), ni = static_cast<int>(n), di = static_cast<int>(dil);
    RLMED_CUDNN_CHECK(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, ci, ni, ni));
    RLMED_CUDNN_CHECK(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, ci, ni, ni));
    RLMED_CUDNN_CHECK(cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, ci, ci, 3, 3));
    RLMED_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(cd, di, di, 1, 1, di, di, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    RLMED_CUDNN_CHECK(cudnnSetConvolutionMathType(cd, impl == 1 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH));
    int found = 0;
    cudnnConvolutionFwdAlgoPerf_t perf[8];
    RLMED_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(h, xd, wd, cd, yd, 8, &found, perf));
    RLMED_CHECK(found > 0 && perf[0].status == CUDNN_STATUS_SUCCESS, "cuDNN found no forward algorithm");
    const cudnnConvolutionFwdAlgo_t algo = perf[0].algo;
    std::size_t ws_bytes = 0;
    RLMED_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, xd, wd, cd, yd, algo, &ws_bytes));
    DeviceBuffer<unsigned char> ws(static_cast<index_t>(ws_bytes > 0 ? ws_bytes : 1));
    const float one = 1.f, zero = 0.f;
    time_on_device(state, stream, [&] {
      RLMED_CUDNN_CHECK(cudnnConvolutionForward(h, &one, xd, x.data(), wd, w.data(), cd, algo, ws.data(), ws_bytes,
                                                &zero, yd, y.data()));
    });
    state.counters["algo"] = double(algo);
    cudnnDestroyConvolutionDescriptor(cd);
    cudnnDestroyFilterDescriptor(wd);
    cudnnDestroyTensorDescriptor(yd);
    cudnnDestroyTensorDescriptor(xd);
  }
  state.counters["TFLOP/s"] = benchmark::Counter(2.0 * 9.0 * double(C * C * n * n) * 1e-12,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Conv2dDilated)
    ->ArgsProduct({{64}, {128, 256}, {1, 2, 4}, {0, 1, 2}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// ---- convolution, 2D and 3D, forward / backward-data / backward-weights: ours vs cuDNN --------
// Args: batch, In, Out, K, n (input side), padding, dilation, impl; stride 1.
// impl 0: rlmed's deterministic kernels; 1: cuDNN, CUDNN_FMA_MATH (plain fp32, like ours), the
// fastest algorithm cudnnFind* reports; 2: cuDNN, CUDNN_DEFAULT_MATH (may use TF32 tensor
// cores); 3: cuDNN, CUDNN_FMA_MATH, the fastest algorithm reported as CUDNN_DETERMINISTIC.
// Backward-weights: ours and cuDNN both accumulate into dw (beta = 1); no bias gradient.

enum class ConvOp { forward, backward_data, backward_weights };

/// cuDNN descriptors of one fp32 NC(D)HW cross-correlation.
struct CudnnConv {
  cudnnTensorDescriptor_t xd{}, yd{};
  cudnnFilterDescriptor_t wd{};
  cudnnConvolutionDescriptor_t cd{};

  static std::vector<int> packed_strides(const std::vector<int>& dims) {
    std::vector<int> st(dims.size(), 1);
    for (std::size_t a = dims.size() - 1; a-- > 0;) st[a] = st[a + 1] * dims[a + 1];
    return st;
  }
  CudnnConv(const std::vector<int>& x, const std::vector<int>& w, const std::vector<int>& y, int pad, int dil,
            cudnnMathType_t math) {
    const int nd = static_cast<int>(x.size()), spatial = nd - 2;
    const std::vector<int> xs = packed_strides(x), ys = packed_strides(y);
    const std::vector<int> pads(static_cast<std::size_t>(spatial), pad), strides(static_cast<std::size_t>(spatial), 1),
        dils(static_cast<std::size_t>(spatial), dil);
    RLMED_CUDNN_CHECK(cudnnCreateTensorDescriptor(&xd));
    RLMED_CUDNN_CHECK(cudnnCreateTensorDescriptor(&yd));
    RLMED_CUDNN_CHECK(cudnnCreateFilterDescriptor(&wd));
    RLMED_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&cd));
    RLMED_CUDNN_CHECK(cudnnSetTensorNdDescriptor(xd, CUDNN_DATA_FLOAT, nd, x.data(), xs.data()));
    RLMED_CUDNN_CHECK(cudnnSetTensorNdDescriptor(yd, CUDNN_DATA_FLOAT, nd, y.data(), ys.data()));
    RLMED_CUDNN_CHECK(cudnnSetFilterNdDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, nd, w.data()));
    RLMED_CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(cd, spatial, pads.data(), strides.data(), dils.data(),
                                                      CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    RLMED_CUDNN_CHECK(cudnnSetConvolutionMathType(cd, math));
  }
  CudnnConv(const CudnnConv&) = delete;
  CudnnConv& operator=(const CudnnConv&) = delete;
  ~CudnnConv() {
    cudnnDestroyConvolutionDescriptor(cd);
    cudnnDestroyFilterDescriptor(wd);
    cudnnDestroyTensorDescriptor(yd);
    cudnnDestroyTensorDescriptor(xd);
  }
};

/// Index of the fastest successful algorithm (deterministic ones only if asked), or -1.
template <class Perf>
int pick_algorithm(const Perf* perf, int found, bool deterministic_only) {
  for (int i = 0; i < found; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && (!deterministic_only || perf[i].determinism == CUDNN_DETERMINISTIC))
      return i;
  return -1;
}

template <std::size_t R>
std::vector<int> dims_of(const Shape<R>& s) {
  std::vector<int> d(R);
  for (std::size_t a = 0; a < R; ++a) d[a] = static_cast<int>(s[a]);
  return d;
}

template <int Dims, ConvOp Op>
void BM_Conv(benchmark::State& state) {
  if (!have_device(state)) return;
  constexpr std::size_t R = Dims + 2;
  const index_t B = state.range(0), Ci = state.range(1), Co = state.range(2), K = state.range(3), n = state.range(4),
                pad = state.range(5), dil = state.range(6), impl = state.range(7);
  const index_t out = n + 2 * pad - dil * (K - 1);
  Shape<R> xs{}, ws{}, ys{};
  xs[0] = B;
  xs[1] = Ci;
  ws[0] = Co;
  ws[1] = Ci;
  ys[0] = B;
  ys[1] = Co;
  for (int a = 0; a < Dims; ++a) {
    xs[2 + a] = n;
    ws[2 + a] = K;
    ys[2 + a] = out;
  }
  gpu::CudaContext ctx;
  cudaStream_t stream = ctx.stream();
  auto x = device_uniform<float>(xs, 12, -1.f, 1.f, stream);
  auto w = device_uniform<float>(ws, 13, -0.1f, 0.1f, stream);
  auto dy = device_uniform<float>(ys, 14, -1.f, 1.f, stream);
  Tensor<float, R, rlmed::cuda> y(ys), dx(xs), dw(ws);
  dw.zero(stream);
  if (impl == 0) {
    const kernels::ConvParams p{1, pad, dil};
    kernels::ConvWorkspace<float> cws;
    time_on_device(state, stream, [&] {
      if constexpr (Op == ConvOp::forward) {
        if constexpr (Dims == 2) kernels::conv2d_forward<float>(y.view(), x.view(), w.view(), nullptr, p, stream);
        else kernels::conv3d_forward<float>(y.view(), x.view(), w.view(), nullptr, p, stream);
      } else if constexpr (Op == ConvOp::backward_data) {
        if constexpr (Dims == 2) kernels::conv2d_backward_data<float>(dx.view(), dy.view(), w.view(), p, cws, stream);
        else kernels::conv3d_backward_data<float>(dx.view(), dy.view(), w.view(), p, stream);
      } else {
        if constexpr (Dims == 2) kernels::conv2d_backward_weights<float>(dw.view(), {}, x.view(), dy.view(), p, cws, stream);
        else kernels::conv3d_backward_weights<float>(dw.view(), {}, x.view(), dy.view(), p, cws, stream);
      }
    });
  } else {
    const CudnnConv c(dims_of(xs), dims_of(ws), dims_of(ys), static_cast<int>(pad), static_cast<int>(dil),
                      impl == 2 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH);
    const bool deterministic_only = impl == 3;
    cudnnHandle_t h = ctx.cudnn();
    const float one = 1.f, zero = 0.f;
    int found = 0, i = -1, algo = -1;
    std::size_t ws_bytes = 0;
    DeviceBuffer<unsigned char> scratch;
    if constexpr (Op == ConvOp::forward) {
      cudnnConvolutionFwdAlgoPerf_t perf[16];
      RLMED_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(h, c.xd, c.wd, c.cd, c.yd, 16, &found, perf));
      if ((i = pick_algorithm(perf, found, deterministic_only)) >= 0) {
        algo = perf[i].algo;
        RLMED_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, c.xd, c.wd, c.cd, c.yd, perf[i].algo, &ws_bytes));
        scratch.reset(static_cast<index_t>(std::max<std::size_t>(ws_bytes, 1)));
        time_on_device(state, stream, [&] {
          RLMED_CUDNN_CHECK(cudnnConvolutionForward(h, &one, c.xd, x.data(), c.wd, w.data(), c.cd, perf[i].algo,
                                                    scratch.data(), ws_bytes, &zero, c.yd, y.data()));
        });
      }
    } else if constexpr (Op == ConvOp::backward_data) {
      cudnnConvolutionBwdDataAlgoPerf_t perf[16];
      RLMED_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(h, c.wd, c.yd, c.cd, c.xd, 16, &found, perf));
      if ((i = pick_algorithm(perf, found, deterministic_only)) >= 0) {
        algo = perf[i].algo;
        RLMED_CUDNN_CHECK(
            cudnnGetConvolutionBackwardDataWorkspaceSize(h, c.wd, c.yd, c.cd, c.xd, perf[i].algo, &ws_bytes));
        scratch.reset(static_cast<index_t>(std::max<std::size_t>(ws_bytes, 1)));
        time_on_device(state, stream, [&] {
          RLMED_CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, c.wd, w.data(), c.yd, dy.data(), c.cd, perf[i].algo,
                                                         scratch.data(), ws_bytes, &zero, c.xd, dx.data()));
        });
      }
    } else {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[16];
      RLMED_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(h, c.xd, c.yd, c.cd, c.wd, 16, &found, perf));
      if ((i = pick_algorithm(perf, found, deterministic_only)) >= 0) {
        algo = perf[i].algo;
        RLMED_CUDNN_CHECK(
            cudnnGetConvolutionBackwardFilterWorkspaceSize(h, c.xd, c.yd, c.cd, c.wd, perf[i].algo, &ws_bytes));
        scratch.reset(static_cast<index_t>(std::max<std::size_t>(ws_bytes, 1)));
        time_on_device(state, stream, [&] {
          RLMED_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, c.xd, x.data(), c.yd, dy.data(), c.cd,
                                                           perf[i].algo, scratch.data(), ws_bytes, &one, c.wd,
                                                           dw.data()));
        });
      }
    }
    if (i < 0) {
      state.SkipWithError(deterministic_only ? "cuDNN reports no deterministic algorithm" : "cuDNN found no algorithm");
      return;
    }
    state.counters["algo"] = double(algo);
  }
  double macs = double(B * Co * Ci);
  for (int a = 0; a < Dims; ++a) macs *= double(K) * double(out);
  state.counters["TFLOP/s"] = benchmark::Counter(2.0 * macs * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
}

// PixelRL / PixelDRL-MG: 64 channels at 128² and 256², dilation 1-4 ("same" padding), batch 1;
// one 480-channel layer at 128².
void conv2d_args(benchmark::internal::Benchmark* b) {
  for (int impl = 0; impl < 4; ++impl) {
    for (int n : {128, 256})
      for (int dil : {1, 2, 4}) b->Args({1, 64, 64, 3, n, dil, dil, impl});
    b->Args({1, 480, 480, 3, 128, 2, 2, impl});
  }
}
// The landmark Q-net's four convolutions at batch 48 (45³ input; paddings 1-1-1-0).
void conv3d_args(benchmark::internal::Benchmark* b) {
  for (int impl = 0; impl < 4; ++impl) {
    b->Args({48, 4, 32, 5, 45, 1, 1, impl});
    b->Args({48, 32, 32, 5, 21, 1, 1, impl});
    b->Args({48, 32, 64, 4, 9, 1, 1, impl});
    b->Args({48, 64, 64, 3, 4, 0, 1, impl});
  }
}
BENCHMARK_TEMPLATE(BM_Conv, 2, ConvOp::forward)->Apply(conv2d_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_Conv, 2, ConvOp::backward_data)->Apply(conv2d_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_Conv, 2, ConvOp::backward_weights)->Apply(conv2d_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_Conv, 3, ConvOp::forward)->Apply(conv3d_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_Conv, 3, ConvOp::backward_data)->Apply(conv3d_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_Conv, 3, ConvOp::backward_weights)->Apply(conv3d_args)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
