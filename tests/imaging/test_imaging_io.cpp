// Image geometry and the file formats: exact round trips, geometry conventions (LPS vs NIfTI's
// RAS), scaling, compression framings, and clear errors for bad files and arguments.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "rlmed/core/philox.hpp"
#include "rlmed/imaging/io/io.hpp"
#include "rlmed/imaging/orientation.hpp"

using namespace rlmed;
using namespace rlmed::imaging;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
  const auto dir = fs::temp_directory_path() / "rlmed_test_imaging_io";
  fs::create_directories(dir);
  return dir / name;
}

void write_text(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

void write_bytes(const fs::path& p, const std::vector<std::byte>& b) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

template <class T, std::size_t Dim>
Image<T, Dim> random_image(const Shape<Dim>& shape, std::uint64_t seed) {
  Image<T, Dim> img(shape);
  PhiloxStream rng(seed, 0);
  for (auto& v : img.voxels) {
    if constexpr (std::is_floating_point_v<T>) v = static_cast<T>(rng.uniform() * 200.0 - 100.0);
    else v = static_cast<T>(rng.uniform_int(200) - (std::is_signed_v<T> ? 100 : 0));
  }
  // Geometry that float32 (NIfTI) stores exactly: dyadic spacing/origin, a permutation-with-flips
  // direction.
  for (std::size_t a = 0; a < Dim; ++a) {
    img.spacing_mm[a] = 0.5 + 0.25 * double(a);
    img.origin_mm[a] = -12.5 + 4.0 * double(a);
  }
  if constexpr (Dim == 3) img.direction = {0, -1, 0, 1, 0, 0, 0, 0, 1};
  else img.direction = {0, 1, -1, 0};
  return img;
}

template <class T, std::size_t Dim>
void check_same(const Image<T, Dim>& a, const Image<T, Dim>& b, double geo_tol = 0) {
  CHECK(bitwise_equal(a.voxels, b.voxels));
  for (std::size_t i = 0; i < Dim; ++i) {
    CHECK(std::abs(a.spacing_mm[i] - b.spacing_mm[i]) <= geo_tol);
    CHECK(std::abs(a.origin_mm[i] - b.origin_mm[i]) <= geo_tol);
  }
  for (std::size_t i = 0; i < Dim * Dim; ++i) CHECK(std::abs(a.direction[i] - b.direction[i]) <= 1e-6 + geo_tol);
}

}  // namespace

TEST_CASE("Image: index and physical space are inverse maps; tensor axes are (z, y, x)") {
  Image<float, 3> img(Shape<3>{4, 5, 6});
  img.spacing_mm = {0.5, 2.0, 3.0};
  img.origin_mm = {10, -20, 30};
  img.direction = {0, 0, 1, 1, 0, 0, 0, 1, 0};
  CHECK(img.size_xyz() == std::array<index_t, 3>{6, 5, 4});
  const Vec<3> idx{1.5, 2.0, 3.25};
  const auto p = img.physical_to_index(img.index_to_physical(idx));
  for (std::size_t a = 0; a < 3; ++a) CHECK(p[a] == doctest::Approx(idx[a]).epsilon(1e-12));
  // Column 0 of direction is (0, 1, 0): one voxel along x moves 0.5 mm along world y.
  const auto q0 = img.index_to_physical({0, 0, 0}), q1 = img.index_to_physical({1, 0, 0});
  CHECK(q1[1] - q0[1] == doctest::Approx(0.5));
  CHECK(q1[0] == q0[0]);
  CHECK(img.contains_index({5, 4, 3}));
  CHECK_FALSE(img.contains_index({5.5, 0, 0}));
  Image<float, 3> bad(Shape<3>{1, 1, 1});
  bad.spacing_mm = {1, 0, 1};
  CHECK_THROWS_AS(bad.validate_geometry(), Error);
  bad.spacing_mm = {1, 1, 1};
  bad.direction = {1, 0, 0, 1, 0, 0, 0, 0, 1};
  CHECK_THROWS_AS(bad.validate_geometry(), Error);
}

