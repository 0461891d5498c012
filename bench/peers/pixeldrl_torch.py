#!/usr/bin/python3
"""PyTorch peer of bench/pixeldrl_step_bench.cpp: one PixelDRL-MG PA3C (A2C) training iteration, 2 threads.

The network is nn::PixelDrlNet (include/rlmed/nn/models/pixeldrl_net.hpp) layer for layer:
  VggHalf(Base): conv1_1, conv1_2 | pool | conv2_1, conv2_2 | pool | conv3_1..3 | pool | conv4_1..3
  (3x3 same-padded convolutions with bias and ReLU, 2x2 max-pooling, conv4 block dilation 2);
  SAM on conv4_3: f' = f * softmax_spatial(W f + b + f) (W a 1x1 convolution, softmax over the
  H*W positions of each channel); features = concat(conv1_2, up2(conv2_2), up4(conv3_3), up8(f'))
  with bilinear upsampling (align_corners=False); policy and value heads, each
  conv3x3 d3 -> ReLU -> conv3x3 d2 -> ReLU -> conv3x3 d1 -> ReLU -> conv1x1 (Width -> 2 or 1).
The iteration is rl::PixelA3C::update with its defaults: reset the carve environment on a batch
of 2 images, 10 steps (forward, one categorical draw per pixel by the inverse CDF, X <- X * a,
reward (f_prev - G)^2 - (f - G)^2), returns R_t = r_t + 0.95 (w * R_{t+1}) with the learnable 3x3
reward map w (identity at start, true convolution, zero padding, R_10 = 0), loss
mean over steps and pixels of 0.5 (R - V)^2 - log pi(a|s) * stopgrad(R - V) - 0.01 H(pi),
backward through all 10 steps, the global gradient norm, one Adam step (lr 1e-3) over the
network and w. The images are synthetic (a disc on a noisy background): the time does not
depend on the values.

Run:  /usr/bin/python3 bench/peers/pixeldrl_torch.py [cpu|paper] [side, e.g. 64] [seconds, default 5]
      (PEER_THREADS=1 for one intra-op thread instead of 2)
Prints: the parameter count, then PixelDrl_Iteration/<width>/<side>  median ms per iteration and iterations/s.
"""
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("PEER_THREADS", "2")))
WIDTHS = {"cpu": (8, 16), "paper": (32, 64)}
BATCH, T_MAX, GAMMA, BETA, C_V, C_P, LR = 2, 10, 0.95, 0.01, 0.5, 1.0, 1e-3


def conv3(cin, cout, dilation=1):
    return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)


class VggHalf(nn.Module):
    def __init__(self, base, conv4_dilation=2):
        super().__init__()
        b = base
        self.conv1_1, self.conv1_2 = conv3(1, b), conv3(b, b)
        self.conv2_1, self.conv2_2 = conv3(b, 2 * b), conv3(2 * b, 2 * b)
        self.conv3_1, self.conv3_2, self.conv3_3 = conv3(2 * b, 4 * b), conv3(4 * b, 4 * b), conv3(4 * b, 4 * b)
        d = conv4_dilation
        self.conv4_1, self.conv4_2, self.conv4_3 = conv3(4 * b, 8 * b, d), conv3(8 * b, 8 * b, d), conv3(8 * b, 8 * b, d)

    def forward(self, x):
        t1 = F.relu(self.conv1_2(F.relu(self.conv1_1(x))))
        h = F.max_pool2d(t1, 2)
        t2 = F.relu(self.conv2_2(F.relu(self.conv2_1(h))))
        h = F.max_pool2d(t2, 2)
        t3 = F.relu(self.conv3_3(F.relu(self.conv3_2(F.relu(self.conv3_1(h))))))
        h = F.max_pool2d(t3, 2)
        c4 = F.relu(self.conv4_3(F.relu(self.conv4_2(F.relu(self.conv4_1(h))))))
        return t1, t2, t3, c4


class Sam(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, f):
        g = self.proj(f) + f
        b, c, h, w = g.shape
        m = torch.softmax(g.reshape(b, c, h * w), dim=2).reshape(b, c, h, w)
        return f * m


class DilatedHead(nn.Module):
    def __init__(self, cin, width, cout):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = conv3(cin, width, 3), conv3(width, width, 2), conv3(width, width, 1)
        self.out = nn.Conv2d(width, cout, 1)

    def forward(self, x):
        return self.out(F.relu(self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))))


