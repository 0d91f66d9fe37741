"""The core's ablation options and density floors reach the callback, from Python and from YAML."""

import copy
import math

import pytest
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_synflow import SynFlowPruning, prune
from lightning_synflow.callback.state import differences, unpack_state
from lightning_synflow.pruning import LayerCollapseWarning
from tests.helpers import SmallNet, digits_mlp_config, quiet_trainer

OPTIONS = [
    {"shuffle": True, "seed": 3},
    {"invert": True},
    {"reinitialize": True, "seed": 5},
    {"min_density": {"head2.*": 0.5}},
    {"train_mode": True},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: next(iter(o)))
def test_callback_masks_and_weights_equal_prune_with_the_same_options(options):
    torch.manual_seed(0)
    model = SmallNet()
    expected_model = copy.deepcopy(model)
    expected = prune(expected_model, sparsity=0.9, iterations=5, example_input=torch.zeros(1, 32), **options)
    pruning = SynFlowPruning(sparsity=0.9, iterations=5, verbose=False, **options)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=0, callbacks=[pruning])
    trainer.fit(model)
    assert set(pruning.masks) == set(expected)
    for name, mask in expected.items():
        assert torch.equal(pruning.masks[name], mask), name
    weights = dict(model.named_parameters())
    for name, param in expected_model.named_parameters():
        assert torch.equal(weights[name].detach(), param.detach()), name


def test_option_values_are_read_only_and_validated():
    pruning = SynFlowPruning(sparsity=0.5, shuffle=True, min_density={"net.*": 0.1})
    assert pruning.shuffle is True and pruning.min_density == {"net.*": 0.1}
    assert pruning.schedule == "exponential"
    with pytest.raises(AttributeError):
        pruning.shuffle = False
    with pytest.raises(MisconfigurationException, match="invert"):
        SynFlowPruning(sparsity=0.5, invert="yes")
    with pytest.raises(MisconfigurationException, match="min_density"):
        SynFlowPruning(sparsity=0.5, min_density=1.5)


def test_impossible_floor_is_refused_at_fit_start_before_any_weight_changes():
    torch.manual_seed(0)
    model = SmallNet()
    before = copy.deepcopy(model.state_dict())
    pruning = SynFlowPruning(sparsity=0.9, iterations=2, min_density=0.5, verbose=False)
    with pytest.raises(Exception, match="min_density"):
        quiet_trainer(callbacks=[pruning]).fit(model)
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_collapse_warning_reaches_the_callback():
    torch.manual_seed(0)
    model = SmallNet()
    with torch.no_grad():
        model.head2.weight.mul_(1e-6)
    pruning = SynFlowPruning(sparsity=0.9, method="magnitude", verbose=False)
    with pytest.warns(LayerCollapseWarning, match="head2.weight"):
        quiet_trainer(limit_train_batches=1, callbacks=[pruning]).fit(model)
    assert not pruning.masks["head2.weight"].any()


def test_seed_counts_on_resume_when_shuffle_or_reinitialize_draws_from_it():
    torch.manual_seed(0)
    pruning = SynFlowPruning(sparsity=0.9, iterations=2, shuffle=True, seed=1, verbose=False)
    quiet_trainer(limit_train_batches=1, callbacks=[pruning]).fit(SmallNet())
    saved = unpack_state(pruning.state_dict())
    names = list(saved.masks)
    reseeded = SynFlowPruning(sparsity=0.9, iterations=2, shuffle=True, seed=2)
    assert "seed" in differences(saved, reseeded.settings, names)
    plain = SynFlowPruning(sparsity=0.9, iterations=2, seed=2)
    found = differences(saved, plain.settings, names)
    assert "shuffle" in found and "seed" not in found


CONFIG = digits_mlp_config(
    trainer={"max_epochs": 1, "limit_train_batches": 1},
    pruning={
        "sparsity": 0.9,
        "iterations": 3,
        "invert": False,
        "shuffle": True,
        "seed": 4,
        "min_density": {"*": 0.05},
    },
)


def test_options_from_yaml(fit_config):
    pruning = fit_config(CONFIG)
    assert pruning.shuffle is True and pruning.min_density == {"*": 0.05}
    for name, mask in pruning.masks.items():
        assert int(mask.sum()) >= math.ceil(0.05 * mask.numel()), name
