"""Batches shaped like Lightning's ``example_input_array``: build, move and feed them.

SynFlow feeds an input of ones. For a model that takes token ids (an integer tensor, or a dict with
``input_ids``) ones are meaningless ids, so the ones are fed one level up, as ``inputs_embeds`` of
the embedding's width: the model's ``forward`` must accept ``inputs_embeds`` (Hugging Face models do).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, Union

import torch
from torch import nn

ExampleInput = Union[torch.Tensor, Sequence[torch.Tensor], Mapping[str, torch.Tensor]]
_Example = TypeVar("_Example", bound=ExampleInput)


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


#: Key of the token ids in a dict example input (Hugging Face's name).
TOKENS = "input_ids"
#: Keyword argument through which the embedding-level ones are fed (Hugging Face's name).
EMBEDS = "inputs_embeds"

_WITHOUT_EMBEDS = (
    "prune the layers after the embedding by giving a float input of the embedding's output shape to that part of "
    "the model, or use method='magnitude' or 'random', which need no input"
)


def token_ids(example_input: Any) -> torch.Tensor | None:
    """The token ids of ``example_input``: an integer tensor, or the ``input_ids`` entry of a dict; else None."""
    tokens: object
    if isinstance(example_input, torch.Tensor):
        tokens = example_input
    elif isinstance(example_input, Mapping) and EMBEDS not in example_input:
        tokens = example_input.get(TOKENS)
    else:
        return None
    if isinstance(tokens, torch.Tensor) and not torch.is_floating_point(tokens):
        return tokens
    return None


def _accepts_embeds(model: nn.Module) -> bool:
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return EMBEDS in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def embedding_width(model: nn.Module) -> int | None:
    """Width of the input embedding: ``get_input_embeddings()`` of the model or of its first submodule that has it."""
    for module in model.modules():
        getter = getattr(module, "get_input_embeddings", None)
        if not callable(getter):
            continue
        try:
            embedding = getter()
        except (NotImplementedError, AttributeError):
            continue
        width = getattr(embedding, "embedding_dim", None)
        weight = getattr(embedding, "weight", None)
        if width is None and isinstance(weight, torch.Tensor) and weight.dim() == 2:
            width = weight.shape[1]
        if isinstance(width, int):
            return width
    return None


def _embeds_width(model: nn.Module) -> int:
    """The width of ``inputs_embeds`` for ``model``; a TypeError saying what to do if it takes none."""
    if not _accepts_embeds(model):
        raise TypeError(
            f"`example_input` holds token ids (an integer tensor or `{TOKENS}`), and SynFlow feeds ones at the "
            f"embedding level as `{EMBEDS}`, but {type(model).__name__}.forward has no `{EMBEDS}` argument. Give "
            f"forward an `{EMBEDS}` argument passed on to the model (Hugging Face models have one), or "
            + _WITHOUT_EMBEDS
            + "."
        )
    width = embedding_width(model)
    if width is None:
        raise TypeError(
            f"`example_input` holds token ids, but the width of `{EMBEDS}` is unknown: {type(model).__name__} (and "
            f"its submodules) has no get_input_embeddings(). Give `example_input={{'{EMBEDS}': torch.zeros(1, "
            "seq_len, hidden)}` instead (a float tensor of the embedding's output shape)."
        )
    return width


def validate_example_input(example_input: Any, model: nn.Module | None = None) -> None:
    """Check that ``example_input`` is a tensor, a tuple/list or a dict of them, usable by SynFlow.

    Integer tensors are accepted only as token ids (an integer tensor, or a dict with ``input_ids``
    and possibly other integer entries such as ``attention_mask``); with ``model`` given, its
    ``forward`` must then accept ``inputs_embeds`` (checked again when the input is built).

    Raises:
        TypeError: not a tensor/tuple/list/dict, holds no tensor, holds integer tensors that are not
            token ids, or the model cannot take ``inputs_embeds``.
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
    tokens = token_ids(example_input)
    for tensor in tensors:
        if tokens is None and not torch.is_floating_point(tensor):
            raise TypeError(
                f"`example_input` holds a {tensor.dtype} tensor (token ids or labels?). SynFlow feeds an all-ones "
                f"input, which is meaningless for integer ids: give token ids as a dict with `{TOKENS}` (or one "
                f"integer tensor) to a model whose forward accepts `{EMBEDS}`, " + _WITHOUT_EMBEDS + "."
            )
        if tensor.dim() == 0:
            raise TypeError("`example_input` tensors need a leading batch dimension, e.g. torch.zeros(1, 64).")
    if tokens is not None and model is not None:
        _embeds_width(model)


def ones_batch(example_input: _Example, dtype: torch.dtype, device: torch.device) -> _Example:
    """All-ones input with batch size 1 and the example's per-example shape, in the same kind of container.

    Floating-point tensors become ``dtype``; integer and boolean ones keep their dtype.
    """

    def ones(tensor: torch.Tensor) -> torch.Tensor:
        kind = dtype if torch.is_floating_point(tensor) else tensor.dtype
        return torch.ones((1, *tensor.shape[1:]), dtype=kind, device=device)

    batch: _Example = map_tensors(example_input, ones)
    return batch


def synflow_batch(model: nn.Module, example_input: ExampleInput, dtype: torch.dtype, device: torch.device) -> Any:
    """The all-ones batch (batch size 1) that SynFlow feeds ``model`` for ``example_input``.

    Token ids (an integer tensor, or a dict's ``input_ids``) become ``inputs_embeds`` of ones, shaped
    ``(1, *ids.shape[1:], width)`` with the width of the model's input embedding; the dict's other
    entries stay (ones, integer ones for integer entries such as ``attention_mask``). Anything
    else is :func:`ones_batch`.

    Raises:
        TypeError: token ids, but the model's forward takes no ``inputs_embeds`` or its width is unknown.
    """
    tokens = token_ids(example_input)
    if tokens is None:
        return ones_batch(example_input, dtype, device)
    embeds = torch.ones((1, *tokens.shape[1:], _embeds_width(model)), dtype=dtype, device=device)
    if not isinstance(example_input, Mapping):
        return {EMBEDS: embeds}
    rest = ones_batch({key: value for key, value in example_input.items() if key != TOKENS}, dtype, device)
    return {EMBEDS: embeds, **rest}


def call_on_ones(model: nn.Module, example_input: ExampleInput, dtype: torch.dtype, device: torch.device) -> Any:
    """Run ``model`` on :func:`synflow_batch` (batch size 1) shaped like ``example_input``.

    Raises:
        ExampleInputError: the forward pass failed (it chains the model's error).
        TypeError: token ids for a model that cannot take ``inputs_embeds``.
    """
    inputs = synflow_batch(model, example_input, dtype, device)
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
    """Sum of a model output: of its ``logits`` for a dict-like output that has them, else of every float tensor.

    Hugging Face models return a dict-like output whose ``logits`` are the prediction; its other
    entries (cached keys and values, hidden states, attentions) are not summed.
    """
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        output = output["logits"]
    tensors = [t for t in _iter_tensors(output) if torch.is_floating_point(t)]
    if not tensors:
        raise TypeError("The model returned no floating-point tensor, so SynFlow has no output to sum.")
    return torch.stack([t.sum() for t in tensors]).sum()
