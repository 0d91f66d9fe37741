"""``prune()`` and ``score()``: validate the arguments, then run the loop of :mod:`~lightning_synflow.pruning.loop`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from lightning_synflow.pruning.alive import AliveSet
from lightning_synflow.pruning.checks import check_starting_masks, check_weights
from lightning_synflow.pruning.distributed import is_sharded
from lightning_synflow.pruning.finish import (
    generator_for,
    reinitialize,
    reinitialized_modules,
    shuffle_masks,
    warn_collapsed,
)
from lightning_synflow.pruning.inputs import ExampleInput, validate_example_input
from lightning_synflow.pruning.loop import IterationHook, ScoringData, run_loop, scorer_for
from lightning_synflow.pruning.schedule import Schedule
from lightning_synflow.pruning.scores import Batch, BatchLoss, LossFn
from lightning_synflow.pruning.settings import DATA_METHODS, Method, PruningSettings, Scope
from lightning_synflow.pruning.sharded import prune_sharded
from lightning_synflow.pruning.targets import select_prunable
from lightning_synflow.pruning.workspace import ScoringWorkspace


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
    batch_loss: BatchLoss | None = None,
    seed: int | None = None,
    progress: bool = False,
    on_iteration: IterationHook | None = None,
    invert: bool = False,
    shuffle: bool = False,
    reinitialize: bool = False,
    train_mode: bool = False,
    min_density: float | Mapping[str, float] | None = None,
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
        parameters: glob patterns over ``named_parameters()`` names; default every Linear, Conv, ConvTranspose,
            MultiheadAttention in-projection and Hugging Face ``Conv1D`` weight.
        exclude: glob patterns removed from the prunable set.
        example_input: batch-shaped tensor, tuple or dict (values unused); needed by SynFlow.
        batches: the batches SNIP and GraSP score on (read once, kept): ``(inputs, targets)``
            pairs, or any format with ``batch_loss``. Their tensors are moved to the model's device
            (floating tensors cast to the scoring dtype: float64 for a float64 model, else float32).
        loss_fn: loss for SNIP/GraSP over ``(model(inputs), targets)``; default cross-entropy.
        batch_loss: loss for SNIP/GraSP over ``(model, batch)``, for batches of any format (dicts,
            tuples of 3, ...): it runs the model on the batch and returns a scalar tensor. Exclusive
            with ``loss_fn``. GraSP's temperature (200) divides every floating-point tensor of the
            model's forward output (a forward hook on ``model``, so call the model itself, not one
            of its methods or submodules).
        seed: seed for the random method, ``shuffle`` and ``reinitialize`` (None uses torch's global
            generator).
        progress: show a progress bar over iterations.
        on_iteration: called after each iteration with its number (1-based) and the current masks
            (read-only views, before ``shuffle``); raising from it aborts pruning and leaves the model
            unchanged.
        invert: keep the lowest scores instead of the highest (an ablation of the reference; its
            ``1/score`` without the overflow): the highest-scored alive entries are pruned first, exactly
            as many as without it. At intermediate iterations entries tied at the threshold go together
            (capped by the final count) as usual, but alive entries scoring 0 are now the last to go,
            not the first. GraSP keeps its most negative scores.
        shuffle: after pruning, permute each tensor's mask uniformly at random (seeded by ``seed``),
            keeping each tensor's kept count: the layer-wise densities of the method with random
            positions. Newly kept entries keep their original weights. With starting masks
            (``prune_with(masks=...)``) only positions alive in them are permuted.
        reinitialize: after pruning (and shuffling), re-draw every module that owns a prunable weight
            with its own ``reset_parameters()`` (seeded by ``seed`` if given), then zero the pruned
            entries: the masks stay, the kept weights (and those modules' biases) are fresh. A module
            without ``reset_parameters`` is refused before anything changes.
        train_mode: score with every BatchNorm layer (``torch.nn.modules.batchnorm._BatchNorm``
            subclasses) in train mode, i.e. with batch statistics; other modules stay in eval mode.
            Running statistics, ``num_batches_tracked`` and every module's mode come back exactly as
            they were. SynFlow then feeds two identical all-ones examples (batch statistics equal one
            example's, but BatchNorm over one value per channel is refused by torch for a batch of 1).
            With the all-ones input most SynFlow scores may then be 0 (ties; counts stay exact).
        min_density: floor on the density of each prunable tensor: a float for all, or a mapping
            from name glob (over the masks' keys) to float; where several globs match, the largest
            floor applies. A tensor keeps at least ``ceil(floor * numel)`` entries at every iteration
            (entries pruned before, in starting masks, never revive). Global scope: a tensor at its
            floor stops losing weights and the rest of the count is taken from the others, so totals
            stay exact; local scope: each tensor keeps the larger of its density target and its
            floor. Floors that keep more than the density does in all are refused.

    Returns:
        Boolean masks (True = kept) keyed by qualified parameter name.

    Raises:
        ValueError: an argument out of its allowed values (named in the message), both ``loss_fn`` and
            ``batch_loss``, a selected parameter that feeds a parametrization (see
            :func:`~lightning_synflow.pruning.targets.select_prunable`), non-finite weights or scores,
            scores that are all zero, a ``min_density`` glob matching no prunable parameter or floors
            above the density, or ``reinitialize`` with a layer that has no ``reset_parameters``.
            Nothing in the model changes in that case.
        ~lightning_synflow.pruning.inputs.ExampleInputError: (a ``ValueError``) the model's forward
            failed on the input shaped like ``example_input``; it names the shapes tried and chains
            the model's error.
        FloatingPointError: SynFlow scores that stay non-finite in float64 with rescaling; the
            message says whether from overflow or from an invalid operation (0/0).
        TypeError: an argument of the wrong type, or a loss that is not a scalar tensor.

    Warns:
        ~lightning_synflow.pruning.LayerCollapseWarning: a prunable tensor was left with no weight;
            it names every such tensor and what to do.

    Example:
        >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> masks = prune(net, sparsity=0.9, example_input=torch.zeros(1, 8))
        >>> sum(int(m.sum()) for m in masks.values())
        16
    """
    settings = PruningSettings.from_arguments(locals())  # here exactly prune()'s arguments, by name
    data = ScoringData(example_input, [], loss_fn, batch_loss)
    return prune_with(model, settings, data, progress=progress, on_iteration=on_iteration, batches=batches)


