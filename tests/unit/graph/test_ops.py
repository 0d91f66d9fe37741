"""graph.ops: the table of followed operations dispatches every call, and a new operation is one entry."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lightning_synflow.export.shrink import plan_shrink, shrink
from lightning_synflow.graph import handlers
from lightning_synflow.graph.analysis import follow_channels, trace
from lightning_synflow.graph.ops import OPS, Op, OpTable, default_table


class SoftplusNet(nn.Module):
    """Linear -> softplus (not in the default table) -> Linear, with dead hidden units."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(6, 8)
        self.second = nn.Linear(8, 3)
        with torch.no_grad():
            self.second.weight[:, 4:] = 0  # hidden units 4..7 reach nothing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(F.softplus(self.first(x)))


def test_an_operation_outside_the_table_is_a_use_the_analysis_cannot_follow():
    model = SoftplusNet()
    gm = trace(model, set())
    tracker = follow_channels(model, gm.graph, {}, set(), shapes=False)
    assert [description for description, _, _ in tracker.unknown] == ["node 'softplus' (function softplus)"]
    with pytest.raises(ValueError, match="softplus"):
        plan_shrink(model)


def test_a_new_operation_is_one_entry_in_a_table():
    model = SoftplusNet()
    table = default_table()
    table.add([F.softplus], handlers.elementwise_call)
    gm = trace(model, set())
    assert follow_channels(model, gm.graph, {}, set(), shapes=False, table=table).unknown == []
    assert F.softplus not in OPS.functions  # a table of one's own leaves the shared one as it was


def test_an_entry_added_to_the_shared_table_serves_shrink(monkeypatch):
    monkeypatch.setitem(OPS.functions, F.softplus, Op(handlers.elementwise_call))
    model = SoftplusNet().eval()
    plan = plan_shrink(model, example_input=torch.zeros(1, 6))
    assert plan.keep_out["first"].tolist() == [0, 1, 2, 3]
    thin = shrink(model).eval()
    x = torch.randn(5, 6)
    with torch.no_grad():
        torch.testing.assert_close(thin(x), model(x))


def test_entries_know_modules_functions_and_methods_apart():
    table = OpTable()
    table.add([nn.ReLU, F.relu, "relu"], handlers.elementwise_call)
    assert list(table.modules) == [nn.ReLU] and list(table.functions) == [F.relu] and list(table.methods) == ["relu"]
    with pytest.raises(ValueError, match="reads must be 'channels'"):
        table.add([nn.Identity], handlers.identity, reads="operands")
