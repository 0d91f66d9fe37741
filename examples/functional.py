"""Prune any torch model without Lightning: the functional API, and the paper's baselines side by side.

python examples/functional.py
"""

import torch

from lightning_synflow import prune
from lightning_synflow.models import cifar_resnet
from lightning_synflow.report import format_table, layer_stats


def main(argv=None):
    torch.manual_seed(0)
    example = torch.zeros(1, 3, 32, 32)  # only its shape is used
    batches = [(torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)))]  # SNIP/GraSP need (inputs, targets)

    model = cifar_resnet(20)
    masks = prune(model, compression=100, example_input=example)  # SynFlow, 100 iterations
    print("SynFlow on ResNet-20 at compression 10^2:")
    print(format_table(layer_stats(masks)))

    for method in ["magnitude", "random", "snip", "grasp"]:
        masks = prune(cifar_resnet(20), compression=100, method=method, batches=batches, seed=0)
        empty = [name for name, mask in masks.items() if not mask.any()]
        print(
            f"{method:9s}: kept {sum(int(m.sum()) for m in masks.values()):,} weights; empty layers: {empty or 'none'}"
        )
    return masks


if __name__ == "__main__":
    main()
