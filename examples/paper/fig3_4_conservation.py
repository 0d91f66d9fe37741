"""Paper Figs. 3-4: conservation of synaptic saliency in a bias-free ReLU conv net.

    python examples/paper/fig3_4_conservation.py --out docs/figures [--quick]

Single-shot SynFlow scores (float64) of a VGG-11-style conv net without biases or normalization:
(a) per channel, the total score of its incoming weights against that of its outgoing weights
(Theorem 2: equal); (b) the total score of each layer (Theorem 1: equal in every layer); (c) the
average score per weight against the layer's size (the 1/size law behind layer collapse). Writes
fig3_4_conservation.csv/.png.
"""

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_common import parser, pyplot, write_csv  # noqa: E402

from lightning_synflow import score  # noqa: E402


def bias_free_vgg(plan, classes=10):
    layers, channels = [], 3
    for spec in plan:
        if spec == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, spec, 3, padding=1, bias=False), nn.ReLU()]
            channels = spec
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes, bias=False))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
    return model.double()


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    out = Path(args.out)
    torch.manual_seed(0)
    plan = (
        [16, "M", 32, "M", 64, 64, "M"] if args.quick else [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512]
    )
    model = bias_free_vgg(plan)
    scores = score(model, example_input=torch.zeros(1, 3, 32, 32, dtype=torch.float64))
    names = list(scores)
    rows = []
    for layer, (name, s) in enumerate(scores.items()):
        rows.append(
            {
                "kind": "layer",
                "layer": layer,
                "parameter": name,
                "size": s.numel(),
                "total_score": float(s.sum()),
                "mean_score": float(s.mean()),
                "incoming": "",
                "outgoing": "",
            }
        )
    neuron_rows = []
    for layer in range(len(names) - 1):
        incoming = scores[names[layer]].flatten(1).sum(1)  # per output channel of this layer
        outgoing = scores[names[layer + 1]].transpose(0, 1).flatten(1).sum(1)  # per input channel of the next
        for channel, (a, b) in enumerate(zip(incoming.tolist(), outgoing.tolist())):
            neuron_rows.append(
                {
                    "kind": "neuron",
                    "layer": layer,
                    "parameter": names[layer],
                    "size": channel,
                    "total_score": "",
                    "mean_score": "",
                    "incoming": a,
                    "outgoing": b,
                }
            )
    write_csv(out / "fig3_4_conservation.csv", rows + neuron_rows)
    totals = torch.tensor([r["total_score"] for r in rows])
    spread = float((totals.max() - totals.min()) / totals.mean())
    worst = max(abs(r["incoming"] - r["outgoing"]) / max(r["incoming"], 1e-300) for r in neuron_rows)
    print(f"layer totals equal to relative spread {spread:.2e}; per-channel in/out equal to {worst:.2e}")

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    inc = [r["incoming"] for r in neuron_rows]
    outg = [r["outgoing"] for r in neuron_rows]
    axes[0].loglog(inc, outg, ".", ms=3)
    lims = [min(inc + outg), max(inc + outg)]
    axes[0].plot(lims, lims, "k:", lw=1)
    axes[0].set(xlabel="incoming score per channel", ylabel="outgoing score per channel", title="Theorem 2 (neuron)")
    axes[1].bar(range(len(rows)), totals.tolist())
    axes[1].set_yscale("log")
    axes[1].set(xlabel="layer", ylabel="total score", title=f"Theorem 1 (layer), spread {spread:.1e}")
    sizes = [r["size"] for r in rows]
    means = [r["mean_score"] for r in rows]
    axes[2].loglog(sizes, means, "o")
    axes[2].loglog(sizes, [float(totals.mean()) / s for s in sizes], "k:", lw=1, label="R / size")
    axes[2].set(xlabel="layer size (weights)", ylabel="average score per weight", title="1/size law")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(out / "fig3_4_conservation.png", dpi=100)
    return spread, worst


if __name__ == "__main__":
    main()
