"""The reference's experiment options: invert, shuffle, reinitialize, train_mode (and their settings)."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from lightning_synflow import prune, score
from lightning_synflow.models import MLP
from lightning_synflow.pruning.api import prune_with
from lightning_synflow.pruning.finish import reinitialize_seed, shuffle_masks
from lightning_synflow.pruning.loop import ScoringData
from lightning_synflow.pruning.schedule import prune_count, schedule_densities
from lightning_synflow.pruning.settings import PruningSettings
from tests.helpers import WithUnused, convnet, mlp
from tests.reference_semantics import reference_scores


def _flat(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors.values()])


def _lowest_kept(scores: torch.Tensor, kept: int) -> torch.Tensor:
    """The mask keeping the ``kept`` lowest scores, by a plain sort."""
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[torch.argsort(scores)[:kept]] = True
    return mask


# -- invert --------------------------------------------------------------------------------------


def test_invert_single_shot_synflow_keeps_exactly_the_lowest_scores_and_matches_the_reference_rule():
    torch.manual_seed(0)
    model = MLP(64, [48, 32], 10)
    example = torch.zeros(1, 64)
    scores = _flat(score(copy.deepcopy(model), example_input=example))
    assert scores.unique().numel() == scores.numel()  # no ties: the mask is fully determined
    total = scores.numel()
    k = prune_count(0.1, total)  # sparsity 0.9
    masks = prune(copy.deepcopy(model), sparsity=0.9, iterations=1, example_input=example, invert=True)
    ours = _flat(masks)
    assert torch.equal(ours, _lowest_kept(scores, total - k))
    # The reference's rule: score s -> 1/s, prune every entry at or below the k-th smallest (float64, finite here).
    inverse = 1 / scores.double()
    assert bool(torch.isfinite(inverse).all())
    assert torch.equal(ours, inverse > torch.kthvalue(inverse, k).values)


@pytest.mark.parametrize("method", ["magnitude", "snip", "grasp"])
def test_invert_keeps_the_lowest_scores_for_every_method(method):
    torch.manual_seed(1)
    model = mlp([12, 16, 16])
    batches = [(torch.randn(8, 12), torch.randint(0, 3, (8,))) for _ in range(2)]
    scores = _flat(score(copy.deepcopy(model), method=method, batches=batches))
    total = scores.numel()
    kept = total - prune_count(0.3, total)
    masks = prune(copy.deepcopy(model), sparsity=0.7, method=method, batches=batches, invert=True)
    assert torch.equal(_flat(masks), _lowest_kept(scores, kept))
    if method == "grasp":  # signed scores: invert keeps the most negative ones
        assert float(scores[_flat(masks)].max()) < float(scores[~_flat(masks)].min())
        assert float(scores[_flat(masks)].max()) < 0


def test_invert_random_is_exact_and_seeded():
    a = prune(mlp([8, 8]), sparsity=0.6, method="random", seed=4, invert=True)
    b = prune(mlp([8, 8]), sparsity=0.6, method="random", seed=4, invert=True)
    plain = prune(mlp([8, 8]), sparsity=0.6, method="random", seed=4)
    total = sum(m.numel() for m in a.values())
    assert int(_flat(a).sum()) == total - prune_count(0.4, total)
    assert torch.equal(_flat(a), _flat(b)) and not torch.equal(_flat(a), _flat(plain))


def test_iterative_invert_keeps_zero_score_weights_longest_and_counts_stay_exact():
    """Zero-score (no flow) weights go first without invert and last with it; every step reaches its count."""

    torch.manual_seed(0)
    model = WithUnused()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = prune(copy.deepcopy(model), sparsity=0.5, example_input=torch.zeros(1, 8), iterations=4)
        counts = []
        inverted = prune(
            model,
            sparsity=0.5,
            example_input=torch.zeros(1, 8),
            iterations=4,
            invert=True,
            on_iteration=lambda e, m: counts.append(128 - sum(int(v.sum()) for v in m.values())),
        )
    assert not plain["unused.weight"].any() and plain["used.weight"].all()
    assert inverted["unused.weight"].all() and not inverted["used.weight"].any()
    steps = [prune_count(0.5 ** (e / 4), 128) for e in range(1, 5)]
    assert all(step <= count <= 64 for step, count in zip(steps, counts)) and counts[-1] == 64


@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_iterative_invert_prunes_each_scheduled_count_exactly_without_ties(method):
    """Pruned entries do not rank first under invert: an iteration prunes what is due, not that many more."""
    torch.manual_seed(0)
    model = mlp([12, 24, 24])
    total = 12 * 24 + 24 * 24 + 24 * 3
    counts = []

    def record(iteration, masks):
        counts.append(total - sum(int(v.sum()) for v in masks.values()))

    prune(
        model,
        sparsity=0.9,
        method=method,
        iterations=6,
        example_input=torch.zeros(1, 12),
        invert=True,
        on_iteration=record,
    )
    density = PruningSettings.create(sparsity=0.9).density
    assert counts == [prune_count(d, total) for d in schedule_densities(density, 6, "exponential")]


def test_invert_with_starting_masks_never_revives():
    torch.manual_seed(0)
    net = mlp([8, 16])
    data = ScoringData(torch.zeros(1, 8))
    first = prune_with(copy.deepcopy(net), PruningSettings.create(sparsity=0.5, method="magnitude"), data)
    second = prune_with(net, PruningSettings.create(sparsity=0.8, method="magnitude", invert=True), data, masks=first)
    total = sum(m.numel() for m in first.values())
    assert int(_flat(second).sum()) == total - prune_count(0.2, total)
    assert not bool((_flat(second) & ~_flat(first)).any())


# -- shuffle -------------------------------------------------------------------------------------


def test_shuffle_keeps_per_tensor_counts_moves_the_pattern_and_keeps_original_values():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 10))
    original = copy.deepcopy(model)
    plain = prune(copy.deepcopy(model), sparsity=0.7, method="magnitude")
    masks = prune(model, sparsity=0.7, method="magnitude", shuffle=True, seed=3)
    for name, mask in masks.items():
        assert int(mask.sum()) == int(plain[name].sum())
    # Movement: the overlap of the old and new kept sets follows the hypergeometric law of a uniform permutation.
    mask, before = masks["0.weight"], plain["0.weight"]
    n, kept = mask.numel(), int(mask.sum())
    expected = kept * kept / n
    sd = math.sqrt(kept * (kept / n) * ((n - kept) / n) * ((n - kept) / (n - 1)))
    assert abs(int((mask & before).sum()) - expected) < 5 * sd
    # Weights: kept entries hold their original values (also where newly kept), pruned ones are exactly 0.
    params, originals = dict(model.named_parameters()), dict(original.named_parameters())
    for name, mask in masks.items():
        assert torch.equal(params[name].detach(), torch.where(mask, originals[name].detach(), 0.0))
    assert bool((masks["0.weight"] & ~plain["0.weight"]).any())  # some newly kept positions exist


def test_shuffle_is_seeded_and_differs_per_tensor():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 40), nn.Linear(40, 40))
    with torch.no_grad():
        model[1].weight.copy_(model[0].weight)  # identical masks before the shuffle (local magnitude)
    run = dict(sparsity=0.5, method="magnitude", scope="local", shuffle=True)
    a = prune(copy.deepcopy(model), seed=1, **run)
    b = prune(copy.deepcopy(model), seed=1, **run)
    c = prune(copy.deepcopy(model), seed=2, **run)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)
    assert not torch.equal(a["0.weight"], a["1.weight"])
    torch.manual_seed(7)
    d = prune(copy.deepcopy(model), **run)
    torch.manual_seed(7)
    e = prune(copy.deepcopy(model), **run)
    assert all(torch.equal(d[n], e[n]) for n in d)  # seed=None: torch's global generator


def test_shuffle_with_starting_masks_stays_inside_them():
    start = [torch.rand(30, 30) < 0.5]
    final = [start[0] & (torch.rand(30, 30) < 0.4)]
    (shuffled,) = shuffle_masks(final, start, torch.Generator().manual_seed(0))
    assert int(shuffled.sum()) == int(final[0].sum())
    assert not bool((shuffled & ~start[0]).any()) and not torch.equal(shuffled, final[0])
    torch.manual_seed(0)
    net = mlp([8, 16])
    data = ScoringData(torch.zeros(1, 8))
    first = prune_with(copy.deepcopy(net), PruningSettings.create(sparsity=0.5, method="magnitude"), data)
    second = prune_with(
        net, PruningSettings.create(sparsity=0.8, method="magnitude", shuffle=True, seed=0), data, masks=first
    )
    assert all(not bool((second[n] & ~first[n]).any()) for n in first)
    assert int(_flat(second).sum()) == 176 - prune_count(0.2, 176)


# -- reinitialize --------------------------------------------------------------------------------


def test_reinitialize_redraws_kept_weights_with_each_layers_initializer():
    torch.manual_seed(0)
    model = convnet([2, 4, 4], size=4, bn=True)
    original = copy.deepcopy(model)
    state = torch.random.get_rng_state()
    masks = prune(model, sparsity=0.8, method="magnitude", reinitialize=True, seed=11)
    assert torch.equal(torch.random.get_rng_state(), state)  # seeded draws leave the global state alone
    # Independently: the same modules' reset_parameters, in order, from the same seed.
    fresh = copy.deepcopy(original)
    torch.manual_seed(reinitialize_seed(11))
    for module in fresh.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.reset_parameters()
    expected_masks = prune(copy.deepcopy(original), sparsity=0.8, method="magnitude")
    params, fresh_params, old = (
        dict(model.named_parameters()),
        dict(fresh.named_parameters()),
        dict(original.state_dict()),
    )
    for name, mask in masks.items():
        assert torch.equal(mask, expected_masks[name])  # masks from the original weights
        assert torch.equal(params[name].detach(), torch.where(mask, fresh_params[name].detach(), 0.0))
        assert not torch.equal(params[name].detach()[mask], old[name][mask])
    for name in ["0.bias", "3.bias", "7.bias"]:  # the layers' biases are re-drawn too
        assert torch.equal(params[name].detach(), fresh_params[name].detach())
    assert torch.equal(params["1.weight"].detach(), old["1.weight"])  # BatchNorm is not re-drawn


def test_reinitialize_with_the_seed_the_model_was_built_from_still_redraws():
    """seed_everything(s) then a model, then reinitialize with seed=s: the kept weights must change."""
    torch.manual_seed(7)
    model = mlp([8, 16, 4])
    original = copy.deepcopy(model)
    masks = prune(model, sparsity=0.5, method="magnitude", reinitialize=True, seed=7)
    params, old = dict(model.named_parameters()), dict(original.named_parameters())
    for name, mask in masks.items():
        assert not torch.equal(params[name].detach()[mask], old[name].detach()[mask]), name


def test_reinitialize_resets_a_tied_tensor_once_by_its_owner():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.head = nn.Linear(6, 10)
            self.head.weight = self.emb.weight

    torch.manual_seed(0)
    model = Tied()
    head_bias = model.head.bias.detach().clone()
    calls = []
    for module in (model.emb, model.head):
        reset = module.reset_parameters
        module.reset_parameters = lambda reset=reset, module=module: (calls.append(module), reset())[1]
    masks = prune(model, sparsity=0.5, method="magnitude", reinitialize=True, seed=0)
    assert calls == [model.emb] and list(masks) == ["emb.weight"]
    assert torch.equal(model.head.bias.detach(), head_bias)
    fresh = nn.Embedding(10, 6)
    torch.manual_seed(reinitialize_seed(0))
    fresh.reset_parameters()
    assert torch.equal(model.emb.weight.detach(), torch.where(masks["emb.weight"], fresh.weight.detach(), 0.0))


def test_reinitialize_without_reset_parameters_is_refused_before_anything_changes():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 4))

        def forward(self, x):
            return x @ self.weight

    model = nn.Sequential(nn.Linear(4, 4), Scale())
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"reinitialize=True.*Scale '1' \(owner of prunable '1.weight'\)"):
        prune(model, sparsity=0.5, method="magnitude", parameters=["*weight"], reinitialize=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- train_mode ----------------------------------------------------------------------------------


def _bn_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(64, 3)
    )
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
        model[1].num_batches_tracked.fill_(7)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("method", ["synflow", "snip"])
def test_train_mode_scores_with_batchnorm_in_train_mode_and_restores_everything(method):
    model = _bn_model()
    model.train()
    model[3].eval()  # a mixed mode must come back as it was
    before_modes = [m.training for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((type(m).__name__, m.training))) for m in model[1:4]]
    batches = [(torch.randn(8, 2, 4, 4), torch.randint(0, 3, (8,)))]
    example = torch.zeros(1, 2, 4, 4)
    masks = prune(
        model, sparsity=0.5, method=method, example_input=example, batches=batches, train_mode=True, iterations=2
    )
    for hook in hooks:
        hook.remove()
    assert set(seen) == {("BatchNorm2d", True), ("ReLU", False), ("Dropout", False)}
    assert [m.training for m in model.modules()] == before_modes
    for key, value in model.state_dict().items():
        expected = torch.where(masks[key], before[key], 0.0) if key in masks else before[key]
        assert torch.equal(value, expected), key


def test_train_mode_restores_statistics_after_a_failure():
    model = _bn_model().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def stop(iteration, masks):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prune(model, sparsity=0.5, example_input=torch.zeros(1, 2, 4, 4), train_mode=True, on_iteration=stop)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m.training for m in model.modules())


def test_train_mode_synflow_scores_are_the_references_batch_statistics_scores():
    model = _bn_model().double()  # float64: batch statistics subtract nearly equal values, so compare exactly
    example = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    ours = score(copy.deepcopy(model), example_input=example, train_mode=True)
    plain = score(copy.deepcopy(model), example_input=example)
    reference_model = copy.deepcopy(model).train()
    reference_model[3].eval()
    expected = reference_scores(reference_model, list(ours), "synflow", example)
    for name, values in ours.items():
        # Two identical examples: the same batch statistics as one, and twice its R.
        scale = float(expected[name].abs().max())
        torch.testing.assert_close(values, 2 * expected[name], rtol=1e-9, atol=1e-12 * scale)
        assert not torch.allclose(values, 2 * plain[name])


def test_train_mode_batchnorm1d_is_scored_on_two_examples_and_reports_the_cause():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[1].bias.fill_(0.5)
    # torch refuses batch statistics over one value per channel for a batch of 1; two identical examples are
    # scored instead. Their variance is 0, so the scores before the BatchNorm vanish: the warning says why.
    with pytest.warns(UserWarning, match="train_mode=True BatchNorm normalizes with the statistics"):
        masks = prune(model, sparsity=0.5, example_input=torch.zeros(1, 6), train_mode=True, iterations=3)
    assert sum(int(m.sum()) for m in masks.values()) == 72 - prune_count(0.5, 72)


# -- settings ------------------------------------------------------------------------------------


def test_settings_round_trip_and_accept_older_dicts():
    settings = PruningSettings.create(
        sparsity=0.9, invert=True, shuffle=True, reinitialize=True, train_mode=True, min_density={"b*": 0.2, "a": 0.1}
    )
    assert settings.min_density == (("a", 0.1), ("b*", 0.2))
    assert PruningSettings.from_dict(settings.to_dict()) == settings
    assert hash(settings) == hash(PruningSettings.from_dict(settings.to_dict()))
    older = settings.to_dict()
    for key in ("invert", "shuffle", "reinitialize", "train_mode", "min_density"):
        del older[key]
    assert PruningSettings.from_dict(older) == PruningSettings.create(sparsity=0.9)
    assert PruningSettings.create(sparsity=0.9, min_density=0.0) == PruningSettings.create(sparsity=0.9)
    differ = settings.differences(PruningSettings.create(sparsity=0.9))
    assert set(differ) == {"invert", "shuffle", "reinitialize", "train_mode", "min_density"}
    assert differ["min_density"] == ("{'a': 0.1, 'b*': 0.2}", "None")


BAD_OPTIONS = [
    ({"invert": 1}, TypeError, "`invert` must be True or False, got 1"),
    ({"shuffle": "yes"}, TypeError, "`shuffle` must be True or False"),
    ({"reinitialize": None}, TypeError, "`reinitialize` must be True or False"),
    ({"train_mode": 0}, TypeError, "`train_mode` must be True or False"),
    ({"min_density": 1.5}, ValueError, r"`min_density` must be a number in \[0, 1\]"),
    ({"min_density": {"0.*": -0.1}}, ValueError, r"`min_density`\['0.\*'\] must be a number in \[0, 1\]"),
    ({"min_density": {3: 0.1}}, TypeError, "`min_density` keys must be glob patterns"),
    ({"min_density": "0.*"}, TypeError, "`min_density` must be a number in"),
    ({"min_density": {"nothing*": 0.1}}, ValueError, "`min_density` pattern 'nothing\\*' matches no prunable"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_OPTIONS)
def test_bad_options_are_refused_before_anything_changes(kwargs, error, message):
    model = mlp([4, 4])
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=message):
        prune(model, sparsity=0.5, example_input=torch.zeros(1, 4), **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
