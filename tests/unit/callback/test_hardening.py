"""The callback never loses, regrows or silently changes a mask: late parameter groups, resume rules, hooks
left behind, reuse on another model, manual optimization, strategies, progress bar, checkpoints."""

import copy
import signal
import warnings

import pytest
import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.callbacks import BaseFinetuning, ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.utils.data import DataLoader

from lightning_synflow import SynFlowPruning, masks_from_checkpoint, prune
from lightning_synflow.callback.upkeep import MaskUpkeep
from tests.helpers import SmallNet, StepChecker, TinyClassifier, quiet_trainer, random_batches


def _quiet(**kwargs):
    return SynFlowPruning(progress=False, verbose=False, **kwargs)


def _assert_pruned_zero(model, masks):
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert bool((params[name].detach()[~mask.to(params[name].device)] == 0).all()), name


# -- 1. parameter groups added during fit ----------------------------------------------------------


class ThreeLayers(TinyClassifier):
    def __init__(self):
        super().__init__(
            nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 4)), 32
        )

    def configure_optimizers(self):
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=0.05)


class UnfreezeFirstLayer(BaseFinetuning):
    def freeze_before_training(self, pl_module):
        self.freeze(pl_module.net[0])

    def finetune_function(self, pl_module, current_epoch, optimizer):
        if current_epoch == 1:
            self.unfreeze_and_add_param_group(pl_module.net[0], optimizer, lr=0.05, initial_denom_lr=1.0)


def test_parameter_group_added_by_base_finetuning_stays_masked_with_zero_state():
    model, pruning = ThreeLayers(), _quiet(sparsity=0.9)
    checker = StepChecker(pruning)
    trainer = quiet_trainer(callbacks=[UnfreezeFirstLayer(), pruning, checker], max_epochs=3)
    first = model.net[0].weight
    trainer.fit(model)
    assert checker.steps == 24
    (optimizer,) = trainer.optimizers
    assert len(optimizer.param_groups) == 2 and any(first is p for p in optimizer.param_groups[1]["params"])
    _assert_pruned_zero(model, pruning.masks)
    mask = pruning.masks["net.0.weight"]
    assert int((~mask).sum()) > 0
    state = optimizer.state[first]
    assert bool((state["exp_avg"][~mask] == 0).all()) and bool((state["exp_avg_sq"][~mask] == 0).all())


class ThreeLayersHalvingLR(ThreeLayers):
    def configure_optimizers(self):
        optimizer = torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=0.05)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)}


class UnfreezeFirstLayerAtLowerLR(BaseFinetuning):
    def freeze_before_training(self, pl_module):
        self.freeze(pl_module.net[0])

    def finetune_function(self, pl_module, current_epoch, optimizer):
        if current_epoch == 1:
            self.unfreeze_and_add_param_group(pl_module.net[0], optimizer, lr=0.02, initial_denom_lr=1.0)


