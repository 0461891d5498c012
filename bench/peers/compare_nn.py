#!/usr/bin/python3
"""Side-by-side table of bench/nn_bench.cpp and bench/peers/nn_torch.py runs.

Usage: compare_nn.py --rlmed R1.txt [R2.txt ...] --torch T1.txt [T2.txt ...] [--torch-default D.txt ...]
Inputs are the console outputs of the two programs (nn_bench with --benchmark_repetitions and
--benchmark_report_aggregates_only). Each cell is the median over runs of each run's median.
Prints a Markdown table: rlmed ms, PyTorch ms with jemalloc and with the default allocator, the
ratio rlmed / (faster PyTorch setting), and rlmed's GFLOP/s.
"""
import argparse
import re
import statistics

UNIT = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_rlmed(path):
    times, gflops = {}, {}
    for line in open(path):
        m = re.match(r"^(?:BM_)?(\S+?)(?:/iterations:\d+)?/real_time_median\s+([\d.]+)\s+(\w+)", line)
        if m:
            times[m.group(1)] = float(m.group(2)) * UNIT[m.group(3)]
            g = re.search(r"GFLOP/s=([\d.]+)", line)
            if g:
                gflops[m.group(1)] = float(g.group(1))
    return times, gflops


def parse_torch(path):
    out = {}
    for line in open(path):
        m = re.match(r"^(\S+)\s+([\d.]+) ms\s+peak\s+([\d.]+) MB", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def median_over(dicts, key):
    vals = [d[key] for d in dicts if key in d]
    return statistics.median(vals) if vals else float("nan")


ap = argparse.ArgumentParser()
ap.add_argument("--rlmed", nargs="+", required=True)
ap.add_argument("--torch", nargs="+", required=True)
ap.add_argument("--torch-default", nargs="*", default=[])
a = ap.parse_args()
r = [parse_rlmed(p) for p in a.rlmed]
rt, rg = [x[0] for x in r], [x[1] for x in r]
t = [parse_torch(p) for p in a.torch]
d = [parse_torch(p) for p in a.torch_default]
print("| benchmark | rlmed ms | PyTorch ms (jemalloc) | PyTorch ms (default) | ratio rlmed / best PyTorch | rlmed GFLOP/s |")
print("|---|---|---|---|---|---|")
for name in rt[0]:
    mine, theirs = median_over(rt, name), median_over(t, name)
    default = median_over(d, name) if d else float("nan")
    gf = median_over(rg, name)
    best = min(theirs, default) if default == default else theirs
    gf_text = f"{gf:.0f}" if gf == gf else "-"
    print(f"| {name} | {mine:.3g} | {theirs:.3g} | {default:.3g} | **{mine / best:.2f}** | {gf_text} |")
