"""The pruning core: pure PyTorch, no Lightning."""

from lightning_synflow.pruning.api import prune, score
from lightning_synflow.pruning.finish import LayerCollapseWarning
from lightning_synflow.pruning.settings import METHODS, SCHEDULES, SCOPES, PruningSettings, default_iterations
from lightning_synflow.pruning.targets import select_prunable

__all__ = [
    "METHODS",
    "SCHEDULES",
    "SCOPES",
    "LayerCollapseWarning",
    "PruningSettings",
    "default_iterations",
    "prune",
    "score",
    "select_prunable",
]
