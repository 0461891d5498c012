#!/usr/bin/python3
"""Golden fixtures for rlmed's sampling area (resample.hpp, pyramid.hpp, patches.hpp).

Run with Debian's NumPy/SciPy/scikit-image:  /usr/bin/python3 tests/golden/make_golden_sampling.py
Writes tests/golden/imaging/sampling_*.safetensors (float32 data, float64 geometry, int64 indices).
Every expected output comes from SciPy / scikit-image / NumPy slicing, never from rlmed:
  * scipy.ndimage.gaussian_filter (mode='reflect', truncate=4), anisotropic and with radii
    larger than the axis;
  * linear resampling onto a rotated, anisotropic grid: the continuous input index of every
    output voxel from the two images' geometry, then scipy.ndimage.map_coordinates(order=1,
    mode='constant', cval=fill);
  * anti-aliased down-sampling: skimage.transform.rescale(order=1, mode='symmetric',
    anti_aliasing=True) for sizes that divide exactly, and gaussian_filter + map_coordinates for
    sizes that do not (σ = max(0, (f - 1) / 2), grid centred on the input grid);
  * a Gaussian pyramid: gaussian_filter(σ = 1) then samples at 2j + 0.5;
  * patch extraction the way rl-medical crops its agent's view: per patch, compute the bounds,
    slice the volume with the stride, and paste into a zero array.
"""
import json
import os
import struct

import numpy as np
import scipy
import scipy.ndimage as ndi
import skimage
import skimage.transform

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imaging")
RNG = np.random.default_rng(20261124)
DTYPE_NAMES = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("int64"): "I64"}


