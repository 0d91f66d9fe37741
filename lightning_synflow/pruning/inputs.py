"""Batches shaped like Lightning's ``example_input_array``: build, move and feed them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import torch
from torch import nn

ExampleInput = Union[torch.Tensor, Sequence[torch.Tensor], Mapping[str, torch.Tensor]]


def map_tensors(tree: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """Apply ``fn`` to every tensor of a nested tensor/tuple/list/dict, keeping the containers' types.

    Named tuples and dict subclasses (e.g. model output classes) are rebuilt as their own type where
    their constructor allows it; any other leaf is returned unchanged.
    """
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, Mapping):
        mapped = {key: map_tensors(value, fn) for key, value in tree.items()}
        if type(tree) is dict or not all(isinstance(key, str) for key in mapped):
            return mapped
        try:
            return type(tree)(**mapped)
        except TypeError:
            return mapped
    if isinstance(tree, (list, tuple)):
        values = [map_tensors(value, fn) for value in tree]
        return type(tree)(*values) if hasattr(tree, "_fields") else type(tree)(values)
    return tree


def _iter_tensors(tree: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    map_tensors(tree, found.append)
    return found


class ExampleInputError(ValueError):
    """The model's forward pass failed on the all-ones input built from ``example_input``.

    Attributes:
        shapes: the shape of each input tensor tried (batch size 1), in argument order.
        cause: the model's own error message.
    """

    def __init__(self, shapes: list[list[int]], cause: str) -> None:
        self.shapes = shapes
        self.cause = cause
        tried = shapes[0] if len(shapes) == 1 else shapes
        super().__init__(
            f"The model's forward pass failed on an all-ones input shaped like `example_input` (shapes tried, "
            f"batch size 1: {tried}): {cause}. `example_input` must be shaped like a batch that the model's forward "
            "accepts (only its shape is used), e.g. torch.zeros(1, 3, 32, 32) for 32x32 RGB images."
        )


def validate_example_input(example_input: Any) -> None:
    """Check that ``example_input`` is a float tensor, a tuple/list or a dict of them.

    Raises:
        TypeError: not a tensor/tuple/list/dict, holds no tensor, or holds integer tensors.
    """
    if not isinstance(example_input, (torch.Tensor, Mapping, list, tuple)):
        raise TypeError(
            "`example_input` must be a tensor, a tuple/list of tensors or a dict of tensors shaped like a batch "
            f"(Lightning's `example_input_array` convention), got {type(example_input).__name__}."
        )
    tensors = _iter_tensors(example_input)
    if not tensors:
        raise TypeError(
            "`example_input` holds no tensor; give a tensor shaped like a batch, e.g. torch.zeros(1, 3, 32, 32)."
        )
    for tensor in tensors:
        if not torch.is_floating_point(tensor):
            raise TypeError(
                f"`example_input` holds a {tensor.dtype} tensor (token ids or labels?). SynFlow feeds an all-ones "
                "input, which is meaningless for integer ids: prune the layers after the embedding by giving a "
                "float input of the embedding's output shape to that part of the model, or use "
                "method='magnitude' or 'random', which need no input."
            )
        if tensor.dim() == 0:
            raise TypeError("`example_input` tensors need a leading batch dimension, e.g. torch.zeros(1, 64).")


def ones_batch(example_input: ExampleInput, dtype: torch.dtype, device: torch.device) -> ExampleInput:
    """All-ones input with batch size 1 and the example's per-example shape."""
    return map_tensors(example_input, lambda t: torch.ones((1, *t.shape[1:]), dtype=dtype, device=device))


def call_on_ones(model: nn.Module, example_input: ExampleInput, dtype: torch.dtype, device: torch.device) -> Any:
    """Run ``model`` on the all-ones batch (batch size 1) shaped like ``example_input``.

    Raises:
        ExampleInputError: the forward pass failed (it chains the model's error).
    """
    inputs = ones_batch(example_input, dtype, device)
    try:
        return call_model(model, inputs)
    except torch.OutOfMemoryError:
        raise
    except Exception as error:
        shapes = [list(tensor.shape) for tensor in _iter_tensors(inputs)]
        raise ExampleInputError(shapes, str(error)) from error


def to_device(batch: Any, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    """Move every tensor of ``batch`` to ``device``; floating tensors also to ``dtype`` if given."""

    def move(tensor: torch.Tensor) -> torch.Tensor:
        if dtype is not None and torch.is_floating_point(tensor):
            return tensor.to(device=device, dtype=dtype)
        return tensor.to(device)

    return map_tensors(batch, move)


def call_model(model: nn.Module, inputs: ExampleInput) -> Any:
    """Call ``model`` the way Lightning does: tuple -> positional, dict -> keyword, else one argument."""
    if isinstance(inputs, tuple):
        return model(*inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def output_sum(output: Any) -> torch.Tensor:
    """Sum of every floating-point tensor in a model output (tensor, tuple, dict, ...)."""
    tensors = [t for t in _iter_tensors(output) if torch.is_floating_point(t)]
    if not tensors:
        raise TypeError("The model returned no floating-point tensor, so SynFlow has no output to sum.")
    return torch.stack([t.sum() for t in tensors]).sum()
