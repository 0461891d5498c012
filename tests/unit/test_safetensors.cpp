// safetensors: round trips of every dtype, a hand-built file per the format spec, conversion
// rules, checkpoint-style errors naming the tensor, and atomic writes.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "rlmed/core/random.hpp"
#include "rlmed/core/safetensors.hpp"

namespace fs = std::filesystem;
using rlmed::Shape;
using rlmed::Tensor;
using rlmed::io::DType;
using rlmed::io::SafetensorsReader;
using rlmed::io::SafetensorsWriter;

namespace {
fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("rlmed_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}
std::vector<std::byte> bytes_of(const std::string& s) {
  std::vector<std::byte> b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}
std::vector<std::byte> file_image(const std::string& header, const std::vector<std::byte>& data) {
  std::vector<std::byte> out(8);
  const std::uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  auto h = bytes_of(header);
  out.insert(out.end(), h.begin(), h.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}
}  // namespace

TEST_CASE("reads a file built by hand from the format specification") {
  const float w[3] = {1.5f, -2.0f, 3.25f};
  const std::int64_t idx[2] = {7, -9};
  std::vector<std::byte> data(3 * 4 + 2 * 8);
  std::memcpy(data.data(), idx, 16);  // offsets need not follow header order
  std::memcpy(data.data() + 16, w, 12);
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"weight":{"dtype":"F32","shape":[3,1],"data_offsets":[16,28]},)"
      R"("index":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})";
  auto r = SafetensorsReader::from_bytes(file_image(header, data), "handmade");
  CHECK(r.tensors().size() == 2);
  CHECK(r.tensors()[0].name == "index");  // ordered by name
  CHECK(r.metadata().at("format") == "pt");
  auto t = r.read<float, 2>("weight");
  CHECK(t.shape() == Shape<2>{3, 1});
  CHECK(t(0, 0) == 1.5f);
  CHECK(t(2, 0) == 3.25f);
  auto i = r.read<std::int64_t, 1>("index");
  CHECK(i(1) == -9);
  // The writer produces a file the same reader accepts, with 8-byte aligned data.
  SafetensorsWriter wr;
  wr.add("weight", t);
  wr.add("index", i);
  wr.set_metadata("format", "pt");
  const auto image = wr.to_bytes();
  std::uint64_t hlen = 0;
  std::memcpy(&hlen, image.data(), 8);
  CHECK((8 + hlen) % 8 == 0);
  auto r2 = SafetensorsReader::from_bytes(image);
  CHECK(rlmed::bitwise_equal(r2.read<float, 2>("weight"), t));
}

TEST_CASE("round trip of every dtype is bit-exact through a file on disk") {
  const auto dir = temp_dir("roundtrip");
  rlmed::PhiloxStream rng(11, 0);
  Tensor<float, 4> f32(Shape<4>{2, 3, 4, 5});
  rlmed::fill_normal(f32.view(), rng);
  Tensor<double, 2> f64(Shape<2>{7, 3});
  rlmed::fill_uniform(f64.view(), rng, -1.0, 1.0);
  Tensor<std::int64_t, 1> i64(Shape<1>{5});
  for (int k = 0; k < 5; ++k) i64(k) = (std::int64_t{1} << 40) * (k - 2);
  Tensor<std::uint8_t, 3> u8(Shape<3>{2, 2, 2});
  for (int k = 0; k < 8; ++k) u8.data()[k] = static_cast<std::uint8_t>(250 + k);
  Tensor<std::int32_t, 1> i32(Shape<1>{3}, -5);
  Tensor<float, 2> empty(Shape<2>{0, 4});
  Tensor<float, 0> scalar(Shape<0>{}, 42.f);

  SafetensorsWriter w;
  w.add("backbone.conv1_1.weight", f32);
  w.add("f64", f64);
  w.add("i64", i64);
  w.add("u8", u8);
  w.add("i32", i32);
  w.add("empty", empty);
  w.add("scalar", scalar);
  w.add("as_f16", f32, DType::F16);
  w.add("as_bf16", f32, DType::BF16);
  w.set_metadata("step", "1234");
  const auto path = dir / "model.safetensors";
  w.write(path);

  auto r = SafetensorsReader::open(path);
  CHECK(r.tensors().size() == 9);
  CHECK(r.metadata().at("step") == "1234");
  CHECK(rlmed::bitwise_equal(r.read<float, 4>("backbone.conv1_1.weight"), f32));
  CHECK(rlmed::bitwise_equal(r.read<double, 2>("f64"), f64));
  CHECK(rlmed::bitwise_equal(r.read<std::int64_t, 1>("i64"), i64));
  CHECK(rlmed::bitwise_equal(r.read<std::uint8_t, 3>("u8"), u8));
  CHECK(rlmed::bitwise_equal(r.read<std::int32_t, 1>("i32"), i32));
  CHECK(r.read<float, 2>("empty").shape() == Shape<2>{0, 4});
  CHECK(r.read<float, 0>("scalar")() == 42.f);
  CHECK(r.info("as_f16").dtype == DType::F16);
  auto h = r.read<float, 4>("as_f16");
  auto b = r.read<float, 4>("as_bf16");
  for (rlmed::index_t k = 0; k < f32.size(); ++k) {
    REQUIRE(std::abs(h.data()[k] - f32.data()[k]) <= 1e-3f * std::max(1.f, std::abs(f32.data()[k])));
    REQUIRE(std::abs(b.data()[k] - f32.data()[k]) <= 8e-3f * std::max(1.f, std::abs(f32.data()[k])));
  }
  // Lossless widening is allowed: F32 -> double, F16 -> double.
  auto wide = r.read<double, 4>("backbone.conv1_1.weight");
  CHECK(wide.data()[3] == static_cast<double>(f32.data()[3]));
  // The same tensors written again give the identical file (deterministic writer).
  const auto again = dir / "again.safetensors";
  w.write(again);
  CHECK(rlmed::read_file_bytes(path) == rlmed::read_file_bytes(again));
  fs::remove_all(dir);
}

TEST_CASE("checkpoint errors name the tensor, the expected and the found shape or dtype") {
  SafetensorsWriter w;
  Tensor<float, 2> weight(Shape<2>{4, 3}, 1.f);
  w.add("head.fc.weight", weight);
  auto r = SafetensorsReader::from_bytes(w.to_bytes(), "ckpt.safetensors");
  Tensor<float, 2> wrong(Shape<2>{3, 4});
  CHECK_THROWS_WITH_AS(r.read_into("head.fc.weight", wrong.view()),
                       doctest::Contains("tensor 'head.fc.weight' has shape [4, 3], expected [3, 4]"),
                       rlmed::Error);
  CHECK_THROWS_WITH_AS((r.read<float, 2>("head.fc.bias")),
                       doctest::Contains("ckpt.safetensors: no tensor named 'head.fc.bias' (the file holds 1 tensors: head.fc.weight)"),
                       rlmed::Error);
  CHECK_THROWS_WITH_AS((r.read<float, 3>("head.fc.weight")), doctest::Contains("has rank 2 (shape [4, 3]), expected rank 3"),
                       rlmed::Error);
  CHECK_THROWS_WITH_AS((r.read<std::int64_t, 2>("head.fc.weight")),
                       doctest::Contains("stored as F32 and cannot be read losslessly as I64"), rlmed::Error);
  Tensor<double, 1> d(Shape<1>{2});
  SafetensorsWriter w2;
  w2.add("d", d);
  CHECK_THROWS_WITH_AS((SafetensorsReader::from_bytes(w2.to_bytes()).read<float, 1>("d")),
                       doctest::Contains("cannot be read losslessly as F32"), rlmed::Error);
  CHECK_THROWS_WITH_AS(w.add("head.fc.weight", weight), doctest::Contains("added twice"), rlmed::Error);
  CHECK_THROWS_AS(w.add("__metadata__", weight), rlmed::Error);
  Tensor<std::int64_t, 1> ints(Shape<1>{2});
  CHECK_THROWS_WITH_AS(w.add("ints", ints, DType::F16), doctest::Contains("cannot store tensor 'ints' of dtype I64 as F16"),
                       rlmed::Error);
  Tensor<float, 2> ok(Shape<2>{4, 3});
  r.read_into("head.fc.weight", ok.view());
  CHECK(rlmed::bitwise_equal(ok, weight));
}

TEST_CASE("writes are atomic: failures leave the old file intact and no temporaries behind") {
  const auto dir = temp_dir("atomic");
  const auto path = dir / "ckpt.safetensors";
  {
    std::ofstream(path) << "previous contents";
  }
  SafetensorsWriter w;
  w.add("x", Tensor<float, 1>(Shape<1>{3}, 2.f));
  w.write(path);
  CHECK(SafetensorsReader::open(path).read<float, 1>("x")(2) == 2.f);
  // Writing into a directory that does not exist fails cleanly.
  CHECK_THROWS_WITH_AS(w.write(dir / "missing" / "x.safetensors"), doctest::Contains("cannot create a temporary file"),
                       rlmed::Error);
  // An abandoned writer (e.g. an exception mid-write) removes its temporary, keeps the file.
  {
    rlmed::AtomicFileWriter aw(path);
    aw.write("partial", 7);
  }
  CHECK(SafetensorsReader::open(path).read<float, 1>("x")(0) == 2.f);
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    (void)e;
    ++entries;
  }
  CHECK(entries == 1);
  CHECK((fs::status(path).permissions() & fs::perms::others_read) != fs::perms::none);
  CHECK_THROWS_WITH_AS(SafetensorsReader::open(dir / "nope.safetensors"), doctest::Contains("cannot open"), rlmed::Error);
  CHECK_THROWS_WITH_AS(SafetensorsReader::open(dir), doctest::Contains("not a readable regular file"), rlmed::Error);
  fs::remove_all(dir);
}
