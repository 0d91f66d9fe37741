"""Keeping masks in force on a module while it trains: one pass per step over the masked tensors.

The gradients of pruned entries are zeroed after every backward pass. For the optimizers in
:data:`KEEPS_ZEROS` (exact classes, hyper-parameters checked before every step) a zero gradient and a
zero optimizer state provably leave a zero weight at zero, so the weights are not touched after the
step; every other optimizer or setting gets its weights re-masked after the step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lightning_synflow.masks import check_masks

#: A tensor whose pruned entries are at most this fraction of it is zeroed through the flat positions of its
#: pruned entries (``index_fill_``: cost and memory follow the pruned count, at most 1/8 byte per weight);
#: any other through a zero-copy uint8 view of its boolean mask (``mul_``: one pass, no extra memory).
POSITIONS_UP_TO = 1 / 64

_ZERO = torch.zeros(())  # a CPU scalar: usable with tensors of any device, does not promote their dtype


class _Pruned(NamedTuple):
    """How to zero the pruned entries of one masked parameter (and of tensors shaped like it)."""

    keep: torch.Tensor  # uint8 view of the boolean mask (1 = kept)
    positions: Optional[torch.Tensor]  # flat int64 positions of the pruned entries, or None


class _Group(NamedTuple):
    """The masked parameters of one parameter group and the limits of their dtypes."""

    params: list[nn.Parameter]
    limits: Optional[tuple[float, float]]  # (largest safe scalar, smallest normal) or None: not real floating


class _Layout(NamedTuple):
    """What an optimizer holds, as last seen: refreshed when its parameter groups change."""

    key: list[tuple[int, int]]
    groups: list[_Group]


@torch.no_grad()
def _zero_pruned(pairs: Iterable[tuple[torch.Tensor, _Pruned]], exact: bool = False) -> None:
    """Zero the pruned entries of each tensor in place, without allocating: one pass per tensor.

    ``exact`` writes +0.0 whatever was there (NaN or inf too: the safety net after an unproven step); otherwise
    the dense masks multiply (faster on CPU; a NaN stays NaN), as for gradients after every backward pass.
    """
    tensors, keeps = [], []
    for tensor, pruned in pairs:
        if pruned.positions is not None and tensor.is_contiguous() and tensor.device == pruned.positions.device:
            tensor.view(-1).index_fill_(0, pruned.positions, 0)
        elif tensor.device != pruned.keep.device:  # optimizer state kept elsewhere (offloaded): a copy is fine
            torch.where(pruned.keep.to(tensor.device, torch.bool), tensor, _ZERO, out=tensor)
        elif exact:
            torch.where(pruned.keep.view(torch.bool), tensor, _ZERO, out=tensor)
        else:
            tensors.append(tensor)
            keeps.append(pruned.keep)
    if tensors:
        torch._foreach_mul_(tensors, keeps)


def masked_parameters(module: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, nn.Parameter]:
    """The module's parameters by name (every name of a tied one), the masks checked to fit them.

    Raises:
        ValueError: a mask does not fit the module (:func:`~lightning_synflow.masks.check_masks`).
    """
    params = dict(module.named_parameters(remove_duplicate=False))
    check_masks(masks, params, f"the parameters of {type(module).__name__}")
    return params


class MaskUpkeep:
    """Holds a module's masks in force: weights, gradients and optimizer state of pruned entries stay zero.

    Gradients of pruned entries are zeroed right after every backward pass (:meth:`mask_gradients`, before
    gradient clipping, in automatic and manual optimization alike). Before every step of an attached optimizer
    its parameter groups are read: a group added mid-fit (``BaseFinetuning.unfreeze_and_add_param_group``) has
    its pruned entries' optimizer state zeroed before first use, and optimizer state created by that first use,
    or loaded by ``optimizer.load_state_dict``, is zeroed too. Then each group is checked against
    :data:`KEEPS_ZEROS`: where the proof holds the step leaves pruned weights at exactly zero by itself;
    otherwise the group's masked weights are zeroed again right after the step. The proof assumes the
    gradients were masked by :meth:`mask_gradients` after the backward pass that produced them.

    Args:
        module: the pruned module.
        masks: boolean masks (True = kept) keyed by qualified parameter name.

    Raises:
        ValueError: a mask does not fit the module (:func:`~lightning_synflow.masks.check_masks`).
    """

    def __init__(self, module: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        params = masked_parameters(module, masks)
        #: Masks on each parameter's device, keyed by name.
        self.masks = {name: mask.to(params[name].device) for name, mask in masks.items()}
        #: Masked tensors zeroed again after an optimizer step (the fallback), counted since construction.
        self.remasked = 0
        self._pruned: dict[nn.Parameter, _Pruned] = {}
        for name, mask in self.masks.items():
            param = params[name]
            count = mask.numel() - int(torch.count_nonzero(mask))
            if count == 0:
                continue  # nothing to keep at zero
            positions = None
            if count <= POSITIONS_UP_TO * mask.numel() and param.is_contiguous():
                positions = torch.nonzero(~mask.reshape(-1)).view(-1)
            self._pruned[param] = _Pruned(mask.view(torch.uint8), positions)
        self._hooks: list[RemovableHandle] = []
        self._layouts: dict[torch.optim.Optimizer, _Layout] = {}
        # Per optimizer: masked parameters that have no optimizer state yet (zeroed once it appears), and the masked
        # parameters of the groups the proofs do not cover (re-masked after the step).
        self._stateless: dict[torch.optim.Optimizer, set[nn.Parameter]] = {}
        self._remask: dict[torch.optim.Optimizer, list[nn.Parameter]] = {}

    def mask_weights(self) -> None:
        """Zero the pruned entries of every masked weight (+0.0, whatever they hold)."""
        _zero_pruned(self._pruned.items(), exact=True)

    def mask_gradients(self) -> None:
        """Zero the gradients of pruned entries (after backward, before clipping and the step)."""
        _zero_pruned((p.grad, pruned) for p, pruned in self._pruned.items() if p.grad is not None)

    def attach(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Mask the weights and the optimizers' state, and keep them masked through every step of ``optimizers``."""
        self.detach()
        self.mask_weights()
        for optimizer in optimizers:
            self._refresh(optimizer)
            self._hooks.append(optimizer.register_step_pre_hook(self._before_step))
            self._hooks.append(optimizer.register_step_post_hook(self._after_step))
            self._hooks.append(optimizer.register_load_state_dict_post_hook(self._after_load))

    def detach(self) -> None:
        """Remove every hook this object put on optimizers."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self._layouts, self._stateless, self._remask = {}, {}, {}

    def _refresh(self, optimizer: torch.optim.Optimizer) -> _Layout:
        """The masked parameters ``optimizer`` steps, by group; state of parameters new to it is zeroed."""
        key = [(id(group["params"]), len(group["params"])) for group in optimizer.param_groups]
        known = self._layouts.get(optimizer)
        if known is not None and known.key == key:
            return known
        before = {p for group in known.groups for p in group.params} if known is not None else set()
        groups = []
        for group in optimizer.param_groups:
            params = [p for p in group["params"] if p in self._pruned]
            groups.append(_Group(params, _limits(params)))
        added = [p for group in groups for p in group.params if p not in before]
        self._zero_state(optimizer, added)
        stateless = self._stateless.setdefault(optimizer, set())
        stateless.update(p for p in added if not optimizer.state.get(p))
        layout = _Layout(key, groups)
        self._layouts[optimizer] = layout
        return layout

    @torch.no_grad()
    def _zero_state(self, optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> None:
        """A pruned weight behaves as if it never existed: zero its entries of the optimizer state."""
        _zero_pruned(
            (
                (value, self._pruned[param])
                for param in params
                for value in optimizer.state.get(param, {}).values()
                if isinstance(value, torch.Tensor) and value.shape == param.shape
            ),
            exact=True,
        )

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # Under Lightning's automatic optimization this runs before the closure (forward and backward).
        layout = self._refresh(optimizer)
        stateless = self._stateless.get(optimizer)
        if stateless:  # state put in place outside a step: zeroed before this step reads it
            found = [p for p in stateless if optimizer.state.get(p)]
            self._zero_state(optimizer, found)
            stateless.difference_update(found)
        proof = KEEPS_ZEROS.get(type(optimizer))
        self._remask[optimizer] = [
            p
            for settings, group in zip(optimizer.param_groups, layout.groups)
            if group.params and not (proof is not None and _proven(proof, optimizer, settings, group))
            for p in group.params
        ]

    @torch.no_grad()
    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # Kept, not popped: a subclass calling super().step() runs the hooks twice, and the second time is after
        # its own changes.
        remask = self._remask.get(optimizer)
        if remask and type(optimizer) in KEEPS_ZEROS:
            remask = [p for p in remask if p.grad is not None]  # torch's own steps skip the others
        if remask:
            _zero_pruned(((p, self._pruned[p]) for p in remask), exact=True)
            self.remasked += len(remask)
        stateless = self._stateless.get(optimizer)
        if stateless:  # state this step created (Adagrad's sum starts at initial_accumulator_value)
            created = [p for p in stateless if optimizer.state.get(p)]
            self._zero_state(optimizer, created)
            stateless.difference_update(created)

    def _after_load(self, optimizer: torch.optim.Optimizer) -> None:
        # A loaded state (a resumed run, a rewind) was saved under other masks or none: zero it again.
        self._layouts.pop(optimizer, None)
        self._stateless.pop(optimizer, None)
        self._refresh(optimizer)  # every parameter counts as new: its state is zeroed


# -- optimizers proven to keep an exact zero at zero -----------------------------------------------------
#
# Premises, kept by MaskUpkeep: at a pruned entry the weight p, the gradient g and every optimizer state that
# multiplies into the update are zeros (+0.0 or -0.0) before the step, and second-moment states are zero or
# (Adagrad's lazily created sum) a finite value >= 0. IEEE facts used: a finite scalar times a zero is a zero,
# a zero plus a zero is a zero, a zero divided by a nonzero finite number is a zero, sqrt(+0) = +0, and -g of a
# zero is a zero (so `maximize` never matters). Every scalar below is checked finite and at most B =
# sqrt(max)/2 of the group's dtypes, so sums and products of two such scalars stay finite in that dtype (also
# float16); eps is checked >= the smallest normal number N of those dtypes, so `0 + eps` is a nonzero
# denominator. The proofs hold for the single-tensor, foreach and fused forms, whose arithmetic is the same;
# `capturable` (the device-side form: with lr = 0 Adam's denominator at a zero second moment is 0 / -0.0, NaN)
# and `differentiable` are not covered, and neither are complex parameters, tensor hyper-parameters off the CPU
# (reading them would synchronize) or subclasses (which may change `step`).


def _limits(params: list[nn.Parameter]) -> Optional[tuple[float, float]]:
    """(B, N) over the dtypes of ``params``; None when there is none or one is not a real floating dtype."""
    if not params or any(not p.is_floating_point() for p in params):
        return None
    infos = [torch.finfo(dtype) for dtype in {p.dtype for p in params}]
    return min(math.sqrt(info.max) / 2 for info in infos), max(info.tiny for info in infos)


def _number(value: Any) -> Optional[float]:
    """A hyper-parameter as a Python float: a number, or a one-element CPU tensor; None for anything else."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.device.type != "cpu" or value.is_complex():
            return None
        return float(value.item())
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _bounded(limit: float, *values: Any) -> bool:
    numbers = [_number(v) for v in values]
    return all(x is not None and math.isfinite(x) and abs(x) <= limit for x in numbers)


