// rlmed_quickstart — a first look at rlmed's core on data it makes itself.
//
// Builds a 3D head phantom (skull shell, brain, and seeded deep structures as ellipsoids, with
// Philox noise), finds each structure's centroid in millimetres — the kind of landmark the
// landmark-detection agents will search for — saves volume and landmarks to a safetensors file
// atomically, reloads it, and verifies the round trip bit for bit. Same seed, same output.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "rlmed/rlmed.hpp"

namespace {

struct Ellipsoid {
  std::array<double, 3> centre_mm;
  std::array<double, 3> radii_mm;
  float intensity;
  const char* name;
};

bool inside(const Ellipsoid& e, const std::array<double, 3>& p) {
  double s = 0;
  for (int a = 0; a < 3; ++a) {
    const double d = (p[a] - e.centre_mm[a]) / e.radii_mm[a];
    s += d * d;
  }
  return s <= 1.0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"rlmed quickstart: build a 3D head phantom, locate its structures, save and reload it"};
  std::uint64_t seed = 2026;
  int size = 64;
  double spacing_mm = 2.0;
  std::string out = "rlmed_quickstart_out";
  app.add_option("--seed", seed, "Philox seed (same seed, same phantom)")->capture_default_str();
  app.add_option("--size", size, "voxels per axis")->check(CLI::Range(16, 256))->capture_default_str();
  app.add_option("--spacing", spacing_mm, "voxel spacing in mm")->check(CLI::Range(0.25, 8.0))->capture_default_str();
  app.add_option("--out", out, "output folder")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    const auto t0 = std::chrono::steady_clock::now();
    const double extent_mm = size * spacing_mm;
    const double c = extent_mm / 2;
    rlmed::PhiloxStream rng(seed, /*stream=*/0);

    // Skull and brain, then five deep structures placed at seeded offsets inside the brain.
    std::vector<Ellipsoid> shapes{
        {{c, c, c}, {0.46 * extent_mm, 0.42 * extent_mm, 0.44 * extent_mm}, 0.9f, "skull"},
        {{c, c, c}, {0.42 * extent_mm, 0.38 * extent_mm, 0.40 * extent_mm}, 0.35f, "brain"},
    };
    const char* names[] = {"thalamus L", "thalamus R", "caudate L", "caudate R", "ventricle"};
    const float levels[] = {0.55f, 0.55f, 0.65f, 0.65f, 0.1f};
    for (int k = 0; k < 5; ++k) {
      const double side = (k == 4) ? 0.0 : (k % 2 == 0 ? -1.0 : 1.0);
      Ellipsoid e{};
      // Rejection sampling keeps structures apart, so no structure hides part of another.
      for (int attempt = 0;; ++attempt) {
        RLMED_CHECK(attempt < 1000, "could not place structure '", names[k], "' without overlap");
        e.centre_mm = {c + side * (0.08 + 0.08 * rng.uniform()) * extent_mm,
                       c + (rng.uniform() - 0.5) * 0.3 * extent_mm,
                       c + (rng.uniform() - 0.5) * 0.3 * extent_mm};
        for (int a = 0; a < 3; ++a) e.radii_mm[a] = (0.04 + 0.03 * rng.uniform()) * extent_mm;
        bool apart = true;
        for (std::size_t j = 2; j < shapes.size(); ++j) {
          double d2 = 0, reach = 0;
          for (int a = 0; a < 3; ++a) {
            const double d = e.centre_mm[a] - shapes[j].centre_mm[a];
            d2 += d * d;
            reach = std::max({reach, e.radii_mm[a], shapes[j].radii_mm[a]});
          }
          apart = apart && std::sqrt(d2) > 2 * reach + spacing_mm;
        }
        if (apart) break;
      }
      e.intensity = levels[k];
      e.name = names[k];
      shapes.push_back(e);
    }

