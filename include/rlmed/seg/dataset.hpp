// rlmed/seg/dataset.hpp — 2D segmentation data: image/mask pairs in memory, the loaders that
// fill them (a folder of pairs, the ISBI 2012 EM set, generated slice phantoms), fold splits and
// random training crops. Every segmentation method (seg/method.hpp) reads this one type.
//
// Design decisions:
//  * One concrete type, no templates: images and masks are float [H, W] tensors, masks exactly
//    0/1. Images of one set may differ in size; every image has a mask of its own shape (checked
//    on insertion, so a bad pair is an rlmed::Error naming it, never a silent crop).
//  * Intensities are z-scored per image by default (mean 0, sd 1). The carve environment treats
//    an exact 0 as "already background", and a z-scored 0 lies between dark and bright tissue
//    instead of at the dark end (see tests/pixeldrl/test_pixeldrl_learning.cpp).
//  * A folder of pairs is `<dir>/<images>/<name>.<ext>` with `<dir>/<masks>/<name>.<ext'>`, the
//    subfolder names one of image/label, images/labels, image/mask, images/masks; pairs are
//    matched by name without extension (.nii.gz counts as one extension), so formats may differ
//    between an image and its mask. An image without a mask or a mask without an image is an
//    error. Names sort numerically when all are integers (0, 1, …, 10), else lexically.
//  * Mask rule: foreground = value > threshold (default 0: any non-zero value), or, with
//    foreground_is_low, value < threshold. The ISBI 2012 EM labels are 255 = cell interior and 0 =
//    membrane, and the task segments membranes, so that loader uses foreground_is_low with 128.
//  * Downsampling by an integer factor averages blocks of the image; a mask pixel is foreground
//    when at least half of its block is (the protocol of the EM U-Net learning test).
//  * k-fold splits are contiguous blocks in set order (fold f tests [f·n/k, (f+1)·n/k)): the EM
//    protocol of issue 6 (train on 24, test on 6) is k = 5.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/io/io.hpp"
#include "rlmed/imaging/phantom.hpp"

namespace rlmed::seg {

/// 2D images with binary masks of the same shape.
struct SegmentationSet {
  std::vector<Tensor<float, 2>> images;  ///< [H, W] each
  std::vector<Tensor<float, 2>> masks;   ///< [H, W] each, values exactly 0 or 1
  std::vector<std::string> names;

  [[nodiscard]] std::size_t size() const noexcept { return images.size(); }
  [[nodiscard]] bool empty() const noexcept { return images.empty(); }

  /// Appends one pair after checking it (same shape, finite image, 0/1 mask).
  void add(std::string name, Tensor<float, 2> image, Tensor<float, 2> mask) {
    RLMED_CHECK(image.extent(0) >= 1 && image.extent(1) >= 1, "SegmentationSet: image '", name,
                "' is empty (shape ", image.shape(), ")");
    RLMED_CHECK(mask.shape() == image.shape(), "SegmentationSet: mask of '", name, "' has shape ", mask.shape(),
                ", expected the image's shape ", image.shape());
    for (index_t i = 0; i < image.size(); ++i)
      RLMED_CHECK(std::isfinite(image.data()[i]), "SegmentationSet: image '", name, "' holds ", image.data()[i],
                  " at flat index ", i, " (expected finite)");
    for (index_t i = 0; i < mask.size(); ++i)
      RLMED_CHECK(mask.data()[i] == 0.0f || mask.data()[i] == 1.0f, "SegmentationSet: mask of '", name, "' holds ",
                  mask.data()[i], " at flat index ", i, " (expected 0 or 1)");
    images.push_back(std::move(image));
    masks.push_back(std::move(mask));
    names.push_back(std::move(name));
  }

  /// The pairs at `indices`, in that order (copies).
  [[nodiscard]] SegmentationSet subset(std::span<const std::size_t> indices) const {
    SegmentationSet out;
    for (std::size_t i : indices) {
      RLMED_CHECK(i < size(), "SegmentationSet::subset: index ", i, " outside a set of ", size());
      out.images.push_back(images[i]);
      out.masks.push_back(masks[i]);
      out.names.push_back(names[i]);
    }
    return out;
  }

