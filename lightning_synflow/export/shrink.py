"""``shrink``: a thinner dense network without the channels that carry no flow.

SynFlow (and any pruning method) leaves whole channels with no kept weight coming in or going out.
:func:`plan_shrink` finds them by following the graph that ``torch.fx.symbolic_trace`` records,
:func:`apply_shrink` replaces the layers by thinner ones of the same classes, in place, and
:func:`shrink` does both on a copy.

What is followed:

- ``Conv1d/2d/3d`` (``groups=1``) and ``Linear`` produce channels (their output rows) and consume
  channels (their input columns); ``BatchNorm1d/2d/3d`` is sliced with the channels it normalizes.
- Channel-wise operations pass the channels through: elementwise activations (ReLU, ReLU6,
  LeakyReLU, GELU, SiLU, ELU, Hardtanh, Hardswish, Hardsigmoid, Mish, Tanh, Sigmoid), Identity,
  Dropout, max/average/adaptive pooling, interpolation, ``mean`` over non-channel dimensions, casts
  and ``contiguous``; multiplication and division by numbers.
- ``flatten`` / ``view`` / ``reshape`` after convolutions: channel ``c`` of a ``(N, C, H, W)``
  tensor becomes the contiguous block ``c*H*W ... (c+1)*H*W - 1`` of features of the next Linear.
  The block size comes from shape propagation with the example input, or, without one, from the
  consuming Linear's ``in_features``.
- ``+`` / ``torch.add`` / ``-`` / ``*`` between two channel tensors (residual additions, gating)
  ties the channels of both operands: a tied channel is removed from every branch or from none, so
  a channel survives if any branch needs it. ``torch.cat`` along the channel dimension concatenates.
  Combined with a tensor whose channels are not followed (the model's input, a submodule left whole),
  a channel tensor keeps all its channels. Indexing with full slices and ``None`` (``w[:, :, None]``)
  and ``unsqueeze`` move the channel dimension.

Removal rule: a channel of a group is kept when some consuming layer has a kept weight on it in a
row (output channel) that is itself kept, unless that consumer can absorb the channel as a constant
(below); the model's inputs and the tensors that reach its outputs are never cut. This is iterated
to a fixed point, because removing a channel can leave the channels feeding it unused. A group never
drops to zero channels: one is kept, so no layer becomes empty.

Constant outputs: a channel whose kept incoming weights all come from constant channels (in
particular a channel with no kept incoming weight) does not depend on the input: it outputs a
constant ``k`` (its bias, through BatchNorm in eval mode and the activations that follow). Such
channels are tracked through the graph with their values, and a constant channel is removed when
every consumer that still has a kept weight on it can absorb it exactly: ``k == 0`` there, or the
consumer has a bias and is a Linear or a convolution without zero padding, in which case
``bias[o] += sum(W[o, c]) * k`` is folded in. Otherwise (a constant reaching a bias-free layer, or a
zero-padded convolution, whose border outputs would see the padding instead of the constant) the
channel is kept. So in eval mode the shrunk network computes what the masked one does (up to
rounding). In training mode a BatchNorm normalizes with batch statistics, under which a constant
channel's output is its shift ``beta``, not the eval-mode constant that was folded; at
initialization (zero biases, BatchNorm at its defaults) every constant is 0, nothing is folded, and
the two networks also agree in training mode.

Refused with a ``ValueError`` naming the node or module, never a wrong model: a forward that
``torch.fx`` cannot trace (pass ``exclude=`` naming the submodules to leave whole, or make it
traceable), grouped or depthwise convolutions, any other operation on channels that can be cut
(slicing, ``LayerNorm``, attention, custom functions, ...), a layer called twice, whose weight is
read outside its own call or tied to another layer's, reachable under two names, or with forward
hooks (torch.fx does not trace them).
"""

from __future__ import annotations

import copy
import fnmatch
import math
import operator
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Union

import torch
import torch.fx
from torch import Tensor, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from lightning_synflow.export.sparse_file import apply_masks
from lightning_synflow.pruning.inputs import ones_batch

__all__ = ["ShrinkPlan", "apply_shrink", "count_macs", "plan_shrink", "shrink"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_LAYERS = (*_CONVS, nn.Linear)
_SHRINKABLE = (*_LAYERS, *_NORMS)

_ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
)
_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_POOL_MODULES: dict[type, int] = {
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
_ELEMENTWISE_FUNCTIONS: set[Callable[..., Any]] = {
    F.relu,
    F.relu_,
    torch.relu,
    torch.relu_,
    F.relu6,
    F.leaky_relu,
    F.gelu,
    F.silu,
    F.elu,
    F.hardtanh,
    F.hardswish,
    F.hardsigmoid,
    F.mish,
    torch.tanh,
    F.tanh,
    torch.sigmoid,
    F.sigmoid,
}
_IDENTITY_FUNCTIONS: set[Callable[..., Any]] = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d}
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"}
_IDENTITY_METHODS = {"contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to", "type_as"}
_META_METHODS = {"size", "dim", "numel", "ndimension"}
_META_ATTRIBUTES = {"shape", "dtype", "device", "ndim", "is_cuda"}
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
_AVG_POOL_FUNCTIONS = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d}
_BINARY: dict[Any, str] = {
    operator.add: "add",
    operator.iadd: "add",
    torch.add: "add",
    "add": "add",
    "add_": "add",
    operator.sub: "sub",
    operator.isub: "sub",
    torch.sub: "sub",
    "sub": "sub",
    "sub_": "sub",
    operator.mul: "mul",
    operator.imul: "mul",
    torch.mul: "mul",
    "mul": "mul",
    "mul_": "mul",
    operator.truediv: "div",
    operator.itruediv: "div",
    torch.div: "div",
    "div": "div",
    "div_": "div",
}
_INPLACE_BINARY = {operator.iadd, operator.isub, operator.imul, operator.itruediv, "add_", "sub_", "mul_", "div_"}
_CATS = {torch.cat, torch.concat}
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
}


# ----------------------------------------------------------------------------------------------- plan


