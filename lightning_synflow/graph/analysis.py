"""Trace a model with ``torch.fx`` and follow its channels node by node, through the table of operations."""

from __future__ import annotations

from collections.abc import Mapping

import torch.fx
from torch import Tensor, nn

from lightning_synflow.graph.kinds import RESIZABLE
from lightning_synflow.graph.ops import OPS, OpTable
from lightning_synflow.graph.tracker import ChannelTracker
from lightning_synflow.graph.values import ChannelValue, NodeValue, Refused, node_shape


def trace(model: nn.Module, leaves: set[str]) -> torch.fx.GraphModule:
    """``model`` traced by ``torch.fx``, the submodules named in ``leaves`` called whole (not traced into).

    Raises:
        Exception: whatever ``torch.fx`` raises on a forward it cannot trace.
    """

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
            return qualified_name in leaves or super().is_leaf_module(module, qualified_name)

    tracer = Tracer()
    graph = tracer.trace(model)
    return torch.fx.GraphModule(tracer.root, graph)


def follow_channels(
    model: nn.Module,
    graph: torch.fx.Graph,
    masks: Mapping[str, Tensor],
    excluded: set[str],
    shapes: bool,
    table: OpTable = OPS,
) -> ChannelTracker:
    """One pass over ``graph`` (traced from ``model``): its channel groups, producers, consumers and constants.

    Args:
        model: the traced model.
        graph: its graph; with ``shapes``, shape propagation has run on it.
        masks: boolean masks (True = kept) by parameter name.
        excluded: submodules left whole: every channel they read is kept.
        shapes: whether the nodes hold propagated shapes.
        table: the operations followed (default: :data:`~lightning_synflow.graph.ops.OPS`).

    Returns:
        What the pass learned; ``tracker.unknown`` lists the uses of channels it could not follow.

    Raises:
        Refused: a layer is used in a way no thinner layer can reproduce (called twice, grouped, ...).
    """
    tracker = ChannelTracker(model, masks, excluded, shapes)
    for node in graph.nodes:
        if node.op == "placeholder":
            shape = node_shape(node)
            tracker.env[node] = ChannelValue(ndim=None if shape is None else len(shape))
        elif node.op == "get_attr":
            owner = str(node.target).rpartition(".")[0]
            if isinstance(tracker.modules.get(owner), RESIZABLE):
                tracker.pinned.setdefault(owner, node.name)
            tracker.env[node] = tracker.opaque(node, [ChannelValue()])
        elif node.op == "call_module":
            tracker.env[node] = _call_module(tracker, node, table)
        elif node.op in ("call_function", "call_method"):
            tracker.env[node] = _call(tracker, node, table)
        elif node.op == "output":
            tracker.fix(tracker.inputs(node))
    return tracker


def _call_module(tracker: ChannelTracker, node: torch.fx.Node, table: OpTable) -> NodeValue:
    name = str(node.target)
    module = tracker.modules[name]
    if name in tracker.excluded:
        values = tracker.inputs(node)
        tracker.fix(values)
        return tracker.opaque(node, values)
    kind = type(module)
    if kind in RESIZABLE:
        tracker.calls[name] += 1
        if tracker.calls[name] > 1:
            raise Refused(
                f"module {name!r} ({kind.__name__}) is called more than once in forward; shrink cannot slice a "
                "shared layer"
            )
    op = table.modules.get(kind)
    x = tracker.value(node.args[0]) if node.args else None
    if op is None or not isinstance(x, ChannelValue) or len(node.args) != 1 or node.kwargs:
        return tracker.unknown_use(node)
    return op.handler(tracker, node)


def _call(tracker: ChannelTracker, node: torch.fx.Node, table: OpTable) -> NodeValue:
    op = table.for_call(node)
    if op is not None and op.reads == "always":
        return op.handler(tracker, node)
    values = tracker.inputs(node)
    if not tracker.groups_of(values):
        # Nothing here carries channels that can be cut: sizes, opaque tensors, constants.
        return tracker.opaque(node, values)
    if op is not None and op.reads == "operands":
        return op.handler(tracker, node)
    x = tracker.value(node.args[0]) if node.args else None
    others = [tracker.value(a) for a in node.args[1:]] + [tracker.value(v) for v in node.kwargs.values()]
    if op is None or not isinstance(x, ChannelValue) or any(isinstance(v, ChannelValue) for v in others):
        return tracker.unknown_use(node)
    return op.handler(tracker, node)
