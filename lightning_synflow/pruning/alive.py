"""The set of alive (kept) entries, with a compacted view once few are left."""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: Alive fraction of the current view below which the view is compacted to the alive entries.
COMPACT_BELOW = 0.6


class AliveSet:
    """Boolean masks of the prunable tensors, and the view of them that selection works on.

    The view starts as the whole tensors. Whenever fewer than :data:`COMPACT_BELOW` of the view's
    entries are alive, it is compacted to the flat positions of the alive entries, so the cost of
    each iteration's selection follows the alive count, which shrinks geometrically under the
    exponential schedule. Entries pruned since the last compaction stay in the view (score 0, mask
    False); entries outside it are counted as hidden zeros.

    Args:
        params: the prunable tensors (their shapes and devices).
    """

    def __init__(self, params: Sequence[torch.Tensor]) -> None:
        self.masks = [torch.ones_like(p, dtype=torch.bool) for p in params]
        self.pruned = [0] * len(params)
        self._flat = [m.view(-1) for m in self.masks]
        self._index: list[torch.Tensor] | None = None
        self._view = self._flat
        self.hidden = [0] * len(params)
        self._view_size = self._view_alive = sum(p.numel() for p in params)

    def gather(self, scores: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Flat scores of the view's entries."""
        flat = [s.reshape(-1) for s in scores]
        if self._index is None:
            return flat
        return [s.index_select(0, i) for s, i in zip(flat, self._index)]

    def view_masks(self) -> list[torch.Tensor]:
        """Alive masks of the view's entries (matching :meth:`gather`)."""
        return self._view

    def remove(self, chosen: Sequence[torch.Tensor], counts: Sequence[int]) -> list[torch.Tensor]:
        """Mark the chosen entries of the view pruned.

        Returns:
            Per tensor, what to zero in the weights: a flat boolean mask, or flat int64 positions.
        """
        zero = []
        for i, (view, pick, count) in enumerate(zip(self._view, chosen, counts)):
            self.pruned[i] += count
            view &= ~pick
            if self._index is None:
                zero.append(pick)
            else:
                positions = self._index[i][torch.nonzero(pick).view(-1)].long()
                self._flat[i][positions] = False
                zero.append(positions)
        self._view_alive -= sum(counts)
        if self._view_alive < COMPACT_BELOW * self._view_size:
            # int32 positions halve the index's memory; index_select accepts them.
            self._index = [torch.nonzero(m).view(-1).to(_index_dtype(m.numel())) for m in self._flat]
            self._view = [torch.ones(i.numel(), dtype=torch.bool, device=i.device) for i in self._index]
            self.hidden = list(self.pruned)
            self._view_size = self._view_alive = sum(i.numel() for i in self._index)
        return zero


def _index_dtype(numel: int) -> torch.dtype:
    return torch.int32 if numel < 2**31 else torch.int64
