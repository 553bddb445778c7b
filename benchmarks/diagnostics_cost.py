"""What the diagnostics cost, as they measure it themselves (each callback times its own work).

Trains the default config (all diagnostics on) for `--epochs` epochs and prints, per callback,
its seconds and logging events, then the recurring cost per epoch (the statistics every
`every_n_steps`) against the median epoch time, and the one-off costs (the step-0 probe, the
figures at start and end). Self-timing is not fooled by other load the way an A/B of two runs is
(benchmarks/epoch_time.py (a)/(b)), though a loaded machine slows both sides.

    .venv/bin/python benchmarks/diagnostics_cost.py [--epochs 3] [--every 200] [--device cpu|cuda]
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
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
warnings.filterwarnings("ignore")

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

RECURRING = ("ActivationStats", "GradientStats", "WeightStats", "UpdateStats")


class EpochTimer(pl.Callback):
    def __init__(self, device: str):
        self.device, self.times, self.trainer = device, [], None

    def _sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def on_train_epoch_start(self, trainer, pl_module):
        self._sync()
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self._sync()
        self.times.append(time.perf_counter() - self.t0)
        self.trainer = trainer


_TIMER: EpochTimer | None = None


def _make_timer():
    return _TIMER


def main() -> None:
    global _TIMER
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--every", type=int, default=200, help="every_n_steps of the statistics (default: config's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    from omegaconf import open_dict

    from callbacks.group import each_callback
    from src.config import compose_config
    from src.training import train

    stats = ("activation_stats", "gradient_stats", "weight_stats", "update_stats")
    overrides = [f"trainer.max_epochs={args.epochs}", "print_config=false", "skip_test=true",
                 "trainer.enable_progress_bar=false", "trainer.accelerator=" + ("gpu" if args.device == "cuda" else "cpu"),
                 *(f"callbacks.{s}.every_n_steps={args.every}" for s in stats)]
    _TIMER = EpochTimer(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(overrides, Path(tmp))
        with open_dict(cfg):
            cfg.callbacks["_epoch_timer"] = {"_target_": f"{__name__}._make_timer"}
        started = time.perf_counter()
        train(cfg)
        total = time.perf_counter() - started
    trainer = _TIMER.trainer
    steps_per_epoch = trainer.num_training_batches
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
          f"{args.epochs} epochs of {steps_per_epoch} steps, statistics every {args.every} steps")
    print(f"\n{'callback':<22}{'seconds':>9}{'logged steps':>14}{'ms per log':>12}")
    recurring = one_off = 0.0
    for cb in each_callback(trainer.callbacks):
        if not hasattr(cb, "seconds"):
            continue
        name = type(cb).__name__
        logs = len(getattr(cb, "history", {}) or {}) or None
        per = f"{1000 * cb.seconds / logs:10.1f}" if logs else f"{'—':>10}"
        print(f"{name:<22}{cb.seconds:9.3f}{logs or '—':>14}  {per}")
        if name in RECURRING:
            recurring += cb.seconds
        else:
            one_off += cb.seconds
    epoch = statistics.median(_TIMER.times[1:] if len(_TIMER.times) > 1 else _TIMER.times)
    per_epoch = recurring / args.epochs
    print(f"\nmedian epoch (train + val, after the first): {epoch:.2f} s")
    print(f"recurring statistics: {per_epoch:.3f} s per epoch = {100 * per_epoch / epoch:.2f} % of an epoch  "
          f"(goal <= 3 %)")
    print(f"one-off (step-0 probe, figures at start/end): {one_off:.2f} s = {100 * one_off / total:.2f} % of this "
          f"{total:.0f} s run")
    print(f"all diagnostics: {recurring + one_off:.2f} s = {100 * (recurring + one_off) / total:.2f} % of the run")


if __name__ == "__main__":
    main()
