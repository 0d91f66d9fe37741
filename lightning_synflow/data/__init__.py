"""DataModules: bundled digits (offline) and CIFAR (optional torchvision extra)."""

from lightning_synflow.data.cifar import CIFARDataModule
from lightning_synflow.data.digits import DigitsDataModule

__all__ = ["CIFARDataModule", "DigitsDataModule"]
