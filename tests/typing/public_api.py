"""A user's script over every public name, type-checked with `mypy --strict` in CI (`make typecheck`).

Each ``# type: ignore[...]`` marks a mistake the checker must catch: under --strict an ignore that
catches nothing is itself an error, so a public name that degrades to ``Any`` or ``object`` fails.
"""

from pathlib import Path

import torch
from lightning.pytorch import Trainer
from torch import nn

import lightning_synflow
from lightning_synflow import (
    SynFlowPruning,
    apply_masks,
    load_pruned,
    load_sparse,
    masks_from_checkpoint,
    prune,
    save_sparse,
    score,
    shrink,
    sparsify,
    speed_report,
)


def main(folder: Path) -> None:
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    example = torch.zeros(1, 8)
    scores: dict[str, torch.Tensor] = score(net, example_input=example)
    masks: dict[str, torch.Tensor] = prune(net, sparsity=0.9, example_input=example)
    callback: SynFlowPruning = SynFlowPruning(sparsity=0.9)
    SynFlowPruning(sparsty=0.9)  # type: ignore[call-arg]
    prune(net, sparsity="0.9", example_input=example)  # type: ignore[arg-type]
    trainer = Trainer(callbacks=[callback], max_epochs=1)
    thin: nn.Module = shrink(net, masks, example)
    save_sparse(net, masks, folder / "net.safetensors")
    state: dict[str, torch.Tensor] = load_sparse(folder / "net.safetensors")
    fast: nn.Module = sparsify(net, masks)
    masked: nn.Module = apply_masks(net, masks)
    saved: dict[str, torch.Tensor] = masks_from_checkpoint(folder / "last.ckpt")
    loaded: dict[str, torch.Tensor] = load_pruned(net, folder / "last.ckpt")
    report = speed_report(net, masks, example)
    version: str = lightning_synflow.__version__
    print(scores, trainer, thin, state, fast, masked, saved, loaded, report, version)
