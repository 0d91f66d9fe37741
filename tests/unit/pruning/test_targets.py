import pytest
import torch
from torch import nn

from lightning_synflow.models import cifar_resnet
from lightning_synflow.pruning import select_prunable


def _net():
    return nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(8, 3), nn.Embedding(5, 2))


def test_default_is_conv_and_linear_weights_only():
    assert list(select_prunable(_net())) == ["0.weight", "3.weight"]


def test_default_includes_first_layer_classifier_and_projection_shortcuts():
    names = list(select_prunable(cifar_resnet(20)))
    assert names[0] == "conv.weight" and names[-1] == "fc.weight"
    assert "blocks.3.shortcut.0.weight" in names
    assert not any("bn" in n or n.endswith("bias") for n in names)


def test_patterns_and_exclude():
    net = _net()
    assert list(select_prunable(net, parameters=["*.bias"])) == ["0.bias", "1.bias", "3.bias"]
    assert list(select_prunable(net, parameters="*weight", exclude=["1.*", "4.*"])) == ["0.weight", "3.weight"]
    assert list(select_prunable(net, exclude="3.weight")) == ["0.weight"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"parameters": ["nope.*"]}, "`parameters` pattern 'nope.*' matches no parameter"),
        ({"exclude": ["nope"]}, "`exclude` pattern 'nope' matches no parameter"),
        ({"exclude": ["*"]}, "Nothing to prune"),
        ({"parameters": []}, "`parameters` is an empty list"),
    ],
)
def test_bad_patterns(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("*", r"\*").replace(".", r"\.")):
        select_prunable(_net(), **kwargs)


def test_pattern_type_and_nothing_prunable():
    with pytest.raises(TypeError, match="glob pattern"):
        select_prunable(_net(), parameters=[1])
    with pytest.raises(ValueError, match="Nothing to prune"):
        select_prunable(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))
    assert torch.is_tensor(next(iter(select_prunable(_net()).values())))


# -- the default selection beyond Conv/Linear ------------------------------------------------------


def test_default_includes_transposed_convs_and_attention_input_projections():
    net = nn.ModuleDict(
        {
            "up1": nn.ConvTranspose1d(2, 3, 3),
            "up2": nn.ConvTranspose2d(2, 3, 3),
            "up3": nn.ConvTranspose3d(2, 3, 3),
            "attn": nn.MultiheadAttention(8, 2),
            "cross": nn.MultiheadAttention(8, 2, kdim=4, vdim=6),
            "norm": nn.LayerNorm(8),
        }
    )
    assert list(select_prunable(net)) == [
        "up1.weight",
        "up2.weight",
        "up3.weight",
        "attn.in_proj_weight",
        "attn.out_proj.weight",
        "cross.q_proj_weight",
        "cross.k_proj_weight",
        "cross.v_proj_weight",
        "cross.out_proj.weight",
    ]


def test_hf_conv1d_is_recognised_by_class_name_and_module_path_only():
    def conv1d_class(module_path):
        def init(self):
            nn.Module.__init__(self)
            self.weight = nn.Parameter(torch.ones(4, 6))

        return type("Conv1D", (nn.Module,), {"__module__": module_path, "__init__": init})

    hf, other = conv1d_class("transformers.pytorch_utils"), conv1d_class("my_project.layers")
    subclass = type("GPTConv", (hf,), {"__module__": "somewhere"})
    net = nn.ModuleDict({"hf": hf(), "sub": subclass(), "other": other(), "fc": nn.Linear(2, 2)})
    assert list(select_prunable(net)) == ["hf.weight", "sub.weight", "fc.weight"]


def _encoder():
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Linear(16, 4))


@pytest.mark.filterwarnings("ignore:.*score of exactly zero:UserWarning")  # ReLU units dead after LayerNorm
@pytest.mark.slow
@pytest.mark.parametrize("method", ["synflow", "magnitude"])
def test_transformer_encoder_pruned_with_exact_count_and_finite_scores(method):
    from lightning_synflow import prune, score

    torch.manual_seed(0)
    model = _encoder()
    names = list(select_prunable(model))
    assert [n for n in names if "self_attn" in n] == [
        f"0.layers.{i}.self_attn.{p}_proj{'_' if p == 'in' else '.'}weight" for i in (0, 1) for p in ("in", "out")
    ]
    example = torch.zeros(1, 6, 16)
    scores = score(model, method=method, example_input=example)
    assert all(torch.isfinite(s).all() and (s >= 0).all() for s in scores.values())
    assert float(scores["0.layers.0.self_attn.in_proj_weight"].sum()) > 0  # the fused fast path is not taken
    masks = prune(model, compression=20, method=method, iterations=5, example_input=example)
    total = sum(m.numel() for m in masks.values())
    assert total == 2 * (48 * 16 + 16 * 16 + 32 * 16 + 16 * 32) + 4 * 16
    assert sum(int(m.sum()) for m in masks.values()) == total - total * 19 // 20
    weight = model[0].layers[1].self_attn.in_proj_weight
    assert bool((weight[~masks["0.layers.1.self_attn.in_proj_weight"]] == 0).all())


def test_transposed_conv_pruned_with_exact_count():
    from lightning_synflow import prune

    torch.manual_seed(0)
    model = nn.Sequential(nn.ConvTranspose2d(4, 3, 3, stride=2), nn.ReLU(), nn.Conv2d(3, 2, 3), nn.Flatten())
    masks = prune(model, sparsity=0.9, iterations=10, example_input=torch.zeros(2, 4, 5, 5))
    assert list(masks) == ["0.weight", "2.weight"]
    assert sum(int(m.sum()) for m in masks.values()) == 162 - 162 * 9 // 10
    assert all(m.any() for m in masks.values())
