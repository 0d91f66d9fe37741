"""Pruning a sharded model (FSDP2 / DTensor parameters) on every rank, with a distributed threshold.

The prunable parameters are DTensors sharded by rows (``Shard(0)``) over a 1-D device mesh, as
``torch.distributed.fsdp.fully_shard`` leaves them. Every rank of the mesh calls :func:`prune_sharded`
at the same point; each scores its own row block, and the threshold is found from counts all-reduced
over a narrowing bracket of score values, so no rank ever holds every score. Only a small band of
scores around the threshold (at most :data:`BAND_LIMIT` entries over all ranks) is all-gathered for the
exact selection.

The masks equal those of a single-process :func:`~lightning_synflow.prune` on the same weights: the
same counts at every iteration, the same tie rule (:mod:`~lightning_synflow.pruning.cut`: prunable
tensors in ``named_parameters()`` order, then row-major order, which for ``Shard(0)`` is rank order
inside a tensor), so the pattern differs only where the scores themselves differ in their last bits.

Scoring state: FSDP2 all-gathers the weights from its own sharded storage, which each parameter's
local tensor views, so the scoring changes (absolute values, zeroed pruned entries) are made in place
on the local shards, from a backup copy that is written back in every case (a failed or interrupted
pruning leaves the model exactly as it was).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lightning_synflow.pruning.cut import Cut
from lightning_synflow.pruning.finish import warn_collapsed
from lightning_synflow.pruning.inputs import ExampleInput, call_on_ones, output_sum, validate_example_input
from lightning_synflow.pruning.schedule import prune_count, schedule_densities
from lightning_synflow.pruning.scores import in_safe_range, score_dtype
from lightning_synflow.pruning.settings import SHARDED_AT_DEFAULTS, SHARDED_METHODS, PruningSettings
from lightning_synflow.pruning.targets import select_prunable

#: Largest band of scores (over all ranks) that is all-gathered for the exact selection.
BAND_LIMIT = 1 << 16

#: Sample size (over all ranks) that brackets the threshold in each narrowing round.
SAMPLES = 1 << 14

#: Fraction of exactly-zero alive scores above which SynFlow warns that masks among them are arbitrary.
_ZERO_WARNING_FRACTION = 0.01

IterationHook = Callable[[int, dict[str, torch.Tensor]], None]


def is_sharded(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` is a DTensor (FSDP2's ``fully_shard``, tensor parallelism).

    Without ``torch.distributed.tensor`` imported no DTensor exists, so nothing is imported then (its
    import would cost time and memory inside every ``prune()``).
    """
    module = sys.modules.get("torch.distributed.tensor")
    if module is None:
        return False
    return any(isinstance(p, module.DTensor) for p in model.parameters())


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The rank's own part of ``tensor``: the local shard of a DTensor (a view), else the tensor itself."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of a DTensor on every rank (a collective)."""
    from torch.distributed.tensor import DTensor

    assert isinstance(tensor, DTensor)
    return tensor.full_tensor()


def _refuse_options(settings: PruningSettings, batches: object, masks: object) -> None:
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


def sharded_mesh(params: Mapping[str, torch.Tensor]) -> Any:
    """The 1-D device mesh that every one of ``params`` is row-sharded (``Shard(0)``) on.

    Raises:
        ValueError: a parameter is not a DTensor, not ``Shard(0)``, or on another or a 2-D mesh.
    """
    from torch.distributed.tensor import DTensor, Shard

    mesh = None
    for name, param in params.items():
        if not isinstance(param, DTensor):
            raise ValueError(
                f"Prunable parameter {name!r} is not a DTensor while others are: shard every prunable layer "
                "(fully_shard) or none."
            )
        if param.device_mesh.ndim != 1 or tuple(param.placements) != (Shard(0),):
            raise ValueError(
                f"Prunable parameter {name!r} is placed {tuple(param.placements)} on a {param.device_mesh.ndim}-D "
                "mesh; sharded pruning supports only Shard(0) on a 1-D (data-parallel) mesh, as FSDP2's "
                "fully_shard leaves parameters (no tensor parallelism)."
            )
        if mesh is not None and param.device_mesh != mesh:
            raise ValueError(f"Prunable parameter {name!r} is on another device mesh than the others.")
        mesh = param.device_mesh
    return mesh


