"""Running a sweep: each grid point is an ordinary ``fit`` then ``test`` of the config, recorded as it ends.

Each point goes through the same LightningCLI machinery as ``lightning-synflow fit``, with the
``SynFlowPruning`` callback's ``method``, ``compression`` and ``seed`` (and ``seed_everything``) set to the
point's. A run that fails is recorded and the sweep goes on; Ctrl+C stops it with every finished run saved.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger

from lightning_synflow.callback.synflow_pruning import SynFlowPruning
from lightning_synflow.cli.errors import SynFlowArgumentParser, condense
from lightning_synflow.cli.fit import ANY_MODEL_AND_DATA, SynFlowCLI
from lightning_synflow.cli.program import silence_noise, subcommand_name
from lightning_synflow.cli.sweep.config import SweepConfigError, edit_run_config
from lightning_synflow.cli.sweep.grid import PLOT_FILE, GridPoint, Sweep, format_compression
from lightning_synflow.cli.sweep.results import append_result, check_identity, latest, read_results
from lightning_synflow.cli.sweep.summary import plot_results, summary_table
from lightning_synflow.report import layer_stats, total_sparsity

#: Exit code of a sweep stopped by Ctrl+C (the shell's convention for SIGINT).
INTERRUPTED = 130


class RunRefused(ValueError):
    """A grid point's arguments or config values refused by LightningCLI: every run of the sweep would be alike.

    The sweep reports it as its own argument error, so the usage shown is the ``sweep`` command's, the one the
    user typed, not that of the LightningCLI parser each run uses inside.
    """


class _RunArgumentParser(SynFlowArgumentParser):
    """The parser of one grid point: a refusal raises :class:`RunRefused` instead of printing this parser's usage."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Raise :class:`RunRefused` with the short message (jsonargparse's inner parsers raise as they do)."""
        if not self.exit_on_error:
            super().error(message, ex)
        raise RunRefused(condense(message)) from ex


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

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.metrics.update({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None


class _RunCLI(SynFlowCLI):
    """The CLI of one grid point: the parsed config is edited before anything is instantiated."""

    def __init__(self, sweep: Sweep, point: GridPoint, run_dir: Path, *args: Any, **kwargs: Any) -> None:
        self.sweep, self.point, self.run_dir = sweep, point, run_dir
        super().__init__(*args, **kwargs)

    def before_instantiate_classes(self) -> None:
        """Set the point's pruning, the run's folder and loggers; quiet the per-run output."""
        try:
            edit_run_config(self.config.trainer, self.sweep, self.point, self.run_dir)
        except SweepConfigError as error:
            self.parser.error(str(error))


def _build(sweep: Sweep, point: GridPoint, run_dir: Path) -> _RunCLI:
    """Parse and instantiate one run.

    Raises:
        RunRefused: the arguments or a value of the config were refused.
    """
    with warnings.catch_warnings():
        # The sweep's own command line is in sys.argv; each run's arguments are `args`, on purpose.
        warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter")
        return _RunCLI(
            sweep,
            point,
            run_dir,
            **ANY_MODEL_AND_DATA,
            args=sweep.cli_args(point),
            run=False,
            save_config_kwargs={"overwrite": True},
            parser_class=_RunArgumentParser,
            parser_kwargs={"prog": subcommand_name("sweep")},
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
        RunRefused: the configuration or arguments were refused: every run would fail alike.
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
    except RunRefused:
        raise
    except Exception as error:
        message = " ".join(f"{type(error).__name__}: {error}".split())
        row.update(status="failed", error=message[:500])
    finally:
        _finish_wandb(failed)
    row["fit_seconds"] = time.perf_counter() - start
    return row


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

    Raises:
        RunRefused: LightningCLI refused a run's arguments or config values (before that run started).
        SweepError: the output folder holds another sweep's results.
    """
    check_identity(sweep)
    done = {key for key, row in latest(read_results(sweep.results)).items() if row["status"] == "ok"}
    todo = [point for point in sweep.points if point.key not in done]
    skipped = len(sweep.points) - len(todo)
    print(
        f"sweep {sweep.name}: {len(sweep.points)} runs, {skipped} already done in {sweep.results}, {len(todo)} to run"
    )
    failures, code = 0, 0
    silence_noise()
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
