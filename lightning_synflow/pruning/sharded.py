"""Pruning a sharded model (FSDP2 / DTensor parameters) on every rank, with a distributed threshold.

The prunable parameters are DTensors sharded by rows (``Shard(0)``) over a 1-D device mesh, as
``torch.distributed.fsdp.fully_shard`` leaves them. Every rank of the mesh calls :func:`prune_sharded`
at the same point and runs the loop of :mod:`~lightning_synflow.pruning.loop` on its own row blocks
(:class:`RowSharding`): the selection sums its counts over the mesh and gathers only a sample and a
small band of scores around the threshold, so no rank ever holds every score.

The masks equal those of a single-process :func:`~lightning_synflow.prune` on the same weights: the
same counts at every iteration, the same tie rule (:mod:`~lightning_synflow.pruning.cut`: prunable
tensors in ``named_parameters()`` order, then row-major order, which for ``Shard(0)`` is rank order
inside a tensor), so the pattern differs only where the scores themselves differ in their last bits.

Scoring state: FSDP2 all-gathers the weights from its own sharded storage, which each parameter's
local tensor views, so the scoring changes (absolute values, zeroed pruned entries) are made in place
on the local shards (:class:`ShardWorkspace`), from backups that are written back in every case (a
failed or interrupted pruning leaves the model exactly as it was).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from lightning_synflow.pruning.alive import AliveSet
from lightning_synflow.pruning.checks import check_starting_masks, check_weights
from lightning_synflow.pruning.collective import Collective
from lightning_synflow.pruning.distributed import (
    MeshCollective,
    as_dtensors,
    full_tensor,
    local_shard,
    row_ranges,
    shard_masks,
    sharded_mesh,
)
from lightning_synflow.pruning.finish import warn_collapsed
from lightning_synflow.pruning.inputs import ExampleInput, call_on_ones, output_sum, validate_example_input
from lightning_synflow.pruning.loop import IterationHook, Scorer, ScoringData, Sharding, run_loop, scorer_for
from lightning_synflow.pruning.scores import in_safe_range, score_dtype, warn_unreached
from lightning_synflow.pruning.settings import SHARDED_AT_DEFAULTS, SHARDED_METHODS, PruningSettings
from lightning_synflow.pruning.targets import select_prunable
from lightning_synflow.pruning.workspace import ScoringWorkspace


def _refuse_options(settings: PruningSettings) -> None:
    """Refuse what the sharded loop does not do, before anything runs."""
    if settings.method not in SHARDED_METHODS:
        raise ValueError(
            f"method={settings.method!r} is not supported on a sharded (DTensor) model; supported there: "
            f"{list(SHARDED_METHODS)}."
        )
    refused = settings.unsupported_when_sharded()
    if refused:
        at_defaults = [f"`{name}`" for name in SHARDED_AT_DEFAULTS]
        raise ValueError(
            f"{refused} not supported on a sharded (DTensor) model: prune it with {', '.join(at_defaults[:-1])} and "
            f"{at_defaults[-1]} at their defaults, or prune the unsharded model before sharding it."
        )


class ShardWorkspace(ScoringWorkspace):
    """The scoring workspace on local shards: every change is made in place, from a backup of the shard.

    Parameters that are not prunable keep their ``requires_grad``, as FSDP2 set them up. The dtype
    never changes (FSDP2 computes in its own), so :meth:`cast` is not for this workspace.
    """

    freezes_others = False

    def working(self, tensor: torch.Tensor) -> torch.Tensor:
        """The local shard of ``tensor``, changed in place."""
        return local_shard(tensor)

    def _hold(self, param: torch.Tensor) -> None:
        self._originals.setdefault(param, local_shard(param).clone())

    def _swap(self, tensor: torch.Tensor, working: torch.Tensor) -> None:
        local = local_shard(tensor)
        assert working.dtype == local.dtype, "a workspace on shards cannot change their dtype"
        self._originals.setdefault(tensor, local.clone())
        local.copy_(working)

    def _put_back(self, tensor: torch.Tensor, original: torch.Tensor) -> None:
        local_shard(tensor).copy_(original)


class ShardSynFlowScorer:
    """SynFlow scores ``|theta * dR/dtheta|`` of the local shards, in the dtype FSDP2 computes in.

    Unlike :class:`~lightning_synflow.pruning.scores.SynFlowScorer` it reads the sharded gradients
    FSDP2 leaves after backward, and a synaptic flow out of range is an error (no float64 widening).

    Args:
        workspace: the scoring workspace of the model (linearized here).
        example_input: a batch-shaped example; only its per-example shapes are used.
        alive: the alive set, whose view the returned scores follow.
        collective: the mesh.
    """

    def __init__(
        self, workspace: ShardWorkspace, example_input: ExampleInput, alive: AliveSet, collective: Collective
    ) -> None:
        self.workspace, self.example_input, self.alive, self.collective = workspace, example_input, alive, collective
        self._warned_unreached = False
        self._warned_dtype = False
        workspace.linearize()

    def __call__(self) -> list[torch.Tensor]:
        """Scores of the view's entries of the current (masked) model."""
        model, prunable = self.workspace.model, self.workspace.prunable
        local = local_shard(next(iter(prunable.values())))
        with torch.enable_grad():
            flow = output_sum(call_on_ones(model, self.example_input, local.dtype, local.device))
        value = float(flow.detach())
        self._warn_narrow(flow.dtype)
        if not math.isfinite(value) or (value != 0 and not in_safe_range(value, flow.dtype)):
            raise FloatingPointError(
                f"The synaptic flow R = {value} is not finite in {flow.dtype}, or so large or small that its "
                "gradients could overflow or underflow there (scores flushed to 0 would be pruned first): a sharded "
                "model is scored in the dtype FSDP2 computes in, without the float64 widening of the single-process "
                "prune(). Prune the unsharded model, or fewer layers, or use method='magnitude'."
            )
        if flow.requires_grad:  # else the output does not depend on any weight: every score is 0
            flow.backward()
        scores, unreached = [], []
        with torch.no_grad():
            for name, param in prunable.items():
                weight, grad = local_shard(param), param.grad
                dtype = score_dtype(param.dtype)
                if grad is None:
                    unreached.append(name)
                    scores.append(torch.zeros(weight.numel(), dtype=dtype, device=weight.device))
                else:
                    scores.append((weight * local_shard(grad)).abs_().to(dtype).view(-1))
            for param in model.parameters():
                param.grad = None
        (bad,) = self.collective.sum([not all(bool(torch.isfinite(s).all()) for s in scores)])
        if bad:
            raise FloatingPointError(
                f"SynFlow scores are not finite (R = {value:.6g}) on {bad} rank(s): a sharded model is scored in its "
                "parameters' dtype, without float64 widening. Prune the unsharded model, or fewer layers."
            )
        if unreached and not self._warned_unreached:
            self._warned_unreached = True
            if self.collective.rank == 0:
                warn_unreached(unreached, stacklevel=4)
        return self.alive.gather(scores)

    def _warn_narrow(self, dtype: torch.dtype) -> None:
        """Say once (rank 0) that the pass ran in a dtype narrower than float32, unlike the unsharded prune()."""
        if dtype not in (torch.float16, torch.bfloat16) or self._warned_dtype:
            return
        self._warned_dtype = True
        if self.collective.rank == 0:
            warnings.warn(
                f"SynFlow on a sharded model runs in {dtype}, the dtype FSDP2 computes in (the parameters' dtype or "
                "the MixedPrecisionPolicy's param_dtype), while the unsharded prune() scores in float32: the masks "
                "can differ from a float32 prune() where scores are close (a few entries per layer). The count is "
                "exact and every rank has the same masks. For float32 scores, prune before sharding, or shard with "
                "float32 parameters and no param_dtype policy for the pruning run.",
                UserWarning,
                stacklevel=4,
            )


