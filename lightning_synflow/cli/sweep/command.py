"""The command line of ``lightning-synflow sweep``: the grid's axes, the output folder, LightningCLI overrides.

Example::

    lightning-synflow sweep --config configs/digits_synflow.yaml --methods synflow,snip --compressions 10,100 --seeds 3
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from lightning_synflow.cli.program import subcommand_name
from lightning_synflow.cli.sweep.grid import DEFAULT_METHODS, Sweep, expand_grid
from lightning_synflow.cli.sweep.results import SweepError
from lightning_synflow.cli.sweep.run import RunRefused, run_sweep
from lightning_synflow.cli.sweep.wandb_sweep import wandb_sweep_config, write_wandb_sweep


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


def sweep_parser() -> argparse.ArgumentParser:
    """The arguments of ``lightning-synflow sweep`` (those it does not know go to every run as overrides)."""
    parser = argparse.ArgumentParser(
        prog=subcommand_name("sweep"),
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


def parse_sweep(args: Sequence[str]) -> tuple[Sweep, Path | None, tuple[list[str], list[float], list[int]]]:
    """The sweep an argument list describes, the ``--wandb-sweep`` file if any, and the grid's axes.

    Exits with code 2 and a one-line message on a bad argument.
    """
    parser = sweep_parser()
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
    """``lightning-synflow sweep``: run the grid (or write the W&B sweep file).

    Returns:
        The exit code of :func:`~lightning_synflow.cli.sweep.run.run_sweep`, or 0 after writing the W&B file.
        A refused argument or config value exits with code 2 and this command's usage.
    """
    sweep, wandb_file, axes = parse_sweep(args)
    if wandb_file is not None:
        write_wandb_sweep(wandb_file, wandb_sweep_config(sweep, *axes))
        print(f"wrote {wandb_file}: run `wandb sweep {wandb_file}`, then `wandb agent ENTITY/PROJECT/SWEEP_ID`")
        return 0
    try:
        return run_sweep(sweep)
    except (SweepError, RunRefused) as error:
        sweep_parser().error(str(error))
