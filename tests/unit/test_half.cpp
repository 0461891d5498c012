// F16/BF16 conversions against the compiler's own _Float16 / bit-exact expectations.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "rlmed/core/half.hpp"
#include "rlmed/core/philox.hpp"

TEST_CASE("half -> float -> half round-trips all 65536 bit patterns (NaNs stay NaN)") {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = rlmed::half_bits_to_float(static_cast<std::uint16_t>(h));
    const std::uint16_t back = rlmed::float_to_half_bits(f);
    if (std::isnan(f)) {
      REQUIRE((back & 0x7c00u) == 0x7c00u);
      REQUIRE((back & 0x3ffu) != 0);
    } else {
      REQUIRE(back == h);
    }
  }
}

#if defined(__FLT16_MAX__)
TEST_CASE("float -> half rounding equals the compiler's _Float16 conversion") {
  auto check = [](float f) {
    const _Float16 ref = static_cast<_Float16>(f);
    const auto ref_bits = std::bit_cast<std::uint16_t>(ref);
    const std::uint16_t ours = rlmed::float_to_half_bits(f);
    if (std::isnan(f)) {
      REQUIRE(std::isnan(rlmed::half_bits_to_float(ours)));
    } else {
      INFO("f = " << f);
      REQUIRE(ours == ref_bits);
      REQUIRE(rlmed::half_bits_to_float(ours) == static_cast<float>(ref));
    }
  };
  rlmed::PhiloxStream rng(5, 0);
  for (int i = 0; i < 1000000; ++i) check(std::bit_cast<float>(rng.next_u32()));
  // Dense sweep over the half range, including subnormals, halfway cases and overflow.
  for (std::uint32_t bits = 0x33000000u; bits < 0x47900000u; bits += 0x100u) {
    check(std::bit_cast<float>(bits));
    check(-std::bit_cast<float>(bits));
  }
  check(65504.f);
  check(65520.f);  // rounds to infinity
  check(std::numeric_limits<float>::infinity());
  check(std::numeric_limits<float>::denorm_min());
}
#else
TEST_CASE("float -> half rounding on known values (no _Float16 in this compiler)") {
  CHECK(rlmed::float_to_half_bits(1.0f) == 0x3c00u);
  CHECK(rlmed::float_to_half_bits(65520.f) == 0x7c00u);
  CHECK(rlmed::float_to_half_bits(5.960464477539063e-08f) == 0x0001u);
}
#endif

TEST_CASE("bfloat16 conversions round to nearest even") {
  CHECK(rlmed::float_to_bfloat16_bits(1.0f) == 0x3f80u);
  CHECK(rlmed::bfloat16_bits_to_float(0x3f80u) == 1.0f);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even -> 1.0
  CHECK(rlmed::float_to_bfloat16_bits(1.00390625f) == 0x3f80u);
  CHECK(rlmed::float_to_bfloat16_bits(1.01171875f) == 0x3f82u);  // halfway, odd below -> up
  CHECK(std::isnan(rlmed::bfloat16_bits_to_float(rlmed::float_to_bfloat16_bits(std::nanf("")))));
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = rlmed::bfloat16_bits_to_float(static_cast<std::uint16_t>(b));
    if (!std::isnan(f)) REQUIRE(rlmed::float_to_bfloat16_bits(f) == b);
  }
}
