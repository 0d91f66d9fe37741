"""A refused configuration value ends as one ``error: ...`` line and exit code 2.

Three kinds of refusal reach the user. jsonargparse refuses a value of the wrong type or outside a ``Literal``
while parsing; :class:`SynFlowArgumentParser` shortens its report to one line. A class of the configuration
refuses a value in ``__init__`` (``MisconfigurationException``, e.g. ``SynFlowPruning(sparsity=1.5)``);
:func:`find_misconfiguration` finds it so that the CLI reports it through the same parser. ``SynFlowPruning``
refuses a configuration once fit starts (a resumed run with other settings than the checkpoint's, a
``min_density`` floor the sparsity cannot meet): :func:`raised_in` tells its ``MisconfigurationException`` from
one raised elsewhere while training, which keeps its traceback.

jsonargparse's errors are plain ``TypeError`` / ``ValueError`` / ``ArgumentError`` whose only content is their
text: they carry no key, type or value as attributes, and the chain of causes adds only more text (a ``Union``
error chains the first alternative's error only). So the short form is read from the text, with the patterns
below. ``tests/unit/cli/test_errors.py`` builds each of these messages with jsonargparse itself and fails when
jsonargparse words them otherwise; a message no pattern recognises is shown whole, with the same exit code.
"""

from __future__ import annotations

import re
import textwrap
from typing import NoReturn

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser

# Every jsonargparse report of a refused value starts with the key (``ActionTypeHint._check_type``).
_PARSER_KEY = re.compile(r'^Parser key "(?P<key>[^"]+)":')
# A value given by ``class_path`` that the class refused (``adapt_typehints``, subclass types); the class's
# own report follows, indented under this line.
_GIVEN_CLASS = re.compile(r"^(?P<indent>\s*)- Problem with given class_path '(?P<cls>[^']+)':\s*$")
# The next three are matched against the report flattened to one line.
_LITERAL = re.compile(
    r'^Parser key "(?P<key>[^"]+)": Expected a (?:typing\.|typing_extensions\.)?Literal\[(?P<choices>.*)\]\. '
    r"Got value: (?P<value>.*)$"
)
_SIMPLE_TYPE = re.compile(
    r'^Parser key "(?P<key>[^"]+)": Expected a <class \'(?P<type>[\w.]+)\'>\. Got value: (?P<value>.*)$'
)
_SIMPLE_UNION = re.compile(
    r'^Parser key "(?P<key>[^"]+)": Does not validate against any of the Union subtypes Subtypes: \[.*?\] '
    r"Errors: (?P<errors>(?:- Expected a <class '[\w.]+'> )+)Given value type: <class '[\w.]+'> "
    r"Given value: (?P<value>.*)$"
)
_CLASS_NAME = re.compile(r"<class '([\w.]+)'>")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def condense(message: str) -> str:
    """Reduce jsonargparse's report on a refused value to the part that matters, on one line.

    A class given by ``class_path`` is the user's intent, so its problem is the message; the other Union
    alternatives ("Not a valid subclass of Callback", "Expected a <class 'NoneType'>") and the echo of the
    whole value are dropped. A refused ``Literal`` reads "`name` must be one of ...; got ...", a value of the wrong
    type "`name` must be float or None; got ...". Any other message is returned as it is.
    """
    lines = message.splitlines()
    for number, line in enumerate(lines):
        given = _GIVEN_CLASS.match(line)
        if given is None:
            continue
        block = []
        for inner in lines[number + 1 :]:
            if inner.strip() and _indent(inner) <= len(given["indent"]):
                break
            block.append(inner)
        detail = condense(textwrap.dedent("\n".join(block)))
        key = _PARSER_KEY.match(message)
        where = f"{key['key']}: " if key else ""
        return f"{where}{given['cls']}: {' '.join(detail.split())}"
    flat = " ".join(message.split())
    literal = _LITERAL.match(flat)
    if literal is not None:
        return f"`{literal['key']}` must be one of {literal['choices']}; got {literal['value']!r}."
    simple = _SIMPLE_TYPE.match(flat)
    if simple is not None:
        return f"`{simple['key']}` must be {simple['type'].rsplit('.', 1)[-1]}; got {simple['value']!r}."
    union = _SIMPLE_UNION.match(flat)
    if union is not None:
        types = [name.rsplit(".", 1)[-1] for name in _CLASS_NAME.findall(union["errors"])]
        expected = " or ".join("None" if name == "NoneType" else name for name in types)
        return f"`{union['key']}` must be {expected}; got {union['value']!r}."
    return message


class SynFlowArgumentParser(LightningArgumentParser):
    """LightningArgumentParser whose errors fit on a screen: one usage line, the ``--help`` tip, one message."""

    def format_usage(self) -> str:
        """The first usage line only (the full one lists every Trainer option, some 50 lines); ``--help`` has it all."""
        usage = super().format_usage().rstrip("\n").splitlines()
        if len(usage) <= 3:
            return "\n".join(usage) + "\n"
        return f"{usage[0]} ...\n"

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Exit with code 2 and a short message (the full one when errors are raised rather than printed)."""
        if self.exit_on_error:
            message = condense(message)
        super().error(message, ex)


def find_misconfiguration(error: BaseException) -> MisconfigurationException | None:
    """The ``MisconfigurationException`` in ``error``'s chain of causes, if any: a refused configuration value."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, MisconfigurationException):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def raised_in(error: BaseException, package: str) -> bool:
    """Whether ``error`` was raised by the code of ``package`` (a module name): the innermost frame of its traceback."""
    trace = error.__traceback__
    if trace is None:
        return False
    while trace.tb_next is not None:
        trace = trace.tb_next
    module = str(trace.tb_frame.f_globals.get("__name__", ""))
    return module == package or module.startswith(f"{package}.")
