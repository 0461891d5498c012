#!/usr/bin/python3
"""Golden trajectories of the classic-control environments for tests/rl/test_rl_spaces_envs.cpp.

Run with Debian's Python:  /usr/bin/python3 tests/rl/make_classic_golden.py
Writes tests/rl/golden/classic_control.safetensors (a few hundred KB at most).

Gymnasium itself is not installable here, so this file is an independent float64 transcription
of the equations Gymnasium publishes for CartPole-v1, Pendulum-v1, MountainCar-v0 and
Acrobot-v1 (constants as in Gymnasium 0.29.1 and 1.0.0, which agree), written from the
environment documentation and the cited papers:
  * CartPole: Barto, Sutton & Anderson (1983) with Florian's (2007) corrected pole equation,
    explicit Euler with tau = 0.02, thresholds 2.4 m and 12 degrees, reward 1 per step.
  * Pendulum: theta_ddot = 3g/(2l) sin(theta) + 3/(m l^2) u, semi-implicit Euler with dt = 0.05,
    speed clipped to 8, torque clipped to 2, cost normalise(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2.
  * MountainCar: Moore (1990) as Gymnasium codes it (force 0.001, gravity 0.0025, inelastic left wall).
  * Acrobot: Sutton & Barto's "book" dynamics, one classical RK4 step of dt = 0.2 on the
    state augmented by the torque, angle wrapping and velocity clipping as Gymnasium does.
Time limits (Gymnasium's TimeLimit): truncated on the step whose count reaches the limit.

Trig functions come from Python's math module (the C library), which is what CartPole and
MountainCar use in Gymnasium. Gymnasium's Pendulum and Acrobot call NumPy's sin/cos ufuncs, whose
SIMD kernels differ from the C library in the last ulp on some CPUs; the metadata records how far
the same trajectories drift when NumPy's ufuncs are used instead (numpy_trig_max_state_diff).
Floats are combined in the order Gymnasium's expressions combine them.

Each episode starts from a fixed initial state with a fixed action sequence (random or from a
simple controller chosen to reach termination or the time limit), and stores per step: state
(F64), observation (F32, the state rounded as Gymnasium returns it), reward (F64), terminated
and truncated (U8).
"""
import json
import math
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "golden", "classic_control.safetensors")
DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.int32): "I32",
          np.dtype(np.uint8): "U8"}


