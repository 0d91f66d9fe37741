"""What a pruned model pays back: a thinner dense network, compact files, sparse CPU inference, a speed report."""

from lightning_synflow.export.checkpoint import load_pruned, resize_to_state_dict
from lightning_synflow.export.shrink import ShrinkPlan, apply_shrink, plan_shrink, shrink
from lightning_synflow.export.sparse_file import load_sparse, save_sparse
from lightning_synflow.export.sparse_inference import sparsify
from lightning_synflow.export.speed import speed_report
from lightning_synflow.masks import apply_masks

__all__ = [
    "ShrinkPlan",
    "apply_masks",
    "apply_shrink",
    "load_pruned",
    "load_sparse",
    "plan_shrink",
    "resize_to_state_dict",
    "save_sparse",
    "shrink",
    "sparsify",
    "speed_report",
]