def write_safetensors(name, arrays):
    """Minimal safetensors writer: little-endian header length, JSON header, raw buffer."""
    header = {"__metadata__": {"generator": "tests/golden/make_golden_sampling.py", "numpy": np.__version__,
                               "scipy": scipy.__version__, "skimage": skimage.__version__}}
    chunks = []
    offset = 0
    for key in sorted(arrays):
        arr = np.ascontiguousarray(arrays[key])
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[key] = {"dtype": DTYPE_NAMES[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    path = os.path.join(OUT_DIR, name + ".safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for c in chunks:
            f.write(c)
    print(f"{path}: {os.path.getsize(path)} bytes")


def rotation(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def gaussian_fixtures():
    g3 = RNG.standard_normal((9, 12, 14)).astype(np.float32)
    s3 = np.array([1.0, 2.0, 0.7])  # tensor axes (z, y, x)
    g2 = RNG.standard_normal((7, 10)).astype(np.float32)
    s2 = np.array([3.0, 0.5])  # radius 12 on an axis of 7: periodic reflection
    write_safetensors("sampling_gaussian", {
        "g3.x": g3, "g3.sigma": s3, "g3.y": ndi.gaussian_filter(g3, s3, mode="reflect", truncate=4.0),
        "g2.x": g2, "g2.sigma": s2, "g2.y": ndi.gaussian_filter(g2, s2, mode="reflect", truncate=4.0),
    })


def resample_case(x, in_spacing, in_origin, in_dir, out_size, out_spacing, out_origin, out_dir, fill):
    """Linear resampling by map_coordinates; geometry vectors in (x, y[, z]) order."""
    dim = len(in_spacing)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in out_size], indexing="ij")  # (x, y, z) index
    j = np.stack([g.ravel() for g in grids])  # [dim, M]
    world = out_origin[:, None] + out_dir @ (out_spacing[:, None] * j)
    idx = np.linalg.solve(in_dir, world - in_origin[:, None]) / in_spacing[:, None]  # (x, y, z) continuous
    coords = idx[::-1]  # tensor order (z, y, x)
    vals = ndi.map_coordinates(x.astype(np.float64), coords, order=1, mode="constant", cval=fill)
    # the values are listed in (x, y, z) meshgrid order: reshape to out_size then transpose to tensor order
    y = vals.reshape(out_size).transpose(tuple(range(dim))[::-1])
    inside = np.all((coords >= 0) & (coords <= np.array(x.shape)[:, None] - 1), axis=0)
    return y.astype(np.float32), inside.mean()


def resample_fixtures():
    arrays = {}
    x3 = RNG.uniform(-1, 1, (8, 10, 12)).astype(np.float32)  # [z, y, x]
    g = {"in_spacing": np.array([0.9, 1.1, 1.3]), "in_origin": np.array([-4.0, 2.0, 1.5]),
         "in_direction": rotation(0.1, -0.05, 0.2), "out_size": np.array([15, 11, 9]),
         "out_spacing": np.array([0.7, 1.4, 1.0]), "out_origin": np.array([-5.0, 0.5, 0.0]),
         "out_direction": rotation(-0.15, 0.1, 0.05), "fill": np.array([-3.0])}
    y3, frac3 = resample_case(x3, g["in_spacing"], g["in_origin"], g["in_direction"], g["out_size"], g["out_spacing"],
                              g["out_origin"], g["out_direction"], g["fill"][0])
    assert 0.3 < frac3 < 0.95, frac3  # both interpolated and filled voxels are exercised
    arrays["r3.x"] = x3
    arrays["r3.y"] = y3
    for k, v in g.items():
        arrays["r3." + k] = v.astype(np.int64) if k == "out_size" else v.reshape(-1).astype(np.float64)
    x2 = RNG.uniform(0, 5, (13, 11)).astype(np.float32)
    c, s = np.cos(0.4), np.sin(0.4)
    g2 = {"in_spacing": np.array([1.0, 0.8]), "in_origin": np.array([3.0, -2.0]), "in_direction": np.eye(2),
          "out_size": np.array([20, 17]), "out_spacing": np.array([0.6, 0.7]), "out_origin": np.array([2.0, -4.0]),
          "out_direction": np.array([[c, -s], [s, c]]), "fill": np.array([0.25])}
    y2, frac2 = resample_case(x2, g2["in_spacing"], g2["in_origin"], g2["in_direction"], g2["out_size"], g2["out_spacing"],
                              g2["out_origin"], g2["out_direction"], g2["fill"][0])
    assert 0.3 < frac2 < 0.95, frac2
    arrays["r2.x"] = x2
    arrays["r2.y"] = y2
    for k, v in g2.items():
        arrays["r2." + k] = v.astype(np.int64) if k == "out_size" else v.reshape(-1).astype(np.float64)
    write_safetensors("sampling_resample", arrays)


def rescale_fixtures():
    # Exact division: scikit-image's own anti-aliased rescale ('symmetric' = ndimage 'reflect').
    x = RNG.uniform(0, 1, (12, 16, 18)).astype(np.float32)  # [z, y, x], spacing 1 mm
    sk = skimage.transform.rescale(x, (0.5, 0.25, 1.0 / 3.0), order=1, mode="symmetric", anti_aliasing=True,
                                   preserve_range=True)
    assert sk.shape == (6, 4, 6), sk.shape
    # Sizes that do not divide: gaussian_filter + map_coordinates on the centred grid.
    x2 = RNG.uniform(0, 1, (11, 13, 10)).astype(np.float32)
    old = np.array([1.0, 1.0, 1.0])  # tensor order (z, y, x)
    new = np.array([3.0, 1.7, 2.5])
    n = np.array(x2.shape)
    n_new = np.maximum(1, np.round(n * old / new)).astype(int)
    sigma = np.maximum(0.0, (new / old - 1.0) / 2.0)
    smooth = ndi.gaussian_filter(x2, sigma, mode="reflect", truncate=4.0)
    axes = [(n[t] - 1) / 2 + (np.arange(n_new[t]) - (n_new[t] - 1) / 2) * new[t] / old[t] for t in range(3)]
    coords = np.meshgrid(*axes, indexing="ij")
    y2 = ndi.map_coordinates(smooth.astype(np.float64), coords, order=1, mode="constant", cval=0.0)
    write_safetensors("sampling_rescale", {
        "sk.x": x, "sk.y": sk.astype(np.float32),
        "aa.x": x2, "aa.new_spacing_xyz": new[::-1].copy(), "aa.y": y2.astype(np.float32),
    })


def pyramid_fixtures():
    x = RNG.uniform(0, 1, (20, 17, 22)).astype(np.float32)
    levels = {"level0": x}
    cur = x
    for lev in (1, 2):
        sigma = [1.0 if s >= 2 else 0.0 for s in cur.shape]
        smooth = ndi.gaussian_filter(cur, sigma, mode="reflect", truncate=4.0)
        axes = [2 * np.arange(s // 2) + 0.5 if s >= 2 else np.arange(s, dtype=np.float64) for s in cur.shape]
        coords = np.meshgrid(*axes, indexing="ij")
        cur = ndi.map_coordinates(smooth.astype(np.float64), coords, order=1, mode="constant", cval=0.0).astype(np.float32)
        levels[f"level{lev}"] = cur
    write_safetensors("sampling_pyramid", levels)


def rl_medical_patch(vol, centre_xyz, size_xyz, stride_xyz):
    """rl-medical style crop: bounds per axis, strided slice, paste into zeros. vol is [z, y, x]."""
    size_t = size_xyz[::-1]
    stride_t = stride_xyz[::-1]
    centre_t = centre_xyz[::-1]
    screen = np.zeros(size_t, dtype=vol.dtype)
    src, dst = [], []
    for t in range(3):
        first = centre_t[t] - (size_t[t] // 2) * stride_t[t]
        ks = [k for k in range(size_t[t]) if 0 <= first + k * stride_t[t] < vol.shape[t]]
        if not ks:
            return screen
        lo, hi = ks[0], ks[-1] + 1
        src.append(slice(first + lo * stride_t[t], first + (hi - 1) * stride_t[t] + 1, stride_t[t]))
        dst.append(slice(lo, hi))
    screen[tuple(dst)] = vol[tuple(src)]
    return screen


def patch_fixtures():
    vol = RNG.uniform(1, 2, (20, 24, 28)).astype(np.float32)  # [z, y, x]
    n_t = np.array(vol.shape)
    n_xyz = n_t[::-1]
    centres = [RNG.integers(-6, n_xyz + 6) for _ in range(8)]
    for a in range(3):  # on, next to and beyond each border
        for v in (-9, -1, 0, 1, n_xyz[a] - 2, n_xyz[a] - 1, n_xyz[a], n_xyz[a] + 8):
            c = n_xyz // 2
            c[a] = v
            centres.append(c.copy())
    centres = np.array(centres, dtype=np.int64)
    arrays = {"volume": vol, "centres_xyz": centres}
    cases = {"odd": ([7, 7, 7], [1, 1, 1]), "even_strided": ([6, 5, 4], [1, 2, 3]), "big": ([9, 8, 10], [2, 1, 1])}
    for name, (size, stride) in cases.items():
        arrays[name + ".size_xyz"] = np.array(size, dtype=np.int64)
        arrays[name + ".stride_xyz"] = np.array(stride, dtype=np.int64)
        arrays[name + ".patches"] = np.stack([rl_medical_patch(vol, c, size, stride) for c in centres])
    write_safetensors("sampling_patches", arrays)


if __name__ == "__main__":
    os.makedirs(OUT_DIR, exist_ok=True)
    gaussian_fixtures()
    resample_fixtures()
    rescale_fixtures()
    pyramid_fixtures()
    patch_fixtures()
