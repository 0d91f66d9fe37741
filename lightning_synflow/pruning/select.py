"""Exact k-th smallest and band selection over segments of scores, without concatenating them.

The selection runs on one of two backends, chosen once per call: :data:`NUMPY` works on zero-copy
numpy views of CPU tensors (its comparisons are several times faster than torch's on CPU), and
:data:`TORCH` on the tensors themselves (CUDA and other devices). Both give the same values.

The torch backend is built for GPUs: every count it needs in a step is reduced on the device and read
back in one transfer for all segments together (each read is a host-device synchronization), its
sample positions stay on the device, and it never runs ``kthvalue`` (one thread block per slice on
CUDA) on more than a small band: a large band is bracketed again. :func:`selection_backend` forces a
backend, so that the torch path can be checked on CPU tensors.

Every count and band goes through a :class:`~lightning_synflow.pruning.collective.Collective`: in a
single process (:data:`~lightning_synflow.pruning.collective.LOCAL`) that does nothing; over a device
mesh each rank selects among its own values, counts are summed over the ranks and only the sample and
a small band are gathered, so no rank ever holds every value.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from itertools import chain
from typing import Any, Generic, TypeVar, Union

import numpy as np
import torch

from lightning_synflow.pruning.collective import LOCAL, Collective

Array = Union[np.ndarray, torch.Tensor]
#: The array kind of one backend.
A = TypeVar("A", np.ndarray, torch.Tensor)

#: Chunk length for counting and banding numpy segments: small enough that the temporaries stay in cache.
CHUNK = 1 << 18

#: Default sample size of the bracket (the exact selection runs directly on at most four times as many values).
SAMPLES = 1 << 16

#: Half-width of the bracket around the sample quantile, in binomial standard deviations (plus 2 positions).
SIGMAS = 6.0


class Backend(ABC, Generic[A]):
    """The array operations selection is built from, on one kind of 1-D array (``A``).

    Attributes:
        rebracket: whether a band too large for :meth:`kth_exact` is bracketed again rather than
            selected in one go.
    """

    rebracket = False

    @abstractmethod
    def views(self, tensors: Sequence[torch.Tensor]) -> list[A]:
        """The arrays this backend works on, for ``tensors`` (sharing their memory)."""

    @abstractmethod
    def count(self, mask: A) -> int:
        """Number of True (nonzero) entries of ``mask``."""

    @abstractmethod
    def counts(self, masks: Iterable[A]) -> list[int]:
        """Number of True entries of each of ``masks``, read back together (one synchronization)."""

    @abstractmethod
    def concat(self, parts: Sequence[A]) -> A:
        """The concatenation of ``parts`` (at least one)."""

    @abstractmethod
    def kth_exact(self, values: A, k: int) -> tuple[float, int]:
        """The k-th smallest (1-based) value of ``values`` by exact selection, and how many are at or below it."""

    @abstractmethod
    def sample(self, segments: Sequence[A], count: int) -> A:
        """Values at ``count`` random positions of the concatenation of ``segments`` (at least one value).

        The positions depend only on the segments' lengths, so iterations over the same view reuse them.
        """

    @abstractmethod
    def sort(self, values: A) -> A:
        """``values`` in increasing order."""

    @abstractmethod
    def bracket(self, segments: Sequence[A], sample: A, low: int, high: int) -> tuple[float, float, int, A]:
        """``lo, hi = sample[low], sample[high]``, how many values are ``<= lo``, and the values in ``(lo, hi]``."""

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

    def counts(self, masks: Iterable[np.ndarray]) -> list[int]:
        return [int(np.count_nonzero(mask)) for mask in masks]

    def concat(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts)

    def kth_exact(self, values: np.ndarray, k: int) -> tuple[float, int]:
        value = float(np.partition(values, k - 1)[k - 1])
        return value, int(np.count_nonzero(values <= value))

    def sample(self, segments: Sequence[np.ndarray], count: int) -> np.ndarray:
        local = _sample_positions(tuple(len(s) for s in segments), count)
        return np.concatenate([s[p] for s, p in zip(segments, local)])

    def sort(self, values: np.ndarray) -> np.ndarray:
        return np.sort(values)

    def bracket(
        self, segments: Sequence[np.ndarray], sample: np.ndarray, low: int, high: int
    ) -> tuple[float, float, int, np.ndarray]:
        lo, hi = float(sample[low]), float(sample[high])
        counted = [self.count_and_band(s, lo, hi) for s in segments]
        return lo, hi, sum(count for count, _ in counted), np.concatenate([band for _, band in counted])

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
    rebracket = True

    def views(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return list(tensors)

    def count(self, mask: torch.Tensor) -> int:
        return int(torch.count_nonzero(mask))

    def counts(self, masks: Iterable[torch.Tensor]) -> list[int]:
        found = [torch.count_nonzero(mask) for mask in masks]  # each mask is freed once reduced
        return torch.stack(found).tolist() if found else []

    def concat(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(parts)) if len(parts) > 1 else parts[0]

    def kth_exact(self, values: torch.Tensor, k: int) -> tuple[float, int]:
        value = torch.kthvalue(values, k).values
        read = torch.stack([value.double(), torch.count_nonzero(values <= value).double()]).tolist()
        return read[0], int(read[1])

    def sample(self, segments: Sequence[torch.Tensor], count: int) -> torch.Tensor:
        if len(segments) == 1:  # a band: positions drawn on the device, its length changes every call
            values = segments[0]
            generator = torch.Generator(values.device).manual_seed(len(values))
            taken = values[torch.randint(0, len(values), (count,), generator=generator, device=values.device)]
        else:
            local = _device_positions(tuple(len(s) for s in segments), count, segments[0].device)
            taken = torch.cat([s[p] for s, p in zip(segments, local)])
        return taken

    def sort(self, values: torch.Tensor) -> torch.Tensor:
        return values.sort().values

    def bracket(
        self, segments: Sequence[torch.Tensor], sample: torch.Tensor, low: int, high: int
    ) -> tuple[float, float, int, torch.Tensor]:
        lo, hi = sample[low], sample[high]  # compared on the device: no synchronization yet
        at_most = [torch.count_nonzero(s <= bound) for s in segments for bound in (lo, hi)]
        read = torch.cat([torch.stack([lo, hi]).double(), torch.stack(at_most).double()]).tolist()
        counts = [int(c) for c in read[2:]]
        parts = []
        for s, at_most_lo, at_most_hi in zip(segments, counts[::2], counts[1::2]):
            if at_most_hi > at_most_lo:  # the band's size is known, so extracting it needs no synchronization
                inside = torch.nonzero_static((s > lo) & (s <= hi), size=at_most_hi - at_most_lo).view(-1)
                parts.append(s[inside])
        band = self.concat(parts) if parts else segments[0][:0]
        return read[0], read[1], sum(counts[::2]), band

    def cumsum(self, mask: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(mask, 0)

    def count_and_band(self, values: torch.Tensor, lo: float, hi: float) -> tuple[int, torch.Tensor]:
        return self.count(values <= lo), values[(values > lo) & (values <= hi)]


#: Selection on numpy views of CPU tensors.
NUMPY: Backend[np.ndarray] = _Numpy()
#: Selection on torch tensors (any device).
TORCH: Backend[torch.Tensor] = _Torch()

_BACKENDS: dict[str, Backend[Any]] = {"numpy": NUMPY, "torch": TORCH}
_forced: list[Backend[Any]] = []


@contextmanager
def selection_backend(name: str) -> Iterator[Backend[Any]]:
    """Within the block, :func:`backend_for` gives the ``"numpy"`` or ``"torch"`` backend for every device.

    Internal: it lets tests and benchmarks run the torch (GPU) path on CPU tensors, where it must
    give exactly the same cuts and masks as the numpy path. ``"numpy"`` is refused for non-CPU
    tensors by their ``.numpy()``.

    Raises:
        ValueError: if ``name`` is not ``"numpy"`` or ``"torch"``.
    """
    if name not in _BACKENDS:
        raise ValueError(f"selection_backend: name must be one of {sorted(_BACKENDS)}, got {name!r}")
    _forced.append(_BACKENDS[name])
    try:
        yield _forced[-1]
    finally:
        _forced.pop()


def backend_for(tensors: Sequence[torch.Tensor]) -> Backend[Any]:
    """The backend for ``tensors``: :data:`NUMPY` for CPU tensors, :data:`TORCH` for the others.

    Inside :func:`selection_backend`, the backend it names.
    """
    if _forced:
        return _forced[-1]
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


@lru_cache(maxsize=8)
def _device_positions(sizes: tuple[int, ...], count: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """:func:`_sample_positions` copied to ``device`` once, for every later call on the same view."""
    return tuple(torch.from_numpy(p).to(device) for p in _sample_positions(sizes, count))


def kth_and_count(
    segments: Sequence[Array], k: int, samples: int | None = None, collective: Collective = LOCAL
) -> tuple[float, int]:
    """The k-th smallest value of the concatenation of ``segments``, and how many values are at or below it.

    Args:
        segments: 1-D arrays of one backend (see :func:`kth_smallest`).
        k: rank, ``1 <= k <= total length``.
        samples: sample size for the bracket (default the collective's, else :data:`SAMPLES`).
        collective: the ranks whose segments are selected among together (each passes its own).

    Raises:
        ValueError: if ``k`` is out of range.
    """
    (n,) = collective.sum([sum(len(s) for s in segments)])
    if not 1 <= k <= n:
        raise ValueError(f"k={k} is outside 1..{n}")
    backend = backend_of(segments)
    samples = samples or collective.samples or SAMPLES
    while n > 4 * samples:
        found = _bracketed(backend, segments, n, k, samples, collective)
        if found is not None:
            return found
        samples *= 4  # the bracket missed (rare): a larger sample brackets tighter
    return backend.kth_exact(collective.gather(backend.concat(segments)), k)


def _bracketed(
    backend: Backend[A], segments: Sequence[A], n: int, k: int, samples: int, collective: Collective
) -> tuple[float, int] | None:
    """:func:`kth_and_count` by one bracket from a sample of ``samples`` values; None if the bracket misses."""
    sample = _sample(backend, segments, n, samples, collective)
    q, drawn = k / n, len(sample)
    spread = SIGMAS * math.sqrt(drawn * q * (1 - q)) + 2
    low, high = max(math.floor(q * drawn - spread), 0), min(math.ceil(q * drawn + spread), drawn - 1)
    lo, _, at_most_lo, band = backend.bracket(segments, sample, low, high)
    at_most_lo, band_size = collective.sum([at_most_lo, len(band)])
    if k <= at_most_lo:  # the k-th is lo itself if fewer than k values are below it
        if collective.sum([sum(backend.counts(s < lo for s in segments))])[0] < k:
            return lo, at_most_lo
        return None
    if k - at_most_lo > band_size:
        return None
    # Several ranks gather the band on each of them, so a large one is bracketed again whatever the backend.
    if (backend.rebracket or collective.size > 1) and band_size > 4 * samples:
        value, count = kth_and_count([band], k - at_most_lo, samples, collective)
    else:
        value, count = backend.kth_exact(collective.gather(band), k - at_most_lo)
    return value, at_most_lo + count


def _sample(backend: Backend[A], segments: Sequence[A], n: int, count: int, collective: Collective) -> A:
    """About ``count`` values drawn uniformly from every rank's segments (``n`` values in all), sorted.

    Each rank draws its share, in proportion to its values, and the draws are gathered.
    """
    mine = sum(len(s) for s in segments)
    share = -(-count * mine // n)  # count itself in a single process
    drawn = backend.sample(segments, share) if share else segments[0][:0]
    return backend.sort(collective.gather(drawn))


def kth_smallest(
    segments: Sequence[Array], k: int, samples: int | None = None, collective: Collective = LOCAL
) -> float:
    """The exact k-th smallest (1-based) value of the concatenation of ``segments``, without building it.

    A random sample brackets the answer; one chunked pass counts the values at or below the bracket
    and keeps those inside it, and an exact selection runs on that small band (on the torch backend,
    or over several ranks, a band larger than ``4 * samples`` is bracketed again). A bracket that
    misses (rare) is retried with a four times larger sample; small data goes to exact selection
    directly.

    Args:
        segments: 1-D numpy arrays (the :data:`NUMPY` backend, used for CPU tensors) or 1-D torch
            tensors (the :data:`TORCH` backend), all of one kind.
        k: rank, ``1 <= k <= total length`` (over every rank's segments).
        samples: sample size for the bracket (default the collective's, else :data:`SAMPLES`).
        collective: the ranks whose segments are selected among together (each passes its own).
    """
    return kth_and_count(segments, k, samples, collective)[0]


def negatives_and_zeros(values: Sequence[Array], collective: Collective = LOCAL) -> tuple[int, int]:
    """How many of ``values`` (arrays of one backend) are below zero and how many are exactly zero, read together."""
    backend = backend_of(values)
    found = backend.counts(chain((v < 0 for v in values), (v == 0 for v in values)))  # one mask at a time
    negatives, zeros = collective.sum([sum(found[: len(values)]), sum(found[len(values) :])])
    return negatives, zeros


def kth_with_hidden_zeros(
    values: Sequence[Array], k: int, hidden_zeros: int, collective: Collective = LOCAL
) -> tuple[float, int]:
    """The k-th smallest of ``values`` and ``hidden_zeros`` extra zeros; also how many ``values`` are at or below it.

    Args:
        values: 1-D arrays of one backend.
        k: rank over ``values`` and the hidden zeros together.
        hidden_zeros: how many zeros ``values`` leaves out.
        collective: the ranks whose values are selected among together (counts are over all of them).
    """
    if hidden_zeros == 0:
        return kth_and_count(values, k, None, collective)
    negatives, zeros = negatives_and_zeros(values, collective)
    if k <= negatives:
        return kth_and_count(values, k, None, collective)
    if k <= negatives + hidden_zeros + zeros:
        return 0.0, negatives + zeros
    return kth_and_count(values, k - hidden_zeros, None, collective)


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
