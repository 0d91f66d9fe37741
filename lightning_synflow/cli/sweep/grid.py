"""What a sweep runs and where it writes: the grid of (method, compression, seed) and the output folder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_synflow.pruning.settings import METHODS, resolve_density

#: Trainer arguments of ``--quick``: a few batches per run, one epoch, no checkpoints (the user's overrides win).
QUICK_ARGS = (
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=2",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_checkpointing=false",
)
#: The paper's method order (Fig. 6).
DEFAULT_METHODS = ("synflow", "snip", "grasp", "magnitude", "random")
RESULTS_FILE = "results.csv"
PLOT_FILE = "accuracy.png"
SETTINGS_FILE = "sweep.json"


def format_compression(compression: float) -> str:
    """``100`` for 100.0, the shortest exact form otherwise (written to the CSV and read back as the same float)."""
    return str(int(compression)) if float(compression).is_integer() else repr(float(compression))


@dataclass(frozen=True)
class GridPoint:
    """One run of the grid.

    Attributes:
        method: pruning method.
        compression: compression ratio ``1 / density``.
        seed: the run's seed (``seed_everything`` and the callback's ``seed``).
    """

    method: str
    compression: float
    seed: int

    @property
    def key(self) -> tuple[str, float, int]:
        """What identifies the run in ``results.csv``."""
        return (self.method, self.compression, self.seed)

    @property
    def label(self) -> str:
        """A short name, e.g. ``synflow-c100-s0``: the run's folder and W&B run name."""
        return f"{self.method}-c{format_compression(self.compression)}-s{self.seed}"


@dataclass
class Sweep:
    """What a sweep runs and where it writes.

    Attributes:
        config: the LightningCLI YAML config every run starts from.
        points: the grid.
        output: folder of ``results.csv``, ``accuracy.png``, ``sweep.json`` and ``runs/<label>/``.
        name: the sweep's name (the W&B group).
        metric: the test metric recorded, as the LightningModule logs it (``test/acc`` for ``ImageClassifier``).
        quick: a few batches per run (:data:`QUICK_ARGS`).
        wandb: add a ``WandbLogger`` when the config has none.
        wandb_project: the project of that logger.
        overrides: further LightningCLI arguments given to every run, e.g. ``["--trainer.max_epochs", "30"]``.
    """

    config: Path
    points: list[GridPoint]
    output: Path
    name: str
    metric: str = "test/acc"
    quick: bool = False
    wandb: bool = False
    wandb_project: str = "lightning-synflow"
    overrides: list[str] = field(default_factory=list)

    @property
    def results(self) -> Path:
        """``results.csv`` in the output folder."""
        return self.output / RESULTS_FILE

    def cli_args(self, point: GridPoint) -> list[str]:
        """The LightningCLI arguments of one run (its callback, logger and folder are set in the config itself)."""
        quick = list(QUICK_ARGS) if self.quick else []
        return ["--config", str(self.config), *quick, *self.overrides, f"--seed_everything={point.seed}"]

    def identity(self) -> dict[str, Any]:
        """What makes two sweeps' results comparable (the grid may grow; these may not change)."""
        with open(self.config) as handle:
            config = yaml.safe_load(handle)
        return {"config": config, "quick": self.quick, "overrides": list(self.overrides), "metric": self.metric}


def expand_grid(methods: Sequence[str], compressions: Sequence[float], seeds: Sequence[int]) -> list[GridPoint]:
    """Every (method, compression, seed), seed by seed, so a sweep stopped early has covered each point once.

    Raises:
        ValueError: an unknown method, a compression below 1, a negative seed, an empty axis or a repeated value.
    """
    for axis, values in (("methods", methods), ("compressions", compressions), ("seeds", seeds)):
        if not values:
            raise ValueError(f"`{axis}` must not be empty.")
        if len(set(values)) != len(values):
            raise ValueError(f"`{axis}` must not repeat a value; got {list(values)}.")
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"`methods` must be among {list(METHODS)}; got {method!r}.")
    for compression in compressions:
        resolve_density(None, compression)
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"`seeds` must be integers >= 0; got {seed!r}.")
    return [GridPoint(m, float(c), s) for s in seeds for m in methods for c in compressions]
