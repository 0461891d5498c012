// Unit tests of PixelDRL-MG's pieces: the per-pixel environment (carve and direct modes, on
// hand-made 4x4 cases), Philox action sampling (layout, frequencies), log-probabilities and
// entropies, returns with the reward-map filter (identity and a hand-computed filter), the
// per-step loss gradients on a hand case, determinism across thread counts, the A2C update and
// its checkpoint resume, the PixelDRL network's shapes, names and parameter count, and errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "rlmed/env/pixel_mask.hpp"
#include "rlmed/nn/checkpoint.hpp"
#include "rlmed/nn/models/pixeldrl_net.hpp"
#include "rlmed/nn/optim/optimizers.hpp"
#include "rlmed/rl/pixel_a3c.hpp"

using namespace rlmed;

namespace {

template <class T>
Tensor<T, 4> map4(index_t B, index_t H, index_t W, std::initializer_list<double> values) {
  Tensor<T, 4> t(Shape<4>{B, 1, H, W});
  REQUIRE(static_cast<index_t>(values.size()) == t.size());
  index_t i = 0;
  for (double v : values) t.data()[i++] = static_cast<T>(v);
  return t;
}

Tensor<std::int32_t, 3> actions3(index_t B, index_t H, index_t W, std::initializer_list<int> values) {
  Tensor<std::int32_t, 3> t(Shape<3>{B, H, W});
  REQUIRE(static_cast<index_t>(values.size()) == t.size());
  index_t i = 0;
  for (int v : values) t.data()[i++] = v;
  return t;
}

template <class T, std::size_t R>
std::vector<double> as_vector(TensorView<T, R> v) {
  return std::vector<double>(v.begin(), v.end());
}

// The hand-made 4x4 case: an image with two exact zeros, a label, two steps of actions.
const auto kImage = {0.5, 0.0, 0.7, 0.2,  //
                     0.9, 0.4, 0.0, 0.3,  //
                     0.1, 0.8, 0.6, 0.0,  //
                     0.2, 0.3, 0.5, 0.9};
const auto kLabel = {0.0, 0.0, 1.0, 0.0,  //
                     1.0, 1.0, 0.0, 0.0,  //
                     0.0, 1.0, 1.0, 0.0,  //
                     0.0, 0.0, 0.0, 1.0};
const auto kActions1 = {0, 1, 1, 0,  //
                        1, 0, 1, 0,  //
                        0, 1, 1, 1,  //
                        1, 0, 0, 1};

}  // namespace

TEST_CASE("carve mode: X(t+1) = X(t) * a, f = 1[X != 0], zero pixels are background from the start") {
  env::PixelMaskEnv<float> env({env::PixelMaskMode::carve, 2});
  const auto image = map4<float>(1, 4, 4, kImage);
  const auto label = map4<float>(1, 4, 4, kLabel);
  env.reset(image.view(), label.view());
  CHECK(env.observation_channels() == 1);
  CHECK(env.observation().shape() == Shape<4>{1, 1, 4, 4});
  CHECK(as_vector(env.observation()) == as_vector(image.view()));
  // f(0) = 1[X(0) != 0]: the two exact zeros are background.
  CHECK(as_vector(env.mask()) == std::vector<double>{1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1});
  CHECK(env.t() == 0);
  CHECK_FALSE(env.done());

  const auto a1 = actions3(1, 4, 4, kActions1);
  const auto r1 = env.step(a1.view());
  CHECK(as_vector(env.observation()) == as_vector(map4<float>(1, 4, 4,
                                                              {0, 0, 0.7, 0,  //
                                                               0.9, 0, 0, 0,  //
                                                               0, 0.8, 0.6, 0,  //
                                                               0.2, 0, 0, 0.9})
                                                          .view()));
  CHECK(as_vector(env.mask()) == std::vector<double>{0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1});
  // r = (f0 - G)^2 - (f1 - G)^2, worked out by hand.
  CHECK(as_vector(r1) == std::vector<double>{1, 0, 0, 1, 0, -1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0});
  CHECK_FALSE(env.done());

  // Step 2: "keep" everywhere except (3, 0); (1, 1) was zeroed and cannot come back.
  auto a2 = actions3(1, 4, 4, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1});
  Tensor<float, 4> r2(Shape<4>{1, 1, 4, 4});
  const bool done = env.step_into(a2.view(), r2.view());
  CHECK(done);
  CHECK(env.done());
  CHECK(as_vector(env.mask()) == std::vector<double>{0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1});
  CHECK(as_vector(r2.view()) == std::vector<double>{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0});
  // Dice of the final mask, by hand: the mask's 5 ones (0,2), (1,0), (2,1), (2,2), (3,3) all lie
  // in the label's 6 ones, so TP = 5, P = 5, T = 6.
  CHECK(env.mean_dice() == doctest::Approx((2.0 * 5 + 1e-4) / (6 + 5 + 1e-4)));
  // A finished episode refuses further steps.
  CHECK_THROWS_WITH_AS(env.step(a2.view()), doctest::Contains("ended"), Error);
}

