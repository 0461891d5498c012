#!/usr/bin/python3
"""Golden fixtures for rlmed/imaging/{distance_transform,metrics}.hpp.

Run with Debian's Python (python3-numpy, python3-scipy, python3-torch):
    /usr/bin/python3 tests/golden/make_golden_metrics.py
Writes tests/golden/imaging/metrics.safetensors. Everything is computed here independently of
rlmed, from scipy.ndimage (distance_transform_edt, binary_erosion, uniform_filter), numpy
(np.percentile) and torch autograd (the local NCC gradient):

  edt.<case>.*       mask (U8), sampling (F64, per array axis), distances (F32):
                     scipy's EDT to background, EDT of ~mask (to foreground), and the EDT of the
                     mask padded by one background voxel, cropped back ("framed").
  seg.<case>.*       prediction/label (U8), spacing (F64) and
                     scores = [dice, iou, ppv, sensitivity, boundary_iou, band_width]
                     (smoothed with eps = 1e-4), and when both masks are non-empty
                     surface = [hd95, hausdorff, mean surface distance] (medpy's definitions:
                     surface = mask XOR binary_erosion(mask, face connectivity, border_value=0),
                     distances by the EDT of the other surface with the spacing).
  mld.*              label maps (U8), labels (I64), per-label Dice (F64; NaN when the label is
                     absent from both maps).
  ncc.<case>.*       fixed/warped (F32), window (I64), value (F64) of VoxelMorph's local NCC
                     (mean cc, the loss without its minus sign) and grad (F32), d value / d warped
                     from torch autograd of VoxelMorph's conv-based formulation in float64.
Masks are generated here (random smooth fields, thresholded); some are empty, some touch the
image border, some have anisotropic spacing. Fixed seeds; about 300 KB in total.
"""
import json
import os
import struct

import numpy as np
from scipy import ndimage as ndi
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "imaging", "metrics.safetensors")
EPS = 1e-4
rng = np.random.default_rng(20240611)
TAGS = {np.dtype(np.uint8): "U8", np.dtype(np.int64): "I64", np.dtype(np.float32): "F32", np.dtype(np.float64): "F64"}