def _unit(value: Any) -> Optional[float]:
    """A beta or decay rate in [0, 1), else None."""
    x = _number(value)
    return x if x is not None and 0.0 <= x < 1.0 else None


def _adam_like(group: dict[str, Any], big: float, small: float) -> bool:
    """Shared checks of Adam, AdamW, NAdam and RAdam: bounded lr and weight decay, betas in [0, 1), eps >= N.

    With ``1 - beta1 >= 1 / B`` the step size ``lr / (1 - beta1**t) <= lr / (1 - beta1)`` is finite, and with
    ``1 - beta2 >= N`` the bias correction ``1 - beta2**t`` (and its square root) is a nonzero divisor.
    """
    betas = group.get("betas")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        return False
    beta1, beta2 = _unit(betas[0]), _unit(betas[1])
    eps = _number(group.get("eps"))
    return (
        _bounded(big, group.get("lr"), group.get("weight_decay"))
        and beta1 is not None
        and beta2 is not None
        and 1.0 - beta1 >= 1.0 / big
        and 1.0 - beta2 >= small
        and eps is not None
        and small <= eps <= big
    )


def _sgd(optimizer: torch.optim.Optimizer, group: dict[str, Any], big: float, small: float) -> bool:
    """SGD (momentum, dampening, Nesterov, weight decay, maximize).

    g' = g + wd * p = 0; the momentum buffer b = momentum * b + (1 - dampening) * g' = 0 (or a copy of g' = 0 at
    its first step); the direction g' + momentum * b (Nesterov) or b is 0; p - lr * 0 = 0.
    """
    return _bounded(big, group.get("lr"), group.get("weight_decay"), group.get("momentum"), group.get("dampening"))


