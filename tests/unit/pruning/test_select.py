import copy
from collections import Counter
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_synflow import prune
from lightning_synflow.pruning import select as select_module
from lightning_synflow.pruning.alive import AliveSet
from lightning_synflow.pruning.cut import Cut, plan_cuts
from lightning_synflow.pruning.schedule import prune_count
from lightning_synflow.pruning.select import (
    NUMPY,
    TORCH,
    backend_for,
    backend_of,
    keep_above,
    kth_and_count,
    kth_smallest,
    kth_with_hidden_zeros,
    negatives_and_zeros,
    selection_backend,
)
from tests.helpers import convnet, mlp


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
        patch.setattr(select_module, "CHUNK", 7)
        assert kth_smallest(segments, k, 16) == expected


def test_keep_above_clears_in_place_and_counts():
    values = torch.rand(1000)
    keep = torch.rand(1000) < 0.7
    before = keep.clone()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(select_module, "CHUNK", 64)
        cleared = keep_above(keep.numpy(), values.numpy(), 0.4)
    assert torch.equal(keep, before & (values > 0.4))
    assert cleared == int((before & (values <= 0.4)).sum())


def test_backend_is_chosen_from_the_device_and_the_array_kind():
    tensors = [torch.zeros(3), torch.ones(2)]
    assert backend_for(tensors) is NUMPY
    assert backend_of(NUMPY.views(tensors)) is NUMPY
    assert backend_of(TORCH.views(tensors)) is TORCH
    if torch.cuda.is_available():
        assert backend_for([t.cuda() for t in tensors]) is TORCH


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300_000), st.sampled_from([16, 1 << 16]), st.integers(0, 50), st.data())
def test_torch_and_numpy_backends_agree_on_cpu_data(n, samples, hidden_zeros, data):
    # The torch backend is what CUDA tensors take; forcing it on CPU tensors covers it without a GPU.
    levels = data.draw(st.sampled_from([0, 7, 1000]))  # 0: continuous values, else that many distinct ones
    values = torch.randint(-2, levels, (n,)).float() if levels else torch.randn(n) ** 3
    values[torch.rand(n) < data.draw(st.floats(0, 0.9))] = 0
    cut = data.draw(st.integers(0, n))
    segments = [values[:cut], values[cut:]]
    k = data.draw(st.integers(1, n))
    on_numpy, on_torch = NUMPY.views(segments), TORCH.views(segments)
    assert kth_smallest(on_torch, k, samples) == kth_smallest(on_numpy, k, samples)
    assert kth_and_count(on_torch, k, samples) == kth_and_count(on_numpy, k, samples)
    k_hidden = data.draw(st.integers(1, n + hidden_zeros))
    expected = kth_with_hidden_zeros(on_numpy, k_hidden, hidden_zeros)
    assert kth_with_hidden_zeros(on_torch, k_hidden, hidden_zeros) == expected
    lo, hi = sorted(data.draw(st.tuples(st.floats(-3, 3), st.floats(-3, 3))))
    for numpy_segment, torch_segment in zip(on_numpy, on_torch):
        count, band = NUMPY.count_and_band(numpy_segment, lo, hi)
        torch_count, torch_band = TORCH.count_and_band(torch_segment, lo, hi)
        assert count == torch_count and band.tolist() == torch_band.tolist()


# -- The torch backend (what CUDA tensors take) against the numpy one, on CPU tensors --------------------


def _scores(n: int, levels: int, zeros: float, generator: torch.Generator) -> torch.Tensor:
    """Scores with negatives, exact zeros and, for ``levels > 0``, only that many distinct values (ties)."""
    if levels:
        values = torch.randint(-2, levels, (n,), generator=generator).float()
    else:
        values = torch.randn(n, generator=generator) ** 3
    values[torch.rand(n, generator=generator) < zeros] = 0
    return values


def _split(values: torch.Tensor, cuts: list[int]) -> list[torch.Tensor]:
    bounds = [0, *sorted(cuts), len(values)]
    return [values[a:b] for a, b in zip(bounds, bounds[1:])]


