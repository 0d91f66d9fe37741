"""CIFAR VGG networks with BatchNorm, as pruned in the paper (Frankle et al.'s CIFAR variant)."""

from __future__ import annotations

import torch
from torch import nn

_PLANS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class CifarVGG(nn.Module):
    """VGG for 32x32 inputs, as in the paper's CIFAR experiments.

    3x3 conv + BatchNorm + ReLU blocks, four max-pools, a 2x2 average pool and one linear
    classifier (512 -> classes).

    Args:
        depth: 11, 13, 16 or 19.
        num_classes: output classes.
        in_channels: input channels.
        batch_norm: put BatchNorm after every convolution (the paper's ``VGG-*-BN``).
    """

    def __init__(self, depth: int = 16, num_classes: int = 10, in_channels: int = 3, batch_norm: bool = True) -> None:
        super().__init__()
        if depth not in _PLANS:
            raise ValueError(f"`depth` must be one of {sorted(_PLANS)}, got {depth!r}.")
        layers: list[nn.Module] = []
        channels = in_channels
        for spec in _PLANS[depth]:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            assert isinstance(spec, int)
            layers.append(nn.Conv2d(channels, spec, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(spec))
            layers.append(nn.ReLU(inplace=True))
            channels = spec
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(2)
        self.classifier = nn.Linear(512, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of 32x32 images."""
        logits: torch.Tensor = self.classifier(torch.flatten(self.pool(self.features(x)), 1))
        return logits


def _kaiming_init(model: nn.Module) -> None:
    """The paper's initialization: Kaiming-normal Conv/Linear weights, zero biases, BN at (1, 0)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def vgg11(num_classes: int = 10) -> CifarVGG:
    """CIFAR VGG-11-BN."""
    return CifarVGG(11, num_classes)


def vgg13(num_classes: int = 10) -> CifarVGG:
    """CIFAR VGG-13-BN."""
    return CifarVGG(13, num_classes)


def vgg16(num_classes: int = 10) -> CifarVGG:
    """CIFAR VGG-16-BN (14,715,584 prunable weights at 10 classes)."""
    return CifarVGG(16, num_classes)


def vgg19(num_classes: int = 10) -> CifarVGG:
    """CIFAR VGG-19-BN."""
    return CifarVGG(19, num_classes)
