"""Which tensors of a model are prunable: module types, name patterns, tied and parametrized weights."""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from lightning_synflow.masks import DEFAULT_PRUNABLE_MODULES

#: ``nn.MultiheadAttention`` parameters prunable by default (whichever it has; its ``out_proj`` is a Linear).
ATTENTION_WEIGHTS: tuple[str, ...] = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")

#: Why a parametrization's inputs cannot be pruned by masking them.
_WHY_NOT_MASKED = (
    "masking a parametrization's input does not mask the effective weight the layer uses (weight_norm, for one, "
    "normalizes each row by its norm, so a pruned row divides 0 by 0 and turns the weights into NaN)"
)


@dataclass(frozen=True)
class Reparametrized:
    """A weight that a layer computes from other tensors, and how.

    Attributes:
        weight: qualified name of the computed tensor, e.g. ``"fc.weight"``.
        kind: what computes it, e.g. ``"_WeightNorm via torch.nn.utils.parametrize"``.
        undo: the call that removes it.
        inputs: ids of the parameters it is computed from.
        default_type: whether the tensor is one the default selection would take (see :func:`default_weight_names`).
    """

    weight: str
    kind: str
    undo: str
    inputs: frozenset[int]
    default_type: bool


def _as_patterns(value: str | Sequence[str] | None, argument: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not all(isinstance(pattern, str) for pattern in value):
        raise TypeError(f"`{argument}` must be a glob pattern or a list of glob patterns (strings), got {value!r}.")
    return list(value)


def reparametrized_weights(model: nn.Module) -> list[Reparametrized]:
    """Weights computed by ``torch.nn.utils.parametrize`` or by the old weight/spectral-norm hooks."""
    found = []
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        layer = f"model.get_submodule({module_name!r})" if module_name else "model"
        default_names = default_weight_names(module)
        if parametrize.is_parametrized(module):
            for tensor_name, chain in module.parametrizations.items():
                found.append(
                    Reparametrized(
                        weight=prefix + tensor_name,
                        kind=f"{', '.join(type(p).__name__ for p in chain)} via torch.nn.utils.parametrize",
                        undo=f"torch.nn.utils.parametrize.remove_parametrizations({layer}, {tensor_name!r})",
                        inputs=frozenset(id(p) for p in chain.parameters()),
                        default_type=tensor_name in default_names,
                    )
                )
        own = dict(module.named_parameters(recurse=False))
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, (WeightNorm, SpectralNorm)):
                weight_norm = isinstance(hook, WeightNorm)
                suffixes = ("_g", "_v") if weight_norm else ("_orig",)
                remove = "remove_weight_norm" if weight_norm else "remove_spectral_norm"
                found.append(
                    Reparametrized(
                        weight=prefix + hook.name,
                        kind=f"{type(hook).__name__} forward pre-hook",
                        undo=f"torch.nn.utils.{remove}({layer}, {hook.name!r})",
                        inputs=frozenset(id(own[hook.name + s]) for s in suffixes if hook.name + s in own),
                        default_type=hook.name in default_names,
                    )
                )
    return found


