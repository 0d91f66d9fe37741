"""``shrink``: a thinner dense network without the channels that carry no flow.

SynFlow (and any pruning method) leaves whole channels with no kept weight coming in or going out.
:func:`plan_shrink` finds them by following the graph that ``torch.fx.symbolic_trace`` records,
:func:`apply_shrink` replaces the layers by thinner ones of the same classes, in place, and
:func:`shrink` does both on a copy.

What is followed:

- ``Conv1d/2d/3d`` (``groups=1``) and ``Linear`` produce channels (their output rows) and consume
  channels (their input columns); ``BatchNorm1d/2d/3d`` is sliced with the channels it normalizes.
- Channel-wise operations pass the channels through: elementwise activations (ReLU, ReLU6,
  LeakyReLU, GELU, SiLU, ELU, Hardtanh, Hardswish, Hardsigmoid, Mish, Tanh, Sigmoid), Identity,
  Dropout, max/average/adaptive pooling, interpolation, ``mean`` over non-channel dimensions, casts
  and ``contiguous``; multiplication and division by numbers.
- ``flatten`` / ``view`` / ``reshape`` after convolutions: channel ``c`` of a ``(N, C, H, W)``
  tensor becomes the contiguous block ``c*H*W ... (c+1)*H*W - 1`` of features of the next Linear.
  The block size comes from shape propagation with the example input, or, without one, from the
  consuming Linear's ``in_features``.
- ``+`` / ``torch.add`` / ``-`` / ``*`` between two channel tensors (residual additions, gating)
  ties the channels of both operands: a tied channel is removed from every branch or from none, so
  a channel survives if any branch needs it. ``torch.cat`` along the channel dimension concatenates.
  Combined with a tensor whose channels are not followed (the model's input, a submodule left whole),
  a channel tensor keeps all its channels. Indexing with full slices and ``None`` (``w[:, :, None]``)
  and ``unsqueeze`` move the channel dimension.

Removal rule: a channel of a group is kept when some consuming layer has a kept weight on it in a
row (output channel) that is itself kept, unless that consumer can absorb the channel as a constant
(below); the model's inputs and the tensors that reach its outputs are never cut. This is iterated
to a fixed point, because removing a channel can leave the channels feeding it unused. A group never
drops to zero channels: one is kept, so no layer becomes empty.

Constant outputs: a channel whose kept incoming weights all come from constant channels (in
particular a channel with no kept incoming weight) does not depend on the input: it outputs a
constant ``k`` (its bias, through BatchNorm in eval mode and the activations that follow). Such
channels are tracked through the graph with their values, and a constant channel is removed when
every consumer that still has a kept weight on it can absorb it exactly: ``k == 0`` there, or the
consumer has a bias and is a Linear or a convolution without zero padding, in which case
``bias[o] += sum(W[o, c]) * k`` is folded in. Otherwise (a constant reaching a bias-free layer, or a
zero-padded convolution, whose border outputs would see the padding instead of the constant) the
channel is kept. So in eval mode the shrunk network computes what the masked one does (up to
rounding). In training mode a BatchNorm normalizes with batch statistics, under which a constant
channel's output is its shift ``beta``, not the eval-mode constant that was folded; at
initialization (zero biases, BatchNorm at its defaults) every constant is 0, nothing is folded, and
the two networks also agree in training mode.

Refused with a ``ValueError`` naming the node or module, never a wrong model: a forward that
``torch.fx`` cannot trace (pass ``exclude=`` naming the submodules to leave whole, or make it
traceable), grouped or depthwise convolutions, any other operation on channels that can be cut
(slicing, ``LayerNorm``, attention, custom functions, ...), a layer called twice, whose weight is
read outside its own call or tied to another layer's, reachable under two names, or with forward
hooks (torch.fx does not trace them).

The channel analysis is ``lightning_synflow.graph`` (each supported operation is an entry of the
table in ``lightning_synflow.graph.ops``); :mod:`~lightning_synflow.export.shrink.plan` decides
which channels go, :mod:`~lightning_synflow.export.shrink.rebuild` builds the thinner layers.
"""

from lightning_synflow.export.shrink.plan import ShrinkPlan, plan_shrink
from lightning_synflow.export.shrink.rebuild import apply_shrink, shrink

__all__ = ["ShrinkPlan", "apply_shrink", "plan_shrink", "shrink"]
