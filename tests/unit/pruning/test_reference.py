"""Our masks against the reference implementation's semantics (tests/reference_semantics.py)."""

import copy
import math

import pytest
import torch

from lightning_synflow import prune
from lightning_synflow.models import MLP, cifar_resnet, vgg16
from tests.helpers import slow_cases
from tests.reference_semantics import reference_prune

EXAMPLES = {
    "vgg16_bn": (lambda: vgg16(10), torch.zeros(1, 3, 32, 32)),
    "resnet20": (lambda: cifar_resnet(20), torch.zeros(1, 3, 32, 32)),
    "mlp": (lambda: MLP(3 * 32 * 32, [100] * 5, 10), torch.zeros(1, 3, 32, 32)),
}


def _batches(example, classes=10, count=2, size=8):
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn((size, *example.shape[1:]), generator=generator),
            torch.randint(0, classes, (size,), generator=generator),
        )
        for _ in range(count)
    ]


def _compare(ours, reference, final_scores):
    """Equal masks, except where the reference's final scores tie at its threshold."""
    for name, mask in ours.items():
        differ = mask != reference[name].bool()
        if bool(differ.any()):
            tied = final_scores[name][differ]
            threshold = torch.cat([s.flatten() for s in final_scores.values()])
            assert bool((tied == tied[0]).all()), name
            assert int((threshold == tied[0]).sum()) > 1, name


@pytest.mark.parametrize("arch", slow_cases(EXAMPLES, {"vgg16_bn"}))
@pytest.mark.parametrize("method", ["synflow", "magnitude", "snip", "grasp"])
def test_single_shot_masks_equal_reference(arch, method):
    build, example = EXAMPLES[arch]
    torch.manual_seed(0)
    model = build()
    batches = _batches(example)
    reference, scores = reference_prune(model, 0.01, method, 1, example, batches)
    ours = prune(
        copy.deepcopy(model), compression=100, method=method, iterations=1, example_input=example, batches=batches
    )
    _compare(ours, reference, scores)


@pytest.mark.parametrize(
    ("arch", "iterations"),
    slow_cases([("resnet20", 100), ("mlp", 100), ("vgg16_bn", 20)], {("resnet20", 100), ("vgg16_bn", 20)}),
)
def test_iterative_synflow_follows_reference(arch, iterations):
    build, example = EXAMPLES[arch]
    torch.manual_seed(0)
    model = build()
    reference, scores = reference_prune(model, 10**-2.5, "synflow", iterations, example)
    ours = prune(copy.deepcopy(model), compression=10**2.5, iterations=iterations, example_input=example)
    total = sum(m.numel() for m in ours.values())
    assert sum(int(m.sum()) for m in ours.values()) == total - math.floor((1 - 10**-2.5) * total)
    kept_ours = sum(int(m.sum()) for m in ours.values())
    shared = sum(int((m & reference[n].bool()).sum()) for n, m in ours.items())
    assert shared / kept_ours > 0.99
    for name, mask in ours.items():
        ours_density = float(mask.float().mean())
        reference_density = float(reference[name].mean())
        assert ours_density == pytest.approx(reference_density, rel=0.015, abs=2 / mask.numel())


def test_random_keeps_about_density_per_layer():
    model = vgg16(10)
    masks = prune(model, compression=10, method="random", seed=0)
    for mask in masks.values():
        n = mask.numel()
        assert abs(int(mask.sum()) - 0.1 * n) <= 6 * math.sqrt(n * 0.09) + 1
