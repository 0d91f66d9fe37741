"""Batches of any format with ``batch_loss``, degenerate data-dependent scores, wrong example inputs."""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lightning_synflow import prune
from lightning_synflow.pruning import score
from tests.helpers import convnet, mlp


def _data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=generator)
    y = torch.randint(0, 3, (16,), generator=generator)
    return x, y


def _tuple_batches():
    x, y = _data()
    return [(x[:8], y[:8]), (x[8:], y[8:])]


def _dict_batches():
    x, y = _data()
    return [{"features": x[:8], "label": y[:8], "id": torch.arange(8)}, {"features": x[8:], "label": y[8:], "id": None}]


def _dict_loss(model, batch):
    return F.cross_entropy(model(batch["features"]), batch["label"])


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_dict_batches_with_batch_loss_equal_tuple_batches(method):
    torch.manual_seed(0)
    model = mlp([4, 8, 8])
    tuples = score(copy.deepcopy(model), method=method, batches=_tuple_batches())
    dicts = score(copy.deepcopy(model), method=method, batches=_dict_batches(), batch_loss=_dict_loss)
    assert all(torch.equal(tuples[n], dicts[n]) for n in tuples)
    a = prune(copy.deepcopy(model), sparsity=0.6, method=method, batches=_tuple_batches())
    b = prune(copy.deepcopy(model), sparsity=0.6, method=method, batches=iter(_dict_batches()), batch_loss=_dict_loss)
    assert all(torch.equal(a[n], b[n]) for n in a)


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.cls = nn.Linear(8, 3)
        self.aux = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = torch.relu(self.body(x))
        return self.cls(hidden), self.aux(hidden), torch.tensor(7)


class LogitsOnly(nn.Module):
    def __init__(self, inner: TwoHeads) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[0]


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_model_with_several_outputs(method):
    torch.manual_seed(0)
    model = TwoHeads()
    seen = []

    def loss(net, batch):
        logits, aux, count = net(batch[0])
        seen.append((logits.detach(), aux.detach(), count))
        return F.cross_entropy(logits, batch[1])

    batches = _tuple_batches()
    ours = prune(copy.deepcopy(model), sparsity=0.5, method=method, batches=batches, batch_loss=loss)
    single = prune(LogitsOnly(copy.deepcopy(model)), sparsity=0.5, method=method, batches=batches)
    assert list(ours) == ["body.weight", "cls.weight", "aux.weight"]
    assert all(torch.equal(ours[n], single[f"inner.{n}"]) for n in ours)
    logits, aux, count = seen[0]
    plain = model(batches[0][0])
    scale = 200.0 if method == "grasp" else 1.0  # GraSP's temperature divides every float output
    assert torch.allclose(logits, plain[0].detach() / scale) and torch.allclose(aux, plain[1].detach() / scale)
    assert int(count) == 7
    assert not model._forward_hooks


def test_batch_loss_and_loss_fn_together_are_refused():
    with pytest.raises(ValueError, match=r"`batch_loss`.*`loss_fn`"):
        prune(
            mlp([4, 4]),
            sparsity=0.5,
            method="snip",
            batches=_tuple_batches(),
            batch_loss=_dict_loss,
            loss_fn=F.mse_loss,
        )
    with pytest.raises(ValueError, match=r"`batch_loss`.*`loss_fn`"):
        score(mlp([4, 4]), method="grasp", batches=_tuple_batches(), batch_loss=_dict_loss, loss_fn=F.mse_loss)


def test_batch_loss_must_return_a_scalar():
    with pytest.raises(TypeError, match="`batch_loss` must return a scalar"):
        prune(mlp([4, 4]), sparsity=0.5, method="snip", batches=_tuple_batches(), batch_loss=lambda m, b: m(b[0]))


def test_default_loss_needs_input_target_pairs():
    with pytest.raises(TypeError, match=r"\(inputs, targets\) pair.*`batch_loss="):
        prune(mlp([4, 4]), sparsity=0.5, method="snip", batches=_dict_batches())


@pytest.mark.parametrize(("method", "label"), [("snip", "SNIP"), ("grasp", "GraSP")])
def test_all_zero_data_scores_are_refused_before_any_weight_changes(method, label):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1))  # one logit: cross-entropy is always 0
    before = copy.deepcopy(model.state_dict())
    x, _ = _data()
    with pytest.raises(ValueError) as info:
        prune(model, sparsity=0.5, method=method, batches=[(x, torch.zeros(16, dtype=torch.long))])
    message = str(info.value)
    assert f"Every {label} score is exactly zero" in message
    assert "does not depend on the weights" in message and "single logit" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_loss_detached_from_the_weights_is_refused_as_all_zero():
    x, y = _data()
    with pytest.raises(ValueError, match="Every SNIP score is exactly zero.*detached"):
        prune(
            mlp([4, 4]),
            sparsity=0.5,
            method="snip",
            batches=[(x, y)],
            batch_loss=lambda m, b: F.cross_entropy(m(b[0]).detach(), b[1]),
        )


def test_wrong_example_input_shape_names_example_input_and_the_shape():
    from lightning_synflow.pruning.inputs import ExampleInputError

    model = convnet([2, 3], size=4)
    model.train()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ExampleInputError) as info:
        prune(model, sparsity=0.5, example_input=torch.zeros(1, 64))
    error = info.value
    assert isinstance(error, ValueError)
    assert error.shapes == [[1, 64]]
    assert isinstance(error.__cause__, RuntimeError) and error.cause == str(error.__cause__)
    message = str(error)
    assert "`example_input`" in message and "[1, 64]" in message and error.cause in message
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_wrong_example_input_lists_every_shape_tried():
    from lightning_synflow.pruning.inputs import ExampleInputError

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(5, 4)

        def forward(self, x, y):
            return self.a(x) + self.b(y)

    with pytest.raises(ExampleInputError, match=r"\[1, 3\].*\[1, 6\]") as info:
        prune(TwoInputs(), sparsity=0.5, example_input={"x": torch.zeros(2, 3), "y": torch.zeros(2, 6)})
    assert info.value.shapes == [[1, 3], [1, 6]]


def test_weights_backward_never_reaches_are_named_in_a_warning():
    from torch.utils.checkpoint import checkpoint

    class Reentrant(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Linear(16, 32), nn.ReLU())
            self.b = nn.Linear(32, 4)

        def forward(self, x):
            return self.b(checkpoint(self.a, x, use_reentrant=True))

    with pytest.warns(UserWarning, match=r"No gradient reached \['a.0.weight'\]"):
        prune(Reentrant(), sparsity=0.5, iterations=2, example_input=torch.zeros(1, 16))
