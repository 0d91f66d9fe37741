"""``lightning-synflow sweep``: test accuracy against compression over methods, compressions and seeds.

Each grid point is an ordinary ``fit`` of one YAML config through the same LightningCLI machinery as
``lightning-synflow fit``, with the ``SynFlowPruning`` callback's ``method``, ``compression`` and ``seed`` (and
``seed_everything``) set to the point's, followed by ``test``. Results are appended to ``results.csv`` after every
run, so an interrupted sweep resumes where it stopped; ``accuracy.png`` and a summary table come at the end.

Example::

    lightning-synflow sweep --config configs/digits_synflow.yaml --methods synflow,snip --compressions 10,100 --seeds 3
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import logging
import math
import signal
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from jsonargparse import Namespace
from lightning.pytorch import Callback, LightningDataModule, LightningModule
from lightning.pytorch.loggers import Logger, WandbLogger

from lightning_synflow.callback.synflow_pruning import SynFlowPruning
from lightning_synflow.cli import SynFlowCLI, _prog, _silence_noise
from lightning_synflow.pruning.settings import METHODS, resolve_density
from lightning_synflow.report import layer_stats, total_sparsity

#: Columns of ``results.csv``, one row per finished run (a retried run appends a new row; the last one counts).
#: ``fit_seconds`` is the whole run: building the config's objects, pruning, fitting and testing.
COLUMNS = (
    "method",
    "compression",
    "seed",
    "status",
    "metric",
    "value",
    "sparsity",
    "layers_emptied",
    "flops_kept",
    "pruning_seconds",
    "fit_seconds",
    "run_dir",
    "error",
)
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
#: Exit code of a sweep stopped by Ctrl+C (the shell's convention for SIGINT).
INTERRUPTED = 130


class SweepError(ValueError):
    """An output folder that cannot take this sweep's results (another sweep's, or not a sweep's CSV)."""


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


def format_compression(compression: float) -> str:
    """``100`` for 100.0, the shortest exact form otherwise (written to the CSV and read back as the same float)."""
    return str(int(compression)) if float(compression).is_integer() else repr(float(compression))


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


# -- results.csv -------------------------------------------------------------------------------


def read_results(path: Path) -> list[dict[str, Any]]:
    """The rows of ``results.csv`` (none if it does not exist), typed: compression float, seed int, value float.

    Raises:
        SweepError: the file's columns are not :data:`COLUMNS`.
    """
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is not None and tuple(reader.fieldnames) != COLUMNS:
            raise SweepError(f"{path} has the columns {reader.fieldnames}, not those of a sweep: {list(COLUMNS)}.")
        rows = list(reader)
    for row in rows:
        row["compression"] = float(row["compression"])
        row["seed"] = int(row["seed"])
        row["value"] = float(row["value"]) if row["value"] else math.nan
    return rows


def latest(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, float, int], dict[str, Any]]:
    """The last row of each (method, compression, seed): a retried run replaces its failure."""
    return {(row["method"], row["compression"], row["seed"]): row for row in rows}


def append_result(path: Path, row: dict[str, Any]) -> None:
    """Append one row (the header first if the file is new), flushed to disk before returning."""
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({name: _csv_value(row.get(name)) for name in COLUMNS})
        handle.flush()


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return format(value, ".6g")
    return value


# -- one run -----------------------------------------------------------------------------------


