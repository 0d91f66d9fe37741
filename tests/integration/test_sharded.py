"""FSDP2 (DTensor shards) on 2 CPU processes (gloo): the same masks as a single-process prune(), kept in force."""

import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_synflow import SynFlowPruning, masks_from_checkpoint, prune, score
from lightning_synflow.callback.sharded import check_sharded_module, check_sharded_setup
from lightning_synflow.pruning.api import prune_with
from lightning_synflow.pruning.loop import ScoringData
from lightning_synflow.pruning.settings import PruningSettings

pytestmark = pytest.mark.slow  # spawns FSDP2 process groups

WORLD = 2

#: prune() runs compared with a single-process prune: SynFlow (global, local), magnitude with forced ties, random.
RUNS = {
    "synflow": dict(sparsity=0.9, iterations=20),
    "synflow_local": dict(compression=20, iterations=5, scope="local"),
    "magnitude_ties": dict(sparsity=0.6, method="magnitude"),
    "random": dict(sparsity=0.7, method="random", seed=3),
}


def _net(seed: int = 0) -> nn.Sequential:
    """Odd widths, so the two ranks hold row blocks of different sizes."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 13), nn.ReLU(), nn.Linear(13, 11), nn.ReLU(), nn.Linear(11, 3))


def _shard(module: nn.Module, mesh) -> None:
    from torch.distributed.fsdp import fully_shard

    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(module, mesh=mesh)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, job: str, directory: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(WORLD),
        RANK=str(rank),
        LOCAL_RANK=str(rank),  # Lightning: processes launched externally
        NODE_RANK="0",
    )
    torch.set_num_threads(1)
    try:
        _JOBS[job](rank, directory)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _spawn(job: str, directory) -> None:
    mp.spawn(_worker, args=(_free_port(), job, str(directory)), nprocs=WORLD, join=True)


def _full(tensors: dict) -> dict:
    return {name: t.full_tensor().detach().clone() for name, t in tensors.items()}


# -- the core: prune() on a sharded module ----------------------------------------------------------------------


def _core_job(rank: int, directory: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    from lightning_synflow.pruning.distributed import MeshCollective
    from lightning_synflow.pruning.select import kth_smallest

    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    mesh = init_device_mesh("cpu", (WORLD,))
    results: dict = {}

    # The distributed threshold with heavy ties, narrowed in rounds (a small band limit), against one sort.
    generator = torch.Generator().manual_seed(5)
    everything = torch.cat(
        [torch.randint(0, 5, (3000,), generator=generator).float(), torch.rand(1000, generator=generator)]
    )
    part = everything[:1700] if rank == 0 else everything[1700:]
    ranks = [1, 2, 600, 601, 1500, 2999, 3000, 3001, 3999, 4000]
    collective = MeshCollective.of(mesh)
    results["kth"] = [kth_smallest([part], k, 256, collective) for k in ranks]  # torch backend
    results["kth_numpy"] = [kth_smallest([part[:900].numpy(), part[900:].numpy()], k, 64, collective) for k in ranks]
    results["kth_expected"] = [float(everything.kthvalue(k).values) for k in ranks]

    # Every run of RUNS on the sharded model.
    for label, options in RUNS.items():
        model = _tied_net() if label == "magnitude_ties" else _net()
        _shard(model, mesh)
        masks = prune(model, example_input=torch.zeros(1, 16), **options)
        results[label] = {"masks": _full(masks), "weights": _full(dict(model.named_parameters()))}
        results[label]["local_is_row_block"] = all(
            torch.equal(m.to_local(), results[label]["masks"][n].chunk(WORLD)[rank]) for n, m in masks.items()
        )

    # Starting masks (what a reprune or a further round passes): they stay pruned, the same masks as unsharded.
    model = _net()
    _shard(model, mesh)
    masks = prune_with(model, PruningSettings.create(sparsity=0.9, iterations=5), _SYNFLOW_DATA, masks=_start_masks())
    results["start"] = {"masks": _full(masks), "weights": _full(dict(model.named_parameters()))}

    # bfloat16 parameters: FSDP2 computes the pass in bfloat16, which rank 0 says (the unsharded path: float32).
    model = _net().to(torch.bfloat16)
    _shard(model, mesh)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        masks = prune(model, sparsity=0.9, iterations=3, example_input=torch.zeros(1, 16))
    results["bf16_warnings"] = [str(w.message) for w in caught if "runs in torch.bfloat16" in str(w.message)]
    results["bf16_kept"] = sum(int(m.full_tensor().sum()) for m in masks.values())

    # A failing pruning (the hook raises at iteration 2) and refused options leave the model as it was.
    model = _net()
    _shard(model, mesh)
    model.train()
    before = _full(dict(model.named_parameters()))
    grads = {p: torch.ones_like(p) for p in model.parameters()}
    for p, grad in grads.items():
        p.grad = grad

    def stop(iteration, masks):
        if iteration == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prune(model, sparsity=0.9, iterations=5, example_input=torch.zeros(1, 16), on_iteration=stop)
    results["restored"] = all(torch.equal(before[n], p.full_tensor()) for n, p in model.named_parameters())
    results["restored_mode"] = model.training and all(p.grad is grad for p, grad in grads.items())
    refused = []
    for options in (dict(method="snip", batches=[]), dict(invert=True), dict(min_density=0.1)):
        with pytest.raises(ValueError, match="not supported on a sharded") as error:
            prune(model, sparsity=0.9, example_input=torch.zeros(1, 16), **options)
        refused.append(str(error.value))
    with pytest.raises(ValueError, match=r"score\(\) does not support sharded"):
        score(model, example_input=torch.zeros(1, 16))
    results["refused"] = refused
    results["unchanged"] = all(torch.equal(before[n], p.full_tensor()) for n, p in model.named_parameters())

    # A synaptic flow that overflows float32 is an error (no float64 widening on shards), the model unchanged.
    model = _net()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e20)
    _shard(model, mesh)
    before = _full(dict(model.named_parameters()))
    with pytest.raises(FloatingPointError, match="not finite in torch.float32.*without the float64 widening") as error:
        prune(model, sparsity=0.9, iterations=3, example_input=torch.zeros(1, 16))
    results["overflow"] = str(error.value)
    results["overflow_unchanged"] = all(torch.equal(before[n], p.full_tensor()) for n, p in model.named_parameters())
    # One that underflows float32 (tiny weights, no biases) is refused too: scores flushed to 0 would go first.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 13, bias=False), nn.ReLU(), nn.Linear(13, 11, bias=False), nn.ReLU())
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e-12)
    _shard(model, mesh)
    with pytest.raises(FloatingPointError, match="overflow or underflow") as error:
        prune(model, sparsity=0.5, iterations=3, example_input=torch.zeros(1, 16))
    results["underflow"] = str(error.value)
    torch.save(results, f"{directory}/core{rank}.pt")


_SYNFLOW_DATA = ScoringData(example_input=torch.zeros(1, 16))


def _start_masks() -> dict:
    """Masks already in force: every third entry of each weight pruned."""
    return {
        name: (torch.arange(p.numel()) % 3 != 0).view_as(p)
        for name, p in _net().named_parameters()
        if name.endswith("weight")
    }


def test_sharded_prune_from_starting_masks_equals_single_process(core):
    model = _net()
    expected = prune_with(
        model, PruningSettings.create(sparsity=0.9, iterations=5), _SYNFLOW_DATA, masks=_start_masks()
    )
    for result in core:
        for name, mask in expected.items():
            assert torch.equal(result["start"]["masks"][name], mask), name
            assert not bool((mask & ~_start_masks()[name]).any())  # pruned entries stayed pruned
        for name, param in model.named_parameters():
            assert torch.equal(result["start"]["weights"][name], param.detach()), name


def _tied_net() -> nn.Sequential:
    """Weights taking only four magnitudes: most selections are decided by the tie rule."""
    model = _net()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.tensor([0.5, -0.25, 0.25, 1.0]).repeat(p.numel() // 4 + 1)[: p.numel()].view_as(p))
    return model


def test_distributed_threshold_is_exact_with_ties(core):
    for result in core:
        assert result["kth"] == result["kth_expected"]


def test_distributed_threshold_is_exact_with_ties_on_numpy_segments(core):
    for result in core:
        assert result["kth_numpy"] == result["kth_expected"]


@pytest.mark.parametrize(("label", "options"), list(RUNS.items()), ids=list(RUNS))
def test_sharded_prune_equals_single_process_prune(core, label, options):
    model = _tied_net() if label == "magnitude_ties" else _net()
    expected = prune(model, example_input=torch.zeros(1, 16), **options)
    for result in core:  # both ranks hold the same full masks and weights
        got = result[label]
        assert got["local_is_row_block"]
        assert sum(int(m.sum()) for m in got["masks"].values()) == sum(int(m.sum()) for m in expected.values())
        for name, mask in expected.items():
            assert torch.equal(got["masks"][name], mask), name  # the pattern too, ties included
        for name, param in model.named_parameters():
            assert torch.equal(got["weights"][name], param.detach()), name


def test_sharded_prune_in_bfloat16_says_so_once_on_rank_zero_and_keeps_the_exact_count(core):
    total = sum(p.numel() for name, p in _net().named_parameters() if name.endswith("weight"))
    assert len(core[0]["bf16_warnings"]) == 1 and core[1]["bf16_warnings"] == []
    assert "can differ from a float32 prune()" in core[0]["bf16_warnings"][0]
    assert all(result["bf16_kept"] == total - int(0.9 * total) for result in core)


def test_sharded_prune_restores_the_model_on_failure_and_refuses_before_changing_it(core):
    for result in core:
        assert result["restored"] and result["restored_mode"]
        assert result["unchanged"]
        assert "method='snip' is not supported on a sharded" in result["refused"][0]
        assert "['invert'] not supported" in result["refused"][1]
        assert "['min_density'] not supported" in result["refused"][2]
        assert result["overflow"] and result["overflow_unchanged"]
        assert "R = " in result["underflow"]


# -- the callback under ModelParallelStrategy --------------------------------------------------------------------


class ShardedModule(LightningModule):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.net = _net(seed)
        self.example_input_array = torch.zeros(1, 16)

    def configure_model(self) -> None:
        _shard(self.net, self.device_mesh["data_parallel"])

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        return self.training_step(batch, batch_idx)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.05)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(64, 16, generator=generator)
        return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)

    def val_dataloader(self):
        return self.train_dataloader()


class Record(Callback):
    """Saves every rank's full masks, full weights and Adam state at pruned entries after training."""

    def __init__(self, pruning: SynFlowPruning, path: str) -> None:
        self.pruning, self.path = pruning, path
        self.sanity_check_pruned = None

    def on_sanity_check_end(self, trainer, pl_module):
        """Whether the sanity check ran on the pruned model (masks in force, pruned weight shards zero)."""
        masks, params = self.pruning.masks, dict(pl_module.named_parameters())
        self.sanity_check_pruned = masks is not None and all(
            int((params[name].to_local()[~mask.to_local()] != 0).sum()) == 0 for name, mask in masks.items()
        )

    def on_train_end(self, trainer, pl_module):
        params = dict(pl_module.named_parameters())
        optimizer = trainer.optimizers[0]
        state = {
            name: [v.full_tensor()[~mask.full_tensor()] for v in optimizer.state[params[name]].values() if v.dim()]
            for name, mask in self.pruning.masks.items()
        }
        torch.save(
            {
                "masks": _full(self.pruning.masks),
                "weights": _full(params),
                "state": state,
                "steps": trainer.global_step,
                "sanity_check_pruned": self.sanity_check_pruned,
            },
            self.path,
        )


