"""``lightning-synflow sweep --wandb-sweep FILE``: the grid as a W&B sweep, each run one grid point."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lightning_synflow.cli.sweep.grid import Sweep


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
