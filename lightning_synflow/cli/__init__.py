"""The command line: ``lightning-synflow fit --config configs/digits_synflow.yaml``, ``export`` and ``sweep``.

:func:`main` is the console script's entry point and ``python -m lightning_synflow``'s; :func:`cli_main` runs
LightningCLI's subcommands and returns the :class:`SynFlowCLI`; :func:`build_model` builds a config's model.
"""

from lightning_synflow.cli.dispatch import main
from lightning_synflow.cli.fit import SynFlowCLI, build_model, cli_main

__all__ = ["SynFlowCLI", "build_model", "cli_main", "main"]
