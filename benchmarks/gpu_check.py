"""GPU checks: CUDA pruning path, AMP (fp16 with a GradScaler that skips steps, bf16), timm warnings, speed.

    python benchmarks/gpu_check.py

Needs a CUDA device; prints one line per check and exits non-zero when a check fails.
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_synflow import SynFlowPruning, prune, score  # noqa: E402
from lightning_synflow.models import MLP, ImageClassifier, cifar_resnet, vgg16  # noqa: E402

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


def speed() -> None:
    for name, build in (("vgg16_bn", lambda: vgg16(10)), ("resnet20", lambda: cifar_resnet(20))):
        torch.manual_seed(0)
        model = build().cuda().eval()
        x = torch.ones(1, 3, 32, 32, device="cuda")
        for _ in range(5):
            model(x).sum().backward()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(100):
            model(x).sum().backward()
        torch.cuda.synchronize()
        floor = time.perf_counter() - start
        times = []
        for _ in range(3):
            fresh = build().cuda()
            torch.cuda.synchronize()
            start = time.perf_counter()
            prune(fresh, compression=100, example_input=torch.zeros(1, 3, 32, 32, device="cuda"))
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        t = sorted(times)[1]
        print(
            f"[info] {name} on {torch.cuda.get_device_name()}: 100 fwd+bwd {floor:.3f} s, 100 SynFlow iterations "
            f"{t:.3f} s, ratio {t / floor:.2f}x",
            flush=True,
        )


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
    assert torch.cuda.is_available(), "no CUDA device"
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    cuda_vs_cpu_masks()
    amp_training()
    checkpoint_across_devices()
    timm_warnings()
    speed()
    print("FAILED: " + ", ".join(FAILED) if FAILED else "all GPU checks passed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
