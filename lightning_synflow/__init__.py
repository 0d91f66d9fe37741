"""lightning-synflow: data-free SynFlow pruning for PyTorch Lightning."""

from lightning_synflow.pruning import prune

__version__ = "0.1.0"

__all__ = ["__version__", "prune"]
