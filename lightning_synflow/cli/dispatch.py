"""Which subcommand runs: ``export`` and ``sweep`` are this package's, every other one is LightningCLI's."""

from __future__ import annotations

import sys

from lightning_synflow.cli.export import export_main
from lightning_synflow.cli.fit import cli_main
from lightning_synflow.cli.sweep import sweep_main


def main(args: list[str] | None = None) -> int:
    """Entry point of ``lightning-synflow`` and ``python -m lightning_synflow``.

    Returns 0 after a successful run, so the console script's ``sys.exit(main())`` exits 0; argument errors exit
    with code 2 (``SystemExit``) and other failures raise. Use :func:`~lightning_synflow.cli.fit.cli_main` to get
    the ``SynFlowCLI`` back. ``export`` is handled by :func:`~lightning_synflow.cli.export.export_main` and ``sweep``
    by :func:`~lightning_synflow.cli.sweep.command.sweep_main` (which returns 1 when a run of the grid failed and 130
    when stopped by Ctrl+C); every other subcommand is LightningCLI's.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "export":
        return export_main(argv[1:])
    if argv and argv[0] == "sweep":
        return sweep_main(argv[1:])
    cli_main(args)  # None: LightningCLI reads sys.argv itself (and does not warn about receiving both)
    return 0
