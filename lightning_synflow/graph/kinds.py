"""The layer kinds the channel analysis tells apart by type (one place for them all)."""

from __future__ import annotations

from torch import nn

#: Convolutions (``groups=1`` only are followed).
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Batch norms, sliced with the channels they normalize.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: The layers that produce channels (output rows) and consume them (input columns).
CONV_LINEAR = (*CONVS, nn.Linear)
#: Every layer a thinner copy can replace.
SLICEABLE = (*CONV_LINEAR, *BATCH_NORMS)
#: Average pools: a padded or rescaled one keeps only zero constants constant.
AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