  /// The first n pairs (the n-shot protocols).
  [[nodiscard]] SegmentationSet first(std::size_t n) const {
    RLMED_CHECK(n >= 1 && n <= size(), "SegmentationSet::first: asked for ", n, " of ", size(), " pairs");
    std::vector<std::size_t> idx(n);
    for (std::size_t i = 0; i < n; ++i) idx[i] = i;
    return subset(idx);
  }

  /// Smallest height and width over the set.
  [[nodiscard]] std::pair<index_t, index_t> min_size() const {
    RLMED_CHECK(!empty(), "SegmentationSet: the set is empty");
    index_t h = images[0].extent(0), w = images[0].extent(1);
    for (const auto& im : images) {
      h = std::min(h, im.extent(0));
      w = std::min(w, im.extent(1));
    }
    return {h, w};
  }
};

struct FoldSplit {
  SegmentationSet train, test;
};

/// Fold `fold` of `folds` contiguous blocks: test = [fold·n/folds, (fold+1)·n/folds), train = the rest.
inline FoldSplit k_fold_split(const SegmentationSet& set, int folds, int fold) {
  RLMED_CHECK(folds >= 2 && static_cast<std::size_t>(folds) <= set.size(), "k_fold_split: need 2 <= folds <= ",
              set.size(), " (the set size), found ", folds);
  RLMED_CHECK(fold >= 0 && fold < folds, "k_fold_split: fold must be in [0, ", folds, "), found ", fold);
  const std::size_t n = set.size(), lo = n * std::size_t(fold) / std::size_t(folds),
                    hi = n * std::size_t(fold + 1) / std::size_t(folds);
  std::vector<std::size_t> train, test;
  for (std::size_t i = 0; i < n; ++i) (i >= lo && i < hi ? test : train).push_back(i);
  return {set.subset(train), set.subset(test)};
}

// ---- preprocessing ------------------------------------------------------------------------------

struct LoadOptions {
  index_t downsample = 1;         ///< integer factor (block mean; mask: block majority)
  bool zscore = true;             ///< z-score each image
  double mask_threshold = 0;      ///< foreground = value > threshold (or < with foreground_is_low)
  bool foreground_is_low = false;
};

/// Mean 0, standard deviation 1 (a constant image becomes all zeros).
inline void zscore_in_place(Tensor<float, 2>& image) {
  double sum = 0, sum2 = 0;
  for (float v : image) sum += v;
  const double n = double(image.size()), mean = sum / n;
  for (float v : image) sum2 += (double(v) - mean) * (double(v) - mean);
  const double sd = std::sqrt(sum2 / n);
  for (float& v : image) v = sd > 0 ? static_cast<float>((double(v) - mean) / sd) : 0.0f;
}

/// Binary mask from raw label values under `o`'s rule.
inline Tensor<float, 2> binarize_mask(const Tensor<float, 2>& raw, const LoadOptions& o) {
  Tensor<float, 2> m(raw.shape());
  for (index_t i = 0; i < raw.size(); ++i) {
    const double v = raw.data()[i];
    m.data()[i] = (o.foreground_is_low ? v < o.mask_threshold : v > o.mask_threshold) ? 1.0f : 0.0f;
  }
  return m;
}

/// Block-mean downsampling of image and block-majority of mask by `factor`.
inline void downsample_pair(Tensor<float, 2>& image, Tensor<float, 2>& mask, index_t factor, const std::string& name) {
  if (factor == 1) return;
  RLMED_CHECK(factor >= 1, "downsample: factor must be >= 1, found ", factor);
  const index_t H = image.extent(0), W = image.extent(1);
  RLMED_CHECK(H % factor == 0 && W % factor == 0, "downsample: '", name, "' is ", H, "x", W,
              ", not divisible by the factor ", factor);
  const index_t h = H / factor, w = W / factor;
  Tensor<float, 2> im(Shape<2>{h, w}), mk(Shape<2>{h, w});
  const double inv = 1.0 / double(factor * factor);
  for (index_t y = 0; y < h; ++y)
    for (index_t x = 0; x < w; ++x) {
      double s = 0, m = 0;
      for (index_t dy = 0; dy < factor; ++dy)
        for (index_t dx = 0; dx < factor; ++dx) {
          s += image(y * factor + dy, x * factor + dx);
          m += mask(y * factor + dy, x * factor + dx);
        }
      im(y, x) = static_cast<float>(s * inv);
      mk(y, x) = m * inv >= 0.5 ? 1.0f : 0.0f;
    }
  image = std::move(im);
  mask = std::move(mk);
}

// ---- loaders ------------------------------------------------------------------------------------

namespace detail {

inline std::string stem_of(const std::filesystem::path& p) {
  std::string name = p.filename().string();
  std::string lower = name;
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (lower.ends_with(".nii.gz")) return name.substr(0, name.size() - 7);
  return p.stem().string();
}

inline bool is_integer_name(const std::string& s) {
  return !s.empty() && s.size() < 18 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// Image files of a folder by stem (hidden files and subfolders skipped).
inline std::map<std::string, std::filesystem::path> files_by_stem(const std::filesystem::path& dir) {
  std::map<std::string, std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (!e.is_regular_file() || e.path().filename().string().starts_with(".")) continue;
    (void)imaging::image_format_of(e.path());  // unknown extension: an error naming the file
    const std::string s = stem_of(e.path());
    RLMED_CHECK(!out.count(s), "load_pair_folder: two files named '", s, "' in ", dir.string(), ": ",
                out[s].filename().string(), " and ", e.path().filename().string());
    out[s] = e.path();
  }
  return out;
}

inline Tensor<float, 2> read_gray(const std::filesystem::path& p) {
  return imaging::read_image<float, 2>(p).voxels;
}

}  // namespace detail

/// The first existing (images, masks) subfolder pair of `dir` (see the header comment).
inline std::pair<std::filesystem::path, std::filesystem::path> pair_subfolders(const std::filesystem::path& dir) {
  static constexpr const char* kPairs[][2] = {{"image", "label"}, {"images", "labels"}, {"image", "mask"},
                                              {"images", "masks"}};
  for (const auto& p : kPairs)
    if (std::filesystem::is_directory(dir / p[0]) && std::filesystem::is_directory(dir / p[1]))
      return {dir / p[0], dir / p[1]};
  RLMED_THROW("load_pair_folder: '", dir.string(),
              "' has no image/mask subfolders; expected one of image+label, images+labels, image+mask, images+masks");
}

/// Loads every image/mask pair of `dir` (see the header comment for layout and rules).
inline SegmentationSet load_pair_folder(const std::filesystem::path& dir, const LoadOptions& o = {}) {
  RLMED_CHECK(std::filesystem::is_directory(dir), "load_pair_folder: '", dir.string(), "' is not a folder");
  const auto [image_dir, mask_dir] = pair_subfolders(dir);
  const auto images = detail::files_by_stem(image_dir);
  const auto masks = detail::files_by_stem(mask_dir);
  for (const auto& [s, p] : images)
    RLMED_CHECK(masks.count(s), "load_pair_folder: image ", p.string(), " has no mask named '", s, ".*' in ",
                mask_dir.string());
  for (const auto& [s, p] : masks)
    RLMED_CHECK(images.count(s), "load_pair_folder: mask ", p.string(), " has no image named '", s, ".*' in ",
                image_dir.string());
  RLMED_CHECK(!images.empty(), "load_pair_folder: no images in ", image_dir.string());
  std::vector<std::string> names;
  bool numeric = true;
  for (const auto& [s, p] : images) {
    names.push_back(s);
    numeric = numeric && detail::is_integer_name(s);
  }
  if (numeric)
    std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
      return std::stoll(a) < std::stoll(b);
    });
  SegmentationSet set;
  for (const auto& s : names) {
    Tensor<float, 2> image = detail::read_gray(images.at(s));
    const Tensor<float, 2> raw = detail::read_gray(masks.at(s));
    RLMED_CHECK(raw.shape() == image.shape(), "load_pair_folder: mask ", masks.at(s).string(), " has shape ",
                raw.shape(), " but its image ", images.at(s).string(), " has shape ", image.shape());
    Tensor<float, 2> mask = binarize_mask(raw, o);
    downsample_pair(image, mask, o.downsample, s);
    if (o.zscore) zscore_in_place(image);
    set.add(s, std::move(image), std::move(mask));
  }
  return set;
}

