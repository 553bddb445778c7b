"""One plain line per epoch, for logs and pipes where a live progress bar would be noise."""

from __future__ import annotations

import sys
import time

import pytorch_lightning as pl


class EpochLinePrinter(pl.Callback):
    """Prints each epoch's line once all of its metrics exist.

    Callbacks' `on_train_epoch_end` runs before the LightningModule's (where train/acc is
    computed), so the line for epoch N is printed when epoch N+1 starts or training ends.
    """

    def __init__(self):
        self._pending: tuple[int, float] | None = None
        self._t0 = time.perf_counter()

    def _flush(self, trainer):
        if self._pending is None or not trainer.is_global_zero:
            return
        epoch, seconds = self._pending
        self._pending = None
        m = trainer.callback_metrics
        parts = [f"epoch {epoch + 1}/{trainer.max_epochs}"]
        for key in ("train/epoch_loss", "train/acc", "val/loss", "val/acc"):
            if key in m:
                parts.append(f"{key}={float(m[key]):.4f}")
        parts.append(f"{seconds:.1f}s")
        print("  ".join(parts), file=sys.stdout, flush=True)

    def on_train_epoch_start(self, trainer, pl_module):
        self._flush(trainer)
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self._pending = (trainer.current_epoch, time.perf_counter() - self._t0)

    def on_train_end(self, trainer, pl_module):
        self._flush(trainer)

    def on_exception(self, trainer, pl_module, exception):
        self._flush(trainer)
