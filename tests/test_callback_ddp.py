"""DDP with 2 CPU processes: identical masks (rank 0 authoritative) and identical weights on both ranks."""

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_synflow import SynFlowPruning, masks_from_checkpoint

from .helpers import SmallNet, quiet_trainer


class DivergeRandomness(Callback):
    """Give every rank a different global RNG, so unsynchronized random masks would differ."""

    def setup(self, trainer, pl_module, stage):
        torch.manual_seed(1000 + trainer.global_rank)


class DumpPerRank(Callback):
    def __init__(self, pruning, directory):
        self.pruning, self.directory = pruning, directory

    def on_train_end(self, trainer, pl_module):
        torch.save(
            {
                "masks": {n: m.cpu() for n, m in self.pruning.masks.items()},
                "weights": {n: p.detach().cpu() for n, p in pl_module.named_parameters()},
            },
            f"{self.directory}/rank{trainer.global_rank}.pt",
        )


@pytest.mark.parametrize(
    "rounds", [{}, {"prune_epoch": 1, "levels": 2}], ids=["fit_start", "lottery"]
)  # lottery: rank 0's masks at every round, and every rank rewinds to the same fit-start state
def test_ddp_spawn_masks_and_weights_identical_on_both_ranks(tmp_path, rounds):
    pruning = SynFlowPruning(sparsity=0.8, method="random", progress=False, verbose=False, **rounds)
    trainer = quiet_trainer(
        strategy="ddp_spawn",
        devices=2,
        max_epochs=3 if rounds else 2,
        callbacks=[DivergeRandomness(), pruning, DumpPerRank(pruning, tmp_path), ModelCheckpoint(dirpath=tmp_path)],
        enable_checkpointing=True,
    )
    model = SmallNet("sgd")
    trainer.fit(model)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["masks"].keys() == rank1["masks"].keys()
    for name in rank0["masks"]:
        assert torch.equal(rank0["masks"][name], rank1["masks"][name])
        assert int((~rank0["masks"][name]).sum()) > 0
    for name in rank0["weights"]:
        assert torch.equal(rank0["weights"][name], rank1["weights"][name]), name
    for name, mask in rank0["masks"].items():
        assert bool((rank0["weights"][name][~mask] == 0).all())
    # The launching process gets the weights back, and the masks from the checkpoint (documented for ddp_spawn).
    assert pruning.masks is None
    masks = masks_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert all(torch.equal(masks[n], rank0["masks"][n]) for n in masks)
    params = dict(model.named_parameters())
    assert all(bool((params[n].detach()[~m] == 0).all()) for n, m in masks.items())
