"""Paper Fig. 6 analogue: test accuracy after training against compression, five methods, 3 seeds.

    python examples/paper/fig6_accuracy.py --out docs/figures [--quick]

An MLP 64-300-300-300-10 on scikit-learn's bundled digits (offline), pruned at initialization by
SynFlowPruning (SynFlow 100 iterations; baselines single shot, SNIP/GraSP on 10 training batches),
then trained with Adam (lr 0.01) for 30 epochs. Compressions 10^0..10^3. Writes fig6_accuracy.csv/.png
with mean and spread over seeds, and the paper's VGG-16-BN/CIFAR-10 values for reference.
"""

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_common import COLORS, METHODS, parser, pyplot, quiet_training, train_digits_mlp, write_csv  # noqa: E402

#: Paper, Fig. 6 (VGG-16-BN on CIFAR-10, 160 epochs, mean of 3 seeds): accuracy at compression 10^2 and 10^3.
PAPER = {
    "synflow": (90.1, 80.4),
    "snip": (89.2, 76.3),
    "grasp": (87.5, 70.9),
    "magnitude": (89.8, 10.0),
    "random": (79.1, 10.0),
}


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    out = Path(args.out)
    quiet_training()
    grid = [1, 3] if args.quick else [0, 0.5, 1, 1.5, 2, 2.5, 3]
    seeds = [0] if args.quick else [0, 1, 2]
    epochs = 2 if args.quick else 30
    dense = {seed: train_digits_mlp("synflow", 0, seed, epochs)[0] for seed in seeds}
    rows = []
    for method in METHODS:
        for c in grid:
            accs = [dense[s] if c == 0 else train_digits_mlp(method, c, s, epochs)[0] for s in seeds]
            rows.append(
                {
                    "method": method,
                    "log10_compression": c,
                    "mean_acc": statistics.mean(accs),
                    "min_acc": min(accs),
                    "max_acc": max(accs),
                    "seeds": len(accs),
                    "paper_acc_cifar10_vgg16": {2: PAPER[method][0], 3: PAPER[method][1]}.get(c, ""),
                }
            )
            print(
                f"{method:9s} 10^{c:<4g} accuracy {statistics.mean(accs):5.1f}"
                f" (min {min(accs):.1f}, max {max(accs):.1f})"
            )
    write_csv(out / "fig6_accuracy.csv", rows)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in METHODS:
        part = [r for r in rows if r["method"] == method]
        xs = [r["log10_compression"] for r in part]
        ax.plot(xs, [r["mean_acc"] for r in part], "o-", label=method, color=COLORS[method])
        ax.fill_between(xs, [r["min_acc"] for r in part], [r["max_acc"] for r in part], alpha=0.2, color=COLORS[method])
        ax.plot([2, 3], PAPER[method], "x:", color=COLORS[method], alpha=0.6)
    ax.set(
        xlabel="compression (log10)",
        ylabel="test accuracy (%)",
        title="MLP on digits (lines) vs paper's VGG-16/CIFAR-10 (x)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fig6_accuracy.png", dpi=100)
    return rows


if __name__ == "__main__":
    main()
