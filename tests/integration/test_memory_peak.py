"""Peak memory of the SynFlow loop, and the compacted scores it is built from."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from lightning_synflow.pruning import alive as alive_module
from lightning_synflow.pruning.alive import AliveSet
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # prunes a 256 MiB MLP in a subprocess

ROOT = REPO_ROOT

#: Prunes a bias-free 4 x 4096^2 MLP (67M weights, 256 MiB); prints its peak extra RSS over the weights
#: after the first iteration and in all.
CHILD = r"""
import json, torch
from lightning_synflow import prune
from lightning_synflow.models import MLP
torch.manual_seed(0)
torch.set_num_threads(1)
model = MLP(4096, [4096] * 3, 4096, bias=False)
weights = sum(p.numel() * p.element_size() for p in model.parameters())
def status(field):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(field + ":"))
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
before = status("VmRSS")
first = []
def record(step, masks):
    if step == 1:
        first.append((status("VmHWM") - before) / weights)
prune(model, compression=100, iterations=20, example_input=torch.zeros(1, 4096), on_iteration=record)
print(json.dumps({"first": first[0], "ratio": (status("VmHWM") - before) / weights}))
"""


def test_collect_product_matches_the_product_gathered_after(monkeypatch):
    monkeypatch.setattr(alive_module, "GATHER_CHUNK", 2)  # several chunks per tensor
    torch.manual_seed(0)
    params = [torch.randn(6, 5), torch.randn(40)]
    grads = [torch.randn_like(p) for p in params]
    weights = [torch.rand_like(p) for p in params]
    whole = AliveSet(params)
    for i in range(2):  # the whole view: the product itself
        expected = (grads[i].abs() * weights[i]).view(-1)
        assert torch.equal(whole.collect_product(i, grads[i].clone(), weights[i]), expected)
    masks = [torch.arange(p.numel()).view(p.shape) % 8 == 3 for p in params]  # 1 in 8 alive
    compact = AliveSet(params, masks)
    compact.compact_if_sparse()
    assert compact.compacted
    for i in range(2):  # compacted: the view's entries only, same values
        expected = compact.collect(i, grads[i].abs() * weights[i])
        assert expected.numel() == int(masks[i].count_nonzero())
        assert torch.equal(compact.collect_product(i, grads[i].clone(), weights[i]), expected)


def test_peak_memory_of_the_loop_stays_under_twice_the_weights():
    # With a fixed mmap threshold glibc returns every freed block over 64 KB at once, so the peak
    # RSS follows the peak of live memory rather than the allocator's retention.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, env=env, cwd=ROOT
    ).stdout
    peaks = json.loads(out.strip().splitlines()[-1])
    # First iteration: working copy 1x, masks 0.25x, one layer's gradient 0.25x (no int64 copy of a
    # layer's zero-score test, which counting with sum() made: 0.56x more).
    assert 1.0 < peaks["first"] < 1.7
    # Compacted iterations: the view's scores, positions and masks beside the largest gradient.
    assert peaks["first"] <= peaks["ratio"] < 2.0
