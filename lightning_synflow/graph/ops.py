"""The table of operations the channel analysis follows, each with its handler.

An operation is a module type (``call_module``), a function (``call_function``: ``F.relu``,
``operator.add``, ...) or a method name (``call_method``: ``"view"``, ...). Supporting a new one is one
entry: ``table.add([target, ...], handler)``, with a handler of :mod:`~lightning_synflow.graph.handlers`
or a new function of the same signature. Any other operation that touches followed channels is
recorded as a use the analysis cannot follow (and the channels are kept, or the caller refuses).

An entry says when its handler is called (``reads``):

- ``"channels"`` (the default, and the only choice for modules): with one tensor argument, the first,
  that carries channels (dispatch checks it; the handler reads it with
  :meth:`~lightning_synflow.graph.tracker.ChannelTracker.followed`), every other argument not a tensor;
- ``"operands"``: whenever some argument carries followed channels; it reads its arguments itself
  (``+``, ``torch.cat``);
- ``"always"``: for every call, channels or not (``x.size()``, ``x.shape``).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Literal, Union

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from lightning_synflow.graph import handlers
from lightning_synflow.graph.kinds import BATCH_NORMS, CONVS
from lightning_synflow.graph.tracker import ChannelTracker
from lightning_synflow.graph.values import NodeValue

#: A handler: what the node's output is, given the tracker (which it may update).
Handler = Callable[[ChannelTracker, torch.fx.Node], NodeValue]
#: When a handler is called (see the module docstring).
Reads = Literal["channels", "operands", "always"]
#: What an entry names: a module type, a function, or a method name.
Target = Union[type[nn.Module], Callable[..., Any], str]


@dataclass(frozen=True)
class Op:
    """One entry of an :class:`OpTable`: the handler, and when it is called."""

    handler: Handler
    reads: Reads = "channels"


class OpTable:
    """Module types, functions and method names, each mapped to its :class:`Op`.

    Example:
        >>> table = default_table()
        >>> table.add([F.softplus], handlers.elementwise_call)
        >>> table.functions[F.softplus].reads
        'channels'
    """

    def __init__(self) -> None:
        self.modules: dict[type[nn.Module], Op] = {}
        self.functions: dict[Callable[..., Any], Op] = {}
        self.methods: dict[str, Op] = {}

    def add(self, targets: Iterable[Target], handler: Handler, reads: Reads = "channels") -> None:
        """Map every one of ``targets`` to ``handler`` (an existing entry is replaced).

        Raises:
            ValueError: a module type with ``reads`` other than ``"channels"``.
        """
        op = Op(handler, reads)
        for target in targets:
            if isinstance(target, str):
                self.methods[target] = op
            elif isinstance(target, type) and issubclass(target, nn.Module):
                if reads != "channels":
                    raise ValueError(f"a module ({target.__name__}) is called on one tensor: reads must be 'channels'")
                self.modules[target] = op
            else:
                self.functions[target] = op

    def for_call(self, node: torch.fx.Node) -> Op | None:
        """The entry for a ``call_function`` or ``call_method`` node, or None."""
        if node.op == "call_method":
            return self.methods.get(str(node.target))
        return self.functions.get(node.target) if callable(node.target) else None


_POOL_MODULES: dict[type[nn.Module], int] = {  # pooling over the last 1, 2 or 3 dimensions
    nn.MaxPool1d: 1,
    nn.MaxPool2d: 2,
    nn.MaxPool3d: 3,
    nn.AvgPool1d: 1,
    nn.AvgPool2d: 2,
    nn.AvgPool3d: 3,
    nn.AdaptiveAvgPool1d: 1,
    nn.AdaptiveAvgPool2d: 2,
    nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1,
    nn.AdaptiveMaxPool2d: 2,
    nn.AdaptiveMaxPool3d: 3,
}
_POOL_FUNCTIONS: dict[Callable[..., Any], int] = {
    F.max_pool1d: 1,
    F.max_pool2d: 2,
    F.max_pool3d: 3,
    F.avg_pool1d: 1,
    F.avg_pool2d: 2,
    F.avg_pool3d: 3,
    F.adaptive_avg_pool1d: 1,
    F.adaptive_avg_pool2d: 2,
    F.adaptive_avg_pool3d: 3,
    F.adaptive_max_pool1d: 1,
    F.adaptive_max_pool2d: 2,
    F.adaptive_max_pool3d: 3,
}
_BINARY: dict[Callable[[Any, Any], Any], tuple[list[Target], list[Target]]] = {  # its targets, then in place
    operator.add: ([operator.add, torch.add, "add"], [operator.iadd, "add_"]),
    operator.sub: ([operator.sub, torch.sub, "sub"], [operator.isub, "sub_"]),
    operator.mul: ([operator.mul, torch.mul, "mul"], [operator.imul, "mul_"]),
    operator.truediv: ([operator.truediv, torch.div, "div"], [operator.itruediv, "div_"]),
}


def default_table() -> OpTable:
    """A new table of every operation the analysis follows out of the box."""
    table = OpTable()
    # Layers: produce channels (output rows) and consume them (input columns); a BatchNorm is sliced with them.
    table.add(CONVS, handlers.conv)
    table.add([nn.Linear], handlers.linear)
    table.add(BATCH_NORMS, handlers.batch_norm)
    # Channel-wise: every channel on its own.
    table.add(
        [nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid]
        + [nn.Mish, nn.Tanh, nn.Sigmoid],
        handlers.elementwise_module,
    )
    table.add(
        [F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.gelu, F.silu, F.elu, F.hardtanh]
        + [F.hardswish, F.hardsigmoid, F.mish, torch.tanh, F.tanh, torch.sigmoid, F.sigmoid]
        + ["relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"],
        handlers.elementwise_call,
    )
    table.add(
        [nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d]
        + [F.dropout, F.dropout1d, F.dropout2d, F.dropout3d]
        + ["contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to", "type_as"],
        handlers.identity,
    )
    for module, spatial in _POOL_MODULES.items():
        table.add([module], partial(handlers.pool_module, spatial=spatial))
    for function, spatial in _POOL_FUNCTIONS.items():
        table.add([function], partial(handlers.pool_function, spatial=spatial))
    table.add([nn.Upsample, F.interpolate], handlers.resize)
    # Shape changes that move the channel dimension or turn channels into blocks of features.
    table.add([nn.Flatten], handlers.flatten_module)
    table.add([torch.flatten, "flatten"], handlers.flatten_call)
    table.add([torch.reshape, "view", "reshape"], handlers.reshape)
    table.add([torch.mean, "mean"], handlers.mean)
    table.add([operator.getitem], handlers.getitem)
    table.add([torch.unsqueeze, "unsqueeze"], handlers.unsqueeze)
    # Several tensors: sums tie channels, products gate them, concatenation lines them up.
    for operation, (plain, inplace) in _BINARY.items():
        table.add(plain, partial(handlers.binary, operation=operation), reads="operands")
        table.add(inplace, partial(handlers.binary, operation=operation, inplace=True), reads="operands")
    table.add([torch.cat, torch.concat], handlers.cat, reads="operands")
    # Sizes, dtypes, devices: no tensor comes out.
    table.add(["size", "dim", "numel", "ndimension"], handlers.non_tensor, reads="always")
    table.add([getattr], handlers.attribute, reads="always")
    return table


#: The table the analysis uses unless given another; ``OPS.add(...)`` extends it for every later analysis.
OPS = default_table()
