"""Where one train.py run spends its time outside the epochs: a timeline of one process.

Runs train.py in this process with timers around its phases and prints when each started and
how long it took: the imports (torch; torch._dynamo, and what imported it; Lightning; the
app's own modules), composing the config, preparing and decoding the data, the start of fit
(sanity hooks, diagnostics at step 0 and their figures), each epoch (train + val) and the
epoch boundary after it (checkpoints, loss drain), the end of training (final diagnostics and
figures), the test pass, results.json, and the exit.

    .venv/bin/python benchmarks/startup_phases.py [train.py overrides...]
    .venv/bin/python benchmarks/startup_phases.py trainer.max_epochs=2

One process, one run: a profile to find the cost, not a figure to quote (end_to_end.py is).
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import os
import sys
import time
import traceback
from pathlib import Path

T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
rows: list[tuple[str, float, float]] = []  # (what, started at, seconds)
notes: list[str] = []


def timed(what: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            rows.append((what, t - T0, time.perf_counter() - t))
    return wrapper


def patch(owner, name: str, what: str) -> None:
    if owner is not None and hasattr(owner, name):  # the app's layout moves; what is gone is left out
        setattr(owner, name, timed(what, getattr(owner, name)))


class WhoImports(importlib.abc.MetaPathFinder):
    """Records the first app/Lightning frame on the stack when `target` is first imported."""

    def __init__(self, target: str):
        self.target = target

    def find_spec(self, name, path, target=None):
        if name == self.target:
            frames = [f for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename]
            chain = [f"{Path(f.filename).parent.name}/{Path(f.filename).name}" for f in frames
                     if "site-packages" in f.filename or str(ROOT) in f.filename]
            notes.append(f"{name} first imported via: " + " -> ".join(dict.fromkeys(chain)))
            sys.meta_path.remove(self)
        return None


@atexit.register
def report() -> None:
    rows.append(("exit", time.perf_counter() - T0, 0.0))
    print(f"\n{'started':>8} {'seconds':>8}  phase", file=sys.stderr)
    for what, start, secs in sorted(rows, key=lambda r: r[1]):
        print(f"{start:8.2f} {secs:8.3f}  {what}", file=sys.stderr)
    for note in notes:
        print(note, file=sys.stderr)


def main() -> None:
    sys.meta_path.insert(0, WhoImports("torch._dynamo"))
    for module in ("torch", "pytorch_lightning", "src.training"):
        t = time.perf_counter()
        __import__(module)
        rows.append((f"import {module}" + (" (incl. torch._dynamo)" if module == "pytorch_lightning" else ""),
                     t - T0, time.perf_counter() - t))

    import pytorch_lightning as pl
    from pytorch_lightning.loops import fit_loop, training_epoch_loop

    import callbacks.diagnostics as diagnostics
    import src.data as data
    import src.module as module
    import src.training as training

    patch(training, "train", "train(cfg): everything after composing")
    patch(data.FashionMNISTDataModule, "prepare_data", "data: prepare (find + hash raw files)")
    patch(data.FashionMNISTDataModule, "setup", "data: setup (decode, split, normalise)")
    patch(fit_loop._FitLoop, "on_run_start", "fit start (on_train_start: step-0 diagnostics, figures)")
    patch(training_epoch_loop._TrainingEpochLoop, "run", "epoch: train + validation")
    patch(fit_loop._FitLoop, "on_advance_end", "epoch boundary (epoch-end hooks, checkpoints, loss drain)")
    patch(fit_loop._FitLoop, "on_run_end", "fit end (on_train_end: final diagnostics, figures)")
    patch(diagnostics, "save_figures", "  of which: draw + write distribution figures")
    patch(module.ClassifierModule, "drain_losses", "  of which: loss drain into the logger")
    patch(getattr(training, "AtomicCheckpointIO", None), "save_checkpoint", "  of which: a checkpoint write")
    patch(pl.Trainer, "test", "test pass (best checkpoint)")
    patch(training, "atomic_write_json", "write results.json")
    sys.argv = [str(ROOT / "train.py"), *sys.argv[1:]]
    import runpy

    runpy.run_path(str(ROOT / "train.py"), run_name="__main__")


if __name__ == "__main__":
    main()
