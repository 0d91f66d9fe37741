"""Cut planning: which alive entries a pruning step removes, with exact counts, the tie rule and floors.

Tie rule (final iteration): entries are pruned in order of increasing score; among entries with
exactly the same score, the one that comes first (prunable tensors in ``named_parameters()`` order,
then row-major order inside a tensor) is pruned first. Intermediate iterations prune every entry
tied at the threshold together, as the reference implementation does, unless that would take the
total past the final target.

Floors (``min_density``): a tensor may be given a room, the most entries it may lose in a step.
:func:`plan_cuts` plans the step over the whole group; every tensor that would lose more than its
room loses exactly its room instead (its lowest-scored alive entries, ties by position), leaves the
group, and the rest of the group is planned again for the remaining count, until no tensor exceeds
its room. The group's total stays exactly the planned count.

Over a device mesh (a :class:`~lightning_synflow.pruning.collective.Collective` of several ranks)
each rank passes its own row shards of the group's tensors and every count is over all of them;
position order inside a tensor is then rank order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lightning_synflow.pruning.collective import LOCAL, Collective
from lightning_synflow.pruning.select import (
    Array,
    Backend,
    backend_for,
    backend_of,
    kth_smallest,
    kth_with_hidden_zeros,
    negatives_and_zeros,
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

    def picks(self, values: Sequence[Array], keep: Sequence[Array], collective: Collective = LOCAL) -> Iterator[Array]:
        """Per segment, the alive entries the cut removes (boolean arrays like ``values``).

        With a tie limit, the tied entries of every segment are counted first, all in one read (one
        synchronization on a GPU), so each segment then knows how many of its ties go.

        Args:
            values: 1-D score arrays of one backend (numpy views or torch tensors).
            keep: boolean arrays (True = alive) matching ``values``.
            collective: the ranks the cut was planned over (each passes its own segments).
        """
        if self.ties is None:
            for v, k in zip(values, keep):
                yield (v <= self.threshold) & k
            return
        backend = backend_of(values)
        tied_counts = backend.counts((v == self.threshold) & k for v, k in zip(values, keep))
        quotas = tie_quotas(self.ties, collective.gather_counts(tied_counts), collective.rank)
        for v, k, take, tied_count in zip(values, keep, quotas, tied_counts):
            pick = (v < self.threshold) & k
            if take:
                tied = (v == self.threshold) & k
                pick |= tied if take == tied_count else tied & (backend.cumsum(tied) <= take)
            yield pick

    def counts(self, values: Sequence[Array], keep: Sequence[Array], collective: Collective = LOCAL) -> list[int]:
        """Per segment, how many alive entries the cut removes over every rank (arguments of :meth:`picks`)."""
        return collective.sum(backend_of(values).counts(self.picks(values, keep, collective)))


def tie_quotas(ties: int, tied: Sequence[Sequence[int]], rank: int) -> list[int]:
    """How many of its tied entries each segment of ``rank`` gives up, when ``ties`` of them go in position order.

    Position order is segment by segment and, inside a segment (a tensor sharded by rows), rank by rank.

    Args:
        ties: how many tied entries go in all.
        tied: tied entries of each segment on each rank, ``[rank][segment]``.
        rank: the rank asking.
    """
    remaining, mine = ties, []
    for segment in range(len(tied[rank])):
        for other, counts in enumerate(tied):
            take = min(remaining, counts[segment])
            remaining -= take
            if other == rank:
                mine.append(take)
    return mine


def _kth_alive(values: Sequence[Array], need: int, present_pruned: int, collective: Collective) -> float:
    """The ``need``-th smallest alive score, where ``values`` also hold ``present_pruned`` pruned zeros."""
    negatives, zeros = negatives_and_zeros(values, collective)
    alive_zeros = zeros - present_pruned
    if need <= negatives:
        return kth_smallest(values, need, None, collective)
    if need <= negatives + alive_zeros:
        return 0.0
    return kth_smallest(values, need + present_pruned, None, collective)


def plan_cut(
    scores: Sequence[torch.Tensor],
    alive: Sequence[torch.Tensor],
    already: int,
    n_prune: int,
    ties_together: bool,
    cap: int | None = None,
    hidden_zeros: int = 0,
    backend: Backend[Any] | None = None,
    zeros_with_pruned: bool = True,
    collective: Collective = LOCAL,
) -> Cut | None:
    """Decide the next pruning step over tensors sharing one threshold (None: prune nothing).

    Every scorer gives pruned entries a score of exactly 0, so the threshold of the reference (the
    ``n_prune``-th smallest score over all entries, pruned ones included) needs neither a
    concatenation of the tensors nor the pruned entries themselves: ``hidden_zeros`` of them may be
    left out of ``scores`` (compacted), and are counted as zeros.

    With ``zeros_with_pruned=False`` (inverted scores, where pruned entries are no longer the lowest)
    the intermediate threshold is taken over the alive entries only: it is the ``n_prune - already``-th
    smallest alive score, every alive entry at or below it goes (same cap), and nothing goes once the
    count is reached. The final, exact rule never depends on where the pruned entries rank.

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
        zeros_with_pruned: rank the pruned entries as zeros among the alive ones at intermediate
            iterations (the reference's rule: alive entries scoring 0 leave with them); False ranks
            the alive entries only.
        collective: the ranks planning the cut together, each with its own row shards of the group's
            tensors; ``already``, ``n_prune``, ``cap`` and ``hidden_zeros`` are then over all of them.
    """
    need = n_prune - already
    present_pruned = already - hidden_zeros
    n_alive = collective.sum([sum(s.numel() for s in scores)])[0] - present_pruned
    if n_alive <= 0 or n_prune < 1 or (need <= 0 and not (ties_together and zeros_with_pruned)):
        return None
    backend = backend or backend_for(scores)
    values, keep = backend.views(scores), backend.views(alive)
    if ties_together:
        if zeros_with_pruned:
            threshold, at_most = kth_with_hidden_zeros(values, n_prune, hidden_zeros, collective)
            count = at_most - (present_pruned if threshold >= 0 else 0)
        elif need < n_alive:
            threshold = _kth_alive(values, need, present_pruned, collective)
            (count,) = collective.sum([sum(backend.counts((v <= threshold) & k for v, k in zip(values, keep)))])
        else:
            threshold, count = math.inf, n_alive
        if cap is None or already + count <= cap:
            return Cut(threshold, None, count) if count else None
        if need <= 0:
            return None
    if need >= n_alive:
        return Cut(math.inf, None, n_alive)
    # The need-th smallest alive score; pruned zeros that are present sit between negatives and positives.
    threshold = _kth_alive(values, need, present_pruned, collective)
    (below,) = collective.sum([sum(backend.counts((v < threshold) & k for v, k in zip(values, keep)))])
    return Cut(threshold, need - below, need)


def plan_cuts(
    scores: Sequence[torch.Tensor],
    alive: Sequence[torch.Tensor],
    already: Sequence[int],
    hidden: Sequence[int],
    n_prune: int,
    ties_together: bool,
    cap: int | None = None,
    room: Sequence[int] | None = None,
    zeros_with_pruned: bool = True,
    backend: Backend[Any] | None = None,
    collective: Collective = LOCAL,
) -> list[tuple[list[int], Cut]]:
    """Plan the next pruning step over a group of tensors, each losing at most its ``room``.

    Without ``room`` this is :func:`plan_cut` over the whole group. With it, a small water-filling
    loop: plan over the tensors still free; every one that would lose more than its room is fixed
    at exactly its room (its own exact cut) and leaves; plan the rest again for what remains of
    ``n_prune`` (and of ``cap``). Fixing a tensor only raises the others' threshold, so the loop ends
    after at most one round per tensor, and the group's total is what :func:`plan_cut` would prune.

    Args:
        scores: 1-D score tensors of the group (see :func:`plan_cut`).
        alive: boolean masks (True = kept) matching ``scores``.
        already: entries already pruned in each tensor, present or hidden.
        hidden: pruned entries of each tensor that ``scores`` leaves out.
        n_prune: total number of pruned entries wanted in the group (already pruned included).
        ties_together: see :func:`plan_cut`.
        cap: see :func:`plan_cut`.
        room: the most entries each tensor may lose in this step (None: no limit).
        zeros_with_pruned: see :func:`plan_cut`.
        backend: the selection backend (default: chosen from the tensors' device).
        collective: the ranks planning together (see :func:`plan_cut`); ``already``, ``hidden`` and
            ``room`` are then over all of them.

    Returns:
        ``(tensors, cut)`` pairs: positions in the group of the tensors each cut is planned on (in
        order), and the cut; tensors pruned by no pair lose nothing.
    """
    free = list(range(len(scores)))

    def plan(members: list[int], target: int, exact: bool, limit: int | None) -> Cut | None:
        return plan_cut(
            [scores[i] for i in members],
            [alive[i] for i in members],
            sum(already[i] for i in members),
            target,
            ties_together and not exact,
            limit,
            sum(hidden[i] for i in members),
            backend,
            zeros_with_pruned,
            collective,
        )

    cut = plan(free, n_prune, False, cap)
    if room is None:
        return [] if cut is None else [(free, cut)]
    backend = backend or backend_for(scores)
    fixed: list[int] = []
    while cut is not None:
        views = backend.views([scores[i] for i in free]), backend.views([alive[i] for i in free])
        counts = cut.counts(*views, collective)
        over = [i for i, count in zip(free, counts) if count > room[i]]
        if not over:
            break
        fixed += over
        free = [i for i in free if i not in over]
        taken = sum(already[i] + room[i] for i in fixed)
        cut = plan(free, n_prune - taken, False, None if cap is None else cap - taken)
    plans = [([i], plan([i], already[i] + room[i], True, None)) for i in sorted(fixed)]
    if cut is not None:
        plans.append((free, cut))
    return [(members, found) for members, found in plans if found is not None]


def select_to_prune(
    scores: Sequence[torch.Tensor],
    alive: Sequence[torch.Tensor],
    already: int,
    n_prune: int,
    ties_together: bool,
    cap: int | None = None,
    hidden_zeros: int = 0,
    backend: Backend[Any] | None = None,
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
    return [torch.as_tensor(p) for p in picks], backend.counts(picks)