@dataclass
class ShrinkPlan:
    """Which channels of which layers a shrink keeps, and the bias corrections that fold removed constants.

    Attributes:
        keep_out: qualified module name -> kept output channels (Conv/Linear rows, BatchNorm features),
            sorted int64 indices into the original layer.
        keep_in: qualified module name -> kept input channels/features (Conv/Linear columns).
        sizes: qualified module name -> the original sizes the plan applies to: ``[out, in]`` for
            Conv/Linear, ``[features]`` for BatchNorm.
        bias_shift: qualified module name -> float64 tensor over the original output channels, added to
            the bias to fold the constant outputs of removed channels (see the module docstring).
        dense_params: parameters of the whole model before shrinking.
        shrunk_params: parameters after shrinking.
        dense_macs: multiply-accumulates of the Conv/Linear layers per example before shrinking, or None
            when the plan was made without an example input.
        shrunk_macs: the same after shrinking, or None.
    """

    keep_out: dict[str, Tensor] = field(default_factory=dict)
    keep_in: dict[str, Tensor] = field(default_factory=dict)
    sizes: dict[str, list[int]] = field(default_factory=dict)
    bias_shift: dict[str, Tensor] = field(default_factory=dict)
    dense_params: int = 0
    shrunk_params: int = 0
    dense_macs: Optional[int] = None
    shrunk_macs: Optional[int] = None

    @property
    def modules(self) -> list[str]:
        """Qualified names of the modules the plan replaces, in the model's order of definition."""
        return list(self.sizes)

    @property
    def macs_fraction(self) -> Optional[float]:
        """Shrunk MACs as a fraction of the dense MACs (None without MAC counts)."""
        if self.dense_macs is None or self.shrunk_macs is None or self.dense_macs == 0:
            return None
        return self.shrunk_macs / self.dense_macs

    @property
    def params_fraction(self) -> float:
        """Shrunk parameter count as a fraction of the dense one."""
        return self.shrunk_params / self.dense_params if self.dense_params else 1.0

    def summary(self) -> str:
        """One line per replaced module: its original and shrunk sizes."""
        lines = []
        for name, sizes in self.sizes.items():
            out = len(self.keep_out[name]) if name in self.keep_out else sizes[0]
            if len(sizes) == 1:
                lines.append(f"{name}: {sizes[0]} -> {out} features")
            else:
                inp = len(self.keep_in[name]) if name in self.keep_in else sizes[1]
                lines.append(f"{name}: out {sizes[0]} -> {out}, in {sizes[1]} -> {inp}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (dicts, lists, ints, strings, tensors): ``torch.load(weights_only=True)`` reads it."""
        return {
            "format": "lightning_synflow.ShrinkPlan",
            "version": 1,
            "keep_out": {name: index.clone() for name, index in self.keep_out.items()},
            "keep_in": {name: index.clone() for name, index in self.keep_in.items()},
            "sizes": {name: list(sizes) for name, sizes in self.sizes.items()},
            "bias_shift": {name: shift.clone() for name, shift in self.bias_shift.items()},
            "dense_params": self.dense_params,
            "shrunk_params": self.shrunk_params,
            "dense_macs": self.dense_macs,
            "shrunk_macs": self.shrunk_macs,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> ShrinkPlan:
        """The plan :meth:`to_dict` wrote.

        Raises:
            ValueError: not a plan written by :meth:`to_dict`.
        """
        if state.get("format") != "lightning_synflow.ShrinkPlan" or state.get("version") != 1:
            raise ValueError(
                "not a ShrinkPlan dictionary (expected 'format': 'lightning_synflow.ShrinkPlan', 'version': 1)"
            )
        return cls(
            keep_out={name: torch.as_tensor(index, dtype=torch.int64) for name, index in state["keep_out"].items()},
            keep_in={name: torch.as_tensor(index, dtype=torch.int64) for name, index in state["keep_in"].items()},
            sizes={name: [int(size) for size in sizes] for name, sizes in state["sizes"].items()},
            bias_shift={name: torch.as_tensor(shift) for name, shift in state["bias_shift"].items()},
            dense_params=int(state["dense_params"]),
            shrunk_params=int(state["shrunk_params"]),
            dense_macs=state["dense_macs"],
            shrunk_macs=state["shrunk_macs"],
        )


# ------------------------------------------------------------------------------------- graph values


@dataclass
class _Meta:
    """A non-tensor value derived from tensors (a size, a dtype, ...)."""


@dataclass
class _Value:
    """What the analysis knows about a tensor in the graph.

    ``segments`` lists the channel groups along the channel dimension, in order, each with the number
    of consecutive features per channel (``block``: 1, or H*W after a flatten); None means a tensor
    whose channels are not followed (the model's input, or a fixed tensor). ``dim`` is the channel
    dimension (None: the last one, of an unknown rank). ``scale`` multiplies every block (None: not
    known yet; the consuming Linear resolves it). ``const`` / ``k`` tell, per channel, whether its
    value is an input-independent constant (in eval mode) and which.
    """

    segments: Optional[list[tuple[int, int]]] = None
    dim: Optional[int] = None
    ndim: Optional[int] = None
    scale: Optional[int] = 1
    const: Optional[Tensor] = None
    k: Optional[Tensor] = None


@dataclass
class _Site:
    """A Conv/Linear layer reading channel groups: its input columns, segment by segment."""

    module: str
    segments: list[tuple[int, int]]  # (group, features per channel)
    absorbable: Tensor  # per channel: a removed channel is exactly absorbed here (bias fold or zero)
    const: Tensor
    k: Tensor


class _Groups:
    """Union-find over channel groups (channels tied by additions are one group)."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.fixed: list[bool] = []

    def new(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.fixed.append(False)
        return len(self.parent) - 1

    def find(self, group: int) -> int:
        while self.parent[group] != group:
            self.parent[group] = self.parent[self.parent[group]]
            group = self.parent[group]
        return group

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.fixed[ra] = self.fixed[ra] or self.fixed[rb]

    def fix(self, group: int) -> None:
        self.fixed[self.find(group)] = True


class _Refused(ValueError):
    pass


def _shape(node: torch.fx.Node) -> Optional[tuple[int, ...]]:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


def _describe(node: torch.fx.Node, modules: Mapping[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"node {node.name!r} (module {node.target!r}, {type(modules[str(node.target)]).__name__})"
    if node.op == "call_function":
        target = getattr(node.target, "__name__", repr(node.target))
        return f"node {node.name!r} (function {target})"
    if node.op == "call_method":
        return f"node {node.name!r} (method .{node.target}())"
    return f"node {node.name!r} ({node.op} {node.target})"


def _zero_padded(conv: _ConvNd) -> bool:
    pads = conv._reversed_padding_repeated_twice
    return conv.padding_mode == "zeros" and any(p != 0 for p in pads)


def _bind(names: list[str], node: torch.fx.Node) -> dict[str, Any]:
    """A call's arguments by name: the positional ones matched to ``names`` in order, then the keywords."""
    return dict(zip(names, node.args)) | dict(node.kwargs)


class _Analysis:
    """One pass over the traced graph: channel groups, their producers and consumers, and constants."""

    def __init__(
        self,
        model: nn.Module,
        graph: torch.fx.Graph,
        masks: Mapping[str, Tensor],
        excluded: set[str],
        shapes: bool,
    ) -> None:
        self.model = model
        self.graph = graph
        self.masks = masks
        self.excluded = excluded
        self.shapes = shapes
        self.modules = dict(model.named_modules())
        self.groups = _Groups()
        self.producers: dict[str, int] = {}  # module -> output group
        self.sites: list[_Site] = []
        self.norms: dict[str, list[tuple[int, int]]] = {}
        self.unknown: list[tuple[str, str, list[int]]] = []  # (node, why, groups touched)
        self.pinned: dict[str, str] = {}  # module -> node reading its tensors outside its call
        self.calls: Counter[str] = Counter()
        self.env: dict[torch.fx.Node, Any] = {}
        self.owner: dict[int, str] = {}  # producer group -> module, for messages
        self._cache: dict[str, tuple[Tensor, Tensor, Tensor]] = {}

    # ---- helpers

    def channels(self, value: _Value) -> int:
        assert value.segments is not None
        return sum(self.groups.size[g] for g, _ in value.segments)

    def features(self, value: _Value, scale: int) -> int:
        assert value.segments is not None
        return sum(self.groups.size[g] * b * scale for g, b in value.segments)

    def layer(self, name: str) -> tuple[Tensor, Tensor, Tensor]:
        """Kept-weight pattern (out, in) of a Conv/Linear, its masked weight summed over the kernel, its bias."""
        if name not in self._cache:
            module = self.modules[name]
            assert isinstance(module, _LAYERS)
            weight = module.weight.detach()
            mask = self.masks.get(f"{name}.weight")
            if mask is None:  # no mask: every weight is kept
                mask = torch.ones_like(weight, dtype=torch.bool)
            mask = mask.to(device=weight.device, dtype=torch.bool)
            out, inp = weight.shape[0], weight.shape[1]
            kept = mask.reshape(out, inp, -1).any(-1).cpu()
            summed = (weight * mask).double().reshape(out, inp, -1).sum(-1).cpu()
            bias = torch.zeros(out, dtype=torch.float64)
            if module.bias is not None:
                bias_mask = self.masks.get(f"{name}.bias")
                b = module.bias.detach()
                if bias_mask is not None:
                    b = b * bias_mask.to(device=b.device, dtype=b.dtype)
                bias = b.double().cpu()
            self._cache[name] = (kept, summed, bias)
        return self._cache[name]

    def value(self, arg: Any) -> Any:
        return self.env[arg] if isinstance(arg, torch.fx.Node) else arg

    def groups_of(self, values: Sequence[Any]) -> list[int]:
        return [g for v in values if isinstance(v, _Value) and v.segments is not None for g, _ in v.segments]

    def inputs(self, node: torch.fx.Node) -> list[Any]:
        found: list[torch.fx.Node] = []
        torch.fx.node.map_arg((node.args, node.kwargs), found.append)
        return [self.env[n] for n in found]

    def opaque(self, node: torch.fx.Node, values: Sequence[Any]) -> Any:
        shape = _shape(node)
        if shape is not None:
            return _Value(ndim=len(shape))
        if node.meta.get("tensor_meta") is None and self.shapes:
            return _Meta()
        if any(isinstance(v, _Value) for v in values):
            return _Value()
        return _Meta()

    def unknown_use(self, node: torch.fx.Node, why: str = "") -> Any:
        values = self.inputs(node)
        groups = self.groups_of(values)
        if groups:
            self.unknown.append((_describe(node, self.modules), why, groups))
        return self.opaque(node, values)

    def fix(self, values: Sequence[Any]) -> None:
        for g in self.groups_of(values):
            self.groups.fix(g)

    def checked(self, node: torch.fx.Node, value: _Value) -> _Value:
        """Fill the rank from the propagated shape and check the channel count against it."""
        shape = _shape(node)
        if shape is None or value.segments is None:
            if shape is not None:
                value.ndim = len(shape)
            return value
        value.ndim = len(shape)
        if value.dim is None:
            value.dim = len(shape) - 1
        if value.dim >= len(shape):
            raise _Refused(f"{_describe(node, self.modules)}: channel dimension {value.dim} of a {shape} tensor")
        if value.scale is None:
            value.scale = shape[value.dim] // max(1, self.features(value, 1))
        if shape[value.dim] != self.features(value, value.scale):
            raise _Refused(
                f"{_describe(node, self.modules)}: expected {self.features(value, value.scale)} features along "
                f"dimension {value.dim} of its {shape} output; shrink cannot follow this graph"
            )
        return value

    def channel_dim(self, value: _Value) -> Optional[int]:
        if value.dim is not None:
            return value.dim
        return None if value.ndim is None else value.ndim - 1

    def new_group(self, name: str, size: int) -> int:
        group = self.groups.new(size)
        self.producers[name] = group
        self.owner[group] = name
        return group

    # ---- the pass

    def run(self) -> None:
        for node in self.graph.nodes:
            if node.op == "placeholder":
                shape = _shape(node)
                self.env[node] = _Value(ndim=None if shape is None else len(shape))
            elif node.op == "get_attr":
                owner = str(node.target).rpartition(".")[0]
                if isinstance(self.modules.get(owner), _SHRINKABLE):
                    self.pinned.setdefault(owner, node.name)
                self.env[node] = self.opaque(node, [_Value()])
            elif node.op == "call_module":
                self.env[node] = self.call_module(node)
            elif node.op in ("call_function", "call_method"):
                self.env[node] = self.call(node)
            elif node.op == "output":
                self.fix(self.inputs(node))

    def call_module(self, node: torch.fx.Node) -> Any:
        name = str(node.target)
        module = self.modules[name]
        if name in self.excluded:
            values = self.inputs(node)
            self.fix(values)
            return self.opaque(node, values)
        kind = type(module)
        x = self.value(node.args[0]) if node.args else None
        if kind in _SHRINKABLE:
            self.calls[name] += 1
            if self.calls[name] > 1:
                raise _Refused(
                    f"module {name!r} ({kind.__name__}) is called more than once in forward; shrink cannot slice a "
                    "shared layer"
                )
        if not isinstance(x, _Value) or len(node.args) != 1 or node.kwargs:
            return self.unknown_use(node)
        if kind in _CONVS:
            assert isinstance(module, _ConvNd)
            return self.conv(node, name, module, x)
        if kind is nn.Linear:
            assert isinstance(module, nn.Linear)
            return self.linear(node, name, module, x)
        if kind in _NORMS:
            assert isinstance(module, _BatchNorm)
            return self.norm(node, name, module, x)
        if kind in _ELEMENTWISE_MODULES:
            return self.elementwise(node, x, module)
        if kind in _IDENTITY_MODULES:
            return self.elementwise(node, x, None)
        if kind in _POOL_MODULES:
            if getattr(module, "return_indices", False):
                return self.unknown_use(node, " (a pool returning indices)")
            zero_only = False
            if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
                padding = module.padding if isinstance(module.padding, tuple) else (module.padding,)
                padded = any(p != 0 for p in padding) and module.count_include_pad
                zero_only = padded or getattr(module, "divisor_override", None) is not None
            return self.pool(node, x, _POOL_MODULES[kind], zero_only)
        if kind is nn.Upsample:
            return self.pool(node, x, x.ndim - 2 if x.ndim else 1, False)
        if kind is nn.Flatten:
            assert isinstance(module, nn.Flatten)
            return self.flatten(node, x, module.start_dim, module.end_dim)
        return self.unknown_use(node)

    def call(self, node: torch.fx.Node) -> Any:
        target = node.target
        method = node.op == "call_method"
        values = self.inputs(node)
        if method and target in _META_METHODS:
            return _Meta()
        if target is getattr and len(node.args) == 2 and node.args[1] in _META_ATTRIBUTES:
            return _Meta()
        if not self.groups_of(values):
            # Nothing here carries channels that can be cut: sizes, opaque tensors, constants.
            return self.opaque(node, values)
        x = self.value(node.args[0]) if node.args else None
        if target in _BINARY:
            result = self.binary(node, _BINARY[target])
            if target in _INPLACE_BINARY and isinstance(node.args[0], torch.fx.Node):
                self.env[node.args[0]] = result  # later readers of the operand see the updated tensor
            return result
        if target in _CATS:
            return self.cat(node)
        if not isinstance(x, _Value):
            return self.unknown_use(node)
        others = [self.value(a) for a in node.args[1:]] + [self.value(v) for v in node.kwargs.values()]
        if any(isinstance(v, _Value) for v in others):
            return self.unknown_use(node)
        if (not method and target in _ELEMENTWISE_FUNCTIONS) or (method and target in _ELEMENTWISE_METHODS):
            rest, kwargs = node.args[1:], dict(node.kwargs)
            if method:
                return self.elementwise(node, x, lambda k: getattr(k, str(target))(*rest, **kwargs))
            assert callable(target)
            function = target
            return self.elementwise(node, x, lambda k: function(k, *rest, **kwargs))
        if (not method and target in _IDENTITY_FUNCTIONS) or (method and target in _IDENTITY_METHODS):
            return self.elementwise(node, x, None)
        if not method and target in _POOL_FUNCTIONS:
            if node.kwargs.get("return_indices"):
                return self.unknown_use(node, " (a pool returning indices)")
            zero_only = False
            if target in _AVG_POOL_FUNCTIONS:
                names = [
                    "input",
                    "kernel_size",
                    "stride",
                    "padding",
                    "ceil_mode",
                    "count_include_pad",
                    "divisor_override",
                ]
                bound = _bind(names, node)
                padding = bound.get("padding", 0)
                padded = any(p != 0 for p in (padding if isinstance(padding, (tuple, list)) else (padding,)))
                zero_only = (padded and bound.get("count_include_pad", True)) or bound.get(
                    "divisor_override"
                ) is not None
            return self.pool(node, x, _POOL_FUNCTIONS[target], zero_only)
        if not method and target is F.interpolate:
            return self.pool(node, x, x.ndim - 2 if x.ndim else 1, False)
        if (not method and target is torch.flatten) or (method and target == "flatten"):
            bound = _bind(["input", "start_dim", "end_dim"], node)
            return self.flatten(node, x, bound.get("start_dim", 0), bound.get("end_dim", -1))
        if (method and target in ("view", "reshape")) or (not method and target is torch.reshape):
            return self.reshape(node, x)
        if (method and target == "mean") or (not method and target is torch.mean):
            return self.mean(node, x)
        if not method and target is operator.getitem and len(node.args) == 2:
            return self.index(node, x, node.args[1])
        if (method and target == "unsqueeze") or (not method and target is torch.unsqueeze):
            new = _bind(["input", "dim"], node).get("dim")
            if not isinstance(new, int) or x.ndim is None:
                return self.unknown_use(node, " (pass `example_input`)")
            new = new + x.ndim + 1 if new < 0 else new
            index = tuple([slice(None)] * new + [None])
            return self.index(node, x, index)
        return self.unknown_use(node)

    # ---- layers

    def conv(self, node: torch.fx.Node, name: str, module: _ConvNd, x: _Value) -> Any:
        if module.groups != 1:
            raise _Refused(
                f"module {name!r} ({type(module).__name__}) is a grouped convolution (groups={module.groups}): its "
                "channels are coupled by groups, and shrink does not support grouped or depthwise convolutions"
            )
        spatial = len(module.kernel_size)
        kept, summed, bias = self.layer(name)
        out, inp = kept.shape
        in_const = torch.zeros(inp, dtype=torch.bool)
        in_k = torch.zeros(inp, dtype=torch.float64)
        batched = x.ndim is None or x.ndim == spatial + 2
        if x.segments is not None:
            dim = self.channel_dim(x)
            blocks = all(b == 1 for _, b in x.segments) and x.scale == 1
            if dim != (1 if batched else 0) or not blocks or self.channels(x) != inp:
                why = " (its input channels are not the channel dimension followed so far)"
                self.unknown.append((_describe(node, self.modules), why, self.groups_of([x])))
            else:
                assert x.const is not None and x.k is not None
                zero_only = _zero_padded(module)
                absorbable = self.absorbable(x.const, x.k, module.bias is not None and not zero_only)
                self.sites.append(_Site(name, list(x.segments), absorbable, x.const, x.k))
                in_const = x.const & torch.isfinite(x.k) & ((x.k == 0) | (not zero_only))
                in_k = torch.where(in_const, x.k, torch.zeros_like(x.k))
        const, k = self.propagate(kept, summed, bias, in_const, in_k)
        group = self.new_group(name, out)
        ndim = x.ndim if x.ndim is not None else spatial + 2
        return self.checked(node, _Value([(group, 1)], dim=1 if batched else 0, ndim=ndim, const=const, k=k))

    def linear(self, node: torch.fx.Node, name: str, module: nn.Linear, x: _Value) -> Any:
        kept, summed, bias = self.layer(name)
        out, inp = kept.shape
        in_const = torch.zeros(inp, dtype=torch.bool)
        in_k = torch.zeros(inp, dtype=torch.float64)
        if x.segments is not None:
            dim = self.channel_dim(x)
            last = dim is None or (x.ndim is not None and dim == x.ndim - 1)
            scale = x.scale
            if scale is None:
                total = self.features(x, 1)
                scale = module.in_features // total if total and module.in_features % total == 0 else None
            if not last or scale is None or self.features(x, scale) != inp:
                why = " (its input features are not the channels followed so far)"
                self.unknown.append((_describe(node, self.modules), why, self.groups_of([x])))
            else:
                assert x.const is not None and x.k is not None
                segments = [(g, b * scale) for g, b in x.segments]
                repeats = torch.tensor([b for g, b in segments for _ in range(self.groups.size[g])])
                absorbable = self.absorbable(x.const, x.k, module.bias is not None)
                self.sites.append(_Site(name, segments, absorbable, x.const, x.k))
                in_const = torch.repeat_interleave(x.const & torch.isfinite(x.k), repeats)
                in_k = torch.repeat_interleave(torch.where(x.const, x.k, torch.zeros_like(x.k)), repeats)
                in_k = torch.where(in_const, in_k, torch.zeros_like(in_k))
        const, k = self.propagate(kept, summed, bias, in_const, in_k)
        group = self.new_group(name, out)
        ndim = x.ndim
        return self.checked(
            node, _Value([(group, 1)], dim=None if ndim is None else ndim - 1, ndim=ndim, const=const, k=k)
        )

    @staticmethod
    def absorbable(const: Tensor, k: Tensor, foldable: bool) -> Tensor:
        return const & torch.isfinite(k) & ((k == 0) | foldable)

    @staticmethod
    def propagate(kept: Tensor, summed: Tensor, bias: Tensor, in_const: Tensor, in_k: Tensor) -> tuple[Tensor, Tensor]:
        """Output channels whose kept weights all read constant inputs are constant: bias + W k."""
        const = ~(kept & ~in_const).any(1)
        k = bias + summed @ in_k
        return const, k

    def norm(self, node: torch.fx.Node, name: str, module: _BatchNorm, x: _Value) -> Any:
        if x.segments is None:
            return self.opaque(node, [x])
        dim = self.channel_dim(x)
        blocks = all(b == 1 for _, b in x.segments) and x.scale == 1
        if dim is None:
            return self.unknown_use(node, " (the rank of its input is unknown: pass `example_input`)")
        if dim != 1 or not blocks or self.channels(x) != module.num_features:
            return self.unknown_use(node, " (its features are not the channels followed so far)")
        self.norms[name] = list(x.segments)
        assert x.k is not None
        k = x.k
        weight = module.weight.detach().double().cpu() if module.weight is not None else torch.ones_like(k)
        bias = module.bias.detach().double().cpu() if module.bias is not None else torch.zeros_like(k)
        for key, tensor in (("weight", weight), ("bias", bias)):
            mask = self.masks.get(f"{name}.{key}")
            if mask is not None and getattr(module, key) is not None:
                tensor.mul_(mask.cpu().double())
        if module.running_mean is not None and module.running_var is not None:
            mean = module.running_mean.detach().double().cpu()
            var = module.running_var.detach().double().cpu()
            k = (k - mean) / torch.sqrt(var + module.eps) * weight + bias
        else:  # batch statistics: a constant channel normalizes to 0
            k = bias.clone()
        return self.checked(node, replace(x, k=k))

    # ---- channel-wise operations

    def elementwise(self, node: torch.fx.Node, x: _Value, fn: Optional[Callable[[Tensor], Tensor]]) -> Any:
        if x.segments is None:
            return self.opaque(node, [x])
        assert x.const is not None and x.k is not None
        const, k = x.const, x.k
        inplace = False
        if fn is not None:
            probe = x.k.clone()
            try:
                with torch.no_grad():
                    k = fn(probe)
                if not isinstance(k, Tensor) or k.shape != x.k.shape:
                    raise TypeError
                inplace = k.data_ptr() == probe.data_ptr()
                k = k.double().clone()
            except Exception:  # noqa: BLE001 - an unevaluable constant is just not treated as constant
                const, k, inplace = torch.zeros_like(x.const), torch.zeros_like(x.k), True
        value = self.checked(node, replace(x, const=const.clone(), k=k))
        source = node.args[0] if node.args else None
        if inplace and isinstance(source, torch.fx.Node):
            self.env[source] = value  # an in-place op (ReLU(inplace=True), relu_): later readers see its result
        return value

    def pool(self, node: torch.fx.Node, x: _Value, spatial: int, zero_only: bool) -> Any:
        if x.segments is None:
            return self.opaque(node, [x])
        dim = self.channel_dim(x)
        blocks = all(b == 1 for _, b in x.segments) and x.scale == 1
        if dim is None or x.ndim is None or dim >= x.ndim - spatial or not blocks:
            return self.unknown_use(node, " (it pools over the channel dimension)")
        assert x.const is not None and x.k is not None
        const = x.const & (x.k == 0) if zero_only else x.const.clone()
        return self.checked(node, replace(x, const=const))

    def flatten(self, node: torch.fx.Node, x: _Value, start: int, end: int) -> Any:
        if x.segments is None:
            return self.opaque(node, [x])
        dim, ndim = self.channel_dim(x), x.ndim
        if dim is None or ndim is None:
            return self.unknown_use(node, " (the tensor's rank is unknown; pass `example_input`)")
        start = start + ndim if start < 0 else start
        end = end + ndim if end < 0 else end
        if start > dim:  # flattens dimensions after the channels: they stay where they are
            return self.checked(node, replace(x, ndim=ndim - (end - start)))
        if start == dim and end == ndim - 1:
            shape = _shape(node.args[0]) if isinstance(node.args[0], torch.fx.Node) else None
            if dim == ndim - 1:
                scale = x.scale
            elif shape is not None and x.scale is not None:
                scale = x.scale * math.prod(shape[dim + 1 :])
            else:
                scale = None
            return self.checked(node, replace(x, ndim=dim + 1, scale=scale))
        return self.unknown_use(node, " (it flattens the channel dimension into another one)")

    def reshape(self, node: torch.fx.Node, x: _Value) -> Any:
        dim = self.channel_dim(x)
        source = node.args[0]
        before = _shape(source) if isinstance(source, torch.fx.Node) else None
        after = _shape(node)
        if before is not None and after is not None and dim is not None:
            if len(after) == dim + 1 and after[:dim] == before[:dim] and x.scale is not None:
                return self.checked(node, replace(x, ndim=dim + 1, scale=x.scale * math.prod(before[dim + 1 :])))
            if after[: dim + 1] == before[: dim + 1]:
                return self.checked(node, replace(x, ndim=len(after)))
            return self.unknown_use(node, " (it reshapes the channel dimension)")
        shape = node.args[1:]
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if len(shape) == 2 and shape[1] == -1 and dim == 1:  # view(batch, -1): a flatten from dimension 1
            return self.flatten(node, x, 1, -1)
        return self.unknown_use(node, " (pass `example_input` to follow reshapes)")

    def index(self, node: torch.fx.Node, x: _Value, index: Any) -> Any:
        """``x[:, :, None, None]``-style indexing: full slices and new axes only."""
        items = index if isinstance(index, tuple) else (index,)
        dim = self.channel_dim(x)
        whole = slice(None)
        if dim is None or x.ndim is None or not all(i is None or i == whole for i in items):
            return self.unknown_use(node, " (only full slices and None are followed in indexing)")
        consumed, position = 0, dim + sum(1 for i in items if i is None)
        for offset, item in enumerate(items):
            if item is not None:
                if consumed == dim:
                    position = offset
                    break
                consumed += 1
        added = sum(1 for i in items if i is None)
        return self.checked(node, replace(x, dim=position, ndim=x.ndim + added))

    def mean(self, node: torch.fx.Node, x: _Value) -> Any:
        bound = _bind(["input", "dim", "keepdim"], node)
        dims, keepdim = bound.get("dim"), bound.get("keepdim", False)
        dim, ndim = self.channel_dim(x), x.ndim
        if dims is None or dim is None or ndim is None or "dtype" in bound:
            return self.unknown_use(node)
        dims = list(dims) if isinstance(dims, (tuple, list)) else [dims]
        if not all(isinstance(d, int) for d in dims):
            return self.unknown_use(node)
        dims = [d + ndim if d < 0 else d for d in dims]
        if dim in dims:
            return self.unknown_use(node, " (it reduces the channel dimension)")
        blocks = all(b == 1 for _, b in x.segments or []) and x.scale == 1
        if not blocks:
            return self.unknown_use(node)
        if keepdim:
            return self.checked(node, replace(x))
        new_dim = dim - sum(1 for d in dims if d < dim)
        return self.checked(node, replace(x, dim=new_dim, ndim=ndim - len(set(dims))))

    def binary(self, node: torch.fx.Node, op: str) -> Any:
        if len(node.args) < 2:
            return self.unknown_use(node)
        a, b = self.value(node.args[0]), self.value(node.args[1])
        alpha = node.kwargs.get("alpha", 1)
        if len(node.args) > 2 or set(node.kwargs) - {"alpha"} or not isinstance(alpha, (int, float)):
            return self.unknown_use(node)
        fn = _OPS[op]
        numbers = (int, float, bool)
        if isinstance(a, _Value) and a.segments is not None and isinstance(b, numbers):
            assert a.k is not None
            return self.checked(node, replace(a, k=fn(a.k, b * alpha)))
        if isinstance(b, _Value) and b.segments is not None and isinstance(a, numbers):
            assert b.k is not None
            return self.checked(node, replace(b, k=fn(a, b.k * alpha)))
        if isinstance(a, _Value) and isinstance(b, _Value) and (a.segments is None) != (b.segments is None):
            # with a tensor whose channels are not followed (the model's input, ...): keep these channels whole
            followed = a if a.segments is not None else b
            self.fix([followed])
            assert followed.const is not None
            return self.checked(node, replace(followed, const=torch.zeros_like(followed.const)))
        if not (isinstance(a, _Value) and isinstance(b, _Value) and a.segments is not None and b.segments is not None):
            return self.unknown_use(node, " (it combines channels with a value that is not a tensor or a number)")
        assert a.const is not None and a.k is not None and b.const is not None and b.k is not None
        da, db = self.channel_dim(a), self.channel_dim(b)
        if a.ndim is not None and b.ndim is not None and da is not None and db is not None:
            if a.ndim - da != b.ndim - db:
                return self.unknown_use(node, " (its operands' channel dimensions are not aligned)")
        ca, cb = self.channels(a), self.channels(b)
        if ca != cb and 1 in (ca, cb):  # broadcast of a single channel: keep it whole
            one, many = (a, b) if ca == 1 else (b, a)
            self.fix([one])
            assert many.const is not None and one.const is not None
            const = many.const & one.const
            ka, kb = (a.k, b.k * alpha)
            return self.checked(node, replace(many, const=const, k=fn(ka, kb)))
        if not self.same_layout(a, b):
            return self.unknown_use(node, " (its operands' channels are laid out differently)")
        for (ga, _), (gb, _) in zip(a.segments, b.segments):
            self.groups.union(ga, gb)
        const = a.const & b.const
        k = fn(a.k, b.k * alpha)
        if op == "mul":  # a constant 0 times anything is the constant 0
            zero = (a.const & (a.k == 0)) | (b.const & (b.k == 0))
            const = const | zero
            k = torch.where(zero, torch.zeros_like(k), k)
        ndim = max(a.ndim or 0, b.ndim or 0) or None
        dim = None if da is None or ndim is None or a.ndim is None else da + (ndim - a.ndim)
        return self.checked(node, replace(a, const=const, k=k, ndim=ndim, dim=dim))

    def same_layout(self, a: _Value, b: _Value) -> bool:
        assert a.segments is not None and b.segments is not None
        if len(a.segments) != len(b.segments) or a.scale != b.scale or a.scale is None:
            return False
        return all(
            self.groups.size[ga] == self.groups.size[gb] and ba == bb
            for (ga, ba), (gb, bb) in zip(a.segments, b.segments)
        )

    def cat(self, node: torch.fx.Node) -> Any:
        names = ["tensors", "dim"]
        bound = _bind(names, node)
        tensors = bound.get("tensors")
        if not isinstance(tensors, (list, tuple)) or set(bound) - set(names):
            return self.unknown_use(node)
        values = [self.value(t) for t in tensors]
        if not all(isinstance(v, _Value) and v.segments is not None for v in values):
            return self.unknown_use(node, " (it concatenates channels with a tensor whose channels are not followed)")
        first = values[0]
        dims = {self.channel_dim(v) for v in values}
        ndims = {v.ndim for v in values}
        scales = {v.scale for v in values}
        if len(dims) != 1 or len(ndims) != 1 or None in dims or None in ndims or len(scales) != 1 or None in scales:
            return self.unknown_use(node, " (its inputs' channel dimensions differ)")
        dim, ndim = first.dim if first.dim is not None else first.ndim - 1, first.ndim
        cat_dim = bound.get("dim", 0)
        cat_dim = cat_dim + ndim if cat_dim < 0 else cat_dim
        if cat_dim != dim:
            return self.unknown_use(node, " (it concatenates along a dimension other than the channels)")
        segments = [s for v in values for s in v.segments]
        const = torch.cat([v.const for v in values])
        k = torch.cat([v.k for v in values])
        return self.checked(node, replace(first, segments=segments, const=const, k=k, dim=dim))


# ---------------------------------------------------------------------------------------- planning


def _trace(model: nn.Module, excluded: set[str]) -> torch.fx.GraphModule:
    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
            return qualified_name in excluded or super().is_leaf_module(module, qualified_name)

    tracer = Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as error:
        raise ValueError(
            f"torch.fx cannot trace {type(model).__name__}.forward ({type(error).__name__}: {error}). shrink follows "
            "the graph torch.fx records: make forward traceable (no Python control flow on tensor values), or pass "
            "exclude=[...] naming the submodules that are not traceable (they are then left whole)."
        ) from error
    return torch.fx.GraphModule(tracer.root, graph)


def _excluded(model: nn.Module, exclude: Union[str, Sequence[str], None]) -> set[str]:
    if exclude is None:
        return set()
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    if not all(isinstance(p, str) for p in patterns):
        raise TypeError(
            f"`exclude` must be a glob pattern or a list of glob patterns over module names, got {exclude!r}"
        )
    names = [name for name, _ in model.named_modules() if name]
    excluded: set[str] = set()
    for pattern in patterns:
        matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise ValueError(f"`exclude` pattern {pattern!r} matches no submodule of {type(model).__name__}")
        excluded.update(matched)
    # a submodule inside an excluded one is traced as part of it
    return {name for name in excluded if not any(name.startswith(other + ".") for other in excluded)}


def _check_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    params = dict(model.named_parameters())
    checked = {}
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"mask {name!r} names no parameter of {type(model).__name__} (named_parameters() names)")
        if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(params[name].shape):
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask {name!r} has shape {shape}, its parameter {tuple(params[name].shape)}")
        checked[name] = mask.to(torch.bool)
    return checked


def _propagate_shapes(gm: torch.fx.GraphModule, model: nn.Module, example_input: Any) -> dict[str, int]:
    """Run the traced graph once on an all-ones batch of one (eval mode, no grad) to record every shape.

    Returns:
        Output positions per example of each Conv/Linear layer (summed over calls), for MAC counts.
    """
    parameter = next(iter(model.parameters()), None)
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    device = parameter.device if parameter is not None else torch.device("cpu")
    batch = ones_batch(example_input, dtype, device)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    args: list[Any]
    if isinstance(batch, Mapping):
        args = []
        for node in placeholders:
            if node.target in batch:
                args.append(batch[node.target])
            elif node.args:
                args.append(node.args[0])
            else:
                raise ValueError(f"`example_input` has no entry for forward's argument {node.target!r}")
    elif isinstance(batch, (tuple, list)):
        args = list(batch)
    else:
        args = [batch]
    positions: Counter[str] = Counter()
    names = {module: name for name, module in model.named_modules()}

    def count(module: nn.Module, inputs: Any, output: Tensor) -> None:
        channels = output.shape[-1] if isinstance(module, nn.Linear) else output.shape[1]
        positions[names[module]] += output.numel() // max(1, channels)

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, _LAYERS)]
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            ShapeProp(gm).propagate(*args)
    except Exception as error:
        raise ValueError(
            f"the traced {type(model).__name__} failed on an input shaped like `example_input` "
            f"({type(error).__name__}: {error})"
        ) from error
    finally:
        for module, mode in modes.items():
            module.training = mode
        for handle in handles:
            handle.remove()
    return dict(positions)


