// rlmed/imaging/io/nifti.hpp — NIfTI-1 single-file images (.nii, .nii.gz), read and write.
//
// Design decisions:
//  * Parsed from memory with zlib directly (no niftilib): we need every header field checked
//    against the bytes present before anything is allocated, and an .nii.gz is inflated in two
//    passes — first only the 348-byte header, then exactly the bytes that header promises — so a
//    forged header cannot make us inflate gigabytes.
//  * Either byte order; the data types of the standard except complex/RGB/bit (clear errors).
//  * Geometry: sform when sform_code > 0, else qform when qform_code > 0 (nibabel's
//    precedence), else the standard's "method 1" — diag(pixdim) with zero origin (nibabel
//    instead centres the origin and flips x for such files). NIfTI world space is RAS; rlmed's is
//    LPS (see image.hpp), so the first two world rows change sign on read and on write.
//    An affine with shear keeps it in `direction` (columns need not be orthonormal).
//  * scl_slope/scl_inter are applied when slope is non-zero and the pair is not the identity
//    (as nibabel does); integer outputs then require integral scaled values.
//  * Writes store sform and qform (code 1, scanner) so both nibabel and ITK read the same
//    geometry back; the file is gzip-compressed when the name ends in .gz; writes are atomic.
#pragma once

#include <array>
#include <cmath>
#include <filesystem>
#include <string>

#include "rlmed/core/file.hpp"
#include "rlmed/imaging/image.hpp"
#include "rlmed/imaging/io/compression.hpp"
#include "rlmed/imaging/io/raw_array.hpp"

namespace rlmed::imaging {

inline constexpr index_t kMaxNiftiExtent = 1 << 16;

/// The fields of a NIfTI-1 header that rlmed uses, as stored.
struct NiftiHeader {
  int ndim = 0;                         // dim[0]
  std::array<index_t, 7> dim{};         // dim[1..7]
  std::array<double, 8> pixdim{};       // pixdim[0..7] (pixdim[0] = qfac)
  int datatype = 0;
  ElementType element = ElementType::u8;
  double vox_offset = 352;
  double scl_slope = 0, scl_inter = 0;
  int qform_code = 0, sform_code = 0;
  std::array<double, 3> quatern{};      // b, c, d
  std::array<double, 3> qoffset{};
  std::array<double, 12> srow{};        // srow_x, srow_y, srow_z
  std::string descrip;
  bool little_endian = true;
  /// 4×4 voxel (i, j, k) → RAS mm matrix chosen by nibabel's precedence, row-major.
  std::array<double, 16> affine_ras{};
};

namespace detail {

inline ElementType nifti_element(int code, const std::string& source) {
  switch (code) {
    case 2: return ElementType::u8;
    case 4: return ElementType::i16;
    case 8: return ElementType::i32;
    case 16: return ElementType::f32;
    case 64: return ElementType::f64;
    case 256: return ElementType::i8;
    case 512: return ElementType::u16;
    case 768: return ElementType::u32;
    case 1024: return ElementType::i64;
    case 1280: return ElementType::u64;
    default: break;
  }
  RLMED_THROW("'", source, "' has NIfTI datatype ", code,
              "; supported: uint8/16/32/64, int8/16/32/64, float32/64 (not complex, RGB or bit)");
}

inline int nifti_code(ElementType t) {
  switch (t) {
    case ElementType::boolean:
    case ElementType::u8: return 2;
    case ElementType::i16: return 4;
    case ElementType::i32: return 8;
    case ElementType::f32: return 16;
    case ElementType::f64: return 64;
    case ElementType::i8: return 256;
    case ElementType::u16: return 512;
    case ElementType::u32: return 768;
    case ElementType::i64: return 1024;
    case ElementType::u64: return 1280;
  }
  return 0;
}

// Quaternion (b, c, d), offsets, voxel sizes and qfac → 4×4 affine (nifti1 standard formula).
inline std::array<double, 16> quatern_to_affine(double b, double c, double d, const std::array<double, 3>& q,
                                                const std::array<double, 3>& dxyz, double qfac) {
  double a = 1.0 - (b * b + c * c + d * d);
  if (a < 1e-7) {  // the standard's rule: renormalise (b, c, d) and take a = 0
    const double s = 1.0 / std::sqrt(b * b + c * c + d * d);
    b *= s; c *= s; d *= s;
    a = 0.0;
  } else {
    a = std::sqrt(a);
  }
  const double R[9] = {a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c),
                       2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b),
                       2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b};
  const double s[3] = {dxyz[0], dxyz[1], qfac * dxyz[2]};
  std::array<double, 16> m{};
  for (int r = 0; r < 3; ++r) {
    for (int col = 0; col < 3; ++col) m[r * 4 + col] = R[r * 3 + col] * s[col];
    m[r * 4 + 3] = q[r];
  }
  m[15] = 1;
  return m;
}

