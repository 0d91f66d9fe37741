import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_synflow.pruning.cut import Cut, plan_cut, select_to_prune
from lightning_synflow.pruning.select import NUMPY, TORCH


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


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300_000), st.booleans(), st.data())
def test_torch_and_numpy_backends_plan_the_same_cut_on_cpu_data(n, ties_together, data):
    # The torch backend is what CUDA tensors take; forcing it on CPU tensors covers it without a GPU.
    levels = data.draw(st.sampled_from([0, 7, 1000]))  # 0: continuous scores, else that many distinct ones
    scores = torch.randint(-2, levels, (n,)).float() if levels else torch.randn(n) ** 3
    alive = torch.rand(n) >= data.draw(st.floats(0, 0.9))
    scores[~alive] = 0  # pruned entries score exactly 0
    present = n - int(alive.sum())
    hidden_zeros = data.draw(st.integers(0, 100))
    already = present + hidden_zeros
    total = n + hidden_zeros
    n_prune = data.draw(st.integers(0, total))
    cap = data.draw(st.none() | st.integers(n_prune, total))
    split = data.draw(st.integers(0, n))
    args = ([scores[:split], scores[split:]], [alive[:split].clone(), alive[split:].clone()], already, n_prune)
    on_numpy = plan_cut(*args, ties_together, cap, hidden_zeros, backend=NUMPY)
    assert plan_cut(*args, ties_together, cap, hidden_zeros, backend=TORCH) == on_numpy
    assert plan_cut(*args, ties_together, cap, hidden_zeros) == on_numpy  # CPU tensors default to numpy
    picks, counts = select_to_prune(*args, ties_together, cap, hidden_zeros, backend=NUMPY)
    torch_picks, torch_counts = select_to_prune(*args, ties_together, cap, hidden_zeros, backend=TORCH)
    assert counts == torch_counts
    assert all(torch.equal(a, b) for a, b in zip(picks, torch_picks))
    assert sum(counts) == (0 if on_numpy is None else on_numpy.count)
