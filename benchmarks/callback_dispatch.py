"""What Lightning's per-step machinery costs a training step (its callback dispatch, automatic loop
and profiler calls), and what the app's choices against each save.

Lightning calls every hook of every callback at every step, whether the callback defines it or
not. On a GPU a step of this MLP is a few hundred µs of kernel launches, so that Python time
counts. Two measurements, each as µs per training step (the median epoch after a warm-up one,
divided by its steps), their variants alternating within each repetition:

  mechanism  a bare LightningModule (one hidden layer of 8 units, batch 16: the arithmetic is
             ~0) with 0 callbacks, with K callbacks that define one hook each, with the
             same K as one CallbackGroup (callbacks/group.py), with K StepCheckpoints at
             `every_n_train_steps=0`, which save nothing (why train() leaves such a one out),
             with 0 callbacks but the hook name set plainly (src/module.py, CheapHookName),
             and with 0 callbacks under manual optimization (the same zero_grad, backward and
             step in training_step, as the app's module.manual_step does)
  app        train.py's default config (every diagnostic on) at the same tiny sizes, with
             `group_callbacks=true` (the default) and `false`: epoch_time.py's Trainer run,
             its validation of 10,000 images included; and grouped, with Lightning's automatic
             loop (`module.manual_step=false`), its PassThroughProfiler, or both put back

    .venv/bin/python benchmarks/callback_dispatch.py [--reps 5] [--callbacks 10]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
warnings.filterwarnings("ignore")

import pytorch_lightning as pl  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from epoch_time import trainer_epoch  # noqa: E402

from callbacks.checkpoint import StepCheckpoint  # noqa: E402
from callbacks.group import CallbackGroup  # noqa: E402
from src.data import FashionMNISTDataModule  # noqa: E402
from src.model import BaseNetwork  # noqa: E402
from src.module import CheapHookName  # noqa: E402
from src.optim import Adam  # noqa: E402

SUBSET, BATCH, HIDDEN, EPOCHS = 16_000, 16, [8], 3
STEPS = SUBSET // BATCH


class EpochTimer(pl.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self.t0)

    def us_per_step(self) -> float:
        return statistics.median(self.times[1:]) / STEPS * 1e6


class Bare(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = BaseNetwork(hidden_sizes=HIDDEN)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return Adam(self.net.parameters(), lr=1e-3)


class BareCheapHookName(CheapHookName, Bare):
    pass


class BareManual(Bare):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        loss = F.cross_entropy(self.net(batch[0]), batch[1])
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss


class OneHook(pl.Callback):
    """A callback that defines one hook and does almost nothing there, like a diagnostic
    between its logging steps."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.last = batch_idx


def inert_checkpoint(i: int, out: Path) -> StepCheckpoint:
    cb = StepCheckpoint(dirpath=str(out), every_n_train_steps=0)
    cb.monitor = f"unused_{i}"  # Lightning refuses two with one state_key; a monitor is part of it
    return cb


def mechanism(k: int, grouped: bool, inert_checkpoints_in: Path | None = None, module=Bare) -> float:
    timer = EpochTimer()
    if inert_checkpoints_in:
        members = [inert_checkpoint(i, inert_checkpoints_in) for i in range(k)]
    else:
        members = [OneHook() for _ in range(k)]
    callbacks = [timer] + ([CallbackGroup(members)] if grouped and members else members)
    trainer = pl.Trainer(max_epochs=EPOCHS, logger=False, enable_checkpointing=bool(inert_checkpoints_in),
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                         limit_val_batches=0, accelerator="cpu", deterministic=True)
    trainer.fit(module(), datamodule=FashionMNISTDataModule(data_dir=str(ROOT / "data"), batch_size=BATCH,
                                                            train_subset=SUBSET))
    return timer.us_per_step()


PASS_THROUGH = "+trainer.profiler._target_=pytorch_lightning.profilers.PassThroughProfiler"


def app(grouped: bool, out: Path, *extra: str) -> float:
    """epoch_time.py's Trainer run (validation included), default callbacks."""
    seconds = trainer_epoch("default", "cpu", out, EPOCHS, SUBSET, BATCH, HIDDEN,
                            extra=(f"group_callbacks={str(grouped).lower()}", *extra))
    return seconds / STEPS * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--callbacks", type=int, default=10, help="K, the callbacks of the mechanism runs")
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    k = args.callbacks
    variants = {"bare, 0 callbacks": lambda tmp: mechanism(0, False),
                f"bare, {k} callbacks": lambda tmp: mechanism(k, False),
                f"bare, {k} callbacks grouped": lambda tmp: mechanism(k, True),
                f"bare, {k} inert StepCheckpoints": lambda tmp: mechanism(k, False, inert_checkpoints_in=tmp),
                "bare, 0, hook name set plainly": lambda tmp: mechanism(0, False, module=BareCheapHookName),
                "bare, 0, manual optimization": lambda tmp: mechanism(0, False, module=BareManual),
                "app, group_callbacks=false": lambda tmp: app(False, tmp),
                "app, group_callbacks=true": lambda tmp: app(True, tmp),
                "app, Lightning's loop": lambda tmp: app(True, tmp, "module.manual_step=false"),
                "app, PassThroughProfiler": lambda tmp: app(True, tmp, PASS_THROUGH),
                "app, both put back": lambda tmp: app(True, tmp, "module.manual_step=false", PASS_THROUGH)}
    results: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for i, (name, run) in enumerate(variants.items()):
                results[name].append(run(Path(tmp) / f"{rep}-{i}"))
            print(f"rep {rep + 1}: " + "  ".join(f"{v[-1]:.0f}" for v in results.values()), flush=True)
    med = {name: statistics.median(v) for name, v in results.items()}
    print(f"\nus per training step (median of {args.reps}; {STEPS} steps of batch {BATCH}, hidden {HIDDEN})")
    for name, v in med.items():
        print(f"  {name:<32} {v:7.0f}")
    names = list(med)
    per_callback = (med[names[1]] - med[names[0]]) / k
    print(f"Lightning's dispatch: {per_callback:.1f} us a step per callback; "
          f"{k} grouped cost {med[names[2]] - med[names[0]]:.0f} us instead of {med[names[1]] - med[names[0]]:.0f}")
    print(f"an inert StepCheckpoint: {(med[names[3]] - med[names[0]]) / k:.1f} us a step")
    print(f"the hook name set plainly: {med[names[0]] - med[names[4]]:.0f} us a step less "
          f"({med[names[4]] / med[names[0]]:.3f}x)")
    print(f"manual optimization: {med[names[0]] - med[names[5]]:.0f} us a step less "
          f"({med[names[5]] / med[names[0]]:.3f}x)")
    print(f"the app: grouped / not grouped = {med[names[7]] / med[names[6]]:.3f} "
          f"({med[names[6]] - med[names[7]]:.0f} us a step less)")
    for i, what in ((8, "the app's own step (module.manual_step)"), (9, "NoProfiler"), (10, "both")):
        print(f"{what}: {med[names[i]] - med[names[7]]:.0f} us a step less ({med[names[7]] / med[names[i]]:.3f}x)")


if __name__ == "__main__":
    main()
