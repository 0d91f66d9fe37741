"""``lightning-synflow sweep``: grid, resume, failed and interrupted runs, CSV and plot, W&B grouping and sweep file."""

from __future__ import annotations

import contextlib
import io
import signal
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from lightning_synflow.cli import main
from lightning_synflow.cli.sweep import run as sweep_module
from lightning_synflow.cli.sweep.command import parse_sweep
from lightning_synflow.cli.sweep.grid import GridPoint, expand_grid
from lightning_synflow.cli.sweep.results import read_results
from lightning_synflow.cli.sweep.summary import plot_results
from tests.helpers import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"
DIGITS = str(CONFIGS / "digits_synflow.yaml")
GRID = ["--methods", "synflow,magnitude", "--compressions", "10,100", "--seeds", "1", "--quick"]
# The quick runs score SynFlow in 5 iterations (the config's own `iterations: 100` would take most of the time).
FEW_ITERATIONS = ["--trainer.callbacks.init_args.iterations", "5"]

NO_SHAPE_MODULE = """
import torch
from torch import nn
from torch.nn import functional as F
from lightning.pytorch import LightningModule


class NoShapeNet(LightningModule):
    # No example_input_array: SynFlow cannot know the input shape, data-driven methods do not need it.
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
"""
NO_SHAPE_CONFIG = """
model:
  class_path: sweep_no_shape.NoShapeNet
data:
  class_path: lightning_synflow.data.DigitsDataModule
  init_args:
    batch_size: 32
trainer:
  max_epochs: 1
  accelerator: cpu
  devices: 1
  logger: false
"""


def _ok(rows):
    return {(r["method"], r["compression"], r["seed"]) for r in rows if r["status"] == "ok"}


@pytest.fixture(scope="module")
def quick_sweep(tmp_path_factory):
    """One real 2 x 2 x 1 quick sweep on the bundled digits: its output folder, exit code and printed text."""
    output = tmp_path_factory.mktemp("sweep") / "digits"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["sweep", "--config", DIGITS, *GRID, "--output", str(output), *FEW_ITERATIONS])
    return output, code, printed.getvalue()


def test_grid_expansion_order_labels_and_refusals():
    points = expand_grid(["synflow", "snip"], [10, 1000.0, 31.6227766], [0, 1])
    assert len(points) == 2 * 3 * 2
    # seed by seed: the first 6 runs cover every method and compression once
    assert [p.seed for p in points] == [0] * 6 + [1] * 6
    assert points[:3] == [
        GridPoint("synflow", 10.0, 0),
        GridPoint("synflow", 1000.0, 0),
        GridPoint("synflow", 31.6227766, 0),
    ]
    assert {(p.method, p.compression) for p in points[:6]} == {(p.method, p.compression) for p in points[6:]}
    assert points[0].label == "synflow-c10-s0" and points[2].label == "synflow-c31.6227766-s0"
    with pytest.raises(ValueError, match="`methods` must be among"):
        expand_grid(["synflw"], [10], [0])
    with pytest.raises(ValueError, match="`compression` must be a finite number >= 1"):
        expand_grid(["synflow"], [0.5], [0])
    with pytest.raises(ValueError, match="must not repeat"):
        expand_grid(["synflow"], [10, 10.0], [0])
    with pytest.raises(ValueError, match="`seeds` must be integers >= 0"):
        expand_grid(["synflow"], [10], [-1])