TEST_CASE("direct mode: state (image, mask), the action writes the mask and can undo itself") {
  env::PixelMaskEnv<double> env({env::PixelMaskMode::direct, 3});
  const auto image = map4<double>(1, 4, 4, kImage);
  const auto label = map4<double>(1, 4, 4, kLabel);
  env.reset(image.view(), label.view());
  REQUIRE(env.observation_channels() == 2);
  REQUIRE(env.observation().shape() == Shape<4>{1, 2, 4, 4});
  const std::vector<double> f0{1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1};
  CHECK(as_vector(env.observation()[0][0]) == as_vector(image.view()));
  CHECK(as_vector(env.observation()[0][1]) == f0);

  const auto a1 = actions3(1, 4, 4, kActions1);
  const auto r1 = as_vector(env.step(a1.view()));
  CHECK(as_vector(env.mask()) == std::vector<double>(kActions1.begin(), kActions1.end()));
  CHECK(as_vector(env.observation()[0][1]) == std::vector<double>(kActions1.begin(), kActions1.end()));
  CHECK(as_vector(env.observation()[0][0]) == as_vector(image.view()));  // the image never changes
  // By hand: zero pixels may become object here (reward -1 where the label is 0).
  CHECK(r1 == std::vector<double>{1, -1, 0, 1, 0, -1, -1, 1, 1, 0, 0, -1, 0, 1, 1, 0});

  // Step 2 reverts (1, 1) to object (label 1): +1 there, 0 elsewhere.
  auto a2 = actions3(1, 4, 4, kActions1);
  a2(0, 1, 1) = 1;
  const auto r2 = as_vector(env.step(a2.view()));
  std::vector<double> want(16, 0.0);
  want[5] = 1;
  CHECK(r2 == want);
  CHECK(env.mask()(0, 0, 1, 1) == 1.0);
  CHECK(env.t() == 2);
  CHECK(env.steps_left() == 1);
}

TEST_CASE("environment errors leave the episode unchanged") {
  env::PixelMaskEnv<float> env({env::PixelMaskMode::carve, 3});
  const auto image = map4<float>(1, 4, 4, kImage);
  const auto label = map4<float>(1, 4, 4, kLabel);
  CHECK_THROWS_WITH_AS(env.step(actions3(1, 4, 4, kActions1).view()), doctest::Contains("reset"), Error);
  auto bad = image;
  bad(0, 0, 2, 2) = std::nanf("");
  CHECK_THROWS_WITH_AS(env.reset(bad.view(), label.view()), doctest::Contains("finite"), Error);
  auto half = label;
  half(0, 0, 1, 1) = 0.5f;
  CHECK_THROWS_WITH_AS(env.reset(image.view(), half.view()), doctest::Contains("0 or 1"), Error);
  Tensor<float, 4> two_channels(Shape<4>{1, 2, 4, 4});
  CHECK_THROWS_WITH_AS(env.reset(two_channels.view(), two_channels.view()), doctest::Contains("[B, 1, H, W]"), Error);
  CHECK_THROWS_AS(env.reset(image.view(), Tensor<float, 4>(Shape<4>{1, 1, 4, 5}).view()), Error);
  CHECK_THROWS_AS(env::PixelMaskEnv<float>({env::PixelMaskMode::carve, 0}), Error);

  env.reset(image.view(), label.view());
  const auto before = as_vector(env.observation());
  auto wrong = actions3(1, 4, 4, kActions1);
  wrong(0, 3, 3) = 2;
  CHECK_THROWS_WITH_AS(env.step(wrong.view()), doctest::Contains("found 2"), Error);
  CHECK(as_vector(env.observation()) == before);
  CHECK(env.t() == 0);
  CHECK_THROWS_WITH_AS(env.step(Tensor<std::int32_t, 3>(Shape<3>{1, 4, 3}).view()), doctest::Contains("[B, H, W]"),
                       Error);
  Tensor<float, 4> small_rewards(Shape<4>{1, 1, 2, 2});
  CHECK_THROWS_AS(env.step_into(actions3(1, 4, 4, kActions1).view(), small_rewards.view()), Error);
  CHECK(as_vector(env.mask()) == std::vector<double>{1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1});
}

TEST_CASE("sampling follows the documented Philox layout: one counter per (step, pixel)") {
  // Logits [2, 3, 4, 5] with varied values; recompute chosen actions by hand from the layout.
  Tensor<double, 4> logits(Shape<4>{2, 3, 4, 5});
  PhiloxStream rng(5, 0);
  fill_normal(logits.view(), rng, 0.0, 2.0);
  const rl::PixelSampleKey key{123, 7, 41};
  const auto actions = rl::sample_pixel_actions(TensorView<const double, 4>(logits), key);
  const index_t S = 20;
  for (index_t i = 0; i < 40; ++i) {
    const index_t b = i / S, s = i % S;
    double z[3], m = -1e300, total = 0;
    for (int k = 0; k < 3; ++k) {
      z[k] = logits.data()[(b * 3 + k) * S + s];
      m = std::max(m, z[k]);
    }
    for (int k = 0; k < 3; ++k) total += std::exp(z[k] - m);
    const std::uint32_t bits = philox_block(123, 7, (std::uint64_t(41) << 32) | std::uint64_t(i)).v[0];
    const double target = double(float(bits >> 8) / 16777216.0f) * total;
    double acc = 0;
    int want = 2;
    for (int k = 0; k < 3; ++k) {
      acc += std::exp(z[k] - m);
      if (target < acc) {
        want = k;
        break;
      }
    }
    CHECK(actions.data()[i] == want);
  }
  // Another step, stream or seed gives other draws.
  const auto other_step = rl::sample_pixel_actions(TensorView<const double, 4>(logits), {123, 7, 42});
  const auto other_stream = rl::sample_pixel_actions(TensorView<const double, 4>(logits), {123, 8, 41});
  CHECK_FALSE(bitwise_equal(actions, other_step));
  CHECK_FALSE(bitwise_equal(actions, other_stream));
  CHECK(bitwise_equal(actions, rl::sample_pixel_actions(TensorView<const double, 4>(logits), key)));
}