def test_selection_backend_forces_the_backend_and_refuses_unknown_names():
    cpu = [torch.zeros(3)]
    with selection_backend("torch") as backend:
        assert backend is TORCH and backend_for(cpu) is TORCH
        with selection_backend("numpy"):
            assert backend_for(cpu) is NUMPY
        assert backend_for(cpu) is TORCH
    assert backend_for(cpu) is NUMPY
    with pytest.raises(ValueError, match=r"name must be one of \['numpy', 'torch'\], got 'cuda'"):
        with selection_backend("cuda"):
            pass


class _Paths:
    """Counts the bracket's outcomes: hits (a value), misses (None) and exact selections."""

    def __init__(self, patch: pytest.MonkeyPatch) -> None:
        self.seen: Counter[str] = Counter()
        bracketed, exact_numpy, exact_torch = select_module._bracketed, NUMPY.kth_exact, TORCH.kth_exact

        def counted_bracket(*args):
            found = bracketed(*args)
            self.seen["hit" if found is not None else "miss"] += 1
            return found

        def counted(exact, *args):
            self.seen["exact"] += 1
            return exact(*args)

        patch.setattr(select_module, "_bracketed", counted_bracket)
        patch.setattr(NUMPY, "kth_exact", lambda *a: counted(exact_numpy, *a))
        patch.setattr(TORCH, "kth_exact", lambda *a: counted(exact_torch, *a))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.sampled_from([0, 3, 50]), st.sampled_from([4, 16, 1 << 16]), st.data())
def test_kth_is_exact_and_the_same_on_both_backends_over_many_segments(n, levels, samples, data):
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    values = _scores(n, levels, data.draw(st.floats(0, 0.9)), generator)
    segments = _split(values, data.draw(st.lists(st.integers(0, n), max_size=12)))  # empty segments too
    k = data.draw(st.integers(1, n))
    ordered = values.sort().values
    expected = (float(ordered[k - 1]), int((values <= ordered[k - 1]).sum()))
    sigmas = data.draw(st.sampled_from([select_module.SIGMAS, 0.0]))  # 0: the bracket often misses
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(select_module, "SIGMAS", sigmas)
        assert kth_and_count(NUMPY.views(segments), k, samples) == expected
        assert kth_and_count(TORCH.views(segments), k, samples) == expected
    hidden = data.draw(st.integers(0, 40))
    k_hidden = data.draw(st.integers(1, n + hidden))
    with_zeros = torch.cat([values, torch.zeros(hidden)]).sort().values
    value, at_most = kth_with_hidden_zeros(TORCH.views(segments), k_hidden, hidden)
    assert (value, at_most) == kth_with_hidden_zeros(NUMPY.views(segments), k_hidden, hidden)
    assert value == float(with_zeros[k_hidden - 1]) and at_most == int((values <= value).sum())
    assert negatives_and_zeros(TORCH.views(segments)) == (int((values < 0).sum()), int((values == 0).sum()))


