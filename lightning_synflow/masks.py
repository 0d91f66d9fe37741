"""Masks and the layers they prune: apply, check and pack boolean masks; the layer kinds every package shares.

A mask is a boolean tensor shaped like the tensor it prunes (True = kept), keyed by the tensor's qualified
name. This module imports torch only, so that every other package of ``lightning_synflow`` can use it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

#: Convolutions (weight ``[out, in / groups, *kernel]``).
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Transposed convolutions (weight ``[in, out / groups, *kernel]``).
CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
#: Batch normalizations of 1-D, 2-D and 3-D inputs.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: Layers whose weight maps input channels (dim 1) to output channels (dim 0), the layers shrinking makes thinner.
LINEAR_AND_CONVS = (nn.Linear, *CONVS)
#: Leaf modules that can be rebuilt at other sizes (a shrunk checkpoint loaded into a freshly built model).
RESIZABLE = (*LINEAR_AND_CONVS, *BATCH_NORMS)
#: Module types whose ``weight`` is prunable by default (Hugging Face's ``Conv1D`` too, recognised by name).
DEFAULT_PRUNABLE_MODULES: tuple[type[nn.Module], ...] = (*LINEAR_AND_CONVS, *CONV_TRANSPOSES)

_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def check_masks(masks: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse masks that do not fit ``tensors``: the one rule every mask meets before it is used.

    Each mask must name one of ``tensors``, be a ``torch.bool`` tensor (never cast: a float or integer
    "mask" is refused), and have exactly its tensor's shape. A tensor known under several names (tied
    weights: the same tensor object under each key, as ``named_parameters(remove_duplicate=False)``
    gives them) may be masked under any of its names, and masks under two of its names must be equal.
    Every mask is checked, in order, before the caller changes anything.

    Args:
        masks: the masks, keyed by name.
        tensors: the tensors they may name, e.g. ``dict(model.named_parameters(remove_duplicate=False))``.
        what: what ``tensors`` are, for messages (e.g. ``"the parameters of Net"``).

    Raises:
        ValueError: the first mask that breaks the rule, named.
    """
    seen: dict[int, str] = {}
    for name, mask in masks.items():
        if name not in tensors:
            known = ", ".join(list(tensors)[:5]) + (", ..." if len(tensors) > 5 else "")
            raise ValueError(f"The mask {name!r} names none of {what} ({known}).")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            kind = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"The mask {name!r} must be a boolean tensor (True = kept), got {kind}.")
        tensor = tensors[name]
        if mask.shape != tensor.shape:
            raise ValueError(
                f"The mask {name!r} has shape {list(mask.shape)}, its tensor has shape {list(tensor.shape)}."
            )
        first = seen.setdefault(id(tensor), name)
        if first != name and not torch.equal(masks[first].to(mask.device), mask):
            raise ValueError(f"The masks {first!r} and {name!r} name one tensor of {what} (tied) but differ.")


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Zero the pruned entries of ``model``'s parameters in place.

    Every mask is checked (:func:`check_masks`) before any weight changes.

    Args:
        model: the model whose parameters to mask.
        masks: boolean masks (True = kept) keyed by qualified parameter name (``named_parameters()``
            names, tied duplicates included), e.g. the output of :func:`lightning_synflow.prune` or
            :func:`lightning_synflow.masks_from_checkpoint`.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: a name is not a parameter of ``model``, a mask's shape differs from its parameter's, a
            mask is not boolean, or two names of one tied parameter carry different masks.

    Example::

        masks = masks_from_checkpoint("last.ckpt")
        apply_masks(model, masks)  # pruned entries are now exactly 0
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    check_masks(masks, params, f"the parameters of {type(model).__name__}")
    with torch.no_grad():
        for name, mask in masks.items():
            param = params[name]
            param.masked_fill_(~mask.to(param.device), 0)
    return model


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Pack a boolean tensor into a flat uint8 CPU tensor, 1 bit per entry (row-major, MSB first)."""
    flat = mask.detach().reshape(-1).to("cpu", torch.uint8)
    padded = torch.nn.functional.pad(flat, (0, (-flat.numel()) % 8))
    return (padded.view(-1, 8) * _BIT_WEIGHTS).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed: torch.Tensor, shape: list[int] | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_mask`: a boolean CPU tensor of ``shape``."""
    numel = 1
    for size in shape:
        numel *= int(size)
    # map_location may have put the packed bits anywhere (a CUDA checkpoint on a CPU machine, or the reverse).
    bits = packed.detach().to("cpu", torch.uint8).view(-1, 1).bitwise_and(_BIT_WEIGHTS).ne(0).view(-1)
    if bits.numel() < numel:
        raise ValueError(
            f"Packed mask holds {bits.numel()} bits, fewer than the {numel} entries of shape {list(shape)}."
        )
    return bits[:numel].view(*shape)
