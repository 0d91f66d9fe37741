"""Cut planning: which alive entries a pruning step removes, with exact counts and the tie rule.

Tie rule (final iteration): entries are pruned in order of increasing score; among entries with
exactly the same score, the one that comes first (prunable tensors in ``named_parameters()`` order,
then row-major order inside a tensor) is pruned first. Intermediate iterations prune every entry
tied at the threshold together, as the reference implementation does, unless that would take the
total past the final target.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from lightning_synflow.pruning.select import (
    Array,
    Backend,
    backend_for,
    backend_of,
    kth_smallest,
    kth_with_hidden_zeros,
)


@dataclass(frozen=True)
class Cut:
    """Which alive entries a pruning step removes.

    Every alive entry scoring below ``threshold`` goes, and of those scoring exactly ``threshold``
    all of them (``ties=None``) or only the first ``ties`` in position order.

    Attributes:
        threshold: the score at which the cut is made.
        ties: how many alive entries tied at the threshold go (None: all of them).
        count: how many alive entries the cut removes in all.
    """

    threshold: float
    ties: int | None
    count: int

    def picks(self, values: Sequence[Array], keep: Sequence[Array]) -> Iterator[Array]:
        """Per segment, the alive entries the cut removes (boolean arrays like ``values``).

        Args:
            values: 1-D score arrays of one backend (numpy views or torch tensors).
            keep: boolean arrays (True = alive) matching ``values``.
        """
        backend = backend_of(values)
        remaining = self.ties
        for v, k in zip(values, keep):
            if remaining is None:
                yield (v <= self.threshold) & k
                continue
            pick = (v < self.threshold) & k
            tied = (v == self.threshold) & k
            if remaining > 0 and backend.count(tied):
                take = tied & (backend.cumsum(tied) <= remaining)
                remaining -= backend.count(take)
                pick |= take
            yield pick


def plan_cut(
    scores: Sequence[torch.Tensor],
    alive: Sequence[torch.Tensor],
    already: int,
    n_prune: int,
    ties_together: bool,
    cap: int | None = None,
    hidden_zeros: int = 0,
    backend: Backend | None = None,
) -> Cut | None:
    """Decide the next pruning step over tensors sharing one threshold (None: prune nothing).

    Every scorer gives pruned entries a score of exactly 0, so the threshold of the reference (the
    ``n_prune``-th smallest score over all entries, pruned ones included) needs neither a
    concatenation of the tensors nor the pruned entries themselves: ``hidden_zeros`` of them may be
    left out of ``scores`` (compacted), and are counted as zeros.

    Args:
        scores: 1-D score tensors of the group, in position order (pruned entries present are 0).
        alive: boolean masks (True = kept) matching ``scores``.
        already: number of entries already pruned in the group, present or hidden.
        n_prune: total number of pruned entries wanted in the group (already pruned included).
        ties_together: prune every alive entry at or below the threshold (intermediate iterations);
            otherwise prune exactly ``n_prune`` in total, breaking ties by position.
        cap: with ``ties_together``, use the exact rule instead when the tied group would take the
            total past ``cap``.
        hidden_zeros: pruned entries of the group that ``scores`` leaves out.
        backend: the selection backend (default: chosen from the tensors' device).
    """
    need = n_prune - already
    present_pruned = already - hidden_zeros
    n_alive = sum(s.numel() for s in scores) - present_pruned
    if n_alive <= 0 or n_prune < 1 or (need <= 0 and not ties_together):
        return None
    backend = backend or backend_for(scores)
    values, keep = backend.views(scores), backend.views(alive)
    if ties_together:
        threshold, at_most = kth_with_hidden_zeros(values, n_prune, hidden_zeros)
        count = at_most - (present_pruned if threshold >= 0 else 0)
        if cap is None or already + count <= cap:
            return Cut(threshold, None, count) if count else None
        if need <= 0:
            return None
    if need >= n_alive:
        return Cut(math.inf, None, n_alive)
    # The need-th smallest alive score; pruned zeros that are present sit between negatives and positives.
    negatives = sum(backend.count(v < 0) for v in values)
    alive_zeros = sum(backend.count(v == 0) for v in values) - present_pruned
    if need <= negatives:
        threshold = kth_smallest(values, need)
    elif need <= negatives + alive_zeros:
        threshold = 0.0
    else:
        threshold = kth_smallest(values, need + present_pruned)
    below = sum(backend.count((v < threshold) & k) for v, k in zip(values, keep))
    return Cut(threshold, need - below, need)


def select_to_prune(
    scores: Sequence[torch.Tensor],
    alive: Sequence[torch.Tensor],
    already: int,
    n_prune: int,
    ties_together: bool,
    cap: int | None = None,
    hidden_zeros: int = 0,
    backend: Backend | None = None,
) -> tuple[list[torch.Tensor], list[int]]:
    """Choose which alive entries to prune next: :func:`plan_cut` applied to ``scores`` (same arguments).

    Returns:
        Boolean tensors matching ``scores`` that mark the newly pruned entries, and how many each marks.
    """
    cut = plan_cut(scores, alive, already, n_prune, ties_together, cap, hidden_zeros, backend)
    if cut is None:
        return [torch.zeros_like(m) for m in alive], [0] * len(alive)
    backend = backend or backend_for(scores)
    picks = list(cut.picks(backend.views(scores), backend.views(alive)))
    return [torch.as_tensor(p) for p in picks], [backend.count(p) for p in picks]