def _check_structure(model: nn.Module, analysis: _Analysis, changed: set[str]) -> None:
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), []).append(f"{name}.{pname}" if name else pname)
    for name in sorted(changed):
        module = analysis.modules[name]
        if len(names[id(module)]) > 1:
            raise ValueError(
                f"module {name!r} ({type(module).__name__}) is reachable under several names {names[id(module)]}; "
                "shrink cannot replace a shared layer"
            )
        for param in module.parameters(recurse=False):
            if len(owners[id(param)]) > 1:
                raise ValueError(
                    f"module {name!r} shares a parameter with {owners[id(param)]}; shrink cannot slice tied weights"
                )
        if name in analysis.pinned:
            raise ValueError(
                f"module {name!r} ({type(module).__name__}) has its tensors read outside its own call (node "
                f"{analysis.pinned[name]!r}); shrink cannot follow that use"
            )
        if module._forward_hooks or module._forward_pre_hooks:
            raise ValueError(
                f"module {name!r} ({type(module).__name__}) has forward hooks, which torch.fx does not trace and a "
                "thinner copy would not carry; remove them before shrinking, or exclude the module"
            )


def plan_shrink(
    model: nn.Module,
    masks: Optional[Mapping[str, Tensor]] = None,
    example_input: Any = None,
    *,
    exclude: Union[str, Sequence[str], None] = None,
) -> ShrinkPlan:
    """Decide which channels of ``model``'s Conv/Linear/BatchNorm layers carry no flow and can go.

    The rules (what is followed, the constant-output rule, what is refused) are in the module docstring
    of :mod:`lightning_synflow.export.shrink`. Nothing in ``model`` changes.

    Args:
        model: the masked network (a plain ``nn.Module`` or a ``LightningModule``); its forward must be
            traceable by ``torch.fx.symbolic_trace`` (apart from excluded submodules).
        masks: boolean masks (True = kept) keyed by ``named_parameters()`` name, as
            :func:`lightning_synflow.prune` returns; parameters without a mask count as fully kept.
            None: the exact zeros of every Conv/Linear weight are the pruned entries.
        example_input: a tensor, tuple or dict shaped like a batch (only its shape is used): shapes are
            propagated through flatten/reshape with it, and MACs counted. Default: the model's
            ``example_input_array`` if it has one; without either, flatten block sizes are inferred from
            the consuming Linear and the plan has no MAC counts.
        exclude: glob patterns over submodule names to leave whole: torch.fx does not trace into them
            (so they may hold untraceable code), and every channel they read or write is kept.

    Returns:
        The plan; empty (``plan.modules == []``) when nothing can be removed.

    Raises:
        ValueError: the forward cannot be traced, or uses channels in a way shrink cannot follow (the
            message names the node or module), or masks that do not match the model's parameters.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> with torch.no_grad():
        ...     _ = net[0].weight[2:].zero_()
        >>> plan = plan_shrink(net)
        >>> plan.keep_out["0"].tolist()
        [0, 1]
    """
    excluded = _excluded(model, exclude)
    masks = _check_masks(model, masks) if masks is not None else {}
    if example_input is None:
        example_input = getattr(model, "example_input_array", None)
    gm = _trace(model, excluded)
    positions = _propagate_shapes(gm, model, example_input) if example_input is not None else None
    if not masks:
        masks = {
            f"{name}.weight": module.weight.detach() != 0
            for name, module in model.named_modules()
            if isinstance(module, _LAYERS)
        }
    analysis = _Analysis(model, gm.graph, masks, excluded, shapes=positions is not None)
    try:
        analysis.run()
    except _Refused as error:
        raise ValueError(f"shrink refuses {type(model).__name__}: {error}") from None
    groups = analysis.groups
    for description, why, touched in analysis.unknown:
        loose = [g for g in touched if not groups.fixed[groups.find(g)]]
        if loose:
            producers = sorted(
                {
                    analysis.owner[g]
                    for g in range(len(groups.parent))
                    if groups.find(g) in {groups.find(x) for x in loose}
                }
            )
            raise ValueError(
                f"shrink refuses {type(model).__name__}: {description} uses the channels produced by {producers} in a "
                f"way shrink cannot follow{why}. Make that part of the model use supported operations, or pass "
                "exclude=[...] naming a submodule around it (its channels are then kept)."
            )
    removed = _fixed_point(analysis)
    return _build_plan(model, analysis, removed, positions)


