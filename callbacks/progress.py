"""One plain line per epoch, for logs and pipes where a live progress bar would be noise."""

from __future__ import annotations

import sys
import time

import pytorch_lightning as pl


def progress_display(refresh_rate: int = 10) -> pl.Callback:
    """A live rich progress bar in a terminal; one plain line per epoch in logs and pipes."""
    if sys.stdout.isatty():
        from pytorch_lightning.callbacks import RichProgressBar

        return RichProgressBar(refresh_rate=refresh_rate)
    return EpochLinePrinter()


class EpochLinePrinter(pl.Callback):
    """One line per epoch. Epochs count from 0, as Lightning's progress bar and results.json's
    `best_val_epoch` do: `epoch 0/39` is the first of 40."""

    def __init__(self):
        self._t0 = time.perf_counter()
        self._batches_done = 0

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()
        self._batches_done = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._batches_done = batch_idx + 1  # batch_idx, not a count: a resumed epoch starts mid-way

    def on_train_epoch_end(self, trainer, pl_module):
        # train/acc is logged at the epoch's last batch and validation has run: all are current.
        if not trainer.is_global_zero:
            return
        parts = [f"epoch {trainer.current_epoch}/{trainer.max_epochs - 1}"]
        batches = trainer.num_training_batches
        # Stopped mid-epoch (trainer.max_steps): callback_metrics still hold the last whole
        # epoch's numbers, so none is printed.
        if self._batches_done < batches < float("inf"):
            parts.append(f"stopped after {self._batches_done} of {batches} batches, not validated")
            parts.append(f"{time.perf_counter() - self._t0:.1f} s")
            print("  ".join(parts), file=sys.stdout, flush=True)
            return
        m = trainer.callback_metrics
        for key, label in (("train/epoch_loss", "train loss"), ("val/loss", "val loss")):
            if key in m:
                parts.append(f"{label} {float(m[key]):.4f}")
        for key, label in (("train/acc", "train acc"), ("val/acc", "val acc")):
            if key in m:
                parts.append(f"{label} {100 * float(m[key]):.2f} %")
        parts.append(f"{time.perf_counter() - self._t0:.1f} s")
        print("  ".join(parts), file=sys.stdout, flush=True)
