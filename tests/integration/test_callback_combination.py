"""What users stack together: a finetuning callback, bf16, accumulation, clipping, channels_last, and a resume
with the settings spelled differently. After every optimizer step every pruned weight is exactly zero."""

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import BaseFinetuning, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_synflow import SynFlowPruning
from tests.helpers import StepChecker, quiet_trainer


class ChannelsLastConvNet(LightningModule):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 6 * 6, 3))
        self.example_input_array = torch.zeros(1, 3, 6, 6)
        self.to(memory_format=torch.channels_last)

    def forward(self, x):
        return self.head(self.features(x.contiguous(memory_format=torch.channels_last)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=0.01)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(48, 3, 6, 6, generator=generator)
        return DataLoader(TensorDataset(x, (x[:, 0, 0, 0] > 0).long()), batch_size=4)


class UnfreezeFeatures(BaseFinetuning):
    def freeze_before_training(self, pl_module):
        self.freeze(pl_module.features)

    def finetune_function(self, pl_module, current_epoch, optimizer):
        if current_epoch == 1:
            self.unfreeze_and_add_param_group(pl_module.features, optimizer, lr=0.01, initial_denom_lr=1.0)


def _trainer(pruning, checker, **kwargs):
    return quiet_trainer(
        callbacks=[UnfreezeFeatures(), pruning, checker, *kwargs.pop("callbacks", [])],
        precision="bf16-mixed",
        accumulate_grad_batches=2,
        gradient_clip_val=0.5,
        **kwargs,
    )


def test_finetuning_bf16_accumulation_clipping_channels_last_and_a_respelled_resume(tmp_path):
    model = ChannelsLastConvNet()
    pruning = SynFlowPruning(sparsity=0.9, progress=False, verbose=False)
    checker = StepChecker(pruning)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    _trainer(pruning, checker, callbacks=[checkpoint], enable_checkpointing=True, max_epochs=2).fit(model)
    assert checker.steps == 12
    first = {n: m.clone() for n, m in pruning.masks.items()}
    convs = [model.get_parameter(n) for n in first if "features" in n]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)

    resumed = SynFlowPruning(compression=10, iterations=100, parameters=None, progress=False, verbose=False)
    checker = StepChecker(resumed)
    fresh = ChannelsLastConvNet()
    _trainer(resumed, checker, max_epochs=3).fit(fresh, ckpt_path=tmp_path / "last.ckpt")
    assert checker.steps == 6
    assert all(torch.equal(first[n], resumed.masks[n]) for n in first)
    for name, mask in first.items():
        assert bool((fresh.get_parameter(name).detach()[~mask] == 0).all()), name
