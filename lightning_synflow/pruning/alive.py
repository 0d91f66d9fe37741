"""The set of alive (kept) entries, with a compacted view once few are left."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lightning_synflow.pruning.collective import LOCAL, Collective
from lightning_synflow.pruning.cut import Cut
from lightning_synflow.pruning.select import NUMPY, backend_for, keep_above

#: Alive fraction of all entries below which the view is first compacted to the alive entries. A
#: compacted view holds a float32 score, an int32 position and a bool per entry (9 bytes), while
#: the gradient of one weight tensor is alive beside it; waiting until 15% are alive keeps that
#: under 0.35x the float32 prunable weights, and the loop's peak under twice them for a model whose
#: largest prunable tensor holds up to a quarter of the weights.
FIRST_COMPACT_BELOW = 0.15

#: Alive fraction of a compacted view below which it is compacted again.
COMPACT_BELOW = 0.6

#: Entries per chunk when :meth:`AliveSet.collect_product` gathers weights (a 4 MB float32 temporary).
GATHER_CHUNK = 1 << 20


class AliveSet:
    """Boolean masks of the prunable tensors, and the view of them that selection works on.

    The view starts as the whole tensors. Once fewer than :data:`FIRST_COMPACT_BELOW` of all entries
    are alive, and then whenever fewer than :data:`COMPACT_BELOW` of the view's entries are, it is
    compacted to the flat positions of the alive entries, so the cost of
    each iteration's selection follows the alive count, which shrinks geometrically under the
    exponential schedule. Entries pruned since the last compaction stay in the view (score 0, mask
    False); entries outside it are counted as hidden zeros.

    Args:
        params: the prunable tensors (their shapes and devices).
        masks: masks already in force (True = kept), one per tensor; default all kept. They are copied.
    """

    def __init__(self, params: Sequence[torch.Tensor], masks: Sequence[torch.Tensor] | None = None) -> None:
        # Row-major (contiguous) masks whatever the weights' memory format (channels_last included).
        if masks is None:
            self.masks = [torch.ones(p.shape, dtype=torch.bool, device=p.device) for p in params]
        else:
            self.masks = [m.to(device=p.device, dtype=torch.bool).contiguous().clone() for p, m in zip(params, masks)]
        self.pruned = [m.numel() - int(torch.count_nonzero(m)) for m in self.masks]
        self._flat = [m.view(-1) for m in self.masks]
        self._index: list[torch.Tensor] | None = None
        self._view = self._flat
        self.hidden = [0] * len(params)
        self._view_size = sum(p.numel() for p in params)
        self._view_alive = self._view_size - sum(self.pruned)

    @property
    def compacted(self) -> bool:
        """Whether the view holds only some entries of each tensor (else it is the whole tensors)."""
        return self._index is not None

    def collect(self, i: int, scores: torch.Tensor) -> torch.Tensor:
        """Flat scores of the view's entries of tensor ``i``, from its full score tensor."""
        flat = scores.reshape(-1)
        return flat if self._index is None else flat.index_select(0, self._index[i])

    def collect_product(self, i: int, grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Flat ``|grad| * weight`` at the view's entries of tensor ``i``; ``grad`` may be overwritten.

        Compacted, only the view's entries are gathered and multiplied (in chunks of
        :data:`GATHER_CHUNK`), with no full-size pass or temporary; the values are the same.
        """
        if self._index is None:
            return grad.abs_().mul_(weight).view(-1)
        index, weights = self._index[i], weight.reshape(-1)
        scores = grad.reshape(-1).index_select(0, index).abs_()
        for start in range(0, index.numel(), GATHER_CHUNK):
            part = index[start : start + GATHER_CHUNK]
            scores[start : start + GATHER_CHUNK].mul_(weights.index_select(0, part))
        return scores

    def gather(self, scores: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Flat scores of the view's entries, from full score tensors."""
        return [self.collect(i, s) for i, s in enumerate(scores)]

    def view_masks(self) -> list[torch.Tensor]:
        """Alive masks of the view's entries (matching :meth:`gather`)."""
        return self._view

    def apply(
        self,
        cut: Cut,
        scores: Sequence[torch.Tensor],
        tensors: Sequence[int] | None = None,
        collective: Collective = LOCAL,
    ) -> dict[int, torch.Tensor]:
        """Prune the view entries that ``cut`` removes, among ``tensors`` (indices; default all).

        Args:
            cut: the pruning step, planned on ``scores`` and the view masks of the same tensors.
            scores: the view scores of those tensors.
            tensors: which tensors ``cut`` and ``scores`` are about.
            collective: the ranks ``cut`` was planned over (this set holds this rank's shards).

        Returns:
            Per tensor changed, what to zero in the weights: its whole boolean mask (True = kept) or
            flat int64 positions of the entries just pruned.
        """
        tensors = range(len(self._view)) if tensors is None else tensors
        views = [self._view[i] for i in tensors]
        zero: dict[int, torch.Tensor] = {}
        backend = backend_for(views)
        if cut.ties is None and not self.compacted and backend is NUMPY:
            # Whole tensors, every tie goes: one in-place update of each mask, no pick array.
            for i, view, values in zip(tensors, views, scores):
                self._pruned_now(i, keep_above(view.numpy(), values.numpy(), cut.threshold), view, zero)
            return zero
        # Counted on the device and read once for all tensors; a compacted view (a quarter of the
        # entries at most) keeps its picks until then, to turn them into positions.
        found: list[torch.Tensor] = []
        kept: list[torch.Tensor | None] = []
        for view, picked in zip(views, cut.picks(backend.views(scores), backend.views(views), collective)):
            pick = torch.as_tensor(picked)
            view &= ~pick
            found.append(torch.count_nonzero(pick))
            kept.append(pick if self.compacted else None)
        counts = torch.stack(found).tolist() if found else []
        for i, view, kept_pick, count in zip(tensors, views, kept, counts):
            if not count:
                continue
            if kept_pick is not None:
                assert self._index is not None
                positions = self._index[i][torch.nonzero_static(kept_pick, size=count).view(-1)].long()
                self._flat[i][positions] = False
                self._pruned_now(i, count, positions, zero)
            else:
                self._pruned_now(i, count, view, zero)
        return zero

    def _pruned_now(self, i: int, count: int, where: torch.Tensor, zero: dict[int, torch.Tensor]) -> None:
        if count:
            self.pruned[i] += count
            self._view_alive -= count
            zero[i] = where

    def compact_if_sparse(self) -> None:
        """Compact the view to the alive entries if few enough of its entries are alive."""
        threshold = COMPACT_BELOW if self.compacted else FIRST_COMPACT_BELOW
        if self._view_alive >= threshold * self._view_size:
            return
        self._index = None  # free the old positions before building the new ones
        # int32 positions halve the index's memory; index_select accepts them.
        self._index = [torch.nonzero(m).view(-1).to(_index_dtype(m.numel())) for m in self._flat]
        self._view = [torch.ones(i.numel(), dtype=torch.bool, device=i.device) for i in self._index]
        self.hidden = list(self.pruned)
        self._view_size = self._view_alive = sum(i.numel() for i in self._index)


def _index_dtype(numel: int) -> torch.dtype:
    return torch.int32 if numel < 2**31 else torch.int64
