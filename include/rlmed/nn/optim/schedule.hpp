// rlmed/nn/optim/schedule.hpp — learning-rate schedules as pure functions of the epoch/step.
//
// Design: a schedule maps (base lr, t) to the lr at t, with no state, so resuming a run only
// needs t. Formulas follow torch.optim.lr_scheduler (StepLR, LinearLR, CosineAnnealingLR).
#pragma once

#include <cmath>

#include "rlmed/core/error.hpp"
#include "rlmed/core/config.hpp"

namespace rlmed::nn::optim {

/// lr = base * gamma^floor(t / step_size)   (PixelDRL-MG: x0.9 every 25 epochs)
struct StepSchedule {
  index_t step_size = 1;
  double gamma = 0.1;
  [[nodiscard]] double operator()(double base, index_t t) const {
    RLMED_CHECK(step_size >= 1 && t >= 0, "StepSchedule: step_size ", step_size, ", t ", t);
    return base * std::pow(gamma, double(t / step_size));
  }
};

/// lr = base * (start + (end - start) * min(t, total) / total)
struct LinearSchedule {
  double start_factor = 1.0;
  double end_factor = 0.0;
  index_t total = 1;
  [[nodiscard]] double operator()(double base, index_t t) const {
    RLMED_CHECK(total >= 1 && t >= 0, "LinearSchedule: total ", total, ", t ", t);
    const double f = double(t < total ? t : total) / double(total);
    return base * (start_factor + (end_factor - start_factor) * f);
  }
};

/// lr = eta_min + (base - eta_min) * (1 + cos(pi * min(t, T) / T)) / 2
struct CosineSchedule {
  index_t period = 1;
  double eta_min = 0.0;
  [[nodiscard]] double operator()(double base, index_t t) const {
    RLMED_CHECK(period >= 1 && t >= 0, "CosineSchedule: period ", period, ", t ", t);
    const double f = double(t < period ? t : period) / double(period);
    return eta_min + (base - eta_min) * 0.5 * (1.0 + std::cos(3.14159265358979323846 * f));
  }
};

}  // namespace rlmed::nn::optim
