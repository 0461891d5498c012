#!/usr/bin/python3
"""PyTorch peer of bench/rl_td3_bench.cpp: the same TD3, network sizes and hyper-parameters.

TD3 as rlmed/rl/agents/td3.hpp (Fujimoto et al. 2018): actor s -> tanh(.) in [-1, 1] (scaled by 2 for
Pendulum), twin critics over [s, a], target policy smoothing clip(pi'(s') + clip(N(0, 0.2^2), -0.5, 0.5),
-1, 1), y = r + 0.99 (1 - d) min Q'(s', a'), critic loss = sum of the two MSEs, actor and Polyak 0.005
targets every second critic step, Adam 1e-3, batch 256, exploration N(0, 0.1^2) after 1000 uniform
random steps. Pendulum-v1 comes from rl_sac_torch.py (Gymnasium's equations).

Run:  /usr/bin/python3 bench/peers/rl_td3_torch.py [update|solve]   (PEER_THREADS=n overrides 2 threads)
Prints the median time of one gradient step at batch 256 (hidden 64 and 256; the mean over critic-only
and full steps, as rlmed's Td3Update) and, for the solve benchmark, the step at which 20
deterministic evaluation episodes first average >= -200 (every 1000 steps), wall time and updates/s.
"""
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rl_sac_torch import Pendulum, mlp  # noqa: E402  (same environment and MLP builder)

torch.set_num_threads(int(os.environ.get("PEER_THREADS", "2")))
WHAT = sys.argv[1] if len(sys.argv) > 1 else ""


class TD3:
    def __init__(self, hidden, lr=1e-3, capacity=100_000):
        self.actor = nn.Sequential(mlp(3, hidden, 1), nn.Tanh())
        self.actor_targ = nn.Sequential(mlp(3, hidden, 1), nn.Tanh())
        self.actor_targ.load_state_dict(self.actor.state_dict())
        self.q = nn.ModuleList([mlp(4, hidden, 1), mlp(4, hidden, 1)])
        self.q_targ = nn.ModuleList([mlp(4, hidden, 1), mlp(4, hidden, 1)])
        self.q_targ.load_state_dict(self.q.state_dict())
        for p in list(self.q_targ.parameters()) + list(self.actor_targ.parameters()):
            p.requires_grad_(False)
        self.opt_actor = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.opt_q = torch.optim.Adam(self.q.parameters(), lr=lr)
        self.s = np.zeros((capacity, 3), np.float32)
        self.a = np.zeros((capacity, 1), np.float32)
        self.r = np.zeros(capacity, np.float32)
        self.s2 = np.zeros((capacity, 3), np.float32)
        self.d = np.zeros(capacity, np.float32)
        self.size, self.cursor, self.capacity = 0, 0, capacity
        self.rng = np.random.default_rng(1)
        self.updates = 0

    def add(self, s, a, r, s2, d):
        i = self.cursor
        self.s[i], self.a[i], self.r[i], self.s2[i], self.d[i] = s, a, r, s2, d
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def update(self, batch=256, gamma=0.99, tau=0.005, noise=0.2, clip=0.5, delay=2):
        idx = self.rng.integers(0, self.size, batch)
        s, a, r = torch.from_numpy(self.s[idx]), torch.from_numpy(self.a[idx]), torch.from_numpy(self.r[idx])
        s2, d = torch.from_numpy(self.s2[idx]), torch.from_numpy(self.d[idx])
        with torch.no_grad():
            mu2 = self.actor_targ(s2)
            a2 = (mu2 + (torch.randn_like(mu2) * noise).clamp(-clip, clip)).clamp(-1.0, 1.0)
            sa2 = torch.cat([s2, a2], 1)
            y = r + gamma * (1 - d) * torch.min(self.q_targ[0](sa2), self.q_targ[1](sa2)).squeeze(1)
        sa = torch.cat([s, a], 1)
        q_loss = sum(F.mse_loss(q(sa).squeeze(1), y) for q in self.q)
        self.opt_q.zero_grad()
        q_loss.backward()
        self.opt_q.step()
        self.updates += 1
        if self.updates % delay:
            return
        actor_loss = -self.q[0](torch.cat([s, self.actor(s)], 1)).mean()
        self.opt_actor.zero_grad()
        actor_loss.backward()
        self.opt_actor.step()
        with torch.no_grad():
            for net, targ in ((self.q, self.q_targ), (self.actor, self.actor_targ)):
                for p, pt in zip(net.parameters(), targ.parameters()):
                    pt.mul_(1 - tau).add_(tau * p)


def bench_update(hidden, reps):
    torch.manual_seed(0)
    agent = TD3(hidden)
    env = Pendulum(1, np.random.default_rng(2))
    s = env.reset()
    rng = np.random.default_rng(3)
    for _ in range(10_000):
        a = rng.uniform(-1, 1, (1, 1)).astype(np.float32)
        s2, r, trunc = env.step(2.0 * a)
        agent.add(s[0], a[0], r[0], s2[0], 0.0)
        s = env.reset() if trunc else s2
    for _ in range(10):
        agent.update()
    times = []
    for _ in range(reps // 2):  # pairs: one critic-only step and one full step
        t = time.perf_counter()
        agent.update()
        agent.update()
        times.append((time.perf_counter() - t) / 2)
    med = statistics.median(times)
    print(f"Td3Update/{hidden:<4d} {med * 1e3:8.3f} ms   {1.0 / med:8.1f} updates/s (median of {reps // 2} pairs)",
          flush=True)


def evaluate(agent, episodes=20, seed=99):
    env = Pendulum(episodes, np.random.default_rng(seed))
    s = env.reset()
    total = np.zeros(episodes)
    done = False
    while not done:
        with torch.no_grad():
            a = agent.actor(torch.from_numpy(s))
        s, r, done = env.step(2.0 * a.numpy())
        total += r
    return total.mean()


def bench_solve(budget=15_000, random_steps=1_000):
    torch.manual_seed(1)
    agent = TD3(64)
    env = Pendulum(1, np.random.default_rng(1))
    rng = np.random.default_rng(4)
    s = env.reset()
    t0 = time.perf_counter()
    updates = 0
    for step in range(1, budget + 1):
        if step <= random_steps:
            a = rng.uniform(-1, 1, (1, 1)).astype(np.float32)
        else:
            with torch.no_grad():
                a = agent.actor(torch.from_numpy(s)).numpy()
            a = np.clip(a + rng.normal(0.0, 0.1, a.shape), -1.0, 1.0).astype(np.float32)
        s2, r, trunc = env.step(2.0 * a)
        agent.add(s[0], a[0], r[0], s2[0], 0.0)
        s = env.reset() if trunc else s2
        if step >= random_steps:
            agent.update()
            updates += 1
        if step % 1000 == 0:
            ret = evaluate(agent)
            if ret >= -200:
                wall = time.perf_counter() - t0
                print(f"Td3SolvePendulum  solved at step {step}, eval {ret:.1f}, {wall:.2f} s, "
                      f"{updates / wall:.1f} updates/s", flush=True)
                return
    print(f"Td3SolvePendulum  not solved within {budget} steps ({time.perf_counter() - t0:.2f} s)", flush=True)


if __name__ == "__main__":
    if WHAT in ("", "update"):
        bench_update(64, 300)
        bench_update(256, 100)
    if WHAT in ("", "solve"):
        bench_solve()
