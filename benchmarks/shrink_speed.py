"""What shrinking pays: VGG-16-BN pruned by SynFlow, masked dense vs the thinner network from ``shrink``.

    python benchmarks/shrink_speed.py [--compressions 10 100 1000] [--iterations 100] [--repeats 7]
    python benchmarks/shrink_speed.py --quick   # 20 iterations, 3 repeats

Per compression: the shrunk network's MACs and parameters as fractions of the dense ones, the widths
it keeps, and, in the same process with the two models alternated, the median time of an inference
batch (eval mode, no grad) and of a training step (train mode: forward, cross-entropy, backward,
SGD step with momentum; the masked model also zeroes its pruned gradients before the step, as the
callback does: plain SGD keeps exact zeros at zero, so no re-mask after it). The outputs of the two
models agree in eval mode (max relative error printed).

One thread by default: on a machine shared with other jobs, every multi-threaded op waits for a
second core that another process may hold, which adds a per-op delay unrelated to the model's size
(``--threads 2`` to see it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine, summary  # noqa: E402

from lightning_synflow import prune  # noqa: E402
from lightning_synflow.export.shrink import plan_shrink, shrink  # noqa: E402
from lightning_synflow.models import vgg16  # noqa: E402
from lightning_synflow.report import count_macs  # noqa: E402

EXAMPLE = torch.zeros(1, 3, 32, 32)


def inference(model: nn.Module, x: torch.Tensor, steps: int) -> float:
    model.eval()
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
        return (time.perf_counter() - start) / steps


def trainer(model: nn.Module, masks: dict[str, torch.Tensor] | None) -> Callable[[torch.Tensor, torch.Tensor], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    params = dict(model.named_parameters())
    masked = [(params[name], mask) for name, mask in (masks or {}).items()]

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        for param, mask in masked:
            param.grad.mul_(mask)
        optimizer.step()

    return step


def training(model: nn.Module, step: Callable, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    return (time.perf_counter() - start) / steps


def widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--compressions", type=float, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="batches per timed repeat")
    parser.add_argument("--batch", type=int, default=16, help="inference batch")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="20 SynFlow iterations, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.repeats = 20, 3
    torch.set_num_threads(args.threads)
    print(machine())
    print(
        f"VGG-16-BN (CIFAR, 10 classes), SynFlow {args.iterations} iterations; inference batch {args.batch}, "
        f"training batch {args.train_batch} (SGD momentum); median of {args.repeats} alternated repeats of "
        f"{args.steps} batches, seconds per batch"
    )
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=generator)
    xt = torch.randn(args.train_batch, 3, 32, 32, generator=generator)
    yt = torch.randint(0, 10, (args.train_batch,), generator=generator)
    for compression in args.compressions:
        torch.manual_seed(0)
        dense = vgg16(10)
        start = time.perf_counter()
        masks = prune(dense, compression=compression, iterations=args.iterations, example_input=EXAMPLE)
        pruned = time.perf_counter() - start
        start = time.perf_counter()
        plan = plan_shrink(dense, masks, EXAMPLE)
        thin = shrink(dense, masks, EXAMPLE)
        planned = (time.perf_counter() - start) / 2
        dense.eval()
        thin.eval()
        with torch.no_grad():
            reference, output = dense(x), thin(x)
        error = float((reference - output).abs().max() / reference.abs().max())
        dense_macs, thin_macs = count_macs(dense, EXAMPLE), count_macs(thin, EXAMPLE)
        assert thin_macs == plan.shrunk_macs and dense_macs == plan.dense_macs
        print(
            f"\n10^{torch.tensor(compression).log10().item():.0f}: pruned in {pruned:.1f} s, planned+shrunk in "
            f"{planned:.2f} s; MACs {thin_macs / 1e6:.1f}M of {dense_macs / 1e6:.1f}M "
            f"({thin_macs / dense_macs:.1%}); parameters {plan.shrunk_params:,} of {plan.dense_params:,} "
            f"({plan.params_fraction:.1%}); max relative error {error:.1e}"
        )
        print(f"  conv widths kept: {widths(thin)}")
        infer: dict[str, list[float]] = {"masked": [], "shrunk": []}
        train: dict[str, list[float]] = {"masked": [], "shrunk": []}
        steps = {"masked": trainer(dense, masks), "shrunk": trainer(thin, None)}
        models = {"masked": dense, "shrunk": thin}
        for name in models:  # warm-up
            inference(models[name], x, 1)
            training(models[name], steps[name], xt, yt, 1)
        for repeat in range(args.repeats):
            order = ["masked", "shrunk"] if repeat % 2 == 0 else ["shrunk", "masked"]
            for name in order:
                infer[name].append(inference(models[name], x, args.steps))
                train[name].append(training(models[name], steps[name], xt, yt, args.steps))
        for label, times in (("inference", infer), ("training step", train)):
            speedup = statistics.median(times["masked"]) / statistics.median(times["shrunk"])
            best = min(times["masked"]) / min(times["shrunk"])
            print(
                f"  {label}: masked {summary(times['masked'])} | shrunk {summary(times['shrunk'])} | "
                f"{speedup:.2f}x faster (medians; {best:.2f}x by the minima)"
            )


if __name__ == "__main__":
    main()
