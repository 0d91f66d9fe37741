"""A fully connected ReLU network."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class MLP(nn.Sequential):
    """Flatten, then Linear-ReLU layers and a linear classifier.

    Args:
        in_features: flattened input size.
        hidden: widths of the hidden layers.
        num_classes: output classes.
        bias: use biases in every Linear layer.
    """

    def __init__(
        self, in_features: int = 64, hidden: Sequence[int] = (300, 300, 300), num_classes: int = 10, bias: bool = True
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size, bias=bias), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, num_classes, bias=bias))
        super().__init__(*layers)
