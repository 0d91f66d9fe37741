import json
import struct

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lightning_synflow.export.sparse_file import (
    _crc32,
    _metadata_crc32,
    load_sparse,
    save_sparse,
)
from lightning_synflow.masks import apply_masks
from tests.helpers import convnet, mlp


def random_masks(model: nn.Module, density: float) -> dict[str, torch.Tensor]:
    """Masks keeping about ``density`` of every Conv/Linear weight (at least one entry each)."""
    masks = {}
    for name, param in model.named_parameters():
        if name.endswith("weight") and param.dim() > 1:
            mask = torch.rand(param.shape) < density
            mask.view(-1)[0] = True
            masks[name] = mask
    return masks


def pruned(model: nn.Module, density: float) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    masks = random_masks(model, density)
    return apply_masks(model, masks), masks


def conv_bn_mlp() -> nn.Sequential:
    """Conv + BatchNorm (float and int64 buffers, a 0-d one) + Linear layers."""
    return convnet([3, 8, 8], size=4, bn=True)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip_is_bit_exact_in_order_and_loads_into_a_fresh_model(tmp_path, dtype):
    model, masks = pruned(conv_bn_mlp().to(dtype), 0.2)
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].num_batches_tracked.fill_(7)
    path = tmp_path / "model.safetensors"
    save_sparse(model, masks, path)
    loaded = load_sparse(path)
    expected = model.state_dict()
    assert list(loaded) == list(expected)
    for key, tensor in expected.items():
        assert same_bits(loaded[key], tensor), key
    fresh = conv_bn_mlp().to(dtype)
    fresh.load_state_dict(loaded)
    x = torch.randn(2, 3, 4, 4, dtype=dtype)
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_a_99_percent_sparse_mlp_file_is_at_most_5_percent_of_torch_save(tmp_path):
    model, masks = pruned(mlp([784, 300, 300], classes=10), 0.01)
    save_sparse(model, masks, tmp_path / "sparse.safetensors")
    torch.save(model.state_dict(), tmp_path / "dense.pt")
    ratio = (tmp_path / "sparse.safetensors").stat().st_size / (tmp_path / "dense.pt").stat().st_size
    assert ratio <= 0.05, ratio


def test_tied_weights_come_back_under_both_keys(tmp_path):
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
    model[2].weight = model[0].weight
    masks = random_masks(model, 0.5)  # named_parameters() names the tied weight once: "0.weight"
    assert list(masks) == ["0.weight"]
    apply_masks(model, masks)
    save_sparse(model, masks, tmp_path / "tied.safetensors")
    loaded = load_sparse(tmp_path / "tied.safetensors")
    assert list(loaded) == list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert torch.equal(loaded["2.weight"], model[0].weight)
    fresh = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
    fresh[2].weight = fresh[0].weight
    fresh.load_state_dict(loaded)
    assert torch.equal(fresh[2].weight, model[2].weight)


