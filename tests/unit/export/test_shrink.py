"""shrink: the thinner dense network computes what the masked one does, and refuses what it cannot follow."""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lightning_synflow import prune
from lightning_synflow.export.shrink import ShrinkPlan, apply_shrink, plan_shrink, shrink
from lightning_synflow.models import MLP, cifar_resnet, vgg16
from lightning_synflow.report import count_macs

IMAGE = torch.zeros(1, 3, 32, 32)
BUILDERS = {
    "vgg16": (lambda: vgg16(10), IMAGE),
    "resnet20": (lambda: cifar_resnet(20), IMAGE),
    "mlp": (lambda: MLP(64, (300, 300, 300), 10), torch.zeros(1, 64)),
}
_PRUNED: dict = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread: on a shared 2-core machine, two-thread ops wait for a busy core (VGG pruning 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pruned(arch: str, compression: float):
    """A model pruned by SynFlow (10 iterations), cached per module; callers get a deep copy."""
    if (arch, compression) not in _PRUNED:
        build, example = BUILDERS[arch]
        torch.manual_seed(0)
        model = build()
        masks = prune(model, compression=compression, example_input=example, iterations=10)
        _PRUNED[arch, compression] = (model, masks)
    model, masks = _PRUNED[arch, compression]
    return copy.deepcopy(model), {name: mask.clone() for name, mask in masks.items()}


def relative_error(reference: nn.Module, other: nn.Module, x: torch.Tensor) -> float:
    reference.eval()
    other.eval()
    with torch.no_grad():
        a, b = reference(x), other(x)
    assert a.abs().max() > 0  # a collapsed network would make the comparison meaningless
    return float((a - b).abs().max() / a.abs().max())


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def trained_like(model: nn.Module) -> nn.Module:
    """Non-zero biases and BatchNorm statistics, as after training: dead channels output constants."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(1 + 0.2 * torch.randn(module.num_features, generator=generator))
                module.bias.copy_(0.5 * torch.randn(module.num_features, generator=generator))
            elif isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
                module.bias.copy_(0.5 * torch.randn(module.bias.shape, generator=generator))
    return model


CASES = [("vgg16", 10), ("vgg16", 100)] + [(a, c) for a in ("resnet20", "mlp") for c in (10, 100, 1000)]


@pytest.mark.parametrize(("arch", "compression"), CASES)
def test_shrunk_network_equals_the_masked_one_and_is_smaller(arch, compression):
    model, masks = pruned(arch, compression)
    example = BUILDERS[arch][1]
    plan = plan_shrink(model, masks, example)
    thin = copy.deepcopy(model)
    thin_masks = apply_shrink(thin, plan, masks)

    x = torch.randn(4, *example.shape[1:])
    assert relative_error(model, thin, x) <= 1e-5
    assert plan.shrunk_macs == count_macs(thin, example) < count_macs(model, example) == plan.dense_macs
    assert plan.shrunk_params == params(thin) < params(model) == plan.dense_params
    assert thin_masks.keys() == masks.keys()
    thin_params = dict(thin.named_parameters())
    for name, mask in thin_masks.items():
        assert mask.shape == thin_params[name].shape
        assert int(mask.sum()) <= int(masks[name].sum())  # kept weights of removed rows/columns went too
    assert type(thin) is type(model)


@pytest.mark.parametrize("arch", ["resnet20", "mlp"])
def test_constant_outputs_of_trained_networks_are_folded_or_kept(arch):
    model, masks = pruned(arch, 1000)
    trained_like(model)
    example = BUILDERS[arch][1]
    thin = shrink(model, masks, example)
    assert relative_error(model, thin, torch.randn(4, *example.shape[1:])) <= 1e-5
    assert params(thin) < params(model)


def test_vgg_with_trained_constants_keeps_what_padded_convolutions_would_see():
    model, masks = pruned("vgg16", 100)
    trained_like(model)
    thin = shrink(model, masks)  # no example input: flatten blocks come from the classifier
    assert relative_error(model, thin, torch.randn(2, 3, 32, 32)) <= 1e-5


def test_identity_shortcut_channels_are_removed_together():
    model, masks = pruned("resnet20", 1000)
    thin = shrink(model, masks, IMAGE)
    # stage 1: the stem and every block's conv2 add into one identity chain
    widths = {thin.conv.out_channels, thin.bn.num_features}
    widths |= {thin.blocks[i].conv2.out_channels for i in range(3)}
    widths |= {thin.blocks[i].bn2.num_features for i in range(3)}
    widths |= {thin.blocks[i].conv1.in_channels for i in range(3)}
    assert len(widths) == 1 and widths.pop() < 16
    for first in (3, 6):  # stages 2 and 3: the projection shortcut, the conv2s and the next inputs
        block = thin.blocks[first]
        width = block.shortcut[0].out_channels
        assert block.shortcut[1].num_features == width
        assert all(thin.blocks[i].conv2.out_channels == width for i in range(first, first + 3))
        assert all(thin.blocks[i].conv1.in_channels == width for i in range(first + 1, first + 3))
    assert thin.fc.in_features == thin.blocks[8].conv2.out_channels


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(6, 8)
        self.branch = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = F.relu(self.stem(x))
        return self.head(F.relu(h + self.branch(h)))


def test_a_tied_channel_survives_if_any_branch_needs_it():
    model = Residual()
    with torch.no_grad():
        model.branch.weight[2] = 0  # channel 2: no flow through the branch, but the stem's reaches the head
        model.branch.bias[2] = 0
        for layer in (model.stem, model.branch):  # channel 3: no flow in either branch (a constant 0)
            layer.weight[3] = 0
            layer.bias[3] = 0
        model.head.weight[:, 5] = 0  # channel 5: nobody reads it
        model.branch.weight[:, 5] = 0
    plan = plan_shrink(model)
    kept = [0, 1, 2, 4, 6, 7]
    assert plan.keep_out["stem"].tolist() == plan.keep_out["branch"].tolist() == kept
    assert plan.keep_in["branch"].tolist() == plan.keep_in["head"].tolist() == kept
    thin = shrink(model)
    assert relative_error(model, thin, torch.randn(5, 6)) <= 1e-6


def test_constant_channels_fold_into_a_bias_or_stay():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4, bias=False))
    with torch.no_grad():
        model[0].weight[:4] = 0  # 4 dead units with non-zero bias: ReLU(bias) constants
        model[0].bias[:4] = torch.tensor([0.5, -0.5, 1.0, 0.0])
        model[2].weight[10:] = 0  # 6 dead units whose tanh(bias) reaches a bias-free layer
    plan = plan_shrink(model)
    assert plan.keep_out["0"].tolist() == list(range(4, 16))  # folded into model[2].bias
    assert "2" in plan.bias_shift
    assert "2" not in plan.keep_out  # tanh(bias) != 0 cannot be folded into the bias-free model[4]
    thin = copy.deepcopy(model)
    apply_shrink(thin, plan)
    assert relative_error(model, thin, torch.randn(6, 8)) <= 1e-6


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(6, 3), nn.Linear(6, 3)

    def forward(self, x):
        h = self.a(x)
        y = self.b(h)  # reads h before the in-place ReLU...
        F.relu(h, inplace=True)
        return y + self.c(h)  # ...and c after it


def test_constants_follow_in_place_operations():
    model = InPlace()
    with torch.no_grad():
        model.a.weight[:2] = 0
        model.a.bias[:2] = torch.tensor([-0.5, 0.3])
    plan = plan_shrink(model)
    assert plan.keep_out["a"].tolist() == [2, 3, 4, 5]
    expected_c = model.c.weight[:, 1].double() * 0.3  # relu(-0.5) = 0 reaches c, -0.5 reaches b
    assert torch.allclose(plan.bias_shift["c"], expected_c.detach())
    assert relative_error(model, shrink(model), torch.randn(3, 4)) <= 1e-6


def test_a_zero_padded_convolution_absorbs_only_zero_constants():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    with torch.no_grad():
        model[0].weight[:2] = 0
        model[0].bias[:2] = torch.tensor([0.0, 0.7])  # channel 0 outputs 0, channel 1 a constant 0.7
    plan = plan_shrink(model, example_input=torch.zeros(1, 2, 5, 5))
    assert plan.keep_out["0"].tolist() == [1, 2, 3]
    thin = copy.deepcopy(model)
    apply_shrink(thin, plan)
    assert relative_error(model, thin, torch.randn(2, 2, 5, 5)) <= 1e-6


def test_model_inputs_and_outputs_are_never_cut_and_no_layer_is_emptied():
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 5))
    with torch.no_grad():
        model[0].weight[:, :3] = 0  # unused inputs
        model[2].weight.zero_()  # a collapsed layer
        model[4].weight[:2] = 0  # outputs with no flow
    thin = shrink(model)
    assert thin[0].in_features == 8 and thin[4].out_features == 5
    assert thin[2].out_features == 1 and thin[0].out_features == 1
    assert relative_error(model, thin, torch.randn(3, 8)) <= 1e-6


def test_concatenated_channels_are_followed():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 6, 1)
            self.c = nn.Conv2d(14, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 4 * 4, 3)

        def forward(self, x):
            return self.fc(torch.flatten(self.c(F.relu(torch.cat([self.a(x), self.b(x)], dim=1))), 1))

    model = Cat()
    with torch.no_grad():
        model.a.weight[:3] = 0
        model.a.bias[:3] = 0
        model.c.weight[:, 12] = 0  # channel 4 of b
    thin = shrink(model, example_input=torch.zeros(1, 3, 4, 4))
    assert (thin.a.out_channels, thin.b.out_channels, thin.c.in_channels) == (5, 5, 10)
    assert relative_error(model, thin, torch.randn(2, 3, 4, 4)) <= 1e-6


def test_a_lightning_module_wrapping_the_network_is_followed():
    from lightning_synflow.models import ImageClassifier

    network, masks = pruned("resnet20", 100)
    classifier = ImageClassifier(network)
    masks = {f"model.{name}": mask for name, mask in masks.items()}
    plan = plan_shrink(classifier, masks)  # shapes from example_input_array
    assert plan.shrunk_macs is not None and plan.shrunk_macs < plan.dense_macs
    assert all(name.startswith("model.") for name in plan.modules)
    thin = shrink(classifier, masks)
    assert relative_error(classifier, thin, torch.randn(2, 3, 32, 32)) <= 1e-5


def test_without_an_example_input_the_plan_is_the_same_but_has_no_macs():
    model, masks = pruned("resnet20", 100)
    with_input, without = plan_shrink(model, masks, IMAGE), plan_shrink(model, masks)
    assert without.dense_macs is None and without.macs_fraction is None
    assert with_input.keep_out.keys() == without.keep_out.keys()
    assert all(torch.equal(with_input.keep_out[n], without.keep_out[n]) for n in without.keep_out)
    assert all(torch.equal(with_input.keep_in[n], without.keep_in[n]) for n in without.keep_in)


def test_shrink_leaves_the_original_untouched_and_apply_is_in_place():
    model, masks = pruned("resnet20", 100)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    thin = shrink(model, masks)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert params(thin) < params(model)

    same, conv = model, model.blocks[0].conv1
    plan = plan_shrink(model, masks)
    apply_shrink(model, plan)
    assert model is same and model.blocks[0].conv1 is not conv
    assert type(model.blocks[0].conv1) is nn.Conv2d and model.blocks[0].conv1.weight.requires_grad
    with pytest.raises(ValueError, match="already shrunk"):
        apply_shrink(model, plan)


def test_a_fresh_model_takes_the_plan_and_loads_the_shrunk_weights(tmp_path):
    model, masks = pruned("resnet20", 100)
    plan = plan_shrink(model, masks, IMAGE)
    apply_shrink(model, plan, masks)
    torch.save(plan.to_dict(), tmp_path / "plan.pt")
    restored = ShrinkPlan.from_dict(torch.load(tmp_path / "plan.pt", weights_only=True))
    assert restored.summary() == plan.summary()
    assert (restored.dense_macs, restored.shrunk_params) == (plan.dense_macs, plan.shrunk_params)

    fresh = cifar_resnet(20)
    fresh_masks = apply_shrink(fresh, restored)
    assert fresh_masks == {}
    assert {n: p.shape for n, p in fresh.named_parameters()} == {n: p.shape for n, p in model.named_parameters()}
    fresh.load_state_dict(model.state_dict())
    assert relative_error(model, fresh, torch.randn(2, 3, 32, 32)) == 0.0


def test_plan_dict_round_trip_is_exact(tmp_path):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        model[0].weight[:5] = 0
    plan = plan_shrink(model, example_input=torch.zeros(1, 8))
    torch.save(plan.to_dict(), tmp_path / "plan.pt")
    again = ShrinkPlan.from_dict(torch.load(tmp_path / "plan.pt", weights_only=True))
    assert again.sizes == plan.sizes and again.dense_macs == plan.dense_macs == 8 * 16 + 16 * 4
    assert all(torch.equal(again.keep_out[n], plan.keep_out[n]) for n in plan.keep_out)
    assert all(torch.equal(again.keep_in[n], plan.keep_in[n]) for n in plan.keep_in)
    assert all(torch.equal(again.bias_shift[n], plan.bias_shift[n]) for n in plan.bias_shift)
    with pytest.raises(ValueError, match="not a ShrinkPlan"):
        ShrinkPlan.from_dict({"keep_out": {}})


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3)
        self.b = nn.Conv2d(8, 8, 3, groups=4)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.b(self.a(x)).mean((2, 3)))


class Rolled(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.mix = Roll()
        self.b = nn.Linear(16, 2)

    def forward(self, x):
        return self.b(self.mix(self.a(x)))


class Roll(nn.Module):
    def forward(self, x):
        return torch.roll(x, 1, dims=1)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)

    def forward(self, x):
        if x.sum() > 0:
            return self.a(x)
        return -self.a(x)


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 2)

    def forward(self, x):
        return self.b(self.a(F.relu(self.a(x))))


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 8)

    def forward(self, x):
        return F.linear(self.b(self.a(x)), self.b.weight.t())


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (Grouped(), "'b' .*grouped convolution \\(groups=4\\)"),
        (Rolled(), "node 'roll' \\(function roll\\) uses the channels produced by \\['a'\\]"),
        (Branchy(), "torch.fx cannot trace Branchy.forward.*exclude="),
        (Shared(), "module 'a' \\(Linear\\) is called more than once"),
        (Tied(), "node 'linear' \\(function linear\\)"),
    ],
    ids=["grouped", "custom-op", "untraceable", "shared-layer", "tied-weight"],
)
def test_what_cannot_be_followed_is_refused_with_a_clear_error(model, match):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.weight[: module.weight.shape[0] // 4] = 0
    example = torch.zeros(1, 3, 8, 8) if isinstance(model, Grouped) else torch.zeros(1, 8)
    with pytest.raises(ValueError, match=match):
        plan_shrink(model, example_input=example)


def test_excluded_submodules_are_left_whole_and_their_channels_kept():
    model = Rolled()
    with torch.no_grad():
        model.a.weight[:4] = 0
    assert plan_shrink(model, exclude="mix").modules == []
    with pytest.raises(ValueError, match="matches no submodule"):
        plan_shrink(model, exclude="nothing*")
    branchy = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), Branchy())
    with torch.no_grad():
        branchy[0].weight[:3] = 0
        branchy[0].bias[:3] = 0
    thin = shrink(branchy, exclude="3")
    assert thin[0].out_features == 5 and thin[2].out_features == 8
    assert relative_error(branchy, thin, torch.randn(2, 8)) <= 1e-6


def test_masks_that_do_not_match_the_model_are_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="names no parameter"):
        plan_shrink(model, {"9.weight": torch.ones(4, 4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="has shape"):
        plan_shrink(model, {"0.weight": torch.ones(2, 4, dtype=torch.bool)})