class OptimizerAtEpochStart(Callback):
    """Each epoch's optimizer as this callback sees it at the epoch's start: learning rates and which parameters
    have state; after every step, that the pruned weights are exactly zero."""

    def __init__(self, pruning):
        self.pruning = pruning
        self.seen = {}

    def on_train_epoch_start(self, trainer, pl_module):
        (optimizer,) = trainer.optimizers
        names = {id(p): n for n, p in pl_module.named_parameters()}
        self.seen[trainer.current_epoch] = {
            "lr": [group["lr"] for group in optimizer.param_groups],
            "groups": [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups],
            "with_state": sorted(names[id(p)] for p, state in optimizer.state.items() if state),
            "weights": {n: p.detach().clone() for n, p in pl_module.named_parameters()},
            "masks": None if self.pruning.masks is None else {n: m.clone() for n, m in self.pruning.masks.items()},
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.pruning.masks is not None:
            _assert_pruned_zero(pl_module, self.pruning.masks)


def test_lottery_rounds_keep_a_group_base_finetuning_added_and_reset_only_its_state():
    torch.manual_seed(0)
    model, pruning = ThreeLayersHalvingLR(), _quiet(sparsity=0.9, method="magnitude", prune_epoch=1, levels=2)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    before, after = OptimizerAtEpochStart(pruning), OptimizerAtEpochStart(pruning)
    trainer = quiet_trainer(callbacks=[UnfreezeFirstLayerAtLowerLR(), before, pruning, after], max_epochs=3)
    trainer.fit(model)
    assert trainer.global_step == 24
    added = ["net.0.weight", "net.0.bias"]
    # Epoch 1: the group is added (lr 0.02), then round 1 prunes and rewinds. Epoch 2: round 2, after a step of
    # the LR schedule has halved every group's learning rate and the added group has trained one epoch.
    assert before.seen[1]["groups"][1] == added and before.seen[1]["lr"] == pytest.approx([0.025, 0.02])
    assert before.seen[2]["lr"] == pytest.approx([0.025, 0.01]) and set(added) <= set(before.seen[2]["with_state"])
    for epoch in (1, 2):
        seen = after.seen[epoch]
        # the fit-start group rewound (its learning rate and its state, empty at fit start); the added group kept,
        # with its learning rate as it was, and without state
        assert seen["groups"][1] == added and seen["lr"] == pytest.approx([0.05, before.seen[epoch]["lr"][1]])
        assert seen["with_state"] == []
        masks = seen["masks"]
        for name, value in seen["weights"].items():  # every weight back at fit start, pruned entries zero
            assert torch.equal(value, initial[name] * masks[name] if name in masks else initial[name]), name
    masks = after.seen[2]["masks"]
    assert all(torch.equal(masks[n], pruning.masks[n]) for n in masks)  # kept through the last epoch
    assert all(bool((m <= after.seen[1]["masks"][n]).all()) for n, m in masks.items())  # none revived
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == total - int(0.9 * total)
    _assert_pruned_zero(model, pruning.masks)
    (optimizer,) = trainer.optimizers
    state, mask = optimizer.state[model.net[0].weight], pruning.masks["net.0.weight"]
    assert int((~mask).sum()) > 0 and bool((state["exp_avg"][~mask] == 0).all())


def test_hand_written_add_param_group_in_a_hook_stays_masked():
    class AddLater(ThreeLayers):
        def on_train_epoch_start(self):
            if self.current_epoch == 1:
                self.net[0].weight.requires_grad_(True)
                self.optimizers().optimizer.add_param_group({"params": [self.net[0].weight]})

    model = AddLater()
    model.net[0].weight.requires_grad_(False)
    pruning = _quiet(sparsity=0.9)
    checker = StepChecker(pruning)
    quiet_trainer(callbacks=[pruning, checker], max_epochs=2).fit(model)
    assert checker.steps == 16
    _assert_pruned_zero(model, pruning.masks)


def test_optimizer_state_of_pruned_entries_is_zeroed_when_a_group_joins():
    model = ThreeLayers()
    masks = {"net.0.weight": torch.rand(24, 32) > 0.5}
    optimizer = torch.optim.SGD([model.net[2].weight], lr=0.1, momentum=0.9)
    upkeep = MaskUpkeep(model, masks)
    upkeep.attach([optimizer])
    weight = model.net[0].weight
    optimizer.add_param_group({"params": [weight]})
    optimizer.state[weight] = {"momentum_buffer": torch.ones_like(weight)}
    weight.grad = torch.ones_like(weight)
    upkeep.mask_gradients()
    assert bool((weight.grad[~masks["net.0.weight"]] == 0).all())
    optimizer.step()
    mask = masks["net.0.weight"]
    assert bool((weight[~mask] == 0).all())
    assert bool((optimizer.state[weight]["momentum_buffer"][~mask] == 0).all())
    upkeep.detach()
    assert not optimizer._optimizer_step_post_hooks and not optimizer._optimizer_step_pre_hooks


# -- 2, 3. resume: same meaning restores, a real change never passes silently -------------------------


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("resume")
    torch.manual_seed(0)
    pruning = _quiet(sparsity=0.9)
    checkpoint = ModelCheckpoint(dirpath=directory, save_last=True)
    quiet_trainer(callbacks=[pruning, checkpoint], enable_checkpointing=True, max_epochs=1).fit(SmallNet("adam"))
    return {n: m.clone() for n, m in pruning.masks.items()}, directory / "last.ckpt"


@pytest.mark.parametrize(
    "spelling", [dict(compression=10), dict(sparsity=0.9, iterations=100), dict(compression=10.0, parameters=None)]
)
def test_resume_with_settings_spelled_differently_restores_without_scoring(saved_run, spelling, monkeypatch):
    saved, path = saved_run
    monkeypatch.setattr(
        "lightning_synflow.callback.pruner.prune_with", lambda *a, **k: pytest.fail("re-scored on resume")
    )
    resumed = _quiet(**spelling)
    checker = StepChecker(resumed)
    quiet_trainer(callbacks=[resumed, checker], max_epochs=2).fit(SmallNet("adam"), ckpt_path=path)
    assert checker.steps == 8
    assert all(torch.equal(saved[n], resumed.masks[n].cpu()) for n in saved)


def test_resume_with_same_selection_spelled_as_patterns_restores(saved_run, monkeypatch):
    saved, path = saved_run
    monkeypatch.setattr(
        "lightning_synflow.callback.pruner.prune_with", lambda *a, **k: pytest.fail("re-scored on resume")
    )
    resumed = _quiet(sparsity=0.9, parameters=["net.*.weight", "head2.weight"])
    quiet_trainer(callbacks=[resumed], max_epochs=2).fit(SmallNet("adam"), ckpt_path=path)
    assert all(torch.equal(saved[n], resumed.masks[n].cpu()) for n in saved)


def test_resume_with_changed_settings_raises_naming_each_difference(saved_run):
    _, path = saved_run
    model = SmallNet("adam")
    resumed = _quiet(sparsity=0.5, method="magnitude")
    with pytest.raises(MisconfigurationException) as error:
        quiet_trainer(callbacks=[resumed], max_epochs=2).fit(model, ckpt_path=path)
    message = str(error.value)
    assert "density: checkpoint 1/10" in message and "now 1/2" in message
    assert "method: checkpoint 'synflow', now 'magnitude'" in message
    assert "on_settings_change='keep'" in message and "on_settings_change='reprune'" in message


def test_resume_with_changed_selection_raises(saved_run):
    _, path = saved_run
    with pytest.raises(MisconfigurationException, match="prunable parameters"):
        quiet_trainer(callbacks=[_quiet(sparsity=0.9, exclude=["head2.weight"])], max_epochs=2).fit(
            SmallNet("adam"), ckpt_path=path
        )


def test_resume_with_changed_settings_keep_keeps_the_checkpoint_masks(saved_run):
    saved, path = saved_run
    resumed = _quiet(sparsity=0.5, on_settings_change="keep")
    with pytest.warns(UserWarning, match="keeping its masks"):
        quiet_trainer(callbacks=[resumed], max_epochs=2).fit(SmallNet("adam"), ckpt_path=path)
    assert all(torch.equal(saved[n], resumed.masks[n].cpu()) for n in saved)


def test_reprune_to_a_higher_sparsity_starts_from_the_checkpoint_masks_without_a_false_zero_score_warning(saved_run):
    saved, path = saved_run
    trained = SmallNet("adam")
    trained.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    with pytest.warns(UserWarning, match="score of exactly zero"):  # from dense, the pruned zeros score 0
        expected = prune(copy.deepcopy(trained), sparsity=0.95, example_input=torch.zeros(1, 32))
    resumed = _quiet(sparsity=0.95, on_settings_change="reprune")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(callbacks=[resumed], max_epochs=1).fit(SmallNet("adam"), ckpt_path=path)
    assert not [w for w in caught if "score of exactly zero" in str(w.message)]
    assert any("re-pruning" in str(w.message) for w in caught)
    assert all(torch.equal(expected[n], resumed.masks[n].cpu()) for n in expected)


def test_reprune_with_a_changed_selection_prunes_the_new_selection_from_dense(saved_run):
    saved, path = saved_run
    resumed = _quiet(sparsity=0.95, exclude=["head2.weight"], on_settings_change="reprune")
    with pytest.warns(UserWarning, match="re-pruning"):
        quiet_trainer(callbacks=[resumed], max_epochs=2).fit(SmallNet("adam"), ckpt_path=path)
    assert set(resumed.masks) == set(saved) - {"head2.weight"}
    total = sum(m.numel() for m in resumed.masks.values())
    assert sum(int(m.sum()) for m in resumed.masks.values()) == total - int(0.95 * total)


def test_resume_with_changed_settings_reprune_prunes_to_the_new_density(saved_run):
    saved, path = saved_run
    resumed = _quiet(sparsity=0.95, method="magnitude", on_settings_change="reprune")
    model = SmallNet("adam")
    with pytest.warns(UserWarning, match="re-pruning"):
        quiet_trainer(callbacks=[resumed], max_epochs=2).fit(model, ckpt_path=path)
    total = sum(m.numel() for m in resumed.masks.values())
    assert sum(int(m.sum()) for m in resumed.masks.values()) == total - int(0.95 * total)
    for name in saved:  # the checkpoint's pruned weights were zero, so magnitude keeps them pruned
        assert not bool((resumed.masks[name] & ~saved[name]).any())
    _assert_pruned_zero(model, resumed.masks)


def test_checkpoint_loads_weights_only_and_mapped(saved_run):
    saved, path = saved_run
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    fresh = _quiet(compression=10)
    fresh.load_state_dict(checkpoint["callbacks"][fresh.state_key])
    assert masks_from_checkpoint(path).keys() == saved.keys()
    assert all(torch.equal(saved[n], masks_from_checkpoint(path)[n]) for n in saved)


# -- 4. hooks left behind ---------------------------------------------------------------------------


class Interrupted(ThreeLayers):
    """Keeps one optimizer object across fits and raises in training_step when told to."""

    def __init__(self, error=None):
        super().__init__()
        self.error = error
        self.optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def training_step(self, batch, batch_idx):
        if self.error is not None and batch_idx == 2:
            raise self.error
        return super().training_step(batch, batch_idx)

    def configure_optimizers(self):
        return self.optimizer


def _our_hooks(optimizer):
    return [
        h for h in optimizer._optimizer_step_post_hooks.values() if getattr(h, "__self__", None).__class__ is MaskUpkeep
    ]


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("boom")])
def test_hooks_are_removed_after_an_exception_and_a_second_fit_masks_once(error):
    model, pruning = Interrupted(error), _quiet(sparsity=0.8)
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit if isinstance(error, KeyboardInterrupt) else RuntimeError):
            quiet_trainer(callbacks=[pruning]).fit(model)
    finally:
        signal.signal(signal.SIGINT, handler)
    assert not _our_hooks(model.optimizer)
    first = {n: m.clone() for n, m in pruning.masks.items()}
    model.error = None
    counts = []

    class CountHooks(StepChecker):
        def on_train_start(self, trainer, pl_module):
            counts.append(len(_our_hooks(model.optimizer)))
            super().on_train_start(trainer, pl_module)

    checker = CountHooks(pruning)
    quiet_trainer(callbacks=[pruning, checker]).fit(model)
    assert counts == [1] and checker.steps == 8
    assert all(torch.equal(first[n], pruning.masks[n]) for n in first)
    assert not _our_hooks(model.optimizer)


