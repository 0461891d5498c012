// GRPO and its toy task: group-relative advantages, the clipped surrogate and the k3 KL estimator
// on hand cases (and k3's unbiasedness by Monte Carlo), the per-token loss gradient through the
// log-softmax by finite differences, the DigitSum task (features, exact and shaped rewards, the
// Environment interface), determinism, exact save/load resume, and bad inputs → rlmed::Error.
#include <doctest/doctest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "rlmed/env/toy/digit_sum.hpp"
#include "rlmed/rl/agents/grpo.hpp"

using namespace rlmed;
namespace ag = rlmed::rl::agents;
using Digits3 = env::toy::DigitSum<3>;

namespace {
using Policy = nn::Sequential<nn::Linear<32>, nn::ReLU, nn::Linear<10>>;
using Grpo = ag::GRPO<Digits3, Policy>;

ag::GrpoConfig small_config(std::uint64_t seed = 1) {
  ag::GrpoConfig c;
  c.prompts_per_iteration = 4;
  c.group_size = 8;
  c.lr = 1e-3;
  c.inner_epochs = 2;
  c.seed = seed;
  return c;
}

std::vector<std::byte> state_bytes(const Grpo& agent) {
  io::SafetensorsWriter w;
  agent.save(w, "");
  return w.to_bytes();
}
}  // namespace

static_assert(ag::VerifiableSequenceTask<Digits3>);
static_assert(rl::Environment<Digits3>);

TEST_CASE("group-relative advantages on a hand case") {
  // group 1: rewards 1, 0, 0, 1 → mean 0.5, sample std sqrt(1/3); group 2: all equal → 0
  const std::vector<double> r{1, 0, 0, 1, 0.3, 0.3, 0.3, 0.3};
  std::vector<double> a(8);
  ag::group_advantages_into<double>(r, 4, 1e-4, a);
  const double s = std::sqrt(1.0 / 3.0);
  CHECK(a[0] == doctest::Approx(0.5 / (s + 1e-4)).epsilon(1e-14));
  CHECK(a[1] == doctest::Approx(-0.5 / (s + 1e-4)).epsilon(1e-14));
  CHECK(a[3] == a[0]);
  for (int i = 4; i < 8; ++i) CHECK(a[static_cast<std::size_t>(i)] == 0.0);
  // per-group means of the advantages are zero
  CHECK(std::abs(a[0] + a[1] + a[2] + a[3]) < 1e-12);
  // three rewards 0, 1, 2: mean 1, sample std 1
  std::vector<double> b(3);
  ag::group_advantages_into<double>(std::vector<double>{0, 1, 2}, 3, 1e-4, b);
  CHECK(b[0] == doctest::Approx(-1 / 1.0001));
  CHECK(b[2] == doctest::Approx(1 / 1.0001));
  CHECK_THROWS_AS(ag::group_advantages_into<double>(r, 3, 1e-4, a), Error);  // 8 not a multiple of 3
  CHECK_THROWS_AS(ag::group_advantages_into<double>(std::vector<double>{1, NAN}, 2, 1e-4, b), Error);
}

TEST_CASE("clipped surrogate on hand cases: which term is active and its gradient") {
  const double eps = 0.2;
  // ρ = 1.5, Â = +1: min(1.5, 1.2) = 1.2 (clipped, no gradient)
  auto s = ag::clipped_surrogate(std::log(1.5), 0.0, 1.0, eps);
  CHECK(s.value == doctest::Approx(1.2));
  CHECK(s.grad_logp == 0.0);
  CHECK(s.clipped);
  // ρ = 0.5, Â = +1: min(0.5, 0.8) = 0.5 (unclipped, gradient ρÂ)
  s = ag::clipped_surrogate(std::log(0.5), 0.0, 1.0, eps);
  CHECK(s.value == doctest::Approx(0.5));
  CHECK(s.grad_logp == doctest::Approx(0.5));
  CHECK(!s.clipped);
  // ρ = 1.5, Â = −1: min(−1.5, −1.2) = −1.5 (unclipped: a worse action is never let off)
  s = ag::clipped_surrogate(std::log(1.5), 0.0, -1.0, eps);
  CHECK(s.value == doctest::Approx(-1.5));
  CHECK(s.grad_logp == doctest::Approx(-1.5));
  // ρ = 0.5, Â = −1: min(−0.5, −0.8) = −0.8 (clipped)
  s = ag::clipped_surrogate(std::log(0.5), 0.0, -1.0, eps);
  CHECK(s.value == doctest::Approx(-0.8));
  CHECK(s.grad_logp == 0.0);
  CHECK(s.clipped);
  // inside the trust region both terms agree: gradient ρÂ, derivative of ρÂ by finite differences
  const double lp = std::log(1.1), lo = 0.0, h = 1e-6;
  s = ag::clipped_surrogate(lp, lo, 2.0, eps);
  const double fd =
      (ag::clipped_surrogate(lp + h, lo, 2.0, eps).value - ag::clipped_surrogate(lp - h, lo, 2.0, eps).value) / (2 * h);
  CHECK(s.grad_logp == doctest::Approx(fd).epsilon(1e-8));
}

