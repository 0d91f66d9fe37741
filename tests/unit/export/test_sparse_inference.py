import copy
import pickle

import pytest
import torch
from torch import nn

from lightning_synflow.export.sparse_inference import (
    DEFAULT_MAX_DENSITY,
    SparseConv2d,
    SparseLinear,
    alternated_times,
    sparsify,
)
from lightning_synflow.masks import apply_masks
from tests.helpers import convnet, mlp
from tests.unit.export.test_sparse_file import random_masks


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def masked_mlp(density: float = 0.05) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    model = mlp([64, 128, 128], classes=10)
    return model, random_masks(model, density)


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("context", [torch.inference_mode, torch.no_grad])
def test_sparse_copy_computes_what_the_dense_masked_model_does(batch, context):
    model, masks = masked_mlp()
    reference = apply_masks(copy.deepcopy(model), masks).eval()
    fast = sparsify(model, masks)
    assert [type(m) for m in fast if isinstance(m, (nn.Linear, SparseLinear))] == [SparseLinear] * 3
    x = torch.randn(batch, 64)
    with context():
        out = fast(x)
    assert out.shape == (batch, 10)
    assert relative_error(out, reference(x).detach()) <= 1e-4


def test_sparse_layers_in_a_chain_hand_over_the_transposed_product_and_the_end_is_contiguous():
    model, masks = masked_mlp()
    fast = sparsify(model, masks)
    assert [fast[i].transposed_output for i in (1, 3, 5)] == [True, True, False]
    assert "transposed_output=True" in repr(fast[1]) and "transposed_output" not in repr(fast[5])
    x = torch.randn(6, 64)
    with torch.inference_mode():
        assert not fast[1](x).is_contiguous() and fast[5](torch.randn(6, 128)).is_contiguous()
        out = fast(x)
    assert out.is_contiguous() and out.view(-1).shape == (60,)
    alone = SparseLinear(model[1])
    assert not alone.transposed_output and alone(x).is_contiguous()


def test_without_masks_the_exact_zeros_are_pruned_and_the_model_is_untouched():
    model, masks = masked_mlp()
    apply_masks(model, masks)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = sparsify(model)
    assert not fast.training and model.training
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert fast[1].nnz == int(masks["1.weight"].sum())
    x = torch.randn(3, 64)
    assert relative_error(fast(x), model(x).detach()) <= 1e-4  # also usable without no_grad


def test_layers_denser_than_max_density_stay_dense():
    model, masks = masked_mlp(0.05)
    masks["5.weight"] = torch.ones(10, 128, dtype=torch.bool)  # the classifier keeps everything
    fast = sparsify(model, masks)
    assert [type(fast[i]) for i in (1, 3, 5)] == [SparseLinear, SparseLinear, nn.Linear]
    dense = sparsify(model, masks, max_density=0.0)
    assert all(type(dense[i]) is nn.Linear for i in (1, 3, 5))
    assert 0 < DEFAULT_MAX_DENSITY < 1
    with pytest.raises(ValueError, match="`max_density` must be in"):
        sparsify(model, max_density=1.5)


def test_sparse_linear_repr_shapes_and_no_bias():
    layer = nn.Linear(8, 4, bias=False)
    with torch.no_grad():
        layer.weight.mul_(torch.rand(4, 8) < 0.25)
    sparse = SparseLinear(layer)
    nnz = int(torch.count_nonzero(layer.weight))
    assert repr(sparse) == (
        f"SparseLinear(in_features=8, out_features=4, nnz={nnz}, density={nnz / 32:.4f}, bias=False)"
    )
    with torch.inference_mode():
        for shape in [(8,), (1, 8), (5, 8), (2, 3, 8), (0, 8)]:
            x = torch.randn(shape)
            out = sparse(x)
            assert out.shape == (*shape[:-1], 4)
            assert torch.allclose(out, layer(x), atol=1e-6)


def test_a_bare_linear_layer_becomes_a_sparse_linear():
    layer = nn.Linear(6, 5)
    with torch.no_grad():
        layer.weight[1:].zero_()
    fast = sparsify(layer, max_density=0.5)
    assert isinstance(fast, SparseLinear) and fast.nnz == 6
    x = torch.randn(2, 6)
    assert relative_error(fast(x), layer(x).detach()) <= 1e-6


