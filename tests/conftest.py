"""Settings every test runs under, and the fixtures tests share."""

import logging
import os
import warnings
from collections.abc import Callable

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
torch.set_num_threads(min(2, torch.get_num_threads()))


def _logger_levels() -> dict[str, int]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return {logger.name: logger.level for logger in loggers if isinstance(logger, logging.Logger)}


@pytest.fixture(autouse=True)
def _seed():
    """Seed 0, and give back the warning filters and logger levels a test (or a script it runs) changed."""
    torch.manual_seed(0)
    levels = _logger_levels()
    with warnings.catch_warnings():
        yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def fit_config(tmp_path, monkeypatch) -> Callable[[str], object]:
    """Run ``lightning-synflow fit`` in-process on a YAML config text, in ``tmp_path``; returns its SynFlowPruning."""
    from lightning_synflow import SynFlowPruning
    from lightning_synflow.cli import cli_main

    def fit(text: str) -> SynFlowPruning:
        monkeypatch.chdir(tmp_path)
        (tmp_path / "config.yaml").write_text(text)
        arguments = ["fit", "--config", str(tmp_path / "config.yaml"), "--trainer.callbacks.init_args.verbose", "false"]
        cli = cli_main(arguments)
        (pruning,) = [c for c in cli.trainer.callbacks if isinstance(c, SynFlowPruning)]
        return pruning

    return fit
