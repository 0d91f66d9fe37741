"""Checks shared by every pruning loop: finite weights, starting masks, and scores that are all (or mostly) zero.

Each takes a :class:`~lightning_synflow.pruning.collective.Collective`: over a device mesh every rank
passes its own shards, counts are summed over the ranks, every rank raises alike and rank 0 warns.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch

from lightning_synflow.masks import check_masks
from lightning_synflow.pruning.collective import LOCAL, Collective
from lightning_synflow.pruning.schedule import prune_count
from lightning_synflow.pruning.settings import PruningSettings

#: Fraction of exactly-zero scores above which ``prune`` warns that masks among them are arbitrary.
ZERO_SCORE_WARNING_FRACTION = 0.01


_CONSTANT_LOSS = (
    "the loss does not depend on the weights on these batches (its gradient is zero), e.g. a constant loss, a "
    "single logit with cross-entropy (the log-softmax of one logit is always 0), or a model output detached "
    "from the weights (torch.no_grad, .detach(), .item()). Check the loss on these batches, or use "
    "method='synflow', 'magnitude' or 'random'."
)

#: For each method whose scores can all be zero, its name in messages and why that happens.
ALL_ZERO_CAUSES = {
    "synflow": (
        "SynFlow",
        "the synaptic flow R = 0 because something cuts every path from input to output (a zero-initialized "
        "layer, a zero weight tensor, or an activation with zero gradient). Initialize the model before pruning, "
        "or exclude the zero layers with `exclude`.",
    ),
    "snip": ("SNIP", _CONSTANT_LOSS),
    "grasp": ("GraSP", _CONSTANT_LOSS),
}


def check_weights(prunable: Mapping[str, torch.Tensor], collective: Collective = LOCAL) -> None:
    """Refuse prunable weights holding NaN or infinite values, naming the first such parameter.

    Args:
        prunable: the prunable weights (this rank's shards of them) keyed by qualified name.
        collective: the ranks holding the other shards.
    """
    flags = collective.sum([not bool(torch.isfinite(param.detach()).all()) for param in prunable.values()])
    for name, bad in zip(prunable, flags):
        if bad:
            raise ValueError(f"Parameter {name!r} holds NaN or infinite values; pruning needs finite weights.")


def check_starting_masks(
    prunable: Mapping[str, torch.Tensor], settings: PruningSettings, masks: Mapping[str, torch.Tensor]
) -> list[torch.Tensor]:
    """The masks to start from, in ``prunable``'s order, checked to fit and to prune no more than the target.

    Raises:
        ValueError: a mask is missing, unknown, not boolean or of another shape than its parameter, or
            the masks already prune more than ``settings`` does (in all, or per tensor in local scope).
    """
    if set(masks) != set(prunable):
        raise ValueError(
            f"`masks` must have one mask per prunable parameter; missing {sorted(set(prunable) - set(masks))}, "
            f"unknown {sorted(set(masks) - set(prunable))}."
        )
    check_masks(masks, prunable, "the prunable parameters")
    start = [masks[name] for name in prunable]
    pruned = [m.numel() - int(torch.count_nonzero(m)) for m in start]
    if settings.scope == "global":
        groups = [("all prunable weights", sum(pruned), sum(p.numel() for p in prunable.values()))]
    else:
        groups = [(repr(name), n, p.numel()) for (name, p), n in zip(prunable.items(), pruned)]
    for what, already, numel in groups:
        target = prune_count(settings.density, numel)
        if already > target:
            raise ValueError(
                f"`masks` already prune {already} of {what} ({numel} entries), more than the {target} that density "
                f"{settings.density} prunes; pruned entries never revive, so give a lower density."
            )
    return start


#: Why BatchNorm in train mode can zero SynFlow scores.
_TRAIN_MODE_CAUSE = (
    " With train_mode=True BatchNorm normalizes with the statistics of the all-ones batch, which are the same for "
    "every example and nearly constant over a feature map, so most of the signal is subtracted away: consider "
    "train_mode=False."
)


def check_zero_scores(
    method: str,
    names: Sequence[str],
    scores: Sequence[torch.Tensor],
    alive: Sequence[torch.Tensor],
    train_mode: bool = False,
    collective: Collective = LOCAL,
) -> None:
    """Refuse alive scores that are all zero (any mask would be arbitrary); for SynFlow, warn when many are.

    Args:
        method: the scoring method (a key of :data:`ALL_ZERO_CAUSES`).
        names: the prunable weights' names.
        scores: their scores (this rank's shards).
        alive: masks (True = alive) matching ``scores``.
        train_mode: whether BatchNorm layers scored in train mode (a cause worth naming).
        collective: the ranks holding the other shards.
    """
    counts = collective.sum(
        [int(torch.count_nonzero((s == 0) & a)) for s, a in zip(scores, alive)]  # no int64 copy, unlike sum
        + [int(torch.count_nonzero(a)) for a in alive]
    )
    zeros, sizes = counts[: len(names)], counts[len(names) :]
    total = sum(sizes)
    hint = _TRAIN_MODE_CAUSE if train_mode and method == "synflow" else ""
    if sum(zeros) == total:
        label, cause = ALL_ZERO_CAUSES[method]
        raise ValueError(
            f"Every {label} score is exactly zero, so no weight can be ranked above another: {cause}{hint}"
        )
    fraction = sum(zeros) / total
    if method == "synflow" and fraction > ZERO_SCORE_WARNING_FRACTION and collective.rank == 0:
        worst = sorted(zip(names, zeros, sizes), key=lambda item: -item[1] / max(item[2], 1))[:5]
        layers = ", ".join(f"{name} ({count / size:.0%})" for name, count, size in worst if count)
        warnings.warn(
            f"{fraction:.1%} of the prunable weights have a SynFlow score of exactly zero, so the mask among them "
            f"is arbitrary (ties). Layers with most zero scores: {layers}. Typical causes: zero-initialized layers "
            "(e.g. the last BatchNorm of residual blocks, a zero-init head) or saturating activations (ReLU6, "
            "hardswish). For norm scales initialized to zero (timm's zero_init_last), score with them set to 1: "
            f"see 'Known limits' in the docs for the recipe.{hint}",
            UserWarning,
            stacklevel=4,
        )
