"""Which tensors of a model are prunable."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
from torch import nn

#: Module types whose ``weight`` is prunable by default.
DEFAULT_PRUNABLE_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _as_patterns(value: str | Sequence[str] | None, argument: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not all(isinstance(pattern, str) for pattern in value):
        raise TypeError(f"`{argument}` must be a glob pattern or a list of glob patterns (strings), got {value!r}.")
    return list(value)


def _default_prunable_names(model: nn.Module) -> list[str]:
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, DEFAULT_PRUNABLE_MODULES) and isinstance(module.weight, nn.Parameter):
            names.append(f"{module_name}.weight" if module_name else "weight")
    return names


def select_prunable(
    model: nn.Module,
    parameters: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
) -> dict[str, nn.Parameter]:
    """Select the prunable parameters of ``model`` by module type and name patterns.

    Args:
        model: the network.
        parameters: glob patterns over ``model.named_parameters()`` names; ``None`` selects the
            ``weight`` of every ``Linear`` and ``Conv1d/2d/3d`` module.
        exclude: glob patterns removed from the selection.

    Returns:
        The selected parameters keyed by qualified name, in ``named_parameters()`` order.

    Raises:
        ValueError: a pattern matches no parameter, or nothing is left to prune.
        TypeError: a pattern is not a string, or a selected parameter is not floating point.
    """
    include_patterns = _as_patterns(parameters, "parameters")
    exclude_patterns = _as_patterns(exclude, "exclude")
    named = dict(model.named_parameters())
    all_names = list(named)

    if parameters is None:
        selected = set(_default_prunable_names(model))
    else:
        if not include_patterns:
            raise ValueError("`parameters` is an empty list: give at least one glob pattern, or None for the default.")
        selected = set()
        for pattern in include_patterns:
            matches = fnmatch.filter(all_names, pattern)
            if not matches:
                raise ValueError(
                    f"`parameters` pattern {pattern!r} matches no parameter of the model; "
                    f"the parameter names are, e.g., {all_names[:8]}."
                )
            selected.update(matches)

    for pattern in exclude_patterns:
        matches = fnmatch.filter(all_names, pattern)
        if not matches:
            raise ValueError(
                f"`exclude` pattern {pattern!r} matches no parameter of the model; "
                f"the parameter names are, e.g., {all_names[:8]}."
            )
        selected.difference_update(matches)

    if not selected:
        raise ValueError(
            "Nothing to prune: the model has no Linear/Conv weight, or `parameters`/`exclude` removed them all."
        )
    result = {name: named[name] for name in all_names if name in selected}
    for name, param in result.items():
        if not torch.is_floating_point(param):
            raise TypeError(
                f"Prunable parameter {name!r} has dtype {param.dtype}; only floating-point tensors can be pruned."
            )
    return result
