"""Memory: peak extra memory while pruning, live mask size, and mask size in checkpoints.

    python benchmarks/memory.py

Each model is pruned in a fresh subprocess; the kernel's peak-RSS counter is reset just before
`prune()` and read right after, so "extra" is the growth of the process's peak resident memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, torch
sys.path.insert(0, {here!r})
from common import peak_rss, reset_peak_rss
from lightning_synflow import prune
from lightning_synflow.models import MLP, cifar_resnet, vgg16
from lightning_synflow.pruning import select_prunable
from lightning_synflow.masks import pack_mask
torch.set_num_threads(2)
name, iterations = {name!r}, {iterations}
model = {{"vgg16_bn": lambda: vgg16(10), "resnet20": lambda: cifar_resnet(20),
          "mlp_25M": lambda: MLP(1024, [4096, 4096, 1024], 10)}}[name]()
shape = (1, 1024) if name.startswith("mlp") else (1, 3, 32, 32)
weights = sum(p.numel() * p.element_size() for p in select_prunable(model).values())
before = reset_peak_rss()
masks = prune(model, compression=100, iterations=iterations, example_input=torch.zeros(shape))
extra = peak_rss() - before
mask_bytes = sum(m.numel() * m.element_size() for m in masks.values())
packed = sum(pack_mask(m).numel() for m in masks.values())
numel = sum(m.numel() for m in masks.values())
print(json.dumps(dict(name=name, weights=weights, extra=extra, mask_bytes=mask_bytes, packed=packed, numel=numel)))
"""


def main() -> None:
    rows = []
    for name, iterations in [("vgg16_bn", 100), ("resnet20", 100), ("mlp_25M", 20)]:
        code = CHILD.format(here=str(HERE), name=name, iterations=iterations)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print("model     prunable MB  peak extra MB  extra/weights  live mask B/weight  checkpoint bits/weight")
    for r in rows:
        print(
            f"{r['name']:9s} {r['weights'] / 2**20:11.1f}  {r['extra'] / 2**20:13.1f}"
            f"  {r['extra'] / r['weights']:13.2f}"
            f"  {r['mask_bytes'] / r['numel']:18.2f}  {8 * r['packed'] / r['numel']:22.3f}"
        )


if __name__ == "__main__":
    main()