def _fixed_point(analysis: _Analysis) -> dict[int, Tensor]:
    """Channels removed per root group: repeat 'kept where some kept row still needs it' until stable."""
    groups = analysis.groups
    roots = sorted({groups.find(g) for g in range(len(groups.parent))})
    removed = {root: torch.zeros(groups.size[root], dtype=torch.bool) for root in roots}
    uses: dict[int, list[tuple[_Site, int, int, int, int]]] = {root: [] for root in roots}
    for site in analysis.sites:
        column, channel = 0, 0
        for group, block in site.segments:
            size = groups.size[group]
            uses[groups.find(group)].append((site, column, channel, size, block))
            column += size * block
            channel += size
    out_root = {name: groups.find(group) for name, group in analysis.producers.items()}
    loose = [root for root in roots if not groups.fixed[root]]
    changed = True
    while changed:
        changed = False
        for root in loose:
            need = torch.zeros(groups.size[root], dtype=torch.bool)
            for site, column, channel, size, block in uses[root]:
                kept, _, _ = analysis.layer(site.module)
                rows = ~removed[out_root[site.module]] if site.module in out_root else slice(None)
                used = kept[rows].any(0)[column : column + size * block].reshape(size, block).any(1)
                need |= used & ~site.absorbable[channel : channel + size]
            if not need.any():  # never empty a layer: keep one channel still kept
                need[int(torch.nonzero(~removed[root])[0])] = True
            now = ~need
            if not torch.equal(now, removed[root]):
                removed[root] = now
                changed = True
    return removed


