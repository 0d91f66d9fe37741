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
    reference = module.weight if module.weight is not None else module.running_mean  # BatchNorm(affine=False)
    device, dtype = reference.device, reference.dtype
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


def _narrower(in_checkpoint: torch.Size, in_model: torch.Size) -> bool:
    """Whether a checkpoint tensor could be a thinner copy of the model's: as many dimensions, none larger."""
    return len(in_checkpoint) == len(in_model) and all(a <= b for a, b in zip(in_checkpoint, in_model))


def _shape_mismatch(name: str, in_checkpoint: torch.Size, in_model: torch.Size, why: str) -> ValueError:
    """The error for a checkpoint tensor of another shape than the model's, naming both shapes."""
    return ValueError(f"the checkpoint has {name!r} of shape {list(in_checkpoint)}, the model {list(in_model)}: {why}")


#: Why a tensor wider than the model's, or of another rank, cannot be loaded.
_OTHER_ARCHITECTURE = (
    "the checkpoint is of another architecture (was the model built from another config?); only a shrink=True "
    "run's checkpoint may differ, and only by narrower layers"
)


def resize_to_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Rebuild, in place, every Linear/Conv/BatchNorm of ``model`` whose tensors in ``state_dict`` are narrower.

    This gives a freshly built model the structure of a shrunk one (``SynFlowPruning(shrink=True)``,
    :func:`lightning_synflow.shrink`), so that ``model.load_state_dict(state_dict)`` works. The model
    object, its class and its ``forward`` stay the same. Shrinking only removes channels, so a tensor of
    ``state_dict`` with a larger dimension than the model's, or another number of dimensions, is another
    architecture's and refused; the checkpoint does not record whether it was shrunk, so a narrower one is
    taken for a shrunk layer. Keys absent from ``state_dict`` are left alone.

    Returns:
        The qualified names of the modules rebuilt.

    Raises:
        ValueError: a tensor of ``state_dict`` is wider than the model's, of another rank or of another
            kernel size, or a module other than a Linear/Conv/BatchNorm has tensors of other shapes; the
            message names the tensor and both shapes. ``model`` is unchanged then.
    """
    rebuilt: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        tensors = dict(module.named_parameters(recurse=False)) | dict(module.named_buffers(recurse=False))
        shapes = {key: state_dict[prefix + key].shape for key in tensors if prefix + key in state_dict}
        differing = [key for key in shapes if shapes[key] != tensors[key].shape]
        if not differing:
            continue
        for key in differing:
            if not _narrower(shapes[key], tensors[key].shape):
                raise _shape_mismatch(prefix + key, shapes[key], tensors[key].shape, _OTHER_ARCHITECTURE)
        if not isinstance(module, RESIZABLE) or not name:
            key = differing[0]
            kinds = ", ".join(kind.__name__ for kind in RESIZABLE)
            raise _shape_mismatch(
                prefix + key,
                shapes[key],
                tensors[key].shape,
                f"{type(module).__name__} layers are not rebuilt at a shrunk checkpoint's sizes (only {kinds} are)",
            )
        resized = _resized(module, shapes)
        now = dict(resized.named_parameters(recurse=False)) | dict(resized.named_buffers(recurse=False))
        for key in shapes:
            if shapes[key] != now[key].shape:
                raise _shape_mismatch(prefix + key, shapes[key], tensors[key].shape, _OTHER_ARCHITECTURE)
        rebuilt[name] = resized
    for name, resized in rebuilt.items():  # only once every module fits: a refused state_dict changes nothing
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, resized)
    return list(rebuilt)


def _check_keys(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Refuse a state_dict whose keys are not the model's, listing a few of each kind.

    Raises:
        ValueError: keys missing from ``state_dict``, or keys the model does not have.
    """
    expected = list(model.state_dict())
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in set(expected)]
    if not missing and not unexpected:
        return

    def listed(keys: list[str]) -> str:
        return f"{len(keys)} ({', '.join(map(repr, keys[:3]))}{', ...' if len(keys) > 3 else ''})"

    parts = ([f"missing from it: {listed(missing)}"] if missing else []) + (
        [f"not in the model: {listed(unexpected)}"] if unexpected else []
    )
    raise ValueError(
        f"the checkpoint's state_dict does not fit the model, keys {'; '.join(parts)}: the checkpoint is of "
        "another architecture (was the model built from another config?)"
    )


def load_pruned(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a checkpoint written by a Trainer with ``SynFlowPruning`` into ``model``, shrunk or not.

    Checks that the checkpoint fits ``model`` (the same keys; each tensor of the model's shape, or, for a
    ``shrink=True`` run's checkpoint, narrower), rebuilds the thinner layers of a ``shrink=True`` run
    (:func:`resize_to_state_dict`), loads the weights and zeroes the pruned entries (they already are zero
    in the checkpoint).

    Args:
        model: a freshly built model of the checkpoint's class and settings.
        path: the ``.ckpt`` file.

    Returns:
        The masks (True = kept), keyed by parameter name.

    Raises:
        ValueError: the file is not a Lightning checkpoint, holds no SynFlowPruning masks, or does not fit
            ``model`` (keys missing or not the model's, a tensor of another shape: the message names it and
            both shapes); ``model`` is unchanged then.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise ValueError(f"{os.fspath(path)!r} is not a Lightning checkpoint (it has no 'state_dict' entry)")
    state_dict = checkpoint["state_dict"]
    masks = masks_from_checkpoint(path)
    _check_keys(model, state_dict)
    resize_to_state_dict(model, state_dict)
    model.load_state_dict(state_dict)
    apply_masks(model, masks)
    return masks
