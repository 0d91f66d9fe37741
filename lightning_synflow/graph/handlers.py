"""One handler per kind of operation: what its output's channels are, given its inputs'.

Every handler takes the tracker and the ``torch.fx`` node, and returns what is known about the node's
output. Handlers of :mod:`~lightning_synflow.graph.ops`'s ``"channels"`` entries read their tensor with
:meth:`~lightning_synflow.graph.tracker.ChannelTracker.followed`; the ``"operands"`` and ``"always"``
ones read their arguments themselves. The ``follow_*`` functions are the channel rules several handlers
share.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Callable

import torch
import torch.fx
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from lightning_synflow.graph.kinds import AVG_POOLS
from lightning_synflow.graph.tracker import ChannelTracker
from lightning_synflow.graph.values import ChannelValue, ConsumerSite, NodeValue, NonTensor, Refused, node_shape

#: Methods and attributes that give sizes, dtypes and devices: no tensor comes out.
_META_ATTRIBUTES = {"shape", "dtype", "device", "ndim", "is_cuda"}
_AVG_POOL_FUNCTIONS = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d}
_NUMBERS = (int, float, bool)


def _bind(names: list[str], node: torch.fx.Node) -> dict[str, Any]:
    """A call's arguments by name: the positional ones matched to ``names`` in order, then the keywords."""
    return dict(zip(names, node.args)) | dict(node.kwargs)


def _zero_padded(conv: _ConvNd) -> bool:
    pads = conv._reversed_padding_repeated_twice
    return conv.padding_mode == "zeros" and any(p != 0 for p in pads)


def _absorbable(const: Tensor, k: Tensor, foldable: bool) -> Tensor:
    """Channels a consumer absorbs exactly when removed: constants that are 0, or any when it folds a bias."""
    return const & torch.isfinite(k) & ((k == 0) | foldable)


def _propagate(kept: Tensor, summed: Tensor, bias: Tensor, in_const: Tensor, in_k: Tensor) -> tuple[Tensor, Tensor]:
    """Output channels whose kept weights all read constant inputs are constant: bias + W k."""
    const = ~(kept & ~in_const).any(1)
    k = bias + summed @ in_k
    return const, k


def _single_blocks(value: ChannelValue) -> bool:
    """Whether every channel of ``value`` is one feature (no flatten has merged dimensions into it)."""
    return all(b == 1 for _, b in value.segments or []) and value.scale == 1


# ----------------------------------------------------------------------------------------------- layers