def _build_plan(
    model: nn.Module, analysis: _Analysis, removed: dict[int, Tensor], positions: Optional[dict[str, int]]
) -> ShrinkPlan:
    groups = analysis.groups

    def kept_channels(segments: list[tuple[int, int]]) -> Tensor:
        parts = [(~removed[groups.find(g)]).repeat_interleave(b) for g, b in segments]
        return torch.cat(parts)

    keep_out: dict[str, Tensor] = {}
    keep_in: dict[str, Tensor] = {}
    for name, group in analysis.producers.items():
        alive = ~removed[groups.find(group)]
        if not alive.all():
            keep_out[name] = torch.nonzero(alive).flatten()
    shifts: dict[str, Tensor] = {}
    for site in analysis.sites:
        alive = kept_channels(site.segments)
        if not alive.all():
            keep_in[site.module] = torch.nonzero(alive).flatten()
        # fold the constants of removed channels that kept weights still read
        drop = torch.cat([removed[groups.find(g)] for g, _ in site.segments])
        fold = drop & site.const & (site.k != 0)
        if fold.any():
            _, summed, _ = analysis.layer(site.module)
            repeats = torch.tensor([b for g, b in site.segments for _ in range(groups.size[g])])
            columns = torch.repeat_interleave(torch.where(fold, site.k, torch.zeros_like(site.k)), repeats)
            shift = summed @ columns
            if site.module in analysis.producers:
                shift[removed[groups.find(analysis.producers[site.module])]] = 0
            if not shift.any():
                continue
            if analysis.modules[site.module].bias is None:  # cannot happen: only a bias absorbs a constant
                raise AssertionError(f"shrink planned a bias fold into {site.module!r}, which has no bias")
            shifts[site.module] = shifts.get(site.module, torch.zeros_like(shift)) + shift
    for name, segments in analysis.norms.items():
        alive = kept_channels(segments)
        if not alive.all():
            keep_out[name] = torch.nonzero(alive).flatten()
    plan = ShrinkPlan()
    changed = set(keep_out) | set(keep_in)
    _check_structure(model, analysis, changed)
    for name, module in model.named_modules():
        if name not in changed:
            continue
        plan.sizes[name] = _sizes(module)
        if name in keep_out:
            plan.keep_out[name] = keep_out[name]
        if name in keep_in:
            plan.keep_in[name] = keep_in[name]
        if name in shifts:
            plan.bias_shift[name] = shifts[name]
    plan.dense_params = sum(p.numel() for p in model.parameters())
    plan.shrunk_params = plan.dense_params - sum(
        _param_count(analysis.modules[name]) - _param_count(analysis.modules[name], plan, name) for name in plan.sizes
    )
    if positions is not None:
        plan.dense_macs = plan.shrunk_macs = 0
        for name, count in positions.items():
            module = analysis.modules[name]
            weight = module.weight
            dense = weight.numel() // (weight.shape[0] * weight.shape[1])
            out = len(plan.keep_out[name]) if name in plan.keep_out else weight.shape[0]
            inp = len(plan.keep_in[name]) if name in plan.keep_in else weight.shape[1]
            plan.dense_macs += count * weight.numel()
            plan.shrunk_macs += count * out * inp * dense
    return plan


