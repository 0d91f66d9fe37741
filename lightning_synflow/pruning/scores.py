"""One scoring function per pruning method.

Every scorer takes the model as it is in the loop (pruned entries already zero in place, eval mode)
and returns one score tensor per prunable parameter, with pruned entries scoring exactly 0. Lower
scores are pruned first.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import nn

from lightning_synflow.pruning.alive import AliveSet
from lightning_synflow.pruning.inputs import ExampleInput, call_model, call_on_ones, map_tensors, output_sum, to_device
from lightning_synflow.pruning.workspace import ScoringWorkspace

#: A loss over a model's output and the batch's targets, e.g. ``torch.nn.functional.cross_entropy``.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: A loss over ``(model, batch)``: runs the model on the batch (any format) and returns a scalar tensor.
BatchLoss = Callable[[nn.Module, Any], torch.Tensor]
#: One batch of data for SNIP/GraSP: ``(inputs, targets)`` for a :data:`LossFn`, any format for a :data:`BatchLoss`.
Batch = Any

#: Temperature on the logits for GraSP (Wang et al. 2020, as in the reference).
GRASP_TEMPERATURE = 200.0


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype scores are computed and selected in for weights of ``dtype``: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _grads(output: torch.Tensor, params: Sequence[nn.Parameter], create_graph: bool = False) -> list[torch.Tensor]:
    if not output.requires_grad:  # the output does not depend on any weight (e.g. detached): zero gradients
        return [torch.zeros_like(p) for p in params]
    grads = torch.autograd.grad(output, list(params), allow_unused=True, create_graph=create_graph)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether every entry is finite.

    One sum per tensor decides in the common case (a NaN or inf makes the sum non-finite); only a
    tensor whose sum is not finite, which may also be an overflow of the sum of finite entries (e.g.
    float16 scores above 65504 in total), is checked entry by entry.
    """
    return all(bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all()) for t in tensors)


