"""Layer collapse is loud: a LayerCollapseWarning names every prunable tensor left empty."""

from __future__ import annotations

import ast
import copy
import re
import warnings

import pytest
import torch
from torch import nn

from lightning_synflow import prune
from lightning_synflow.pruning import LayerCollapseWarning
from lightning_synflow.pruning.api import prune_with
from lightning_synflow.pruning.loop import ScoringData
from lightning_synflow.pruning.settings import PruningSettings


def _collapsing_model() -> nn.Sequential:
    """Two of four layers have tiny weights, so magnitude pruning empties them first."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 3)
    )
    with torch.no_grad():
        model[2].weight.mul_(1e-4)
        model[4].weight.mul_(1e-3)
    return model


def _collapse_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, LayerCollapseWarning)]


def test_magnitude_collapse_names_exactly_the_emptied_tensors():
    model = _collapsing_model()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        masks = prune(model, sparsity=0.8, method="magnitude")
    emptied = sorted(name for name, mask in masks.items() if not mask.any())
    assert emptied == ["2.weight", "4.weight"]
    (message,) = _collapse_warnings(record)
    assert record[0].filename == __file__  # points at the caller of prune()
    listed = sorted(re.findall(r"'([\w.]+)' \(0 of (\d+) kept\)", message))
    assert listed == [("2.weight", "400"), ("4.weight", "400")]
    for advice in ["method='synflow'", "lower compression", "min_density=", "exclude=['2.weight', '4.weight']"]:
        assert advice in message


def test_no_warning_when_nothing_empties():
    model = _collapsing_model()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        masks = prune(model, sparsity=0.3, method="magnitude")
    assert all(mask.any() for mask in masks.values())
    assert _collapse_warnings(record) == []


def test_short_synflow_suggests_more_iterations_and_prune_with_warns_too():
    class Dead(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 6)
            self.b = nn.Linear(6, 6)  # not used in forward: scores 0 and goes first

        def forward(self, x):
            return self.a(x)

    data = ScoringData(torch.zeros(1, 6))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        prune_with(Dead(), PruningSettings.create(sparsity=0.5, iterations=2), data)  # the callback's entry point
    (message,) = _collapse_warnings(record)
    assert "'b.weight' (0 of 36 kept)" in message and "more iterations (SynFlow's default is 100)" in message


def test_collapse_warning_can_be_filtered_as_an_error_class():
    assert issubclass(LayerCollapseWarning, UserWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayerCollapseWarning)
        with pytest.raises(LayerCollapseWarning):
            prune(_collapsing_model(), sparsity=0.8, method="magnitude")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", LayerCollapseWarning)  # filtered by its class, other warnings still raise
        prune(copy.deepcopy(_collapsing_model()), sparsity=0.8, method="magnitude")


@pytest.mark.parametrize("compression", [10, 10**4])
def test_suggested_floor_is_feasible_and_covers_every_emptied_tensor(compression):
    """The floor the warning suggests covers every emptied tensor and fits in the kept budget.

    (Flooring one layer can move the collapse to another; the suggestion only has to be usable.)
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 300), nn.ReLU(), nn.Linear(300, 10))
    with torch.no_grad():
        model[2].weight.mul_(1e-3)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        masks = prune(copy.deepcopy(model), compression=compression, method="magnitude")
    (message,) = _collapse_warnings(record)
    emptied = {name for name, mask in masks.items() if not mask.any()}
    floors = ast.literal_eval(re.search(r"min_density=(\{.*?\})", message).group(1))
    assert set(floors) == emptied
    assert all(0 < floor <= 0.1 for floor in floors.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayerCollapseWarning)
        floored = prune(copy.deepcopy(model), compression=compression, method="magnitude", min_density=floors)
    assert all(floored[name].any() for name in emptied)
