"""``prune()``: the iterative loop of Algorithm 1 (Tanaka et al. 2020)."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from typing import Literal, get_args

import torch
from torch import nn
from torch.nn import functional as F

from lightning_synflow.pruning.alive import AliveSet
from lightning_synflow.pruning.inputs import ExampleInput, validate_example_input
from lightning_synflow.pruning.masks import (
    Schedule,
    Scope,
    exact_fraction,
    plan_cut,
    prune_count,
    schedule_densities,
)
from lightning_synflow.pruning.scores import (
    Batch,
    LossFn,
    SynFlowScorer,
    all_finite,
    grasp_scores,
    magnitude_scores,
    random_scores,
    snip_scores,
)
from lightning_synflow.pruning.targets import select_prunable
from lightning_synflow.pruning.workspace import ScoringWorkspace

IterationHook = Callable[[int, dict[str, torch.Tensor]], None]
Method = Literal["synflow", "magnitude", "random", "snip", "grasp"]
METHODS: tuple[str, ...] = get_args(Method)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
SCOPES: tuple[str, ...] = get_args(Scope)
DATA_METHODS = ("snip", "grasp")

#: Fraction of exactly-zero scores above which ``prune`` warns that masks among them are arbitrary.
ZERO_SCORE_WARNING_FRACTION = 0.01


def default_iterations(method: str) -> int:
    """The paper's setting: 100 iterations for SynFlow, 1 (single shot) for every baseline."""
    return 100 if method == "synflow" else 1


def resolve_density(sparsity: float | None, compression: float | None) -> Fraction:
    """Validate ``sparsity`` / ``compression`` (exactly one) and return the density kept, exactly.

    Raises:
        ValueError: both or neither given, or a value out of range.
        TypeError: a value that is not a real number.
    """
    if (sparsity is None) == (compression is None):
        raise ValueError(
            "Give exactly one of `sparsity` (fraction of weights removed, 0 <= sparsity < 1) and "
            f"`compression` (ratio kept 1/density, >= 1); got sparsity={sparsity!r}, compression={compression!r}."
        )
    name, value = ("sparsity", sparsity) if sparsity is not None else ("compression", compression)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__} {value!r}.")
    if name == "sparsity":
        if not 0 <= value < 1:
            raise ValueError(f"`sparsity` must satisfy 0 <= sparsity < 1 (fraction of weights removed), got {value!r}.")
        return 1 - exact_fraction(value)
    if not (math.isfinite(value) and value >= 1):
        raise ValueError(f"`compression` must be a finite number >= 1 (10**2 keeps 1% of weights), got {value!r}.")
    return 1 / exact_fraction(value)


def validate_choices(method: str, schedule: str, scope: str, iterations: int | None) -> int:
    """Validate the loop options and return the iteration count (default by method)."""
    for name, value, allowed in (
        ("method", method, METHODS),
        ("schedule", schedule, SCHEDULES),
        ("scope", scope, SCOPES),
    ):
        if value not in allowed:
            raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")
    if iterations is None:
        return default_iterations(method)
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 1:
        raise ValueError(f"`iterations` must be an integer >= 1, got {iterations!r}.")
    return int(iterations)


def _check_weights(prunable: dict[str, nn.Parameter]) -> None:
    for name, param in prunable.items():
        if not bool(torch.isfinite(param.detach()).all()):
            raise ValueError(f"Parameter {name!r} holds NaN or infinite values; pruning needs finite weights.")


def _warn_zero_scores(names: Sequence[str], scores: Sequence[torch.Tensor]) -> None:
    zeros = [int((s == 0).sum()) for s in scores]
    total = sum(s.numel() for s in scores)
    if sum(zeros) == total:
        raise ValueError(
            "Every SynFlow score is exactly zero, so no weight can be ranked above another: the synaptic flow "
            "R = 0 because something cuts every path from input to output (a zero-initialized layer, "
            "a zero weight tensor, or an activation with zero gradient). Initialize the model before pruning, or "
            "exclude the zero layers with `exclude`."
        )
    fraction = sum(zeros) / total
    if fraction > ZERO_SCORE_WARNING_FRACTION:
        worst = sorted(zip(names, zeros, scores), key=lambda item: -item[1] / item[2].numel())[:5]
        layers = ", ".join(f"{name} ({count / s.numel():.0%})" for name, count, s in worst if count)
        warnings.warn(
            f"{fraction:.1%} of the prunable weights have a SynFlow score of exactly zero, so the mask among them "
            f"is arbitrary (ties). Layers with most zero scores: {layers}. Typical causes: zero-initialized layers "
            "(e.g. the last BatchNorm of residual blocks, a zero-init head) or saturating activations (ReLU6, "
            "hardswish).",
            UserWarning,
            stacklevel=4,
        )


