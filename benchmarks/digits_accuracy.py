"""Accuracy after training at 99% sparsity on the bundled digits: SynFlow vs single-shot magnitude.

    python benchmarks/digits_accuracy.py [--epochs 60] [--seeds 0 1 2]

MLP 64-300-300-300-10, Adam; pruned by SynFlowPruning at fit start, then trained.
"""

from __future__ import annotations

import argparse
import warnings

import torch
from lightning.pytorch import Trainer, seed_everything

from lightning_synflow import SynFlowPruning
from lightning_synflow.data import DigitsDataModule
from lightning_synflow.models import MLP, ImageClassifier


def run(method: str, seed: int, epochs: int, sparsity: float, lr: float) -> tuple[float, int]:
    seed_everything(seed, verbose=False)
    data = DigitsDataModule(batch_size=64, flatten=True, seed=0)
    model = ImageClassifier(
        MLP(64, [300, 300, 300], 10), 10, [64], optimizer="adam", lr=lr, weight_decay=0.0, milestones=[10**6]
    )
    pruning = SynFlowPruning(
        sparsity=sparsity,
        method=method,
        iterations=100 if method == "synflow" else 1,
        seed=seed,
        verbose=False,
        progress=False,
    )
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[pruning],
    )
    trainer.fit(model, datamodule=data)
    accuracy = trainer.test(model, datamodule=data, verbose=False)[0]["test/acc"]
    empty = sum(int(not m.any()) for m in pruning.masks.values())
    return accuracy, empty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsity", type=float, default=0.99)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--methods", nargs="+", default=["synflow", "magnitude"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    print(f"sparsity {args.sparsity}, {args.epochs} epochs, Adam lr {args.lr}")
    print("method     seed  test_acc  empty_layers")
    for method in args.methods:
        for seed in args.seeds:
            accuracy, empty = run(method, seed, args.epochs, args.sparsity, args.lr)
            print(f"{method:9s}  {seed:4d}  {accuracy:8.4f}  {empty:12d}")


if __name__ == "__main__":
    main()
