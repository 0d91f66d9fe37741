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
from lightning_synflow.pruning.schedule import exact_fraction, prune_count, schedule_densities
from lightning_synflow.pruning.settings import PruningSettings
from tests.helpers import WithUnused, convnet, mlp


def _snapshot(model):
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "dtype": [p.dtype for p in model.parameters()],
    }


def _assert_restored(model, before, masks):
    after = _snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["dtype"] == before["dtype"]
    for g0, g1 in zip(before["grad"], after["grad"]):
        assert (g0 is None and g1 is None) or torch.equal(g0, g1)
    for key, value in before["state"].items():
        name = key
        if name in masks:
            expected = torch.where(masks[name], value, torch.zeros_like(value))
            assert torch.equal(after["state"][key], expected), key
        else:
            assert torch.equal(after["state"][key], value), key


architectures = st.one_of(
    st.lists(st.integers(1, 12), min_size=1, max_size=4).map(lambda w: ("mlp", [5, *w])),
    st.lists(st.integers(1, 4), min_size=1, max_size=3).map(lambda c: ("conv", [2, *c])),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arch=architectures,
    sparsity=st.floats(0, 0.999),
    method=st.sampled_from(["synflow", "magnitude", "random"]),
    iterations=st.integers(1, 6),
    schedule=st.sampled_from(["exponential", "linear"]),
    scope=st.sampled_from(["global", "local"]),
    bias=st.booleans(),
    invert=st.booleans(),
)
def test_properties(arch, sparsity, method, iterations, schedule, scope, bias, invert):
    kind, widths = arch
    model = mlp(widths, bias=bias) if kind == "mlp" else convnet(widths, size=4, bias=bias, bn=True)
    example = torch.zeros(2, 5) if kind == "mlp" else torch.zeros(2, 2, 4, 4)
    model.train()
    model[1].weight.grad = torch.ones_like(model[1].weight)
    before = _snapshot(model)
    history = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masks = prune(
            model,
            sparsity=sparsity,
            method=method,
            iterations=iterations,
            schedule=schedule,
            scope=scope,
            example_input=example,
            seed=3,
            on_iteration=lambda e, m: history.append({k: v.clone() for k, v in m.items()}),
            invert=invert,
        )
    density = 1 - exact_fraction(sparsity)
    sizes = {n: m.numel() for n, m in masks.items()}
    total = sum(sizes.values())
    kept = {n: int(m.sum()) for n, m in masks.items()}
    if scope == "global":
        assert sum(kept.values()) == total - prune_count(density, total)
    else:
        assert all(kept[n] == sizes[n] - prune_count(density, sizes[n]) for n in masks)
    # Monotone masks, and each iteration reaches at least its scheduled count (ties may prune more).
    if prune_count(density, total):
        steps = schedule_densities(density, iterations, schedule)
        assert len(history) == iterations
        for earlier, later in zip(history, history[1:]):
            assert all(bool((later[n] <= earlier[n]).all()) for n in masks)
        for step_density, state in zip(steps, history):
            if scope == "global":
                pruned = total - sum(int(m.sum()) for m in state.values())
                assert prune_count(step_density, total) <= pruned <= prune_count(density, total)
        assert all(torch.equal(history[-1][n], masks[n]) for n in masks)
    _assert_restored(model, before, masks)


def test_returns_bool_masks_and_zeroes_pruned_entries():
    model = mlp([6, 8, 8])
    masks = prune(model, compression=10, example_input=torch.zeros(1, 6))
    for name, param in model.named_parameters():
        if name in masks:
            assert masks[name].dtype == torch.bool and masks[name].shape == param.shape
            assert bool((param[~masks[name]] == 0).all())
    assert sum(int(m.sum()) for m in masks.values()) == 6 * 8 + 8 * 8 + 8 * 3 - math.floor(Fraction(9, 10) * 136)


def test_default_iterations_and_exact_density_at_compression():
    calls = []
    prune(mlp([4, 4]), compression=2, example_input=torch.zeros(1, 4), on_iteration=lambda e, m: calls.append(e))
    assert calls == list(range(1, 101))
    calls.clear()
    prune(mlp([4, 4]), compression=2, method="magnitude", on_iteration=lambda e, m: calls.append(e))
    assert calls == [1]