@dataclass
class _Mesh:
    """Collectives over the ranks of the 1-D mesh the prunable parameters are sharded on."""

    group: Any
    rank: int
    size: int
    device: torch.device

    def sum(self, values: Sequence[float], dtype: torch.dtype = torch.int64) -> list[Any]:
        """Element-wise sums over the ranks (int64 counts by default)."""
        tensor = torch.tensor(list(values), dtype=dtype, device=self.device)
        dist.all_reduce(tensor, group=self.group)
        return tensor.tolist()

    def gather(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's 1-D ``values`` (lengths may differ), in rank order."""
        length = torch.tensor([values.numel()], dtype=torch.int64, device=self.device)
        lengths = [torch.empty_like(length) for _ in range(self.size)]
        dist.all_gather(lengths, length, group=self.group)
        sizes = [int(n) for n in lengths]
        padded = torch.zeros(max(sizes), dtype=values.dtype, device=self.device)
        padded[: values.numel()] = values.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded, group=self.group)
        return [part[:size] for part, size in zip(parts, sizes)]

    def broadcast_int(self, value: int) -> int:
        """Rank 0's ``value`` on every rank."""
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(tensor, src=dist.get_global_rank(self.group, 0), group=self.group)
        return int(tensor)


def _mesh_of(device_mesh: Any) -> _Mesh:
    group = device_mesh.get_group()
    cpu = "gloo" in str(dist.get_backend(group))
    device = torch.device("cpu") if cpu else torch.device("cuda", torch.cuda.current_device())
    return _Mesh(group, device_mesh.get_local_rank(), device_mesh.size(), device)


def distributed_kth(
    values: torch.Tensor, k: int, mesh: _Mesh, band_limit: int = BAND_LIMIT, samples: int = SAMPLES
) -> float:
    """The exact k-th smallest (1-based) of the 1-D ``values`` of every rank, gathering only a small band.

    A bracket ``(lo, hi]`` holding the answer narrows from random samples of the values inside it; each
    round all-reduces two counts. Equal values are handled exactly: when a round cannot narrow (ties at
    ``hi``), either ``hi`` is the answer or every value equal to it leaves the bracket. Once the bracket
    holds at most ``band_limit`` values over all ranks they are all-gathered and selected exactly.

    Args:
        values: this rank's values (finite).
        k: rank over all ranks' values together, ``1 <= k <= total``.
        mesh: the ranks taking part (each calls with its own values and the same ``k``).
        band_limit: largest band all-gathered.
        samples: sample size per narrowing round, over all ranks.
    """
    lo, hi, below = -math.inf, math.inf, 0
    band = values
    (size,) = mesh.sum([band.numel()])
    if not 1 <= k <= size:
        raise ValueError(f"k={k} is outside 1..{size}")
    generator = torch.Generator().manual_seed(mesh.rank)
    while size > band_limit:
        draws = math.ceil(samples * band.numel() / size)
        picks = torch.randint(band.numel(), (draws,), generator=generator) if band.numel() else torch.zeros(0)
        sample = torch.cat(mesh.gather(band[picks.long().to(band.device)])).sort().values
        q, m = (k - below) / size, sample.numel()
        spread = 6 * math.sqrt(m * q * (1 - q)) + 2
        low_at, high_at = math.floor(q * m - spread), math.ceil(q * m + spread)
        new_lo = float(sample[low_at]) if low_at >= 0 else lo
        new_hi = float(sample[min(high_at, m - 1)])  # a value in the band: a round without progress is a tie
        at_lo, at_hi = mesh.sum([int((band <= new_lo).sum()), int((band <= new_hi).sum())])
        before = size
        if below + at_lo >= k:
            hi, size = new_lo, at_lo
        elif below + at_hi >= k:
            lo, hi, below, size = new_lo, new_hi, below + at_lo, at_hi - at_lo
        else:
            lo, below, size = new_hi, below + at_hi, size - at_hi
        band = band[(band > lo) & (band <= hi)]
        if size == before:  # no progress: every value left is at most hi, many of them equal to it
            (under,) = mesh.sum([int((band < hi).sum())])
            if below + under < k:
                return hi
            hi = float(
                torch.nextafter(torch.tensor(hi, dtype=values.dtype), torch.tensor(-math.inf, dtype=values.dtype))
            )
            band, size = band[band <= hi], under
    gathered = torch.cat(mesh.gather(band))
    return float(torch.kthvalue(gathered.cpu(), k - below).values)


