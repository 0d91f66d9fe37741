"""LightningCLI: YAML configs, a user's own model class, --help, refused values, exit codes, every config reduced."""

import runpy
import sys
import textwrap

import pytest
import yaml

from lightning_synflow.cli import cli_main, main
from tests.helpers import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"
FAST = ["--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]
DIGITS_AS_CIFAR = [
    "--data",
    "lightning_synflow.data.DigitsDataModule",
    "--data.flatten",
    "false",
    "--data.image_size",
    "32",
    "--data.channels",
    "3",
    "--data.batch_size",
    "4",
]


def _callback(cli):
    from lightning_synflow import SynFlowPruning

    return next(c for c in cli.trainer.callbacks if isinstance(c, SynFlowPruning))


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("digits_*.yaml")))
def test_every_digits_config_runs_reduced(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(["fit", "--config", str(CONFIGS / config), *FAST])
    pruning = _callback(cli)
    assert pruning.masks is not None
    kept = sum(int(m.sum()) for m in pruning.masks.values())
    assert kept == 202_200 - int(0.99 * 202_200)


@pytest.mark.parametrize("config", ["cifar10_vgg16_synflow.yaml", "cifar100_resnet20_synflow.yaml"])
def test_cifar_configs_run_reduced_on_digits_shaped_as_cifar(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(CONFIGS / config) as handle:
        classes = yaml.safe_load(handle)["model"]["init_args"]["num_classes"]
    args = [
        "fit",
        "--config",
        str(CONFIGS / config),
        *FAST,
        *DIGITS_AS_CIFAR,
        "--trainer.callbacks.init_args.iterations",
        "5",
    ]
    cli = cli_main(args)
    import torch

    assert cli.model(torch.zeros(1, 3, 32, 32)).shape == (1, classes)
    assert _callback(cli).iterations == 5 and _callback(cli).masks is not None


def test_user_defined_model_class_from_yaml(tmp_path, monkeypatch):
    package = tmp_path / "my_project.py"
    package.write_text(
        textwrap.dedent("""
        import torch
        from torch import nn
        from lightning.pytorch import LightningModule

        class TinyNet(LightningModule):
            def __init__(self, hidden: int = 16):
                super().__init__()
                self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
                self.example_input_array = torch.zeros(1, 64)

            def forward(self, x):
                return self.body(x)

            def training_step(self, batch, batch_idx):
                x, y = batch
                return nn.functional.cross_entropy(self(x), y)

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)
    """)
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent("""
        model:
          class_path: my_project.TinyNet
          init_args:
            hidden: 12
        data:
          class_path: lightning_synflow.data.DigitsDataModule
        trainer:
          max_steps: 3
          limit_val_batches: 0
          callbacks:
            - class_path: lightning_synflow.SynFlowPruning
              init_args:
                sparsity: 0.9
                exclude: ["body.2.weight"]
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cli = cli_main(
        ["fit", "--config", str(config), "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    )
    masks = _callback(cli).masks
    assert list(masks) == ["body.0.weight"]
    assert int(masks["body.0.weight"].sum()) == 64 * 12 - int(0.9 * 64 * 12)
    assert cli.trainer.global_step == 3
    sys.modules.pop("my_project", None)


def test_help_describes_every_callback_argument(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--trainer.callbacks.help", "lightning_synflow.SynFlowPruning"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for argument, words in {
        "sparsity": "fraction of prunable weights removed",
        "compression": "compression ratio",
        "method": "scoring method",
        "iterations": "default 100 for",
        "schedule": "density schedule",
        "scope": "one threshold over all layers",
        "parameters": "glob patterns",
        "exclude": "removed from the prunable set",
        "input_shape": "without the batch dimension",
        "seed": "seed of the",
        "score_batches": "training batches",
        "verbose": "per-layer sparsity table",
        "progress": "progress bar",
    }.items():
        assert f"--init_args.{argument}" in text or f".{argument}" in text, argument
        assert words in " ".join(text.split()), argument


def test_fit_help_lists_test_after_fit(capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--help"])
    assert "--test_after_fit" in capsys.readouterr().out


def test_top_level_help_names_export_and_sweep(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "'export --help'" in text and "'sweep --help'" in text and "SynFlowPruning" in text


BAD_METHOD_YAML = """
trainer:
  callbacks:
    - class_path: lightning_synflow.SynFlowPruning
      init_args:
        method: synfloww
"""


@pytest.mark.parametrize(
    ("override", "argument", "allowed"),
    [
        (["--trainer.callbacks.init_args.method", "l1"], "method", "'synflow', 'magnitude', 'random', 'snip', 'grasp'"),
        (["--trainer.callbacks.init_args.sparsity", "1.5"], "sparsity", "0 <= sparsity < 1"),
        (["--trainer.callbacks.init_args.schedule", "cubic"], "schedule", "'exponential', 'linear'"),
        (["--config", "bad_method.yaml"], "method", "'synflow', 'magnitude', 'random', 'snip', 'grasp'"),
        (["--model.init_args.optimizer", "lbfgs"], "optimizer", "'sgd', 'adam', 'adamw'"),
        (["--trainer.callbacks.init_args.seed", "abc"], "seed", "must be int or None; got 'abc'"),
        (["--trainer.max_epochs", "many"], "trainer.max_epochs", "must be int or None; got 'many'"),
    ],
)
def test_bad_value_is_refused_before_training(override, argument, allowed, tmp_path, monkeypatch, capsys):
    """Exit code 2 and one line naming the argument and its allowed values, as for LightningCLI's argument errors."""
    from lightning.pytorch import Trainer

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad_method.yaml").write_text(textwrap.dedent(BAD_METHOD_YAML))
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(SystemExit) as error:
        cli_main(["fit", "--config", str(CONFIGS / "digits_synflow.yaml"), *FAST, *override])
    assert error.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) < 15 and "Traceback" not in err, err
    message = next(line for line in err.splitlines() if line.startswith("error: "))
    assert f"`{argument}`" in message and allowed in message, message


def test_error_during_fit_keeps_its_traceback(tmp_path, monkeypatch):
    """Only refused configuration values become exit code 2; a failure while training propagates unchanged."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    def fail(*args, **kwargs):
        raise MisconfigurationException("raised during fit")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Trainer, "fit", fail)
    with pytest.raises(MisconfigurationException, match="raised during fit"):
        cli_main(["fit", "--config", str(CONFIGS / "digits_synflow.yaml"), *FAST])


def test_python_m_exits_0_after_a_successful_fit(tmp_path, monkeypatch):
    """``python -m lightning_synflow`` exits 0 after a run (``sys.exit`` of a non-int object would exit 1)."""
    monkeypatch.chdir(tmp_path)
    quick = ["--trainer.callbacks.init_args.iterations", "2", "--trainer.callbacks.init_args.progress", "false"]
    argv = ["lightning_synflow", "fit", "--config", str(CONFIGS / "digits_synflow.yaml"), *FAST, *quick]
    monkeypatch.setattr(sys, "argv", argv)
    try:
        runpy.run_module("lightning_synflow", run_name="__main__", alter_sys=True)
        code = 0  # no sys.exit: the interpreter exits 0
    except SystemExit as exit_info:
        code = exit_info.code
    assert code in (0, None)


def _refusal_line(err):
    assert "Traceback" not in err and len(err.splitlines()) < 15, err
    return next(line for line in err.splitlines() if line.startswith("error: "))


def test_floor_the_sparsity_cannot_meet_exits_2_with_one_line_at_fit_start(tmp_path, monkeypatch, capsys):
    """SynFlowPruning refuses `min_density` when it prunes (fit start): an argument error like the others."""
    monkeypatch.chdir(tmp_path)
    quick = ["--trainer.callbacks.init_args.iterations", "2", "--trainer.callbacks.init_args.progress", "false"]
    floor = ["--trainer.callbacks.init_args.min_density", "0.5"]
    with pytest.raises(SystemExit) as error:
        main(["fit", "--config", str(CONFIGS / "digits_synflow.yaml"), *FAST, *quick, *floor])
    assert error.value.code == 2
    err = capsys.readouterr().err
    message = _refusal_line(err)
    assert "`min_density` floors keep at least 101100 of the 202200 prunable weights" in message, message
    assert "fit --help" in err


def test_resume_with_other_settings_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    """The checkpoint's masks were made with sparsity 0.99; resuming with 0.9 is refused at fit start."""
    monkeypatch.chdir(tmp_path)
    quick = ["--trainer.callbacks.init_args.iterations", "2", "--trainer.callbacks.init_args.progress", "false"]
    common = ["--config", str(CONFIGS / "digits_synflow.yaml"), "--trainer.logger", "false", *quick]
    common += [
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.limit_train_batches",
        "2",
        "--test_after_fit",
        "false",
    ]
    common += ["--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(tmp_path)]
    assert main(["fit", *common, "--trainer.max_epochs", "1", "--trainer.enable_checkpointing", "true"]) == 0
    (checkpoint,) = (tmp_path / "checkpoints").glob("*.ckpt")
    capsys.readouterr()
    resumed = [
        "--trainer.max_epochs",
        "2",
        "--ckpt_path",
        str(checkpoint),
        "--trainer.callbacks.init_args.sparsity",
        "0.9",
    ]
    with pytest.raises(SystemExit) as error:
        main(["fit", *common, *resumed])
    assert error.value.code == 2
    message = _refusal_line(capsys.readouterr().err)
    assert "the checkpoint's masks were made with other settings" in message and "on_settings_change" in message
