"""Per-tensor density floors (``min_density``): held exactly at every iteration, totals exact."""

from __future__ import annotations

import copy
import math
import warnings
from fractions import Fraction

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from lightning_synflow import prune
from lightning_synflow.pruning.api import prune_with
from lightning_synflow.pruning.loop import ScoringData
from lightning_synflow.pruning.schedule import prune_count, schedule_densities
from lightning_synflow.pruning.settings import PruningSettings
from tests.helpers import mlp


def _kept(masks: dict[str, torch.Tensor]) -> dict[str, int]:
    return {name: int(mask.sum()) for name, mask in masks.items()}


def _greedy(scores: dict[str, torch.Tensor], n_prune: int, floors: dict[str, int]) -> dict[str, torch.Tensor]:
    """Oracle: prune entries in increasing score order, skipping those of a tensor already at its floor."""
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1) for n in names])
    owner = torch.cat([torch.full((scores[n].numel(),), i) for i, n in enumerate(names)])
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    left = {n: scores[n].numel() for n in names}
    pruned = 0
    for position in torch.argsort(flat, stable=True).tolist():
        if pruned == n_prune:
            break
        name = names[int(owner[position])]
        if left[name] > floors.get(name, 0):
            keep[position] = False
            left[name] -= 1
            pruned += 1
    masks, offset = {}, 0
    for n in names:
        masks[n] = keep[offset : offset + scores[n].numel()].view_as(scores[n])
        offset += scores[n].numel()
    return masks


def test_single_shot_floors_equal_the_greedy_oracle():
    torch.manual_seed(0)
    model = mlp([10, 20, 20])
    with torch.no_grad():
        model[5].weight.mul_(1e-3)  # the classifier would empty without a floor
    weights = {n: p.detach().abs().clone() for n, p in model.named_parameters() if n.endswith("weight")}
    total = sum(w.numel() for w in weights.values())
    masks = prune(model, sparsity=0.9, method="magnitude", min_density={"5.*": 0.1, "3.weight": 0.05})
    floors = {"5.weight": math.ceil(0.1 * 60), "3.weight": 20}
    expected = _greedy(weights, prune_count(0.1, total), floors)
    assert all(torch.equal(masks[n], expected[n]) for n in masks)
    kept = _kept(masks)
    assert kept["5.weight"] == 6 and kept["3.weight"] == 20  # both held exactly at their floor
    assert sum(kept.values()) == total - prune_count(0.1, total)


@pytest.mark.parametrize("invert", [False, True])
def test_iterative_synflow_holds_floors_at_every_iteration_with_exact_totals(invert):
    torch.manual_seed(0)
    model = mlp([16, 32, 32])
    history = []
    floors = {"1.weight": 6, "5.weight": 20}  # ceil(0.01 * 512), ceil(0.2 * 96)
    masks = prune(
        model,
        compression=50,
        example_input=torch.zeros(1, 16),
        iterations=12,
        min_density={"1.weight": 0.01, "5.*": 0.2},
        invert=invert,
        on_iteration=lambda e, m: history.append(_kept(m)),
    )
    total = 512 + 1024 + 96
    final = prune_count(0.02, total)
    steps = schedule_densities(PruningSettings.create(compression=50).density, 12, "exponential")
    for step_density, kept in zip(steps, history):
        assert all(kept[name] >= floor for name, floor in floors.items())
        assert prune_count(step_density, total) <= total - sum(kept.values()) <= final
    assert total - sum(_kept(masks).values()) == final
    assert any(history[-1][name] == floor for name, floor in floors.items())  # a floor binds


def test_local_scope_keeps_the_larger_of_target_and_floor():
    torch.manual_seed(0)
    model = mlp([10, 20, 20])
    masks = prune(model, sparsity=0.95, method="magnitude", scope="local", min_density={"5.weight": 0.3})
    sizes = {"1.weight": 200, "3.weight": 400, "5.weight": 60}
    expected = {n: max(s - prune_count(Fraction(1, 20), s), 0) for n, s in sizes.items()}
    expected["5.weight"] = 18
    assert _kept(masks) == expected


