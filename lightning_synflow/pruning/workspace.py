"""Temporary changes to a model while it is scored, and their exact undoing."""

from __future__ import annotations

import torch
from torch import nn


class ScoringWorkspace:
    """Puts a model in scoring state and brings it back exactly as it was.

    On entry the model goes to eval mode, every ``.grad`` is set aside and the prunable parameters
    require gradients; the prunable weights' values are copied once (the only copy made). While
    scoring, weights may be linearized (absolute values, in place), converted to a wider dtype,
    rescaled by powers of two and zeroed where pruned. :meth:`restore` undoes all of it, keeping the
    original tensor storage, and writes either the original weights or the masked ones.

    Args:
        model: the network being pruned.
        prunable: its prunable parameters, keyed by qualified name.
    """

    def __init__(self, model: nn.Module, prunable: dict[str, nn.Parameter]) -> None:
        self.model = model
        self.prunable = prunable
        self._training = {module: module.training for module in model.modules()}
        self._requires_grad = {param: param.requires_grad for param in model.parameters()}
        self._grads = {param: param.grad for param in model.parameters()}
        self._originals = {name: param.detach().clone() for name, param in prunable.items()}
        self._prunable_ids = {id(param) for param in prunable.values()}
        self._storage: dict[torch.Tensor, torch.Tensor] = {}
        self._signs: dict[torch.Tensor, torch.Tensor] = {}
        self.linearized = False

        model.eval()
        for param in model.parameters():
            param.grad = None
        for param in prunable.values():
            param.requires_grad_(True)

    def _float_tensors(self) -> list[torch.Tensor]:
        seen: set[int] = set()
        tensors = []
        for tensor in [*self.model.parameters(), *self.model.buffers()]:
            if torch.is_floating_point(tensor) and id(tensor) not in seen:
                seen.add(id(tensor))
                tensors.append(tensor)
        return tensors

    @torch.no_grad()
    def linearize(self) -> None:
        """Replace every floating-point parameter and buffer by its absolute value, in place."""
        if self.linearized:
            return
        for tensor in self._float_tensors():
            if id(tensor) not in self._prunable_ids:
                self._signs[tensor] = torch.signbit(tensor)
            tensor.abs_()
        self.linearized = True

    @torch.no_grad()
    def cast(self, dtype: torch.dtype) -> None:
        """Convert every floating-point parameter and buffer to ``dtype`` (exact when widening)."""
        for tensor in self._float_tensors():
            if tensor.dtype != dtype:
                self._storage.setdefault(tensor, tensor.data)
                tensor.data = tensor.data.to(dtype)

    @torch.no_grad()
    def zero(self, pruned: dict[str, torch.Tensor]) -> None:
        """Zero entries of the prunable weights in place: a flat boolean mask or flat int64 positions each."""
        for name, where in pruned.items():
            flat = self.prunable[name].view(-1)
            if where.dtype == torch.bool:
                flat.masked_fill_(where, 0)
            elif where.numel():
                flat.index_fill_(0, where, 0)

    @torch.no_grad()
    def restore(self, masks: dict[str, torch.Tensor] | None) -> None:
        """Undo every change; prunable weights get their original values times ``masks`` (if given)."""
        for tensor in self._float_tensors():
            if id(tensor) in self._prunable_ids:
                continue
            sign = self._signs.get(tensor)
            values = torch.where(sign, -tensor.data, tensor.data) if sign is not None else tensor.data
            storage = self._storage.get(tensor)
            if storage is not None:
                storage.copy_(values)
                tensor.data = storage
            elif sign is not None:
                tensor.data.copy_(values)
        for name, param in self.prunable.items():
            original = self._originals[name]
            if masks is not None:
                original.masked_fill_(~masks[name], 0)
            storage = self._storage.get(param)
            if storage is None:
                param.data.copy_(original)
            else:
                storage.copy_(original)
                param.data = storage
        self._storage.clear()
        self._signs.clear()
        self.linearized = False
        for param, requires_grad in self._requires_grad.items():
            param.requires_grad_(requires_grad)
            param.grad = self._grads[param]
        for module, training in self._training.items():
            module.training = training
