"""The paper's networks and a LightningModule that trains any of them."""

from lightning_synflow.models.mlp import MLP
from lightning_synflow.models.resnet import BasicBlock, ResNet, cifar_resnet, resnet18, wide_resnet18
from lightning_synflow.models.vgg import CifarVGG, vgg11, vgg13, vgg16, vgg19

__all__ = [
    "MLP", "BasicBlock", "CifarVGG", "ResNet", "cifar_resnet", "resnet18", "vgg11", "vgg13", "vgg16", "vgg19",
    "wide_resnet18",
]
