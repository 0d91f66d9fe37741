"""FLOPs and emptied layers in the pruning summary: hand counts, the text table, the metrics, the callback."""

from __future__ import annotations

import csv

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from lightning_synflow import SynFlowPruning
from lightning_synflow.report import (
    count_macs,
    flops_kept,
    format_table,
    layer_stats,
    layers_emptied,
    summary_metrics,
    weight_positions,
)
from tests.helpers import SmallNet, quiet_trainer


def _conv_pool_linear() -> nn.Sequential:
    # conv 3->4, 3x3, padding 1 on 8x8: 64 output positions; 2x2 max-pool: 4x8x8 -> 4x4x4 = 64 features
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 5))


def test_flops_against_a_hand_count_on_conv_pool_linear():
    model = _conv_pool_linear()
    example = torch.zeros(2, 3, 8, 8)  # batch 2: the count is per example
    positions = weight_positions(model, example)
    assert {name: rows.tolist() for name, rows in positions.items()} == {"0.weight": [64] * 4, "4.weight": [1] * 5}
    conv = torch.zeros(4, 3, 3, 3, dtype=torch.bool)
    conv[0] = True  # 27 weights of output channel 0
    conv[2, 1, 0, :] = True  # 3 more
    linear = torch.zeros(5, 64, dtype=torch.bool)
    linear[3, :7] = True
    stats = layer_stats({"0.weight": conv, "4.weight": linear}, positions)
    dense_conv, dense_linear = 4 * 3 * 9 * 64, 5 * 64  # one MAC per output position / per example
    assert [(s.macs, s.macs_kept) for s in stats] == [(dense_conv, 30 * 64), (dense_linear, 7)]
    assert flops_kept(stats) == pytest.approx((30 * 64 + 7) / (dense_conv + dense_linear))
    assert count_macs(model, example) == dense_conv + dense_linear == 7232


def test_per_token_linear_tied_weights_add_up_and_unused_layers_count_zero():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.unused = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 2)
            self.b.weight = self.a.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x))

    positions = weight_positions(Net(), torch.zeros(1, 7, 6))  # 7 tokens, through the tied weight twice
    assert {name: rows.tolist() for name, rows in positions.items()} == {"a.weight": [14] * 6, "unused.weight": [0] * 2}


def test_transposed_conv_costs_one_mac_per_input_position():
    model = nn.Sequential(nn.ConvTranspose1d(2, 3, 4, stride=2))
    (rows,) = weight_positions(model, torch.zeros(1, 2, 5)).values()
    assert rows.tolist() == [5, 5]  # weight (in=2, out=3, k=4): each entry is applied at each of the 5 inputs
    assert layer_stats({"0.weight": torch.ones(2, 3, 4, dtype=torch.bool)}, {"0.weight": rows})[0].macs == 24 * 5


def test_attention_projections_count_query_and_key_tokens():
    class Cross(nn.Module):
        def __init__(self, kdim: int) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, kdim=kdim, vdim=kdim, batch_first=True)

        def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
            return self.attn(query, memory, memory, need_weights=False)[0]

    separate = weight_positions(Cross(4), (torch.zeros(1, 3, 8), torch.zeros(1, 5, 4)))
    assert {name: set(rows.tolist()) for name, rows in separate.items()} == {
        "attn.q_proj_weight": {3},
        "attn.k_proj_weight": {5},
        "attn.v_proj_weight": {5},
        "attn.out_proj.weight": {3},
    }
    packed = weight_positions(Cross(8), (torch.zeros(1, 3, 8), torch.zeros(1, 5, 8)))
    assert packed["attn.in_proj_weight"].tolist() == [3] * 8 + [5] * 16


def test_encoder_layers_are_counted_even_under_no_grad():
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)  # eligible for the fused path
    with torch.no_grad():
        positions = weight_positions(layer, torch.zeros(1, 6, 16))
    assert {name: set(rows.tolist()) for name, rows in positions.items()} == {
        "self_attn.in_proj_weight": {6},
        "self_attn.out_proj.weight": {6},
        "linear1.weight": {6},
        "linear2.weight": {6},
    }
    assert layer.training  # modes restored


def test_table_metrics_and_emptied_layers():
    model = _conv_pool_linear()
    masks = {"0.weight": torch.zeros(4, 3, 3, 3, dtype=torch.bool), "4.weight": torch.ones(5, 64, dtype=torch.bool)}
    stats = layer_stats(masks, weight_positions(model, torch.zeros(1, 3, 8, 8)))
    assert layers_emptied(stats) == ["0.weight"]
    assert summary_metrics(stats) == {"pruning/layers_emptied": 1.0, "pruning/flops_kept": 320 / 7232}
    table = format_table(stats)
    assert "MACs kept" in table.splitlines()[0] and "6,912" in table and "7,232" in table
    assert "layers emptied: 1 (0.weight)" in table and "MACs kept: 4.42%" in table
    plain = layer_stats(masks)  # no positions: no MAC columns, no flops_kept, emptied still counted
    assert "MACs" not in format_table(plain) and summary_metrics(plain) == {"pruning/layers_emptied": 1.0}


class _ConvNet(SmallNet):
    def __init__(self, with_input: bool = True) -> None:
        super().__init__(with_input=False)
        self.net = nn.Sequential(nn.Unflatten(1, (2, 4, 4)), nn.Conv2d(2, 4, 3, padding=1), nn.Flatten())
        self.head2 = nn.Linear(32, 64)
        if with_input:
            self.example_input_array = torch.zeros(1, 32)


def _logged(tmp_path, pruning: SynFlowPruning, module: SmallNet) -> dict[str, str]:
    logger = CSVLogger(tmp_path, name="run")
    quiet_trainer(callbacks=[pruning], logger=logger, max_steps=1).fit(module)
    with open(f"{logger.log_dir}/metrics.csv") as handle:
        return next(row for row in csv.DictReader(handle) if row.get("pruning/sparsity"))


def test_callback_logs_flops_kept_and_layers_emptied(tmp_path):
    pruning = SynFlowPruning(sparsity=0.9, iterations=10, progress=False)
    row = _logged(tmp_path, pruning, _ConvNet())
    conv, head = pruning.masks["net.1.weight"], pruning.masks["head2.weight"]
    expected = (int(conv.sum()) * 16 + int(head.sum())) / (72 * 16 + 32 * 64)  # 16 output positions per conv weight
    assert float(row["pruning/flops_kept"]) == pytest.approx(expected)
    assert float(row["pruning/flops_kept"]) != pytest.approx(0.1, abs=1e-3)  # MACs, not the weights' density
    assert float(row["pruning/layers_emptied"]) == sum(not m.any() for m in pruning.masks.values())


def test_callback_without_an_example_input_logs_emptied_layers_only(tmp_path):
    pruning = SynFlowPruning(compression=1000, method="magnitude", progress=False)
    row = _logged(tmp_path, pruning, _ConvNet(with_input=False))
    assert "pruning/flops_kept" not in row or row["pruning/flops_kept"] == ""
    emptied = sum(not m.any() for m in pruning.masks.values())
    assert emptied >= 1 and float(row["pruning/layers_emptied"]) == emptied
