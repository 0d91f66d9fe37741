"""When to prune: ``prune_epoch`` (train dense, prune the trained weights) and lottery ``levels`` (prune and rewind),
judged from observer callbacks placed before and after ``SynFlowPruning``; resume between rounds; YAML."""

import copy
from dataclasses import replace
from fractions import Fraction

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn

from lightning_synflow import SynFlowPruning, masks_from_checkpoint, prune
from lightning_synflow.callback.rounds import RoundSchedule
from lightning_synflow.callback.state import unpack_state
from lightning_synflow.checkpoint_format import STATE_VERSION
from lightning_synflow.masks import pack_mask
from lightning_synflow.pruning.api import prune_with
from lightning_synflow.pruning.loop import ScoringData
from lightning_synflow.pruning.schedule import exact_fraction, prune_count
from tests.helpers import StepChecker, TinyClassifier, digits_mlp_config, quiet_trainer

LR = 0.01
FAST = dict(iterations=4, progress=False, verbose=False)


class BatchNormNet(TinyClassifier):
    """Linear-BatchNorm-ReLU-Linear, Adam and an LR halved every epoch: weights, buffers, state and LR all move."""

    def __init__(self):
        super().__init__(nn.Sequential(nn.Linear(16, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 4)), 16, 32)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=LR)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)}


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class EpochEnds(Callback):
    """Placed before SynFlowPruning: the weights and buffers as trained, at the end of every epoch."""

    def __init__(self):
        self.ends = {}

    def on_train_epoch_end(self, trainer, pl_module):
        self.ends[trainer.current_epoch] = _state(pl_module)


class EpochStarts(Callback):
    """Placed after SynFlowPruning: what each epoch starts from (masks, weights, optimizer and LR scheduler)."""

    def __init__(self, pruning):
        self.pruning = pruning
        self.starts = {}

    def on_train_epoch_start(self, trainer, pl_module):
        (optimizer,) = trainer.optimizers
        (config,) = trainer.lr_scheduler_configs
        masks = self.pruning.masks
        self.starts[trainer.current_epoch] = {
            "masks": None if masks is None else {n: m.detach().cpu().clone() for n, m in masks.items()},
            "weights": _state(pl_module),
            "optimizer": {p: copy.deepcopy(s) for p, s in optimizer.state.items()},
            "lr": [group["lr"] for group in optimizer.param_groups],
            "last_epoch": config.scheduler.last_epoch,
        }


def _fit(pruning, max_epochs, **trainer_kwargs):
    model = BatchNormNet()
    initial = _state(model)
    ends, starts = EpochEnds(), EpochStarts(pruning)
    callbacks = [ends, pruning, starts, *trainer_kwargs.pop("callbacks", [])]
    trainer = quiet_trainer(callbacks=callbacks, max_epochs=max_epochs, **trainer_kwargs)
    trainer.fit(model)
    return model, initial, ends.ends, starts.starts, trainer


def _kept(masks):
    return sum(int(m.sum()) for m in masks.values())


def _total(masks):
    return sum(m.numel() for m in masks.values())


def _with_weights(state):
    model = BatchNormNet()
    model.load_state_dict(state)
    return model


def _assert_zero_where_pruned(weights, masks):
    for name, mask in masks.items():
        assert bool((weights[name][~mask] == 0).all()), name


# -- the schedule: which epoch prunes to which exact density ---------------------------------------------------


def test_round_schedule_epochs_densities_and_rewinds():
    density = Fraction(1, 100)
    rounds = RoundSchedule.create(prune_epoch=2, levels=3).rounds(density)
    assert [r.epoch for r in rounds] == [2, 4, 6] and all(r.rewind for r in rounds)
    assert rounds[0].density == exact_fraction(0.01 ** (1 / 3)) and rounds[1].density == exact_fraction(0.01 ** (2 / 3))
    assert rounds[2].density == density  # the final density is exact
    single = RoundSchedule.create(prune_epoch=3).rounds(density)
    assert [(r.epoch, r.density, r.rewind) for r in single] == [(3, density, False)]
    assert RoundSchedule.create().rounds(density)[0].epoch == 0  # the default: fit start
    schedule = RoundSchedule.create(prune_epoch=1, levels=3)
    assert [r.index for r in schedule.due(density, done=1, epoch=2)] == [2]
    assert schedule.due(density, done=2, epoch=2) == [] and schedule.due(density, done=0, epoch=0) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prune_epoch": -1}, "`prune_epoch` must be an integer >= 0, got -1"),
        ({"prune_epoch": 1.5}, "`prune_epoch` must be an integer >= 0, got 1.5"),
        ({"prune_epoch": True}, "`prune_epoch` must be an integer >= 0"),
        ({"levels": 0}, "`levels` must be an integer >= 1, got 0"),
        ({"levels": 3}, r"`levels=3` needs `prune_epoch >= 1`.*got prune_epoch=0"),
        ({"levels": 2, "prune_epoch": 1, "shrink": True}, "`shrink=True` needs `prune_epoch=0` and `levels=1`"),
        ({"prune_epoch": 2, "shrink": True}, "`shrink=True` needs `prune_epoch=0` and `levels=1`"),
    ],
)
def test_bad_round_arguments_are_refused_at_construction(kwargs, message):
    with pytest.raises(MisconfigurationException, match=message):
        SynFlowPruning(sparsity=0.9, **kwargs)


