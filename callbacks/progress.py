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
    """One line per epoch, grouped by split to fit 80 columns (losses below 10, accuracies
    below 100 %): `epoch 39/39  train loss 0.2950 acc 89.31 %  val loss 0.3267 acc 88.61 %  10.9 s`.
    Epochs count from 0, as Lightning's progress bar and results.json's `best_val_epoch` do:
    `epoch 0/39` is the first of 40."""

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
        # grouped by split, to fit 80 columns: `train loss 0.2950 acc 89.31 %  val loss 0.3267 acc 88.61 %`
        for split, loss_key in (("train", "train/epoch_loss"), ("val", "val/loss")):
            if not (whole or (self._validated and split == "val")):
                continue
            shown = [f"loss {float(m[loss_key]):.4f}"] if loss_key in m else []
            if f"{split}/acc" in m:
                shown.append(f"acc {100 * float(m[f'{split}/acc']):.2f} %")
            if shown:
                parts.append(" ".join([split, *shown]))
        seconds = time.perf_counter() - self._t0
        # a tenth of a second is noise past 100 s, and a column (999 epochs and 999 s fit 80, as above)
        parts.append(f"{seconds:.1f} s" if seconds < 99.95 else f"{seconds:.0f} s")
        print("  ".join(parts), file=sys.stdout, flush=True)