def _sizes(module: nn.Module) -> list[int]:
    if isinstance(module, _NORMS):
        return [module.num_features]
    assert isinstance(module, _LAYERS)
    return [int(module.weight.shape[0]), int(module.weight.shape[1])]


def _param_count(module: nn.Module, plan: Optional[ShrinkPlan] = None, name: str = "") -> int:
    if plan is None:
        return sum(p.numel() for p in module.parameters(recurse=False))
    sizes = plan.sizes[name]
    out = len(plan.keep_out[name]) if name in plan.keep_out else sizes[0]
    if isinstance(module, _NORMS):
        return out * sum(p is not None for p in (module.weight, module.bias))
    assert isinstance(module, _LAYERS)
    inp = len(plan.keep_in[name]) if name in plan.keep_in else sizes[1]
    kernel = module.weight[0, 0].numel()
    return out * inp * kernel + (out if module.bias is not None else 0)


# ---------------------------------------------------------------------------------------- applying


def _index(tensor: Tensor, dim: int, index: Optional[Tensor]) -> Tensor:
    return tensor if index is None else tensor.index_select(dim, index.to(tensor.device))


def _thinner(module: nn.Module, name: str, plan: ShrinkPlan) -> nn.Module:
    out = plan.keep_out.get(name)
    if isinstance(module, _NORMS):
        new = _thinner_norm(module, out)
    else:
        assert isinstance(module, _LAYERS)
        new = _thinner_layer(module, name, plan, out, plan.keep_in.get(name))
    new.train(module.training)
    return new


