"""Checks shared by every pruning loop: finite weights, and scores that are all (or mostly) zero."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

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


def check_weights(prunable: dict[str, nn.Parameter]) -> None:
    """Refuse prunable weights holding NaN or infinite values, naming the first such parameter."""
    for name, param in prunable.items():
        if not bool(torch.isfinite(param.detach()).all()):
            raise ValueError(f"Parameter {name!r} holds NaN or infinite values; pruning needs finite weights.")


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
) -> None:
    """Refuse alive scores that are all zero (any mask would be arbitrary); for SynFlow, warn when many are."""
    zeros = [int(torch.count_nonzero((s == 0) & a)) for s, a in zip(scores, alive)]  # no int64 copy, unlike sum
    sizes = [int(torch.count_nonzero(a)) for a in alive]
    total = sum(sizes)
    hint = _TRAIN_MODE_CAUSE if train_mode and method == "synflow" else ""
    if sum(zeros) == total:
        label, cause = ALL_ZERO_CAUSES[method]
        raise ValueError(
            f"Every {label} score is exactly zero, so no weight can be ranked above another: {cause}{hint}"
        )
    fraction = sum(zeros) / total
    if method == "synflow" and fraction > ZERO_SCORE_WARNING_FRACTION:
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
