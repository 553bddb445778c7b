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
        self._validated = False

    def on_train_start(self, trainer, pl_module):
        # an epoch resumed mid-way has no on_train_epoch_start: its line timed the setup and the
        # checkpoint's loading too (29.3 s against results.json's 25.2 s)
        self._t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()
        self._validated = False

    def on_validation_end(self, trainer, pl_module):
        self._validated = self._validated or not trainer.sanity_checking

    def on_train_epoch_end(self, trainer, pl_module):
        # train/acc is logged at the epoch's last batch and validation has run: all are current.
        if not trainer.is_global_zero:
            return
        parts = [f"epoch {trainer.current_epoch}/{trainer.max_epochs - 1}"]
        batches = trainer.num_training_batches
        # The epoch's batches so far, counted by Lightning (a resumed epoch's earlier ones too).
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        # Stopped mid-epoch (trainer.max_steps, max_time): the train metrics are still the last
        # whole epoch's, and the val ones too unless Lightning validated on stopping (max_time).
        whole = not done < batches < float("inf")
        if not whole:
            parts.append(f"stopped after {done} of {batches} batches"
                         + ("" if self._validated else ", not validated"))
        m = trainer.callback_metrics
        for key, label in (("train/epoch_loss", "train loss"), ("val/loss", "val loss"),
                           ("train/acc", "train acc"), ("val/acc", "val acc")):
            if key in m and (whole or (self._validated and key.startswith("val/"))):
                value = float(m[key])
                parts.append(f"{label} {value:.4f}" if key.endswith("loss") else f"{label} {100 * value:.2f} %")
        parts.append(f"{time.perf_counter() - self._t0:.1f} s")
        print("  ".join(parts), file=sys.stdout, flush=True)