# -- 16. one instance, a second model; settings are read-only ---------------------------------------


def test_reusing_an_instance_on_another_model_prunes_that_model():
    pruning = _quiet(sparsity=0.9, method="magnitude")
    quiet_trainer(callbacks=[pruning]).fit(SmallNet("sgd"))
    torch.manual_seed(7)
    second = SmallNet("sgd")
    expected = prune(copy.deepcopy(second), sparsity=0.9, method="magnitude")
    quiet_trainer(callbacks=[pruning], max_epochs=1).fit(second)
    assert all(torch.equal(expected[n], pruning.masks[n]) for n in expected)


def test_reusing_an_instance_on_a_model_of_another_shape_prunes_it():
    pruning = _quiet(sparsity=0.9)
    quiet_trainer(callbacks=[pruning]).fit(SmallNet("sgd"))
    quiet_trainer(callbacks=[pruning]).fit(ThreeLayers())
    assert set(pruning.masks) == {"net.0.weight", "net.2.weight", "net.4.weight"}


def test_going_back_to_the_first_model_keeps_its_masks(monkeypatch):
    pruning = _quiet(sparsity=0.9, method="random")
    first, second = SmallNet("sgd"), SmallNet("sgd")
    quiet_trainer(callbacks=[pruning]).fit(first)
    masks_of_first = {n: m.clone() for n, m in pruning.masks.items()}
    quiet_trainer(callbacks=[pruning]).fit(second)
    monkeypatch.setattr("lightning_synflow.callback.pruner.prune_with", lambda *a, **k: pytest.fail("re-scored"))
    checker = StepChecker(pruning)
    quiet_trainer(callbacks=[pruning, checker]).fit(first)
    assert checker.steps == 8 and all(torch.equal(masks_of_first[n], pruning.masks[n]) for n in masks_of_first)