def _threshold(values: torch.Tensor, k: int, pruned: int, mesh: _Mesh) -> float:
    """The k-th smallest of every rank's ``values`` together with ``pruned`` zeros (the pruned entries)."""
    if pruned == 0:
        return distributed_kth(values, k, mesh)
    negatives, zeros = mesh.sum([int((values < 0).sum()), int((values == 0).sum())])
    if k <= negatives:
        return distributed_kth(values, k, mesh)
    if k <= negatives + pruned + zeros:
        return 0.0
    return distributed_kth(values, k - pruned, mesh)


def _plan(values: torch.Tensor, pruned: int, alive: int, n_prune: int, last: bool, cap: int, mesh: _Mesh) -> Cut | None:
    """The step of :func:`~lightning_synflow.pruning.cut.plan_cut` over every rank's alive scores ``values``.

    Args:
        values: this rank's alive scores of the group's tensors, in position order.
        pruned: entries of the group already pruned (all ranks).
        alive: alive entries of the group (all ranks).
        n_prune: entries of the group pruned after this step (already pruned included).
        last: the final iteration (exactly ``n_prune``, ties by position); else every tie goes, up to ``cap``.
        cap: the group's final count.
        mesh: the ranks.
    """
    need = n_prune - pruned
    if alive <= 0 or n_prune < 1 or (need <= 0 and last):
        return None
    if not last:
        threshold = _threshold(values, n_prune, pruned, mesh)
        (count,) = mesh.sum([int((values <= threshold).sum())])
        if pruned + count <= cap:
            return Cut(threshold, None, count) if count else None
        if need <= 0:
            return None
    if need >= alive:
        return Cut(math.inf, None, alive)
    threshold = distributed_kth(values, need, mesh)
    (below,) = mesh.sum([int((values < threshold).sum())])
    return Cut(threshold, need - below, need)


def _quotas(cut: Cut, scores: Sequence[torch.Tensor], keep: Sequence[torch.Tensor], mesh: _Mesh) -> list[int | None]:
    """How many of its entries tied at the threshold each of this rank's tensors gives up (None: all).

    Ties go in position order: tensors in order, and inside a row-sharded tensor rank by rank.
    """
    if cut.ties is None:
        return [None] * len(scores)
    tied = torch.tensor([int(((s == cut.threshold) & k).sum()) for s, k in zip(scores, keep)], dtype=torch.int64)
    table = torch.stack([t.cpu() for t in mesh.gather(tied)]).tolist()  # [rank][tensor]
    remaining, mine = cut.ties, []
    for i in range(len(scores)):
        for rank in range(mesh.size):
            take = min(remaining, table[rank][i])
            remaining -= take
            if rank == mesh.rank:
                mine.append(take)
    return mine


def _apply(cut: Cut, scores: Sequence[torch.Tensor], keep: Sequence[torch.Tensor], mesh: _Mesh) -> list[torch.Tensor]:
    """Prune what ``cut`` removes from this rank's ``keep`` masks (in place); the newly pruned entries."""
    quotas = _quotas(cut, scores, keep, mesh)
    newly = []
    for s, k, quota in zip(scores, keep, quotas):
        if quota is None:
            pick = (s <= cut.threshold) & k
        else:
            pick = (s < cut.threshold) & k
            tied = (s == cut.threshold) & k
            pick |= tied & (torch.cumsum(tied, 0) <= quota)
        k &= ~pick
        newly.append(pick)
    return newly


class _ShardedWorkspace:
    """Scoring state on the local shards: eval mode, no gradients kept, changes undone from backups.

    Every floating-point parameter and buffer is backed up (its local shard for a DTensor) and may then
    be changed in place (:meth:`linearize`, :meth:`zero`); :meth:`restore` writes the backups back and
    restores modes, ``requires_grad`` and ``.grad``.
    """

    def __init__(self, model: nn.Module, prunable: Sequence[nn.Parameter]) -> None:
        self._training = {module: module.training for module in model.modules()}
        self._requires_grad = {param: param.requires_grad for param in model.parameters()}
        self._grads = {param: param.grad for param in model.parameters()}
        seen: set[int] = set()
        self._backups: list[tuple[torch.Tensor, torch.Tensor]] = []
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                if torch.is_floating_point(tensor) and id(tensor) not in seen:
                    seen.add(id(tensor))
                    local = _local(tensor)
                    self._backups.append((local, local.clone()))
        model.eval()
        for param in model.parameters():
            param.grad = None
        for param in prunable:
            param.requires_grad_(True)

    @torch.no_grad()
    def linearize(self) -> None:
        """Replace every floating-point parameter and buffer by its absolute value (local shards, in place)."""
        for local, _ in self._backups:
            local.abs_()

    @torch.no_grad()
    def restore(self) -> None:
        """Undo every change: values, modes, ``requires_grad`` and gradients come back exactly."""
        for local, backup in self._backups:
            local.copy_(backup)
        self._backups.clear()
        for param, requires_grad in self._requires_grad.items():
            param.requires_grad_(requires_grad)
            param.grad = self._grads[param]
        for module, training in self._training.items():
            module.training = training


