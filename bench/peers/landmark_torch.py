#!/usr/bin/python3
"""PyTorch/NumPy peer of bench/landmark_env_bench.cpp, written after rl-medical's design (2 threads).

Environment as rl-medical does it: the volume is a NumPy array; every step moves the agent one voxel,
computes the mm reward clipped to [-1, 1], checks oscillation on a deque of recent locations
(a location seen 3 times in the last 20), crops the new cube with zero padding at the borders
(np.zeros + in-bounds slice copy) and pushes it on a 4-frame deque; the observation is
np.stack of the frames. Replay as rl-medical's: one uint8-quantised frame per step in a ring
buffer, batches assembled per index in a Python loop (history 4 for obs, shifted by one for next).
Update: Double DQN at batch 48 — online and target forward on next obs, online forward on obs,
smooth-L1 loss, global-norm clip 10, Adam 1e-3 — with the S1 network (Conv3d 4-32-32-64-64,
kernels 5-5-4-3, paddings 1-1-1-0, max-pool 2 after the first three, leaky ReLU, FC 512-256-128,
dueling head) on 45^3 cubes, or the CPU-sized network of the example on 11^3 cubes.
The volume is random noise of the voxelmorph brain's size (160 x 192 x 224, 1 mm); timing does
not depend on the content.

Run:  /usr/bin/python3 bench/peers/landmark_torch.py [env|render|update_s1|update_small|all]
Prints one line per case: median time per item and items/s over repeats.
"""
import collections
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(2)
WHAT = sys.argv[1] if len(sys.argv) > 1 else "all"
SHAPE = (160, 192, 224)  # numpy order (z, y, x)
BATCH = 48
FRAMES = 4


class Env:
    """One agent, one landmark, single scale (rl-medical's MedicalPlayer step and observe)."""

    def __init__(self, volume, cube, rng):
        self.vol, self.cube, self.rng = volume, cube, rng
        self.spacing = np.ones(3)
        self.reset()

    def reset(self):
        shape = np.array(self.vol.shape)
        self.target = shape // 2
        self.loc = self.target + self.rng.integers(-30, 31, size=3)
        self.loc_history = collections.deque(maxlen=20)
        self.frames = collections.deque(maxlen=FRAMES)
        self.steps = 0
        first = self.crop()
        for _ in range(FRAMES):
            self.frames.append(first)

    def crop(self):
        c, half = self.cube, self.cube // 2
        screen = np.zeros((c, c, c), dtype=np.float32)
        lo = self.loc - half
        hi = lo + c
        src_lo = np.maximum(lo, 0)
        src_hi = np.minimum(hi, self.vol.shape)
        dst_lo = src_lo - lo
        dst_hi = dst_lo + (src_hi - src_lo)
        if np.all(src_hi > src_lo):
            screen[dst_lo[0]:dst_hi[0], dst_lo[1]:dst_hi[1], dst_lo[2]:dst_hi[2]] = \
                self.vol[src_lo[0]:src_hi[0], src_lo[1]:src_hi[1], src_lo[2]:src_hi[2]]
        return screen

    def dist(self, loc):
        return float(np.linalg.norm((loc - self.target) * self.spacing))

    def step(self, action):
        new = self.loc.copy()
        axis, sign = action // 2, 1 if action % 2 == 0 else -1
        new[axis] += sign
        if new[axis] < 0 or new[axis] >= self.vol.shape[axis]:
            new = self.loc
        reward = float(np.clip(self.dist(self.loc) - self.dist(new), -1, 1))
        self.loc = new
        self.loc_history.append(tuple(new))
        oscillating = collections.Counter(self.loc_history).most_common(1)[0][1] >= 3
        self.steps += 1
        self.frames.append(self.crop())
        obs = np.stack(self.frames, axis=0)  # [4, c, c, c]
        done = oscillating or self.steps >= 200
        return obs, reward, done


class Replay:
    """rl-medical's ReplayMemory: uint8 frames in a ring, batches stacked per index in Python."""

    def __init__(self, capacity, cube):
        self.state = np.zeros((capacity, cube, cube, cube), dtype=np.uint8)
        self.action = np.zeros(capacity, dtype=np.int64)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.done = np.zeros(capacity, dtype=bool)
        self.capacity, self.size, self.pos = capacity, 0, 0

    def add(self, frame, action, reward, done):
        self.state[self.pos] = np.clip(frame * 255.0, 0, 255).astype(np.uint8)
        self.action[self.pos], self.reward[self.pos], self.done[self.pos] = action, reward, done
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng, batch):
        idx = rng.integers(FRAMES, self.size - 1, size=batch)
        obs, nxt = [], []
        for i in idx:  # rl-medical's _encode_sample
            frames = self.state[i - FRAMES + 1:i + 2].astype(np.float32) / 255.0
            obs.append(frames[:FRAMES])
            nxt.append(frames[1:])
        return (np.stack(obs), self.action[idx], self.reward[idx], np.stack(nxt),
                self.done[idx].astype(np.float32))


