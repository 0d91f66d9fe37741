"""Dependency analysis of a traced model, in pure torch: which layers' channels are tied to which.

:mod:`~lightning_synflow.graph.analysis` traces a model with ``torch.fx`` and follows its channels node
by node; each operation it understands is an entry of the table in :mod:`~lightning_synflow.graph.ops`,
handled by a function of :mod:`~lightning_synflow.graph.handlers`. What a pass learns (channel groups,
their producers and consumers, input-independent constants) is held by
:class:`~lightning_synflow.graph.tracker.ChannelTracker`. ``shrink`` (:mod:`lightning_synflow.export.shrink`)
plans on it. This package imports neither Lightning nor the rest of ``lightning_synflow``.
"""
