"""lightning_synflow.masks and checkpoint_format: one rule for masks against tensors, the bits, the low layering."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_synflow import prune
from lightning_synflow.callback.upkeep import MaskUpkeep
from lightning_synflow.checkpoint_format import STATE_VERSION, masks_from_checkpoint, pack_masks
from lightning_synflow.export.sparse_file import save_sparse
from lightning_synflow.masks import apply_masks, check_masks, pack_mask, unpack_mask
from lightning_synflow.pruning.settings import PruningSettings
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT


def _tied() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    return model


def test_check_refuses_unknown_names_non_boolean_masks_and_other_shapes():
    tensors = {"w": torch.zeros(2, 3)}
    check_masks({"w": torch.ones(2, 3, dtype=torch.bool)}, tensors, "the tensors")
    with pytest.raises(ValueError, match="'v' names none of the tensors"):
        check_masks({"v": torch.ones(2, 3, dtype=torch.bool)}, tensors, "the tensors")
    for not_boolean in (torch.ones(2, 3), torch.ones(2, 3, dtype=torch.uint8), [[True] * 3] * 2):
        with pytest.raises(ValueError, match="'w' must be a boolean tensor"):
            check_masks({"w": not_boolean}, tensors, "the tensors")
    with pytest.raises(ValueError, match=r"'w' has shape \[3, 2\], its tensor has shape \[2, 3\]"):
        check_masks({"w": torch.ones(3, 2, dtype=torch.bool)}, tensors, "the tensors")


def test_a_tied_tensor_takes_masks_under_any_of_its_names_if_they_agree():
    model = _tied()
    mask = torch.rand(4, 4) < 0.5
    apply_masks(model, {"0.weight": mask, "1.weight": mask.clone()})
    assert (model[1].weight[~mask] == 0).all()
    with pytest.raises(ValueError, match="'0.weight' and '1.weight' name one tensor .* but differ"):
        apply_masks(model, {"0.weight": mask, "1.weight": ~mask})
    with pytest.raises(ValueError, match="'0.weight' and '1.weight' name one tensor .* but differ"):
        MaskUpkeep(model, {"0.weight": mask, "1.weight": ~mask})


def test_save_sparse_sees_tied_state_dict_keys_as_one_tensor(tmp_path):
    model = _tied()
    mask = torch.rand(4, 4) < 0.5
    apply_masks(model, {"1.weight": mask})
    with pytest.raises(ValueError, match="'0.weight' and '1.weight' name one tensor of the state_dict keys"):
        save_sparse(model, {"0.weight": mask, "1.weight": ~mask}, tmp_path / "f.safetensors")
    save_sparse(model, {"0.weight": mask, "1.weight": mask}, tmp_path / "f.safetensors")


def test_the_upkeep_applies_the_same_rule_as_apply_masks():
    model = _tied()
    with pytest.raises(ValueError, match="must be a boolean tensor"):
        MaskUpkeep(model, {"0.weight": torch.ones(4, 4)})
    with pytest.raises(ValueError, match="names none of the parameters of Sequential"):
        MaskUpkeep(model, {"2.weight": torch.ones(4, 4, dtype=torch.bool)})
    MaskUpkeep(model, {"1.weight": torch.rand(4, 4) < 0.5})  # the second name of a tied weight


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (8,), (3, 5), (2, 3, 4)])
def test_packed_bits_come_back_unchanged(shape):
    mask = torch.rand(shape) < 0.5
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
    assert torch.equal(unpack_mask(packed, shape), mask)


def test_masks_from_checkpoint_reads_the_layout_the_callback_writes(tmp_path):
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    masks = prune(model, sparsity=0.5, example_input=torch.zeros(1, 6))
    state = {"version": STATE_VERSION, "settings": PruningSettings.create(sparsity=0.5).to_dict(), **pack_masks(masks)}
    torch.save({"callbacks": {"SynFlowPruning{}": state}}, tmp_path / "last.ckpt")
    saved = masks_from_checkpoint(tmp_path / "last.ckpt")
    assert saved.keys() == masks.keys() and all(torch.equal(saved[n], masks[n]) for n in masks)


def test_masks_export_and_the_checkpoint_format_import_no_lightning():
    code = (
        "import sys, lightning_synflow.masks, lightning_synflow.checkpoint_format, lightning_synflow.export; "
        "print('lightning' in sys.modules, any(m.startswith('lightning_synflow.callback') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "False"]


#: Packages (or modules) and the modules they must never import: data flows down, never up.
_NEVER_IMPORTS = {
    "lightning_synflow.masks": ("lightning_synflow", "lightning"),
    "lightning_synflow.pruning": (
        "lightning_synflow.export",
        "lightning_synflow.callback",
        "lightning_synflow.report",
        "lightning_synflow.checkpoint_format",
        "lightning",
    ),
    "lightning_synflow.checkpoint_format": ("lightning_synflow.export", "lightning_synflow.callback", "lightning"),
    "lightning_synflow.report": ("lightning_synflow.export", "lightning_synflow.callback"),
    "lightning_synflow.export": ("lightning_synflow.callback",),
}


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports absolutely, at any depth of its code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append(node.module)
    return found


def test_packages_import_downward_only():
    upward = []
    for path in sorted((ROOT / "lightning_synflow").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for owner, forbidden in _NEVER_IMPORTS.items():
            if module != owner and not module.startswith(owner + "."):
                continue
            for name in _imports(path):
                if any(name == f or name.startswith(f + ".") for f in forbidden) and name != module:
                    upward.append(f"{module} imports {name}")
    assert not upward
