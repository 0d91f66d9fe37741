"""Densities, exact prune counts and score thresholds.

Tie rule (final iteration): entries are pruned in order of increasing score; among entries with
exactly the same score, the one that comes first (prunable tensors in ``named_parameters()`` order,
then row-major order inside a tensor) is pruned first. Intermediate iterations prune every entry
tied at the threshold together, as the reference implementation does, unless that would take the
total past the final target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
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


def _sample(segments: Sequence[Array], count: int, seed: int) -> Array:
    """Sorted values at ``count`` random positions of the concatenation of ``segments``."""
    sizes = np.array([len(s) for s in segments])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    positions = np.random.default_rng(seed).integers(0, offsets[-1], count)
    which = np.searchsorted(offsets, positions, side="right") - 1
    parts = []
    for i, segment in enumerate(segments):
        local = positions[which == i] - offsets[i]
        if isinstance(segment, np.ndarray):
            parts.append(segment[local])
        else:
            parts.append(segment[torch.from_numpy(local).to(segment.device)])
    sample = _concat(parts)
    return np.sort(sample) if isinstance(sample, np.ndarray) else sample.sort().values


def kth_smallest(segments: Sequence[Array], k: int, samples: int = 1 << 16) -> float:
    """The exact k-th smallest (1-based) value of the concatenation of ``segments``, without building it.

    A random sample brackets the answer; one pass counts the values at or below the bracket and
    keeps those inside it, and an exact selection runs on that small band. Falls back to exact
    selection over everything when the bracket misses (rare) or the data is small.

    Args:
        segments: 1-D numpy arrays (used for CPU tensors: their comparisons are several times
            faster) or 1-D torch tensors.
        k: rank, ``1 <= k <= total length``.
        samples: sample size for the bracket.
    """
    n = sum(len(s) for s in segments)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} is outside 1..{n}")
    if n <= 4 * samples:
        return _kth_exact(_concat(segments), k)
    sample = _sample(segments, samples, seed=n + k)
    q = k / n
    spread = 6 * math.sqrt(samples * q * (1 - q)) + 2
    lo = float(sample[max(math.floor(q * samples - spread), 0)])
    hi = float(sample[min(math.ceil(q * samples + spread), samples - 1)])
    at_most_lo = sum(_count(s <= lo) for s in segments)
    if k <= at_most_lo:
        if sum(_count(s < lo) for s in segments) < k:
            return lo
    else:
        band = _concat([s[(s > lo) & (s <= hi)] for s in segments])
        if k - at_most_lo <= len(band):
            return _kth_exact(band, k - at_most_lo)
    return _kth_exact(_concat(segments), k)


def _kth_with_hidden_zeros(values: Sequence[Array], k: int, hidden_zeros: int) -> float:
    """k-th smallest of ``values`` together with ``hidden_zeros`` extra zeros."""
    if hidden_zeros == 0:
        return kth_smallest(values, k)
    negatives = sum(_count(v < 0) for v in values)
    if k <= negatives:
        return kth_smallest(values, k)
    if k <= negatives + hidden_zeros + sum(_count(v == 0) for v in values):
        return 0.0
    return kth_smallest(values, k - hidden_zeros)


def select_to_prune(
    scores: Sequence[torch.Tensor],
    alive: Sequence[torch.Tensor],
    already: int,
    n_prune: int,
    ties_together: bool,
    cap: int | None = None,
    hidden_zeros: int = 0,
) -> tuple[list[torch.Tensor], list[int]]:
    """Choose which alive entries to prune next, over tensors sharing one threshold.

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

    Returns:
        Boolean tensors matching ``scores`` that mark the newly pruned entries, and how many each marks.
    """
    need = n_prune - already
    present_pruned = already - hidden_zeros
    n_alive = sum(s.numel() for s in scores) - present_pruned
    nothing = [torch.zeros_like(m) for m in alive]
    if n_alive <= 0 or n_prune < 1 or (need <= 0 and not ties_together):
        return nothing, [0] * len(nothing)
    on_cpu = scores[0].device.type == "cpu"
    values: list[Array] = [s.numpy() for s in scores] if on_cpu else list(scores)
    keep: list[Array] = [m.numpy() for m in alive] if on_cpu else list(alive)

    def kept(mask: Array, i: int) -> torch.Tensor:
        mask = mask & keep[i]
        return torch.from_numpy(mask) if isinstance(mask, np.ndarray) else mask

    if ties_together:
        threshold = _kth_with_hidden_zeros(values, n_prune, hidden_zeros)
        chosen = [kept(v <= threshold, i) for i, v in enumerate(values)]
        counts = [_count(c) for c in chosen]
        if cap is None or already + sum(counts) <= cap:
            return chosen, counts
        if need <= 0:
            return nothing, [0] * len(nothing)
    if need >= n_alive:
        return [m.clone() for m in alive], [_count(m) for m in alive]

    # The need-th smallest alive score; pruned zeros that are present sit between negatives and positives.
    negatives = sum(_count(v < 0) for v in values)
    alive_zeros = sum(_count(v == 0) for v in values) - present_pruned
    if need <= negatives:
        threshold = kth_smallest(values, need)
    elif need <= negatives + alive_zeros:
        threshold = 0.0
    else:
        threshold = kth_smallest(values, need + present_pruned)
    below = [kept(v < threshold, i) for i, v in enumerate(values)]
    remaining = need - sum(_count(b) for b in below)
    newly, counts = [], []
    for i, (v, b) in enumerate(zip(values, below)):
        tied = kept(v == threshold, i)
        take = tied & (torch.cumsum(tied, 0) <= remaining)
        remaining -= _count(take)
        newly.append(b | take)
        counts.append(_count(newly[-1]))
    return newly, counts
