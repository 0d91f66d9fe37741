"""Editing one run's parsed config before anything is instantiated: the point's pruning, folder and loggers."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.loggers import WandbLogger

from lightning_synflow.callback.synflow_pruning import SynFlowPruning
from lightning_synflow.cli.sweep.grid import GridPoint, Sweep, format_compression


class SweepConfigError(ValueError):
    """A config a sweep cannot edit into its runs (more than one ``SynFlowPruning`` callback)."""


def _class(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name, None)


def _is(entry: Any, base: type) -> bool:
    """Whether a parsed ``class_path`` entry of the config names ``base`` or a subclass of it."""
    if not isinstance(entry, Namespace) or not isinstance(entry.get("class_path"), str):
        return False
    cls = _class(entry["class_path"])
    return isinstance(cls, type) and issubclass(cls, base)


def _set(init_args: Namespace, values: dict[str, Any]) -> None:
    for key, value in values.items():
        setattr(init_args, key, value)


def edit_run_config(trainer: Namespace, sweep: Sweep, point: GridPoint, run_dir: Path) -> None:
    """Set the point's pruning, the run's folder and loggers in the parsed ``trainer`` config; quiet the output.

    Raises:
        SweepConfigError: the config has more than one ``SynFlowPruning`` callback.
    """
    trainer.default_root_dir = str(run_dir)
    trainer.enable_progress_bar = False
    trainer.enable_model_summary = False
    _set_pruning(trainer, sweep, point)
    _set_loggers(trainer, sweep, point, run_dir)


def _set_pruning(trainer: Namespace, sweep: Sweep, point: GridPoint) -> None:
    """Give the config's ``SynFlowPruning`` (added if there is none) the point's method, compression and seed."""
    callbacks = list(trainer.callbacks or [])
    found = [entry for entry in callbacks if _is(entry, SynFlowPruning)]
    if len(found) > 1:
        raise SweepConfigError(f"{sweep.config} has {len(found)} SynFlowPruning callbacks; a sweep needs at most one.")
    if not found:
        found = [Namespace(class_path="lightning_synflow.SynFlowPruning", init_args=Namespace())]
        callbacks.append(found[0])
    init = found[0].init_args
    if init.get("method", point.method) != point.method:
        init.iterations = None  # the config's iterations belong to its own method; others get their default
    values = {"sparsity": None, "compression": point.compression, "method": point.method, "seed": point.seed}
    _set(init, {**values, "verbose": False, "progress": False})
    trainer.callbacks = callbacks


def _set_loggers(trainer: Namespace, sweep: Sweep, point: GridPoint, run_dir: Path) -> None:
    """Write every logger into the run's folder; add a ``WandbLogger`` for ``--wandb`` and name its run."""
    logger = trainer.logger
    entries = list(logger) if isinstance(logger, list) else [logger] if isinstance(logger, Namespace) else []
    if sweep.wandb and not any(_is(entry, WandbLogger) for entry in entries):
        wandb = Namespace(class_path="lightning.pytorch.loggers.WandbLogger", init_args=Namespace())
        wandb.init_args.project = sweep.wandb_project
        entries.append(wandb)
    for entry in entries:
        init = entry.init_args
        if "save_dir" in init or _is(entry, WandbLogger):
            init.save_dir = str(run_dir)
        if _is(entry, WandbLogger):
            _set(init, _wandb_arguments(init, sweep, point))
    if entries:
        trainer.logger = entries if len(entries) > 1 else entries[0]


def _wandb_arguments(init: Namespace, sweep: Sweep, point: GridPoint) -> dict[str, Any]:
    """The W&B run's name, group, job type, tags and config entries for one grid point."""
    # Under one `sweep` key: a top-level `seed` would be overwritten by hyperparameters such as the
    # DigitsDataModule's split seed, which Lightning logs to the W&B config too.
    values = {"name": sweep.name, "method": point.method, "compression": point.compression, "seed": point.seed}
    return {
        "name": point.label,
        "group": sweep.name,
        "job_type": "sweep",
        "tags": [*(init.get("tags") or []), point.method, f"compression={format_compression(point.compression)}"],
        "config": {**(init.get("config") or {}), "sweep": values},
    }
