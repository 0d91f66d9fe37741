"""Masks survive checkpoints: compact state, weights_only loading, resume into a fresh module."""

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_synflow import SynFlowPruning
from tests.helpers import SmallNet, StepChecker, quiet_trainer


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
    assert state["settings"]["method"] == "synflow" and state["settings"]["density"] == "1/10"
    # saved weights are masked, and the state_dict loads into a fresh plain module
    fresh = SmallNet("adam")
    fresh.load_state_dict(checkpoint["state_dict"])
    params = dict(fresh.named_parameters())
    for name, mask in pruning.masks.items():
        assert bool((params[name][~mask] == 0).all())


def test_resume_restores_masks_without_rescoring_into_a_fresh_module(tmp_path, monkeypatch):
    model, pruning, path = _train_and_save(tmp_path)
    saved = {n: m.clone() for n, m in pruning.masks.items()}
    monkeypatch.setattr(
        "lightning_synflow.callback.pruner.prune_with", lambda *a, **k: pytest.fail("re-scored on resume")
    )
    torch.manual_seed(123)
    fresh = SmallNet("adam")  # different initial weights: re-scoring would give other masks
    resumed = SynFlowPruning(sparsity=0.9, progress=False, verbose=False)
    checker = StepChecker(resumed)
    quiet_trainer(callbacks=[resumed, checker], max_epochs=2).fit(fresh, ckpt_path=path)
    assert checker.steps == 8
    assert all(torch.equal(saved[n], resumed.masks[n].cpu()) for n in saved)


def test_state_key_is_the_same_whatever_the_spelling():
    # A resumed run must find its masks however its settings are spelled (compared by meaning on resume).
    keys = {SynFlowPruning(sparsity=0.9).state_key, SynFlowPruning(compression=10).state_key}
    keys.add(SynFlowPruning(sparsity=0.5, method="magnitude").state_key)
    assert keys == {"SynFlowPruning"}


def test_state_dict_round_trip_and_empty_before_pruning():
    from lightning_synflow.callback.state import unpack_state

    pruning = SynFlowPruning(sparsity=0.5)
    assert pruning.state_dict() == {}
    pruning.masks = {"w": torch.rand(5, 3) > 0.5}
    saved = unpack_state(pruning.state_dict())
    assert torch.equal(saved.masks["w"], pruning.masks["w"])
    assert saved.settings == SynFlowPruning(compression=2).settings


def test_masks_from_checkpoint_names_a_directory_that_is_no_sharded_checkpoint(tmp_path):
    from lightning_synflow import masks_from_checkpoint

    with pytest.raises(ValueError, match="is a directory without 'meta.pt'"):
        masks_from_checkpoint(tmp_path)