def _adam(optimizer: torch.optim.Optimizer, group: dict[str, Any], big: float, small: float) -> bool:
    """Adam and AdamW (L2 or decoupled weight decay, amsgrad, maximize).

    L2: g' = g + wd * p = 0. Decoupled: p * (1 - lr * wd) = 0 (-0.0 when lr * wd > 1: still a zero).
    m = lerp(m, g', 1 - beta1) = 0; v = beta2 * v + (1 - beta2) * g'^2 = 0; amsgrad: max(v_max, v) = 0.
    denom = sqrt(v) / sqrt(1 - beta2**t) + eps = eps > 0; p - lr / (1 - beta1**t) * m / denom = 0.
    """
    return _adam_like(group, big, small)


def _nadam(optimizer: torch.optim.Optimizer, group: dict[str, Any], big: float, small: float) -> bool:
    """NAdam (momentum decay, L2 or decoupled weight decay).

    As Adam for g', m and v; with ``momentum_decay >= 0`` every mu_t = beta1 * (1 - 0.96**(t * psi) / 2) lies in
    [0, beta1), so 1 - prod(mu) >= 1 - beta1 and both step sizes are finite; denom = sqrt(v / bc2) + eps = eps;
    p + s1 * g' / denom + s2 * m / denom = 0.
    """
    decay = _number(group.get("momentum_decay"))
    return _adam_like(group, big, small) and decay is not None and 0.0 <= decay <= big


