"""GPU checks and figures: CUDA pruning path, AMP (fp16 with a GradScaler that skips steps, bf16), checkpoints
across devices, timm warnings; SynFlow's speed and memory against their floors; mask upkeep per training step.

    PYTHONPATH=. python benchmarks/gpu_check.py                      # one CUDA GPU (estimated 3-5 min on an H200)
    PYTHONPATH=. python benchmarks/gpu_check.py --figures-only       # only the figures
    PYTHONPATH=. python benchmarks/gpu_check.py --device cpu --tiny  # smoke run: tiny sizes, 10 iterations

Prints one line per check and exits non-zero when a check fails. Figures, each case in one process side by side:

- SynFlow, 100 iterations (compression 100), as a ratio to its floor: 100 forward+backward passes of the same
  linearized model (absolute weights, all-ones input, eval mode), measured in the same process; cases: bias-free
  MLPs of about 0.91B and 3.8B weights, VGG-16-BN and ResNet-20 (targets: <= 2x at 1B weights, <= 1.5x on the
  CIFAR networks);
- the peak memory the pruning adds (``torch.cuda.max_memory_allocated`` growth) as a ratio to the prunable
  weights' bytes (target <= 2x);
- mask upkeep per training step (``benchmarks/upkeep_step.py``: AdamW, bf16 autocast and bf16 weights, MLP 4
  layers of 4096, batch 256), with ``MaskUpkeep`` against none.

It needs only torch, lightning and numpy. On ``--device cpu`` the selection is forced onto its torch backend (the
one CUDA tensors take) and no memory is measured. The markdown rows at the end go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import upkeep_step  # noqa: E402

from lightning_synflow import SynFlowPruning, prune, score  # noqa: E402
from lightning_synflow.models import MLP, ImageClassifier, cifar_resnet, vgg16  # noqa: E402
from lightning_synflow.models.resnet import CifarResNet  # noqa: E402
from lightning_synflow.pruning.select import selection_backend  # noqa: E402

FAILED = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"[{'ok' if ok else 'FAIL'}] {name} {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def cuda_vs_cpu_masks() -> None:
    torch.manual_seed(0)
    cpu = vgg16(10).double()
    gpu = copy.deepcopy(cpu).cuda()
    example = torch.zeros(1, 3, 32, 32, dtype=torch.float64)
    a = prune(cpu, compression=100, iterations=1, example_input=example)
    b = prune(gpu, compression=100, iterations=1, example_input=example.cuda())
    same = sum(int((a[n] == b[n].cpu()).sum()) for n in a) / sum(m.numel() for m in a.values())
    check("single-shot float64 masks CUDA == CPU", same > 0.99999, f"(agreement {same:.7f})")
    torch.manual_seed(0)
    cpu = vgg16(10)
    gpu = copy.deepcopy(cpu).cuda()
    a = prune(cpu, compression=100, example_input=torch.zeros(1, 3, 32, 32))
    b = prune(gpu, compression=100, example_input=torch.zeros(1, 3, 32, 32, device="cuda"))
    kept = sum(int(m.sum()) for m in b.values())
    dens = max(
        abs(float(a[n].float().mean()) - float(b[n].float().mean())) / max(float(a[n].float().mean()), 1e-9) for n in a
    )
    check("100-iteration CUDA exact count", kept == 14_715_584 - int(0.99 * 14_715_584), f"(kept {kept})")
    check("100-iteration CUDA per-layer density vs CPU within 5%", dens < 0.05, f"(max relative gap {dens:.4f})")
    check("weights zeroed on CUDA", all(bool((p[~b[n]] == 0).all()) for n, p in gpu.named_parameters() if n in b))


class Case:
    """One figure's network: how to build it (on the current default device) and its example input shape."""

    def __init__(self, name: str, build: Callable[[], nn.Module], shape: tuple[int, ...], repeats: int) -> None:
        self.name, self.build, self.shape, self.repeats = name, build, shape, repeats