def test_bracket_hits_misses_rebrackets_and_falls_back_on_both_backends():
    generator = torch.Generator().manual_seed(0)
    values = _scores(20_000, 0, 0.3, generator)
    segments = _split(values, [1, 7000, 7000, 15_000])
    ordered = values.sort().values
    for sigmas, wanted in ((select_module.SIGMAS, {"hit", "exact"}), (0.0, {"miss", "hit", "exact"})):
        for backend in (NUMPY, TORCH):
            with pytest.MonkeyPatch.context() as patch:
                paths = _Paths(patch)
                patch.setattr(select_module, "SIGMAS", sigmas)
                for k in (1, 2, 37, 6000, 10_000, 19_999, 20_000):
                    assert kth_smallest(backend.views(segments), k, 64) == float(ordered[k - 1])
            assert wanted <= set(paths.seen), (backend, sigmas, paths.seen)
    with pytest.MonkeyPatch.context() as patch:  # a band over four times the sample: bracketed again on torch
        paths = _Paths(patch)
        assert kth_smallest(TORCH.views(segments), 10_000, 8) == float(ordered[9999])
        assert paths.seen["hit"] >= 2
    with pytest.MonkeyPatch.context() as patch:  # small data: exact selection, no bracket
        paths = _Paths(patch)
        assert kth_smallest(TORCH.views(segments), 10_000) == float(ordered[9999])
        assert paths.seen == Counter(exact=1)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_torch_backend_plans_the_same_cuts_and_picks_as_numpy(data):
    """Many segments, ties, negatives, zeros, present and hidden pruned zeros, floors, invert, cap, both rules."""
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    sizes = data.draw(st.lists(st.integers(1, 400), min_size=1, max_size=9))
    levels = data.draw(st.sampled_from([0, 4, 30]))
    scores = [_scores(n, levels, data.draw(st.floats(0, 0.5)), generator) for n in sizes]
    alive = [torch.rand(n, generator=generator) >= data.draw(st.floats(0, 0.8)) for n in sizes]
    for s, a in zip(scores, alive):
        s[~a] = 0  # pruned entries score exactly 0
    hidden = [data.draw(st.integers(0, 30)) for _ in sizes]
    already = [n - int(a.sum()) + h for n, a, h in zip(sizes, alive, hidden)]
    total = sum(sizes) + sum(hidden)
    n_prune = data.draw(st.integers(sum(already), total))
    ties_together = data.draw(st.booleans())
    cap = data.draw(st.none() | st.integers(n_prune, total))
    zeros_with_pruned = data.draw(st.booleans())
    room = data.draw(
        st.none()
        | st.just([n - a for n, a in zip(sizes, already)]).flatmap(
            lambda free: st.tuples(*[st.integers(0, max(f, 0)) for f in free])
        )
    )
    if room is not None:
        room = list(room)
        n_prune = min(n_prune, sum(already) + sum(room))
        cap = None if cap is None else min(max(cap, n_prune), sum(already) + sum(room))
    args = (scores, alive, already, hidden, n_prune, ties_together, cap, room, zeros_with_pruned)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(select_module, "SAMPLES", data.draw(st.sampled_from([4, 32])))  # bracket path
        on_numpy = plan_cuts(*args, backend=NUMPY)
        on_torch = plan_cuts(*args, backend=TORCH)
    assert on_torch == on_numpy
    assert plan_cuts(*args, backend=TORCH) == on_numpy  # exact selection on data this small
    for members, cut in on_numpy:
        values, keep = [scores[i] for i in members], [alive[i] for i in members]
        picks = [torch.as_tensor(p) for p in cut.picks(NUMPY.views(values), NUMPY.views(keep))]
        torch_picks = list(cut.picks(TORCH.views(values), TORCH.views(keep)))
        assert all(torch.equal(a, b) for a, b in zip(picks, torch_picks))
        assert cut.counts(TORCH.views(values), TORCH.views(keep)) == [int(p.sum()) for p in picks]
        assert sum(int(p.sum()) for p in picks) == cut.count


def test_final_cut_takes_ties_in_position_order_across_segments():
    values = [torch.tensor([2.0, 1.0]), torch.tensor([5.0]), torch.tensor([1.0, 1.0, 0.5]), torch.tensor([1.0])]
    keep = [torch.tensor([True, False]), torch.tensor([True]), torch.tensor([True, True, True]), torch.tensor([True])]
    # Alive entries tied at 1.0 sit at flat positions 3, 4 and 6 (position 1 is pruned); 0.5 at 5 always goes.
    expected = {0: [5], 1: [3, 5], 2: [3, 4, 5], 3: [3, 4, 5, 6], 9: [3, 4, 5, 6]}
    counts = {0: [0, 0, 1, 0], 1: [0, 0, 2, 0], 2: [0, 0, 3, 0], 3: [0, 0, 3, 1], 9: [0, 0, 3, 1]}
    for ties in expected:
        cut = Cut(1.0, ties, 0)
        for backend in (NUMPY, TORCH):
            picks = [torch.as_tensor(p) for p in cut.picks(backend.views(values), backend.views(keep))]
            assert torch.cat(picks).nonzero().view(-1).tolist() == expected[ties]
            assert cut.counts(backend.views(values), backend.views(keep)) == counts[ties]


