"""``DigitsDataModule``: scikit-learn's bundled 8x8 digits, offline, with a deterministic split."""

from __future__ import annotations

from typing import Optional

import torch
from lightning.pytorch import LightningDataModule
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


class DigitsDataModule(LightningDataModule):
    """The 1,797 handwritten digits that ship inside scikit-learn (no download), split 70/10/20.

    Pixels are scaled to [0, 1]. Images can be flattened for MLPs or upsampled and repeated over
    channels for conv nets built for CIFAR (``image_size=32, channels=3``).

    Args:
        batch_size: examples per batch.
        flatten: return vectors of 64 (or ``channels * image_size**2``) features instead of images.
        image_size: side of the (bilinearly upsampled) images; 8 keeps the originals.
        channels: number of channels (the gray image repeated).
        val_fraction: fraction of examples in the validation set.
        test_fraction: fraction of examples in the test set.
        seed: seed of the split (the split is deterministic for a given seed).
        num_workers: DataLoader workers.
    """

    num_classes = 10

    def __init__(
        self,
        batch_size: int = 64,
        flatten: bool = True,
        image_size: int = 8,
        channels: int = 1,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"`image_size` must be >= 8 (the digits are 8x8), got {image_size}.")
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError("`val_fraction` and `test_fraction` must be in (0, 1) and sum to less than 1.")
        self.save_hyperparameters()
        self.splits: dict[str, TensorDataset] = {}

    @property
    def input_shape(self) -> list[int]:
        """Shape of one example without the batch dimension."""
        hp = self.hparams
        shape = [hp["channels"], hp["image_size"], hp["image_size"]]
        return [shape[0] * shape[1] * shape[2]] if hp["flatten"] else shape

    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            from sklearn.datasets import load_digits
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("DigitsDataModule needs scikit-learn: pip install 'lightning-synflow[demo]'") from error
        digits = load_digits()
        hp = self.hparams
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        if hp["image_size"] != 8:
            images = F.interpolate(
                images, size=(hp["image_size"], hp["image_size"]), mode="bilinear", align_corners=False
            )
        images = images.repeat(1, hp["channels"], 1, 1)
        if hp["flatten"]:
            images = images.flatten(1)
        return images, torch.tensor(digits.target, dtype=torch.long)

    def setup(self, stage: Optional[str] = None) -> None:
        """Build the three splits (once)."""
        if self.splits:
            return
        images, targets = self._tensors()
        hp = self.hparams
        order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(hp["seed"]))
        n_test = int(round(hp["test_fraction"] * len(order)))
        n_val = int(round(hp["val_fraction"] * len(order)))
        parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
        self.splits = {name: TensorDataset(images[index], targets[index]) for name, index in parts.items()}

    def _loader(self, split: str, shuffle: bool) -> DataLoader[tuple[torch.Tensor, ...]]:
        self.setup()
        return DataLoader(
            self.splits[split],
            batch_size=self.hparams["batch_size"],
            shuffle=shuffle,
            num_workers=self.hparams["num_workers"],
        )

    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        """Shuffled training batches."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        """Validation batches."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        """Test batches."""
        return self._loader("test", shuffle=False)