// Proper rotation matrix (row-major 3×3) → quaternion (b, c, d) with a ≥ 0.
inline std::array<double, 3> rotation_to_quatern(const std::array<double, 9>& R) {
  const double xx = R[0], xy = R[1], xz = R[2], yx = R[3], yy = R[4], yz = R[5], zx = R[6], zy = R[7], zz = R[8];
  double a = xx + yy + zz + 1.0, b, c, d;
  if (a > 0.5) {
    a = 0.5 * std::sqrt(a);
    b = 0.25 * (zy - yz) / a;
    c = 0.25 * (xz - zx) / a;
    d = 0.25 * (yx - xy) / a;
  } else {
    const double xd = 1.0 + xx - (yy + zz), yd = 1.0 + yy - (xx + zz), zd = 1.0 + zz - (xx + yy);
    if (xd > 1.0) {
      b = 0.5 * std::sqrt(xd); c = 0.25 * (xy + yx) / b; d = 0.25 * (xz + zx) / b; a = 0.25 * (zy - yz) / b;
    } else if (yd > 1.0) {
      c = 0.5 * std::sqrt(yd); b = 0.25 * (xy + yx) / c; d = 0.25 * (yz + zy) / c; a = 0.25 * (xz - zx) / c;
    } else {
      d = 0.5 * std::sqrt(zd); b = 0.25 * (xz + zx) / d; c = 0.25 * (yz + zy) / d; a = 0.25 * (yx - xy) / d;
    }
    if (a < 0.0) { b = -b; c = -c; d = -d; }
  }
  return {b, c, d};
}

}  // namespace detail

