// Deterministic mutation fuzzing of the safetensors reader: every truncation, random byte
// mutations, random header lengths, garbage, and hand-crafted hostile headers. The only
// acceptable outcomes are a valid parse or rlmed::Error — never another exception, a crash,
// an out-of-bounds read or an enormous allocation (CI runs this under ASan/UBSan).
#include <doctest/doctest.h>

#include <cstring>
#include <string>

#include "rlmed/core/philox.hpp"
#include "rlmed/core/safetensors.hpp"

using rlmed::Shape;
using rlmed::Tensor;
using rlmed::io::SafetensorsReader;

namespace {

std::vector<std::byte> valid_file() {
  rlmed::io::SafetensorsWriter w;
  Tensor<float, 2> a(Shape<2>{3, 4}, 0.5f);
  Tensor<std::int64_t, 1> b(Shape<1>{3}, 7);
  Tensor<std::uint8_t, 3> c(Shape<3>{2, 1, 2}, 1);
  Tensor<double, 0> d(Shape<0>{}, 3.0);
  w.add("a", a);
  w.add("b", b);
  w.add("c", c);
  w.add("d", d);
  w.add("h", a, rlmed::io::DType::F16);
  w.set_metadata("k", "v");
  return w.to_bytes();
}

// Parses and, if that succeeds, reads every tensor in every plausible way.
// Returns true if the image was accepted.
bool exercise(std::vector<std::byte> image) {
  try {
    const auto r = SafetensorsReader::from_bytes(std::move(image), "fuzz");
    for (const auto& t : r.tensors()) {
      (void)r.raw(t.name);
      try {
        switch (t.shape.size()) {
          case 0: (void)r.read<double, 0>(t.name); break;
          case 1: (void)r.read<double, 1>(t.name); (void)r.read<std::int64_t, 1>(t.name); break;
          case 2: (void)r.read<float, 2>(t.name); break;
          case 3: (void)r.read<std::uint8_t, 3>(t.name); break;
          default: (void)r.read<float, 4>(t.name); break;
        }
      } catch (const rlmed::Error&) {
        // a dtype or rank that cannot be read losslessly: fine, it was reported
      }
    }
    return true;
  } catch (const rlmed::Error&) {
    return false;
  }
}

std::vector<std::byte> with_header(const std::string& header, std::size_t data_bytes) {
  std::vector<std::byte> out(8 + header.size() + data_bytes, std::byte{0});
  const std::uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

}  // namespace

TEST_CASE("the unmutated file is accepted") { CHECK(exercise(valid_file())); }

TEST_CASE("every truncation is rejected with rlmed::Error") {
  const auto full = valid_file();
  for (std::size_t len = 0; len < full.size(); ++len) {
    std::vector<std::byte> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(len));
    INFO("length " << len);
    REQUIRE_FALSE(exercise(std::move(cut)));
  }
  auto longer = full;
  longer.push_back(std::byte{0});
  CHECK_FALSE(exercise(longer));  // trailing bytes are a hole in the buffer
}

TEST_CASE("random mutations never crash or throw anything but rlmed::Error") {
  const auto full = valid_file();
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, full.data(), 8);
  rlmed::PhiloxStream rng(2024, 0);
  int accepted = 0;
  const int rounds = 20000;
  for (int round = 0; round < rounds; ++round) {
    auto m = full;
    const int edits = 1 + static_cast<int>(rng.uniform_int(4));
    for (int e = 0; e < edits; ++e) {
      // Bias mutations toward the header, where the parser works.
      const bool in_header = rng.uniform() < 0.9f;
      const auto span = in_header ? static_cast<std::uint32_t>(8 + header_len) : static_cast<std::uint32_t>(m.size());
      const std::size_t pos = rng.uniform_int(span);
      switch (rng.uniform_int(5)) {
        case 0: m[pos] = static_cast<std::byte>(rng.next_u32()); break;
        case 1: m[pos] ^= static_cast<std::byte>(1u << rng.uniform_int(8)); break;
        case 2: m[pos] = static_cast<std::byte>("0123456789[]{}\",:-.eE"[rng.uniform_int(21)]); break;
        case 3: m.erase(m.begin() + static_cast<std::ptrdiff_t>(pos)); break;
        default: m.insert(m.begin() + static_cast<std::ptrdiff_t>(pos), static_cast<std::byte>(rng.next_u32())); break;
      }
      if (m.empty()) break;
    }
    accepted += exercise(std::move(m));
  }
  MESSAGE("accepted " << accepted << " of " << rounds << " mutants (data-byte edits stay valid)");
  CHECK(accepted < rounds);
}

