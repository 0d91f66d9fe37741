"""Per-layer sparsity and FLOPs statistics: metrics, a text table, and W&B tables and charts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial, reduce
from typing import Any, Callable, Optional

import torch
from torch import nn

from lightning_synflow.masks import CONV_TRANSPOSES, CONVS
from lightning_synflow.pruning.inputs import ExampleInput, call_model, map_tensors, synflow_batch
from lightning_synflow.pruning.targets import ATTENTION_WEIGHTS, is_hf_conv1d

#: Prefix of every logged metric.
METRIC_PREFIX = "pruning/sparsity"
#: Fraction of the prunable layers' dense multiply-accumulates that remain.
FLOPS_KEPT = "pruning/flops_kept"
#: Number of prunable tensors left with no weight.
LAYERS_EMPTIED = "pruning/layers_emptied"


@dataclass(frozen=True)
class LayerStats:
    """Sparsity (and, when measured, multiply-accumulates) of one prunable tensor.

    Attributes:
        name: qualified parameter name.
        shape: tensor shape.
        numel: number of entries.
        kept: entries kept.
        macs: dense multiply-accumulates of the tensor per example, or None if not measured or not a
            layer weight (a bias, an embedding).
        macs_kept: multiply-accumulates of its kept entries per example, or None likewise.
    """

    name: str
    shape: tuple[int, ...]
    numel: int
    kept: int
    macs: Optional[int] = None
    macs_kept: Optional[int] = None

    @property
    def sparsity(self) -> float:
        """Fraction of entries pruned, in [0, 1]."""
        return 1.0 - self.kept / self.numel if self.numel else 0.0

    @property
    def emptied(self) -> bool:
        """Whether no entry is kept."""
        return self.numel > 0 and self.kept == 0


def layer_stats(
    masks: Mapping[str, torch.Tensor], positions: Optional[Mapping[str, torch.Tensor]] = None
) -> list[LayerStats]:
    """Statistics of each mask (True = kept), in order.

    Args:
        masks: boolean masks keyed by qualified parameter name.
        positions: :func:`weight_positions` of the model; gives the layer weights their MACs.
    """
    stats = []
    for name, mask in masks.items():
        kept = int(torch.count_nonzero(mask))
        rows = None if positions is None else positions.get(name)
        if rows is None:
            stats.append(LayerStats(name, tuple(mask.shape), mask.numel(), kept))
            continue
        rows = rows.to(device=mask.device, dtype=torch.int64)
        per_row = mask.reshape(rows.numel(), -1)
        macs = int(rows.sum()) * per_row.shape[1]
        macs_kept = int((per_row.sum(1) * rows).sum())
        stats.append(LayerStats(name, tuple(mask.shape), mask.numel(), kept, macs, macs_kept))
    return stats


def total_sparsity(stats: list[LayerStats]) -> float:
    """Fraction of all prunable entries that are pruned."""
    numel = sum(s.numel for s in stats)
    return 1.0 - sum(s.kept for s in stats) / numel if numel else 0.0


def flops_kept(stats: list[LayerStats]) -> Optional[float]:
    """Kept over dense multiply-accumulates of the measured layer weights; None if none has MACs."""
    dense = sum(s.macs for s in stats if s.macs is not None)
    kept = sum(s.macs_kept for s in stats if s.macs_kept is not None)
    return kept / dense if dense else None


def layers_emptied(stats: list[LayerStats]) -> list[str]:
    """Names of the prunable tensors left with no weight."""
    return [s.name for s in stats if s.emptied]


def sparsity_metrics(stats: list[LayerStats]) -> dict[str, float]:
    """``pruning/sparsity`` and ``pruning/sparsity/<parameter name>``, each a fraction."""
    metrics = {METRIC_PREFIX: total_sparsity(stats)}
    metrics.update({f"{METRIC_PREFIX}/{s.name}": s.sparsity for s in stats})
    return metrics


def summary_metrics(stats: list[LayerStats]) -> dict[str, float]:
    """``pruning/layers_emptied`` and, when MACs were measured, ``pruning/flops_kept`` (a fraction)."""
    metrics = {LAYERS_EMPTIED: float(len(layers_emptied(stats)))}
    kept = flops_kept(stats)
    if kept is not None:
        metrics[FLOPS_KEPT] = kept
    return metrics


def _cells(s: LayerStats, with_macs: bool) -> tuple[str, ...]:
    cells = (s.name, "x".join(map(str, s.shape)), f"{s.numel:,}", f"{s.kept:,}", f"{s.sparsity:.2%}")
    if not with_macs:
        return cells
    if s.macs is None or s.macs_kept is None:
        return (*cells, "-", "-")
    return (*cells, f"{s.macs:,}", f"{s.macs_kept:,}")


def format_table(stats: list[LayerStats]) -> str:
    """A plain-text table of the layers, with a total row; MAC columns when measured; emptied layers named."""
    with_macs = any(s.macs is not None for s in stats)
    rows = [_cells(s, with_macs) for s in stats]
    numel, kept = sum(s.numel for s in stats), sum(s.kept for s in stats)
    total: tuple[str, ...] = ("total", "", f"{numel:,}", f"{kept:,}", f"{total_sparsity(stats):.2%}")
    header: tuple[str, ...] = ("layer", "shape", "weights", "kept", "sparsity")
    if with_macs:
        dense = sum(s.macs for s in stats if s.macs is not None)
        total += (f"{dense:,}", f"{sum(s.macs_kept for s in stats if s.macs_kept is not None):,}")
        header += ("MACs", "MACs kept")
    rows.append(total)
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))

    rule = "  ".join("-" * w for w in widths)
    lines = [line(header), rule, *map(line, rows[:-1]), rule, line(rows[-1])]
    fraction = flops_kept(stats)
    if fraction is not None:
        lines.append(f"MACs kept: {fraction:.2%} of the prunable layers' dense multiply-accumulates per example")
    emptied = layers_emptied(stats)
    if emptied:
        lines.append(f"layers emptied: {len(emptied)} ({', '.join(emptied)}) keep no weight")
    return "\n".join(lines)


def wandb_log(logger: Any, stats: list[LayerStats], step: int) -> None:
    """Log a ``wandb.Table`` and a bar chart of sparsity per layer.

    The table's columns: layer, shape, numel, kept, sparsity, and macs, macs_kept (MACs per
    example, dense and kept; None where not measured).

    Args:
        logger: a ``lightning.pytorch.loggers.WandbLogger``.
        stats: the layer statistics.
        step: the trainer's global step.
    """
    import wandb

    table = wandb.Table(columns=["layer", "shape", "numel", "kept", "sparsity", "macs", "macs_kept"])
    for s in stats:
        table.add_data(s.name, "x".join(map(str, s.shape)), s.numel, s.kept, s.sparsity, s.macs, s.macs_kept)
    chart = wandb.plot.bar(table, "layer", "sparsity", title="Sparsity per layer")
    logger.log_metrics({"pruning/layers": table, "pruning/sparsity_per_layer": chart}, step=step)


# -- positions: how often each weight is applied per example ---------------------------------------

#: Positions of one call of a layer: its parameter attribute (e.g. ``"weight"``, ``"out_proj.weight"``)
#: -> positions per row of that parameter (a count, or one count per row).
_Positions = dict[str, "int | torch.Tensor"]


def _tokens(tensor: torch.Tensor, width: int) -> int:
    """Positions of a batch-of-one tensor whose last dimension has ``width`` features."""
    return tensor.numel() // max(width, 1)


def _attention_positions(
    module: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
) -> _Positions:
    names = ("query", "key", "value")
    query, key, value = (args[i] if i < len(args) else kwargs[name] for i, name in enumerate(names))
    queries, keys, values = _tokens(query, module.embed_dim), _tokens(key, module.kdim), _tokens(value, module.vdim)
    width = module.embed_dim
    found: _Positions = {"out_proj.weight": queries}  # applied functionally: out_proj's own hooks never run
    if module.in_proj_weight is not None:
        found["in_proj_weight"] = torch.tensor([queries, keys, values]).repeat_interleave(width)
    else:
        found.update({"q_proj_weight": queries, "k_proj_weight": keys, "v_proj_weight": values})
    return found


def _positions_rule(module: nn.Module, all_layers: bool) -> Optional[Callable[..., _Positions]]:
    """How one call of ``module`` applies its weights, or None if it is not counted."""
    if isinstance(module, nn.Linear) or (all_layers and is_hf_conv1d(module)):
        return lambda m, args, kwargs, out: {"weight": _tokens(out, out.shape[-1])}
    if isinstance(module, CONVS):
        return lambda m, args, kwargs, out: {"weight": out.numel() // m.out_channels}
    if not all_layers:
        return None
    if isinstance(module, CONV_TRANSPOSES):
        return lambda m, args, kwargs, out: {"weight": args[0].numel() // m.in_channels}
    if isinstance(module, nn.MultiheadAttention):
        return _attention_positions
    return None


def _counted(module: nn.Module) -> list[str]:
    """The attributes of the weights that a counted ``module`` applies."""
    if not isinstance(module, nn.MultiheadAttention):
        return ["weight"]
    return [*(name for name in ATTENTION_WEIGHTS if getattr(module, name) is not None), "out_proj.weight"]


def _measure(
    model: nn.Module, example_input: ExampleInput, all_layers: bool
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Positions per row (dim 0) of each counted weight for one example, summed over calls, and its row sizes.

    Keyed by first qualified parameter name (a parametrized weight, not a parameter, by
    ``<module>.<attribute>``). Runs the model once in eval mode on :func:`synflow_batch`, with
    gradients enabled and the input requiring them, so that PyTorch's fused inference path of
    ``nn.TransformerEncoderLayer`` (which bypasses the layers' hooks) stays off; modes are restored.
    """
    first = {id(param): name for name, param in model.named_parameters()}
    positions: dict[str, torch.Tensor] = {}
    row_sizes: dict[str, int] = {}
    keys: dict[tuple[nn.Module, str], str] = {}

    def hook(
        rule: Callable[..., _Positions], module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        for attribute, count in rule(module, args, kwargs, output).items():
            key = keys[(module, attribute)]
            positions[key] = positions[key] + count

    handles = []
    for module_name, module in model.named_modules():
        rule = _positions_rule(module, all_layers)
        if rule is None:
            continue
        for attribute in _counted(module):
            tensor = reduce(getattr, attribute.split("."), module)
            key = first.get(id(tensor), f"{module_name}.{attribute}" if module_name else attribute)
            keys[(module, attribute)] = key
            positions.setdefault(key, torch.zeros(tensor.shape[0], dtype=torch.int64))
            row_sizes[key] = tensor.numel() // max(tensor.shape[0], 1)
        handles.append(module.register_forward_hook(partial(hook, rule), with_kwargs=True))
    modes = {module: module.training for module in model.modules()}
    parameter = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        model.eval()
        batch = map_tensors(synflow_batch(model, example_input, dtype, device), _requiring_grad)
        with torch.enable_grad():
            call_model(model, batch)
    finally:
        for module, mode in modes.items():
            module.training = mode
        for handle in handles:
            handle.remove()
    return positions, row_sizes


def _requiring_grad(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.requires_grad_() if torch.is_floating_point(tensor) else tensor


def weight_positions(model: nn.Module, example_input: ExampleInput) -> dict[str, torch.Tensor]:
    """How many times per example each row of each layer weight is applied, from one forward pass.

    Counted layers: Linear and Hugging Face ``Conv1D`` (once per example, or per token for sequence
    inputs), Conv1d/2d/3d (once per output position), ConvTranspose1d/2d/3d (once per input
    position), ``nn.MultiheadAttention`` (``in_proj_weight``'s query rows per query token, its key
    and value rows per key and value token; ``out_proj`` per query token). A tensor used by several
    layers (tied weights) adds up its uses; a layer never called counts 0. Token ids are fed as in
    SynFlow (:func:`~lightning_synflow.pruning.inputs.synflow_batch`), batch size 1, eval mode.

    Args:
        model: the network.
        example_input: a batch-shaped example, as for SynFlow (only its shapes are used).

    Returns:
        One int64 tensor per weight, of length ``weight.shape[0]``, keyed by first qualified name.
        A weight of dense MACs ``sum(rows) * weight[0].numel()``; :func:`layer_stats` turns them into MACs.
    """
    return _measure(model, example_input, all_layers=True)[0]


def count_macs(model: nn.Module, example_input: ExampleInput) -> int:
    """Multiply-accumulates of the Linear and Conv1d/2d/3d layers of ``model`` for one example.

    A conv weight entry costs one MAC per output position, a linear weight entry one per example (or
    per token for sequence inputs); measured from a forward pass of a batch of one, in eval mode.
    """
    positions, row_sizes = _measure(model, example_input, all_layers=False)
    return sum(int(rows.sum()) * row_sizes[name] for name, rows in positions.items())
