import math
from fractions import Fraction

import pytest

from lightning_synflow.pruning.schedule import exact_fraction, prune_count, schedule_densities


def test_prune_count_is_not_moved_by_float_rounding():
    # int((1 - 0.01) * 100) style arithmetic gives 98 for some of these; the exact count is 99.
    assert prune_count(1 - exact_fraction(0.99), 100) == 99
    assert prune_count(exact_fraction(0.01), 100) == 99
    assert prune_count(Fraction(1, 100), 14_715_584) == 14_568_428
    for n in range(1, 500):
        for s in (0.1, 0.3, 0.7, 0.9, 0.99):
            assert prune_count(1 - exact_fraction(s), n) == math.floor(Fraction(str(s)) * n)


@pytest.mark.parametrize("schedule", ["exponential", "linear"])
def test_schedule_densities(schedule):
    d = Fraction(1, 100)
    steps = schedule_densities(d, 4, schedule)
    assert steps[-1] == d and len(steps) == 4
    assert all(a > b for a, b in zip(steps, steps[1:]))
    if schedule == "exponential":
        assert [float(x) for x in steps[:3]] == pytest.approx([0.01**0.25, 0.01**0.5, 0.01**0.75])
    else:
        assert steps[:3] == [1 - Fraction(99, 400), 1 - Fraction(99, 200), 1 - Fraction(297, 400)]


def test_rational_powers_are_exact_so_intermediate_rounds_keep_their_exact_count():
    # compression 27 over 3 lottery levels: 27 ** (-1/3) is exactly 1/3 (the float power is 0.33333333333333337)
    densities = schedule_densities(Fraction(1, 27), 3, "exponential")
    assert densities == [Fraction(1, 3), Fraction(1, 9), Fraction(1, 27)]
    assert 42_240 - prune_count(densities[0], 42_240) == 14_080
    assert schedule_densities(Fraction(1, 1000), 3, "exponential")[:2] == [Fraction(1, 10), Fraction(1, 100)]
    assert schedule_densities(Fraction(1, 64), 3, "exponential")[0] == Fraction(1, 4)


def test_irrational_powers_are_the_float_powers_shortest_decimal():
    density = schedule_densities(Fraction(1, 100), 100, "exponential")[0]
    assert density == Fraction(repr(0.01 ** (1 / 100)))
