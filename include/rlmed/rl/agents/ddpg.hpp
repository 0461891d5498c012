// rlmed/rl/agents/ddpg.hpp — Deep Deterministic Policy Gradient (Lillicrap et al., "Continuous
// control with deep reinforcement learning", ICLR 2016).
//
// Design decisions:
//  * DDPG is the deterministic actor-critic engine of td3.hpp with one critic, no target policy
//    smoothing (σ̃ = 0), an actor and target update after every critic step (policy_delay 1) and
//    Ornstein–Uhlenbeck exploration, one process per environment, reset at episode ends.
//  * ddpg_defaults() are the paper's numbers (section 7 / supplementary): Adam 10⁻⁴ (actor) and
//    10⁻³ (critic) with L2 weight decay 10⁻² on the critic, γ 0.99, τ 0.001, batch 64, replay 10⁶,
//    OU θ = 0.15, σ = 0.2 with unit time step (x ← x + θ(μ − x) + σ N(0, 1)). The paper starts
//    learning at once; learning_starts = batch size keeps the first batches distinct. The
//    paper's final-layer initialisation U(±3·10⁻³) and its critic architecture (action entering
//    at the second layer) are not reproduced: the network specs are the caller's choice.
#pragma once

#include "rlmed/rl/agents/td3.hpp"

namespace rlmed::rl::agents {

// DdpgConfig and ddpg_defaults() live in td3.hpp beside td3_defaults(), so the engine's default
// constructor can pick the paper defaults of the variant it is.

/// DDPG: one critic, OU exploration, every step updates actor and targets.
template <ContinuousControlEnv Env, class ActorSpec, class CriticSpec, class Replay = replay::Uniform<float, 1, float>,
          class TargetSync = sync::Polyak, template <class> class Optimizer = nn::optim::Adam>
using DDPG =
    DeterministicActorCritic<Env, ActorSpec, CriticSpec, 1, noise::OrnsteinUhlenbeck, Replay, TargetSync, Optimizer>;

}  // namespace rlmed::rl::agents