TEST_CASE("sampled action frequencies match softmax probabilities (chi-square, fixed seed)") {
  // Two groups of pixels with different logits; 4 steps of a [2, 3, 64, 64] batch: 16384 draws per group.
  const index_t B = 2, A = 3, H = 64, W = 64;
  Tensor<float, 4> logits(Shape<4>{B, A, H, W});
  const std::array<std::array<double, 3>, 2> z{{{std::log(0.2), std::log(0.5), std::log(0.3)}, {2.0, -1.0, 0.5}}};
  for (index_t b = 0; b < B; ++b)
    for (index_t y = 0; y < H; ++y)
      for (index_t x = 0; x < W; ++x)
        for (index_t k = 0; k < A; ++k) logits(b, k, y, x) = static_cast<float>(z[x % 2][k]);
  std::array<std::array<double, 3>, 2> counts{};
  Tensor<std::int32_t, 3> actions(Shape<3>{B, H, W});
  for (std::uint64_t step = 0; step < 4; ++step) {
    rl::sample_pixel_actions_into(actions.view(), TensorView<const float, 4>(logits), {2024, 0, step});
    for (index_t b = 0; b < B; ++b)
      for (index_t y = 0; y < H; ++y)
        for (index_t x = 0; x < W; ++x) counts[x % 2][actions(b, y, x)] += 1;
  }
  for (int g = 0; g < 2; ++g) {
    double norm = 0;
    for (double v : z[g]) norm += std::exp(v);
    const double n = counts[g][0] + counts[g][1] + counts[g][2];
    REQUIRE(n == 16384);
    double chi2 = 0;
    for (int k = 0; k < 3; ++k) {
      const double expected = n * std::exp(z[g][k]) / norm;
      chi2 += (counts[g][k] - expected) * (counts[g][k] - expected) / expected;
    }
    INFO("group " << g << ": counts " << counts[g][0] << ", " << counts[g][1] << ", " << counts[g][2] << ", chi2 " << chi2);
    CHECK(chi2 < 13.82);  // chi-square, 2 degrees of freedom, p = 0.001
  }
}

TEST_CASE("greedy actions, log-probabilities and entropies per pixel") {
  // [1, 3, 1, 3]: pixel 0 logits (1, 3, 2), pixel 1 a tie (0, 5, 5), pixel 2 (-1, -1, -4).
  Tensor<double, 4> logits(Shape<4>{1, 3, 1, 3});
  const double z[3][3] = {{1, 3, 2}, {0, 5, 5}, {-1, -1, -4}};
  for (int p = 0; p < 3; ++p)
    for (int k = 0; k < 3; ++k) logits(0, k, 0, p) = z[p][k];
  const auto greedy = rl::greedy_pixel_actions(TensorView<const double, 4>(logits));
  CHECK(greedy(0, 0, 0) == 1);
  CHECK(greedy(0, 0, 1) == 1);  // lowest index on ties
  CHECK(greedy(0, 0, 2) == 0);
  Tensor<std::int32_t, 3> a(Shape<3>{1, 1, 3});
  a(0, 0, 0) = 2;
  a(0, 0, 1) = 0;
  a(0, 0, 2) = 1;
  Tensor<double, 4> lp(Shape<4>{1, 1, 1, 3}), ent(Shape<4>{1, 1, 1, 3});
  rl::pixel_log_prob_entropy_into(lp.view(), ent.view(), TensorView<const double, 4>(logits),
                                  TensorView<const std::int32_t, 3>(a));
  for (int p = 0; p < 3; ++p) {
    double norm = 0;
    for (int k = 0; k < 3; ++k) norm += std::exp(z[p][k]);
    double h = 0;
    for (int k = 0; k < 3; ++k) {
      const double q = std::exp(z[p][k]) / norm;
      h -= q * std::log(q);
    }
    CHECK(lp(0, 0, 0, p) == doctest::Approx(std::log(std::exp(z[p][a(0, 0, p)]) / norm)).epsilon(1e-14));
    CHECK(ent(0, 0, 0, p) == doctest::Approx(h).epsilon(1e-14));
  }
  logits(0, 2, 0, 1) = std::nan("");
  CHECK_THROWS_WITH_AS(rl::greedy_pixel_actions(TensorView<const double, 4>(logits)), doctest::Contains("finite"), Error);
  CHECK_THROWS_WITH_AS(rl::sample_pixel_actions(TensorView<const double, 4>(logits), {}), doctest::Contains("finite"),
                       Error);
  logits(0, 2, 0, 1) = 5;
  a(0, 0, 2) = 3;
  CHECK_THROWS_WITH_AS(rl::pixel_log_prob_entropy_into(lp.view(), ent.view(), TensorView<const double, 4>(logits),
                                                       TensorView<const std::int32_t, 3>(a)),
                       doctest::Contains("outside [0, 3)"), Error);
}