def _trainer(callbacks: list, distributed: bool, epochs: int, validate: bool = False) -> Trainer:
    return Trainer(
        strategy=ModelParallelStrategy(
            data_parallel_size=WORLD, tensor_parallel_size=1, save_distributed_checkpoint=distributed
        ),
        accelerator="cpu",
        devices=WORLD,
        callbacks=callbacks,
        max_epochs=epochs,
        limit_train_batches=3,
        limit_val_batches=1 if validate else 0,
        num_sanity_val_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _fit_job(rank: int, directory: str, distributed: bool) -> None:
    checkpoint = f"{directory}/last.ckpt"
    pruning = SynFlowPruning(sparsity=0.9, iterations=10, verbose=False, progress=False)
    trainer = _trainer([pruning, Record(pruning, f"{directory}/fit{rank}.pt")], distributed, 1, validate=True)
    trainer.fit(ShardedModule())
    trainer.save_checkpoint(checkpoint)
    # Resume on the same world size with a fresh callback and other initial weights: masks and weights come from
    # the checkpoint (restored after on_fit_start under this strategy), nothing is pruned again.
    resumed = SynFlowPruning(sparsity=0.9, iterations=10, verbose=False, progress=False)
    trainer = _trainer([resumed, Record(resumed, f"{directory}/resume{rank}.pt")], distributed, 2)
    trainer.fit(ShardedModule(seed=1), ckpt_path=checkpoint)
    if distributed:
        # Resuming a finished run (no training, no sanity check): the masks still reach the next checkpoint.
        trainer.save_checkpoint(f"{directory}/finished.ckpt")
        again = SynFlowPruning(sparsity=0.9, iterations=10, verbose=False, progress=False)
        trainer = _trainer([again], distributed, 2)
        trainer.fit(ShardedModule(seed=2), ckpt_path=f"{directory}/finished.ckpt")
        trainer.save_checkpoint(f"{directory}/after_finished.ckpt")


def _reprune_job(rank: int, directory: str) -> None:
    """Resume the sharded checkpoint with a higher sparsity and on_settings_change='reprune'."""
    checkpoint = f"{directory}/True/last.ckpt"
    pruning = SynFlowPruning(sparsity=0.95, iterations=10, on_settings_change="reprune", verbose=False, progress=False)
    trainer = _trainer([pruning, Record(pruning, f"{directory}/reprune{rank}.pt")], True, 2)
    trainer.fit(ShardedModule(seed=1), ckpt_path=checkpoint)


def _failing_fit_job(rank: int, directory: str) -> None:
    """A model whose forward fails on the example input: every rank stops with the same clear error, none hangs."""
    module = ShardedModule()
    module.example_input_array = torch.zeros(1, 5)
    trainer = _trainer([SynFlowPruning(sparsity=0.9, iterations=3, verbose=False, progress=False)], True, 1)
    with pytest.raises(MisconfigurationException) as error:
        trainer.fit(module)
    torch.save(str(error.value), f"{directory}/fail{rank}.pt")


def _all_jobs(rank: int, directory: str) -> None:
    """One spawn for the whole file (starting two processes costs more than the work): core, then the fits."""
    _core_job(rank, directory)
    for distributed in (True, False):
        os.makedirs(f"{directory}/{distributed}", exist_ok=True)
        _fit_job(rank, f"{directory}/{distributed}", distributed)
    _reprune_job(rank, directory)
    _failing_fit_job(rank, directory)


_JOBS = {"all": _all_jobs}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sharded")
    _spawn("all", directory)
    return directory


@pytest.fixture(scope="module")
def core(runs):
    return [torch.load(runs / f"core{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("distributed", [True, False], ids=["sharded-checkpoint", "full-checkpoint"])
def test_model_parallel_masks_in_force_and_resumed(runs, distributed):
    tmp_path = runs / str(distributed)
    expected = prune(ShardedModule(), sparsity=0.9, iterations=10, example_input=torch.zeros(1, 16))
    for stage, steps in (("fit", 3), ("resume", 6)):
        records = [torch.load(tmp_path / f"{stage}{r}.pt", weights_only=True) for r in range(WORLD)]
        assert all(record["steps"] == steps for record in records)
        if stage == "fit":  # pruned before the sanity check (this strategy restores checkpoints after on_fit_start)
            assert all(record["sanity_check_pruned"] for record in records)
        for record in records:
            assert record["masks"].keys() == expected.keys()
            for name, mask in expected.items():
                assert torch.equal(record["masks"][name], mask), (stage, name)
                weight = record["weights"][name]
                assert int((weight[~mask] != 0).sum()) == 0, (stage, name)  # pruned weights exactly zero
                assert int((weight[mask] == 0).sum()) == 0, (stage, name)  # kept weights trained
                assert all(int((s != 0).sum()) == 0 for s in record["state"][name]), (stage, name)
        for name, weight in records[0]["weights"].items():  # full weights equal across ranks
            assert torch.equal(weight, records[1]["weights"][name]), (stage, name)
    # The full masks travel in the checkpoint's metadata (rank 0's): the file, or meta.pt in a sharded checkpoint.
    masks = masks_from_checkpoint(tmp_path / "last.ckpt")  # a directory for a sharded checkpoint
    assert masks.keys() == expected.keys()
    assert all(torch.equal(masks[name], expected[name]) for name in expected)
    if distributed:
        masks = masks_from_checkpoint(tmp_path / "after_finished.ckpt")
        assert all(torch.equal(masks[name], expected[name]) for name in expected)


def test_reprune_from_a_sharded_checkpoint_prunes_further_from_its_masks(runs):
    saved = masks_from_checkpoint(runs / "True" / "last.ckpt")  # the sharded checkpoint's directory
    total = sum(m.numel() for m in saved.values())
    records = [torch.load(runs / f"reprune{r}.pt", weights_only=True) for r in range(WORLD)]
    for record in records:
        assert sum(int(m.sum()) for m in record["masks"].values()) == total - int(0.95 * total)
        for name, mask in record["masks"].items():
            assert not bool((mask & ~saved[name]).any()), name  # the checkpoint's pruned entries stay pruned
            assert torch.equal(mask, records[0]["masks"][name])
            assert int((record["weights"][name][~mask] != 0).sum()) == 0, name


# -- refused at setup ------------------------------------------------------------------------------------------


class _Mesh:
    def __init__(self, sizes):
        self.sizes = sizes

    def __getitem__(self, name):
        size = self.sizes[name]
        return type("Dim", (), {"size": lambda self: size})()


def _strategy(tensor_parallel: int) -> ModelParallelStrategy:
    strategy = ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=tensor_parallel)
    strategy._device_mesh = _Mesh({"data_parallel": 1, "tensor_parallel": tensor_parallel})
    return strategy


def test_tensor_parallelism_is_refused_at_setup():
    with pytest.raises(MisconfigurationException, match=r"tensor parallelism \(tensor_parallel_size=2\).*Supported"):
        check_sharded_setup(_strategy(2), SynFlowPruning(sparsity=0.9)._arguments)
    check_sharded_setup(_strategy(1), SynFlowPruning(sparsity=0.9)._arguments)  # accepted


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (dict(method="snip"), "method='snip'"),
        (dict(prune_epoch=1, levels=2), "prune_epoch=1, levels=2"),
        (dict(shrink=True), "shrink=True"),
        (dict(min_density=0.1, shuffle=True), "shuffle=True, .*min_density=0.1"),
    ],
)
def test_unsupported_options_are_refused_under_model_parallel(options, named):
    with pytest.raises(MisconfigurationException, match=f"does not support {named}.*method in"):
        check_sharded_setup(_strategy(1), SynFlowPruning(sparsity=0.9, **options)._arguments)