def test_a_failed_resume_leaves_nothing_for_the_next_fit(saved_run):
    _, path = saved_run

    class Broken(SmallNet):
        def configure_optimizers(self):
            raise RuntimeError("typo in my optimizer config")

    pruning = _quiet(sparsity=0.9, method="magnitude", on_settings_change="keep")
    with pytest.raises(RuntimeError, match="typo"):
        quiet_trainer(callbacks=[pruning]).fit(Broken("adam"), ckpt_path=path)
    fresh = SmallNet("adam")
    expected = prune(copy.deepcopy(fresh), sparsity=0.9, method="magnitude")
    quiet_trainer(callbacks=[pruning], max_steps=1).fit(fresh)
    assert all(torch.equal(expected[n], pruning.masks[n]) for n in expected)


def test_kept_masks_are_saved_with_the_settings_that_made_them(saved_run, tmp_path):
    saved, path = saved_run
    kept = _quiet(sparsity=0.5, on_settings_change="keep")
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    with pytest.warns(UserWarning, match="keeping its masks"):
        quiet_trainer(callbacks=[kept, checkpoint], enable_checkpointing=True, max_epochs=2).fit(
            SmallNet("adam"), ckpt_path=path
        )
    again = _quiet(sparsity=0.9)  # the settings that really made the masks resume them
    quiet_trainer(callbacks=[again], max_epochs=3).fit(SmallNet("adam"), ckpt_path=tmp_path / "last.ckpt")
    assert all(torch.equal(saved[n], again.masks[n]) for n in saved)
    with pytest.raises(MisconfigurationException, match="density"):
        quiet_trainer(callbacks=[_quiet(sparsity=0.5)], max_epochs=3).fit(
            SmallNet("adam"), ckpt_path=tmp_path / "last.ckpt"
        )


