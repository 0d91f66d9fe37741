"""What happens once the masks are decided: the shuffle ablation, re-initialization, the collapse warning."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lightning_synflow.pruning.settings import PruningSettings, default_iterations


class LayerCollapseWarning(UserWarning):
    """Pruning left a prunable tensor with no weight at all (layer collapse).

    Filter it like any warning, e.g. ``warnings.simplefilter("error", LayerCollapseWarning)`` to
    turn a collapse into an error.
    """


def generator_for(seed: int | None) -> torch.Generator | None:
    """A CPU generator seeded with ``seed``; None (torch's global generator) when ``seed`` is None."""
    return None if seed is None else torch.Generator().manual_seed(seed)


def shuffle_masks(
    masks: Sequence[torch.Tensor], start: Sequence[torch.Tensor] | None, generator: torch.Generator | None
) -> list[torch.Tensor]:
    """Each mask permuted uniformly at random, its kept count unchanged (new tensors).

    The permutation runs over the positions a mask could keep: the whole tensor, or with ``start``
    (masks that were already in force) only the positions alive in it, so entries pruned before
    stay pruned. Tensors draw their permutations one after the other from ``generator``.

    Args:
        masks: final boolean masks (True = kept).
        start: the masks pruning started from, or None.
        generator: CPU generator for ``torch.randperm`` (None: torch's global one).
    """
    shuffled = []
    for i, mask in enumerate(masks):
        flat = mask.reshape(-1)
        if start is None:
            order = torch.randperm(flat.numel(), generator=generator).to(flat.device)
            shuffled.append(flat[order].view_as(mask))
            continue
        positions = torch.nonzero(start[i].reshape(-1).to(flat.device)).view(-1)
        order = torch.randperm(positions.numel(), generator=generator).to(flat.device)
        result = flat.clone()
        result[positions] = flat[positions[order]]
        shuffled.append(result.view_as(mask))
    return shuffled


def reinitialized_modules(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """The modules that own the prunable tensors ``names`` (each once, in order), checked to be re-drawable.

    Each tensor is re-drawn by the module its (first) qualified name belongs to; another module
    sharing a tied tensor is left alone.

    Raises:
        ValueError: such a module has no ``reset_parameters`` method (named in the message).
    """
    owners: dict[int, nn.Module] = {}
    for name in names:
        module_name = name.rpartition(".")[0]
        module = model.get_submodule(module_name)
        if not callable(getattr(module, "reset_parameters", None)):
            raise ValueError(
                f"`reinitialize=True` re-draws the pruned layers with their own `reset_parameters()`, but "
                f"{type(module).__name__} {module_name!r} (owner of prunable {name!r}) has no such method. Give it "
                "one, leave the parameter out (`exclude`), or set `reinitialize=False`."
            )
        owners.setdefault(id(module), module)
    return list(owners.values())


#: Mixed with the user's seed so re-initialization draws a stream of its own (see :func:`reinitialize_seed`).
REINITIALIZE_STREAM = 0x2E1D


def reinitialize_seed(seed: int) -> int:
    """The seed re-initialization draws from, derived from the user's ``seed``.

    Not ``seed`` itself: a model built right after ``seed_everything(seed)`` would otherwise be
    "re-drawn" into exactly its original weights, silently turning the ablation into a no-op.
    """
    state = np.random.SeedSequence((seed % 2**64, REINITIALIZE_STREAM)).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def reinitialize(modules: Sequence[nn.Module], seed: int | None) -> None:
    """Call ``reset_parameters()`` of each module in order, seeded from ``seed`` if given.

    With a seed the draws come from a forked random state seeded with :func:`reinitialize_seed`
    (CPU, and the CUDA devices the modules live on), so the global random state is as it was
    afterwards.
    """
    devices = sorted(
        {t.device.index or 0 for m in modules for t in m.parameters(recurse=False) if t.device.type == "cuda"}
    )
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            derived = reinitialize_seed(seed)
            torch.default_generator.manual_seed(derived)
            for device in devices:
                torch.cuda.default_generators[device].manual_seed(derived)
        for module in modules:
            # Through getattr: nn.Module types its attributes as Tensor | Module, not as the method checked above.
            getattr(module, "reset_parameters")()  # noqa: B009


def feasible_floor(sizes: Sequence[int], kept: int) -> float | None:
    """A ``min_density`` floor for tensors of ``sizes`` that takes at most half of the ``kept`` budget.

    At most 0.1, two significant digits, rounded down; None when even one weight per tensor would take
    more than half.
    """
    if kept < 2 * len(sizes) or not sizes:
        return None
    exact = min(kept / (2 * sum(sizes)), 0.1)
    step = 10.0 ** (math.floor(math.log10(exact)) - 1)
    floor = math.floor(exact / step) * step
    floor = float(f"{floor:.2g}")
    while floor > 0 and sum(math.ceil(floor * n) for n in sizes) > kept // 2:
        floor = float(f"{floor - step:.2g}")
    return floor if floor > 0 else None


def warn_collapsed(masks: dict[str, torch.Tensor], settings: PruningSettings, stacklevel: int) -> None:
    """Warn with a :class:`LayerCollapseWarning` naming every tensor left with no kept entry, if any."""
    emptied = [(name, mask.numel()) for name, mask in masks.items() if not bool(mask.any())]
    if not emptied:
        return
    listed = ", ".join(f"{name!r} (0 of {numel} kept)" for name, numel in emptied)
    names = [name for name, _ in emptied]
    remedies = []
    if settings.method != "synflow":
        remedies.append("method='synflow' (iterative SynFlow avoids layer collapse)")
    elif settings.iterations < default_iterations("synflow"):
        remedies.append(f"more iterations (SynFlow's default is {default_iterations('synflow')})")
    remedies.append("a lower compression")
    if settings.method == "synflow":
        remedies.append(
            "where a norm scale initialized to zero blocks the flow (timm's zero_init_last), scoring with it set "
            "to 1 (recipe in the docs' 'Known limits')"
        )
    kept = sum(int(torch.count_nonzero(mask)) for mask in masks.values())
    floor = feasible_floor([numel for _, numel in emptied], kept)
    if floor is not None:
        remedies.append(f"a density floor, e.g. min_density={dict.fromkeys(names, floor)!r}")
    remedies.append(f"leaving the layer out of pruning, exclude={names!r}")
    warnings.warn(
        LayerCollapseWarning(
            f"Layer collapse: pruning left no weight in {len(emptied)} prunable tensor(s): {listed}. An emptied layer "
            "passes no signal from its input (its bias aside), which usually disconnects the network. Try "
            f"{'; '.join(remedies)}."
        ),
        stacklevel=stacklevel,
    )
