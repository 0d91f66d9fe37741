"""The Lightning side: ``SynFlowPruning`` and its collaborators (checkpoint state, mask upkeep)."""

from lightning_synflow.callback.synflow_pruning import SUPPORTED_STRATEGIES, SynFlowPruning

__all__ = ["SUPPORTED_STRATEGIES", "SynFlowPruning"]
