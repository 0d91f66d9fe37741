"""Log per-layer sparsity to Weights & Biases, offline (no account or network needed).

python examples/wandb_offline.py [--save-dir outputs]
wandb sync outputs/wandb/offline-run-*   # later, to upload
"""

import argparse
import os

from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import WandbLogger

from lightning_synflow import SynFlowPruning
from lightning_synflow.data import DigitsDataModule
from lightning_synflow.models import MLP, ImageClassifier


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--save-dir", default="outputs")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fast-dev-run", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.makedirs(args.save_dir, exist_ok=True)
    seed_everything(0)

    logger = WandbLogger(project="lightning-synflow", save_dir=args.save_dir, offline=True)
    model = ImageClassifier(MLP(64, [300, 300, 300], 10), 10, [64], optimizer="adam", lr=0.01, weight_decay=0.0)
    trainer = Trainer(
        max_epochs=args.epochs,
        logger=logger,
        callbacks=[SynFlowPruning(sparsity=0.99)],
        accelerator="cpu",
        enable_checkpointing=False,
        fast_dev_run=args.fast_dev_run,
    )
    # pruning/sparsity, pruning/sparsity/<layer>, a "pruning/layers" table and a bar chart reach W&B.
    trainer.fit(model, datamodule=DigitsDataModule())
    logger.experiment.finish()


if __name__ == "__main__":
    main()
