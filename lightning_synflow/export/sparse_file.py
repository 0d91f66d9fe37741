"""Compact files of pruned models: packed mask bits plus the kept values, in a safetensors file.

The file is a plain `safetensors <https://github.com/huggingface/safetensors>`_ file. Its tensors:

- ``mask/<key>``: the mask of a masked ``state_dict`` entry, packed 8 entries to a byte (row-major,
  most significant bit first, :func:`lightning_synflow.masks.pack_mask`; the padding bits of the
  last byte are 0);
- ``values/<key>``: that entry's kept values in row-major order, in its own dtype (1-D);
- ``dense/<key>``: every other ``state_dict`` entry, as it is.

Its metadata (string to string, JSON where structured):

- ``format``: ``"lightning_synflow.sparse_state_dict"``; ``format_version``: ``"1"``;
- ``keys``: the ``state_dict`` keys in order (JSON list);
- ``masked``: per masked key its ``shape``, ``dtype`` (e.g. ``"float32"``) and ``kept`` count (JSON);
- ``tied``: keys that share their tensor with an earlier key, stored once: ``{key: earlier key}`` (JSON);
- ``crc32``: the CRC-32 of every stored tensor's bytes, by tensor name (JSON);
- ``metadata_crc32``: the CRC-32 of all the other metadata entries, as key-sorted JSON,

so that a damaged file is refused instead of loaded.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

# apply_masks is imported from here by export/shrink.py (re-exported until that module imports it from masks).
from lightning_synflow.masks import apply_masks as apply_masks
from lightning_synflow.masks import check_masks, pack_mask, unpack_mask

#: The ``format`` metadata of the files :func:`save_sparse` writes.
FORMAT = "lightning_synflow.sparse_state_dict"
#: The ``format_version`` metadata of the files :func:`save_sparse` writes.
FORMAT_VERSION = "1"


def save_sparse(model: nn.Module, masks: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """Write ``model.state_dict()`` to a compact safetensors file: bits and kept values for masked tensors.

    A masked tensor costs 1 bit per entry plus its kept values; every other ``state_dict`` entry (biases,
    BatchNorm statistics, unmasked weights) is stored as it is. Tensors shared by several keys (tied
    weights) are stored once. The file is written to a temporary name first, then renamed, so ``path``
    never holds half a file. The format is described in this module's docstring.

    Args:
        model: the pruned model (its pruned entries must be 0, as :func:`lightning_synflow.prune`,
            ``SynFlowPruning`` and :func:`~lightning_synflow.apply_masks` leave them).
        masks: boolean masks (True = kept) keyed by qualified parameter name, which must be
            ``state_dict`` keys.
        path: the file to write (conventionally ``*.safetensors``).

    Raises:
        ValueError: a mask breaks :func:`~lightning_synflow.masks.check_masks` (names no ``state_dict``
            entry, has another shape, is not boolean, or differs from the mask of a tied key), an entry that
            a mask prunes is not 0 (call :func:`~lightning_synflow.apply_masks` first), or the ``state_dict``
            holds something else than tensors (a module's extra state).

    Example::

        masks = prune(model, sparsity=0.99, example_input=torch.zeros(1, 784))
        save_sparse(model, masks, "model.safetensors")  # about 4% of torch.save(model.state_dict())
        model.load_state_dict(load_sparse("model.safetensors"))
    """
    from safetensors.torch import save_file

    state = model.state_dict()
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"save_sparse: the state_dict entry {key!r} is a {type(value).__name__} (extra state?); a safetensors "
                "file holds tensors only."
            )
    tied = _tied_keys(state)
    # Tied keys name their first key's tensor, so that the check sees them as one tensor.
    check_masks(
        masks, {key: state[tied.get(key, key)] for key in state}, f"the state_dict keys of {type(model).__name__}"
    )
    masks = {tied.get(name, name): mask for name, mask in masks.items()}  # keyed like the stored tensors
    tensors: dict[str, torch.Tensor] = {}
    masked: dict[str, dict[str, Any]] = {}
    storages: set[tuple[torch.device, int]] = set()
    for key, tensor in state.items():
        if key in tied:
            continue
        tensor = tensor.detach()
        if key in masks:
            mask = masks[key].to(tensor.device)
            values = tensor[mask].cpu()
            if int(torch.count_nonzero(tensor)) != int(torch.count_nonzero(values)):
                raise ValueError(
                    f"save_sparse: {key!r} holds nonzero values at entries its mask prunes; zero them first "
                    "with apply_masks(model, masks)."
                )
            tensors[f"mask/{key}"] = pack_mask(mask)
            tensors[f"values/{key}"] = values
            masked[key] = {"shape": list(tensor.shape), "dtype": _dtype_name(tensor.dtype), "kept": values.numel()}
            continue
        storage = (tensor.device, tensor.untyped_storage().data_ptr())
        # safetensors refuses tensors that share memory; views of one storage under different keys are copied.
        tensor = tensor.cpu().contiguous().clone() if storage in storages else tensor.cpu().contiguous()
        storages.add(storage)
        tensors[f"dense/{key}"] = tensor
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "keys": json.dumps(list(state)),
        "masked": json.dumps(masked),
        "tied": json.dumps(tied),
        "crc32": json.dumps({name: _crc32(tensor) for name, tensor in tensors.items()}),
    }
    metadata["metadata_crc32"] = _metadata_crc32(metadata)
    path = os.fspath(path)
    partial = f"{path}.{os.getpid()}.partial"
    try:
        save_file(tensors, partial, metadata=metadata)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def load_sparse(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a file written by :func:`save_sparse` back into the model's exact ``state_dict``.

    Keys come back in their original order, with their dtypes and shapes; pruned entries are +0.0 and
    kept entries bit for bit as saved (a -0.0 that a multiplicative re-mask left at a pruned entry comes
    back as +0.0, equal under ``==``). Tied keys come back as one tensor under each key. Every check below
    runs before any tensor is returned, so a damaged file never yields a wrong tensor.

    Args:
        path: a file written by :func:`save_sparse`.

    Returns:
        The ``state_dict`` (CPU tensors), ready for ``model.load_state_dict``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not one :func:`save_sparse` wrote, or is truncated or corrupt: an unreadable
            header, missing or unexpected tensors, a checksum mismatch, a mask whose size or kept count
            disagrees with the metadata or with its values. The message names the file and the problem.
    """
    from safetensors import SafetensorError, safe_open

    where = os.fspath(path)
    if not os.path.exists(where):
        raise FileNotFoundError(f"load_sparse: no file at {where!r}")
    try:
        with safe_open(where, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    except SafetensorError as error:
        raise ValueError(f"load_sparse: {where!r} is not a readable safetensors file (truncated?): {error}") from error
    try:
        return _rebuild(metadata, tensors)
    except _Corrupt as error:
        raise ValueError(f"load_sparse: {where!r} is not a valid sparse state_dict file: {error}") from None


class _Corrupt(Exception):
    """What is wrong with a file's content (the caller adds the file name)."""


def _tied_keys(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Keys whose tensor is exactly an earlier key's (same memory, shape, strides, dtype): key -> earlier key."""
    first: dict[tuple[Any, ...], str] = {}
    tied: dict[str, str] = {}
    for key, tensor in state.items():
        identity = (
            tensor.device,
            tensor.dtype,
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.stride(),
        )
        if tensor.numel() and identity in first:
            tied[key] = first[identity]
        else:
            first.setdefault(identity, key)
    return tied


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _crc32(tensor: torch.Tensor) -> int:
    return zlib.crc32(tensor.reshape(-1).view(torch.uint8).numpy().data)


def _metadata_crc32(metadata: Mapping[str, str]) -> str:
    """CRC-32 of every metadata entry but ``metadata_crc32`` itself, as canonical (key-sorted) JSON."""
    fields = {key: value for key, value in metadata.items() if key != "metadata_crc32"}
    return str(zlib.crc32(json.dumps(fields, sort_keys=True).encode()))


def _json_field(metadata: Mapping[str, str], field: str, kind: type) -> Any:
    if field not in metadata:
        raise _Corrupt(f"the metadata has no {field!r}")
    try:
        value = json.loads(metadata[field])
    except json.JSONDecodeError as error:
        raise _Corrupt(f"the metadata {field!r} is not valid JSON ({error})") from None
    if not isinstance(value, kind):
        raise _Corrupt(f"the metadata {field!r} is not a JSON {kind.__name__}")
    return value


def _rebuild(metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if metadata.get("format") != FORMAT:
        raise _Corrupt(f"its metadata 'format' is {metadata.get('format')!r}, not {FORMAT!r}")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise _Corrupt(
            f"format_version {metadata.get('format_version')!r} is not {FORMAT_VERSION!r} "
            "(written by another version of lightning-synflow?)"
        )
    if metadata.get("metadata_crc32") != _metadata_crc32(metadata):
        raise _Corrupt("its metadata does not match its checksum 'metadata_crc32' (edited or corrupt)")
    keys = _json_field(metadata, "keys", list)
    masked = _json_field(metadata, "masked", dict)
    tied = _json_field(metadata, "tied", dict)
    checksums = _json_field(metadata, "crc32", dict)
    if not all(isinstance(key, str) for key in keys) or len(set(keys)) != len(keys):
        raise _Corrupt("the metadata 'keys' are not distinct strings")
    for alias, primary in tied.items():
        if alias not in keys or primary not in keys or primary in tied or keys.index(primary) > keys.index(alias):
            raise _Corrupt(f"the metadata 'tied' entry {alias!r} -> {primary!r} names no earlier stored key")
    if not set(masked) <= set(keys) - set(tied):
        raise _Corrupt("the metadata 'masked' names keys that are not stored")
    expected = {f"dense/{key}" for key in keys if key not in tied and key not in masked}
    expected |= {f"{kind}/{key}" for key in masked for kind in ("mask", "values")}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise _Corrupt(f"its tensors do not match its metadata (missing: {missing[:3]}, unexpected: {extra[:3]})")
    if set(checksums) != expected:
        raise _Corrupt("the metadata 'crc32' does not cover exactly the stored tensors")
    for name, tensor in tensors.items():
        if _crc32(tensor) != checksums[name]:
            raise _Corrupt(f"the data of tensor {name!r} does not match its checksum (corrupt file)")
    state: dict[str, torch.Tensor] = {}
    for key in keys:
        if key in tied:
            state[key] = state[tied[key]]
        elif key in masked:
            state[key] = _unmask(key, masked[key], tensors[f"mask/{key}"], tensors[f"values/{key}"])
        else:
            state[key] = tensors[f"dense/{key}"]
    return state


def _unmask(key: str, info: Any, packed: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A masked tensor rebuilt from its packed bits and kept values, after checking that they agree."""
    try:
        shape = [int(size) for size in info["shape"]]
        dtype = getattr(torch, info["dtype"])
        kept = int(info["kept"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise _Corrupt(f"the metadata of masked tensor {key!r} is not readable ({error!r})") from None
    if not isinstance(dtype, torch.dtype) or any(size < 0 for size in shape):
        raise _Corrupt(f"the metadata of masked tensor {key!r} gives an invalid dtype or shape")
    numel = 1
    for size in shape:
        numel *= size
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (numel + 7) // 8:
        raise _Corrupt(
            f"the mask of {key!r} holds {packed.numel()} bytes of {packed.dtype}, not the {(numel + 7) // 8} "
            f"uint8 bytes of shape {shape}"
        )
    padding = packed.numel() * 8 - numel
    if padding and int(packed[-1]) & ((1 << padding) - 1):
        raise _Corrupt(f"the mask of {key!r} has bits set past its {numel} entries")
    mask = unpack_mask(packed, shape)
    ones = int(mask.count_nonzero())
    if values.dtype != dtype or values.dim() != 1 or values.numel() != kept or ones != kept:
        raise _Corrupt(
            f"masked tensor {key!r}: its mask keeps {ones} entries, its metadata says {kept} {info['dtype']}, its "
            f"values tensor holds {values.numel()} {_dtype_name(values.dtype)}"
        )
    return torch.zeros(shape, dtype=dtype).masked_scatter_(mask, values)
