"""Densities, exact prune counts and score thresholds.

Tie rule (final iteration): entries are pruned in order of increasing score; among entries with
exactly the same score, the one that comes first (prunable tensors in ``named_parameters()`` order,
then row-major order inside a tensor) is pruned first. Intermediate iterations prune every entry
tied at the threshold together, as the reference implementation does, unless that would take the
total past the final target.
"""

from __future__ import annotations

import math
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


def _kth_exact(values: Array, k: int) -> float:
    if isinstance(values, np.ndarray):
        return float(np.partition(values, k - 1)[k - 1])
    return float(torch.kthvalue(values, k).values)


def _sample(values: Array, count: int, seed: int) -> Array:
    generator = np.random.default_rng(seed)
    if isinstance(values, np.ndarray):
        return np.sort(values[generator.integers(0, values.size, count)])
    index = torch.from_numpy(generator.integers(0, values.numel(), count)).to(values.device)
    return values[index].sort().values


def kth_smallest(values: Array, k: int, samples: int = 1 << 16) -> float:
    """The exact k-th smallest (1-based) entry of a 1-D array, without sorting all of it.

    A random sample brackets the answer; one pass counts the entries at or below the bracket and
    keeps those inside it, and an exact selection runs on that small band. Falls back to exact
    selection over everything when the bracket misses (rare) or the array is small.

    Args:
        values: a 1-D numpy array (used for CPU tensors: its comparisons are several times faster)
            or a torch tensor.
        k: rank, ``1 <= k <= len(values)``.
        samples: sample size for the bracket.
    """
    n = len(values)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} is outside 1..{n}")
    if n <= 4 * samples:
        return _kth_exact(values, k)
    sample = _sample(values, samples, seed=n + k)
    q = k / n
    spread = 6 * math.sqrt(samples * q * (1 - q)) + 2
    lo = float(sample[max(math.floor(q * samples - spread), 0)])
    hi = float(sample[min(math.ceil(q * samples + spread), samples - 1)])
    at_most_lo = _count(values <= lo)
    if k <= at_most_lo:
        if _count(values < lo) < k:
            return lo
    else:
        band = values[(values > lo) & (values <= hi)]
        if k - at_most_lo <= len(band):
            return _kth_exact(band, k - at_most_lo)
    return _kth_exact(values, k)


def select_to_prune(
    scores: torch.Tensor,
    alive: torch.Tensor,
    already: int,
    n_prune: int,
    ties_together: bool,
    cap: int | None = None,
) -> torch.Tensor:
    """Choose which alive entries to prune next, over entries sharing one threshold.

    Every scorer gives pruned entries a score of exactly 0, so the threshold of the reference (the
    ``n_prune``-th smallest score over all entries, pruned ones included) needs no gathering of the
    alive entries.

    Args:
        scores: flat scores of the group (pruned entries exactly 0).
        alive: flat boolean mask of the group (True = kept).
        already: number of entries already pruned in the group.
        n_prune: total number of pruned entries wanted in the group (already pruned included).
        ties_together: prune every alive entry at or below the threshold (intermediate iterations);
            otherwise prune exactly ``n_prune`` in total, breaking ties by position.
        cap: with ``ties_together``, use the exact rule instead when the tied group would take the
            total past ``cap``.

    Returns:
        Flat boolean tensor marking the newly pruned entries.
    """
    need = n_prune - already
    n_alive = scores.numel() - already
    if n_alive <= 0 or n_prune < 1 or (need <= 0 and not ties_together):
        return torch.zeros_like(alive)
    on_cpu = scores.device.type == "cpu"
    values: Array = scores.numpy() if on_cpu else scores
    keep: Array = alive.numpy() if on_cpu else alive

    def as_tensor(mask: Array) -> torch.Tensor:
        return torch.from_numpy(mask) if isinstance(mask, np.ndarray) else mask

    if ties_together:
        chosen = (values <= kth_smallest(values, n_prune)) & keep
        if cap is None or already + _count(chosen) <= cap:
            return as_tensor(chosen)
        if need <= 0:
            return torch.zeros_like(alive)
    if need >= n_alive:
        return alive.clone()

    # The need-th smallest alive score; the `already` pruned zeros sit between negatives and positives.
    negatives = _count(values < 0)
    alive_zeros = _count(values == 0) - already
    if need <= negatives:
        threshold = kth_smallest(values, need)
    elif need <= negatives + alive_zeros:
        threshold = 0.0
    else:
        threshold = kth_smallest(values, need + already)
    below = as_tensor((values < threshold) & keep)
    tied = as_tensor((values == threshold) & keep)
    remaining = need - _count(below)
    return below | (tied & (torch.cumsum(tied, 0) <= remaining))
