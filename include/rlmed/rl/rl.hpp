// rlmed/rl/rl.hpp — the reinforcement-learning foundation in one include: spaces, the
// Environment concept and VectorEnv, replay buffers, exploration, target networks, returns.
#pragma once

#include "rlmed/rl/environment.hpp"
#include "rlmed/rl/explore.hpp"
#include "rlmed/rl/replay/her.hpp"
#include "rlmed/rl/replay/keyed.hpp"
#include "rlmed/rl/replay/nstep.hpp"
#include "rlmed/rl/replay/prioritized.hpp"
#include "rlmed/rl/replay/sum_tree.hpp"
#include "rlmed/rl/replay/transition.hpp"
#include "rlmed/rl/replay/uniform.hpp"
#include "rlmed/rl/returns.hpp"
#include "rlmed/rl/spaces.hpp"
#include "rlmed/rl/target_sync.hpp"