def is_hf_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is Hugging Face's ``Conv1D`` (GPT-2's linear layer, weight ``(in, out)``).

    Recognised by class name and module path (``transformers.*``), so transformers is never imported.
    """
    return any(c.__name__ == "Conv1D" and c.__module__.startswith("transformers.") for c in type(module).__mro__)


def default_weight_names(module: nn.Module) -> tuple[str, ...]:
    """Names of ``module``'s own parameter attributes that the default selection takes.

    ``weight`` of Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d and Hugging Face ``Conv1D``; the input
    projections of ``nn.MultiheadAttention`` (:data:`ATTENTION_WEIGHTS`); nothing for any other module.
    """
    if isinstance(module, DEFAULT_PRUNABLE_MODULES) or is_hf_conv1d(module):
        return ("weight",)
    if isinstance(module, nn.MultiheadAttention):
        return ATTENTION_WEIGHTS
    return ()


def _default_prunable(model: nn.Module) -> set[int]:
    """Ids of the parameters that some module uses as a weight of :func:`default_weight_names`."""
    ids: set[int] = set()
    for module in model.modules():
        names = default_weight_names(module)
        if names:
            own = dict(module.named_parameters(recurse=False))
            ids.update(id(own[name]) for name in names if own.get(name) is not None)
    return ids


def _matching(patterns: list[str], names: dict[str, int], argument: str) -> set[int]:
    """Ids of the tensors with a name matching any of ``patterns``; every pattern must match."""
    ids: set[int] = set()
    for pattern in patterns:
        matches = fnmatch.filter(names, pattern)
        if not matches:
            raise ValueError(
                f"`{argument}` pattern {pattern!r} matches no parameter of the model; "
                f"the parameter names are, e.g., {list(names)[:8]}."
            )
        ids.update(names[name] for name in matches)
    return ids


def select_prunable(
    model: nn.Module,
    parameters: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
) -> dict[str, nn.Parameter]:
    """Select the prunable parameters of ``model`` by module type and name patterns.

    The default selection: the ``weight`` of every ``Linear``, ``Conv1d/2d/3d``,
    ``ConvTranspose1d/2d/3d`` and Hugging Face ``Conv1D`` (GPT-2's layers), and the input projection
    of every ``nn.MultiheadAttention`` (``in_proj_weight``, or ``q/k/v_proj_weight``; its
    ``out_proj`` is a Linear). Never biases, normalization layers or embeddings.

    Tied weights (one tensor under several names, e.g. ``head.weight = emb.weight``): the tensor is
    prunable by default when any module that uses it is of a type above, even if its first user is
    not (an ``Embedding``). It is selected once, under its first
    qualified name in ``named_parameters()`` order (``emb.weight``), scored once with the gradient
    of every use, and, being one tensor, stays masked wherever it is used. ``parameters`` and
    ``exclude`` patterns may match any of its names.

    Parametrized weights (``torch.nn.utils.parametrize``: weight_norm, spectral_norm, user
    parametrizations; and the old ``torch.nn.utils.weight_norm`` / ``spectral_norm`` hooks) cannot
    be pruned by masking: masking a parametrization's input does not mask the weight the layer
    computes from it (weight_norm even divides 0 by 0 on a pruned row). Selecting such an input is
    refused with a ``ValueError``; the default selection leaves parametrized layers out
    with a ``UserWarning`` naming them, unless ``exclude`` matches one of their parameters. Remove
    the parametrization before pruning (``torch.nn.utils.parametrize.remove_parametrizations``) to
    prune such a layer.

    Args:
        model: the network.
        parameters: glob patterns over parameter names (every name of a tied tensor, as
            ``named_parameters(remove_duplicate=False)`` gives them); ``None``: the default selection.
        exclude: glob patterns removed from the selection (a tied tensor goes if any name matches).

    Returns:
        The selected parameters keyed by their first qualified name, in ``named_parameters()`` order.

    Raises:
        ValueError: a pattern matches no parameter, a selected parameter feeds a parametrization, or
            nothing is left to prune.
        TypeError: a pattern is not a string, or a selected parameter is not floating point.
    """
    include_patterns = _as_patterns(parameters, "parameters")
    exclude_patterns = _as_patterns(exclude, "exclude")
    every_name = {name: id(param) for name, param in model.named_parameters(remove_duplicate=False)}
    first = {id(param): (name, param) for name, param in model.named_parameters()}  # first names, in order
    reparametrized = reparametrized_weights(model)

    if parameters is None:
        selected = _default_prunable(model)
    else:
        if not include_patterns:
            raise ValueError("`parameters` is an empty list: give at least one glob pattern, or None for the default.")
        selected = _matching(include_patterns, every_name, "parameters")
    excluded = _matching(exclude_patterns, every_name, "exclude")
    selected -= excluded

    inputs = {tensor: w for w in reparametrized for tensor in w.inputs}
    refused = next((tensor for tensor in first if tensor in selected and tensor in inputs), None)
    if refused is not None:
        name, weight = first[refused][0], inputs[refused]
        raise ValueError(
            f"Parameter {name!r} is an input of the parametrization that computes "
            f"{weight.weight!r} ({weight.kind}): {_WHY_NOT_MASKED}. Remove the parametrization before pruning "
            f"({weight.undo}), or leave the layer out of `parameters` (or add it to `exclude`)."
        )
    skipped = [w for w in reparametrized if parameters is None and w.default_type and not w.inputs & excluded]
    described = "; ".join(f"{w.weight!r} ({w.kind}; remove it with {w.undo})" for w in skipped)
    if skipped:
        warnings.warn(
            f"Parametrized layers are left out of the default selection of prunable weights: {described}. Their "
            f"weights cannot be pruned by masking: {_WHY_NOT_MASKED}. Remove the parametrization before pruning to "
            "prune them, or exclude their parameters (`exclude`) to silence this warning.",
            UserWarning,
            stacklevel=2,
        )

    if not selected:
        left_out = f" Parametrized layers left out: {described}." if skipped else ""
        raise ValueError(
            "Nothing to prune: the model has no Linear/Conv/ConvTranspose/MultiheadAttention weight, or "
            "`parameters`/`exclude` removed them all." + left_out
        )
    result = {name: param for tensor, (name, param) in first.items() if tensor in selected}
    for name, param in result.items():
        if not torch.is_floating_point(param):
            raise TypeError(
                f"Prunable parameter {name!r} has dtype {param.dtype}; only floating-point tensors can be pruned."
            )
    return result