TEST_CASE_TEMPLATE("NIfTI round trip is exact (.nii and .nii.gz, every element type)", T, std::uint8_t, std::int16_t,
                   std::uint16_t, std::int32_t, float, double) {
  const auto img = random_image<T, 3>(Shape<3>{5, 6, 7}, 11);
  for (const char* name : {"rt.nii", "rt.nii.gz"}) {
    write_nifti(scratch(name), img);
    check_same(img, read_nifti<T, 3>(scratch(name)));
  }
  const auto img2 = random_image<T, 2>(Shape<2>{9, 4}, 12);
  write_nifti(scratch("rt2.nii"), img2);
  check_same(img2, read_nifti<T, 2>(scratch("rt2.nii")));
}

TEST_CASE("NIfTI: RAS affine becomes LPS geometry; scl_slope/inter applied; header fields checked") {
  auto img = random_image<std::int16_t, 3>(Shape<3>{3, 4, 5}, 3);
  img.direction = identity_matrix<3>();
  img.origin_mm = {1, 2, 3};
  write_nifti(scratch("geo.nii"), img);
  const auto h = read_nifti_header(scratch("geo.nii"));
  // LPS identity direction = RAS diag(-1, -1, 1); origin (1,2,3) LPS = (-1,-2,3) RAS.
  CHECK(h.affine_ras[0] == doctest::Approx(-img.spacing_mm[0]));
  CHECK(h.affine_ras[5] == doctest::Approx(-img.spacing_mm[1]));
  CHECK(h.affine_ras[10] == doctest::Approx(img.spacing_mm[2]));
  CHECK(h.affine_ras[3] == -1.0);
  CHECK(h.affine_ras[7] == -2.0);
  CHECK(h.affine_ras[11] == 3.0);
  CHECK(h.dim[0] == 5);
  CHECK(h.dim[2] == 3);
  // qform alone (sform_code 0) must give the same geometry.
  auto bytes = read_file_bytes(scratch("geo.nii"));
  const std::int16_t zero = 0;
  std::memcpy(bytes.data() + 254, &zero, 2);
  // Scaling: value * 0.5 + 10.
  const float slope = 0.5f, inter = 10.f;
  std::memcpy(bytes.data() + 112, &slope, 4);
  std::memcpy(bytes.data() + 116, &inter, 4);
  write_bytes(scratch("geo_q.nii"), bytes);
  const auto q = read_nifti<double, 3>(scratch("geo_q.nii"));
  for (std::size_t a = 0; a < 3; ++a) {
    CHECK(q.origin_mm[a] == doctest::Approx(img.origin_mm[a]));
    CHECK(q.spacing_mm[a] == doctest::Approx(img.spacing_mm[a]));
  }
  for (std::size_t k = 0; k < 9; ++k) CHECK(q.direction[k] == doctest::Approx(img.direction[k]).epsilon(1e-6));
  for (index_t i = 0; i < img.voxels.size(); ++i) CHECK(q.voxels.data()[i] == img.voxels.data()[i] * 0.5 + 10.0);
  // Scaled values that are not integral cannot become int16.
  CHECK_THROWS_AS((read_nifti<std::int16_t, 3>(scratch("geo_q.nii"))), Error);
  const auto raw = read_nifti<std::int16_t, 3>(scratch("geo_q.nii"), {.apply_scaling = false});
  CHECK(bitwise_equal(raw.voxels, img.voxels));
}

TEST_CASE("NIfTI: a sheared direction is written as sform only and read back unchanged") {
  auto img = random_image<float, 3>(Shape<3>{3, 4, 5}, 4);
  img.direction = {1, 0.6, 0, 0, 0.8, 0, 0, 0, 1};  // unit columns, not orthogonal
  write_nifti(scratch("shear.nii"), img);
  const auto h = read_nifti_header(scratch("shear.nii"));
  CHECK(h.qform_code == 0);
  CHECK(h.sform_code == 1);
  const auto back = read_nifti<float, 3>(scratch("shear.nii"));
  for (std::size_t k = 0; k < 9; ++k) CHECK(back.direction[k] == doctest::Approx(img.direction[k]).epsilon(1e-6));
  for (index_t z = 0; z < 3; ++z) {
    const auto p = img.index_to_physical({1, 2, double(z)}), q = back.index_to_physical({1, 2, double(z)});
    for (std::size_t a = 0; a < 3; ++a) CHECK(q[a] == doctest::Approx(p[a]).epsilon(1e-6));
  }
}

