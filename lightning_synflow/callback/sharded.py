"""``SynFlowPruning`` under ``ModelParallelStrategy`` with FSDP2: what is supported, masks on local shards, state.

Every rank prunes its own row shards (:func:`~lightning_synflow.pruning.sharded.prune_sharded`); the masks in
force are boolean DTensors placed like their parameters, applied to the local shards of the weights after every
optimizer step and of the gradients after every backward pass. Checkpoint state holds the full masks as packed
bits (1 bit per weight, gathered once when the masks come in force), the same on every rank, so the metadata
rank 0 writes (sharded or full checkpoint) resumes every rank, each taking its own rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.strategies import ModelParallelStrategy, Strategy
from torch import nn
from torch.utils.hooks import RemovableHandle

from lightning_synflow.callback.rounds import RoundSchedule
from lightning_synflow.callback.state import pack_state
from lightning_synflow.callback.upkeep import masked_parameters
from lightning_synflow.checkpoint_format import mask_entries
from lightning_synflow.masks import pack_mask, unpack_mask
from lightning_synflow.pruning.settings import PruningSettings
from lightning_synflow.pruning.sharded import SHARDED_METHODS, shard_masks, sharded_mesh
from lightning_synflow.pruning.targets import select_prunable

#: What SynFlowPruning supports under ModelParallelStrategy, for messages.
SUPPORTED = (
    "ModelParallelStrategy(data_parallel_size=N, tensor_parallel_size=1) with every prunable layer sharded by "
    "torch.distributed.fsdp.fully_shard(module, mesh=self.device_mesh['data_parallel']) in configure_model"
)


def is_model_parallel(strategy: Strategy) -> bool:
    """Whether ``strategy`` is Lightning's ``ModelParallelStrategy`` (FSDP2 / DTensor)."""
    return type(strategy) is ModelParallelStrategy


def check_sharded_setup(strategy: Strategy, arguments: Mapping[str, Any]) -> None:
    """Refuse, at setup, what sharded pruning does not support: tensor parallelism and these options.

    Args:
        strategy: the trainer's strategy, its device mesh set up.
        arguments: the callback's constructor arguments by name.

    Raises:
        MisconfigurationException: naming what is refused and what is supported.
    """
    assert isinstance(strategy, ModelParallelStrategy)
    parallel = strategy.device_mesh["tensor_parallel"].size()
    if parallel > 1:
        raise MisconfigurationException(
            f"SynFlowPruning does not support tensor parallelism (tensor_parallel_size={parallel}): it prunes row "
            f"shards of a 1-D data-parallel mesh only. Supported: {SUPPORTED}."
        )
    defaults = {
        "shrink": False,
        "prune_epoch": 0,
        "levels": 1,
        "invert": False,
        "shuffle": False,
        "reinitialize": False,
        "train_mode": False,
        "min_density": None,
    }
    refused = [f"{name}={arguments[name]!r}" for name, value in defaults.items() if arguments[name] != value]
    if arguments["method"] not in SHARDED_METHODS:
        refused.insert(0, f"method={arguments['method']!r}")
    if refused:
        raise MisconfigurationException(
            f"SynFlowPruning under ModelParallelStrategy (sharded weights) does not support {', '.join(refused)}: "
            f"it prunes once at fit start with method in {list(SHARDED_METHODS)} and {', '.join(defaults)} at "
            "their defaults. Prune the unsharded model with lightning_synflow.prune() before sharding it for the "
            "others."
        )


def check_sharded_module(module: nn.Module, settings: PruningSettings) -> None:
    """Refuse, before pruning, a module whose prunable parameters are not FSDP2 row shards on one 1-D mesh.

    Raises:
        MisconfigurationException: naming the parameters that are not sharded, or how they are placed.
    """
    from torch.distributed.tensor import DTensor

    try:
        prunable = select_prunable(module, settings.parameters, settings.exclude)
        plain = [name for name, param in prunable.items() if not isinstance(param, DTensor)]
        if plain:
            raise ValueError(f"these prunable parameters are not sharded (not DTensors): {plain[:5]}")
        sharded_mesh(prunable)
    except (TypeError, ValueError) as error:
        raise MisconfigurationException(
            f"SynFlowPruning under ModelParallelStrategy cannot prune this module: {error}. Supported: {SUPPORTED}."
        ) from error