TEST_CASE("returns with the identity filter are the plain discounted returns") {
  const index_t n = 4, B = 2, H = 5, W = 6;
  Tensor<float, 5> rewards(Shape<5>{n, B, 1, H, W}), returns(Shape<5>{n, B, 1, H, W});
  Tensor<float, 4> bootstrap(Shape<4>{B, 1, H, W});
  PhiloxStream rng(9, 0);
  fill_normal(rewards.view(), rng);
  fill_normal(bootstrap.view(), rng);
  rl::RewardMapFilter<float> filter;
  rl::reward_map_returns_into(returns.view(), TensorView<const float, 5>(rewards), TensorView<const float, 4>(bootstrap),
                              TensorView<const float, 2>(filter.weight.value), 0.95);
  const float g = 0.95f;
  for (index_t i = 0; i < B * H * W; ++i) {
    float R = bootstrap.data()[i];
    for (index_t t = n; t-- > 0;) {
      R = rewards.data()[t * B * H * W + i] + g * R;
      CHECK(returns.data()[t * B * H * W + i] == R);  // bit-exact: the same float operations
    }
  }
}

TEST_CASE("returns with a known filter, worked out by hand") {
  // w[1][2] = 1 (offset dy = 0, dx = +1): the value of the left neighbour;
  // w[0][0] = 2 (offset dy = -1, dx = -1): twice the value below-right.
  // (w * R)(y, x) = R(y, x - 1) + 2 R(y + 1, x + 1), zero outside.
  rl::RewardMapFilter<double> filter;
  fill(filter.weight.value, 0.0);
  filter.weight.value(1, 2) = 1;
  filter.weight.value(0, 0) = 2;
  Tensor<double, 5> rewards(Shape<5>{2, 1, 1, 3, 3}), returns(Shape<5>{2, 1, 1, 3, 3});
  for (index_t i = 0; i < 9; ++i) rewards.data()[i] = 1;  // r(0) = 1, r(1) = 0
  const auto bootstrap = map4<double>(1, 3, 3, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  rl::reward_map_returns_into(returns.view(), TensorView<const double, 5>(rewards),
                              TensorView<const double, 4>(bootstrap), TensorView<const double, 2>(filter.weight.value),
                              0.5);
  // R(1) = 0.5 (w * B):  w * B = [[10, 13, 2], [16, 22, 5], [0, 7, 8]]
  CHECK(as_vector(TensorView<const double, 4>(returns[1])) == std::vector<double>{5, 6.5, 1, 8, 11, 2.5, 0, 3.5, 4});
  // R(0) = 1 + 0.5 (w * R(1)):  w * R(1) = [[22, 10, 6.5], [7, 16, 11], [0, 0, 3.5]]
  CHECK(as_vector(TensorView<const double, 4>(returns[0])) ==
        std::vector<double>{12, 6, 4.25, 4.5, 9, 6.5, 1, 1, 2.75});
  // The paper's one-step form at the centre: r + γ Σ_j w_{i-j} V_j = 0 + 0.5 (1·V(1,0) + 2·V(2,2)) = 11.
  CHECK(returns(1, 0, 0, 1, 1) == 0.5 * (1 * 4 + 2 * 9));
  // The convolution alone.
  Tensor<double, 4> conv(Shape<4>{1, 1, 3, 3});
  rl::reward_map_convolve_into(conv.view(), TensorView<const double, 4>(bootstrap),
                               TensorView<const double, 2>(filter.weight.value));
  CHECK(as_vector(conv.view()) == std::vector<double>{10, 13, 2, 16, 22, 5, 0, 7, 8});
  CHECK_THROWS_WITH_AS(rl::reward_map_convolve_into(TensorView<double, 4>(conv.data(), conv.shape()),
                                                    TensorView<const double, 4>(conv.data(), conv.shape()),
                                                    TensorView<const double, 2>(filter.weight.value)),
                       doctest::Contains("alias"), Error);

  // Argument checks.
  filter.weight.value(2, 2) = std::nan("");
  CHECK_THROWS_WITH_AS(rl::reward_map_returns_into(returns.view(), TensorView<const double, 5>(rewards),
                                                   TensorView<const double, 4>(bootstrap),
                                                   TensorView<const double, 2>(filter.weight.value), 0.5),
                       doctest::Contains("filter"), Error);
  filter.set_identity();
  CHECK_THROWS_WITH_AS(rl::reward_map_returns_into(returns.view(), TensorView<const double, 5>(rewards),
                                                   TensorView<const double, 4>(bootstrap),
                                                   TensorView<const double, 2>(filter.weight.value), 1.5),
                       doctest::Contains("gamma"), Error);
  CHECK_THROWS_AS(rl::reward_map_returns_into(returns.view(), TensorView<const double, 5>(rewards),
                                              TensorView<const double, 4>(map4<double>(1, 3, 2, {1, 2, 3, 4, 5, 6})),
                                              TensorView<const double, 2>(filter.weight.value), 0.5),
                  Error);
}

TEST_CASE("reward-map backward: adjoints and filter gradient match finite differences") {
  // L = Σ_t Σ_i c_t,i R(t)_i for fixed random c: dL/dR(t) direct = c_t; check dL/dw numerically.
  const index_t n = 3, B = 2, H = 4, W = 5;
  Tensor<double, 5> rewards(Shape<5>{n, B, 1, H, W}), returns(rewards.shape()), coeff(rewards.shape());
  Tensor<double, 4> bootstrap(Shape<4>{B, 1, H, W});
  PhiloxStream rng(11, 0);
  fill_normal(rewards.view(), rng);
  fill_normal(coeff.view(), rng);
  fill_normal(bootstrap.view(), rng);
  rl::RewardMapFilter<double> filter;
  fill_normal(filter.weight.value.view(), rng, 0.0, 0.5);
  const double gamma = 0.9;
  auto loss = [&]() {
    rl::reward_map_returns_into(returns.view(), TensorView<const double, 5>(rewards),
                                TensorView<const double, 4>(bootstrap), TensorView<const double, 2>(filter.weight.value),
                                gamma);
    double s = 0;
    for (index_t i = 0; i < returns.size(); ++i) s += coeff.data()[i] * returns.data()[i];
    return s;
  };
  loss();
  Tensor<double, 5> adjoint = coeff;
  std::vector<double> partial;
  filter.weight.zero_grad();
  rl::reward_map_returns_backward(adjoint.view(), TensorView<const double, 5>(returns),
                                  TensorView<const double, 4>(bootstrap), TensorView<const double, 2>(filter.weight.value),
                                  gamma, filter.weight.grad.view(), partial);
  double num2 = 0, den2 = 0;
  for (index_t k = 0; k < 9; ++k) {
    const double saved = filter.weight.value.data()[k];
    filter.weight.value.data()[k] = saved + 1e-6;
    const double lp = loss();
    filter.weight.value.data()[k] = saved - 1e-6;
    const double lm = loss();
    filter.weight.value.data()[k] = saved;
    const double fd = (lp - lm) / 2e-6;
    num2 += (fd - filter.weight.grad.data()[k]) * (fd - filter.weight.grad.data()[k]);
    den2 += fd * fd;
  }
  CHECK(std::sqrt(num2 / den2) < 1e-8);
  // The total adjoint of R(n-1) against a rewards perturbation: dL/dr(t) = G(t).
  loss();
  const index_t probe = 2 * B * H * W + 7;  // step 2, pixel 7
  const double saved = rewards.data()[probe];
  rewards.data()[probe] = saved + 1e-6;
  const double lp = loss();
  rewards.data()[probe] = saved - 1e-6;
  const double lm = loss();
  rewards.data()[probe] = saved;
  CHECK((lp - lm) / 2e-6 == doctest::Approx(adjoint.data()[probe]).epsilon(1e-8));
}

TEST_CASE("per-step loss gradients on a hand case") {
  // One pixel, two actions, logits (0, 0): p = (1/2, 1/2), H = ln 2; a = 0, R = 1, V = 0.25.
  Tensor<double, 4> logits(Shape<4>{1, 2, 1, 1}), dlogits(Shape<4>{1, 2, 1, 1});
  auto value = map4<double>(1, 1, 1, {0.25});
  auto ret = map4<double>(1, 1, 1, {1.0});
  auto adv = map4<double>(1, 1, 1, {0.75});
  Tensor<double, 4> dvalue(Shape<4>{1, 1, 1, 1});
  Tensor<std::int32_t, 3> a(Shape<3>{1, 1, 1});
  std::vector<double> partial;
  const auto sums = rl::pixel_a3c_step_into(dlogits.view(), dvalue.view(), TensorView<const double, 4>(logits),
                                            TensorView<const double, 4>(value), TensorView<const std::int32_t, 3>(a),
                                            TensorView<const double, 4>(ret), TensorView<const double, 4>(adv),
                                            rl::PixelA3CLossWeights{}, 1.0, partial);
  CHECK(sums.squared_error == 0.5625);
  CHECK(sums.log_prob_adv == doctest::Approx(std::log(0.5) * 0.75).epsilon(1e-15));
  CHECK(sums.entropy == doctest::Approx(std::log(2.0)).epsilon(1e-15));
  // dz = -c_p A (onehot - p) + β p (log p + H); the entropy part vanishes at the uniform policy.
  CHECK(dlogits(0, 0, 0, 0) == doctest::Approx(-0.375).epsilon(1e-15));
  CHECK(dlogits(0, 1, 0, 0) == doctest::Approx(0.375).epsilon(1e-15));
  CHECK(dvalue(0, 0, 0, 0) == -0.75);  // -2 c_v (R - V)
  // Off the uniform policy the entropy term enters: logits (1, 0), β only.
  logits(0, 0, 0, 0) = 1;
  rl::pixel_a3c_step_into(dlogits.view(), dvalue.view(), TensorView<const double, 4>(logits),
                          TensorView<const double, 4>(value), TensorView<const std::int32_t, 3>(a),
                          TensorView<const double, 4>(ret), TensorView<const double, 4>(adv),
                          rl::PixelA3CLossWeights{0.0, 0.0, 1.0}, 1.0, partial);
  const double p0 = std::exp(1.0) / (std::exp(1.0) + 1), p1 = 1 - p0;
  const double h = -(p0 * std::log(p0) + p1 * std::log(p1));
  CHECK(dlogits(0, 0, 0, 0) == doctest::Approx(p0 * (std::log(p0) + h)).epsilon(1e-14));
  CHECK(dlogits(0, 1, 0, 0) == doctest::Approx(p1 * (std::log(p1) + h)).epsilon(1e-14));
}

TEST_CASE("sampling, environment, returns and losses are bit-identical with 1 and 2 threads") {
  const index_t B = 2, H = 64, W = 64, n = 3;
  Tensor<float, 4> images(Shape<4>{B, 1, H, W}), labels(Shape<4>{B, 1, H, W}), logits(Shape<4>{B, 2, H, W});
  Tensor<float, 4> values(Shape<4>{B, 1, H, W});
  PhiloxStream rng(13, 0);
  fill_uniform(images.view(), rng, 0.1f, 1.0f);
  fill_normal(logits.view(), rng);
  fill_normal(values.view(), rng);
  for (index_t i = 0; i < labels.size(); ++i) labels.data()[i] = images.data()[i] > 0.5f ? 1.0f : 0.0f;
  rl::RewardMapFilter<float> filter;
  fill_normal(filter.weight.value.view(), rng, 0.0f, 0.3f);

  struct Outputs {
    Tensor<std::int32_t, 4> actions;
    Tensor<float, 5> rewards, returns, adjoint;
    Tensor<float, 4> dlogits, dvalue;
    Tensor<float, 2> dw;
    double sums[3];
  };
  auto run = [&](int threads) {
    set_num_threads(threads);
    Outputs o{Tensor<std::int32_t, 4>(Shape<4>{n, B, H, W}), Tensor<float, 5>(Shape<5>{n, B, 1, H, W}),
              Tensor<float, 5>(Shape<5>{n, B, 1, H, W}), Tensor<float, 5>(Shape<5>{n, B, 1, H, W}),
              Tensor<float, 4>(logits.shape()), Tensor<float, 4>(values.shape()), Tensor<float, 2>(Shape<2>{3, 3}), {}};
    env::PixelMaskEnv<float> env({env::PixelMaskMode::carve, static_cast<int>(n)});
    env.reset(images.view(), labels.view());
    for (index_t t = 0; t < n; ++t) {
      rl::sample_pixel_actions_into(o.actions[t], TensorView<const float, 4>(logits), {77, 0, std::uint64_t(t)});
      env.step_into(TensorView<const std::int32_t, 3>(o.actions[t]), o.rewards[t]);
    }
    rl::reward_map_returns_into(o.returns.view(), TensorView<const float, 5>(o.rewards),
                                TensorView<const float, 4>(values), TensorView<const float, 2>(filter.weight.value), 0.95);
    copy(o.adjoint.view(), TensorView<const float, 5>(o.returns));
    std::vector<double> partial;
    rl::reward_map_returns_backward(o.adjoint.view(), TensorView<const float, 5>(o.returns),
                                    TensorView<const float, 4>(values), TensorView<const float, 2>(filter.weight.value),
                                    0.95, o.dw.view(), partial);
    const auto s = rl::pixel_a3c_step_into(o.dlogits.view(), o.dvalue.view(), TensorView<const float, 4>(logits),
                                           TensorView<const float, 4>(values),
                                           TensorView<const std::int32_t, 3>(o.actions[0]),
                                           TensorView<const float, 4>(o.returns[0]), TensorView<const float, 4>(values),
                                           rl::PixelA3CLossWeights{}, 1e-3, partial);
    o.sums[0] = s.squared_error;
    o.sums[1] = s.log_prob_adv;
    o.sums[2] = s.entropy;
    return o;
  };
  const int saved_threads = max_threads();
  const Outputs one = run(1), two = run(2), again = run(2);
  set_num_threads(saved_threads);
  for (const Outputs* o : {&two, &again}) {
    CHECK(bitwise_equal(one.actions, o->actions));
    CHECK(bitwise_equal(one.rewards, o->rewards));
    CHECK(bitwise_equal(one.returns, o->returns));
    CHECK(bitwise_equal(one.adjoint, o->adjoint));
    CHECK(bitwise_equal(one.dw, o->dw));
    CHECK(bitwise_equal(one.dlogits, o->dlogits));
    CHECK(bitwise_equal(one.dvalue, o->dvalue));
    CHECK(std::memcmp(one.sums, o->sums, sizeof one.sums) == 0);
  }
  // Both action values occur and rewards are not all zero (the run did something).
  std::int64_t zeros = 0;
  for (auto v : one.actions) zeros += v == 0;
  CHECK(zeros > 0);
  CHECK(zeros < one.actions.size());
}

namespace {

// The smallest actor-critic: one 3x3 convolution from the observation to 2 logits + 1 value.
using TinyConv = nn::ConvModule<2, 1, 3, 3, float>;
using TinyNet = rl::FusedPixelActorCritic<TinyConv, 2>;

TinyNet make_tiny(std::uint64_t seed) {
  TinyNet net(TinyConv(nn::ConvConfig<2>::same(3)));
  PhiloxStream rng(seed, 0);
  net.initialize(rng);
  return net;
}

void blob_batch(Tensor<float, 4>& images, Tensor<float, 4>& labels, std::uint64_t seed) {
  const index_t B = images.extent(0), H = images.extent(2), W = images.extent(3);
  PhiloxStream rng(seed, 0);
  for (index_t b = 0; b < B; ++b) {
    const double cy = rng.uniform(4.0f, float(H - 4)), cx = rng.uniform(4.0f, float(W - 4));
    for (index_t y = 0; y < H; ++y)
      for (index_t x = 0; x < W; ++x) {
        const bool in = (y - cy) * (y - cy) + (x - cx) * (x - cx) < 9.0;
        labels(b, 0, y, x) = in ? 1.0f : 0.0f;
        images(b, 0, y, x) = (in ? 0.8f : 0.3f) + 0.05f * rng.normal();
      }
  }
}

}  // namespace

TEST_CASE("A2C update: deterministic run to run, learns the filter, resumes exactly from a checkpoint") {
  const index_t B = 2, H = 16, W = 16;
  Tensor<float, 4> images(Shape<4>{B, 1, H, W}), labels(images.shape());
  rl::PixelA3CConfig cfg;
  cfg.seed = 5;
  cfg.max_grad_norm = 10;
  auto train = [&](TinyNet& net, rl::PixelA3C<TinyNet>& learner, nn::optim::Adam<float>& opt, int first, int count) {
    env::PixelMaskEnv<float> env({env::PixelMaskMode::carve, 3});
    std::vector<rl::PixelA3CStats> stats;
    for (int u = first; u < first + count; ++u) {
      blob_batch(images, labels, 100 + std::uint64_t(u));
      env.reset(images.view(), labels.view());
      stats.push_back(learner.update(env, opt));
    }
    (void)net;
    return stats;
  };
  TinyNet net_a = make_tiny(1), net_b = make_tiny(1);
  rl::PixelA3C<TinyNet> la(net_a, cfg), lb(net_b, cfg);
  nn::optim::Adam<float> oa(la), ob(lb);
  const auto conv_before = Tensor<float, 4>::copy_of(net_a.module.weight.value.view());
  const auto sa = train(net_a, la, oa, 0, 3);
  const auto sb = train(net_b, lb, ob, 0, 3);
  for (std::size_t i = 0; i < sa.size(); ++i) {
    CHECK(sa[i].loss == sb[i].loss);
    CHECK(sa[i].steps == 3);
    CHECK(std::isfinite(sa[i].loss));
    CHECK(sa[i].mean_entropy > 0);
  }
  CHECK(bitwise_equal(net_a.module.weight.value, net_b.module.weight.value));
  CHECK(bitwise_equal(la.reward_map.weight.value, lb.reward_map.weight.value));
  CHECK_FALSE(bitwise_equal(net_a.module.weight.value, conv_before));
  rl::RewardMapFilter<float> identity;
  CHECK_FALSE(bitwise_equal(la.reward_map.weight.value, identity.weight.value));  // w is trained
  CHECK(la.sample_step() == 9);  // 3 updates x 3 steps

  // Parameter names: the network's, then the filter's.
  std::vector<std::string> names;
  la.parameters([&](const std::string& name, auto&) { names.push_back(name); });
  CHECK(names == std::vector<std::string>{"weight", "bias", "reward_map.weight"});

  // Checkpoint (network, filter, sampler step, Adam state) and resume: identical continuation.
  const auto path = std::filesystem::temp_directory_path() / "rlmed_pixel_a3c_resume.safetensors";
  nn::save_checkpoint(path, la, &oa);
  TinyNet net_c = make_tiny(99);
  rl::PixelA3C<TinyNet> lc(net_c, cfg);
  nn::optim::Adam<float> oc(lc);
  nn::load_checkpoint(path, lc, &oc);
  std::filesystem::remove(path);
  CHECK(lc.sample_step() == 9);
  const auto sa2 = train(net_a, la, oa, 3, 2);
  const auto sc2 = train(net_c, lc, oc, 3, 2);
  CHECK(sa2[1].loss == sc2[1].loss);
  CHECK(bitwise_equal(net_a.module.weight.value, net_c.module.weight.value));
  CHECK(bitwise_equal(la.reward_map.weight.value, lc.reward_map.weight.value));
}

TEST_CASE("learner: rollouts, bootstrap, fixed filter and misuse") {
  const index_t B = 2, H = 8, W = 8;
  Tensor<float, 4> images(Shape<4>{B, 1, H, W}), labels(images.shape());
  blob_batch(images, labels, 7);
  TinyNet net = make_tiny(3);
  rl::PixelA3CConfig cfg;
  cfg.rollout_steps = 2;
  cfg.learn_reward_map = false;
  rl::PixelA3C<TinyNet> learner(net, cfg);
  env::PixelMaskEnv<float> env({env::PixelMaskMode::carve, 3});
  CHECK_THROWS_WITH_AS(learner.collect(env), doctest::Contains("reset"), Error);
  CHECK_THROWS_WITH_AS(learner.accumulate_gradients(), doctest::Contains("collect"), Error);
  env.reset(images.view(), labels.view());
  learner.collect(env);
  CHECK(learner.rollout_length() == 2);
  CHECK(env.t() == 2);
  // Not at the end: the bootstrap is V(s(2)) from the network.
  typename TinyNet::Cache cache;
  nn::Context ctx;
  const auto out = net.forward(ctx, env.observation(), cache);
  CHECK(bitwise_equal(TensorView<const float, 4>(learner.bootstrap()), out.value));
  // The stored observation of step 1 is X(1) = X(0) ⊙ a(0).
  for (index_t i = 0; i < images.size(); ++i)
    CHECK(learner.observation(1).data()[i] == (learner.actions(0).data()[i] == 1 ? images.data()[i] : 0.0f));
  fill(learner.reward_map.weight.grad, 0.0f);
  learner.accumulate_gradients();
  CHECK_THROWS_WITH_AS(learner.accumulate_gradients(), doctest::Contains("already"), Error);
  // learn_reward_map = false: w gets no gradient; returns are plain discounted returns.
  for (float g : learner.reward_map.weight.grad) CHECK(g == 0.0f);
  for (index_t i = 0; i < B * H * W; ++i)
    CHECK(learner.returns(0).data()[i] ==
          learner.rewards(0).data()[i] + 0.95f * (learner.rewards(1).data()[i] + 0.95f * learner.bootstrap().data()[i]));
  // The last step: one step left, the end is terminal, so the bootstrap is zero.
  learner.collect(env);
  CHECK(learner.rollout_length() == 1);
  CHECK(env.done());
  for (float v : learner.bootstrap()) CHECK(v == 0.0f);
  CHECK_THROWS_WITH_AS(learner.collect(env), doctest::Contains("ended"), Error);
  // Greedy evaluation reports a Dice per step.
  env.reset(images.view(), labels.view());
  std::vector<double> dice(3);
  learner.run_episode(env, rl::PixelPolicy::greedy, dice);
  for (double d : dice) CHECK((d >= 0 && d <= 1));
  CHECK(dice[2] == env.mean_dice());
}

TEST_CASE("PixelDrlNet: shapes, parameter names, and the paper-width parameter count") {
  nn::PixelDrlNet<double, 1, 2, 2, 4> small;
  PhiloxStream rng(1, 0);
  small.initialize(rng);
  Tensor<double, 4> x(Shape<4>{2, 1, 16, 24});
  fill_normal(x.view(), rng);
  decltype(small)::Cache cache;
  nn::Context ctx;
  const auto out = small.forward(ctx, x.view(), cache);
  CHECK(out.policy_logits.shape() == Shape<4>{2, 2, 16, 24});
  CHECK(out.value.shape() == Shape<4>{2, 1, 16, 24});
  CHECK(cache.features.shape() == Shape<4>{2, 30, 16, 24});
  CHECK_THROWS_WITH_AS(small.forward(ctx, Tensor<double, 4>(Shape<4>{1, 1, 12, 12}).view(), cache),
                       doctest::Contains("multiple of 8"), Error);
  CHECK_THROWS_WITH_AS(small.forward(ctx, Tensor<double, 4>(Shape<4>{1, 2, 16, 16}).view(), cache),
                       doctest::Contains("channels"), Error);

  std::vector<std::string> names;
  small.parameters([&](const std::string& name, auto&) { names.push_back(name); });
  CHECK(names.front() == "backbone.conv1_1.weight");
  for (const char* want : {"backbone.conv4_3.bias", "sam.proj.weight", "sam.proj.bias", "policy.conv1.weight",
                           "policy.conv3.bias", "policy.out.weight", "value.conv2.weight", "value.out.bias"})
    CHECK(std::find(names.begin(), names.end(), want) != names.end());
  CHECK(names.size() == 10 * 2 + 2 + 2 * 4 * 2);

  // Paper width: VGG16 conv1_1..conv4_3 at half width + SAM (1x1, 256 -> 256) + two heads
  // (3x3 480 -> 64, 3x3 64 -> 64 twice, 1x1 64 -> A), weights and biases.
  auto conv = [](index_t cin, index_t cout, index_t k) { return cout * cin * k * k + cout; };
  const index_t backbone = conv(1, 32, 3) + conv(32, 32, 3) + conv(32, 64, 3) + conv(64, 64, 3) + conv(64, 128, 3) +
                           2 * conv(128, 128, 3) + conv(128, 256, 3) + 2 * conv(256, 256, 3);
  const index_t sam = conv(256, 256, 1);
  auto head = [&](index_t actions) { return conv(480, 64, 3) + 2 * conv(64, 64, 3) + conv(64, actions, 1); };
  nn::PixelDrlNet<float> paper;
  const index_t count = paper.parameter_count();
  MESSAGE("PixelDrlNet<float, 1, 32, 2, 64> (paper half width): " << count << " parameters (backbone " << backbone
                                                                   << ", SAM " << sam << ", policy head " << head(2)
                                                                   << ", value head " << head(1) << ")");
  CHECK(count == backbone + sam + head(2) + head(1));
  CHECK(count == 2676131);
  nn::PixelDrlNet<float, 1, 8, 2, 16> cpu;
  MESSAGE("PixelDrlNet<float, 1, 8, 2, 16> (CPU variant): " << cpu.parameter_count() << " parameters");
  CHECK(cpu.parameter_count() == conv(1, 8, 3) + conv(8, 8, 3) + conv(8, 16, 3) + conv(16, 16, 3) + conv(16, 32, 3) +
                                     2 * conv(32, 32, 3) + conv(32, 64, 3) + 2 * conv(64, 64, 3) + conv(64, 64, 1) +
                                     2 * (conv(120, 16, 3) + 2 * conv(16, 16, 3)) + conv(16, 2, 1) + conv(16, 1, 1));
}
