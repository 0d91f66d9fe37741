import pytest
import torch

from lightning_synflow.data import CIFARDataModule, DigitsDataModule


def test_digits_split_is_deterministic_and_disjoint():
    a, b = DigitsDataModule(), DigitsDataModule()
    a.setup(), b.setup()
    sizes = {k: len(v) for k, v in a.splits.items()}
    assert sizes == {"test": 359, "val": 180, "train": 1258}
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split].tensors[0], b.splits[split].tensors[0])
    rows = [tuple(x.tolist()) for split in a.splits.values() for x in split.tensors[0]]
    assert len(rows) == 1797
    other = DigitsDataModule(seed=1)
    other.setup()
    assert not torch.equal(other.splits["test"].tensors[1], a.splits["test"].tensors[1])


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [({}, (64,)), ({"flatten": False}, (1, 8, 8)), ({"flatten": False, "image_size": 32, "channels": 3}, (3, 32, 32))],
)
def test_digits_shapes(kwargs, shape):
    data = DigitsDataModule(batch_size=16, **kwargs)
    x, y = next(iter(data.train_dataloader()))
    assert tuple(x.shape[1:]) == shape and list(shape) == data.input_shape
    assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.dtype == torch.long and x.shape[0] == 16
    assert len(data.val_dataloader().dataset) == 180 and len(data.test_dataloader().dataset) == 359


def test_bad_digits_arguments():
    with pytest.raises(ValueError, match="image_size"):
        DigitsDataModule(image_size=4)
    with pytest.raises(ValueError, match="val_fraction"):
        DigitsDataModule(val_fraction=0.6, test_fraction=0.5)


def test_cifar_datamodule_validates_without_torchvision():
    with pytest.raises(ValueError, match="`num_classes` must be 10 or 100"):
        CIFARDataModule(num_classes=1000)
    assert CIFARDataModule(num_classes=100).input_shape == [3, 32, 32]
