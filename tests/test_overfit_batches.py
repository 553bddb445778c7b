"""`trainer.overfit_batches=N` trains the first N batches of the unshuffled training split, the
same ones every epoch. Lightning unshuffles only a RandomSampler's loader; the app's own
EpochBatchSampler shuffled on, so an overfit run was the same as `limit_train_batches=N`."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch

from src.data import FashionMNISTDataModule
from src.model import BaseNetwork
from src.module import ClassifierModule
from tests.conftest import FAST, compose

BATCH = 64


class BatchRecorder(pl.Callback):
    """Each epoch's training batches, as (images, labels) copies."""

    def __init__(self):
        self.epochs: list[list[tuple[torch.Tensor, torch.Tensor]]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.epochs[-1].append((batch[0].clone(), batch[1].clone()))


def _trained_batches(data_dir, pipeline: str, **limits) -> tuple[FashionMNISTDataModule, list]:
    torch.manual_seed(0)
    net = BaseNetwork(hidden_sizes=[16])
    dm = FashionMNISTDataModule(data_dir=str(data_dir), pipeline=pipeline, batch_size=BATCH, train_subset=512)
    recorder = BatchRecorder()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=1, callbacks=[recorder], **limits)
    trainer.fit(ClassifierModule(net, torch.optim.SGD(net.parameters(), lr=0.1)), datamodule=dm)
    return dm, recorder.epochs


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb)
                                    for (xa, ya), (xb, yb) in zip(a, b, strict=True))


@pytest.mark.parametrize("pipeline", ["tensor", "torchvision"])
def test_overfit_batches_trains_the_first_batches_every_epoch(data_dir, pipeline):
    dm, epochs = _trained_batches(data_dir, pipeline, overfit_batches=2)
    assert [len(e) for e in epochs] == [2, 2, 2]
    assert _same(epochs[0], epochs[1]) and _same(epochs[0], epochs[2])
    # The first two batches of the split in order, as Lightning's SequentialSampler would give.
    images, labels = dm.diagnostic_batch(2 * BATCH)
    assert _same(epochs[0], [(images[:BATCH], labels[:BATCH]), (images[BATCH:], labels[BATCH:])])


@pytest.mark.parametrize("pipeline", ["tensor", "torchvision"])
def test_without_it_each_epoch_draws_other_batches(data_dir, pipeline):
    _, epochs = _trained_batches(data_dir, pipeline, limit_train_batches=2)
    assert [len(e) for e in epochs] == [2, 2, 2]
    assert not _same(epochs[0], epochs[1]) and not _same(epochs[1], epochs[2])


def test_an_overfit_run_is_no_longer_a_limit_train_batches_run(tmp_path, data_dir):
    from src.training import train

    losses = {}
    for name, override in (("overfit", "+trainer.overfit_batches=2"), ("limit", "trainer.limit_train_batches=2")):
        train(compose([*FAST, "trainer.max_epochs=3", override], tmp_path / name))
        losses[name] = json.loads((tmp_path / name / "results.json").read_text())["train_losses"]
    assert len(losses["overfit"]) == len(losses["limit"]) == 6
    assert losses["overfit"] != losses["limit"]
    # The same two batches each epoch: each one's loss falls from epoch to epoch.
    for first in (0, 1):
        same_batch = losses["overfit"][first::2]
        assert same_batch == sorted(same_batch, reverse=True) and len(set(same_batch)) == 3, same_batch
