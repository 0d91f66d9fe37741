"""``load_pruned`` and ``resize_to_state_dict``: a checkpoint of another architecture is refused by name and shape.

The checkpoints are written by hand (a ``state_dict`` and the callback's state, in the layout of
:mod:`lightning_synflow.checkpoint_format`): no Trainer runs.
"""

import re

import pytest
import torch
from torch import nn

from lightning_synflow.checkpoint_format import pack_masks, state_header
from lightning_synflow.export import load_pruned, resize_to_state_dict
from lightning_synflow.pruning.settings import PruningSettings


def _net(hidden: int = 8, layers: int = 2, kernel: int = 3, affine: bool = True) -> nn.Sequential:
    modules: list[nn.Module] = [
        nn.Conv2d(1, hidden, kernel, padding=kernel // 2),
        nn.BatchNorm2d(hidden, affine=affine),
        nn.ReLU(),
    ]
    for _ in range(layers - 1):
        modules += [nn.Flatten(), nn.Linear(hidden * 16, 10)]
    return nn.Sequential(*modules)


def _save(model: nn.Module, path, masks=None):
    """A Lightning-like checkpoint of ``model`` with SynFlowPruning's state (every weight kept unless ``masks``)."""
    if masks is None:
        masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in model.named_parameters() if p.dim() > 1}
    state = {**state_header(PruningSettings.create(sparsity=0.5)), **pack_masks(masks)}
    torch.save({"state_dict": model.state_dict(), "callbacks": {"SynFlowPruning": state}}, path)
    return path


def _shrunk_by_hand(affine: bool = True) -> nn.Sequential:
    """``_net()`` with 5 of its 8 channels left, as ``shrink=True`` leaves them (conv, norm, the Linear's inputs)."""
    thin = _net(hidden=8, affine=affine)
    thin[0] = nn.Conv2d(1, 5, 3, padding=1)
    thin[1] = nn.BatchNorm2d(5, affine=affine)
    thin[4] = nn.Linear(5 * 16, 10)
    return thin


def test_a_wider_checkpoint_is_refused_naming_the_tensor_and_both_shapes(tmp_path):
    path = _save(_net(hidden=16), tmp_path / "wide.ckpt")
    model = _net(hidden=8)
    before = {name: p.clone() for name, p in model.state_dict().items()}
    expected = "the checkpoint has '0.weight' of shape [16, 1, 3, 3], the model [8, 1, 3, 3]"
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_pruned(model, path)
    # nothing was resized or loaded
    assert all(torch.equal(before[name], p) for name, p in model.state_dict().items())
    assert model[0].out_channels == 8


def test_another_kernel_size_is_refused_though_no_dimension_is_larger(tmp_path):
    path = _save(_net(kernel=3), tmp_path / "k3.ckpt")
    with pytest.raises(ValueError, match=re.escape("'0.weight' of shape [8, 1, 3, 3], the model [8, 1, 5, 5]")):
        load_pruned(_net(kernel=5), path)


def test_a_tensor_of_another_rank_is_refused(tmp_path):
    state = _net().state_dict()
    state["4.weight"] = torch.zeros(10, 128, 1)
    with pytest.raises(
        ValueError, match=re.escape("the checkpoint has '4.weight' of shape [10, 128, 1], the model [10,")
    ):
        resize_to_state_dict(_net(), state)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    path = _save(_net(layers=2), tmp_path / "two.ckpt")
    with pytest.raises(ValueError, match=r"not in the model: 2 \('4\.weight', '4\.bias'\)"):
        load_pruned(_net(layers=1), path)
    path = _save(_net(layers=1), tmp_path / "one.ckpt")
    with pytest.raises(ValueError, match=r"missing from it: 2 \('4\.weight', '4\.bias'\)"):
        load_pruned(_net(layers=2), path)


def test_a_file_that_is_not_a_lightning_checkpoint_is_named(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_net().state_dict(), path)
    with pytest.raises(ValueError, match="is not a Lightning checkpoint"):
        load_pruned(_net(), path)


@pytest.mark.parametrize("affine", [True, False])
def test_a_shrunk_checkpoint_still_loads_into_the_dense_model(tmp_path, affine):
    thin = _shrunk_by_hand(affine)
    path = _save(thin, tmp_path / "thin.ckpt")
    model = _net(hidden=8, affine=affine)
    masks = load_pruned(model, path)
    assert model[0].out_channels == 5 and model[1].num_features == 5 and model[4].in_features == 80
    assert set(masks) == {"0.weight", "4.weight"}
    x = torch.randn(2, 1, 4, 4)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), thin.eval()(x))
