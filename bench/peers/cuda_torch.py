#!/usr/bin/python3
"""PyTorch (CUDA) peer of bench/cuda_kernels_bench.cu: the same work on the same GPU.

Run:  python3 bench/peers/cuda_torch.py [filter] > bench/results/<device>-<date>-torch.txt
Work (float32, CUDA events around the timed call, median of the repetitions):
  copy_<n>            device-to-device copy of n floats (the bandwidth reference)
  warp3d_fwd_<n>      F.grid_sample, 1 x 1 x n^3, trilinear, zeros, align_corners=True, grid
                      precomputed (the voxel-displacement -> normalised-grid conversion untimed)
  warp3d_bwd_<n>      the backward of that call to the image and the grid (PyTorch's kernel uses
                      atomicAdd: non-deterministic), timed alone via autograd.grad with
                      retain_graph (forward not timed)
  patches_<side>_s<k> 64 x 4 centres, side^3 patches with stride k from a 256^3 volume, zero
                      padding, by advanced indexing on a padded volume (padding not timed)
  pixel_policy        softmax -> inverse-CDF sampling with torch.rand -> log-prob -> entropy as
                      separate ops, logits 64 x 9 x 70 x 70 (what the fused head replaces)
  pixel_a3c_step      the PA3C loss (value, policy, entropy terms) and its backward to logits and
                      values with autograd, same sizes
  adam_<n>            torch.optim.Adam(fused=True) step on n parameters (foreach as fallback)
  conv{2,3}d_{fwd,bwd_data,bwd_weight}_b<B>_<In>x<Out>_k<K>_n<n>_p<p>_d<d>_<mode>
                      the shapes of BM_Conv / BM_Conv2dDilated (stride 1): F.conv2d / F.conv3d,
                      and aten.convolution_backward with only the input or only the weight
                      gradient requested; mode fp32 (cuDNN, TF32 off, benchmark on), tf32 (TF32
                      allowed) or det (torch.backends.cudnn.deterministic, TF32 off)
Prints one line per benchmark: name, median time in microseconds.
"""
import statistics
import sys

import torch
import torch.nn.functional as F

FILTER = sys.argv[1] if len(sys.argv) > 1 else ""
dev = torch.device("cuda")
torch.manual_seed(0)


def timeit(name, fn, reps=50, warmup=5):
    if FILTER not in name:
        return
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1e3)
    print(f"{name:28s} {statistics.median(times):12.2f} us", flush=True)


def bench_copy():
    for n in (128**3, 64 << 20):
        a = torch.zeros(n, device=dev)
        b = torch.empty_like(a)
        timeit(f"copy_{n}", lambda: b.copy_(a))


def grid_from_field(u):
    # u: [1, 3, D, H, W] voxel displacements along (z, y, x) -> grid [1, D, H, W, 3] in (x, y, z).
    _, _, d, h, w = u.shape
    zz, yy, xx = torch.meshgrid(torch.arange(d, device=dev), torch.arange(h, device=dev),
                                torch.arange(w, device=dev), indexing="ij")
    q = torch.stack((zz + u[0, 0], yy + u[0, 1], xx + u[0, 2]))
    sizes = torch.tensor([d, h, w], device=dev, dtype=torch.float32).view(3, 1, 1, 1)
    norm = 2 * q / (sizes - 1) - 1
    return norm.flip(0).permute(1, 2, 3, 0).unsqueeze(0).contiguous()


def bench_warp():
    for n in (64, 128):
        image = torch.rand(1, 1, n, n, n, device=dev) * 2 - 1
        u = torch.rand(1, 3, n, n, n, device=dev) * 4 - 2
        grid = grid_from_field(u)
        timeit(f"warp3d_fwd_{n}", lambda: F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros",
                                                        align_corners=True))
        image_r = image.clone().requires_grad_(True)
        grid_r = grid.clone().requires_grad_(True)
        out = F.grid_sample(image_r, grid_r, mode="bilinear", padding_mode="zeros", align_corners=True)
        go = torch.rand_like(out)
        timeit(f"warp3d_bwd_{n}", lambda: torch.autograd.grad(out, (image_r, grid_r), go, retain_graph=True))