def test_impossible_floors_are_refused_before_anything_changes():
    model = mlp([10, 20, 20])
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"floors keep at least 200 of the 660 .* more than the 66 that density 1/10"):
        prune(model, sparsity=0.9, method="magnitude", min_density={"1.*": 1.0})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_largest_matching_floor_applies_and_counts_use_exact_decimals():
    settings = PruningSettings.create(sparsity=0.5, min_density={"*": 0.1, "b*": 0.01, "a*": 0.35})
    assert settings.floor_counts({"a.weight": 30, "b.weight": 150, "c.weight": 30}) == [11, 15, 3]
    # ceil(0.1 * 30) is 3, although 0.1 * 30 == 3.0000000000000004 in floats.
    assert PruningSettings.create(sparsity=0.5, min_density=0.1).floor_counts({"x": 30}) == [3]


def test_floors_with_starting_masks_never_revive_and_stop_losses():
    torch.manual_seed(0)
    net = mlp([8, 16])
    data = ScoringData(torch.zeros(1, 8))
    first = prune_with(copy.deepcopy(net), PruningSettings.create(sparsity=0.5, method="magnitude"), data)
    alive = _kept(first)
    floor = alive["3.weight"] + 5  # above what is left: that tensor loses nothing more
    settings = PruningSettings.create(sparsity=0.8, method="magnitude", min_density={"3.weight": floor / 48})
    second = prune_with(net, settings, data, masks=first)
    assert torch.equal(second["3.weight"], first["3.weight"])
    assert not bool((second["1.weight"] & ~first["1.weight"]).any())
    assert sum(_kept(second).values()) == 176 - prune_count(0.2, 176)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    widths=st.lists(st.integers(2, 10), min_size=1, max_size=3),
    sparsity=st.floats(0.05, 0.99),
    floors=st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=4, max_size=4),
    method=st.sampled_from(["magnitude", "random"]),
    iterations=st.integers(1, 4),
    scope=st.sampled_from(["global", "local"]),
)
def test_floors_hold_and_totals_stay_exact_for_random_floors(widths, sparsity, floors, method, iterations, scope):
    model = mlp([3, *widths])
    names = [n for n, p in model.named_parameters() if n.endswith("weight")]
    min_density = {name: floor for name, floor in zip(names, floors) if floor is not None}
    sizes = {n: p.numel() for n, p in model.named_parameters() if n in names}
    found = PruningSettings.create(sparsity=0.5, min_density=min_density or None).floor_counts(sizes)
    counts = dict(zip(names, found or [0] * len(names)))
    total = sum(sizes.values())
    density = PruningSettings.create(sparsity=sparsity).density
    run = dict(sparsity=sparsity, method=method, iterations=iterations, scope=scope, seed=0, min_density=min_density)
    if scope == "global" and sum(counts.values()) > total - prune_count(density, total):
        before = copy.deepcopy(model.state_dict())
        with pytest.raises(ValueError, match="floors keep at least"):
            prune(model, **run)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        return
    history = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masks = prune(model, on_iteration=lambda e, m: history.append(_kept(m)), **run)
    for kept in history:
        assert all(kept[n] >= counts[n] for n in names)
    kept = _kept(masks)
    if scope == "global":
        assert sum(kept.values()) == total - prune_count(density, total)
    else:
        assert kept == {n: max(sizes[n] - prune_count(density, sizes[n]), counts[n]) for n in names}


def test_floor_keeps_a_layer_that_would_collapse():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 3))
    with torch.no_grad():
        model[2].weight.mul_(1e-4)
    with pytest.warns(UserWarning, match="Layer collapse"):
        bare = prune(copy.deepcopy(model), sparsity=0.9, method="magnitude")
    assert not bare["2.weight"].any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no collapse warning
        masks = prune(model, sparsity=0.9, method="magnitude", min_density={"2.weight": 0.01, "4.weight": 0.05})
    assert int(masks["2.weight"].sum()) == 4 and int(masks["4.weight"].sum()) == 3
