#!/usr/bin/python3
"""PyTorch peer of bench/rl_ppo_bench.cpp: the same PPO, network sizes and hyper-parameters, 2 threads.

PPO with the clipped surrogate (eps 0.2), GAE (gamma 0.98, lambda 0.8), separate 64-64 tanh MLPs for
the policy (2 logits) and the value, orthogonal initialisation (gain sqrt 2, policy output 0.01,
value output 1, zero biases), Adam (eps 1e-5) at lr 1e-3, lr and clip range annealed linearly to 0
over 100k steps, 8 CartPole-v1 environments x 32 steps per rollout, 20 epochs of one minibatch of
256 (a fresh permutation per epoch), advantages normalised per minibatch, value loss
0.5 * mse, no entropy bonus, global-norm clipping at 0.5. A truncated episode bootstraps from the
value of its final observation. Evaluation every 10,000 steps: 20 greedy episodes in lockstep with
one batched policy query per step; stop once their mean return reaches 475. CartPole-v1 follows
Gymnasium's equations (float64 state, float32 observations, 500-step limit).

Run:  /usr/bin/python3 bench/peers/rl_ppo_torch.py [update|solve] [seeds, e.g. 1,2,3; default 1]
      (PEER_THREADS=1 in the environment for one intra-op thread instead of 2)
Prints: PPO_Update/B  median microseconds per minibatch step and updates/s (B = 64, 256)
        PPO_CartPoleSolve  wall seconds, the step it was solved at, env steps/s and updates/s.
"""
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("PEER_THREADS", "2")))
WHAT = sys.argv[1] if len(sys.argv) > 1 else ""
SEEDS = [int(x) for x in sys.argv[2].split(",")] if len(sys.argv) > 2 else [1]

N_ENVS, N_STEPS, BATCH, EPOCHS = 8, 32, 256, 20
GAMMA, LAMBDA, LR, CLIP, VF_COEF, MAX_NORM = 0.98, 0.8, 1e-3, 0.2, 0.5, 0.5
BUDGET, EVAL_EVERY, EVAL_EPISODES, TARGET = 100_000, 10_000, 20, 475.0


class CartPole:
    """Gymnasium CartPole-v1: explicit Euler, +1 per step, 12 degree / 2.4 m limits, 500 steps."""

    G, M_CART, M_POLE, HALF_LEN, FORCE, DT = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    TOTAL = M_CART + M_POLE
    PML = M_POLE * HALF_LEN
    THETA_MAX = 12 * 2 * math.pi / 360
    X_MAX = 2.4

    def __init__(self, rng):
        self.rng = rng
        self.s = None
        self.t = 0

    def reset(self):
        self.s = self.rng.uniform(-0.05, 0.05, size=4)
        self.t = 0
        return self.s.astype(np.float32)

    def step(self, a):
        x, xd, th, thd = self.s
        f = self.FORCE if a == 1 else -self.FORCE
        c, s = math.cos(th), math.sin(th)
        tmp = (f + self.PML * thd * thd * s) / self.TOTAL
        thacc = (self.G * s - c * tmp) / (self.HALF_LEN * (4.0 / 3.0 - self.M_POLE * c * c / self.TOTAL))
        xacc = tmp - self.PML * thacc * c / self.TOTAL
        self.s = np.array([x + self.DT * xd, xd + self.DT * xacc, th + self.DT * thd, thd + self.DT * thacc])
        self.t += 1
        x, th = self.s[0], self.s[2]
        terminated = bool(x < -self.X_MAX or x > self.X_MAX or th < -self.THETA_MAX or th > self.THETA_MAX)
        return self.s.astype(np.float32), 1.0, terminated, self.t >= 500


def mlp(out, last_gain):
    net = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, out))
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    for i, lin in enumerate(linears):
        torch.nn.init.orthogonal_(lin.weight, gain=last_gain if i == len(linears) - 1 else math.sqrt(2))
        torch.nn.init.zeros_(lin.bias)
    return net


class PPO:
    def __init__(self, seed):
        torch.manual_seed(seed)
        self.pi = mlp(2, 0.01)
        self.vf = mlp(1, 1.0)
        self.params = list(self.pi.parameters()) + list(self.vf.parameters())
        self.opt = torch.optim.Adam(self.params, lr=LR, eps=1e-5)

    def act(self, obs):
        with torch.no_grad():
            logits = self.pi(obs)
            values = self.vf(obs).squeeze(1)
            dist = torch.distributions.Categorical(logits=logits)
            a = dist.sample()
            return a, dist.log_prob(a), values

    def value(self, obs):
        with torch.no_grad():
            return self.vf(obs).squeeze(1)

    def greedy(self, obs):
        with torch.no_grad():
            return self.pi(obs).argmax(1)

    def minibatch_step(self, obs, act, old_logp, adv, ret, clip):
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        logits = self.pi(obs)
        logp_all = F.log_softmax(logits, dim=1)
        logp = logp_all.gather(1, act.unsqueeze(1)).squeeze(1)
        ratio = torch.exp(logp - old_logp)
        policy_loss = -torch.min(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv).mean()
        value_loss = F.mse_loss(self.vf(obs).squeeze(1), ret)
        loss = policy_loss + VF_COEF * value_loss
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, MAX_NORM)
        self.opt.step()
        return loss.item()


