"""What the pruning loop and the selection need from the processes that share a model's weights.

A single process holds whole tensors and has nothing to exchange: :data:`LOCAL`. Ranks of a device
mesh each hold row shards and exchange counts and a few small arrays:
``MeshCollective`` (in ``pruning/distributed.py``). Every rank calls the same operations
in the same order, with its own values; every answer is the same on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

import numpy as np
import torch

#: A 1-D array of one selection backend: a numpy array or a torch tensor.
Values = TypeVar("Values", np.ndarray, torch.Tensor)


class Collective(Protocol):
    """The few operations Algorithm 1 needs across ranks."""

    @property
    def rank(self) -> int:
        """The position of this process among the ranks (0 in a single process)."""

    @property
    def size(self) -> int:
        """How many ranks take part (1 in a single process)."""

    @property
    def samples(self) -> int | None:
        """Sample size of a selection bracket, or None for the selection's default.

        A mesh gathers each sample on every rank, so it may take a smaller one.
        """

    def sum(self, counts: Sequence[int]) -> list[int]:
        """Element-wise sums of every rank's ``counts`` (the same length on every rank)."""

    def gather(self, values: Values) -> Values:
        """Every rank's 1-D ``values`` (lengths may differ), concatenated in rank order."""

    def gather_counts(self, counts: Sequence[int]) -> list[list[int]]:
        """Every rank's ``counts`` (the same length on every rank), indexed ``[rank][i]``."""

    def common_seed(self, seed: int | None) -> int | None:
        """A seed every rank agrees on: ``seed``, or where it is None and there are several ranks, rank 0's draw."""


class Local:
    """The single process: every sum, gather and seed is this process's own."""

    rank = 0
    size = 1
    samples = None

    def sum(self, counts: Sequence[int]) -> list[int]:
        """``counts`` as they are."""
        return list(counts)

    def gather(self, values: Values) -> Values:
        """``values`` as they are."""
        return values

    def gather_counts(self, counts: Sequence[int]) -> list[list[int]]:
        """``[counts]``."""
        return [list(counts)]

    def common_seed(self, seed: int | None) -> int | None:
        """``seed`` (None keeps torch's global generator)."""
        return seed


#: The single process.
LOCAL: Collective = Local()
