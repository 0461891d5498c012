#!/usr/bin/python3
"""PyTorch peer of bench/rl_dqn_bench.cpp: the same DQN, network sizes and hyper-parameters, 2 threads.

Double DQN, dueling 64-64 MLP (Q = V + A - mean A), proportional prioritized replay (alpha 0.6,
beta 0.4 -> 1 over 50k samples, stratified sampling, weights normalised by the largest possible
weight), 3-step returns, Huber loss weighted per sample, global-norm clipping at 10, Adam lr 1e-3,
hard target update every 500 gradient steps, epsilon 1 -> 0.02 over 10k steps, learning starts at
1,000 steps, one gradient step per environment step, batch 64; CartPole-v1 with Gymnasium's
equations (float64 state, float32 observations, 500-step limit). The sum/min trees are numpy arrays
walked level by level for the whole batch at once (no per-sample Python loop).

Run:  /usr/bin/python3 bench/peers/rl_dqn_torch.py [update|solve] [seeds, e.g. 1,2,3; default 3]
Prints: DQN_Update/B  median ms per update and updates/s (B = 64, 256; 10,000 stored transitions),
        DQN_CartPoleSolve  wall seconds, the step it was solved at, env steps/s and updates/s.
"""
import math
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(2)
WHAT = sys.argv[1] if len(sys.argv) > 1 else ""
SEEDS = [int(x) for x in sys.argv[2].split(",")] if len(sys.argv) > 2 else [3]


class CartPole:
    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    total_mass = masspole + masscart
    polemass_length = masspole * length
    theta_threshold = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    def __init__(self, rng):
        self.rng = rng
        self.state = None
        self.t = 0

    def reset(self):
        self.state = self.rng.uniform(-0.05, 0.05, size=4)
        self.t = 0
        return self.state.astype(np.float32)

    def step(self, action):
        x, x_dot, theta, theta_dot = self.state
        force = self.force_mag if action == 1 else -self.force_mag
        c, s = math.cos(theta), math.sin(theta)
        temp = (force + self.polemass_length * theta_dot * theta_dot * s) / self.total_mass
        thetaacc = (self.gravity * s - c * temp) / (self.length * (4.0 / 3.0 - self.masspole * c * c / self.total_mass))
        xacc = temp - self.polemass_length * thetaacc * c / self.total_mass
        x, x_dot = x + self.tau * x_dot, x_dot + self.tau * xacc
        theta, theta_dot = theta + self.tau * theta_dot, theta_dot + self.tau * thetaacc
        self.state = np.array([x, x_dot, theta, theta_dot])
        self.t += 1
        terminated = bool(x < -self.x_threshold or x > self.x_threshold or theta < -self.theta_threshold
                          or theta > self.theta_threshold)
        truncated = self.t >= 500
        return self.state.astype(np.float32), 1.0, terminated, truncated


class DuelingQ(torch.nn.Module):
    def __init__(self, obs_dim=4, actions=2, hidden=64):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(obs_dim, hidden), torch.nn.ReLU(),
                                        torch.nn.Linear(hidden, hidden), torch.nn.ReLU())
        self.value = torch.nn.Linear(hidden, 1)
        self.advantage = torch.nn.Linear(hidden, actions)

    def forward(self, x):
        h = self.body(x)
        a = self.advantage(h)
        return self.value(h) + a - a.mean(dim=1, keepdim=True)


