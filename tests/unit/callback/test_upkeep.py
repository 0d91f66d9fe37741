"""MaskUpkeep: one pass per step. The optimizers proven to keep exact zeros at zero are not re-masked and keep
every pruned weight at exactly 0; any other optimizer or setting is re-masked after every step."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from lightning_synflow.callback.upkeep import MaskUpkeep

Factory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: a second intra-op thread only waits for a core on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model_and_masks() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Two tensors: one with 1 of 128 entries pruned (zeroed by positions), one half pruned (by a dense mask)."""
    model = nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 4))
    first = torch.ones(128, 16, dtype=torch.bool)
    first.view(-1)[torch.randperm(first.numel())[:16]] = False
    masks = {"0.weight": first, "2.weight": torch.rand(4, 128) > 0.5}
    return model, masks


def _attached(model: nn.Module, masks: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> MaskUpkeep:
    """The masks' upkeep on ``model``, attached to ``optimizer``."""
    upkeep = MaskUpkeep(model, masks)
    upkeep.attach([optimizer])
    return upkeep


def _step(model: nn.Module, upkeep: MaskUpkeep, optimizer: torch.optim.Optimizer, closure: bool = True) -> None:
    """One step; with ``closure`` as Lightning's automatic optimization runs it: the step's pre-hooks run before
    the closure's backward (on the first step no gradient exists yet), and its post-hooks after the update."""
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))

    def backward() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        upkeep.mask_gradients()
        return loss

    if closure:
        optimizer.step(backward)
    else:
        backward()
        optimizer.step()


def _assert_pruned_exactly_zero(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        pruned = params[name].detach()[~mask]
        assert bool((pruned == 0).all()), f"{name}: {pruned[pruned != 0][:5]}"


def _run(factory: Factory, steps: int = 8) -> MaskUpkeep:
    """A dense step first (so the optimizer state is not zero), then masks, then ``steps`` masked steps."""
    model, masks = _model_and_masks()
    optimizer = factory(list(model.parameters()))
    _step(model, MaskUpkeep(model, {}), optimizer)
    upkeep = MaskUpkeep(model, masks)
    assert {p.positions is None for p in upkeep._pruned.values()} == {True, False}  # both ways of zeroing
    upkeep.attach([optimizer])
    for _ in range(steps):
        _step(model, upkeep, optimizer)
        _assert_pruned_exactly_zero(model, masks)
    upkeep.detach()
    return upkeep


SETTINGS: dict[str, tuple[type[torch.optim.Optimizer], dict]] = {
    "sgd": (torch.optim.SGD, {"lr": 0.1}),
    "sgd-momentum": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    "sgd-dampening": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}),
    "sgd-nesterov": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    "sgd-weight_decay": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1}),
    "sgd-maximize": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1, "maximize": True}),
    "adam": (torch.optim.Adam, {"lr": 0.01}),
    "adam-amsgrad": (torch.optim.Adam, {"lr": 0.01, "amsgrad": True}),
    "adam-weight_decay": (torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1}),
    "adam-decoupled": (torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    "adam-maximize": (torch.optim.Adam, {"lr": 0.01, "maximize": True, "amsgrad": True}),
    "adamw": (torch.optim.AdamW, {"lr": 0.01}),
    "adamw-amsgrad": (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    "adamw-lr_wd_above_1": (torch.optim.AdamW, {"lr": 2.0, "weight_decay": 1.5}),  # p * (1 - 3): -0.0
    "nadam": (torch.optim.NAdam, {"lr": 0.01}),
    "nadam-weight_decay": (torch.optim.NAdam, {"lr": 0.01, "weight_decay": 0.1}),
    "nadam-decoupled": (torch.optim.NAdam, {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    "nadam-no_momentum_decay": (torch.optim.NAdam, {"lr": 0.01, "momentum_decay": 0.0, "maximize": True}),
    # betas (0.9, 0.9): steps 1-5 are unrectified, steps 6+ rectified.
    "radam": (torch.optim.RAdam, {"lr": 0.01, "betas": (0.9, 0.9)}),
    "radam-weight_decay": (torch.optim.RAdam, {"lr": 0.01, "betas": (0.9, 0.9), "weight_decay": 0.1}),
    "radam-decoupled": (
        torch.optim.RAdam,
        {"lr": 0.01, "betas": (0.9, 0.9), "weight_decay": 0.1, "decoupled_weight_decay": True},
    ),
    "rmsprop": (torch.optim.RMSprop, {"lr": 0.01}),
    "rmsprop-centered": (torch.optim.RMSprop, {"lr": 0.01, "centered": True}),
    "rmsprop-momentum": (torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.1}),
    "rmsprop-centered_momentum": (torch.optim.RMSprop, {"lr": 0.01, "centered": True, "momentum": 0.9}),
    "rmsprop-maximize": (torch.optim.RMSprop, {"lr": 0.01, "maximize": True}),
    "adagrad": (torch.optim.Adagrad, {"lr": 0.1}),
    "adagrad-lr_decay": (torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.1}),
    "adagrad-initial_accumulator": (torch.optim.Adagrad, {"lr": 0.1, "initial_accumulator_value": 0.5}),
    "adagrad-maximize": (torch.optim.Adagrad, {"lr": 0.1, "maximize": True}),
}
FUSED_ON_CPU = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad)
CASES = [
    pytest.param(cls, {**kwargs, **form}, id=f"{name}-{label}")
    for name, (cls, kwargs) in SETTINGS.items()
    for label, form in (("single", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True}))
    if label != "fused" or cls in FUSED_ON_CPU
]


