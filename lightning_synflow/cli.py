"""The command line: ``python -m lightning_synflow fit --config configs/digits_synflow.yaml``."""

from __future__ import annotations

import warnings
from typing import Any, Optional

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


class SynFlowCLI(LightningCLI):
    """LightningCLI in subclass mode, which also tests the fitted model when ``test_after_fit`` is set."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--test_after_fit``."""
        parser.add_argument(
            "--test_after_fit", type=bool, default=False, help="After fit, evaluate the final weights on the test set."
        )

    def after_fit(self) -> None:
        """Run the test loop on the final (pruned and trained) weights when asked to."""
        if self.config[self.subcommand].get("test_after_fit"):
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=True)


def main(args: Optional[list[str]] = None) -> Any:
    """Entry point of ``lightning-synflow`` and ``python -m lightning_synflow``."""
    _silence_noise()
    return SynFlowCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )
