"""Prune an MLP to 99% sparsity with SynFlow at fit start, train it on the bundled digits, test it.

python examples/quickstart.py [--epochs 30]
"""

import argparse

from lightning.pytorch import Trainer, seed_everything

from lightning_synflow import SynFlowPruning
from lightning_synflow.data import DigitsDataModule
from lightning_synflow.models import MLP, ImageClassifier


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--fast-dev-run", action="store_true")
    args = parser.parse_args(argv)
    seed_everything(0)

    data = DigitsDataModule(batch_size=64, flatten=True)
    # ImageClassifier sets `example_input_array`, which gives SynFlow the input shape.
    model = ImageClassifier(
        MLP(64, [300, 300, 300], 10), num_classes=10, input_shape=[64], optimizer="adam", lr=0.01, weight_decay=0.0
    )
    pruning = SynFlowPruning(sparsity=0.99)  # 100 data-free iterations at fit start
    trainer = Trainer(
        max_epochs=args.epochs,
        callbacks=[pruning],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        fast_dev_run=args.fast_dev_run,
    )
    trainer.fit(model, datamodule=data)
    result = trainer.test(model, datamodule=data)
    kept = sum(int(m.sum()) for m in pruning.masks.values())
    print(f"kept {kept} weights; test accuracy {result[0]['test/acc']:.3f}")
    return result


if __name__ == "__main__":
    main()
