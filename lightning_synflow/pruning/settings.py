"""One validated settings object for ``prune()``, ``score()`` and ``SynFlowPruning``: where each option is declared."""

from __future__ import annotations

import fnmatch
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, Union, get_args

from lightning_synflow.pruning.option import (
    Check,
    OptionSpec,
    Supported,
    checked_options,
    declares_options,
    option,
    option_arguments,
    option_fields,
    plain_value,
    supports,
)
from lightning_synflow.pruning.schedule import Schedule, exact_fraction, prune_count

Method = Literal["synflow", "magnitude", "random", "snip", "grasp"]
Scope = Literal["global", "local"]
METHODS: tuple[str, ...] = get_args(Method)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
SCOPES: tuple[str, ...] = get_args(Scope)
#: Methods that score on data (batches and a loss).
DATA_METHODS = ("snip", "grasp")
#: Methods that score a zero weight exactly 0, so entries already pruned go first.
ZERO_FIRST_METHODS = ("synflow", "magnitude")


def default_iterations(method: str) -> int:
    """The paper's setting: 100 iterations for SynFlow, 1 (single shot) for every baseline."""
    return 100 if method == "synflow" else 1


def resolve_density(sparsity: float | None, compression: float | None) -> Fraction:
    """Validate ``sparsity`` / ``compression`` (exactly one) and return the density kept, exactly.

    Raises:
        ValueError: both or neither given, or a value out of range.
        TypeError: a value that is not a real number.
    """
    if (sparsity is None) == (compression is None):
        raise ValueError(
            "Give exactly one of `sparsity` (fraction of weights removed, 0 <= sparsity < 1) and "
            f"`compression` (ratio kept 1/density, >= 1); got sparsity={sparsity!r}, compression={compression!r}."
        )
    name, value = ("sparsity", sparsity) if sparsity is not None else ("compression", compression)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__} {value!r}.")
    if name == "sparsity":
        if not 0 <= value < 1:
            raise ValueError(f"`sparsity` must satisfy 0 <= sparsity < 1 (fraction of weights removed), got {value!r}.")
        return 1 - exact_fraction(value)
    if not (math.isfinite(value) and value >= 1):
        raise ValueError(f"`compression` must be a finite number >= 1 (10**2 keeps 1% of weights), got {value!r}.")
    return 1 / exact_fraction(value)


def one_of(allowed: tuple[str, ...]) -> Check:
    """The check of an option that takes one of ``allowed``."""

    def check(name: str, value: Any, checked: Mapping[str, Any]) -> str:
        if value not in allowed:
            raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")
        return str(value)

    return check


def _iterations(name: str, value: Any, checked: Mapping[str, Any]) -> int:
    if value is None:
        return default_iterations(checked["method"])
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`iterations` must be an integer >= 1, got {value!r}.")
    return int(value)


def _patterns(name: str, value: Any, checked: Mapping[str, Any]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"`{name}` must be a glob pattern or a list of glob patterns (strings), got {value!r}.")
    if not value and name == "parameters":
        raise ValueError("`parameters` is an empty list: give at least one glob pattern, or None for the default.")
    return tuple(value)


def _flag(name: str, value: Any, checked: Mapping[str, Any]) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return value


def _fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) <= 1:
        raise ValueError(f"`min_density`{where} must be a number in [0, 1] (fraction of a tensor kept), got {value!r}.")
    return float(value)


#: ``min_density`` as stored: one floor for every prunable tensor, or sorted ``(glob, floor)`` pairs.
MinDensity = Union[float, tuple[tuple[str, float], ...], None]


def _pairs(value: Any) -> list[tuple[Any, Any]] | None:
    """The ``(glob, floor)`` pairs of a mapping or of a sequence of pairs; None for anything else."""
    if isinstance(value, Mapping):
        return list(value.items())
    if isinstance(value, Sequence) and not isinstance(value, str):
        pairs = [tuple(pair) for pair in value if isinstance(pair, Sequence) and not isinstance(pair, str)]
        if len(pairs) == len(value) and all(len(pair) == 2 for pair in pairs):
            return pairs
    return None


def _min_density(name: str, value: Any, checked: Mapping[str, Any]) -> MinDensity:
    """One floor (0 means none), or a mapping from name glob to floor stored as sorted ``(glob, floor)`` pairs."""
    if value is None:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return _fraction(value, "") or None
    pairs = _pairs(value)
    if pairs is None:
        raise TypeError(
            "`min_density` must be a number in [0, 1] or a mapping from parameter-name glob to a number in [0, 1] "
            f"(e.g. {{'*shortcut*': 0.2}}), got {value!r}."
        )
    for glob, _ in pairs:
        if not isinstance(glob, str):
            raise TypeError(f"`min_density` keys must be glob patterns (strings), got {glob!r}.")
    if len({glob for glob, _ in pairs}) != len(pairs):
        raise ValueError(f"`min_density` names a glob twice: {value!r}.")
    return tuple(sorted((glob, _fraction(floor, f"[{glob!r}]")) for glob, floor in pairs))


