"""The LightningModule: the tutorial's MLP, an injected init scheme, an injected optimizer."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from src.model import BaseNetwork

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


class ClassifierModule(pl.LightningModule):
    """Wraps BaseNetwork.

    `optimizer` is a factory (Hydra's `_partial_: true`) called on the parameters in
    `configure_optimizers`; `init_fn` initialises the network in place. Neither is stored in the
    checkpoint's hyperparameters: a `functools.partial` there breaks `torch.load(weights_only=True)`.
    Plain dicts of their configs (`optim_cfg`, `init_cfg`) are stored instead, for the record.
    """

    def __init__(self, model: dict, optimizer: OptimizerFactory | None = None,
                 init_fn: Callable[[torch.nn.Module], object] | None = None,
                 optim_cfg: dict | None = None, init_cfg: dict | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "init_fn"])
        self.net = BaseNetwork(**model)
        if init_fn is not None:
            init_fn(self.net)
        self.optimizer_factory = optimizer
        num_classes = self.net.config["num_classes"]
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        # Saved with the checkpoint, so an epoch resumed mid-way reports the same train accuracy.
        self.train_acc.persistent(True)
        # Per-step losses stay on the device until the epoch ends: one host sync per epoch.
        self._step_losses: list[torch.Tensor] = []
        self.history = {"train_losses": [], "train_scores": [], "val_scores": [], "val_losses": []}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc.update(logits.detach(), y)
        self._step_losses.append(loss.detach())
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def on_train_epoch_end(self):
        acc = self.train_acc.compute()
        self.log("train/acc", acc, prog_bar=True)
        self.train_acc.reset()
        if self._step_losses:
            self.history["train_losses"] += torch.stack(self._step_losses).float().cpu().tolist()
            self._step_losses.clear()
        self.history["train_scores"].append(float(acc))

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.val_acc.update(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=False)

    def on_validation_epoch_end(self):
        acc = self.val_acc.compute()
        self.log("val/acc", acc, prog_bar=True)
        self.val_acc.reset()
        if not self.trainer.sanity_checking:
            self.history["val_scores"].append(float(acc))

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.test_acc.update(logits, y)
        self.log("test/loss", F.cross_entropy(logits, y), on_epoch=True)

    def on_test_epoch_end(self):
        self.log("test/acc", self.test_acc.compute())
        self.test_acc.reset()

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise RuntimeError("ClassifierModule needs an optimizer factory to train")
        return self.optimizer_factory(self.parameters())

    # The per-epoch history travels with the checkpoint, so a resumed run writes a complete
    # results.json (val_scores from before the interruption included).
    def on_save_checkpoint(self, checkpoint):
        pending = torch.stack(self._step_losses).float().cpu().tolist() if self._step_losses else []
        checkpoint["history"] = {**self.history,
                                 "train_losses": self.history["train_losses"] + pending}

    def on_load_checkpoint(self, checkpoint):
        if "history" in checkpoint:
            self.history = {k: list(v) for k, v in checkpoint["history"].items()}
            self._step_losses = []
