"""When ``SynFlowPruning`` prunes: ``prune_epoch``, lottery-ticket ``levels``, and the point rounds rewind to.

Pure logic over torch objects: no Lightning import. The callback asks :class:`RoundSchedule` which
rounds are due at an epoch and to which exact density each prunes, and :class:`RewindPoint` to put
a module, its optimizers and LR schedulers back to their fit-start state.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from lightning_synflow.pruning.option import declares_options, option
from lightning_synflow.pruning.schedule import schedule_densities
from lightning_synflow.pruning.settings import PruningSettings


@dataclass(frozen=True)
class Round:
    """One pruning round.

    Attributes:
        index: 1-based round number.
        epoch: the epoch at whose start it prunes (0 = fit start).
        density: fraction of the prunable weights kept after it, exactly.
        rewind: whether the weights, buffers, optimizers and LR schedulers go back to their fit-start
            state right after it.
    """

    index: int
    epoch: int
    density: Fraction
    rewind: bool


@declares_options
@dataclass(frozen=True)
class RoundSchedule:
    """Which epochs prune to which density: ``prune_epoch`` k and ``levels`` L, validated (by :meth:`create`).

    Round l (1..L) prunes at the start of epoch l*k to density ``d ** (l / L)`` (the last one to ``d``
    exactly; the intermediate densities are rounded like the iterative loop's exponential schedule).
    With ``L > 1`` every round rewinds (lottery ticket); ``L = 1`` prunes once at epoch k, no rewind.
    Both are ``SynFlowPruning`` options, compared with a checkpoint's schedule on resume.
    """

    prune_epoch: int = option(
        0, "epochs of dense training before the first round, and between rounds (0 = fit start).", sharded=False
    )
    levels: int = option(1, "number of prune-and-rewind rounds.", sharded=False)

    @classmethod
    def create(cls, prune_epoch: Any = 0, levels: Any = 1) -> RoundSchedule:
        """Validate the user's values.

        Raises:
            ValueError: a value that is not an integer in range, or ``levels > 1`` with ``prune_epoch = 0``.
        """
        for name, value, lowest in (("prune_epoch", prune_epoch, 0), ("levels", levels, 1)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lowest:
                raise ValueError(f"`{name}` must be an integer >= {lowest}, got {value!r}.")
        if levels > 1 and prune_epoch < 1:
            raise ValueError(
                f"`levels={levels}` needs `prune_epoch >= 1`: lottery rounds prune at the start of epochs "
                f"prune_epoch, 2*prune_epoch, ..., levels*prune_epoch; got prune_epoch={prune_epoch!r}."
            )
        return cls(int(prune_epoch), int(levels))

    @property
    def rewinds(self) -> bool:
        """Whether rounds rewind to the fit-start state (lottery ticket, ``levels > 1``)."""
        return self.levels > 1

    @property
    def last_epoch(self) -> int:
        """The epoch at whose start the last round prunes."""
        return self.prune_epoch * self.levels

    def rounds(self, density: Fraction) -> list[Round]:
        """Every round, in order, for the final ``density``."""
        densities = schedule_densities(density, self.levels, "exponential")
        return [
            Round(index, index * self.prune_epoch, step, self.rewinds) for index, step in enumerate(densities, start=1)
        ]

    def due(self, density: Fraction, done: int, epoch: int) -> list[Round]:
        """The rounds after the first ``done`` whose epoch has come by the start of ``epoch``."""
        return [r for r in self.rounds(density)[done:] if r.epoch <= epoch]

    def check_floors(self, settings: PruningSettings, sizes: Mapping[str, int]) -> None:
        """Refuse ``min_density`` floors that some round cannot hold, before the first round runs.

        Args:
            settings: the settings every round prunes with (the final density in ``settings.density``).
            sizes: number of entries of each prunable tensor, keyed by its name.

        Raises:
            ValueError: a ``min_density`` glob matches no prunable tensor, or the floors keep more weights
                than a round's density does; the message names the round and what to do.
        """
        for step in self.rounds(settings.density):
            try:
                replace(settings, density=step.density).reachable_floors(sizes)
            except ValueError as error:
                if self.last_epoch == 0:  # pruning once at fit start: no round to name
                    raise
                raise ValueError(
                    f"round {step.index} of {self.levels}, at the start of epoch {step.epoch}, prunes to density "
                    f"{step.density}: {error}"
                ) from error

    def describe(self) -> dict[str, str]:
        """Readable values, for messages."""
        return {key: repr(value) for key, value in asdict(self).items()}

    def differences(self, other: RoundSchedule) -> dict[str, tuple[str, str]]:
        """Fields that differ: name -> (this value, the other's)."""
        mine, theirs = self.describe(), other.describe()
        return {key: (mine[key], theirs[key]) for key in mine if mine[key] != theirs[key]}


@dataclass
class RewindPoint:
    """The fit-start state a lottery round rewinds to.

    What existed at fit start goes back to its fit-start state: every parameter and buffer, and each
    optimizer's fit-start parameter groups (hyperparameters and state). Parameter groups added to an
    optimizer after fit start (a finetuning callback unfreezing a backbone) stay, with their
    hyperparameters as they are, and restart with an empty state.

    Attributes:
        module: the module's ``state_dict`` (every parameter and buffer, BatchNorm statistics included),
            copied to CPU.
        optimizers: each optimizer's ``state_dict`` (param groups with their learning rates, and the state,
            normally empty at fit start).
        lr_schedulers: each LR scheduler's ``state_dict``.
    """

    module: dict[str, Any]
    optimizers: list[dict[str, Any]]
    lr_schedulers: list[dict[str, Any]]

    @classmethod
    def capture(
        cls, module: nn.Module, optimizers: Sequence[torch.optim.Optimizer], lr_schedulers: Sequence[Any]
    ) -> RewindPoint:
        """Copy the current state of ``module``, ``optimizers`` and ``lr_schedulers`` (nothing is shared)."""
        return cls(
            state_on_cpu(module),
            [copy.deepcopy(optimizer.state_dict()) for optimizer in optimizers],
            [copy.deepcopy(scheduler.state_dict()) for scheduler in lr_schedulers],
        )

    def check(self, optimizers: Sequence[torch.optim.Optimizer], lr_schedulers: Sequence[Any]) -> None:
        """Refuse optimizers or LR schedulers that this point cannot be loaded into.

        Raises:
            ValueError: another number of optimizers or schedulers than at capture, or an optimizer whose
                first parameter groups are not those of capture (groups added after them are fine).
        """
        if len(optimizers) != len(self.optimizers) or len(lr_schedulers) != len(self.lr_schedulers):
            raise ValueError(
                f"the rewind point holds {len(self.optimizers)} optimizer(s) and {len(self.lr_schedulers)} LR "
                f"scheduler(s), the trainer has {len(optimizers)} and {len(lr_schedulers)}"
            )
        for index, (optimizer, saved) in enumerate(zip(optimizers, self.optimizers)):
            now = [len(group["params"]) for group in optimizer.param_groups]
            then = [len(group["params"]) for group in saved["param_groups"]]
            if now[: len(then)] != then:
                raise ValueError(
                    f"optimizer {index} has parameter groups of sizes {now}, at fit start {then}: only groups "
                    "added after the fit-start ones, with those left as they were, can be kept through a rewind"
                )

    def restore(
        self, module: nn.Module, optimizers: Sequence[torch.optim.Optimizer], lr_schedulers: Sequence[Any]
    ) -> None:
        """Load the captured state into ``module``, ``optimizers`` and ``lr_schedulers`` (which keep their identity).

        Parameter groups added since capture keep their hyperparameters and lose their state.

        Raises:
            ValueError: see :meth:`check`; nothing changed in that case.
        """
        self.check(optimizers, lr_schedulers)
        module.load_state_dict(self.module)
        # Optimizers and schedulers may keep references into what they load: give them copies.
        for optimizer, state in zip(optimizers, self.optimizers):
            optimizer.load_state_dict(_with_added_groups(copy.deepcopy(state), optimizer))
        for scheduler, state in zip(lr_schedulers, self.lr_schedulers):
            scheduler.load_state_dict(copy.deepcopy(state))


def state_on_cpu(module: nn.Module) -> dict[str, Any]:
    """A CPU copy of ``module``'s ``state_dict`` that shares nothing with it."""
    return {
        name: value.detach().to("cpu", copy=True) if isinstance(value, torch.Tensor) else copy.deepcopy(value)
        for name, value in module.state_dict().items()
    }


def _with_added_groups(saved: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``saved`` (an optimizer state dict of capture) plus the groups ``optimizer`` gained since, without state.

    ``state_dict`` numbers parameters in group order, so the added groups' numbers follow those of the
    fit-start groups in both, and no state entry of ``saved`` names them.
    """
    added = optimizer.state_dict()["param_groups"][len(saved["param_groups"]) :]
    saved["param_groups"] = [*saved["param_groups"], *copy.deepcopy(added)]
    return saved
