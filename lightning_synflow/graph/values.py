"""What the channel analysis knows about one value of the traced graph, and how it names a node."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

import torch.fx
from torch import Tensor, nn
from torch.fx.passes.shape_prop import TensorMetadata


@dataclass
class NonTensor:
    """A non-tensor value derived from tensors (a size, a dtype, ...)."""


@dataclass
class ChannelValue:
    """What the analysis knows about a tensor in the graph.

    ``segments`` lists the channel groups along the channel dimension, in order, each with the number
    of consecutive features per channel (``block``: 1, or H*W after a flatten); None means a tensor
    whose channels are not followed (the model's input, or a fixed tensor). ``dim`` is the channel
    dimension (None: the last one, of an unknown rank). ``scale`` multiplies every block (None: not
    known yet; the consuming Linear resolves it). ``const`` / ``k`` tell, per channel, whether its
    value is an input-independent constant (in eval mode) and which.
    """

    segments: list[tuple[int, int]] | None = None
    dim: int | None = None
    ndim: int | None = None
    scale: int | None = 1
    const: Tensor | None = None
    k: Tensor | None = None


#: What the analysis knows about a node's output.
NodeValue = Union[ChannelValue, NonTensor]


@dataclass
class ConsumerSite:
    """A Conv/Linear layer reading channel groups: its input columns, segment by segment."""

    module: str
    segments: list[tuple[int, int]]  # (group, features per channel)
    absorbable: Tensor  # per channel: a removed channel is exactly absorbed here (bias fold or zero)
    const: Tensor
    k: Tensor


class Refused(ValueError):
    """The graph uses a layer in a way no thinner layer can reproduce (the message says where)."""


def node_shape(node: torch.fx.Node) -> tuple[int, ...] | None:
    """The shape shape propagation recorded for ``node``'s output, or None (not propagated, or not a tensor)."""
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


def describe_node(node: torch.fx.Node, modules: Mapping[str, nn.Module]) -> str:
    """``node`` as an error message names it: its name, and the module, function or method it calls."""
    if node.op == "call_module":
        return f"node {node.name!r} (module {node.target!r}, {type(modules[str(node.target)]).__name__})"
    if node.op == "call_function":
        target = getattr(node.target, "__name__", repr(node.target))
        return f"node {node.name!r} (function {target})"
    if node.op == "call_method":
        return f"node {node.name!r} (method .{node.target}())"
    return f"node {node.name!r} ({node.op} {node.target})"
