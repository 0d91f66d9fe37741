"""File size of save_sparse against torch.save(model.state_dict()), at 90%, 99% and 99.9% sparsity.

    python benchmarks/sparse_file_size.py [--models mlp vgg16]

Models: the MLP 784-4096-4096-10 and VGG-16-BN (CIFAR, 10 classes). Pruned by global magnitude: the file
size depends only on how many weights are kept, not on which, so any method gives the same figures. Every
load is checked to give back the exact state_dict.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402

from lightning_synflow import prune  # noqa: E402
from lightning_synflow.export.sparse_file import load_sparse, save_sparse  # noqa: E402
from lightning_synflow.models import MLP, vgg16  # noqa: E402

MODELS = {"mlp": lambda: MLP(784, (4096, 4096), 10), "vgg16": vgg16}
SPARSITIES = [0.9, 0.99, 0.999]


def seconds(function: object, *args: object) -> float:
    start = time.perf_counter()
    function(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def measure(name: str, sparsity: float, folder: Path) -> str:
    torch.manual_seed(0)
    model: nn.Module = MODELS[name]()
    masks = prune(model, sparsity=sparsity, method="magnitude")
    dense_path, sparse_path = folder / "dense.pt", folder / "sparse.safetensors"
    state = model.state_dict()
    save_dense = seconds(torch.save, state, dense_path)
    save = seconds(save_sparse, model, masks, sparse_path)
    load_dense = seconds(torch.load, dense_path)
    start = time.perf_counter()
    loaded = load_sparse(sparse_path)
    load = time.perf_counter() - start
    assert list(loaded) == list(state) and all(torch.equal(loaded[k], v) for k, v in state.items())
    dense_bytes, sparse_bytes = dense_path.stat().st_size, sparse_path.stat().st_size
    return (
        f"{name:<7}{sparsity:>9.1%}{dense_bytes:>14,}{sparse_bytes:>13,}{sparse_bytes / dense_bytes:>9.4f}"
        f"{dense_bytes / sparse_bytes:>9.1f}x{save / save_dense:>8.1f}x{load / load_dense:>8.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["mlp", "vgg16"])
    args = parser.parse_args()
    print(machine())
    print(
        f"{'model':<7}{'sparsity':>9}{'torch.save':>14}{'save_sparse':>13}{'fraction':>9}{'smaller':>10}"
        f"{'save t':>9}{'load t':>9}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            for sparsity in SPARSITIES:
                print(measure(name, sparsity, Path(folder)), flush=True)
    print("save t / load t: time of save_sparse / load_sparse over torch.save / torch.load (one run each)")


if __name__ == "__main__":
    main()