def magnitude_scores(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """|theta| in :func:`score_dtype` (pruned entries are already 0)."""
    return [p.detach().to(score_dtype(p.dtype), copy=True).abs_() for p in params]


def random_scores(
    params: Sequence[torch.Tensor],
    alive: Sequence[torch.Tensor],
    generator: torch.Generator | None,
    rows: Sequence[slice] | None = None,
) -> list[torch.Tensor]:
    """i.i.d. standard normal scores from ``generator`` (torch's global one if None); pruned entries 0.

    Args:
        params: the prunable weights (their shapes).
        alive: masks (True = alive) like the scores returned, on their device.
        generator: the CPU generator drawing the noise.
        rows: for a rank holding row shards, its rows of each weight: every tensor is drawn whole, as
            a single process draws it, and only these rows kept.
    """
    scores = []
    for i, (p, mask) in enumerate(zip(params, alive)):
        noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
        if rows is not None:
            noise = noise[rows[i]]
        scores.append(noise.to(mask.device).masked_fill_(~mask, 0))
    return scores


def supervised_loss(loss_fn: LossFn) -> BatchLoss:
    """The :data:`BatchLoss` of ``(inputs, targets)`` batches: ``loss_fn(model(inputs), targets)``.

    ``inputs`` are passed as Lightning does (tuple -> positional, dict -> keyword, else one argument).
    """

    def loss(model: nn.Module, batch: Any) -> torch.Tensor:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            length = f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
            raise TypeError(
                "With `loss_fn` (default cross-entropy) every batch must be an (inputs, targets) pair, got a "
                f"{type(batch).__name__}{length}. For batches of any other format give "
                "`batch_loss=lambda model, batch: ...` returning the loss."
            )
        inputs, targets = batch
        return loss_fn(call_model(model, inputs), targets)

    return loss


def _batch_loss(
    model: nn.Module, batch_loss: BatchLoss, batch: Batch, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """The loss of one batch, its tensors moved to ``device`` (floating ones cast to ``dtype``)."""
    loss = batch_loss(model, to_device(batch, device, dtype))
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not torch.is_floating_point(loss):
        got = f"a {loss.dtype} tensor of shape {list(loss.shape)}" if isinstance(loss, torch.Tensor) else repr(loss)
        raise TypeError(
            "The loss of a batch must be a scalar floating-point tensor: `batch_loss` must return a scalar "
            f"(and `loss_fn` reduce to one, e.g. reduction='mean'), got {got}."
        )
    return loss.reshape(())


def snip_scores(
    model: nn.Module,
    params: Sequence[nn.Parameter],
    batches: Sequence[Batch],
    batch_loss: BatchLoss,
    dtype: torch.dtype,
) -> list[torch.Tensor]:
    """|theta * dL/dtheta| on the masked model, L summed over ``batches`` (each a loss of ``batch_loss``)."""
    device = params[0].device
    total = [torch.zeros_like(p) for p in params]
    with torch.enable_grad():
        for batch in batches:
            for acc, grad in zip(total, _grads(_batch_loss(model, batch_loss, batch, device, dtype), params)):
                acc.add_(grad)
    return [acc.mul_(p.detach()).abs_() for acc, p in zip(total, params)]


def _divide_by_temperature(module: nn.Module, args: Any, output: Any) -> Any:
    return map_tensors(output, lambda t: t / GRASP_TEMPERATURE if torch.is_floating_point(t) else t)


def grasp_scores(
    model: nn.Module,
    params: Sequence[nn.Parameter],
    batches: Sequence[Batch],
    batch_loss: BatchLoss,
    dtype: torch.dtype,
) -> list[torch.Tensor]:
    """theta * Hg with temperature 200 on the logits; signed, most negative pruned first.

    The temperature divides every floating-point tensor of the model's forward output (a forward
    hook on ``model``, removed afterwards), whatever ``batch_loss`` then does with them.
    """
    device = params[0].device
    handle = model.register_forward_hook(_divide_by_temperature)
    try:
        with torch.enable_grad():
            gradient = [torch.zeros_like(p) for p in params]
            for batch in batches:
                for acc, grad in zip(gradient, _grads(_batch_loss(model, batch_loss, batch, device, dtype), params)):
                    acc.add_(grad)
            hessian_gradient = [torch.zeros_like(p) for p in params]
            for batch in batches:
                grads = _grads(_batch_loss(model, batch_loss, batch, device, dtype), params, create_graph=True)
                inner = torch.stack([(g * fixed).sum() for g, fixed in zip(grads, gradient)]).sum()
                for acc, hg in zip(hessian_gradient, _grads(inner, params)):
                    acc.add_(hg.detach())
    finally:
        handle.remove()
    return [acc.mul_(p.detach()) for acc, p in zip(hessian_gradient, params)]


class SynFlowScorer:
    """Synaptic-flow scores ``|theta * dR/dtheta|`` with ``R = 1^T f(1; |theta|)``, finite and exact.

    The network stays linearized for the whole loop. Scores are computed in float32 (or the
    model's wider dtype); if R or a score is not finite, or R is so large or small that gradients
    could over- or underflow, the model is widened to float64; if even float64 is out of range,
    each prunable weight is also scaled by a power of two close to the inverse of its gain.
    Powers of two are exact, and for a network that is positively homogeneous in each prunable
    weight (bias-free ReLU chains) they scale every score by one common factor, which leaves the
    ranking unchanged.

    Memory: each weight's gradient is turned into scores as soon as backward produces it, and freed.
    While the alive set is not compacted the scores overwrite the working weights (rebuilt from the
    originals before the next pass); once it is, only the view's entries of the gradient and weight
    are gathered and multiplied, and only their scores are kept.

    Args:
        workspace: the scoring workspace of the model.
        example_input: a batch-shaped example; only its per-example shapes are used.
        alive: the alive set, whose view the returned scores follow.
        examples: how many identical all-ones examples make the batch. Batch statistics of identical
            examples equal one example's, so this changes nothing but ``R``'s factor, and 2 lets
            BatchNorm in train mode normalize channels with one value per example (1-D features or
            1x1 maps), which torch refuses for a batch of 1.
    """

    def __init__(
        self, workspace: ScoringWorkspace, example_input: ExampleInput, alive: AliveSet, examples: int = 1
    ) -> None:
        self.workspace = workspace
        self.example_input = example_input
        self.alive = alive
        self.examples = examples
        params = list(workspace.prunable.values())
        self.dtype = score_dtype(params[0].dtype)
        self.rescaled = False
        self._warned_unreached = False
        self._flow = math.nan  # R of the last pass
        self._nan = False  # whether the last pass's scores held NaN

    def _try(self, last_resort: bool) -> list[torch.Tensor] | None:
        workspace = self.workspace
        params = list(workspace.prunable.values())
        workspace.prepare(self.alive.masks)
        with torch.enable_grad(), _repeated_inputs(workspace.model, self.examples):
            flow = output_sum(call_on_ones(workspace.model, self.example_input, self.dtype, params[0].device))
        self._flow, self._nan = float(flow.detach()), False
        if not (last_resort or in_safe_range(self._flow, self.dtype)):
            return None
        scores: list[torch.Tensor | None] = [None] * len(params)
        in_place = not self.alive.compacted

        @torch.no_grad()
        def to_scores(i: int, param: torch.Tensor) -> None:
            grad, weight = param.grad, param.detach()
            assert grad is not None  # a post-accumulate-grad hook runs once the gradient is in place
            param.grad = None
            if in_place:
                scores[i] = weight.mul_(grad.abs_()).view(-1)
            else:
                scores[i] = self.alive.collect_product(i, grad, weight)

        handles = [p.register_post_accumulate_grad_hook(partial(to_scores, i)) for i, p in enumerate(params)]
        if in_place:
            workspace.overwritten()
        try:
            flow.backward()
        finally:
            for handle in handles:
                handle.remove()
        done = []
        for i, (param, found) in enumerate(zip(params, scores)):
            if found is None:  # not reached by backward: no flow through it
                found = self.alive.collect(i, param.detach().zero_() if in_place else torch.zeros_like(param))
            done.append(found)
        unreached = [name for name, found in zip(workspace.prunable, scores) if found is None]
        if unreached and not self._warned_unreached:
            self._warned_unreached = True
            warn_unreached(unreached, stacklevel=5)
        if all_finite(done):
            return done
        self._nan = any(bool(torch.isnan(s).any()) for s in done)
        return None

    @torch.no_grad()
    def _rescale_layers(self) -> None:
        self.workspace.prepare(self.alive.masks)
        for name, param in self.workspace.prunable.items():
            gain = float(param.sum(dtype=torch.float64)) / max(param.shape[0], 1)
            if gain > 0 and math.isfinite(gain):
                self.workspace.rescale(name, 2.0 ** -round(math.log2(gain)))
        self.rescaled = True

    def __call__(self) -> list[torch.Tensor]:
        """Scores of the view's entries of the current (masked) model; widen the arithmetic only when needed."""
        self.workspace.linearize()
        self.workspace.cast(self.dtype)
        while True:
            last_resort = self.rescaled
            scores = self._try(last_resort)
            if scores is not None:
                return scores
            if self.dtype != torch.float64:
                self.dtype = torch.float64
                self.workspace.overwritten()
                self.workspace.cast(self.dtype)
            elif not self.rescaled:
                self._rescale_layers()
            else:
                raise FloatingPointError(self._failure())

    def _failure(self) -> str:
        """Why the scores are not finite, from the last pass: an invalid operation (NaN) or overflow."""
        if self._nan and math.isfinite(self._flow):
            found, cause = f"SynFlow scores contain NaN although the synaptic flow R = {self._flow:.6g} is finite", ""
        elif math.isnan(self._flow):
            found, cause = "The synaptic flow R is NaN", "most likely "
        else:
            return (
                "SynFlow scores are not finite even in float64 with per-layer power-of-two rescaling "
                f"(R = {self._flow:.6g}): the network's synaptic flow overflows. Prune fewer layers or use another "
                "method."
            )
        return (
            f"{found}, even in float64 with per-layer power-of-two rescaling: the NaN comes {cause}from an invalid "
            "operation in the model (0/0, inf - inf or 0 * inf), typically a normalization of an all-zero row (a "
            "weight divided by its norm once a row is pruned), not from overflow. Leave such layers out of the "
            "prunable set (`exclude`) or use another method."
        )


def warn_unreached(names: list[str], stacklevel: int) -> None:
    """Say which prunable weights the SynFlow backward pass never reached: they score 0 and go first."""
    warnings.warn(
        f"No gradient reached {names[:5]}{' and others' if len(names) > 5 else ''} in the SynFlow pass, so "
        "they score 0 and are pruned first (a whole layer may be emptied). Causes: the layer is not used "
        "in forward, or runs under torch.no_grad() or a reentrant activation checkpoint "
        "(use_reentrant=True). Exclude it with `exclude`, or use a non-reentrant checkpoint.",
        UserWarning,
        stacklevel=stacklevel,
    )


@contextmanager
def _repeated_inputs(model: nn.Module, times: int) -> Iterator[None]:
    """While open, ``model``'s input tensors are repeated ``times`` along the batch dimension (a pre-hook)."""
    if times == 1:
        yield
        return

    def repeat(module: nn.Module, args: Any, kwargs: Any) -> tuple[Any, Any]:
        repeated: tuple[Any, Any] = map_tensors((args, kwargs), lambda t: t.repeat(times, *[1] * (t.dim() - 1)))
        return repeated

    handle = model.register_forward_pre_hook(repeat, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def in_safe_range(flow: float, dtype: torch.dtype) -> bool:
    """Whether R leaves room for its gradients in ``dtype``: far from overflow and from underflow."""
    info = torch.finfo(dtype)
    low, high = math.log2(info.tiny) + 64, math.log2(info.max) - 24
    return math.isfinite(flow) and flow != 0 and low <= math.log2(abs(flow)) <= high