def test_rounds_beyond_max_epochs_warn_at_setup():
    pruning = SynFlowPruning(sparsity=0.8, method="magnitude", prune_epoch=1, levels=2, progress=False, verbose=False)
    with pytest.warns(UserWarning, match=r"epochs \[1, 2\], but max_epochs=2 stops before epoch \[2\]"):
        quiet_trainer(callbacks=[pruning], max_epochs=2, limit_train_batches=1).fit(BatchNormNet())
    assert pruning.masks is not None and pruning.levels == 2  # the first round ran


class TrainingSteps(Callback):
    """Counts the training batches that started."""

    def __init__(self):
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps += 1


@pytest.mark.parametrize(
    "prune_epoch, levels, failing",
    [
        (2, 1, r"\(prune_epoch=2, levels=1\): round 1 of 1, at the start of epoch 2, prunes to density 1/10"),
        (2, 3, r"\(prune_epoch=2, levels=3\): round 3 of 3, at the start of epoch 6, prunes to density 1/10"),
    ],
)
def test_floors_a_later_round_cannot_hold_are_refused_before_the_first_epoch(prune_epoch, levels, failing):
    # 240 prunable weights, 24 kept at density 1/10; the floor keeps ceil(0.6 * 48) = 29 of net.3.weight. With
    # levels=3 the first two rounds (111 and 51 kept) could hold it: only the last cannot, 6 epochs in.
    pruning = SynFlowPruning(
        compression=10, method="magnitude", prune_epoch=prune_epoch, levels=levels, min_density={"net.3.*": 0.6}, **FAST
    )
    model, steps = BatchNormNet(), TrainingSteps()
    initial = _state(model)
    trainer = quiet_trainer(callbacks=[pruning, steps], max_epochs=8)
    with pytest.raises(MisconfigurationException, match=failing + r": `min_density` floors keep at least 29 .* lower"):
        trainer.fit(model)
    assert steps.steps == 0 and trainer.global_step == 0 and trainer.current_epoch == 0
    assert pruning.masks is None
    assert all(torch.equal(value, initial[name]) for name, value in model.state_dict().items())


# -- prune_epoch: train dense, prune the trained weights, no rewind ---------------------------------------------