class PrioritizedReplay:
    def __init__(self, capacity, obs_dim, alpha=0.6, beta0=0.4, beta_steps=50_000, eps=1e-6):
        self.cap = 1
        while self.cap < capacity:
            self.cap *= 2
        self.capacity, self.alpha, self.beta0, self.beta_steps, self.eps = capacity, alpha, beta0, beta_steps, eps
        self.sum = np.zeros(2 * self.cap)
        self.min = np.full(2 * self.cap, np.inf)
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros(capacity, np.int64)
        self.reward = np.zeros(capacity, np.float32)
        self.done = np.zeros(capacity, np.float32)
        self.steps = np.zeros(capacity, np.float32)
        self.size = self.cursor = 0
        self.max_priority = 1.0
        self.beta_step = 0

    def _set(self, idx, values):
        idx = np.asarray(idx) + self.cap
        self.sum[idx] = values
        self.min[idx] = values
        idx = np.unique(idx // 2)
        while idx[0] >= 1:
            self.sum[idx] = self.sum[2 * idx] + self.sum[2 * idx + 1]
            self.min[idx] = np.minimum(self.min[2 * idx], self.min[2 * idx + 1])
            if idx[0] == 1:
                break
            idx = np.unique(idx // 2)

    def add(self, obs, action, reward, next_obs, done, steps):
        i = self.cursor
        self.obs[i], self.action[i], self.reward[i] = obs, action, reward
        self.next_obs[i], self.done[i], self.steps[i] = next_obs, done, steps
        self._set([i], self.max_priority ** self.alpha)
        self.cursor = (self.cursor + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng, batch):
        total = self.sum[1]
        mass = (np.arange(batch) + rng.random(batch)) * (total / batch)
        idx = np.ones(batch, np.int64)
        while idx[0] < self.cap:
            left = self.sum[2 * idx]
            right = mass >= left
            mass = np.where(right, mass - left, mass)
            idx = 2 * idx + right
        slots = np.minimum(idx - self.cap, self.size - 1)
        beta = self.beta0 + (1 - self.beta0) * min(1.0, self.beta_step / self.beta_steps)
        self.beta_step += 1
        p = self.sum[slots + self.cap] / total
        max_w = (self.size * self.min[1] / total) ** -beta
        w = (self.size * p) ** -beta / max_w
        return slots, (torch.from_numpy(self.obs[slots]), torch.from_numpy(self.action[slots]),
                       torch.from_numpy(self.reward[slots]), torch.from_numpy(self.next_obs[slots]),
                       torch.from_numpy(self.done[slots]), torch.from_numpy(self.steps[slots]),
                       torch.from_numpy(w.astype(np.float32)))

    def update(self, slots, td):
        p = np.abs(td) + self.eps
        self.max_priority = max(self.max_priority, float(p.max()))
        self._set(slots, p ** self.alpha)


class NStep:
    def __init__(self, buffer, n=3, gamma=0.99):
        self.buffer, self.n, self.gamma, self.pending = buffer, n, gamma, []

    def add(self, obs, action, reward, next_obs, terminated, truncated):
        self.pending.append((obs, action, reward))
        if terminated or truncated:
            while self.pending:
                self._emit(next_obs, terminated)
        elif len(self.pending) == self.n:
            self._emit(next_obs, False)

    def _emit(self, next_obs, done):
        ret = sum(self.gamma ** k * r for k, (_, _, r) in enumerate(self.pending))
        obs, action, _ = self.pending[0]
        self.buffer.add(obs, action, ret, next_obs, float(done), len(self.pending))
        self.pending.pop(0)


class Agent:
    def __init__(self, seed, batch=64, learning_starts=1000):
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.online = DuelingQ()
        self.target = DuelingQ()
        self.target.load_state_dict(self.online.state_dict())
        self.opt = torch.optim.Adam(self.online.parameters(), lr=1e-3)
        self.replay = PrioritizedReplay(50_000, 4)
        self.nstep = NStep(self.replay)
        self.batch, self.learning_starts, self.gamma = batch, learning_starts, 0.99
        self.env_steps = self.grad_steps = 0

    def epsilon(self):
        return 1.0 + (0.02 - 1.0) * min(1.0, self.env_steps / 10_000)

    def act(self, obs):
        with torch.no_grad():
            q = self.online(torch.from_numpy(obs).unsqueeze(0))[0]
        greedy = int(q.argmax())
        eps = self.epsilon()
        self.env_steps += 1
        if self.rng.random() < eps:
            return int(self.rng.integers(2))
        return greedy

    def greedy(self, obs_batch):
        with torch.no_grad():
            return self.online(torch.from_numpy(obs_batch)).argmax(dim=1).numpy()

    def learn(self):
        slots, (obs, action, reward, next_obs, done, steps, w) = self.replay.sample(self.rng, self.batch)
        with torch.no_grad():
            next_a = self.online(next_obs).argmax(dim=1, keepdim=True)
            boot = self.target(next_obs).gather(1, next_a).squeeze(1)
            y = reward + self.gamma ** steps * (1 - done) * boot
        q = self.online(obs).gather(1, action.unsqueeze(1)).squeeze(1)
        loss = (w * F.smooth_l1_loss(q, y, reduction="none")).mean()
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.online.parameters(), 10.0)
        self.opt.step()
        self.replay.update(slots, (q - y).detach().numpy())
        self.grad_steps += 1
        if self.grad_steps % 500 == 0:
            self.target.load_state_dict(self.online.state_dict())
        return float(loss)


def evaluate(agent, seed, episodes=20):
    envs = [CartPole(np.random.default_rng([seed, k])) for k in range(episodes)]
    obs = np.stack([e.reset() for e in envs])
    returns = np.zeros(episodes)
    active = list(range(episodes))
    while active:
        acts = agent.greedy(obs[active])
        still = []
        for k, i in enumerate(active):
            o, r, term, trunc = envs[i].step(int(acts[k]))
            returns[i] += r
            obs[i] = o
            if not (term or trunc):
                still.append(i)
        active = still
    return returns.mean(), returns.std()


def bench_update(batch):
    agent = Agent(1, batch=batch)
    env = CartPole(np.random.default_rng(1))
    obs = env.reset()
    for _ in range(10_000):
        a = int(agent.rng.integers(2))
        nxt, r, term, trunc = env.step(a)
        agent.nstep.add(obs, a, r, nxt, term, trunc)
        obs = env.reset() if (term or trunc) else nxt
    for _ in range(20):
        agent.learn()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(200):
            agent.learn()
        times.append((time.perf_counter() - t) / 200)
    ms = statistics.median(times) * 1e3
    print(f"DQN_Update/{batch:<4d} {ms:8.3f} ms/update   {1e3 / ms:8.0f} updates/s", flush=True)


def bench_solve(seed=3, budget=50_000):
    t0 = time.perf_counter()
    agent = Agent(seed)
    env = CartPole(np.random.default_rng(seed))
    obs = env.reset()
    solved_at, mean = -1, float("nan")
    for step in range(1, budget + 1):
        a = agent.act(obs)
        nxt, r, term, trunc = env.step(a)
        agent.nstep.add(obs, a, r, nxt, term, trunc)
        obs = env.reset() if (term or trunc) else nxt
        if step >= agent.learning_starts:
            agent.learn()
        if step % 2_500 == 0:
            mean, std = evaluate(agent, 10_000 + step)
            if mean >= 475:
                solved_at = step
                break
    wall = time.perf_counter() - t0
    print(f"DQN_CartPoleSolve  {wall:8.2f} s   solved_at_step {solved_at}   final_eval {mean:.1f}   "
          f"{step / wall:8.0f} env steps/s   {agent.grad_steps / wall:8.0f} updates/s", flush=True)


if WHAT in ("", "update"):
    for b in (64, 256):
        bench_update(b)
if WHAT in ("", "solve"):
    for s in SEEDS:
        bench_solve(s)
