// Philox4x32-10 against the Random123 known-answer vectors (kat_vectors, Salmon et al. 2011),
// stream semantics, distributions and thread-count independence of the bulk fills.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <vector>

#include "rlmed/core/philox.hpp"
#include "rlmed/core/random.hpp"

using rlmed::PhiloxBlock;
using rlmed::PhiloxKey;
using rlmed::PhiloxStream;

TEST_CASE("Philox4x32-10 matches the Random123 known-answer vectors") {
  struct Kat {
    PhiloxBlock ctr;
    PhiloxKey key;
    PhiloxBlock expected;
  };
  const std::array<Kat, 3> kats{{
      {{{0, 0, 0, 0}}, {{0, 0}}, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}},
      {{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
       {{0xffffffffu, 0xffffffffu}},
       {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}},
      {{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
       {{0xa4093822u, 0x299f31d0u}},
       {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}},
  }};
  for (const auto& k : kats) {
    const PhiloxBlock got = rlmed::philox4x32<10>(k.ctr, k.key);
    CHECK(got == k.expected);
  }
  // The 7-round variant of the same pi-digits vector, from the same file.
  const PhiloxBlock seven = rlmed::philox4x32<7>(kats[2].ctr, kats[2].key);
  CHECK(seven == PhiloxBlock{{0x4dfccabau, 0x190a87f0u, 0xc47362bau, 0xb6b5242au}});
}

TEST_CASE("philox_block keys by (seed, stream, counter) in the documented word order") {
  const std::uint64_t seed = 0x299f31d0a4093822ull;
  const std::uint64_t stream = 0x0370734413198a2eull;
  const std::uint64_t counter = 0x85a308d3243f6a88ull;
  CHECK(rlmed::philox_block(seed, stream, counter) ==
        PhiloxBlock{{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}});
}

TEST_CASE("PhiloxStream hands out words in order; position/seek/fork reproduce it") {
  PhiloxStream a(42, 7);
  std::vector<std::uint32_t> words;
  for (int i = 0; i < 11; ++i) words.push_back(a.next_u32());
  CHECK(a.position() == 11);
  for (std::uint64_t i = 0; i < 11; ++i) CHECK(words[i] == rlmed::philox_u32_at(42, 7, i));
  PhiloxStream b(42, 7);
  b.seek(5);
  CHECK(b.next_u32() == words[5]);
  PhiloxStream copy = a;  // a checkpoint is a copy
  CHECK(copy.next_u32() == a.next_u32());
  CHECK(copy == a);
  PhiloxStream other = a.fork(8);
  CHECK(other.stream() == 8);
  CHECK(other.next_u32() == rlmed::philox_u32_at(42, 8, 0));
  CHECK(PhiloxStream(43, 7).next_u32() != words[0]);
}

TEST_CASE("uniform floats lie in [0,1) with the right moments") {
  PhiloxStream rng(1, 0);
  const int n = 200000;
  double sum = 0, sum2 = 0;
  for (int i = 0; i < n; ++i) {
    const float u = rng.uniform();
    REQUIRE(u >= 0.f);
    REQUIRE(u < 1.f);
    sum += u;
    sum2 += double(u) * u;
  }
  const double mean = sum / n, var = sum2 / n - mean * mean;
  CHECK(std::abs(mean - 0.5) < 5 * std::sqrt(1.0 / 12 / n));
  CHECK(std::abs(var - 1.0 / 12) < 0.002);
  CHECK(rlmed::u32_to_uniform_float(0xffffffffu) < 1.0f);
  CHECK(rlmed::u32_to_uniform_float_open0(0u) > 0.0f);
  CHECK(rlmed::u32_to_uniform_float_open0(0xffffffffu) == 1.0f);
  for (int i = 0; i < 1000; ++i) {
    const double d = rng.uniform_double();
    REQUIRE(d >= 0.0);
    REQUIRE(d < 1.0);
  }
}

TEST_CASE("normal variates have mean 0, variance 1, and Gaussian tails") {
  PhiloxStream rng(2, 0);
  const int n = 200000;
  double sum = 0, sum2 = 0;
  int beyond2 = 0;
  for (int i = 0; i < n; ++i) {
    const double z = rng.normal();
    REQUIRE(std::isfinite(z));
    sum += z;
    sum2 += z * z;
    beyond2 += std::abs(z) > 2.0;
  }
  CHECK(std::abs(sum / n) < 5 / std::sqrt(double(n)));
  CHECK(std::abs(sum2 / n - 1.0) < 0.02);
  const double p2 = double(beyond2) / n;  // P(|Z| > 2) = 0.0455
  CHECK(std::abs(p2 - 0.0455) < 0.003);
  CHECK(rng.position() == 2u * n);  // exactly two words per normal
  double s = 0, s2 = 0;
  for (int i = 0; i < 50000; ++i) {
    const double z = rng.normal_double();
    s += z;
    s2 += z * z;
  }
  CHECK(std::abs(s / 50000) < 0.03);
  CHECK(std::abs(s2 / 50000 - 1.0) < 0.03);
}

TEST_CASE("categorical and uniform_int frequencies pass a chi-square test") {
  PhiloxStream rng(3, 1);
  const std::array<double, 5> w{0.1, 0.0, 2.0, 0.9, 1.0};
  const double total = 4.0;
  std::array<int, 5> counts{};
  const int n = 100000;
  for (int i = 0; i < n; ++i) counts[rlmed::sample_categorical<double>(rng, w)]++;
  CHECK(counts[1] == 0);  // zero weight is never drawn
  double chi2 = 0;
  for (int k = 0; k < 5; ++k) {
    if (w[k] == 0) continue;
    const double e = n * w[k] / total;
    chi2 += (counts[k] - e) * (counts[k] - e) / e;
  }
  CHECK(chi2 < 16.27);  // chi-square, 3 dof, p = 0.001

  std::array<int, 7> ic{};
  for (int i = 0; i < 70000; ++i) {
    const auto k = rng.uniform_int(7);
    REQUIRE(k < 7u);
    ic[k]++;
  }
  double chi2i = 0;
  for (int c : ic) chi2i += (c - 10000.0) * (c - 10000.0) / 10000.0;
  CHECK(chi2i < 22.46);  // 6 dof, p = 0.001
}

TEST_CASE("categorical rejects bad weights with a clear error") {
  PhiloxStream rng(4, 0);
  const std::array<float, 2> neg{1.f, -0.5f};
  CHECK_THROWS_WITH_AS(rlmed::sample_categorical<float>(rng, neg), doctest::Contains("weight 1 must be finite"),
                       rlmed::Error);
  const std::array<float, 2> zero{0.f, 0.f};
  CHECK_THROWS_WITH_AS(rlmed::sample_categorical<float>(rng, zero), doctest::Contains("positive, finite sum"), rlmed::Error);
  const std::array<float, 2> huge{3e38f, 3e38f};  // finite weights whose sum overflows
  CHECK_THROWS_WITH_AS(rlmed::sample_categorical<float>(rng, huge), doctest::Contains("positive, finite sum"), rlmed::Error);
  const std::array<float, 1> nan{std::nanf("")};
  CHECK_THROWS_AS(rlmed::sample_categorical<float>(rng, nan), rlmed::Error);
}

TEST_CASE("bulk fills are independent of the thread count and advance the stream") {
  rlmed::Tensor<float, 2> a(rlmed::Shape<2>{300, 70}), b(rlmed::Shape<2>{300, 70});
  rlmed::Tensor<double, 1> na(rlmed::Shape<1>{5000}), nb(rlmed::Shape<1>{5000});
  const int threads = rlmed::max_threads();
  PhiloxStream r1(9, 3), r2(9, 3);
  rlmed::set_num_threads(1);
  rlmed::fill_uniform(a.view(), r1, -2.f, 3.f);
  rlmed::fill_normal(na.view(), r1, 1.0, 2.0);
  rlmed::set_num_threads(threads > 1 ? threads : 2);
  rlmed::fill_uniform(b.view(), r2, -2.f, 3.f);
  rlmed::fill_normal(nb.view(), r2, 1.0, 2.0);
  rlmed::set_num_threads(threads);
  CHECK(rlmed::bitwise_equal(a, b));
  CHECK(rlmed::bitwise_equal(na, nb));
  CHECK(r1 == r2);
  CHECK(r1.position() == 300u * 70u + 2u * 5000u);
  // Element i of a [0, 1) fill is word i of the stream, converted by u32_to_uniform_float.
  rlmed::Tensor<float, 1> unit(rlmed::Shape<1>{100});
  PhiloxStream fill_rng(9, 3), check(9, 3);
  rlmed::fill_uniform(unit.view(), fill_rng);
  for (int i = 0; i < 100; ++i) CHECK(unit.data()[i] == check.uniform());
  for (float v : a) {
    REQUIRE(v >= -2.f);
    REQUIRE(v < 3.f);
  }
  CHECK_THROWS_AS(rlmed::fill_uniform(a.view(), r1, 1.f, 0.f), rlmed::Error);
  CHECK_THROWS_AS(rlmed::fill_normal(na.view(), r1, 0.0, -1.0), rlmed::Error);
}