TEST_CASE("k3 KL estimator: hand values, derivative, and unbiasedness by Monte Carlo") {
  // ℓ = ℓ_ref: 0
  CHECK(ag::kl_k3(-1.3, -1.3).value == 0.0);
  CHECK(ag::kl_k3(-1.3, -1.3).grad_logp == 0.0);
  // π_ref/π = 2: 2 − log 2 − 1
  const auto k = ag::kl_k3(std::log(0.2), std::log(0.4));
  CHECK(k.value == doctest::Approx(1.0 - std::log(2.0)).epsilon(1e-14));
  CHECK(k.grad_logp == doctest::Approx(-1.0).epsilon(1e-14));
  const double h = 1e-6, l = -0.7, lr = -1.9;
  CHECK(ag::kl_k3(l, lr).grad_logp ==
        doctest::Approx((ag::kl_k3(l + h, lr).value - ag::kl_k3(l - h, lr).value) / (2 * h)).epsilon(1e-8));
  CHECK(ag::kl_k3(0.3, -2.0).value > 0);  // never negative

  // E_{x~π}[k3] = KL(π ‖ π_ref) for categorical distributions
  const std::vector<double> pi{0.5, 0.3, 0.15, 0.05}, ref{0.25, 0.25, 0.25, 0.25};
  double kl = 0;
  for (std::size_t i = 0; i < pi.size(); ++i) kl += pi[i] * std::log(pi[i] / ref[i]);
  PhiloxStream rng(77, 0);
  double mc = 0;
  const int n = 400'000;
  for (int s = 0; s < n; ++s) {
    const int x = rng.categorical(pi.data(), 4);
    mc += ag::kl_k3(std::log(pi[static_cast<std::size_t>(x)]), std::log(ref[static_cast<std::size_t>(x)])).value;
  }
  mc /= n;
  CHECK(mc == doctest::Approx(kl).epsilon(0.01));
}

