// rlmed/nn/loss.hpp — losses with their gradients: MSE, Huber, BCE-with-logits, soft Dice,
// cross-entropy over channels.
//
// Design: a loss is a function (prediction, target, gradient out) -> value. It writes
// dL/dprediction into `grad` (resized to the prediction's shape) and returns the scalar loss in
// double. Reduction is the mean over elements (or pixels, or samples for Dice), PyTorch's
// default, so the gradient is already divided by the count. Optional per-sample weights (for
// prioritised replay's importance weights) multiply each sample's terms. A non-finite loss is an
// rlmed::Error: NaNs are caught where they appear, not epochs later.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>

#include "rlmed/core/error.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed::nn::loss {

namespace detail {
template <class T, std::size_t R, class U>
void check_same_shape(TensorView<const T, R> a, TensorView<const U, R> b, const char* what) {
  RLMED_CHECK(a.shape() == b.shape(), what, ": prediction shape ", a.shape(), " differs from target shape ", b.shape());
  RLMED_CHECK(a.size() > 0, what, ": empty prediction of shape ", a.shape(), "; a mean over no elements is undefined");
}
inline double check_finite(double v, const char* what) {
  RLMED_CHECK(std::isfinite(v), what, " is ", v, "; expected a finite loss (NaN or inf in the inputs?)");
  return v;
}
template <class T, std::size_t R>
T sample_weight(std::span<const T> w, TensorView<const T, R> pred, index_t i) {
  if (w.empty()) return T(1);
  const index_t per = pred.size() / pred.extent(0);
  return w[static_cast<std::size_t>(i / per)];
}
template <class T, std::size_t R>
void check_weights(std::span<const T> w, TensorView<const T, R> pred, const char* what) {
  RLMED_CHECK(w.empty() || static_cast<index_t>(w.size()) == pred.extent(0), what, ": ", w.size(),
              " sample weights for a batch of ", pred.extent(0));
}
}  // namespace detail

/// mean((pred - target)^2 * w_b)
template <class T, std::size_t R>
double mse(TensorView<const T, R> pred, TensorView<const T, R> target, Tensor<T, R>& grad,
           std::span<const T> sample_weights = {}) {
  detail::check_same_shape(pred, target, "mse");
  detail::check_weights(sample_weights, pred, "mse");
  grad.resize(pred.shape());
  const index_t n = pred.size();
  double sum = 0;
  for (index_t i = 0; i < n; ++i) {
    const T w = detail::sample_weight(sample_weights, pred, i);
    const T d = pred.data()[i] - target.data()[i];
    sum += double(w) * d * d;
    grad.data()[i] = T(2) * w * d / T(n);
  }
  return detail::check_finite(sum / double(n), "mse loss");
}

/// Huber (smooth L1 with threshold delta): 0.5 d^2 if |d| <= delta else delta (|d| - delta/2); mean.
template <class T, std::size_t R>
double huber(TensorView<const T, R> pred, TensorView<const T, R> target, Tensor<T, R>& grad, double delta = 1.0,
             std::span<const T> sample_weights = {}) {
  detail::check_same_shape(pred, target, "huber");
  detail::check_weights(sample_weights, pred, "huber");
  RLMED_CHECK(delta > 0, "huber: delta must be positive, found ", delta);
  grad.resize(pred.shape());
  const index_t n = pred.size();
  const T dl = static_cast<T>(delta);
  double sum = 0;
  for (index_t i = 0; i < n; ++i) {
    const T w = detail::sample_weight(sample_weights, pred, i);
    const T d = pred.data()[i] - target.data()[i];
    const T a = std::abs(d);
    sum += double(w) * (a <= dl ? T(0.5) * d * d : dl * (a - T(0.5) * dl));
    grad.data()[i] = w * (a <= dl ? d : dl * (d > 0 ? T(1) : T(-1))) / T(n);
  }
  return detail::check_finite(sum / double(n), "huber loss");
}

