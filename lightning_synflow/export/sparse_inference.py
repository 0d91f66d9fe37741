"""Sparse CPU inference: a copy of a pruned model whose sparse layers multiply with CSR kernels.

``torch.sparse`` CSR matrix products (MKL on x86 CPUs) skip the pruned weights, so their cost follows
the kept weights instead of the dense shape. What each form costs was measured by
``benchmarks/sparse_inference.py`` (figures in BENCHMARKS.md, "Compact files and sparse CPU inference"):

- the fastest calls are ``torch.addmv(bias, W, x)`` for one example and ``torch.addmm(bias[:, None], W,
  x.T).T`` for a batch, with 32-bit CSR indices (faster than 64-bit ones, which torch converts for MKL on
  every call). The batch product comes out transposed: copying it back to the contiguous layout adds 20-30%
  to the call at batch 16, and leaving it transposed costs the next dense layer more (4x on a 4096->10
  ``nn.Linear`` at batch 16) and breaks ``view`` calls that merge dimensions, so only a chain of sparse
  layers keeps it;
- a 4096x4096 layer pays on sparse kernels up to about 30% density (:data:`DEFAULT_MAX_DENSITY`, the
  crossover measured at batch 1 and 16), so denser layers stay dense;
- convolutions (im2col with ``F.unfold``, then a CSR product) pay only where unfolding the input costs
  less than the dense convolution saves: 3x3 VGG layers at 1% density ran 1.1-1.3x faster at 64 channels
  on 32x32 maps and 4-12x at 512 channels on 2x2 to 4x4 maps, but at 5% the 64-channel layer already tied
  and at 20% only the 256- and 512-channel ones still paid. Whether a convolution pays depends on its input
  size, so :func:`sparsify` makes one sparse only when given an ``example_input``, and then only if it
  measures it faster.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module
from torch.nn.utils import parametrize

from lightning_synflow.masks import apply_masks
from lightning_synflow.pruning.inputs import ExampleInput, call_model

#: Default ``max_density`` of :func:`sparsify`: the crossover measured on a 4096x4096 layer by
#: ``benchmarks/sparse_inference.py`` (shared 2-core CPU; BENCHMARKS.md). Dense time / CSR time at batch 1
#: was 12.5x, 3.1x, 1.6x, 1.18x, 0.68x at densities 1%, 10%, 20%, 30%, 50% on one thread and 17x, 4.6x,
#: 2.7x, 1.84x, 1.16x on two; at batch 16 the sparse kernel still won at 50% (1.7x and 2.8x). 30% is the
#: densest measured point where it paid in every run at both batch sizes.
DEFAULT_MAX_DENSITY = 0.3

_SPARSE_DTYPES = (torch.float32, torch.float64)


def alternated_times(
    functions: Mapping[str, Callable[[], object]], *, repeats: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in turns: one call of each per round, after warm-up.

    Taking turns spreads the load changes of a shared machine over all the functions alike; compare the
    medians.

    Args:
        functions: what to time, by name; each is called without arguments.
        repeats: timed rounds.
        warmup: untimed rounds first.

    Returns:
        ``repeats`` durations in seconds per name.
    """
    times: dict[str, list[float]] = {name: [] for name in functions}
    for round_ in range(warmup + repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


@contextlib.contextmanager
def _no_beta_warning() -> Iterator[None]:
    """Silence torch's "Sparse CSR tensor support is in beta" warning: the kernels used here are covered by tests."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        yield


class _CSRWeight(nn.Module):
    """A weight matrix held as CSR components (buffers), with the CSR tensor built once and cached.

    The components are plain dense buffers so that the module deep-copies, pickles and moves with ``.to()``
    (a CSR tensor can do none of these as a buffer); the cache is dropped whenever they are replaced. Tensors
    made under ``torch.inference_mode()`` cannot enter a computation autograd records, so the cache holds
    one entry per mode: a copy first called under inference mode still runs outside it.
    """

    crow_indices: torch.Tensor
    col_indices: torch.Tensor
    values: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, matrix: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        with _no_beta_warning():
            csr = matrix.detach().to_sparse_csr()
        # 32-bit indices go to MKL as they are; 64-bit ones are converted on every call.
        index_dtype = torch.int32 if max(csr.values().numel(), *matrix.shape) < 2**31 else torch.int64
        self.register_buffer("crow_indices", csr.crow_indices().to(index_dtype))
        self.register_buffer("col_indices", csr.col_indices().to(index_dtype))
        self.register_buffer("values", csr.values().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.matrix_shape = tuple(matrix.shape)
        self._cache: dict[bool, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def nnz(self) -> int:
        """Number of stored (kept) weights."""
        return self.values.numel()

    @property
    def density(self) -> float:
        """Kept fraction of the weight matrix."""
        return self.nnz / max(1, self.matrix_shape[0] * self.matrix_shape[1])

    def _csr(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The CSR weight, the bias and the bias as a column, built on first use in this inference mode."""
        inference = torch.is_inference_mode_enabled()
        cached = self._cache.get(inference)
        if cached is None:
            with _no_beta_warning():
                matrix = torch.sparse_csr_tensor(
                    self.crow_indices, self.col_indices, self.values, self.matrix_shape, check_invariants=False
                )
            # A zero bias keeps one code path; adding zeros changes no value.
            bias = self.bias if self.bias is not None else self.values.new_zeros(self.matrix_shape[0])
            cached = self._cache[inference] = (matrix, bias, bias[:, None])
        return cached

    def _apply(self, *args: Any, **kwargs: Any) -> _CSRWeight:
        self._cache = {}
        applied: _CSRWeight = super()._apply(*args, **kwargs)  # type: ignore[no-untyped-call]  # torch: no annotations
        return applied

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state


class SparseLinear(_CSRWeight):
    """A ``nn.Linear`` whose weight is a CSR sparse matrix: for CPU inference only (no backward).

    ``y = x W^T + b`` as ``torch.addmv(b, W, x)`` for one example and ``torch.addmm(b[:, None], W, x^T)^T``
    for a batch. That product comes out transposed (column-major); it is copied to the usual contiguous
    layout unless ``transposed_output`` is set, which :func:`sparsify` does where the output only goes
    through elementwise modules (``nn.ReLU``, ...) into another :class:`SparseLinear` of the same
    ``nn.Sequential``: that layer reads the transposed layout without any copy.

    Args:
        linear: the dense layer to convert (its zeros are left out).

    Attributes:
        in_features: input size.
        out_features: output size.
        transposed_output: return a batch's output as the transposed product (a view with column-major
            strides) instead of a contiguous copy.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear.weight, linear.bias)
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.transposed_output = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` without ``nn.Module``'s call machinery when no hook is set (about 5 us per call at batch 1)."""
        if (
            self._forward_hooks
            or self._forward_pre_hooks
            or self._backward_hooks
            or self._backward_pre_hooks
            or _module._global_forward_hooks
            or _module._global_forward_pre_hooks
            or _module._global_backward_hooks
            or _module._global_backward_pre_hooks
            or torch._C._get_tracing_state()
        ):
            output: torch.Tensor = super().__call__(x)
            return output
        return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x W^T + b`` for ``x`` of shape ``[..., in_features]``."""
        weight, bias, bias_column = self._csr()
        if x.dim() == 2:  # the common case first, with as little as possible around the kernel
            if x.shape[0] == 1:
                return torch.addmv(bias, weight, x.view(-1)).view(1, -1)
            out = torch.addmm(bias_column, weight, x.T).T
            return out if self.transposed_output else out.contiguous()
        rows = x.reshape(-1, self.in_features)
        out = torch.addmv(bias, weight, rows[0]) if rows.shape[0] == 1 else torch.addmm(bias_column, weight, rows.T).T
        return out.reshape(*x.shape[:-1], self.out_features)  # a copy: contiguous

    def extra_repr(self) -> str:
        """Sizes, kept weights and density, as in the module's repr."""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}, "
            f"density={self.density:.4f}, bias={self.bias is not None}"
            + (", transposed_output=True" if self.transposed_output else "")
        )