TEST_CASE("GRPO token loss: gradient through the log-softmax matches finite differences of the logits") {
  // L(z) = Σ_rows grpo_token_loss(log softmax(z)[token], ...) with the agent's analytic gradient
  // g (1[v = token] − softmax_v) per logit.
  const int rows = 5, V = 4;
  std::vector<double> z(rows * V);
  PhiloxStream rng(5, 0);
  for (auto& v : z) v = rng.normal_double();
  const int token[rows] = {0, 3, 1, 1, 2};
  const double logp_old[rows] = {-1.2, -0.4, -2.0, -1.1, -1.5};
  const double logp_ref[rows] = {-1.5, -1.0, -1.0, -1.4, -1.3};
  const double adv[rows] = {1.0, -0.5, 2.0, -1.5, 0.3};
  auto logp_of = [&](const std::vector<double>& zz, int r, int v) {
    double m = zz[static_cast<std::size_t>(r * V)];
    for (int u = 1; u < V; ++u) m = std::max(m, zz[static_cast<std::size_t>(r * V + u)]);
    double s = 0;
    for (int u = 0; u < V; ++u) s += std::exp(zz[static_cast<std::size_t>(r * V + u)] - m);
    return zz[static_cast<std::size_t>(r * V + v)] - m - std::log(s);
  };
  auto loss = [&](const std::vector<double>& zz) {
    double l = 0;
    for (int r = 0; r < rows; ++r)
      l += ag::grpo_token_loss(logp_of(zz, r, token[r]), logp_old[r], logp_ref[r], adv[r], 0.2, 0.04, rows).loss;
    return l;
  };
  const double h = 1e-6;
  int clipped = 0;
  for (int r = 0; r < rows; ++r) {
    const auto t = ag::grpo_token_loss(logp_of(z, r, token[r]), logp_old[r], logp_ref[r], adv[r], 0.2, 0.04, rows);
    clipped += t.clipped ? 1 : 0;
    for (int v = 0; v < V; ++v) {
      const double p = std::exp(logp_of(z, r, v));
      const double analytic = t.grad_logp * ((v == token[r] ? 1.0 : 0.0) - p);
      auto zp = z, zm = z;
      zp[static_cast<std::size_t>(r * V + v)] += h;
      zm[static_cast<std::size_t>(r * V + v)] -= h;
      const double numeric = (loss(zp) - loss(zm)) / (2 * h);
      INFO("row ", r, " logit ", v);
      CHECK(std::abs(analytic - numeric) <= 1e-7 * std::max(1.0, std::abs(analytic)));
    }
  }
  CHECK(clipped >= 1);  // the case exercises both branches
  CHECK(clipped < rows);
}

TEST_CASE("DigitSum: features, exact and shaped rewards, Environment interface, bad inputs") {
  static_assert(Digits3::feature_size == 28 + 3 + 30);
  std::vector<float> f(Digits3::feature_size);
  const std::vector<int> prefix{7, 2};
  Digits3::features_into<float>(12, prefix, f);
  CHECK(std::accumulate(f.begin(), f.end(), 0.0f) == 4.0f);
  CHECK(f[12] == 1.0f);              // target
  CHECK(f[28 + 2] == 1.0f);          // position 2
  CHECK(f[31 + 0 * 10 + 7] == 1.0f);  // first digit 7
  CHECK(f[31 + 1 * 10 + 2] == 1.0f);  // second digit 2
  const Digits3 shaped;
  Digits3 exact(env::toy::DigitSumConfig{env::toy::DigitSumReward::exact});
  const std::vector<int> hit{7, 2, 3}, miss{7, 2, 9};
  CHECK(shaped.reward(12, hit) == 1.0);
  CHECK(exact.reward(12, hit) == 1.0);
  CHECK(exact.reward(12, miss) == 0.0);
  CHECK(shaped.reward(12, miss) == doctest::Approx(0.5 * (1.0 - 6.0 / 27.0)));
  CHECK(Digits3::correct(12, hit));
  CHECK(!Digits3::correct(12, miss));

  PhiloxStream rng(3, 0);
  Digits3 envir = exact;
  auto obs = envir.reset(rng);
  const int target = envir.target();
  CHECK(obs[static_cast<std::size_t>(target)] == 1.0f);
  // answer: as many 9s as fit, then the rest
  int left = target;
  for (int t = 0; t < 3; ++t) {
    const int d = std::min(9, left);
    left -= d;
    const auto r = envir.step(d);
    CHECK(r.terminated == (t == 2));
    CHECK(r.reward == (t == 2 ? 1.0 : 0.0));
  }
  CHECK_THROWS_AS(envir.step(1), Error);  // episode over
  CHECK_THROWS_AS(Digits3::features_into<float>(28, prefix, f), Error);  // target > 27
  CHECK_THROWS_AS(Digits3::features_into<float>(5, std::vector<int>{1, 10}, f), Error);  // digit 10
  CHECK_THROWS_AS(Digits3::features_into<float>(5, std::vector<int>{1, 2, 3}, f), Error);  // nothing left
  CHECK_THROWS_AS((void)shaped.reward(5, std::vector<int>{1, 2}), Error);  // too short
  CHECK_THROWS_AS((void)shaped.reward(5, std::vector<int>{1, -2, 3}), Error);
  envir.reset(rng);
  CHECK_THROWS_AS(envir.step(11), Error);
}

