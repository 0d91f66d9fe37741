"""``SynFlowPruning``: prune a LightningModule (at fit start, or in rounds) and keep it sparse through training."""

from __future__ import annotations

import weakref
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_synflow.callback.arguments import CheckedArguments, SettingsChange, read_only_arguments
from lightning_synflow.callback.distributed import broadcast_masks, broadcast_parameters
from lightning_synflow.callback.pruner import Outcome, Pruned, example_input, run_pruner
from lightning_synflow.callback.rounds import RewindPoint
from lightning_synflow.callback.sharded import (
    PackedMasks,
    ShardedUpkeep,
    check_sharded_module,
    check_sharded_setup,
    is_model_parallel,
)
from lightning_synflow.callback.state import SavedMasks, differences, pack_state, reprune_start, unpack_state
from lightning_synflow.callback.thin import ResizeOnLoad, ShrinkAfterPruning
from lightning_synflow.callback.upkeep import MaskUpkeep
from lightning_synflow.pruning.settings import PruningSettings
from lightning_synflow.pruning.targets import select_prunable
from lightning_synflow.report import format_table, layer_stats, sparsity_metrics, wandb_log

#: Strategies known to keep the masks right, besides ModelParallelStrategy with FSDP2 (``callback.sharded``);
#: anything else (DeepSpeed, FSDP1's FSDPStrategy, XLA, subclasses) is refused.
SUPPORTED_STRATEGIES: tuple[type, ...] = (SingleDeviceStrategy, DDPStrategy)


