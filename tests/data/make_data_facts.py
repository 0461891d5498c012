#!/usr/bin/python3
"""Writes tests/data/data_facts.json: known facts about every file in $RLMED_DATA_DIR, computed
independently of rlmed with Debian's Python (nibabel for NIfTI, PIL for PNG/JPEG, numpy + zlib
for MetaImage, .npz and MNIST IDX).

Run: RLMED_DATA_DIR=../shared/data /usr/bin/python3 tests/data/make_data_facts.py

For each image: shape in rlmed's tensor order (slowest axis first: (z, y, x) for volumes, which
is the memory order of NIfTI/MetaImage files and numpy's C order of .npy arrays), spacing,
origin and direction in rlmed's LPS world ((x, y, z) order), the label set of label maps, and
two checksums of the decoded values in that order: the plain sum and the weighted sum
sum_i v_i * ((i mod 1009) + 1), which also catches transposed or shifted data.
"""
import ast
import gzip
import json
import os
import zlib

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage as ndi

DATA = os.environ.get("RLMED_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data_facts.json")


def checksums(a):
    flat = np.asarray(a, dtype=np.float64).ravel(order="C")
    w = (np.arange(flat.size) % 1009 + 1).astype(np.float64)
    return {"sum": float(flat.sum()), "wsum": float((flat * w).sum()), "min": float(flat.min()), "max": float(flat.max())}


def nifti_facts(path, labels=False):
    img = nib.load(path)
    data = np.asanyarray(img.dataobj)  # scaled, [i, j, k] (x fastest on disk)
    ours = np.ascontiguousarray(data.transpose())  # rlmed order [k, j, i]
    aff = img.affine.copy()
    aff[:2, :] *= -1  # RAS -> LPS
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    facts = {"shape": list(ours.shape), "spacing": spacing.tolist(), "origin": aff[:3, 3].tolist(),
             "direction": (aff[:3, :3] / spacing).ravel().tolist(), **checksums(ours)}
    if labels:
        facts["labels"] = sorted(int(v) for v in np.unique(ours))
    return facts


def mha_array(path):
    """(voxels in file order = rlmed's tensor order, header fields) of a MetaImage with inline data."""
    raw = open(path, "rb").read()
    fields, pos = {}, 0
    while True:
        end = raw.index(b"\n", pos)
        key, _, value = raw[pos:end].decode().partition("=")
        fields[key.strip()] = value.strip()
        pos = end + 1
        if key.strip() == "ElementDataFile":
            break
    dims = [int(v) for v in fields["DimSize"].split()]
    dtype = {"MET_SHORT": "<i2", "MET_UCHAR": "u1", "MET_FLOAT": "<f4", "MET_USHORT": "<u2"}[fields["ElementType"]]
    payload = raw[pos:]
    if fields.get("CompressedData", "False") == "True":
        payload = zlib.decompress(payload)
    return np.frombuffer(payload, dtype=dtype).reshape(dims[::-1]), fields


def mha_facts(path):
    arr, fields = mha_array(path)
    n = arr.ndim
    tm = np.array([float(v) for v in fields.get("TransformMatrix", " ".join(["1" if i % (n + 1) == 0 else "0" for i in range(n * n)])).split()]).reshape(n, n)
    return {"shape": list(arr.shape), "spacing": [float(v) for v in fields["ElementSpacing"].split()],
            "origin": [float(v) for v in fields["Offset"].split()], "direction": tm.T.ravel().tolist(),
            "labels": sorted(int(v) for v in np.unique(arr)) if arr.dtype == np.uint8 else None, **checksums(arr)}


