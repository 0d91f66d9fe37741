"""Temporary changes to a model while it is scored, and their exact undoing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class ScoringWorkspace:
    """Puts a model in scoring state and brings it back exactly as it was.

    The model's own tensors are never written while scoring: every prunable weight is swapped
    (through ``.data``) for a working copy in row-major (contiguous) layout, whatever the weight's
    memory format (``channels_last`` included), so flat positions are row-major logical order and
    scoring computes exactly as for the contiguous model; every other floating-point parameter or buffer that
    needs a change (absolute value, wider dtype) for a changed copy. The working copies hold the
    weights as the scorer needs them: absolute values if linearized, a wider dtype if cast, a
    power-of-two factor per tensor if rescaled, and zeros where pruned. A scorer may overwrite them
    (SynFlow writes its scores there, to need no second full-size buffer) and mark them
    :meth:`overwritten`; :meth:`prepare` rebuilds them from the originals before the next use.
    :meth:`restore` swaps the originals back, untouched, so a failed or interrupted pruning leaves
    the model exactly as it was (the caller masks the weights once the final masks are known), with
    one copy of the prunable weights as the only full-size memory held.

    The model is scored in eval mode; with ``train_mode`` every BatchNorm layer (every subclass of
    ``torch.nn.modules.batchnorm._BatchNorm``: ``BatchNorm1d/2d/3d``, ``SyncBatchNorm`` and the lazy
    ones; not ``InstanceNorm``, ``GroupNorm`` or ``LayerNorm``) is in train mode instead and normalizes
    with batch statistics; its running statistics and ``num_batches_tracked``, which a forward pass
    in train mode updates, are copied back afterwards, so they too come back exactly.

    Where the model's own tensors are not what its forward reads (FSDP2 shards), a subclass makes the
    changes in place instead, from backups: it overrides :meth:`working` and the few methods that hold,
    swap and put back the originals.

    Args:
        model: the network being pruned.
        prunable: its prunable parameters, keyed by qualified name.
        train_mode: score with BatchNorm layers in train mode.
    """

    #: Whether parameters that are not prunable stop requiring gradients while scoring.
    freezes_others = True

    def __init__(self, model: nn.Module, prunable: dict[str, nn.Parameter], train_mode: bool = False) -> None:
        self.model = model
        self.prunable = prunable
        self.linearized = False
        self.scales: dict[str, float] = {}
        self._training = {module: module.training for module in model.modules()}
        self._requires_grad = {param: param.requires_grad for param in model.parameters()}
        self._grads = {param: param.grad for param in model.parameters()}
        self._prunable_ids = {id(param) for param in prunable.values()}
        self._originals: dict[torch.Tensor, torch.Tensor] = {}
        self._stale = False
        norms = [m for m in model.modules() if isinstance(m, _BatchNorm)] if train_mode else []
        self._statistics = {b: b.detach().clone() for m in norms for b in m.buffers(recurse=False)}

        model.eval()
        for module in norms:
            module.train()
        for param in model.parameters():
            param.grad = None
            if id(param) in self._prunable_ids:
                param.requires_grad_(True)
            elif self.freezes_others:
                param.requires_grad_(False)
        for param in prunable.values():
            self._hold(param)

    def working(self, tensor: torch.Tensor) -> torch.Tensor:
        """The values of ``tensor`` that scoring reads and changes (its working copy once swapped)."""
        return tensor.data

    def _hold(self, param: torch.Tensor) -> None:
        """Give prunable ``param`` a working copy in row-major layout, the original kept aside."""
        self._swap(param, param.detach().clone(memory_format=torch.contiguous_format))

    def _swap(self, tensor: torch.Tensor, working: torch.Tensor) -> None:
        """Make ``working`` the values of ``tensor``, the original kept aside (once)."""
        self._originals.setdefault(tensor, tensor.data)
        tensor.data = working

    def _put_back(self, tensor: torch.Tensor, original: torch.Tensor) -> None:
        """Make ``original`` the values of ``tensor`` again."""
        tensor.data = original

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
        """Use the absolute value of every floating-point parameter and buffer."""
        if self.linearized:
            return
        for tensor in self._float_tensors():
            if id(tensor) in self._prunable_ids:
                self.working(tensor).abs_()
            else:
                self._swap(tensor, self.working(tensor).abs())
        self.linearized = True

    @torch.no_grad()
    def cast(self, dtype: torch.dtype) -> None:
        """Use ``dtype`` for every floating-point parameter and buffer (exact when widening)."""
        for tensor in self._float_tensors():
            if tensor.dtype != dtype:
                self._swap(tensor, self.working(tensor).to(dtype))

    @torch.no_grad()
    def rescale(self, name: str, factor: float) -> None:
        """Multiply the working copy of prunable weight ``name`` by ``factor`` (a power of two) from now on."""
        self.scales[name] = self.scales.get(name, 1.0) * factor
        self.working(self.prunable[name]).mul_(factor)

    def overwritten(self) -> None:
        """Record that the working copies of the prunable weights now hold something else."""
        self._stale = True

    @torch.no_grad()
    def prepare(self, masks: Sequence[torch.Tensor]) -> None:
        """Make the working copies the (transformed) original weights times ``masks``, if overwritten."""
        if not self._stale:
            return
        for (name, param), mask in zip(self.prunable.items(), masks):
            working, original = self.working(param), self._originals[param]
            if self.linearized and working.dtype == original.dtype:
                torch.abs(original, out=working)
            else:
                working.copy_(original)
                if self.linearized:
                    working.abs_()
            if name in self.scales:
                working.mul_(self.scales[name])
            working.mul_(mask.view(torch.uint8))
        self._stale = False

    @torch.no_grad()
    def zero(self, pruned: dict[str, torch.Tensor]) -> None:
        """Zero pruned entries of the working weights, given for each a flat keep-mask or flat int64 positions.

        Nothing to do while they are overwritten: :meth:`prepare` rebuilds them from the masks.
        """
        if self._stale:
            return
        for name, where in pruned.items():
            flat = self.working(self.prunable[name]).view(-1)
            if where.dtype == torch.bool:
                flat.mul_(where.view(torch.uint8))
            elif where.numel():
                flat.index_fill_(0, where, 0)

    @torch.no_grad()
    def restore(self) -> None:
        """Undo every change: the model's own tensors, modes, gradients and BatchNorm statistics come back."""
        for tensor, original in self._originals.items():
            self._put_back(tensor, original)
        self._originals.clear()
        for buffer, saved in self._statistics.items():
            buffer.copy_(saved)
        self.scales.clear()
        self.linearized = False
        for param, requires_grad in self._requires_grad.items():
            param.requires_grad_(requires_grad)
            param.grad = self._grads[param]
        for module, training in self._training.items():
            module.training = training
