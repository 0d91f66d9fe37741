"""Which channels a shrink removes: :class:`ShrinkPlan` and :func:`plan_shrink`.

The rules are in :mod:`lightning_synflow.export.shrink`; the channels are followed by ``lightning_synflow.graph``.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch import Tensor, nn
from torch.fx.passes.shape_prop import ShapeProp

from lightning_synflow.graph.analysis import follow_channels, trace
from lightning_synflow.graph.kinds import BATCH_NORMS, LINEAR_AND_CONVS
from lightning_synflow.graph.tracker import ChannelTracker
from lightning_synflow.graph.values import ConsumerSite, Refused
from lightning_synflow.pruning.inputs import ones_batch

__all__ = ["ShrinkPlan", "plan_shrink"]


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
            the bias to fold the constant outputs of removed channels (see :mod:`lightning_synflow.export.shrink`).
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
    dense_macs: int | None = None
    shrunk_macs: int | None = None

    @property
    def modules(self) -> list[str]:
        """Qualified names of the modules the plan replaces, in the model's order of definition."""
        return list(self.sizes)

    @property
    def macs_fraction(self) -> float | None:
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


def plan_shrink(
    model: nn.Module,
    masks: Mapping[str, Tensor] | None = None,
    example_input: Any = None,
    *,
    exclude: str | Sequence[str] | None = None,
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
    masks = check_masks(model, masks) if masks is not None else {}
    if example_input is None:
        example_input = getattr(model, "example_input_array", None)
    gm = _trace(model, excluded)
    positions = _propagate_shapes(gm, model, example_input) if example_input is not None else None
    if not masks:
        masks = {
            f"{name}.weight": module.weight.detach() != 0
            for name, module in model.named_modules()
            if isinstance(module, LINEAR_AND_CONVS)
        }
    try:
        tracker = follow_channels(model, gm.graph, masks, excluded, shapes=positions is not None)
    except Refused as error:
        raise ValueError(f"shrink refuses {type(model).__name__}: {error}") from None
    _refuse_unknown_uses(model, tracker)
    removed = _fixed_point(tracker)
    return _build_plan(model, tracker, removed, positions)


def _excluded(model: nn.Module, exclude: str | Sequence[str] | None) -> set[str]:
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


def _trace(model: nn.Module, excluded: set[str]) -> torch.fx.GraphModule:
    try:
        return trace(model, excluded)
    except Exception as error:
        raise ValueError(
            f"torch.fx cannot trace {type(model).__name__}.forward ({type(error).__name__}: {error}). shrink follows "
            "the graph torch.fx records: make forward traceable (no Python control flow on tensor values), or pass "
            "exclude=[...] naming the submodules that are not traceable (they are then left whole)."
        ) from error


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

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, LINEAR_AND_CONVS)]
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


def _refuse_unknown_uses(model: nn.Module, tracker: ChannelTracker) -> None:
    """Refuse a model where an operation the analysis cannot follow reads channels that could be cut."""
    groups = tracker.groups
    for description, why, touched in tracker.unknown:
        loose = [g for g in touched if not groups.fixed[groups.find(g)]]
        if loose:
            producers = sorted(
                {
                    tracker.owner[g]
                    for g in range(len(groups.parent))
                    if groups.find(g) in {groups.find(x) for x in loose}
                }
            )
            raise ValueError(
                f"shrink refuses {type(model).__name__}: {description} uses the channels produced by {producers} in a "
                f"way shrink cannot follow{why}. Make that part of the model use supported operations, or pass "
                "exclude=[...] naming a submodule around it (its channels are then kept)."
            )