def test_sparsity_zero_prunes_nothing_and_changes_nothing():
    model = mlp([4, 4])
    before = copy.deepcopy(model.state_dict())
    masks = prune(model, sparsity=0.0, example_input=torch.zeros(1, 4))
    assert all(bool(m.all()) for m in masks.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_models(dtype):
    model = convnet([2, 3, 4], size=4, bn=True).to(dtype)
    before = _snapshot(model)
    reference = convnet([2, 3, 4], size=4, bn=True)
    reference.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    masks = prune(model, sparsity=0.8, example_input=torch.zeros(1, 2, 4, 4, dtype=dtype), iterations=5)
    _assert_restored(model, before, masks)
    expected = prune(reference, sparsity=0.8, example_input=torch.zeros(1, 2, 4, 4), iterations=5)
    if dtype != torch.float64:  # same float32 arithmetic on the same (exactly widened) weights
        assert all(torch.equal(masks[n], expected[n]) for n in masks)


def test_example_input_tuple_and_dict():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(5, 4)

        def forward(self, x, y):
            return {"out": self.a(x) + self.b(y)}

    for example in [(torch.zeros(7, 3), torch.zeros(7, 5)), {"x": torch.zeros(2, 3), "y": torch.zeros(2, 5)}]:
        masks = prune(TwoInputs(), sparsity=0.5, example_input=example, iterations=3)
        assert sum(int(m.sum()) for m in masks.values()) == 16


def test_snip_and_grasp_use_batches_and_clean_grads():
    model = mlp([4, 8])
    batches = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(2)]
    model[1].weight.grad = torch.full_like(model[1].weight, 123.0)  # stale grad must not leak
    for method in ["snip", "grasp"]:
        fresh = copy.deepcopy(model)
        fresh[1].weight.grad = None
        a = prune(copy.deepcopy(model), sparsity=0.5, method=method, batches=batches)
        b = prune(fresh, sparsity=0.5, method=method, batches=iter(batches))
        assert all(torch.equal(a[n], b[n]) for n in a)


def test_random_is_seeded():
    a = prune(mlp([8, 8]), sparsity=0.5, method="random", seed=1)
    b = prune(mlp([8, 8]), sparsity=0.5, method="random", seed=1)
    c = prune(mlp([8, 8]), sparsity=0.5, method="random", seed=2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_interrupted_pruning_leaves_model_unchanged():
    model = convnet([2, 3], size=4, bn=True)
    before = _snapshot(model)

    def stop(iteration, masks):
        if iteration == 3:
            raise KeyboardInterrupt

    storage = [p.data_ptr() for p in model.parameters()]
    with pytest.raises(KeyboardInterrupt):
        prune(model, sparsity=0.9, example_input=torch.zeros(1, 2, 4, 4), on_iteration=stop)
    _assert_restored(model, before, {})
    assert [p.data_ptr() for p in model.parameters()] == storage


def test_pruning_keeps_the_parameters_storage():
    # Optimizers and DDP buckets may hold the storage: the weights are masked in it, never replaced.
    model = convnet([2, 3], size=4, bn=True)
    storage = [p.data_ptr() for p in model.parameters()] + [b.data_ptr() for b in model.buffers()]
    prune(model, sparsity=0.9, example_input=torch.zeros(1, 2, 4, 4))
    assert [p.data_ptr() for p in model.parameters()] + [b.data_ptr() for b in model.buffers()] == storage


def test_weight_outside_the_flow_scores_zero_and_goes_first():
    model = WithUnused()
    with pytest.warns(UserWarning, match="score of exactly zero"):
        masks = prune(model, sparsity=0.5, example_input=torch.zeros(1, 8), iterations=3)
    assert not masks["unused.weight"].any() and masks["used.weight"].all()


def test_no_model_copy_per_iteration(monkeypatch):
    copies = []
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: copies.append(1))
    prune(mlp([4, 4]), sparsity=0.5, example_input=torch.zeros(1, 4), iterations=5)
    assert copies == []


