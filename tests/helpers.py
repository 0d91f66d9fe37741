"""Small networks and checks shared by the tests."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

import pytest
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The repository's root folder (configs/, examples/, docs/ and the package live there)."""


def slow_cases(cases: Iterable[object], slow: Collection[object]) -> list[object]:
    """``cases`` for ``pytest.mark.parametrize``, the ones in ``slow`` marked ``slow`` (same test ids)."""
    return [
        pytest.param(*c if isinstance(c, tuple) else (c,), marks=pytest.mark.slow) if c in slow else c for c in cases
    ]


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


class WithUnused(nn.Module):
    """Two 8 -> 8 linear layers, only ``used`` on the path from input to output."""

    def __init__(self):
        super().__init__()
        self.used = nn.Linear(8, 8)
        self.unused = nn.Linear(8, 8)

    def forward(self, x):
        return self.used(x)


# -- Lightning helpers ---------------------------------------------------------------------------

from lightning.pytorch import Callback, LightningModule, Trainer  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402


def random_batches(features: int = 32, samples: int = 64, batch_size: int = 8, classes: int = 4) -> DataLoader:
    """Seeded random inputs labelled by the signs of their first two features (up to four classes)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, features, generator=generator)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return DataLoader(TensorDataset(x, y % classes), batch_size=batch_size)


class TinyClassifier(LightningModule):
    """``net`` trained with cross-entropy on :func:`random_batches`; subclasses pick the layers and the optimizer."""

    def __init__(self, net: nn.Module, features: int, samples: int = 64):
        super().__init__()
        self.net = net
        self.features, self.samples = features, samples
        self.example_input_array = torch.zeros(1, features)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def train_dataloader(self):
        return random_batches(self.features, self.samples)


class SmallNet(LightningModule):
    """A tiny classifier on random data with a configurable optimizer (automatic or manual optimization)."""

    def __init__(self, optimizer: str = "sgd", manual: bool = False, with_input: bool = True):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 4))
        self.head2 = nn.Linear(32, 4)
        self.optimizer_name = optimizer
        self.automatic_optimization = not manual
        if with_input:
            self.example_input_array = torch.zeros(1, 32)

    def forward(self, x):
        return self.net(x) + self.head2(x)

    def _loss(self, batch):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def training_step(self, batch, batch_idx):
        if self.automatic_optimization:
            return self._loss(batch)
        opt_a, opt_b = self.optimizers()
        for opt in (opt_a, opt_b):
            opt.zero_grad()
            self.manual_backward(self._loss(batch))
            opt.step()
        return None

    def train_dataloader(self):
        return random_batches()

    def configure_optimizers(self):
        params = list(self.parameters())
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
        if self.optimizer_name == "adam":
            return torch.optim.Adam(params, lr=0.01, weight_decay=1e-3)
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(params, lr=0.01, weight_decay=0.1)
        if self.optimizer_name == "two":
            return [
                torch.optim.SGD(self.net.parameters(), lr=0.1, momentum=0.9),
                torch.optim.Adam(self.head2.parameters(), lr=0.01),
            ]
        raise ValueError(self.optimizer_name)


class StepChecker(Callback):
    """Asserts after every real optimizer step that pruned weights are exactly zero."""

    def __init__(self, pruning):
        self.pruning = pruning
        self.steps = 0
        self.handles = []

    def on_train_start(self, trainer, pl_module):
        params = dict(pl_module.named_parameters())

        def check(optimizer, args, kwargs):
            self.steps += 1
            for name, mask in self.pruning.masks.items():
                assert bool((params[name][~mask] == 0).all()), name

        self.handles = [opt.register_step_post_hook(check) for opt in trainer.optimizers]

    def on_train_end(self, trainer, pl_module):
        for handle in self.handles:
            handle.remove()


def quiet_trainer(**kwargs) -> Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=1,
        limit_val_batches=0,
    )
    defaults.update(kwargs)
    return Trainer(**defaults)


# -- CLI helpers ---------------------------------------------------------------------------------

import yaml  # noqa: E402


def digits_mlp_config(trainer: dict, pruning: dict) -> str:
    """A quiet ``fit`` config as YAML: an MLP on the digits data, pruned by ``SynFlowPruning(**pruning)``."""
    config = {
        "seed_everything": 0,
        "model": {
            "class_path": "lightning_synflow.models.ImageClassifier",
            "init_args": {
                "model": {
                    "class_path": "lightning_synflow.models.MLP",
                    "init_args": {"in_features": 64, "hidden": [16], "num_classes": 10},
                },
                "num_classes": 10,
                "input_shape": [64],
            },
        },
        "data": {"class_path": "lightning_synflow.data.DigitsDataModule"},
        "trainer": {
            **trainer,
            "limit_val_batches": 0,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "callbacks": [{"class_path": "lightning_synflow.SynFlowPruning", "init_args": pruning}],
        },
    }
    return yaml.safe_dump(config, sort_keys=False)