class RowSharding(Sharding):
    """The loop on this rank's row shards: counts summed over the mesh, scores and masks of the local rows.

    Args:
        collective: the mesh the prunable parameters are sharded on.
        rows: each local shard's rows in its parameter.
    """

    def __init__(self, collective: MeshCollective, rows: Sequence[slice]) -> None:
        self.collective = collective
        self.rows = rows

    def local(self, param: torch.Tensor) -> torch.Tensor:
        """The local shard of ``param``."""
        return local_shard(param)

    def workspace(self, model: nn.Module, prunable: dict[str, nn.Parameter], train_mode: bool) -> ShardWorkspace:
        """A :class:`ShardWorkspace` (``train_mode`` is refused before)."""
        return ShardWorkspace(model, prunable, train_mode)

    def scorer(
        self, workspace: ScoringWorkspace, settings: PruningSettings, data: ScoringData, alive: AliveSet
    ) -> Scorer:
        """:class:`ShardSynFlowScorer` for SynFlow; magnitude and random as in a single process, on the local rows."""
        if settings.method == "synflow":
            assert isinstance(workspace, ShardWorkspace) and data.example_input is not None
            return ShardSynFlowScorer(workspace, data.example_input, alive, self.collective)
        return scorer_for(workspace, settings, data, alive, self.collective, self.rows)