def test_command_line_axes_single_point_and_overrides(capsys):
    sweep, wandb_file, _ = parse_sweep(["--config", DIGITS, "--seeds", "3", "--trainer.max_epochs", "7"])
    assert wandb_file is None
    assert {p.seed for p in sweep.points} == {0, 1, 2} and len(sweep.points) == 5 * 3 * 3
    assert sweep.overrides == ["--trainer.max_epochs", "7"]
    assert sweep.output == Path("sweeps/digits_synflow") and sweep.name == "digits_synflow"
    sweep, _, _ = parse_sweep(["--config", DIGITS, "--seeds", "0,5"])
    assert sorted({p.seed for p in sweep.points}) == [0, 5]
    # the single-run form `wandb agent` uses: one grid point
    sweep, _, _ = parse_sweep(["--config", DIGITS, "--quick", "--method=snip", "--compression=100", "--seed=4"])
    assert sweep.points == [GridPoint("snip", 100.0, 4)]
    assert sweep.output == Path("sweeps/digits_synflow-quick")
    with pytest.raises(SystemExit) as refused:
        main(["sweep", "--config", DIGITS, "--methods", "synflow,prune_all"])
    assert refused.value.code == 2
    assert "`methods` must be among ['synflow', 'magnitude', 'random', 'snip', 'grasp']; got 'prune_all'" in (
        capsys.readouterr().err
    )
    for wrong, message in [("--seed=1,2", "`--seed` takes one value"), ("--seeds=two", "`--seeds` must be a count")]:
        with pytest.raises(SystemExit) as refused:
            main(["sweep", "--config", DIGITS, wrong])
        assert refused.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow  # runs sweeps of real fits