def bench_patches():
    samples, frames = 64, 4
    volume = torch.rand(256, 256, 256, device=dev)
    for side, stride in ((45, 1), (45, 2)):
        pad = (side // 2) * stride + 1
        padded = F.pad(volume, (pad,) * 6)
        centres = torch.randint(20, 236, (samples * frames, 3), device=dev)
        k = (torch.arange(side, device=dev) - side // 2) * stride + pad
        def run():
            z = (centres[:, 2, None] + k).view(-1, side, 1, 1)
            y = (centres[:, 1, None] + k).view(-1, 1, side, 1)
            x = (centres[:, 0, None] + k).view(-1, 1, 1, side)
            return padded[z, y, x].view(samples, frames, side, side, side)
        timeit(f"patches_{side}_s{stride}", run)


def bench_pixel_head():
    B, A, H, W = 64, 9, 70, 70
    logits = torch.randn(B, A, H, W, device=dev) * 2

    def policy():
        p = torch.softmax(logits, dim=1)
        cdf = torch.cumsum(p, dim=1)
        u = torch.rand(B, 1, H, W, device=dev)
        a = (cdf <= u).sum(dim=1, keepdim=True).clamp_(max=A - 1)
        logp_all = torch.log_softmax(logits, dim=1)
        logp = logp_all.gather(1, a)
        ent = -(p * logp_all).sum(dim=1, keepdim=True)
        return a, logp, ent
    timeit("pixel_policy", policy)

    z = logits.clone().requires_grad_(True)
    v = torch.randn(B, 1, H, W, device=dev, requires_grad=True)
    R = torch.randn(B, 1, H, W, device=dev)
    a, _, _ = policy()

    def step():
        logp_all = torch.log_softmax(z, dim=1)
        p = logp_all.exp()
        ent = -(p * logp_all).sum(dim=1, keepdim=True)
        adv = (R - v).detach()
        loss = (0.5 * (R - v) ** 2 - logp_all.gather(1, a) * adv - 0.01 * ent).mean()
        return torch.autograd.grad(loss, (z, v))
    timeit("pixel_a3c_step", step)


def bench_adam():
    n = 10 << 20
    p = torch.nn.Parameter(torch.rand(n, device=dev))
    p.grad = torch.rand(n, device=dev)
    try:
        opt = torch.optim.Adam([p], lr=1e-3, fused=True)
    except (TypeError, RuntimeError):
        opt = torch.optim.Adam([p], lr=1e-3, foreach=True)
    timeit(f"adam_{n}", opt.step)


CONV2D_SHAPES = [(1, 64, 64, 3, n, d, d) for n in (128, 256) for d in (1, 2, 4)] + [(1, 480, 480, 3, 128, 2, 2)]
CONV3D_SHAPES = [(48, 4, 32, 5, 45, 1, 1), (48, 32, 32, 5, 21, 1, 1), (48, 32, 64, 4, 9, 1, 1), (48, 64, 64, 3, 4, 0, 1)]


def set_conv_mode(mode):
    torch.backends.cudnn.enabled = True
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = mode == "tf32"
    torch.backends.cudnn.deterministic = mode == "det"


def bench_conv():
    for dims, shapes in ((2, CONV2D_SHAPES), (3, CONV3D_SHAPES)):
        conv = F.conv2d if dims == 2 else F.conv3d
        for (b, cin, cout, k, n, p, d) in shapes:
            out = n + 2 * p - d * (k - 1)
            x = torch.rand(b, cin, *(n,) * dims, device=dev) * 2 - 1
            w = (torch.rand(cout, cin, *(k,) * dims, device=dev) * 2 - 1) * 0.1
            dy = torch.rand(b, cout, *(out,) * dims, device=dev) * 2 - 1
            ones, pads, dils, zeros = [1] * dims, [p] * dims, [d] * dims, [0] * dims
            tag = f"b{b}_{cin}x{cout}_k{k}_n{n}_p{p}_d{d}"
            for mode in ("fp32", "tf32", "det"):
                set_conv_mode(mode)
                timeit(f"conv{dims}d_fwd_{tag}_{mode}", lambda: conv(x, w, None, 1, p, d))
                timeit(f"conv{dims}d_bwd_data_{tag}_{mode}", lambda: torch.ops.aten.convolution_backward(
                    dy, x, w, None, ones, pads, dils, False, zeros, 1, [True, False, False]))
                timeit(f"conv{dims}d_bwd_weight_{tag}_{mode}", lambda: torch.ops.aten.convolution_backward(
                    dy, x, w, None, ones, pads, dils, False, zeros, 1, [False, True, False]))
            del x, w, dy
    set_conv_mode("fp32")


if __name__ == "__main__":
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    bench_copy()
    bench_warp()
    bench_patches()
    bench_pixel_head()
    bench_adam()
    bench_conv()