def _observed_run(directory, pruning, max_epochs):
    """A seeded fit observed before and after ``pruning``, with a checkpoint at the end of every epoch."""
    torch.manual_seed(0)
    checkpoint = ModelCheckpoint(dirpath=directory, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    model, initial, ends, starts, trainer = _fit(
        pruning, max_epochs=max_epochs, callbacks=[checkpoint], enable_checkpointing=True
    )
    return dict(model=model, initial=initial, ends=ends, starts=starts, trainer=trainer, pruning=pruning)


@pytest.fixture(scope="module")
def prune_epoch_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("prune_epoch")
    run = _observed_run(directory, SynFlowPruning(sparsity=0.8, prune_epoch=2, **FAST), max_epochs=4)
    return {**run, "checkpoints": directory}


def test_prune_epoch_prunes_the_trained_weights_at_the_start_of_that_epoch(prune_epoch_run):
    model, initial, ends, starts = (prune_epoch_run[k] for k in ("model", "initial", "ends", "starts"))
    assert starts[0]["masks"] is None and starts[1]["masks"] is None  # dense until epoch 2
    assert not torch.equal(starts[1]["weights"]["net.0.weight"], initial["net.0.weight"])  # it trained
    assert starts[1]["optimizer"]
    masks = starts[2]["masks"]
    # the masks of prune() on the weights as trained for 2 epochs (snapshotted at the end of epoch 1)
    expected = prune(_with_weights(ends[1]), sparsity=0.8, iterations=4, example_input=torch.zeros(1, 16))
    assert masks.keys() == expected.keys() and all(torch.equal(masks[n], expected[n]) for n in expected)
    assert _kept(masks) == _total(masks) - int(0.8 * _total(masks))
    # no rewind: the trained weights, pruned; Adam's state of pruned entries is zero, the rest kept
    for name, value in starts[2]["weights"].items():
        want = ends[1][name] * masks[name] if name in masks else ends[1][name]
        assert torch.equal(value, want), name
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        state = starts[2]["optimizer"][params[name]]
        assert bool((state["exp_avg"][~mask] == 0).all()) and bool((state["exp_avg_sq"][~mask] == 0).all())
        assert bool((state["exp_avg_sq"][mask] != 0).any())
    assert starts[2]["last_epoch"] == 2  # the LR schedule is not touched
    # the masks hold through the later epochs
    assert all(torch.equal(starts[3]["masks"][n], masks[n]) for n in masks)
    _assert_zero_where_pruned(ends[3], masks)
    assert all(torch.equal(prune_epoch_run["pruning"].masks[n].cpu(), masks[n]) for n in masks)


def test_masks_from_a_checkpoint_saved_before_prune_epoch_say_so(prune_epoch_run):
    with pytest.raises(ValueError, match="saved before SynFlowPruning.s first round"):
        masks_from_checkpoint(prune_epoch_run["checkpoints"] / "epoch=0.ckpt")
    assert _kept(masks_from_checkpoint(prune_epoch_run["checkpoints"] / "epoch=2.ckpt")) > 0


def test_prune_epoch_with_a_fit_that_ends_before_it_leaves_the_model_dense():
    pruning = SynFlowPruning(sparsity=0.8, method="magnitude", prune_epoch=3, progress=False, verbose=False)
    with pytest.warns(UserWarning, match="no round will run"):
        _fit(pruning, max_epochs=2, limit_train_batches=2)
    assert pruning.masks is None and pruning.state_dict() == {}


def test_levels_one_with_prune_epoch_does_not_rewind_the_lr_schedule():
    pruning = SynFlowPruning(sparsity=0.5, method="magnitude", prune_epoch=1, progress=False, verbose=False)
    _, initial, ends, starts, _ = _fit(pruning, max_epochs=2, limit_train_batches=2)
    masks = starts[1]["masks"]
    assert torch.equal(starts[1]["weights"]["net.0.weight"], ends[0]["net.0.weight"] * masks["net.0.weight"])
    assert starts[1]["optimizer"] and starts[1]["last_epoch"] == 1 and starts[1]["lr"] == [LR / 2]


# -- levels: lottery-ticket rounds with rewinding ----------------------------------------------------------------


@pytest.fixture(scope="module")
def lottery_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lottery")
    run = _observed_run(directory, SynFlowPruning(sparsity=0.9, prune_epoch=1, levels=3, **FAST), max_epochs=5)
    return {**run, "checkpoints": directory}


def test_lottery_rounds_prune_exactly_and_rewind_everything_to_fit_start(lottery_run):
    initial, ends, starts, trainer, pruning = (
        lottery_run[k] for k in ("initial", "ends", "starts", "trainer", "pruning")
    )
    settings = pruning.settings
    rounds = RoundSchedule.create(1, 3).rounds(settings.density)
    previous = None
    assert starts[0]["masks"] is None
    for step in rounds:
        start = starts[step.epoch]
        masks = start["masks"]
        total = _total(masks)
        assert _kept(masks) == total - prune_count(step.density, total)  # exact at every round
        if previous is not None:
            assert all(not bool((masks[n] & ~previous[n]).any()) for n in masks)  # never revives
        # the weights trained since the last rewind, pruned from the masks in force
        start_masks = None if previous is None else {n: m.clone() for n, m in previous.items()}
        expected = prune_with(
            _with_weights(ends[step.epoch - 1]),
            replace(settings, density=step.density),
            ScoringData(example_input=torch.zeros(1, 16)),
            masks=start_masks,
        )
        assert all(torch.equal(masks[n], expected[n]) for n in expected)
        # rewound: every weight and buffer at its fit-start value (pruned entries zero), BatchNorm statistics too
        for name, value in start["weights"].items():
            want = initial[name] * masks[name] if name in masks else initial[name]
            assert torch.equal(value, want), (step.epoch, name)
        assert start["optimizer"] == {}  # Adam's state back to its initial (empty) one
        assert start["lr"] == [LR] and start["last_epoch"] == 0  # and the LR scheduler
        previous = masks
    assert rounds[-1].density == Fraction(1, 10)
    assert not torch.equal(ends[0]["net.1.running_mean"], initial["net.1.running_mean"])  # the buffers had moved
    # after the last round the sparse network trains from its initial weights
    assert not torch.equal(ends[4]["net.0.weight"], starts[3]["weights"]["net.0.weight"])
    _assert_zero_where_pruned(ends[4], previous)
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 2  # epochs 3 and 4 stepped it
    assert pruning.state_dict()["schedule"] == {"prune_epoch": 1, "levels": 3, "done": 3}
    assert "rewind" not in pruning.state_dict()  # no round left: no rewind point kept


@pytest.mark.parametrize("method", ["synflow", "magnitude", "random", "snip", "grasp"])
def test_every_method_runs_lottery_rounds(method):
    pruning = SynFlowPruning(
        sparsity=0.75, method=method, prune_epoch=1, levels=2, score_batches=2, iterations=2, verbose=False
    )  # random without a seed: fresh scores each round, so only the masks in force keep pruned weights pruned
    model, initial, ends, starts, _ = _fit(pruning, max_epochs=3, limit_train_batches=2, enable_progress_bar=False)
    first, final = starts[1]["masks"], starts[2]["masks"]
    total = _total(final)
    assert _kept(first) == total - prune_count(exact_fraction(0.25**0.5), total)
    assert _kept(final) == total - int(0.75 * total)
    assert all(not bool((final[n] & ~first[n]).any()) for n in final)
    for name, mask in final.items():
        assert torch.equal(starts[2]["weights"][name], initial[name] * mask)
    _assert_zero_where_pruned(ends[2], final)


# -- checkpoints and resume: the same masks and weights as the uninterrupted run ------------------------------------


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[n].cpu(), b[n].cpu()) for n in a)


