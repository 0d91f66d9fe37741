"""Scaling: pruning time and peak memory against the number of prunable weights.

    python benchmarks/scaling.py [--out benchmarks/results] [--quick]

MLPs from about 1M to 100M weights (SynFlow, 10 iterations, time per iteration reported) and the
paper's VGG (11/13/16/19) and CIFAR ResNet (20/32/44/56/110) depths (100 iterations). Each point runs
in a fresh subprocess so that its peak memory is its own. Writes scaling.csv and scaling.png, and
prints the log-log slopes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, {here!r})
from common import peak_rss, reset_peak_rss
from lightning_synflow import prune
from lightning_synflow.models import MLP, CifarResNet, CifarVGG
from lightning_synflow.pruning import select_prunable
torch.set_num_threads(2)
kind, size, iterations = {kind!r}, {size}, {iterations}
if kind == "mlp":
    model, shape = MLP(size, [size, size], 10, bias=False), (1, size)
elif kind == "vgg":
    model, shape = CifarVGG(size, 10), (1, 3, 32, 32)
else:
    model, shape = CifarResNet(size, 10), (1, 3, 32, 32)
numel = sum(p.numel() for p in select_prunable(model).values())
before = reset_peak_rss()
start = time.perf_counter()
prune(model, compression=100, iterations=iterations, example_input=torch.zeros(shape))
seconds = time.perf_counter() - start
print(json.dumps(dict(kind=kind, size=size, numel=numel, seconds=seconds, per_iteration=seconds / iterations,
                      extra=peak_rss() - before, iterations=iterations)))
"""


def slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log10(x) for x in xs], [math.log10(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    mlp_sizes = [700, 1400, 2800, 5000, 7070] if not args.quick else [700, 1400]  # 2*w^2 + 10w: 1M..100M
    points = [("mlp", w, 10) for w in mlp_sizes]
    if not args.quick:
        points += [("vgg", d, 100) for d in (11, 13, 16, 19)] + [("resnet", d, 100) for d in (20, 32, 44, 56, 110)]
    rows = []
    for kind, size, iterations in points:
        code = CHILD.format(here=str(HERE), kind=kind, size=size, iterations=iterations)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(
            f"{kind:6s} {size:5d}  {r['numel']:>11,} weights  {r['per_iteration'] * 1000:9.1f} ms/iteration  "
            f"peak extra {r['extra'] / 2**20:8.1f} MB ({r['extra'] / (4 * r['numel']):.2f}x weights)"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "scaling.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    mlp = [r for r in rows if r["kind"] == "mlp"]
    time_slope = slope([r["numel"] for r in mlp], [r["per_iteration"] for r in mlp])
    memory_slope = slope([r["numel"] for r in mlp], [r["extra"] for r in mlp])
    print(f"MLP log-log slopes: time per iteration {time_slope:.2f}, peak extra memory {memory_slope:.2f}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for kind, marker in (("mlp", "o"), ("vgg", "s"), ("resnet", "^")):
        part = [r for r in rows if r["kind"] == kind]
        if part:
            axes[0].loglog([r["numel"] for r in part], [r["per_iteration"] for r in part], marker, label=kind)
            axes[1].loglog([r["numel"] for r in part], [r["extra"] / 2**20 for r in part], marker, label=kind)
    axes[0].set(
        xlabel="prunable weights", ylabel="seconds per SynFlow iteration", title=f"time (MLP slope {time_slope:.2f})"
    )
    axes[1].set(
        xlabel="prunable weights", ylabel="peak extra memory (MB)", title=f"memory (MLP slope {memory_slope:.2f})"
    )
    for ax in axes:
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=100)


if __name__ == "__main__":
    main()