class SparseConv2d(_CSRWeight):
    """A ``nn.Conv2d`` (``groups=1``, zero padding) as im2col and a CSR product: for CPU inference only.

    Each example's unfolded input ``[in_channels * kh * kw, positions]`` is multiplied by the CSR weight
    ``[out_channels, in_channels * kh * kw]`` straight into a contiguous output. It pays only where the
    unfolding costs less than the dense convolution saves (see the module docstring).

    Args:
        conv: the dense layer to convert: ``groups=1`` and zero padding, numeric, ``"valid"``, or ``"same"``
            at stride 1 with an even total padding; any other layer raises ``ValueError``.

    Attributes:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        padding = _conv_padding(conv)
        if padding is None:
            raise ValueError(f"SparseConv2d needs groups=1 and zero padding with a numeric size, got {conv}.")
        super().__init__(conv.weight.reshape(conv.out_channels, -1), conv.bias)
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.kernel_size = tuple(conv.kernel_size)
        self.stride = tuple(conv.stride)
        self.padding = padding
        self.dilation = tuple(conv.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of ``x`` shaped ``[batch, in_channels, height, width]`` (or without batch)."""
        weight, _, bias_column = self._csr()
        batch = x if x.dim() == 4 else x.unsqueeze(0)
        height, width = (
            (size + 2 * pad - dil * (kernel - 1) - 1) // step + 1
            for size, pad, dil, kernel, step in zip(
                batch.shape[2:], self.padding, self.dilation, self.kernel_size, self.stride
            )
        )
        columns = F.unfold(batch, self.kernel_size, self.dilation, self.padding, self.stride)
        out = torch.empty(batch.shape[0], self.out_channels, height * width, dtype=columns.dtype)
        for example, target in zip(columns, out):
            torch.addmm(bias_column, weight, example, out=target)
        out = out.view(batch.shape[0], self.out_channels, height, width)
        return out if x.dim() == 4 else out[0]

    def extra_repr(self) -> str:
        """Sizes, convolution settings, kept weights and density, as in the module's repr."""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, nnz={self.nnz}, density={self.density:.4f}, "
            f"bias={self.bias is not None}"
        )