TEST_CASE("GRPO: an iteration's batch, bookkeeping and a finite loss; clipping active with several epochs") {
  Grpo agent(small_config());
  const auto s = agent.iterate();
  CHECK(s.iteration == 1);
  CHECK(agent.iteration() == 1);
  CHECK(agent.tokens().shape() == (Shape<2>{32, 3}));
  // every group shares one prompt and its advantages have zero mean
  const auto adv = agent.advantages();
  for (int g = 0; g < 4; ++g) {
    double m = 0;
    for (int i = 0; i < 8; ++i) m += adv[static_cast<std::size_t>(g * 8 + i)];
    CHECK(std::abs(m) < 1e-9);
  }
  CHECK(std::isfinite(s.loss));
  CHECK(s.kl == doctest::Approx(0.0).epsilon(1e-12));  // the first epoch starts at π_ref
  CHECK(s.entropy > 2.0);                              // near-uniform start (log 10 = 2.30)
  CHECK(s.entropy < 2.31);
  ag::GrpoConfig c = small_config();
  c.inner_epochs = 6;
  c.lr = 3e-2;
  Grpo eager(c);
  double clip = 0;
  for (int i = 0; i < 3; ++i) clip = std::max(clip, eager.iterate().clip_fraction);
  CHECK(clip > 0.0);  // later epochs leave the trust region
}

TEST_CASE("GRPO: same seed bit-identical, resume from a checkpoint is exact, load checks first") {
  Grpo a(small_config()), b(small_config()), other(small_config(2));
  for (int i = 0; i < 3; ++i) {
    a.iterate();
    b.iterate();
    other.iterate();
  }
  CHECK(state_bytes(a) == state_bytes(b));
  CHECK(state_bytes(a) != state_bytes(other));

  io::SafetensorsWriter w;
  a.save(w, "g.");
  const auto bytes = w.to_bytes();
  Grpo resumed(small_config());
  resumed.load(io::SafetensorsReader::from_bytes(bytes), "g.");
  CHECK(resumed.iteration() == 3);
  for (int i = 0; i < 2; ++i) {
    a.iterate();
    resumed.iterate();
  }
  CHECK(state_bytes(a) == state_bytes(resumed));
  std::vector<int> prompts(Digits3::num_prompts);
  std::iota(prompts.begin(), prompts.end(), 0);
  CHECK(a.greedy_accuracy(prompts) == resumed.greedy_accuracy(prompts));

  using Wide = ag::GRPO<Digits3, nn::Sequential<nn::Linear<48>, nn::ReLU, nn::Linear<10>>>;
  Wide wide(small_config());
  io::SafetensorsWriter ww;
  wide.save(ww, "g.");
  const auto before = state_bytes(resumed);
  CHECK_THROWS_AS(resumed.load(io::SafetensorsReader::from_bytes(ww.to_bytes()), "g."), Error);
  CHECK(state_bytes(resumed) == before);
}

TEST_CASE("GRPO: the reference policy is frozen unless synced; bad configs are errors") {
  Grpo agent(small_config());
  auto first_weight = [](auto& net) { return net.template layer<0>().weight.value(0, 0); };
  const float ref0 = first_weight(agent.reference());
  for (int i = 0; i < 3; ++i) agent.iterate();
  CHECK(first_weight(agent.reference()) == ref0);
  CHECK(first_weight(agent.policy()) != ref0);
  ag::GrpoConfig c = small_config();
  c.reference_sync_every = 2;
  Grpo synced(c);
  synced.iterate();
  synced.iterate();
  CHECK(first_weight(synced.reference()) == first_weight(synced.policy()));

  c = small_config();
  c.group_size = 1;
  CHECK_THROWS_AS(Grpo{c}, Error);
  c = small_config();
  c.clip_epsilon = 0;
  CHECK_THROWS_AS(Grpo{c}, Error);
  c = small_config();
  c.kl_beta = -1;
  CHECK_THROWS_AS(Grpo{c}, Error);
  std::vector<int> answers(5);
  CHECK_THROWS_AS(agent.generate(std::vector<int>{3, 4}, answers), Error);  // needs 6 slots
  CHECK_THROWS_AS(agent.generate(std::vector<int>{40}, std::span<int>(answers.data(), 3)), Error);  // 40 > 27
}
