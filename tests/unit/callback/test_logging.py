"""Sparsity reaches every logger (CSV, TensorBoard, W&B), the terminal table, and nothing fails without one."""

import csv
import logging

import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lightning_synflow import SynFlowPruning
from tests.helpers import SmallNet, quiet_trainer

LAYERS = ["net.0.weight", "net.2.weight", "net.4.weight", "head2.weight"]


def _prune_with(loggers):
    pruning = SynFlowPruning(sparsity=0.75, progress=False)
    quiet_trainer(callbacks=[pruning], logger=loggers, max_steps=2).fit(SmallNet())
    return pruning


def test_csv_logger_columns(tmp_path):
    logger = CSVLogger(tmp_path, name="run")
    pruning = _prune_with([logger])
    with open(f"{logger.log_dir}/metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0])
    assert {"pruning/sparsity", "pruning/seconds", *(f"pruning/sparsity/{n}" for n in LAYERS)} <= columns
    row = next(r for r in rows if r["pruning/sparsity"])
    assert float(row["pruning/sparsity"]) == pytest.approx(0.75, abs=1e-3)
    for name in LAYERS:
        expected = 1 - float(pruning.masks[name].float().mean())
        assert float(row[f"pruning/sparsity/{name}"]) == pytest.approx(expected)


def test_tensorboard_logger(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb")
    _prune_with([logger])
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert {"pruning/sparsity", *(f"pruning/sparsity/{n}" for n in LAYERS)} <= set(events.Tags()["scalars"])


@pytest.mark.slow  # starts a W&B offline run
def test_wandb_offline_receives_metrics_table_and_chart(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="test")
    run = logger.experiment
    logged = []
    original = run.log
    monkeypatch.setattr(run, "log", lambda data, *a, **k: (logged.append(data), original(data, *a, **k))[1])
    try:
        _prune_with([logger])
    finally:
        wandb.finish()
    keys = set().union(*logged)
    assert {"pruning/sparsity", "pruning/layers", "pruning/sparsity_per_layer"} <= keys
    assert {f"pruning/sparsity/{n}" for n in LAYERS} <= keys
    table = next(d["pruning/layers"] for d in logged if "pruning/layers" in d)
    assert table.columns == ["layer", "shape", "numel", "kept", "sparsity", "macs", "macs_kept"]
    assert [row[0] for row in table.data] == LAYERS
    assert all(row[5] == row[2] and row[6] == row[3] for row in table.data)  # vectors: one MAC per weight
    assert (tmp_path / "wandb").is_dir()


@pytest.fixture
def lightning_log(caplog, monkeypatch):
    """caplog that sees Lightning's INFO messages whatever other tests left behind: Lightning stops propagating
    them when first imported while the root logger has no handler, and a logger level can stay raised."""
    logger = logging.getLogger("lightning.pytorch")
    monkeypatch.setattr(logger, "propagate", True)
    level = logger.level
    logger.setLevel(logging.NOTSET)
    yield caplog
    logger.setLevel(level)


def test_terminal_table_and_no_logger(lightning_log):
    caplog = lightning_log
    with caplog.at_level(logging.INFO):
        pruning = _prune_with(False)
    text = caplog.text
    assert "SynFlowPruning (synflow" in text and "net.0.weight" in text and "total" in text
    assert pruning.masks is not None


def test_quiet_when_not_verbose(lightning_log):
    caplog = lightning_log
    with caplog.at_level(logging.INFO):
        pruning = SynFlowPruning(sparsity=0.75, progress=False, verbose=False)
        quiet_trainer(callbacks=[pruning], max_steps=1).fit(SmallNet())
    assert "SynFlowPruning (" not in caplog.text