def write_safetensors(path, tensors, meta):
    """safetensors: u64 header length, JSON header (names sorted, padded to 8 bytes), raw data."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": DTYPES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header["__metadata__"] = meta
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)


# ---------------------------------------------------------------- CartPole-v1
class CartPoleRef:
    limit = 500
    g, m_cart, m_pole, half_len, f_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    m_total = m_pole + m_cart
    ml = m_pole * half_len
    theta_max = 12 * 2 * math.pi / 360
    x_max = 2.4

    def __init__(self, trig=math):
        self.trig = trig

    def step(self, s, a):
        x, xd, th, thd = s
        f = self.f_mag if a == 1 else -self.f_mag
        c, sn = self.trig.cos(th), self.trig.sin(th)
        tmp = (f + self.ml * thd ** 2 * sn) / self.m_total
        thacc = (self.g * sn - c * tmp) / (self.half_len * (4.0 / 3.0 - self.m_pole * c ** 2 / self.m_total))
        xacc = tmp - self.ml * thacc * c / self.m_total
        x, xd, th, thd = x + self.tau * xd, xd + self.tau * xacc, th + self.tau * thd, thd + self.tau * thacc
        term = x < -self.x_max or x > self.x_max or th < -self.theta_max or th > self.theta_max
        return [x, xd, th, thd], 1.0, term

    @staticmethod
    def obs(s):
        return np.array(s, dtype=np.float32)


# ---------------------------------------------------------------- Pendulum-v1
class PendulumRef:
    limit = 200
    max_speed, max_torque, dt, g, m, l = 8, 2.0, 0.05, 10.0, 1.0, 1.0

    def __init__(self, trig=math):
        self.trig = trig

    @staticmethod
    def normalise(th):
        return ((th + math.pi) % (2 * math.pi)) - math.pi  # Python's modulo: sign of the divisor

    def step(self, s, a):
        th, thd = s
        u = min(max(float(a[0]), -self.max_torque), self.max_torque)
        cost = self.normalise(th) ** 2 + 0.1 * thd ** 2 + 0.001 * (u ** 2)
        new_thd = thd + (3 * self.g / (2 * self.l) * self.trig.sin(th) + 3.0 / (self.m * self.l ** 2) * u) * self.dt
        new_thd = min(max(new_thd, -self.max_speed), self.max_speed)
        new_th = th + new_thd * self.dt
        return [new_th, new_thd], -cost, False

    @staticmethod
    def obs(s):
        return np.array([math.cos(s[0]), math.sin(s[0]), s[1]], dtype=np.float32)


# ---------------------------------------------------------------- MountainCar-v0
class MountainCarRef:
    limit = 200
    x_min, x_max, v_max, x_goal, v_goal, force, gravity = -1.2, 0.6, 0.07, 0.5, 0.0, 0.001, 0.0025

    def __init__(self, trig=math):
        self.trig = trig

    def step(self, s, a):
        x, v = s
        v += (a - 1) * self.force + self.trig.cos(3 * x) * (-self.gravity)
        v = min(max(v, -self.v_max), self.v_max)
        x += v
        x = min(max(x, self.x_min), self.x_max)
        if x == self.x_min and v < 0:
            v = 0.0
        term = x >= self.x_goal and v >= self.v_goal
        return [x, v], -1.0, term

    @staticmethod
    def obs(s):
        return np.array(s, dtype=np.float32)


# ---------------------------------------------------------------- Acrobot-v1
class AcrobotRef:
    limit = 500
    dt = 0.2
    l1, m1, m2, lc1, lc2, inertia, g = 1.0, 1.0, 1.0, 0.5, 0.5, 1.0, 9.8
    v1_max, v2_max = 4 * math.pi, 9 * math.pi
    torques = [-1.0, 0.0, +1]

    def __init__(self, trig=math):
        self.trig = trig

    def deriv(self, y):
        cos, sin, pi = self.trig.cos, self.trig.sin, math.pi
        m1, m2, l1, lc1, lc2, I1, I2, g = self.m1, self.m2, self.l1, self.lc1, self.lc2, self.inertia, self.inertia, self.g
        th1, th2, dth1, dth2, a = y
        d1 = m1 * lc1 ** 2 + m2 * (l1 ** 2 + lc2 ** 2 + 2 * l1 * lc2 * cos(th2)) + I1 + I2
        d2 = m2 * (lc2 ** 2 + l1 * lc2 * cos(th2)) + I2
        phi2 = m2 * lc2 * g * cos(th1 + th2 - pi / 2.0)
        phi1 = (-m2 * l1 * lc2 * dth2 ** 2 * sin(th2) - 2 * m2 * l1 * lc2 * dth2 * dth1 * sin(th2)
                + (m1 * lc1 + m2 * l1) * g * cos(th1 - pi / 2) + phi2)
        ddth2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * dth1 ** 2 * sin(th2) - phi2) / (m2 * lc2 ** 2 + I2 - d2 ** 2 / d1)
        ddth1 = -(d2 * ddth2 + phi1) / d1
        return [dth1, dth2, ddth1, ddth2, 0.0]

    @staticmethod
    def wrap(x, lo, hi):
        span = hi - lo
        while x > hi:
            x = x - span
        while x < lo:
            x = x + span
        return x

    def step(self, s, a):
        y0 = list(s) + [self.torques[a]]
        h = self.dt - 0.0
        h2 = h / 2.0
        k1 = self.deriv(y0)
        k2 = self.deriv([y + h2 * k for y, k in zip(y0, k1)])
        k3 = self.deriv([y + h2 * k for y, k in zip(y0, k2)])
        k4 = self.deriv([y + h * k for y, k in zip(y0, k3)])
        ns = [y0[i] + h / 6.0 * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]) for i in range(4)]
        ns[0] = self.wrap(ns[0], -math.pi, math.pi)
        ns[1] = self.wrap(ns[1], -math.pi, math.pi)
        ns[2] = min(max(ns[2], -self.v1_max), self.v1_max)
        ns[3] = min(max(ns[3], -self.v2_max), self.v2_max)
        term = -self.trig.cos(ns[0]) - self.trig.cos(ns[1] + ns[0]) > 1.0
        return ns, (0.0 if term else -1.0), term

    @staticmethod
    def obs(s):
        return np.array([math.cos(s[0]), math.sin(s[0]), math.cos(s[1]), math.sin(s[1]), s[2], s[3]],
                        dtype=np.float32)


class NumpyTrig:
    """NumPy's ufuncs on float64 scalars, as Gymnasium's Pendulum and Acrobot call them."""
    cos = staticmethod(lambda x: float(np.cos(np.float64(x))))
    sin = staticmethod(lambda x: float(np.sin(np.float64(x))))


def rollout(ref, s0, policy):
    """Runs one episode from s0; policy(t, state) -> action. Returns per-step arrays."""
    s, states, obs, rewards, terms, truncs, actions = list(s0), [], [], [], [], [], []
    for t in range(ref.limit):
        a = policy(t, s)
        s, r, term = ref.step(s, a)
        trunc = (t + 1) >= ref.limit
        actions.append(a)
        states.append(list(s))
        obs.append(ref.obs(s))
        rewards.append(r)
        terms.append(term)
        truncs.append(trunc)
        if term or trunc:
            break
    return dict(actions=actions, states=np.array(states, np.float64), observations=np.array(obs, np.float32),
                rewards=np.array(rewards, np.float64), terminated=np.array(terms, np.uint8),
                truncated=np.array(truncs, np.uint8))


def main():
    rng = np.random.default_rng(20260501)
    tensors, meta = {}, {"generator": "tests/rl/make_classic_golden.py", "numpy": np.__version__,
                         "reference": "Gymnasium 0.29.1 / 1.0.0 CartPole-v1, Pendulum-v1, MountainCar-v0, Acrobot-v1"}

    def record(env, k, ref, s0, actions_dtype, policy, check_trig=False):
        ep = rollout(ref, s0, policy)
        p = f"{env}.{k}."
        tensors[p + "initial_state"] = np.array(s0, np.float64)
        if actions_dtype == np.int32:
            tensors[p + "actions"] = np.array(ep["actions"], np.int32)
        else:
            tensors[p + "actions"] = np.array([a[0] for a in ep["actions"]], np.float32).reshape(-1, 1)
        for key in ("states", "observations", "rewards", "terminated", "truncated"):
            tensors[p + key] = ep[key]
        if check_trig:  # replay the same actions with NumPy's trig ufuncs
            acts = ep["actions"]
            ep_np = rollout(type(ref)(NumpyTrig), s0, lambda t, s: acts[t])
            n = min(len(ep_np["states"]), len(ep["states"]))
            diff = float(np.max(np.abs(ep_np["states"][:n] - ep["states"][:n])))
            meta[f"{env}.{k}.numpy_trig_max_state_diff"] = repr(diff)
        return ep

    summary = []
    # CartPole: random pushes (terminates early), a balancing controller (reaches the 500-step limit),
    # and a start close to the angle threshold.
    cp = CartPoleRef()
    rand_cp = rng.integers(0, 2, size=500)
    for k, s0 in enumerate([[0.01, -0.02, 0.03, 0.04], [-0.04, 0.03, -0.02, 0.01]]):
        ep = record("cartpole", k, cp, s0, np.int32, lambda t, s: int(rand_cp[t]))
        summary.append(("cartpole", k, len(ep["rewards"]), ep["terminated"][-1], ep["truncated"][-1]))
    ep = record("cartpole", 2, cp, [0.02, 0.01, -0.03, 0.02], np.int32,
                lambda t, s: 1 if s[2] + 0.3 * s[3] + 0.02 * s[0] + 0.1 * s[1] > 0 else 0)
    summary.append(("cartpole", 2, len(ep["rewards"]), ep["terminated"][-1], ep["truncated"][-1]))
    ep = record("cartpole", 3, cp, [0.0, 0.0, 0.19, 0.1], np.int32, lambda t, s: 0)
    summary.append(("cartpole", 3, len(ep["rewards"]), ep["terminated"][-1], ep["truncated"][-1]))

    # Pendulum: torques in [-2.5, 2.5] (some outside the box: clipped), 200 steps to truncation;
    # one start with a large angle (exercises the angle normalisation) and high speed.
    pd = PendulumRef()
    for k, s0 in enumerate([[2.5, -0.7], [-3.0, 0.9], [7.0, 7.9]]):
        torques = rng.uniform(-2.5, 2.5, size=200).astype(np.float32)
        ep = record("pendulum", k, pd, s0, np.float32, lambda t, s, tq=torques: [tq[t]], check_trig=True)
        summary.append(("pendulum", k, len(ep["rewards"]), ep["terminated"][-1], ep["truncated"][-1]))

    # MountainCar: random actions (time limit), energy pumping (reaches the goal), and a start at the
    # left wall moving left (inelastic collision).
    mc = MountainCarRef()
    rand_mc = rng.integers(0, 3, size=200)
    ep = record("mountain_car", 0, mc, [-0.5, 0.0], np.int32, lambda t, s: int(rand_mc[t]))
    summary.append(("mountain_car", 0, len(ep["rewards"]), ep["terminated"][-1], ep["truncated"][-1]))
    ep = record("mountain_car", 1, mc, [-0.45, 0.0], np.int32, lambda t, s: 2 if s[1] >= 0 else 0)
    summary.append(("mountain_car", 1, len(ep["rewards"]), ep["terminated"][-1], ep["truncated"][-1]))
    ep = record("mountain_car", 2, mc, [-1.19, -0.05], np.int32, lambda t, s: 0 if t < 5 else 2)
    summary.append(("mountain_car", 2, len(ep["rewards"]), ep["terminated"][-1], ep["truncated"][-1]))

    # Acrobot: random torques (500-step limit) and energy pumping with the torque following the
    # joint's velocity (reaches the height: termination). Initial states are float32
    # values, as Gymnasium's reset produces.
    ab = AcrobotRef()
    rand_ab = rng.integers(0, 3, size=500)
    s0 = [float(np.float32(v)) for v in (0.05, -0.03, 0.08, -0.01)]
    ep = record("acrobot", 0, ab, s0, np.int32, lambda t, s: int(rand_ab[t]), check_trig=True)
    summary.append(("acrobot", 0, len(ep["rewards"]), ep["terminated"][-1], ep["truncated"][-1]))
    s0 = [float(np.float32(v)) for v in (-0.07, 0.02, -0.04, 0.09)]
    ep = record("acrobot", 1, ab, s0, np.int32, lambda t, s: 2 if s[3] > 0 else 0, check_trig=True)
    summary.append(("acrobot", 1, len(ep["rewards"]), ep["terminated"][-1], ep["truncated"][-1]))

    write_safetensors(OUT, tensors, meta)
    for env, k, n, term, trunc in summary:
        print(f"{env}.{k}: {n} steps, terminated={term}, truncated={trunc}")
    for key, v in meta.items():
        if key.endswith("numpy_trig_max_state_diff"):
            print(key, v)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
