"""What every subcommand shares: the program's name as the user typed it, and the warnings it hides."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path


def program_name() -> str | None:
    """``python -m lightning_synflow`` when run that way (argparse would say ``__main__.py``), else ``None``.

    ``None`` lets argparse use its default, the name of the console script.
    """
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "__main__.py" and script.parent.name == "lightning_synflow":
        return "python -m lightning_synflow"
    return None


def subcommand_name(subcommand: str) -> str:
    """The ``prog`` of a subcommand this package parses itself, e.g. ``lightning-synflow sweep``."""
    return f"{program_name() or 'lightning-synflow'} {subcommand}"


def silence_noise() -> None:
    """Hide the deprecation chatter that jsonargparse and LightningCLI print on every run."""
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"jsonargparse.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"lightning.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"jsonargparse.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
