#!/usr/bin/python3
"""PyTorch peer of bench/nn_bench.cpp: the same shapes, the same work, 2 threads.

Run:  /usr/bin/python3 bench/peers/nn_torch.py [filter]
Strongest setting: LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 (removes the page-fault
cost of PyTorch's large temporary buffers on this machine). Prints one line per benchmark:
name, median wall time in ms over the repetitions, and the process's peak RSS in MB.
"""
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(0)
FILTER = sys.argv[1] if len(sys.argv) > 1 else ""


def timeit(name, fn, reps=9, warmup=2):
    if FILTER not in name:
        return
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{name:40s} {statistics.median(times):10.3f} ms   peak {peak:8.1f} MB", flush=True)


CONVS = [("conv1_1", 1, 32, 3, 128, 1), ("conv1_2", 32, 32, 3, 128, 1), ("conv2_1", 32, 64, 3, 64, 1),
         ("conv2_2", 64, 64, 3, 64, 1), ("conv3_1", 64, 128, 3, 32, 1), ("conv3_2", 128, 128, 3, 32, 1),
         ("conv4_1", 128, 256, 3, 16, 2), ("conv4_2", 256, 256, 3, 16, 2), ("head1_d3", 480, 64, 3, 128, 3),
         ("head2_d2", 64, 64, 3, 128, 2), ("head3_d1", 64, 64, 3, 128, 1), ("head_out_1x1", 64, 2, 1, 128, 1)]

for name, cin, cout, k, side, dil in CONVS:
    conv = torch.nn.Conv2d(cin, cout, k, padding=dil * (k - 1) // 2, dilation=dil)
    x = torch.randn(2, cin, side, side, requires_grad=True)
    dy = torch.randn(2, cout, side, side)
    with torch.no_grad():
        timeit(f"{name}_fwd", lambda: conv(x))

    def fwdbwd():
        conv.zero_grad(set_to_none=False)
        x.grad = None
        conv(x).backward(dy)

    timeit(f"{name}_fwdbwd", fwdbwd)


class LandmarkQNet(torch.nn.Module):
    def __init__(self, width=32):
        super().__init__()
        W = width
        self.convs = torch.nn.ModuleList([torch.nn.Conv3d(4, W, 5, padding=1), torch.nn.Conv3d(W, W, 5, padding=1),
                                          torch.nn.Conv3d(W, 2 * W, 4, padding=1), torch.nn.Conv3d(2 * W, 2 * W, 3)])
        self.fc = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.LeakyReLU(), torch.nn.Linear(512, 256),
                                      torch.nn.LeakyReLU(), torch.nn.Linear(256, 128), torch.nn.LeakyReLU())
        self.value = torch.nn.Linear(128, 1)
        self.adv = torch.nn.Linear(128, 6)

    def forward(self, x):
        for i, c in enumerate(self.convs):
            x = c(x)
            if i < 3:
                x = F.max_pool3d(x, 2)
            x = F.leaky_relu(x)
        h = self.fc(x.flatten(1))
        a = self.adv(h)
        return self.value(h) + a - a.mean(1, keepdim=True)


if "LandmarkQNet" in "LandmarkQNetUpdate" and FILTER in "LandmarkQNetUpdate":
    net = LandmarkQNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(48, 4, 45, 45, 45)
    target = torch.randn(48, 6)

    def update():
        opt.zero_grad()
        F.huber_loss(net(x), target).backward()
        opt.step()

    timeit("LandmarkQNetUpdate", update, reps=3, warmup=1)


class UNet2D(torch.nn.Module):
    def __init__(self, cin=1, cout=1, base=16):
        super().__init__()
        B1, B2 = base, 2 * base
        c = lambda i, o, s=1: torch.nn.Conv2d(i, o, 3, stride=s, padding=1)
        self.enc = torch.nn.ModuleList([c(cin, B1), c(B1, B2, 2), c(B2, B2, 2), c(B2, B2, 2)])
        self.dec = torch.nn.ModuleList([c(2 * B2, B2), c(2 * B2, B2), c(B2 + B1, B1)])
        self.refine = c(B1, B1)
        self.out = c(B1, cout)

    def forward(self, x):
        a = lambda h: F.leaky_relu(h, 0.2)
        up = lambda h: F.interpolate(h, scale_factor=2, mode="nearest")
        e = []
        h = x
        for conv in self.enc:
            h = a(conv(h))
            e.append(h)
        h = e[3]
        for conv, skip in zip(self.dec, (e[2], e[1], e[0])):
            h = a(conv(torch.cat([up(h), skip], 1)))
        return self.out(a(self.refine(h)))


if FILTER in "UNet2DTrainStep":
    unet = UNet2D()
    opt = torch.optim.Adam(unet.parameters(), lr=1e-3)
    x = torch.randn(1, 1, 128, 128)
    target = torch.rand(1, 1, 128, 128)

    def step():
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(unet(x), target).backward()
        opt.step()

    timeit("UNet2DTrainStep", step)