def test_a_failing_pruning_stops_every_rank_with_a_clear_error(runs):
    for rank in range(WORLD):
        message = torch.load(runs / f"fail{rank}.pt", weights_only=True)
        assert "could not run the model on an input of shape [1, 5]" in message


def test_unsharded_module_and_fsdp1_are_refused():
    from lightning.pytorch.strategies import FSDPStrategy

    from tests.helpers import quiet_trainer

    with pytest.raises(MisconfigurationException, match=r"not sharded \(not DTensors\): \['net.0.weight'.*fully_shard"):
        check_sharded_module(ShardedModule(), SynFlowPruning(sparsity=0.9).settings)
    pruning = SynFlowPruning(sparsity=0.9)
    trainer = quiet_trainer(callbacks=[pruning])
    trainer.strategy.__class__ = FSDPStrategy
    with pytest.raises(
        MisconfigurationException,
        match=r"FSDP1 \(FSDPStrategy.*refused.*ModelParallelStrategy|"
        r"ModelParallelStrategy.*FSDP1 \(FSDPStrategy",
    ):
        pruning.setup(trainer, ShardedModule(), "fit")


def test_prune_of_an_unsharded_model_does_not_import_dtensor():
    """Checking for DTensors must not import torch.distributed.tensor (time and memory inside every prune())."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from lightning_synflow import prune\n"
        "prune(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)), sparsity=0.5, iterations=2,\n"
        "      example_input=torch.zeros(1, 4))\n"
        "print('torch.distributed.tensor' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
