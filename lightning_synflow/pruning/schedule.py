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


def _exact_root(value: int, degree: int) -> int | None:
    """The integer ``degree``-th root of ``value >= 0`` when it is exact (and ``value`` fits a float), else None."""
    if value.bit_length() > 1000:
        return None
    guess = round(float(value) ** (1 / degree))
    for root in (guess - 1, guess, guess + 1):
        if root >= 0 and root**degree == value:
            return int(root)
    return None


def fractional_power(density: Fraction, exponent: Fraction) -> Fraction:
    """``density ** exponent`` exactly where that is rational, else the float power's shortest decimal.

    ``fractional_power(Fraction(1, 27), Fraction(1, 3)) == Fraction(1, 3)``, where the float power gives
    0.33333333333333337 and so one weight too many kept at 1/3 of 42,240. A power is rational exactly when
    the numerator and denominator of ``density`` are perfect powers of the exponent's denominator.
    """
    numerator = _exact_root(density.numerator, exponent.denominator)
    denominator = _exact_root(density.denominator, exponent.denominator)
    if numerator is not None and denominator is not None:
        return Fraction(numerator, denominator) ** exponent.numerator
    return exact_fraction(float(density) ** float(exponent))


def schedule_densities(density: Fraction, iterations: int, schedule: Schedule) -> list[Fraction]:
    """Target density after each iteration of Algorithm 1; the last one is ``density`` exactly.

    Args:
        density: final fraction of weights kept.
        iterations: number of prune iterations ``n``.
        schedule: ``"exponential"`` (``d ** (e / n)``, exact where rational, see :func:`fractional_power`)
            or ``"linear"`` (``1 - (1 - d) * e / n``, always exact).
    """
    densities = []
    for e in range(1, iterations + 1):
        if e == iterations:
            densities.append(density)
        elif schedule == "exponential":
            densities.append(fractional_power(density, Fraction(e, iterations)))
        else:
            densities.append(1 - (1 - density) * Fraction(e, iterations))
    return densities
