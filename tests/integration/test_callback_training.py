"""Masks stay exact through training: optimizers, precision, accumulation, clipping, manual optimization."""

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from lightning_synflow import SynFlowPruning
from tests.helpers import SmallNet, StepChecker, quiet_trainer


def _fit(model, pruning, **trainer_kwargs):
    checker = StepChecker(pruning)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = quiet_trainer(callbacks=[pruning, checker], **trainer_kwargs)
    trainer.fit(model)
    return trainer, checker, before


def _assert_sparse_and_trained(model, pruning, before):
    params = dict(model.named_parameters())
    total = sum(m.numel() for m in pruning.masks.values())
    kept = sum(int(m.sum()) for m in pruning.masks.values())
    assert kept == total - int(0.8 * total)
    for name, mask in pruning.masks.items():
        assert bool((params[name][~mask] == 0).all())
        if bool(mask.any()):  # a baseline may empty a whole layer
            assert not torch.equal(params[name][mask], before[name][mask]), f"{name} did not train"


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_optimizers_and_precision(optimizer, precision):
    model, pruning = SmallNet(optimizer), SynFlowPruning(sparsity=0.8, progress=False, verbose=False)
    trainer, checker, before = _fit(model, pruning, precision=precision, max_epochs=2)
    assert checker.steps == 16
    _assert_sparse_and_trained(model, pruning, before)


def test_gradient_accumulation_and_clipping():
    model, pruning = SmallNet("sgd"), SynFlowPruning(sparsity=0.8, progress=False, verbose=False)
    seen = []

    class GradSpy(StepChecker):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            # runs after SynFlowPruning's hook: gradients of pruned entries are already zero before clipping
            for name, param in pl_module.named_parameters():
                if name in pruning.masks:
                    seen.append(bool((param.grad[~pruning.masks[name]] == 0).all()))

    spy = GradSpy(pruning)
    trainer = quiet_trainer(callbacks=[pruning, spy], accumulate_grad_batches=3, gradient_clip_val=0.01, max_epochs=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.fit(model)
    assert spy.steps == 6  # 8 batches per epoch, a step every 3 and at the end of each epoch
    assert seen and all(seen)
    _assert_sparse_and_trained(model, pruning, before)


def test_float16_with_a_grad_scaler_that_skips_steps():
    model, pruning = SmallNet("adam"), SynFlowPruning(sparsity=0.8, progress=False, verbose=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # the first steps overflow and are skipped
    trainer, checker, before = _fit(model, pruning, plugins=[MixedPrecision("16-mixed", "cpu", scaler)], max_epochs=3)
    assert 0 < checker.steps < 24
    assert scaler.get_scale() < 2.0**40
    _assert_sparse_and_trained(model, pruning, before)


def test_manual_optimization_with_two_optimizers():
    model, pruning = SmallNet("two", manual=True), SynFlowPruning(sparsity=0.8, progress=False, verbose=False)
    trainer, checker, before = _fit(model, pruning, max_epochs=1)
    assert checker.steps == 16
    _assert_sparse_and_trained(model, pruning, before)


def test_second_fit_keeps_masks_without_rescoring(monkeypatch):
    model, pruning = SmallNet("sgd"), SynFlowPruning(sparsity=0.8, progress=False, verbose=False)
    quiet_trainer(callbacks=[pruning]).fit(model)
    first = {n: m.clone() for n, m in pruning.masks.items()}
    monkeypatch.setattr("lightning_synflow.callback.pruner.prune_with", lambda *a, **k: pytest.fail("re-scored"))
    checker = StepChecker(pruning)
    quiet_trainer(callbacks=[pruning, checker], max_epochs=1).fit(model)
    assert checker.steps == 8
    assert all(torch.equal(first[n], pruning.masks[n]) for n in first)


def test_no_hooks_or_buffers_and_state_dict_keys_unchanged():
    model = SmallNet("sgd")
    keys = list(model.state_dict())
    pruning = SynFlowPruning(sparsity=0.8, progress=False, verbose=False)
    quiet_trainer(callbacks=[pruning]).fit(model)
    assert list(model.state_dict()) == keys
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    fresh = SmallNet("sgd")
    fresh.load_state_dict(model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize("method", ["magnitude", "random", "snip", "grasp"])
def test_baselines_from_the_callback(method):
    model = SmallNet("sgd", with_input=False)
    pruning = SynFlowPruning(sparsity=0.8, method=method, seed=0, score_batches=2, progress=False, verbose=False)
    trainer, checker, before = _fit(model, pruning)
    _assert_sparse_and_trained(model, pruning, before)