def test_sparse_copy_deep_copies_pickles_and_moves_to_float64():
    model, masks = masked_mlp()
    fast = sparsify(model, masks)
    x = torch.randn(4, 64)
    with torch.no_grad():
        expected = fast(x)
        assert torch.equal(copy.deepcopy(fast)(x), expected)
        assert torch.equal(pickle.loads(pickle.dumps(fast))(x), expected)
        double = fast.double()(x.double())
    assert double.dtype == torch.float64 and relative_error(double.float(), expected) <= 1e-6


def test_other_dtypes_and_linear_subclasses_stay_dense():
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    model = nn.Sequential(nn.Linear(8, 8).half())
    with torch.no_grad():
        attention.out_proj.weight.zero_()
        model[0].weight.zero_()
    fast_attention = sparsify(attention)
    assert type(fast_attention.out_proj) is type(attention.out_proj)
    assert isinstance(sparsify(model)[0], nn.Linear)
    x = torch.randn(2, 3, 8)
    with torch.no_grad():
        assert torch.allclose(fast_attention(x, x, x)[0], attention.eval()(x, x, x)[0])


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(4, 6, 3, padding=1),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
        nn.Conv2d(4, 6, (3, 1), dilation=(2, 1), padding="same"),
        nn.Conv2d(4, 6, 2, padding="valid"),
    ],
)
def test_sparse_conv_computes_the_convolution(conv):
    with torch.no_grad():
        conv.weight.mul_(torch.rand(conv.weight.shape) < 0.2)
    sparse = SparseConv2d(conv)
    assert "density=" in repr(sparse)
    with torch.inference_mode():
        for x in (torch.randn(3, 4, 7, 7), torch.randn(4, 7, 7)):
            out = sparse(x)
            assert out.is_contiguous() and relative_error(out, conv(x)) <= 1e-5


def test_convs_stay_dense_without_an_example_input_and_are_timed_with_one():
    model = convnet([3, 8, 8], size=6, bn=True)
    masks = random_masks(model, 0.05)
    reference = apply_masks(copy.deepcopy(model), masks).eval()
    assert isinstance(sparsify(model, masks)[0], nn.Conv2d)
    x = torch.randn(2, 3, 6, 6)
    tuned = sparsify(model, masks, example_input=x, repeats=2)
    assert {type(tuned[i]) for i in (0, 3)} <= {nn.Conv2d, SparseConv2d}
    with torch.inference_mode():
        assert relative_error(tuned(x), reference(x)) <= 1e-4
    with pytest.raises(ValueError, match="groups=1"):
        SparseConv2d(nn.Conv2d(4, 4, 3, groups=2))


def test_alternated_times_times_each_function_in_turns():
    calls = []
    times = alternated_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert [len(v) for v in times.values()] == [3, 3] and all(t >= 0 for v in times.values() for t in v)


def test_forward_hooks_still_run_on_a_sparse_linear():
    from lightning_synflow.export.sparse_inference import SparseLinear

    layer = nn.Linear(8, 4)
    with torch.no_grad():
        layer.weight[:, ::2] = 0
    sparse = SparseLinear(layer)
    seen = []
    handle = sparse.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    x = torch.randn(1, 8)
    assert torch.allclose(sparse(x), layer(x), atol=1e-6)
    handle.remove()
    sparse(x)
    assert seen == [torch.Size([1, 4])]


def test_a_copy_first_called_under_inference_mode_runs_outside_it_with_an_input_that_requires_grad():
    # A latency measurement runs under inference_mode first; tensors cached there cannot enter autograd.
    from lightning_synflow import prune, sparsify

    net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    masks = prune(net, sparsity=0.95, example_input=torch.zeros(1, 16))
    fast = sparsify(net, masks)
    x = torch.randn(3, 16)
    with torch.inference_mode():
        expected = fast(x)
    inputs = x.clone().requires_grad_(True)
    output = fast(inputs)
    torch.testing.assert_close(output, expected)
    output.sum().backward()
    assert inputs.grad is not None and inputs.grad.shape == x.shape