TEST_CASE("NIfTI: big-endian files are read") {
  // Build a big-endian file by hand from a little-endian one.
  const auto img = random_image<std::int16_t, 3>(Shape<3>{2, 3, 4}, 5);
  auto le = nifti_bytes(img);
  auto be = le;
  auto swap_at = [&](std::size_t off, std::size_t size) { std::reverse(be.begin() + std::ptrdiff_t(off), be.begin() + std::ptrdiff_t(off + size)); };
  swap_at(0, 4);
  for (std::size_t k = 0; k < 8; ++k) swap_at(40 + 2 * k, 2);
  swap_at(70, 2); swap_at(72, 2);
  for (std::size_t k = 0; k < 8; ++k) swap_at(76 + 4 * k, 4);
  swap_at(108, 4); swap_at(112, 4); swap_at(116, 4);
  swap_at(252, 2); swap_at(254, 2);
  for (std::size_t k = 0; k < 18; ++k) swap_at(256 + 4 * k, 4);
  for (std::size_t k = 352; k < be.size(); k += 2) swap_at(k, 2);
  write_bytes(scratch("be.nii"), be);
  check_same(img, read_nifti<std::int16_t, 3>(scratch("be.nii")), 1e-6);
}

TEST_CASE("NIfTI: corrupt and unsupported files are clear errors") {
  const auto img = random_image<float, 3>(Shape<3>{2, 3, 4}, 1);
  const auto good = nifti_bytes(img);
  auto expect_error = [&](std::vector<std::byte> b, const char* what) {
    write_bytes(scratch("bad.nii"), b);
    INFO(what);
    CHECK_THROWS_AS((read_nifti<float, 3>(scratch("bad.nii"))), Error);
  };
  expect_error(std::vector<std::byte>(good.begin(), good.begin() + 200), "short header");
  expect_error(std::vector<std::byte>(good.begin(), good.end() - 1), "truncated data");
  auto b = good;
  b[344] = std::byte{'x'};
  expect_error(b, "bad magic");
  b = good;
  const std::int16_t dt = 32;  // complex64
  std::memcpy(b.data() + 70, &dt, 2);
  expect_error(b, "complex datatype");
  b = good;
  const std::int16_t huge = -5;
  std::memcpy(b.data() + 42, &huge, 2);
  expect_error(b, "negative extent");
  b = good;
  const float off = 100;
  std::memcpy(b.data() + 108, &off, 4);
  expect_error(b, "vox_offset inside the header");
  // A 3D file read as 2D.
  write_bytes(scratch("ok.nii"), good);
  CHECK_THROWS_AS((read_nifti<float, 2>(scratch("ok.nii"))), Error);
  // Compressed and truncated.
  auto gz = deflate_bytes(good, Framing::gzip);
  gz.resize(gz.size() / 2);
  expect_error(gz, "truncated gzip");
}

TEST_CASE_TEMPLATE("MetaImage round trip is exact (raw and compressed)", T, std::uint8_t, std::int16_t, float, double) {
  const auto img = random_image<T, 3>(Shape<3>{4, 3, 6}, 21);
  for (bool compress : {false, true}) {
    write_metaimage(scratch("rt.mha"), img, compress);
    check_same(img, read_metaimage<T, 3>(scratch("rt.mha")));
  }
  const auto img2 = random_image<T, 2>(Shape<2>{7, 5}, 22);
  write_metaimage(scratch("rt2.mha"), img2, true);
  check_same(img2, read_metaimage<T, 2>(scratch("rt2.mha")));
}

