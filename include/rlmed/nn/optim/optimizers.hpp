// rlmed/nn/optim/optimizers.hpp — SGD (momentum, Nesterov), Adam / AdamW, RMSprop.
//
// Design: update rules follow torch.optim exactly (including bias correction, where weight
// decay enters, and first-step momentum), so hyper-parameters from papers transfer and the
// golden tests can compare step by step. State tensors are flat per parameter, named
// "<param>.<state>" for checkpoints. Parameters are updated in parallel elementwise: each
// element's update is independent, so the result does not depend on the thread count.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "rlmed/nn/optim/param_list.hpp"

namespace rlmed::nn::optim {

/// Calls visit(name, Tensor<T, 1>&) for each state tensor, and visit_step(int64&) for counters.
template <class T>
struct StateVisitor {
  std::function<void(const std::string&, Tensor<T, 1>&)> tensor;
  std::function<void(const std::string&, std::int64_t&)> counter;
};

template <class T>
class OptimizerBase {
 public:
  [[nodiscard]] const ParamList<T>& params() const noexcept { return params_; }
  void zero_grad() const { params_.zero_grad(); }
  double lr = 1e-3;

 protected:
  template <class M>
  void attach(M& module, std::size_t buffers_per_param) {
    params_ = ParamList<T>(module);
    state_.assign(params_.size() * buffers_per_param, {});
    for (std::size_t i = 0; i < params_.size(); ++i)
      for (std::size_t k = 0; k < buffers_per_param; ++k)
        state_[i * buffers_per_param + k] = Tensor<T, 1>(Shape<1>{params_.slots()[i].value.size()});
  }
  template <class F>
  static void elementwise(index_t n, F&& f) {
    parallel_for(0, n, f, 1 << 14);
  }
  ParamList<T> params_;
  std::vector<Tensor<T, 1>> state_;
};

struct SgdConfig {
  double lr = 1e-2;
  double momentum = 0.0;
  bool nesterov = false;
  double weight_decay = 0.0;
};

template <class T>
class SGD : public OptimizerBase<T> {
 public:
  template <class M>
  SGD(M& module, SgdConfig cfg = {}) : config(cfg) {
    RLMED_CHECK(cfg.lr >= 0 && cfg.momentum >= 0 && cfg.weight_decay >= 0, "SGD: negative lr, momentum or weight decay");
    RLMED_CHECK(!cfg.nesterov || cfg.momentum > 0, "SGD: Nesterov needs momentum > 0");
    this->lr = cfg.lr;
    this->attach(module, 1);
  }
  void step() {
    const T rate = static_cast<T>(this->lr), mu = static_cast<T>(config.momentum), wd = static_cast<T>(config.weight_decay);
    const bool first = steps == 0;
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      const auto& s = this->params_.slots()[i];
      T* buf = this->state_[i].data();
      T *p = s.value.data(), *g = s.grad.data();
      this->elementwise(s.value.size(), [&](index_t j) {
        T d = g[j] + wd * p[j];
        if (mu != T(0)) {
          buf[j] = first ? d : mu * buf[j] + d;
          d = config.nesterov ? d + mu * buf[j] : buf[j];
        }
        p[j] -= rate * d;
      });
    }
    ++steps;
  }
  void visit_state(const StateVisitor<T>& v) {
    for (std::size_t i = 0; i < this->params_.size(); ++i)
      v.tensor(this->params_.slots()[i].name + ".momentum_buffer", this->state_[i]);
    v.counter("step", steps);
  }
  SgdConfig config;
  std::int64_t steps = 0;
};

struct AdamConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool decoupled_weight_decay = false;  ///< true: AdamW (Loshchilov & Hutter 2019)
};