def _conv_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """The numeric padding that ``F.unfold`` needs, or None where SparseConv2d cannot run the layer."""
    if conv.groups != 1 or conv.padding_mode != "zeros":
        return None
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        reach = [dil * (kernel - 1) for dil, kernel in zip(conv.dilation, conv.kernel_size)]
        if any(step != 1 for step in conv.stride) or any(size % 2 for size in reach):
            return None
        return (reach[0] // 2, reach[1] // 2)
    return (int(conv.padding[0]), int(conv.padding[1]))


def _is_plain(module: nn.Module, kind: type[nn.Module]) -> bool:
    """``module`` is exactly ``kind`` (possibly parametrized), not a subclass whose owner may read its weight."""
    base = type(module).__bases__[0] if parametrize.is_parametrized(module) else type(module)
    return base is kind


def _convertible(module: nn.Module, with_convs: bool) -> bool:
    """A layer that a sparse form can replace (convolutions only when asked)."""
    linear = _is_plain(module, nn.Linear)
    conv = with_convs and _is_plain(module, nn.Conv2d) and _conv_padding(module) is not None  # type: ignore[arg-type]
    return (linear or conv) and module.weight.device.type == "cpu" and module.weight.dtype in _SPARSE_DTYPES


def _sparse_form(module: nn.Module) -> SparseLinear | SparseConv2d:
    """The sparse replacement of a layer that :func:`_convertible` accepted."""
    return SparseLinear(module) if isinstance(module, nn.Linear) else SparseConv2d(module)  # type: ignore[arg-type]


#: Modules that act entry by entry (any memory layout in, the same layout out).
_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Softplus,
    nn.Dropout,
    nn.Identity,
)


def _chain_transposed(model: nn.Module) -> None:
    """Let a SparseLinear hand its transposed output to the next one where only elementwise modules lie between.

    Only in plain ``nn.Sequential`` containers (or subclasses that keep its ``forward``), whose children run
    one after the other.
    """
    for container in model.modules():
        if not isinstance(container, nn.Sequential) or type(container).forward is not nn.Sequential.forward:
            continue
        children = list(container)
        for index, child in enumerate(children):
            if not isinstance(child, SparseLinear):
                continue
            following = index + 1
            while following < len(children) and type(children[following]) in _ELEMENTWISE:
                following += 1
            child.transposed_output = following < len(children) and isinstance(children[following], SparseLinear)


