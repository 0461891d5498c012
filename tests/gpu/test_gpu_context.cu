// CudaContext: the device arena (alignment, exhaustion error, reset), the cuBLAS handle on the
// context's stream (an fp32 GEMM against a host triple loop, TF32 only on request) and the cuDNN
// handle. Exits 77 without a device.
#define DOCTEST_CONFIG_IMPLEMENT
#include "gpu_test_util.hpp"

#include <cstdint>

#include "rlmed/core/cuda_context.hpp"

using namespace rlmed;

TEST_CASE("device arena hands out aligned, disjoint blocks and refuses to grow") {
  gpu::DeviceArena arena(4096);
  CHECK(arena.capacity() == 4096);
  float* a = arena.allocate<float>(3);
  double* b = arena.allocate<double>(10);
  CHECK(reinterpret_cast<std::uintptr_t>(a) % gpu::DeviceArena::kAlignment == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(b) % gpu::DeviceArena::kAlignment == 0);
  CHECK(reinterpret_cast<const char*>(b) >= reinterpret_cast<const char*>(a) + 3 * sizeof(float));
  CHECK(arena.used() == 256 + 10 * sizeof(double));
  CHECK_THROWS_AS(arena.allocate<float>(2000), Error);
  arena.reset();
  CHECK(arena.used() == 0);
  auto v = arena.view<float, 2>(Shape<2>{16, 16});
  CHECK(static_cast<void*>(v.data()) == static_cast<void*>(a));
  // The memory is usable.
  Tensor<float, 2> host(Shape<2>{16, 16});
  for (index_t i = 0; i < host.size(); ++i) host.data()[i] = float(i);
  copy_async(v, host.view(), nullptr);
  CHECK(gpu_test::same_bits(to_host(v, nullptr), host));
}

TEST_CASE("cuBLAS on the context's stream computes an fp32 GEMM; cuDNN handle is created") {
  gpu::CudaContext ctx(1 << 20);
  CHECK(ctx.precision() == gpu::Precision::fp32);
  const int m = 37, k = 53, n = 29;
  PhiloxStream rng(14, 0);
  const auto A = gpu_test::random_tensor<float>(Shape<2>{m, k}, rng, -1.f, 1.f);  // row-major
  const auto B = gpu_test::random_tensor<float>(Shape<2>{k, n}, rng, -1.f, 1.f);
  Tensor<float, 2> ref(Shape<2>{m, n});
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int q = 0; q < k; ++q) s += double(A(i, q)) * double(B(q, j));
      ref(i, j) = float(s);
    }
  auto dA = ctx.arena.view<float, 2>(A.shape());
  auto dB = ctx.arena.view<float, 2>(B.shape());
  auto dC = ctx.arena.view<float, 2>(ref.shape());
  copy_async(dA, A.view(), ctx.stream());
  copy_async(dB, B.view(), ctx.stream());
  // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ.
  const float one = 1.f, zero = 0.f;
  RLMED_CUBLAS_CHECK(cublasSgemm(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &one, dB.data(), n, dA.data(), k,
                                 &zero, dC.data(), n));
  const auto C = to_host(dC, ctx.stream());
  CHECK(gpu_test::normwise_rel_err(C, ref) < 1e-5);
  ctx.set_precision(gpu::Precision::tf32);
  CHECK(ctx.precision() == gpu::Precision::tf32);
  CHECK(ctx.cudnn() != nullptr);
  ctx.synchronize();
}

RLMED_GPU_TEST_MAIN
