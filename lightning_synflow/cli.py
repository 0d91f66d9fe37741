"""The command line: ``python -m lightning_synflow fit --config configs/digits_synflow.yaml``."""

from __future__ import annotations

import argparse
import copy
import re
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path
from typing import Any, NoReturn, Optional

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI


def _silence_noise() -> None:
    """Hide the deprecation chatter that jsonargparse and LightningCLI print on every run."""
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"jsonargparse.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"lightning.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"jsonargparse.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")


_PARSER_KEY = re.compile(r'^Parser key "(?P<key>[^"]+)":')
_GIVEN_CLASS = re.compile(r"^(?P<indent>\s*)- Problem with given class_path '(?P<cls>[^']+)':\s*$")
_LITERAL = re.compile(
    r'^Parser key "(?P<key>[^"]+)": Expected a (?:typing\.|typing_extensions\.)?Literal\[(?P<choices>.*)\]\. '
    r"Got value: (?P<value>.*)$"
)
_SIMPLE_TYPE = re.compile(
    r'^Parser key "(?P<key>[^"]+)": Expected a <class \'(?P<type>[\w.]+)\'>\. Got value: (?P<value>.*)$'
)
_SIMPLE_UNION = re.compile(
    r'^Parser key "(?P<key>[^"]+)": Does not validate against any of the Union subtypes Subtypes: \[.*?\] '
    r"Errors: (?P<errors>(?:- Expected a <class '[\w.]+'> )+)Given value type: <class '[\w.]+'> "
    r"Given value: (?P<value>.*)$"
)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _condense(message: str) -> str:
    """Reduce jsonargparse's report on a refused value to the part that matters, on one line.

    A class given by ``class_path`` is the user's intent, so its problem is the message; the other Union
    alternatives ("Not a valid subclass of Callback", "Expected a <class 'NoneType'>") and the echo of the
    whole value are dropped. A refused ``Literal`` reads "`name` must be one of ...; got ...", a value of the wrong
    type "`name` must be float or None; got ...". Any other message is returned as it is.
    """
    lines = message.splitlines()
    for number, line in enumerate(lines):
        given = _GIVEN_CLASS.match(line)
        if given is None:
            continue
        block = []
        for inner in lines[number + 1 :]:
            if inner.strip() and _indent(inner) <= len(given["indent"]):
                break
            block.append(inner)
        detail = _condense(textwrap.dedent("\n".join(block)))
        key = _PARSER_KEY.match(message)
        where = f"{key['key']}: " if key else ""
        return f"{where}{given['cls']}: {' '.join(detail.split())}"
    flat = " ".join(message.split())
    literal = _LITERAL.match(flat)
    if literal is not None:
        return f"`{literal['key']}` must be one of {literal['choices']}; got {literal['value']!r}."
    simple = _SIMPLE_TYPE.match(flat)
    if simple is not None:
        return f"`{simple['key']}` must be {simple['type'].rsplit('.', 1)[-1]}; got {simple['value']!r}."
    union = _SIMPLE_UNION.match(flat)
    if union is not None:
        types = [name.rsplit(".", 1)[-1] for name in re.findall(r"<class '([\w.]+)'>", union["errors"])]
        expected = " or ".join("None" if name == "NoneType" else name for name in types)
        return f"`{union['key']}` must be {expected}; got {union['value']!r}."
    return message


class SynFlowArgumentParser(LightningArgumentParser):
    """LightningArgumentParser whose errors fit on a screen: one usage line, the ``--help`` tip, one message."""

    def format_usage(self) -> str:
        """The first usage line only (the full one lists every Trainer option, some 50 lines); ``--help`` has it all."""
        usage = super().format_usage().rstrip("\n").splitlines()
        if len(usage) <= 3:
            return "\n".join(usage) + "\n"
        return f"{usage[0]} ...\n"

    def error(self, message: str, ex: Optional[Exception] = None) -> NoReturn:
        """Exit with code 2 and a short message (the full one when errors are raised rather than printed)."""
        if self.exit_on_error:
            message = _condense(message)
        super().error(message, ex)


def _misconfiguration(error: BaseException) -> Optional[MisconfigurationException]:
    """The ``MisconfigurationException`` in ``error``'s chain of causes, if any: a refused configuration value."""
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        if isinstance(current, MisconfigurationException):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class SynFlowCLI(LightningCLI):
    """LightningCLI in subclass mode, which also tests the fitted model when ``test_after_fit`` is set.

    A value refused by a class of the configuration (``MisconfigurationException`` from ``__init__``, e.g.
    ``SynFlowPruning(sparsity=1.5)``) ends like LightningCLI's own argument errors: a short ``error: ...`` on
    stderr and exit code 2. Errors raised while running the subcommand (training) keep their traceback.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", SynFlowArgumentParser)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--test_after_fit``."""
        parser.add_argument(
            "--test_after_fit", type=bool, default=False, help="After fit, evaluate the final weights on the test set."
        )

    def instantiate_classes(self) -> None:
        """Instantiate as LightningCLI does; a refused value becomes an argument error (exit code 2)."""
        try:
            super().instantiate_classes()
        except Exception as error:
            refused = _misconfiguration(error)
            if refused is None:
                raise
            self._parser(self.subcommand).error(str(refused), error)

    def after_fit(self) -> None:
        """Run the test loop on the final (pruned and trained) weights when asked to."""
        if self.config[self.subcommand].get("test_after_fit"):
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=True)