def _resume(run, epoch, pruning):
    torch.manual_seed(5)  # another initialization: what matters must come from the checkpoint
    model = BatchNormNet()
    max_epochs = run["trainer"].max_epochs
    quiet_trainer(callbacks=[pruning], max_epochs=max_epochs).fit(
        model, ckpt_path=run["checkpoints"] / f"epoch={epoch}.ckpt"
    )
    return model


def test_resume_saved_before_prune_epoch_prunes_there_like_the_uninterrupted_run(prune_epoch_run):
    state = torch.load(prune_epoch_run["checkpoints"] / "epoch=0.ckpt")["callbacks"]["SynFlowPruning"]
    assert state["schedule"] == {"prune_epoch": 2, "levels": 1, "done": 0} and "masks" not in state
    resumed = SynFlowPruning(sparsity=0.8, prune_epoch=2, **FAST)
    model = _resume(prune_epoch_run, 0, resumed)
    assert _same(prune_epoch_run["pruning"].masks, resumed.masks)
    assert _same(prune_epoch_run["model"].state_dict(), model.state_dict())


def test_resume_saved_after_prune_epoch_restores_the_masks_without_pruning(prune_epoch_run, monkeypatch):
    monkeypatch.setattr(
        "lightning_synflow.callback.pruner.prune_with", lambda *a, **k: pytest.fail("re-pruned on resume")
    )
    resumed = SynFlowPruning(sparsity=0.8, prune_epoch=2, **FAST)
    model = _resume(prune_epoch_run, 2, resumed)
    assert _same(prune_epoch_run["pruning"].masks, resumed.masks)
    assert _same(prune_epoch_run["model"].state_dict(), model.state_dict())


@pytest.mark.parametrize("epoch", [0, 1])  # before the first round (epoch 1); between rounds 1 and 2
def test_resume_before_or_between_lottery_rounds_continues_the_same_rounds(lottery_run, epoch):
    state = torch.load(lottery_run["checkpoints"] / f"epoch={epoch}.ckpt", weights_only=True)
    state = state["callbacks"]["SynFlowPruning"]
    assert state["version"] == STATE_VERSION and state["schedule"]["done"] == epoch
    assert ("masks" in state) == (epoch > 0) and set(state["rewind"]) == {"module", "optimizers", "lr_schedulers"}
    resumed = SynFlowPruning(sparsity=0.9, prune_epoch=1, levels=3, **FAST)
    model = _resume(lottery_run, epoch, resumed)
    assert _same(lottery_run["pruning"].masks, resumed.masks)
    assert _same(lottery_run["model"].state_dict(), model.state_dict())


def test_masks_from_a_checkpoint_saved_before_the_first_round_say_so(lottery_run):
    with pytest.raises(ValueError, match="before SynFlowPruning's first round"):
        masks_from_checkpoint(lottery_run["checkpoints"] / "epoch=0.ckpt")
    assert _kept(masks_from_checkpoint(lottery_run["checkpoints"] / "epoch=1.ckpt")) > 0