def conv(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """A ``Conv1d/2d/3d`` (``groups=1``): consumes its input's channels, produces a new group."""
    name, module, x = str(node.target), tracker.module(node), tracker.followed(node)
    assert isinstance(module, _ConvNd)
    if module.groups != 1:
        raise Refused(
            f"module {name!r} ({type(module).__name__}) is a grouped convolution (groups={module.groups}): its "
            "channels are coupled by groups, and shrink does not support grouped or depthwise convolutions"
        )
    spatial = len(module.kernel_size)
    kept, summed, bias = tracker.layer(name)
    out, inp = kept.shape
    in_const = torch.zeros(inp, dtype=torch.bool)
    in_k = torch.zeros(inp, dtype=torch.float64)
    batched = x.ndim is None or x.ndim == spatial + 2
    if x.segments is not None:
        dim = tracker.channel_dim(x)
        if dim != (1 if batched else 0) or not _single_blocks(x) or tracker.channels(x) != inp:
            tracker.record_unknown(node, " (its input channels are not the channel dimension followed so far)", [x])
        else:
            assert x.const is not None and x.k is not None
            zero_only = _zero_padded(module)
            absorbable = _absorbable(x.const, x.k, module.bias is not None and not zero_only)
            tracker.sites.append(ConsumerSite(name, list(x.segments), absorbable, x.const, x.k))
            in_const = x.const & torch.isfinite(x.k) & ((x.k == 0) | (not zero_only))
            in_k = torch.where(in_const, x.k, torch.zeros_like(x.k))
    const, k = _propagate(kept, summed, bias, in_const, in_k)
    group = tracker.new_group(name, out)
    ndim = x.ndim if x.ndim is not None else spatial + 2
    return tracker.checked(node, ChannelValue([(group, 1)], dim=1 if batched else 0, ndim=ndim, const=const, k=k))


def linear(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """A ``Linear``: consumes its input's features (channels, or blocks of them after a flatten)."""
    name, module, x = str(node.target), tracker.module(node), tracker.followed(node)
    assert isinstance(module, nn.Linear)
    kept, summed, bias = tracker.layer(name)
    out, inp = kept.shape
    in_const = torch.zeros(inp, dtype=torch.bool)
    in_k = torch.zeros(inp, dtype=torch.float64)
    if x.segments is not None:
        dim = tracker.channel_dim(x)
        last = dim is None or (x.ndim is not None and dim == x.ndim - 1)
        scale = x.scale
        if scale is None:
            total = tracker.features(x, 1)
            scale = module.in_features // total if total and module.in_features % total == 0 else None
        if not last or scale is None or tracker.features(x, scale) != inp:
            tracker.record_unknown(node, " (its input features are not the channels followed so far)", [x])
        else:
            assert x.const is not None and x.k is not None
            segments = [(g, b * scale) for g, b in x.segments]
            repeats = torch.tensor([b for g, b in segments for _ in range(tracker.groups.size[g])])
            absorbable = _absorbable(x.const, x.k, module.bias is not None)
            tracker.sites.append(ConsumerSite(name, segments, absorbable, x.const, x.k))
            in_const = torch.repeat_interleave(x.const & torch.isfinite(x.k), repeats)
            in_k = torch.repeat_interleave(torch.where(x.const, x.k, torch.zeros_like(x.k)), repeats)
            in_k = torch.where(in_const, in_k, torch.zeros_like(in_k))
    const, k = _propagate(kept, summed, bias, in_const, in_k)
    group = tracker.new_group(name, out)
    ndim = x.ndim
    return tracker.checked(
        node, ChannelValue([(group, 1)], dim=None if ndim is None else ndim - 1, ndim=ndim, const=const, k=k)
    )


def batch_norm(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """A ``BatchNorm1d/2d/3d``: normalizes its input's channels, sliced with them."""
    name, module, x = str(node.target), tracker.module(node), tracker.followed(node)
    assert isinstance(module, _BatchNorm)
    if x.segments is None:
        return tracker.opaque(node, [x])
    dim = tracker.channel_dim(x)
    if dim is None:
        return tracker.unknown_use(node, " (the rank of its input is unknown: pass `example_input`)")
    if dim != 1 or not _single_blocks(x) or tracker.channels(x) != module.num_features:
        return tracker.unknown_use(node, " (its features are not the channels followed so far)")
    tracker.norms[name] = list(x.segments)
    assert x.k is not None
    k = x.k
    weight = module.weight.detach().double().cpu() if module.weight is not None else torch.ones_like(k)
    bias = module.bias.detach().double().cpu() if module.bias is not None else torch.zeros_like(k)
    for key, tensor in (("weight", weight), ("bias", bias)):
        mask = tracker.masks.get(f"{name}.{key}")
        if mask is not None and getattr(module, key) is not None:
            tensor.mul_(mask.cpu().double())
    if module.running_mean is not None and module.running_var is not None:
        mean = module.running_mean.detach().double().cpu()
        var = module.running_var.detach().double().cpu()
        k = (k - mean) / torch.sqrt(var + module.eps) * weight + bias
    else:  # batch statistics: a constant channel normalizes to 0
        k = bias.clone()
    return tracker.checked(node, replace(x, k=k))


# ------------------------------------------------------------------------------ channel-wise operations


def follow_elementwise(
    tracker: ChannelTracker, node: torch.fx.Node, x: ChannelValue, fn: Callable[[Tensor], Tensor] | None
) -> NodeValue:
    """Channels pass through ``fn`` one by one; constants go through it too (None: an identity)."""
    if x.segments is None:
        return tracker.opaque(node, [x])
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
    value = tracker.checked(node, replace(x, const=const.clone(), k=k))
    source = node.args[0] if node.args else None
    if inplace and isinstance(source, torch.fx.Node):
        tracker.env[source] = value  # an in-place op (ReLU(inplace=True), relu_): later readers see its result
    return value


def elementwise_module(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """An activation module (``ReLU``, ``GELU``, ...): applied to each channel."""
    return follow_elementwise(tracker, node, tracker.followed(node), tracker.module(node))


def elementwise_call(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """An activation function or method (``F.relu``, ``x.sigmoid()``, ...): applied to each channel."""
    x, target = tracker.followed(node), node.target
    rest, kwargs = node.args[1:], dict(node.kwargs)
    if node.op == "call_method":
        return follow_elementwise(tracker, node, x, lambda k: getattr(k, str(target))(*rest, **kwargs))
    assert callable(target)
    function = target
    return follow_elementwise(tracker, node, x, lambda k: function(k, *rest, **kwargs))


def identity(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """``Identity``, dropout, casts, ``contiguous``: the channels pass unchanged."""
    return follow_elementwise(tracker, node, tracker.followed(node), None)


def follow_pool(
    tracker: ChannelTracker, node: torch.fx.Node, x: ChannelValue, spatial: int, zero_only: bool
) -> NodeValue:
    """Pooling (or resizing) over the last ``spatial`` dimensions; only zero constants stay if ``zero_only``."""
    if x.segments is None:
        return tracker.opaque(node, [x])
    dim = tracker.channel_dim(x)
    if dim is None or x.ndim is None or dim >= x.ndim - spatial or not _single_blocks(x):
        return tracker.unknown_use(node, " (it pools over the channel dimension)")
    assert x.const is not None and x.k is not None
    const = x.const & (x.k == 0) if zero_only else x.const.clone()
    return tracker.checked(node, replace(x, const=const))


def pool_module(tracker: ChannelTracker, node: torch.fx.Node, *, spatial: int) -> NodeValue:
    """A max, average or adaptive pooling module over ``spatial`` dimensions."""
    module, x = tracker.module(node), tracker.followed(node)
    if getattr(module, "return_indices", False):
        return tracker.unknown_use(node, " (a pool returning indices)")
    zero_only = False
    if isinstance(module, AVG_POOLS):
        padding = module.padding if isinstance(module.padding, tuple) else (module.padding,)
        padded = any(p != 0 for p in padding) and module.count_include_pad
        zero_only = padded or getattr(module, "divisor_override", None) is not None
    return follow_pool(tracker, node, x, spatial, zero_only)


def pool_function(tracker: ChannelTracker, node: torch.fx.Node, *, spatial: int) -> NodeValue:
    """A max, average or adaptive pooling function over ``spatial`` dimensions."""
    x = tracker.followed(node)
    if node.kwargs.get("return_indices"):
        return tracker.unknown_use(node, " (a pool returning indices)")
    zero_only = False
    if node.target in _AVG_POOL_FUNCTIONS:
        names = ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"]
        bound = _bind(names, node)
        padding = bound.get("padding", 0)
        padded = any(p != 0 for p in (padding if isinstance(padding, (tuple, list)) else (padding,)))
        zero_only = (padded and bound.get("count_include_pad", True)) or bound.get("divisor_override") is not None
    return follow_pool(tracker, node, x, spatial, zero_only)


def resize(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """``Upsample`` / ``F.interpolate`` over every dimension after the batch and channel ones."""
    x = tracker.followed(node)
    return follow_pool(tracker, node, x, x.ndim - 2 if x.ndim else 1, False)


def follow_flatten(tracker: ChannelTracker, node: torch.fx.Node, x: ChannelValue, start: int, end: int) -> NodeValue:
    """Flattening dimensions ``start`` to ``end``: from the channels to the last, a channel becomes a block."""
    if x.segments is None:
        return tracker.opaque(node, [x])
    dim, ndim = tracker.channel_dim(x), x.ndim
    if dim is None or ndim is None:
        return tracker.unknown_use(node, " (the tensor's rank is unknown; pass `example_input`)")
    start = start + ndim if start < 0 else start
    end = end + ndim if end < 0 else end
    if start > dim:  # flattens dimensions after the channels: they stay where they are
        return tracker.checked(node, replace(x, ndim=ndim - (end - start)))
    if start == dim and end == ndim - 1:
        shape = node_shape(node.args[0]) if isinstance(node.args[0], torch.fx.Node) else None
        if dim == ndim - 1:
            scale = x.scale
        elif shape is not None and x.scale is not None:
            scale = x.scale * math.prod(shape[dim + 1 :])
        else:
            scale = None
        return tracker.checked(node, replace(x, ndim=dim + 1, scale=scale))
    return tracker.unknown_use(node, " (it flattens the channel dimension into another one)")


def flatten_module(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """An ``nn.Flatten``."""
    module = tracker.module(node)
    assert isinstance(module, nn.Flatten)
    return follow_flatten(tracker, node, tracker.followed(node), module.start_dim, module.end_dim)


def flatten_call(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """``torch.flatten`` / ``x.flatten()``."""
    bound = _bind(["input", "start_dim", "end_dim"], node)
    return follow_flatten(tracker, node, tracker.followed(node), bound.get("start_dim", 0), bound.get("end_dim", -1))


def reshape(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """``view`` / ``reshape``: followed when the shapes show a flatten, or dimensions after the channels."""
    x = tracker.followed(node)
    dim = tracker.channel_dim(x)
    source = node.args[0]
    before = node_shape(source) if isinstance(source, torch.fx.Node) else None
    after = node_shape(node)
    if before is not None and after is not None and dim is not None:
        if len(after) == dim + 1 and after[:dim] == before[:dim] and x.scale is not None:
            return tracker.checked(node, replace(x, ndim=dim + 1, scale=x.scale * math.prod(before[dim + 1 :])))
        if after[: dim + 1] == before[: dim + 1]:
            return tracker.checked(node, replace(x, ndim=len(after)))
        return tracker.unknown_use(node, " (it reshapes the channel dimension)")
    shape = node.args[1:]
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if len(shape) == 2 and shape[1] == -1 and dim == 1:  # view(batch, -1): a flatten from dimension 1
        return follow_flatten(tracker, node, x, 1, -1)
    return tracker.unknown_use(node, " (pass `example_input` to follow reshapes)")


def follow_index(tracker: ChannelTracker, node: torch.fx.Node, x: ChannelValue, index: Any) -> NodeValue:
    """``x[:, :, None, None]``-style indexing: full slices and new axes only."""
    items = index if isinstance(index, tuple) else (index,)
    dim = tracker.channel_dim(x)
    whole = slice(None)
    if dim is None or x.ndim is None or not all(i is None or i == whole for i in items):
        return tracker.unknown_use(node, " (only full slices and None are followed in indexing)")
    consumed, position = 0, dim + sum(1 for i in items if i is None)
    for offset, item in enumerate(items):
        if item is not None:
            if consumed == dim:
                position = offset
                break
            consumed += 1
    added = sum(1 for i in items if i is None)
    return tracker.checked(node, replace(x, dim=position, ndim=x.ndim + added))


def getitem(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """``x[...]``."""
    if len(node.args) != 2:
        return tracker.unknown_use(node)
    return follow_index(tracker, node, tracker.followed(node), node.args[1])


def unsqueeze(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """``torch.unsqueeze`` / ``x.unsqueeze()``: indexing with a new axis."""
    x = tracker.followed(node)
    new = _bind(["input", "dim"], node).get("dim")
    if not isinstance(new, int) or x.ndim is None:
        return tracker.unknown_use(node, " (pass `example_input`)")
    new = new + x.ndim + 1 if new < 0 else new
    index = tuple([slice(None)] * new + [None])
    return follow_index(tracker, node, x, index)


def mean(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """``mean`` over dimensions other than the channels."""
    x = tracker.followed(node)
    bound = _bind(["input", "dim", "keepdim"], node)
    dims, keepdim = bound.get("dim"), bound.get("keepdim", False)
    dim, ndim = tracker.channel_dim(x), x.ndim
    if dims is None or dim is None or ndim is None or "dtype" in bound:
        return tracker.unknown_use(node)
    dims = list(dims) if isinstance(dims, (tuple, list)) else [dims]
    if not all(isinstance(d, int) for d in dims):
        return tracker.unknown_use(node)
    dims = [d + ndim if d < 0 else d for d in dims]
    if dim in dims:
        return tracker.unknown_use(node, " (it reduces the channel dimension)")
    if not _single_blocks(x):
        return tracker.unknown_use(node)
    if keepdim:
        return tracker.checked(node, replace(x))
    new_dim = dim - sum(1 for d in dims if d < dim)
    return tracker.checked(node, replace(x, dim=new_dim, ndim=ndim - len(set(dims))))


# ------------------------------------------------------------------------------ several tensors, sizes


def _same_layout(tracker: ChannelTracker, a: ChannelValue, b: ChannelValue) -> bool:
    assert a.segments is not None and b.segments is not None
    if len(a.segments) != len(b.segments) or a.scale != b.scale or a.scale is None:
        return False
    return all(
        tracker.groups.size[ga] == tracker.groups.size[gb] and ba == bb
        for (ga, ba), (gb, bb) in zip(a.segments, b.segments)
    )


def follow_binary(tracker: ChannelTracker, node: torch.fx.Node, operation: Callable[[Any, Any], Any]) -> NodeValue:
    """``a op b`` for ``+ - * /``: two channel tensors tie their channels; a number changes the constants."""
    if len(node.args) < 2:
        return tracker.unknown_use(node)
    a, b = tracker.value(node.args[0]), tracker.value(node.args[1])
    alpha = node.kwargs.get("alpha", 1)
    if len(node.args) > 2 or set(node.kwargs) - {"alpha"} or not isinstance(alpha, (int, float)):
        return tracker.unknown_use(node)
    if isinstance(a, ChannelValue) and a.segments is not None and isinstance(b, _NUMBERS):
        assert a.k is not None
        return tracker.checked(node, replace(a, k=operation(a.k, b * alpha)))
    if isinstance(b, ChannelValue) and b.segments is not None and isinstance(a, _NUMBERS):
        assert b.k is not None
        return tracker.checked(node, replace(b, k=operation(a, b.k * alpha)))
    if isinstance(a, ChannelValue) and isinstance(b, ChannelValue) and (a.segments is None) != (b.segments is None):
        # with a tensor whose channels are not followed (the model's input, ...): keep these channels whole
        followed = a if a.segments is not None else b
        tracker.fix([followed])
        assert followed.const is not None
        return tracker.checked(node, replace(followed, const=torch.zeros_like(followed.const)))
    if not (
        isinstance(a, ChannelValue)
        and isinstance(b, ChannelValue)
        and a.segments is not None
        and b.segments is not None
    ):
        return tracker.unknown_use(node, " (it combines channels with a value that is not a tensor or a number)")
    assert a.const is not None and a.k is not None and b.const is not None and b.k is not None
    da, db = tracker.channel_dim(a), tracker.channel_dim(b)
    if a.ndim is not None and b.ndim is not None and da is not None and db is not None:
        if a.ndim - da != b.ndim - db:
            return tracker.unknown_use(node, " (its operands' channel dimensions are not aligned)")
    ca, cb = tracker.channels(a), tracker.channels(b)
    if ca != cb and 1 in (ca, cb):  # broadcast of a single channel: keep it whole
        one, many = (a, b) if ca == 1 else (b, a)
        tracker.fix([one])
        assert many.const is not None and one.const is not None
        const = many.const & one.const
        return tracker.checked(node, replace(many, const=const, k=operation(a.k, b.k * alpha)))
    if not _same_layout(tracker, a, b):
        return tracker.unknown_use(node, " (its operands' channels are laid out differently)")
    for (ga, _), (gb, _) in zip(a.segments, b.segments):
        tracker.groups.union(ga, gb)
    const = a.const & b.const
    k = operation(a.k, b.k * alpha)
    if operation is operator.mul:  # a constant 0 times anything is the constant 0
        zero = (a.const & (a.k == 0)) | (b.const & (b.k == 0))
        const = const | zero
        k = torch.where(zero, torch.zeros_like(k), k)
    ndim = max(a.ndim or 0, b.ndim or 0) or None
    dim = None if da is None or ndim is None or a.ndim is None else da + (ndim - a.ndim)
    return tracker.checked(node, replace(a, const=const, k=k, ndim=ndim, dim=dim))


def binary(
    tracker: ChannelTracker, node: torch.fx.Node, *, operation: Callable[[Any, Any], Any], inplace: bool = False
) -> NodeValue:
    """``+ - * /`` (and ``torch.add``, ``x.add_()``, ...); an in-place one updates its first operand."""
    result = follow_binary(tracker, node, operation)
    if inplace and isinstance(node.args[0], torch.fx.Node):
        tracker.env[node.args[0]] = result  # later readers of the operand see the updated tensor
    return result


def cat(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """``torch.cat`` along the channel dimension: the groups of every input, in order."""
    names = ["tensors", "dim"]
    bound = _bind(names, node)
    tensors = bound.get("tensors")
    if not isinstance(tensors, (list, tuple)) or set(bound) - set(names):
        return tracker.unknown_use(node)
    values: Sequence[Any] = [tracker.value(t) for t in tensors]
    if not all(isinstance(v, ChannelValue) and v.segments is not None for v in values):
        return tracker.unknown_use(node, " (it concatenates channels with a tensor whose channels are not followed)")
    first = values[0]
    dims = {tracker.channel_dim(v) for v in values}
    ndims = {v.ndim for v in values}
    scales = {v.scale for v in values}
    if len(dims) != 1 or len(ndims) != 1 or None in dims or None in ndims or len(scales) != 1 or None in scales:
        return tracker.unknown_use(node, " (its inputs' channel dimensions differ)")
    dim, ndim = first.dim if first.dim is not None else first.ndim - 1, first.ndim
    cat_dim = bound.get("dim", 0)
    cat_dim = cat_dim + ndim if cat_dim < 0 else cat_dim
    if cat_dim != dim:
        return tracker.unknown_use(node, " (it concatenates along a dimension other than the channels)")
    segments = [s for v in values for s in v.segments]
    const = torch.cat([v.const for v in values])
    k = torch.cat([v.k for v in values])
    return tracker.checked(node, replace(first, segments=segments, const=const, k=k, dim=dim))


def non_tensor(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """``x.size()``, ``x.dim()``, ...: no tensor comes out."""
    return NonTensor()


def attribute(tracker: ChannelTracker, node: torch.fx.Node) -> NodeValue:
    """``getattr(x, name)``: sizes, dtypes and devices give no tensor; any other attribute is not followed."""
    if len(node.args) == 2 and node.args[1] in _META_ATTRIBUTES:
        return NonTensor()
    return tracker.unknown_use(node)
