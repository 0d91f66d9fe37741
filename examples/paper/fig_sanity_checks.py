"""Sanity checks of pruning at initialization (Frankle et al., ICLR 2021) on the bundled digits.

    python examples/paper/fig_sanity_checks.py --out docs/figures [--quick]

For SynFlow, magnitude and SNIP at several compressions, the test accuracy after training of the
method's own masks beside three ablations of them: ``shuffle`` (each layer's mask permuted at random,
same per-layer density), ``reinitialize`` (same masks, the kept weights re-drawn by the layer's
initializer) and ``invert`` (keep the lowest scores instead of the highest). If a method's accuracy
survives shuffling and re-initialization, what it found is a per-layer density, not a pattern or a
weight value. The network, data and training are those of ``fig6_accuracy.py`` (MLP 64-300-300-300-10,
Adam, lr 0.01). Writes fig_sanity_checks.csv/.png with mean and spread over seeds.
"""

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_common import COLORS, parser, pyplot, quiet_training, train_digits_mlp, write_csv  # noqa: E402

METHODS = ["synflow", "magnitude", "snip"]
VARIANTS = ["original", "shuffle", "reinitialize", "invert"]
MARKERS = {"original": "o-", "shuffle": "s--", "reinitialize": "^-.", "invert": "v:"}


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    out = Path(args.out)
    quiet_training()
    methods = ["magnitude"] if args.quick else METHODS
    grid = [2] if args.quick else [1, 2, 2.5]
    seeds = [0] if args.quick else [0, 1, 2]
    epochs = 1 if args.quick else 20
    rows = []
    for method in methods:
        for c in grid:
            for variant in VARIANTS:
                options = {} if variant == "original" else {variant: True}
                accs = [train_digits_mlp(method, c, s, epochs, **options)[0] for s in seeds]
                rows.append(
                    {
                        "method": method,
                        "variant": variant,
                        "log10_compression": c,
                        "mean_acc": statistics.mean(accs),
                        "min_acc": min(accs),
                        "max_acc": max(accs),
                        "seeds": len(accs),
                        "epochs": epochs,
                    }
                )
                print(
                    f"{method:9s} 10^{c:<4g} {variant:12s} accuracy {statistics.mean(accs):5.1f}"
                    f" (min {min(accs):.1f}, max {max(accs):.1f})",
                    flush=True,
                )
    write_csv(out / "fig_sanity_checks.csv", rows)

    plt = pyplot()
    fig, axes = plt.subplots(1, len(methods), figsize=(4 * len(methods), 3.6), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, method in zip(axes, methods):
        for variant in VARIANTS:
            part = [r for r in rows if r["method"] == method and r["variant"] == variant]
            xs = [r["log10_compression"] for r in part]
            ax.errorbar(
                xs,
                [r["mean_acc"] for r in part],
                yerr=[
                    [r["mean_acc"] - r["min_acc"] for r in part],
                    [r["max_acc"] - r["mean_acc"] for r in part],
                ],
                fmt=MARKERS[variant],
                label=variant,
                color=COLORS[method],
                alpha=1.0 if variant == "original" else 0.6,
                capsize=2,
            )
        ax.set(title=method, xlabel="compression (log10)")
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Sanity checks on digits: masks vs shuffled, re-initialized and inverted masks")
    fig.tight_layout()
    fig.savefig(out / "fig_sanity_checks.png", dpi=100)
    return rows


if __name__ == "__main__":
    main()