def cases(tiny: bool) -> list[Case]:
    """The figures' networks: full size, or tiny ones that run every step of the script in seconds on a CPU."""

    def mlp(width: int) -> Callable[[], nn.Module]:  # bias-free: 3 width x width layers and a 10-way head
        return lambda: MLP(width, [width] * 3, 10, bias=False)

    if tiny:
        small_vgg = lambda: nn.Sequential(  # noqa: E731
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
            nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10),
        )  # fmt: skip
        return [
            Case("mlp (tiny)", mlp(48), (48,), 1),
            Case("mlp (tiny, wider)", mlp(96), (96,), 1),
            Case("vgg-like (tiny)", small_vgg, (3, 32, 32), 2),
            Case("resnet-8 (tiny)", lambda: CifarResNet(8, width=4), (3, 32, 32), 1),
        ]
    return [
        Case("mlp 0.91B", mlp(17408), (17408,), 1),  # 3 * 17408^2 + 174080 = 909.3M weights
        Case("mlp 3.8B", mlp(35584), (35584,), 1),  # 3.799B weights
        Case("vgg16_bn", lambda: vgg16(10), (3, 32, 32), 3),
        Case("resnet20", lambda: cifar_resnet(20), (3, 32, 32), 3),
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _linearize(model: nn.Module) -> None:
    """Absolute values of every floating-point tensor, in place (SynFlow's scores depend only on those)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            tensor.abs_()


def floor_seconds(model: nn.Module, shape: tuple[int, ...], iterations: int, device: torch.device) -> float:
    """Seconds of ``iterations`` forward+backward passes of the linearized ``model`` on one all-ones example."""
    model.eval()
    _linearize(model)
    ones = torch.ones((1, *shape), device=device)
    for _ in range(3):  # warm-up (kernels, workspaces)
        model(ones).sum().backward()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        model(ones).sum().backward()
    _sync(device)
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return seconds


def prune_seconds(model: nn.Module, shape: tuple[int, ...], iterations: int, device: torch.device) -> tuple[float, int]:
    """Seconds of SynFlow pruning ``model`` to compression 100, and the peak bytes it adds (0 off CUDA)."""
    example = torch.zeros((1, *shape), device=device)
    cuda = device.type == "cuda"
    _sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layer collapse at compression 100 on the tiny networks
        prune(model, compression=100, iterations=iterations, example_input=example)
    _sync(device)
    seconds = time.perf_counter() - start
    return seconds, (torch.cuda.max_memory_allocated(device) - before) if cuda else 0


def figure(case: Case, iterations: int, device: torch.device) -> str:
    """Time and memory of one case against its floors; returns its markdown row."""
    floors, prunes, peaks = [], [], []
    count = size = 0
    for _ in range(case.repeats):
        for timed in (floor_seconds, prune_seconds):
            torch.manual_seed(0)
            with device:
                model = case.build()  # a fresh copy each: the floor linearizes its own, pruning zeroes its own
            weights = [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
            count, size = sum(w.numel() for w in weights), sum(w.numel() * w.element_size() for w in weights)
            if timed is floor_seconds:
                floors.append(floor_seconds(model, case.shape, iterations, device))
            else:
                seconds, peak = prune_seconds(model, case.shape, iterations, device)
                prunes.append(seconds)
                peaks.append(peak)
            del model, weights
            if device.type == "cuda":
                torch.cuda.empty_cache()
    floor, pruning = statistics.median(floors), statistics.median(prunes)
    memory = f"{max(peaks) / size:.2f}x ({max(peaks) / 2**30:.2f} GiB)" if device.type == "cuda" else "n/a"
    print(
        f"[figure] {case.name} ({count:,} prunable weights): {iterations} fwd+bwd {floor:.3f} s | "
        f"SynFlow {iterations} iterations {pruning:.3f} s = {pruning / floor:.2f}x the floor | peak extra memory "
        f"{memory} of the prunable weights",
        flush=True,
    )
    ratio = pruning / floor
    return f"| {case.name} | {count:,} | {floor:.3f} s | {pruning:.3f} s | {ratio:.2f}x | {memory} |"


def upkeep(device: torch.device, tiny: bool) -> None:
    """Training step with ``MaskUpkeep`` against none (benchmarks/upkeep_step.py), AdamW: bf16 autocast over float32
    weights (the issue's figure), then bf16 weights (BENCHMARKS.md's command)."""
    widths = [64, 64, 10] if tiny else [4096] * 5 + [10]
    for dtype, autocast in (("float32", True), ("bfloat16", False)):
        args = argparse.Namespace(
            device=device.type,
            dtype=dtype,
            optimizer="adamw",
            impl="default",
            widths=widths,
            batch=8 if tiny else 256,
            steps=3 if tiny else 100,
            repeats=1 if tiny else 3,
            warmup=1 if tiny else 10,
        )
        how = "bf16 autocast, float32 weights" if autocast else "bf16 weights"
        print(f"[figure] mask upkeep per step, AdamW, {how}, MLP {'-'.join(map(str, widths))}, batch {args.batch}")
        with torch.autocast(device.type, dtype=torch.bfloat16) if autocast else nullcontext():
            for sparsity in (1e-4, 0.9):
                upkeep_step.compare(args, sparsity)


def figures(device: torch.device, tiny: bool, iterations: int) -> None:
    """Every figure, then the markdown rows for BENCHMARKS.md."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (torch selection backend)"
    forced = selection_backend("torch") if device.type == "cpu" else nullcontext()
    with forced:
        rows = [figure(case, iterations, device) for case in cases(tiny)]
    upkeep(device, tiny)
    print(
        f"\nSynFlow {iterations} iterations vs {iterations} fwd+bwd, {name}, torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}:\n"
    )
    print("| network | prunable weights | floor | SynFlow | ratio | peak extra memory / weights |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(row)


def amp_training() -> None:
    from lightning.pytorch import Trainer
    from lightning.pytorch.plugins.precision import MixedPrecision
    from torch.utils.data import DataLoader, TensorDataset

    for label, kwargs in (
        (
            "16-mixed + GradScaler skipping steps",
            {"plugins": [MixedPrecision("16-mixed", "cuda", torch.amp.GradScaler("cuda", init_scale=2.0**40))]},
        ),
        ("bf16-mixed", {"precision": "bf16-mixed"}),
    ):
        torch.manual_seed(0)
        model = ImageClassifier(MLP(64, [256, 256], 10), 10, [64], optimizer="adam", lr=1e-3, weight_decay=1e-4)
        pruning = SynFlowPruning(sparsity=0.95, verbose=False, progress=False)
        data = TensorDataset(torch.randn(512, 64), torch.randint(0, 10, (512,)))
        steps, bad = [0], [0]

        def hook(optimizer, args, kw, pruning=pruning, model=model, steps=steps, bad=bad):
            steps[0] += 1
            params = dict(model.named_parameters())
            bad[0] += sum(int((params[n][~m] != 0).sum()) for n, m in pruning.masks.items())

        class Attach(__import__("lightning").pytorch.Callback):
            def on_train_start(self, trainer, pl_module):
                for opt in trainer.optimizers:
                    opt.register_step_post_hook(hook)

        trainer = Trainer(
            accelerator="cuda",
            devices=1,
            max_epochs=3,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[pruning, Attach()],
            gradient_clip_val=1.0,
            **kwargs,
        )
        trainer.fit(model, DataLoader(data, batch_size=32))
        check(
            f"AMP {label}: pruned weights exactly 0 after every real step",
            bad[0] == 0 and steps[0] > 0,
            f"({steps[0]} real steps of 48, {bad[0]} nonzero pruned entries)",
        )


def checkpoint_across_devices() -> None:
    """A CUDA checkpoint resumed on the CPU, and a CPU checkpoint resumed on CUDA, keep their masks."""
    import tempfile

    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_synflow import masks_from_checkpoint

    data = TensorDataset(torch.randn(256, 64), torch.randint(0, 10, (256,)))
    for first, second in (("cuda", "cpu"), ("cpu", "cuda")):
        with tempfile.TemporaryDirectory() as directory:
            torch.manual_seed(0)
            model = ImageClassifier(MLP(64, [128], 10), 10, [64], optimizer="adam", lr=1e-3, weight_decay=0.0)
            pruning = SynFlowPruning(sparsity=0.9, verbose=False, progress=False)
            common = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, devices=1)
            Trainer(
                accelerator=first,
                max_epochs=1,
                callbacks=[pruning, ModelCheckpoint(dirpath=directory, save_last=True)],
                **common,
            ).fit(model, DataLoader(data, batch_size=32))
            saved = {n: m.cpu() for n, m in pruning.masks.items()}
            path = f"{directory}/last.ckpt"
            mapped = torch.load(path, map_location=second, weights_only=True)
            resumed = SynFlowPruning(compression=10, verbose=False, progress=False)
            resumed.load_state_dict(mapped["callbacks"][resumed.state_key])
            fresh = ImageClassifier(MLP(64, [128], 10), 10, [64], optimizer="adam", lr=1e-3, weight_decay=0.0)
            Trainer(accelerator=second, max_epochs=2, enable_checkpointing=False, callbacks=[resumed], **common).fit(
                fresh, DataLoader(data, batch_size=32), ckpt_path=path
            )
            same = all(torch.equal(saved[n], resumed.masks[n].cpu()) for n in saved)
            same &= all(torch.equal(saved[n], m) for n, m in masks_from_checkpoint(path).items())
            zero = all(
                bool((p.detach().cpu()[~saved[n]] == 0).all()) for n, p in fresh.named_parameters() if n in saved
            )
            check(f"checkpoint saved on {first}, resumed on {second}: masks restored and in force", same and zero)


def timm_warnings() -> None:
    try:
        import timm
    except ImportError:
        print("[skip] timm not installed")
        return
    for name in ("resnet50", "regnety_016", "mobilenetv3_large_100"):
        model = timm.create_model(name, pretrained=False).cuda()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scores = score(model, example_input=torch.zeros(1, 3, 224, 224, device="cuda"))
        zeros = sum(int((s == 0).sum()) for s in scores.values()) / sum(s.numel() for s in scores.values())
        finite = all(bool(torch.isfinite(s).all()) for s in scores.values())
        print(f"[info] timm {name}: {zeros:.1%} of prunable weights score exactly 0; all finite: {finite}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            prune(model, sparsity=0.5, iterations=2, example_input=torch.zeros(1, 3, 224, 224, device="cuda"))
        texts = [str(w.message) for w in caught if "zero" in str(w.message)]
        check(f"timm {name}: zero-score warning", bool(texts) == (zeros > 0.01), texts[0][:100] if texts else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke run, with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="tiny networks: checks that every step runs")
    parser.add_argument("--figures-only", action="store_true", help="skip the pass/fail checks")
    parser.add_argument("--iterations", type=int, help="SynFlow iterations and floor passes (default 100; tiny 10)")
    args = parser.parse_args()
    iterations = args.iterations or (10 if args.tiny else 100)
    device = torch.device(args.device)
    if device.type == "cuda":
        assert torch.cuda.is_available(), "no CUDA device"
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
        if not args.figures_only:
            cuda_vs_cpu_masks()
            amp_training()
            checkpoint_across_devices()
            timm_warnings()
    figures(device, args.tiny, iterations)
    print("FAILED: " + ", ".join(FAILED) if FAILED else "all GPU checks passed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