TEST_CASE("MetaImage: .mhd with an external raw file, MSB data, and bad headers") {
  Tensor<std::int16_t, 2> v(Shape<2>{2, 3});
  for (index_t i = 0; i < 6; ++i) v.data()[i] = std::int16_t(i * 300 - 700);
  std::vector<std::byte> raw(12);
  for (index_t i = 0; i < 6; ++i) {  // big-endian
    const auto u = static_cast<std::uint16_t>(v.data()[i]);
    raw[std::size_t(2 * i)] = std::byte(u >> 8);
    raw[std::size_t(2 * i + 1)] = std::byte(u & 0xff);
  }
  write_bytes(scratch("ext.raw"), raw);
  write_text(scratch("ext.mhd"),
             "ObjectType = Image\nNDims = 2\nBinaryData = True\nBinaryDataByteOrderMSB = True\n"
             "TransformMatrix = 0 1 -1 0\nOffset = 5 6\nElementSpacing = 0.5 2\nDimSize = 3 2\n"
             "ElementType = MET_SHORT\nElementDataFile = ext.raw\n");
  const auto img = read_metaimage<std::int16_t, 2>(scratch("ext.mhd"));
  CHECK(bitwise_equal(img.voxels, v));
  // TransformMatrix lists the direction of index axis x first: (0, 1), then y: (-1, 0).
  CHECK(img.direction[0] == 0.0);
  CHECK(img.direction[2] == 1.0);
  CHECK(img.direction[1] == -1.0);
  CHECK(img.spacing_mm[1] == 2.0);
  CHECK(img.origin_mm[0] == 5.0);
  const std::string head = "ObjectType = Image\nNDims = 2\nBinaryData = True\n";
  auto expect_error = [&](const std::string& text, const char* what) {
    write_text(scratch("bad.mha"), text);
    INFO(what);
    CHECK_THROWS_AS((read_metaimage<float, 2>(scratch("bad.mha"))), Error);
  };
  expect_error(head + "DimSize = 3 2\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n" + std::string(10, 'x'), "truncated");
  expect_error(head + "DimSize = 3\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n", "DimSize count");
  expect_error(head + "DimSize = 3 2\nElementType = MET_COMPLEX\nElementDataFile = LOCAL\n", "type");
  expect_error(head + "DimSize = 3 2\nElementType = MET_FLOAT\n", "no data line");
  expect_error(head + "DimSize = 3 two\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n", "non-numeric");
  expect_error(head + "DimSize = 3 2\nElementSpacing = 1 -1\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n", "spacing");
  expect_error(head + "DimSize = 3 2\nElementType = MET_FLOAT\nCompressedData = True\nElementDataFile = LOCAL\nnot zlib at all", "zlib");
  expect_error(head + "DimSize = 3 2\nElementType = MET_FLOAT\nElementDataFile = missing.raw\n", "missing file");
}

