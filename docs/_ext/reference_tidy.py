"""Sphinx extension: the API reference reads the way a user looks things up.

* Every documented argument ends with its default (``Default: None.``), taken from the signature, unless its
  description already talks about the default. Napoleon has turned ``Args:`` into ``:param name:`` fields by
  then, so this handler runs after napoleon's.
* Read-only views of constructor arguments (instances of a private data descriptor, such as
  ``SynFlowPruning.sparsity``) are not listed one by one: the class's arguments document them.
* A ``#:`` comment is a sentence. Napoleon reads a first line of the form ``text: more`` as
  ``type: description``, which garbles a sentence with a colon in it; such comments keep their own text.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

from sphinx.application import Sphinx

#: Napoleon's handlers run at Sphinx's default priority (500): one below and one above it.
BEFORE_NAPOLEON, AFTER_NAPOLEON = 499, 501

#: Kinds of object whose documented arguments get their defaults.
WITH_ARGUMENTS = frozenset(
    {"class", "function", "method", "classmethod", "staticmethod"}
)

#: Kinds of object documented by a ``#:`` comment or an attribute docstring.
ATTRIBUTES = frozenset({"data", "attribute"})


def signature_of(what: str, obj: Any) -> Optional[inspect.Signature]:
    """The signature whose defaults a docstring's arguments take (a class's ``__init__``), or None."""
    try:
        return inspect.signature(obj.__init__ if what == "class" else obj)
    except (TypeError, ValueError):
        return None


def field_end(lines: list[str], start: int) -> int:
    """The index after the last line of the field starting at ``lines[start]`` (continuations are indented)."""
    end = start + 1
    while end < len(lines) and lines[end].startswith(" ") and lines[end].strip():
        end += 1
    return end


def add_defaults(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """``autodoc-process-docstring`` handler (after napoleon): append each argument's default to its field."""
    if what not in WITH_ARGUMENTS:
        return
    signature = signature_of(what, obj)
    if signature is None:
        return
    for parameter in signature.parameters.values():
        if parameter.default is inspect.Parameter.empty:
            continue
        prefix = f":param {parameter.name}:"
        start = next(
            (i for i, line in enumerate(lines) if line.startswith(prefix)), None
        )
        if start is None:
            continue
        end = field_end(lines, start)
        if "default" in " ".join(lines[start:end]).lower():
            continue  # the description says it in its own words
        lines[end - 1] = (
            f"{lines[end - 1].rstrip()} Default: ``{parameter.default!r}``."
        )


def is_argument_view(obj: Any) -> bool:
    """Whether ``obj`` is an instance of a private data descriptor class (a read-only view of an argument)."""
    kind = type(obj)
    return (
        kind.__name__.startswith("_")
        and hasattr(kind, "__get__")
        and hasattr(kind, "__set__")
    )


def skip_argument_views(
    app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any
) -> Optional[bool]:
    """``autodoc-skip-member`` handler: leave out read-only views of constructor arguments."""
    return True if is_argument_view(obj) else None


class CommentKeeper:
    """Keeps the text of ``#:`` comments that napoleon would split into a type and a description."""

    def __init__(self) -> None:
        self.originals: dict[str, list[str]] = {}

    def remember(
        self,
        app: Sphinx,
        what: str,
        name: str,
        obj: Any,
        options: Any,
        lines: list[str],
    ) -> None:
        """Before napoleon: note an attribute's text."""
        if what in ATTRIBUTES:
            self.originals[name] = list(lines)

    def restore(
        self,
        app: Sphinx,
        what: str,
        name: str,
        obj: Any,
        options: Any,
        lines: list[str],
    ) -> None:
        """After napoleon: a ``:type:`` field read out of a sentence is put back as the sentence."""
        original = self.originals.pop(name, None)
        if original is not None and any(line.startswith(":type:") for line in lines):
            lines[:] = original


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the handlers around napoleon's."""
    keeper = CommentKeeper()
    app.connect("autodoc-process-docstring", keeper.remember, priority=BEFORE_NAPOLEON)
    app.connect("autodoc-process-docstring", keeper.restore, priority=AFTER_NAPOLEON)
    app.connect("autodoc-process-docstring", add_defaults, priority=AFTER_NAPOLEON)
    app.connect("autodoc-skip-member", skip_argument_views)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