/// Parses and validates the 348-byte header at the start of `bytes` (uncompressed).
inline NiftiHeader parse_nifti_header(std::span<const std::byte> bytes, const std::string& source) {
  RLMED_CHECK(bytes.size() >= 348, "'", source, "' is too short for a NIfTI-1 header (", bytes.size(), " bytes, need 348)");
  NiftiHeader h;
  ByteCursor c(bytes, source);
  const auto size_le = c.get<std::int32_t>(true);
  if (size_le == 348) h.little_endian = true;
  else if (byteswap_value(size_le) == 348) h.little_endian = false;
  else RLMED_THROW("'", source, "' is not a NIfTI-1 file: sizeof_hdr is ", size_le, ", expected 348");
  const bool le = h.little_endian;
  c.seek(344);
  const auto magic = c.take(4);
  const char* m = reinterpret_cast<const char*>(magic.data());
  RLMED_CHECK(std::memcmp(m, "n+1\0", 4) == 0, "'", source, "' is not a single-file NIfTI-1 image (magic '",
              std::string(m, strnlen(m, 4)), "', expected 'n+1'); .hdr/.img pairs and NIfTI-2 are not supported");
  c.seek(40);
  const auto d0 = c.get<std::int16_t>(le);
  RLMED_CHECK(d0 >= 1 && d0 <= 7, "'", source, "' has dim[0] = ", d0, "; expected 1..7");
  h.ndim = d0;
  for (int i = 0; i < 7; ++i) {
    const auto v = c.get<std::int16_t>(le);
    h.dim[std::size_t(i)] = i < d0 ? v : 1;
    if (i < d0)
      RLMED_CHECK(v >= 1 && v <= kMaxNiftiExtent, "'", source, "' has dim[", i + 1, "] = ", v, "; expected 1..",
                  kMaxNiftiExtent);
  }
  c.seek(70);
  h.datatype = c.get<std::int16_t>(le);
  h.element = detail::nifti_element(h.datatype, source);
  const auto bitpix = c.get<std::int16_t>(le);
  RLMED_CHECK(bitpix == std::int16_t(8 * element_size(h.element)), "'", source, "' has bitpix ", bitpix,
              " but datatype ", h.datatype, " needs ", 8 * element_size(h.element));
  c.seek(76);
  for (auto& p : h.pixdim) p = c.get<float>(le);
  h.vox_offset = c.get<float>(le);
  h.scl_slope = c.get<float>(le);
  h.scl_inter = c.get<float>(le);
  RLMED_CHECK(std::isfinite(h.vox_offset) && h.vox_offset >= 348 && h.vox_offset <= double(1 << 30) &&
                  h.vox_offset == std::floor(h.vox_offset),
              "'", source, "' has vox_offset ", h.vox_offset, "; expected an integer ≥ 348");
  c.seek(148);
  const auto desc = c.take(80);
  h.descrip.assign(reinterpret_cast<const char*>(desc.data()), strnlen(reinterpret_cast<const char*>(desc.data()), 80));
  c.seek(252);
  h.qform_code = c.get<std::int16_t>(le);
  h.sform_code = c.get<std::int16_t>(le);
  for (auto& q : h.quatern) q = c.get<float>(le);
  for (auto& q : h.qoffset) q = c.get<float>(le);
  for (auto& s : h.srow) s = c.get<float>(le);

  for (int i = 1; i <= 3; ++i) {
    if (i <= h.ndim)
      RLMED_CHECK(std::isfinite(h.pixdim[std::size_t(i)]), "'", source, "' has a non-finite pixdim[", i, "]");
  }
  auto voxel_size = [&](int i) {
    const double p = i <= h.ndim ? std::abs(h.pixdim[std::size_t(i)]) : 1.0;
    return p > 0 ? p : 1.0;
  };
  const std::array<double, 3> dxyz{voxel_size(1), voxel_size(2), voxel_size(3)};
  if (h.sform_code > 0) {
    for (std::size_t k = 0; k < 12; ++k)
      RLMED_CHECK(std::isfinite(h.srow[k]), "'", source, "' has a non-finite sform entry ", h.srow);
    for (std::size_t k = 0; k < 12; ++k) h.affine_ras[k] = h.srow[k];
    h.affine_ras[15] = 1;
  } else if (h.qform_code > 0) {
    for (double q : h.quatern) RLMED_CHECK(std::isfinite(q), "'", source, "' has a non-finite qform quaternion");
    for (double q : h.qoffset) RLMED_CHECK(std::isfinite(q), "'", source, "' has a non-finite qform offset");
    const double qfac = h.pixdim[0] < 0 ? -1.0 : 1.0;
    h.affine_ras = detail::quatern_to_affine(h.quatern[0], h.quatern[1], h.quatern[2], h.qoffset, dxyz, qfac);
  } else {
    h.affine_ras = {dxyz[0], 0, 0, 0, 0, dxyz[1], 0, 0, 0, 0, dxyz[2], 0, 0, 0, 0, 1};
  }
  return h;
}

/// Number of bytes of voxel data a header promises (rlmed::Error beyond kMaxArrayElements).
inline std::size_t nifti_data_bytes(const NiftiHeader& h, const std::string& source = "NIfTI header") {
  return std::size_t(checked_element_count(h.dim, source)) * element_size(h.element);
}

/// A NIfTI file as header + decoded voxel array (extents in file order x, y, z, t, ... reversed
/// to row-major: shape[0] is the slowest axis).
struct NiftiFile {
  NiftiHeader header;
  RawArray data;
};

