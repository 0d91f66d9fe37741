"""Sphinx extension: missing docstrings are warnings, re-exported names resolve, dataclass signatures parse.

* Autodoc lists undocumented members (with ``undoc-members``) but says nothing about them. This check warns
  for each public module, class, function, method and property whose docstring is empty, so that
  ``sphinx-build -W`` fails on a missing docstring. Data and attributes are not checked (constants and
  type aliases carry ``#:`` comments where they need words).
* Every object is documented once, in the module that defines it. A reference to a name re-exported
  elsewhere (``lightning_synflow.prune`` for ``lightning_synflow.pruning.api.prune``) is resolved by
  importing it and following it to where it is defined, so docstrings and pages may use the short names.
  Only names under the packages listed in the ``docstring_check_packages`` setting are imported. A name
  that imports nowhere stays a broken reference, which ``nitpicky`` makes a warning.
"""

from __future__ import annotations

import importlib
from typing import Any, Optional

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging

logger = logging.getLogger(__name__)

#: The kinds of object autodoc reports that must carry a docstring.
CHECKED = frozenset(
    {
        "module",
        "class",
        "exception",
        "function",
        "method",
        "property",
        "classmethod",
        "staticmethod",
    }
)


def is_public(name: str) -> bool:
    """Whether the dotted ``name`` is public: no component starts with an underscore (dunders excepted)."""
    return not any(
        part.startswith("_") and not part.endswith("__") for part in name.split(".")
    )


def defined_here(name: str, obj: Any) -> bool:
    """Whether ``obj`` is defined under ``name`` rather than imported there (autodoc then skips it).

    Objects that do not say where they come from (properties, for one) count as defined here.
    """
    module, qualname = (
        getattr(obj, "__module__", None),
        getattr(obj, "__qualname__", None),
    )
    if not (isinstance(module, str) and isinstance(qualname, str)):
        return True
    return name == f"{module}.{qualname}"


def missing_docstring(what: str, name: str, lines: list[str]) -> bool:
    """Whether an object autodoc documents is public, of a checked kind, and has an empty docstring."""
    return (
        what in CHECKED and is_public(name) and not any(line.strip() for line in lines)
    )


def check_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """``autodoc-process-docstring`` handler: warn (type ``docstring``) for a public object without a docstring.

    Autodoc also reads the docstrings of names a module imports before it leaves them out; those are skipped.
    """
    if missing_docstring(what, name, lines) and defined_here(name, obj):
        logger.warning(
            "%s %s has no docstring", what, name, type="docstring", subtype="missing"
        )


def defined_name(target: str, packages: tuple[str, ...]) -> Optional[str]:
    """Where the object called ``target`` is defined, or None if it is not under ``packages`` or not importable.

    The longest importable module prefix is imported and the rest looked up as attributes. The last object
    found that knows its ``__module__`` and ``__qualname__`` gives the new prefix; the parts after it (an
    instance attribute, say) are kept as they are.
    """
    if target.split(".")[0] not in packages:
        return None
    parts = target.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        prefix, rest = ".".join(parts[:split]), parts[split:]
        for index, part in enumerate(parts[split:]):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                break
            module, qualname = (
                getattr(obj, "__module__", None),
                getattr(obj, "__qualname__", None),
            )
            if isinstance(module, str) and isinstance(qualname, str):
                prefix, rest = f"{module}.{qualname}", parts[split + index + 1 :]
        return ".".join([prefix, *rest])
    return None


def docstring_owner(node: pending_xref) -> Optional[str]:
    """The defined name of the object whose docstring holds ``node`` (autodoc's ``docstring of NAME`` source)."""
    source = node.source or ""
    marker = ":docstring of "
    return source.split(marker, 1)[1] if marker in source else None


def enclosing_scopes(name: Optional[str]) -> list[str]:
    """The scopes a short name in the docstring of ``name`` can live in, innermost first (``a.b.f``: ``a.b``, ``a``)."""
    if not name:
        return []
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(len(parts) - 1, 0, -1)]


def resolve_reexport(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement
) -> Optional[nodes.reference]:
    """``missing-reference`` handler: retry a Python reference at the place its object is defined.

    A short name in a docstring is also looked up around the object that docstring belongs to, so that
    ``:func:`helper``` in ``a.impl.f`` still resolves when ``f`` is documented as the re-exported ``a.f``.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    module = node.get("py:module")
    tried = (
        [f"{module}.{target}", target] if module else [target]
    )  # what Sphinx looked up already
    candidates = tried + [
        f"{scope}.{target}" for scope in enclosing_scopes(docstring_owner(node))
    ]
    domain = env.get_domain("py")
    for candidate in candidates:
        defined = defined_name(candidate, tuple(app.config.docstring_check_packages))
        if defined is None or defined in tried:
            continue
        found = domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], defined, node, contnode
        )
        if found is not None:
            return found
    return None


def tidy_signature(
    app: Sphinx,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: Optional[str],
    return_annotation: Optional[str],
) -> Optional[tuple[Optional[str], Optional[str]]]:
    """``autodoc-process-signature`` handler: a dataclass field's ``default_factory`` shows as ``...``.

    Python renders it ``<factory>``, which is no Python expression, so Sphinx could not parse the signature
    and would cut it at every comma (``dict[str``), each piece a broken reference.
    """
    if signature is not None and "<factory>" in signature:
        return signature.replace("<factory>", "..."), return_annotation
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the handlers."""
    app.add_config_value(
        "docstring_check_packages", [], "env", types=frozenset({list, tuple})
    )
    app.connect("autodoc-process-docstring", check_docstring)
    app.connect("autodoc-process-signature", tidy_signature)
    app.connect("missing-reference", resolve_reexport)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