def test_resume_with_changed_rounds_goes_through_on_settings_change(lottery_run):
    changed = SynFlowPruning(sparsity=0.9, prune_epoch=2, levels=2, **FAST)
    with pytest.raises(
        MisconfigurationException, match="prune_epoch: checkpoint 1, now 2; levels: checkpoint 3, now 2"
    ):
        _resume(lottery_run, 1, changed)
    # 'keep' continues the checkpoint's own rounds, as the uninterrupted run did
    kept = SynFlowPruning(sparsity=0.9, prune_epoch=2, levels=2, on_settings_change="keep", **FAST)
    with pytest.warns(UserWarning, match="keeping its masks"):
        model = _resume(lottery_run, 1, kept)
    assert _same(lottery_run["pruning"].masks, kept.masks)
    assert _same(lottery_run["model"].state_dict(), model.state_dict())
    assert kept.state_dict()["schedule"] == {"prune_epoch": 1, "levels": 3, "done": 3}


@pytest.mark.filterwarnings("ignore:.*max_epochs=3 stops before")
def test_levels_resumed_from_a_checkpoint_without_rewind_point_rewind_to_the_resumed_start(prune_epoch_run):
    resumed = SynFlowPruning(sparsity=0.8, prune_epoch=2, levels=2, **FAST)
    starts = EpochStarts(resumed)
    path = prune_epoch_run["checkpoints"] / "epoch=0.ckpt"
    with pytest.warns(UserWarning, match="holds no rewind point"):
        quiet_trainer(callbacks=[resumed, starts], max_epochs=3).fit(BatchNormNet(), ckpt_path=path)
    masks, weights = starts.starts[2]["masks"], starts.starts[2]["weights"]
    saved = torch.load(path)["state_dict"]  # the weights this fit started from
    assert all(torch.equal(weights[n], saved[n] * masks[n]) for n in masks)
    assert starts.starts[2]["optimizer"] == {} and starts.starts[2]["last_epoch"] == 0


def test_another_fit_after_the_rounds_keeps_the_masks_without_pruning(monkeypatch):
    pruning = SynFlowPruning(sparsity=0.8, method="magnitude", prune_epoch=1, progress=False, verbose=False)
    model = BatchNormNet()
    quiet_trainer(callbacks=[pruning], max_epochs=2, limit_train_batches=2).fit(model)
    first = {n: m.clone() for n, m in pruning.masks.items()}
    monkeypatch.setattr("lightning_synflow.callback.pruner.prune_with", lambda *a, **k: pytest.fail("re-pruned"))
    checker = StepChecker(pruning)
    quiet_trainer(callbacks=[pruning, checker], max_epochs=2, limit_train_batches=2).fit(model)
    assert checker.steps == 4 and _same(first, pruning.masks)


def test_version_2_states_are_still_read_and_newer_ones_refused():
    masks = {"net.0.weight": torch.rand(12, 16) > 0.5}
    settings = SynFlowPruning(sparsity=0.5).settings
    old = {
        "version": 2,
        "masks": {n: pack_mask(m) for n, m in masks.items()},
        "shapes": {n: list(m.shape) for n, m in masks.items()},
        "settings": settings.to_dict(),
    }
    saved = unpack_state(old)
    assert _same(saved.masks, masks) and saved.settings == settings
    assert saved.schedule == RoundSchedule() and saved.done == 1 and saved.rewind is None
    with pytest.raises(ValueError, match="upgrade lightning-synflow"):
        unpack_state({**old, "version": STATE_VERSION + 1})


# -- YAML and --help --------------------------------------------------------------------------------------------

CONFIG = digits_mlp_config(
    trainer={"max_epochs": 3, "limit_train_batches": 2},
    pruning={"sparsity": 0.9, "iterations": 3, "prune_epoch": 1, "levels": 2},
)


def test_prune_epoch_and_levels_from_yaml(fit_config):
    pruning = fit_config(CONFIG)
    assert (pruning.prune_epoch, pruning.levels) == (1, 2)
    total = _total(pruning.masks)
    assert _kept(pruning.masks) == total - int(0.9 * total)
    assert pruning.state_dict()["schedule"]["done"] == 2


def test_help_describes_prune_epoch_and_levels(capsys):
    from lightning_synflow.cli import cli_main

    with pytest.raises(SystemExit):
        cli_main(["fit", "--trainer.callbacks.help", "lightning_synflow.SynFlowPruning"])
    text = " ".join(capsys.readouterr().out.split())
    assert ".prune_epoch" in text and ".levels" in text
    assert "train dense for this many epochs and prune the trained weights" in text
    assert "lottery-ticket rounds with rewinding" in text