TEST_CASE("npy and npz: round trips, Fortran order, big-endian, ZIP64, CRC and bad headers") {
  Tensor<float, 3> a(Shape<3>{2, 3, 4});
  for (index_t i = 0; i < a.size(); ++i) a.data()[i] = float(i) * 0.25f - 1.f;
  write_npy<float, 3>(scratch("a.npy"), a.view());
  CHECK(bitwise_equal(read_npy_tensor<float, 3>(scratch("a.npy")), a));
  CHECK_THROWS_AS((read_npy_tensor<std::int32_t, 3>(scratch("a.npy"))), Error);  // 0.25 steps are not integers
  CHECK_THROWS_AS((read_npy_tensor<float, 2>(scratch("a.npy"))), Error);

  // Fortran-ordered, big-endian int16 written by hand: [[1, 2, 3], [4, 5, 6]].
  std::string header = "{'descr': '>i2', 'fortran_order': True, 'shape': (2, 3), }";
  header.append(128 - 10 - header.size() - 1, ' ');
  header += '\n';
  std::vector<std::byte> f = {std::byte{0x93}, std::byte{'N'}, std::byte{'U'}, std::byte{'M'}, std::byte{'P'}, std::byte{'Y'},
                              std::byte{1}, std::byte{0}, std::byte(header.size()), std::byte{0}};
  for (char ch : header) f.push_back(std::byte(ch));
  for (int v : {1, 4, 2, 5, 3, 6}) { f.push_back(std::byte{0}); f.push_back(std::byte(v)); }
  const auto fa = parse_npy(f, "fortran");
  const auto ft = to_tensor<std::int16_t, 2>(fa, "fortran");
  for (index_t i = 0; i < 6; ++i) CHECK(ft.data()[i] == i + 1);

  Tensor<std::uint8_t, 1> labels(Shape<1>{5});
  for (index_t i = 0; i < 5; ++i) labels(i) = std::uint8_t(10 * i);
  for (bool compress : {false, true}) {
    NpzWriter w;
    w.add<float, 3>("vol", a.view());
    w.add<std::uint8_t, 1>("seg", labels.view());
    w.write(scratch("z.npz"), compress);
    const auto z = NpzArchive::open(scratch("z.npz"));
    CHECK(z.names() == std::vector<std::string>{"seg", "vol"});
    CHECK(bitwise_equal(z.tensor<float, 3>("vol"), a));
    CHECK(bitwise_equal(z.tensor<std::uint8_t, 1>("seg"), labels));
    CHECK_THROWS_AS((void)z.at("nope"), Error);
    // Flip a byte inside a member: the CRC must catch it (or inflate must fail).
    auto bytes = read_file_bytes(scratch("z.npz"));
    bytes[60] ^= std::byte{0x5a};
    CHECK_THROWS_AS(NpzArchive::from_bytes(bytes, "flipped"), Error);
  }
  auto expect_error = [](std::string h, const char* what) {
    std::vector<std::byte> b = {std::byte{0x93}, std::byte{'N'}, std::byte{'U'}, std::byte{'M'}, std::byte{'P'}, std::byte{'Y'},
                                std::byte{1}, std::byte{0}, std::byte(h.size()), std::byte{0}};
    for (char ch : h) b.push_back(std::byte(ch));
    INFO(what);
    CHECK_THROWS_AS(parse_npy(b, what), Error);
  };
  expect_error("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", "no data");
  expect_error("{'descr': '<c8', 'fortran_order': False, 'shape': (), }", "complex");
  expect_error("{'descr': '<f4', 'shape': (1,), }", "missing key");
  expect_error("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }", "bad bool");
  expect_error("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999,), }", "huge");
  // 2^61 elements: the byte count would wrap to 0 and match an empty payload.
  expect_error("{'descr': '<f8', 'fortran_order': True, 'shape': (2147483648, 1073741824), }", "wrapping byte count");
}

TEST_CASE("TIFF, PNG and JPEG round trips; JPEG decodes what it encoded closely") {
  Tensor<std::uint16_t, 3> stack(Shape<3>{3, 17, 9});
  PhiloxStream rng(7, 0);
  for (auto& v : stack) v = static_cast<std::uint16_t>(rng.uniform_int(65535));
  write_tiff_stack<std::uint16_t>(scratch("s.tif"), stack.view());
  CHECK(bitwise_equal(read_tiff_stack<std::uint16_t>(scratch("s.tif")), stack));
  CHECK_THROWS_AS(read_tiff<std::uint16_t>(scratch("s.tif")), Error);  // 3 pages
  Tensor<float, 2> f(Shape<2>{5, 8});
  for (auto& v : f) v = float(rng.uniform());
  write_tiff<float>(scratch("f.tiff"), f.view());
  CHECK(bitwise_equal(read_tiff<float>(scratch("f.tiff")), f));
  write_text(scratch("bad.tif"), "II*\0garbage that is not a TIFF directory");
  CHECK_THROWS_AS(read_tiff<float>(scratch("bad.tif")), Error);

  Image<std::uint8_t, 2> g(Shape<2>{16, 24});
  for (index_t y = 0; y < 16; ++y)
    for (index_t x = 0; x < 24; ++x) g.voxels(y, x) = std::uint8_t(8 * y + 4 * x);
  write_image(scratch("g.png"), g);
  CHECK(bitwise_equal(read_image<std::uint8_t, 2>(scratch("g.png")).voxels, g.voxels));
  write_image(scratch("g.jpg"), g);
  const auto j = read_image<std::uint8_t, 2>(scratch("g.jpg"));
  REQUIRE(j.shape() == g.shape());
  double max_err = 0;
  for (index_t i = 0; i < g.voxels.size(); ++i) max_err = std::max(max_err, std::abs(double(j.voxels.data()[i]) - g.voxels.data()[i]));
  CHECK(max_err <= 6.0);  // lossy at quality 95 on a smooth ramp
  auto jb = read_file_bytes(scratch("g.jpg"));
  jb.resize(jb.size() / 3);
  write_bytes(scratch("trunc.jpg"), jb);
  CHECK_THROWS_AS(read_jpeg_gray(scratch("trunc.jpg")), Error);
  // 16-bit PNG: values as stored, never gamma-encoded; reading it as 8-bit is an error.
  Image<std::uint16_t, 2> g16(Shape<2>{5, 7});
  for (index_t i = 0; i < g16.voxels.size(); ++i) g16.voxels.data()[i] = std::uint16_t(i * 1871);
  write_image(scratch("g16.png"), g16);
  CHECK(png_is_16bit(scratch("g16.png")));
  CHECK(bitwise_equal(read_png_gray16(scratch("g16.png")), g16.voxels));
  CHECK(bitwise_equal(read_image<std::uint16_t, 2>(scratch("g16.png")).voxels, g16.voxels));
  CHECK_THROWS_AS(read_png_gray(scratch("g16.png")), Error);
  CHECK_THROWS_AS((read_image<std::uint8_t, 2>(scratch("g16.png"))), Error);  // values above 255
  CHECK_THROWS_AS(read_png_gray16(scratch("g.png")), Error);
  write_text(scratch("not.jpg"), "not a jpeg");
  CHECK_THROWS_AS(read_jpeg_gray(scratch("not.jpg")), Error);
  CHECK_THROWS_AS((read_image<float, 2>(scratch("x.bmp"))), Error);
}

