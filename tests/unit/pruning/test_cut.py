import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_synflow.pruning.cut import Cut, plan_cut, plan_cuts, select_to_prune
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
    zeros_with_pruned = data.draw(st.booleans())
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
    on_numpy = plan_cut(*args, ties_together, cap, hidden_zeros, NUMPY, zeros_with_pruned)
    assert plan_cut(*args, ties_together, cap, hidden_zeros, TORCH, zeros_with_pruned) == on_numpy
    assert plan_cut(*args, ties_together, cap, hidden_zeros, None, zeros_with_pruned) == on_numpy  # numpy on CPU
    if not zeros_with_pruned:
        return
    picks, counts = select_to_prune(*args, ties_together, cap, hidden_zeros, backend=NUMPY)
    torch_picks, torch_counts = select_to_prune(*args, ties_together, cap, hidden_zeros, backend=TORCH)
    assert counts == torch_counts
    assert all(torch.equal(a, b) for a, b in zip(picks, torch_picks))
    assert sum(counts) == (0 if on_numpy is None else on_numpy.count)


def test_alive_only_intermediate_rule_for_inverted_scores():
    # Inverted (negated) scores: the pruned entry (index 0, score 0) now ranks above every alive one.
    scores = -torch.tensor([0.0, 1.0, 5.0, 4.0, 3.0, 2.0])
    alive = torch.tensor([False, True, True, True, True, True])
    _, count = select_to_prune([scores], [alive], 1, 3, True)
    assert count == [3]  # the reference's rule would still count the pruned entry as lowest: one too many
    assert plan_cut([scores], [alive], 1, 3, True, zeros_with_pruned=False) == Cut(-4.0, None, 2)
    assert plan_cut([scores], [alive], 1, 1, True) is not None  # the reference's rule prunes although none is due
    assert plan_cut([scores], [alive], 1, 1, True, zeros_with_pruned=False) is None
    assert plan_cut([scores], [alive], 1, 6, True, zeros_with_pruned=False) == Cut(math.inf, None, 5)
    tied = -torch.tensor([0.0, 0.0, 3.0, 2.0, 2.0, 1.0])
    assert plan_cut([tied], [alive], 1, 3, True, zeros_with_pruned=False) == Cut(-2.0, None, 3)  # ties go together
    assert plan_cut([tied], [alive], 1, 3, True, cap=3, zeros_with_pruned=False) == Cut(-2.0, 1, 2)  # unless capped


def _greedy_with_room(scores, alive, need, room):
    """Oracle: alive entries in (score, position) order, each pruned unless its tensor has used its room."""
    flat = torch.cat(scores)
    owner = torch.cat([torch.full((len(s),), i) for i, s in enumerate(scores)])
    order = np.lexsort((np.arange(len(flat)), flat.numpy()))
    picked = torch.zeros(len(flat), dtype=torch.bool)
    used = [0] * len(scores)
    alive_flat = torch.cat(alive)
    for position in order:
        if need == 0:
            break
        i = int(owner[position])
        if alive_flat[position] and used[i] < room[i]:
            picked[position] = True
            used[i] += 1
            need -= 1
    return picked


def _apply(plans, scores, alive):
    picked = [torch.zeros_like(a) for a in alive]
    for members, cut in plans:
        for i, pick in zip(members, cut.picks([scores[i] for i in members], [alive[i] for i in members])):
            picked[i] |= torch.as_tensor(pick)
    return picked


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_room_limited_exact_cut_equals_the_greedy_oracle(data):
    torch.manual_seed(data.draw(st.integers(0, 2**16)))  # later draws depend on the random tensors
    sizes = data.draw(st.lists(st.integers(1, 40), min_size=1, max_size=5))
    levels = data.draw(st.sampled_from([3, 1000]))
    scores = [torch.randint(1, levels, (n,)).float() for n in sizes]
    alive = [torch.rand(n) < data.draw(st.floats(0.3, 1.0)) for n in sizes]
    for s, a in zip(scores, alive):
        s[~a] = 0
    counts = [int(a.sum()) for a in alive]
    room = [data.draw(st.integers(0, c)) for c in counts]
    already = [n - c for n, c in zip(sizes, counts)]
    need = data.draw(st.integers(0, sum(room)))
    args = (scores, alive, already, [0] * len(sizes), sum(already) + need, False)
    plans = plan_cuts(*args, room=room)
    assert plans == plan_cuts(*args, room=room, backend=TORCH)  # the backend CUDA tensors take
    picked = _apply(plans, scores, alive)
    assert torch.equal(torch.cat(picked), _greedy_with_room(scores, alive, need, room))
    assert all(int(p.sum()) <= r for p, r in zip(picked, room))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_room_limited_intermediate_cut_holds_rooms_and_counts(data):
    torch.manual_seed(data.draw(st.integers(0, 2**16)))
    sizes = data.draw(st.lists(st.integers(1, 40), min_size=1, max_size=5))
    scores = [torch.randint(0, 4, (n,)).float() for n in sizes]  # many ties, alive zeros included
    alive = [torch.rand(n) < 0.8 for n in sizes]
    for s, a in zip(scores, alive):
        s[~a] = 0
    counts = [int(a.sum()) for a in alive]
    room = [data.draw(st.integers(0, c)) for c in counts]
    already = [n - c for n, c in zip(sizes, counts)]
    cap = sum(already) + sum(room)
    n_prune = data.draw(st.integers(sum(already), cap))
    zeros_with_pruned = data.draw(st.booleans())
    plans = plan_cuts(scores, alive, already, [0] * len(sizes), n_prune, True, cap, room, zeros_with_pruned)
    picked = _apply(plans, scores, alive)
    assert all(int(p.sum()) <= r for p, r in zip(picked, room))
    assert not any(bool((p & ~a).any()) for p, a in zip(picked, alive))
    total = sum(already) + sum(int(p.sum()) for p in picked)
    assert n_prune <= total <= cap