class _Scorer:
    """Scores of one method on the local shards: flat float tensors, one per prunable parameter."""

    def __init__(
        self,
        model: nn.Module,
        prunable: dict[str, nn.Parameter],
        settings: PruningSettings,
        example_input: ExampleInput | None,
        workspace: _ShardedWorkspace,
        mesh: _Mesh,
    ) -> None:
        self.model, self.prunable, self.settings = model, prunable, settings
        self.example_input = example_input
        self.mesh = mesh
        self._warned = False
        self._warned_dtype = False
        if settings.method == "synflow":
            workspace.linearize()
        self.generator: torch.Generator | None = None
        if settings.method == "random":
            # Every rank draws the same full tensors (then keeps its rows): with the seed, the draws of prune().
            seed = settings.seed if settings.seed is not None else mesh.broadcast_int(int(torch.randint(2**62, ())))
            self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, rows: Sequence[slice]) -> list[torch.Tensor]:
        """Scores of every local shard; ``rows`` are the shards' row ranges in their global tensors."""
        params = list(self.prunable.values())
        if self.settings.method == "magnitude":
            return [_local(p).detach().to(score_dtype(p.dtype)).abs().view(-1) for p in params]
        if self.settings.method == "random":
            return [
                torch.randn(p.shape, generator=self.generator, dtype=torch.float32)[r].reshape(-1).to(_local(p).device)
                for p, r in zip(params, rows)
            ]
        return self._synflow(params)

    def _synflow(self, params: list[nn.Parameter]) -> list[torch.Tensor]:
        assert self.example_input is not None
        local = _local(params[0])
        with torch.enable_grad():
            flow = output_sum(call_on_ones(self.model, self.example_input, local.dtype, local.device))
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
            for (name, param), weight in zip(self.prunable.items(), params):
                grad = param.grad
                if grad is None:
                    unreached.append(name)
                    scores.append(
                        torch.zeros(_local(weight).numel(), dtype=score_dtype(weight.dtype), device=local.device)
                    )
                    continue
                scores.append((_local(weight) * _local(grad)).abs_().to(score_dtype(weight.dtype)).view(-1))
            for param in self.model.parameters():
                param.grad = None
        finite = all(bool(torch.isfinite(s).all()) for s in scores)
        (bad,) = self.mesh.sum([0 if finite else 1])
        if bad:
            raise FloatingPointError(
                f"SynFlow scores are not finite (R = {value:.6g}) on {bad} rank(s): a sharded model is scored in its "
                "parameters' dtype, without float64 widening. Prune the unsharded model, or fewer layers."
            )
        if unreached and not self._warned and self.mesh.rank == 0:
            self._warned = True
            warnings.warn(
                f"No gradient reached {unreached[:5]} in the SynFlow pass, so they score 0 and are pruned first.",
                UserWarning,
                stacklevel=4,
            )
        return scores

    def _warn_narrow(self, dtype: torch.dtype) -> None:
        """Say once (rank 0) that the pass ran in a dtype narrower than float32, unlike the unsharded prune()."""
        if dtype not in (torch.float16, torch.bfloat16) or self._warned_dtype:
            return
        self._warned_dtype = True
        if self.mesh.rank == 0:
            warnings.warn(
                f"SynFlow on a sharded model runs in {dtype}, the dtype FSDP2 computes in (the parameters' dtype or "
                "the MixedPrecisionPolicy's param_dtype), while the unsharded prune() scores in float32: the masks "
                "can differ from a float32 prune() where scores are close (a few entries per layer). The count is "
                "exact and every rank has the same masks. For float32 scores, prune before sharding, or shard with "
                "float32 parameters and no param_dtype policy for the pruning run.",
                UserWarning,
                stacklevel=5,
            )


