"""``SynFlowPruning(shrink=True)``: train the thinner network, and resume it."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.utils.hooks import RemovableHandle

from lightning_synflow.export.checkpoint import resize_to_state_dict


def shrink_in_place(
    trainer: Trainer, pl_module: LightningModule, masks: dict[str, torch.Tensor], example_input: Any
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Replace ``pl_module``'s layers by thinner ones, rebuild its optimizers and LR schedulers.

    Returns:
        The masks of the thinner tensors, and metrics: dense and shrunk MACs (per example) and parameters.
    """
    from lightning_synflow.export.shrink import apply_shrink, plan_shrink

    plan = plan_shrink(pl_module, masks, example_input)
    masks = apply_shrink(pl_module, plan, masks)
    # configure_optimizers runs again over the new parameters (and builds the LR schedulers anew).
    trainer.strategy.setup_optimizers(trainer)
    metrics = {
        "pruning/params_dense": float(plan.dense_params),
        "pruning/params_shrunk": float(plan.shrunk_params),
        "pruning/macs_dense": float(plan.dense_macs or 0),
        "pruning/macs_shrunk": float(plan.shrunk_macs or 0),
    }
    return masks, metrics


class ResizeOnLoad:
    """Gives a freshly built module the thinner layers of a shrunk checkpoint just before its weights load.

    Registered as a ``load_state_dict`` pre-hook while a fit that may resume runs; ``resized`` tells
    whether it rebuilt anything.
    """

    def __init__(self, module: nn.Module) -> None:
        self.resized = False
        self._handle: RemovableHandle | None = module.register_load_state_dict_pre_hook(self)

    def __call__(self, module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
        """The pre-hook: resize the root module's layers to the incoming state_dict's shapes."""
        if prefix:
            return
        self.resized = bool(resize_to_state_dict(module, state_dict)) or self.resized

    def remove(self) -> None:
        """Stop resizing."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
