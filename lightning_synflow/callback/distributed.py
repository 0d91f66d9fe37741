"""DDP: rank 0's masks and weights sent to every rank as tensors, so every rank holds the same bytes.

Both run on every rank of the default process group (the one Lightning's DDP strategies start), in the same order.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from lightning_synflow.masks import pack_mask, unpack_mask


def _packed_sizes(shapes: dict[str, torch.Size]) -> list[int]:
    return [(shape.numel() + 7) // 8 for shape in shapes.values()]


def broadcast_masks(
    masks: dict[str, torch.Tensor] | None, shapes: dict[str, torch.Size], device: torch.device
) -> dict[str, torch.Tensor]:
    """Rank 0's boolean masks on every rank, sent as one tensor of packed bits (1 bit per weight).

    Args:
        masks: the masks on rank 0 (ignored elsewhere), keyed like ``shapes``.
        shapes: the shape of every mask, in an order every rank agrees on (the names rank 0 announced).
        device: where the packed bits travel: the strategy's root device (CPU for gloo, the rank's GPU for NCCL).

    Returns:
        Boolean CPU masks keyed like ``shapes``, the same bits on every rank.
    """
    sizes = _packed_sizes(shapes)
    if dist.get_rank() == 0:
        assert masks is not None
        bits = torch.cat([pack_mask(masks[name]) for name in shapes]).to(device)
    else:
        bits = torch.empty(sum(sizes), dtype=torch.uint8, device=device)
    dist.broadcast(bits, src=0)
    pieces = torch.split(bits.cpu(), sizes)
    return {name: unpack_mask(piece, shape) for (name, shape), piece in zip(shapes.items(), pieces)}


@torch.no_grad()
def broadcast_parameters(module: nn.Module) -> None:
    """Overwrite every parameter of ``module`` with rank 0's, byte for byte (rank 0 is authoritative).

    After rank 0 has pruned, its pruned entries are +0.0 where another rank's own zeroing could give -0.0 (a
    negative weight times 0), and whatever else rank 0's pruning touched travels too.
    """
    for param in module.parameters():
        if param.is_contiguous():
            dist.broadcast(param.data, src=0)
        else:
            buffer = param.detach().contiguous()
            dist.broadcast(buffer, src=0)
            param.copy_(buffer)