def _thinner_norm(module: _BatchNorm, out: Optional[Tensor]) -> nn.Module:
    """A BatchNorm over the kept channels ``out`` (all when None); affine or not, with running statistics or not."""
    reference = module.weight if module.weight is not None else module.running_mean
    dtype = reference.dtype if reference is not None else torch.get_default_dtype()
    size = len(out) if out is not None else module.num_features
    new = type(module)(
        size,
        eps=module.eps,
        momentum=module.momentum,
        affine=module.affine,
        track_running_stats=module.track_running_stats,
        device="meta",
        dtype=dtype,
    )
    for key in ("weight", "bias"):  # an affine BatchNorm may have a weight and no bias (torch >= 2.13)
        param = getattr(module, key)
        if param is not None:
            setattr(new, key, nn.Parameter(_index(param.detach(), 0, out).clone(), param.requires_grad))
        elif getattr(new, key) is not None:
            new.register_parameter(key, None)
    for key in ("running_mean", "running_var"):
        buffer = getattr(module, key)
        if buffer is not None:
            setattr(new, key, _index(buffer, 0, out).clone())
    if module.num_batches_tracked is not None:
        new.num_batches_tracked = module.num_batches_tracked.clone()
    return new


def _thinner_layer(
    module: Union[nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d],
    name: str,
    plan: ShrinkPlan,
    out: Optional[Tensor],
    inp: Optional[Tensor],
) -> nn.Module:
    """A Linear or Conv with the kept output channels ``out`` and input channels ``inp`` (all when None)."""
    weight = module.weight
    memory = (
        torch.channels_last
        if weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
        else torch.contiguous_format
    )
    out_size = len(out) if out is not None else weight.shape[0]
    in_size = len(inp) if inp is not None else weight.shape[1]
    new: Union[nn.Linear, _ConvNd]
    if isinstance(module, nn.Linear):
        new = nn.Linear(in_size, out_size, bias=module.bias is not None, device="meta", dtype=weight.dtype)
    else:
        # The layer's own settings, as the stubs type them (tuple[int, ...]) rather than the constructor does.
        geometry: dict[str, Any] = {
            "kernel_size": module.kernel_size,
            "stride": module.stride,
            "padding": module.padding,
            "dilation": module.dilation,
        }
        new = type(module)(
            in_size,
            out_size,
            groups=1,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
            device="meta",
            dtype=weight.dtype,
            **geometry,
        )
    values = _index(_index(weight.detach(), 0, out), 1, inp).contiguous(memory_format=memory)
    new.weight = nn.Parameter(values.clone(), weight.requires_grad)
    if module.bias is not None:
        bias = _index(module.bias.detach(), 0, out).clone()
        shift = plan.bias_shift.get(name)
        if shift is not None:
            bias += _index(shift.to(bias.device), 0, out).to(bias.dtype)
        new.bias = nn.Parameter(bias, module.bias.requires_grad)
    elif name in plan.bias_shift:
        raise ValueError(f"the plan folds constants into the bias of {name!r}, which has none")
    return new


