"""``SynFlowPruning(shrink=True)``: check the model before pruning, train the thinner network, and resume it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.utils.hooks import RemovableHandle

from lightning_synflow.callback.rounds import state_on_cpu
from lightning_synflow.export.checkpoint import resize_to_state_dict


class ShrinkAfterPruning:
    """``shrink=True`` at fit start, checked before pruning, made good if it still fails after.

    Built before pruning, it refuses a model whose graph shrink cannot follow whatever the masks (the graph
    analysis runs with every weight kept; nothing in the module changes) and keeps a CPU copy of the
    module's state. :meth:`shrink` then shrinks the pruned module, or, where the masks themselves cannot be
    shrunk (a layer with forward hooks or tied weights that loses channels), puts that state back.

    Args:
        pl_module: the module about to be pruned.
        prunable: its prunable parameters, by qualified name.
        example_input: a batch-shaped example its forward accepts; None is refused.

    Raises:
        MisconfigurationException: no example input, or a graph shrink cannot follow (naming the node or
            module, and what to do).
    """

    def __init__(self, pl_module: LightningModule, prunable: Mapping[str, torch.Tensor], example_input: Any) -> None:
        if example_input is None:
            raise MisconfigurationException(
                "SynFlowPruning(shrink=True) follows the model's graph with an example input: set the "
                "LightningModule's `example_input_array`, or pass `input_shape`."
            )
        from lightning_synflow.export.shrink import plan_shrink

        every_weight = {name: torch.ones((), dtype=torch.bool).expand(p.shape) for name, p in prunable.items()}
        try:
            plan_shrink(pl_module, every_weight, example_input)
        except ValueError as error:
            raise MisconfigurationException(f"{_CANNOT_SHRINK}: {error} {_NOTHING_PRUNED}") from error
        self.example_input = example_input
        self._before = state_on_cpu(pl_module)

    def shrink(
        self, trainer: Trainer, pl_module: LightningModule, masks: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """:func:`shrink_in_place` on the pruned module.

        Raises:
            MisconfigurationException: the masks cannot be shrunk; the module's state is back as it was when
                this object was built.
        """
        try:
            return shrink_in_place(trainer, pl_module, masks, self.example_input)
        except ValueError as error:
            pl_module.load_state_dict(self._before)
            raise MisconfigurationException(f"{_CANNOT_SHRINK}: {error} {_NOTHING_PRUNED}") from error


_CANNOT_SHRINK = "SynFlowPruning(shrink=True) cannot shrink this model"
_NOTHING_PRUNED = (
    "Nothing was pruned: the model is as it was. Pass shrink=False to train the pruned model at full width "
    "(lightning_synflow.shrink(model, masks, example_input, exclude=[...]) can shrink a copy after training)."
)


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
