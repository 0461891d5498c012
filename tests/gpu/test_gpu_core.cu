// GPU core test: device-buffer round trips (sync and stream-ordered) and the Philox kernels
// compared with the host Philox. Exits 77 (CTest "skipped") with a message when no device exists.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <numeric>

#include "rlmed/core/random.hpp"
#include "rlmed/core/tensor_cuda.hpp"
#include "rlmed/cuda/philox.cuh"

using rlmed::Shape;
using rlmed::Tensor;

TEST_CASE("host -> device -> host round trip is bit-exact (sync and on a stream)") {
  Tensor<float, 3> host(Shape<3>{5, 7, 9});
  std::iota(host.begin(), host.end(), -100.f);
  auto dev = rlmed::to_device(host.view());
  CHECK(dev.shape() == host.shape());
  auto back = rlmed::to_host(dev.view());
  CHECK(rlmed::bitwise_equal(back, host));

  rlmed::gpu::Stream stream;
  Tensor<float, 3, rlmed::cuda> dev2(host.shape());
  rlmed::copy_async(dev2.view(), dev.view(), stream);  // device -> device
  Tensor<float, 3> back2(host.shape());
  rlmed::copy_async(back2.view(), dev2.view(), stream);
  stream.synchronize();
  CHECK(rlmed::bitwise_equal(back2, host));

  dev2.zero(stream);
  rlmed::copy_async(back2.view(), dev2.view(), stream);
  stream.synchronize();
  for (float v : back2) REQUIRE(v == 0.f);
  Tensor<float, 3> wrong(Shape<3>{5, 7, 8});
  CHECK_THROWS_AS(rlmed::copy_async(wrong.view(), dev2.view(), stream), rlmed::Error);
}

TEST_CASE("Philox blocks on the device equal the host blocks bit for bit") {
  const std::int64_t blocks = 100003;
  rlmed::DeviceBuffer<std::uint32_t> out(4 * blocks);
  rlmed::kernels::philox_blocks_kernel<<<rlmed::kernels::grid_for(blocks), rlmed::kernels::kDefaultBlock>>>(
      out.data(), blocks, 0xdeadbeefcafef00dull, 17, 123456789);
  RLMED_CUDA_CHECK_LAUNCH();
  std::vector<std::uint32_t> host(4 * blocks);
  RLMED_CUDA_CHECK(cudaMemcpy(host.data(), out.data(), host.size() * 4, cudaMemcpyDeviceToHost));
  for (std::int64_t b = 0; b < blocks; ++b) {
    const auto ref = rlmed::philox_block(0xdeadbeefcafef00dull, 17, 123456789 + static_cast<std::uint64_t>(b));
    for (int k = 0; k < 4; ++k) REQUIRE(host[4 * b + k] == ref.v[k]);
  }
}

TEST_CASE("device fills reproduce the host fills: uniform exactly, normal to float rounding") {
  const Shape<2> shape{513, 257};
  rlmed::PhiloxStream host_rng(77, 5), dev_rng(77, 5);
  host_rng.seek(3);  // an unaligned start exercises the lane offset
  dev_rng.seek(3);
  Tensor<float, 2> u_host(shape), n_host(shape);
  rlmed::fill_uniform(u_host.view(), host_rng);
  rlmed::fill_normal(n_host.view(), host_rng, 0.5f, 2.0f);

  rlmed::gpu::Stream stream;
  Tensor<float, 2, rlmed::cuda> u_dev(shape), n_dev(shape);
  rlmed::kernels::fill_uniform(u_dev.view(), dev_rng, 0.f, 1.f, stream);
  rlmed::kernels::fill_normal(n_dev.view(), dev_rng, 0.5f, 2.0f, stream);
  CHECK(dev_rng == host_rng);
  auto u_back = rlmed::to_host(u_dev.view(), stream);
  auto n_back = rlmed::to_host(n_dev.view(), stream);
  CHECK(rlmed::bitwise_equal(u_back, u_host));
  float worst = 0.f;
  for (rlmed::index_t i = 0; i < n_host.size(); ++i)
    worst = std::max(worst, std::abs(n_back.data()[i] - n_host.data()[i]) / std::max(1.f, std::abs(n_host.data()[i])));
  MESSAGE("max relative difference of device vs host normals: " << worst);
  CHECK(worst < 1e-5f);
  // Twice on the device is bit-identical.
  rlmed::PhiloxStream again(77, 5);
  again.seek(3 + shape[0] * shape[1]);
  Tensor<float, 2, rlmed::cuda> n_dev2(shape);
  rlmed::kernels::fill_normal(n_dev2.view(), again, 0.5f, 2.0f, stream);
  CHECK(rlmed::bitwise_equal(rlmed::to_host(n_dev2.view(), stream), n_back));
}

int main(int argc, char** argv) {
  if (rlmed::gpu::device_count() == 0) {
    std::printf("SKIPPED: no CUDA device available (%s); GPU tests need a GPU.\n",
                rlmed::gpu::no_device_reason().c_str());
    return 77;
  }
  cudaDeviceProp prop{};
  RLMED_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("running on %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  doctest::Context context(argc, argv);
  return context.run();
}
