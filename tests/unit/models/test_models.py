import pytest
import torch

from lightning_synflow.models import MLP, CifarResNet, CifarVGG, ImageClassifier, ResNet18, cifar_resnet, vgg16
from lightning_synflow.pruning import select_prunable


def _prunable(model):
    return sum(p.numel() for p in select_prunable(model).values())


@pytest.mark.parametrize(
    ("build", "expected", "tensors"),
    [
        (lambda: vgg16(10), 14_715_584, 14),
        (lambda: vgg16(100), 14_761_664, 14),
        (lambda: cifar_resnet(20), 270_896, 22),
        (lambda: CifarVGG(11), 9_217_728 + 5_120, 9),
        (lambda: CifarResNet(56), 851_504, 58),
        (lambda: ResNet18(10), 11_164_352, 21),
        (lambda: MLP(64, [300, 300, 300], 10), 202_200, 4),
    ],
)
def test_prunable_weight_counts_match_the_paper(build, expected, tensors):
    model = build()
    assert _prunable(model) == expected
    assert len(select_prunable(model)) == tensors


@pytest.mark.parametrize("build", [lambda: vgg16(10), lambda: cifar_resnet(20), lambda: ResNet18(10)])
def test_forward_shapes(build):
    assert build()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_bad_depths():
    with pytest.raises(ValueError, match="`depth` must be one of"):
        CifarVGG(12)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        CifarResNet(21)


def test_image_classifier_recipe_and_example_input():
    clf = ImageClassifier(cifar_resnet(20), num_classes=10, input_shape=[3, 32, 32])
    assert clf.example_input_array.shape == (1, 3, 32, 32)
    config = clf.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.1, 0.9, True, 1e-4)
    assert sorted(scheduler.milestones) == [60, 120] and scheduler.gamma == 0.1
    adam = ImageClassifier(MLP(), optimizer="adamw", lr=0.01, input_shape=[64]).configure_optimizers()["optimizer"]
    assert isinstance(adam, torch.optim.AdamW)