def sparsify(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor] | None = None,
    *,
    max_density: float = DEFAULT_MAX_DENSITY,
    example_input: ExampleInput | None = None,
    repeats: int = 5,
) -> nn.Module:
    """An inference copy of ``model`` whose sparse layers run on CSR kernels on the CPU.

    The copy (``copy.deepcopy``, in eval mode, no parameter requiring gradients) replaces every plain
    ``nn.Linear`` at most ``max_density`` dense by a :class:`SparseLinear`. Its outputs equal the dense
    masked model's up to float rounding (relative error about 1e-6). The copy is for inference only: use it
    under ``torch.inference_mode()`` or ``torch.no_grad()``; the sparse layers have no backward. Where a
    :class:`SparseLinear` feeds another one through elementwise modules only, inside an ``nn.Sequential``,
    it hands over its transposed output without copying it (``transposed_output``); every other output has
    the usual contiguous layout.

    Convolutions stay dense unless ``example_input`` is given: an im2col sparse convolution pays only on
    small feature maps with many channels, which depends on the input. With ``example_input``, the layers
    at most ``max_density`` dense (``nn.Linear`` and ``nn.Conv2d`` with ``groups=1`` and zero padding) are
    timed on the inputs they receive from it, dense against sparse, and each keeps the faster form.

    Left dense: layers on other devices than the CPU or of other dtypes than float32/float64 (MKL has no
    half-precision CSR kernel), subclasses of ``nn.Linear``/``nn.Conv2d`` (e.g. ``MultiheadAttention``'s
    ``out_proj``, whose owner reads its weight directly), and 1-D/3-D convolutions.

    Args:
        model: the pruned model (it is not changed).
        masks: boolean masks (True = kept) keyed by parameter name, applied to the copy first; None: the
            weights' exact zeros are the pruned entries.
        max_density: the densest layer made sparse (kept fraction of its weights, 0 to 1); the default
            :data:`DEFAULT_MAX_DENSITY` is the measured crossover of a 4096x4096 layer.
        example_input: a batch as the model takes it (tensor, tuple or dict), at the batch size it will
            serve; when given, each candidate layer is timed dense against sparse on it.
        repeats: timed calls per candidate layer and form when ``example_input`` is given.

    Returns:
        The inference copy.

    Raises:
        ValueError: ``max_density`` is outside [0, 1], or a mask does not fit the model.

    Example::

        fast = sparsify(pruned_model)
        with torch.inference_mode():
            logits = fast(batch)
    """
    if not 0.0 <= max_density <= 1.0:
        raise ValueError(f"`max_density` must be in [0, 1], got {max_density!r}.")

    sparse = copy.deepcopy(model).eval().requires_grad_(False)
    if masks is not None:
        apply_masks(sparse, masks)
    candidates = {
        name: module
        for name, module in sparse.named_modules()
        if _convertible(module, with_convs=example_input is not None)
        and torch.count_nonzero(module.weight).item() <= max_density * module.weight.numel()
    }
    replacements: dict[str, nn.Module] = {name: _sparse_form(module) for name, module in candidates.items()}
    if example_input is not None:
        replacements = _faster_sparse(sparse, candidates, replacements, example_input, repeats)
    if "" in replacements:  # the model is itself one layer
        return replacements[""]
    for name, replacement in replacements.items():
        parent_name, _, child = name.rpartition(".")
        setattr(sparse.get_submodule(parent_name), child, replacement)
    _chain_transposed(sparse)
    return sparse


def _faster_sparse(
    model: nn.Module,
    candidates: dict[str, nn.Module],
    replacements: dict[str, nn.Module],
    example_input: ExampleInput,
    repeats: int,
) -> dict[str, nn.Module]:
    """The replacements that ran faster than their dense layer on its input from ``example_input``."""
    inputs: dict[str, torch.Tensor] = {}

    def keep_input(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(_: nn.Module, args: tuple[Any, ...]) -> None:
            inputs.setdefault(name, args[0])

        return hook

    handles = [module.register_forward_pre_hook(keep_input(name)) for name, module in candidates.items()]
    try:
        with torch.inference_mode():
            call_model(model, example_input)
    finally:
        for handle in handles:
            handle.remove()
    faster: dict[str, nn.Module] = {}
    with torch.inference_mode():
        for name, x in inputs.items():
            dense, sparse = candidates[name], replacements[name]
            times = alternated_times({"dense": partial(dense, x), "sparse": partial(sparse, x)}, repeats=repeats)
            if statistics.median(times["sparse"]) < statistics.median(times["dense"]):
                faster[name] = sparse
    return faster
