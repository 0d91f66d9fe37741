"""Every paper-figure script runs in --quick mode and writes its PNG and CSV."""

import csv
import importlib.util
import sys

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # runs the paper scripts in quick mode

PAPER = REPO_ROOT / "examples" / "paper"
SCRIPTS = [
    "fig1_layer_collapse",
    "fig_layerwise_collapse",
    "fig3_4_conservation",
    "fig7_iterations",
    "fig6_accuracy",
    "fig_sanity_checks",
]


def _run(name, out):
    sys.path.insert(0, str(PAPER))
    try:
        spec = importlib.util.spec_from_file_location(name, PAPER / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main(["--quick", "--out", str(out)])
    finally:
        sys.path.remove(str(PAPER))


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_quick(name, tmp_path):
    pytest.importorskip("matplotlib")
    result = _run(name, tmp_path)
    png = tmp_path / f"{name}.png"
    assert png.stat().st_size > 1000
    with open(tmp_path / f"{name}.csv") as handle:
        assert len(list(csv.DictReader(handle))) > 1
    if name == "fig1_layer_collapse":
        assert result["synflow"] > result["magnitude"]
    if name == "fig3_4_conservation":
        spread, worst = result
        assert spread < 1e-9 and worst < 1e-9
