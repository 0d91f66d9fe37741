"""speed_report: the masked dense model, its shrunk copy and its sparse copy, measured side by side."""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightning_synflow.export.sparse_file import save_sparse
from lightning_synflow.export.sparse_inference import alternated_times, sparsify
from lightning_synflow.masks import apply_masks
from lightning_synflow.pruning.inputs import ExampleInput, call_model, map_tensors, output_sum

#: Display names of the variants, in table order.
VARIANTS = {"dense": "masked dense", "shrunk": "shrunk (thinner dense)", "sparse": "sparse (CSR kernels)"}
#: Display names of the files, in table order.
FILES = {"state_dict": "torch.save(state_dict)", "sparse_file": "save_sparse", "shrunk": "torch.save(shrunk)"}


@dataclass
class SpeedReport:
    """What :func:`speed_report` measured; ``str()`` prints it as a table.

    Attributes:
        batch_size: the example input's batch size, at which everything was timed.
        repeats: timed rounds (medians are taken over them).
        threads: ``torch.get_num_threads()`` during the run.
        forward_ms: median forward time per variant (``"dense"``, ``"shrunk"``, ``"sparse"``), milliseconds.
        train_step_ms: median forward + backward time, ``"dense"`` and ``"shrunk"``, milliseconds.
        file_bytes: file sizes: ``"state_dict"`` (``torch.save`` of the masked model's state_dict),
            ``"sparse_file"`` (:func:`~lightning_synflow.export.save_sparse`) and ``"shrunk"`` (``torch.save``
            of the shrunk copy's state_dict).
        unavailable: why a variant or measurement is missing, e.g. ``{"shrunk": "not available: <reason>"}``;
            ``"train_step"`` says why no training step was timed (e.g. BatchNorm at a batch of 1).
    """

    batch_size: int
    repeats: int
    threads: int
    forward_ms: dict[str, float]
    train_step_ms: dict[str, float]
    file_bytes: dict[str, int]
    unavailable: dict[str, str] = field(default_factory=dict)

    def forward_speedup(self, variant: str) -> float:
        """How many times faster ``variant``'s forward is than the masked dense model's."""
        return self.forward_ms["dense"] / self.forward_ms[variant]

    def train_speedup(self, variant: str) -> float:
        """How many times faster ``variant``'s training step is than the masked dense model's."""
        return self.train_step_ms["dense"] / self.train_step_ms[variant]

    def file_fraction(self, file: str) -> float:
        """Size of ``file`` as a fraction of ``torch.save`` of the masked model's state_dict."""
        return self.file_bytes[file] / self.file_bytes["state_dict"]

    @property
    def fastest(self) -> str:
        """The variant with the fastest forward."""
        return min(self.forward_ms, key=self.forward_ms.__getitem__)

    def __str__(self) -> str:
        lines = [
            f"speed_report: batch {self.batch_size}, median of {self.repeats} alternated repeats, "
            f"{self.threads} torch threads",
            f"{'variant':<24}{'forward ms':>12}{'speedup':>9}{'train step ms':>15}{'speedup':>9}",
        ]
        for variant, label in VARIANTS.items():
            if variant not in self.forward_ms:
                lines.append(f"{label:<24}  {self.unavailable.get(variant, 'not measured')}")
                continue
            train = (
                f"{self.train_step_ms[variant]:>15.3f}{self.train_speedup(variant):>8.2f}x"
                if variant in self.train_step_ms
                else f"{'-':>15}{'-':>9}"
            )
            lines.append(f"{label:<24}{self.forward_ms[variant]:>12.3f}{self.forward_speedup(variant):>8.2f}x{train}")
        if "train_step" in self.unavailable:
            lines.append(f"training step: {self.unavailable['train_step']}")
        lines.append(f"{'file':<24}{'bytes':>12}{'of state_dict':>15}")
        for file, label in FILES.items():
            if file in self.file_bytes:
                lines.append(f"{label:<24}{self.file_bytes[file]:>12,}{self.file_fraction(file):>15.4f}")
        best = self.fastest
        verdict = (
            "nothing beats the masked dense model here"
            if best == "dense"
            else f"{VARIANTS[best]}, {self.forward_speedup(best):.2f}x the masked dense model"
        )
        lines.append(f"fastest forward: {verdict}")
        return "\n".join(lines)


