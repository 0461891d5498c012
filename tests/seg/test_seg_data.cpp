// Data test: the ISBI 2012 EM loader (seg::load_isbi2012_em) on $RLMED_DATA_DIR/isbi2012-em.
// Convention checked from the files: labels are 255 = cell interior, 0 = membrane, and the
// loader makes membranes the foreground, so foreground is the thin minority class. Exits 77
// (skipped) when the folder is missing.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>

#include "rlmed/imaging/png.hpp"
#include "rlmed/seg/dataset.hpp"

using namespace rlmed;
namespace fs = std::filesystem;

namespace {
fs::path data_root() {
  const char* env = std::getenv("RLMED_DATA_DIR");
  return fs::path(env ? env : RLMED_TEST_DATA_DIR);
}
}  // namespace

TEST_CASE("ISBI 2012 EM: 30 pairs in numeric order, membranes (raw label 0) are the foreground") {
  const auto full = seg::load_isbi2012_em(data_root(), 1);
  REQUIRE(full.size() == 30);
  for (std::size_t i = 0; i < full.size(); ++i) {
    CHECK(full.names[i] == std::to_string(i));
    CHECK(full.images[i].shape() == Shape<2>({512, 512}));
    CHECK(full.masks[i].shape() == Shape<2>({512, 512}));
  }
  // Against the raw label file, read independently: foreground exactly where the PNG is < 128.
  const auto raw = imaging::read_png_gray(seg::isbi2012_em_dir(data_root()) / "label" / "7.png");
  index_t agree = 0, membrane = 0;
  for (index_t k = 0; k < raw.size(); ++k) {
    agree += (raw.data()[k] < 128) == (full.masks[7].data()[k] == 1.0f);
    membrane += raw.data()[k] < 128;
  }
  CHECK(agree == raw.size());
  double fg = 0;
  for (const auto& m : full.masks)
    for (float v : m) fg += v;
  fg /= 30.0 * 512 * 512;
  MESSAGE("membrane (foreground) fraction over the 30 labels: " << fg);
  CHECK(fg > 0.05);
  CHECK(fg < 0.5);  // membranes are thin: the minority class
  CHECK(membrane > 0);

  const auto half = seg::load_isbi2012_em(data_root(), 2);
  CHECK(half.images[0].shape() == Shape<2>({256, 256}));
  double mean = 0;
  for (float v : half.images[0]) mean += v;
  CHECK(std::abs(mean / (256.0 * 256)) < 1e-3);  // z-scored
  const auto split = seg::k_fold_split(half, 5, 4);
  CHECK(split.train.size() == 24);
  CHECK(split.test.size() == 6);
  CHECK(split.test.names.front() == "24");
}

int main(int argc, char** argv) {
  if (!fs::exists(seg::isbi2012_em_dir(data_root()) / "image" / "0.png")) {
    std::printf("SKIPPED: ISBI 2012 EM data not found under %s (set RLMED_DATA_DIR)\n", data_root().c_str());
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