def reference_metrics():
    """The metric definitions of tests/golden/make_golden_metrics.py (scipy/numpy: Dice, IoU, PPV,
    SEN with eps 1e-4, boundary IoU, HD95/Hausdorff/mean surface distance), taken from that
    script's source so both generators score masks the same way (the script itself writes its
    fixtures when run, so it is not imported)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden", "make_golden_metrics.py")
    tree = ast.parse(open(path).read())
    wanted = {"overlap", "boundary_iou", "surface_metrics"}
    module = ast.Module(body=[n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted], type_ignores=[])
    namespace = {"np": np, "ndi": ndi, "EPS": 1e-4}
    exec(compile(module, path, "exec"), namespace)
    return namespace


def mask_pair_facts(pred, label, spacing_zyx):
    m = reference_metrics()
    biou, width = m["boundary_iou"](pred, label)
    return {"scores": m["overlap"](pred, label) + [biou, width],
            "surface": m["surface_metrics"](pred, label, spacing_zyx)}


def main():
    facts = {}
    for name in ["antspy/mni.nii.gz", "antspy/ch2.nii.gz"]:
        facts[name] = nifti_facts(os.path.join(DATA, name))
    facts["antspy/mnia.nii.gz"] = nifti_facts(os.path.join(DATA, "antspy/mnia.nii.gz"), labels=True)
    for name in sorted(os.listdir(os.path.join(DATA, "antspy"))):
        if name.endswith(".jpg"):
            a = np.asarray(Image.open(os.path.join(DATA, "antspy", name)).convert("L"))
            facts["antspy/" + name] = {"shape": list(a.shape), **checksums(a)}
    for name in sorted(os.listdir(os.path.join(DATA, "itkelastix-ct"))):
        if name.endswith(".mha"):
            facts["itkelastix-ct/" + name] = mha_facts(os.path.join(DATA, "itkelastix-ct", name))
        elif name.endswith(".txt") and "point" in name:
            lines = open(os.path.join(DATA, "itkelastix-ct", name)).read().split("\n")
            pts = np.array([[float(v) for v in l.split()] for l in lines[2:] if l.strip()])
            facts["itkelastix-ct/" + name] = {"kind": lines[0].strip(), "count": int(lines[1]), "shape": list(pts.shape), **checksums(pts)}
    with np.load(os.path.join(DATA, "voxelmorph/test_scan.npz")) as z:
        facts["voxelmorph/test_scan.npz:vol"] = {"shape": list(z["vol"].shape), "dtype": str(z["vol"].dtype), **checksums(z["vol"])}
        seg = z["seg"]
        facts["voxelmorph/test_scan.npz:seg"] = {"shape": list(seg.shape), "dtype": str(seg.dtype),
                                                 "labels": sorted(int(v) for v in np.unique(seg)), **checksums(seg)}
    with np.load(os.path.join(DATA, "voxelmorph/labels.npz")) as z:
        facts["voxelmorph/labels.npz:labels"] = {"shape": list(z["labels"].shape), "dtype": str(z["labels"].dtype),
                                                 "values": [int(v) for v in z["labels"]], **checksums(z["labels"])}
    for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]:
        raw = gzip.open(os.path.join(DATA, "mnist", name)).read()
        ndim = raw[3]
        dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
        a = np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)
        facts["mnist/" + name] = {"shape": dims, **checksums(a)}
    em = []
    for sub in ["image", "label"]:
        folder = os.path.join(DATA, "isbi2012-em/data/membrane/train", sub)
        for name in sorted(os.listdir(folder)):
            a = np.asarray(Image.open(os.path.join(folder, name)).convert("L"))
            em.append(("isbi2012-em/data/membrane/train/%s/%s" % (sub, name), {"shape": list(a.shape), **checksums(a)}))
    facts.update(em)
    # Metrics on real masks (pred, label): the CT head masks of the 2D pair, the 3D lung masks
    # (anisotropic spacing, distances in mm) and two EM membrane label maps (cell interior = 255).
    ct = os.path.join(DATA, "itkelastix-ct")
    a, fa = mha_array(os.path.join(ct, "CT_2D_head_fixed_mask.mha"))
    b, _ = mha_array(os.path.join(ct, "CT_2D_head_moving_mask.mha"))
    facts["metrics:ct2d_head_masks"] = mask_pair_facts(b != 0, a != 0, [float(v) for v in fa["ElementSpacing"].split()][::-1])
    a, fa = mha_array(os.path.join(ct, "CT_3D_lung_fixed_mask.mha"))
    b, _ = mha_array(os.path.join(ct, "CT_3D_lung_moving_mask.mha"))
    b = b[:a.shape[0], :a.shape[1], :a.shape[2]]  # the moving grid is larger: its leading corner
    facts["metrics:ct3d_lung_masks"] = mask_pair_facts(b != 0, a != 0, [float(v) for v in fa["ElementSpacing"].split()][::-1])
    labels = os.path.join(DATA, "isbi2012-em/data/membrane/train/label")
    l0 = np.asarray(Image.open(os.path.join(labels, "0.png")).convert("L")) > 127
    l1 = np.asarray(Image.open(os.path.join(labels, "1.png")).convert("L")) > 127
    facts["metrics:em_labels_0_1"] = mask_pair_facts(l1, l0, [1.0, 1.0])
    with open(OUT, "w") as f:  # one entry per line: reviewable diffs
        f.write("{\n" + ",\n".join(" %s: %s" % (json.dumps(k), json.dumps(facts[k], sort_keys=True)) for k in sorted(facts)) + "\n}\n")
    print("wrote", OUT, len(facts), "entries")


if __name__ == "__main__":
    main()
