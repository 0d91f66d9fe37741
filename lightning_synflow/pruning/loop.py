"""The iterative loop of Algorithm 1 (Tanaka et al. 2020): score, cut to the step's density, repeat.

Written once for a single process and for the ranks of a device mesh that each hold row shards of
the prunable weights: a :class:`Sharding` says how the loop reaches the weights (the local
shards, the scoring workspace and the scorer) and which
:class:`~lightning_synflow.pruning.collective.Collective` sums the counts; the base class is the
single process, ``RowSharding`` (in ``pruning/sharded.py``) the mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import torch
from torch import nn
from torch.nn import functional as F

from lightning_synflow.pruning.alive import AliveSet
from lightning_synflow.pruning.checks import ALL_ZERO_CAUSES, check_zero_scores
from lightning_synflow.pruning.collective import LOCAL, Collective
from lightning_synflow.pruning.cut import plan_cuts
from lightning_synflow.pruning.finish import generator_for
from lightning_synflow.pruning.inputs import ExampleInput
from lightning_synflow.pruning.schedule import prune_count, schedule_densities
from lightning_synflow.pruning.scores import (
    Batch,
    BatchLoss,
    LossFn,
    SynFlowScorer,
    all_finite,
    grasp_scores,
    magnitude_scores,
    random_scores,
    score_dtype,
    snip_scores,
    supervised_loss,
)
from lightning_synflow.pruning.settings import PruningSettings
from lightning_synflow.pruning.workspace import ScoringWorkspace

#: Called after each iteration with its number (1-based) and the current masks.
IterationHook = Callable[[int, dict[str, torch.Tensor]], None]
#: Scores of the alive set's view entries (flat, one tensor per weight), one pass per call.
Scorer = Callable[[], list[torch.Tensor]]


@dataclass
class ScoringData:
    """What the scorers read besides the model: the example input (SynFlow) or batches and a loss.

    Attributes:
        example_input: batch-shaped tensor, tuple or dict for SynFlow (only its shapes are used).
        batches: the batches SNIP and GraSP score on.
        loss_fn: loss over ``(outputs, targets)`` for ``(inputs, targets)`` batches; None means
            cross-entropy. Exclusive with ``batch_loss``.
        batch_loss: loss over ``(model, batch)`` for batches of any format.
    """

    example_input: ExampleInput | None = None
    batches: list[Batch] = field(default_factory=list)
    loss_fn: LossFn | None = None
    batch_loss: BatchLoss | None = None

    def loss(self) -> BatchLoss:
        """The loss SNIP and GraSP differentiate: ``batch_loss``, else ``loss_fn`` over ``(inputs, targets)``."""
        if self.batch_loss is not None:
            return self.batch_loss
        return supervised_loss(self.loss_fn or F.cross_entropy)


class Sharding:
    """How the loop reaches the prunable weights: here, whole tensors in a single process.

    A subclass holds row shards on the ranks of a device mesh: its :attr:`collective` sums counts
    over them, and its methods give the rank's shards, a workspace and a scorer that work on them.
    """

    #: The ranks sharing the weights.
    collective: Collective = LOCAL

    def local(self, param: torch.Tensor) -> torch.Tensor:
        """The rank's part of prunable ``param`` (here the whole tensor): what the masks are shaped like."""
        return param

    def workspace(self, model: nn.Module, prunable: dict[str, nn.Parameter], train_mode: bool) -> ScoringWorkspace:
        """The scoring workspace of ``model``."""
        return ScoringWorkspace(model, prunable, train_mode)

    def scorer(
        self, workspace: ScoringWorkspace, settings: PruningSettings, data: ScoringData, alive: AliveSet
    ) -> Scorer:
        """The scorer of ``settings.method`` (see :func:`scorer_for`)."""
        return scorer_for(workspace, settings, data, alive)


#: Whole tensors in a single process.
UNSHARDED = Sharding()


