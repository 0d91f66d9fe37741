"""Small networks and checks shared by the tests."""

from __future__ import annotations

import torch
from torch import nn


def mlp(widths: list[int], bias: bool = True, classes: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b, bias=bias), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], classes, bias=bias))
    return nn.Sequential(*layers)


def convnet(channels: list[int], size: int = 6, classes: int = 3, bias: bool = True, bn: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(channels, channels[1:]):
        layers.append(nn.Conv2d(a, b, 3, padding=1, bias=bias))
        if bn:
            layers.append(nn.BatchNorm2d(b))
        layers.append(nn.ReLU())
    layers += [nn.Flatten(), nn.Linear(channels[-1] * size * size, classes, bias=bias)]
    return nn.Sequential(*layers)


def linearized_flow(model: nn.Module, example: torch.Tensor) -> float:
    """R = 1^T f(1; |theta|) of the model as it is, in float64, on a copy."""
    import copy

    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in [*net.parameters(), *net.buffers()]:
            if t.is_floating_point():
                t.abs_()
        return float(net(torch.ones((1, *example.shape[1:]), dtype=torch.float64)).sum())
