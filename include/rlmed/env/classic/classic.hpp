// rlmed/env/classic/classic.hpp — Gymnasium's classic-control tasks (sanity checks for agents).
#pragma once

#include "rlmed/env/classic/acrobot.hpp"
#include "rlmed/env/classic/cartpole.hpp"
#include "rlmed/env/classic/mountain_car.hpp"
#include "rlmed/env/classic/pendulum.hpp"
