"""Python function calls a training step of the app, counted with cProfile: exact counts, no
timing noise. On a GPU this MLP's step is mostly the Python around its kernel launches, so the
count is what the per-step overhead work of issue 11 moves.

Runs train.py's default config (every diagnostic on) at tiny sizes (hidden [8], batch 16, two
epochs of 1000 steps) and profiles steps 20-519 of the second epoch, twice:

  now     as the app is
  before  with the costs removed in issue 11's rounds put back: an active but never due step
          checkpoint (what Lightning dispatched to every step when it was left in at
          `every_n_train_steps=0`), Lightning's hook name set through nn.Module.__setattr__,
          Lightning's automatic optimization loop (`module.manual_step=false`) and its default
          PassThroughProfiler (src/training.py's NoProfiler)

Prints, for each, the Python calls a step, nn.Module.__setattr__ calls a step, and the
functions with the most calls.

    .venv/bin/python benchmarks/step_profile.py [--top 12]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import logging
import os
import pstats
import re
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
warnings.filterwarnings("ignore")

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from src.config import compose_config  # noqa: E402
from src.module import ClassifierModule  # noqa: E402
from src.training import train  # noqa: E402

FIRST, LAST = 20, 520  # steps FIRST..LAST-1 of epoch 1
STEPS = LAST - FIRST
_WINDOW = None


class ProfileWindow(pl.Callback):
    def __init__(self):
        self.profile = cProfile.Profile()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == FIRST:
            self.profile.enable()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == LAST - 1:
            self.profile.disable()


def _window():
    return _WINDOW


def profile_run(before: bool, out: Path) -> pstats.Stats:
    global _WINDOW
    overrides = ["trainer.max_epochs=2", "data.train_subset=16000", "data.batch_size=16", "model.hidden_sizes=[8]",
                 "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "print_config=false",
                 "skip_test=true", "trainer.limit_val_batches=2"]
    if before:
        overrides += ["checkpoint.every_n_train_steps=1000000", "module.manual_step=false",
                      "+trainer.profiler._target_=pytorch_lightning.profilers.PassThroughProfiler"]
    cfg = compose_config(overrides, out)
    with open_dict(cfg):
        cfg.callbacks["_profile_window"] = {"_target_": f"{__name__}._window"}
    _WINDOW = ProfileWindow()
    plain_setattr = ClassifierModule.__setattr__
    if before:
        ClassifierModule.__setattr__ = torch.nn.Module.__setattr__
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            train(cfg)
    finally:
        ClassifierModule.__setattr__ = plain_setattr
    return pstats.Stats(_WINDOW.profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=12, help="functions with the most calls to list")
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("before", "now"):
            stats = profile_run(name == "before", Path(tmp) / name)
            calls = {f"{'/'.join(Path(f).parts[-2:])}:{line}({re.sub(' at 0x[0-9a-f]+', '', fn)})": c[1]
                     for (f, line, fn), c in stats.stats.items()}
            setattr_calls = sum(c[1] for (f, _, fn), c in stats.stats.items()
                                if fn == "__setattr__" and f.endswith(os.path.join("torch", "nn", "modules", "module.py")))
            counts[name] = sum(calls.values()) / STEPS
            print(f"{name}: {counts[name]:.0f} Python calls a step, "
                  f"{setattr_calls / STEPS:.1f} of them nn.Module.__setattr__ ({STEPS} steps profiled)")
            for fn, n in sorted(calls.items(), key=lambda kv: -kv[1])[:args.top]:
                print(f"  {n / STEPS:7.1f}  {fn}")
    print(f"now / before: {counts['now'] / counts['before']:.3f} of the Python calls a step")


if __name__ == "__main__":
    main()
