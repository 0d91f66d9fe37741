"""Per-step cost of keeping masks in force, side by side in one process.

    python benchmarks/upkeep_step.py                      # CPU: MLP 784-2048-2048-10, Adam, batch 32
    python benchmarks/upkeep_step.py --device cuda --dtype bfloat16 --optimizer adamw \\
        --widths 4096 4096 4096 4096 4096 10 --batch 256  # GPU: 4x4096 MLP, AdamW, bf16 weights

Three copies of the same pruned network train on the same batches, one step each in turn (the order rotates
every step, so drift and other jobs on the machine hit all three alike):

- ``none``: no upkeep (the pruned weights drift off zero; the optimizer state is dense);
- ``two-pass``: the previous release's upkeep, written out here: gradients times the mask after backward and
  weights times the mask after every step (two ``torch._foreach_mul_`` passes);
- ``MaskUpkeep``: what ``SynFlowPruning`` runs now (gradients masked once per backward; no weight pass for the
  optimizers proven to keep zeros).

A step is forward, backward, the upkeep and ``optimizer.step()``. Ratios are of median step times. At sparsity
1e-4 the optimizer state is not zero and the ratio is the upkeep's own cost; at 0.9 it also holds the cost of an
optimizer whose state is 90% exact zeros (``--sqrt`` measures why, on CPU).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402

from lightning_synflow.callback.upkeep import MaskUpkeep  # noqa: E402


def mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def random_masks(model: nn.Module, sparsity: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Masks of the Linear weights with ``round(sparsity * n)`` pruned entries each (True = kept)."""
    masks = {}
    for name, param in model.named_parameters():
        if name.endswith("weight"):
            keep = torch.ones(param.numel(), dtype=torch.bool)
            keep[torch.randperm(param.numel(), generator=generator)[: round(sparsity * param.numel())]] = False
            masks[name] = keep.view(param.shape).to(param.device)
    return masks