def prune_with(
    model: nn.Module,
    settings: PruningSettings,
    data: ScoringData,
    *,
    progress: bool = False,
    on_iteration: IterationHook | None = None,
    batches: Iterable[Batch] | None = None,
    masks: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`prune` with validated settings (what ``SynFlowPruning`` calls); same results and errors.

    Args:
        model: the network, pruned in place.
        settings: what decides the masks.
        data: what the scorers read.
        progress: show a progress bar over iterations.
        on_iteration: see :func:`prune`.
        batches: the batches SNIP and GraSP score on.
        masks: masks already in force (True = kept), keyed like the result: their pruned entries are
            zeroed, stay pruned and count toward the target (pruning further, e.g. a lottery round).
    """
    if is_sharded(model):  # FSDP2 (DTensor) shards: every rank prunes its own, with a distributed threshold
        return prune_sharded(model, settings, data, progress=progress, on_iteration=on_iteration, masks=masks)
    prunable = _validate_inputs(model, settings, data, batches)
    start = None if masks is None else check_starting_masks(prunable, settings, masks)
    floors = _floors(prunable, settings, start)
    owners = reinitialized_modules(model, list(prunable)) if settings.reinitialize else []
    final = run_loop(model, prunable, settings, data, progress, on_iteration, start, floors)
    if settings.shuffle:
        final = dict(zip(final, shuffle_masks(list(final.values()), start, generator_for(settings.seed))))
    if settings.reinitialize:
        reinitialize(owners, settings.seed)
    with torch.no_grad():
        for name, param in prunable.items():
            param.masked_fill_(~final[name], 0)
    warn_collapsed(final, settings, stacklevel=4)
    return final


def _floors(
    prunable: dict[str, nn.Parameter], settings: PruningSettings, start: list[torch.Tensor] | None
) -> list[int] | None:
    """The ``min_density`` floor counts in ``prunable``'s order (None: no floor), checked to be reachable.

    Raises:
        ValueError: a glob matches no prunable parameter, or (global scope) the floors keep more
            entries than the density does.
    """
    sizes = {name: p.numel() for name, p in prunable.items()}
    return settings.reachable_floors(sizes, None if start is None else [int(m.count_nonzero()) for m in start])


def score(
    model: nn.Module,
    *,
    method: Method = "synflow",
    parameters: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    example_input: ExampleInput | None = None,
    batches: Iterable[Batch] | None = None,
    loss_fn: LossFn | None = None,
    batch_loss: BatchLoss | None = None,
    seed: int | None = None,
    train_mode: bool = False,
) -> dict[str, torch.Tensor]:
    """Score every prunable weight once, without pruning; the model is left exactly as it was.

    Arguments are those of :func:`prune`. Lower scores would be pruned first (with ``invert``, last).

    Returns:
        Score tensors keyed by qualified parameter name.
    """
    if is_sharded(model):  # the working copies would not reach FSDP2's storage: scores of the wrong weights
        raise ValueError(
            "score() does not support sharded (DTensor) models; prune() does (synflow, magnitude, random)."
        )
    settings = PruningSettings.from_arguments({**locals(), "sparsity": 0.0})  # score()'s arguments, by name
    data = ScoringData(example_input, [], loss_fn, batch_loss)
    prunable = _validate_inputs(model, settings, data, batches)
    alive = AliveSet(list(prunable.values()))
    workspace = ScoringWorkspace(model, prunable, settings.train_mode)
    try:
        scores = scorer_for(workspace, settings, data, alive)()
    finally:
        workspace.restore()
    return {name: s.detach().view(p.shape) for (name, p), s in zip(prunable.items(), scores)}


def _validate_inputs(
    model: nn.Module, settings: PruningSettings, data: ScoringData, batches: Iterable[Batch] | None
) -> dict[str, nn.Parameter]:
    """Check what the method needs; read ``batches`` into ``data.batches``; return the prunable parameters."""
    method = settings.method
    if data.batch_loss is not None and data.loss_fn is not None:
        raise ValueError(
            "Give either `batch_loss` (a loss over (model, batch), for batches of any format) or `loss_fn` (a loss "
            "over (outputs, targets), for (inputs, targets) batches), not both."
        )
    if method == "synflow":
        if data.example_input is None:
            raise ValueError(
                "method='synflow' needs `example_input`: a tensor (or tuple/dict of tensors) shaped like a batch, "
                "e.g. torch.zeros(1, 3, 32, 32); only its shape is used."
            )
        validate_example_input(data.example_input, model)
    if method in DATA_METHODS:
        if batches is None:
            raise ValueError(
                f"method={method!r} needs `batches`: an iterable of (inputs, targets), e.g. a DataLoader "
                "(or of any batch format with `batch_loss`)."
            )
        data.batches = list(batches)
        if not data.batches:
            raise ValueError("`batches` is empty: SNIP and GraSP need at least one batch.")
    prunable = select_prunable(model, settings.parameters, settings.exclude)
    check_weights(prunable)
    return prunable