class _Recorder(Logger):
    """An in-memory logger: catches the ``pruning/*`` metrics the callback logs (sparsity, FLOPs kept, seconds).

    Args:
        save_dir: the run's folder, which ``trainer.log_dir`` reports when this is the only logger.
    """

    def __init__(self, save_dir: str) -> None:
        super().__init__()
        self.metrics: dict[str, float] = {}
        self._save_dir = save_dir

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def name(self) -> str:
        return "sweep-recorder"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        self.metrics.update({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None


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


class _RunCLI(SynFlowCLI):
    """The CLI of one grid point: the parsed config is edited before anything is instantiated."""

    def __init__(self, sweep: Sweep, point: GridPoint, run_dir: Path, *args: Any, **kwargs: Any) -> None:
        self.sweep, self.point, self.run_dir = sweep, point, run_dir
        super().__init__(*args, **kwargs)

    def before_instantiate_classes(self) -> None:
        """Set the point's pruning, the run's folder and loggers; quiet the per-run output."""
        trainer = self.config.trainer
        trainer.default_root_dir = str(self.run_dir)
        trainer.enable_progress_bar = False
        trainer.enable_model_summary = False
        self._set_pruning(trainer)
        self._set_loggers(trainer)

    def _set_pruning(self, trainer: Namespace) -> None:
        callbacks = list(trainer.callbacks or [])
        found = [entry for entry in callbacks if _is(entry, SynFlowPruning)]
        if len(found) > 1:
            self.parser.error(
                f"{self.sweep.config} has {len(found)} SynFlowPruning callbacks; a sweep needs at most one."
            )
        point = self.point
        if not found:
            found = [Namespace(class_path="lightning_synflow.SynFlowPruning", init_args=Namespace())]
            callbacks.append(found[0])
        init = found[0].init_args
        if init.get("method", point.method) != point.method:
            init.iterations = None  # the config's iterations belong to its own method; others get their default
        values = {"sparsity": None, "compression": point.compression, "method": point.method, "seed": point.seed}
        _set(init, {**values, "verbose": False, "progress": False})
        trainer.callbacks = callbacks

    def _set_loggers(self, trainer: Namespace) -> None:
        logger = trainer.logger
        entries = list(logger) if isinstance(logger, list) else [logger] if isinstance(logger, Namespace) else []
        if self.sweep.wandb and not any(_is(entry, WandbLogger) for entry in entries):
            wandb = Namespace(class_path="lightning.pytorch.loggers.WandbLogger", init_args=Namespace())
            wandb.init_args.project = self.sweep.wandb_project
            entries.append(wandb)
        for entry in entries:
            init = entry.init_args
            if "save_dir" in init or _is(entry, WandbLogger):
                init.save_dir = str(self.run_dir)
            if _is(entry, WandbLogger):
                _set(init, self._wandb_arguments(init))
        if entries:
            trainer.logger = entries if len(entries) > 1 else entries[0]

    def _wandb_arguments(self, init: Namespace) -> dict[str, Any]:
        point = self.point
        # Under one `sweep` key: a top-level `seed` would be overwritten by hyperparameters such as the
        # DigitsDataModule's split seed, which Lightning logs to the W&B config too.
        values = {"name": self.sweep.name, "method": point.method, "compression": point.compression, "seed": point.seed}
        return {
            "name": point.label,
            "group": self.sweep.name,
            "job_type": "sweep",
            "tags": [*(init.get("tags") or []), point.method, f"compression={format_compression(point.compression)}"],
            "config": {**(init.get("config") or {}), "sweep": values},
        }


def _build(sweep: Sweep, point: GridPoint, run_dir: Path) -> _RunCLI:
    """Parse and instantiate one run (argument errors exit with code 2, as ``fit`` does)."""
    with warnings.catch_warnings():
        # The sweep's own command line is in sys.argv; each run's arguments are `args`, on purpose.
        warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter")
        return _RunCLI(
            sweep,
            point,
            run_dir,
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=sweep.cli_args(point),
            run=False,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": f"{_prog() or 'lightning-synflow'} sweep"},
            auto_configure_optimizers=False,
        )


def _fit_and_test(cli: _RunCLI, metric: str) -> dict[str, Any]:
    """Fit and test one instantiated run; the columns it fills.

    Raises:
        KeyboardInterrupt: the Trainer stopped on Ctrl+C (Lightning turns it into ``SystemExit``).
        RuntimeError: the test loop did not log ``metric``.
    """
    recorder = _Recorder(cli.trainer.default_root_dir)
    cli.trainer.loggers = [*cli.trainer.loggers, recorder]
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        results = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    except SystemExit as stop:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores Ctrl+C once it has seen one
        raise KeyboardInterrupt from stop
    logged = results[0] if results else {}
    if metric not in logged:
        raise RuntimeError(f"the test loop did not log {metric!r} (it logged {sorted(logged)}); pass --metric NAME")
    # Trainer.callbacks is set by Lightning's callback connector and not declared on Trainer (a typing gap).
    callbacks: list[Callback] = cli.trainer.callbacks  # type: ignore[attr-defined]
    pruning = next(c for c in callbacks if isinstance(c, SynFlowPruning))
    stats = layer_stats(pruning.masks or {})
    return {
        "value": float(logged[metric]),
        "sparsity": total_sparsity(stats),
        "layers_emptied": sum(int(s.kept == 0) for s in stats),
        "flops_kept": recorder.metrics.get("pruning/flops_kept"),
        "pruning_seconds": recorder.metrics.get("pruning/seconds"),
    }


def _finish_wandb(failed: bool) -> None:
    """End the run's W&B run, if any, so the next run starts its own (wandb imported only if already in use)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def run_point(sweep: Sweep, point: GridPoint) -> dict[str, Any]:
    """Run one grid point; its ``results.csv`` row. An exception in the run is recorded, never raised.

    Raises:
        SystemExit: the configuration or arguments were refused (exit code 2): every run would fail alike.
        KeyboardInterrupt: Ctrl+C.
    """
    run_dir = sweep.output / "runs" / point.label
    row: dict[str, Any] = {
        "method": point.method,
        "compression": format_compression(point.compression),
        "seed": point.seed,
        "metric": sweep.metric,
        "run_dir": str(run_dir),
    }
    start = time.perf_counter()
    failed = True
    try:
        cli = _build(sweep, point, run_dir)
        row.update(_fit_and_test(cli, sweep.metric))
        row["status"], failed = "ok", False
    except Exception as error:
        message = " ".join(f"{type(error).__name__}: {error}".split())
        row.update(status="failed", error=message[:500])
    finally:
        _finish_wandb(failed)
    row["fit_seconds"] = time.perf_counter() - start
    return row


# -- the sweep ---------------------------------------------------------------------------------


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's per-run banners (devices, seed, tips) while the sweep prints its own lines."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def check_identity(sweep: Sweep) -> None:
    """Record the sweep's settings in ``sweep.json``, or check that a resumed sweep's are the same.

    The check applies once ``results.csv`` holds a run: a sweep refused before its first run (a mistyped
    override, say) can be corrected and started again in the same folder.

    Raises:
        SweepError: ``--output`` holds results of another config, ``--quick`` setting, overrides or metric.
    """
    path = sweep.output / SETTINGS_FILE
    identity = json.loads(json.dumps(sweep.identity(), default=str))  # compared as sweep.json will hold it
    if path.exists() and sweep.results.exists():
        with open(path) as handle:
            before = json.load(handle)
        changed = [key for key in identity if before.get(key) != identity[key]]
        if changed:
            listed = "; ".join(
                "the config's contents differ"
                if key == "config"
                else f"{key}: {before.get(key)!r} then, {identity[key]!r} now"
                for key in changed
            )
            raise SweepError(
                f"{sweep.output} holds the results of a sweep with other settings ({listed}; see {path}); resuming "
                "would mix them. Pass another --output, or remove that folder."
            )
        return
    sweep.output.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        json.dump({**identity, "config_path": str(sweep.config)}, handle, indent=2)


def _progress(index: int, total: int, point: GridPoint, row: dict[str, Any]) -> str:
    counter = f"[{index:>{len(str(total))}}/{total}]"
    head = f"{counter} {point.method:<9} compression {format_compression(point.compression):<6} seed {point.seed}"
    if row["status"] != "ok":
        return f"{head}  FAILED after {row['fit_seconds']:.1f} s: {row['error']}"
    return (
        f"{head}  {row['metric']} {row['value']:.4f}  sparsity {row['sparsity']:.4f}  "
        f"layers emptied {row['layers_emptied']}  {row['fit_seconds']:.1f} s"
    )


def run_sweep(sweep: Sweep) -> int:
    """Run every grid point not already done in ``results.csv``; write the plot and print the summary.

    Returns:
        0 when every run of this call succeeded, 1 when one failed (recorded, the others still ran), 130 when
        stopped by Ctrl+C (``results.csv`` holds every finished run; rerunning the same command resumes).
    """
    check_identity(sweep)
    done = {key for key, row in latest(read_results(sweep.results)).items() if row["status"] == "ok"}
    todo = [point for point in sweep.points if point.key not in done]
    skipped = len(sweep.points) - len(todo)
    print(
        f"sweep {sweep.name}: {len(sweep.points)} runs, {skipped} already done in {sweep.results}, {len(todo)} to run"
    )
    failures, code = 0, 0
    _silence_noise()
    with _quiet_lightning():
        for index, point in enumerate(todo, 1):
            try:
                row = run_point(sweep, point)
            except KeyboardInterrupt:
                print(f"interrupted: {index - 1} of {len(todo)} runs finished; rerun the same command to resume")
                code = INTERRUPTED
                break
            append_result(sweep.results, row)
            failures += row["status"] != "ok"
            print(_progress(index, len(todo), point, row), flush=True)
    rows = [row for row in latest(read_results(sweep.results)).values() if row["status"] == "ok"]
    if rows:
        print(summary_table(rows, sweep.metric))
        if plot_results(rows, sweep.output / PLOT_FILE, f"{sweep.name}: {sweep.metric} after training"):
            print(f"plot: {sweep.output / PLOT_FILE}")
    print(f"results: {sweep.results}")
    if failures:
        print(f"{failures} run(s) failed (see the error column); rerunning the same command retries them")
        code = code or 1
    return code


# -- summary and plot --------------------------------------------------------------------------


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, float], list[float]]:
    """The values of each (method, compression) over seeds, methods in the paper's order, compressions ascending."""
    order = {method: index for index, method in enumerate(DEFAULT_METHODS)}
    keys = sorted({(row["method"], row["compression"]) for row in rows}, key=lambda k: (order.get(k[0], 99), k[1]))
    return {key: [row["value"] for row in rows if (row["method"], row["compression"]) == key] for key in keys}


def summary_table(rows: Sequence[dict[str, Any]], metric: str) -> str:
    """A text table: one line per method, one column per compression, ``mean ± std (runs)`` over seeds."""
    groups = aggregate(rows)
    methods = list(dict.fromkeys(method for method, _ in groups))
    compressions = sorted({compression for _, compression in groups})

    def cell(values: Optional[list[float]]) -> str:
        if not values:
            return "-"
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} ± {spread:.4f} ({len(values)})"

    header = ["method", *(f"c={format_compression(c)}" for c in compressions)]
    body = [[method, *(cell(groups.get((method, c))) for c in compressions)] for method in methods]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in [header, *body]]
    title = f"{metric}: mean ± std over seeds (runs)"
    return "\n".join([title, lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def plot_results(rows: Sequence[dict[str, Any]], path: Path, title: str) -> bool:
    """Plot the metric against log10 compression per method (mean, band from min to max over seeds).

    Returns:
        False, with a message, when matplotlib (the ``plots`` extra) is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install 'lightning-synflow[plots]'): no plot, results.csv only")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = aggregate(rows)
    figure, axes = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(method for method, _ in groups):
        keys = [key for key in groups if key[0] == method]
        xs = [math.log10(compression) for _, compression in keys]
        values = [groups[key] for key in keys]
        (line,) = axes.plot(xs, [statistics.mean(v) for v in values], "o-", label=method)
        axes.fill_between(xs, [min(v) for v in values], [max(v) for v in values], alpha=0.2, color=line.get_color())
    axes.set_xticks(sorted({math.log10(compression) for _, compression in groups}))
    metric = rows[0]["metric"]
    axes.set(xlabel="compression (log10)", ylabel=f"{metric} (band: min-max over seeds)", title=title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


# -- W&B sweep configuration -------------------------------------------------------------------


def wandb_sweep_config(
    sweep: Sweep, methods: Sequence[str], compressions: Sequence[float], seeds: Sequence[int]
) -> dict[str, Any]:
    """A W&B grid sweep whose every run is ``lightning-synflow sweep ... --method=M --compression=C --seed=S``."""
    command: list[str] = ["${env}", "lightning-synflow", "sweep", "--config", str(sweep.config)]
    command += ["--output", str(sweep.output), "--name", sweep.name, "--metric", sweep.metric, "--wandb"]
    command += ["--wandb-project", sweep.wandb_project, *(["--quick"] if sweep.quick else []), *sweep.overrides]
    integral = [int(c) if float(c).is_integer() else float(c) for c in compressions]
    return {
        "name": sweep.name,
        "project": sweep.wandb_project,
        "method": "grid",
        "metric": {"name": sweep.metric, "goal": "maximize"},
        "parameters": {
            "method": {"values": list(methods)},
            "compression": {"values": integral},
            "seed": {"values": list(seeds)},
        },
        "command": [*command, "${args}"],
    }


def write_wandb_sweep(path: Path, config: dict[str, Any]) -> None:
    """Write a W&B sweep configuration (YAML), with the two commands that use it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        handle.write(
            f"# W&B grid sweep written by `lightning-synflow sweep --wandb-sweep`. Create it, then start agents:\n"
            f"#   wandb sweep {path}\n#   wandb agent ENTITY/PROJECT/SWEEP_ID   (on each machine)\n"
        )
        yaml.safe_dump(config, handle, sort_keys=False, default_flow_style=None)


# -- command line ------------------------------------------------------------------------------


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _axes(options: argparse.Namespace) -> tuple[list[str], list[float], list[int]]:
    """Methods, compressions and seeds from ``--methods`` or ``--method`` and so on; ``--seeds 3`` is 0, 1, 2.

    Raises:
        ValueError: a value that is not a number, or a list given to a one-value argument, naming the argument.
    """
    for name in ("method", "compression", "seed"):
        if getattr(options, name) is not None and "," in getattr(options, name):
            raise ValueError(f"`--{name}` takes one value (`--{name}s` takes a list); got {getattr(options, name)!r}.")
    methods = _split(options.methods) if options.method is None else [options.method]
    given = options.compressions if options.compression is None else options.compression
    try:
        compressions = [float(part) for part in _split(given)]
    except ValueError:
        raise ValueError(f"`--compressions` must be numbers >= 1, e.g. 10,100; got {given!r}.") from None
    given = options.seeds if options.seed is None else options.seed
    try:
        seeds = [int(part) for part in _split(given)]
    except ValueError:
        raise ValueError(f"`--seeds` must be a count or a list of integers, e.g. 3 or 0,5; got {given!r}.") from None
    if options.seed is None and "," not in given:
        seeds = list(range(seeds[0])) if seeds else []
    return methods, compressions, seeds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{_prog() or 'lightning-synflow'} sweep",
        usage="%(prog)s --config CONFIG [--methods ...] [--compressions ...] [--seeds N] [options] [overrides]",
        allow_abbrev=False,  # an argument it does not know exactly is a LightningCLI override
        description="Fit and test one config over methods x compressions x seeds. Writes results.csv (after every "
        "run; rerunning resumes, retrying failed runs), accuracy.png and a summary table. Other arguments "
        "(e.g. --trainer.max_epochs 30) go to every run as LightningCLI overrides.",
    )
    parser.add_argument("--config", required=True, help="the LightningCLI YAML config of every run")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated (default: all five)")
    parser.add_argument(
        "--compressions", default="10,100,1000", help="comma-separated ratios >= 1 (default: 10,100,1000)"
    )
    parser.add_argument("--seeds", default="3", help="a count N (seeds 0..N-1) or a comma-separated list (default: 3)")
    parser.add_argument("--method", help="run this method only (as `wandb agent` passes it)")
    parser.add_argument("--compression", help="run this compression only")
    parser.add_argument("--seed", help="run this seed only")
    parser.add_argument(
        "--output", help="output folder (default: sweeps/<config name>, sweeps/<name>-quick with --quick)"
    )
    parser.add_argument("--name", help="the sweep's name and W&B group (default: the output folder's name)")
    parser.add_argument("--metric", default="test/acc", help="the test metric to record (default: test/acc)")
    parser.add_argument("--quick", action="store_true", help="a few batches per run, one epoch (for tests and trials)")
    parser.add_argument("--wandb", action="store_true", help="log every run to W&B (adds a WandbLogger if none)")
    parser.add_argument("--wandb-project", default="lightning-synflow", help="project of the added WandbLogger")
    parser.add_argument("--wandb-sweep", metavar="FILE", help="write a W&B sweep configuration and exit")
    return parser


def parse_sweep(args: Sequence[str]) -> tuple[Sweep, Optional[Path], tuple[list[str], list[float], list[int]]]:
    """The sweep an argument list describes, the ``--wandb-sweep`` file if any, and the grid's axes.

    Exits with code 2 and a one-line message on a bad argument.
    """
    parser = _parser()
    options, overrides = parser.parse_known_args(list(args))
    try:
        axes = _axes(options)
        points = expand_grid(*axes)
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    config = Path(options.config)
    if not config.is_file():
        parser.error(f"`--config` must be a YAML file; {config} does not exist.")
    default = f"sweeps/{config.stem}{'-quick' if options.quick else ''}"
    output = Path(options.output or default)
    sweep = Sweep(
        config=config,
        points=points,
        output=output,
        name=options.name or output.resolve().name,
        metric=options.metric,
        quick=options.quick,
        wandb=options.wandb,
        wandb_project=options.wandb_project,
        overrides=overrides,
    )
    return sweep, Path(options.wandb_sweep) if options.wandb_sweep else None, axes


def sweep_main(args: Sequence[str]) -> int:
    """``lightning-synflow sweep``: run the grid (or write the W&B sweep file); the exit code of :func:`run_sweep`."""
    sweep, wandb_file, axes = parse_sweep(args)
    if wandb_file is not None:
        write_wandb_sweep(wandb_file, wandb_sweep_config(sweep, *axes))
        print(f"wrote {wandb_file}: run `wandb sweep {wandb_file}`, then `wandb agent ENTITY/PROJECT/SWEEP_ID`")
        return 0
    try:
        return run_sweep(sweep)
    except SweepError as error:
        _parser().error(str(error))
