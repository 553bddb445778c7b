"""The fast tensor pipeline changes no result: same pixels, labels, split and order as torchvision's."""

import pytest
import torch

from src.data import FashionMNISTDataModule


@pytest.fixture(scope="module")
def both(data_dir):
    tensor = FashionMNISTDataModule(data_dir=str(data_dir), pipeline="tensor", batch_size=64)
    tv = FashionMNISTDataModule(data_dir=str(data_dir), pipeline="torchvision", batch_size=64)
    for dm in (tensor, tv):
        dm.prepare_data()
        dm.setup()
    return tensor, tv


def test_same_split(both):
    tensor, tv = both
    assert torch.equal(tensor.train_idx, tv.train_idx) and torch.equal(tensor.val_idx, tv.val_idx)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_same_pixels_and_labels(both, split):
    tensor, tv = both
    xs, ys = getattr(tensor, f"{split}_x"), getattr(tensor, f"{split}_y")
    items = getattr(tv, f"{split}_x")
    for i in [0, 1, 17, 4999, len(items) - 1]:
        img, label = items[i]
        assert torch.equal(xs[i], img)  # bit for bit: the same float32 arithmetic
        assert int(ys[i]) == label


def test_same_batches_in_the_same_order(both):
    tensor, tv = both
    for epoch in (0, 3):
        a, b = tensor.train_dataloader(), tv.train_dataloader()
        a.batch_sampler.set_epoch(epoch)
        b.batch_sampler.set_epoch(epoch)
        assert len(a) == len(b) == 50000 // 64
        for (xa, ya), (xb, yb), _ in zip(a, b, range(3), strict=False):
            assert torch.equal(ya, yb)
            assert torch.equal(xa, xb)
