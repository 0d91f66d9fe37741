"""Checkpoint state of ``SynFlowPruning``: packed masks and the settings that made them, compared by meaning."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lightning_synflow.pruning.bits import pack_mask, unpack_mask
from lightning_synflow.pruning.settings import PruningSettings

#: Version of the checkpoint layout written by :func:`pack_state`.
STATE_VERSION = 2

#: The settings written by the first release (version 1), spelled as the user gave them.
_LEGACY_KEYS = ("sparsity", "compression", "method", "iterations", "schedule", "scope", "parameters", "exclude")


@dataclass
class SavedMasks:
    """Masks read from a checkpoint.

    Attributes:
        masks: boolean CPU masks (True = kept) keyed by qualified parameter name.
        settings: the settings that made them.
    """

    masks: dict[str, torch.Tensor]
    settings: PruningSettings


def pack_state(masks: dict[str, torch.Tensor], settings: PruningSettings) -> dict[str, Any]:
    """Checkpoint state: 1 bit per weight, and plain values only, so ``torch.load(weights_only=True)`` reads it."""
    return {
        "version": STATE_VERSION,
        "masks": {name: pack_mask(mask) for name, mask in masks.items()},
        "shapes": {name: list(mask.shape) for name, mask in masks.items()},
        "settings": settings.to_dict(),
    }


def unpack_state(state: dict[str, Any]) -> SavedMasks:
    """Read :func:`pack_state`'s output (or the first release's), wherever ``map_location`` put its tensors.

    Raises:
        ValueError: the state is not one this package wrote.
    """
    try:
        masks = {name: unpack_mask(packed, state["shapes"][name]) for name, packed in state["masks"].items()}
        values = state["settings"]
        if state.get("version", 1) == 1:
            settings = PruningSettings.create(**{key: values.get(key) for key in _LEGACY_KEYS if key in values})
        else:
            settings = PruningSettings.from_dict(values)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"the checkpoint's SynFlowPruning state is not readable ({error!r})") from error
    return SavedMasks(masks, settings)


def differences(saved: SavedMasks, settings: PruningSettings, names_now: Sequence[str]) -> dict[str, tuple[str, str]]:
    """What differs in meaning between the checkpoint's settings and today's: name -> (checkpoint, now).

    The parameter selection is compared by the parameters it selects on today's model, not by how its
    patterns are spelled; the seed only matters to the ``random`` method.
    """
    ignore = ["parameters", "exclude"]
    if saved.settings.method != "random" or settings.method != "random":
        ignore.append("seed")
    found = saved.settings.differences(settings, ignore=ignore)
    saved_names, now = list(saved.masks), list(names_now)
    if saved_names != now:
        gone = [n for n in saved_names if n not in now]
        new = [n for n in now if n not in saved_names]
        found["prunable parameters"] = (
            f"{len(saved_names)} tensors" + (f", {len(gone)} not selected now, e.g. {gone[:3]}" if gone else ""),
            f"{len(now)} tensors" + (f", {len(new)} not in the checkpoint, e.g. {new[:3]}" if new else ""),
        )
    return found


def masks_from_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The masks a ``SynFlowPruning`` callback saved in a Lightning checkpoint (loaded with ``weights_only``).

    Useful where the callback object has none: in the launching process of ``strategy="ddp_spawn"``, or
    in a later inference script.

    Args:
        path: a ``.ckpt`` file written by a Trainer that ran ``SynFlowPruning``.

    Returns:
        Boolean CPU masks (True = kept) keyed by qualified parameter name.

    Raises:
        ValueError: the checkpoint holds no SynFlowPruning masks.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    states = [
        state
        for key, state in checkpoint.get("callbacks", {}).items()
        if isinstance(key, str) and key.startswith("SynFlowPruning") and state
    ]
    if not states:
        raise ValueError(f"{os.fspath(path)!r} holds no SynFlowPruning masks (was the callback in the Trainer?)")
    return unpack_state(states[0]).masks
