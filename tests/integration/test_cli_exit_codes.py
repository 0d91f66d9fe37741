"""The installed entry points in real processes: exit code 0 after a run, 2 and one short message for a refused value.

Each process spends most of its seconds importing torch and Lightning, so there are three, started together; every
test reads the outcome of its own. ``tests/unit/cli/test_program.py`` covers the other cases in-process.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # runs the console script in subprocesses

CONFIG = REPO_ROOT / "configs" / "digits_synflow.yaml"
SCRIPT = Path(sys.executable).parent / "lightning-synflow"
MODULE = [sys.executable, "-m", "lightning_synflow"]
QUICK = [
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1",
    "--trainer.limit_test_batches", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.logger", "false",
    "--trainer.callbacks.init_args.iterations", "2",
    "--trainer.callbacks.init_args.progress", "false",
]  # fmt: skip
BAD_SPARSITY_YAML = """
trainer:
  callbacks:
    - class_path: lightning_synflow.SynFlowPruning
      init_args:
        sparsity: 1.5
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Start every command at once; map its name to (exit code, stdout, stderr)."""
    if not SCRIPT.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    root = tmp_path_factory.mktemp("cli")
    bad_yaml = root / "bad_sparsity.yaml"
    bad_yaml.write_text(textwrap.dedent(BAD_SPARSITY_YAML))
    fit = ["fit", "--config", str(CONFIG), *QUICK]
    commands = {
        "script fit": [str(SCRIPT), *fit, "--trainer.default_root_dir", str(root / "script")],
        "script bad yaml": [str(SCRIPT), *fit, "--config", str(bad_yaml)],
        "module bad cli": [*MODULE, *fit, "--trainer.callbacks.init_args.method", "synfloww"],
    }
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}
    started = {}
    for number, (name, command) in enumerate(commands.items()):
        out, err = root / f"{number}.out", root / f"{number}.err"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            process = subprocess.Popen(command, cwd=root, env=env, stdout=stdout, stderr=stderr)
        started[name] = (process, out, err)
    results = {}
    for name, (process, out, err) in started.items():
        try:
            code = process.wait(timeout=240)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        results[name] = (code, out.read_text(), err.read_text())
    return results


def test_console_script_exits_0_after_a_successful_fit(outcomes):
    code, out, err = outcomes["script fit"]
    assert code == 0, f"exit code {code}:\n{err[-3000:]}"
    assert "test/acc" in out  # test_after_fit ran: the whole command completed


@pytest.mark.parametrize(
    ("name", "argument", "allowed"),
    [
        ("script bad yaml", "sparsity", "0 <= sparsity < 1"),
        ("module bad cli", "method", "'synflow', 'magnitude', 'random', 'snip', 'grasp'"),
    ],
)
def test_refused_value_exits_2_with_one_short_message(outcomes, name, argument, allowed):
    code, _, err = outcomes[name]
    assert code == 2, f"{name} exited {code}:\n{err[-3000:]}"
    assert "Traceback" not in err
    assert len(err.splitlines()) < 15, err
    message = next(line for line in err.splitlines() if line.startswith("error: "))
    assert f"`{argument}`" in message and allowed in message, message
    assert "fit --help" in err