def test_settings_are_read_only_after_construction():
    pruning = _quiet(sparsity=0.9)
    with pytest.raises(AttributeError, match="fixed at construction"):
        pruning.sparsity = 0.5
    with pytest.raises(AttributeError, match="fixed at construction"):
        pruning.method = "magnitude"
    assert pruning.sparsity == 0.9 and pruning.iterations == 100


# -- 18. manual optimization: clipping sees masked gradients ------------------------------------------


class ManualClip(ThreeLayers):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.pruning = None
        self.leaks = []

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(super().training_step(batch, batch_idx))
        params = dict(self.named_parameters())
        self.leaks.append(sum(int((params[n].grad[~m] != 0).sum()) for n, m in self.pruning.masks.items()))
        self.clip_gradients(optimizer, gradient_clip_val=0.05, gradient_clip_algorithm="norm")
        optimizer.step()


def test_manual_optimization_gradients_are_masked_before_the_users_clipping():
    model, pruning = ManualClip(), _quiet(sparsity=0.9)
    model.pruning = pruning
    checker = StepChecker(pruning)
    quiet_trainer(callbacks=[pruning, checker]).fit(model)
    assert checker.steps == 8 and model.leaks == [0] * 8


# -- 13. strategies ----------------------------------------------------------------------------------


