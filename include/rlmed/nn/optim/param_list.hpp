// rlmed/nn/optim/param_list.hpp — the flat list of (name, value, gradient) an optimiser steps.
//
// Design: an optimiser attaches to a module once and keeps flat views of each parameter and
// its gradient (parameters own their memory on the heap, so the views stay valid as long as the
// module's parameters are not reallocated). Updates then touch no module code and no map.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "rlmed/core/parallel.hpp"
#include "rlmed/nn/module.hpp"

namespace rlmed::nn::optim {

template <class T>
struct ParamSlot {
  std::string name;
  TensorView<T, 1> value;
  TensorView<T, 1> grad;
};

template <class T>
class ParamList {
 public:
  ParamList() = default;
  template <class M>
  explicit ParamList(M& module) {
    module.parameters([&](const std::string& name, auto& p) {
      static_assert(std::is_same_v<typename std::remove_reference_t<decltype(p.value)>::value_type, T>,
                    "optimiser scalar type differs from the module's");
      slots_.push_back({name, p.value.flat(), p.grad.flat()});
    });
  }
  [[nodiscard]] const std::vector<ParamSlot<T>>& slots() const noexcept { return slots_; }
  [[nodiscard]] std::size_t size() const noexcept { return slots_.size(); }
  [[nodiscard]] index_t numel() const noexcept {
    index_t n = 0;
    for (const auto& s : slots_) n += s.value.size();
    return n;
  }
  void zero_grad() const {
    for (const auto& s : slots_) fill(s.grad, T(0));
  }

 private:
  std::vector<ParamSlot<T>> slots_;
};

/// Global L2 norm of all gradients (summed in double, in parameter order: deterministic).
template <class T>
double grad_norm(const ParamList<T>& params) {
  double sq = 0;
  for (const auto& s : params.slots())
    for (T g : s.grad) sq += double(g) * g;
  return std::sqrt(sq);
}

/// Scales all gradients so their global norm is at most max_norm (PyTorch's clip_grad_norm_);
/// returns the norm before clipping. A non-finite norm is an rlmed::Error.
template <class T>
double clip_grad_norm(const ParamList<T>& params, double max_norm) {
  RLMED_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be positive, found ", max_norm);
  const double norm = grad_norm(params);
  RLMED_CHECK(std::isfinite(norm), "clip_grad_norm: gradient norm is ", norm, " (NaN or inf in a gradient)");
  const double scale = max_norm / (norm + 1e-6);
  if (scale < 1.0)
    for (const auto& s : params.slots())
      for (T& g : s.grad) g = static_cast<T>(g * scale);
  return norm;
}

}  // namespace rlmed::nn::optim
