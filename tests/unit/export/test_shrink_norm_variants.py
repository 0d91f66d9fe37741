"""shrink() on BatchNorm layers without an affine transform, or with a weight and no bias (torch >= 2.13)."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from torch import nn

from lightning_synflow import prune
from lightning_synflow.export import apply_shrink, plan_shrink

HAS_BIAS_FLAG = "bias" in inspect.signature(nn.BatchNorm2d.__init__).parameters


def _net(norm: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        norm,
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


@pytest.mark.parametrize(
    "norm",
    [
        pytest.param(lambda: nn.BatchNorm2d(16, affine=False), id="affine=False"),
        pytest.param(lambda: nn.BatchNorm2d(16, affine=False, track_running_stats=False), id="no-stats"),
        pytest.param(
            lambda: nn.BatchNorm2d(16, bias=False),
            id="bias=False",
            marks=pytest.mark.skipif(not HAS_BIAS_FLAG, reason="BatchNorm has no bias flag before torch 2.13"),
        ),
    ],
)
def test_shrink_keeps_the_norm_variant_and_the_outputs(norm) -> None:
    net = _net(norm())
    example = torch.zeros(1, 3, 8, 8)
    masks = prune(net, compression=30, example_input=example, iterations=20)
    net.eval()
    thin = copy.deepcopy(net)
    plan = plan_shrink(thin, masks, example)
    apply_shrink(thin, plan)
    dense_norm, thin_norm = net[1], thin[1]
    assert thin_norm.num_features < 16
    assert (thin_norm.weight is None) == (dense_norm.weight is None)
    assert (thin_norm.bias is None) == (dense_norm.bias is None)
    assert (thin_norm.running_mean is None) == (dense_norm.running_mean is None)
    assert plan.shrunk_params == sum(p.numel() for p in thin.parameters())
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(thin(x), net(x), rtol=1e-5, atol=1e-6)