@dataclass
class PackedMasks:
    """Full masks as packed bits (1 bit per weight), the same on every rank: what checkpoints hold.

    Attributes:
        bits: packed bits keyed by qualified parameter name.
        shapes: the full shape of each mask.
    """

    bits: dict[str, torch.Tensor]
    shapes: dict[str, list[int]]

    @classmethod
    def of(cls, masks: Mapping[str, torch.Tensor]) -> PackedMasks:
        """Pack ``masks``: DTensor masks are gathered first (a collective: call on every rank), full ones packed."""
        from torch.distributed.tensor import DTensor

        bits, shapes = {}, {}
        for name, mask in masks.items():
            full = mask.full_tensor() if isinstance(mask, DTensor) else mask
            bits[name], shapes[name] = pack_mask(full), list(full.shape)
        return cls(bits, shapes)

    def unpacked(self) -> dict[str, torch.Tensor]:
        """The full boolean CPU masks."""
        return {name: unpack_mask(bits, self.shapes[name]) for name, bits in self.bits.items()}

    def state(self, settings: PruningSettings, schedule: RoundSchedule, done: int) -> dict[str, Any]:
        """The callback's checkpoint state (the layout of :func:`~lightning_synflow.callback.state.pack_state`)."""
        state = pack_state(None, settings, schedule, done)
        state.update(mask_entries(self.bits, self.shapes))
        return state


def _local(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


class ShardedUpkeep:
    """Keeps masks in force on the local shards of a sharded module (the counterpart of ``MaskUpkeep``).

    Gradient shards of pruned entries are zeroed after every backward pass (:meth:`mask_gradients`), weight
    shards after every step of an attached optimizer, and optimizer state shards when attached and after
    ``optimizer.load_state_dict``; with masked gradients from the start, lazily created state stays zero.

    Args:
        module: the sharded module.
        masks: boolean masks keyed by qualified parameter name: DTensor masks, or full masks (each rank takes
            its rows; a collective, so construct on every rank).

    Raises:
        ValueError: a mask does not fit the module (:func:`~lightning_synflow.masks.check_masks`).
    """

    def __init__(self, module: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
        params = masked_parameters(module, masks)
        #: Boolean DTensor masks placed like their parameters, keyed by name.
        self.masks = shard_masks({name: params[name] for name in masks}, masks)
        self._pruned = {params[name]: ~_local(mask) for name, mask in self.masks.items()}
        self._hooks: list[RemovableHandle] = []

    @torch.no_grad()
    def mask_weights(self) -> None:
        """Zero the pruned entries of every masked weight shard (+0.0)."""
        for param, pruned in self._pruned.items():
            _local(param).masked_fill_(pruned, 0)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradient shards of pruned entries (after backward, before clipping and the step)."""
        for param, pruned in self._pruned.items():
            if param.grad is not None:
                _local(param.grad).masked_fill_(pruned, 0)

    def attach(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Mask the weights and the optimizers' state, and keep the weights masked after every step."""
        self.detach()
        self.mask_weights()
        for optimizer in optimizers:
            self._zero_state(optimizer)
            self._hooks.append(optimizer.register_step_post_hook(lambda *_: self.mask_weights()))
            self._hooks.append(optimizer.register_load_state_dict_post_hook(self._zero_state))

    def detach(self) -> None:
        """Remove every hook this object put on optimizers."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    @torch.no_grad()
    def _zero_state(self, optimizer: torch.optim.Optimizer) -> None:
        """A pruned weight behaves as if it never existed: zero its entries of the optimizer state."""
        for param, pruned in self._pruned.items():
            for value in optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    _local(value).masked_fill_(pruned, 0)