def speed_report(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    example_input: ExampleInput,
    *,
    repeats: int = 20,
    warmup: int = 3,
    shrink: bool = True,
) -> SpeedReport:
    """Time the masked model and its :func:`~lightning_synflow.shrink` and :func:`sparsify` copies on this machine.

    Everything runs at ``example_input``'s batch size, on copies (``model`` is untouched): forward passes
    in eval mode under ``torch.inference_mode`` for the three variants, and a training step (forward and
    backward of the outputs' sum, in train mode; if that step fails at this batch size, as BatchNorm does at a
    batch of 1, the report says why and keeps the forward times) for the dense and the shrunk model (the sparse copy is
    inference only; it is made with ``example_input``, so each candidate layer, convolutions included,
    is sparse only where that timed faster). Times are medians of ``repeats`` rounds taken in turns after
    ``warmup`` rounds, so load changes on a shared machine hit every variant alike. The files are written to a temporary
    directory: ``torch.save`` of the state_dict against :func:`save_sparse`.

    Args:
        model: the pruned model.
        masks: boolean masks (True = kept) keyed by parameter name, as :func:`lightning_synflow.prune`
            returns them.
        example_input: a batch as the model takes it (tensor, tuple -> positional, dict -> keyword), at the
            batch size to measure.
        repeats: timed rounds per measurement.
        warmup: untimed rounds first.
        shrink: also measure :func:`~lightning_synflow.export.shrink`; a model it cannot shrink is reported
            as "not available: <reason>".

    Returns:
        The numbers; print the report for a table with the speedups and which variant pays.

    Raises:
        ValueError: ``repeats`` < 1 or ``warmup`` < 0, or a mask does not fit the model.

    Example::

        masks = prune(model, sparsity=0.99, example_input=torch.zeros(1, 784))
        print(speed_report(model, masks, torch.zeros(16, 784)))
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"`repeats` must be >= 1 and `warmup` >= 0, got {repeats!r} and {warmup!r}.")
    dense = apply_masks(copy.deepcopy(model), masks)
    variants: dict[str, nn.Module] = {"dense": dense}
    unavailable: dict[str, str] = {}
    if shrink:
        from lightning_synflow.export.shrink import shrink as shrink_model

        try:
            variants["shrunk"] = shrink_model(dense, masks, example_input)
        except ValueError as error:
            unavailable["shrunk"] = f"not available: {error}"
    else:
        unavailable["shrunk"] = "not requested (shrink=False)"
    variants["sparse"] = sparsify(dense, example_input=example_input)
    tensors: list[torch.Tensor] = []
    map_tensors(example_input, tensors.append)
    sync = torch.cuda.synchronize if any(t.is_cuda for t in tensors) else _nothing

    for module in variants.values():
        module.eval()
    with torch.inference_mode():
        forward = _medians(
            {name: _timed_call(module, example_input, sync) for name, module in variants.items()}, repeats, warmup
        )
    trainable = {name: variants[name].train() for name in ("dense", "shrunk") if name in variants}
    steps: dict[str, Callable[[], None]] = {
        name: _training_step(module, example_input, sync) for name, module in trainable.items()
    }
    train: dict[str, float] = {}
    try:
        steps["dense"]()  # e.g. BatchNorm refuses one value per channel in train mode (a batch of 1)
    except (RuntimeError, ValueError) as error:
        unavailable["train_step"] = (
            f"not measured: a training step at this batch size fails ({error}); "
            "pass an example_input with a larger batch to time it"
        )
    else:
        train = _medians(steps, repeats, warmup)
    return SpeedReport(
        batch_size=int(tensors[0].shape[0]) if tensors and tensors[0].dim() else 1,
        repeats=repeats,
        threads=torch.get_num_threads(),
        forward_ms=forward,
        train_step_ms=train,
        file_bytes=_file_sizes(dense, masks, variants.get("shrunk")),
        unavailable=unavailable,
    )


def _nothing() -> None:
    return None


def _medians(functions: Mapping[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, float]:
    times = alternated_times(functions, repeats=repeats, warmup=warmup)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def _timed_call(module: nn.Module, example_input: ExampleInput, sync: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        call_model(module, example_input)
        sync()

    return run


def _training_step(module: nn.Module, example_input: ExampleInput, sync: Callable[[], None]) -> Callable[[], None]:
    def step() -> None:
        module.zero_grad(set_to_none=True)
        output_sum(call_model(module, example_input)).backward()
        sync()

    return step


def _file_sizes(dense: nn.Module, masks: Mapping[str, torch.Tensor], shrunk: nn.Module | None) -> dict[str, int]:
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="speed_report") as folder:
        writers: dict[str, Callable[[str], Any]] = {
            "state_dict": lambda path: torch.save(dense.state_dict(), path),
            "sparse_file": lambda path: save_sparse(dense, masks, path),
        }
        if shrunk is not None:
            writers["shrunk"] = lambda path: torch.save(shrunk.state_dict(), path)
        for name, write in writers.items():
            path = os.path.join(folder, name)
            write(path)
            sizes[name] = os.path.getsize(path)
    return sizes
