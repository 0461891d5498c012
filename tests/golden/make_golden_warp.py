#!/usr/bin/python3
"""Writes the golden fixtures of rlmed/imaging/warp.hpp into tests/golden/imaging/warp_*.safetensors.

Run with Debian's packages (python3-torch, python3-scipy):  /usr/bin/python3 tests/golden/make_golden_warp.py

rlmed's fields are [N, Dim, *spatial] in voxel units, channel c along tensor axis c, and output
voxel p samples the image at q = p + u(p). PyTorch's grid_sample wants a normalised grid
[N, *spatial, Dim] in (x, y[, z]) order; with align_corners=True the index q on an axis of n voxels
is 2 q / (n - 1) - 1. The conversion is done inside autograd, so the saved field gradient is
dL/du in rlmed's convention. Inputs are float32 values; torch computes in float64 and the
results are stored as float32 (the reference is then exact to float32 rounding).

Sample points have fractional parts in [0.1, 0.9] (and, for nearest, away from 0.5), so no
fixture sits on a kink of the linear interpolant, a clamp boundary or a rounding tie, where
one-ulp differences in q would change the result.

Fixtures (keys; L = sum(R * y)):
  warp{2,3}d_{linear,nearest}_{zeros,border}: image, field, R, y, grad.image, grad.field
  warp{2,3}d_map_coordinates: image [*S]; field_interior [Dim, *S] with q inside [0, n-1] and
      y_constant = map_coordinates(order=1, mode='constant'); field_full [Dim, *S] with q in
      [-2, n+1] and y_grid_constant / y_nearest (mode='grid-constant' / 'nearest').
"""
import json
import os
import struct

import numpy as np
import scipy
import torch
import torch.nn.functional as F
from scipy import ndimage

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "imaging")
rng = np.random.default_rng(20261124)
torch.set_num_threads(1)


def write_safetensors(name, arrays, meta):
    """Minimal safetensors writer: 8-byte little-endian header length, JSON header, raw data."""
    header, chunks, offset = {}, [], 0
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key], dtype="<f4")
        raw = a.tobytes()
        header[key] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"generator": "tests/golden/make_golden_warp.py", "torch": torch.__version__,
                              "scipy": scipy.__version__, **meta}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, name + ".safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)


def safe_displacement(batch, spatial, max_shift, avoid_half):
    """float32 field [N, Dim, *S]: an integer shift in [-max_shift, max_shift] plus a fraction in
    [0.1, 0.9] (in [0.1, 0.4] or [0.6, 0.9] when avoid_half)."""
    shape = (batch, len(spatial), *spatial)
    whole = rng.integers(-max_shift, max_shift + 1, size=shape)
    if avoid_half:
        frac = rng.uniform(0.1, 0.4, size=shape) + 0.5 * (rng.random(shape) < 0.5)
    else:
        frac = rng.uniform(0.1, 0.9, size=shape)
    return (whole + frac).astype(np.float32)


def grid_from_displacement(u):
    """rlmed field [N, Dim, *S] (float64 tensor) -> grid_sample grid [N, *S, Dim] (x first)."""
    spatial = u.shape[2:]
    dim = len(spatial)
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in spatial], indexing="ij")
    q = torch.stack(axes).unsqueeze(0) + u
    scale = torch.tensor([2.0 / (n - 1) for n in spatial], dtype=torch.float64).view(1, dim, *([1] * dim))
    return (q * scale - 1.0).flip(1).movedim(1, -1)


def warp_fixture(name, batch, channels, spatial, mode, padding):
    image = rng.standard_normal((batch, channels, *spatial)).astype(np.float32)
    field = safe_displacement(batch, spatial, 3, avoid_half=(mode == "nearest"))
    R = rng.standard_normal((batch, channels, *spatial)).astype(np.float32)
    x = torch.tensor(image, dtype=torch.float64, requires_grad=True)
    u = torch.tensor(field, dtype=torch.float64, requires_grad=True)
    y = F.grid_sample(x, grid_from_displacement(u), mode="bilinear" if mode == "linear" else "nearest",
                      padding_mode=padding, align_corners=True)
    (torch.tensor(R, dtype=torch.float64) * y).sum().backward()
    write_safetensors(name, {"image": image, "field": field, "R": R, "y": y.detach().numpy(),
                             "grad.image": x.grad.numpy(), "grad.field": u.grad.numpy()},
                      {"mode": mode, "padding": padding, "align_corners": "True"})


def map_coordinates_fixture(name, spatial):
    dim = len(spatial)
    image = rng.standard_normal(spatial).astype(np.float32)
    p = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in spatial], indexing="ij"))  # [Dim, *S]
    last = np.array(spatial, dtype=np.float64).reshape(dim, *([1] * dim)) - 1
    q_inside = rng.uniform(0.0, 1.0, size=(dim, *spatial)) * last
    field_interior = (q_inside - p).astype(np.float32)
    q_inside = np.clip(p + field_interior.astype(np.float64), 0.0, last)  # the float32 field's own points
    field_interior = (q_inside - p).astype(np.float32)
    q_inside = p + field_interior.astype(np.float64)
    assert (q_inside >= 0).all() and (q_inside <= last).all()
    q_full = -2.0 + rng.uniform(0.0, 1.0, size=(dim, *spatial)) * (last + 3)
    field_full = (q_full - p).astype(np.float32)
    q_full = p + field_full.astype(np.float64)
    image64 = image.astype(np.float64)
    write_safetensors(name, {
        "image": image,
        "field_interior": field_interior,
        "y_constant": ndimage.map_coordinates(image64, q_inside, order=1, mode="constant", cval=0.0),
        "field_full": field_full,
        "y_grid_constant": ndimage.map_coordinates(image64, q_full, order=1, mode="grid-constant", cval=0.0),
        "y_nearest": ndimage.map_coordinates(image64, q_full, order=1, mode="nearest"),
    }, {"order": "1"})


if __name__ == "__main__":
    for mode in ("linear", "nearest"):
        for padding in ("zeros", "border"):
            warp_fixture(f"warp2d_{mode}_{padding}", 2, 3, (7, 9), mode, padding)
            warp_fixture(f"warp3d_{mode}_{padding}", 2, 2, (5, 6, 7), mode, padding)
    map_coordinates_fixture("warp2d_map_coordinates", (9, 11))
    map_coordinates_fixture("warp3d_map_coordinates", (5, 6, 7))
