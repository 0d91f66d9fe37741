"""Residual networks of the paper: CIFAR ResNet-20..110 and (Wide)ResNet-18 for CIFAR/Tiny ImageNet."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lightning_synflow.models.vgg import _kaiming_init


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection; a 1x1 conv-BN projection when the shape changes.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (2 to downsample).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block output."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A stem conv-BN-ReLU, stages of :class:`BasicBlock`, global average pooling and a linear head.

    Args:
        stages: ``(channels, blocks)`` per stage; every stage after the first downsamples by 2.
        num_classes: output classes.
        in_channels: input channels.
    """

    def __init__(self, stages: list[tuple[int, int]], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        width = stages[0][0]
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks = []
        for index, (channels, count) in enumerate(stages):
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(width, channels, stride))
                width = channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images."""
        out = self.blocks(F.relu(self.bn(self.conv(x))))
        logits: torch.Tensor = self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))
        return logits


class CifarResNet(ResNet):
    """CIFAR ResNet-``depth`` (He et al. 2016): depth = 6n + 2, three stages of width, 2x, 4x channels.

    Args:
        depth: 20, 32, 44, 56, 110, ... (any 6n + 2).
        num_classes: output classes.
        width: channels of the first stage (16 in the paper; 32 for the wide variants).
        in_channels: input channels.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, width: int = 16, in_channels: int = 3) -> None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"`depth` must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth!r}.")
        n = (depth - 2) // 6
        super().__init__([(width, n), (2 * width, n), (4 * width, n)], num_classes, in_channels)


class ResNet18(ResNet):
    """ResNet-18 with a 3x3 stem for 32x32/64x64 inputs (CIFAR, Tiny ImageNet), as trained in the paper.

    Args:
        num_classes: output classes.
        width: channels of the first stage (64; 128 gives WideResNet-18).
        in_channels: input channels.
    """

    def __init__(self, num_classes: int = 10, width: int = 64, in_channels: int = 3) -> None:
        super().__init__([(width, 2), (2 * width, 2), (4 * width, 2), (8 * width, 2)], num_classes, in_channels)


def cifar_resnet(depth: int = 20, num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-``depth`` (270,896 prunable weights for ResNet-20 at 10 classes)."""
    return CifarResNet(depth, num_classes)


def resnet18(num_classes: int = 10) -> ResNet18:
    """ResNet-18 for CIFAR / Tiny ImageNet."""
    return ResNet18(num_classes)


def wide_resnet18(num_classes: int = 10) -> ResNet18:
    """WideResNet-18: ResNet-18 with twice the channels in every stage."""
    return ResNet18(num_classes, width=128)