def apply_shrink(model: nn.Module, plan: ShrinkPlan, masks: Optional[Mapping[str, Tensor]] = None) -> dict[str, Tensor]:
    """Replace, in place, every layer the plan names by a thinner one of the same class.

    Each affected ``Conv1d/2d/3d``, ``Linear`` and ``BatchNorm1d/2d/3d`` is replaced (``setattr`` on its
    parent) by a new module of the same class and settings holding the kept slices of its weight,
    bias and running statistics; the bias receives the plan's folded constants. ``model`` itself,
    its class and forward stay the same object. Values are sliced as they are: the pruned entries
    should already be zero (``prune()`` zeroes them). Optimizers holding the old parameters must be
    rebuilt; forward hooks on the replaced modules are not carried over.

    It also works on a freshly built model of the same architecture, to give it the structure of a
    shrunk one before loading a shrunk checkpoint (the values then come from the checkpoint).

    Args:
        model: the model the plan was made for, or a fresh one of the same architecture.
        plan: from :func:`plan_shrink` (or :meth:`ShrinkPlan.from_dict`).
        masks: masks keyed by parameter name to slice along (any subset of the parameters).

    Returns:
        The masks sliced to the new shapes (same keys; untouched masks returned as they are); ``{}``
        when ``masks`` is None.

    Raises:
        ValueError: a module the plan names is missing, of another type, or of other sizes than the
            plan was made for (already shrunk?), or a mask does not match its parameter.
    """
    modules = dict(model.named_modules())
    for name in plan.modules:
        module = modules.get(name)
        if module is None or not name:
            raise ValueError(f"the shrink plan names module {name!r}, which {type(model).__name__} does not have")
        if type(module) not in _SHRINKABLE:
            raise ValueError(
                f"the shrink plan names {name!r}, a {type(module).__name__}; only "
                f"{[t.__name__ for t in _SHRINKABLE]} can be shrunk"
            )
        if _sizes(module) != list(plan.sizes[name]):
            raise ValueError(
                f"module {name!r} has sizes {_sizes(module)}, the shrink plan was made for {plan.sizes[name]} "
                "(is the model already shrunk, or of another architecture?)"
            )
    checked = _check_masks(model, masks) if masks is not None else {}
    sliced: dict[str, Tensor] = {}
    if masks is not None:
        sliced = {name: masks[name] for name in masks}
    with torch.no_grad():
        for name in plan.modules:
            module = modules[name]
            new = _thinner(module, name, plan)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, new)
            out, inp = plan.keep_out.get(name), plan.keep_in.get(name)
            for key in ("weight", "bias"):
                qualified = f"{name}.{key}"
                if qualified in checked:
                    mask = _index(checked[qualified], 0, out)
                    if key == "weight" and not isinstance(module, _NORMS):
                        mask = _index(mask, 1, inp)
                    sliced[qualified] = mask.clone()
    return sliced


def shrink(
    model: nn.Module,
    masks: Optional[Mapping[str, Tensor]] = None,
    example_input: Any = None,
    *,
    exclude: Union[str, Sequence[str], None] = None,
) -> nn.Module:
    """A thinner dense copy of ``model`` without the channels that carry no flow; ``model`` is untouched.

    The copy's weights are masked by ``masks`` first, then :func:`plan_shrink` and :func:`apply_shrink`
    run on it. In eval mode the copy computes what the masked model does.

    Args:
        model: the pruned network.
        masks: boolean masks (True = kept) keyed by parameter name; None: the zeros of the Conv/Linear
            weights.
        example_input: a batch-shaped tensor, tuple or dict (see :func:`plan_shrink`).
        exclude: glob patterns over submodule names to leave whole (see :func:`plan_shrink`).

    Returns:
        The thinner copy (same class).

    Example:
        >>> from lightning_synflow import prune
        >>> net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
        >>> masks = prune(net, compression=100, example_input=torch.zeros(1, 16), iterations=10)
        >>> thin = shrink(net, masks)
        >>> thin[2].weight.shape[0] < 64
        True
    """
    copied = copy.deepcopy(model)
    checked = _check_masks(copied, masks) if masks is not None else None
    if checked:
        apply_masks(copied, checked)
    plan = plan_shrink(copied, checked, example_input, exclude=exclude)
    apply_shrink(copied, plan)
    return copied


def count_macs(model: nn.Module, example_input: Any) -> int:
    """Multiply-accumulates of the Conv/Linear layers of ``model`` for one example (batch of one, eval mode).

    The same count as :func:`lightning_synflow.report.count_macs`.
    """
    from lightning_synflow.report import count_macs as report_count_macs

    return report_count_macs(model, example_input)
