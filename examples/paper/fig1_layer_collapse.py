"""Paper Fig. 1 (data-free part): at which compression does each method disconnect VGG-16-BN?

    python examples/paper/fig1_layer_collapse.py --out docs/figures [--quick]

CIFAR VGG-16-BN with 100 classes; compressions 10^0..10^6 in steps of 10^0.25. A pruned network is
connected when no layer is empty and the flow R of the masked |theta| network is positive. SynFlow
runs 100 iterations at each compression; the baselines are single shot, scored once (SNIP and GraSP
on one batch of 64 Gaussian inputs with random labels: no dataset is needed). Writes
fig1_layer_collapse.csv/.png.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_common import (  # noqa: E402
    COLORS,
    FULL_GRID,
    METHODS,
    PAPER_CRITICAL,
    collapse_setting,
    connected,
    critical,
    masks_for,
    parser,
    pyplot,
    write_csv,
)


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    out = Path(args.out)
    model, example, batches = collapse_setting()
    grid = [0, 1.5, 3, 4.5, 6] if args.quick else FULL_GRID
    iterations = 10 if args.quick else 100
    cache: dict = {}
    rows, results = [], {}
    for method in METHODS:
        status = {}
        for c in grid:
            status[c] = connected(
                model, masks_for(model, method, c, example, batches, iterations, cache=cache), example
            )
        results[method] = critical(grid, status.__getitem__)
        rows += [{"method": method, "log10_compression": c, "connected": int(status[c])} for c in grid]
        print(f"{method:9s} critical compression 10^{results[method]:.2f} (paper: 10^{PAPER_CRITICAL[method]})")
    write_csv(out / "fig1_layer_collapse.csv", rows)
    summary = [{"method": m, "ours_log10": results[m], "paper_log10": PAPER_CRITICAL[m]} for m in METHODS]
    write_csv(out / "fig1_critical_compression.csv", summary)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = range(len(METHODS))
    ax.bar(
        [x - 0.2 for x in xs],
        [results[m] for m in METHODS],
        0.4,
        label="ours (CPU, data-free check)",
        color=[COLORS[m] for m in METHODS],
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [PAPER_CRITICAL[m] for m in METHODS],
        0.4,
        label="paper",
        color="white",
        edgecolor="black",
        hatch="//",
    )
    ax.axhline(6.02, ls=":", color="black", lw=1, label="max possible (N/14)")
    ax.set_xticks(list(xs), METHODS)
    ax.set_ylabel("critical compression (log10)")
    ax.set_title("Layer collapse, VGG-16-BN, 100 classes")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "fig1_layer_collapse.png", dpi=100)
    return results


if __name__ == "__main__":
    main()
