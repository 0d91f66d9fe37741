"""``SynFlowPruning``: prune a LightningModule at fit start and keep it sparse through training."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import islice
from typing import Any, Literal, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn
from typing_extensions import override

from lightning_synflow.pruning.bits import pack_mask, unpack_mask
from lightning_synflow.pruning.loop import DATA_METHODS, prune, resolve_density, validate_choices
from lightning_synflow.report import format_table, layer_stats, sparsity_metrics, wandb_log

_SUPPORTED_STRATEGIES = (SingleDeviceStrategy, DDPStrategy)


class SynFlowPruning(Callback):
    """Prune the LightningModule at the start of ``fit``, without data, and keep it sparse.

    In ``on_fit_start`` the module's prunable weights are scored and pruned iteratively (SynFlow,
    Tanaka et al. 2020) or by one of the paper's baselines. The boolean masks are then enforced at
    every real optimizer step: gradients of pruned entries are zeroed before the step (before
    gradient clipping) and the weights are masked again right after it. Masks are plain tensors held
    here and saved in checkpoints (1 bit per weight); the model's ``state_dict`` is unchanged.

    Args:
        sparsity: fraction of prunable weights removed, ``0 <= sparsity < 1``. Give this or ``compression``.
        compression: compression ratio ``1 / density >= 1``; ``100`` keeps 1% of the weights.
        method: scoring method: ``synflow`` (data-free), or the baselines ``magnitude``, ``random``,
            ``snip`` and ``grasp`` (the last two draw ``score_batches`` batches from the train dataloader).
        iterations: prune-score iterations; default 100 for ``synflow`` and 1 for the baselines.
        schedule: density schedule across iterations: ``exponential`` (the paper's) or ``linear``.
        scope: ``global`` (one threshold over all layers) or ``local`` (the same density in every layer).
        parameters: glob patterns over ``named_parameters()`` names to prune, e.g. ``["features.*"]``;
            default: the weight of every Linear and Conv1d/2d/3d layer.
        exclude: glob patterns removed from the prunable set, e.g. ``["classifier.weight"]``.
        input_shape: shape of one example without the batch dimension, e.g. ``[3, 32, 32]``; only needed
            when the LightningModule has no ``example_input_array``.
        seed: seed of the ``random`` method; None draws from torch's global generator.
        score_batches: number of training batches ``snip`` and ``grasp`` score on.
        verbose: print the per-layer sparsity table on rank 0 after pruning.
        progress: show a progress bar while scoring.

    Raises:
        MisconfigurationException: an argument outside its allowed values.

    Example::

        from lightning.pytorch import Trainer
        from lightning_synflow import SynFlowPruning

        trainer = Trainer(callbacks=[SynFlowPruning(sparsity=0.99)])
        trainer.fit(model)  # model.example_input_array gives the input shape
    """

    def __init__(
        self,
        sparsity: Optional[float] = None,
        compression: Optional[float] = None,
        method: Literal["synflow", "magnitude", "random", "snip", "grasp"] = "synflow",
        iterations: Optional[int] = None,
        schedule: Literal["exponential", "linear"] = "exponential",
        scope: Literal["global", "local"] = "global",
        parameters: Optional[list[str]] = None,
        exclude: Optional[list[str]] = None,
        input_shape: Optional[list[int]] = None,
        seed: Optional[int] = None,
        score_batches: int = 10,
        verbose: bool = True,
        progress: bool = True,
    ) -> None:
        try:
            resolve_density(sparsity, compression)
            self.iterations = validate_choices(method, schedule, scope, iterations)
        except (TypeError, ValueError) as error:
            raise MisconfigurationException(f"SynFlowPruning: {error}") from error
        for name, value in (("parameters", parameters), ("exclude", exclude)):
            if value is not None and (isinstance(value, str) or not all(isinstance(v, str) for v in value)):
                raise MisconfigurationException(
                    f"SynFlowPruning: `{name}` must be a list of glob patterns (strings), got {value!r}."
                )
        if input_shape is not None and (
            isinstance(input_shape, (str, int))
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_shape)
        ):
            raise MisconfigurationException(
                f"SynFlowPruning: `input_shape` must be a list of positive integers without the batch dimension, "
                f"e.g. [3, 32, 32]; got {input_shape!r}."
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise MisconfigurationException(f"SynFlowPruning: `seed` must be an integer or None, got {seed!r}.")
        if isinstance(score_batches, bool) or not isinstance(score_batches, int) or score_batches < 1:
            raise MisconfigurationException(
                f"SynFlowPruning: `score_batches` must be an integer >= 1, got {score_batches!r}."
            )
        self.sparsity = sparsity
        self.compression = compression
        self.method = method
        self.schedule = schedule
        self.scope = scope
        self.parameters = list(parameters) if parameters is not None else None
        self.exclude = list(exclude) if exclude is not None else None
        self.input_shape = list(input_shape) if input_shape is not None else None
        self.seed = seed
        self.score_batches = score_batches
        self.verbose = verbose
        self.progress = progress
        #: Boolean masks (True = kept) keyed by qualified parameter name, once pruned or restored.
        self.masks: Optional[dict[str, torch.Tensor]] = None
        self._hooks: list[Any] = []
        self._groups: dict[Any, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    @property
    def settings(self) -> dict[str, Any]:
        """What decides the masks: passed to ``prune``, saved in checkpoints, and part of the state key."""
        return {
            "sparsity": self.sparsity,
            "compression": self.compression,
            "method": self.method,
            "iterations": self.iterations,
            "schedule": self.schedule,
            "scope": self.scope,
            "parameters": self.parameters,
            "exclude": self.exclude,
        }

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(**self.settings)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not isinstance(trainer.strategy, _SUPPORTED_STRATEGIES):
            raise MisconfigurationException(
                f"SynFlowPruning supports single-device and DDP training (strategy='auto', 'ddp', 'ddp_spawn'); "
                f"{type(trainer.strategy).__name__} (sharded or model-parallel) is not supported yet, because its "
                "parameters are sharded across processes and the masks would not match them."
            )

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.masks is None:
            self._prune(trainer, pl_module)
        self._attach(trainer, pl_module)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._detach()

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._detach()

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        params, multipliers = self._masked_params(optimizer)
        pairs = [(p.grad, m) for p, m in zip(params, multipliers) if p.grad is not None]
        if pairs:
            grads, kept = zip(*pairs)
            torch._foreach_mul_(list(grads), list(kept))

    @override
    def state_dict(self) -> dict[str, Any]:
        if self.masks is None:
            return {}
        return {
            "masks": {name: pack_mask(mask) for name, mask in self.masks.items()},
            "shapes": {name: list(mask.shape) for name, mask in self.masks.items()},
            "settings": self.settings,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "masks" in state_dict:
            self.masks = {
                name: unpack_mask(packed, state_dict["shapes"][name]) for name, packed in state_dict["masks"].items()
            }

    # -- pruning -------------------------------------------------------------------------------

    def _example_input(self, pl_module: LightningModule) -> Any:
        if self.method != "synflow":
            return None
        example = pl_module.example_input_array
        if example is not None:
            return example
        if self.input_shape is not None:
            return torch.zeros(1, *self.input_shape)
        raise MisconfigurationException(
            "SynFlowPruning needs the input shape: set `self.example_input_array = torch.zeros(1, *shape)` in your "
            "LightningModule's __init__ (Lightning's convention), or pass `SynFlowPruning(input_shape=[...])` "
            "(without the batch dimension)."
        )

    def _batches(self, trainer: Trainer) -> Optional[list[Any]]:
        if self.method not in DATA_METHODS:
            return None
        loader = trainer.fit_loop._data_source.dataloader()
        if loader is None:
            raise MisconfigurationException(f"SynFlowPruning(method={self.method!r}) needs a train dataloader.")
        batches = list(islice(_iterate(loader), self.score_batches))
        for batch in batches:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise MisconfigurationException(
                    f"SynFlowPruning(method={self.method!r}) scores on (inputs, targets) batches; the train "
                    f"dataloader yields {type(batch).__name__}. Use method='synflow', which needs no data."
                )
        return batches

    def _prune(self, trainer: Trainer, pl_module: LightningModule) -> None:
        example = self._example_input(pl_module)
        outcome: Any = None
        if trainer.is_global_zero:
            start = time.perf_counter()
            try:
                masks = prune(
                    pl_module,
                    **self.settings,
                    example_input=example,
                    batches=self._batches(trainer),
                    seed=self.seed,
                    progress=self.progress,
                )
                outcome = {name: pack_mask(mask) for name, mask in masks.items()}
            except Exception as error:
                outcome = error
            seconds = time.perf_counter() - start
        # Rank 0 is authoritative: every rank applies its masks before any weight is touched elsewhere.
        outcome = trainer.strategy.broadcast(outcome, src=0)
        if isinstance(outcome, Exception):
            if trainer.is_global_zero:
                raise outcome
            raise RuntimeError(f"SynFlowPruning failed on rank 0: {outcome}")
        params = dict(pl_module.named_parameters())
        # The weights of every rank are masked by `_attach`, which `on_fit_start` calls right after this.
        self.masks = {
            name: unpack_mask(packed, params[name].shape).to(params[name].device) for name, packed in outcome.items()
        }
        if trainer.is_global_zero:
            self._report(trainer, seconds)

    def _report(self, trainer: Trainer, seconds: float) -> None:
        assert self.masks is not None
        stats = layer_stats(self.masks)
        metrics = {**sparsity_metrics(stats), "pruning/seconds": seconds}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            if isinstance(logger, WandbLogger):
                wandb_log(logger, stats, trainer.global_step)
            logger.save()
        if self.verbose:
            rank_zero_info(f"SynFlowPruning ({self.method}, {seconds:.1f} s):\n{format_table(stats)}")

    # -- keeping the masks in force ------------------------------------------------------------

    @torch.no_grad()
    def _apply(self, module: nn.Module) -> None:
        assert self.masks is not None
        params = dict(module.named_parameters())
        missing = [name for name in self.masks if name not in params]
        if missing:
            raise MisconfigurationException(
                f"SynFlowPruning: the masks name parameters that the module does not have: {missing[:5]}. "
                "Was the checkpoint saved from a different model?"
            )
        for name, mask in self.masks.items():
            if mask.shape != params[name].shape:
                raise MisconfigurationException(
                    f"SynFlowPruning: mask of {name!r} has shape {list(mask.shape)}, the parameter "
                    f"{list(params[name].shape)}."
                )
            self.masks[name] = mask.to(params[name].device)
            params[name].mul_(self.masks[name])

    def _attach(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert self.masks is not None
        self._detach()
        self._apply(pl_module)
        # uint8 views of the boolean masks: multiplying by them is about twice as fast as by bool.
        by_param = {p: self.masks[n].view(torch.uint8) for n, p in pl_module.named_parameters() if n in self.masks}
        for optimizer in trainer.optimizers:
            params = [p for group in optimizer.param_groups for p in group["params"] if p in by_param]
            self._groups[optimizer] = (params, [by_param[p] for p in params])
            self._hooks.append(optimizer.register_step_post_hook(self._after_step))

    def _detach(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self._groups = {}

    def _masked_params(self, optimizer: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self._groups.get(getattr(optimizer, "optimizer", optimizer), ([], []))

    @torch.no_grad()
    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        params, multipliers = self._masked_params(optimizer)
        if params:
            torch._foreach_mul_(params, multipliers)


def _iterate(loader: Any) -> Iterator[Any]:
    """Iterate a dataloader, or the first of several (Lightning's CombinedLoader / sequences)."""
    if isinstance(loader, (list, tuple)):
        loader = loader[0]
    elif isinstance(loader, dict):
        loader = next(iter(loader.values()))
    return iter(loader)
