"""Scoring loop vs its floor: 100 SynFlow iterations against 100 plain float32 forward+backward passes.

    python benchmarks/scoring_speed.py [--repeats 3] [--reference] [--profile]

Same process, side by side, alternating. The floor is 100 forward+backward passes at batch 1 on the
same model (eval mode, gradients accumulated into .grad). ``--reference`` also times a restatement of
the reference implementation's loop (tests/reference_semantics.py: global kthvalue over all scores,
float32), once.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine, summary  # noqa: E402

from lightning_synflow import prune  # noqa: E402
from lightning_synflow.models import cifar_resnet, vgg16  # noqa: E402

MODELS = {"vgg16_bn": lambda: vgg16(10), "resnet20": lambda: cifar_resnet(20)}


def floor(model: torch.nn.Module, iterations: int) -> float:
    model.eval()
    x = torch.ones(1, 3, 32, 32)
    model(x).sum().backward()
    start = time.perf_counter()
    for _ in range(iterations):
        model(x).sum().backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return seconds


def pruning(build, iterations: int) -> float:
    torch.manual_seed(0)
    model = build()
    start = time.perf_counter()
    prune(model, compression=100, iterations=iterations, example_input=torch.zeros(1, 3, 32, 32))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(machine())
    for name in args.models:
        build = MODELS[name]
        torch.manual_seed(0)
        model = build()
        floors, prunes = [], []
        for _ in range(args.repeats):
            floors.append(floor(model, args.iterations))
            prunes.append(pruning(build, args.iterations))
        ratio = statistics.median(prunes) / statistics.median(floors)
        print(
            f"{name}: {args.iterations} fwd+bwd {summary(floors)} s | {args.iterations} SynFlow iterations "
            f"{summary(prunes)} s | ratio {ratio:.2f}x"
        )
        if args.reference:
            from tests.reference_semantics import reference_prune

            torch.manual_seed(0)
            start = time.perf_counter()
            reference_prune(build(), 0.01, "synflow", args.iterations, torch.zeros(1, 3, 32, 32))
            seconds = time.perf_counter() - start
            print(f"{name}: reference-style loop {seconds:.3f} s ({seconds / statistics.median(prunes):.1f}x ours)")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(pruning, build, args.iterations)
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
            print(out.getvalue())


if __name__ == "__main__":
    main()
