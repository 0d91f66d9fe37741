"""``SynFlowPruning``'s arguments: each declared once, by what it decides, and checked together.

What decides the masks is a :class:`~lightning_synflow.pruning.settings.PruningSettings` field (shared with
``prune()``), when they are made a :class:`~lightning_synflow.callback.rounds.RoundSchedule` field, and how
the callback runs a :class:`CallbackOptions` field. :data:`ARGUMENTS` is their union: the callback's
signature states it for users and type checkers (a test pins the two equal, defaults included); its
read-only attributes (:func:`read_only_arguments`), checks and sharded refusals follow it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

from lightning.fabric.utilities.exceptions import MisconfigurationException

from lightning_synflow.callback.rounds import RoundSchedule
from lightning_synflow.pruning.option import Argument, checked_options, declares_options, option, option_arguments
from lightning_synflow.pruning.settings import PruningSettings, one_of

SettingsChange = Literal["error", "reprune", "keep"]

_C = TypeVar("_C", bound=type)


def _input_shape(name: str, value: Any, checked: Mapping[str, Any]) -> tuple[int, ...] | None:
    if value is None:
        return None
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(
            f"`input_shape` must be a list of positive integers without the batch dimension, e.g. [3, 32, 32]; "
            f"got {value!r}."
        )
    return tuple(value)


def _score_batches(name: str, value: Any, checked: Mapping[str, Any]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`score_batches` must be an integer >= 1, got {value!r}.")
    return value


def _switch(name: str, value: Any, checked: Mapping[str, Any]) -> bool:
    """True or false (YAML's spelling in the message)."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be true or false, got {value!r}.")
    return value


def _switch_or_none(name: str, value: Any, checked: Mapping[str, Any]) -> bool | None:
    return None if value is None else _switch(name, value, checked)


@declares_options
@dataclass(frozen=True)
class CallbackOptions:
    """How ``SynFlowPruning`` runs, beside what decides the masks and when; never compared with a checkpoint's."""

    input_shape: tuple[int, ...] | None = option(
        None,
        "shape of one example without the batch dimension, where the module has no ``example_input_array``.",
        check=_input_shape,
    )
    score_batches: int = option(10, "number of training batches ``snip`` and ``grasp`` score on.", check=_score_batches)
    on_settings_change: SettingsChange = option(
        "error",
        "what a resumed checkpoint's masks made with settings of another meaning lead to.",
        check=one_of(get_args(SettingsChange)),
    )
    shrink: bool = option(
        False, "train the thinner network, without the channels that carry no flow.", check=_switch, sharded=False
    )
    verbose: bool = option(True, "print the per-layer sparsity table on rank 0 after pruning.", check=_switch)
    progress: bool | None = option(
        None, "show a progress bar while scoring (None: the Trainer's ``enable_progress_bar``).", check=_switch_or_none
    )


#: Every argument of ``SynFlowPruning``, by name, with its default and the option it sets.
ARGUMENTS: dict[str, Argument] = {
    **option_arguments(PruningSettings),
    **option_arguments(RoundSchedule),
    **option_arguments(CallbackOptions),
}


@dataclass(frozen=True)
class CheckedArguments:
    """``SynFlowPruning``'s arguments, checked.

    Attributes:
        given: every argument as the user gave it (lists and dicts copied): the read-only attributes.
        settings: what decides the masks.
        schedule: when they are made.
        options: how the callback runs.
    """

    given: dict[str, Any]
    settings: PruningSettings
    schedule: RoundSchedule
    options: CallbackOptions

    @classmethod
    def check(cls, arguments: Mapping[str, Any]) -> CheckedArguments:
        """Check ``arguments`` (names of :data:`ARGUMENTS`; the others take their defaults), then their combination.

        :attr:`given` keeps the order of ``arguments`` (the signature's), then the defaults'.

        Raises:
            MisconfigurationException: a value outside its allowed values, naming the argument.
            TypeError: a name that is no argument of ``SynFlowPruning``.
        """
        unknown = [name for name in arguments if name not in ARGUMENTS]
        if unknown:
            raise TypeError(f"SynFlowPruning has no arguments {unknown}.")
        try:
            settings = PruningSettings.from_arguments(arguments)
            options = CallbackOptions(**checked_options(CallbackOptions, arguments))
            schedule = RoundSchedule.create(
                arguments.get("prune_epoch", ARGUMENTS["prune_epoch"].default),
                arguments.get("levels", ARGUMENTS["levels"].default),
            )
        except (TypeError, ValueError) as error:
            raise MisconfigurationException(f"SynFlowPruning: {error}") from error
        if options.shrink and schedule != RoundSchedule():
            raise MisconfigurationException(
                "SynFlowPruning: `shrink=True` needs `prune_epoch=0` and `levels=1` (a thinner network mid-fit would "
                f"need new optimizers and would break rewinding); got prune_epoch={schedule.prune_epoch}, "
                f"levels={schedule.levels}."
            )
        given = {name: _copied(value) for name, value in arguments.items()}
        given.update({name: argument.default for name, argument in ARGUMENTS.items() if name not in given})
        return cls(given, settings, schedule, options)


def _copied(value: Any) -> Any:
    """A list for a list or tuple, a dict for a dict, else ``value``: what the caller keeps cannot change it."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return dict(value) if isinstance(value, dict) else value


class _Fixed:
    """A constructor argument, read-only afterwards (masks never silently ignore a changed setting)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type) -> Any:
        return self if obj is None else obj._arguments[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(
            f"SynFlowPruning.{self.name} is fixed at construction (the masks and checkpoints depend on it); "
            f"create a new SynFlowPruning({self.name}={value!r}, ...) instead."
        )


def read_only_arguments(cls: _C) -> _C:
    """Class decorator: each argument of ``cls`` becomes a read-only attribute, unless ``cls`` defines it.

    Instances keep their arguments by name in ``_arguments`` (:attr:`CheckedArguments.given`).
    """
    for name in inspect.signature(cls).parameters:
        if name not in vars(cls):
            setattr(cls, name, _Fixed(name))
    return cls
