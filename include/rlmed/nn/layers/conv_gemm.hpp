// rlmed/nn/layers/conv_gemm.hpp — tiled im2col + GEMM kernels behind every convolution.
//
// Design: the column matrix of a whole sample is K^d x In x P floats (283 MB for the 480-channel
// head of PixelDRL-MG at 128^2): writing it and reading it back costs more than the GEMM. So the
// output columns are cut into tiles whose column block fits in cache (~1 MiB), and every
// (sample, tile) pair is one work item: its im2col block is built in a per-thread buffer and
// multiplied at once by a single-threaded Eigen GEMM (Eigen does not thread inside an OpenMP
// region). Each output element is written by exactly one work item, so forward results do not
// depend on the schedule. Weight gradients accumulate per thread and are summed in thread order:
// deterministic for a given thread count, which is rlmed's reproducibility contract (same seed,
// same machine). The data gradient of a stride-1 convolution is itself a convolution of dy with
// the flipped, transposed kernel (padding d(K-1) - p), so it reuses the tiled forward.
// The scratch belongs to the module: two threads must not run the same module instance at once
// (A3C workers each own a copy); called from inside another parallel region the kernels run
// serially on scratch slot 0.
//   forward:   y[b][:, tile] = W [Out, KV] * col(x[b])[:, tile] + bias
//   dW:        dW += sum over (b, tile) of dy[b][:, tile] * col(x[b])[:, tile]^T
#pragma once

#include <algorithm>
#include <vector>

#include "rlmed/core/interop.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/nn/layers/window.hpp"