@pytest.mark.parametrize(("cls", "kwargs"), CASES)
def test_proven_optimizers_keep_pruned_weights_exactly_zero_without_a_remask(cls, kwargs):
    upkeep = _run(lambda params: cls(params, **kwargs))
    assert upkeep.remasked == 0


def test_a_cpu_tensor_learning_rate_is_read_and_proven():
    upkeep = _run(lambda params: torch.optim.Adam(params, lr=torch.tensor(0.01), foreach=False))
    assert upkeep.remasked == 0


class NoisySGD(torch.optim.SGD):
    """A subclass may change ``step``: this one moves every weight, pruned or not."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(1e-3)
        return loss


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(lambda params: NoisySGD(params, lr=0.1), id="sgd_subclass"),
        pytest.param(lambda params: torch.optim.Adamax(params, lr=0.01), id="adamax_not_listed"),
        # eps = 0: 0 / (sqrt(0) + 0) is NaN at every pruned entry; the re-mask writes +0.0 over it.
        pytest.param(lambda params: torch.optim.Adam(params, lr=0.01, eps=0.0), id="adam_eps_0"),
        pytest.param(lambda params: torch.optim.RMSprop(params, lr=0.01, eps=0.0), id="rmsprop_eps_0"),
        # The foreach form's reciprocal of (0 + eps) / (lr * ...) overflows to inf: 0 * inf = NaN.
        pytest.param(lambda params: torch.optim.RAdam(params, lr=1e32, betas=(0.9, 0.9), eps=1e-8), id="radam_huge_lr"),
    ],
)
def test_other_optimizers_and_settings_are_remasked_after_every_step(factory):
    upkeep = _run(factory, steps=8)
    assert upkeep.remasked in (8 * 2, 8 * 2 * 2)  # both masked tensors after every step (twice: see below)


def test_the_check_runs_per_group_and_per_step():
    model, masks = _model_and_masks()
    optimizer = torch.optim.Adam(
        [{"params": [model[0].weight]}, {"params": [model[2].weight], "eps": 1e-8}, {"params": [model[0].bias]}],
        lr=0.01,
    )
    upkeep = _attached(model, masks, optimizer)
    _step(model, upkeep, optimizer)
    assert upkeep.remasked == 0
    optimizer.param_groups[1]["eps"] = 0.0  # changed mid-fit, as a scheduler could: that group only
    for _ in range(3):
        _step(model, upkeep, optimizer)
        _assert_pruned_exactly_zero(model, masks)
    assert upkeep.remasked == 3
    optimizer.param_groups[0]["lr"] = float("inf")
    _step(model, upkeep, optimizer)
    assert upkeep.remasked == 5


def test_late_parameter_group_state_is_zeroed_before_first_use_without_a_remask():
    model, masks = _model_and_masks()
    optimizer = torch.optim.SGD([model[2].weight], lr=0.1, momentum=0.9)
    upkeep = _attached(model, masks, optimizer)
    _step(model, upkeep, optimizer)
    weight = model[0].weight
    optimizer.add_param_group({"params": [weight]})
    optimizer.state[weight] = {"momentum_buffer": torch.ones_like(weight)}  # would move pruned weights
    for _ in range(3):
        _step(model, upkeep, optimizer, closure=False)
        _assert_pruned_exactly_zero(model, masks)
        assert bool((optimizer.state[weight]["momentum_buffer"][~masks["0.weight"]] == 0).all())
    assert upkeep.remasked == 0


def test_state_created_by_a_late_groups_first_step_is_zeroed_after_it():
    model, masks = _model_and_masks()
    optimizer = torch.optim.Adagrad([model[2].weight], lr=0.1, initial_accumulator_value=0.5)
    upkeep = _attached(model, masks, optimizer)
    weight = model[0].weight
    optimizer.add_param_group({"params": [weight]})  # Adagrad creates its sum (0.5 everywhere) at the first step
    _step(model, upkeep, optimizer, closure=False)
    pruned = optimizer.state[weight]["sum"][~masks["0.weight"]]
    assert bool((pruned == 0).all())
    assert bool((optimizer.state[weight]["sum"][masks["0.weight"]] >= 0.5).all())
    _assert_pruned_exactly_zero(model, masks)
    assert upkeep.remasked == 0


def test_loaded_optimizer_state_is_zeroed_so_the_step_keeps_zeros():
    """A resumed run loads the optimizer state after the masks are in force (e.g. on_settings_change='reprune')."""
    model, masks = _model_and_masks()
    dense = torch.optim.Adam(model.parameters(), lr=0.01)
    _step(model, MaskUpkeep(model, {}), dense)
    saved = dense.state_dict()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    upkeep = _attached(model, masks, optimizer)
    optimizer.load_state_dict(saved)
    for name, param in model.named_parameters():
        if name in masks:
            for key in ("exp_avg", "exp_avg_sq"):
                assert bool((optimizer.state[param][key][~masks[name]] == 0).all()), (name, key)
    for _ in range(3):
        _step(model, upkeep, optimizer)
        _assert_pruned_exactly_zero(model, masks)
    assert upkeep.remasked == 0
    upkeep.detach()
    assert not optimizer._optimizer_load_state_dict_post_hooks


def test_gradients_are_masked_on_both_paths_also_when_not_contiguous():
    model, masks = _model_and_masks()
    upkeep = MaskUpkeep(model, masks)
    model[0].weight.grad = torch.randn(16, 128).t()  # same shape, transposed strides
    model[2].weight.grad = torch.randn(128, 4).t()
    model[0].bias.grad = torch.ones(128)
    upkeep.mask_gradients()
    for name, param in model.named_parameters():
        if name in masks:
            assert bool((param.grad[~masks[name]] == 0).all()) and bool((param.grad[masks[name]] != 0).all())
    assert bool((model[0].bias.grad == 1).all())


@pytest.mark.parametrize(
    ("factory", "remasked"),
    [
        pytest.param(lambda p: torch.optim.Adam(p, lr=0.01, eps=0.0), {3}, id="adam_eps_0"),  # 1 tensor x 3 steps
        # 2 tensors x 3 steps, once or twice per step: torch patches SGD.step with the hooks too once any plain SGD
        # was built in this process, and the subclass calls it.
        pytest.param(lambda p: NoisySGD(p, lr=0.1), {6, 12}, id="sgd_subclass"),
    ],
)
def test_remask_skips_tensors_torchs_own_step_did_not_step(factory, remasked):
    """A weight without a gradient is not stepped by torch's optimizers; another class may move any weight."""
    model, masks = _model_and_masks()
    model[0].weight.requires_grad_(False)
    optimizer = factory(list(model.parameters()))
    upkeep = _attached(model, masks, optimizer)
    for _ in range(3):
        _step(model, upkeep, optimizer)
        _assert_pruned_exactly_zero(model, masks)
    assert upkeep.remasked in remasked
