// Deterministic mutation fuzzing of every imaging reader (NIfTI plain and gzip, MetaImage raw
// and compressed, .npy, .npz, IDX, TIFF, PNG, JPEG, landmark and elastix point files): each
// valid seed file is truncated at many lengths and mutated at random (Philox-seeded byte flips,
// random bytes, extreme integers at random offsets, inserted and deleted runs). The only
// acceptable outcomes are a successful parse or rlmed::Error — never another exception, a
// crash, an out-of-bounds access or a runaway allocation (CI runs this under ASan/UBSan).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "rlmed/core/philox.hpp"
#include "rlmed/imaging/io/io.hpp"

using namespace rlmed;
using namespace rlmed::imaging;
namespace fs = std::filesystem;

namespace {

using Bytes = std::vector<std::byte>;

Bytes file_bytes(const fs::path& p) { return read_file_bytes(p); }

fs::path scratch(const std::string& name) {
  const auto dir = fs::temp_directory_path() / "rlmed_test_imaging_fuzz";
  fs::create_directories(dir);
  return dir / name;
}

void write_bytes(const fs::path& p, const Bytes& b) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

struct Tally {
  int accepted = 0, rejected = 0;
};

// Runs the parser on one image of a file; fails the test on anything but success or rlmed::Error.
void exercise(const std::function<void(const Bytes&)>& parse, const Bytes& b, Tally& t, const char* what) {
  try {
    parse(b);
    ++t.accepted;
  } catch (const rlmed::Error&) {
    ++t.rejected;
  } catch (const std::exception& e) {
    FAIL(what << ": a mutated file raised " << typeid(e).name() << " instead of rlmed::Error: " << e.what());
  }
}

Bytes mutate(const Bytes& seed, PhiloxStream& rng) {
  Bytes b = seed;
  const int edits = 1 + int(rng.uniform_int(6));
  for (int e = 0; e < edits && !b.empty(); ++e) {
    const auto pos = std::size_t(rng.uniform_int(std::uint32_t(b.size())));
    switch (rng.uniform_int(6)) {
      case 0: b[pos] ^= std::byte(1u << rng.uniform_int(8)); break;
      case 1: b[pos] = std::byte(rng.uniform_int(256)); break;
      case 2: {  // an extreme 16/32-bit value (sizes, offsets, counts)
        static constexpr std::uint32_t extremes[] = {0, 1, 0x7fff, 0x8000, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff};
        const std::uint32_t v = extremes[rng.uniform_int(8)];
        for (std::size_t k = 0; k < 4 && pos + k < b.size(); ++k) b[pos + k] = std::byte((v >> (8 * k)) & 0xff);
        break;
      }
      case 3: b.insert(b.begin() + std::ptrdiff_t(pos), std::size_t(1 + rng.uniform_int(16)), std::byte(rng.uniform_int(256))); break;
      case 4: b.erase(b.begin() + std::ptrdiff_t(pos), b.begin() + std::ptrdiff_t(std::min(b.size(), pos + 1 + rng.uniform_int(16)))); break;
      default: {  // an ASCII digit run (text headers)
        const char digits[] = "9999999999";
        for (std::size_t k = 0; k < 10 && pos + k < b.size(); ++k) b[pos + k] = std::byte(digits[k]);
        break;
      }
    }
  }
  return b;
}

// Truncations (all prefixes of short files, a spread of them for long ones) and random mutations.
Tally fuzz(const char* what, const Bytes& seed, const std::function<void(const Bytes&)>& parse, int mutations,
           std::uint64_t stream) {
  Tally t;
  exercise(parse, seed, t, what);
  REQUIRE_MESSAGE(t.accepted == 1, std::string(what) << ": the unmutated seed file must parse");
  const std::size_t step = std::max<std::size_t>(1, seed.size() / 400);
  for (std::size_t n = 0; n < seed.size(); n += step) exercise(parse, Bytes(seed.begin(), seed.begin() + std::ptrdiff_t(n)), t, what);
  PhiloxStream rng(20261124, stream);
  for (int i = 0; i < mutations; ++i) exercise(parse, mutate(seed, rng), t, what);
  MESSAGE(std::string(what) << ": " << t.accepted << " accepted, " << t.rejected << " rejected with rlmed::Error");
  CHECK(t.rejected > 0);
  return t;
}

template <class T, std::size_t Dim>
Image<T, Dim> small_image(const Shape<Dim>& s) {
  Image<T, Dim> img(s);
  for (index_t i = 0; i < img.voxels.size(); ++i) img.voxels.data()[i] = static_cast<T>((i * 37) % 101);
  img.spacing_mm[0] = 0.75;
  return img;
}

}  // namespace

TEST_CASE("fuzz: NIfTI (.nii and .nii.gz)") {
  const auto img = small_image<std::int16_t, 3>(Shape<3>{3, 4, 5});
  const Bytes nii = nifti_bytes(img);
  auto parse = [](const Bytes& b) {
    const auto f = parse_nifti(b, "fuzz.nii");
    (void)nifti_to_image<float, 3>(f, "fuzz.nii");
  };
  fuzz("nii", nii, parse, 3000, 1);
  fuzz("nii.gz", deflate_bytes(nii, Framing::gzip), parse, 1500, 2);
}

