#!/usr/bin/python3
"""PyTorch peer of bench/imaging_warp_bench.cpp: the same warps with F.grid_sample, 2 threads.

Run:  /usr/bin/python3 bench/peers/imaging_warp_torch.py [filter]
Work: one float32 image with one channel (128^3 trilinear, 256^2 bilinear), zeros padding,
align_corners=True, sampled along the same smooth field as the C++ benchmark
(u_c(p) = 3 sin(2 pi (p_a / n_a + c / 4)), a = (c + 1) mod Dim, voxel units, tensor-axis channels).
  *_fwd      grid_sample with the grid precomputed (the strictest comparison: the conversion from a
             voxel displacement to grid_sample's normalised grid is not timed)
  *_fwdbwd   the same forward, then backward to the image and the grid
  *_fwd_from_field / *_fwdbwd_from_field   also time that conversion (what a VoxelMorph-style
             spatial transformer does on every call), with the gradient flowing to the field
Prints one line per benchmark: name, median wall time in ms over the repetitions.
"""
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(0)
FILTER = sys.argv[1] if len(sys.argv) > 1 else ""


def timeit(name, fn, reps=15, warmup=3):
    if FILTER not in name:
        return
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    print(f"{name:36s} {statistics.median(times):10.3f} ms", flush=True)


def smooth_field(spatial):
    dim = len(spatial)
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in spatial], indexing="ij")
    channels = []
    for c in range(dim):
        a = (c + 1) % dim
        channels.append(3.0 * torch.sin(2 * math.pi * (axes[a] / spatial[a] + c / 4.0)))
    return torch.stack(channels).unsqueeze(0).float()  # [1, Dim, *S]


def to_grid(u):
    """Voxel displacement [N, Dim, *S] -> normalised grid [N, *S, Dim] in (x, y, z) order."""
    spatial = u.shape[2:]
    dim = len(spatial)
    axes = torch.meshgrid(*[torch.arange(n, dtype=u.dtype) for n in spatial], indexing="ij")
    q = torch.stack(axes).unsqueeze(0) + u
    scale = torch.tensor([2.0 / (n - 1) for n in spatial], dtype=u.dtype).view(1, dim, *([1] * dim))
    return (q * scale - 1.0).flip(1).movedim(1, -1)


def run(name, side, dim):
    spatial = (side,) * dim
    image = torch.rand(1, 1, *spatial)
    field = smooth_field(spatial)
    grid = to_grid(field).contiguous()
    dy = torch.randn(1, 1, *spatial)

    def sample(img, g):
        return F.grid_sample(img, g, mode="bilinear", padding_mode="zeros", align_corners=True)

    with torch.no_grad():
        timeit(f"{name}_fwd", lambda: sample(image, grid))
        timeit(f"{name}_fwd_from_field", lambda: sample(image, to_grid(field)))

    img_r = image.clone().requires_grad_(True)
    grid_r = grid.clone().requires_grad_(True)
    field_r = field.clone().requires_grad_(True)

    def fwdbwd():
        img_r.grad = None
        grid_r.grad = None
        sample(img_r, grid_r).backward(dy)

    def fwdbwd_from_field():
        img_r.grad = None
        field_r.grad = None
        sample(img_r, to_grid(field_r)).backward(dy)

    timeit(f"{name}_fwdbwd", fwdbwd)
    timeit(f"{name}_fwdbwd_from_field", fwdbwd_from_field)


print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
run("Warp3D_128", 128, 3)
run("Warp2D_256", 256, 2)