inline NiftiFile parse_nifti(std::span<const std::byte> file, const std::string& source) {
  std::vector<std::byte> inflated;
  std::span<const std::byte> bytes = file;
  if (is_gzip(file)) {
    const auto head = inflate_bounded(file, Framing::gzip, 1 << 20, source, 348);
    const NiftiHeader peek = parse_nifti_header(head, source);
    const std::size_t need = std::size_t(peek.vox_offset) + nifti_data_bytes(peek, source);
    inflated = inflate_bounded(file, Framing::gzip, need + (1 << 20), source);
    bytes = inflated;
  }
  NiftiFile f;
  f.header = parse_nifti_header(bytes, source);
  const auto& h = f.header;
  const std::size_t off = std::size_t(h.vox_offset);
  const std::size_t need = nifti_data_bytes(h, source);
  RLMED_CHECK(bytes.size() >= off && bytes.size() - off >= need, "'", source, "' is truncated: header promises ", need,
              " bytes of voxels at offset ", off, ", file has ", bytes.size() - std::min(bytes.size(), off));
  std::vector<index_t> shape;
  for (int i = h.ndim; i-- > 0;) shape.push_back(h.dim[std::size_t(i)]);
  f.data = make_raw_array(h.element, std::move(shape), bytes.subspan(off, need), h.little_endian, source);
  return f;
}

inline NiftiHeader read_nifti_header(const std::filesystem::path& path) {
  return parse_nifti(read_file_bytes(path), path.string()).header;
}

struct NiftiReadOptions {
  bool apply_scaling = true;  ///< apply scl_slope / scl_inter
};

/// Converts a parsed file into an Image (geometry in LPS, scaling applied).
template <class T, std::size_t Dim>
Image<T, Dim> nifti_to_image(const NiftiFile& f, const std::string& source, const NiftiReadOptions& opt = {}) {
  const auto& h = f.header;
  for (int i = int(Dim); i < 7; ++i)
    RLMED_CHECK(h.dim[std::size_t(i)] == 1, "'", source, "' has dimensions ", h.dim, " (ndim ", h.ndim,
                "); a ", Dim, "D image needs dim[", i + 1, "] = 1");
  RawArray data = f.data;
  data.shape.clear();
  for (int i = int(Dim); i-- > 0;) data.shape.push_back(h.dim[std::size_t(i)]);
  const bool scale = opt.apply_scaling && h.scl_slope != 0 && std::isfinite(h.scl_slope) &&
                     !(h.scl_slope == 1 && h.scl_inter == 0);
  Image<T, Dim> img;
  if (scale) {
    RLMED_CHECK(std::isfinite(h.scl_inter), "'", source, "' has a non-finite scl_inter");
    auto values = to_tensor<double, Dim>(data, source);
    img.voxels = Tensor<T, Dim>::uninitialized(values.shape());
    for (index_t i = 0; i < values.size(); ++i) {
      const double v = values.data()[i] * h.scl_slope + h.scl_inter;
      if (!convert_value<T>(v, img.voxels.data()[i]))
        RLMED_THROW("'", source, "': scaled value ", v, " at voxel ", i, " does not fit the requested element type");
    }
  } else {
    img.voxels = to_tensor<T, Dim>(data, source);
  }
  // RAS → LPS: negate world rows x and y. Columns of the 3×3 block are index axes.
  for (std::size_t col = 0; col < Dim; ++col) {
    double norm = 0;
    for (std::size_t r = 0; r < 3; ++r) norm += h.affine_ras[r * 4 + col] * h.affine_ras[r * 4 + col];
    norm = std::sqrt(norm);
    RLMED_CHECK(norm > 0 && std::isfinite(norm), "'", source, "' has a degenerate affine (index axis ", col, " has zero length)");
    img.spacing_mm[col] = norm;
    for (std::size_t r = 0; r < Dim; ++r) {
      const double sign = r < 2 ? -1.0 : 1.0;
      img.direction[r * Dim + col] = sign * h.affine_ras[r * 4 + col] / norm;
    }
  }
  for (std::size_t r = 0; r < Dim; ++r) img.origin_mm[r] = (r < 2 ? -1.0 : 1.0) * h.affine_ras[r * 4 + 3];
  img.validate_geometry();
  return img;
}

/// Reads a .nii or .nii.gz as Image<T, Dim> (see the conventions in image.hpp).
template <class T, std::size_t Dim>
Image<T, Dim> read_nifti(const std::filesystem::path& path, const NiftiReadOptions& opt = {}) {
  const auto bytes = read_file_bytes(path);
  return nifti_to_image<T, Dim>(parse_nifti(bytes, path.string()), path.string(), opt);
}

