"""Density schedules of the iterative loop and exact prune counts."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Literal

Schedule = Literal["exponential", "linear"]


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
