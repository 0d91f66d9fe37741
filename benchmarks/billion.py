"""Pruning a ~1B-weight model on CPU: peak extra memory against the prunable weights, time against the floor.

    python benchmarks/billion.py [--iterations 100] [--layers 4] [--width 16384] [--compression 100]
    python benchmarks/billion.py --model llama [--layers 20] [--width 2048]

``--model mlp`` (default) is a bias-free ReLU MLP of ``--layers`` square ``--width`` x ``--width``
layers (4 x 16384^2 = 1.07B weights, 4.3 GB in float32); ``--model llama`` is a Llama-style decoder
built from a ``transformers.LlamaConfig`` (random weights, ``--width`` hidden size, intermediate size
2.75x, ``--layers`` blocks, its Linear weights and untied LM head prunable; SynFlow feeds ones as
``inputs_embeds`` of ``--seq`` positions).

The script prunes the model once with SynFlow (``progress=True``: one progress-bar update per
iteration), the kernel's peak-RSS counter reset right before ``prune()`` and read right after, so
"peak extra" is the growth of the process's peak resident memory. It then times the floor in the same
process: as many forward+backward passes of the same model as SynFlow iterations, linearized (absolute
weights) on the all-ones input at batch 1, each producing fresh weight gradients that are freed
before the next pass (``zero_grad(set_to_none=True)``). Per iteration it records the wall time and
the resident memory (from ``on_iteration``), to show where the time and the peak go.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import current_rss, machine, peak_rss, reset_peak_rss  # noqa: E402

from lightning_synflow import prune  # noqa: E402
from lightning_synflow.models import MLP  # noqa: E402
from lightning_synflow.pruning import select_prunable  # noqa: E402
from lightning_synflow.pruning.inputs import ExampleInput, call_on_ones, output_sum  # noqa: E402

GB = 1e9


def build(kind: str, layers: int, width: int, seq: int) -> tuple[nn.Module, ExampleInput]:
    """The model and the example input SynFlow is given (only its shape is used)."""
    if kind == "mlp":
        return MLP(width, [width] * (layers - 1), width, bias=False), torch.zeros(1, width)
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=width,
        intermediate_size=int(2.75 * width),
        num_hidden_layers=layers,
        num_attention_heads=max(width // 128, 1),
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.config.use_cache = False
    return model, torch.zeros(1, seq, dtype=torch.long)


def floor(model: nn.Module, example_input: ExampleInput, passes: int) -> float:
    """Seconds for ``passes`` forward+backward passes of the linearized model on ones at batch 1."""
    prunable = {id(p) for p in select_prunable(model).values()}
    params = list(model.parameters())
    with torch.no_grad():
        for param in params:
            param.abs_()
            param.requires_grad_(id(param) in prunable)
    model.eval()

    def one_pass() -> None:
        output_sum(call_on_ones(model, example_input, torch.float32, torch.device("cpu"))).backward()
        model.zero_grad(set_to_none=True)

    one_pass()  # warm-up
    start = time.perf_counter()
    for _ in range(passes):
        one_pass()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["mlp", "llama"], default="mlp")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--layers", type=int, default=None, help="default 4 (mlp) or 20 (llama)")
    parser.add_argument("--width", type=int, default=None, help="default 16384 (mlp) or 2048 (llama)")
    parser.add_argument("--seq", type=int, default=1, help="llama: positions of the all-ones input")
    parser.add_argument("--compression", type=float, default=100.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    layers = args.layers or (4 if args.model == "mlp" else 20)
    width = args.width or (16384 if args.model == "mlp" else 2048)
    torch.set_num_threads(args.threads)
    print(machine())

    torch.manual_seed(0)
    start = time.perf_counter()
    model, example_input = build(args.model, layers, width, args.seq)
    weights = sum(p.numel() * p.element_size() for p in select_prunable(model).values())
    count = sum(p.numel() for p in select_prunable(model).values())
    print(
        f"{args.model}: {layers} layers, width {width}: {count / 1e9:.3f}B prunable weights, {weights / GB:.2f} GB "
        f"(built in {time.perf_counter() - start:.0f} s)",
        flush=True,
    )

    marks: list[tuple[float, int, int]] = []

    def record(step: int, masks: dict[str, torch.Tensor]) -> None:
        marks.append((time.perf_counter(), current_rss(), peak_rss()))

    before = reset_peak_rss()
    start = time.perf_counter()
    prune(
        model,
        compression=args.compression,
        iterations=args.iterations,
        example_input=example_input,
        progress=True,
        on_iteration=record,
    )
    seconds = time.perf_counter() - start
    extra = peak_rss() - before
    after = current_rss() - before
    floor_seconds = floor(model, example_input, args.iterations)

    times = [b[0] - a[0] for a, b in zip([(start, 0, 0), *marks], marks)]
    rise = [i + 1 for i, (a, b) in enumerate(zip([(0.0, 0, before), *marks], marks)) if b[2] > a[2]]
    print(f"prunable weights        {weights / GB:8.2f} GB")
    print(f"peak extra              {extra / GB:8.2f} GB = {extra / weights:.2f}x the prunable weights")
    print(f"resident after prune()  {after / GB:8.2f} GB above the start (the masks: {count / GB:.2f} GB)")
    print(f"peak reached at iteration {rise[-1] if rise else 0} (peak rose at iterations {rise[:12]})")
    for step, (_, rss, hwm) in enumerate(marks, 1):
        if step in (1, 2, 10, 20, 30, 40, 50, 75, args.iterations):
            rss_gb, hwm_gb = (rss - before) / GB, (hwm - before) / GB
            print(f"  after iteration {step:3d}: resident +{rss_gb:.2f} GB, peak +{hwm_gb:.2f} GB")
    median = statistics.median(times)
    print(
        f"prune() {seconds:.1f} s ({args.iterations} iterations; per iteration median {median:.2f} s, "
        f"first {times[0]:.2f} s, max {max(times):.2f} s)"
    )
    print(f"floor   {floor_seconds:.1f} s ({args.iterations} forward+backward passes)")
    print(f"ratio   {seconds / floor_seconds:.2f}x")


if __name__ == "__main__":
    main()
