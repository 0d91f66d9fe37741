"""Masked vs shrunk training on the bundled digits: accuracy over seeds and training time, side by side.

    python benchmarks/digits_shrink.py [--epochs 60] [--seeds 0 1 2] [--sparsity 0.99]

The demo's MLP 64-300-300-300-10 (Adam lr 0.01) is pruned by SynFlow (100 iterations) at fit start,
then trained either as the masked dense network (``SynFlowPruning()``) or as the thinner network
without the flowless units (``SynFlowPruning(shrink=True)``). Both runs of a seed start from the
same weights and see the same batches; they alternate, in one process.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import torch
from common import machine


def fit(seed: int, epochs: int, sparsity: float, shrink: bool) -> tuple[float, float, int]:
    """Test accuracy (%), fit seconds and trained parameter count of one run."""
    from lightning.pytorch import Trainer, seed_everything

    from lightning_synflow import SynFlowPruning
    from lightning_synflow.data import DigitsDataModule
    from lightning_synflow.models import MLP, ImageClassifier

    seed_everything(seed, verbose=False)
    data = DigitsDataModule(batch_size=64, seed=0)
    model = ImageClassifier(
        MLP(64, [300, 300, 300], 10), 10, [64], optimizer="adam", lr=0.01, weight_decay=0.0, milestones=[10**6]
    )
    pruning = SynFlowPruning(sparsity=sparsity, shrink=shrink, verbose=False, progress=False)
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
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - start
    accuracy = 100 * trainer.test(model, datamodule=data, verbose=False)[0]["test/acc"]
    return accuracy, seconds, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsity", type=float, default=0.99)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(machine())
    print(f"sparsity {args.sparsity}, {args.epochs} epochs; fit time includes pruning (same in both)")
    print("seed  masked_acc  shrunk_acc  masked_s  shrunk_s  masked_params  shrunk_params")
    results: dict[bool, list[tuple[float, float, int]]] = {False: [], True: []}
    for seed in args.seeds:
        for shrink in (False, True):
            results[shrink].append(fit(seed, args.epochs, args.sparsity, shrink))
        (a, ta, pa), (b, tb, pb) = results[False][-1], results[True][-1]
        print(f"{seed:4d}  {a:10.2f}  {b:10.2f}  {ta:8.1f}  {tb:8.1f}  {pa:13,d}  {pb:13,d}", flush=True)
    for shrink, label in ((False, "masked"), (True, "shrunk")):
        accuracies = [r[0] for r in results[shrink]]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        print(f"{label}: accuracy {statistics.mean(accuracies):.2f} +- {spread:.2f}")
    ratio = statistics.median(r[1] for r in results[False]) / statistics.median(r[1] for r in results[True])
    print(f"fit time masked / shrunk (median): {ratio:.2f}x")


if __name__ == "__main__":
    main()
