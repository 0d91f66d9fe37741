"""Densities, exact prune counts and score thresholds.

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
from fractions import Fraction
from functools import lru_cache
from typing import Literal, Union

import numpy as np
import torch

Schedule = Literal["exponential", "linear"]
Scope = Literal["global", "local"]


def exact_fraction(value: float) -> Fraction:
    """The decimal a user meant by a float: ``exact_fraction(0.99) == Fraction(99, 100)``."""
    return Fraction(repr(float(value)))


def prune_count(density: Fraction | float, numel: int) -> int:
    """Number of entries pruned at ``density`` out of ``numel``: ``floor((1 - density) * numel)``."""
    if not isinstance(density, Fraction):
        density = exact_fraction(density)
    return math.floor((1 - density) * numel)


def schedule_densities(density: Fraction, iterations: int, schedule: Schedule) -> list[Fraction]:
    """Target density after each iteration of Algorithm 1; the last one is ``density`` exactly.

    Args:
        density: final fraction of weights kept.
        iterations: number of prune iterations ``n``.
        schedule: ``"exponential"`` (``d ** (e / n)``) or ``"linear"`` (``1 - (1 - d) * e / n``).
    """
    densities = []
    for e in range(1, iterations + 1):
        if e == iterations:
            densities.append(density)
        elif schedule == "exponential":
            densities.append(exact_fraction(float(density) ** (e / iterations)))
        else:
            densities.append(1 - (1 - density) * Fraction(e, iterations))
    return densities


Array = Union[np.ndarray, torch.Tensor]


def _count(mask: Array) -> int:
    return int(np.count_nonzero(mask) if isinstance(mask, np.ndarray) else torch.count_nonzero(mask))


def _concat(parts: Sequence[Array]) -> Array:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return torch.cat(list(parts))


def _kth_exact(values: Array, k: int) -> float:
    if isinstance(values, np.ndarray):
        return float(np.partition(values, k - 1)[k - 1])
    return float(torch.kthvalue(values, k).values)


@lru_cache(maxsize=8)
def _sample_positions(sizes: tuple[int, ...], count: int) -> tuple[np.ndarray, ...]:
    """Per segment, sorted local positions of ``count`` uniform draws over the concatenation (fixed seed)."""
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    positions = np.sort(np.random.default_rng(len(sizes) + offsets[-1]).integers(0, offsets[-1], count))
    cuts = np.searchsorted(positions, offsets)
    return tuple(positions[cuts[i] : cuts[i + 1]] - offsets[i] for i in range(len(sizes)))


def _sample(segments: Sequence[Array], count: int) -> Array:
    """Sorted values at ``count`` random positions of the concatenation of ``segments``.

    The positions depend only on the segments' lengths, so iterations over the same view reuse them.
    """
    parts = []
    for segment, local in zip(segments, _sample_positions(tuple(len(s) for s in segments), count)):
        if isinstance(segment, np.ndarray):
            parts.append(segment[local])
        else:
            parts.append(segment[torch.from_numpy(local).to(segment.device)])
    sample = _concat(parts)
    return np.sort(sample) if isinstance(sample, np.ndarray) else sample.sort().values


#: Chunk length for counting and banding numpy segments: small enough that the temporaries stay in cache.
CHUNK = 1 << 18


def _count_and_band(segment: Array, lo: float, hi: float) -> tuple[int, Array]:
    """How many values of ``segment`` are ``<= lo``, and the values in ``(lo, hi]``."""
    if not isinstance(segment, np.ndarray):
        return _count(segment <= lo), segment[(segment > lo) & (segment <= hi)]
    count, parts = 0, []
    for start in range(0, len(segment), CHUNK):
        chunk = segment[start : start + CHUNK]
        count += int(np.count_nonzero(chunk <= lo))
        parts.append(chunk[(chunk > lo) & (chunk <= hi)])
    return count, np.concatenate(parts) if parts else segment[:0]


def keep_above(keep: np.ndarray, values: np.ndarray, threshold: float) -> int:
    """Clear ``keep`` (in place) where ``values <= threshold``; return how many entries it cleared."""
    cleared = 0
    for start in range(0, len(keep), CHUNK):
        part = keep[start : start + CHUNK]
        before = int(np.count_nonzero(part))
        np.logical_and(part, values[start : start + CHUNK] > threshold, out=part)
        cleared += before - int(np.count_nonzero(part))
    return cleared


def _kth_and_count(segments: Sequence[Array], k: int, samples: int = 1 << 16) -> tuple[float, int]:
    """The k-th smallest value of the concatenation of ``segments``, and how many values are at or below it."""
    n = sum(len(s) for s in segments)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} is outside 1..{n}")
    if n > 4 * samples:
        sample = _sample(segments, samples)
        q = k / n
        spread = 6 * math.sqrt(samples * q * (1 - q)) + 2
        lo = float(sample[max(math.floor(q * samples - spread), 0)])
        hi = float(sample[min(math.ceil(q * samples + spread), samples - 1)])
        counted = [_count_and_band(s, lo, hi) for s in segments]
        at_most_lo = sum(count for count, _ in counted)
        if k <= at_most_lo:
            if sum(_count(s < lo) for s in segments) < k:
                return lo, at_most_lo
        else:
            band = _concat([b for _, b in counted])
            if k - at_most_lo <= len(band):
                value = _kth_exact(band, k - at_most_lo)
                return value, at_most_lo + _count(band <= value)
    value = _kth_exact(_concat(segments), k)
    return value, sum(_count(s <= value) for s in segments)


def kth_smallest(segments: Sequence[Array], k: int, samples: int = 1 << 16) -> float:
    """The exact k-th smallest (1-based) value of the concatenation of ``segments``, without building it.

    A random sample brackets the answer; one chunked pass counts the values at or below the bracket
    and keeps those inside it, and an exact selection runs on that small band. Falls back to exact
    selection over everything when the bracket misses (rare) or the data is small.

    Args:
        segments: 1-D numpy arrays (used for CPU tensors: their comparisons are several times
            faster) or 1-D torch tensors.
        k: rank, ``1 <= k <= total length``.
        samples: sample size for the bracket.
    """
    return _kth_and_count(segments, k, samples)[0]


def _kth_with_hidden_zeros(values: Sequence[Array], k: int, hidden_zeros: int) -> tuple[float, int]:
    """k-th smallest of ``values`` and ``hidden_zeros`` extra zeros; also how many ``values`` are at or below it."""
    if hidden_zeros == 0:
        return _kth_and_count(values, k)
    negatives = sum(_count(v < 0) for v in values)
    if k <= negatives:
        return _kth_and_count(values, k)
    zeros = sum(_count(v == 0) for v in values)
    if k <= negatives + hidden_zeros + zeros:
        return 0.0, negatives + zeros
    return _kth_and_count(values, k - hidden_zeros)


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
        """Per segment, the alive entries the cut removes (boolean arrays like ``values``)."""
        remaining = self.ties
        for v, k in zip(values, keep):
            if remaining is None:
                yield (v <= self.threshold) & k
                continue
            pick = (v < self.threshold) & k
            tied = (v == self.threshold) & k
            if remaining > 0 and _count(tied):
                order = np.cumsum(tied) if isinstance(tied, np.ndarray) else torch.cumsum(tied, 0)
                take = tied & (order <= remaining)
                remaining -= _count(take)
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
    """
    need = n_prune - already
    present_pruned = already - hidden_zeros
    n_alive = sum(s.numel() for s in scores) - present_pruned
    if n_alive <= 0 or n_prune < 1 or (need <= 0 and not ties_together):
        return None
    values, keep = arrays(scores), arrays(alive)
    if ties_together:
        threshold, at_most = _kth_with_hidden_zeros(values, n_prune, hidden_zeros)
        count = at_most - (present_pruned if threshold >= 0 else 0)
        if cap is None or already + count <= cap:
            return Cut(threshold, None, count) if count else None
        if need <= 0:
            return None
    if need >= n_alive:
        return Cut(math.inf, None, n_alive)
    # The need-th smallest alive score; pruned zeros that are present sit between negatives and positives.
    negatives = sum(_count(v < 0) for v in values)
    alive_zeros = sum(_count(v == 0) for v in values) - present_pruned
    if need <= negatives:
        threshold = kth_smallest(values, need)
    elif need <= negatives + alive_zeros:
        threshold = 0.0
    else:
        threshold = kth_smallest(values, need + present_pruned)
    below = sum(_count((v < threshold) & k) for v, k in zip(values, keep))
    return Cut(threshold, need - below, need)


def arrays(tensors: Sequence[torch.Tensor]) -> list[Array]:
    """Zero-copy numpy views of CPU tensors (faster comparisons), the tensors themselves elsewhere."""
    if tensors and tensors[0].device.type == "cpu":
        return [t.numpy() for t in tensors]
    return list(tensors)


def select_to_prune(
    scores: Sequence[torch.Tensor],
    alive: Sequence[torch.Tensor],
    already: int,
    n_prune: int,
    ties_together: bool,
    cap: int | None = None,
    hidden_zeros: int = 0,
) -> tuple[list[torch.Tensor], list[int]]:
    """Choose which alive entries to prune next: :func:`plan_cut` applied to ``scores``.

    Returns:
        Boolean tensors matching ``scores`` that mark the newly pruned entries, and how many each marks.
    """
    cut = plan_cut(scores, alive, already, n_prune, ties_together, cap, hidden_zeros)
    if cut is None:
        return [torch.zeros_like(m) for m in alive], [0] * len(alive)
    picks = [torch.as_tensor(p) for p in cut.picks(arrays(scores), arrays(alive))]
    return picks, [_count(p) for p in picks]
