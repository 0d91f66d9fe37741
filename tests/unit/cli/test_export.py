"""``lightning-synflow export``: a digits-demo checkpoint to a compact file, dense or shrunk."""

import pytest
import torch

from lightning_synflow.cli import build_model, cli_main, main
from lightning_synflow.export import load_sparse, resize_to_state_dict
from tests.helpers import REPO_ROOT

CONFIG = str(REPO_ROOT / "configs" / "digits_synflow.yaml")


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("export")
    args = ["fit", "--config", CONFIG, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"]
    args += ["--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--test_after_fit", "false"]
    args += ["--trainer.enable_checkpointing", "true", "--trainer.default_root_dir", str(directory)]
    args += ["--trainer.callbacks.init_args.iterations", "10", "--trainer.callbacks.init_args.progress", "false"]
    cli = cli_main(args)
    (path,) = (directory / "checkpoints").glob("*.ckpt")
    return cli.model, path


@pytest.mark.parametrize("shrink", [False, True])
def test_export_writes_a_compact_file_that_loads(digits_checkpoint, tmp_path, capsys, shrink):
    trained, path = digits_checkpoint
    output = tmp_path / "model.safetensors"
    args = ["export", "--config", CONFIG, "--ckpt_path", str(path), "--output", str(output)]
    assert main(args + ["--shrink"] * shrink) == 0
    printed = capsys.readouterr().out
    assert "total" in printed and "of torch.save(state_dict)" in printed and "MACs per example" in printed
    state = load_sparse(output)
    model = build_model(CONFIG)
    resize_to_state_dict(model, state)
    model.load_state_dict(state)
    x = torch.randn(4, 64)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), trained.eval()(x), atol=1e-5)
    dense_params = sum(p.numel() for p in trained.parameters())
    assert (sum(p.numel() for p in model.parameters()) < dense_params) == shrink
