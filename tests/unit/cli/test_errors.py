"""The one-line error of a refused value, pinned to jsonargparse's wording.

jsonargparse's errors carry only text (no key, type or value as attributes), so
``lightning_synflow.cli.errors.condense`` reads the short form from the text. Each test here makes jsonargparse
write one kind of report itself and checks that it is recognised: a failure means the installed jsonargparse
words it otherwise, and the patterns in ``lightning_synflow/cli/errors.py`` need updating.
"""

from __future__ import annotations

import json
from typing import Literal, Optional, Union

import jsonargparse
import pytest
from jsonargparse import ArgumentError, ArgumentParser

from lightning_synflow.cli.errors import condense


class Base:
    """A base class for ``class_path`` values."""


class Thing(Base):
    """A subclass whose arguments jsonargparse checks."""

    def __init__(self, method: Literal["a", "b"] = "a", size: int = 1, count: Optional[int] = None) -> None:
        pass


THING = f"{Thing.__module__}.Thing"


def _refusal(typehint: object, value: str) -> str:
    """jsonargparse's own report on ``--x value`` for an argument of type ``typehint``."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--x", type=typehint)
    with pytest.raises(ArgumentError) as refused:
        parser.parse_args(["--x", value])
    return str(refused.value)


def _thing(**init_args: object) -> str:
    """``Thing`` with ``init_args`` as given on the command line."""
    return json.dumps({"class_path": THING, "init_args": init_args})


@pytest.mark.parametrize(
    ("typehint", "value", "short"),
    [
        (Literal["a", "b"], "c", "`x` must be one of 'a', 'b'; got 'c'."),
        (int, "abc", "`x` must be int; got 'abc'."),
        (Optional[int], "abc", "`x` must be int or None; got 'abc'."),
        (Optional[float], "abc", "`x` must be float or None; got 'abc'."),
        (Optional[Base], _thing(count="z"), f"x: {THING}: `count` must be int or None; got 'z'."),
        (
            Optional[Union[list[Base], Base]],
            _thing(method="z"),
            f"x: {THING}: `method` must be one of 'a', 'b'; got 'z'.",
        ),
    ],
    ids=["literal", "type", "optional", "optional float", "optional class_path", "callbacks-like"],
)
def test_jsonargparse_report_is_recognised(typehint, value, short):
    message = _refusal(typehint, value)
    assert condense(message) == short, (
        f"jsonargparse {jsonargparse.__version__} words this refusal otherwise; update the patterns in "
        f"lightning_synflow/cli/errors.py. Its report:\n{message}"
    )


def test_other_messages_are_shown_whole():
    message = "Option 'sparsty' is not accepted"
    assert condense(message) == message
    assert (
        condense('Parser key "x":\n  something new\n  on two lines')
        == 'Parser key "x":\n  something new\n  on two lines'
    )
