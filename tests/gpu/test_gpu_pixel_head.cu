// GPU per-pixel actor-critic head against rlmed/rl/pixel_a3c.hpp: sampled actions (the same
// Philox draws; a differing action is allowed only at an ulp-level tie of the inverse CDF),
// greedy actions, log-probabilities, entropies, the PA3C loss gradients and sums, the
// reward-map returns and their backward; everything repeated for bit identity. Exits 77 without
// a device.
#define DOCTEST_CONFIG_IMPLEMENT
#include "gpu_test_util.hpp"

#include <cmath>
#include <vector>

#include "rlmed/cuda/pixel_head.cuh"
#include "rlmed/rl/pixel_a3c.hpp"

using namespace rlmed;

namespace {

Tensor<float, 4> random_logits(const Shape<4>& s, PhiloxStream& rng, float scale) {
  Tensor<float, 4> z(s);
  for (index_t i = 0; i < z.size(); ++i) z.data()[i] = scale * rng.normal();
  return z;
}

/// True when pixel i's draw lies within a relative 1e-5 of a cumulative boundary between actions
/// a and b (recomputed in double): the only place float exp differences may flip the choice.
bool near_tie(const Tensor<float, 4>& z, index_t i, const rl::PixelSampleKey& key) {
  const index_t A = z.extent(1), S = z.extent(2) * z.extent(3);
  const float* zp = z.data() + (i / S) * A * S + i % S;
  double m = zp[0];
  for (index_t k = 0; k < A; ++k) m = std::max(m, double(zp[k * S]));
  double total = 0;
  for (index_t k = 0; k < A; ++k) total += std::exp(double(zp[k * S]) - m);
  const double u = u32_to_uniform_float(rl::pixel_action_bits(key.seed, key.stream, key.step, std::uint64_t(i)));
  double acc = 0;
  for (index_t k = 0; k < A; ++k) {
    acc += std::exp(double(zp[k * S]) - m) / total;
    if (std::abs(acc - u) < 1e-5) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("fused sampling head draws the CPU's actions and matches log-prob and entropy") {
  PhiloxStream rng(8, 0);
  const Shape<4> shape{3, 5, 67, 91};  // B, A, H, W
  const auto logits = random_logits(shape, rng, 2.f);
  const rl::PixelSampleKey key{0x1234abcdull, 3, 77};
  const auto cpu_actions = rl::sample_pixel_actions<float>(logits.view(), key);
  const auto cpu_greedy = rl::greedy_pixel_actions<float>(logits.view());

  gpu::Stream stream;
  const auto d_logits = to_device(logits.view(), stream);
  Tensor<std::int32_t, 3, rlmed::cuda> d_actions(cpu_actions.shape());
  const Shape<4> map{shape[0], 1, shape[2], shape[3]};
  Tensor<float, 4, rlmed::cuda> d_logp(map), d_ent(map);
  kernels::DeviceFlag bad;
  Tensor<std::int32_t, 3> actions[2];
  Tensor<float, 4> logp[2], ent[2];
  for (int run = 0; run < 2; ++run) {
    kernels::pixel_policy<float>(d_actions.view(), d_logp.view(), d_ent.view(), d_logits.view(), &key, stream, bad.get());
    actions[run] = to_host(d_actions.view(), stream);
    logp[run] = to_host(d_logp.view(), stream);
    ent[run] = to_host(d_ent.view(), stream);
  }
  CHECK_FALSE(bad.test_and_clear(stream));
  index_t mismatches = 0, unexplained = 0;
  for (index_t i = 0; i < cpu_actions.size(); ++i)
    if (actions[0].data()[i] != cpu_actions.data()[i]) {
      ++mismatches;
      if (!near_tie(logits, i, key)) ++unexplained;
    }
  MESSAGE(mismatches << " of " << cpu_actions.size() << " sampled actions differ from the CPU's (ties)");
  CHECK(unexplained == 0);
  CHECK(mismatches <= 1 + cpu_actions.size() / 100000);
  // The draws really are random: every action occurs.
  std::vector<index_t> counts(std::size_t(shape[1]), 0);
  for (index_t i = 0; i < cpu_actions.size(); ++i) ++counts[std::size_t(actions[0].data()[i])];
  for (index_t c : counts) CHECK(c > 0);

  Tensor<float, 4> logp_ref(map), ent_ref(map);
  rl::pixel_log_prob_entropy_into<float>(logp_ref.view(), ent_ref.view(), logits.view(), actions[0].view());
  CHECK(gpu_test::normwise_rel_err(logp[0], logp_ref) < 1e-5);
  CHECK(gpu_test::normwise_rel_err(ent[0], ent_ref) < 1e-5);
  CHECK(gpu_test::same_bits(actions[0], actions[1]));
  CHECK(gpu_test::same_bits(logp[0], logp[1]));
  CHECK(gpu_test::same_bits(ent[0], ent[1]));

  // Another step draws other actions; greedy equals the CPU's argmax exactly.
  const rl::PixelSampleKey next{key.seed, key.stream, key.step + 1};
  kernels::pixel_policy<float>(d_actions.view(), {}, {}, d_logits.view(), &next, stream);
  CHECK_FALSE(gpu_test::same_bits(to_host(d_actions.view(), stream), actions[0]));
  kernels::pixel_policy<float>(d_actions.view(), {}, {}, d_logits.view(), nullptr, stream);
  CHECK(gpu_test::same_bits(to_host(d_actions.view(), stream), cpu_greedy));
}

TEST_CASE("PA3C loss gradients and sums match pixel_a3c_step_into") {
  PhiloxStream rng(9, 0);
  const Shape<4> shape{2, 9, 45, 38};
  const Shape<4> map{shape[0], 1, shape[2], shape[3]};
  const auto logits = random_logits(shape, rng, 1.5f);
  const auto values = gpu_test::random_tensor<float>(map, rng, -1.f, 1.f);
  const auto returns = gpu_test::random_tensor<float>(map, rng, -1.f, 1.f);
  Tensor<float, 4> advantage(map);
  for (index_t i = 0; i < map[0] * map[2] * map[3]; ++i) advantage.data()[i] = returns.data()[i] - values.data()[i];
  const auto actions = rl::sample_pixel_actions<float>(logits.view(), rl::PixelSampleKey{5, 0, 1});
  const rl::PixelA3CLossWeights weights{0.5, 1.0, 0.01};
  const double scale = 1.0 / double(map[0] * map[2] * map[3] * 3);
  Tensor<float, 4> dz_ref(shape), dv_ref(map);
  std::vector<double> partial;
  const auto sums_ref = rl::pixel_a3c_step_into<float>(dz_ref.view(), dv_ref.view(), logits.view(), values.view(),
                                                       actions.view(), returns.view(), advantage.view(), weights,
                                                       scale, partial);

  gpu::Stream stream;
  const auto d_logits = to_device(logits.view(), stream), d_values = to_device(values.view(), stream);
  const auto d_returns = to_device(returns.view(), stream), d_adv = to_device(advantage.view(), stream);
  const auto d_actions = to_device(actions.view(), stream);
  Tensor<float, 4, rlmed::cuda> d_dz(shape), d_dv(map);
  kernels::PixelHeadWorkspace ws;
  Tensor<float, 4> dz[2], dv[2];
  rl::PixelLossSums sums[2];
  for (int run = 0; run < 2; ++run) {
    kernels::pixel_a3c_step<float>(d_dz.view(), d_dv.view(), d_logits.view(), d_values.view(), d_actions.view(),
                                   d_returns.view(), d_adv.view(), weights, scale, ws, stream);
    sums[run] = kernels::read_loss_sums(ws, stream);
    dz[run] = to_host(d_dz.view(), stream);
    dv[run] = to_host(d_dv.view(), stream);
  }
  CHECK(gpu_test::normwise_rel_err(dz[0], dz_ref) < 1e-5);
  CHECK(gpu_test::normwise_rel_err(dv[0], dv_ref) < 1e-5);
  CHECK(sums[0].squared_error == doctest::Approx(sums_ref.squared_error).epsilon(1e-5));
  CHECK(sums[0].log_prob_adv == doctest::Approx(sums_ref.log_prob_adv).epsilon(1e-5));
  CHECK(sums[0].entropy == doctest::Approx(sums_ref.entropy).epsilon(1e-5));
  CHECK(gpu_test::same_bits(dz[0], dz[1]));
  CHECK(gpu_test::same_bits(dv[0], dv[1]));
  CHECK(sums[0].squared_error == sums[1].squared_error);
  CHECK(sums[0].log_prob_adv == sums[1].log_prob_adv);
  CHECK(sums[0].entropy == sums[1].entropy);
}

TEST_CASE("reward-map returns and their backward match the CPU") {
  PhiloxStream rng(10, 0);
  const index_t n = 5, B = 2, H = 29, W = 31;
  const Shape<5> s{n, B, 1, H, W};
  const Shape<4> map{B, 1, H, W};
  const auto rewards = gpu_test::random_tensor<float>(s, rng, -1.f, 1.f);
  const auto bootstrap = gpu_test::random_tensor<float>(map, rng, -1.f, 1.f);
  const auto w = gpu_test::random_tensor<float>(Shape<2>{3, 3}, rng, -0.3f, 0.6f);
  const double gamma = 0.9;
  Tensor<float, 5> returns_ref(s);
  rl::reward_map_returns_into<float>(returns_ref.view(), rewards.view(), bootstrap.view(), w.view(), gamma);
  const auto direct = gpu_test::random_tensor<float>(s, rng, -1.f, 1.f);
  Tensor<float, 5> adjoint_ref = direct;
  Tensor<float, 2> dw_ref(Shape<2>{3, 3});
  fill(dw_ref, 0.25f);
  std::vector<double> partial;
  rl::reward_map_returns_backward<float>(adjoint_ref.view(), returns_ref.view(), bootstrap.view(), w.view(), gamma,
                                         dw_ref.view(), partial);

  gpu::Stream stream;
  const auto d_rewards = to_device(rewards.view(), stream);
  const auto d_boot = to_device(bootstrap.view(), stream);
  const auto d_w = to_device(w.view(), stream);
  Tensor<float, 5, rlmed::cuda> d_returns(s), d_adjoint(s);
  Tensor<float, 2, rlmed::cuda> d_dw(Shape<2>{3, 3});
  kernels::PixelHeadWorkspace ws;
  Tensor<float, 5> returns[2], adjoint[2];
  Tensor<float, 2> dw[2];
  for (int run = 0; run < 2; ++run) {
    kernels::reward_map_returns<float>(d_returns.view(), d_rewards.view(), d_boot.view(), d_w.view(), gamma, stream);
    copy_async(d_adjoint.view(), direct.view(), stream);
    Tensor<float, 2> dw_init(Shape<2>{3, 3});
    fill(dw_init, 0.25f);
    copy_async(d_dw.view(), dw_init.view(), stream);
    kernels::reward_map_returns_backward<float>(d_adjoint.view(), d_returns.view(), d_boot.view(), d_w.view(), gamma,
                                                d_dw.view(), ws, stream);
    returns[run] = to_host(d_returns.view(), stream);
    adjoint[run] = to_host(d_adjoint.view(), stream);
    dw[run] = to_host(d_dw.view(), stream);
  }
  CHECK(gpu_test::normwise_rel_err(returns[0], returns_ref) < 1e-5);
  CHECK(gpu_test::normwise_rel_err(adjoint[0], adjoint_ref) < 1e-5);
  CHECK(gpu_test::normwise_rel_err(dw[0], dw_ref) < 1e-5);
  CHECK(gpu_test::same_bits(returns[0], returns[1]));
  CHECK(gpu_test::same_bits(adjoint[0], adjoint[1]));
  CHECK(gpu_test::same_bits(dw[0], dw[1]));
}

TEST_CASE("non-finite logits raise the flag; bad shapes throw") {
  Tensor<float, 4> logits(Shape<4>{1, 3, 4, 5});
  fill(logits, 0.f);
  logits(0, 1, 2, 3) = std::numeric_limits<float>::infinity();
  gpu::Stream stream;
  const auto d_logits = to_device(logits.view(), stream);
  Tensor<std::int32_t, 3, rlmed::cuda> d_actions(Shape<3>{1, 4, 5});
  kernels::DeviceFlag bad;
  const rl::PixelSampleKey key{1, 2, 3};
  kernels::pixel_policy<float>(d_actions.view(), {}, {}, d_logits.view(), &key, stream, bad.get());
  CHECK(bad.test_and_clear(stream));
  Tensor<std::int32_t, 3, rlmed::cuda> wrong(Shape<3>{1, 5, 4});
  CHECK_THROWS_AS(kernels::pixel_policy<float>(wrong.view(), {}, {}, d_logits.view(), &key, stream), Error);
}

RLMED_GPU_TEST_MAIN