def _fixed_point(tracker: ChannelTracker) -> dict[int, Tensor]:
    """Channels removed per root group: repeat 'kept where some kept row still needs it' until stable."""
    groups = tracker.groups
    roots = sorted({groups.find(g) for g in range(len(groups.parent))})
    removed = {root: torch.zeros(groups.size[root], dtype=torch.bool) for root in roots}
    uses: dict[int, list[tuple[ConsumerSite, int, int, int, int]]] = {root: [] for root in roots}
    for site in tracker.sites:
        column, channel = 0, 0
        for group, block in site.segments:
            size = groups.size[group]
            uses[groups.find(group)].append((site, column, channel, size, block))
            column += size * block
            channel += size
    out_root = {name: groups.find(group) for name, group in tracker.producers.items()}
    loose = [root for root in roots if not groups.fixed[root]]
    changed = True
    while changed:
        changed = False
        for root in loose:
            need = torch.zeros(groups.size[root], dtype=torch.bool)
            for site, column, channel, size, block in uses[root]:
                kept, _, _ = tracker.layer(site.module)
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
    model: nn.Module, tracker: ChannelTracker, removed: dict[int, Tensor], positions: dict[str, int] | None
) -> ShrinkPlan:
    groups = tracker.groups

    def kept_channels(segments: list[tuple[int, int]]) -> Tensor:
        parts = [(~removed[groups.find(g)]).repeat_interleave(b) for g, b in segments]
        return torch.cat(parts)

    keep_out: dict[str, Tensor] = {}
    keep_in: dict[str, Tensor] = {}
    for name, group in tracker.producers.items():
        alive = ~removed[groups.find(group)]
        if not alive.all():
            keep_out[name] = torch.nonzero(alive).flatten()
    shifts: dict[str, Tensor] = {}
    for site in tracker.sites:
        alive = kept_channels(site.segments)
        if not alive.all():
            keep_in[site.module] = torch.nonzero(alive).flatten()
        # fold the constants of removed channels that kept weights still read
        drop = torch.cat([removed[groups.find(g)] for g, _ in site.segments])
        fold = drop & site.const & (site.k != 0)
        if fold.any():
            _, summed, _ = tracker.layer(site.module)
            repeats = torch.tensor([b for g, b in site.segments for _ in range(groups.size[g])])
            columns = torch.repeat_interleave(torch.where(fold, site.k, torch.zeros_like(site.k)), repeats)
            shift = summed @ columns
            if site.module in tracker.producers:
                shift[removed[groups.find(tracker.producers[site.module])]] = 0
            if not shift.any():
                continue
            if tracker.modules[site.module].bias is None:  # cannot happen: only a bias absorbs a constant
                raise AssertionError(f"shrink planned a bias fold into {site.module!r}, which has no bias")
            shifts[site.module] = shifts.get(site.module, torch.zeros_like(shift)) + shift
    for name, segments in tracker.norms.items():
        alive = kept_channels(segments)
        if not alive.all():
            keep_out[name] = torch.nonzero(alive).flatten()
    plan = ShrinkPlan()
    changed = set(keep_out) | set(keep_in)
    _check_structure(model, tracker, changed)
    for name, module in model.named_modules():
        if name not in changed:
            continue
        plan.sizes[name] = layer_sizes(module)
        if name in keep_out:
            plan.keep_out[name] = keep_out[name]
        if name in keep_in:
            plan.keep_in[name] = keep_in[name]
        if name in shifts:
            plan.bias_shift[name] = shifts[name]
    plan.dense_params = sum(p.numel() for p in model.parameters())
    plan.shrunk_params = plan.dense_params - sum(
        _param_count(tracker.modules[name]) - _param_count(tracker.modules[name], plan, name) for name in plan.sizes
    )
    if positions is not None:
        plan.dense_macs = plan.shrunk_macs = 0
        for name, count in positions.items():
            module = tracker.modules[name]
            assert isinstance(module, LINEAR_AND_CONVS)
            weight = module.weight
            dense = weight.numel() // (weight.shape[0] * weight.shape[1])
            out = len(plan.keep_out[name]) if name in plan.keep_out else weight.shape[0]
            inp = len(plan.keep_in[name]) if name in plan.keep_in else weight.shape[1]
            plan.dense_macs += count * weight.numel()
            plan.shrunk_macs += count * out * inp * dense
    return plan


def _check_structure(model: nn.Module, tracker: ChannelTracker, changed: set[str]) -> None:
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), []).append(f"{name}.{pname}" if name else pname)
    for name in sorted(changed):
        module = tracker.modules[name]
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
        if name in tracker.pinned:
            raise ValueError(
                f"module {name!r} ({type(module).__name__}) has its tensors read outside its own call (node "
                f"{tracker.pinned[name]!r}); shrink cannot follow that use"
            )
        if module._forward_hooks or module._forward_pre_hooks:
            raise ValueError(
                f"module {name!r} ({type(module).__name__}) has forward hooks, which torch.fx does not trace and a "
                "thinner copy would not carry; remove them before shrinking, or exclude the module"
            )


def _param_count(module: nn.Module, plan: ShrinkPlan | None = None, name: str = "") -> int:
    if plan is None:
        return sum(p.numel() for p in module.parameters(recurse=False))
    sizes = plan.sizes[name]
    out = len(plan.keep_out[name]) if name in plan.keep_out else sizes[0]
    if isinstance(module, BATCH_NORMS):
        return out * sum(p is not None for p in (module.weight, module.bias))
    assert isinstance(module, LINEAR_AND_CONVS)
    inp = len(plan.keep_in[name]) if name in plan.keep_in else sizes[1]
    kernel = module.weight[0, 0].numel()
    return out * inp * kernel + (out if module.bias is not None else 0)


def check_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``masks`` as boolean tensors, each checked to name a parameter of ``model`` and to have its shape.

    Raises:
        ValueError: a mask names no parameter, or has another shape.
    """
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


def layer_sizes(module: nn.Module) -> list[int]:
    """The sizes a plan records for a layer: ``[out, in]`` for a Conv/Linear, ``[features]`` for a BatchNorm."""
    if isinstance(module, BATCH_NORMS):
        return [module.num_features]
    assert isinstance(module, LINEAR_AND_CONVS)
    return [int(module.weight.shape[0]), int(module.weight.shape[1])]
