// rlmed/nn/init.hpp — deterministic weight initialisers keyed by a Philox stream.
//
// Design: an initialiser is a pure function of (shape, fan, stream position), so the same seed
// gives the same network on every machine and thread count. Fans follow PyTorch: for a weight
// [Out, In, k...], fan_in = In * prod(k), fan_out = Out * prod(k).
#pragma once

#include <Eigen/QR>
#include <cmath>

#include "rlmed/core/interop.hpp"
#include "rlmed/core/random.hpp"

namespace rlmed::nn::init {

struct Fans {
  index_t in = 1;
  index_t out = 1;
};

/// Fans of a weight tensor laid out [Out, In, k...] (or [Out, In] for linear layers).
template <std::size_t Rank>
Fans fans_of(const Shape<Rank>& shape) {
  static_assert(Rank >= 2, "fans need a weight of rank >= 2");
  index_t receptive = 1;
  for (std::size_t i = 2; i < Rank; ++i) receptive *= shape[i];
  return {shape[1] * receptive, shape[0] * receptive};
}

/// He/Kaiming normal: N(0, gain^2 / fan_in), gain = sqrt(2) for ReLU networks.
template <class T, std::size_t Rank>
void he_normal(TensorView<T, Rank> w, PhiloxStream& rng, double gain = std::sqrt(2.0)) {
  const auto f = fans_of(w.shape());
  fill_normal(w, rng, T(0), static_cast<T>(gain / std::sqrt(double(f.in))));
}

/// He/Kaiming uniform: U(-b, b), b = gain * sqrt(3 / fan_in).
template <class T, std::size_t Rank>
void he_uniform(TensorView<T, Rank> w, PhiloxStream& rng, double gain = std::sqrt(2.0)) {
  const auto f = fans_of(w.shape());
  const double b = gain * std::sqrt(3.0 / double(f.in));
  fill_uniform(w, rng, static_cast<T>(-b), static_cast<T>(b));
}

/// Xavier/Glorot uniform: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)).
template <class T, std::size_t Rank>
void xavier_uniform(TensorView<T, Rank> w, PhiloxStream& rng, double gain = 1.0) {
  const auto f = fans_of(w.shape());
  const double b = gain * std::sqrt(6.0 / double(f.in + f.out));
  fill_uniform(w, rng, static_cast<T>(-b), static_cast<T>(b));
}

/// Xavier/Glorot normal: N(0, gain^2 * 2 / (fan_in + fan_out)).
template <class T, std::size_t Rank>
void xavier_normal(TensorView<T, Rank> w, PhiloxStream& rng, double gain = 1.0) {
  const auto f = fans_of(w.shape());
  fill_normal(w, rng, T(0), static_cast<T>(gain * std::sqrt(2.0 / double(f.in + f.out))));
}

/// Orthogonal (Saxe et al. 2014): the weight viewed as [Out, fan_in] gets orthonormal rows (or
/// columns, whichever are fewer), times `gain`. QR of a Gaussian matrix with the signs of R's
/// diagonal folded in, so the distribution is uniform over orthogonal matrices.
template <class T, std::size_t Rank>
void orthogonal(TensorView<T, Rank> w, PhiloxStream& rng, double gain = 1.0) {
  static_assert(Rank >= 2);
  const index_t rows = w.extent(0);
  const index_t cols = w.size() / std::max<index_t>(rows, 1);
  const bool transpose = rows < cols;
  const index_t m = transpose ? cols : rows, n = transpose ? rows : cols;
  Tensor<double, 2> g(Shape<2>{m, n});
  fill_normal(g.view(), rng);
  Eigen::MatrixXd a = as_eigen_matrix(g.view());
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(a);
  Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(m, n);
  const Eigen::MatrixXd r = qr.matrixQR().topLeftCorner(n, n);
  for (index_t j = 0; j < n; ++j)
    if (r(j, j) < 0) q.col(j) *= -1.0;
  auto out = as_eigen_matrix(w, rows, cols);
  if (transpose) {
    out = (gain * q.transpose()).template cast<T>();
  } else {
    out = (gain * q).template cast<T>();
  }
}

}  // namespace rlmed::nn::init