def _prog() -> Optional[str]:
    """``python -m lightning_synflow`` when run that way (argparse would say ``__main__.py``), else the default."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "__main__.py" and script.parent.name == "lightning_synflow":
        return "python -m lightning_synflow"
    return None


#: The top-level ``--help`` text: LightningCLI's subcommands, and the two this package adds.
DESCRIPTION = (
    "SynFlow pruning for PyTorch Lightning. Subcommands: fit, validate, test and predict (LightningCLI; "
    "put lightning_synflow.SynFlowPruning in trainer.callbacks), plus 'export' (the compact file of a pruned "
    "checkpoint; 'export --help') and 'sweep' (accuracy against compression over methods and seeds; 'sweep --help')."
)


def cli_main(args: Optional[list[str]] = None) -> SynFlowCLI:
    """Run the command line on ``args`` (default: ``sys.argv[1:]``) and return the ``SynFlowCLI``.

    For programmatic use and tests: ``cli = cli_main(["fit", "--config", "configs/digits_synflow.yaml"])``
    gives ``cli.model``, ``cli.trainer`` and ``cli.datamodule`` afterwards.
    """
    _silence_noise()
    return SynFlowCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": _prog(), "description": DESCRIPTION},
        auto_configure_optimizers=False,
    )


def _export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{_prog() or 'lightning-synflow'} export",
        description="Write the compact file of a checkpoint made with SynFlowPruning (packed mask bits and kept "
        "values, safetensors), or of its thinner network (--shrink), and print sizes, MACs and sparsity per layer.",
    )
    parser.add_argument("--config", required=True, help="the YAML config of the run (builds the model)")
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by a Trainer with SynFlowPruning")
    parser.add_argument("--output", required=True, help="the file to write (.safetensors)")
    parser.add_argument("--shrink", action="store_true", help="export the thinner network without flowless channels")
    parser.add_argument("--report", action="store_true", help="also time masked, shrunk and sparse inference here")
    return parser


def build_model(config: str) -> LightningModule:
    """The (untrained) LightningModule a YAML config describes, without running anything."""
    _silence_noise()
    cli = SynFlowCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=["--config", config, "--trainer.logger", "false"],
        run=False,
        auto_configure_optimizers=False,
    )
    model: LightningModule = cli.model
    return model


def export_main(args: list[str]) -> int:
    """``lightning-synflow export``: a checkpoint to a compact file, with a size, MAC and sparsity summary."""
    options = _export_parser().parse_args(args)
    from lightning_synflow.export import apply_shrink, load_pruned, plan_shrink, save_sparse, speed_report
    from lightning_synflow.report import count_macs, format_table, layer_stats

    model = build_model(options.config).eval()
    masks = load_pruned(model, options.ckpt_path)
    example = model.example_input_array
    exported, kept_masks = model, masks
    if options.shrink:
        exported = copy.deepcopy(model)
        kept_masks = apply_shrink(exported, plan_shrink(exported, masks, example), masks)
    save_sparse(exported, kept_masks, options.output)
    with tempfile.TemporaryDirectory() as directory:
        dense_file = Path(directory) / "dense.pt"
        torch.save(model.state_dict(), dense_file)
        dense_bytes = dense_file.stat().st_size
    written = Path(options.output).stat().st_size
    print(format_table(layer_stats(masks)))
    print(f"file: {written:,} bytes, {written / dense_bytes:.1%} of torch.save(state_dict) ({dense_bytes:,} bytes)")
    if example is not None:
        dense_macs, macs = count_macs(model, example), count_macs(exported, example)
        print(f"MACs per example: {macs:,} of {dense_macs:,} dense ({macs / max(dense_macs, 1):.1%})")
    if options.report:
        if example is None:
            raise SystemExit("error: --report needs the model's example_input_array")
        print(speed_report(model, masks, example))
    return 0


def main(args: Optional[list[str]] = None) -> int:
    """Entry point of ``lightning-synflow`` and ``python -m lightning_synflow``.

    Returns 0 after a successful run, so the console script's ``sys.exit(main())`` exits 0; argument errors exit
    with code 2 (``SystemExit``) and other failures raise. Use :func:`cli_main` to get the ``SynFlowCLI`` back.
    ``export`` is handled by :func:`export_main` and ``sweep`` by :func:`lightning_synflow.sweep.sweep_main` (which
    returns 1 when a run of the grid failed and 130 when stopped by Ctrl+C); every other subcommand is LightningCLI's.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "export":
        return export_main(argv[1:])
    if argv and argv[0] == "sweep":
        from lightning_synflow.sweep import sweep_main

        return sweep_main(argv[1:])
    cli_main(args)  # None: LightningCLI reads sys.argv itself (and does not warn about receiving both)
    return 0
