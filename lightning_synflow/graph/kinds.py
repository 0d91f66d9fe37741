"""The layer kinds the channel analysis tells apart by type: those of :mod:`lightning_synflow.masks`, plus pools."""

from __future__ import annotations

from torch import nn

from lightning_synflow.masks import BATCH_NORMS, CONVS, LINEAR_AND_CONVS, RESIZABLE

__all__ = ["AVG_POOLS", "BATCH_NORMS", "CONVS", "LINEAR_AND_CONVS", "RESIZABLE"]

#: Average pools: a padded or rescaled one keeps only zero constants constant.
AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