TEST_CASE("IDX: gzip and raw MNIST-style files; bad magic and sizes") {
  std::vector<std::byte> raw = {std::byte{0}, std::byte{0}, std::byte{8}, std::byte{3}};
  for (std::uint32_t e : {2u, 3u, 2u})
    for (int s = 24; s >= 0; s -= 8) raw.push_back(std::byte((e >> s) & 0xff));
  for (int i = 0; i < 12; ++i) raw.push_back(std::byte(i * 20));
  const auto t = to_tensor<std::uint8_t, 3>(parse_idx(raw, "raw"), "raw");
  CHECK(t.shape() == Shape<3>{2, 3, 2});
  CHECK(t(1, 2, 1) == 220);
  const auto gz = deflate_bytes(raw, Framing::gzip);
  CHECK(bitwise_equal(to_tensor<std::uint8_t, 3>(parse_idx(gz, "gz"), "gz"), t));
  auto bad = raw;
  bad[2] = std::byte{0x0d};  // float IDX
  CHECK_THROWS_AS(parse_idx(bad, "float"), Error);
  bad = raw;
  bad.pop_back();
  CHECK_THROWS_AS(parse_idx(bad, "short"), Error);
  bad = raw;
  bad.push_back(std::byte{1});
  CHECK_THROWS_AS(parse_idx(bad, "long"), Error);
}

TEST_CASE("Landmark files, rl-medical list pairs and elastix point sets") {
  write_text(scratch("lm1.txt"), "10,20,30\n# comment\n 1.5, 2.5 ,3.5\n");
  write_text(scratch("lm2.txt"), "4 5 6\n");
  write_text(scratch("img.txt"), "a.nii.gz\nb.nii.gz\n");
  write_text(scratch("lm.txt"), "lm1.txt\n" + scratch("lm2.txt").string() + "\n");
  const auto ds = read_landmark_dataset(scratch("img.txt"), scratch("lm.txt"));
  REQUIRE(ds.size() == 2);
  CHECK(ds[0].image == scratch("a.nii.gz"));
  CHECK(ds[0].landmarks_vox.size() == 2);
  CHECK(ds[0].landmarks_vox[1][2] == 3.5);
  CHECK(ds[1].landmarks_vox[0][0] == 4.0);
  write_text(scratch("lm_short.txt"), "lm1.txt\n");
  CHECK_THROWS_AS(read_landmark_dataset(scratch("img.txt"), scratch("lm_short.txt")), Error);
  write_text(scratch("lm_bad.txt"), "1,2\n");
  CHECK_THROWS_AS(read_landmarks<3>(scratch("lm_bad.txt")), Error);
  write_text(scratch("lm_bad.txt"), "1,2,abc\n");
  CHECK_THROWS_AS(read_landmarks<3>(scratch("lm_bad.txt")), Error);
  write_text(scratch("lm_bad.txt"), "1,2,nan\n");
  CHECK_THROWS_AS(read_landmarks<3>(scratch("lm_bad.txt")), Error);

  PointSet<3> ps;
  ps.points = {{-36.351, -36.974, -1204.5}, {1e-3, 2.5, 3}};
  write_elastix_points(scratch("pts.txt"), ps);
  const auto back = read_elastix_points<3>(scratch("pts.txt"));
  CHECK_FALSE(back.is_index);
  CHECK(back.points == ps.points);
  write_text(scratch("pts_bad.txt"), "point\n3\n1 2 3\n4 5 6\n");
  CHECK_THROWS_AS(read_elastix_points<3>(scratch("pts_bad.txt")), Error);
  write_text(scratch("pts_bad.txt"), "point\n1\n1 2 3\n4 5 6\n");
  CHECK_THROWS_AS(read_elastix_points<3>(scratch("pts_bad.txt")), Error);
  write_text(scratch("pts_bad.txt"), "points\n1\n1 2 3\n");
  CHECK_THROWS_AS(read_elastix_points<3>(scratch("pts_bad.txt")), Error);
}

