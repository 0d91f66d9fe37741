"""lightning-synflow: data-free SynFlow pruning at initialization for PyTorch Lightning."""

from importlib import import_module

from lightning_synflow.pruning import prune, score

__version__ = "0.1.0"

# Names imported on first use: the callback imports Lightning, the export functions safetensors; keep
# `import lightning_synflow` light for functional users.
_LAZY = {
    "SynFlowPruning": "lightning_synflow.callback",
    "masks_from_checkpoint": "lightning_synflow.callback.state",
    "apply_masks": "lightning_synflow.export",
    "load_pruned": "lightning_synflow.export",
    "load_sparse": "lightning_synflow.export",
    "save_sparse": "lightning_synflow.export",
    "shrink": "lightning_synflow.export",
    "sparsify": "lightning_synflow.export",
    "speed_report": "lightning_synflow.export",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_synflow' has no attribute {name!r}")


__all__ = ["__version__", "prune", "score", *_LAZY]
