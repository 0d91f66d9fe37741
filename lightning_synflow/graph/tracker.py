"""What a pass over the traced graph has learned, and the helpers every operation's handler shares."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.fx
from torch import Tensor, nn

from lightning_synflow.graph.groups import ChannelGroups
from lightning_synflow.graph.kinds import LINEAR_AND_CONVS
from lightning_synflow.graph.values import (
    ChannelValue,
    ConsumerSite,
    NodeValue,
    NonTensor,
    Refused,
    describe_node,
    node_shape,
)


class ChannelTracker:
    """Channel groups, their producers and consumers, and constants, as the pass finds them.

    Attributes:
        modules: the model's modules by qualified name.
        masks: boolean masks (True = kept) by parameter name; a Conv/Linear weight without one is all kept.
        excluded: qualified names of the submodules left whole (their channels are kept).
        shapes: whether shapes were propagated through the graph (``node.meta["tensor_meta"]``).
        groups: the channel groups and how they are tied.
        producers: Conv/Linear module -> the group of its output channels.
        sites: every Conv/Linear that reads followed channels, and which.
        norms: BatchNorm module -> the channel groups it normalizes.
        unknown: uses of channels the analysis cannot follow: (node, why, groups touched); such groups
            must be kept whole.
        pinned: module -> a node that reads its tensors outside its own call.
        calls: how many times each sliceable layer is called.
        env: what is known about each node's output so far.
        owner: producer group -> its module, for messages.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, Tensor], excluded: set[str], shapes: bool) -> None:
        self.modules: dict[str, nn.Module] = dict(model.named_modules())
        self.masks = masks
        self.excluded = excluded
        self.shapes = shapes
        self.groups = ChannelGroups()
        self.producers: dict[str, int] = {}
        self.sites: list[ConsumerSite] = []
        self.norms: dict[str, list[tuple[int, int]]] = {}
        self.unknown: list[tuple[str, str, list[int]]] = []
        self.pinned: dict[str, str] = {}
        self.calls: Counter[str] = Counter()
        self.env: dict[torch.fx.Node, NodeValue] = {}
        self.owner: dict[int, str] = {}
        self._layers: dict[str, tuple[Tensor, Tensor, Tensor]] = {}

    # ---- sizes

    def channels(self, value: ChannelValue) -> int:
        """The number of channels ``value`` carries (it must be followed)."""
        assert value.segments is not None
        return sum(self.groups.size[g] for g, _ in value.segments)

    def features(self, value: ChannelValue, scale: int) -> int:
        """The number of features along ``value``'s channel dimension, with blocks multiplied by ``scale``."""
        assert value.segments is not None
        return sum(self.groups.size[g] * b * scale for g, b in value.segments)

    def channel_dim(self, value: ChannelValue) -> int | None:
        """``value``'s channel dimension: its own, else the last of a known rank, else None."""
        if value.dim is not None:
            return value.dim
        return None if value.ndim is None else value.ndim - 1

    def layer(self, name: str) -> tuple[Tensor, Tensor, Tensor]:
        """Kept-weight pattern (out, in) of a Conv/Linear, its masked weight summed over the kernel, its bias."""
        if name not in self._layers:
            module = self.modules[name]
            assert isinstance(module, LINEAR_AND_CONVS)
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
            self._layers[name] = (kept, summed, bias)
        return self._layers[name]

    # ---- the graph's values

    def value(self, arg: Any) -> Any:
        """What is known about a node's output; any other argument as it is."""
        return self.env[arg] if isinstance(arg, torch.fx.Node) else arg

    def module(self, node: torch.fx.Node) -> nn.Module:
        """The module a ``call_module`` node calls."""
        return self.modules[str(node.target)]

    def followed(self, node: torch.fx.Node) -> ChannelValue:
        """The first argument of a call, which dispatch has checked is a tensor."""
        value = self.value(node.args[0])
        assert isinstance(value, ChannelValue)
        return value

    def inputs(self, node: torch.fx.Node) -> list[NodeValue]:
        """What is known about every node among ``node``'s arguments."""
        found: list[torch.fx.Node] = []
        torch.fx.node.map_arg((node.args, node.kwargs), found.append)
        return [self.env[n] for n in found]

    def groups_of(self, values: Sequence[Any]) -> list[int]:
        """The channel groups ``values`` carry."""
        return [g for v in values if isinstance(v, ChannelValue) and v.segments is not None for g, _ in v.segments]

    def new_group(self, name: str, size: int) -> int:
        """A new group of ``size`` channels, the output of module ``name``."""
        group = self.groups.new(size)
        self.producers[name] = group
        self.owner[group] = name
        return group

    # ---- results of a node

    def opaque(self, node: torch.fx.Node, values: Sequence[Any]) -> NodeValue:
        """``node``'s output as a value whose channels are not followed."""
        shape = node_shape(node)
        if shape is not None:
            return ChannelValue(ndim=len(shape))
        if node.meta.get("tensor_meta") is None and self.shapes:
            return NonTensor()
        if any(isinstance(v, ChannelValue) for v in values):
            return ChannelValue()
        return NonTensor()

    def record_unknown(self, node: torch.fx.Node, why: str, values: Sequence[Any]) -> None:
        """Record that ``node`` uses the channels ``values`` carry in a way not followed (``why``: a hint)."""
        groups = self.groups_of(values)
        if groups:
            self.unknown.append((describe_node(node, self.modules), why, groups))

    def unknown_use(self, node: torch.fx.Node, why: str = "") -> NodeValue:
        """Record that ``node`` uses the channels it reads in a way not followed; its output is opaque."""
        values = self.inputs(node)
        self.record_unknown(node, why, values)
        return self.opaque(node, values)

    def fix(self, values: Sequence[Any]) -> None:
        """Keep every channel ``values`` carry."""
        for g in self.groups_of(values):
            self.groups.fix(g)

    def checked(self, node: torch.fx.Node, value: ChannelValue) -> ChannelValue:
        """Fill the rank from the propagated shape and check the channel count against it.

        Raises:
            Refused: the propagated shape does not have the features the analysis expects.
        """
        shape = node_shape(node)
        if shape is None or value.segments is None:
            if shape is not None:
                value.ndim = len(shape)
            return value
        value.ndim = len(shape)
        if value.dim is None:
            value.dim = len(shape) - 1
        if value.dim >= len(shape):
            raise Refused(f"{describe_node(node, self.modules)}: channel dimension {value.dim} of a {shape} tensor")
        if value.scale is None:
            value.scale = shape[value.dim] // max(1, self.features(value, 1))
        if shape[value.dim] != self.features(value, value.scale):
            raise Refused(
                f"{describe_node(node, self.modules)}: expected {self.features(value, value.scale)} features along "
                f"dimension {value.dim} of its {shape} output; shrink cannot follow this graph"
            )
        return value