class LookalikeDDP(DDPStrategy):
    """Stands for DeepSpeed and other DDP subclasses that shard or wrap parameters."""


class LookalikeSingle(SingleDeviceStrategy):
    """Stands for SingleDeviceXLAStrategy."""


@pytest.mark.parametrize(
    "strategy", [lambda: LookalikeDDP(accelerator=None), lambda: LookalikeSingle(device=torch.device("cpu"))]
)
def test_unknown_strategies_are_refused_at_setup_before_any_weight_changes(strategy):
    model = SmallNet("sgd")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(MisconfigurationException, match="does not support the Lookalike.*DDP"):
        quiet_trainer(strategy=strategy(), callbacks=[_quiet(sparsity=0.9)]).fit(model)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


# -- 15. progress bar ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enable_bar", "progress", "shown"),
    [(False, None, False), (True, None, True), (True, False, False), (False, True, True)],
)
def test_progress_bar_follows_the_trainer_unless_given(capsys, enable_bar, progress, shown):
    given = {} if progress is None else {"progress": progress}  # None: the default
    pruning = SynFlowPruning(sparsity=0.9, iterations=3, verbose=False, **given)
    quiet_trainer(callbacks=[pruning], enable_progress_bar=enable_bar, max_steps=1).fit(SmallNet("sgd"))
    assert ("Pruning (synflow)" in capsys.readouterr().err) == shown


# -- 8, 10. data methods use the module's own loss; wrong input shapes say so ---------------------------


def _custom_loss(output, label):
    return nn.functional.mse_loss(output.softmax(-1), nn.functional.one_hot(label, 4).float())


class DictBatches(LightningModule):
    """Dict batches, a custom loss and self.log calls in training_step."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 4))
        self.logged = 0

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, batch_idx):
        loss = _custom_loss(self(batch["features"]), batch["label"])
        self.log("train_loss", loss)
        self.logged += 1
        return {"loss": loss}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        rows = [{"features": x, "label": y} for x, y in random_batches().dataset]
        return DataLoader(rows, batch_size=8)


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_data_methods_score_with_training_step_on_dict_batches(method):
    model = DictBatches()
    initial = copy.deepcopy(model)
    pruning = _quiet(sparsity=0.8, method=method, score_batches=3)
    quiet_trainer(callbacks=[pruning], max_steps=1).fit(model)

    def batch_loss(net, batch):
        return _custom_loss(net(batch["features"]), batch["label"])

    batches = list(model.train_dataloader())[:3]
    expected = prune(initial, sparsity=0.8, method=method, batches=batches, batch_loss=batch_loss)
    assert model.logged == 3 * (2 if method == "grasp" else 1) + 1  # scoring passes, then the one training step
    assert all(torch.equal(expected[n], pruning.masks[n]) for n in expected)


def test_wrong_input_shape_names_the_setting_and_the_shape():
    class Conv(ThreeLayers):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 4))
            self.example_input_array = None

    model = Conv()
    with pytest.raises(MisconfigurationException, match=r"input_shape.*\[1, 64\]|\[1, 64\].*input_shape"):
        quiet_trainer(callbacks=[_quiet(sparsity=0.5, input_shape=[64])]).fit(model)
