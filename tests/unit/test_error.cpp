// rlmed::Error and the checks: location, condition text and values appear in the message.
#include <doctest/doctest.h>

#include <string>

#include "rlmed/core/error.hpp"
#include "rlmed/core/shape.hpp"

namespace {
int checked_half(int x) {
  RLMED_CHECK(x % 2 == 0, "expected an even number, found ", x);
  return x / 2;
}
}  // namespace

TEST_CASE("RLMED_CHECK passes silently and throws rlmed::Error with file, line, condition, values") {
  CHECK(checked_half(8) == 4);
  try {
    checked_half(7);
    FAIL("no exception");
  } catch (const rlmed::Error& e) {
    const std::string what = e.what();
    CHECK(what.find("test_error.cpp") != std::string::npos);
    CHECK(what.find("x % 2 == 0") != std::string::npos);
    CHECK(what.find("found 7") != std::string::npos);
    CHECK(e.line() > 0);
    CHECK(e.condition() == "x % 2 == 0");
    CHECK(e.message() == "expected an even number, found 7");
  }
}

TEST_CASE("RLMED_CHECK_EQ prints expected and found values, shapes as lists") {
  const rlmed::Shape<3> found{2, 3, 4};
  const rlmed::Shape<3> expected{2, 3, 5};
  try {
    RLMED_CHECK_EQ(found, expected, "weight shape: ");
    FAIL("no exception");
  } catch (const rlmed::Error& e) {
    CHECK(e.message() == "weight shape: expected [2, 3, 5], found [2, 3, 4]");
  }
  CHECK_NOTHROW(RLMED_CHECK_EQ(1 + 1, 2));
}

TEST_CASE("RLMED_THROW and format") {
  CHECK(rlmed::format("a", 1, ' ', 2.5, std::uint8_t{7}) == "a1 2.57");
  CHECK_THROWS_AS(RLMED_THROW("bad ", 3), rlmed::Error);
  CHECK_THROWS_WITH_AS(RLMED_THROW("bad ", 3), doctest::Contains("bad 3"), rlmed::Error);
}

TEST_CASE("checked_numel rejects negative extents and overflow") {
  CHECK(rlmed::checked_numel(rlmed::Shape<3>{2, 3, 4}) == 24);
  CHECK(rlmed::checked_numel(rlmed::Shape<2>{0, 5}) == 0);
  CHECK_THROWS_WITH_AS(rlmed::checked_numel(rlmed::Shape<2>{2, -1}), doctest::Contains("negative extent -1"),
                       rlmed::Error);
  CHECK_THROWS_WITH_AS(rlmed::checked_numel(std::vector<std::int64_t>{1LL << 40, 1LL << 40}),
                       doctest::Contains("more elements"), rlmed::Error);
}