def _row_ranges(prunable: Mapping[str, torch.Tensor], mesh: _Mesh) -> list[slice]:
    """Each local shard's rows in its global tensor, checked to tile the tensor in rank order.

    Raises:
        ValueError: the shards are not consecutive row blocks in rank order.
    """
    counts = torch.tensor([_local(p).shape[0] if p.dim() else 0 for p in prunable.values()], dtype=torch.int64)
    table = torch.stack([t.cpu() for t in mesh.gather(counts)])  # [rank, tensor]
    starts = torch.cumsum(table, 0) - table
    for (name, param), total in zip(prunable.items(), table.sum(0).tolist()):
        if param.dim() == 0 or total != param.shape[0]:
            raise ValueError(f"The shards of {name!r} do not tile its rows; sharded pruning needs Shard(0) row blocks.")
    return [slice(int(s), int(s + n)) for s, n in zip(starts[mesh.rank], table[mesh.rank])]


def _check_zero_scores(
    method: str, names: Sequence[str], scores: Sequence[torch.Tensor], keep: Sequence[torch.Tensor], mesh: _Mesh
) -> None:
    """Refuse alive scores that are all zero over every rank; for SynFlow warn when many are."""
    from lightning_synflow.pruning.checks import ALL_ZERO_CAUSES

    if method not in ALL_ZERO_CAUSES:
        return
    counts = mesh.sum([int(((s == 0) & k).sum()) for s, k in zip(scores, keep)] + [int(k.sum()) for k in keep])
    zeros, sizes = counts[: len(names)], counts[len(names) :]
    if sum(zeros) == sum(sizes):
        label, cause = ALL_ZERO_CAUSES[method]
        raise ValueError(f"Every {label} score is exactly zero, so no weight can be ranked above another: {cause}")
    fraction = sum(zeros) / sum(sizes)
    if fraction > _ZERO_WARNING_FRACTION and mesh.rank == 0:
        worst = sorted(zip(names, zeros, sizes), key=lambda item: -item[1] / max(item[2], 1))[:5]
        layers = ", ".join(f"{name} ({count / size:.0%})" for name, count, size in worst if count)
        warnings.warn(
            f"{fraction:.1%} of the prunable weights have a SynFlow score of exactly zero, so the mask among them is "
            f"arbitrary (ties). Layers with most zero scores: {layers}.",
            UserWarning,
            stacklevel=4,
        )


