import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_synflow.pruning import masks as masks_module
from lightning_synflow.pruning.masks import (
    Cut,
    exact_fraction,
    keep_above,
    kth_smallest,
    prune_count,
    schedule_densities,
    select_to_prune,
)


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


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 100_000), st.sampled_from([16, 256]), st.data())
def test_kth_smallest_matches_kthvalue(n, samples, data):
    zeros = data.draw(st.floats(0, 0.9))
    k = data.draw(st.integers(1, n))
    values = torch.rand(n) ** 8
    values[torch.rand(n) < zeros] = 0
    expected = float(torch.kthvalue(values, k).values)
    assert kth_smallest([values], k, samples) == expected
    assert kth_smallest([values.numpy()], k, samples) == expected
    cut = data.draw(st.integers(0, n))
    assert kth_smallest([values[:cut], values[cut:]], k, samples) == expected
    assert kth_smallest([values[:cut].numpy(), values[cut:].numpy()], k, samples) == expected


def test_kth_smallest_large_with_ties():
    values = torch.randint(0, 50, (2_000_000,)).float()
    for k in (1, 1000, 1_000_000, 2_000_000):
        assert kth_smallest([values[:3].numpy(), values[3:].numpy()], k) == float(torch.kthvalue(values, k).values)


def test_final_selection_is_exact_with_ties_and_prunes_first_positions_first():
    scores = torch.tensor([0.0, 1.0, 1.0, 1.0, 2.0, 0.0])
    alive = torch.tensor([False, True, True, True, True, True])
    newly, count = select_to_prune([scores[:2], scores[2:]], [alive[:2], alive[2:]], 1, 3, False)
    # alive zero at index 5 goes first, then the first tied 1.0 (index 1).
    assert torch.cat(newly).tolist() == [False, True, False, False, False, True] and count == [1, 1]


def test_intermediate_selection_prunes_ties_together_unless_capped():
    scores = torch.tensor([0.0, 1.0, 1.0, 1.0, 2.0, 3.0])
    alive = torch.tensor([False, True, True, True, True, True])
    newly, count = select_to_prune([scores], [alive], 1, 2, True)
    assert newly[0].tolist() == [False, True, True, True, False, False] and count == [3]
    capped, count = select_to_prune([scores], [alive], 1, 2, True, cap=3)
    assert capped[0].tolist() == [False, True, False, False, False, False] and count == [1]


def test_signed_scores_prune_most_negative_first():
    scores = torch.tensor([-3.0, 0.0, 2.0, -1.0, 0.0])  # index 1 is pruned (score 0)
    alive = torch.tensor([True, False, True, True, True])
    newly, _ = select_to_prune([scores], [alive], 1, 3, False)
    assert newly[0].tolist() == [True, False, False, True, False]
    newly, _ = select_to_prune([scores], [alive], 1, 4, False)
    assert newly[0].tolist() == [True, False, False, True, True]


def test_split_and_whole_selection_agree():
    scores = torch.rand(500_000)
    scores[:100_000] = 0
    alive = torch.ones(500_000, dtype=torch.bool)
    alive[:50_000] = False
    (a,), count = select_to_prune([scores], [alive], 50_000, 200_000, False)
    assert int(a.sum()) == 150_000 == count[0]
    parts, _ = select_to_prune([scores[:1000], scores[1000:]], [alive[:1000], alive[1000:]], 50_000, 200_000, False)
    assert np.array_equal(a.numpy(), torch.cat(parts).numpy())


@settings(max_examples=30, deadline=None)
@given(st.integers(65, 5_000), st.data())
def test_chunked_count_and_band_cross_chunk_boundaries(n, data):
    k = data.draw(st.integers(1, n))
    values = torch.rand(n) ** 4
    values[torch.rand(n) < 0.3] = 0
    cut = data.draw(st.integers(0, n))
    segments = [values[:cut].numpy(), values[cut:].numpy()]
    expected = float(torch.kthvalue(values, k).values)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(masks_module, "CHUNK", 7)
        assert kth_smallest(segments, k, 16) == expected


def test_keep_above_clears_in_place_and_counts():
    values = torch.rand(1000)
    keep = torch.rand(1000) < 0.7
    before = keep.clone()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(masks_module, "CHUNK", 64)
        cleared = keep_above(keep.numpy(), values.numpy(), 0.4)
    assert torch.equal(keep, before & (values > 0.4))
    assert cleared == int((before & (values <= 0.4)).sum())


@pytest.mark.parametrize("ties", [None, 0, 2])
def test_cut_picks_agree_on_torch_tensors_and_numpy_views(ties):
    # CUDA tensors take the torch branch; CPU tensors the numpy one.
    values = torch.tensor([0.0, 1.0, 1.0, 0.5, 1.0, 2.0, 1.0])
    keep = torch.tensor([False, True, True, True, True, True, True])
    cut = Cut(1.0, ties, 0)
    segments = [(values[:3], keep[:3]), (values[3:], keep[3:])]
    from_torch = [torch.as_tensor(p) for p in cut.picks([v for v, _ in segments], [k for _, k in segments])]
    from_numpy = [
        torch.as_tensor(p) for p in cut.picks([v.numpy() for v, _ in segments], [k.numpy() for _, k in segments])
    ]
    assert [p.tolist() for p in from_torch] == [p.tolist() for p in from_numpy]
    expected = {None: [1, 2, 3, 4, 6], 0: [3], 2: [1, 2, 3]}[ties]
    assert torch.cat(from_torch).nonzero().view(-1).tolist() == expected
