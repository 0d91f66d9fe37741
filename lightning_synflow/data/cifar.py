"""CIFAR-10/100 DataModules on torchvision (optional ``vision`` extra; they download the data)."""

from __future__ import annotations

from typing import Any, Optional

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Subset

_STATS = {
    10: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _torchvision() -> Any:
    try:
        import torchvision
    except Exception as error:  # ImportError, or an operator mismatch with the installed torch
        raise ImportError(
            "The CIFAR DataModules need torchvision matching your torch: pip install 'lightning-synflow[vision]'"
        ) from error
    return torchvision


class CIFARDataModule(LightningDataModule):
    """CIFAR-10 or CIFAR-100 with the paper's augmentation (random crop with 4 px padding, horizontal flip).

    Args:
        num_classes: 10 or 100.
        data_dir: where torchvision stores (and downloads) the data.
        batch_size: examples per batch (the paper uses 128).
        val_size: training images held out for validation.
        num_workers: DataLoader workers.
        seed: seed of the train/validation split.
    """

    def __init__(
        self,
        num_classes: int = 10,
        data_dir: str = "./data",
        batch_size: int = 128,
        val_size: int = 5000,
        num_workers: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_classes not in _STATS:
            raise ValueError(f"`num_classes` must be 10 or 100, got {num_classes!r}.")
        self.save_hyperparameters()
        self.input_shape = [3, 32, 32]

    def _dataset(self, train: bool, augment: bool, download: bool = False) -> Any:
        tv = _torchvision()
        mean, std = _STATS[self.hparams["num_classes"]]
        steps = [tv.transforms.RandomCrop(32, padding=4), tv.transforms.RandomHorizontalFlip()] if augment else []
        transform = tv.transforms.Compose([*steps, tv.transforms.ToTensor(), tv.transforms.Normalize(mean, std)])
        cls = tv.datasets.CIFAR10 if self.hparams["num_classes"] == 10 else tv.datasets.CIFAR100
        return cls(self.hparams["data_dir"], train=train, transform=transform, download=download)

    def prepare_data(self) -> None:
        """Download the data once."""
        self._dataset(True, False, download=True)
        self._dataset(False, False, download=True)

    def setup(self, stage: Optional[str] = None) -> None:
        """Build the splits."""
        import torch

        hp = self.hparams
        augmented, plain = self._dataset(True, True), self._dataset(True, False)
        order = torch.randperm(len(plain), generator=torch.Generator().manual_seed(hp["seed"])).tolist()
        self.train_set = Subset(augmented, order[hp["val_size"] :])
        self.val_set = Subset(plain, order[: hp["val_size"]])
        self.test_set = self._dataset(False, False)

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled, augmented training batches."""
        return DataLoader(
            self.train_set, self.hparams["batch_size"], shuffle=True, num_workers=self.hparams["num_workers"]
        )

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation batches."""
        return DataLoader(self.val_set, self.hparams["batch_size"], num_workers=self.hparams["num_workers"])

    def test_dataloader(self) -> DataLoader[Any]:
        """Test batches."""
        return DataLoader(self.test_set, self.hparams["batch_size"], num_workers=self.hparams["num_workers"])
