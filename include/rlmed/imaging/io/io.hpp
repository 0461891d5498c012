// rlmed/imaging/io/io.hpp — read_image / write_image by file extension, and every format header.
//
// Design decision: the extension picks the format (.nii, .nii.gz, .mha, .mhd, .png, .jpg/.jpeg,
// .tif/.tiff, .npy); formats without geometry (PNG, JPEG, TIFF, .npy) get unit spacing, zero
// origin and identity direction. An unknown extension is an error listing the known ones.
#pragma once

#include <filesystem>
#include <string>

#include "rlmed/imaging/image.hpp"
#include "rlmed/imaging/io/idx.hpp"
#include "rlmed/imaging/io/jpeg.hpp"
#include "rlmed/imaging/io/landmarks.hpp"
#include "rlmed/imaging/io/metaimage.hpp"
#include "rlmed/imaging/io/nifti.hpp"
#include "rlmed/imaging/io/npy.hpp"
#include "rlmed/imaging/io/tiff.hpp"
#include "rlmed/imaging/png.hpp"

namespace rlmed::imaging {

enum class ImageFormat { nifti, metaimage, png, jpeg, tiff, npy };

inline ImageFormat image_format_of(const std::filesystem::path& path) {
  std::string name = path.filename().string();
  for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  auto ends = [&](const char* s) { return name.ends_with(s); };
  if (ends(".nii") || ends(".nii.gz")) return ImageFormat::nifti;
  if (ends(".mha") || ends(".mhd")) return ImageFormat::metaimage;
  if (ends(".png")) return ImageFormat::png;
  if (ends(".jpg") || ends(".jpeg")) return ImageFormat::jpeg;
  if (ends(".tif") || ends(".tiff")) return ImageFormat::tiff;
  if (ends(".npy")) return ImageFormat::npy;
  RLMED_THROW("'", path.string(), "': unknown image format; expected .nii, .nii.gz, .mha, .mhd, .png, .jpg, .jpeg, .tif, .tiff or .npy");
}

/// Reads any supported image as Image<T, Dim> (lossless element conversions only).
template <class T, std::size_t Dim>
Image<T, Dim> read_image(const std::filesystem::path& path) {
  switch (image_format_of(path)) {
    case ImageFormat::nifti: return read_nifti<T, Dim>(path);
    case ImageFormat::metaimage: return read_metaimage<T, Dim>(path);
    case ImageFormat::npy: {
      Image<T, Dim> img;
      img.voxels = read_npy_tensor<T, Dim>(path);
      return img;
    }
    case ImageFormat::png:
    case ImageFormat::jpeg: {
      static_assert(Dim == 2 || Dim == 3);
      if constexpr (Dim == 2) {
        Image<T, Dim> img;
        auto convert = [&](const auto& px) {
          img.voxels = Tensor<T, 2>::uninitialized(px.shape());
          for (index_t i = 0; i < px.size(); ++i)
            if (!convert_value<T>(px.data()[i], img.voxels.data()[i]))
              RLMED_THROW("'", path.string(), "': pixel value ", px.data()[i], " does not fit the requested element type");
        };
        if (image_format_of(path) == ImageFormat::jpeg) convert(read_jpeg_gray(path));
        else if (png_is_16bit(path)) convert(read_png_gray16(path));
        else convert(read_png_gray(path));
        return img;
      } else {
        RLMED_THROW("'", path.string(), "' is a 2D picture format; read it as a 2D image");
      }
    }
    case ImageFormat::tiff: {
      Image<T, Dim> img;
      if constexpr (Dim == 2) img.voxels = read_tiff<T>(path);
      else img.voxels = read_tiff_stack<T>(path);
      return img;
    }
  }
  RLMED_THROW("unreachable");
}

/// Writes an image; the format follows the extension (.nii[.gz], .mha, .npy, .tif[f], and for
/// 2D uint8/uint16 images .png, for 2D uint8 images .jpg).
template <class T, std::size_t Dim>
void write_image(const std::filesystem::path& path, const Image<T, Dim>& img) {
  switch (image_format_of(path)) {
    case ImageFormat::nifti: write_nifti(path, img); return;
    case ImageFormat::metaimage: write_metaimage(path, img, /*compress=*/true); return;
    case ImageFormat::npy: write_npy<T, Dim>(path, img.view()); return;
    case ImageFormat::tiff:
      if constexpr (Dim == 2) write_tiff<T>(path, img.view());
      else write_tiff_stack<T>(path, img.view());
      return;
    case ImageFormat::png:
      if constexpr (Dim == 2 && (std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::uint16_t>)) {
        write_png(path, img.view());
        return;
      } else {
        RLMED_THROW("'", path.string(), "': PNG output needs a 2D uint8 or uint16 image");
      }
    case ImageFormat::jpeg:
      if constexpr (Dim == 2 && std::is_same_v<T, std::uint8_t>) {
        write_jpeg(path, img.view());
        return;
      } else {
        RLMED_THROW("'", path.string(), "': JPEG output needs a 2D uint8 image");
      }
  }
}

}  // namespace rlmed::imaging
