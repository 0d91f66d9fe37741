import importlib

import pytest
import torch

from lightning_synflow.export.speed import SpeedReport, speed_report
from tests.helpers import mlp
from tests.unit.export.test_sparse_file import random_masks


def tiny():
    model = mlp([16, 32, 32], classes=4)
    return model, random_masks(model, 0.1)


def test_report_measures_the_three_variants_at_the_example_batch():
    model, masks = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = speed_report(model, masks, torch.randn(5, 16), repeats=2, warmup=1)
    assert isinstance(report, SpeedReport)
    assert report.batch_size == 5 and report.repeats == 2 and report.threads >= 1
    assert set(report.forward_ms) == {"dense", "shrunk", "sparse"}
    assert set(report.train_step_ms) == {"dense", "shrunk"}
    assert set(report.file_bytes) == {"state_dict", "sparse_file", "shrunk"}
    assert report.unavailable == {}
    for variant in report.forward_ms:
        assert report.forward_speedup(variant) > 0
    assert report.forward_speedup("dense") == 1.0 and report.train_speedup("shrunk") > 0
    assert 0 < report.file_fraction("sparse_file") < 1
    assert report.fastest in report.forward_ms
    text = str(report)
    for label in ("masked dense", "shrunk (thinner dense)", "sparse (CSR kernels)", "save_sparse", "fastest forward"):
        assert label in text
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_shrink_can_be_left_out_or_reported_unavailable(monkeypatch):
    model, masks = tiny()
    report = speed_report(model, masks, torch.randn(2, 16), repeats=1, warmup=0, shrink=False)
    assert set(report.forward_ms) == {"dense", "sparse"} and set(report.train_step_ms) == {"dense"}
    assert "not requested" in report.unavailable["shrunk"] and "not requested" in str(report)

    def refuse(*args, **kwargs):
        raise ValueError("cannot follow the graph")

    # The package's `shrink` attribute is the function, so reach the module through importlib.
    monkeypatch.setattr(importlib.import_module("lightning_synflow.export.shrink"), "shrink", refuse)
    report = speed_report(model, masks, torch.randn(2, 16), repeats=1, warmup=0)
    assert report.unavailable == {"shrunk": "not available: cannot follow the graph"}
    assert "not available: cannot follow the graph" in str(report)
    assert "shrunk" not in report.file_bytes


def test_bad_repeats_are_refused():
    model, masks = tiny()
    with pytest.raises(ValueError, match="`repeats` must be >= 1"):
        speed_report(model, masks, torch.randn(2, 16), repeats=0)


def test_batchnorm_at_batch_one_keeps_the_forward_times_and_says_why_the_training_step_is_missing():
    # BatchNorm in train mode refuses one value per channel; the forward timings (eval mode) still work.
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, 4)
    )
    masks = random_masks(model, 0.1)
    report = speed_report(model, masks, torch.randn(1, 16), repeats=2, warmup=1)
    assert set(report.forward_ms) == {"dense", "shrunk", "sparse"}
    assert report.train_step_ms == {}
    assert "Expected more than 1 value per channel" in report.unavailable["train_step"]
    assert "larger batch" in str(report)