/// The bytes of a NIfTI-1 file holding `img` (uncompressed).
template <class T, std::size_t Dim>
std::vector<std::byte> nifti_bytes(const Image<T, Dim>& img, const std::string& description = "rlmed") {
  img.validate_geometry();
  std::vector<std::byte> out(352, std::byte{0});
  auto put = [&](std::size_t off, auto v) { std::memcpy(out.data() + off, &v, sizeof v); };
  static_assert(std::endian::native == std::endian::little, "NIfTI writer assumes a little-endian host");
  put(0, std::int32_t(348));
  put(40, std::int16_t(Dim));
  for (std::size_t a = 0; a < 7; ++a) {
    index_t n = a < Dim ? img.voxels.extent(tensor_axis<Dim>(a)) : 1;
    RLMED_CHECK(n >= 1 && n <= 32767, "NIfTI-1 cannot store an extent of ", n, " (shape ", img.shape(), ")");
    put(42 + 2 * a, std::int16_t(n));
  }
  const ElementType et = element_type_of<T>();
  put(70, std::int16_t(detail::nifti_code(et)));
  put(72, std::int16_t(8 * element_size(et)));
  // Affine in RAS (3D; a 2D image gets z = identity).
  Mat<3> dir{1, 0, 0, 0, 1, 0, 0, 0, 1};
  std::array<double, 3> sp{1, 1, 1}, org{0, 0, 0};
  for (std::size_t r = 0; r < Dim; ++r) {
    sp[r] = img.spacing_mm[r];
    org[r] = img.origin_mm[r];
    for (std::size_t col = 0; col < Dim; ++col) dir[r * 3 + col] = img.direction[r * Dim + col];
  }
  for (std::size_t col = 0; col < 3; ++col) { dir[0 * 3 + col] *= -1; dir[1 * 3 + col] *= -1; }
  org[0] *= -1;
  org[1] *= -1;
  double qfac = determinant<3>(dir) < 0 ? -1.0 : 1.0;
  put(76, float(qfac));
  for (std::size_t a = 0; a < 3; ++a) put(80 + 4 * a, float(sp[a]));
  put(108, float(352));
  put(112, float(1));  // scl_slope 1, inter 0: values as stored
  put(123, char(2));   // xyzt_units: mm
  std::memcpy(out.data() + 148, description.data(), std::min<std::size_t>(description.size(), 79));
  // qform: the rotation (third column flipped when improper). A sheared direction has no
  // quaternion form, so then only the sform is written (qform_code 0) rather than a wrong qform.
  std::array<double, 9> R{};
  for (std::size_t k = 0; k < 9; ++k) R[k] = dir[k];
  if (qfac < 0) for (std::size_t r = 0; r < 3; ++r) R[r * 3 + 2] *= -1;
  bool orthonormal = true;
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = 0; j < 3; ++j) {
      double dot = 0;
      for (std::size_t r = 0; r < 3; ++r) dot += R[r * 3 + i] * R[r * 3 + j];
      orthonormal = orthonormal && std::abs(dot - (i == j ? 1.0 : 0.0)) < 1e-6;
    }
  const auto q = detail::rotation_to_quatern(R);
  put(252, std::int16_t(orthonormal ? 1 : 0));
  put(254, std::int16_t(1));
  for (std::size_t k = 0; k < 3; ++k) put(256 + 4 * k, float(q[k]));
  for (std::size_t k = 0; k < 3; ++k) put(268 + 4 * k, float(org[k]));
  for (std::size_t r = 0; r < 3; ++r) {
    for (std::size_t col = 0; col < 3; ++col) put(280 + 16 * r + 4 * col, float(dir[r * 3 + col] * sp[col]));
    put(280 + 16 * r + 12, float(org[r]));
  }
  std::memcpy(out.data() + 344, "n+1\0", 4);
  out.resize(352 + img.voxels.bytes());
  if (img.voxels.size()) std::memcpy(out.data() + 352, img.voxels.data(), img.voxels.bytes());
  return out;
}

/// Writes `img` atomically as .nii, or gzip-compressed when the name ends in ".gz".
template <class T, std::size_t Dim>
void write_nifti(const std::filesystem::path& path, const Image<T, Dim>& img) {
  auto bytes = nifti_bytes(img);
  if (path.extension() == ".gz") bytes = deflate_bytes(bytes, Framing::gzip);
  write_file_atomic(path, bytes);
}

}  // namespace rlmed::imaging
