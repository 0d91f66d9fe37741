"""lightning-synflow: data-free SynFlow pruning at initialization for PyTorch Lightning."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from lightning_synflow.pruning import prune, score

__version__ = "0.1.0"

# Names imported on first use: the callback imports Lightning, the export functions safetensors; keep
# `import lightning_synflow` light for functional users. Type checkers read the real imports below.
_LAZY = {
    "SynFlowPruning": "lightning_synflow.callback",
    "masks_from_checkpoint": "lightning_synflow.checkpoint_format",
    "apply_masks": "lightning_synflow.masks",
    "load_pruned": "lightning_synflow.export",
    "load_sparse": "lightning_synflow.export",
    "save_sparse": "lightning_synflow.export",
    "shrink": "lightning_synflow.export",
    "sparsify": "lightning_synflow.export",
    "speed_report": "lightning_synflow.export",
}

if TYPE_CHECKING:  # `import X as X`: an explicit re-export under mypy --strict
    from lightning_synflow.callback import SynFlowPruning as SynFlowPruning
    from lightning_synflow.checkpoint_format import masks_from_checkpoint as masks_from_checkpoint
    from lightning_synflow.export import load_pruned as load_pruned
    from lightning_synflow.export import load_sparse as load_sparse
    from lightning_synflow.export import save_sparse as save_sparse
    from lightning_synflow.export import shrink as shrink
    from lightning_synflow.export import sparsify as sparsify
    from lightning_synflow.export import speed_report as speed_report
    from lightning_synflow.masks import apply_masks as apply_masks
else:

    def __getattr__(name: str) -> object:
        if name in _LAZY:
            return getattr(import_module(_LAZY[name]), name)
        raise AttributeError(f"module 'lightning_synflow' has no attribute {name!r}")


__all__ = ["__version__", "prune", "score", *_LAZY]
