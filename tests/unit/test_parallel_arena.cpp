// parallel_for (coverage, exceptions, determinism) and the Workspace arena (no allocation
// after the first step, frozen growth is an error).
#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "rlmed/core/arena.hpp"
#include "rlmed/core/parallel.hpp"

TEST_CASE("parallel_for visits every index exactly once") {
  for (rlmed::index_t n : {0, 1, 7, 1023, 1024, 100000}) {
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
    rlmed::parallel_for(0, n, [&](rlmed::index_t i) { hits[static_cast<std::size_t>(i)]++; });
    for (auto& h : hits) REQUIRE(h.load() == 1);
  }
  std::vector<int> seen(10, 0);
  rlmed::parallel_for(3, 8, [&](rlmed::index_t i) { seen[static_cast<std::size_t>(i)] = 1; });
  CHECK(seen == std::vector<int>{0, 0, 0, 1, 1, 1, 1, 1, 0, 0});
}

TEST_CASE("parallel_for rethrows the first failing index's exception on the caller") {
  try {
    rlmed::parallel_for(0, 50000, [](rlmed::index_t i) {
      if (i == 30000) throw std::runtime_error("at 30000");
      if (i == 40000) throw std::runtime_error("at 40000");
    });
    FAIL("no exception");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) == "at 30000");
  }
}

TEST_CASE("parallel_for_chunks uses fixed chunk boundaries") {
  std::vector<std::pair<rlmed::index_t, rlmed::index_t>> chunks(4);
  rlmed::parallel_for_chunks(0, 10, 3, [&](rlmed::index_t b, rlmed::index_t e) { chunks[static_cast<std::size_t>(b / 3)] = {b, e}; });
  CHECK(chunks[0] == std::pair<rlmed::index_t, rlmed::index_t>{0, 3});
  CHECK(chunks[3] == std::pair<rlmed::index_t, rlmed::index_t>{9, 10});
}

namespace {
// One "training step": a fixed sequence of temporaries of different types and shapes.
void fake_step(rlmed::Workspace& ws) {
  auto a = ws.tensor<float>(rlmed::Shape<3>{4, 17, 9});
  auto b = ws.zeros<double>(rlmed::Shape<2>{33, 5});
  auto c = ws.array<std::int64_t>(129);
  a(3, 16, 8) = 1.f;
  b(32, 4) = 2.0;
  c[128] = 3;
  for (double v : b.slice(0, 32)) REQUIRE(v == 0.0);
  REQUIRE(reinterpret_cast<std::uintptr_t>(a.data()) % rlmed::kTensorAlignment == 0);
  REQUIRE(reinterpret_cast<std::uintptr_t>(b.data()) % rlmed::kTensorAlignment == 0);
  REQUIRE(reinterpret_cast<std::uintptr_t>(c.data()) % rlmed::kTensorAlignment == 0);
  ws.reset();
}
}  // namespace

TEST_CASE("Workspace allocates during the first step only") {
  rlmed::Workspace ws;
  fake_step(ws);
  const auto after_first = ws.system_allocations();
  CHECK(after_first >= 1);
  CHECK(ws.capacity() >= ws.high_water());
  for (int step = 0; step < 100; ++step) fake_step(ws);
  CHECK(ws.system_allocations() == after_first + 0);
  ws.freeze();
  CHECK_NOTHROW(fake_step(ws));
}

TEST_CASE("a frozen Workspace refuses to grow with a clear error; presized workspaces never grow") {
  rlmed::Workspace ws(1024);
  ws.freeze();
  CHECK_NOTHROW(ws.array<float>(200));
  CHECK_THROWS_WITH_AS(ws.array<float>(200), doctest::Contains("frozen workspace"), rlmed::Error);
  CHECK_THROWS_AS(ws.array<float>(-1), rlmed::Error);
  ws.reset();
  CHECK(ws.used() == 0);
  rlmed::Workspace sized(1 << 16);
  const auto n = sized.system_allocations();
  for (int i = 0; i < 10; ++i) fake_step(sized);
  CHECK(sized.system_allocations() == n);
}
