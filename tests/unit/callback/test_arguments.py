"""Constructor validation and a missing input shape."""

import pytest
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_synflow import SynFlowPruning
from tests.helpers import SmallNet, quiet_trainer


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of `sparsity`"),
        ({"sparsity": 0.5, "compression": 2.0}, "exactly one of `sparsity`"),
        ({"sparsity": 1.5}, "`sparsity` must satisfy 0 <= sparsity < 1"),
        ({"compression": 0.1}, "`compression` must be a finite number >= 1"),
        ({"sparsity": 0.5, "method": "l1"}, r"`method` must be one of \['synflow', 'magnitude', 'random'"),
        ({"sparsity": 0.5, "schedule": "step"}, r"`schedule` must be one of \['exponential', 'linear'\]"),
        ({"sparsity": 0.5, "scope": "x"}, r"`scope` must be one of \['global', 'local'\]"),
        ({"sparsity": 0.5, "iterations": 0}, "`iterations` must be an integer >= 1"),
        ({"sparsity": 0.5, "parameters": [2]}, "`parameters` must be a glob pattern or a list of glob patterns"),
        ({"sparsity": 0.5, "exclude": [1]}, "`exclude` must be a glob pattern or a list of glob patterns"),
        ({"sparsity": 0.5, "on_settings_change": "ignore"}, r"`on_settings_change` must be one of \['error'"),
        ({"sparsity": 0.5, "progress": "yes"}, "`progress` must be true or false"),
        ({"sparsity": 0.5, "input_shape": [3, 0]}, "`input_shape` must be a list of positive integers"),
        ({"sparsity": 0.5, "seed": 1.5}, "`seed` must be an integer"),
        ({"sparsity": 0.5, "score_batches": 0}, "`score_batches` must be an integer >= 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(MisconfigurationException, match=message):
        SynFlowPruning(**kwargs)


def test_iterations_default_by_method():
    assert SynFlowPruning(sparsity=0.5).iterations == 100
    assert SynFlowPruning(sparsity=0.5, method="snip").iterations == 1


def test_missing_input_shape_says_how_to_fix_before_any_change():
    model = SmallNet(with_input=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(MisconfigurationException, match="example_input_array.*input_shape"):
        quiet_trainer(callbacks=[SynFlowPruning(sparsity=0.5, progress=False)]).fit(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_input_shape_argument_is_used():
    model = SmallNet(with_input=False)
    pruning = SynFlowPruning(sparsity=0.5, input_shape=[32], progress=False, verbose=False)
    quiet_trainer(callbacks=[pruning], max_steps=1).fit(model)
    assert pruning.masks is not None


def test_bad_pattern_is_refused_before_any_change():
    model = SmallNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(MisconfigurationException, match="`exclude` pattern 'nothing' matches no parameter"):
        quiet_trainer(callbacks=[SynFlowPruning(sparsity=0.5, exclude=["nothing"], progress=False)]).fit(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_sharded_strategies_are_refused():
    from lightning.pytorch.strategies import FSDPStrategy

    pruning = SynFlowPruning(sparsity=0.5)
    trainer = quiet_trainer(callbacks=[pruning])
    trainer.strategy.__class__ = type("FakeFSDP", (FSDPStrategy,), {})
    with pytest.raises(MisconfigurationException, match="does not support the FakeFSDP strategy"):
        pruning.setup(trainer, SmallNet(), "fit")
