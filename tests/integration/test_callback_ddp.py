"""DDP with 2 CPU processes: masks sent as tensors from rank 0, weights identical byte for byte on both ranks."""

import hashlib
import json
import pickle
import socket

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_synflow import SynFlowPruning, masks_from_checkpoint
from tests.helpers import SmallNet, quiet_trainer


@pytest.fixture(autouse=True)
def _fresh_port(monkeypatch):
    """A free port for each spawn: Lightning keeps the first MASTER_PORT it picks in os.environ and reuses it,
    so a later spawn can find it taken (EADDRINUSE) by a store an earlier test left listening."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MASTER_PORT", str(port))


pytestmark = pytest.mark.slow  # spawns two DDP processes per case


class DivergeRandomness(Callback):
    """Give every rank a different global RNG, so unsynchronized random masks would differ."""

    def setup(self, trainer, pl_module, stage):
        torch.manual_seed(1000 + trainer.global_rank)


def _contains_tensor(obj) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, dict):
        return any(_contains_tensor(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_contains_tensor(v) for v in obj)
    return False


class RecordPerRank(Callback):
    """Hashes every parameter's bytes (so +0.0 and -0.0 differ) after pruning and after the first steps of each
    epoch, and records what goes through the strategy's pickled broadcast; one JSON file per rank."""

    def __init__(self, pruning, directory):
        self.pruning, self.directory = pruning, directory

    def setup(self, trainer, pl_module, stage):
        self.hashes, self.broadcasts = {}, []
        original = trainer.strategy.broadcast

        def spy(obj, src=0):
            self.broadcasts.append({"bytes": len(pickle.dumps(obj)), "tensor": _contains_tensor(obj)})
            return original(obj, src)

        trainer.strategy.broadcast = spy

    def _hash(self, pl_module, label):
        self.hashes[label] = {
            name: hashlib.sha256(p.detach().cpu().numpy().tobytes()).hexdigest()
            for name, p in pl_module.named_parameters()
        }

    def on_train_start(self, trainer, pl_module):
        self._hash(pl_module, "after pruning")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx < 3:
            self._hash(pl_module, f"epoch {trainer.current_epoch} step {batch_idx}")

    def on_train_end(self, trainer, pl_module):
        self._hash(pl_module, "end")
        torch.save(
            {
                "masks": {n: m.cpu() for n, m in self.pruning.masks.items()},
                "weights": {n: p.detach().cpu() for n, p in pl_module.named_parameters()},
            },
            f"{self.directory}/rank{trainer.global_rank}.pt",
        )
        record = {"hashes": self.hashes, "broadcasts": self.broadcasts}
        with open(f"{self.directory}/rank{trainer.global_rank}.json", "w") as handle:
            json.dump(record, handle)


@pytest.mark.parametrize(
    ("optimizer", "rounds"),
    [("sgd", {}), ("adamw", {"prune_epoch": 1, "levels": 2})],
    ids=["sgd-fit_start", "adamw-lottery"],
)  # lottery: rank 0's masks at every round, and every rank rewinds to the same fit-start state
def test_ddp_spawn_masks_and_weights_identical_byte_for_byte_on_both_ranks(tmp_path, optimizer, rounds):
    pruning = SynFlowPruning(sparsity=0.8, method="random", progress=False, verbose=False, **rounds)
    trainer = quiet_trainer(
        strategy="ddp_spawn",
        devices=2,
        max_epochs=3 if rounds else 2,
        callbacks=[
            DivergeRandomness(),
            pruning,
            RecordPerRank(pruning, tmp_path),
            ModelCheckpoint(dirpath=tmp_path),
        ],
        enable_checkpointing=True,
    )
    model = SmallNet(optimizer)
    trainer.fit(model)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    record0, record1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # Byte for byte (+0.0 and -0.0 differ) after pruning, after every recorded step and at the end.
    assert len(record0["hashes"]) == (1 + 3 * trainer.max_epochs + 1)
    assert record0["hashes"] == record1["hashes"]
    # Masks go as tensors: the pickled broadcasts carry small metadata only.
    for record in (record0, record1):
        assert record["broadcasts"], "rank 0's outcome goes through strategy.broadcast"
        assert not any(b["tensor"] for b in record["broadcasts"])
        assert max(b["bytes"] for b in record["broadcasts"]) < 1024
    assert rank0["masks"].keys() == rank1["masks"].keys()
    for name in rank0["masks"]:
        assert torch.equal(rank0["masks"][name], rank1["masks"][name])
        assert int((~rank0["masks"][name]).sum()) > 0
    for name, mask in rank0["masks"].items():
        assert bool((rank0["weights"][name][~mask] == 0).all())
    # The launching process gets the weights back, and the masks from the checkpoint (documented for ddp_spawn).
    assert pruning.masks is None
    masks = masks_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert all(torch.equal(masks[n], rank0["masks"][n]) for n in masks)
    params = dict(model.named_parameters())
    assert all(bool((params[n].detach()[~m] == 0).all()) for n, m in masks.items())
