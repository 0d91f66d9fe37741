"""benchmarks/gpu_check.py's smoke mode runs every figure on tiny networks, on the CPU, so the GPU script cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # runs the GPU check script in a subprocess

ROOT = REPO_ROOT


def test_gpu_check_smoke_mode_prints_every_figure_and_the_markdown_rows():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--tiny"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    rows = re.findall(r"^\| (.+?) \| ([\d,]+) \| ([\d.]+) s \| ([\d.]+) s \| ([\d.]+)x \| n/a \|$", out, re.MULTILINE)
    assert [row[0] for row in rows] == ["mlp (tiny)", "mlp (tiny, wider)", "vgg-like (tiny)", "resnet-8 (tiny)"]
    for _, count, floor, pruning, ratio in rows:
        assert int(count.replace(",", "")) > 1000 and float(floor) > 0 and float(pruning) > 0
        # both printed times are rounded to 1 ms, the ratio is of the unrounded ones
        low = (float(pruning) - 5e-4) / (float(floor) + 5e-4)
        high = (float(pruning) + 5e-4) / max(float(floor) - 5e-4, 1e-9)
        assert low - 0.01 <= float(ratio) <= high + 0.01
    assert "SynFlow 10 iterations vs 10 fwd+bwd, CPU (torch selection backend)" in out
    for sparsity in ("0.0001", "0.9"):
        assert out.count(f"sparsity {sparsity} (3 steps each, medians):") == 2
    assert len(re.findall(r"^  MaskUpkeep .* ratio [\d.]+x", out, re.MULTILINE)) == 4  # autocast, bf16 weights
    assert out.rstrip().endswith("all GPU checks passed")
