"""Sparse CPU inference: the raw torch.sparse calls, the crossover density, sparsify() on an MLP, sparse convs.

    python benchmarks/sparse_inference.py [--repeats 30] [--threads N]

Same process, medians of alternated repeats (every candidate once per round). Four parts:

1. raw calls on one 4096x4096 layer at 1% density, batch 1 and 16: which form of the CSR product is fastest;
2. the crossover: dense ``F.linear`` against :class:`SparseLinear` on a 4096x4096 layer at densities 1% to 50%;
3. the MLP 784-4096-4096-10 pruned to 99% by SynFlow: the dense masked model, ``sparsify()`` and the same
   network written by hand with the fastest raw calls (what the module adds around the kernels);
4. convolutions at 1% density: dense ``F.conv2d`` against :class:`SparseConv2d` (im2col + CSR).
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

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402

from lightning_synflow import prune  # noqa: E402
from lightning_synflow.export.sparse_inference import (  # noqa: E402
    SparseConv2d,
    SparseLinear,
    alternated_times,
    sparsify,
)
from lightning_synflow.masks import apply_masks  # noqa: E402
from lightning_synflow.models import MLP  # noqa: E402

DENSITIES = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5]


def medians(functions: dict[str, Callable[[], object]], repeats: int, calls: int = 1) -> dict[str, float]:
    """Median milliseconds per call, in turns, under inference_mode; each timing covers ``calls`` calls in a row."""

    def several(function: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(calls):
                function()

        return run

    with torch.inference_mode():
        times = alternated_times({name: several(f) for name, f in functions.items()}, repeats=repeats, warmup=3)
    return {name: 1e3 * statistics.median(values) / calls for name, values in times.items()}


def sparse_linear(size: int, density: float) -> tuple[nn.Linear, SparseLinear]:
    layer = nn.Linear(size, size)
    with torch.no_grad():
        layer.weight.mul_(torch.rand(size, size) < density)
    return layer.eval().requires_grad_(False), SparseLinear(layer)


def csr(weight: torch.Tensor, index_dtype: torch.dtype) -> torch.Tensor:
    matrix = weight.to_sparse_csr()
    return torch.sparse_csr_tensor(
        matrix.crow_indices().to(index_dtype),
        matrix.col_indices().to(index_dtype),
        matrix.values(),
        matrix.shape,
        check_invariants=False,
    )


def raw_candidates(layer: nn.Linear, sparse: SparseLinear, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The forms of ``x W^T + b`` to compare, on CSR copies of ``layer.weight`` with 64- and 32-bit indices."""
    w64, w32 = csr(layer.weight, torch.int64), csr(layer.weight, torch.int32)
    bias, column = layer.bias, layer.bias[:, None]
    transposed = x.T.contiguous().T  # the layout a previous sparse layer hands over
    calls: dict[str, Callable[[], object]] = {
        "SparseLinear module": partial(sparse, x),
        "(W @ x.T).T + b, int64": lambda: (w64 @ x.T).T + bias,
        "torch.sparse.mm(W, x.T).T + b, int64": lambda: torch.sparse.mm(w64, x.T).T + bias,
        "addmm(b[:, None], W, x.T).T, int64": lambda: torch.addmm(column, w64, x.T).T,
        "addmm(b[:, None], W, x.T).T, int32": lambda: torch.addmm(column, w32, x.T).T,
        "addmm, int32, transposed x": lambda: torch.addmm(column, w32, transposed.T).T,
        "addmm, int32, .contiguous() out": lambda: torch.addmm(column, w32, x.T).T.contiguous(),
    }
    if x.shape[0] == 1:
        calls["torch.mv(W, x) + b, int64"] = lambda: torch.mv(w64, x[0]) + bias
        calls["addmv(b, W, x), int64"] = lambda: torch.addmv(bias, w64, x[0])
        calls["addmv(b, W, x), int32"] = lambda: torch.addmv(bias, w32, x[0])
    return calls


