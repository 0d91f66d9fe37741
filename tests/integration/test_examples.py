"""Every example script runs offline in a reduced form."""

import importlib.util

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # runs the example scripts

EXAMPLES = REPO_ROOT / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _load("quickstart").main(["--fast-dev-run"])
    assert 0 <= result[0]["test/acc"] <= 1


def test_functional():
    masks = _load("functional").main([])
    assert sum(int(m.sum()) for m in masks.values()) == 270_896 - int(0.99 * 270_896)


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    _load("wandb_offline").main(["--save-dir", str(tmp_path), "--fast-dev-run"])
    assert list((tmp_path / "wandb").glob("offline-run-*"))