BAD = [
    ({"sparsity": 1.0}, ValueError, "`sparsity` must satisfy 0 <= sparsity < 1"),
    ({"sparsity": -0.1}, ValueError, "`sparsity` must satisfy"),
    ({"sparsity": "0.5"}, TypeError, "`sparsity` must be a real number"),
    ({"compression": 0.5}, ValueError, "`compression` must be a finite number >= 1"),
    ({"compression": float("inf")}, ValueError, "`compression` must be a finite number >= 1"),
    ({}, ValueError, "Give exactly one of `sparsity`"),
    ({"sparsity": 0.5, "compression": 2}, ValueError, "Give exactly one of `sparsity`"),
    ({"sparsity": 0.5, "method": "l1"}, ValueError, r"`method` must be one of \['synflow', 'magnitude'"),
    ({"sparsity": 0.5, "schedule": "cosine"}, ValueError, r"`schedule` must be one of \['exponential', 'linear'\]"),
    ({"sparsity": 0.5, "scope": "layer"}, ValueError, r"`scope` must be one of \['global', 'local'\]"),
    ({"sparsity": 0.5, "iterations": 0}, ValueError, "`iterations` must be an integer >= 1"),
    ({"sparsity": 0.5, "iterations": 2.5}, ValueError, "`iterations` must be an integer >= 1"),
    ({"sparsity": 0.5, "parameters": ["x.*"]}, ValueError, "`parameters` pattern 'x.\\*' matches no parameter"),
    ({"sparsity": 0.5, "exclude": ["*"]}, ValueError, "Nothing to prune"),
    ({"sparsity": 0.5, "example_input": None}, ValueError, "method='synflow' needs `example_input`"),
    ({"sparsity": 0.5, "example_input": torch.zeros(1, 4, dtype=torch.long)}, TypeError, "token ids"),
    ({"sparsity": 0.5, "example_input": [1, 2]}, TypeError, "holds no tensor"),
    ({"sparsity": 0.5, "example_input": "x"}, TypeError, "`example_input` must be a tensor"),
    ({"sparsity": 0.5, "method": "snip"}, ValueError, "method='snip' needs `batches`"),
    ({"sparsity": 0.5, "method": "grasp", "batches": []}, ValueError, "`batches` is empty"),
    ({"sparsity": 0.5, "method": "random", "seed": "a"}, TypeError, "`seed` must be an integer"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD)
def test_bad_input_is_refused_before_anything_changes(kwargs, error, message):
    model = mlp([4, 4])
    before = copy.deepcopy(model.state_dict())
    kwargs = {"example_input": torch.zeros(1, 4), **kwargs}
    with pytest.raises(error, match=message):
        prune(model, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_non_finite_weights_are_refused():
    model = mlp([4, 4])
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        prune(model, sparsity=0.5, example_input=torch.zeros(1, 4))


def test_progress_bar(capsys):
    prune(mlp([4, 4]), sparsity=0.5, example_input=torch.zeros(1, 4), iterations=3, progress=True)
    assert "Pruning (synflow)" in capsys.readouterr().err


@pytest.mark.slow  # a fresh interpreter
def test_core_does_not_import_lightning():
    import subprocess
    import sys

    code = (
        "import sys, lightning_synflow.pruning; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'lightning', 'wandb', 'torchvision'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("method", ["synflow", "magnitude", "random"])
def test_prune_with_starting_masks_prunes_further_without_reviving(method: str) -> None:
    """Masks already in force stay pruned, count toward the exact target, and their weights are zeroed."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    data = ScoringData(torch.zeros(1, 8))
    first = prune_with(copy.deepcopy(net), PruningSettings.create(sparsity=0.5, method=method), data)
    second = prune_with(net, PruningSettings.create(sparsity=0.9, method=method, seed=1), data, masks=first)
    assert sum(int(m.sum()) for m in second.values()) == 192 - int(0.9 * 192)
    for name, param in net.named_parameters():
        if name in second:
            assert not (second[name] & ~first[name]).any()
            assert (param.detach()[~second[name]] == 0).all()


def test_prune_with_starting_masks_refuses_more_pruned_than_target() -> None:
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    masks = {"0.weight": torch.zeros(16, 8, dtype=torch.bool), "2.weight": torch.ones(4, 16, dtype=torch.bool)}
    with pytest.raises(ValueError, match="already prune 128 of all prunable weights"):
        prune_with(net, PruningSettings.create(sparsity=0.5), ScoringData(torch.zeros(1, 8)), masks=masks)
    with pytest.raises(ValueError, match="one mask per prunable parameter"):
        prune_with(net, PruningSettings.create(sparsity=0.5), ScoringData(torch.zeros(1, 8)), masks={})
    assert all(torch.equal(before[name], p) for name, p in net.named_parameters())
