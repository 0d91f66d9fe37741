"""Thinner layers: :func:`apply_shrink` carries out a plan in place; :func:`shrink` masks, plans and rebuilds a copy."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from lightning_synflow.export.shrink.plan import ShrinkPlan, check_masks, layer_sizes, plan_shrink
from lightning_synflow.graph.kinds import BATCH_NORMS, LINEAR_AND_CONVS, RESIZABLE
from lightning_synflow.masks import apply_masks

__all__ = ["apply_shrink", "shrink"]


def _index(tensor: Tensor, dim: int, index: Tensor | None) -> Tensor:
    return tensor if index is None else tensor.index_select(dim, index.to(tensor.device))


def _thinner(module: nn.Module, name: str, plan: ShrinkPlan) -> nn.Module:
    out = plan.keep_out.get(name)
    if isinstance(module, BATCH_NORMS):
        new = _thinner_norm(module, out)
    else:
        assert isinstance(module, LINEAR_AND_CONVS)
        new = _thinner_layer(module, name, plan, out, plan.keep_in.get(name))
    new.train(module.training)
    return new


def _thinner_norm(module: _BatchNorm, out: Tensor | None) -> nn.Module:
    """A BatchNorm over the kept channels ``out`` (all when None); affine or not, with running statistics or not."""
    reference = module.weight if module.weight is not None else module.running_mean
    dtype = reference.dtype if reference is not None else torch.get_default_dtype()
    size = len(out) if out is not None else module.num_features
    new = type(module)(
        size,
        eps=module.eps,
        momentum=module.momentum,
        affine=module.affine,
        track_running_stats=module.track_running_stats,
        device="meta",
        dtype=dtype,
    )
    for key in ("weight", "bias"):  # an affine BatchNorm may have a weight and no bias (torch >= 2.13)
        param = getattr(module, key)
        if param is not None:
            setattr(new, key, nn.Parameter(_index(param.detach(), 0, out).clone(), param.requires_grad))
        elif getattr(new, key) is not None:
            new.register_parameter(key, None)
    for key in ("running_mean", "running_var"):
        buffer = getattr(module, key)
        if buffer is not None:
            setattr(new, key, _index(buffer, 0, out).clone())
    if module.num_batches_tracked is not None:
        new.num_batches_tracked = module.num_batches_tracked.clone()
    return new


def _thinner_layer(
    module: nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d,
    name: str,
    plan: ShrinkPlan,
    out: Tensor | None,
    inp: Tensor | None,
) -> nn.Module:
    """A Linear or Conv with the kept output channels ``out`` and input channels ``inp`` (all when None)."""
    weight = module.weight
    memory = (
        torch.channels_last
        if weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
        else torch.contiguous_format
    )
    out_size = len(out) if out is not None else weight.shape[0]
    in_size = len(inp) if inp is not None else weight.shape[1]
    new: nn.Linear | _ConvNd
    if isinstance(module, nn.Linear):
        new = nn.Linear(in_size, out_size, bias=module.bias is not None, device="meta", dtype=weight.dtype)
    else:
        # The layer's own settings, as the stubs type them (tuple[int, ...]) rather than the constructor does.
        geometry: dict[str, Any] = {
            "kernel_size": module.kernel_size,
            "stride": module.stride,
            "padding": module.padding,
            "dilation": module.dilation,
        }
        new = type(module)(
            in_size,
            out_size,
            groups=1,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
            device="meta",
            dtype=weight.dtype,
            **geometry,
        )
    values = _index(_index(weight.detach(), 0, out), 1, inp).contiguous(memory_format=memory)
    new.weight = nn.Parameter(values.clone(), weight.requires_grad)
    if module.bias is not None:
        bias = _index(module.bias.detach(), 0, out).clone()
        shift = plan.bias_shift.get(name)
        if shift is not None:
            bias += _index(shift.to(bias.device), 0, out).to(bias.dtype)
        new.bias = nn.Parameter(bias, module.bias.requires_grad)
    elif name in plan.bias_shift:
        raise ValueError(f"the plan folds constants into the bias of {name!r}, which has none")
    return new


def apply_shrink(model: nn.Module, plan: ShrinkPlan, masks: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Replace, in place, every layer the plan names by a thinner one of the same class.

    Each affected ``Conv1d/2d/3d``, ``Linear`` and ``BatchNorm1d/2d/3d`` is replaced (``setattr`` on its
    parent) by a new module of the same class and settings holding the kept slices of its weight,
    bias and running statistics; the bias receives the plan's folded constants. ``model`` itself,
    its class and forward stay the same object. Values are sliced as they are: the pruned entries
    should already be zero (``prune()`` zeroes them). Optimizers holding the old parameters must be
    rebuilt; forward hooks on the replaced modules are not carried over.

    It also works on a freshly built model of the same architecture, to give it the structure of a
    shrunk one before loading a shrunk checkpoint (the values then come from the checkpoint).

    Args:
        model: the model the plan was made for, or a fresh one of the same architecture.
        plan: from :func:`plan_shrink` (or :meth:`ShrinkPlan.from_dict`).
        masks: masks keyed by parameter name to slice along (any subset of the parameters).

    Returns:
        The masks sliced to the new shapes (same keys; untouched masks returned as they are); ``{}``
        when ``masks`` is None.

    Raises:
        ValueError: a module the plan names is missing, of another type, or of other sizes than the
            plan was made for (already shrunk?), or a mask does not match its parameter.
    """
    modules = dict(model.named_modules())
    for name in plan.modules:
        module = modules.get(name)
        if module is None or not name:
            raise ValueError(f"the shrink plan names module {name!r}, which {type(model).__name__} does not have")
        if type(module) not in RESIZABLE:
            raise ValueError(
                f"the shrink plan names {name!r}, a {type(module).__name__}; only "
                f"{[t.__name__ for t in RESIZABLE]} can be shrunk"
            )
        if layer_sizes(module) != list(plan.sizes[name]):
            raise ValueError(
                f"module {name!r} has sizes {layer_sizes(module)}, the shrink plan was made for {plan.sizes[name]} "
                "(is the model already shrunk, or of another architecture?)"
            )
    checked = check_masks(model, masks) if masks is not None else {}
    sliced: dict[str, Tensor] = {}
    if masks is not None:
        sliced = {name: masks[name] for name in masks}
    with torch.no_grad():
        for name in plan.modules:
            module = modules[name]
            new = _thinner(module, name, plan)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, new)
            out, inp = plan.keep_out.get(name), plan.keep_in.get(name)
            for key in ("weight", "bias"):
                qualified = f"{name}.{key}"
                if qualified in checked:
                    mask = _index(checked[qualified], 0, out)
                    if key == "weight" and not isinstance(module, BATCH_NORMS):
                        mask = _index(mask, 1, inp)
                    sliced[qualified] = mask.clone()
    return sliced


