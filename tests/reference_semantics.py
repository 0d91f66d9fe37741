"""An independent restatement of the reference implementation's pruning semantics, as a test oracle.

Written from reading ganguli-lab/Synaptic-Flow (Pruners/pruners.py, prune.py): float32 scoring on a
masked copy of the model, one global ``kthvalue`` threshold over all scores every iteration, and
every entry at or below it pruned. No code is copied; this is what the reference computes, restated
plainly, so that our fast engine can be checked against it on the same weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from lightning_synflow.pruning import select_prunable


def reference_scores(model: nn.Module, names: list[str], method: str, example_input=None, batches=None):
    params = dict(model.named_parameters())
    if method == "magnitude":
        return {n: params[n].detach().abs().clone() for n in names}
    if method == "synflow":
        signs = {}
        with torch.no_grad():
            for key, tensor in model.state_dict().items():
                if tensor.is_floating_point():
                    signs[key] = torch.sign(tensor)
                    tensor.abs_()
        out = model(torch.ones((1, *example_input.shape[1:]), dtype=example_input.dtype)).sum()
        grads = torch.autograd.grad(out, [params[n] for n in names])
        scores = {n: (g * params[n]).detach().abs() for n, g in zip(names, grads)}
        with torch.no_grad():
            for key, tensor in model.state_dict().items():
                if key in signs:
                    tensor.mul_(signs[key])
        return scores
    if method == "snip":
        total = {n: torch.zeros_like(params[n]) for n in names}
        for x, y in batches:
            grads = torch.autograd.grad(F.cross_entropy(model(x), y), [params[n] for n in names])
            for n, g in zip(names, grads):
                total[n] += g
        return {n: (total[n] * params[n]).detach().abs() for n in names}
    if method == "grasp":
        plist = [params[n] for n in names]
        g0 = [torch.zeros_like(p) for p in plist]
        for x, y in batches:
            for acc, g in zip(g0, torch.autograd.grad(F.cross_entropy(model(x) / 200, y), plist)):
                acc += g
        hg = [torch.zeros_like(p) for p in plist]
        for x, y in batches:
            grads = torch.autograd.grad(F.cross_entropy(model(x) / 200, y), plist, create_graph=True)
            z = sum((g * s).sum() for g, s in zip(grads, g0))
            for acc, h in zip(hg, torch.autograd.grad(z, plist)):
                acc += h
        return {n: (h * p).detach() for n, h, p in zip(names, hg, plist)}
    raise ValueError(method)


def reference_prune(
    model: nn.Module,
    density: float,
    method: str,
    iterations: int,
    example_input=None,
    batches=None,
    schedule: str = "exponential",
):
    """Masks (float 0/1) that the reference's prune loop computes on a copy of ``model``."""
    model = copy.deepcopy(model).eval()
    names = list(select_prunable(model))
    params = dict(model.named_parameters())
    masks = {n: torch.ones_like(params[n]) for n in names}
    for epoch in range(iterations):
        scores = reference_scores(model, names, method, example_input, batches)
        if schedule == "exponential":
            d = density ** ((epoch + 1) / iterations)
        else:
            d = 1.0 - (1.0 - density) * ((epoch + 1) / iterations)
        flat = torch.cat([scores[n].flatten() for n in names])
        k = int((1.0 - d) * flat.numel())
        if k >= 1:
            threshold = torch.kthvalue(flat, k).values
            for n in names:
                masks[n] = torch.where(scores[n] <= threshold, 0.0, 1.0)
        with torch.no_grad():
            for n in names:
                params[n].mul_(masks[n])
    return masks, scores
