// Replay buffers: sum-tree sampling frequencies (chi-square), prioritized replay's importance
// weights and β annealing against hand-computed values, ring-buffer wraparound, n-step returns at
// episode boundaries, HER relabelling on a constructed episode, keyed replay re-rendering,
// bit-exact save/load with exact resume, and rlmed::Error on bad inputs.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <set>
#include <string>
#include <vector>

#include "rlmed/rl/replay/her.hpp"
#include "rlmed/rl/replay/keyed.hpp"
#include "rlmed/rl/replay/nstep.hpp"
#include "rlmed/rl/replay/prioritized.hpp"
#include "rlmed/rl/replay/sum_tree.hpp"
#include "rlmed/rl/replay/uniform.hpp"

using namespace rlmed;
namespace rp = rlmed::rl::replay;

// Every heap allocation of the program is counted, so the test below can show that steady-state
// replay operations allocate nothing.
namespace {
std::atomic<long> g_allocations{0};
}
void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, std::align_val_t alignment) {  // Tensor storage
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  const auto a = static_cast<std::size_t>(alignment);
  if (void* p = std::aligned_alloc(a, n == 0 ? a : (n + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}
// Out of line, so the compiler does not pair a visible free() with operator new and warn.
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Chi-square critical values at significance 0.001 (upper tail), from standard tables.
double chi2_critical_001(int dof) {
  switch (dof) {
    case 3: return 16.266;
    case 5: return 20.515;
    case 9: return 27.877;
    default: FAIL(format("no table entry for ", dof, " degrees of freedom")); return 0;
  }
}

double chi_square(const std::vector<double>& observed, const std::vector<double>& expected) {
  double chi2 = 0;
  for (std::size_t i = 0; i < observed.size(); ++i)
    chi2 += (observed[i] - expected[i]) * (observed[i] - expected[i]) / expected[i];
  return chi2;
}

using Obs2 = Tensor<float, 1>;
Obs2 obs_of(float a, float b) {
  Obs2 o(Shape<1>{2});
  o(0) = a;
  o(1) = b;
  return o;
}

template <class Buffer>
std::vector<std::byte> saved_bytes(const Buffer& buffer, const std::string& prefix = "replay.") {
  io::SafetensorsWriter w;
  buffer.save(w, prefix);
  return w.to_bytes();
}

}  // namespace

TEST_CASE("sum tree: prefix search boundaries, zero-priority leaves, rebuilt trees are identical") {
  rp::SumTree tree(10);  // 16 leaves, 6 unused
  for (index_t i = 0; i < 10; ++i) tree.set(i, double(i + 1));
  tree.set(4, 0.0);  // an empty slot
  CHECK(tree.total() == 50.0);
  CHECK(tree.find_prefix(0.0) == 0);
  CHECK(tree.find_prefix(0.999) == 0);
  CHECK(tree.find_prefix(1.0) == 1);  // cumulative: [0,1) [1,3) [3,6) [6,10) (4 empty) [10,16) ...
  CHECK(tree.find_prefix(9.999) == 3);
  CHECK(tree.find_prefix(10.0) == 5);  // skips the zero leaf 4
  CHECK(tree.find_prefix(49.999) == 9);
  CHECK(tree.find_prefix(50.0) == 9);   // the total itself: the last positive leaf
  CHECK(tree.find_prefix(1e9) == 9);    // beyond the total: never an unused leaf
  CHECK_THROWS_AS(tree.set(10, 1.0), Error);
  CHECK_THROWS_AS(tree.set(0, -1.0), Error);
  CHECK_THROWS_AS(tree.set(0, NAN), Error);
  CHECK_THROWS_AS((void)tree.find_prefix(-1.0), Error);
  rp::SumTree empty(3);
  CHECK_THROWS_AS((void)empty.find_prefix(0.0), Error);

  io::SafetensorsWriter w;
  tree.save(w, "t");
  const auto r = io::SafetensorsReader::from_bytes(w.to_bytes());
  rp::SumTree copy(10);
  copy.load(r, "t");
  for (index_t i = 0; i < 10; ++i) CHECK(copy.get(i) == tree.get(i));
  CHECK(copy.total() == tree.total());
  rp::SumTree wrong(11);
  CHECK_THROWS_AS(wrong.load(r, "t"), Error);

  rp::MinTree mins(5);
  CHECK(std::isinf(mins.min()));
  mins.set(3, 2.0);
  mins.set(1, 0.5);
  CHECK(mins.min() == 0.5);
}

TEST_CASE("sum tree sampling frequencies match priorities (chi-square, significance 0.001)") {
  // 10 leaves with priorities 1..10; 200,000 draws at a fixed seed. Under H0 (frequencies
  // proportional to priorities) the statistic is chi-square with 9 degrees of freedom; the test
  // fails when it exceeds the 0.999 quantile 27.877.
  rp::SumTree tree(10);
  for (index_t i = 0; i < 10; ++i) tree.set(i, double(i + 1));
  PhiloxStream rng(2024, 7);
  const int draws = 200'000;
  std::vector<double> observed(10, 0.0), expected(10);
  for (int k = 0; k < draws; ++k) observed[std::size_t(tree.find_prefix(rng.uniform_double() * tree.total()))] += 1;
  for (int i = 0; i < 10; ++i) expected[std::size_t(i)] = draws * (i + 1) / 55.0;
  const double chi2 = chi_square(observed, expected);
  CHECK(chi2 < chi2_critical_001(9));
  // The same counts against a wrong hypothesis (uniform) are rejected: the test has power.
  CHECK(chi_square(observed, std::vector<double>(10, draws / 10.0)) > 1000.0);
}

TEST_CASE("prioritized replay: stratified sampling follows p^alpha (chi-square, significance 0.001)") {
  rp::Prioritized<float, 1, int> per({/*capacity=*/6, {2}, 1, /*alpha=*/0.5, 0.4, 1000, /*epsilon=*/1e-6});
  const int action = 0;
  for (int i = 0; i < 6; ++i) per.add(obs_of(float(i), 0).view(), {&action, 1}, 0.f, obs_of(0, 0).view(), false);
  const std::vector<std::int64_t> slots{0, 1, 2, 3, 4, 5};
  const std::vector<float> td{1.f, 4.f, 9.f, 16.f, 25.f, 0.f};  // p = |td| + eps, p^0.5 ~ 1,2,3,4,5,0.001
  per.update_priorities(slots, td);
  auto batch = per.make_batch(32);
  PhiloxStream rng(5, 5);
  std::vector<double> observed(6, 0.0);
  const int rounds = 4000;
  for (int k = 0; k < rounds; ++k) {
    per.sample_into(rng, batch);
    for (index_t b = 0; b < batch.size(); ++b) observed[std::size_t(batch.index(b))] += 1;
  }
  double total = 0;
  std::vector<double> pa(6);
  for (int i = 0; i < 6; ++i) total += pa[std::size_t(i)] = std::pow(std::abs(double(td[std::size_t(i)])) + 1e-6, 0.5);
  std::vector<double> expected(6);
  for (int i = 0; i < 6; ++i) expected[std::size_t(i)] = rounds * 32.0 * pa[std::size_t(i)] / total;
  // Slot 5 is expected ~0.4 times; merge it into slot 4 so every cell has a large expectation.
  std::vector<double> obs5(observed.begin(), observed.begin() + 5), exp5(expected.begin(), expected.begin() + 5);
  obs5[4] += observed[5];
  exp5[4] += expected[5];
  // Stratification only lowers the variance, so the chi-square bound (4 dof) stays valid.
  CHECK(chi_square(obs5, exp5) < 18.467);  // chi-square 0.999 quantile, 4 degrees of freedom
  CHECK(observed[5] < 10);
}

TEST_CASE("prioritized replay: importance weights equal the hand-computed case; beta anneals; max priority") {
  rp::Prioritized<float, 1, int> per({4, {2}, 1, /*alpha=*/0.5, /*beta0=*/0.4, /*beta_steps=*/10, /*epsilon=*/1.0});
  const int action = 1;
  for (int i = 0; i < 4; ++i) per.add(obs_of(float(i), 0).view(), {&action, 1}, 1.f, obs_of(0, 0).view(), false);
  CHECK(per.priority_alpha(2) == 1.0);  // new transitions: max priority 1, 1^alpha = 1
  // |td| + eps = 2, 4, 1, 8  ->  p^alpha = sqrt2, 2, 1, 2 sqrt2; min is slot 2.
  per.update_priorities(std::vector<std::int64_t>{0, 1, 2, 3}, std::vector<float>{1.f, -3.f, 0.f, 7.f});
  CHECK(per.max_priority() == 8.0);
  // w_i = (N P_i)^-beta / (N P_min)^-beta = (p_i^alpha / p_min^alpha)^-beta = (p_i^alpha)^-0.4
  const double hand[4] = {std::pow(2.0, -0.2), std::pow(2.0, -0.4), 1.0, std::pow(2.0, -0.6)};
  CHECK(per.probability(3) == doctest::Approx(2 * std::sqrt(2.0) / (3 + 3 * std::sqrt(2.0))));
  CHECK(per.beta() == doctest::Approx(0.4));
  auto batch = per.make_batch(64);
  PhiloxStream rng(1, 1);
  per.sample_into(rng, batch);
  std::set<std::int64_t> seen;
  for (index_t b = 0; b < batch.size(); ++b) {
    seen.insert(batch.index(b));
    CHECK(batch.weight(b) == doctest::Approx(hand[batch.index(b)]).epsilon(1e-6));
    CHECK(batch.reward(b) == 1.f);
    CHECK(batch.obs(b, 0) == float(batch.index(b)));
  }
  CHECK(seen.size() == 4);
  // beta = 0.4 + 0.6 * min(1, step / 10): one step per sample_into.
  CHECK(per.beta_step() == 1);
  CHECK(per.beta() == doctest::Approx(0.46));
  per.set_beta_step(5);
  CHECK(per.beta() == doctest::Approx(0.7));
  per.set_beta_step(25);
  CHECK(per.beta() == doctest::Approx(1.0));
  per.sample_into(rng, batch);
  for (index_t b = 0; b < batch.size(); ++b)  // beta = 1: w = p_min^alpha / p_i^alpha
    CHECK(batch.weight(b) == doctest::Approx(1.0 / per.priority_alpha(batch.index(b))).epsilon(1e-6));
  // A new transition overwrites slot 0 with the largest priority seen: 8^alpha.
  per.add(obs_of(9, 9).view(), {&action, 1}, 0.f, obs_of(0, 0).view(), false);
  CHECK(per.priority_alpha(0) == doctest::Approx(std::sqrt(8.0)));
}

TEST_CASE("uniform replay: ring wraparound keeps the newest capacity transitions") {
  rp::Uniform<float, 1, float> buf({5, {2}, 1});
  {
    PhiloxStream rng(1, 1);
    auto empty_batch = buf.make_batch(2);
    CHECK_THROWS_AS(buf.sample_into(rng, empty_batch), Error);
  }
  for (int i = 0; i < 12; ++i) {
    const float a = 0.5f * float(i);
    const index_t slot = buf.add(obs_of(float(i), float(i) + 0.5f).view(), {&a, 1}, float(i),
                                 obs_of(float(i + 1), 0).view(), i % 4 == 3);
    CHECK(slot == i % 5);
  }
  CHECK(buf.size() == 5);
  CHECK(buf.capacity() == 5);
  CHECK(buf.cursor() == 2);
  CHECK(buf.total_added() == 12);
  // Slot j holds the newest i with i % 5 == j: 10, 11, 7, 8, 9.
  const int expect[5] = {10, 11, 7, 8, 9};
  for (index_t s = 0; s < 5; ++s) {
    CHECK(buf.storage().obs(s)(0) == float(expect[s]));
    CHECK(buf.storage().next_obs(s)(0) == float(expect[s] + 1));
    CHECK(buf.storage().columns().reward(s) == float(expect[s]));
    CHECK(buf.storage().columns().terminated(s) == (expect[s] % 4 == 3));
  }
  auto batch = buf.make_batch(16);
  PhiloxStream rng(3, 3);
  std::set<int> rewards;
  for (int k = 0; k < 20; ++k) {
    buf.sample_into(rng, batch);
    for (index_t b = 0; b < batch.size(); ++b) {
      const int i = int(batch.reward(b));
      rewards.insert(i);
      CHECK(batch.index(b) == i % 5);
      CHECK(batch.obs(b, 1) == float(i) + 0.5f);
      CHECK(batch.action(b, 0) == 0.5f * float(i));
      CHECK(batch.done(b) == (i % 4 == 3 ? 1.f : 0.f));
      CHECK(batch.steps(b) == 1);
      CHECK(batch.weight(b) == 1.f);
    }
  }
  CHECK(rewards == std::set<int>{7, 8, 9, 10, 11});
  // Sampling is a pure function of the stream position, and allocates nothing: same pointers.
  const float* obs_ptr = batch.obs.data();
  PhiloxStream r1(9, 0), r2(9, 0);
  auto other = buf.make_batch(16);
  buf.sample_into(r1, batch);
  buf.sample_into(r2, other);
  CHECK(bitwise_equal(batch.obs, other.obs));
  CHECK(bitwise_equal(batch.index, other.index));
  CHECK(batch.obs.data() == obs_ptr);
}

namespace {
// n-step fixture: lane L, step t has obs [t, L], reward r(t), next obs [t+1, L].
struct NStepRun {
  rp::NStep<rp::Uniform<float, 1, int>> ns{{/*n=*/3, /*gamma=*/0.5, /*lanes=*/2},
                                           rp::Uniform<float, 1, int>({64, {2}, 1})};
  void step(index_t lane, int t, double reward, bool term, bool trunc) {
    const int a = t;
    ns.add(lane, obs_of(float(t), float(lane)).view(), {&a, 1}, reward, obs_of(float(t + 1), float(lane)).view(), term,
           trunc);
  }
};
struct Expected {
  float obs0, lane;
  float reward;
  float next0;
  bool done;
  int steps;
};
void check_transitions(const rp::Uniform<float, 1, int>& buf, index_t first, const std::vector<Expected>& expected) {
  for (std::size_t k = 0; k < expected.size(); ++k) {
    const index_t s = first + index_t(k);
    const auto& e = expected[k];
    INFO("transition ", k);
    CHECK(buf.storage().obs(s)(0) == e.obs0);
    CHECK(buf.storage().obs(s)(1) == e.lane);
    CHECK(buf.storage().columns().action(s)[0] == int(e.obs0));
    CHECK(buf.storage().columns().reward(s) == doctest::Approx(e.reward).epsilon(1e-7));
    CHECK(buf.storage().next_obs(s)(0) == e.next0);
    CHECK(buf.storage().next_obs(s)(1) == e.lane);
    CHECK(buf.storage().columns().terminated(s) == e.done);
    CHECK(buf.storage().columns().steps(s) == e.steps);
  }
}
}  // namespace

TEST_CASE("n-step returns at episode boundaries: termination cuts and sets done, truncation cuts and bootstraps") {
  SUBCASE("termination") {
    NStepRun run;
    const double r[5] = {1, 2, 3, 4, 5};
    for (int t = 0; t < 5; ++t) run.step(0, t, r[t], t == 4, false);
    CHECK(run.ns.size() == 5);
    CHECK(run.ns.pending(0) == 0);
    // gamma = 0.5, n = 3. Complete windows bootstrap from obs_{t+3}; the flush at the terminal
    // step sums to the end and bootstraps from nothing (done = 1; next_obs = terminal obs 5).
    check_transitions(run.ns.buffer(), 0,
                      {{0, 0, 1 + 0.5f * 2 + 0.25f * 3, 3, false, 3},
                       {1, 0, 2 + 0.5f * 3 + 0.25f * 4, 4, false, 3},
                       {2, 0, 3 + 0.5f * 4 + 0.25f * 5, 5, true, 3},
                       {3, 0, 4 + 0.5f * 5, 5, true, 2},
                       {4, 0, 5, 5, true, 1}});
  }
  SUBCASE("truncation") {
    NStepRun run;
    const double r[5] = {1, 2, 3, 4, 5};
    for (int t = 0; t < 5; ++t) run.step(0, t, r[t], false, t == 4);
    check_transitions(run.ns.buffer(), 0,
                      {{0, 0, 2.75f, 3, false, 3},
                       {1, 0, 4.5f, 4, false, 3},
                       {2, 0, 6.25f, 5, false, 3},   // truncation: bootstrap from obs 5 with gamma^3
                       {3, 0, 6.5f, 5, false, 2},    // ... with gamma^2
                       {4, 0, 5.0f, 5, false, 1}});  // ... with gamma^1
  }
  SUBCASE("episodes shorter than n and interleaved lanes never mix") {
    NStepRun run;
    run.step(0, 0, 1.0, false, false);
    run.step(1, 10, 100.0, false, false);
    run.step(0, 1, 2.0, false, true);  // lane 0 truncated after 2 steps
    run.step(1, 11, 200.0, true, false);  // lane 1 terminated after 2 steps
    CHECK(run.ns.pending(0) == 0);
    CHECK(run.ns.pending(1) == 0);
    check_transitions(run.ns.buffer(), 0,
                      {{0, 0, 1 + 0.5f * 2, 2, false, 2},
                       {1, 0, 2, 2, false, 1},
                       {10, 1, 100 + 0.5f * 200, 12, true, 2},
                       {11, 1, 200, 12, true, 1}});
    // The next episode of lane 0 starts clean.
    run.step(0, 0, 7.0, false, false);
    CHECK(run.ns.pending(0) == 1);
    CHECK(run.ns.size() == 4);
  }
  SUBCASE("bad inputs") {
    NStepRun run;
    const int a = 0;
    CHECK_THROWS_AS(run.step(2, 0, 1.0, false, false), Error);  // no lane 2
    CHECK_THROWS_AS(run.step(0, 0, NAN, false, false), Error);
    CHECK_THROWS_AS(run.ns.add(0, obs_of(NAN, 0).view(), {&a, 1}, 1.0, obs_of(0, 0).view(), false, false), Error);
    Obs2 three(Shape<1>{3});
    CHECK_THROWS_AS(run.ns.add(0, three.view(), {&a, 1}, 1.0, obs_of(0, 0).view(), false, false), Error);
    CHECK(run.ns.pending(0) == 0);  // rejected steps leave nothing behind
    using NS = rp::NStep<rp::Uniform<float, 1, int>>;
    CHECK_THROWS_AS(NS({0, 0.9, 1}, rp::Uniform<float, 1, int>({8, {2}, 1})), Error);
    CHECK_THROWS_AS(NS({3, 1.5, 1}, rp::Uniform<float, 1, int>({8, {2}, 1})), Error);
  }
}

TEST_CASE("HER 'future' relabelling on a constructed episode") {
  // obs = [t], next_obs = [t + 1], achieved goal of next_obs = [10 (t + 1)], desired goal 99.
  // Goal function: reward 0 and termination when achieved == goal, else -1.
  auto goal_fn = [](std::span<const float> achieved, std::span<const float> goal) {
    return rp::GoalOutcome{achieved[0] == goal[0] ? 0.f : -1.f, achieved[0] == goal[0]};
  };
  using Her = rp::Her<rp::Uniform<float, 1, float>, decltype(goal_fn)>;
  Her her({/*obs_dim=*/1, /*goal_dim=*/1, /*action_dim=*/1, /*max_episode_steps=*/4, /*k=*/2},
          rp::Uniform<float, 1, float>({1000, {2}, 1}), goal_fn);
  PhiloxStream rng(4, 4);
  std::map<std::pair<int, int>, int> future_counts;  // (t, f) -> count
  const int episodes = 300;
  for (int e = 0; e < episodes; ++e) {
    for (int t = 0; t < 4; ++t) {
      const float o = float(t), no = float(t + 1), desired = 99.f, achieved = 10.f * float(t + 1), a = 0.1f * float(t);
      her.add({&o, 1}, {&desired, 1}, {&a, 1}, -1.f, {&no, 1}, {&achieved, 1}, false);
    }
    CHECK(her.episode_length() == 4);
    const index_t first = her.buffer().total_added() % 1000;
    her.end_episode(rng);
    CHECK(her.episode_length() == 0);
    const auto& st = her.buffer().storage();
    for (int t = 0; t < 4; ++t) {
      const index_t orig = (first + t * 3) % 1000;
      // The original transition keeps its goal and reward.
      CHECK(st.obs(orig)(0) == float(t));
      CHECK(st.obs(orig)(1) == 99.f);
      CHECK(st.next_obs(orig)(0) == float(t + 1));
      CHECK(st.next_obs(orig)(1) == 99.f);
      CHECK(st.columns().reward(orig) == -1.f);
      for (int j = 1; j <= 2; ++j) {
        const index_t s = (first + t * 3 + j) % 1000;
        const float goal = st.obs(s)(1);
        const int f = int(std::lround(goal / 10.f)) - 1;  // goal = achieved goal after step f
        REQUIRE(goal == 10.f * float(f + 1));
        CHECK(f >= t);  // "future": a goal achieved at or after this step
        CHECK(f <= 3);
        CHECK(st.obs(s)(0) == float(t));
        CHECK(st.next_obs(s)(1) == goal);
        CHECK(st.columns().action(s)[0] == 0.1f * float(t));
        CHECK(st.columns().reward(s) == (f == t ? 0.f : -1.f));
        CHECK(st.columns().terminated(s) == (f == t));
        ++future_counts[{t, f}];
      }
    }
  }
  // f ~ U{t..3}: for t = 0 each of 4 goals ~ 150 of 600 relabels; t = 3 always f = 3.
  for (int f = 0; f < 4; ++f) CHECK(std::abs(future_counts[{0, f}] - 150) < 50);
  CHECK(future_counts[{3, 3}] == 2 * episodes);
  CHECK(future_counts[{2, 1}] == 0);

  // Bad inputs: wrong sizes, NaN, episodes longer than the limit, mismatched buffer.
  const float o = 0, g = 1, a = 0, nan = NAN;
  const std::vector<float> two{0, 0};
  CHECK_THROWS_AS(her.add(two, {&g, 1}, {&a, 1}, 0.f, {&o, 1}, {&g, 1}, false), Error);
  CHECK_THROWS_AS(her.add({&o, 1}, {&nan, 1}, {&a, 1}, 0.f, {&o, 1}, {&g, 1}, false), Error);
  for (int t = 0; t < 4; ++t) her.add({&o, 1}, {&g, 1}, {&a, 1}, 0.f, {&o, 1}, {&g, 1}, false);
  CHECK(error_of([&] { her.add({&o, 1}, {&g, 1}, {&a, 1}, 0.f, {&o, 1}, {&g, 1}, false); })
            .find("longer than max_episode_steps") != std::string::npos);
  her.discard_episode();
  CHECK_THROWS_AS(Her({1, 2, 1, 4, 2}, rp::Uniform<float, 1, float>({10, {2}, 1}), goal_fn), Error);
}

namespace {
// Key of an image-environment state: which volume, where, at what scale.
struct ViewKey {
  std::int32_t volume;
  float x, y, scale;
};
// Renders a 3x4 "patch" whose pixels are a fixed function of the key; counts calls.
struct PatchRenderer {
  int calls = 0;
  static float pixel(const ViewKey& k, index_t r, index_t c) {
    return float(k.volume) * 1000.f + k.scale * (k.x + float(c)) + 0.01f * (k.y + float(r));
  }
  void render_batch(std::span<const ViewKey> keys, TensorView<float, 3> out) {
    ++calls;
    REQUIRE(out.extent(0) == index_t(keys.size()));
    for (std::size_t i = 0; i < keys.size(); ++i)
      for (index_t r = 0; r < 3; ++r)
        for (index_t c = 0; c < 4; ++c) out(index_t(i), r, c) = pixel(keys[i], r, c);
  }
};
}  // namespace

TEST_CASE("keyed replay renders exactly the observation that was rendered when stored") {
  rp::Keyed<ViewKey, float, 2, int> buf({/*capacity=*/8, {3, 4}, 1});
  PatchRenderer renderer;
  std::vector<Tensor<float, 2>> seen_obs, seen_next;  // what the agent saw, rendered at store time
  PhiloxStream keys_rng(10, 0);
  for (int i = 0; i < 11; ++i) {
    const ViewKey k{i % 3, keys_rng.uniform(0, 50), keys_rng.uniform(0, 50), 1.f + keys_rng.uniform()};
    const ViewKey nk{k.volume, k.x + 1.f, k.y - 1.f, k.scale};
    Tensor<float, 3> picture(Shape<3>{1, 3, 4}), next_picture(Shape<3>{1, 3, 4});
    renderer.render_batch({&k, 1}, picture.view());
    renderer.render_batch({&nk, 1}, next_picture.view());
    seen_obs.push_back(Tensor<float, 2>::copy_of(picture.sub(0)));
    seen_next.push_back(Tensor<float, 2>::copy_of(next_picture.sub(0)));
    buf.add(k, {&i, 1}, float(i), nk, false);
  }
  CHECK(buf.size() == 8);
  auto batch = buf.make_batch(16);
  PhiloxStream rng(6, 6);
  const int calls_before = renderer.calls;
  buf.sample_into(rng, renderer, batch);
  CHECK(renderer.calls == calls_before + 2);  // one batched call for obs, one for next_obs
  for (index_t b = 0; b < batch.size(); ++b) {
    const int i = batch.action(b, 0);  // the transition's number
    CHECK(batch.index(b) == i % 8);
    CHECK(batch.reward(b) == float(i));
    CHECK(bitwise_equal(batch.obs.sub(b), seen_obs[std::size_t(i)].view()));
    CHECK(bitwise_equal(batch.next_obs.sub(b), seen_next[std::size_t(i)].view()));
  }
  // A renderer producing NaN is caught.
  struct NanRenderer {
    void render_batch(std::span<const ViewKey>, TensorView<float, 3> out) { fill(out, NAN); }
  } nan_renderer;
  CHECK(error_of([&] { buf.sample_into(rng, nan_renderer, batch); }).find("rendered observation") != std::string::npos);
  // Save/load: keys byte for byte.
  const auto bytes = saved_bytes(buf);
  rp::Keyed<ViewKey, float, 2, int> loaded({8, {3, 4}, 1});
  loaded.load(io::SafetensorsReader::from_bytes(bytes), "replay.");
  CHECK(saved_bytes(loaded) == bytes);
  for (index_t s = 0; s < 8; ++s) CHECK(std::memcmp(&loaded.key(s), &buf.key(s), sizeof(ViewKey)) == 0);
  PhiloxStream r1(1, 2), r2(1, 2);
  auto b2 = loaded.make_batch(16);
  buf.sample_into(r1, renderer, batch);
  loaded.sample_into(r2, renderer, b2);
  CHECK(bitwise_equal(batch.obs, b2.obs));
  CHECK_THROWS_AS((void)buf.key(8), Error);
}

TEST_CASE("save/load round trips are bit-exact and resuming equals never stopping") {
  const int a0 = 0;
  SUBCASE("uniform, partly filled and wrapped") {
    for (int n : {3, 13}) {
      rp::Uniform<float, 1, int> buf({8, {2}, 1});
      for (int i = 0; i < n; ++i) {
        const int a = i % 3;
        buf.add(obs_of(float(i), -float(i)).view(), {&a, 1}, 0.25f * float(i), obs_of(float(i) + 1, 0).view(), i % 2);
      }
      const auto bytes = saved_bytes(buf);
      rp::Uniform<float, 1, int> copy({8, {2}, 1});
      copy.load(io::SafetensorsReader::from_bytes(bytes), "replay.");
      CHECK(saved_bytes(copy) == bytes);
      CHECK(copy.cursor() == buf.cursor());
      CHECK(copy.total_added() == buf.total_added());
      // Continue both identically: same slots written, same samples drawn.
      buf.add(obs_of(7, 7).view(), {&a0, 1}, 1.f, obs_of(8, 8).view(), false);
      copy.add(obs_of(7, 7).view(), {&a0, 1}, 1.f, obs_of(8, 8).view(), false);
      auto b1 = buf.make_batch(10), b2 = copy.make_batch(10);
      PhiloxStream r1(4, 0), r2(4, 0);
      buf.sample_into(r1, b1);
      copy.sample_into(r2, b2);
      CHECK(bitwise_equal(b1.obs, b2.obs));
      CHECK(bitwise_equal(b1.reward, b2.reward));
      CHECK(bitwise_equal(b1.action, b2.action));
    }
  }
  SUBCASE("prioritized: priorities, max priority and beta step") {
    rp::Prioritized<float, 1, int> per({8, {2}, 1, 0.6, 0.4, 100, 1e-6});
    for (int i = 0; i < 11; ++i) per.add(obs_of(float(i), 0).view(), {&a0, 1}, float(i), obs_of(0, 0).view(), false);
    auto batch = per.make_batch(5);
    PhiloxStream rng(2, 2);
    per.sample_into(rng, batch);
    std::vector<float> td(5);
    for (index_t b = 0; b < 5; ++b) td[std::size_t(b)] = 0.3f * float(b + 1);
    per.update_priorities(batch.index, Tensor<float, 1>::copy_of(TensorView<const float, 1>(td.data(), Shape<1>{5})));
    const auto bytes = saved_bytes(per);
    rp::Prioritized<float, 1, int> copy({8, {2}, 1, 0.6, 0.4, 100, 1e-6});
    copy.load(io::SafetensorsReader::from_bytes(bytes), "replay.");
    CHECK(saved_bytes(copy) == bytes);
    CHECK(copy.beta_step() == 1);
    CHECK(copy.max_priority() == per.max_priority());
    for (index_t s = 0; s < 8; ++s) CHECK(copy.priority_alpha(s) == per.priority_alpha(s));
    auto b1 = per.make_batch(7), b2 = copy.make_batch(7);
    PhiloxStream r1(8, 1), r2(8, 1);
    per.sample_into(r1, b1);
    copy.sample_into(r2, b2);
    CHECK(bitwise_equal(b1.index, b2.index));
    CHECK(bitwise_equal(b1.weight, b2.weight));
  }
  SUBCASE("n-step with pending entries, mid-episode") {
    NStepRun run, resumed;
    for (int t = 0; t < 4; ++t) run.step(0, t, double(t), false, false);
    run.step(1, 0, 5.0, false, false);
    io::SafetensorsWriter w;
    run.ns.save(w, "r.");
    resumed.ns.load(io::SafetensorsReader::from_bytes(w.to_bytes()), "r.");
    CHECK(resumed.ns.pending(0) == 2);
    CHECK(resumed.ns.pending(1) == 1);
    for (auto* x : {&run, &resumed}) {
      x->step(0, 4, 4.0, true, false);
      x->step(1, 1, 6.0, false, true);
    }
    io::SafetensorsWriter w1, w2;
    run.ns.save(w1, "r.");
    resumed.ns.save(w2, "r.");
    CHECK(w1.to_bytes() == w2.to_bytes());
    CHECK(resumed.ns.size() == 4 + 3);
  }
  SUBCASE("HER with an open episode") {
    auto fn = [](std::span<const float> x, std::span<const float> g) { return x[0] == g[0] ? 0.0 : -1.0; };
    using H = rp::Her<rp::Uniform<float, 1, float>, decltype(fn)>;
    H her({1, 1, 1, 5, 3}, rp::Uniform<float, 1, float>({50, {2}, 1}), fn);
    H resumed({1, 1, 1, 5, 3}, rp::Uniform<float, 1, float>({50, {2}, 1}), fn);
    PhiloxStream rng(3, 0);
    const float d = 9, a = 1;
    for (int t = 0; t < 3; ++t) {
      const float o = float(t), no = float(t + 1), ach = float(t + 1);
      her.add({&o, 1}, {&d, 1}, {&a, 1}, -1.f, {&no, 1}, {&ach, 1}, false);
    }
    her.end_episode(rng);
    const float o = 5, no = 6;
    her.add({&o, 1}, {&d, 1}, {&a, 1}, -1.f, {&no, 1}, {&no, 1}, false);
    io::SafetensorsWriter w;
    her.save(w, "h.");
    resumed.load(io::SafetensorsReader::from_bytes(w.to_bytes()), "h.");
    CHECK(resumed.episode_length() == 1);
    PhiloxStream r1(5, 5), r2(5, 5);
    her.end_episode(r1);
    resumed.end_episode(r2);
    io::SafetensorsWriter w1, w2;
    her.save(w1, "h.");
    resumed.save(w2, "h.");
    CHECK(w1.to_bytes() == w2.to_bytes());
    CHECK(her.size() == 3 * 4 + 4);
  }
  SUBCASE("mismatching files are rejected and leave the buffer unchanged") {
    rp::Uniform<float, 1, int> small({4, {2}, 1}), other_shape({8, {3}, 1}), target({8, {2}, 1});
    small.add(obs_of(1, 1).view(), {&a0, 1}, 1.f, obs_of(1, 1).view(), false);
    target.add(obs_of(2, 2).view(), {&a0, 1}, 2.f, obs_of(2, 2).view(), false);
    const auto before = saved_bytes(target);
    CHECK(error_of([&] { target.load(io::SafetensorsReader::from_bytes(saved_bytes(small)), "replay."); })
              .find("capacity 4") != std::string::npos);
    other_shape.add(Tensor<float, 1>(Shape<1>{3}).view(), {&a0, 1}, 1.f, Tensor<float, 1>(Shape<1>{3}).view(), false);
    CHECK_THROWS_AS(target.load(io::SafetensorsReader::from_bytes(saved_bytes(other_shape)), "replay."), Error);
    CHECK_THROWS_AS(target.load(io::SafetensorsReader::from_bytes(before), "other."), Error);
    CHECK(saved_bytes(target) == before);
    rp::Prioritized<float, 1, int> per({8, {2}, 1});
    CHECK_THROWS_AS(per.load(io::SafetensorsReader::from_bytes(before), "replay."), Error);  // no priorities saved
  }
}

TEST_CASE("replay buffers reject bad inputs with rlmed::Error") {
  rp::Uniform<float, 1, float> buf({4, {2}, 2});
  const std::vector<float> act{0.f, 1.f}, act1{0.f}, act_nan{0.f, NAN};
  CHECK(error_of([&] { buf.add(obs_of(0, 0).view(), act, NAN, obs_of(0, 0).view(), false); }).find("reward is nan") !=
        std::string::npos);
  CHECK(error_of([&] { buf.add(obs_of(0, 0).view(), act1, 0.f, obs_of(0, 0).view(), false); })
            .find("action has 1 components, expected 2") != std::string::npos);
  CHECK_THROWS_AS(buf.add(obs_of(0, 0).view(), act_nan, 0.f, obs_of(0, 0).view(), false), Error);
  CHECK_THROWS_AS(buf.add(obs_of(NAN, 0).view(), act, 0.f, obs_of(0, 0).view(), false), Error);
  CHECK_THROWS_AS(buf.add(Tensor<float, 1>(Shape<1>{3}).view(), act, 0.f, obs_of(0, 0).view(), false), Error);
  CHECK_THROWS_AS(buf.add(obs_of(0, 0).view(), act, 0.f, obs_of(0, 0).view(), false, 0), Error);  // steps 0
  CHECK(buf.size() == 0);  // nothing was written by the rejected calls
  PhiloxStream rng(1, 0);
  auto batch = buf.make_batch(4);
  CHECK(error_of([&] { buf.sample_into(rng, batch); }).find("empty buffer") != std::string::npos);
  buf.add(obs_of(0, 0).view(), act, 0.f, obs_of(0, 0).view(), false);
  rp::Uniform<float, 1, float> other({4, {3}, 2});
  auto wrong = other.make_batch(4);
  CHECK(error_of([&] { buf.sample_into(rng, wrong); }).find("use make_batch") != std::string::npos);
  CHECK_THROWS_AS(rp::Uniform<float>({0, {2}, 1}), Error);
  CHECK_THROWS_AS(rp::Uniform<float>({4, {0}, 1}), Error);

  rp::Prioritized<float, 1, float> per({4, {2}, 2});
  per.add(obs_of(0, 0).view(), act, 0.f, obs_of(0, 0).view(), false);
  CHECK(error_of([&] { per.update_priorities(std::vector<std::int64_t>{0}, std::vector<float>{NAN}); })
            .find("TD error 0 is nan") != std::string::npos);
  CHECK(error_of([&] { per.update_priorities(std::vector<std::int64_t>{2}, std::vector<float>{1.f}); })
            .find("outside the filled range [0, 1)") != std::string::npos);
  CHECK_THROWS_AS(per.update_priorities(std::vector<std::int64_t>{0, 0}, std::vector<float>{1.f}), Error);
  CHECK(per.priority_alpha(0) == 1.0);  // rejected updates change nothing
  using P = rp::Prioritized<float, 1, float>;
  CHECK_THROWS_AS(P({4, {2}, 1, -0.1}), Error);
  CHECK_THROWS_AS(P({4, {2}, 1, 0.6, 1.5}), Error);
  CHECK_THROWS_AS(P({4, {2}, 1, 0.6, 0.4, 0}), Error);
  CHECK_THROWS_AS(P({4, {2}, 1, 0.6, 0.4, 10, 0.0}), Error);
  CHECK_THROWS_AS(per.set_beta_step(-1), Error);
}

TEST_CASE("steady-state add, sample and priority updates allocate nothing") {
  rp::Prioritized<float, 1, int> per({64, {2}, 1});
  rp::Uniform<float, 1, int> uni({64, {2}, 1});
  rp::NStep<rp::Uniform<float, 1, int>> ns({3, 0.9, 2}, rp::Uniform<float, 1, int>({64, {2}, 1}));
  auto batch = per.make_batch(16);
  auto ubatch = uni.make_batch(16);
  const auto o = obs_of(1, 2), no = obs_of(3, 4);
  std::vector<float> td(16, 0.5f);
  const int a = 1;
  PhiloxStream rng(1, 1);
  for (int i = 0; i < 100; ++i) {  // warm up: fill the rings past wraparound
    per.add(o.view(), {&a, 1}, 1.f, no.view(), false);
    uni.add(o.view(), {&a, 1}, 1.f, no.view(), false);
    ns.add(i % 2, o.view(), {&a, 1}, 1.0, no.view(), i % 7 == 0, i % 11 == 0);
  }
  const long before = g_allocations.load();
  for (int i = 0; i < 50; ++i) {
    per.add(o.view(), {&a, 1}, 1.f, no.view(), false);
    per.sample_into(rng, batch);
    per.update_priorities(std::span<const std::int64_t>(batch.index.data(), 16), td);
    uni.add(o.view(), {&a, 1}, 1.f, no.view(), i % 3 == 0);
    uni.sample_into(rng, ubatch);
    ns.add(i % 2, o.view(), {&a, 1}, 1.0, no.view(), i % 5 == 0, false);
  }
  const long after = g_allocations.load();
  CHECK(after == before);
  // The counter sees tensor storage (aligned operator new) too.
  { Tensor<float, 1> probe(Shape<1>{8}); }
  CHECK(g_allocations.load() == after + 1);
}
