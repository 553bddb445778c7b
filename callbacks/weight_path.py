"""Record the training path: the network's weights every N optimizer steps and/or every epoch.

`landscape.py` projects this path onto its leading PCA directions (Li et al. 2018). Off by
default; `callbacks=with_path` (conf/callbacks/with_path.yaml: the default callbacks + this one)
turns it on.

On disk, in the run dir:

    weight_path/meta.json            parameter names and shapes, dtype, schedule
    weight_path/step_0000000.pt      {"step", "epoch" (epochs done, 0.0, 1.0, ...), "weights":
    weight_path/step_0000195.pt       all parameters flattened in meta.json's order}, one file a point

Each file is written once, atomically (temp name + rename), so a kill never leaves a torn one.
Step 0 is the initial weights; at float16 a point of the tutorial's MLP (633k parameters) is
1.27 MB, so the default 40-epoch run keeps 41 points, 52 MB. A point whose weights do not fit
in the dtype (float16 ends at 65504) is kept in float32 instead, with a warning in the run's
results.json: its file's weights tensor says which dtype it holds.

Resume: the steps recorded so far are part of the callback's state in every checkpoint. A
resumed run deletes the points recorded after its checkpoint (the killed process got further
than the checkpoint) and records them again on the way, so the path is that of an
uninterrupted run.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from src.utils import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

PATH_DIR = "weight_path"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_POINT = re.compile(r"step_(\d+)\.pt$")


def point_file(directory: Path, step: int) -> Path:
    return directory / f"step_{step:07d}.pt"


def recorded_steps(directory: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in directory.glob("step_*.pt") if (m := _POINT.search(p.name)))


class UnreadablePath(ValueError):
    """A recorded path whose meta.json or a point file cannot be read (a torn copy, an edit)."""


def load_path(run_dir: str | Path) -> dict | None:
    """The recorded path of a run: {"steps", "epochs", "weights" [T, P] float32, "names",
    "shapes", "dtype"}; None if the run recorded none; UnreadablePath (naming the file) if a
    file of it cannot be read."""
    directory = Path(run_dir) / PATH_DIR
    meta_file = directory / "meta.json"
    steps = recorded_steps(directory) if directory.is_dir() else []
    if not meta_file.is_file() or not steps:
        return None
    try:
        meta = json.loads(meta_file.read_text())
        names, shapes, dtype = meta["names"], [tuple(s) for s in meta["shapes"]], meta["dtype"]
        if dtype not in DTYPES or len(names) != len(shapes):
            raise ValueError(f"dtype {dtype!r}, {len(names)} names for {len(shapes)} shapes")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UnreadablePath(f"{meta_file} is unreadable ({type(e).__name__}: {e})") from None
    points, numel = [], sum(math.prod(s) for s in shapes)
    for s in steps:
        file = point_file(directory, s)
        try:
            point = torch.load(file, map_location="cpu", weights_only=True)
            weights = point["weights"]
            if not isinstance(weights, torch.Tensor) or weights.shape != (numel,):
                raise ValueError(f"weights of shape {tuple(getattr(weights, 'shape', ()))}, "
                                 f"meta.json says {numel}")
            points.append((float(point["epoch"]), weights.float()))
        except Exception as e:  # torch.load raises many kinds on a torn file
            raise UnreadablePath(f"{file} is unreadable ({type(e).__name__}: {e})") from None
    return {"steps": steps, "epochs": [e for e, _ in points], "weights": torch.stack([w for _, w in points]),
            "names": names, "shapes": shapes, "dtype": dtype}


class WeightPath(pl.Callback):
    """Keep the weights every `every_n_steps` optimizer steps and/or after every `every_n_epochs`-th
    epoch (both may be set; at least one must be), plus the initial and the final weights."""

    def __init__(self, every_n_steps: int | None = None, every_n_epochs: int | None = 1,
                 dtype: str = "float16", dirname: str = PATH_DIR):
        for key, value in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"callbacks.weight_path.{key}={value!r} must be a positive integer or null")
        if every_n_steps is None and every_n_epochs is None:
            raise ValueError("callbacks.weight_path: set every_n_steps or every_n_epochs (or both)")
        if dtype not in DTYPES:
            raise ValueError(f"callbacks.weight_path.dtype={dtype!r} is not one of: {', '.join(DTYPES)}")
        self.every_n_steps, self.every_n_epochs = every_n_steps, every_n_epochs
        self.dtype, self.dirname = dtype, dirname
        self.steps: list[int] = []  # recorded so far (restored from a checkpoint on resume)
        self._restored = False
        self.warnings: list[str] = []  # src/training.py copies them into results.json

    # -- state in the checkpoint --------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"steps": list(self.steps)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.steps = [int(s) for s in state_dict.get("steps", [])]
        self._restored = True

    # -- recording ----------------------------------------------------------------------------

    def _dir(self, trainer: pl.Trainer) -> Path:
        return Path(trainer.default_root_dir) / self.dirname

    @staticmethod
    def _params(pl_module: pl.LightningModule) -> list[tuple[str, torch.Tensor]]:
        return [(name, p) for name, p in pl_module.named_parameters()]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        directory = self._dir(trainer)
        directory.mkdir(parents=True, exist_ok=True)
        if self._restored:
            # The killed process may have recorded points after its last checkpoint: drop them,
            # they are recorded again (identically: the resume is exact) as training goes on.
            for step in recorded_steps(directory):
                if step not in self.steps:
                    point_file(directory, step).unlink()
            missing = [s for s in self.steps if not point_file(directory, s).is_file()]
            if missing:
                log.warning("weight path: %d recorded points (steps %s...) are not in %s; the path "
                            "will have a gap", len(missing), missing[:3], directory)
        else:
            for step in recorded_steps(directory):  # a fresh run in a reused dir: start over
                point_file(directory, step).unlink()
        params = self._params(pl_module)
        atomic_write_json(directory / "meta.json", {
            "names": [n for n, _ in params], "shapes": [list(p.shape) for _, p in params],
            "numel": sum(p.numel() for _, p in params), "dtype": self.dtype,
            "every_n_steps": self.every_n_steps, "every_n_epochs": self.every_n_epochs})
        if not self.steps:
            self._record(trainer, pl_module)  # the initial weights, step 0
        per_epoch = (trainer.num_training_batches // self.every_n_steps if self.every_n_steps else 0) + \
                    (1 if self.every_n_epochs else 0)
        n = sum(p.numel() for _, p in params)
        points = 1 + per_epoch * (trainer.max_epochs or 1)
        log.info("weight path: up to %d points x %.2f MB (%s) in %s", points,
                 n * DTYPES[self.dtype].itemsize / 1e6, self.dtype, directory)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        due = self.every_n_steps is not None and step % self.every_n_steps == 0
        last_batch = batch_idx + 1 == trainer.num_training_batches
        # Here, not in on_train_epoch_end: Lightning moves ModelCheckpoint after every other
        # callback, so the checkpoint written at this step (or after this epoch's validation)
        # already lists this point in our state.
        due |= last_batch and self.every_n_epochs is not None and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        if due:
            self._record(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._record(trainer, pl_module)  # the final weights (max_steps, early stop); no-op if done

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step in self.steps:
            return
        with torch.no_grad():
            full = torch.cat([p.detach().reshape(-1) for _, p in self._params(pl_module)])
            flat = full.to(device="cpu", dtype=DTYPES[self.dtype])
            # float16 turns weights past 65504 into inf, and an inf point makes the path useless
            # for landscape.py: keep such a point in float32 (a diverged run's NaN stays as it is)
            overflow = not bool(torch.isfinite(flat).all()) and bool(torch.isfinite(full).all())
            if overflow:
                flat = full.to(device="cpu", dtype=torch.float32)
        buf = io.BytesIO()
        batches = trainer.num_training_batches
        epochs_done = step / batches if 0 < batches < float("inf") else float(trainer.current_epoch)
        if overflow and not self.warnings:  # once: later points fall back alike, said here
            line = (f"weight path: the weights at step {step} (epoch {epochs_done:.3g}) reach "
                    f"{float(full.abs().max()):.3g}, beyond {self.dtype}'s range "
                    f"({torch.finfo(DTYPES[self.dtype]).max:.6g}); such points are recorded in float32 "
                    "(twice the size)")
            self.warnings.append(line)
            rank_zero_warn(line)
        torch.save({"step": step, "epoch": epochs_done, "weights": flat}, buf)
        atomic_write_bytes(point_file(self._dir(trainer), step), buf.getvalue())
        self.steps.append(step)
