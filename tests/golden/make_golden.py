#!/usr/bin/python3
"""Writes the golden fixtures rlmed's nn layers are compared against.

Run with Debian's PyTorch (apt-get install python3-torch):  /usr/bin/python3 make_golden.py
Each fixture is a safetensors file (written here by hand from the format's specification, so
the generator needs nothing but torch and numpy) holding the inputs, weights, a fixed output
projection R, the outputs, and the gradients of L = sum(R * output) with respect to the
input and every weight. All float32; fixed seeds; small shapes (a few hundred KB in total).
CI uses the committed files and needs no PyTorch.
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

torch.manual_seed(20261123)
torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
DTYPES = {np.float32: "F32", np.float64: "F64", np.int64: "I64"}


def save(name, tensors, meta=None):
    header, blobs, offset = {}, [], 0
    for key in sorted(tensors):
        a = np.ascontiguousarray(tensors[key].detach().cpu().numpy() if torch.is_tensor(tensors[key]) else tensors[key])
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[key] = {"dtype": DTYPES[a.dtype.type], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"generator": "tests/golden/make_golden.py", "torch": torch.__version__, **(meta or {})}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(os.path.join(HERE, name + ".safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def run(fn, inputs, params):
    """Output of fn, projection R, and gradients of sum(R * out) wrt inputs and params."""
    for t in list(inputs.values()) + list(params.values()):
        t.grad = None  # inputs are shared between fixtures: never accumulate
        t.requires_grad_(True)
    out = fn()
    R = torch.randn_like(out)
    (R * out).sum().backward()
    result = {"R": R, "y": out.detach()}
    for k, t in inputs.items():
        result[k] = t.detach()
        result["grad." + k] = t.grad.detach()
    for k, t in params.items():
        result[k] = t.detach()
        result["grad." + k] = t.grad.detach()
    return result


def conv_fixtures():
    x = torch.randn(2, 3, 11, 9)
    w = torch.randn(4, 3, 3, 3) * 0.3
    b = torch.randn(4) * 0.1
    save("conv2d_dilated", run(lambda: F.conv2d(x, w, b, stride=1, padding=2, dilation=2), {"x": x}, {"weight": w, "bias": b}),
         {"stride": "1", "padding": "2", "dilation": "2"})
    x = torch.randn(2, 3, 13, 10)
    w = torch.randn(5, 3, 3, 3) * 0.3
    b = torch.randn(5) * 0.1
    save("conv2d_stride2_dil3", run(lambda: F.conv2d(x, w, b, stride=2, padding=1, dilation=3), {"x": x}, {"weight": w, "bias": b}),
         {"stride": "2", "padding": "1", "dilation": "3"})
    x = torch.randn(1, 2, 9, 8, 7)
    w = torch.randn(3, 2, 3, 3, 3) * 0.3
    b = torch.randn(3) * 0.1
    save("conv3d_dilated", run(lambda: F.conv3d(x, w, b, stride=2, padding=1, dilation=2), {"x": x}, {"weight": w, "bias": b}),
         {"stride": "2", "padding": "1", "dilation": "2"})


def upsample_fixtures():
    x = torch.randn(2, 3, 5, 4)
    for mode, align in (("bilinear", False), ("bilinear", True), ("nearest", None)):
        kw = {} if align is None else {"align_corners": align}
        name = f"upsample2d_{mode}" + ("" if align is None else f"_align{int(align)}")
        save(name, run(lambda: F.interpolate(x, scale_factor=2, mode=mode, **kw), {"x": x}, {}))
    save("upsample2d_bilinear_size", run(lambda: F.interpolate(x, size=(9, 7), mode="bilinear", align_corners=False), {"x": x}, {}))
    v = torch.randn(1, 2, 3, 4, 5)
    save("upsample3d_trilinear", run(lambda: F.interpolate(v, scale_factor=2, mode="trilinear", align_corners=False), {"x": v}, {}))


def attention_fixture():
    f = torch.randn(2, 6, 7, 5)
    w = torch.randn(6, 6, 1, 1) * 0.3
    b = torch.randn(6) * 0.1

    def sam():
        g = F.conv2d(f, w, b) + f
        m = torch.softmax(g.flatten(2), dim=-1).view_as(g)  # softmax over the spatial positions
        return f * m

    save("self_attention", run(sam, {"x": f}, {"proj.weight": w, "proj.bias": b}))


def vgg_half(x, p, base):
    h = x
    names = ["conv1_1", "conv1_2", "pool", "conv2_1", "conv2_2", "pool", "conv3_1", "conv3_2", "conv3_3", "pool",
             "conv4_1", "conv4_2", "conv4_3"]
    for n in names:
        if n == "pool":
            h = F.max_pool2d(h, 2)
            continue
        dil = 2 if n.startswith("conv4") else 1
        h = F.relu(F.conv2d(h, p[n + ".weight"], p[n + ".bias"], padding=dil, dilation=dil))
    return h


def vgg_fixture():
    base = 4
    chans = {"conv1_1": (1, base), "conv1_2": (base, base), "conv2_1": (base, 2 * base), "conv2_2": (2 * base, 2 * base),
             "conv3_1": (2 * base, 4 * base), "conv3_2": (4 * base, 4 * base), "conv3_3": (4 * base, 4 * base),
             "conv4_1": (4 * base, 8 * base), "conv4_2": (8 * base, 8 * base), "conv4_3": (8 * base, 8 * base)}
    p = {}
    for n, (i, o) in chans.items():
        p[n + ".weight"] = torch.randn(o, i, 3, 3) * (2.0 / (9 * i)) ** 0.5
        p[n + ".bias"] = torch.randn(o) * 0.1
    x = torch.randn(2, 1, 24, 16)
    save("vgg_half_base4", run(lambda: vgg_half(x, p, base), {"x": x}, p))


def unet_fixture():
    B1, B2, In, Out = 4, 8, 2, 2
    shapes = {"enc0": (B1, In), "enc1": (B2, B1), "enc2": (B2, B2), "enc3": (B2, B2), "dec2": (B2, 2 * B2),
              "dec1": (B2, 2 * B2), "dec0": (B1, B2 + B1), "refine": (B1, B1), "out": (Out, B1)}
    p = {}
    for n, (o, i) in shapes.items():
        p[n + ".weight"] = torch.randn(o, i, 3, 3) * (2.0 / (9 * i)) ** 0.5
        p[n + ".bias"] = torch.randn(o) * 0.1
    x = torch.randn(1, In, 16, 24)

    def unet():
        c = lambda n, h, s=1: F.conv2d(h, p[n + ".weight"], p[n + ".bias"], stride=s, padding=1)
        a = lambda h: F.leaky_relu(h, 0.2)
        up = lambda h: F.interpolate(h, scale_factor=2, mode="nearest")
        e0 = a(c("enc0", x))
        e1 = a(c("enc1", e0, 2))
        e2 = a(c("enc2", e1, 2))
        e3 = a(c("enc3", e2, 2))
        d2 = a(c("dec2", torch.cat([up(e3), e2], 1)))
        d1 = a(c("dec1", torch.cat([up(d2), e1], 1)))
        d0 = a(c("dec0", torch.cat([up(d1), e0], 1)))
        return c("out", a(c("refine", d0)))

    save("unet2d_base4", run(unet, {"x": x}, p))


def optimizer_fixture():
    """Five steps of each optimiser on one parameter with given gradients."""
    p0 = torch.randn(7, 3)
    grads = [torch.randn(7, 3) for _ in range(5)]
    out = {"param0": p0}
    for i, g in enumerate(grads):
        out[f"grad{i}"] = g
    configs = {
        "sgd_nesterov": lambda q: torch.optim.SGD([q], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        "adam": lambda q: torch.optim.Adam([q], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.02),
        "adamw": lambda q: torch.optim.AdamW([q], lr=0.01, weight_decay=0.1),
        "rmsprop_centered": lambda q: torch.optim.RMSprop([q], lr=0.01, alpha=0.9, momentum=0.5, centered=True),
    }
    for name, make in configs.items():
        q = p0.clone().requires_grad_(True)
        opt = make(q)
        for g in grads:
            q.grad = g.clone()
            opt.step()
        out[name] = q.detach()
    save("optimizers", out)


def loss_fixture():
    pred = torch.randn(3, 4, 5)
    target = torch.randn(3, 4, 5)
    t01 = torch.rand(3, 4, 5)
    labels = torch.randint(0, 4, (3, 5))
    out = {"pred": pred, "target": target, "t01": t01, "labels": labels}
    for name, fn in {"mse": lambda p: F.mse_loss(p, target),
                     "huber": lambda p: F.huber_loss(p, target, delta=1.0),
                     "bce": lambda p: F.binary_cross_entropy_with_logits(p, t01),
                     "ce": lambda p: F.cross_entropy(p, labels)}.items():
        p = pred.clone().requires_grad_(True)
        value = fn(p)
        value.backward()
        out[name + ".value"] = value.detach().reshape(1)
        out[name + ".grad"] = p.grad.detach()
    save("losses", out)


if __name__ == "__main__":
    conv_fixtures()
    upsample_fixtures()
    attention_fixture()
    vgg_fixture()
    unet_fixture()
    optimizer_fixture()
    loss_fixture()
    total = sum(os.path.getsize(os.path.join(HERE, f)) for f in os.listdir(HERE) if f.endswith(".safetensors"))
    print(f"wrote fixtures, {total / 1024:.0f} KiB in total")
