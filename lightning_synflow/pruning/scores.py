"""One scoring function per pruning method.

Every scorer takes the model as it is in the loop (pruned entries already zero in place, eval mode)
and returns one score tensor per prunable parameter, with pruned entries scoring exactly 0. Lower
scores are pruned first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from lightning_synflow.pruning.alive import AliveSet
from lightning_synflow.pruning.inputs import ExampleInput, call_model, ones_batch, output_sum, to_device
from lightning_synflow.pruning.workspace import ScoringWorkspace

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batch = tuple[Any, torch.Tensor]

#: Temperature on the logits for GraSP (Wang et al. 2020, as in the reference).
GRASP_TEMPERATURE = 200.0


def _grads(output: torch.Tensor, params: Sequence[nn.Parameter], create_graph: bool = False) -> list[torch.Tensor]:
    grads = torch.autograd.grad(output, list(params), allow_unused=True, create_graph=create_graph)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether every entry is finite, from one sum per tensor (a NaN or inf makes the total non-finite)."""
    return bool(torch.isfinite(torch.stack([t.sum() for t in tensors]).sum()))


def magnitude_scores(params: Sequence[nn.Parameter]) -> list[torch.Tensor]:
    """|theta| (pruned entries are already 0)."""
    return [p.detach().abs() for p in params]


def random_scores(
    params: Sequence[nn.Parameter], alive: Sequence[torch.Tensor], generator: torch.Generator | None
) -> list[torch.Tensor]:
    """i.i.d. standard normal scores from ``generator`` (torch's global one if None); pruned entries 0."""
    scores = []
    for p, mask in zip(params, alive):
        noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
        scores.append(noise.to(p.device).masked_fill_(~mask, 0))
    return scores


def snip_scores(
    model: nn.Module, params: Sequence[nn.Parameter], batches: Sequence[Batch], loss_fn: LossFn, dtype: torch.dtype
) -> list[torch.Tensor]:
    """|theta * dL/dtheta| on the masked model, L summed over ``batches`` (each a mean loss)."""
    device = params[0].device
    total = [torch.zeros_like(p) for p in params]
    with torch.enable_grad():
        for inputs, targets in batches:
            output = call_model(model, to_device(inputs, device, dtype))
            loss = loss_fn(output, targets.to(device))
            for acc, grad in zip(total, _grads(loss, params)):
                acc.add_(grad)
    return [acc.mul_(p.detach()).abs_() for acc, p in zip(total, params)]


def grasp_scores(
    model: nn.Module, params: Sequence[nn.Parameter], batches: Sequence[Batch], loss_fn: LossFn, dtype: torch.dtype
) -> list[torch.Tensor]:
    """theta * Hg with temperature 200 on the logits; signed, most negative pruned first."""
    device = params[0].device

    def loss_of(inputs: Any, targets: torch.Tensor) -> torch.Tensor:
        output = call_model(model, to_device(inputs, device, dtype)) / GRASP_TEMPERATURE
        return loss_fn(output, targets.to(device))

    with torch.enable_grad():
        gradient = [torch.zeros_like(p) for p in params]
        for inputs, targets in batches:
            for acc, grad in zip(gradient, _grads(loss_of(inputs, targets), params)):
                acc.add_(grad)
        hessian_gradient = [torch.zeros_like(p) for p in params]
        for inputs, targets in batches:
            grads = _grads(loss_of(inputs, targets), params, create_graph=True)
            inner = torch.stack([(g * fixed).sum() for g, fixed in zip(grads, gradient)]).sum()
            for acc, hg in zip(hessian_gradient, _grads(inner, params)):
                acc.add_(hg.detach())
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
    originals before the next pass); once it is, only the alive entries' scores are kept.

    Args:
        workspace: the scoring workspace of the model.
        example_input: a batch-shaped example; only its per-example shapes are used.
        alive: the alive set, whose view the returned scores follow.
    """

    def __init__(self, workspace: ScoringWorkspace, example_input: ExampleInput, alive: AliveSet) -> None:
        self.workspace = workspace
        self.example_input = example_input
        self.alive = alive
        params = list(workspace.prunable.values())
        model_dtype = params[0].dtype
        self.dtype = model_dtype if model_dtype == torch.float64 else torch.float32
        self.rescaled = False

    def _try(self, last_resort: bool) -> list[torch.Tensor] | None:
        workspace = self.workspace
        params = list(workspace.prunable.values())
        workspace.prepare(self.alive.masks)
        inputs = ones_batch(self.example_input, self.dtype, params[0].device)
        with torch.enable_grad():
            flow = output_sum(call_model(workspace.model, inputs))
        if not (last_resort or _in_safe_range(float(flow.detach()), self.dtype)):
            return None
        scores: list[torch.Tensor | None] = [None] * len(params)
        in_place = not self.alive.compacted

        @torch.no_grad()
        def to_scores(i: int, param: torch.Tensor) -> None:
            grad, weight = param.grad, param.detach()
            param.grad = None
            if in_place:
                scores[i] = weight.mul_(grad.abs_()).view(-1)
            else:
                scores[i] = self.alive.collect(i, grad.abs_().mul_(weight))

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
        return done if all_finite(done) else None

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
                raise FloatingPointError(
                    "SynFlow scores are not finite even in float64 with per-layer power-of-two rescaling; "
                    "the network's synaptic flow cannot be represented. Prune fewer layers or use another method."
                )


def _in_safe_range(flow: float, dtype: torch.dtype) -> bool:
    """Whether R leaves room for its gradients in ``dtype``: far from overflow and from underflow."""
    info = torch.finfo(dtype)
    low, high = math.log2(info.tiny) + 64, math.log2(info.max) - 24
    return math.isfinite(flow) and flow != 0 and low <= math.log2(abs(flow)) <= high