/// $RLMED_DATA_DIR, else ../shared/data (relative to the working directory).
inline std::filesystem::path default_data_dir() {
  const char* env = std::getenv("RLMED_DATA_DIR");
  return env && *env ? std::filesystem::path(env) : std::filesystem::path("../shared/data");
}

/// Folder of the 30 labelled ISBI 2012 EM pairs under a data root.
inline std::filesystem::path isbi2012_em_dir(const std::filesystem::path& data_root) {
  return data_root / "isbi2012-em" / "data" / "membrane" / "train";
}

/// The 30 labelled ISBI 2012 EM images (512², names 0…29) with membranes as foreground
/// (label < 128), downsampled by `downsample` (2: the 256² protocol) and z-scored.
inline SegmentationSet load_isbi2012_em(const std::filesystem::path& data_root, index_t downsample = 2) {
  const auto dir = isbi2012_em_dir(data_root);
  RLMED_CHECK(std::filesystem::is_directory(dir / "image"), "load_isbi2012_em: '", dir.string(),
              "' not found (set RLMED_DATA_DIR to the shared data folder)");
  LoadOptions o;
  o.downsample = downsample;
  o.mask_threshold = 128;
  o.foreground_is_low = true;
  return load_pair_folder(dir, o);
}

enum class PhantomTarget {
  organ,   ///< organ and lesions (label > 0)
  lesion,  ///< lesions only (label 2; may be empty)
};

