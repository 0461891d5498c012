#!/usr/bin/python3
"""PyTorch peer of bench/rl_sac_bench.cpp: the same SAC, network sizes and hyper-parameters, 2 threads.

SAC as rlmed/rl/agents/sac.hpp: twin soft-Q critics over [s, a], a squashed Gaussian actor with
separate mean and log-std layers (log-std clamped to [-20, 2], log-prob corrected by
log(1 - a^2 + 1e-6)), automatic temperature (J = -log_alpha * mean(log_pi + target_entropy),
target entropy -1), order alpha -> critics (0.5 * sum of MSEs) -> actor -> Polyak 0.005, Adam 1e-3
everywhere, batch 256, gamma 0.99. Pendulum-v1 dynamics are Gymnasium's, written out below.

Run:  /usr/bin/python3 bench/peers/rl_sac_torch.py [update|solve]   (PEER_THREADS=n overrides 2 threads)
Prints, for the update benchmark, the median time of one gradient step at batch 256 and updates/s
(hidden 64 and 256); for the solve benchmark, the step at which 20 deterministic evaluation
episodes first average >= -200 (evaluating every 1000 steps, 1000 random steps first), the wall
time and updates/s.
"""
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("PEER_THREADS", "2")))
WHAT = sys.argv[1] if len(sys.argv) > 1 else ""


class Pendulum:
    """Gymnasium Pendulum-v1 (g = 10, 200-step limit) for N environments at once."""

    def __init__(self, n, rng):
        self.n, self.rng = n, rng

    def reset(self):
        self.th = self.rng.uniform(-math.pi, math.pi, self.n)
        self.thdot = self.rng.uniform(-1.0, 1.0, self.n)
        self.t = 0
        return self.obs()

    def obs(self):
        return np.stack([np.cos(self.th), np.sin(self.th), self.thdot], axis=1).astype(np.float32)

    def step(self, u):
        u = np.clip(u.reshape(-1).astype(np.float64), -2.0, 2.0)
        th_norm = ((self.th + math.pi) % (2 * math.pi)) - math.pi
        costs = th_norm**2 + 0.1 * self.thdot**2 + 0.001 * u**2
        newthdot = np.clip(self.thdot + (3 * 10.0 / 2 * np.sin(self.th) + 3.0 * u) * 0.05, -8, 8)
        self.th = self.th + newthdot * 0.05
        self.thdot = newthdot
        self.t += 1
        return self.obs(), -costs, self.t >= 200


def mlp(inp, hidden, out):
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))


class Actor(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, 1)
        self.log_std = nn.Linear(hidden, 1)

    def forward(self, s, deterministic=False):
        h = self.body(s)
        mu = self.mean(h)
        if deterministic:
            return torch.tanh(mu), None
        ls = self.log_std(h).clamp(-20.0, 2.0)
        eps = torch.randn_like(mu)
        a = torch.tanh(mu + ls.exp() * eps)
        logp = (-0.5 * eps**2 - ls - 0.5 * math.log(2 * math.pi) - torch.log(1 - a * a + 1e-6)).sum(1)
        return a, logp


class SAC:
    def __init__(self, hidden, lr=1e-3, capacity=100_000):
        self.actor = Actor(hidden)
        self.q = nn.ModuleList([mlp(4, hidden, 1), mlp(4, hidden, 1)])
        self.q_targ = nn.ModuleList([mlp(4, hidden, 1), mlp(4, hidden, 1)])
        self.q_targ.load_state_dict(self.q.state_dict())
        for p in self.q_targ.parameters():
            p.requires_grad_(False)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.opt_actor = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.opt_q = torch.optim.Adam(self.q.parameters(), lr=lr)
        self.opt_alpha = torch.optim.Adam([self.log_alpha], lr=lr)
        self.s = np.zeros((capacity, 3), np.float32)
        self.a = np.zeros((capacity, 1), np.float32)
        self.r = np.zeros(capacity, np.float32)
        self.s2 = np.zeros((capacity, 3), np.float32)
        self.d = np.zeros(capacity, np.float32)
        self.size, self.cursor, self.capacity = 0, 0, capacity
        self.rng = np.random.default_rng(1)

    def add(self, s, a, r, s2, d):
        i = self.cursor
        self.s[i], self.a[i], self.r[i], self.s2[i], self.d[i] = s, a, r, s2, d
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def update(self, batch=256, gamma=0.99, tau=0.005):
        idx = self.rng.integers(0, self.size, batch)
        s, a, r = torch.from_numpy(self.s[idx]), torch.from_numpy(self.a[idx]), torch.from_numpy(self.r[idx])
        s2, d = torch.from_numpy(self.s2[idx]), torch.from_numpy(self.d[idx])
        alpha = self.log_alpha.exp().item()
        a_pi, logp_pi = self.actor(s)
        alpha_loss = -(self.log_alpha * (logp_pi.detach() - 1.0)).mean()
        self.opt_alpha.zero_grad()
        alpha_loss.backward()
        self.opt_alpha.step()
        with torch.no_grad():
            a2, logp2 = self.actor(s2)
            sa2 = torch.cat([s2, a2], 1)
            v = torch.min(self.q_targ[0](sa2), self.q_targ[1](sa2)).squeeze(1) - alpha * logp2
            y = r + gamma * (1 - d) * v
        sa = torch.cat([s, a], 1)
        q_loss = 0.5 * sum(F.mse_loss(q(sa).squeeze(1), y) for q in self.q)
        self.opt_q.zero_grad()
        q_loss.backward()
        self.opt_q.step()
        sa_pi = torch.cat([s, a_pi], 1)
        q_pi = torch.min(self.q[0](sa_pi), self.q[1](sa_pi)).squeeze(1)
        actor_loss = (alpha * logp_pi - q_pi).mean()
        self.opt_actor.zero_grad()
        actor_loss.backward()
        self.opt_actor.step()
        with torch.no_grad():
            for p, pt in zip(self.q.parameters(), self.q_targ.parameters()):
                pt.mul_(1 - tau).add_(tau * p)


def bench_update(hidden, reps):
    torch.manual_seed(0)
    agent = SAC(hidden)
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
    for _ in range(reps):
        t = time.perf_counter()
        agent.update()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(f"SacUpdate/{hidden:<4d} {med * 1e3:8.3f} ms   {1.0 / med:8.1f} updates/s (median of {reps})", flush=True)


def evaluate(agent, episodes=20, seed=99):
    env = Pendulum(episodes, np.random.default_rng(seed))
    s = env.reset()
    total = np.zeros(episodes)
    done = False
    while not done:
        with torch.no_grad():
            a, _ = agent.actor(torch.from_numpy(s), deterministic=True)
        s, r, done = env.step(2.0 * a.numpy())
        total += r
    return total.mean()


def bench_solve(budget=30_000, random_steps=1_000):
    torch.manual_seed(1)
    agent = SAC(64)
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
                a = agent.actor(torch.from_numpy(s))[0].numpy()
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
                print(f"SacSolvePendulum  solved at step {step}, eval {ret:.1f}, {wall:.2f} s, "
                      f"{updates / wall:.1f} updates/s", flush=True)
                return
    print(f"SacSolvePendulum  not solved within {budget} steps ({time.perf_counter() - t0:.2f} s)", flush=True)


if __name__ == "__main__":
    if WHAT in ("", "update"):
        bench_update(64, 300)
        bench_update(256, 100)
    if WHAT in ("", "solve"):
        bench_solve()
