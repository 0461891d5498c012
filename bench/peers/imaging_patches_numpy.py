#!/usr/bin/python3
"""NumPy peer of bench/imaging_patches_bench.cpp: 192 patches of 45^3 from a 182x218x182 float32
volume, the same deterministic centres (up to 20 voxels beyond every border).

Two variants, both per-patch Python loops as rl-medical's environment does:
  rlmed_medical_style  per patch: bounds, strided slice, paste into a fresh np.zeros; np.stack the list
  prealloc             per patch: bounds, zero the out-of-volume part of a preallocated batch, slice-assign
Prints the median wall time over the repetitions (ms) and patch bytes per second.
Run:  /usr/bin/python3 bench/peers/imaging_patches_numpy.py [reps]
"""
import statistics
import sys
import time

import numpy as np

PATCHES, SIDE, MARGIN = 192, 45, 20
VOLUME_XYZ = (182, 218, 182)
MUL, ADD = (7919, 104729, 1299709), (13, 71, 29)


def centres():
    return [tuple((i * MUL[a] + ADD[a]) % (VOLUME_XYZ[a] + 2 * MARGIN) - MARGIN for a in range(3)) for i in range(PATCHES)]


def bounds(c_xyz, shape_zyx, stride):
    """Per tensor axis: (volume slice, patch slice) of the in-bounds samples, or None."""
    out = []
    for t in range(3):
        c = c_xyz[2 - t]
        first = c - (SIDE // 2) * stride
        lo = max(0, (-first + stride - 1) // stride)
        hi = min(SIDE, (shape_zyx[t] - first + stride - 1) // stride)
        if hi <= lo:
            return None
        out.append((slice(first + lo * stride, first + (hi - 1) * stride + 1, stride), slice(lo, hi)))
    return out


def rl_medical_style(volume, cs, stride):
    screens = []
    for c in cs:
        screen = np.zeros((SIDE, SIDE, SIDE), dtype=volume.dtype)
        b = bounds(c, volume.shape, stride)
        if b is not None:
            screen[tuple(p for _, p in b)] = volume[tuple(v for v, _ in b)]
        screens.append(screen)
    return np.stack(screens)


def prealloc(volume, cs, stride, out):
    for i, c in enumerate(cs):
        b = bounds(c, volume.shape, stride)
        dst = out[i]
        if b is None:
            dst.fill(0)
            continue
        inner = tuple(p for _, p in b)
        if any(p.start > 0 or p.stop < SIDE for p in inner):
            dst.fill(0)
        dst[inner] = volume[tuple(v for v, _ in b)]
    return out


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    rng = np.random.default_rng(1)
    volume = rng.random((VOLUME_XYZ[2], VOLUME_XYZ[1], VOLUME_XYZ[0]), dtype=np.float32)
    cs = centres()
    out = np.empty((PATCHES, SIDE, SIDE, SIDE), dtype=np.float32)
    ref = rl_medical_style(volume, cs, 1)
    assert np.array_equal(prealloc(volume, cs, 1, out), ref)
    nbytes = PATCHES * SIDE ** 3 * 4
    for stride in (1, 2):
        for name, fn in (("rl_medical_style", lambda: rl_medical_style(volume, cs, stride)),
                         ("prealloc", lambda: prealloc(volume, cs, stride, out))):
            for _ in range(2):
                fn()
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            print(f"numpy_{name}/stride:{stride:<2d} median {med * 1e3:9.3f} ms   {nbytes / med * 1e-9:6.2f} GB/s", flush=True)


if __name__ == "__main__":
    main()