struct PhantomSetOptions {
  index_t height = 64, width = 64;
  PhantomTarget target = PhantomTarget::organ;
  bool zscore = true;
  imaging::SlicePhantomOptions phantom = {};  ///< height/width overridden by the two above
};

/// `count` slice phantoms (imaging/phantom.hpp), phantom i generated with seed + i.
inline SegmentationSet make_phantom_set(std::size_t count, std::uint64_t seed, const PhantomSetOptions& o = {}) {
  RLMED_CHECK(count >= 1, "make_phantom_set: count must be >= 1");
  imaging::SlicePhantomOptions po = o.phantom;
  po.height = o.height;
  po.width = o.width;
  SegmentationSet set;
  for (std::size_t i = 0; i < count; ++i) {
    const auto ph = imaging::make_slice_phantom(po, seed + i);
    Tensor<float, 2> image = ph.image;
    Tensor<float, 2> mask(ph.labels.shape());
    for (index_t k = 0; k < mask.size(); ++k) {
      const auto l = ph.labels.data()[k];
      mask.data()[k] = (o.target == PhantomTarget::organ ? l != 0 : l == imaging::kSliceLesion) ? 1.0f : 0.0f;
    }
    if (o.zscore) zscore_in_place(image);
    set.add("phantom_" + std::to_string(seed + i), std::move(image), std::move(mask));
  }
  return set;
}

// ---- training crops -----------------------------------------------------------------------------

/// Fills x, y [batch, 1, crop, crop] with random crops (uniform image, uniform offset, random
/// flips when `flips`) of `set`. Draws from `rng` in a fixed order: image, y offset, x offset, flips.
inline void sample_crops(const SegmentationSet& set, index_t batch, index_t crop, bool flips, PhiloxStream& rng,
                         Tensor<float, 4>& x, Tensor<float, 4>& y) {
  RLMED_CHECK(!set.empty(), "sample_crops: the training set is empty");
  const auto [h, w] = set.min_size();
  RLMED_CHECK(crop >= 1 && crop <= h && crop <= w, "sample_crops: crop ", crop, " does not fit the smallest image (",
              h, "x", w, ")");
  RLMED_CHECK(batch >= 1, "sample_crops: batch must be >= 1, found ", batch);
  const index_t B = batch;
  x.resize(Shape<4>{B, 1, crop, crop});
  y.resize(x.shape());
  for (index_t b = 0; b < B; ++b) {
    const std::size_t k = rng.uniform_int(static_cast<std::uint32_t>(set.size()));
    const auto& im = set.images[k];
    const auto& mk = set.masks[k];
    const index_t oy = rng.uniform_int(static_cast<std::uint32_t>(im.extent(0) - crop + 1));
    const index_t ox = rng.uniform_int(static_cast<std::uint32_t>(im.extent(1) - crop + 1));
    const bool fy = flips && rng.uniform() < 0.5f, fx = flips && rng.uniform() < 0.5f;
    for (index_t r = 0; r < crop; ++r)
      for (index_t c = 0; c < crop; ++c) {
        const index_t sy = oy + (fy ? crop - 1 - r : r), sx = ox + (fx ? crop - 1 - c : c);
        x(b, 0, r, c) = im(sy, sx);
        y(b, 0, r, c) = mk(sy, sx);
      }
  }
}

}  // namespace rlmed::seg
