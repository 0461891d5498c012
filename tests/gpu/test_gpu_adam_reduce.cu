// GPU Adam step against nn::optim::Adam (coupled and decoupled weight decay, several steps) and
// the deterministic reductions against double sums on the host; both repeated for bit identity.
// Exits 77 without a device.
#define DOCTEST_CONFIG_IMPLEMENT
#include "gpu_test_util.hpp"

#include <string>
#include <string_view>

#include "rlmed/cuda/adam.cuh"
#include "rlmed/cuda/reduce.cuh"
#include "rlmed/nn/module.hpp"
#include "rlmed/nn/optim/optimizers.hpp"

using namespace rlmed;

namespace {

/// The smallest module: one flat parameter.
struct OneParameter {
  using value_type = float;
  nn::Parameter<float, 1> weight;
  explicit OneParameter(index_t n) : weight(Shape<1>{n}) {}
  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    visit(nn::join_name(prefix, "weight"), weight);
  }
};

void check_adam(const nn::optim::AdamConfig& config) {
  const index_t n = 100003;
  PhiloxStream rng(12, 0);
  OneParameter module(n);
  for (index_t i = 0; i < n; ++i) module.weight.value.data()[i] = rng.uniform(-1.f, 1.f);
  nn::optim::Adam<float> cpu(module, config);

  gpu::Stream stream;
  auto d_p = to_device(module.weight.value.view(), stream);
  Tensor<float, 1, rlmed::cuda> d_g(Shape<1>{n}), d_m(Shape<1>{n}), d_v(Shape<1>{n});
  d_m.zero(stream);
  d_v.zero(stream);
  for (std::int64_t step = 1; step <= 4; ++step) {
    for (index_t i = 0; i < n; ++i) module.weight.grad.data()[i] = rng.uniform(-2.f, 2.f) * (i % 17 == 0 ? 1e-6f : 1.f);
    copy_async(d_g.view(), module.weight.grad.view(), stream);
    cpu.step();
    kernels::adam_step<float, 1>(d_p.view(), d_g.view(), d_m.view(), d_v.view(),
                                 kernels::adam_constants<float>(config, config.lr, step), stream);
  }
  const auto p = to_host(d_p.view(), stream);
  const double err = gpu_test::normwise_rel_err(p, module.weight.value);
  MESSAGE("Adam after 4 steps: rel. err " << err << ", bit-identical " << gpu_test::same_bits(p, module.weight.value));
  CHECK(err < 1e-5);
  // Explicitly rounded operations: the same float arithmetic as the CPU loop.
  CHECK(gpu_test::same_bits(p, module.weight.value));
  CHECK_THROWS_AS(kernels::adam_constants<float>(config, config.lr, 0), Error);
}

}  // namespace

TEST_CASE("Adam step matches nn::optim::Adam (L2 decay and AdamW)") {
  nn::optim::AdamConfig adam;
  adam.lr = 3e-3;
  adam.weight_decay = 1e-2;
  check_adam(adam);
  nn::optim::AdamConfig adamw = adam;
  adamw.decoupled_weight_decay = true;
  check_adam(adamw);
}

TEST_CASE("deterministic sums equal double host sums and repeat bit for bit") {
  PhiloxStream rng(13, 0);
  gpu::Stream stream;
  DeviceBuffer<double> scratch, out(1);
  for (index_t n : {index_t(0), index_t(1), index_t(255), kernels::kReduceChunk, kernels::kReduceChunk * 37 + 5,
                    index_t(3000001)}) {
    CAPTURE(n);
    Tensor<float, 1> x(Shape<1>{n});
    double ref = 0, mag = 0;
    for (index_t i = 0; i < n; ++i) {
      x.data()[i] = rng.uniform(-1.f, 1.f);
      ref += double(x.data()[i]);
      mag += std::abs(double(x.data()[i]));
    }
    Tensor<float, 1, rlmed::cuda> d_x(x.shape());
    copy_async(d_x.view(), x.view(), stream);
    double got[2] = {0, 0};
    for (int run = 0; run < 2; ++run) {
      kernels::deterministic_sum(d_x.data(), n, out.data(), scratch, stream);
      RLMED_CUDA_CHECK(cudaMemcpyAsync(&got[run], out.data(), sizeof(double), cudaMemcpyDeviceToHost, stream));
      RLMED_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    CHECK(std::abs(got[0] - ref) <= 1e-13 * std::max(1.0, mag));
    CHECK(got[0] == got[1]);
  }
}

RLMED_GPU_TEST_MAIN
