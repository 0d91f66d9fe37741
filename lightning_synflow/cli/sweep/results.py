"""The sweep's record on disk: ``results.csv``, one row per finished run, and ``sweep.json``, its settings.

Rows are appended after every run, so an interrupted sweep resumes where it stopped; ``sweep.json`` keeps a
resumed sweep from mixing its results with those of other settings.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_synflow.cli.sweep.grid import SETTINGS_FILE, Sweep

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


class SweepError(ValueError):
    """An output folder that cannot take this sweep's results (another sweep's, or not a sweep's CSV)."""


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
