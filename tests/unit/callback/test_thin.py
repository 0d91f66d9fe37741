"""SynFlowPruning(shrink=True): the thin network trains, checkpoints, resumes and loads for inference."""

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn

from lightning_synflow import SynFlowPruning, load_pruned
from tests.helpers import StepChecker, TinyClassifier, quiet_trainer


class Wide(TinyClassifier):
    def __init__(self):
        super().__init__(
            nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 4)), 32
        )

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=0.01)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5)}


def _shrinking(**kwargs):
    return SynFlowPruning(sparsity=0.98, iterations=20, shrink=True, progress=False, verbose=False, **kwargs)


def test_shrink_trains_the_thin_network_in_place_and_logs_its_size(tmp_path):
    model = Wide()
    same_object = model
    pruning = _shrinking()
    checker = StepChecker(pruning)
    logger = CSVLogger(tmp_path)
    trainer = quiet_trainer(callbacks=[pruning, checker], logger=logger, max_epochs=2)
    trainer.fit(model)
    assert model is same_object and checker.steps == 16
    hidden = model.net[0].out_features
    assert hidden < 128 and model.net[2].in_features == hidden
    assert all(pruning.masks[n].shape == p.shape for n, p in model.named_parameters() if n in pruning.masks)
    (optimizer,) = trainer.optimizers
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    assert trainer.lr_scheduler_configs[0].scheduler.optimizer is optimizer
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**2)
    metrics = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "pruning/macs_shrunk" in metrics and "pruning/params_dense" in metrics


def test_shrunk_checkpoint_resumes_into_a_fresh_module_and_loads_for_inference(tmp_path):
    model, pruning = Wide(), _shrinking()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    quiet_trainer(callbacks=[pruning, checkpoint], enable_checkpointing=True, max_epochs=1).fit(model)
    saved = {n: m.clone() for n, m in pruning.masks.items()}

    resumed, fresh = _shrinking(), Wide()
    checker = StepChecker(resumed)
    quiet_trainer(callbacks=[resumed, checker], max_epochs=2).fit(fresh, ckpt_path=tmp_path / "last.ckpt")
    assert checker.steps == 8
    assert fresh.net[0].out_features == model.net[0].out_features
    assert all(torch.equal(saved[n], resumed.masks[n]) for n in saved)

    inference = Wide()
    masks = load_pruned(inference, tmp_path / "last.ckpt")
    assert inference.net[0].out_features == model.net[0].out_features
    assert all(torch.equal(saved[n], masks[n]) for n in saved)
    x = torch.randn(5, 32)
    with torch.no_grad():
        assert torch.allclose(inference.eval()(x), model.eval()(x))


def test_shrink_is_refused_under_ddp():
    pruning = _shrinking()
    trainer = quiet_trainer(callbacks=[pruning])
    trainer.strategy.__class__ = DDPStrategy
    with pytest.raises(MisconfigurationException, match="single-device"):
        pruning.setup(trainer, Wide(), "fit")


def test_masks_shrink_cannot_follow_are_refused_with_the_model_as_it_was():
    # A forward hook on a layer is refused only once that layer loses channels, i.e. after pruning: the
    # weights as they were before pruning come back.
    torch.manual_seed(0)
    model = Wide()
    model.net[0].register_forward_hook(lambda module, inputs, output: None)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    pruning = _shrinking()
    trainer = quiet_trainer(callbacks=[pruning])
    with pytest.raises(
        MisconfigurationException, match=r"cannot shrink this model: .*'net.0'.*forward hooks.*shrink=False"
    ):
        trainer.fit(model)
    assert pruning.masks is None and trainer.global_step == 0
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert all(bool((value != 0).all()) for value in after.values())  # nothing left pruned


def test_shrink_without_an_example_input_is_refused_before_pruning():
    model = Wide()
    model.example_input_array = None
    before = {name: value.clone() for name, value in model.state_dict().items()}
    pruning = _shrinking(method="magnitude")
    with pytest.raises(MisconfigurationException, match="example_input_array.*input_shape"):
        quiet_trainer(callbacks=[pruning]).fit(model)
    assert pruning.masks is None and all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
