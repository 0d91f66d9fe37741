"""lightning-synflow: data-free SynFlow pruning at initialization for PyTorch Lightning."""

from lightning_synflow.pruning import prune, score

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The callback imports Lightning; keep `import lightning_synflow` light for functional users.
    if name == "SynFlowPruning":
        from lightning_synflow.callback import SynFlowPruning

        return SynFlowPruning
    if name == "masks_from_checkpoint":
        from lightning_synflow.callback.state import masks_from_checkpoint

        return masks_from_checkpoint
    raise AttributeError(f"module 'lightning_synflow' has no attribute {name!r}")


__all__ = ["SynFlowPruning", "__version__", "masks_from_checkpoint", "prune", "score"]