def prune(
    model: nn.Module,
    *,
    sparsity: float | None = None,
    compression: float | None = None,
    method: Method = "synflow",
    iterations: int | None = None,
    schedule: Schedule = "exponential",
    scope: Scope = "global",
    parameters: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    example_input: ExampleInput | None = None,
    batches: Iterable[Batch] | None = None,
    loss_fn: LossFn | None = None,
    seed: int | None = None,
    progress: bool = False,
    on_iteration: IterationHook | None = None,
) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place at initialization and return its masks.

    Args:
        model: the network; its prunable weights' pruned entries are set to exactly 0.
        sparsity: fraction of prunable weights removed, ``0 <= sparsity < 1``.
        compression: ratio ``1 / density >= 1`` (``10**2`` keeps 1%); exclusive with ``sparsity``.
        method: ``"synflow"``, ``"magnitude"``, ``"random"``, ``"snip"`` or ``"grasp"``.
        iterations: prune iterations; default 100 for SynFlow, 1 for the baselines.
        schedule: density schedule over iterations, ``"exponential"`` or ``"linear"``.
        scope: ``"global"`` (one threshold) or ``"local"`` (per tensor).
        parameters: glob patterns over ``named_parameters()`` names; default every Conv/Linear weight.
        exclude: glob patterns removed from the prunable set.
        example_input: batch-shaped tensor, tuple or dict (values unused); needed by SynFlow.
        batches: iterable of ``(inputs, targets)``; needed by SNIP and GraSP (read once, kept).
        loss_fn: loss for SNIP/GraSP; default cross-entropy.
        seed: seed for the random method (None uses torch's global generator).
        progress: show a progress bar over iterations.
        on_iteration: called after each iteration with its number (1-based) and the current masks
            (read-only views); raising from it aborts pruning and leaves the model unchanged.

    Returns:
        Boolean masks (True = kept) keyed by qualified parameter name.

    Raises:
        ValueError: an argument out of its allowed values (named in the message), non-finite weights
            or scores, or scores that are all zero. Nothing in the model changes in that case.
        TypeError: an argument of the wrong type.

    Example:
        >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> masks = prune(net, sparsity=0.9, example_input=torch.zeros(1, 8))
        >>> sum(int(m.sum()) for m in masks.values())
        16
    """
    density = resolve_density(sparsity, compression)
    n_iterations = validate_choices(method, schedule, scope, iterations)
    prunable, batch_list = _validate_inputs(model, method, parameters, exclude, example_input, batches, seed)
    return _run(
        model,
        prunable,
        density,
        method,
        n_iterations,
        schedule,
        scope,
        example_input,
        batch_list,
        loss_fn or F.cross_entropy,
        seed,
        progress,
        on_iteration,
    )


def score(
    model: nn.Module,
    *,
    method: Method = "synflow",
    parameters: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    example_input: ExampleInput | None = None,
    batches: Iterable[Batch] | None = None,
    loss_fn: LossFn | None = None,
    seed: int | None = None,
) -> dict[str, torch.Tensor]:
    """Score every prunable weight once, without pruning; the model is left exactly as it was.

    Arguments are those of :func:`prune`. Lower scores would be pruned first.

    Returns:
        Score tensors keyed by qualified parameter name.
    """
    validate_choices(method, "exponential", "global", None)
    prunable, batch_list = _validate_inputs(model, method, parameters, exclude, example_input, batches, seed)
    alive = AliveSet(list(prunable.values()))
    workspace = ScoringWorkspace(model, prunable)
    try:
        scores = _scorer(workspace, method, example_input, batch_list, loss_fn or F.cross_entropy, seed, alive)()
    finally:
        workspace.restore(None)
    return {name: s.detach().view(p.shape) for (name, p), s in zip(prunable.items(), scores)}


def _validate_inputs(
    model: nn.Module,
    method: str,
    parameters: str | Sequence[str] | None,
    exclude: str | Sequence[str] | None,
    example_input: ExampleInput | None,
    batches: Iterable[Batch] | None,
    seed: int | None,
) -> tuple[dict[str, nn.Parameter], list[Batch]]:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"`seed` must be an integer or None, got {seed!r}.")
    if method == "synflow":
        if example_input is None:
            raise ValueError(
                "method='synflow' needs `example_input`: a tensor (or tuple/dict of tensors) shaped like a batch, "
                "e.g. torch.zeros(1, 3, 32, 32); only its shape is used."
            )
        validate_example_input(example_input)
    batch_list: list[Batch] = []
    if method in DATA_METHODS:
        if batches is None:
            raise ValueError(f"method={method!r} needs `batches`: an iterable of (inputs, targets), e.g. a DataLoader.")
        batch_list = list(batches)
        if not batch_list:
            raise ValueError("`batches` is empty: SNIP and GraSP need at least one (inputs, targets) batch.")
    prunable = select_prunable(model, parameters, exclude)
    _check_weights(prunable)
    return prunable, batch_list


def _run(
    model: nn.Module,
    prunable: dict[str, nn.Parameter],
    density: Fraction,
    method: str,
    iterations: int,
    schedule: str,
    scope: str,
    example_input: ExampleInput | None,
    batches: list[Batch],
    loss_fn: LossFn,
    seed: int | None,
    progress: bool,
    on_iteration: IterationHook | None,
) -> dict[str, torch.Tensor]:
    names = list(prunable)
    params = list(prunable.values())
    sizes = [p.numel() for p in params]
    total = sum(sizes)
    alive = AliveSet(params)
    final_count = prune_count(density, total)
    if final_count == 0:
        return dict(zip(names, alive.masks))

    workspace = ScoringWorkspace(model, prunable)
    completed = False
    try:
        score = _scorer(workspace, method, example_input, batches, loss_fn, seed, alive)
        steps = schedule_densities(density, iterations, schedule)
        for step, step_density in enumerate(_progress(steps, progress, method)):
            gathered = score()
            if method != "synflow" and not all_finite(gathered):
                raise ValueError(f"{method} produced NaN or infinite scores; check the model and inputs.")
            if step == 0 and method == "synflow":
                _warn_zero_scores(names, gathered)
            last = step == len(steps) - 1
            masks = alive.view_masks()
            if scope == "global":
                groups = [(list(range(len(names))), total, final_count)]
            else:
                groups = [([i], size, prune_count(density, size)) for i, size in enumerate(sizes)]
            zero: dict[int, torch.Tensor] = {}
            for tensors, numel, cap in groups:
                cut = plan_cut(
                    [gathered[i] for i in tensors],
                    [masks[i] for i in tensors],
                    sum(alive.pruned[i] for i in tensors),
                    prune_count(step_density, numel),
                    not last,
                    cap,
                    sum(alive.hidden[i] for i in tensors),
                )
                if cut is not None:
                    zero.update(alive.apply(cut, [gathered[i] for i in tensors], tensors))
            del gathered
            workspace.zero({names[i]: where for i, where in zero.items()})
            alive.compact_if_sparse()
            if on_iteration is not None:
                on_iteration(step + 1, dict(zip(names, alive.masks)))
        completed = True
    finally:
        workspace.restore(dict(zip(names, alive.masks)) if completed else None)
    return dict(zip(names, alive.masks))


def _scorer(
    workspace: ScoringWorkspace,
    method: str,
    example_input: ExampleInput | None,
    batches: list[Batch],
    loss_fn: LossFn,
    seed: int | None,
    alive: AliveSet,
) -> Callable[[], list[torch.Tensor]]:
    """A function returning the scores of the alive set's view entries (flat, one tensor per weight)."""
    params = list(workspace.prunable.values())
    if method == "synflow":
        assert example_input is not None
        return SynFlowScorer(workspace, example_input, alive)
    if method == "magnitude":
        return lambda: alive.gather(magnitude_scores(params))
    if method == "random":
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        return lambda: alive.gather(random_scores(params, alive.masks, generator))
    dtype = params[0].dtype if params[0].dtype in (torch.float32, torch.float64) else torch.float32
    workspace.cast(dtype)
    scorer = snip_scores if method == "snip" else grasp_scores
    return lambda: alive.gather(scorer(workspace.model, params, batches, loss_fn, dtype))


def _progress(steps: list[Fraction], enabled: bool, method: str) -> Iterable[Fraction]:
    if not enabled:
        return steps
    from tqdm.auto import tqdm

    return tqdm(steps, desc=f"Pruning ({method})", unit="it")
