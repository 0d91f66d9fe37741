"""Boolean masks packed 8 entries to a byte, for checkpoints."""

from __future__ import annotations

import torch

_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


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
