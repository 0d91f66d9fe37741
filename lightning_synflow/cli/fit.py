"""The LightningCLI of ``lightning-synflow fit`` (and validate, test, predict), and the model a config describes."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_synflow import callback
from lightning_synflow.cli.errors import SynFlowArgumentParser, find_misconfiguration, raised_in
from lightning_synflow.cli.program import program_name, silence_noise

#: The LightningCLI arguments every run of this package shares. Any LightningModule and LightningDataModule
#: named by ``class_path`` in the config, and the model's own ``configure_optimizers``.
ANY_MODEL_AND_DATA: Mapping[str, Any] = MappingProxyType(
    {
        "model_class": LightningModule,
        "datamodule_class": LightningDataModule,
        "subclass_mode_model": True,
        "subclass_mode_data": True,
        "auto_configure_optimizers": False,
    }
)

#: The top-level ``--help`` text: LightningCLI's subcommands, and the two this package adds.
DESCRIPTION = (
    "SynFlow pruning for PyTorch Lightning. Subcommands: fit, validate, test and predict (LightningCLI; "
    "put lightning_synflow.SynFlowPruning in trainer.callbacks), plus 'export' (the compact file of a pruned "
    "checkpoint; 'export --help') and 'sweep' (accuracy against compression over methods and seeds; 'sweep --help')."
)


class SynFlowCLI(LightningCLI):
    """LightningCLI in subclass mode, which also tests the fitted model when ``test_after_fit`` is set.

    A value refused by a class of the configuration (``MisconfigurationException`` from ``__init__``, e.g.
    ``SynFlowPruning(sparsity=1.5)``), or a configuration ``SynFlowPruning`` refuses once the subcommand runs
    (its ``MisconfigurationException`` at fit start: a resumed run with other settings than the checkpoint's, a
    ``min_density`` floor the sparsity cannot meet), ends like LightningCLI's own argument errors: a short
    ``error: ...`` on stderr and exit code 2. Any other error raised while running the subcommand (training)
    keeps its traceback.
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
            refused = find_misconfiguration(error)
            if refused is None:
                raise
            self._parser(self.subcommand).error(str(refused), error)

    def _run_subcommand(self, subcommand: str) -> None:
        """Run the subcommand as LightningCLI does; SynFlowPruning's refusal becomes an argument error (exit code 2).

        LightningCLI has no public hook around the subcommand's run, hence this override of its private method.
        """
        try:
            super()._run_subcommand(subcommand)
        except MisconfigurationException as error:
            if not raised_in(error, callback.__name__):
                raise
            self._parser(subcommand).error(str(error), error)

    def after_fit(self) -> None:
        """Run the test loop on the final (pruned and trained) weights when asked to."""
        if self.config[self.subcommand].get("test_after_fit"):
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=True)


def cli_main(args: list[str] | None = None) -> SynFlowCLI:
    """Run the command line on ``args`` (default: ``sys.argv[1:]``) and return the ``SynFlowCLI``.

    For programmatic use and tests: ``cli = cli_main(["fit", "--config", "configs/digits_synflow.yaml"])``
    gives ``cli.model``, ``cli.trainer`` and ``cli.datamodule`` afterwards.
    """
    silence_noise()
    return SynFlowCLI(
        **ANY_MODEL_AND_DATA,
        args=args,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": program_name(), "description": DESCRIPTION},
    )


def build_model(config: str) -> LightningModule:
    """The (untrained) LightningModule a YAML config describes, without running anything."""
    silence_noise()
    cli = SynFlowCLI(**ANY_MODEL_AND_DATA, args=["--config", config, "--trainer.logger", "false"], run=False)
    model: LightningModule = cli.model
    return model