def run_loop(
    model: nn.Module,
    prunable: dict[str, nn.Parameter],
    settings: PruningSettings,
    data: ScoringData,
    progress: bool,
    on_iteration: IterationHook | None,
    start: list[torch.Tensor] | None = None,
    floors: list[int] | None = None,
    sharding: Sharding = UNSHARDED,
) -> dict[str, torch.Tensor]:
    """The loop of Algorithm 1: the final masks, the model left exactly as it was (nothing masked yet).

    Args:
        model: the network.
        prunable: its prunable parameters, keyed by qualified name.
        settings: what decides the masks.
        data: what the scorers read.
        progress: show a progress bar over iterations (on rank 0).
        on_iteration: called after each iteration with its number and the current masks.
        start: masks already in force (this rank's parts), in ``prunable``'s order.
        floors: ``min_density`` floor counts in ``prunable``'s order (None: no floor).
        sharding: how the weights are reached; the masks returned, and those passed to
            ``on_iteration``, are this rank's parts.
    """
    names = list(prunable)
    params = list(prunable.values())
    sizes = [p.numel() for p in params]
    total = sum(sizes)
    collective = sharding.collective
    alive = AliveSet([sharding.local(p) for p in params], start)
    density, method = settings.density, settings.method
    final_count = prune_count(density, total)
    if final_count == sum(collective.sum(alive.pruned)) and (settings.scope == "global" or start is None):
        return dict(zip(names, alive.masks))

    workspace = sharding.workspace(model, prunable, settings.train_mode)
    try:
        if start is not None:
            workspace.zero({name: mask.view(-1) for name, mask in zip(names, alive.masks)})
        score = sharding.scorer(workspace, settings, data, alive)
        steps = schedule_densities(density, settings.iterations, settings.schedule)
        for step, step_density in enumerate(progress_over(steps, progress and collective.rank == 0, method)):
            gathered = score()
            if method != "synflow" and collective.sum([not all_finite(gathered)])[0]:
                raise ValueError(f"{method} produced NaN or infinite scores; check the model and inputs.")
            if step == 0 and method in ALL_ZERO_CAUSES:
                check_zero_scores(method, names, gathered, alive.view_masks(), settings.train_mode, collective)
            if settings.invert:  # keep the lowest: rank by -score (exact, unlike the reference's 1/score)
                for values in gathered:
                    values.neg_()
            last = step == len(steps) - 1
            masks = alive.view_masks()
            if settings.scope == "global":
                groups = [(list(range(len(names))), total, final_count)]
            else:
                groups = [([i], size, prune_count(density, size)) for i, size in enumerate(sizes)]
            counts = collective.sum(alive.pruned + alive.hidden)  # over every rank
            pruned, hidden = counts[: len(names)], counts[len(names) :]
            room = None if floors is None else [max(n - p - f, 0) for n, p, f in zip(sizes, pruned, floors)]
            zero: dict[int, torch.Tensor] = {}
            for tensors, numel, cap in groups:
                plans = plan_cuts(
                    [gathered[i] for i in tensors],
                    [masks[i] for i in tensors],
                    [pruned[i] for i in tensors],
                    [hidden[i] for i in tensors],
                    prune_count(step_density, numel),
                    not last,
                    cap,
                    None if room is None else [room[i] for i in tensors],
                    zeros_with_pruned=not settings.invert,
                    collective=collective,
                )
                for members, cut in plans:
                    chosen = [tensors[j] for j in members]
                    zero.update(alive.apply(cut, [gathered[i] for i in chosen], chosen, collective))
            del gathered
            workspace.zero({names[i]: where for i, where in zero.items()})
            del zero  # its int64 positions would otherwise sit beside the next iteration's gradients
            alive.compact_if_sparse()
            if on_iteration is not None:
                on_iteration(step + 1, dict(zip(names, alive.masks)))
    finally:
        workspace.restore()
    return dict(zip(names, alive.masks))


def scorer_for(
    workspace: ScoringWorkspace,
    settings: PruningSettings,
    data: ScoringData,
    alive: AliveSet,
    collective: Collective = LOCAL,
    rows: Sequence[slice] | None = None,
) -> Scorer:
    """A function returning the scores of the alive set's view entries (flat, one tensor per weight).

    Args:
        workspace: the scoring workspace of the model.
        settings: the method and its seed.
        data: what the scorers read.
        alive: the alive set, whose view the scores follow.
        collective: the ranks holding the other shards (they draw random scores from one seed).
        rows: for a rank holding row shards, its rows of each weight (random scores).
    """
    params = list(workspace.prunable.values())
    method = settings.method
    if method == "synflow":
        assert data.example_input is not None
        return SynFlowScorer(workspace, data.example_input, alive, examples=2 if settings.train_mode else 1)
    if method == "magnitude":
        return lambda: alive.gather(magnitude_scores([workspace.working(p) for p in params]))
    if method == "random":
        generator = generator_for(collective.common_seed(settings.seed))
        return lambda: alive.gather(random_scores(params, alive.masks, generator, rows))
    dtype = score_dtype(params[0].dtype)
    workspace.cast(dtype)
    scorer = snip_scores if method == "snip" else grasp_scores
    loss = data.loss()
    return lambda: alive.gather(scorer(workspace.model, params, data.batches, loss, dtype))


def progress_over(steps: list[Fraction], enabled: bool, method: str) -> Iterable[Fraction]:
    """The schedule's densities, behind a tqdm progress bar when ``enabled``."""
    if not enabled:
        return steps
    from tqdm.auto import tqdm

    shown: Iterable[Fraction] = tqdm(steps, desc=f"Pruning ({method})", unit="it")
    return shown