TEST_CASE("absurd header lengths and garbage are rejected without allocating them") {
  auto full = valid_file();
  for (std::uint64_t len : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{100'000'001}, ~std::uint64_t{0},
                            std::uint64_t{1} << 63, static_cast<std::uint64_t>(full.size())}) {
    auto m = full;
    std::memcpy(m.data(), &len, 8);
    CHECK_FALSE(exercise(m));
  }
  rlmed::PhiloxStream rng(7, 7);
  for (int i = 0; i < 2000; ++i) {
    std::vector<std::byte> garbage(rng.uniform_int(300));
    for (auto& b : garbage) b = static_cast<std::byte>(rng.next_u32());
    if (garbage.size() >= 8) {  // a plausible length so the JSON parser sees the garbage
      const std::uint64_t n = rng.uniform_int(static_cast<std::uint32_t>(garbage.size() - 7));
      std::memcpy(garbage.data(), &n, 8);
    }
    CHECK_FALSE(exercise(garbage));
  }
}

TEST_CASE("hand-crafted hostile headers are rejected with a reason") {
  struct Case {
    const char* header;
    std::size_t data;
    const char* reason;
  };
  const Case cases[] = {
      {R"([1,2,3])", 0, "must be a JSON object"},
      {R"({"a":5})", 0, "must be an object"},
      {R"({"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", 4, "unsupported dtype 'F33'"},
      {R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, "not a non-negative integer"},
      {R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4, "not a non-negative integer"},
      {R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}})", 4, "overflows"},
      {R"({"a":{"dtype":"F32","shape":[1000000000000],"data_offsets":[0,4]}})", 4, "data buffer has only 4"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}})", 4, "outside the 4-byte data buffer"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4, "outside"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 8, "needs 8 bytes, its offsets span 4"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8, "overlap"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8, "hole"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8, "trailing bytes"},
      {R"({"a":{"dtype":"F32","shape":[1]}})", 4, "needs data_offsets"},
      {R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4, "no string dtype"},
      {R"({"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4, "empty name"},
      {R"({"__metadata__":{"k":1}})", 0, "is not a string"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})", 4, "not valid JSON"},
      {R"({"a":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}})", 1, nullptr},  // valid
  };
  for (const auto& c : cases) {
    INFO(c.header);
    const auto image = with_header(c.header, c.data);
    if (c.reason == nullptr) {
      CHECK(exercise(image));
      continue;
    }
    CHECK_THROWS_WITH_AS(SafetensorsReader::from_bytes(image, "hostile"), doctest::Contains(c.reason), rlmed::Error);
  }
  // Nesting bombs are refused before the JSON parser recurses into them.
  const std::string bomb = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  CHECK_THROWS_WITH_AS(SafetensorsReader::from_bytes(with_header(bomb, 0)), doctest::Contains("nests deeper"), rlmed::Error);
  // A BOOL tensor holding a byte other than 0/1 is rejected on read.
  auto bad_bool = with_header(R"({"a":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}})", 1);
  bad_bool.back() = std::byte{2};
  const auto r = SafetensorsReader::from_bytes(bad_bool);
  CHECK_THROWS_WITH_AS((r.read<bool, 1>("a")), doctest::Contains("expected 0 or 1"), rlmed::Error);
}