class TimedUpkeep(MaskUpkeep):
    """MaskUpkeep that adds the time of its own work (gradient masking, step hooks) to ``own``."""

    own = 0.0

    def mask_gradients(self) -> None:
        start = time.perf_counter()
        super().mask_gradients()
        self.own += time.perf_counter() - start

    def _before_step(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        start = time.perf_counter()
        super()._before_step(optimizer, args, kwargs)
        self.own += time.perf_counter() - start

    def _after_step(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        start = time.perf_counter()
        super()._after_step(optimizer, args, kwargs)
        self.own += time.perf_counter() - start


class Runner:
    """One copy of the network, its optimizer and its way of keeping the masks."""

    def __init__(self, kind: str, model: nn.Module, masks: dict[str, torch.Tensor], optimizer: Callable) -> None:
        self.kind, self.model = kind, model
        self.optimizer = optimizer(model.parameters())
        self.times: list[float] = []
        self.own: list[float] = []  # the upkeep's own seconds per step (on CPU; asynchronous on a GPU)
        self._own = 0.0
        params = dict(model.named_parameters())
        self.masked = [params[name] for name in masks]
        self.keep = [mask.view(torch.uint8) for mask in masks.values()]
        with torch.no_grad():
            torch._foreach_mul_(self.masked, self.keep)
        self.upkeep = None
        if kind == "MaskUpkeep":
            self.upkeep = TimedUpkeep(model, masks)
            self.upkeep.attach([self.optimizer])
        elif kind == "two-pass":
            self.optimizer.register_step_post_hook(self._remask)

    @torch.no_grad()
    def _remask(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        start = time.perf_counter()
        torch._foreach_mul_(self.masked, self.keep)
        self._own += time.perf_counter() - start

    def step(self, x: torch.Tensor, y: torch.Tensor, sync: Callable[[], None]) -> None:
        sync()
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=False)
        nn.functional.cross_entropy(self.model(x).float(), y).backward()
        if self.upkeep is not None:
            self.upkeep.mask_gradients()
        elif self.kind == "two-pass":
            began = time.perf_counter()
            with torch.no_grad():
                torch._foreach_mul_([p.grad for p in self.masked], self.keep)
            self._own += time.perf_counter() - began
        self.optimizer.step()
        sync()
        self.times.append(time.perf_counter() - start)
        if self.upkeep is not None:
            self._own, self.upkeep.own = self.upkeep.own, 0.0
        self.own.append(self._own)
        self._own = 0.0


def compare(args: argparse.Namespace, sparsity: float) -> None:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    base = mlp(args.widths).to(device, dtype)
    masks = random_masks(base, sparsity, torch.Generator().manual_seed(0))
    kwargs = {"lr": 1e-3}
    if args.impl == "fused":
        kwargs["fused"] = True
    elif args.impl == "foreach":
        kwargs["foreach"] = True
    elif args.impl == "single":
        kwargs["foreach"] = False
    factory = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[args.optimizer]
    runners = [
        Runner(kind, copy.deepcopy(base), masks, lambda p: factory(p, **kwargs))
        for kind in ("none", "two-pass", "MaskUpkeep")
    ]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    generator = torch.Generator(device).manual_seed(1)
    batches = [
        (
            torch.randn(args.batch, args.widths[0], generator=generator, device=device, dtype=dtype),
            torch.randint(0, args.widths[-1], (args.batch,), generator=generator, device=device),
        )
        for _ in range(8)
    ]
    total = args.warmup + args.steps * args.repeats
    for step in range(total):
        if step == args.warmup:
            for runner in runners:
                runner.times.clear()
                runner.own.clear()
        x, y = batches[step % len(batches)]
        for i in range(len(runners)):
            runners[(step + i) % len(runners)].step(x, y, sync)
    upkeep = runners[2].upkeep
    assert upkeep is not None and upkeep.remasked == 0, "the benchmark's optimizer should skip the weight re-mask"
    params = dict(runners[2].model.named_parameters())
    assert all(bool((params[n][~m] == 0).all()) for n, m in masks.items())
    dense = statistics.median(runners[0].times)
    print(f"sparsity {sparsity:g} ({args.steps * args.repeats} steps each, medians):")
    for runner in runners:
        median, own = statistics.median(runner.times), statistics.median(runner.own)
        print(
            f"  {runner.kind:10s} {median * 1000:8.3f} ms  (p10 {_quantile(runner.times, 0.1) * 1000:.3f}, "
            f"p90 {_quantile(runner.times, 0.9) * 1000:.3f})  ratio {median / dense:.3f}x  "
            f"own work {own * 1000:.3f} ms = {median / (median - own):.3f}x of its step without it"
        )


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _timed(fn: Callable[[], object], reps: int = 20) -> float:
    """Median milliseconds of ``fn()`` after one warm-up call."""
    fn()
    values = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        values.append(time.perf_counter() - start)
    return statistics.median(values) * 1000


def sqrt_of_zeros() -> None:
    """Adam's step with 90% exact zeros in its second moments vs none, and square roots of zeros vs numbers."""
    n = 2048 * 2048
    values = {"random": torch.rand(n), "zeros": torch.zeros(n)}
    out = torch.empty(n)
    for name, tensor in values.items():
        array, target = tensor.numpy(), out.numpy()
        print(
            f"4.2M {name:6s}: torch.sqrt {_timed(partial(torch.sqrt, tensor, out=out)):.2f} ms, "
            f"torch.rsqrt {_timed(partial(torch.rsqrt, tensor, out=out)):.2f} ms, "
            f"numpy.sqrt {_timed(partial(np.sqrt, array, out=target)):.2f} ms"
        )
    for impl, kwargs in (("single", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        line = []
        for state in ("dense", "90% zeros"):
            param = nn.Parameter(torch.randn(n))
            keep = torch.rand(n, generator=torch.Generator().manual_seed(0)) >= (0.9 if state != "dense" else 0.0)
            optimizer = torch.optim.Adam([param], lr=1e-3, **kwargs)
            param.grad = torch.randn(n) * keep
            optimizer.step()  # creates the state: exact zeros where the gradient is zero
            line.append(f"{state} {_timed(optimizer.step):.2f} ms")
        print(f"Adam({impl}) step of 4.2M weights: " + ", ".join(line))


def zeroing_primitives() -> None:
    """Ways to zero the pruned entries of 4.2M float32 gradients in place, by pruned fraction."""
    n = 2048 * 2048
    generator = torch.Generator().manual_seed(0)
    for fraction in (1e-3, 1e-2, 1e-1, 0.5, 0.9):
        grad = torch.randn(n, generator=generator)
        keep = torch.rand(n, generator=generator) >= fraction
        pruned, keep_u8, keep_f32 = ~keep, keep.view(torch.uint8), keep.float()
        positions = pruned.nonzero().view(-1)
        zero = torch.zeros(())
        timings = {
            "index_fill_(positions)": partial(grad.index_fill_, 0, positions, 0),
            "mul_(uint8 view)": partial(grad.mul_, keep_u8),
            "mul_(float32 copy)": partial(grad.mul_, keep_f32),
            "masked_fill_(~mask)": partial(grad.masked_fill_, pruned, 0),
            "where(mask, out=)": partial(torch.where, keep, grad, zero, out=grad),
        }
        print(f"pruned {fraction:g}: " + ", ".join(f"{k} {_timed(fn):.2f} ms" for k, fn in timings.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    parser.add_argument(
        "--impl", default="default", choices=["default", "single", "foreach", "fused"], help="optimizer form"
    )
    parser.add_argument("--widths", type=int, nargs="+", default=[784, 2048, 2048, 10])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[1e-4, 0.9])
    parser.add_argument("--steps", type=int, default=100, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--sqrt", action="store_true", help="also time torch.sqrt and Adam's step on exact zeros")
    parser.add_argument("--primitives", action="store_true", help="also time ways to zero pruned entries")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    if args.device == "cuda":
        print(torch.cuda.get_device_name())
    print(
        f"{args.optimizer} ({args.impl}), {args.dtype}, MLP {'-'.join(map(str, args.widths))}, batch {args.batch}, "
        f"{args.device}"
    )
    if args.sqrt:
        sqrt_of_zeros()
    if args.primitives:
        zeroing_primitives()
    for sparsity in args.sparsities:
        compare(args, sparsity)


if __name__ == "__main__":
    main()
