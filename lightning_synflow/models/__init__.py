"""The paper's networks and a LightningModule that trains any of them."""

from lightning_synflow.models.mlp import MLP
from lightning_synflow.models.resnet import (
    BasicBlock,
    CifarResNet,
    ResNet,
    ResNet18,
    cifar_resnet,
    resnet18,
    wide_resnet18,
)
from lightning_synflow.models.vgg import CifarVGG, vgg11, vgg13, vgg16, vgg19

__all__ = [
    "MLP",
    "BasicBlock",
    "CifarResNet",
    "CifarVGG",
    "ImageClassifier",
    "ResNet",
    "ResNet18",
    "cifar_resnet",
    "resnet18",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "wide_resnet18",
]


def __getattr__(name: str) -> object:
    # ImageClassifier imports Lightning; the plain networks do not need it.
    if name == "ImageClassifier":
        from lightning_synflow.models.classifier import ImageClassifier

        return ImageClassifier
    raise AttributeError(f"module 'lightning_synflow.models' has no attribute {name!r}")