def test_a_mask_under_the_second_name_of_a_tied_weight(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    masks = {"1.weight": torch.rand(4, 4) < 0.5}
    apply_masks(model, masks)
    save_sparse(model, masks, tmp_path / "tied.safetensors")
    loaded = load_sparse(tmp_path / "tied.safetensors")
    assert same_bits(loaded["0.weight"], model[0].weight.detach()) and loaded["1.weight"] is loaded["0.weight"]


def test_save_refuses_nonzero_pruned_entries_and_bad_masks(tmp_path):
    model = mlp([4, 5])
    mask = torch.rand(5, 4) < 0.5
    with pytest.raises(ValueError, match="nonzero values at entries its mask prunes.*apply_masks"):
        save_sparse(model, {"1.weight": mask}, tmp_path / "f.safetensors")
    with pytest.raises(ValueError, match="'nope.weight' names none of the state_dict keys"):
        save_sparse(model, {"nope.weight": mask}, tmp_path / "f.safetensors")
    with pytest.raises(ValueError, match=r"has shape \[4, 5\], its tensor has shape \[5, 4\]"):
        save_sparse(model, {"1.weight": mask.T}, tmp_path / "f.safetensors")
    assert not list(tmp_path.iterdir())


def test_save_refuses_extra_state_that_is_not_a_tensor(tmp_path):
    class WithExtra(nn.Linear):
        def get_extra_state(self):
            return {"note": "kept by a plugin"}

        def set_extra_state(self, state):
            pass

    with pytest.raises(ValueError, match=r"'_extra_state' is a dict \(extra state\?\)"):
        save_sparse(WithExtra(2, 2), {}, tmp_path / "f.safetensors")


def write_sparse(tmp_path) -> tuple:
    model, masks = pruned(mlp([16, 12]), 0.3)
    path = tmp_path / "model.safetensors"
    save_sparse(model, masks, str(path))
    return path, model


def rewrite(path, change) -> None:
    """Rewrite a safetensors file's JSON header with ``change(header)`` applied (data left as it is)."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    change(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + size :])


@pytest.mark.parametrize("keep", [0, 4, 20, -1, -100])
def test_truncated_files_are_refused_with_the_file_name(tmp_path, keep):
    path, _ = write_sparse(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(ValueError, match=r"load_sparse: '.*model\.safetensors'"):
        load_sparse(path)


def test_a_flipped_data_byte_is_refused(tmp_path):
    path, _ = write_sparse(tmp_path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its checksum"):
        load_sparse(path)


def edit_shape(header: dict) -> None:
    masked = json.loads(header["__metadata__"]["masked"])
    masked["1.weight"]["shape"] = masked["1.weight"]["shape"][::-1]  # same bit count, transposed: still refused
    header["__metadata__"]["masked"] = json.dumps(masked)


def edit_kept(header: dict) -> None:
    masked = json.loads(header["__metadata__"]["masked"])
    masked["1.weight"]["kept"] += 1
    header["__metadata__"]["masked"] = json.dumps(masked)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (edit_shape, "metadata does not match its checksum"),
        (edit_kept, "metadata does not match its checksum"),
        (lambda h: h["__metadata__"].update(format="something else"), "'format' is 'something else'"),
        (lambda h: h["__metadata__"].update(format_version="9"), "format_version '9'"),
        (lambda h: h.pop("__metadata__"), "'format' is None"),
    ],
)
def test_edited_metadata_is_refused(tmp_path, change, message):
    path, _ = write_sparse(tmp_path)
    rewrite(path, change)
    with pytest.raises(ValueError, match=message):
        load_sparse(path)


def resave(path, change_tensors, change_metadata=lambda m: None) -> None:
    """Write the file again with changed tensors/metadata and valid checksums: only the consistency checks can tell."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    change_tensors(tensors)
    change_metadata(metadata)
    metadata["crc32"] = json.dumps({name: _crc32(tensor) for name, tensor in tensors.items()})
    metadata["metadata_crc32"] = _metadata_crc32(metadata)
    save_file(tensors, str(path), metadata=metadata)


def test_kept_values_that_disagree_with_the_mask_popcount_are_refused(tmp_path):
    path, _ = write_sparse(tmp_path)
    resave(path, lambda t: t.update({"values/1.weight": torch.cat([t["values/1.weight"], torch.ones(1)])}))
    with pytest.raises(ValueError, match=r"'1\.weight': its mask keeps (\d+) entries, its metadata says \1 float32"):
        load_sparse(path)


def test_a_mask_of_the_wrong_size_or_with_padding_bits_is_refused(tmp_path):
    path, _ = write_sparse(tmp_path)
    resave(path, lambda t: t.update({"mask/1.weight": t["mask/1.weight"][:-1]}))
    with pytest.raises(ValueError, match="the mask of '1.weight' holds 23 bytes"):
        load_sparse(path)


def test_missing_and_foreign_tensors_are_refused(tmp_path):
    path, _ = write_sparse(tmp_path)
    resave(path, lambda t: t.pop("dense/1.bias"))
    with pytest.raises(ValueError, match=r"missing: \['dense/1.bias'\]"):
        load_sparse(path)
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not 'lightning_synflow.sparse_state_dict'"):
        load_sparse(path)
    with pytest.raises(FileNotFoundError):
        load_sparse(tmp_path / "absent.safetensors")


def test_apply_masks_zeroes_in_place_and_checks_every_mask_first():
    model = mlp([4, 5])
    before = model[1].weight.detach().clone()
    mask = torch.rand(5, 4) < 0.5
    with pytest.raises(ValueError, match="'2.weight' names none of the parameters of Sequential"):
        apply_masks(model, {"1.weight": mask, "2.weight": mask})
    with pytest.raises(ValueError, match=r"'3.weight' has shape \[5, 4\], its tensor has shape \[3, 5\]"):
        apply_masks(model, {"1.weight": mask, "3.weight": mask})
    with pytest.raises(ValueError, match="must be a boolean tensor"):
        apply_masks(model, {"1.weight": mask.float()})
    assert torch.equal(model[1].weight, before)
    assert apply_masks(model, {"1.weight": mask}) is model
    assert torch.equal(model[1].weight, before * mask)
    assert (model[1].weight[~mask] == 0).all() and not torch.signbit(model[1].weight[~mask]).any()
