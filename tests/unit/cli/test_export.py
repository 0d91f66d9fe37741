"""``lightning-synflow export``: a checkpoint to a compact file, dense or shrunk; reports and refusals."""

import re
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from lightning_synflow.cli import build_model, cli_main, main
from lightning_synflow.export import load_sparse, resize_to_state_dict
from lightning_synflow.report import count_macs
from tests.helpers import REPO_ROOT

CONFIG = str(REPO_ROOT / "configs" / "digits_synflow.yaml")


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("export")
    args = ["fit", "--config", CONFIG, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"]
    args += ["--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--test_after_fit", "false"]
    args += ["--trainer.enable_checkpointing", "true", "--trainer.default_root_dir", str(directory)]
    args += ["--trainer.callbacks.init_args.iterations", "10", "--trainer.callbacks.init_args.progress", "false"]
    cli = cli_main(args)
    (path,) = (directory / "checkpoints").glob("*.ckpt")
    return cli.model, path


@pytest.mark.parametrize("shrink", [False, True])
def test_export_writes_a_compact_file_that_loads(digits_checkpoint, tmp_path, capsys, shrink):
    trained, path = digits_checkpoint
    output = tmp_path / "model.safetensors"
    args = ["export", "--config", CONFIG, "--ckpt_path", str(path), "--output", str(output)]
    assert main(args + ["--shrink"] * shrink) == 0
    printed = capsys.readouterr().out
    assert "total" in printed and "of torch.save(state_dict)" in printed and "MACs per example" in printed
    state = load_sparse(output)
    model = build_model(CONFIG)
    resize_to_state_dict(model, state)
    model.load_state_dict(state)
    x = torch.randn(4, 64)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), trained.eval()(x), atol=1e-5)
    dense_params = sum(p.numel() for p in trained.parameters())
    assert (sum(p.numel() for p in model.parameters()) < dense_params) == shrink


@pytest.fixture(scope="module")
def shrunk_checkpoint(tmp_path_factory):
    """A digits-demo checkpoint of a ``shrink=True`` run: its layers are thinner than the config's."""
    directory = tmp_path_factory.mktemp("export-shrunk")
    args = ["fit", "--config", CONFIG, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
    args += ["--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.logger", "false", "--test_after_fit", "false", "--trainer.enable_checkpointing", "true"]
    args += ["--trainer.default_root_dir", str(directory), "--trainer.callbacks.init_args.shrink", "true"]
    args += ["--trainer.callbacks.init_args.iterations", "10", "--trainer.callbacks.init_args.progress", "false"]
    cli_main(args)
    (path,) = (directory / "checkpoints").glob("*.ckpt")
    return path


def _config_with(tmp_path, hidden):
    """The digits config with other hidden layer sizes."""
    config = yaml.safe_load(Path(CONFIG).read_text())
    config["model"]["init_args"]["model"]["init_args"]["hidden"] = hidden
    path = tmp_path / f"digits_{'_'.join(map(str, hidden))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize(
    ("hidden", "message"),
    [
        ([100, 100, 100], "the checkpoint has 'model.1.weight' of shape [300, 64], the model [100, 64]"),
        ([300, 300], "not in the model: 2 ('model.7.weight', 'model.7.bias')"),
    ],
)
def test_export_of_another_configs_checkpoint_is_one_error_line(digits_checkpoint, tmp_path, capsys, hidden, message):
    _, path = digits_checkpoint
    output = tmp_path / "model.safetensors"
    args = ["export", "--config", _config_with(tmp_path, hidden), "--ckpt_path", str(path), "--output", str(output)]
    with pytest.raises(SystemExit) as refused:
        main(args)
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) <= 3, err
    (line,) = [line for line in err.splitlines() if "error: " in line]
    assert "`--ckpt_path`" in line and message in line, line
    assert not output.exists()