class PixelDrlNet(nn.Module):
    def __init__(self, base, width):
        super().__init__()
        self.backbone = VggHalf(base)
        self.sam = Sam(8 * base)
        self.policy = DilatedHead(15 * base, width, 2)
        self.value = DilatedHead(15 * base, width, 1)

    def forward(self, x):
        t1, t2, t3, c4 = self.backbone(x)
        up = lambda t, s: F.interpolate(t, scale_factor=s, mode="bilinear", align_corners=False)
        feats = torch.cat([t1, up(t2, 2), up(t3, 4), up(self.sam(c4), 8)], dim=1)
        return self.policy(feats), self.value(feats)


def synthetic_batch(side):
    g = torch.Generator().manual_seed(11)
    yy, xx = torch.meshgrid(torch.arange(side, dtype=torch.float64), torch.arange(side, dtype=torch.float64),
                            indexing="ij")
    labels = torch.zeros(BATCH, 1, side, side)
    for b in range(BATCH):
        cy, cx, r = side * (0.4 + 0.2 * b), side * 0.5, side / 4.0
        labels[b, 0] = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).float()
    images = torch.where(labels > 0, 0.8, 0.3) + 0.1 * (torch.rand(labels.shape, generator=g) - 0.5)
    return images, labels


def iteration(net, reward_map, opt, images, labels, gen):
    """One rl::PixelA3C::update: reset, 10 sampled steps, returns, loss, backward, grad norm, Adam."""
    opt.zero_grad(set_to_none=False)
    obs = images.clone()
    mask = (obs != 0).float()
    logps, ents, values, rewards = [], [], [], []
    for _ in range(T_MAX):
        logits, v = net(obs)
        logp_all = F.log_softmax(logits, dim=1)  # [B, 2, H, W]
        with torch.no_grad():
            cdf = logp_all.exp().cumsum(dim=1)
            u = torch.rand(v.shape, generator=gen) * cdf[:, -1:]
            a = (u >= cdf).sum(dim=1, keepdim=True).clamp_(max=logits.shape[1] - 1)  # [B, 1, H, W]
            obs = obs * a.float()
            after = (obs != 0).float()
            rewards.append((mask - labels) ** 2 - (after - labels) ** 2)
            mask = after
        logps.append(logp_all.gather(1, a))
        ents.append(-(logp_all.exp() * logp_all).sum(dim=1, keepdim=True))
        values.append(v)
    # w * R as a true convolution == conv2d (a correlation) with the kernel flipped in both axes.
    w = torch.flip(reward_map, dims=(0, 1)).reshape(1, 1, 3, 3)
    R = torch.zeros_like(values[0])
    loss = 0.0
    n = T_MAX * values[0].numel()
    for t in reversed(range(T_MAX)):
        R = rewards[t] + GAMMA * F.conv2d(R, w, padding=1)
        adv = R - values[t]
        loss = loss + (C_V * adv.pow(2).sum() - C_P * (logps[t] * adv.detach()).sum() - BETA * ents[t].sum())
    loss = loss / n
    loss.backward()
    grad_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in opt.param_groups[0]["params"]))
    opt.step()
    return float(loss), float(grad_norm)


def main():
    width = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    side = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
    base, head = WIDTHS[width]
    torch.manual_seed(1)
    net = PixelDrlNet(base, head)
    reward_map = nn.Parameter(torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    print(f"PixelDrlNet<Base {base}, Width {head}> parameters (net only): {sum(p.numel() for p in net.parameters())}")
    opt = torch.optim.Adam(list(net.parameters()) + [reward_map], lr=LR)
    images, labels = synthetic_batch(side)
    gen = torch.Generator().manual_seed(1)
    iteration(net, reward_map, opt, images, labels, gen)  # warm-up, like the rlmed side
    times, loss = [], math.nan
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t0 = time.perf_counter()
        loss, _ = iteration(net, reward_map, opt, images, labels, gen)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(f"PixelDrl_Iteration/{width}/{side}  median {med * 1e3:.1f} ms  mean {statistics.mean(times) * 1e3:.1f} ms  "
          f"iterations/s {1.0 / med:.3f}  n {len(times)}  final_loss {loss:.5f}  threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
