"""The pruning core: pure PyTorch, no Lightning."""

from lightning_synflow.pruning.loop import METHODS, SCHEDULES, SCOPES, default_iterations, prune, score
from lightning_synflow.pruning.targets import select_prunable

__all__ = ["METHODS", "SCHEDULES", "SCOPES", "default_iterations", "prune", "score", "select_prunable"]
