"""The layout of ``SynFlowPruning``'s checkpoint state, and reading its masks back from a checkpoint.

The callback's state (``checkpoint["callbacks"]["SynFlowPruning..."]``) holds plain values only, so that
``torch.load(weights_only=True)`` reads it:

- ``version``: :data:`STATE_VERSION` (absent: 1);
- ``settings``: :meth:`~lightning_synflow.pruning.settings.PruningSettings.to_dict` (version 1: the first
  release's options as the user spelled them);
- ``masks``: per qualified parameter name, its mask packed 8 entries to a byte
  (:func:`~lightning_synflow.masks.pack_mask`), and ``shapes``: each mask's shape (a list of ints).
  Absent while no round has run (version 3; earlier versions always hold masks);
- ``schedule`` (version 3): ``prune_epoch``, ``levels`` and the number of rounds ``done``;
- ``rewind`` (version 3, while lottery rounds remain): the fit-start ``module``, ``optimizers`` and
  ``lr_schedulers`` state dicts.

This module writes and reads the version, the settings and the masks, and finds the state in a checkpoint
file; :mod:`lightning_synflow.callback.state` adds the schedule and the rewind point, which the callback's
own types describe. It imports neither Lightning nor the callback, so :mod:`lightning_synflow.export` reads
checkpoints through it too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lightning_synflow.masks import pack_mask, unpack_mask
from lightning_synflow.pruning.settings import PruningSettings

#: Version of the checkpoint layout; version 3 added the schedule progress and the rewind point.
STATE_VERSION = 3

#: The file of a sharded checkpoint directory that holds everything but the sharded tensors (Lightning's name).
SHARDED_METADATA = "meta.pt"

#: The settings written by the first release (version 1), spelled as the user gave them.
_LEGACY_KEYS = ("sparsity", "compression", "method", "iterations", "schedule", "scope", "parameters", "exclude")


def state_header(settings: PruningSettings) -> dict[str, Any]:
    """The entries every state starts with: the layout's version and the settings."""
    return {"version": STATE_VERSION, "settings": settings.to_dict()}


def mask_entries(bits: Mapping[str, torch.Tensor], shapes: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """The ``masks`` and ``shapes`` entries of masks already packed (:func:`~lightning_synflow.masks.pack_mask`)."""
    return {"masks": dict(bits), "shapes": {name: [int(size) for size in shape] for name, shape in shapes.items()}}


def pack_masks(masks: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``masks`` and ``shapes`` entries of boolean masks: 1 bit per weight."""
    return mask_entries({name: pack_mask(mask) for name, mask in masks.items()}, {n: m.shape for n, m in masks.items()})


def read_version(state: Mapping[str, Any]) -> int:
    """The layout version of ``state``.

    Raises:
        ValueError: a version this release cannot read (a newer release's, or not an integer).
    """
    version = state.get("version", 1)
    if not isinstance(version, int) or version > STATE_VERSION:
        raise ValueError(
            f"the checkpoint's SynFlowPruning state has version {version!r}; this release reads versions 1 to "
            f"{STATE_VERSION}: upgrade lightning-synflow"
        )
    return version


def read_masks(state: Mapping[str, Any], version: int) -> dict[str, torch.Tensor] | None:
    """The boolean CPU masks of ``state``, wherever ``map_location`` put them; None before the first round.

    Raises:
        KeyError, TypeError, ValueError: the entries are not readable (:func:`unreadable` words the error).
    """
    if "masks" not in state and version >= 3:
        return None
    return {name: unpack_mask(packed, state["shapes"][name]) for name, packed in state["masks"].items()}


def read_settings(state: Mapping[str, Any], version: int) -> PruningSettings:
    """The settings of ``state`` (version 1: the first release's options, validated again).

    Raises:
        KeyError, TypeError, ValueError: the entry is not readable (:func:`unreadable` words the error).
    """
    values = state["settings"]
    if version == 1:
        return PruningSettings.create(**{key: values.get(key) for key in _LEGACY_KEYS if key in values})
    return PruningSettings.from_dict(values)


def unreadable(error: Exception) -> ValueError:
    """The error to raise when reading a state failed with ``error``."""
    return ValueError(f"the checkpoint's SynFlowPruning state is not readable ({error!r})")


def masks_from_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The masks a ``SynFlowPruning`` callback saved in a Lightning checkpoint (loaded with ``weights_only``).

    Useful where the callback object has none: in the launching process of ``strategy="ddp_spawn"``, or
    in a later inference script.

    Args:
        path: a ``.ckpt`` file written by a Trainer that ran ``SynFlowPruning``, or the directory of a
            sharded checkpoint (``ModelParallelStrategy``), whose ``meta.pt`` holds the callback's state.

    Returns:
        Boolean CPU masks (True = kept) keyed by qualified parameter name.

    Raises:
        ValueError: the checkpoint holds no SynFlowPruning masks (none, or saved before the first round of
            ``prune_epoch``), or its state is a newer release's or not readable.
    """
    if os.path.isdir(path):
        metadata = os.path.join(path, SHARDED_METADATA)
        if not os.path.isfile(metadata):
            raise ValueError(
                f"{os.fspath(path)!r} is a directory without {SHARDED_METADATA!r}: give a checkpoint file or the "
                "directory of a sharded checkpoint"
            )
        path = metadata
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    states = [
        state
        for key, state in checkpoint.get("callbacks", {}).items()
        if isinstance(key, str) and key.startswith("SynFlowPruning") and state
    ]
    if not states:
        raise ValueError(f"{os.fspath(path)!r} holds no SynFlowPruning masks (was the callback in the Trainer?)")
    version = read_version(states[0])
    try:
        masks = read_masks(states[0], version)
    except (KeyError, TypeError, ValueError) as error:
        raise unreadable(error) from error
    if masks is None:
        raise ValueError(
            f"{os.fspath(path)!r} was saved before SynFlowPruning's first round (`prune_epoch`): no masks yet"
        )
    return masks
