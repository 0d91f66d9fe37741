"""Per-step cost of keeping masks: SynFlowPruning vs no pruning vs Lightning's ModelPruning.

    python benchmarks/mask_overhead.py [--steps 100] [--repeats 2] [--fused]

Same process, side by side. Each run trains 2 epochs; only the steps of the second epoch are timed
(ModelPruning prunes at the end of the first), from on_train_batch_start to on_train_batch_end
(forward, backward, optimizer step and every hook). All pruners remove ``--sparsity`` of the weights (0.9).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelPruning
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, summary  # noqa: E402

from lightning_synflow import SynFlowPruning  # noqa: E402
from lightning_synflow.callback import synflow_pruning  # noqa: E402
from lightning_synflow.callback.upkeep import MaskUpkeep  # noqa: E402
from lightning_synflow.models import cifar_resnet  # noqa: E402


class Classifier(LightningModule):
    fused = False

    def __init__(self, net: nn.Module, shape: list[int]):
        super().__init__()
        self.net = net
        self.example_input_array = torch.zeros(1, *shape)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        # fused=True: one kernel per step; the default foreach path takes torch.sqrt, which is slow on zeros.
        return torch.optim.Adam(self.parameters(), lr=1e-3, fused=self.fused or None)


class TimedUpkeep(MaskUpkeep):
    """MaskUpkeep that also times its own per-step work (gradient masking, step hooks)."""

    current = 0.0  # seconds spent in the step under way; StepTimer collects it

    def mask_gradients(self) -> None:
        start = time.perf_counter()
        super().mask_gradients()
        TimedUpkeep.current += time.perf_counter() - start

    def _before_step(self, optimizer, args, kwargs):
        start = time.perf_counter()
        super()._before_step(optimizer, args, kwargs)
        TimedUpkeep.current += time.perf_counter() - start

    def _after_step(self, optimizer, args, kwargs):
        start = time.perf_counter()
        super()._after_step(optimizer, args, kwargs)
        TimedUpkeep.current += time.perf_counter() - start


synflow_pruning.MaskUpkeep = TimedUpkeep  # what SynFlowPruning builds when it attaches its masks


class StepTimer(Callback):
    def __init__(self):
        self.times: list[float] = []
        self.upkeep: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()
        TimedUpkeep.current = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1:
            self.times.append(time.perf_counter() - self._start)
            self.upkeep.append(TimedUpkeep.current)


CASES = {
    "mlp": (
        lambda: nn.Sequential(
            nn.Flatten(), nn.Linear(784, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10)
        ),
        [784],
        32,
    ),
    "resnet20": (lambda: cifar_resnet(20), [3, 32, 32], 128),
}


def pruner(kind: str, sparsity: float):
    if kind == "none":
        return []
    if kind == "synflow":
        return [SynFlowPruning(sparsity=sparsity, verbose=False, progress=False)]
    return [
        ModelPruning(
            "l1_unstructured",
            amount=sparsity,
            use_global_unstructured=True,
            apply_pruning=lambda epoch: epoch == 0,
            verbose=0,
        )
    ]


def run(case: str, kind: str, steps: int, sparsity: float) -> tuple[list[float], list[float]]:
    build, shape, batch = CASES[case]
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(steps * batch, *shape), torch.randint(0, 10, (steps * batch,)))
    timer = StepTimer()
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*pruner(kind, sparsity), timer],
    )
    trainer.fit(Classifier(build(), shape), DataLoader(data, batch_size=batch))
    return timer.times, timer.upkeep


def sqrt_of_zeros() -> None:
    """Adam takes sqrt of its second moments, which are exactly 0 for every pruned weight."""
    values = {"random": torch.rand(2048 * 2048), "zeros": torch.zeros(2048 * 2048)}
    for name, tensor in values.items():
        out, array = torch.empty_like(tensor), tensor.numpy()
        runs = (("torch.sqrt", partial(torch.sqrt, tensor, out=out)), ("numpy.sqrt", partial(np.sqrt, array)))
        for label, fn in runs:
            fn()
            start = time.perf_counter()
            for _ in range(50):
                fn()
            print(f"{label} of 4.2M {name:6s}: {(time.perf_counter() - start) / 50 * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch (mlp); resnet20 uses a fifth")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--fused", action="store_true", help="use Adam(fused=True) in every run")
    parser.add_argument("--sparsity", type=float, default=0.9, help="fraction pruned by both pruners")
    parser.add_argument(
        "--keep-denormals",
        action="store_true",
        help="do not flush denormals to zero (sparse nets then hit slow denormal arithmetic)",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_flush_denormal(not args.keep_denormals)
    Classifier.fused = args.fused
    print(f"flush denormals: {not args.keep_denormals}; Adam fused: {args.fused}")
    sqrt_of_zeros()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(machine())
    for case in args.cases:
        steps = args.steps if case == "mlp" else max(args.steps // 5, 5)
        times: dict[str, list[float]] = {"none": [], "synflow": [], "modelpruning": []}
        own_work: list[float] = []
        for _ in range(args.repeats):
            for kind in times:
                step_times, upkeep_times = run(case, kind, steps, args.sparsity)
                times[kind] += step_times
                if kind == "synflow":
                    own_work += upkeep_times
        base = statistics.median(times["none"])
        for kind, values in times.items():
            ratio = statistics.median(values) / base
            print(f"{case:9s} {kind:13s} median step {summary([v * 1000 for v in values])} ms  ratio {ratio:.3f}x")
        upkeep = statistics.median(own_work)
        own = statistics.median(times["synflow"])
        print(
            f"{case:9s} SynFlowPruning's own per-step work (gradient masking + step hooks): median "
            f"{upkeep * 1000:.3f} ms = {own / (own - upkeep):.3f}x of the same sparse step without it"
        )


if __name__ == "__main__":
    main()