def test_quick_sweep_writes_csv_plot_and_summary(quick_sweep):
    output, code, printed = quick_sweep
    assert code == 0
    rows = read_results(output / "results.csv")
    assert _ok(rows) == {("synflow", 10.0, 0), ("synflow", 100.0, 0), ("magnitude", 10.0, 0), ("magnitude", 100.0, 0)}
    for row in rows:
        assert 0.0 <= row["value"] <= 1.0 and row["metric"] == "test/acc"
        assert float(row["sparsity"]) == pytest.approx(1 - 1 / row["compression"], abs=1e-5)
        assert Path(row["run_dir"]).is_dir() and float(row["fit_seconds"]) > 0
    # each run is an ordinary fit whose saved config holds the point's pruning and seed
    saved = yaml.safe_load(next((output / "runs" / "magnitude-c100-s0").rglob("config.yaml")).read_text())
    pruning = saved["trainer"]["callbacks"][0]["init_args"]
    assert (pruning["method"], pruning["compression"], pruning["seed"]) == ("magnitude", 100.0, 0)
    assert pruning["iterations"] is None  # the config's synflow iterations are not given to magnitude
    assert saved["seed_everything"] == 0 and saved["trainer"]["limit_train_batches"] == 2
    png = (output / "accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert "[1/4] synflow   compression 10" in printed and "[4/4] magnitude compression 100" in printed
    assert "test/acc: mean ± std over seeds (runs)" in printed
    assert any(line.startswith("magnitude") and "(1)" in line for line in printed.splitlines())


@pytest.mark.slow  # runs sweeps of real fits
def test_rerun_skips_finished_runs_and_runs_only_new_points(quick_sweep, monkeypatch, capsys):
    output, _, _ = quick_sweep
    called = []
    real = sweep_module.run_point
    monkeypatch.setattr(sweep_module, "run_point", lambda sweep, point: called.append(point) or real(sweep, point))
    args = ["sweep", "--config", DIGITS, *GRID, "--output", str(output), *FEW_ITERATIONS]
    assert main(args) == 0
    assert called == []
    assert "4 runs, 4 already done" in capsys.readouterr().out
    grown = [*args[:6], "10,100,1000", *args[7:]]
    assert main(grown) == 0
    assert called == [GridPoint("synflow", 1000.0, 0), GridPoint("magnitude", 1000.0, 0)]
    assert len(read_results(output / "results.csv")) == 6
    # the same folder with other settings is refused, not mixed
    with pytest.raises(SystemExit) as refused:
        main([*args[:-2], "--trainer.callbacks.init_args.iterations", "7"])
    assert refused.value.code == 2
    assert "other settings (overrides:" in capsys.readouterr().err


@pytest.mark.slow  # runs sweeps of real fits
def test_failed_run_is_recorded_sweep_goes_on_and_rerun_retries_it(tmp_path, monkeypatch, capsys):
    (tmp_path / "sweep_no_shape.py").write_text(textwrap.dedent(NO_SHAPE_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "no_shape.yaml"
    config.write_text(textwrap.dedent(NO_SHAPE_CONFIG))
    args = ["sweep", "--config", str(config), "--methods", "synflow,magnitude", "--compressions", "10", "--seeds", "1"]
    args += ["--quick", "--output", str(tmp_path / "out")]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "[1/2] synflow   compression 10     seed 0  FAILED" in out and "[2/2] magnitude" in out
    rows = read_results(tmp_path / "out" / "results.csv")
    assert [(r["method"], r["status"]) for r in rows] == [("synflow", "failed"), ("magnitude", "ok")]
    assert "SynFlowPruning needs the input shape" in rows[0]["error"]
    # the config has no SynFlowPruning callback: the sweep added one, pruned to the point's compression
    assert float(rows[1]["sparsity"]) == pytest.approx(0.9, abs=1e-4)
    assert main(args) == 1  # the failed run is retried (and fails again); the finished one is not rerun
    assert "2 runs, 1 already done" in capsys.readouterr().out
    assert [r["method"] for r in read_results(tmp_path / "out" / "results.csv")] == ["synflow", "magnitude", "synflow"]


@pytest.mark.slow  # runs sweeps of real fits
def test_ctrl_c_stops_the_sweep_with_the_csv_intact(tmp_path, monkeypatch, capsys):
    from lightning_synflow import SynFlowPruning
    from lightning_synflow.models import ImageClassifier

    real_step = ImageClassifier.training_step

    def step(self, batch, batch_idx):
        pruning = next(c for c in self.trainer.callbacks if isinstance(c, SynFlowPruning))
        if pruning.method == "magnitude":
            raise KeyboardInterrupt  # Ctrl+C in the middle of the second run's training
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(ImageClassifier, "training_step", step)
    args = ["sweep", "--config", DIGITS, "--methods", "random,magnitude,snip", "--compressions", "10", "--seeds", "1"]
    args += ["--quick", "--output", str(tmp_path)]
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert main(args) == sweep_module.INTERRUPTED
        # Lightning ignores Ctrl+C after the first one; the sweep gives it back
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "interrupted: 1 of 3 runs finished" in capsys.readouterr().out
    assert [(r["method"], r["status"]) for r in read_results(tmp_path / "results.csv")] == [("random", "ok")]


@pytest.mark.slow  # runs sweeps of real fits
def test_plot_needs_matplotlib_and_says_so(quick_sweep, tmp_path, monkeypatch, capsys):
    rows = [r for r in read_results(quick_sweep[0] / "results.csv") if r["status"] == "ok"]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert plot_results(rows, tmp_path / "accuracy.png", "title") is False
    assert not (tmp_path / "accuracy.png").exists()
    assert "pip install 'lightning-synflow[plots]'" in capsys.readouterr().out


@pytest.mark.slow  # runs sweeps of real fits
def test_wandb_offline_runs_are_grouped_tagged_and_configured(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    seen = []
    real_finish = wandb.finish

    def finish(*args, **kwargs):
        run = wandb.run
        seen.append((run.group, list(run.tags), run.job_type, run.name, dict(run.config)))
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(wandb, "finish", finish)
    args = ["sweep", "--config", str(CONFIGS / "digits_synflow_wandb.yaml"), "--method=random", "--compression=100"]
    args += ["--seed=1", "--quick", "--output", str(tmp_path / "out"), "--name", "digits-grid"]
    assert main(args) == 0
    [(group, tags, job_type, name, config)] = seen
    assert group == "digits-grid" and job_type == "sweep" and name == "random-c100-s1"
    assert set(tags) == {"random", "compression=100"}
    assert config["sweep"] == {"name": "digits-grid", "method": "random", "compression": 100.0, "seed": 1}
    [offline] = (tmp_path / "out" / "runs" / "random-c100-s1" / "wandb").glob("offline-run-*/run-*.wandb")
    written = offline.read_bytes()
    assert b"digits-grid" in written and b"compression=100" in written


@pytest.mark.slow  # runs sweeps of real fits
def test_wandb_sweep_file_and_its_command_runs_one_grid_point(tmp_path, monkeypatch):
    sweep_file = tmp_path / "sweep.yaml"
    output = tmp_path / "out"
    args = ["sweep", "--config", DIGITS, "--methods", "synflow,random", "--compressions", "10,100", "--seeds", "2"]
    args += ["--quick", "--output", str(output), "--wandb-sweep", str(sweep_file), *FEW_ITERATIONS]
    assert main(args) == 0
    assert not output.exists()  # nothing trained
    spec = yaml.safe_load(sweep_file.read_text())
    assert spec["method"] == "grid" and spec["metric"] == {"name": "test/acc", "goal": "maximize"}
    assert spec["parameters"] == {
        "method": {"values": ["synflow", "random"]},
        "compression": {"values": [10, 100]},
        "seed": {"values": [0, 1]},
    }
    command = spec["command"]
    assert command[:3] == ["${env}", "lightning-synflow", "sweep"] and command[-1] == "${args}"
    # what `wandb agent` runs for one grid point: ${args} becomes --name=value flags
    point = ["--method=random", "--compression=100", "--seed=1"]
    monkeypatch.chdir(tmp_path)
    assert main([*command[2:-1], *point]) == 0
    rows = read_results(output / "results.csv")
    assert [(r["method"], r["compression"], r["seed"], r["status"]) for r in rows] == [("random", 100.0, 1, "ok")]
    # --wandb added a WandbLogger (W&B disabled in the tests) to the config, which had only a CSVLogger
    saved = yaml.safe_load(next((output / "runs" / "random-c100-s1").rglob("config.yaml")).read_text())
    loggers = {entry["class_path"].rsplit(".", 1)[-1]: entry["init_args"] for entry in saved["trainer"]["logger"]}
    assert loggers["WandbLogger"]["group"] == "out" and loggers["WandbLogger"]["project"] == "lightning-synflow"
    assert loggers["CSVLogger"]["save_dir"] == str(output / "runs" / "random-c100-s1")


@pytest.mark.slow  # runs sweeps of real fits
def test_refused_override_stops_before_any_run_and_can_be_corrected(tmp_path, capsys):
    point = ["--method=magnitude", "--compression=10", "--seed=0", "--quick", "--output", str(tmp_path)]
    with pytest.raises(SystemExit) as refused:
        main(["sweep", "--config", DIGITS, *point, "--trainer.max_epochz", "1"])
    assert refused.value.code == 2 and "max_epochz" in capsys.readouterr().err
    assert not (tmp_path / "results.csv").exists()
    # nothing ran, so the corrected command may use the same folder
    assert main(["sweep", "--config", DIGITS, *point, "--trainer.max_epochs", "1"]) == 0
    assert [r["status"] for r in read_results(tmp_path / "results.csv")] == ["ok"]


def _bad_class_path(config):
    config["model"]["class_path"] = "lightning_synflow.models.NoSuchClassifier"


def _two_pruning_callbacks(config):
    config["trainer"]["callbacks"] *= 2


@pytest.mark.parametrize(
    ("edit", "override", "message"),
    [
        (
            _bad_class_path,
            [],
            "model: lightning_synflow.models.NoSuchClassifier: module 'lightning_synflow.models' has",
        ),
        (_two_pruning_callbacks, [], "has 2 SynFlowPruning callbacks; a sweep needs at most one."),
        (None, ["--trainer.max_epochz", "1"], "unrecognized arguments: --trainer.max_epochz 1"),
    ],
)
def test_refused_run_config_prints_the_sweep_commands_usage(tmp_path, capsys, edit, override, message):
    """A bad class_path (or override) is reported by `sweep`, not by the LightningCLI parser each run uses inside."""
    config = yaml.safe_load(Path(DIGITS).read_text())
    if edit is not None:
        edit(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    point = ["--method=synflow", "--compression=10", "--seed=0", "--quick", "--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as refused:
        main(["sweep", "--config", str(path), *point, *override])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 2, err
    usage, error = err.splitlines()
    assert usage.endswith(
        "sweep --config CONFIG [--methods ...] [--compressions ...] [--seeds N] [options] [overrides]"
    )
    assert "sweep: error: " in error and message in error, error
    assert "-c CONFIG" not in err and "--help" not in err
    assert not (tmp_path / "out" / "results.csv").exists()
