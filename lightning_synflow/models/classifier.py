"""``ImageClassifier``: a LightningModule that trains any network with the paper's recipe."""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy


class ImageClassifier(LightningModule):
    """Cross-entropy classification with accuracy metrics and a step learning-rate schedule.

    The defaults are the paper's CIFAR recipe: SGD with Nesterov momentum 0.9, learning rate 0.1
    divided by 10 at epochs 60 and 120, weight decay 1e-4 (batch 128, 160 epochs in the Trainer/data).
    ``example_input_array`` is set from ``input_shape``, so ``SynFlowPruning`` needs no extra input.

    Args:
        model: the network, e.g. ``CifarVGG(depth=16)`` or, in YAML, a ``class_path`` with ``init_args``.
        num_classes: number of classes, for the accuracy metrics.
        input_shape: shape of one example without the batch dimension, e.g. ``[3, 32, 32]``.
        optimizer: ``sgd``, ``adam`` or ``adamw``.
        lr: learning rate.
        momentum: SGD momentum.
        nesterov: use Nesterov momentum with SGD.
        weight_decay: L2 penalty (decoupled for ``adamw``).
        milestones: epochs at which the learning rate is multiplied by ``lr_gamma``.
        lr_gamma: learning-rate decay factor.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int = 10,
        input_shape: Optional[list[int]] = None,
        optimizer: Literal["sgd", "adam", "adamw"] = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 1e-4,
        milestones: Optional[list[int]] = None,
        lr_gamma: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.example_input_array = torch.zeros(1, *(input_shape or [3, 32, 32]))
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the wrapped network."""
        logits: torch.Tensor = self.model(x)
        return logits

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        inputs, targets = batch
        logits = self(inputs)
        loss = F.cross_entropy(logits, targets)
        metric = getattr(self, f"{stage}_acc")
        metric(logits, targets)
        self.log(f"{stage}/loss", loss, prog_bar=stage != "train")
        self.log(f"{stage}/acc", metric, prog_bar=True, on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Cross-entropy on a training batch."""
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Loss and accuracy on a validation batch."""
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Loss and accuracy on a test batch."""
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        """The optimizer and the step schedule from the constructor arguments."""
        hp = self.hparams
        if hp["optimizer"] == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                self.parameters(),
                lr=hp["lr"],
                momentum=hp["momentum"],
                nesterov=hp["nesterov"] and hp["momentum"] > 0,
                weight_decay=hp["weight_decay"],
            )
        elif hp["optimizer"] == "adam":
            optimizer = torch.optim.Adam(self.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        else:
            optimizer = torch.optim.AdamW(self.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        milestones = hp["milestones"] if hp["milestones"] is not None else [60, 120]
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=hp["lr_gamma"])
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