def same_raw_call(sparse: SparseLinear, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The call that ``sparse`` makes on a 2-D ``x``, on its own tensors, without the module around it."""
    weight, bias, column = sparse._csr()
    if x.shape[0] == 1:
        return partial(torch.addmv, bias, weight, x[0])
    return lambda: torch.addmm(column, weight, x.T).T.contiguous()


def raw_calls(repeats: int) -> None:
    print("\n## 1. Raw calls, 4096x4096 layer at 1% density (ms, median; speedup over dense F.linear)")
    print("The sparse forms are timed in turns among themselves, 10 calls in a row per timing (their matrices stay")
    print("in cache, as in repeated inference); the dense layer, which streams 64 MB on every call, alone.")
    layer, sparse = sparse_linear(4096, 0.01)
    for batch in (1, 16):
        x = torch.randn(batch, 4096)
        dense = medians({"dense": partial(layer, x)}, repeats)["dense"]
        times = medians(raw_candidates(layer, sparse, x), repeats, calls=10)
        print(f"batch {batch}: dense nn.Linear {dense:.3f} ms")
        for name, ms in sorted(times.items(), key=lambda item: item[1]):
            print(f"  {name:<40}{ms:>9.3f} ms {dense / ms:>8.1f}x")
        # What the module adds around its kernel: the same call on the module's own tensors, in turns of their own.
        pair = medians({"module": partial(sparse, x), "raw": same_raw_call(sparse, x)}, repeats, calls=10)
        print(f"  SparseLinear / the same raw call on its own tensors: {pair['module'] / pair['raw']:.3f}")


def dense_over_sparse(dense: nn.Module, sparse: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median dense time / median sparse time on ``x``."""
    times = medians({"dense": partial(dense, x), "sparse": partial(sparse, x)}, repeats)
    return times["dense"] / times["sparse"]


def crossover(repeats: int) -> None:
    print("\n## 2. Crossover, 4096x4096 layer: dense time / SparseLinear time (> 1: sparse pays)")
    print(f"{'density':>8}{'batch 1':>10}{'batch 16':>10}")
    for density in DENSITIES:
        layer, sparse = sparse_linear(4096, density)
        ratios = [dense_over_sparse(layer, sparse, torch.randn(batch, 4096), repeats) for batch in (1, 16)]
        print(f"{density:>8.0%}{ratios[0]:>9.2f}x{ratios[1]:>9.2f}x")


def by_hand(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The MLP written with the fastest raw calls (addmv at batch 1, addmm on the transposed layout), no module.

    The layers that ``model`` (a ``sparsify`` copy) keeps dense are dense here too.
    """
    weights = []
    for layer in model.modules():
        if isinstance(layer, SparseLinear):
            weights.append((layer._csr()[0], layer.bias, layer.bias[:, None]))
        elif isinstance(layer, nn.Linear):
            weights.append((layer.weight, layer.bias, layer.bias[:, None]))
    last = len(weights) - 1

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            h = x[0]
            for i, (weight, bias, _) in enumerate(weights):
                h = torch.addmv(bias, weight, h)
                h = h if i == last else torch.relu(h)
            return h[None]
        h = x.T
        for i, (weight, _, column) in enumerate(weights):
            h = torch.addmm(column, weight, h)
            h = h if i == last else torch.relu(h)
        return h.T

    return forward


def mlp(repeats: int, iterations: int) -> None:
    print(f"\n## 3. MLP 784-4096-4096-10, SynFlow 99% sparse ({iterations} iterations)")
    torch.manual_seed(0)
    model = MLP(784, (4096, 4096), 10)
    start = time.perf_counter()
    masks = prune(model, sparsity=0.99, example_input=torch.zeros(1, 784), iterations=iterations)
    print(
        f"pruned in {time.perf_counter() - start:.1f} s; layer densities: "
        + ", ".join(f"{name} {float(mask.float().mean()):.4f}" for name, mask in masks.items())
    )
    dense = apply_masks(copy.deepcopy(model), masks).eval().requires_grad_(False)
    fast = sparsify(model, masks)
    print(fast)
    hand = by_hand(fast)
    print(
        f"{'batch':>5}{'dense ms':>10}{'sparsify ms':>13}{'sparsify ms':>13}{'by hand ms':>12}{'speedup':>9}"
        f"{'module/hand':>13}{'rel. error':>12}"
    )
    print(f"{'':>5}{'(with dense)':>23}{'(with hand)':>13}{'(with sparsify)':>16}")
    for batch in (1, 16):
        x = torch.randn(batch, 784)
        times = medians({"dense": partial(dense, x), "sparse": partial(fast, x)}, repeats)
        # Module against raw calls in turns of their own: the dense model's 64 MB would flush their caches.
        times |= {
            f"{name} alone": ms
            for name, ms in medians({"sparse": partial(fast, x), "hand": partial(hand, x)}, repeats, calls=10).items()
        }
        with torch.inference_mode():
            reference = dense(x)
            error = float((fast(x) - reference).norm() / reference.norm())
        print(
            f"{batch:>5}{times['dense']:>10.3f}{times['sparse']:>13.3f}{times['sparse alone']:>13.3f}"
            f"{times['hand alone']:>12.3f}{times['dense'] / times['sparse']:>8.1f}x"
            f"{times['sparse alone'] / times['hand alone']:>13.3f}{error:>12.1e}"
        )


def convs(repeats: int) -> None:
    print("\n## 4. Convolutions 3x3 (VGG layers): dense time / SparseConv2d time (> 1: sparse pays)")
    densities = (0.01, 0.05, 0.2)
    print(f"{'layer':<18}" + "".join(f"{f'{d:.0%} b1':>10}{f'{d:.0%} b16':>10}" for d in densities))
    for channels, size in [(64, 32), (128, 16), (256, 8), (512, 4), (512, 2)]:
        ratios = []
        for density in densities:
            conv = nn.Conv2d(channels, channels, 3, padding=1).eval().requires_grad_(False)
            with torch.no_grad():
                conv.weight.mul_(torch.rand(conv.weight.shape) < density)
            sparse = SparseConv2d(conv)
            for batch in (1, 16):
                ratios.append(dense_over_sparse(conv, sparse, torch.randn(batch, channels, size, size), repeats))
        print(f"{f'{channels}->{channels} @ {size}x{size}':<18}" + "".join(f"{r:>9.2f}x" for r in ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=100, help="SynFlow iterations for the MLP")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine())
    torch.manual_seed(0)
    raw_calls(args.repeats)
    crossover(args.repeats)
    mlp(args.repeats, args.iterations)
    convs(max(5, args.repeats // 3))


if __name__ == "__main__":
    main()