def test_export_of_a_shrunk_checkpoint_reports_against_the_dense_model(shrunk_checkpoint, tmp_path, capsys):
    output = tmp_path / "model.safetensors"
    assert main(["export", "--config", CONFIG, "--ckpt_path", str(shrunk_checkpoint), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    dense = build_model(CONFIG)
    dense_macs = count_macs(dense, dense.example_input_array)
    macs, against, percent = re.search(r"MACs per example: ([\d,]+) of ([\d,]+) dense \(([\d.]+)%\)", printed).groups()
    assert int(against.replace(",", "")) == dense_macs
    assert int(macs.replace(",", "")) < dense_macs and float(percent) < 50
    total = next(line.split() for line in printed.splitlines() if line.startswith("total"))
    assert total[1] == f"{sum(p.numel() for n, p in dense.named_parameters() if n.endswith('weight')):,}"
    with tempfile.TemporaryDirectory() as directory:
        torch.save(dense.state_dict(), Path(directory) / "dense.pt")
        dense_bytes = (Path(directory) / "dense.pt").stat().st_size
    assert f"({dense_bytes:,} bytes)" in printed


BATCH_NORM_MODULE = """
from torch import nn


class BatchNormMLP(nn.Sequential):
    def __init__(self, hidden: int = 32):
        super().__init__(nn.Flatten(), nn.Linear(64, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, 10))
"""
BATCH_NORM_CONFIG = """
seed_everything: 0
model:
  class_path: lightning_synflow.models.ImageClassifier
  init_args:
    model:
      class_path: export_batch_norm.BatchNormMLP
    input_shape: [64]
data:
  class_path: lightning_synflow.data.DigitsDataModule
  init_args: {batch_size: 16, flatten: true}
trainer:
  max_epochs: 1
  limit_train_batches: 2
  limit_val_batches: 0
  accelerator: cpu
  devices: 1
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning_synflow.SynFlowPruning
      init_args: {sparsity: 0.9, iterations: 5, progress: false}
"""


def test_export_report_of_a_batch_norm_model_at_batch_1_prints_the_table(tmp_path, monkeypatch, capsys):
    """BatchNorm1d cannot train on a batch of 1 (the example input): the report says so and the export succeeds."""
    (tmp_path / "export_batch_norm.py").write_text(BATCH_NORM_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "batch_norm.yaml"
    config.write_text(BATCH_NORM_CONFIG)
    cli = cli_main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path)])
    (path,) = (tmp_path / "checkpoints").glob("*.ckpt")
    assert cli.model.example_input_array.shape == (1, 64)
    output = tmp_path / "model.safetensors"
    args = ["export", "--config", str(config), "--ckpt_path", str(path), "--output", str(output), "--report"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "speed_report: batch 1" in printed and "training step: not measured" in printed
    assert "save_sparse" in printed and "fastest forward" in printed
    model = build_model(str(config))
    model.load_state_dict(load_sparse(output))
    x = torch.randn(2, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), cli.model.eval()(x))
    sys.modules.pop("export_batch_norm", None)


NO_EXAMPLE_MODULE = """
import torch
from torch import nn
from lightning.pytorch import LightningModule


class NoExampleNet(LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(64, 10)

    def forward(self, x):
        return self.net(x)
"""


def test_export_report_without_an_example_input_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    (tmp_path / "export_no_example.py").write_text(NO_EXAMPLE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "no_example.yaml"
    model, data = "export_no_example.NoExampleNet", "lightning_synflow.data.DigitsDataModule"
    config.write_text(f"model:\n  class_path: {model}\ndata:\n  class_path: {data}\n")
    output = tmp_path / "model.safetensors"
    args = ["export", "--config", str(config), "--ckpt_path", "none.ckpt", "--output", str(output), "--report"]
    with pytest.raises(SystemExit) as refused:
        main(args)
    assert refused.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error: " in line]
    assert "`--report` needs the model's example_input_array" in line
    sys.modules.pop("export_no_example", None)