def _radam(optimizer: torch.optim.Optimizer, group: dict[str, Any], big: float, small: float) -> bool:
    """RAdam (L2 or decoupled weight decay).

    As Adam for g', m and v. Rectified steps multiply m = 0 by lr * rect * sqrt(bc2) / (sqrt(v) + eps), with
    rect <= 1, bounded by lr / eps; the foreach form takes the reciprocal of (sqrt(v) + eps) / (lr * rect *
    sqrt(bc2) / bc1), which stays finite when ``|lr| <= eps * (1 - beta1) / N`` (and is 0 when that divisor is
    0); unrectified steps multiply m = 0 by lr / bc1. Either way p + finite * 0 = 0.
    """
    if not _adam_like(group, big, small):
        return False
    lr, eps, beta1 = _number(group["lr"]), _number(group["eps"]), _unit(group["betas"][0])
    assert lr is not None and eps is not None and beta1 is not None  # checked by _adam_like
    return abs(lr) <= eps * (1.0 - beta1) / small


def _rmsprop(optimizer: torch.optim.Optimizer, group: dict[str, Any], big: float, small: float) -> bool:
    """RMSprop (centered, momentum, weight decay, maximize).

    g' = g + wd * p = 0; v = alpha * v + (1 - alpha) * g'^2 = 0; centered: a = lerp(a, g', 1 - alpha) = 0 and
    v - a^2 = 0; denom = sqrt(0) + eps = eps; momentum: b = momentum * b + g' / denom = 0, p - lr * b = 0;
    without momentum p - lr * g' / denom = 0.
    """
    eps = _number(group.get("eps"))
    return (
        _bounded(big, group.get("lr"), group.get("weight_decay"), group.get("alpha"), group.get("momentum"))
        and eps is not None
        and small <= eps <= big
    )


def _adagrad(optimizer: torch.optim.Optimizer, group: dict[str, Any], big: float, small: float) -> bool:
    """Adagrad (lr decay, weight decay, initial accumulator value, maximize).

    g' = g + wd * p = 0; the sum s (zeroed, or initial_accumulator_value >= 0 when created by a late group's
    first step) becomes s + g'^2 >= 0, finite; clr = lr / (1 + (t - 1) * lr_decay) is finite for lr_decay >= 0;
    p - clr * g' / (sqrt(s) + eps) = 0.
    """
    decay, eps = _number(group.get("lr_decay")), _number(group.get("eps"))
    initial = _number(optimizer.defaults.get("initial_accumulator_value", 0.0))
    return (
        _bounded(big, group.get("lr"), group.get("weight_decay"))
        and decay is not None
        and 0.0 <= decay <= big
        and eps is not None
        and small <= eps <= big
        and initial is not None
        and 0.0 <= initial <= big
    )


Proof = Callable[[torch.optim.Optimizer, dict[str, Any], float, float], bool]

#: Exact optimizer classes whose step keeps an exact zero at zero, given masked gradients and zeroed state, and
#: the check of a parameter group's hyper-parameters that the proof needs (run before every step).
KEEPS_ZEROS: dict[type, Proof] = {
    torch.optim.SGD: _sgd,
    torch.optim.Adam: _adam,
    torch.optim.AdamW: _adam,
    torch.optim.NAdam: _nadam,
    torch.optim.RAdam: _radam,
    torch.optim.RMSprop: _rmsprop,
    torch.optim.Adagrad: _adagrad,
}


def _proven(proof: Proof, optimizer: torch.optim.Optimizer, settings: dict[str, Any], group: _Group) -> bool:
    """Whether ``proof`` covers this parameter group as it is now."""
    if group.limits is None or settings.get("differentiable") or settings.get("capturable"):
        return False
    big, small = group.limits
    return proof(optimizer, settings, big, small)