class Dueling(nn.Module):
    def __init__(self, features, actions=6):
        super().__init__()
        self.v, self.a = nn.Linear(features, 1), nn.Linear(features, actions)

    def forward(self, x):
        a = self.a(x)
        return self.v(x) + a - a.mean(dim=1, keepdim=True)


def s1_net():
    act = lambda: nn.LeakyReLU(0.01)
    return nn.Sequential(
        nn.Conv3d(4, 32, 5, padding=1), nn.MaxPool3d(2), act(),
        nn.Conv3d(32, 32, 5, padding=1), nn.MaxPool3d(2), act(),
        nn.Conv3d(32, 64, 4, padding=1), nn.MaxPool3d(2), act(),
        nn.Conv3d(64, 64, 3, padding=0), act(), nn.Flatten(),
        nn.Linear(512, 512), act(), nn.Linear(512, 256), act(), nn.Linear(256, 128), act(), Dueling(128))


def small_net():
    act = lambda: nn.LeakyReLU(0.01)
    return nn.Sequential(nn.Conv3d(4, 8, 3), nn.MaxPool3d(2), act(), nn.Conv3d(8, 16, 3), act(), nn.Flatten(),
                         nn.Linear(128, 64), act(), Dueling(64))


def make_volume():
    return np.random.default_rng(5).random(SHAPE, dtype=np.float32)


def bench_env(cube, steps=3000, repeats=3):
    vol = make_volume()
    rng = np.random.default_rng(3)
    env = Env(vol, cube, rng)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            _, _, done = env.step(int(rng.integers(6)))
            if done:
                env.reset()
        rates.append(steps / (time.perf_counter() - t0))
    r = statistics.median(rates)
    print(f"Landmark_EnvStep/{cube}  {1e6 / r:10.2f} us/step  {r:12.0f} steps/s", flush=True)


def filled_replay(cube, n=500):
    vol = make_volume()
    rng = np.random.default_rng(4)
    env = Env(vol, cube, rng)
    rep = Replay(n + 100, cube)
    for _ in range(n):
        a = int(rng.integers(6))
        obs, r, done = env.step(a)
        rep.add(obs[-1], a, r, done)
        if done:
            env.reset()
    return rep


def bench_render(cube, repeats=20):
    rep = filled_replay(cube)
    rng = np.random.default_rng(6)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        obs, _, _, _, _ = rep.sample(rng, BATCH)  # obs and next obs of 48 transitions
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    print(f"Landmark_Sample48/{cube}  {t * 1e3:10.3f} ms/batch (obs + next obs)  {BATCH / t:12.0f} transitions/s",
          flush=True)


def bench_update(name, net_fn, cube, repeats):
    torch.manual_seed(1)
    online, target = net_fn(), net_fn()
    target.load_state_dict(online.state_dict())
    opt = torch.optim.Adam(online.parameters(), lr=1e-3)
    rep = filled_replay(cube)
    rng = np.random.default_rng(7)

    def update():
        obs, act, rew, nxt, done = rep.sample(rng, BATCH)
        obs, nxt = torch.from_numpy(obs), torch.from_numpy(nxt)
        act, rew, done = torch.from_numpy(act), torch.from_numpy(rew), torch.from_numpy(done)
        with torch.no_grad():
            best = online(nxt).argmax(dim=1, keepdim=True)
            y = rew + 0.9 * (1 - done) * target(nxt).gather(1, best).squeeze(1)
        q = online(obs).gather(1, act[:, None]).squeeze(1)
        loss = F.smooth_l1_loss(q, y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(online.parameters(), 10.0)
        opt.step()
        return float(loss)

    update()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        update()
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    print(f"Landmark_DoubleDqnUpdate_{name}  {t * 1e3:10.1f} ms/update  {1 / t:10.2f} updates/s", flush=True)


if __name__ == "__main__":
    print(f"torch {torch.__version__}, numpy {np.__version__}, threads {torch.get_num_threads()}", flush=True)
    if WHAT in ("env", "all"):
        bench_env(45)
        bench_env(25)
    if WHAT in ("render", "all"):
        bench_render(45)
        bench_render(25)
    if WHAT in ("update_small", "all"):
        bench_update("Small", small_net, 11, 50)
    if WHAT in ("update_s1", "all"):
        bench_update("S1", s1_net, 45, 3)
