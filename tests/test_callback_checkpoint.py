"""Masks survive checkpoints: compact state, weights_only loading, resume into a fresh module."""

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_synflow import SynFlowPruning

from .helpers import SmallNet, StepChecker, quiet_trainer


def _train_and_save(tmp_path, **kwargs):
    model = SmallNet("adam")
    pruning = SynFlowPruning(sparsity=0.9, progress=False, verbose=False, **kwargs)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    quiet_trainer(callbacks=[pruning, checkpoint], enable_checkpointing=True, max_epochs=1).fit(model)
    return model, pruning, tmp_path / "last.ckpt"


def test_checkpoint_holds_packed_masks_and_loads_weights_only(tmp_path):
    model, pruning, path = _train_and_save(tmp_path)
    checkpoint = torch.load(path, weights_only=True)
    state = checkpoint["callbacks"][pruning.state_key]
    for name, mask in pruning.masks.items():
        packed = state["masks"][name]
        assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8  # 1 bit per weight
        assert state["shapes"][name] == list(mask.shape)
    assert state["settings"]["method"] == "synflow" and state["settings"]["sparsity"] == 0.9
    # saved weights are masked, and the state_dict loads into a fresh plain module
    fresh = SmallNet("adam")
    fresh.load_state_dict(checkpoint["state_dict"])
    params = dict(fresh.named_parameters())
    for name, mask in pruning.masks.items():
        assert bool((params[name][~mask] == 0).all())


def test_resume_restores_masks_without_rescoring_into_a_fresh_module(tmp_path, monkeypatch):
    model, pruning, path = _train_and_save(tmp_path)
    saved = {n: m.clone() for n, m in pruning.masks.items()}
    monkeypatch.setattr("lightning_synflow.callback.prune", lambda *a, **k: pytest.fail("re-scored on resume"))
    torch.manual_seed(123)
    fresh = SmallNet("adam")  # different initial weights: re-scoring would give other masks
    resumed = SynFlowPruning(sparsity=0.9, progress=False, verbose=False)
    checker = StepChecker(resumed)
    quiet_trainer(callbacks=[resumed, checker], max_epochs=2).fit(fresh, ckpt_path=path)
    assert checker.steps == 8
    assert all(torch.equal(saved[n], resumed.masks[n].cpu()) for n in saved)


def test_state_key_tells_configurations_apart():
    a = SynFlowPruning(sparsity=0.9)
    b = SynFlowPruning(sparsity=0.5)
    c = SynFlowPruning(sparsity=0.9, method="magnitude")
    assert len({a.state_key, b.state_key, c.state_key}) == 3
    assert a.state_key == SynFlowPruning(sparsity=0.9).state_key


def test_state_dict_round_trip_and_empty_before_pruning():
    pruning = SynFlowPruning(sparsity=0.5)
    assert pruning.state_dict() == {}
    pruning.masks = {"w": torch.rand(5, 3) > 0.5}
    other = SynFlowPruning(sparsity=0.5)
    other.load_state_dict(pruning.state_dict())
    assert torch.equal(other.masks["w"], pruning.masks["w"])