    // Volume: last shape containing a voxel centre wins; labels 0 = air, k+1 = shape k.
    const rlmed::Shape<3> shape{size, size, size};  // z, y, x
    rlmed::Tensor<float, 3> volume(shape);
    rlmed::Tensor<std::uint8_t, 3> labels(shape);
    rlmed::parallel_for(0, size, [&](rlmed::index_t z) {
      for (rlmed::index_t y = 0; y < size; ++y)
        for (rlmed::index_t x = 0; x < size; ++x) {
          const std::array<double, 3> p{(x + 0.5) * spacing_mm, (y + 0.5) * spacing_mm, (z + 0.5) * spacing_mm};
          for (std::size_t k = 0; k < shapes.size(); ++k)
            if (inside(shapes[k], p)) {
              volume(z, y, x) = shapes[k].intensity;
              labels(z, y, x) = static_cast<std::uint8_t>(k + 1);
            }
        }
    }, /*grain=*/1);
    rlmed::Tensor<float, 3> noise(shape);
    rlmed::fill_normal(noise.view(), rng, 0.f, 0.03f);
    for (rlmed::index_t i = 0; i < volume.size(); ++i) volume.data()[i] += noise.data()[i];

    // Landmarks: centroid (mm, x y z) of every deep structure's voxels, and its volume (ml).
    const std::size_t n_struct = shapes.size() - 2;
    rlmed::Tensor<double, 2> landmarks_mm(rlmed::Shape<2>{static_cast<rlmed::index_t>(n_struct), 3});
    std::vector<double> volume_ml(n_struct), error_mm(n_struct);
    for (std::size_t s = 0; s < n_struct; ++s) {
      std::array<double, 3> sum{};
      std::int64_t count = 0;
      for (rlmed::index_t z = 0; z < size; ++z)
        for (rlmed::index_t y = 0; y < size; ++y)
          for (rlmed::index_t x = 0; x < size; ++x)
            if (labels(z, y, x) == s + 3) {
              sum[0] += (x + 0.5) * spacing_mm;
              sum[1] += (y + 0.5) * spacing_mm;
              sum[2] += (z + 0.5) * spacing_mm;
              ++count;
            }
      RLMED_CHECK(count > 0, "structure '", shapes[s + 2].name, "' covers no voxel; use a larger --size");
      double err2 = 0;
      for (int a = 0; a < 3; ++a) {
        landmarks_mm(static_cast<rlmed::index_t>(s), a) = sum[static_cast<std::size_t>(a)] / count;
        const double d = landmarks_mm(static_cast<rlmed::index_t>(s), a) - shapes[s + 2].centre_mm[static_cast<std::size_t>(a)];
        err2 += d * d;
      }
      volume_ml[s] = count * spacing_mm * spacing_mm * spacing_mm / 1000.0;
      error_mm[s] = std::sqrt(err2);
    }

    // Save atomically, reload, compare bit for bit.
    std::filesystem::create_directories(out);
    const auto path = std::filesystem::path(out) / "phantom.safetensors";
    rlmed::io::SafetensorsWriter writer;
    writer.add("volume", volume);
    writer.add("labels", labels);
    writer.add("landmarks_mm", landmarks_mm);
    writer.set_metadata("seed", std::to_string(seed));
    writer.set_metadata("spacing_mm", std::to_string(spacing_mm));
    writer.write(path);
    const auto reader = rlmed::io::SafetensorsReader::open(path);
    const bool identical = rlmed::bitwise_equal(reader.read<float, 3>("volume"), volume) &&
                           rlmed::bitwise_equal(reader.read<std::uint8_t, 3>("labels"), labels) &&
                           rlmed::bitwise_equal(reader.read<double, 2>("landmarks_mm"), landmarks_mm);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::printf("rlmed quickstart — 3D head phantom %d^3 voxels at %.2f mm (seed %llu, %d threads)\n\n", size,
                spacing_mm, static_cast<unsigned long long>(seed), rlmed::max_threads());
    std::printf("  %-12s %28s %12s %22s\n", "structure", "landmark (x, y, z) mm", "volume ml",
                "|centroid - design| mm");
    for (std::size_t s = 0; s < n_struct; ++s) {
      const auto i = static_cast<rlmed::index_t>(s);
      std::printf("  %-12s (%7.2f, %7.2f, %7.2f) %12.2f %22.2f\n", shapes[s + 2].name, landmarks_mm(i, 0),
                  landmarks_mm(i, 1), landmarks_mm(i, 2), volume_ml[s], error_mm[s]);
    }
    std::printf("\n  saved %s (%ju bytes), reloaded: %s\n", path.string().c_str(),
                static_cast<std::uintmax_t>(std::filesystem::file_size(path)),
                identical ? "bit-identical" : "MISMATCH");
    std::printf("  done in %.2f s\n", seconds);
    return identical ? 0 : 1;
  } catch (const rlmed::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
}