class _Reads(TorchDispatchMode):
    """Counts host reads of device values: ``.item()``/``int()``/``float()``, ``nonzero`` and ``.tolist()``."""

    SYNCING = ("aten._local_scalar_dense", "aten.nonzero.default", "aten.masked_select", "aten.kthvalue")

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        bool_index = name.startswith("aten.index.Tensor") and any(
            i is not None and i.dtype == torch.bool for i in args[1]
        )
        self.reads += name.startswith(self.SYNCING[:3]) or bool_index
        return func(*args, **(kwargs or {}))


def _reads_of_steps(segments: int) -> int:
    """Host reads of an intermediate and a final step on ``segments`` tensors, torch backend, bracket path."""
    values = _scores(30_000, 40, 0.2, torch.Generator().manual_seed(0)).abs()
    scores = list(values.chunk(segments))
    alive = AliveSet(scores)
    counter, tolist = _Reads(), torch.Tensor.tolist

    def counted_tolist(tensor):
        counter.reads += 1
        return tolist(tensor)

    total = len(values)
    with pytest.MonkeyPatch.context() as patch, selection_backend("torch"):
        patch.setattr(select_module, "SAMPLES", 2048)  # the bracket path, and a band small enough for one level
        patch.setattr(torch.Tensor, "tolist", counted_tolist)
        for n_prune, ties_together in ((total // 3, True), (total // 2, False)):
            already = list(alive.pruned)
            with counter:
                plans = plan_cuts(scores, alive.view_masks(), already, [0] * segments, n_prune, ties_together)
                for members, cut in plans:
                    alive.apply(cut, [scores[i] for i in members], members)
    assert sum(alive.pruned) == total // 2
    return counter.reads


def test_torch_path_reads_from_the_device_a_number_of_times_independent_of_the_segments():
    # Each read is a host-device synchronization on a GPU; per-segment reads made SynFlow's loop slow there.
    few, many = _reads_of_steps(3), _reads_of_steps(30)
    assert few == many and few <= 16, (few, many)


@pytest.mark.filterwarnings("ignore:Layer collapse")
@pytest.mark.parametrize(
    ("net", "method", "extra"),
    [
        ("mlp", "synflow", {}),
        ("mlp", "synflow", {"invert": True, "min_density": 0.03}),
        ("mlp", "magnitude", {}),
        ("conv", "synflow", {}),
        ("conv", "magnitude", {"scope": "local"}),
    ],
)
def test_prune_gives_the_same_masks_with_the_torch_and_numpy_backends(net, method, extra):
    torch.manual_seed(0)
    if net == "mlp":
        model, example = mlp([20, 40, 40], bias=False), torch.zeros(1, 20)
    else:
        model, example = convnet([2, 6, 6], size=5, bn=True), torch.zeros(1, 2, 5, 5)
    masks = {}
    for name in ("numpy", "torch"):
        with pytest.MonkeyPatch.context() as patch, selection_backend(name):
            patch.setattr(select_module, "SAMPLES", 64)  # the bracket path until the view is compacted small
            masks[name] = prune(
                copy.deepcopy(model), compression=20, method=method, iterations=100, example_input=example, **extra
            )
    assert masks["numpy"].keys() == masks["torch"].keys()
    assert all(torch.equal(masks["numpy"][k], masks["torch"][k]) for k in masks["numpy"])
    kept = sum(int(m.sum()) for m in masks["torch"].values())
    total = sum(m.numel() for m in masks["torch"].values())
    if extra.get("scope") != "local":
        assert kept == total - prune_count(Fraction(1, 20), total)
