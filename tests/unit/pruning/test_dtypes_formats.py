"""Memory formats and floating-point dtypes of the prunable weights."""

import copy

import pytest
import torch
from torch import nn

from lightning_synflow import prune
from lightning_synflow.pruning import score
from lightning_synflow.pruning.schedule import prune_count
from tests.helpers import convnet

METHODS = ["synflow", "magnitude", "random", "snip", "grasp"]


def _batches(shape, classes=3, count=2):
    generator = torch.Generator().manual_seed(0)
    return [
        (torch.randn(shape, generator=generator), torch.randint(0, classes, (shape[0],), generator=generator))
        for _ in range(count)
    ]


def _kept(masks):
    return sum(int(m.sum()) for m in masks.values())


def _expected_kept(masks, sparsity):
    total = sum(m.numel() for m in masks.values())
    return total - prune_count(1 - sparsity, total)


@pytest.mark.parametrize("method", METHODS)
def test_channels_last_model_prunes_like_contiguous_and_keeps_its_format(method):
    torch.manual_seed(0)
    reference = convnet([2, 3, 4], size=5, bn=True)
    model = copy.deepcopy(reference).to(memory_format=torch.channels_last)
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs)
    storage = [p.data_ptr() for p in model.parameters()]
    kwargs = {
        "sparsity": 0.7,
        "method": method,
        "iterations": 3 if method == "synflow" else 1,
        "example_input": torch.zeros(1, 2, 5, 5),
        "batches": _batches((8, 2, 5, 5), count=1),
        "seed": 0,
    }
    masks = prune(model, **kwargs)
    expected = prune(reference, **kwargs)
    assert list(masks) == list(expected)
    for name, mask in masks.items():
        assert mask.is_contiguous() and torch.equal(mask, expected[name]), name
    assert _kept(masks) == _expected_kept(masks, 0.7)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert [p.data_ptr() for p in model.parameters()] == storage
    params = dict(model.named_parameters())
    for name, value in reference.state_dict().items():
        assert torch.equal(params[name] if name in params else model.state_dict()[name], value), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_every_float_dtype(method, dtype):
    torch.manual_seed(0)
    model = convnet([2, 3], size=4).to(dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = prune(
        model,
        sparsity=0.6,
        method=method,
        iterations=2 if method == "synflow" else 1,
        example_input=torch.zeros(1, 2, 4, 4, dtype=dtype),
        batches=_batches((4, 2, 4, 4), count=1),
        seed=0,
    )
    assert _kept(masks) == _expected_kept(masks, 0.6)
    for name, value in model.state_dict().items():
        assert value.dtype == before[name].dtype
        expected = before[name] if name not in masks else torch.where(masks[name], before[name], 0)
        assert torch.equal(value, expected), name


def test_large_fp16_layer_whose_fp16_sum_overflows():
    layer = nn.Linear(300, 300, bias=False).half()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
    assert not bool(torch.isfinite(layer.weight.sum()))  # the fp16 sum of |theta| overflows (> 65504)
    model = nn.Sequential(layer)
    scores = score(copy.deepcopy(model), method="magnitude")["0.weight"]
    masks = prune(model, sparsity=0.5, method="magnitude")
    assert _kept(masks) == 45_000
    assert scores.dtype == torch.float32 and bool(torch.isfinite(scores).all())
    kept = masks["0.weight"]
    assert float(scores[kept].min()) >= float(scores[~kept].max())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_scores_are_float32(dtype):
    model = convnet([2, 3], size=4).to(dtype)
    for method in ("magnitude", "random"):
        scores = score(model, method=method, seed=0)
        assert all(s.dtype == torch.float32 for s in scores.values()), method
