// Shared by the GPU test programs: the skip-or-run main (exit 77, CTest's "skipped", when no
// device exists), random host tensors, and the normwise relative error used for the
// "matches the CPU reference (rel. err < 1e-5)" checks.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "rlmed/core/random.hpp"
#include "rlmed/core/tensor_cuda.hpp"

namespace rlmed::gpu_test {

/// max |got − ref| / max |ref| (0/0 = 0): a sum's relative error independent of cancellation
/// in single elements; NaN anywhere gives +inf.
template <class T, std::size_t R>
double normwise_rel_err(const Tensor<T, R>& got, const Tensor<T, R>& ref) {
  REQUIRE(got.shape() == ref.shape());
  double diff = 0, scale = 0;
  for (index_t i = 0; i < ref.size(); ++i) {
    const double g = double(got.data()[i]), r = double(ref.data()[i]);
    if (!std::isfinite(g) || !std::isfinite(r)) return INFINITY;
    diff = std::max(diff, std::abs(g - r));
    scale = std::max(scale, std::abs(r));
  }
  return scale > 0 ? diff / scale : diff;
}

template <class T, std::size_t R>
Tensor<T, R> random_tensor(const Shape<R>& shape, PhiloxStream& rng, float lo, float hi) {
  Tensor<T, R> t(shape);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<T>(rng.uniform(lo, hi));
  return t;
}

template <class T, std::size_t R>
Tensor<T, R> host_copy(TensorView<T, R, rlmed::cuda> v, cudaStream_t stream) {
  return to_host(v, stream);
}

/// Bytes equal (shapes equal too).
template <class T, std::size_t R>
bool same_bits(const Tensor<T, R>& a, const Tensor<T, R>& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.bytes()) == 0;
}

inline int run_or_skip(int argc, char** argv) {
  if (gpu::device_count() == 0) {
    std::printf("SKIPPED: no CUDA device available (%s); GPU tests need a GPU.\n", gpu::no_device_reason().c_str());
    return 77;
  }
  cudaDeviceProp prop{};
  RLMED_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("running on %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  doctest::Context context(argc, argv);
  return context.run();
}

}  // namespace rlmed::gpu_test

#define RLMED_GPU_TEST_MAIN \
  int main(int argc, char** argv) { return ::rlmed::gpu_test::run_or_skip(argc, argv); }
