"""Loading pruned (and shrunk) checkpoints into a freshly built module."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from lightning_synflow.checkpoint_format import masks_from_checkpoint
from lightning_synflow.masks import BATCH_NORMS, CONVS, RESIZABLE, apply_masks


def _resized(module: nn.Module, shapes: Mapping[str, torch.Size]) -> nn.Module:
    """A module of ``module``'s class and settings with the parameter shapes ``shapes`` (values uninitialized)."""
    weight = shapes.get("weight")
    device, dtype = module.weight.device, module.weight.dtype
    if isinstance(module, nn.Linear):
        assert weight is not None
        return nn.Linear(weight[1], weight[0], bias=module.bias is not None, device=device, dtype=dtype)
    if isinstance(module, CONVS):
        assert weight is not None
        if module.groups != 1:
            raise ValueError(f"cannot resize the grouped convolution {module!r}")
        return type(module)(
            weight[1],
            weight[0],
            module.kernel_size,  # type: ignore[arg-type]
            stride=module.stride,  # type: ignore[arg-type]
            padding=module.padding,  # type: ignore[arg-type]
            dilation=module.dilation,  # type: ignore[arg-type]
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
            device=device,
            dtype=dtype,
        )
    assert isinstance(module, BATCH_NORMS)
    size = (shapes.get("running_mean") or weight or module.weight.shape)[0]
    return type(module)(
        size,
        eps=module.eps,
        momentum=module.momentum,
        affine=module.affine,
        track_running_stats=module.track_running_stats,
        device=device,
        dtype=dtype,
    )


def resize_to_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Rebuild, in place, every Linear/Conv/BatchNorm of ``model`` whose tensors in ``state_dict`` have other shapes.

    This gives a freshly built model the structure of a shrunk one (``SynFlowPruning(shrink=True)``,
    :func:`lightning_synflow.shrink`), so that ``model.load_state_dict(state_dict)`` works. The model
    object, its class and its ``forward`` stay the same.

    Returns:
        The qualified names of the modules rebuilt.

    Raises:
        ValueError: a module of another type has tensors of other shapes.
    """
    rebuilt = []
    for name, module in list(model.named_modules()):
        prefix = f"{name}." if name else ""
        tensors = dict(module.named_parameters(recurse=False)) | dict(module.named_buffers(recurse=False))
        shapes = {key: state_dict[prefix + key].shape for key in tensors if prefix + key in state_dict}
        if all(shapes[key] == tensors[key].shape for key in shapes):
            continue
        if not isinstance(module, RESIZABLE) or not name:
            raise ValueError(
                f"{name or type(model).__name__!r} ({type(module).__name__}) has tensors of other shapes in the "
                f"checkpoint, and only {[t.__name__ for t in RESIZABLE]} can be rebuilt at another size"
            )
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, _resized(module, shapes))
        rebuilt.append(name)
    return rebuilt


def load_pruned(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a checkpoint written by a Trainer with ``SynFlowPruning`` into ``model``, shrunk or not.

    Rebuilds the thinner layers of a ``shrink=True`` run (:func:`resize_to_state_dict`), loads the
    weights and zeroes the pruned entries (they already are zero in the checkpoint).

    Args:
        model: a freshly built model of the checkpoint's class.
        path: the ``.ckpt`` file.

    Returns:
        The masks (True = kept), keyed by parameter name.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    resize_to_state_dict(model, checkpoint["state_dict"])
    model.load_state_dict(checkpoint["state_dict"])
    masks = masks_from_checkpoint(path)
    apply_masks(model, masks)
    return masks
