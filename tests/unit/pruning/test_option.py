"""Each option is declared once (a settings field); the public signatures, docs and help must follow it."""

from __future__ import annotations

import inspect

import docstring_parser
import pytest

from lightning_synflow import SynFlowPruning, prune, score
from lightning_synflow.callback.arguments import ARGUMENTS, CallbackOptions
from lightning_synflow.callback.rounds import RoundSchedule
from lightning_synflow.cli import cli_main
from lightning_synflow.pruning import settings
from lightning_synflow.pruning.option import option_fields
from lightning_synflow.pruning.settings import PruningSettings


def _parameters(function) -> dict[str, inspect.Parameter]:
    return {name: p for name, p in inspect.signature(function).parameters.items() if name != "self"}


def _documented(function) -> set[str]:
    return {param.arg_name for param in docstring_parser.parse(inspect.getdoc(function) or "").params}


def test_the_callback_signature_is_exactly_the_declared_arguments_with_their_defaults():
    parameters = _parameters(SynFlowPruning.__init__)
    assert set(parameters) == set(ARGUMENTS), "declare the option in a settings dataclass and add it to __init__"
    for name, argument in ARGUMENTS.items():
        assert parameters[name].default == argument.default, name
        assert parameters[name].annotation is not inspect.Parameter.empty, name


def test_prune_and_score_take_every_settings_argument_they_name_with_its_default():
    parameters = _parameters(prune)
    for name, argument in settings.ARGUMENTS.items():
        assert name in parameters, f"prune() has no argument {name!r}"
        assert parameters[name].default == argument.default, name
    for name, parameter in _parameters(score).items():
        if name in settings.ARGUMENTS:
            assert parameter.default == settings.ARGUMENTS[name].default, name


def test_every_argument_is_documented_in_the_public_docstrings():
    assert set(ARGUMENTS) <= _documented(SynFlowPruning), set(ARGUMENTS) - _documented(SynFlowPruning)
    assert set(settings.ARGUMENTS) <= _documented(prune), set(settings.ARGUMENTS) - _documented(prune)
    for cls in (PruningSettings, RoundSchedule, CallbackOptions):
        for name, (_, spec) in option_fields(cls).items():
            assert spec.doc.strip(), f"{cls.__name__}.{name} has no doc"
            assert f"{name}: {spec.doc}" in (cls.__doc__ or ""), f"{cls.__name__}.{name} is missing from its docs"


def _yaml(value) -> str:
    return "null" if value is None else str(value)


def test_every_argument_is_in_the_cli_help_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--trainer.callbacks.help", "lightning_synflow.SynFlowPruning"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    blocks = {}
    for block in text.split("\n  --trainer.callbacks.")[1:]:
        name = block.split()[0]
        blocks[name] = " ".join(block.split())
    assert set(blocks) == set(ARGUMENTS)
    for name, argument in ARGUMENTS.items():
        assert f"default: {_yaml(argument.default)})" in blocks[name], (name, blocks[name])


def test_read_only_attributes_are_the_arguments():
    pruning = SynFlowPruning(sparsity=0.5, parameters=("a*",), min_density={"a*": 0.1})
    for name, argument in ARGUMENTS.items():
        if name not in ("sparsity", "parameters", "min_density", "iterations"):
            assert getattr(pruning, name) == argument.default, name
        with pytest.raises(AttributeError):
            setattr(pruning, name, argument.default)
    assert (pruning.sparsity, pruning.parameters, pruning.min_density) == (0.5, ["a*"], {"a*": 0.1})
    assert pruning.iterations == 100  # the method's default filled in
