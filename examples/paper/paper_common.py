"""Helpers shared by the paper-figure scripts: flow checks, single-shot masks, CSV and plotting."""

from __future__ import annotations

import argparse
import copy
import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from lightning_synflow import prune, score
from lightning_synflow.pruning.cut import select_to_prune

#: The paper's compression grid: 10^0 .. 10^6 in steps of 10^0.25.
FULL_GRID = [i / 4 for i in range(0, 25)]
METHODS = ["synflow", "snip", "grasp", "random", "magnitude"]
#: Paper, Fig. 1 (VGG-16-BN, CIFAR-100): log10 of the compression at which each method collapses a layer.
PAPER_CRITICAL = {"synflow": 6.0, "snip": 3.5, "grasp": 3.5, "random": 3.25, "magnitude": 2.75}
COLORS = {
    "synflow": "tab:blue",
    "snip": "tab:orange",
    "grasp": "tab:green",
    "random": "tab:gray",
    "magnitude": "tab:red",
}


def parser(description: str) -> argparse.ArgumentParser:
    """Argument parser with the two options every script takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default="outputs/paper", help="folder for the PNG and CSV files")
    p.add_argument("--quick", action="store_true", help="a reduced run (under 3 minutes on 2 cores)")
    return p


def gaussian_batches(shape: Sequence[int], classes: int, count: int = 1, size: int = 64, seed: int = 0):
    """Gaussian inputs with random labels: the data SNIP and GraSP score on in these scripts."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn((size, *shape), generator=generator), torch.randint(0, classes, (size,), generator=generator))
        for _ in range(count)
    ]


def collapse_setting() -> tuple[nn.Module, torch.Tensor, list]:
    """The layer-collapse experiments' network, example input and SNIP/GraSP data.

    CIFAR VGG-16-BN with 100 classes (seed 0), a 3x32x32 example, one batch of 64 Gaussian inputs
    with random labels.
    """
    from lightning_synflow.models import vgg16

    torch.manual_seed(0)
    return vgg16(100), torch.zeros(1, 3, 32, 32), gaussian_batches([3, 32, 32], 100)


def flow(model: nn.Module, masks: dict[str, torch.Tensor], example: torch.Tensor) -> float:
    """Synaptic flow R of the masked |theta| network (float64); 0 means input and output are disconnected."""
    net = copy.deepcopy(model).double().eval()
    params = dict(net.named_parameters())
    with torch.no_grad():
        for t in [*net.parameters(), *net.buffers()]:
            if t.is_floating_point():
                t.abs_()
        for name, mask in masks.items():
            params[name].mul_(mask)
        return float(net(torch.ones((1, *example.shape[1:]), dtype=torch.float64)).sum())


def connected(model: nn.Module, masks: dict[str, torch.Tensor], example: torch.Tensor) -> bool:
    """No layer emptied and a positive flow."""
    return all(bool(m.any()) for m in masks.values()) and flow(model, masks, example) > 0


def masks_from_scores(scores: dict[str, torch.Tensor], log_compression: float) -> dict[str, torch.Tensor]:
    """Single-shot global masks at compression 10^log_compression (exact count, ties by position)."""
    flat = [s.reshape(-1) for s in scores.values()]
    total = sum(f.numel() for f in flat)
    keep = max(1, round(total * 10 ** (-log_compression)))
    alive = [torch.ones_like(f, dtype=torch.bool) for f in flat]
    chosen, _ = select_to_prune(flat, alive, 0, total - keep, ties_together=False)
    return {name: ~c.view_as(s) for (name, s), c in zip(scores.items(), chosen)}


def single_shot_scores(model: nn.Module, method: str, example: torch.Tensor, batches) -> dict[str, torch.Tensor]:
    """Scores of one method on an unpruned copy of ``model``."""
    return score(copy.deepcopy(model), method=method, example_input=example, batches=batches, seed=0)


def masks_for(
    model: nn.Module,
    method: str,
    log_compression: float,
    example: torch.Tensor,
    batches,
    iterations: int = 100,
    schedule: str = "exponential",
    cache: dict | None = None,
) -> dict[str, torch.Tensor]:
    """Masks of ``method`` at 10^log_compression: iterative SynFlow, or single-shot baselines from cached scores."""
    if method == "synflow":
        return prune(
            copy.deepcopy(model),
            compression=10**log_compression,
            iterations=iterations,
            schedule=schedule,
            example_input=example,
        )
    if cache is not None and method not in cache:
        cache[method] = single_shot_scores(model, method, example, batches)
    scores = cache[method] if cache is not None else single_shot_scores(model, method, example, batches)
    return masks_from_scores(scores, log_compression)


def critical(grid: Sequence[float], is_connected) -> float:
    """Largest grid point before the first disconnected one (connectivity is monotone in compression)."""
    lo, hi = 0, len(grid) - 1
    if is_connected(grid[hi]):
        return grid[hi]
    while hi - lo > 1:  # invariant: grid[lo] connected, grid[hi] not
        mid = (lo + hi) // 2
        if is_connected(grid[mid]):
            lo = mid
        else:
            hi = mid
    return grid[lo]


def write_csv(path: Path, rows: Iterable[dict]) -> None:
    """Write dict rows with the keys of the first as header."""
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def pyplot():
    """matplotlib.pyplot with a non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log10(value: float) -> float:
    """log10 that maps 0 to -inf."""
    return math.log10(value) if value > 0 else float("-inf")


def quiet_training() -> None:
    """Silence warnings and Lightning's info lines, and use at most 2 threads, for the training scripts."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(min(2, torch.get_num_threads()))


def train_digits_mlp(
    method: str, log_compression: float, seed: int, epochs: int, lr: float = 0.01, **options: bool
) -> tuple[float, int]:
    """Prune an MLP 64-300-300-300-10 at 10^log_compression (0: dense), train it on the digits, test it.

    SynFlow runs 100 iterations, the baselines one; Adam with ``lr``. ``options`` go to
    ``SynFlowPruning`` (``shuffle``, ``reinitialize``, ``invert``). Returns the test accuracy (%) and
    the number of layers left empty by pruning.
    """
    from lightning.pytorch import Trainer, seed_everything

    from lightning_synflow import SynFlowPruning
    from lightning_synflow.data import DigitsDataModule
    from lightning_synflow.models import MLP, ImageClassifier

    seed_everything(seed, verbose=False)
    data = DigitsDataModule(batch_size=64, seed=0)
    model = ImageClassifier(
        MLP(64, [300, 300, 300], 10), 10, [64], optimizer="adam", lr=lr, weight_decay=0.0, milestones=[10**6]
    )
    pruning = None
    if log_compression > 0:
        pruning = SynFlowPruning(
            compression=10**log_compression, method=method, seed=seed, verbose=False, progress=False, **options
        )
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[pruning] if pruning else [],
    )
    trainer.fit(model, datamodule=data)
    accuracy = 100 * trainer.test(model, datamodule=data, verbose=False)[0]["test/acc"]
    empty = sum(int(not m.any()) for m in pruning.masks.values()) if pruning else 0
    return accuracy, empty