template <class T>
class Adam : public OptimizerBase<T> {
 public:
  template <class M>
  Adam(M& module, AdamConfig cfg = {}) : config(cfg) {
    RLMED_CHECK(cfg.lr >= 0 && cfg.eps >= 0 && cfg.weight_decay >= 0, "Adam: negative lr, eps or weight decay");
    RLMED_CHECK(cfg.beta1 >= 0 && cfg.beta1 < 1 && cfg.beta2 >= 0 && cfg.beta2 < 1, "Adam: betas (", cfg.beta1, ", ",
                cfg.beta2, ") outside [0, 1)");
    this->lr = cfg.lr;
    this->attach(module, 2);
  }
  void step() {
    ++steps;
    const double bc1 = 1.0 - std::pow(config.beta1, double(steps));
    const double bc2 = 1.0 - std::pow(config.beta2, double(steps));
    const T b1 = static_cast<T>(config.beta1), b2 = static_cast<T>(config.beta2), eps = static_cast<T>(config.eps);
    const T step_size = static_cast<T>(this->lr / bc1), sqrt_bc2 = static_cast<T>(std::sqrt(bc2));
    const T wd = static_cast<T>(config.weight_decay), rate = static_cast<T>(this->lr);
    const bool decoupled = config.decoupled_weight_decay;
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      const auto& s = this->params_.slots()[i];
      T* m = this->state_[2 * i].data();
      T* v = this->state_[2 * i + 1].data();
      T *p = s.value.data(), *g = s.grad.data();
      this->elementwise(s.value.size(), [&](index_t j) {
        T grad = g[j];
        if (decoupled) {
          p[j] *= T(1) - rate * wd;
        } else {
          grad += wd * p[j];
        }
        m[j] = b1 * m[j] + (T(1) - b1) * grad;
        v[j] = b2 * v[j] + (T(1) - b2) * grad * grad;
        p[j] -= step_size * m[j] / (std::sqrt(v[j]) / sqrt_bc2 + eps);
      });
    }
  }
  void visit_state(const StateVisitor<T>& vis) {
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      vis.tensor(this->params_.slots()[i].name + ".exp_avg", this->state_[2 * i]);
      vis.tensor(this->params_.slots()[i].name + ".exp_avg_sq", this->state_[2 * i + 1]);
    }
    vis.counter("step", steps);
  }
  AdamConfig config;
  std::int64_t steps = 0;
};

/// AdamW: Adam with decoupled weight decay (default 1e-2, as torch.optim.AdamW).
template <class T>
class AdamW : public Adam<T> {
 public:
  template <class M>
  AdamW(M& module, AdamConfig cfg = with_decay()) : Adam<T>(module, decoupled(cfg)) {}
  static AdamConfig with_decay() {
    AdamConfig c;
    c.weight_decay = 1e-2;
    return c;
  }

 private:
  static AdamConfig decoupled(AdamConfig c) {
    c.decoupled_weight_decay = true;
    return c;
  }
};

struct RmspropConfig {
  double lr = 1e-2;
  double alpha = 0.99;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double momentum = 0.0;
  bool centered = false;
};

template <class T>
class RMSprop : public OptimizerBase<T> {
 public:
  template <class M>
  RMSprop(M& module, RmspropConfig cfg = {}) : config(cfg) {
    RLMED_CHECK(cfg.lr >= 0 && cfg.eps >= 0 && cfg.alpha >= 0 && cfg.alpha < 1 && cfg.momentum >= 0,
                "RMSprop: invalid lr, eps, alpha or momentum");
    this->lr = cfg.lr;
    this->attach(module, 3);  // square_avg, momentum_buffer, grad_avg
  }
  void step() {
    const T rate = static_cast<T>(this->lr), a = static_cast<T>(config.alpha), eps = static_cast<T>(config.eps);
    const T wd = static_cast<T>(config.weight_decay), mu = static_cast<T>(config.momentum);
    const bool centered = config.centered;
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      const auto& s = this->params_.slots()[i];
      T* sq = this->state_[3 * i].data();
      T* buf = this->state_[3 * i + 1].data();
      T* ga = this->state_[3 * i + 2].data();
      T *p = s.value.data(), *g = s.grad.data();
      this->elementwise(s.value.size(), [&](index_t j) {
        const T grad = g[j] + wd * p[j];
        sq[j] = a * sq[j] + (T(1) - a) * grad * grad;
        T avg;
        if (centered) {
          ga[j] = a * ga[j] + (T(1) - a) * grad;
          avg = std::sqrt(sq[j] - ga[j] * ga[j]) + eps;
        } else {
          avg = std::sqrt(sq[j]) + eps;
        }
        if (mu > T(0)) {
          buf[j] = mu * buf[j] + grad / avg;
          p[j] -= rate * buf[j];
        } else {
          p[j] -= rate * grad / avg;
        }
      });
    }
    ++steps;
  }
  void visit_state(const StateVisitor<T>& v) {
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      v.tensor(this->params_.slots()[i].name + ".square_avg", this->state_[3 * i]);
      v.tensor(this->params_.slots()[i].name + ".momentum_buffer", this->state_[3 * i + 1]);
      v.tensor(this->params_.slots()[i].name + ".grad_avg", this->state_[3 * i + 2]);
    }
    v.counter("step", steps);
  }
  RmspropConfig config;
  std::int64_t steps = 0;
};

}  // namespace rlmed::nn::optim