def _seed(name: str, value: Any, checked: Mapping[str, Any]) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise TypeError(f"`seed` must be an integer or None, got {value!r}.")
    return None if value is None else int(value)


#: The methods sharded (DTensor) pruning supports (the data methods would need a loss over sharded batches).
SHARDED_METHODS = ("synflow", "magnitude", "random")


@declares_options
@dataclass(frozen=True)
class PruningSettings:
    """What decides the masks, validated once and compared by meaning.

    Build it with :meth:`create`, which accepts the user's spelling (``sparsity`` or ``compression``,
    ``iterations`` omitted or spelled out) and stores the meaning: two settings objects are equal
    exactly when they prune alike (``sparsity=0.9`` equals ``compression=10``). Each field is one option,
    declared once here (:mod:`~lightning_synflow.pruning.option`): its check, its doc, whether sharded
    pruning supports it, how a checkpoint compares it, and whether re-pruning may start from earlier masks.
    """

    density: Fraction = field(
        metadata=OptionSpec(
            "fraction of the prunable weights kept, exactly (the argument ``sparsity`` or ``compression``).",
            spelled=("sparsity", "compression"),
        ).metadata()
    )
    method: str = option(
        "synflow", "scoring method.", check=one_of(METHODS), sharded=SHARDED_METHODS, from_masks=ZERO_FIRST_METHODS
    )
    iterations: int = option(
        100, "prune-score iterations (the method's default filled in).", check=_iterations, argument=None
    )
    schedule: Schedule = option("exponential", "density schedule across iterations.", check=one_of(SCHEDULES))
    scope: str = option(
        "global", "one threshold for all tensors (``global``) or one per tensor (``local``).", check=one_of(SCOPES)
    )
    parameters: tuple[str, ...] | None = option(
        None,
        "glob patterns of the prunable parameters (None: the default selection of "
        ":func:`~lightning_synflow.pruning.targets.select_prunable`).",
        check=_patterns,
        compare="select",
    )
    exclude: tuple[str, ...] | None = option(
        None, "glob patterns removed from the prunable set.", check=_patterns, compare="select"
    )
    seed: int | None = option(
        None,
        "seed of the ``random`` method, of ``shuffle`` and of ``reinitialize`` (None: torch's global generator).",
        check=_seed,
        compare="seed",
    )
    invert: bool = option(
        False, "keep the lowest scores instead of the highest.", check=_flag, sharded=False, from_masks=False
    )
    shuffle: bool = option(
        False, "permute each tensor's final mask uniformly at random.", check=_flag, sharded=False, from_masks=False
    )
    reinitialize: bool = option(
        False, "re-draw the kept weights with each layer's own initializer after pruning.", check=_flag, sharded=False
    )
    train_mode: bool = option(
        False, "score with BatchNorm in train mode (batch statistics).", check=_flag, sharded=False
    )
    min_density: MinDensity = option(
        None,
        "floor on the density of each matching prunable tensor: one float for all, or sorted ``(glob, floor)`` "
        "pairs (a mapping given by the user); None for no floor.",
        check=_min_density,
        sharded=False,
        from_masks=False,
    )

    @classmethod
    def create(cls, **arguments: Any) -> PruningSettings:
        """Validate the user's arguments and return their meaning.

        The arguments are those of :func:`~lightning_synflow.pruning.api.prune` that decide the masks:
        ``sparsity``, ``compression`` and one per field (:data:`ARGUMENTS`).

        Raises:
            ValueError: a value outside its allowed values (the message names the argument and them).
            TypeError: a value of the wrong type, or an argument no option has.
        """
        unknown = [name for name in arguments if name not in ARGUMENTS]
        if unknown:
            raise TypeError(f"PruningSettings.create() got unexpected arguments {unknown}; they are {list(ARGUMENTS)}.")
        return cls.from_arguments(arguments)

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> PruningSettings:
        """:meth:`create` from a mapping that may hold other names too (a function's ``locals()``), ignored."""
        density = resolve_density(arguments.get("sparsity"), arguments.get("compression"))
        return cls(density=density, **checked_options(cls, arguments))

    @property
    def uses_seed(self) -> bool:
        """Whether ``seed`` changes the result: the ``random`` method, ``shuffle`` or ``reinitialize``."""
        return self.method == "random" or self.shuffle or self.reinitialize

    @property
    def sparsity(self) -> float:
        """Fraction of the prunable weights removed."""
        return float(1 - self.density)

    def describe(self) -> dict[str, str]:
        """Human-readable values, for messages."""
        values = {name: repr(plain_value(getattr(self, name))) for name in option_fields(self)}
        values["density"] = f"{self.density} (sparsity {float(1 - self.density):.6g})"
        return values

    def to_dict(self) -> dict[str, Any]:
        """Plain values (density as a ``"p/q"`` string) for checkpoints; inverse of :meth:`from_dict`."""
        return {name: plain_value(getattr(self, name)) for name in option_fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PruningSettings:
        """Settings saved by :meth:`to_dict` (fields added since the dict was saved take their defaults).

        Raises:
            ValueError: a value no option of this release allows.
            TypeError: a key no field of this release has, or a value of the wrong type.
        """
        unknown = [name for name in values if name not in option_fields(cls)]
        if unknown:
            raise TypeError(f"settings {unknown} are unknown to this release")
        return cls(density=Fraction(values["density"]), **checked_options(cls, values))

    def floor_counts(self, sizes: Mapping[str, int]) -> list[int] | None:
        """The fewest entries ``min_density`` keeps in each tensor: ``ceil(floor * numel)``, exactly.

        Several globs matching one tensor: the largest floor applies. None when there is no floor.

        Args:
            sizes: number of entries of each prunable tensor, keyed by its name (the masks' keys).

        Raises:
            ValueError: a glob matches no prunable tensor (it names the glob and some names).
        """
        if self.min_density is None:
            return None
        if isinstance(self.min_density, float):
            return [math.ceil(exact_fraction(self.min_density) * n) for n in sizes.values()]
        floors = dict.fromkeys(sizes, Fraction(0))
        for glob, floor in self.min_density:
            matches = fnmatch.filter(sizes, glob)
            if not matches:
                raise ValueError(
                    f"`min_density` pattern {glob!r} matches no prunable parameter; the prunable parameters are, "
                    f"e.g., {list(sizes)[:8]}."
                )
            for name in matches:
                floors[name] = max(floors[name], exact_fraction(floor))
        return [math.ceil(floors[name] * n) for name, n in sizes.items()]

    def reachable_floors(self, sizes: Mapping[str, int], alive: Sequence[int] | None = None) -> list[int] | None:
        """:meth:`floor_counts`, checked to hold at this density; None when no floor keeps anything.

        Args:
            sizes: number of entries of each prunable tensor, keyed by its name (the masks' keys).
            alive: entries still kept in each tensor, in ``sizes``' order (starting masks); default: all.

        Raises:
            ValueError: a glob matches no prunable tensor, or (global scope) the floors keep more entries
                than the density does (the message names the largest floors and what to do).
        """
        floors = self.floor_counts(sizes)
        if floors is None or not any(floors):
            return None
        if self.scope == "global":
            held = [min(floor, n) for floor, n in zip(floors, sizes.values() if alive is None else alive)]
            total = sum(sizes.values())
            kept = total - prune_count(self.density, total)
            if sum(held) > kept:
                largest = sorted(zip(sizes, held), key=lambda item: -item[1])[:3]
                named = ", ".join(f"{name!r}: {count}" for name, count in largest if count)
                raise ValueError(
                    f"`min_density` floors keep at least {sum(held)} of the {total} prunable weights (largest: "
                    f"{named}), more than the {kept} that density {self.density} keeps: lower the floors or the "
                    "sparsity."
                )
        return floors

    def differences(self, other: PruningSettings, ignore: Sequence[str] = ()) -> dict[str, tuple[str, str]]:
        """Settings whose meaning differs: name -> (this value, the other's), as readable strings."""
        mine, theirs = self.describe(), other.describe()
        return {key: (mine[key], theirs[key]) for key in mine if key not in ignore and mine[key] != theirs[key]}

    def not_compared_by_value(self, other: PruningSettings) -> list[str]:
        """The options a checkpoint's settings (``self``) and ``other`` are not compared on by value.

        The patterns (compared by the parameters they select on today's model, by the caller), and the seed
        unless both draw from it.
        """
        both_seeded = self.uses_seed and other.uses_seed
        return [
            name
            for name, (_, spec) in option_fields(self).items()
            if spec.compare == "select" or (spec.compare == "seed" and not both_seeded)
        ]

    def unsupported_when_sharded(self) -> list[str]:
        """The options whose values sharded (DTensor) pruning does not support, in declaration order."""
        return self._outside(lambda spec: spec.sharded)

    @property
    def same_from_masks(self) -> bool:
        """Whether pruning weights already masked, from their masks, gives the masks pruning them from dense does.

        True where their zeros score exactly 0 and go first (SynFlow, magnitude) and nothing else moves
        entries (``invert``, ``shuffle``, floors).
        """
        return not self._outside(lambda spec: spec.from_masks)

    def _outside(self, rule: Callable[[OptionSpec], Supported]) -> list[str]:
        """The options whose values ``rule`` of their declaration does not support."""
        return [
            name
            for name, (declared, spec) in option_fields(self).items()
            if not supports(rule(spec), getattr(self, name), declared.default)
        ]


#: The user's arguments that decide the masks (what :meth:`PruningSettings.create` takes), by name, in order.
ARGUMENTS = option_arguments(PruningSettings)

#: The options sharded (DTensor) pruning supports at their defaults only.
SHARDED_AT_DEFAULTS = tuple(name for name, (_, spec) in option_fields(PruningSettings).items() if spec.sharded is False)
