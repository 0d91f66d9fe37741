"""Per-layer sparsity statistics: metrics, a text table, and W&B tables and charts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lightning_synflow.pruning.inputs import ExampleInput, call_model, ones_batch

#: Prefix of every logged metric.
METRIC_PREFIX = "pruning/sparsity"


@dataclass(frozen=True)
class LayerStats:
    """Sparsity of one prunable tensor.

    Attributes:
        name: qualified parameter name.
        shape: tensor shape.
        numel: number of entries.
        kept: entries kept.
    """

    name: str
    shape: tuple[int, ...]
    numel: int
    kept: int

    @property
    def sparsity(self) -> float:
        """Fraction of entries pruned, in [0, 1]."""
        return 1.0 - self.kept / self.numel if self.numel else 0.0


def layer_stats(masks: dict[str, torch.Tensor]) -> list[LayerStats]:
    """Statistics of each mask (True = kept), in order."""
    return [LayerStats(name, tuple(m.shape), m.numel(), int(torch.count_nonzero(m))) for name, m in masks.items()]


def total_sparsity(stats: list[LayerStats]) -> float:
    """Fraction of all prunable entries that are pruned."""
    numel = sum(s.numel for s in stats)
    return 1.0 - sum(s.kept for s in stats) / numel if numel else 0.0


def sparsity_metrics(stats: list[LayerStats]) -> dict[str, float]:
    """``pruning/sparsity`` and ``pruning/sparsity/<parameter name>``, each a fraction."""
    metrics = {METRIC_PREFIX: total_sparsity(stats)}
    metrics.update({f"{METRIC_PREFIX}/{s.name}": s.sparsity for s in stats})
    return metrics


def format_table(stats: list[LayerStats]) -> str:
    """A plain-text table of the layers, with a total row."""
    rows = [(s.name, "x".join(map(str, s.shape)), f"{s.numel:,}", f"{s.kept:,}", f"{s.sparsity:.2%}") for s in stats]
    numel, kept = sum(s.numel for s in stats), sum(s.kept for s in stats)
    rows.append(("total", "", f"{numel:,}", f"{kept:,}", f"{total_sparsity(stats):.2%}"))
    header = ("layer", "shape", "weights", "kept", "sparsity")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *map(line, rows[:-1]), rule, line(rows[-1])])


def wandb_log(logger: Any, stats: list[LayerStats], step: int) -> None:
    """Log a ``wandb.Table`` (layer, shape, numel, kept, sparsity) and a bar chart of sparsity per layer.

    Args:
        logger: a ``lightning.pytorch.loggers.WandbLogger``.
        stats: the layer statistics.
        step: the trainer's global step.
    """
    import wandb

    table = wandb.Table(columns=["layer", "shape", "numel", "kept", "sparsity"])
    for s in stats:
        table.add_data(s.name, "x".join(map(str, s.shape)), s.numel, s.kept, s.sparsity)
    chart = wandb.plot.bar(table, "layer", "sparsity", title="Sparsity per layer")
    logger.log_metrics({"pruning/layers": table, "pruning/sparsity_per_layer": chart}, step=step)


def count_macs(model: nn.Module, example_input: ExampleInput) -> int:
    """Multiply-accumulates of the Linear and Conv layers of ``model`` for one example.

    A conv weight entry costs one MAC per output position, a linear weight entry one per example (or
    per token for sequence inputs); measured from a forward pass of a batch of one, in eval mode.
    """
    total = 0

    def count(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        weight = module.weight
        if isinstance(module, nn.Linear):
            total += weight.numel() * (output.numel() // output.shape[-1])
        else:  # convolution: each output position of each output channel uses in_channels/groups * kernel weights
            total += output.numel() * (weight.numel() // weight.shape[0])

    layers = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, layers)]
    modes = {module: module.training for module in model.modules()}
    parameter = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            call_model(model, ones_batch(example_input, parameter.dtype, parameter.device))
    finally:
        for module, mode in modes.items():
            module.training = mode
        for handle in handles:
            handle.remove()
    return total