@read_only_arguments
class SynFlowPruning(Callback):
    """Prune the LightningModule at the start of ``fit``, without data, and keep it sparse.

    In ``on_fit_start`` the module's prunable weights are scored and pruned iteratively (SynFlow,
    Tanaka et al. 2020) or by one of the paper's baselines. The boolean masks are then enforced at
    every real optimizer step: gradients of pruned entries are zeroed right after backward (before
    gradient clipping), the optimizer state of pruned entries is zero, for every parameter any
    optimizer holds (groups added mid-fit too), and the weights are masked again after each step
    unless the optimizer is one of torch's SGD, Adam, AdamW, NAdam, RAdam, RMSprop and Adagrad with
    settings that provably keep a zero weight at zero (``lightning_synflow.callback.upkeep``). Under
    DDP rank 0 prunes and sends its masks and weights to every rank: they are identical byte for byte.
    Under ``ModelParallelStrategy`` with FSDP2 (``fully_shard`` in ``configure_model``, ``tensor_parallel_size=1``)
    every rank prunes its own row shards with a distributed threshold, at train start (after a checkpoint is
    restored), to the masks a single-process prune gives; ``masks`` then holds boolean DTensors.
    Masks are plain tensors held here and saved in checkpoints (1 bit per weight); the model's
    ``state_dict`` is unchanged. Resuming restores them when the settings mean the same
    (``sparsity=0.9`` is ``compression=10``); see ``on_settings_change`` otherwise.

    **When to prune.** ``prune_epoch=k`` trains dense for k epochs and prunes the trained weights at the
    start of epoch k (the reference's ``--pre-epochs``); no rewinding, and the optimizer state of pruned
    entries is zeroed. ``levels=L`` (with ``prune_epoch=k >= 1``) runs lottery-ticket rounds, the
    reference's multishot: at the start of epochs k, 2k, ..., Lk the weights trained since the last rewind
    are pruned to density ``d ** (l / L)`` (already-pruned weights stay pruned and count toward the exact
    target; the last round reaches ``d`` exactly), then every parameter and buffer (BatchNorm statistics
    too) goes back to its fit-start value, pruned entries zero, and the optimizers and LR schedulers to
    their fit-start state (a parameter group added since, e.g. by a finetuning callback, stays with its
    hyperparameters and an empty state). Training then continues to ``max_epochs``, so the final sparse network
    trains from its initial weights. Until the first round ``masks`` is None and nothing is masked. With
    ``levels > 1`` checkpoints written before the last round also hold the fit-start state (a CPU copy of
    the module's ``state_dict`` and the optimizers' and schedulers' initial state, usually empty for the
    optimizers): about one more copy of the weights, so a run resumed between rounds continues the same
    rounds. Rounds beyond ``max_epochs`` never run (a warning at setup says so).

    Args:
        sparsity: fraction of prunable weights removed, ``0 <= sparsity < 1``. Give this or ``compression``.
        compression: compression ratio ``1 / density >= 1``; ``100`` keeps 1% of the weights.
        method: scoring method: ``synflow`` (data-free), or the baselines ``magnitude``, ``random``,
            ``snip`` and ``grasp`` (the last two score ``score_batches`` training batches with the
            LightningModule's own ``training_step`` loss).
        iterations: prune-score iterations; default 100 for ``synflow`` and 1 for the baselines.
        schedule: density schedule across iterations: ``exponential`` (the paper's) or ``linear``.
        scope: ``global`` (one threshold over all layers) or ``local`` (the same density in every layer).
        parameters: glob patterns over ``named_parameters()`` names to prune, e.g. ``["features.*"]``;
            default: the weights of every Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d, MultiheadAttention
            (``in_proj_weight``) and Hugging Face ``Conv1D`` layer.
        exclude: glob patterns removed from the prunable set, e.g. ``["classifier.weight"]``.
        input_shape: shape of one example without the batch dimension, e.g. ``[3, 32, 32]``; only needed
            when the LightningModule has no ``example_input_array``.
        seed: seed of the ``random`` method, of ``shuffle`` and of ``reinitialize``; None draws from torch's
            global generator.
        score_batches: number of training batches ``snip`` and ``grasp`` score on.
        on_settings_change: what to do when a resumed checkpoint's masks were made with settings of another
            meaning (``prune_epoch`` and ``levels`` included): ``error`` (default) stops with a message naming each
            difference; ``reprune`` prunes the checkpoint's weights again with the new settings, once, at fit start,
            to the final density; ``keep`` keeps the checkpoint's masks and continues its own remaining rounds.
        shrink: after pruning, replace the module's layers by thinner ones without the channels that carry no
            flow (``lightning_synflow.shrink``), rebuild the optimizers and LR schedulers, and train the thin
            network (single device only; only with ``prune_epoch=0`` and ``levels=1``). A model shrink cannot follow
            is refused before pruning. Checkpoints hold the thin layers; resuming rebuilds them.
        verbose: print the per-layer sparsity table on rank 0 after pruning.
        progress: show a progress bar while scoring (rank 0 only); None follows the Trainer's
            ``enable_progress_bar``.
        prune_epoch: train dense for this many epochs and prune the trained weights at the start of epoch
            ``prune_epoch``; 0 (default) prunes at fit start. With ``levels > 1``: epochs between lottery rounds.
        levels: lottery-ticket rounds with rewinding: prune to density ``d ** (l / levels)`` at the start of
            epoch ``l * prune_epoch`` (l = 1..levels), then rewind weights, buffers, optimizers and LR
            schedulers to their fit-start state; 1 (default) prunes once, without rewinding.
        invert: keep the lowest-scored weights instead of the highest (an ablation; the reference's ``--invert``).
        shuffle: after pruning, permute each tensor's mask uniformly at random (seeded by ``seed``), keeping
            each tensor's kept count: an ablation that keeps only the per-layer densities.
        reinitialize: after pruning, re-draw the kept weights (and the biases) of every pruned layer with the
            layer's own ``reset_parameters``; masks unchanged.
        train_mode: score with BatchNorm layers in training mode (batch statistics); their running statistics
            and every module's mode come back as they were.
        min_density: a floor on the density of prunable tensors: one float for all, or a mapping from name glob
            to float, e.g. ``{"*shortcut*": 0.2}``. Floors hold exactly at every iteration and the total count
            stays exact; floors that cannot all hold at some round's density are refused at fit start.

    Raises:
        MisconfigurationException: an argument outside its allowed values.

    Example::

        from lightning.pytorch import Trainer
        from lightning_synflow import SynFlowPruning

        trainer = Trainer(callbacks=[SynFlowPruning(sparsity=0.99)])
        trainer.fit(model)  # model.example_input_array gives the input shape

        # lottery ticket: keep 46.4%, 21.5%, then 10% at the start of epochs 2, 4, 6, rewinding each time
        lottery = SynFlowPruning(compression=10, method="magnitude", prune_epoch=2, levels=3)
        Trainer(max_epochs=20, callbacks=[lottery]).fit(model)
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
        on_settings_change: SettingsChange = "error",
        shrink: bool = False,
        verbose: bool = True,
        progress: Optional[bool] = None,
        prune_epoch: int = 0,
        levels: int = 1,
        invert: bool = False,
        shuffle: bool = False,
        reinitialize: bool = False,
        train_mode: bool = False,
        min_density: Optional[Union[float, dict[str, float]]] = None,
    ) -> None:
        arguments = dict(locals())  # exactly the signature's arguments, by name
        del arguments["self"]
        checked = CheckedArguments.check(arguments)
        self._arguments = checked.given
        self._settings, self._schedule, self._options = checked.settings, checked.schedule, checked.options
        # The masks in force (None before the first round) and what they follow: these settings and schedule (the
        # checkpoint's under on_settings_change='keep'), the number of rounds done, and the fit-start state the
        # lottery rounds still to come rewind to.
        self._lifecycle = SavedMasks(None, self._settings, self._schedule, done=0)
        #: The masks and schedule progress of every module this instance pruned (or is pruning in rounds).
        self._known: weakref.WeakKeyDictionary[LightningModule, SavedMasks] = weakref.WeakKeyDictionary()
        self._saved: Optional[SavedMasks] = None
        self._upkeep: Optional[Union[MaskUpkeep, ShardedUpkeep]] = None
        self._resize: Optional[ResizeOnLoad] = None
        # Whether a fit is running: its checkpoints record the schedule even before the first round prunes.
        self._fitting = False
        # ModelParallelStrategy (FSDP2): masks on local shards, the full masks packed for checkpoints, and whether
        # fit start waits for the checkpoint, which that strategy restores after on_fit_start.
        self._sharded = False
        self._packed: Optional[PackedMasks] = None
        self._deferred = False

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into ddp_spawn workers: no weak reference, no optimizer hooks.
        return {**self.__dict__, "_known": None, "_upkeep": None, "_resize": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._known = weakref.WeakKeyDictionary()

    if TYPE_CHECKING:
        # The read-only arguments (``callback.sparsity``, ...) are set on the class by `read_only_arguments`.
        def __getattr__(self, name: str) -> Any: ...

    @property
    def masks(self) -> Optional[dict[str, torch.Tensor]]:
        """Boolean masks (True = kept) keyed by qualified parameter name, once pruned or restored."""
        return self._lifecycle.masks

    @masks.setter
    def masks(self, masks: Optional[dict[str, torch.Tensor]]) -> None:
        self._lifecycle.masks = masks

    @property
    def iterations(self) -> int:
        """Prune-score iterations (the method's default filled in)."""
        return self._settings.iterations

    @property
    def settings(self) -> PruningSettings:
        """What decides the masks, by meaning (validated at construction)."""
        return self._settings

    @property
    @override
    def state_key(self) -> str:
        # One key whatever the spelling of the settings, so a resumed run always finds its masks.
        return "SynFlowPruning"

    # -- Lightning hooks -----------------------------------------------------------------------

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._sharded = is_model_parallel(trainer.strategy)
        if self._sharded:
            check_sharded_setup(trainer.strategy, self._arguments)
        elif type(trainer.strategy) not in SUPPORTED_STRATEGIES:
            raise MisconfigurationException(
                f"SynFlowPruning does not support the {type(trainer.strategy).__name__} strategy: only single-device "
                "training (strategy='auto' on one device), DDP (strategy='ddp', 'ddp_spawn', "
                "'ddp_find_unused_parameters_true', ...) and FSDP2 through "
                "ModelParallelStrategy(tensor_parallel_size=1) with fully_shard in configure_model are known to keep "
                "the masks in force on every process. FSDP1 (FSDPStrategy, strategy='fsdp'), DeepSpeed and XLA "
                "strategies are refused."
            )
        if self._options.shrink and type(trainer.strategy) is not SingleDeviceStrategy:
            raise MisconfigurationException(
                "SynFlowPruning(shrink=True) replaces the module's layers after the strategy has wrapped it, which "
                "only single-device training allows; use shrink=False under DDP."
            )
        if self._options.shrink and stage == "fit" and self._resize is None:
            # A resumed shrink=True run: the fresh module gets the checkpoint's thinner layers before they load.
            self._resize = ResizeOnLoad(pl_module)
        if stage == "fit":
            self._warn_unreachable_rounds(trainer)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # ModelParallelStrategy restores a checkpoint (weights and this callback's state) after on_fit_start, and
        # which checkpoint is not known yet: the masks come in force once it is restored (sanity check or train start).
        self._fitting = True
        self._deferred = trainer.strategy.restore_checkpoint_after_setup
        if not self._deferred:
            self._begin(trainer, pl_module)

    @override
    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The checkpoint is restored by now: the sanity check already validates the pruned model.
        self._begin_deferred(trainer, pl_module)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._begin_deferred(trainer, pl_module)

    def _begin_deferred(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._deferred:
            self._deferred = False
            self._begin(trainer, pl_module)

    def _begin(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Prune, resume or continue: the masks come in force (fit start, once the checkpoint is restored)."""
        if self._sharded:
            check_sharded_module(pl_module, self._settings)
        saved, self._saved = self._saved, None
        resized = self._resize is not None and self._resize.resized
        if self._resize is not None:
            self._resize.remove()
            self._resize = None
        # With shrink=True a model shrink cannot follow is refused here, before anything changes; a module this
        # instance already pruned is as thin as it gets.
        shrinking: Optional[ShrinkAfterPruning] = None
        if self._options.shrink and not resized and pl_module not in self._known:
            example = example_input(pl_module, self._options)
            shrinking = ShrinkAfterPruning(pl_module, self._prunable(pl_module), example)
        if saved is not None:
            self._resume(trainer, pl_module, saved)
        elif pl_module in self._known:
            # Another fit of a module this instance already pruned: its own masks, never re-scored, and the rest
            # of its rounds (if any) at the new fit's epochs.
            self._follow(self._known[pl_module])
        else:
            self._start(trainer, pl_module)
        if self.masks is None:
            self._detach()  # nothing to keep in force before the first round
        else:
            if shrinking is not None:
                self._shrink(trainer, pl_module, shrinking)
            self._attach(trainer, pl_module)
        self._remember(pl_module)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Before the epoch's first batch; on resume Lightning calls it for the first epoch not started yet.
        if self._run_rounds(trainer, pl_module, trainer.current_epoch):
            self._attach(trainer, pl_module)
            self._remember(pl_module)

    @override
    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._upkeep is not None:
            self._upkeep.mask_gradients()

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        saved = self._saved
        if self._deferred and saved is not None and saved.masks is not None:
            # A resumed fit that neither validated nor trained (e.g. already at max_epochs): the masks are the
            # checkpoint's, as restored weights already carry them; keep them for later checkpoints.
            self._follow(saved)
            self._packed = PackedMasks.of(saved.masks)  # full CPU masks: no collective
            self._remember(pl_module)
        self._deferred = False
        self._detach()

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._saved = None  # a checkpoint read for this fit never reaches the next one
        self._fitting = self._deferred = False
        self._detach()

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._saved = None
        self._fitting = False
        self._detach()

    @override
    def state_dict(self) -> dict[str, Any]:
        life = self._lifecycle
        if self._packed is not None:  # sharded: the full masks, gathered when they came in force
            return self._packed.state(life.settings, life.schedule, life.done)
        if life.masks is None and life.rewind is None and not self._fitting:
            return {}
        return pack_state(life.masks, life.settings, life.schedule, life.done, life.rewind)

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        try:
            self._saved = unpack_state(state_dict)
        except ValueError as error:
            raise MisconfigurationException(f"SynFlowPruning: {error}.") from error

    @override
    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # Checkpoints of the first release keyed the state by its settings: find it under any SynFlowPruning key.
        states = checkpoint.get("callbacks", {})
        if self.state_key not in states:
            legacy = [key for key in states if isinstance(key, str) and key.startswith("SynFlowPruning{")]
            if legacy:
                self.load_state_dict(states[legacy[0]])

    # -- pruning and resuming ------------------------------------------------------------------

    def _start(self, trainer: Trainer, pl_module: LightningModule, rewind: Optional[RewindPoint] = None) -> None:
        """A fresh schedule: capture the fit-start state if rounds rewind, and prune now if ``prune_epoch=0``."""
        self._check_floors(pl_module)
        self._lifecycle = SavedMasks(None, self._settings, self._schedule, done=0)
        self._packed = None
        if self._schedule.rewinds:
            if rewind is None and trainer.ckpt_path is not None:
                rank_zero_warn(
                    "SynFlowPruning(levels>1): the checkpoint holds no rewind point (it was saved by a run without "
                    "lottery rounds); the rounds rewind to the weights this fit starts from, and the optimizers and "
                    "LR schedulers to their state as configure_optimizers builds them."
                )
            schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
            self._lifecycle.rewind = rewind or RewindPoint.capture(pl_module, trainer.optimizers, schedulers)
        self._run_rounds(trainer, pl_module, 0)

    def _follow(self, saved: SavedMasks) -> None:
        """Continue what ``saved`` records: its masks, settings, schedule, progress and rewind point."""
        self._lifecycle = replace(saved)  # a copy: the rounds still to come leave ``saved`` as it is
        self._packed = None

    def _remember(self, pl_module: LightningModule) -> None:
        self._known[pl_module] = replace(self._lifecycle)

    def _run_rounds(self, trainer: Trainer, pl_module: LightningModule, epoch: int) -> bool:
        """Run the rounds due by the start of ``epoch`` (normally at most one); whether any ran."""
        life = self._lifecycle  # `_prune` sets its masks
        due = life.schedule.due(life.settings.density, life.done, epoch)
        for step in due:
            self._prune(trainer, pl_module, replace(life.settings, density=step.density), start=life.masks)
            if step.rewind:
                assert life.rewind is not None
                schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
                try:
                    life.rewind.restore(pl_module, trainer.optimizers, schedulers)
                except ValueError as error:
                    raise MisconfigurationException(
                        f"SynFlowPruning(levels={life.schedule.levels}) cannot rewind to the fit-start state: {error}."
                    ) from error
            life.done = step.index
        if life.done == life.schedule.levels:
            life.rewind = None  # no round left to rewind: neither memory nor checkpoints keep it
        return bool(due)

    def _warn_unreachable_rounds(self, trainer: Trainer) -> None:
        max_epochs, rounds = trainer.max_epochs, self._schedule
        last = rounds.last_epoch
        if last == 0 or max_epochs is None or not 0 <= max_epochs <= last:
            return
        epochs = [r.epoch for r in rounds.rounds(self._settings.density)]
        missed = [epoch for epoch in epochs if epoch >= max_epochs]
        rank_zero_warn(
            f"SynFlowPruning(prune_epoch={rounds.prune_epoch}, levels={rounds.levels}) prunes at the start of epochs "
            f"{epochs}, but max_epochs={max_epochs} stops before epoch{'s' if len(missed) > 1 else ''} {missed}: "
            f"{'no round' if len(missed) == len(epochs) else 'not every round'} will run and the model will not reach "
            f"the requested density. Raise max_epochs above {last} (the epochs after the last round train the "
            "final sparse network)."
        )

    def _resume(self, trainer: Trainer, pl_module: LightningModule, saved: SavedMasks) -> None:
        if saved.masks is None:
            # Saved before the first round: nothing pruned yet, so nothing to disagree with; the fit-start state
            # the checkpoint carries (levels > 1) stays the rewind point.
            self._start(trainer, pl_module, rewind=saved.rewind)
            return
        names_now = self._prunable_names(pl_module)
        changed = differences(saved, self._settings, names_now, self._schedule)
        choice = self._options.on_settings_change
        if changed and choice == "error":
            listed = "; ".join(f"{name}: checkpoint {old}, now {new}" for name, (old, new) in changed.items())
            raise MisconfigurationException(
                f"SynFlowPruning: the checkpoint's masks were made with other settings ({listed}). Resume with the "
                "checkpoint's settings to keep its masks, or pass on_settings_change='keep' to keep them anyway, or "
                "on_settings_change='reprune' to prune the checkpoint's weights again with the new settings."
            )
        if changed and choice == "reprune":
            rank_zero_warn(f"SynFlowPruning: settings changed since the checkpoint ({sorted(changed)}); re-pruning.")
            # Once, now, to the final density: a new schedule cannot restart mid-fit.
            params = dict(pl_module.named_parameters())
            shapes = {name: params[name].shape for name in names_now}
            self._prune(trainer, pl_module, self._settings, start=reprune_start(saved, self._settings, shapes))
            self._lifecycle = SavedMasks(self.masks, self._settings, self._schedule, done=self._schedule.levels)
            return
        if changed:
            rank_zero_warn(
                f"SynFlowPruning: settings changed since the checkpoint ({sorted(changed)}); keeping its masks "
                "(on_settings_change='keep')."
            )
        self._follow(saved)

    def _prunable_names(self, pl_module: LightningModule) -> list[str]:
        return list(self._prunable(pl_module))

    def _prunable(self, pl_module: LightningModule) -> dict[str, torch.nn.Parameter]:
        try:
            return select_prunable(pl_module, self._settings.parameters, self._settings.exclude)
        except (TypeError, ValueError) as error:
            raise MisconfigurationException(f"SynFlowPruning: {error}") from error

    def _check_floors(self, pl_module: LightningModule) -> None:
        """Refuse ``min_density`` floors that some round cannot hold: at fit start, before any epoch trains."""
        if self._settings.min_density is None:
            return
        sizes = {name: param.numel() for name, param in self._prunable(pl_module).items()}
        rounds = self._schedule
        try:
            rounds.check_floors(self._settings, sizes)
        except ValueError as error:
            called = "" if rounds.last_epoch == 0 else f"(prune_epoch={rounds.prune_epoch}, levels={rounds.levels})"
            raise MisconfigurationException(f"SynFlowPruning{called}: {error}") from error

    def _prune(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        settings: PruningSettings,
        start: Optional[dict[str, torch.Tensor]] = None,
    ) -> None:
        """Prune with ``settings`` from the masks ``start`` (pruned entries stay pruned); sets ``self.masks``."""
        if self._sharded:  # every rank prunes its own shards: the same masks, found together
            found = run_pruner(trainer, pl_module, settings, self._options, start)
            if isinstance(found, Exception):
                raise found
            self.masks, self._packed = found.masks, PackedMasks.of(found.masks)
            if trainer.is_global_zero:
                self._report(trainer, self._packed.unpacked(), found)
            return
        here = run_pruner(trainer, pl_module, settings, self._options, start) if trainer.is_global_zero else None
        # Rank 0 is authoritative: every rank applies its masks before any weight is touched elsewhere.
        sent: Optional[Outcome] = None  # the other ranks' is not sent
        if isinstance(here, Exception):
            sent = here
        elif here is not None:
            sent = list(here.masks)  # the names only: the masks themselves travel as packed bits
        outcome = trainer.strategy.broadcast(sent, src=0)
        if isinstance(outcome, Exception):
            if trainer.is_global_zero:
                raise outcome
            raise RuntimeError(f"SynFlowPruning failed on rank 0: {outcome}")
        assert outcome is not None
        masks = here.masks if isinstance(here, Pruned) else None
        if trainer.world_size > 1:
            # Rank 0's masks as packed bits, then its weights byte for byte (+0.0 where others would get -0.0).
            params = dict(pl_module.named_parameters())
            shapes = {name: params[name].shape for name in outcome}
            masks = broadcast_masks(masks, shapes, trainer.strategy.root_device)
            broadcast_parameters(pl_module)
        assert masks is not None
        # The weights of every rank are masked by `_attach`, which the calling hook runs right after this.
        self.masks = masks
        if isinstance(here, Pruned):
            self._report(trainer, masks, here)

    def _shrink(self, trainer: Trainer, pl_module: LightningModule, shrinking: ShrinkAfterPruning) -> None:
        assert self.masks is not None
        try:
            self.masks, metrics = shrinking.shrink(trainer, pl_module, self.masks)
        except MisconfigurationException:
            self._lifecycle = SavedMasks(None, self._settings, self._schedule, done=0)  # the weights are back
            raise
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
                logger.save()
            if self._options.verbose:
                macs = metrics["pruning/macs_shrunk"] / max(metrics["pruning/macs_dense"], 1.0)
                rank_zero_info(
                    f"SynFlowPruning(shrink=True): {int(metrics['pruning/params_shrunk']):,} of "
                    f"{int(metrics['pruning/params_dense']):,} parameters, {macs:.1%} of the dense MACs."
                )

    def _report(self, trainer: Trainer, masks: dict[str, torch.Tensor], pruned: Pruned) -> None:
        """Log and print what ``pruned`` found (``masks``: its masks, full)."""
        from lightning_synflow.report import summary_metrics, weight_positions

        pl_module = trainer.lightning_module
        example = pruned.example_input
        if example is None:  # snip/grasp/magnitude/random: FLOPs only if the module has an example input
            example = pl_module.example_input_array
        positions = None
        if example is not None and not self._sharded:  # a sharded forward on rank 0 alone would wait for the others
            try:
                positions = weight_positions(pl_module, example)
            except Exception as error:  # the report must not fail a pruning that succeeded
                rank_zero_warn(f"SynFlowPruning: `pruning/flops_kept` not measured, the forward pass failed: {error}")
        stats = layer_stats(masks, positions)
        metrics = {**sparsity_metrics(stats), **summary_metrics(stats), "pruning/seconds": pruned.seconds}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            if isinstance(logger, WandbLogger):
                wandb_log(logger, stats, trainer.global_step)
            logger.save()
        if self._options.verbose:
            rank_zero_info(f"SynFlowPruning ({self._settings.method}, {pruned.seconds:.1f} s):\n{format_table(stats)}")

    # -- keeping the masks in force ------------------------------------------------------------

    def _attach(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert self.masks is not None
        self._detach()
        try:
            upkeep: Union[MaskUpkeep, ShardedUpkeep]
            if self._sharded:
                if self._packed is None:  # resumed or followed: full masks (or DTensors) from elsewhere
                    self._packed = PackedMasks.of(self.masks)
                upkeep = ShardedUpkeep(pl_module, self.masks)
            else:
                upkeep = MaskUpkeep(pl_module, self.masks)
        except ValueError as error:
            raise MisconfigurationException(
                f"SynFlowPruning: the checkpoint's masks do not fit this model: {error}. Was the checkpoint saved "
                "from a different model?"
            ) from error
        upkeep.attach(trainer.optimizers)
        self.masks = upkeep.masks
        self._upkeep = upkeep

    def _detach(self) -> None:
        if self._resize is not None:
            self._resize.remove()
            self._resize = None
        if self._upkeep is not None:
            self._upkeep.detach()
            self._upkeep = None