def shrink(
    model: nn.Module,
    masks: Mapping[str, Tensor] | None = None,
    example_input: Any = None,
    *,
    exclude: str | Sequence[str] | None = None,
) -> nn.Module:
    """A thinner dense copy of ``model`` without the channels that carry no flow; ``model`` is untouched.

    The copy's weights are masked by ``masks`` first, then :func:`plan_shrink` and :func:`apply_shrink`
    run on it. In eval mode the copy computes what the masked model does.

    Args:
        model: the pruned network.
        masks: boolean masks (True = kept) keyed by parameter name; None: the zeros of the Conv/Linear
            weights.
        example_input: a batch-shaped tensor, tuple or dict (see :func:`plan_shrink`).
        exclude: glob patterns over submodule names to leave whole (see :func:`plan_shrink`).

    Returns:
        The thinner copy (same class).

    Example:
        >>> from lightning_synflow import prune
        >>> net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
        >>> masks = prune(net, compression=100, example_input=torch.zeros(1, 16), iterations=10)
        >>> thin = shrink(net, masks)
        >>> thin[2].weight.shape[0] < 64
        True
    """
    copied = copy.deepcopy(model)
    checked = check_masks(copied, masks) if masks is not None else None
    if checked:
        apply_masks(copied, checked)
    plan = plan_shrink(copied, checked, example_input, exclude=exclude)
    apply_shrink(copied, plan)
    return copied
