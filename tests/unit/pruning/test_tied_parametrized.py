"""Tied weights (one tensor under several names) and parametrized weights."""

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrizations, parametrize

from lightning_synflow import prune
from lightning_synflow.pruning import score, select_prunable


class TiedLM(nn.Module):
    """A language-model-like network whose output head is the embedding's weight."""

    def __init__(self, vocab: int = 12, dim: int = 6) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.body = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_floating_point(x):
            x = self.emb(x)
        return self.head(torch.relu(self.body(x)))


class TwiceUsed(nn.Module):
    """One Linear weight used by two layers."""

    def __init__(self, shared: bool = True) -> None:
        super().__init__()
        self.a = nn.Linear(5, 5, bias=False)
        self.b = nn.Linear(5, 5, bias=False)
        if shared:
            self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _tokens():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 12, (16,), generator=generator), torch.randint(0, 12, (16,), generator=generator)


def test_tied_weight_is_selected_once_under_its_first_name():
    model = TiedLM()
    assert list(dict(model.named_parameters())) == ["emb.weight", "body.weight", "body.bias"]
    assert list(select_prunable(model)) == ["emb.weight", "body.weight"]
    assert select_prunable(model)["emb.weight"] is model.head.weight


def test_patterns_match_every_name_of_a_tied_weight():
    model = TiedLM()
    assert list(select_prunable(model, parameters=["head.weight"])) == ["emb.weight"]
    assert list(select_prunable(model, parameters=["emb.*", "head.*"])) == ["emb.weight"]
    assert list(select_prunable(model, exclude=["head.weight"])) == ["body.weight"]


@pytest.mark.parametrize("method", ["magnitude", "synflow", "snip"])
def test_tied_embedding_and_head_are_pruned_as_one_tensor(method):
    torch.manual_seed(0)
    model = TiedLM()
    masks = prune(
        model, sparsity=0.5, method=method, iterations=3, example_input=torch.zeros(1, 6), batches=[_tokens()]
    )
    assert list(masks) == ["emb.weight", "body.weight"]
    assert model.head.weight is model.emb.weight
    assert bool((model.emb.weight[~masks["emb.weight"]] == 0).all())
    assert bool((model.head.weight[~masks["emb.weight"]] == 0).all())
    assert sum(int(m.sum()) for m in masks.values()) == 108 - 54


def test_tied_weight_is_scored_with_the_gradient_of_every_use():
    torch.manual_seed(0)
    model = TiedLM()
    tokens, targets = _tokens()
    scores = score(model, method="snip", batches=[(tokens, targets)])
    weight = model.emb.weight
    (gradient,) = torch.autograd.grad(F.cross_entropy(model(tokens), targets), [weight])
    assert torch.allclose(scores["emb.weight"], (gradient * weight).abs().detach())


def test_tied_linear_synflow_score_is_the_sum_over_its_uses():
    torch.manual_seed(0)
    tied = TwiceUsed().double()
    untied = TwiceUsed(shared=False).double()
    untied.load_state_dict({"a.weight": tied.a.weight.detach(), "b.weight": tied.a.weight.detach()})
    example = torch.zeros(1, 5, dtype=torch.float64)
    ours = score(tied, example_input=example)
    parts = score(untied, example_input=example)
    assert list(ours) == ["a.weight"]
    assert torch.allclose(ours["a.weight"], parts["a.weight"] + parts["b.weight"])


def _weight_normed():
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    parametrizations.weight_norm(net[0])
    return net


class Symmetric(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.triu() + x.triu(1).transpose(0, 1)


def _spectral_normed():
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    parametrizations.spectral_norm(net[0])
    return net


def _user_parametrized():
    net = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    parametrize.register_parametrization(net[0], "weight", Symmetric())
    return net


def _old_style_weight_norm():
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nn.utils.weight_norm(net[0])
    return net


PARAMETRIZED = {
    "weight_norm": (_weight_normed, "0.parametrizations.weight.original1", "_WeightNorm"),
    "weight_norm_g": (_weight_normed, "0.parametrizations.weight.original0", "_WeightNorm"),
    "spectral_norm": (_spectral_normed, "0.parametrizations.weight.original", "_SpectralNorm"),
    "user": (_user_parametrized, "0.parametrizations.weight.original", "Symmetric"),
    "old_weight_norm": (_old_style_weight_norm, "0.weight_v", "WeightNorm"),
}


@pytest.mark.parametrize("case", list(PARAMETRIZED))
def test_selecting_the_input_of_a_parametrization_is_refused(case):
    build, name, kind = PARAMETRIZED[case]
    model = build()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError) as info:
        prune(model, sparsity=0.5, method="magnitude", parameters=[name, "2.weight"])
    message = str(info.value)
    assert repr(name) in message and kind in message and "'0.weight'" in message
    assert "does not mask the effective weight" in message and "0 by 0" in message
    assert ("remove_parametrizations" if case != "old_weight_norm" else "remove_weight_norm") in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("case", ["weight_norm", "spectral_norm", "user", "old_weight_norm"])
def test_default_selection_warns_about_parametrized_layers(case):
    build, _, kind = PARAMETRIZED[case]
    model = build()
    with pytest.warns(UserWarning, match=r"'0\.weight'.*" + kind + ".*remove") as record:
        assert list(select_prunable(model)) == ["2.weight"]
    assert "left out" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(select_prunable(model, exclude=["0.*"])) == ["2.weight"]


def test_nothing_but_parametrized_layers_names_them():
    model = nn.Sequential(nn.Linear(4, 3))
    parametrizations.weight_norm(model[0])
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"Nothing to prune.*'0\.weight'"):
        select_prunable(model)


class SafeNormLinear(nn.Linear):
    """Rows normalized to unit norm, zero rows kept at zero: finite forward, 0/0 in backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.weight.norm(dim=1, keepdim=True)
        weight = torch.where(norm > 0, self.weight / norm, torch.zeros_like(self.weight))
        return F.linear(x, weight, self.bias)


def test_nan_synflow_scores_with_a_finite_flow_blame_an_invalid_operation():
    model = nn.Sequential(SafeNormLinear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    with torch.no_grad():
        model[0].weight[0].zero_()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(FloatingPointError) as info:
        prune(model, sparsity=0.5, example_input=torch.zeros(1, 4))
    message = str(info.value)
    assert "NaN" in message and "invalid operation" in message and "0/0" in message
    assert "not from overflow" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
