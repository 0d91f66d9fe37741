"""Row shards on a device mesh: the mesh collective, each rank's rows, masks placed like their parameters.

The prunable parameters are DTensors sharded by rows (``Shard(0)``) over a 1-D device mesh, as
``torch.distributed.fsdp.fully_shard`` leaves them. ``torch.distributed.tensor`` is imported only
where a DTensor may exist, never by a single-process ``prune()`` (its import costs time and memory).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from lightning_synflow.pruning.collective import Values

#: Sample size (over all ranks) of a selection bracket on a mesh: every rank gathers the whole sample,
#: and a band of up to four times as many values.
MESH_SAMPLES = 1 << 14


def is_sharded(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` is a DTensor (FSDP2's ``fully_shard``, tensor parallelism).

    Without ``torch.distributed.tensor`` imported no DTensor exists, so nothing is imported then.
    """
    module = sys.modules.get("torch.distributed.tensor")
    if module is None:
        return False
    return any(isinstance(p, module.DTensor) for p in model.parameters())


def local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """The rank's own part of ``tensor``: the local shard of a DTensor (a view), else the tensor itself."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of a DTensor on every rank (a collective)."""
    from torch.distributed.tensor import DTensor

    assert isinstance(tensor, DTensor)
    return tensor.full_tensor()


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


@dataclass(frozen=True)
class MeshCollective:
    """The :class:`~lightning_synflow.pruning.collective.Collective` of the ranks of a 1-D device mesh.

    Attributes:
        group: the mesh's process group.
        rank: this process's position in the mesh.
        size: the mesh's size.
        device: where the group's tensors live (CPU for gloo, the current CUDA device otherwise).
        samples: sample size of a selection bracket (:data:`MESH_SAMPLES`).
    """

    group: Any
    rank: int
    size: int
    device: torch.device
    samples: int | None = MESH_SAMPLES

    @classmethod
    def of(cls, device_mesh: Any) -> MeshCollective:
        """The collective of ``device_mesh`` (1-D)."""
        group = device_mesh.get_group()
        cpu = "gloo" in str(dist.get_backend(group))
        device = torch.device("cpu") if cpu else torch.device("cuda", torch.cuda.current_device())
        return cls(group, device_mesh.get_local_rank(), device_mesh.size(), device)

    def sum(self, counts: Sequence[int]) -> list[int]:
        """Element-wise sums over the ranks (int64)."""
        if not counts:
            return []
        tensor = torch.tensor([int(c) for c in counts], dtype=torch.int64, device=self.device)
        dist.all_reduce(tensor, group=self.group)
        summed: list[int] = tensor.tolist()
        return summed

    def _gather(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's 1-D ``values`` (lengths may differ), in rank order, on :attr:`device`."""
        length = torch.tensor([values.numel()], dtype=torch.int64, device=self.device)
        lengths = [torch.empty_like(length) for _ in range(self.size)]
        dist.all_gather(lengths, length, group=self.group)
        sizes = [int(n) for n in lengths]
        padded = torch.zeros(max(sizes), dtype=values.dtype, device=self.device)
        padded[: values.numel()] = values.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded, group=self.group)
        return [part[:size] for part, size in zip(parts, sizes)]

    def gather(self, values: Values) -> Values:
        """Every rank's 1-D ``values`` concatenated in rank order, of the kind and on the device of ``values``."""
        if isinstance(values, np.ndarray):
            return torch.cat(self._gather(torch.from_numpy(values))).cpu().numpy()
        return torch.cat(self._gather(values)).to(values.device)

    def gather_counts(self, counts: Sequence[int]) -> list[list[int]]:
        """Every rank's ``counts``, indexed ``[rank][i]``."""
        local = torch.tensor([int(c) for c in counts], dtype=torch.int64)
        return [part.tolist() for part in self._gather(local)]

    def common_seed(self, seed: int | None) -> int | None:
        """``seed``, or where it is None rank 0's draw from torch's global generator (every rank draws)."""
        if seed is not None:
            return seed
        tensor = torch.tensor([int(torch.randint(2**62, ()))], dtype=torch.int64, device=self.device)
        dist.broadcast(tensor, src=dist.get_global_rank(self.group, 0), group=self.group)
        return int(tensor)


def row_ranges(prunable: Mapping[str, torch.Tensor], collective: MeshCollective) -> list[slice]:
    """Each local shard's rows in its global tensor, checked to tile the tensor in rank order.

    Raises:
        ValueError: the shards are not consecutive row blocks in rank order.
    """
    table = collective.gather_counts([local_shard(p).shape[0] if p.dim() else 0 for p in prunable.values()])
    ranges = []
    for i, (name, param) in enumerate(prunable.items()):
        rows = [counts[i] for counts in table]
        if param.dim() == 0 or sum(rows) != param.shape[0]:
            raise ValueError(f"The shards of {name!r} do not tile its rows; sharded pruning needs Shard(0) row blocks.")
        start = sum(rows[: collective.rank])
        ranges.append(slice(start, start + rows[collective.rank]))
    return ranges


def as_dtensors(prunable: Mapping[str, torch.Tensor], local: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The rank's masks ``local`` (one per parameter) as boolean DTensors placed like their parameters.

    No communication: each rank wraps its own rows.
    """
    from torch.distributed.tensor import DTensor

    masks: dict[str, torch.Tensor] = {}
    for (name, param), mask in zip(prunable.items(), local):
        assert isinstance(param, DTensor)
        masks[name] = DTensor.from_local(
            mask.view(local_shard(param).shape),
            param.device_mesh,
            param.placements,
            run_check=False,
            shape=param.shape,
            stride=param.stride(),
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

    rows = row_ranges(params, MeshCollective.of(sharded_mesh(params)))
    local = []
    for (name, param), r in zip(params.items(), rows):
        mask = masks[name]
        own = mask.to_local() if isinstance(mask, DTensor) else mask[r]
        local.append(own.to(device=local_shard(param).device, dtype=torch.bool).contiguous())
    return as_dtensors(params, local)
