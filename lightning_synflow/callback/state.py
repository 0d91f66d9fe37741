"""Checkpoint state of ``SynFlowPruning``: masks, settings compared by meaning, schedule progress, rewind point.

The layout itself, and reading masks back from a checkpoint file, are :mod:`lightning_synflow.checkpoint_format`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from lightning_synflow.callback.rounds import RewindPoint, RoundSchedule
from lightning_synflow.checkpoint_format import (
    pack_masks,
    read_masks,
    read_settings,
    read_version,
    state_header,
    unreadable,
)
from lightning_synflow.pruning.schedule import prune_count
from lightning_synflow.pruning.settings import PruningSettings


@dataclass
class SavedMasks:
    """Masks and schedule progress, as read from a checkpoint or remembered between fits.

    Attributes:
        masks: boolean CPU masks (True = kept) keyed by qualified parameter name; None before the first round.
        settings: the settings that made them.
        schedule: the ``prune_epoch``/``levels`` schedule they follow (checkpoints before version 3: fit start).
        done: number of rounds already run.
        rewind: the fit-start state lottery rounds rewind to, while rounds remain.
    """

    masks: Optional[dict[str, torch.Tensor]]
    settings: PruningSettings
    schedule: RoundSchedule = field(default_factory=RoundSchedule)
    done: int = 1
    rewind: Optional[RewindPoint] = None


def pack_state(
    masks: Optional[dict[str, torch.Tensor]],
    settings: PruningSettings,
    schedule: Optional[RoundSchedule] = None,
    done: int = 1,
    rewind: Optional[RewindPoint] = None,
) -> dict[str, Any]:
    """Checkpoint state: 1 bit per weight, and plain values only, so ``torch.load(weights_only=True)`` reads it.

    The rewind point (a CPU copy of the module's ``state_dict`` plus the optimizers' and LR schedulers'
    fit-start state dicts) is written only when given, i.e. while lottery rounds remain. ``schedule``
    defaults to pruning once at fit start.
    """
    schedule = schedule if schedule is not None else RoundSchedule()
    state = state_header(settings)
    state["schedule"] = {"prune_epoch": schedule.prune_epoch, "levels": schedule.levels, "done": done}
    if masks is not None:
        state.update(pack_masks(masks))
    if rewind is not None:
        state["rewind"] = {
            "module": rewind.module,
            "optimizers": rewind.optimizers,
            "lr_schedulers": rewind.lr_schedulers,
        }
    return state


def unpack_state(state: dict[str, Any]) -> SavedMasks:
    """Read :func:`pack_state`'s output (or an earlier release's), wherever ``map_location`` put its tensors.

    Raises:
        ValueError: the state is not one this package wrote, or a newer version's.
    """
    version = read_version(state)
    try:
        masks = read_masks(state, version)
        settings = read_settings(state, version)
        if version < 3:
            return SavedMasks(masks, settings)
        progress = state["schedule"]
        schedule = RoundSchedule.create(progress["prune_epoch"], progress["levels"])
        rewind = RewindPoint(**state["rewind"]) if "rewind" in state else None
        return SavedMasks(masks, settings, schedule, int(progress["done"]), rewind)
    except (KeyError, TypeError, ValueError) as error:
        raise unreadable(error) from error


def reprune_start(
    saved: SavedMasks, settings: PruningSettings, shapes: dict[str, torch.Size]
) -> Optional[dict[str, torch.Tensor]]:
    """The checkpoint's masks, where re-pruning its (masked) weights from them gives the same masks as from dense.

    SynFlow and magnitude score a zero weight exactly 0, so the entries the checkpoint pruned go first
    whenever the new settings prune at least as many (in total, or per tensor in local scope): starting from
    its masks then changes nothing, except that those zeros no longer count as alive zero scores (which
    would warn that ties among them are arbitrary). None where that does not hold (other methods, ``invert``,
    ``shuffle``, floors, fewer weights pruned, prunable tensors other than the checkpoint's): re-prune
    from dense. Where the new target prunes fewer than the zero-scored entries, the weights are the same
    either way, only which zeros are marked pruned may differ.

    Args:
        saved: what the checkpoint holds.
        settings: the new settings.
        shapes: the shape of each tensor the new settings select, by name.
    """
    masks = saved.masks
    if masks is None or settings.method not in ("synflow", "magnitude"):
        return None
    if set(masks) != set(shapes) or any(masks[name].shape != shape for name, shape in shapes.items()):
        return None
    if settings.invert or settings.shuffle or settings.min_density is not None:
        return None
    groups = [list(masks.values())] if settings.scope == "global" else [[mask] for mask in masks.values()]
    for group in groups:
        total = sum(mask.numel() for mask in group)
        pruned = total - sum(int(torch.count_nonzero(mask)) for mask in group)
        if pruned > prune_count(settings.density, total):
            return None
    return masks


def differences(
    saved: SavedMasks, settings: PruningSettings, names_now: Sequence[str], schedule: Optional[RoundSchedule] = None
) -> dict[str, tuple[str, str]]:
    """What differs in meaning between the checkpoint's settings and today's: name -> (checkpoint, now).

    The parameter selection is compared by the parameters it selects on today's model, not by how its
    patterns are spelled; the seed only matters when both draw from it (the ``random`` method, ``shuffle``,
    ``reinitialize``); ``prune_epoch`` and ``levels`` are compared with ``schedule`` (default: pruning once at
    fit start).
    """
    ignore = ["parameters", "exclude"]
    if not (saved.settings.uses_seed and settings.uses_seed):
        ignore.append("seed")
    found = saved.settings.differences(settings, ignore=ignore)
    found.update(saved.schedule.differences(schedule if schedule is not None else RoundSchedule()))
    saved_names, now = list(saved.masks or {}), list(names_now)
    if saved.masks is not None and saved_names != now:
        gone = [n for n in saved_names if n not in now]
        new = [n for n in now if n not in saved_names]
        found["prunable parameters"] = (
            f"{len(saved_names)} tensors" + (f", {len(gone)} not selected now, e.g. {gone[:3]}" if gone else ""),
            f"{len(now)} tensors" + (f", {len(new)} not in the checkpoint, e.g. {new[:3]}" if new else ""),
        )
    return found
