"""Exact k-th smallest and band selection over segments of scores, without concatenating them.

The selection runs on one of two backends, chosen once per call: :data:`NUMPY` works on zero-copy
numpy views of CPU tensors (its comparisons are several times faster than torch's on CPU), and
:data:`TORCH` on the tensors themselves (CUDA and other devices). Both give the same values.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Generic, TypeVar, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]
#: The array kind of one backend.
A = TypeVar("A", np.ndarray, torch.Tensor)

#: Chunk length for counting and banding numpy segments: small enough that the temporaries stay in cache.
CHUNK = 1 << 18


class Backend(ABC, Generic[A]):
    """The array operations selection is built from, on one kind of 1-D array (``A``)."""

    @abstractmethod
    def views(self, tensors: Sequence[torch.Tensor]) -> list[A]:
        """The arrays this backend works on, for ``tensors`` (sharing their memory)."""

    @abstractmethod
    def count(self, mask: A) -> int:
        """Number of True (nonzero) entries of ``mask``."""

    @abstractmethod
    def concat(self, parts: Sequence[A]) -> A:
        """The concatenation of ``parts`` (at least one)."""

    @abstractmethod
    def kth_exact(self, values: A, k: int) -> float:
        """The k-th smallest (1-based) value of ``values``, by exact selection over all of them."""

    @abstractmethod
    def sort(self, values: A) -> A:
        """``values`` sorted in increasing order (a copy)."""

    @abstractmethod
    def take(self, values: A, positions: np.ndarray) -> A:
        """The entries of ``values`` at ``positions`` (an int64 numpy array)."""

    @abstractmethod
    def cumsum(self, mask: A) -> A:
        """Running count of the True entries of ``mask``."""

    @abstractmethod
    def count_and_band(self, values: A, lo: float, hi: float) -> tuple[int, A]:
        """How many ``values`` are ``<= lo``, and the values in ``(lo, hi]``."""


class _Numpy(Backend[np.ndarray]):
    def views(self, tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
        return [t.numpy() for t in tensors]

    def count(self, mask: np.ndarray) -> int:
        return int(np.count_nonzero(mask))

    def concat(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts)

    def kth_exact(self, values: np.ndarray, k: int) -> float:
        return float(np.partition(values, k - 1)[k - 1])

    def sort(self, values: np.ndarray) -> np.ndarray:
        return np.sort(values)

    def take(self, values: np.ndarray, positions: np.ndarray) -> np.ndarray:
        taken: np.ndarray = values[positions]
        return taken

    def cumsum(self, mask: np.ndarray) -> np.ndarray:
        return np.cumsum(mask)

    def count_and_band(self, values: np.ndarray, lo: float, hi: float) -> tuple[int, np.ndarray]:
        # Chunked, so that the comparison temporaries stay in cache.
        count, parts = 0, []
        for start in range(0, len(values), CHUNK):
            chunk = values[start : start + CHUNK]
            count += int(np.count_nonzero(chunk <= lo))
            parts.append(chunk[(chunk > lo) & (chunk <= hi)])
        return count, np.concatenate(parts) if parts else values[:0]


class _Torch(Backend[torch.Tensor]):
    def views(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return list(tensors)

    def count(self, mask: torch.Tensor) -> int:
        return int(torch.count_nonzero(mask))

    def concat(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(parts))

    def kth_exact(self, values: torch.Tensor, k: int) -> float:
        return float(torch.kthvalue(values, k).values)

    def sort(self, values: torch.Tensor) -> torch.Tensor:
        return values.sort().values

    def take(self, values: torch.Tensor, positions: np.ndarray) -> torch.Tensor:
        return values[torch.from_numpy(positions).to(values.device)]

    def cumsum(self, mask: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(mask, 0)

    def count_and_band(self, values: torch.Tensor, lo: float, hi: float) -> tuple[int, torch.Tensor]:
        return self.count(values <= lo), values[(values > lo) & (values <= hi)]


#: Selection on numpy views of CPU tensors.
NUMPY: Backend[np.ndarray] = _Numpy()
#: Selection on torch tensors (any device).
TORCH: Backend[torch.Tensor] = _Torch()


def backend_for(tensors: Sequence[torch.Tensor]) -> Backend[Any]:
    """The backend for ``tensors``: :data:`NUMPY` for CPU tensors, :data:`TORCH` for the others."""
    return NUMPY if tensors and tensors[0].device.type == "cpu" else TORCH


def backend_of(arrays: Sequence[Array]) -> Backend[Any]:
    """The backend that ``arrays`` belong to: :data:`NUMPY` for numpy arrays, :data:`TORCH` for tensors."""
    return NUMPY if arrays and isinstance(arrays[0], np.ndarray) else TORCH


@lru_cache(maxsize=8)
def _sample_positions(sizes: tuple[int, ...], count: int) -> tuple[np.ndarray, ...]:
    """Per segment, sorted local positions of ``count`` uniform draws over the concatenation (fixed seed)."""
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    positions = np.sort(np.random.default_rng(len(sizes) + offsets[-1]).integers(0, offsets[-1], count))
    cuts = np.searchsorted(positions, offsets)
    return tuple(positions[cuts[i] : cuts[i + 1]] - offsets[i] for i in range(len(sizes)))


def _sample(backend: Backend[A], segments: Sequence[A], count: int) -> A:
    """Sorted values at ``count`` random positions of the concatenation of ``segments``.

    The positions depend only on the segments' lengths, so iterations over the same view reuse them.
    """
    local = _sample_positions(tuple(len(s) for s in segments), count)
    return backend.sort(backend.concat([backend.take(s, p) for s, p in zip(segments, local)]))


def kth_and_count(segments: Sequence[Array], k: int, samples: int = 1 << 16) -> tuple[float, int]:
    """The k-th smallest value of the concatenation of ``segments``, and how many values are at or below it.

    Args:
        segments: 1-D arrays of one backend (see :func:`kth_smallest`).
        k: rank, ``1 <= k <= total length``.
        samples: sample size for the bracket.

    Raises:
        ValueError: if ``k`` is out of range.
    """
    n = sum(len(s) for s in segments)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} is outside 1..{n}")
    backend = backend_of(segments)
    if n > 4 * samples:
        sample = _sample(backend, segments, samples)
        q = k / n
        spread = 6 * math.sqrt(samples * q * (1 - q)) + 2
        lo = float(sample[max(math.floor(q * samples - spread), 0)])
        hi = float(sample[min(math.ceil(q * samples + spread), samples - 1)])
        counted = [backend.count_and_band(s, lo, hi) for s in segments]
        at_most_lo = sum(count for count, _ in counted)
        if k <= at_most_lo:
            if sum(backend.count(s < lo) for s in segments) < k:
                return lo, at_most_lo
        else:
            band = backend.concat([b for _, b in counted])
            if k - at_most_lo <= len(band):
                value = backend.kth_exact(band, k - at_most_lo)
                return value, at_most_lo + backend.count(band <= value)
    value = backend.kth_exact(backend.concat(segments), k)
    return value, sum(backend.count(s <= value) for s in segments)


def kth_smallest(segments: Sequence[Array], k: int, samples: int = 1 << 16) -> float:
    """The exact k-th smallest (1-based) value of the concatenation of ``segments``, without building it.

    A random sample brackets the answer; one chunked pass counts the values at or below the bracket
    and keeps those inside it, and an exact selection runs on that small band. Falls back to exact
    selection over everything when the bracket misses (rare) or the data is small.

    Args:
        segments: 1-D numpy arrays (the :data:`NUMPY` backend, used for CPU tensors) or 1-D torch
            tensors (the :data:`TORCH` backend), all of one kind.
        k: rank, ``1 <= k <= total length``.
        samples: sample size for the bracket.
    """
    return kth_and_count(segments, k, samples)[0]


def kth_with_hidden_zeros(values: Sequence[Array], k: int, hidden_zeros: int) -> tuple[float, int]:
    """The k-th smallest of ``values`` and ``hidden_zeros`` extra zeros; also how many ``values`` are at or below it.

    Args:
        values: 1-D arrays of one backend.
        k: rank over ``values`` and the hidden zeros together.
        hidden_zeros: how many zeros ``values`` leaves out.
    """
    if hidden_zeros == 0:
        return kth_and_count(values, k)
    backend = backend_of(values)
    negatives = sum(backend.count(v < 0) for v in values)
    if k <= negatives:
        return kth_and_count(values, k)
    zeros = sum(backend.count(v == 0) for v in values)
    if k <= negatives + hidden_zeros + zeros:
        return 0.0, negatives + zeros
    return kth_and_count(values, k - hidden_zeros)


def keep_above(keep: np.ndarray, values: np.ndarray, threshold: float) -> int:
    """Clear ``keep`` (in place) where ``values <= threshold``; return how many entries it cleared.

    Args:
        keep: boolean numpy array (a view of a CPU mask), updated in place.
        values: numpy array of scores matching ``keep``.
        threshold: entries scoring at or below it are cleared.
    """
    cleared = 0
    for start in range(0, len(keep), CHUNK):
        part = keep[start : start + CHUNK]
        before = int(np.count_nonzero(part))
        np.logical_and(part, values[start : start + CHUNK] > threshold, out=part)
        cleared += before - int(np.count_nonzero(part))
    return cleared
