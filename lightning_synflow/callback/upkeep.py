"""Keeping masks in force on a module while it trains."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class MaskUpkeep:
    """Holds a module's masks in force: weights, gradients and optimizer state of pruned entries stay zero.

    Gradients of pruned entries are zeroed right after every backward pass (before gradient clipping,
    in automatic and manual optimization alike), and the weights are masked again after every real
    optimizer step. The parameters an optimizer steps are read from its ``param_groups`` whenever they
    change, so a group added mid-fit (``BaseFinetuning.unfreeze_and_add_param_group``) is masked from its
    first step, and its pruned entries' optimizer state is zeroed.

    Args:
        module: the pruned module.
        masks: boolean masks (True = kept) keyed by qualified parameter name.

    Raises:
        ValueError: a mask names a parameter the module lacks, or its shape differs.
    """

    def __init__(self, module: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        params = dict(module.named_parameters())
        missing = [name for name in masks if name not in params]
        if missing:
            raise ValueError(f"the masks name parameters that the module does not have: {missing[:5]}")
        for name, mask in masks.items():
            if mask.shape != params[name].shape:
                raise ValueError(
                    f"the mask of {name!r} has shape {list(mask.shape)}, the parameter {list(params[name].shape)}"
                )
        #: Masks on each parameter's device, keyed by name.
        self.masks = {name: mask.to(params[name].device) for name, mask in masks.items()}
        # uint8 views of the boolean masks: multiplying by them is about twice as fast as by bool.
        self._by_param = {params[name]: mask.view(torch.uint8) for name, mask in self.masks.items()}
        self._hooks: list[RemovableHandle] = []
        self._stepped: dict[torch.optim.Optimizer, tuple[Any, list[torch.Tensor], list[torch.Tensor]]] = {}

    @torch.no_grad()
    def mask_weights(self) -> None:
        """Zero the pruned entries of every masked weight."""
        torch._foreach_mul_(list(self._by_param), list(self._by_param.values()))

    def attach(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Mask the weights and the optimizers' state, and re-mask after each step of ``optimizers``."""
        self.detach()
        self.mask_weights()
        for optimizer in optimizers:
            self._masked_in(optimizer)
            self._hooks.append(optimizer.register_step_pre_hook(self._before_step))
            self._hooks.append(optimizer.register_step_post_hook(self._after_step))

    def detach(self) -> None:
        """Remove every hook this object put on optimizers."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self._stepped = {}

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of pruned entries (after backward, before clipping and the step)."""
        pairs = [(p.grad, m) for p, m in self._by_param.items() if p.grad is not None]
        if pairs:
            grads, kept = zip(*pairs)
            torch._foreach_mul_(list(grads), list(kept))

    def _masked_in(self, optimizer: torch.optim.Optimizer) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The masked parameters ``optimizer`` steps and their masks, refreshed when its groups change."""
        layout = [(id(group["params"]), len(group["params"])) for group in optimizer.param_groups]
        known = self._stepped.get(optimizer)
        if known is not None and known[0] == layout:
            return known[1], known[2]
        before = set(known[1]) if known is not None else set()
        params = [p for group in optimizer.param_groups for p in group["params"] if p in self._by_param]
        self._zero_state(optimizer, [p for p in params if p not in before])
        multipliers = [self._by_param[p] for p in params]
        self._stepped[optimizer] = (layout, params, multipliers)
        return params, multipliers

    @torch.no_grad()
    def _zero_state(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
        """A pruned weight behaves as if it never existed: zero its entries of the optimizer state."""
        for param in params:
            for value in optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    value.mul_(self._by_param[param].to(value.device))

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # A group added since the last step: its pruned entries' state is zeroed before it is used.
        self._masked_in(optimizer)

    @torch.no_grad()
    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # The pre-step hook has just refreshed this optimizer's lists: no second look at its groups.
        _, params, multipliers = self._stepped[optimizer]
        if params:
            torch._foreach_mul_(params, multipliers)