def write_safetensors(path, tensors, meta):
    """Minimal safetensors writer: 8-byte header length, JSON header, raw little-endian data."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": TAGS[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header["__metadata__"] = meta
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)


def blob_mask(shape, sigma, fraction):
    """Smooth random field thresholded so that about `fraction` of the voxels are foreground."""
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field > np.quantile(field, 1.0 - fraction)).astype(np.uint8)


tensors = {}

# ---------------------------------------------------------------------------------------------
# Euclidean distance transforms
# ---------------------------------------------------------------------------------------------
edt_cases = {
    "blob2d": (blob_mask((40, 36), 3.0, 0.6), (1.0, 1.0)),
    "aniso2d": (blob_mask((33, 47), 4.0, 0.7), (0.7, 1.9)),
    "aniso3d": (blob_mask((18, 20, 16), 2.5, 0.65), (2.5, 0.8, 0.8)),
    "noise3d": ((rng.random((12, 14, 10)) < 0.92).astype(np.uint8), (1.0, 1.0, 1.0)),
    "background2d": (np.zeros((5, 7), np.uint8), (1.0, 1.0)),
}
for name, (mask, sampling) in edt_cases.items():
    p = f"edt.{name}."
    tensors[p + "mask"] = mask
    tensors[p + "sampling"] = np.array(sampling, np.float64)
    tensors[p + "to_background"] = ndi.distance_transform_edt(mask, sampling=sampling).astype(np.float32)
    if mask.any():
        tensors[p + "to_foreground"] = ndi.distance_transform_edt(1 - mask, sampling=sampling).astype(np.float32)
    padded = np.pad(mask, 1, constant_values=0)
    inner = tuple(slice(1, -1) for _ in mask.shape)
    tensors[p + "framed"] = ndi.distance_transform_edt(padded, sampling=sampling)[inner].astype(np.float32)

# ---------------------------------------------------------------------------------------------
# Segmentation metrics
# ---------------------------------------------------------------------------------------------


def overlap(pred, label):
    pred, label = pred.astype(bool), label.astype(bool)
    tp = float(np.sum(pred & label))
    fp = float(np.sum(pred & ~label))
    fn = float(np.sum(~pred & label))
    t, p = tp + fn, tp + fp
    return [(2 * tp + EPS) / (t + p + EPS), (tp + EPS) / (t + p - tp + EPS), (tp + EPS) / (tp + fp + EPS),
            (tp + EPS) / (tp + fn + EPS)]


def boundary_iou(pred, label):
    diag = np.sqrt(np.sum(np.square(np.array(pred.shape, np.float64))))
    d = max(1.0, float(np.floor(0.02 * diag + 0.5)))
    inner = tuple(slice(1, -1) for _ in pred.shape)

    def band(m):
        # The reference implementation: d erosions with a 3x3(x3) all-ones kernel after zero
        # padding (chessboard distance to background <= d).
        padded = np.pad(m.astype(bool), 1, constant_values=False)
        eroded = ndi.binary_erosion(padded, structure=np.ones((3,) * m.ndim, bool), iterations=int(d), border_value=0)
        return m.astype(bool) & ~eroded[inner]

    bp, bl = band(pred), band(label)
    inter = float(np.sum(bp & bl))
    union = float(np.sum(bp | bl))
    return (inter + EPS) / (union + EPS), d


def surface_metrics(pred, label, spacing):
    structure = ndi.generate_binary_structure(pred.ndim, 1)

    def surface(m):
        m = m.astype(bool)
        return m ^ ndi.binary_erosion(m, structure=structure, iterations=1, border_value=0)

    sp, sl = surface(pred), surface(label)
    d_pl = ndi.distance_transform_edt(~sl, sampling=spacing)[sp]
    d_lp = ndi.distance_transform_edt(~sp, sampling=spacing)[sl]
    both = np.hstack([d_pl, d_lp])
    return [float(np.percentile(both, 95)), float(both.max()), float(both.mean())]


def shifted(mask, shift):
    return np.roll(mask, shift, axis=tuple(range(mask.ndim)))


seg_cases = {}
a = blob_mask((48, 40), 4.0, 0.35)
seg_cases["overlap2d"] = (a, shifted(a, (2, -1)) | blob_mask((48, 40), 2.0, 0.05), (1.0, 1.0))
b = blob_mask((36, 44), 3.0, 0.5)  # touches the border
b[0, :] = 1
seg_cases["border2d"] = (b, blob_mask((36, 44), 3.0, 0.45), (0.5, 1.25))
w = blob_mask((100, 90), 6.0, 0.4)  # diagonal 134.5 voxels: default band width 3
seg_cases["wide2d"] = (w, shifted(w, (3, 2)) & ~blob_mask((100, 90), 3.0, 0.1).astype(bool), (0.8, 0.8))
seg_cases["empty_pred2d"] = (np.zeros((20, 24), np.uint8), blob_mask((20, 24), 2.0, 0.3), (1.0, 1.0))
seg_cases["both_empty2d"] = (np.zeros((16, 12), np.uint8), np.zeros((16, 12), np.uint8), (1.0, 1.0))
c = blob_mask((20, 24, 18), 3.0, 0.3)
seg_cases["aniso3d"] = (c, shifted(c, (1, 2, 0)), (2.0, 0.9, 0.9))
d3 = blob_mask((16, 16, 16), 2.0, 0.6)
seg_cases["border3d"] = (d3, blob_mask((16, 16, 16), 2.0, 0.5), (1.0, 1.0, 1.0))
seg_cases["tiny3d"] = (np.pad(np.ones((1, 1, 1), np.uint8), ((3, 4), (2, 5), (6, 1))),
                       np.pad(np.ones((2, 3, 1), np.uint8), ((1, 5), (4, 1), (2, 5))), (1.5, 1.0, 0.5))

for name, (pred, label, spacing) in seg_cases.items():
    p = f"seg.{name}."
    tensors[p + "prediction"] = pred.astype(np.uint8)
    tensors[p + "label"] = label.astype(np.uint8)
    tensors[p + "spacing"] = np.array(spacing, np.float64)
    biou, width = boundary_iou(pred, label)
    tensors[p + "scores"] = np.array(overlap(pred, label) + [biou, width], np.float64)
    if pred.any() and label.any():
        tensors[p + "surface"] = np.array(surface_metrics(pred, label, spacing), np.float64)

# Multi-label Dice (label 4 absent from both maps -> NaN).
lab_a = rng.integers(0, 4, size=(10, 12, 9)).astype(np.uint8)
lab_a[lab_a == 3] = 5
lab_b = lab_a.copy()
flip = rng.random(lab_a.shape) < 0.3
lab_b[flip] = rng.integers(0, 4, size=int(flip.sum())).astype(np.uint8)
lab_b[lab_b == 3] = 5
labels = np.array([1, 2, 4, 5, 3], np.int64)
dice = []
for lab in labels:
    pa, pb = lab_a == lab, lab_b == lab
    if not pa.any() and not pb.any():
        dice.append(np.nan)
    else:
        dice.append((2 * float(np.sum(pa & pb)) + EPS) / (float(pa.sum()) + float(pb.sum()) + EPS))
tensors["mld.prediction"] = lab_a
tensors["mld.label"] = lab_b
tensors["mld.labels"] = labels
tensors["mld.dice"] = np.array(dice, np.float64)

# ---------------------------------------------------------------------------------------------
# Local NCC (VoxelMorph) value with scipy, gradient with torch autograd
# ---------------------------------------------------------------------------------------------


def local_ncc_scipy(i, j, window):
    i, j = i.astype(np.float64), j.astype(np.float64)
    n = float(np.prod(window))

    def box(x):
        return ndi.uniform_filter(x, size=window, mode="constant", cval=0.0) * n

    i_sum, j_sum, i2_sum, j2_sum, ij_sum = box(i), box(j), box(i * i), box(j * j), box(i * j)
    u_i, u_j = i_sum / n, j_sum / n
    cross = ij_sum - u_j * i_sum - u_i * j_sum + u_i * u_j * n
    i_var = i2_sum - 2 * u_i * i_sum + u_i * u_i * n
    j_var = j2_sum - 2 * u_j * j_sum + u_j * u_j * n
    return float(np.mean(cross * cross / (i_var * j_var + 1e-5)))


def local_ncc_torch_grad(i, j, window):
    ti = torch.tensor(i, dtype=torch.float64)[None, None]
    tj = torch.tensor(j, dtype=torch.float64)[None, None].requires_grad_(True)
    conv = F.conv2d if i.ndim == 2 else F.conv3d
    ones = torch.ones((1, 1) + tuple(window), dtype=torch.float64)
    pad = tuple(w // 2 for w in window)
    s = lambda x: conv(x, ones, padding=pad)
    n = float(np.prod(window))
    i_sum, j_sum, i2_sum, j2_sum, ij_sum = s(ti), s(tj), s(ti * ti), s(tj * tj), s(ti * tj)
    u_i, u_j = i_sum / n, j_sum / n
    cross = ij_sum - u_j * i_sum - u_i * j_sum + u_i * u_j * n
    i_var = i2_sum - 2 * u_i * i_sum + u_i * u_i * n
    j_var = j2_sum - 2 * u_j * j_sum + u_j * u_j * n
    cc = cross * cross / (i_var * j_var + 1e-5)
    value = cc.mean()
    value.backward()
    return float(value.detach()), tj.grad[0, 0].numpy()


def smooth_image(shape, sigma):
    x = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return (x - x.min()) / (x.max() - x.min())


ncc_cases = {
    "vxm2d": ((48, 40), (9, 9)),
    "vxm3d": ((20, 18, 16), (9, 9, 9)),
    "aniso3d": ((14, 16, 12), (5, 7, 3)),
}
for name, (shape, window) in ncc_cases.items():
    fixed = smooth_image(shape, 2.0).astype(np.float32)
    moving = np.roll(fixed, 2, axis=0) * 0.8 + 0.2 * smooth_image(shape, 1.0)
    moving = moving.astype(np.float32)
    moving.flat[::7] = 0.0  # some exact zeros, like a masked background
    value = local_ncc_scipy(fixed, moving, window)
    torch_value, grad = local_ncc_torch_grad(fixed.astype(np.float64), moving.astype(np.float64), window)
    assert abs(value - torch_value) < 1e-10, (name, value, torch_value)
    p = f"ncc.{name}."
    tensors[p + "fixed"] = fixed
    tensors[p + "warped"] = moving
    tensors[p + "window"] = np.array(window, np.int64)
    tensors[p + "value"] = np.array([value], np.float64)
    tensors[p + "grad"] = grad.astype(np.float32)

write_safetensors(OUT, tensors, {"generator": "tests/golden/make_golden_metrics.py", "numpy": np.__version__,
                                 "scipy": __import__("scipy").__version__, "torch": torch.__version__})
print(f"wrote {OUT}: {os.path.getsize(OUT)} bytes, {len(tensors)} tensors")