/// Binary cross-entropy on logits, numerically stable: max(x,0) - x t + log(1 + exp(-|x|)).
template <class T, std::size_t R>
double bce_with_logits(TensorView<const T, R> logits, TensorView<const T, R> target, Tensor<T, R>& grad) {
  detail::check_same_shape(logits, target, "bce_with_logits");
  grad.resize(logits.shape());
  const index_t n = logits.size();
  double sum = 0;
  for (index_t i = 0; i < n; ++i) {
    const T x = logits.data()[i], t = target.data()[i];
    sum += std::max(x, T(0)) - x * t + std::log1p(std::exp(-std::abs(x)));
    const T s = x >= 0 ? T(1) / (T(1) + std::exp(-x)) : std::exp(x) / (T(1) + std::exp(x));
    grad.data()[i] = (s - t) / T(n);
  }
  return detail::check_finite(sum / double(n), "bce_with_logits loss");
}

/// Soft Dice loss per sample, averaged over the batch: 1 - (2 sum(p t) + eps) / (sum p + sum t + eps).
/// `prob` are probabilities (e.g. after a sigmoid), `target` in [0, 1].
template <class T, std::size_t R>
double soft_dice(TensorView<const T, R> prob, TensorView<const T, R> target, Tensor<T, R>& grad, double eps = 1.0) {
  detail::check_same_shape(prob, target, "soft_dice");
  RLMED_CHECK(eps > 0, "soft_dice: eps must be positive, found ", eps);
  grad.resize(prob.shape());
  const index_t B = prob.extent(0), per = prob.size() / std::max<index_t>(B, 1);
  double total = 0;
  for (index_t b = 0; b < B; ++b) {
    const T* p = prob.data() + b * per;
    const T* t = target.data() + b * per;
    double inter = 0, sum = 0;
    for (index_t i = 0; i < per; ++i) {
      inter += double(p[i]) * t[i];
      sum += double(p[i]) + t[i];
    }
    const double num = 2 * inter + eps, den = sum + eps;
    total += 1.0 - num / den;
    T* g = grad.data() + b * per;
    for (index_t i = 0; i < per; ++i) g[i] = static_cast<T>(-(2.0 * t[i] * den - num) / (den * den) / double(B));
  }
  return detail::check_finite(total / double(B), "soft_dice loss");
}

/// Cross-entropy of logits [B, C, spatial...] against integer labels [B, spatial...] (values in
/// [0, C), or `ignore_index`), mean over the labelled pixels.
template <class T, std::size_t R>
double cross_entropy(TensorView<const T, R> logits, TensorView<const std::int64_t, R - 1> labels, Tensor<T, R>& grad,
                     std::int64_t ignore_index = -100) {
  static_assert(R >= 2);
  const index_t B = logits.extent(0), C = logits.extent(1), S = logits.size() / std::max<index_t>(B * C, 1);
  bool same = labels.extent(0) == B && C > 0 && logits.size() > 0;
  for (std::size_t a = 2; a < R; ++a) same = same && labels.extent(a - 1) == logits.extent(a);
  RLMED_CHECK(same, "cross_entropy: labels of shape ", labels.shape(), " do not match logits of shape ", logits.shape(),
              " (expected [B, spatial...] of the logits' [B, C, spatial...])");
  grad.resize(logits.shape());
  fill(grad.view(), T(0));
  double sum = 0;
  index_t count = 0;
  for (index_t b = 0; b < B; ++b)
    for (index_t s = 0; s < S; ++s) {
      const std::int64_t y = labels.data()[b * S + s];
      if (y == ignore_index) continue;
      RLMED_CHECK(y >= 0 && y < C, "cross_entropy: label ", y, " at sample ", b, ", pixel ", s, " outside [0, ", C, ")");
      const T* x = logits.data() + b * C * S + s;
      T m = x[0];
      for (index_t c = 1; c < C; ++c) m = std::max(m, x[c * S]);
      double z = 0;
      for (index_t c = 0; c < C; ++c) z += std::exp(double(x[c * S] - m));
      sum += -(double(x[y * S] - m) - std::log(z));
      T* g = grad.data() + b * C * S + s;
      for (index_t c = 0; c < C; ++c) g[c * S] = static_cast<T>(std::exp(double(x[c * S] - m)) / z);
      g[y * S] -= T(1);
      ++count;
    }
  RLMED_CHECK(count > 0, "cross_entropy: every label equals ignore_index ", ignore_index);
  for (index_t i = 0; i < grad.size(); ++i) grad.data()[i] /= T(count);
  return detail::check_finite(sum / double(count), "cross_entropy loss");
}

}  // namespace rlmed::nn::loss