namespace rlmed::nn {

namespace detail {

/// Columns [p0, p1) of im2col(x) into col [KV, p1 - p0] (row-major), zero outside the input.
template <class T>
void im2col_columns(const T* x, index_t channels, const Window3& w, index_t p0, index_t p1, T* col) {
  const index_t kvol = w.kernel_size(), isize = w.in_size(), n = p1 - p0;
  const index_t oxy = w.out[1] * w.out[2];
  for (index_t row = 0; row < channels * kvol; ++row) {
    const index_t c = row / kvol;
    index_t k = row % kvol;
    const index_t kx = k % w.kernel[2];
    k /= w.kernel[2];
    const index_t ky = k % w.kernel[1];
    const index_t kz = k / w.kernel[1];
    const T* xc = x + c * isize;
    T* out = col + row * n;
    index_t oz = p0 / oxy, oy = (p0 % oxy) / w.out[2], ox = p0 % w.out[2];
    index_t j = 0;
    while (j < n) {
      // One run along x within the current output row.
      const index_t run = std::min(n - j, w.out[2] - ox);
      const index_t iz = oz * w.stride[0] - w.pad[0] + kz * w.dil[0];
      const index_t iy = oy * w.stride[1] - w.pad[1] + ky * w.dil[1];
      T* o = out + j;
      if (iz < 0 || iz >= w.in[0] || iy < 0 || iy >= w.in[1]) {
        std::fill(o, o + run, T(0));
      } else {
        const T* xr = xc + (iz * w.in[1] + iy) * w.in[2];
        const index_t base = kx * w.dil[2] - w.pad[2];
        for (index_t t = 0; t < run; ++t) {
          const index_t ix = base + (ox + t) * w.stride[2];
          o[t] = (ix >= 0 && ix < w.in[2]) ? xr[ix] : T(0);
        }
      }
      j += run;
      ox = 0;
      if (++oy == w.out[1]) {
        oy = 0;
        ++oz;
      }
    }
  }
}

/// Scratch slot of the calling thread: its OpenMP thread number inside our own parallel_for,
/// 0 when parallel_for ran serially because it was nested in someone else's parallel region.
inline std::size_t scratch_slot(bool nested) { return nested ? 0 : static_cast<std::size_t>(thread_index()); }

/// Output columns per tile: the column block (KV x tile) stays around 1 MiB.
inline index_t conv_tile_columns(index_t kv, index_t p) {
  const index_t target = (index_t(1) << 18) / std::max<index_t>(kv, 1);
  const index_t tile = std::max<index_t>(64, (target + 15) / 16 * 16);
  return std::min(tile, p);
}

}  // namespace detail

/// Scratch of the tiled kernels, one buffer per thread; kept by the module between calls.
template <class T>
struct ConvScratch {
  std::vector<Tensor<T, 2>> col;      // per thread [KV, tile]
  std::vector<Tensor<T, 2>> partial;  // per thread [Out, KV] weight-gradient partials
  Tensor<T, 2> flipped;               // [In, Out * K^d] transposed flipped kernel
  void ensure_threads() {
    const auto n = static_cast<std::size_t>(max_threads());
    if (col.size() < n) col.resize(n);
    if (partial.size() < n) partial.resize(n);
  }
};

/// y[b] = Wmat * im2col(x[b]) (+ bias): x [B, In, in...], Wmat [Out, In * kvol], y [B, Out, out...].
template <class T>
void conv_forward_tiled(const T* x, index_t batch, index_t in_ch, const Window3& w, const T* wmat, index_t out_ch,
                        const T* bias, T* y, ConvScratch<T>& scratch) {
  const index_t P = w.out_size(), KV = in_ch * w.kernel_size(), isize = w.in_size();
  const index_t tile = detail::conv_tile_columns(KV, P), tiles = (P + tile - 1) / tile;
  scratch.ensure_threads();
  const bool nested = in_parallel_region();
  const Eigen::Map<const EigenRowMajorMatrix<T>> W(wmat, out_ch, KV);
  parallel_for(0, batch * tiles, [&](index_t item) {
    const index_t b = item / tiles, p0 = (item % tiles) * tile, p1 = std::min(P, p0 + tile), n = p1 - p0;
    const T* xb = x + b * in_ch * isize;
    Eigen::Map<EigenRowMajorMatrix<T>, 0, Eigen::OuterStride<>> yt(y + b * out_ch * P + p0, out_ch, n,
                                                                    Eigen::OuterStride<>(P));
    if (w.is_pointwise()) {
      const Eigen::Map<const EigenRowMajorMatrix<T>, 0, Eigen::OuterStride<>> xt(xb + p0, in_ch, n, Eigen::OuterStride<>(P));
      yt.noalias() = W * xt;
    } else {
      auto& col = scratch.col[detail::scratch_slot(nested)];
      col.resize(Shape<2>{KV, n});
      detail::im2col_columns(xb, in_ch, w, p0, p1, col.data());
      yt.noalias() = W * as_eigen_matrix(col.view());
    }
    if (bias) yt.colwise() += Eigen::Map<const EigenVector<T>>(bias, out_ch);
  }, 1);
}

/// dW [Out, In * kvol] += sum_b dy[b] * im2col(x[b])^T, tiled and reduced in thread order.
template <class T>
void conv_weight_grad_tiled(const T* x, const T* dy, index_t batch, index_t in_ch, const Window3& w, index_t out_ch,
                            T* dw, ConvScratch<T>& scratch) {
  const index_t P = w.out_size(), KV = in_ch * w.kernel_size(), isize = w.in_size();
  const index_t tile = detail::conv_tile_columns(KV, P), tiles = (P + tile - 1) / tile;
  scratch.ensure_threads();
  const bool nested = in_parallel_region();
  const int threads = nested ? 1 : max_threads();
  for (int t = 0; t < threads; ++t) {
    auto& part = scratch.partial[static_cast<std::size_t>(t)];
    part.resize(Shape<2>{out_ch, KV});
    fill(part.view(), T(0));
  }
  parallel_for(0, batch * tiles, [&](index_t item) {
    const index_t b = item / tiles, p0 = (item % tiles) * tile, p1 = std::min(P, p0 + tile), n = p1 - p0;
    auto& part = scratch.partial[detail::scratch_slot(nested)];
    const Eigen::Map<const EigenRowMajorMatrix<T>, 0, Eigen::OuterStride<>> g(dy + b * out_ch * P + p0, out_ch, n,
                                                                           Eigen::OuterStride<>(P));
    const T* xb = x + b * in_ch * isize;
    if (w.is_pointwise()) {
      const Eigen::Map<const EigenRowMajorMatrix<T>, 0, Eigen::OuterStride<>> xt(xb + p0, in_ch, n, Eigen::OuterStride<>(P));
      as_eigen_matrix(part.view()).noalias() += g * xt.transpose();
    } else {
      auto& col = scratch.col[detail::scratch_slot(nested)];
      col.resize(Shape<2>{KV, n});
      detail::im2col_columns(xb, in_ch, w, p0, p1, col.data());
      as_eigen_matrix(part.view()).noalias() += g * as_eigen_matrix(col.view()).transpose();
    }
  }, 1);
  Eigen::Map<EigenRowMajorMatrix<T>> DW(dw, out_ch, KV);
  for (int t = 0; t < threads; ++t) DW += as_eigen_matrix(scratch.partial[static_cast<std::size_t>(t)].view());
}

}  // namespace rlmed::nn