TEST_CASE("Writes are atomic: a failed write leaves the old file intact") {
  const auto img = random_image<float, 3>(Shape<3>{2, 2, 2}, 9);
  write_nifti(scratch("keep.nii"), img);
  const auto before = read_file_bytes(scratch("keep.nii"));
  Image<float, 3> broken = img;
  broken.spacing_mm[0] = std::nan("");
  CHECK_THROWS_AS(write_nifti(scratch("keep.nii"), broken), Error);
  CHECK(read_file_bytes(scratch("keep.nii")) == before);
}

TEST_CASE("Orientation: codes, permutations with flips, and reorientation to RAS keep every voxel's world position") {
  Image<float, 3> img(Shape<3>{4, 5, 6});
  for (index_t i = 0; i < img.voxels.size(); ++i) img.voxels.data()[i] = float(i);
  img.spacing_mm = {0.5, 1.5, 2.5};
  img.origin_mm = {3, -7, 11};
  CHECK(orientation_code(img) == "LPS");
  // x index runs to world -z (Inferior), y to world +x (Left), z to world -y (Anterior).
  img.direction = {0, 1, 0, 0, 0, -1, -1, 0, 0};
  CHECK(orientation_code(img) == "ILA");
  const auto ras = reorient_to_ras(img);
  CHECK(orientation_code(ras) == "RAS");
  CHECK(ras.size_xyz() == std::array<index_t, 3>{5, 4, 6});
  CHECK(ras.spacing_mm == Vec<3>{1.5, 2.5, 0.5});
  // Every voxel: same value at the same world point.
  for (index_t z = 0; z < ras.voxels.extent(0); ++z)
    for (index_t y = 0; y < ras.voxels.extent(1); ++y)
      for (index_t x = 0; x < ras.voxels.extent(2); ++x) {
        const auto p = ras.index_to_physical({double(x), double(y), double(z)});
        const auto q = img.physical_to_index(p);
        const auto xi = index_t(std::lround(q[0])), yi = index_t(std::lround(q[1])), zi = index_t(std::lround(q[2]));
        REQUIRE(std::abs(q[0] - double(xi)) < 1e-9);
        CHECK(ras.voxels(z, y, x) == img.voxels(zi, yi, xi));
      }
  // Reorienting twice changes nothing; an invalid permutation is an error.
  CHECK(bitwise_equal(reorient_to_ras(ras).voxels, ras.voxels));
  CHECK_THROWS_AS(permute_flip_axes(img, {0, 0, 1}, {false, false, false}), Error);
  // 2D: a flipped-x image becomes "RA".
  Image<float, 2> g(Shape<2>{2, 3});
  for (index_t i = 0; i < 6; ++i) g.voxels.data()[i] = float(i);
  CHECK(orientation_code(g) == "LP");
  const auto g2 = reorient_to_ras(g);
  CHECK(orientation_code(g2) == "RA");
  CHECK(g2.voxels(0, 0) == g.voxels(1, 2));
}
