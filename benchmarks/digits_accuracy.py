"""Accuracy after training at 99% sparsity on the bundled digits: SynFlow vs single-shot magnitude.

    python benchmarks/digits_accuracy.py [--epochs 60] [--seeds 0 1 2]

MLP 64-300-300-300-10, Adam lr 0.01; pruned by SynFlowPruning at fit start (SynFlow: 100
iterations, baselines: one), then trained; the same run as examples/paper/fig6_accuracy.py.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "paper"))

from paper_common import train_digits_mlp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsity", type=float, default=0.99)
    parser.add_argument("--methods", nargs="+", default=["synflow", "magnitude"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    log_compression = -math.log10(1 - args.sparsity)
    print(f"sparsity {args.sparsity}, {args.epochs} epochs, Adam lr 0.01")
    print("method     seed  test_acc  empty_layers")
    for method in args.methods:
        for seed in args.seeds:
            accuracy, empty = train_digits_mlp(method, log_compression, seed, args.epochs)
            print(f"{method:9s}  {seed:4d}  {accuracy:8.2f}  {empty:12d}", flush=True)


if __name__ == "__main__":
    main()
