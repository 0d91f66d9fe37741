"""One validated settings object for ``prune()``, ``score()`` and ``SynFlowPruning``."""

from __future__ import annotations

import fnmatch
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Literal, Union, cast, get_args

from lightning_synflow.pruning.schedule import Schedule, exact_fraction

Method = Literal["synflow", "magnitude", "random", "snip", "grasp"]
Scope = Literal["global", "local"]
METHODS: tuple[str, ...] = get_args(Method)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
SCOPES: tuple[str, ...] = get_args(Scope)
#: Methods that score on data (batches and a loss).
DATA_METHODS = ("snip", "grasp")


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


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")
    return str(value)


def _iterations(value: Any, method: str) -> int:
    if value is None:
        return default_iterations(method)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`iterations` must be an integer >= 1, got {value!r}.")
    return int(value)


def _patterns(value: Any, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"`{name}` must be a glob pattern or a list of glob patterns (strings), got {value!r}.")
    if not value and name == "parameters":
        raise ValueError("`parameters` is an empty list: give at least one glob pattern, or None for the default.")
    return tuple(value)


def _flag(name: str, value: Any) -> bool:
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


def _min_density(value: Any) -> MinDensity:
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


def _seed(value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise TypeError(f"`seed` must be an integer or None, got {value!r}.")
    return None if value is None else int(value)


@dataclass(frozen=True)
class PruningSettings:
    """What decides the masks, validated once and compared by meaning.

    Build it with :meth:`create`, which accepts the user's spelling (``sparsity`` or ``compression``,
    ``iterations`` omitted or spelled out) and stores the meaning: two settings objects are equal
    exactly when they prune alike (``sparsity=0.9`` equals ``compression=10``).

    Attributes:
        density: fraction of the prunable weights kept, exactly.
        method: scoring method.
        iterations: prune-score iterations (the method's default filled in).
        schedule: density schedule across iterations.
        scope: one threshold for all tensors (``global``) or one per tensor (``local``).
        parameters: glob patterns of the prunable parameters (None: the default selection of
            :func:`~lightning_synflow.pruning.targets.select_prunable`).
        exclude: glob patterns removed from the prunable set.
        seed: seed of the ``random`` method, of ``shuffle`` and of ``reinitialize`` (None: torch's
            global generator).
        invert: keep the lowest scores instead of the highest.
        shuffle: permute each tensor's final mask uniformly at random.
        reinitialize: re-draw the kept weights with each layer's own initializer after pruning.
        train_mode: score with BatchNorm in train mode (batch statistics).
        min_density: floor on the density of each matching prunable tensor: one float for all, or
            sorted ``(glob, floor)`` pairs (a mapping given by the user); None for no floor.
    """

    density: Fraction
    method: str = "synflow"
    iterations: int = 100
    schedule: Schedule = "exponential"
    scope: str = "global"
    parameters: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    seed: int | None = None
    invert: bool = False
    shuffle: bool = False
    reinitialize: bool = False
    train_mode: bool = False
    min_density: MinDensity = None

    @classmethod
    def create(
        cls,
        *,
        sparsity: float | None = None,
        compression: float | None = None,
        method: str = "synflow",
        iterations: int | None = None,
        schedule: str = "exponential",
        scope: str = "global",
        parameters: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        seed: int | None = None,
        invert: bool = False,
        shuffle: bool = False,
        reinitialize: bool = False,
        train_mode: bool = False,
        min_density: float | Mapping[str, float] | None = None,
    ) -> PruningSettings:
        """Validate the user's arguments and return their meaning.

        Raises:
            ValueError: a value outside its allowed values (the message names the argument and them).
            TypeError: a value of the wrong type.
        """
        density = resolve_density(sparsity, compression)
        method = _choice("method", method, METHODS)
        return cls(
            density=density,
            method=method,
            iterations=_iterations(iterations, method),
            schedule=cast(Schedule, _choice("schedule", schedule, SCHEDULES)),  # checked against Schedule's values
            scope=_choice("scope", scope, SCOPES),
            parameters=_patterns(parameters, "parameters"),
            exclude=_patterns(exclude, "exclude"),
            seed=_seed(seed),
            invert=_flag("invert", invert),
            shuffle=_flag("shuffle", shuffle),
            reinitialize=_flag("reinitialize", reinitialize),
            train_mode=_flag("train_mode", train_mode),
            min_density=_min_density(min_density),
        )

    @property
    def uses_seed(self) -> bool:
        """Whether ``seed`` changes the result: the ``random`` method, ``shuffle`` or ``reinitialize``."""
        return self.method == "random" or self.shuffle or self.reinitialize

    @property
    def sparsity(self) -> float:
        """Fraction of the prunable weights removed."""
        return float(1 - self.density)

    def describe(self) -> dict[str, str]:
        """Human-readable values, for messages and checkpoints."""
        values = asdict(self)
        values["density"] = f"{self.density} (sparsity {float(1 - self.density):.6g})"
        if isinstance(self.min_density, tuple):
            values["min_density"] = dict(self.min_density)
        return {key: repr(value) if key != "density" else value for key, value in values.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain values (density as a ``"p/q"`` string) for checkpoints; inverse of :meth:`from_dict`."""
        values = asdict(self)
        values["density"] = str(self.density)
        for key in ("parameters", "exclude"):
            if values[key] is not None:
                values[key] = list(values[key])
        if isinstance(self.min_density, tuple):
            values["min_density"] = dict(self.min_density)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PruningSettings:
        """Settings saved by :meth:`to_dict` (fields added since the dict was saved take their defaults)."""
        values = dict(values)
        values["density"] = Fraction(values["density"])
        for key in ("parameters", "exclude"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        if "min_density" in values:
            values["min_density"] = _min_density(values["min_density"])
        return cls(**values)

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

    def differences(self, other: PruningSettings, ignore: Sequence[str] = ()) -> dict[str, tuple[str, str]]:
        """Settings whose meaning differs: name -> (this value, the other's), as readable strings."""
        mine, theirs = self.describe(), other.describe()
        return {key: (mine[key], theirs[key]) for key in mine if key not in ignore and mine[key] != theirs[key]}
