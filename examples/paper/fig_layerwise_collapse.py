"""Where collapse happens: the fraction of weights each layer keeps, per method, at a few compressions.

    python examples/paper/fig_layerwise_collapse.py --out docs/figures [--quick]

CIFAR VGG-16-BN with 100 classes, as in Fig. 1; SynFlow with 100 iterations, baselines single shot
(SNIP/GraSP on Gaussian inputs with random labels). Writes fig_layerwise_collapse.csv/.png.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_common import COLORS, METHODS, collapse_setting, masks_for, parser, pyplot, write_csv  # noqa: E402


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    out = Path(args.out)
    model, example, batches = collapse_setting()
    compressions = [2, 3.5] if args.quick else [1, 2, 3, 3.5]
    iterations = 10 if args.quick else 100
    cache: dict = {}
    rows = []
    for c in compressions:
        for method in METHODS:
            masks = masks_for(model, method, c, example, batches, iterations, cache=cache)
            for layer, (name, mask) in enumerate(masks.items()):
                rows.append(
                    {
                        "log10_compression": c,
                        "method": method,
                        "layer": layer,
                        "parameter": name,
                        "kept_fraction": float(mask.float().mean()),
                        "kept": int(mask.sum()),
                    }
                )
    write_csv(out / "fig_layerwise_collapse.csv", rows)

    plt = pyplot()
    fig, axes = plt.subplots(1, len(compressions), figsize=(4 * len(compressions), 3.5), sharey=True)
    for ax, c in zip(axes, compressions):
        for method in METHODS:
            part = [r for r in rows if r["log10_compression"] == c and r["method"] == method]
            ax.plot(
                [r["layer"] for r in part],
                [max(r["kept_fraction"], 1e-7) for r in part],
                "o-",
                ms=3,
                label=method,
                color=COLORS[method],
            )
        ax.axhline(10**-c, ls=":", color="black", lw=1)
        ax.set_yscale("log")
        ax.set_ylim(1e-7 * 0.5, 1.5)
        ax.set_title(f"compression 10^{c:g}")
        ax.set_xlabel("layer (input to output)")
    axes[0].set_ylabel("fraction kept (1e-7 = empty)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fig_layerwise_collapse.png", dpi=100)
    empty = {(r["log10_compression"], r["method"]) for r in rows if r["kept"] == 0}
    for c in compressions:
        print(f"10^{c:g}: methods with an empty layer: {sorted(m for cc, m in empty if cc == c) or 'none'}")
    return rows


if __name__ == "__main__":
    main()
