"""``lightning-synflow export``: a checkpoint to a compact file, with a size, MAC and sparsity summary."""

from __future__ import annotations

import argparse
import copy
import pickle
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from lightning_synflow.cli.fit import build_model
from lightning_synflow.cli.program import subcommand_name
from lightning_synflow.export import apply_shrink, load_pruned, plan_shrink, save_sparse, speed_report
from lightning_synflow.report import LayerStats, count_macs, format_table, layer_stats


def export_parser() -> argparse.ArgumentParser:
    """The arguments of ``lightning-synflow export``."""
    parser = argparse.ArgumentParser(
        prog=subcommand_name("export"),
        description="Write the compact file of a checkpoint made with SynFlowPruning (packed mask bits and kept "
        "values, safetensors), or of its thinner network (--shrink), and print sizes, MACs and sparsity per layer.",
    )
    parser.add_argument("--config", required=True, help="the YAML config of the run (builds the model)")
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by a Trainer with SynFlowPruning")
    parser.add_argument("--output", required=True, help="the file to write (.safetensors)")
    parser.add_argument("--shrink", action="store_true", help="export the thinner network without flowless channels")
    parser.add_argument("--report", action="store_true", help="also time masked, shrunk and sparse inference here")
    return parser


def _dense_stats(masks: Mapping[str, torch.Tensor], dense: nn.Module) -> list[LayerStats]:
    """Per-layer statistics against the dense layers (a shrunk checkpoint's masks cover its thinner tensors only)."""
    params = dict(dense.named_parameters(remove_duplicate=False))
    return [
        replace(stats, shape=tuple(params[stats.name].shape), numel=params[stats.name].numel())
        for stats in layer_stats(masks)
    ]


def export_main(args: list[str]) -> int:
    """``lightning-synflow export``: a checkpoint to a compact file, with a size, MAC and sparsity summary.

    Sizes, MACs and sparsity are reported against the dense model the config builds, also for the checkpoint
    of a ``shrink=True`` run. A checkpoint that does not load into that model (another config's, say) exits
    with code 2 and one ``error:`` line naming what does not fit.
    """
    parser = export_parser()
    options = parser.parse_args(args)
    dense = build_model(options.config).eval()
    example = dense.example_input_array
    if options.report and example is None:
        parser.error("`--report` needs the model's example_input_array")
    model = copy.deepcopy(dense)
    try:
        masks = load_pruned(model, options.ckpt_path)
    except (OSError, ValueError, pickle.UnpicklingError) as error:
        parser.error(f"`--ckpt_path` {options.ckpt_path} does not load into the model of `--config`: {error}")
    exported, kept_masks = model, masks
    if options.shrink:
        exported = copy.deepcopy(model)
        kept_masks = apply_shrink(exported, plan_shrink(exported, masks, example), masks)
    save_sparse(exported, kept_masks, options.output)
    with tempfile.TemporaryDirectory() as directory:
        dense_file = Path(directory) / "dense.pt"
        torch.save(dense.state_dict(), dense_file)
        dense_bytes = dense_file.stat().st_size
    written = Path(options.output).stat().st_size
    print(format_table(_dense_stats(masks, dense)))
    print(f"file: {written:,} bytes, {written / dense_bytes:.1%} of torch.save(state_dict) ({dense_bytes:,} bytes)")
    if example is not None:
        dense_macs, macs = count_macs(dense, example), count_macs(exported, example)
        print(f"MACs per example: {macs:,} of {dense_macs:,} dense ({macs / max(dense_macs, 1):.1%})")
    if options.report:
        assert example is not None  # refused above
        print(speed_report(model, masks, example))
    return 0