def _as_dtensors(prunable: Mapping[str, torch.Tensor], keep: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The local keep masks as boolean DTensors placed like their parameters (no communication)."""
    from torch.distributed.tensor import DTensor

    masks: dict[str, torch.Tensor] = {}
    for (name, param), k in zip(prunable.items(), keep):
        assert isinstance(param, DTensor)
        local = k.view(_local(param).shape)
        masks[name] = DTensor.from_local(
            local, param.device_mesh, param.placements, run_check=False, shape=param.shape, stride=param.stride()
        )
    return masks


def shard_masks(params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Boolean DTensor masks placed like ``params`` (row-sharded DTensors): each rank keeps its rows of full masks.

    A collective (it checks how the rows are shared out): call on every rank of the parameters' mesh.

    Args:
        params: the masked parameters keyed by name.
        masks: a mask per parameter: a full boolean tensor, or a DTensor mask (used as it is).

    Raises:
        ValueError: a parameter is not row-sharded on a 1-D mesh.
    """
    from torch.distributed.tensor import DTensor

    mesh = _mesh_of(sharded_mesh(params))
    rows = _row_ranges(params, mesh)
    local = []
    for (name, param), r in zip(params.items(), rows):
        mask = masks[name]
        device = _local(param).device
        own = mask.to_local() if isinstance(mask, DTensor) else mask[r]
        local.append(own.to(device=device, dtype=torch.bool).contiguous().view(-1))
    return _as_dtensors(params, local)


def prune_sharded(
    model: nn.Module,
    settings: PruningSettings,
    example_input: ExampleInput | None,
    *,
    progress: bool = False,
    on_iteration: IterationHook | None = None,
    batches: Iterable[Any] | None = None,
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
        example_input: batch-shaped example (SynFlow; only its shapes are used).
        progress: show a progress bar over iterations (rank 0 only).
        on_iteration: called after each iteration with its number and the current masks.
        batches: unused (the data methods are refused).
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
    _refuse_options(settings, batches, masks)
    if settings.method == "synflow":
        if example_input is None:
            raise ValueError("method='synflow' needs `example_input`: a tensor shaped like a batch.")
        validate_example_input(example_input, model)
    prunable = select_prunable(model, settings.parameters, settings.exclude)
    mesh = _mesh_of(sharded_mesh(prunable))
    names = list(prunable)
    rows = _row_ranges(prunable, mesh)
    (bad,) = mesh.sum([sum(int(not bool(torch.isfinite(_local(p).detach()).all())) for p in prunable.values())])
    if bad:
        raise ValueError("A prunable parameter holds NaN or infinite values; pruning needs finite weights.")
    sizes = [p.numel() for p in prunable.values()]
    if masks is None:
        keep = [torch.ones(_local(p).numel(), dtype=torch.bool, device=_local(p).device) for p in prunable.values()]
    else:
        from lightning_synflow.pruning.api import _starting_masks

        start = dict(zip(names, _starting_masks(prunable, settings, masks)))  # checked on every rank alike
        keep = [_local(m).reshape(-1).clone() for m in shard_masks(prunable, start).values()]
    pruned = [size - kept for size, kept in zip(sizes, mesh.sum([int(k.sum()) for k in keep]))]
    final_count = prune_count(settings.density, sum(sizes))
    if final_count:
        _loop(model, prunable, settings, example_input, mesh, rows, keep, pruned, progress, on_iteration)
    with torch.no_grad():
        for param, k in zip(prunable.values(), keep):
            _local(param).view(-1).masked_fill_(~k, 0)
    final = _as_dtensors(prunable, keep)
    if any(p == n for p, n in zip(pruned, sizes)):
        full = {name: _full(m) for name, m in final.items()}  # a collective: every rank
        if mesh.rank == 0:
            warn_collapsed(full, settings, stacklevel=4)
    return final


def _loop(
    model: nn.Module,
    prunable: dict[str, nn.Parameter],
    settings: PruningSettings,
    example_input: ExampleInput | None,
    mesh: _Mesh,
    rows: Sequence[slice],
    keep: list[torch.Tensor],
    pruned: list[int],
    progress: bool,
    on_iteration: IterationHook | None,
) -> None:
    """Algorithm 1 on the local shards: updates ``keep`` (local masks) and ``pruned`` (global counts) in place."""
    from lightning_synflow.pruning.loop import progress_over

    names = list(prunable)
    sizes = [p.numel() for p in prunable.values()]
    density = settings.density
    if settings.scope == "global":
        groups = [(list(range(len(names))), sum(sizes), prune_count(density, sum(sizes)))]
    else:
        groups = [([i], size, prune_count(density, size)) for i, size in enumerate(sizes)]
    workspace = _ShardedWorkspace(model, list(prunable.values()))
    try:
        with torch.no_grad():  # entries pruned before this call: zero in the working weights (SynFlow's paths)
            for param, k in zip(prunable.values(), keep):
                _local(param).view(-1).masked_fill_(~k, 0)
        scorer = _Scorer(model, prunable, settings, example_input, workspace, mesh)
        steps = schedule_densities(density, settings.iterations, settings.schedule)
        shown = progress_over(steps, progress and mesh.rank == 0, settings.method)
        for step, step_density in enumerate(shown):
            scores = scorer(rows)
            if step == 0:
                _check_zero_scores(settings.method, names, scores, keep, mesh)
            last = step == len(steps) - 1
            newly: list[torch.Tensor | None] = [None] * len(names)
            for tensors, numel, cap in groups:
                already = sum(pruned[i] for i in tensors)
                values = torch.cat([scores[i][keep[i]] for i in tensors])
                cut = _plan(values, already, numel - already, prune_count(step_density, numel), last, cap, mesh)
                if cut is None:
                    continue
                picks = _apply(cut, [scores[i] for i in tensors], [keep[i] for i in tensors], mesh)
                for i, pick in zip(tensors, picks):
                    newly[i] = pick
            counts = mesh.sum([0 if pick is None else int(pick.sum()) for pick in newly])
            for i, count in enumerate(counts):
                pruned[i] += count
            if settings.method == "synflow":  # the working weights carry the masks into the next pass
                with torch.no_grad():
                    for param, where in zip(prunable.values(), newly):
                        if where is not None:
                            _local(param).view(-1).masked_fill_(where, 0)
            if on_iteration is not None:
                on_iteration(step + 1, _as_dtensors(prunable, keep))
    finally:
        workspace.restore()
