"""Zero-initialized norm scales (zero_init_last): SynFlow empties their branches; the docs recipe keeps them."""

import re
import warnings
from fractions import Fraction

import pytest
import torch
from torch import nn

from lightning_synflow import prune
from lightning_synflow.pruning.schedule import prune_count
from tests.helpers import REPO_ROOT as ROOT


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn2.weight)  # zero_init_last: the block starts as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def resnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), Block(16), Block(16), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)
    )


def recipe():
    """The recipe of docs/limits.md, run from the page itself so the docs and the test cannot drift apart."""
    text = (ROOT / "docs" / "limits.md").read_text()
    section = text[text.index("### Recipe: prune a network with zero-initialized norm scales") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(code, namespace)
    return namespace["prune_with_zero_scales_as_one"]


def branch_weights(masks, block):
    return [int(masks[f"{block}.conv{i}.weight"].sum()) for i in (1, 2)]


def test_synflow_empties_the_branches_behind_zero_scales_and_says_what_to_do():
    torch.manual_seed(0)
    model = resnet()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        masks = prune(model, compression=20, example_input=torch.zeros(1, 3, 8, 8))
    assert branch_weights(masks, "1") == [0, 0] and branch_weights(masks, "2") == [0, 0]
    messages = " ".join(str(w.message) for w in caught)
    assert "zero_init_last" in messages and "Known limits" in messages


def test_the_recipe_keeps_every_branch_and_trains_from_the_zero_scales():
    torch.manual_seed(0)
    model = resnet()
    masks = recipe()(model, compression=20, example_input=torch.zeros(1, 3, 8, 8))
    for block in ("1", "2"):
        assert all(kept > 0 for kept in branch_weights(masks, block))
        assert not model.get_submodule(f"{block}.bn2").weight.any()  # back to the model's own initialization
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == total - prune_count(Fraction(1, 20), total)


def test_the_recipe_puts_the_zeros_back_when_pruning_fails():
    model = resnet()
    with pytest.raises(ValueError):
        recipe()(model, compression=20)  # SynFlow without example_input is refused
    assert not model.get_submodule("1.bn2").weight.any()