TEST_CASE("fuzz: MetaImage (raw and zlib-compressed)") {
  const auto img = small_image<float, 2>(Shape<2>{6, 5});
  for (bool compress : {false, true}) {
    write_metaimage(scratch("seed.mha"), img, compress);
    fuzz(compress ? "mha (zlib)" : "mha", file_bytes(scratch("seed.mha")),
         [](const Bytes& b) { (void)metaimage_to_image<float, 2>(parse_metaimage(b, "fuzz.mha"), "fuzz.mha"); }, 2000,
         compress ? 4 : 3);
  }
}

TEST_CASE("fuzz: .npy and .npz") {
  const auto img = small_image<double, 2>(Shape<2>{4, 7});
  const Bytes npy = npy_bytes(raw_array_of<double, 2>(img.view()));
  fuzz("npy", npy, [](const Bytes& b) { (void)to_tensor<float, 2>(parse_npy(b, "fuzz.npy"), "fuzz.npy"); }, 2000, 5);
  for (bool compress : {false, true}) {
    NpzWriter w;
    w.add<double, 2>("a", img.view());
    Tensor<std::uint8_t, 1> lab(Shape<1>{9}, 3);
    w.add<std::uint8_t, 1>("labels", lab.view());
    fuzz(compress ? "npz (deflate)" : "npz", w.to_bytes(compress),
         [](const Bytes& b) {
           const auto z = NpzArchive::from_bytes(b, "fuzz.npz");
           for (const auto& n : z.names()) (void)z.at(n).numel();
         },
         2000, compress ? 7 : 6);
  }
}

TEST_CASE("fuzz: MNIST IDX (raw and gzip)") {
  Bytes raw = {std::byte{0}, std::byte{0}, std::byte{8}, std::byte{3}};
  for (std::uint32_t e : {3u, 4u, 5u})
    for (int s = 24; s >= 0; s -= 8) raw.push_back(std::byte((e >> s) & 0xff));
  for (int i = 0; i < 60; ++i) raw.push_back(std::byte(i));
  auto parse = [](const Bytes& b) { (void)parse_idx(b, "fuzz.idx"); };
  fuzz("idx", raw, parse, 1500, 8);
  fuzz("idx.gz", deflate_bytes(raw, Framing::gzip), parse, 1500, 9);
}

TEST_CASE("fuzz: TIFF (multi-page, deflate)") {
  Tensor<std::uint16_t, 3> stack(Shape<3>{2, 6, 5});
  for (index_t i = 0; i < stack.size(); ++i) stack.data()[i] = std::uint16_t(i * 911);
  write_tiff_stack<std::uint16_t>(scratch("seed.tif"), stack.view());
  fuzz("tiff", file_bytes(scratch("seed.tif")), [](const Bytes& b) { (void)parse_tiff(b, "fuzz.tif"); }, 1500, 10);
}

TEST_CASE("fuzz: PNG and JPEG decoders") {
  Image<std::uint8_t, 2> g(Shape<2>{12, 10});
  for (index_t i = 0; i < g.voxels.size(); ++i) g.voxels.data()[i] = std::uint8_t(i * 7);
  write_image(scratch("seed.png"), g);
  fuzz("png", file_bytes(scratch("seed.png")),
       [](const Bytes& b) {
         png_image image;
         std::vector<std::uint8_t> px;
         rlmed::imaging::detail::decode_png("fuzz.png", PNG_FORMAT_GRAY, b, image, px);
       },
       1000, 11);
  write_image(scratch("seed.jpg"), g);
  fuzz("jpeg", file_bytes(scratch("seed.jpg")),
       [](const Bytes& b) {
         int r = 0, c = 0, ch = 0;
         std::vector<std::uint8_t> px;
         const auto err = rlmed::imaging::detail::decode_jpeg(b, JCS_GRAYSCALE, r, c, ch, px);
         if (!err.empty()) RLMED_THROW("jpeg: ", err);
       },
       1000, 12);
}

TEST_CASE("fuzz: landmark and elastix point files") {
  const std::string lm = "10,20,30\n1.5, 2.5 ,3.5\n-4e1 5 6\n";
  const std::string pts = "point\n3\n-36.351 -36.974 -1204.5\n98.883 -26.046 -1324.5\n1 2 3\n";
  auto as_bytes = [](const std::string& s) { return Bytes(reinterpret_cast<const std::byte*>(s.data()), reinterpret_cast<const std::byte*>(s.data()) + s.size()); };
  fuzz("landmarks", as_bytes(lm), [](const Bytes& b) { write_bytes(scratch("f_lm.txt"), b); (void)read_landmarks<3>(scratch("f_lm.txt")); }, 400, 13);
  fuzz("elastix points", as_bytes(pts), [](const Bytes& b) { write_bytes(scratch("f_pts.txt"), b); (void)read_elastix_points<3>(scratch("f_pts.txt")); }, 400, 14);
}
