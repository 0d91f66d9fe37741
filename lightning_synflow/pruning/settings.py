"""One validated settings object for ``prune()``, ``score()`` and ``SynFlowPruning``."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Literal, get_args

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
        parameters: glob patterns of the prunable parameters (None: every Linear/Conv weight).
        exclude: glob patterns removed from the prunable set.
        seed: seed of the ``random`` method (None: torch's global generator).
    """

    density: Fraction
    method: str = "synflow"
    iterations: int = 100
    schedule: str = "exponential"
    scope: str = "global"
    parameters: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    seed: int | None = None

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
            schedule=_choice("schedule", schedule, SCHEDULES),
            scope=_choice("scope", scope, SCOPES),
            parameters=_patterns(parameters, "parameters"),
            exclude=_patterns(exclude, "exclude"),
            seed=_seed(seed),
        )

    @property
    def sparsity(self) -> float:
        """Fraction of the prunable weights removed."""
        return float(1 - self.density)

    def describe(self) -> dict[str, str]:
        """Human-readable values, for messages and checkpoints."""
        values = asdict(self)
        values["density"] = f"{self.density} (sparsity {float(1 - self.density):.6g})"
        return {key: repr(value) if key != "density" else value for key, value in values.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain values (density as a ``"p/q"`` string) for checkpoints; inverse of :meth:`from_dict`."""
        values = asdict(self)
        values["density"] = str(self.density)
        for key in ("parameters", "exclude"):
            if values[key] is not None:
                values[key] = list(values[key])
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PruningSettings:
        """Settings saved by :meth:`to_dict`."""
        values = dict(values)
        values["density"] = Fraction(values["density"])
        for key in ("parameters", "exclude"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def differences(self, other: PruningSettings, ignore: Sequence[str] = ()) -> dict[str, tuple[str, str]]:
        """Settings whose meaning differs: name -> (this value, the other's), as readable strings."""
        mine, theirs = self.describe(), other.describe()
        return {key: (mine[key], theirs[key]) for key in mine if key not in ignore and mine[key] != theirs[key]}
