import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_synflow.pruning import select as select_module
from lightning_synflow.pruning.select import (
    NUMPY,
    TORCH,
    backend_for,
    backend_of,
    keep_above,
    kth_and_count,
    kth_smallest,
    kth_with_hidden_zeros,
)


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