def prune_sharded(
    model: nn.Module,
    settings: PruningSettings,
    data: ScoringData,
    *,
    progress: bool = False,
    on_iteration: IterationHook | None = None,
    masks: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Prune a model whose prunable weights are FSDP2 shards (DTensors, ``Shard(0)``, 1-D mesh); call on every rank.

    What :func:`~lightning_synflow.pruning.api.prune_with` runs for such a model: the same masks as a
    single-process prune of the same weights (same counts at every iteration, same tie rule), found with
    a distributed threshold. Pruned entries of each local shard are set to exactly 0.

    Args:
        model: the sharded network (every rank's), pruned in place.
        settings: what decides the masks; methods ``synflow``, ``magnitude`` and ``random``, without
            ``invert``, ``shuffle``, ``reinitialize``, ``train_mode`` and ``min_density``.
        data: what the scorers read: the batch-shaped example (SynFlow; only its shapes are used).
        progress: show a progress bar over iterations (rank 0 only).
        on_iteration: called after each iteration with its number and the current masks (DTensors).
        masks: masks already in force (True = kept), full or DTensor, keyed like the result: their pruned
            entries stay pruned and count toward the target.

    Returns:
        Boolean DTensor masks (True = kept) keyed by qualified parameter name, placed like their
        parameters: ``mask.to_local()`` is the rank's rows, ``mask.full_tensor()`` (a collective) the whole mask.

    Raises:
        ValueError: an unsupported method or option, a prunable parameter that is not a row-sharded DTensor on a
            1-D mesh, non-finite weights or all-zero scores; nothing changes in the model then.
        FloatingPointError: SynFlow scores that are not finite in the parameters' dtype (no float64 widening).
    """
    _refuse_options(settings)
    if settings.method == "synflow":
        if data.example_input is None:
            raise ValueError("method='synflow' needs `example_input`: a tensor shaped like a batch.")
        validate_example_input(data.example_input, model)
    prunable = select_prunable(model, settings.parameters, settings.exclude)
    collective = MeshCollective.of(sharded_mesh(prunable))
    rows = row_ranges(prunable, collective)
    check_weights({name: local_shard(p) for name, p in prunable.items()}, collective)
    start = None
    if masks is not None:
        checked = dict(zip(prunable, check_starting_masks(prunable, settings, masks)))  # on every rank alike
        start = [local_shard(m) for m in shard_masks(prunable, checked).values()]

    def in_dtensors(step: int, local: dict[str, torch.Tensor]) -> None:
        assert on_iteration is not None
        on_iteration(step, as_dtensors(prunable, list(local.values())))

    hook = None if on_iteration is None else in_dtensors
    kept = run_loop(model, prunable, settings, data, progress, hook, start, None, RowSharding(collective, rows))
    with torch.no_grad():
        for param, mask in zip(prunable.values(), kept.values()):
            local_shard(param).masked_fill_(~mask, 0)
    final = as_dtensors(prunable, list(kept.values()))
    if 0 in collective.sum([int(torch.count_nonzero(mask)) for mask in kept.values()]):
        full = {name: full_tensor(m) for name, m in final.items()}  # a collective: every rank
        if collective.rank == 0:
            warn_collapsed(full, settings, stacklevel=4)
    return final