class Rollout:
    def __init__(self, n_steps):
        self.obs = torch.zeros(n_steps, N_ENVS, 4)
        self.act = torch.zeros(n_steps, N_ENVS, dtype=torch.long)
        self.logp = torch.zeros(n_steps, N_ENVS)
        self.val = torch.zeros(n_steps, N_ENVS)
        self.rew = torch.zeros(n_steps, N_ENVS)
        self.term = torch.zeros(n_steps, N_ENVS)
        self.trunc = torch.zeros(n_steps, N_ENVS)
        self.trunc_val = torch.zeros(n_steps, N_ENVS)

    def gae(self, last_val):
        n = self.obs.shape[0]
        adv = torch.zeros(n, N_ENVS)
        a = torch.zeros(N_ENVS)
        for t in range(n - 1, -1, -1):
            nxt = self.trunc_val[t] * self.trunc[t] + (1 - self.trunc[t]) * (self.val[t + 1] if t + 1 < n else last_val)
            delta = self.rew[t] + GAMMA * (1 - self.term[t]) * nxt - self.val[t]
            a = delta + GAMMA * LAMBDA * (1 - self.term[t]) * (1 - self.trunc[t]) * a
            adv[t] = a
        return adv, adv + self.val


def collect(agent, envs, obs, ro, n_steps):
    finished = []
    for t in range(n_steps):
        a, logp, v = agent.act(obs)
        ro.obs[t], ro.act[t], ro.logp[t], ro.val[t] = obs, a, logp, v
        nxt = []
        for i, env in enumerate(envs):
            o, r, term, trunc = env.step(int(a[i]))
            ro.rew[t, i], ro.term[t, i], ro.trunc[t, i] = r, float(term), float(trunc and not term)
            if trunc and not term:
                ro.trunc_val[t, i] = agent.value(torch.from_numpy(o).unsqueeze(0))[0]
            if term or trunc:
                finished.append(env.t)
                o = env.reset()
            nxt.append(o)
        obs = torch.from_numpy(np.stack(nxt))
    return obs, finished


def evaluate(agent, seed, k):
    envs = [CartPole(np.random.default_rng([seed, 2, k, j])) for j in range(EVAL_EPISODES)]
    obs = [e.reset() for e in envs]
    returns = [0.0] * EVAL_EPISODES
    active = list(range(EVAL_EPISODES))
    while active:
        acts = agent.greedy(torch.from_numpy(np.stack([obs[j] for j in active])))
        still = []
        for idx, j in enumerate(active):
            o, r, term, trunc = envs[j].step(int(acts[idx]))
            returns[j] += r
            obs[j] = o
            if not (term or trunc):
                still.append(j)
        active = still
    return float(np.mean(returns))


def solve(seed):
    agent = PPO(seed)
    envs = [CartPole(np.random.default_rng([seed, 1, i])) for i in range(N_ENVS)]
    obs = torch.from_numpy(np.stack([e.reset() for e in envs]))
    ro = Rollout(N_STEPS)
    steps, updates, evals, solved_at, last_eval = 0, 0, 0, -1, float("nan")
    t0 = time.perf_counter()
    while steps < BUDGET:
        obs, _ = collect(agent, envs, obs, ro, N_STEPS)
        before = steps
        steps += N_STEPS * N_ENVS
        frac = max(0.0, 1.0 - steps / BUDGET)
        for g in agent.opt.param_groups:
            g["lr"] = LR * frac
        adv, ret = ro.gae(agent.value(obs))
        flat = (ro.obs.reshape(-1, 4), ro.act.reshape(-1), ro.logp.reshape(-1), adv.reshape(-1), ret.reshape(-1))
        m = flat[0].shape[0]
        for _ in range(EPOCHS):
            perm = torch.randperm(m)
            for s in range(0, m, BATCH):
                idx = perm[s:s + BATCH]
                agent.minibatch_step(*(x[idx] for x in flat), CLIP * frac)
                updates += 1
        if steps // EVAL_EVERY != before // EVAL_EVERY:
            last_eval = evaluate(agent, seed, evals)
            evals += 1
            if last_eval >= TARGET:
                solved_at = steps
                break
    wall = time.perf_counter() - t0
    return wall, solved_at, last_eval, steps / wall, updates / wall


def update_bench():
    agent = PPO(1)
    envs = [CartPole(np.random.default_rng([1, 1, i])) for i in range(N_ENVS)]
    obs = torch.from_numpy(np.stack([e.reset() for e in envs]))
    ro = Rollout(128)
    obs, _ = collect(agent, envs, obs, ro, 128)
    adv, ret = ro.gae(agent.value(obs))
    flat = (ro.obs.reshape(-1, 4), ro.act.reshape(-1), ro.logp.reshape(-1), adv.reshape(-1), ret.reshape(-1))
    for batch in (64, 256):
        perm = torch.randperm(1024)
        start = 0

        def one():
            nonlocal perm, start
            if start + batch > 1024:
                perm, start = torch.randperm(1024), 0
            idx = perm[start:start + batch]
            start += batch
            agent.minibatch_step(*(x[idx] for x in flat), CLIP)

        for _ in range(50):
            one()
        times = []
        for _ in range(9):
            t = time.perf_counter()
            for _ in range(200):
                one()
            times.append((time.perf_counter() - t) / 200 * 1e6)
        med = statistics.median(times)
        print(f"PPO_Update/{batch:<4d} {med:10.1f} us   {1e6 / med:10.0f} updates/s", flush=True)


if WHAT in ("", "update"):
    update_bench()
if WHAT in ("", "solve"):
    for seed in SEEDS:
        wall, at, ev, sps, ups = solve(seed)
        print(f"PPO_CartPoleSolve seed {seed}: {wall:8.2f} s   solved at {at}   eval {ev:.1f}   "
              f"{sps:9.0f} env steps/s   {ups:8.0f} updates/s", flush=True)
