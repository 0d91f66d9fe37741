"""What a sweep shows at the end: a text table and a plot of the metric against compression, over seeds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_synflow.cli.sweep.grid import DEFAULT_METHODS, format_compression


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, float], list[float]]:
    """The values of each (method, compression) over seeds, methods in the paper's order, compressions ascending."""
    order = {method: index for index, method in enumerate(DEFAULT_METHODS)}
    keys = sorted({(row["method"], row["compression"]) for row in rows}, key=lambda k: (order.get(k[0], 99), k[1]))
    return {key: [row["value"] for row in rows if (row["method"], row["compression"]) == key] for key in keys}


def summary_table(rows: Sequence[dict[str, Any]], metric: str) -> str:
    """A text table: one line per method, one column per compression, ``mean ± std (runs)`` over seeds."""
    groups = aggregate(rows)
    methods = list(dict.fromkeys(method for method, _ in groups))
    compressions = sorted({compression for _, compression in groups})

    def cell(values: list[float] | None) -> str:
        if not values:
            return "-"
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} ± {spread:.4f} ({len(values)})"

    header = ["method", *(f"c={format_compression(c)}" for c in compressions)]
    body = [[method, *(cell(groups.get((method, c))) for c in compressions)] for method in methods]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in [header, *body]]
    title = f"{metric}: mean ± std over seeds (runs)"
    return "\n".join([title, lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def plot_results(rows: Sequence[dict[str, Any]], path: Path, title: str) -> bool:
    """Plot the metric against log10 compression per method (mean, band from min to max over seeds).

    Returns:
        False, with a message, when matplotlib (the ``plots`` extra) is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install 'lightning-synflow[plots]'): no plot, results.csv only")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = aggregate(rows)
    figure, axes = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(method for method, _ in groups):
        keys = [key for key in groups if key[0] == method]
        xs = [math.log10(compression) for _, compression in keys]
        values = [groups[key] for key in keys]
        (line,) = axes.plot(xs, [statistics.mean(v) for v in values], "o-", label=method)
        axes.fill_between(xs, [min(v) for v in values], [max(v) for v in values], alpha=0.2, color=line.get_color())
    axes.set_xticks(sorted({math.log10(compression) for _, compression in groups}))
    metric = rows[0]["metric"]
    axes.set(xlabel="compression (log10)", ylabel=f"{metric} (band: min-max over seeds)", title=title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
