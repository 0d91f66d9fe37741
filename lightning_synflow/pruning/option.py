"""How an option is declared: one dataclass field, with its doc, its check and what the package derives from it.

An option is a field of a settings dataclass declared with :func:`option`: its type and default are the
field's, its doc, check and rules are the field's metadata (an :class:`OptionSpec`). From that declaration
come the checked values (:func:`checked_options`), the user's arguments and their defaults
(:func:`option_arguments`), the values written to checkpoints and shown in messages (:func:`plain_value`),
and the class's ``Attributes`` docs (:func:`declares_options`). Whether a value is supported somewhere
(sharded pruning, re-pruning from a checkpoint's masks) is a :data:`Supported` rule of the field.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from enum import Enum
from fractions import Fraction
from typing import Any, Literal, TypeVar, Union

_T = TypeVar("_T")

#: Which values of an option something supports (True every value, False its default only, or these values).
Supported = Union[bool, tuple[Any, ...]]

#: How a checkpoint's value is compared with today's, by ``meaning`` (the value), by the parameters the
#: patterns ``select`` on today's model (compared by the caller), or only when both settings draw from the
#: ``seed``.
Comparison = Literal["meaning", "select", "seed"]

#: ``(name, value, the values checked before it) -> the value stored``; raises ``ValueError`` or ``TypeError``.
Check = Callable[[str, Any, Mapping[str, Any]], Any]

_SPEC = "lightning_synflow.option"


class _Same(Enum):
    """The default of an argument that defaults to its field's default."""

    AS_FIELD = "as the field"


#: The default of :attr:`OptionSpec.argument`, meaning that the argument defaults to the field's default.
AS_FIELD = _Same.AS_FIELD


@dataclass(frozen=True)
class OptionSpec:
    """The declaration of one option beyond its type and default: the metadata of its field.

    Attributes:
        doc: what it means, for the class's docs.
        check: validates the user's value and returns what is stored; None where the class's own
            constructor builds the field.
        argument: the default of the user's argument where it differs from the field's (:data:`AS_FIELD`:
            the same), e.g. None for an option whose stored default depends on another.
        spelled: the arguments that give it where not its own name (each defaulting to None).
        sharded: the values sharded (DTensor) pruning supports.
        compare: how a checkpoint's value is compared with today's.
        from_masks: the values with which pruning weights already masked, from their masks, keeps the masks
            pruning them from dense gives (their zeros score 0 and go first, and nothing else moves).
    """

    doc: str
    check: Check | None = None
    argument: Any = AS_FIELD
    spelled: tuple[str, ...] = ()
    sharded: Supported = True
    compare: Comparison = "meaning"
    from_masks: Supported = True

    def metadata(self) -> dict[str, OptionSpec]:
        """The field metadata that declares it: ``field(metadata=spec.metadata())`` for a field without default."""
        return {_SPEC: self}


def option(
    default: _T,
    doc: str,
    *,
    check: Check | None = None,
    argument: Any = AS_FIELD,
    spelled: tuple[str, ...] = (),
    sharded: Supported = True,
    compare: Comparison = "meaning",
    from_masks: Supported = True,
) -> _T:
    """Declare a dataclass field with a default as an option; the arguments after ``doc`` are :class:`OptionSpec`'s.

    A field without default is declared ``field(metadata=OptionSpec(...).metadata())``, which type checkers
    know to be required.
    """
    spec = OptionSpec(doc, check, argument, spelled, sharded, compare, from_masks)
    made: _T = field(default=default, metadata=spec.metadata())
    return made


def supports(rule: Supported, value: Any, default: Any) -> bool:
    """Whether ``rule`` (a :data:`Supported`) allows ``value`` of an option whose default is ``default``."""
    if isinstance(rule, tuple):
        return value in rule
    return rule or value == default


def option_fields(cls: Any) -> dict[str, tuple[Field[Any], OptionSpec]]:
    """The fields of the dataclass ``cls`` (or of an instance) declared with :func:`option`, in order."""
    return {f.name: (f, f.metadata[_SPEC]) for f in fields(cls) if _SPEC in f.metadata}


@dataclass(frozen=True)
class Argument:
    """An argument a user gives: its default and the option it sets.

    Attributes:
        name: the argument's name.
        default: its default.
        option: the name of the field it sets.
        spec: that field's declaration.
    """

    name: str
    default: Any
    option: str
    spec: OptionSpec


def option_arguments(cls: Any) -> dict[str, Argument]:
    """The user's arguments for the options of ``cls``, by name, in declaration order."""
    found: dict[str, Argument] = {}
    for name, (declared, spec) in option_fields(cls).items():
        if spec.spelled:
            found.update({spelling: Argument(spelling, None, name, spec) for spelling in spec.spelled})
        else:
            default = declared.default if spec.argument is AS_FIELD else spec.argument
            found[name] = Argument(name, default, name, spec)
    return found


def checked_options(cls: Any, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``cls``'s checked options from ``arguments`` (defaults where absent), checked in order.

    ``arguments`` may hold other names: they are left to the caller.

    Raises:
        ValueError: a value outside its allowed values (the message names the argument).
        TypeError: a value of the wrong type.
    """
    defaults = option_arguments(cls)
    values: dict[str, Any] = {}
    for name, (_, spec) in option_fields(cls).items():
        if spec.check is not None:
            values[name] = spec.check(name, arguments.get(name, defaults[name].default), values)
    return values


def plain_value(value: Any) -> Any:
    """``value`` as checkpoints hold it and messages show it: a list for a tuple, a dict for a tuple of pairs.

    A :class:`~fractions.Fraction` becomes its ``"p/q"`` string.
    """
    if isinstance(value, Fraction):
        return str(value)
    if isinstance(value, tuple):
        if value and all(isinstance(pair, tuple) and len(pair) == 2 for pair in value):
            return dict(value)
        return list(value)
    return value


def declares_options(cls: type[_T]) -> type[_T]:
    """Class decorator for a dataclass of options: its docstring gets an ``Attributes`` section of their docs."""
    lines = [f"    {name}: {spec.doc}" for name, (_, spec) in option_fields(cls).items()]
    cls.__doc__ = inspect.cleandoc(cls.__doc__ or "") + "\n\nAttributes:\n" + "\n".join(lines)
    return cls
