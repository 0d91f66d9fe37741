import copy
import warnings

import pytest
import torch
from torch import nn

from lightning_synflow import prune
from lightning_synflow.models import MLP, cifar_resnet, vgg16
from lightning_synflow.pruning import LayerCollapseWarning, score
from tests.helpers import convnet, linearized_flow, mlp, slow_cases
from tests.imagenet_models import densenet121, efficientnet_b0, imagenet_resnet
from tests.reference_semantics import reference_scores


def _layer_sums(scores):
    return torch.stack([s.sum() for s in scores.values()])


@pytest.mark.parametrize("net", [mlp([6, 9, 7, 5], bias=False), convnet([2, 4, 5], size=5, bias=False)])
def test_conservation_per_layer_sums_are_equal(net):
    net = net.double()
    example = (
        torch.zeros(1, 6, dtype=torch.float64)
        if isinstance(net[1], nn.Linear)
        else torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    )
    sums = _layer_sums(score(net, example_input=example))
    assert float((sums.max() - sums.min()) / sums.mean()) < 1e-9
    assert float(sums[0]) == pytest.approx(linearized_flow(net, example), rel=1e-9)


def test_single_shot_synflow_equals_brute_force():
    torch.manual_seed(1)
    net = mlp([3, 4, 3], bias=True, classes=2).double()
    example = torch.zeros(1, 3, dtype=torch.float64)
    scores = score(net, example_input=example)
    flow = linearized_flow(net, example)
    for name, param in net.named_parameters():
        if name not in scores:
            continue
        for index in range(param.numel()):
            knocked = copy.deepcopy(net)
            with torch.no_grad():
                dict(knocked.named_parameters())[name].view(-1)[index] = 0
            # R is linear in each single weight of the linearized network: theta dR/dtheta = R - R(theta=0)
            expected = flow - linearized_flow(knocked, example)
            assert float(scores[name].view(-1)[index]) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def _assert_same_ranking(ours, exact, rel):
    ours = torch.cat([s.flatten() for s in ours.values()]).double()
    exact = torch.cat([s.flatten() for s in exact.values()]).double()
    assert bool(torch.isfinite(ours).all())
    for q in (0.5, 0.9, 0.99):
        k = int(q * exact.numel())
        t_exact = torch.kthvalue(exact, k).values
        t_ours = torch.kthvalue(ours, k).values
        clearly_kept = exact > t_exact * (1 + rel)
        clearly_pruned = exact < t_exact * (1 - rel)
        assert bool((ours[clearly_kept] > t_ours).all())
        assert bool((ours[clearly_pruned] <= t_ours).all())


OVERFLOWING = {
    "cifar_resnet56": (lambda: cifar_resnet(56), (1, 3, 32, 32)),
    "cifar_resnet110": (lambda: cifar_resnet(110), (1, 3, 32, 32)),
    "resnet50": (lambda: imagenet_resnet([3, 4, 6, 3]), (1, 3, 224, 224)),
    "resnet101": (lambda: imagenet_resnet([3, 4, 23, 3]), (1, 3, 224, 224)),
    "densenet121": (densenet121, (1, 3, 224, 224)),
    "efficientnet_b0": (efficientnet_b0, (1, 3, 224, 224)),
}


# The ImageNet-sized networks take seconds each (resnet101: about 45 s on 2 cores).
@pytest.mark.parametrize("name", slow_cases(OVERFLOWING, {"resnet50", "resnet101", "densenet121", "efficientnet_b0"}))
def test_scores_stay_finite_and_rank_like_float64(name):
    build, shape = OVERFLOWING[name]
    model = build().eval()
    example = torch.zeros(shape)
    ours = score(model, example_input=example)
    exact_model = copy.deepcopy(model).double()
    names = list(ours)
    exact = reference_scores(exact_model, names, "synflow", example.double())
    assert all(bool(torch.isfinite(s).all()) for s in exact.values())  # float64 is finite here
    _assert_same_ranking(ours, exact, rel=1e-4)


def test_float32_overflow_is_what_the_reference_gets():
    model = cifar_resnet(56).eval()
    names = list(score(model, example_input=torch.zeros(1, 3, 32, 32)))
    reference = reference_scores(copy.deepcopy(model), names, "synflow", torch.zeros(1, 3, 32, 32))
    assert not all(bool(torch.isfinite(s).all()) for s in reference.values())


def test_exact_beyond_float64_range():
    depth, width = 500, 32
    torch.manual_seed(0)
    deep = MLP(width, [width] * depth, 4, bias=False).double()
    for p in deep.parameters():
        nn.init.kaiming_normal_(p)
    example = torch.zeros(1, width, dtype=torch.float64)
    assert linearized_flow(deep, example) == float("inf")
    ours = score(deep, example_input=example)
    # The same network with each layer scaled by 1/8 (exact) stays inside float64's range.
    tamed = copy.deepcopy(deep)
    with torch.no_grad():
        for p in tamed.parameters():
            p.mul_(0.125)
    assert 0 < linearized_flow(tamed, example) < float("inf")
    exact = score(tamed, example_input=example)
    ratio = torch.cat([(o / e).flatten() for o, e in zip(ours.values(), exact.values()) if bool((e > 0).all())])
    assert bool(torch.isfinite(ratio).all())
    # Ours differs from the in-range computation by one exact power of two, the same for every weight.
    assert bool((ratio == ratio[0]).all())
    assert float(torch.log2(ratio[0])) == int(torch.log2(ratio[0]))


def test_zero_initialized_residual_branches_warn():
    model = cifar_resnet(20)
    with torch.no_grad():
        for block in model.blocks:
            block.bn2.weight.zero_()
    with pytest.warns(UserWarning, match=r"zero.*blocks\.\d\.conv[12]\.weight") as record:
        prune(model, sparsity=0.9, example_input=torch.zeros(1, 3, 32, 32), iterations=2)
    message = str(record[0].message)
    assert "%" in message and "arbitrary" in message


def test_zero_flow_is_an_error_that_explains():
    model = mlp([4, 4])
    with torch.no_grad():
        model[-1].weight.zero_()
        model[-1].bias.zero_()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="R = 0"):
        prune(model, sparsity=0.5, example_input=torch.zeros(1, 4))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_no_warning_on_a_healthy_network():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Two SynFlow iterations do empty the 1x1 shortcuts (a real collapse, warned about in test_collapse.py).
        warnings.simplefilter("ignore", LayerCollapseWarning)
        prune(cifar_resnet(20), sparsity=0.9, example_input=torch.zeros(1, 3, 32, 32), iterations=2)


def _is_connected(model, masks, example):
    return all(bool(m.any()) for m in masks.values()) and linearized_flow(model, example) > 0


@pytest.mark.slow
def test_layer_collapse_data_free_vgg16_cifar100():
    example = torch.zeros(1, 3, 32, 32)
    model = vgg16(100)
    masks = prune(model, compression=10**5, example_input=example)
    assert _is_connected(model, masks, example)
    model = vgg16(100)
    masks = prune(model, compression=10**3.5, method="magnitude")
    assert not all(bool(m.any()) for m in masks.values())
    assert linearized_flow(model, example) == 0
