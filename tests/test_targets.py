import pytest
import torch
from torch import nn

from lightning_synflow.models import cifar_resnet
from lightning_synflow.pruning import select_prunable


def _net():
    return nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(8, 3), nn.Embedding(5, 2))


def test_default_is_conv_and_linear_weights_only():
    assert list(select_prunable(_net())) == ["0.weight", "3.weight"]


def test_default_includes_first_layer_classifier_and_projection_shortcuts():
    names = list(select_prunable(cifar_resnet(20)))
    assert names[0] == "conv.weight" and names[-1] == "fc.weight"
    assert "blocks.3.shortcut.0.weight" in names
    assert not any("bn" in n or n.endswith("bias") for n in names)


def test_patterns_and_exclude():
    net = _net()
    assert list(select_prunable(net, parameters=["*.bias"])) == ["0.bias", "1.bias", "3.bias"]
    assert list(select_prunable(net, parameters="*weight", exclude=["1.*", "4.*"])) == ["0.weight", "3.weight"]
    assert list(select_prunable(net, exclude="3.weight")) == ["0.weight"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"parameters": ["nope.*"]}, "`parameters` pattern 'nope.*' matches no parameter"),
        ({"exclude": ["nope"]}, "`exclude` pattern 'nope' matches no parameter"),
        ({"exclude": ["*"]}, "Nothing to prune"),
        ({"parameters": []}, "`parameters` is an empty list"),
    ],
)
def test_bad_patterns(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("*", r"\*").replace(".", r"\.")):
        select_prunable(_net(), **kwargs)


def test_pattern_type_and_nothing_prunable():
    with pytest.raises(TypeError, match="glob pattern"):
        select_prunable(_net(), parameters=[1])
    with pytest.raises(ValueError, match="Nothing to prune"):
        select_prunable(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))
    assert torch.is_tensor(next(iter(select_prunable(_net()).values())))
