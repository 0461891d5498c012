// rlmed/core/interop.hpp — zero-copy adapters from host tensors to xtensor and Eigen.
//
// Design: rlmed owns its memory layout (row-major, contiguous); Eigen and xtensor are used as
// views over it — Eigen for GEMM in the nn layers, xtensor for NumPy-style expressions in the
// imaging code. No adapter copies: writing through the adapter writes the tensor.
#pragma once

#include <Eigen/Core>
#include <xtensor/xadapt.hpp>

#include "rlmed/core/error.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed {

template <class T>
using EigenRowMajorMatrix = Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using EigenVector = Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, 1>;

/// A rank-2 view as an Eigen row-major matrix map (rows = extent 0, cols = extent 1).
template <class T>
auto as_eigen_matrix(TensorView<T, 2, cpu> v) {
  using Base = std::conditional_t<std::is_const_v<T>, const EigenRowMajorMatrix<T>, EigenRowMajorMatrix<T>>;
  return Eigen::Map<Base>(v.data(), v.extent(0), v.extent(1));  // slices need not be aligned
}
/// Any view reshaped to rows x cols (rows * cols must equal its size) as an Eigen matrix map.
template <class T, std::size_t Rank>
auto as_eigen_matrix(TensorView<T, Rank, cpu> v, index_t rows, index_t cols) {
  RLMED_CHECK(rows >= 0 && cols >= 0 && rows * cols == v.size(), "cannot view a tensor of shape ", v.shape(),
              " as a ", rows, "x", cols, " matrix");
  using Base = std::conditional_t<std::is_const_v<T>, const EigenRowMajorMatrix<T>, EigenRowMajorMatrix<T>>;
  return Eigen::Map<Base>(v.data(), rows, cols);
}
/// All elements of a view as an Eigen column-vector map.
template <class T, std::size_t Rank>
auto as_eigen_vector(TensorView<T, Rank, cpu> v) {
  using Base = std::conditional_t<std::is_const_v<T>, const EigenVector<T>, EigenVector<T>>;
  return Eigen::Map<Base>(v.data(), v.size());
}
template <class T>
auto as_eigen_matrix(Tensor<T, 2, cpu>& t) { return as_eigen_matrix(t.view()); }
template <class T>
auto as_eigen_matrix(const Tensor<T, 2, cpu>& t) { return as_eigen_matrix(t.view()); }

/// A view as an xtensor expression (xt::adapt without ownership), same shape, row-major.
template <class T, std::size_t Rank>
auto as_xtensor(TensorView<T, Rank, cpu> v) {
  std::array<std::size_t, Rank> shape{};
  for (std::size_t i = 0; i < Rank; ++i) shape[i] = static_cast<std::size_t>(v.extent(i));
  return xt::adapt(v.data(), static_cast<std::size_t>(v.size()), xt::no_ownership(), shape);
}
template <class T, std::size_t Rank>
auto as_xtensor(Tensor<T, Rank, cpu>& t) { return as_xtensor(t.view()); }
template <class T, std::size_t Rank>
auto as_xtensor(const Tensor<T, Rank, cpu>& t) { return as_xtensor(t.view()); }

}  // namespace rlmed
