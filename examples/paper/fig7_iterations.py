"""Paper Fig. 7 analogue: critical compression against the number of SynFlow iterations and the schedule.

    python examples/paper/fig7_iterations.py --out docs/figures [--quick]

CIFAR VGG-16-BN with 100 classes. For each number of iterations (1..100) and schedule (exponential,
linear), the largest compression on the 10^0.25 grid at which the pruned network stays connected,
found by bisection (connectivity is monotone in compression). Writes fig7_iterations.csv/.png.
"""

import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_common import FULL_GRID, connected, critical, masks_for, parser, pyplot, write_csv  # noqa: E402

from lightning_synflow.models import vgg11, vgg16  # noqa: E402


def _connected_at(model, example, iterations, schedule, log_compression):
    masks = masks_for(model, "synflow", log_compression, example, None, iterations=iterations, schedule=schedule)
    return connected(model, masks, example)


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    out = Path(args.out)
    torch.manual_seed(0)
    model = vgg11(100) if args.quick else vgg16(100)
    example = torch.zeros(1, 3, 32, 32)
    counts = [1, 4] if args.quick else [1, 2, 5, 10, 20, 50, 100]
    grid = FULL_GRID[::4] if args.quick else FULL_GRID
    rows = []
    for schedule in ["exponential", "linear"]:
        for n in counts:
            value = critical(grid, partial(_connected_at, model, example, n, schedule))
            rows.append({"schedule": schedule, "iterations": n, "critical_log10_compression": value})
            print(f"{schedule:11s} {n:3d} iterations: critical compression 10^{value:.2f}")
    write_csv(out / "fig7_iterations.csv", rows)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for schedule, marker in (("exponential", "o-"), ("linear", "s--")):
        part = [r for r in rows if r["schedule"] == schedule]
        ax.plot(
            [r["iterations"] for r in part], [r["critical_log10_compression"] for r in part], marker, label=schedule
        )
    ax.set_xscale("log")
    ax.set(
        xlabel="SynFlow iterations",
        ylabel="critical compression (log10)",
        title=f"{'VGG-11' if args.quick else 'VGG-16-BN'}, 100 classes",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fig7_iterations.png", dpi=100)
    return rows


if __name__ == "__main__":
    main()
