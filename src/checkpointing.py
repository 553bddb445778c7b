"""Checkpoints: find the one to resume from, check it fits the config, write it atomically,
carry the RNG states. Everything a resume needs, and nothing about training itself."""

from __future__ import annotations

import copy
import os
import random
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from src.errors import CheckpointError
from src.utils import read_yaml_mapping, umask_mode

HINT = "pass a run's checkpoints/last.ckpt (or the run dir)"
TMP_SUFFIX = ".tmp"  # our temp files: .<name>.<random>.tmp beside the file they become


def best_rank(path: Path) -> tuple:
    """A best-*.ckpt's place among several (`callbacks.model_checkpoint.save_top_k` > 1), the best
    last: the highest val_acc in its name, of those the earliest epoch (as results.json's best
    epoch); names without them before, by epoch number (not by name: epoch=100 < epoch=99 there)."""
    acc = re.search(r"val_acc=(\d+(?:\.\d+)?)", path.name)
    epoch = re.search(r"epoch=(\d+)", path.name)
    e = int(epoch.group(1)) if epoch else -1
    return (1, float(acc.group(1)), -e) if acc else (0, e, 0)


def finite_weights(state_dict: dict) -> bool:
    """Every floating-point tensor of a checkpoint's state_dict is finite (a diverged run's is not)."""
    return all(bool(torch.isfinite(t).all()) for t in state_dict.values() if torch.is_tensor(t) and t.is_floating_point())


def resolve_ckpt_path(path: str | os.PathLike) -> Path:
    """`ckpt_path` may name the checkpoint or the run dir (then its checkpoints/last.ckpt)."""
    p = Path(path)
    if p.is_dir():
        for candidate in (p / "checkpoints" / "last.ckpt", p / "last.ckpt"):
            if candidate.is_file():
                return candidate
    return p


def missing_checkpoint_message(given: str) -> str:
    """A run dir without last.ckpt was killed before its first checkpoint: say how to restart it."""
    p = Path(given)
    others = sorted((p / "checkpoints").glob("*.ckpt"), key=lambda f: f.stat().st_mtime) if p.is_dir() else []
    if others:  # no last.ckpt, but other checkpoints (Lightning's own, or a best-* written just before
        # a kill): the newest resumes. Quoted twice: Hydra reads the `=` in `epoch=0-step=7.ckpt`
        # as its own, the shell the quotes.
        return (f"ckpt_path={given}: this run has no checkpoints/last.ckpt (stopped before writing it, or run "
                f"without callbacks.model_checkpoint); resume from its newest checkpoint: \"ckpt_path='{others[-1]}'\"")
    hydra = read_yaml_mapping(p / ".hydra" / "hydra.yaml").get("hydra") if p.is_dir() else None
    made_by = ((hydra or {}).get("job") or {}).get("name") if isinstance(hydra, dict) else None
    if isinstance(made_by, str) and made_by != "train" and not made_by.startswith("train_ddp"):
        # its overrides are another app's: "start it again with" them was a command that failed
        article = "an" if made_by[:1] in "aeiou" else "a"
        return f"ckpt_path={given} is {article} {made_by}.py run dir, not a training run's; {HINT}"
    jobs = sorted(d.name for d in p.iterdir() if (d / ".hydra").is_dir()) if p.is_dir() else []
    if jobs and not (p / ".hydra").is_dir():
        return (f"ckpt_path={given} is a sweep dir: continue the sweep (its stopped jobs resume) by running its "
                f"command again with hydra.sweep.dir={given}, or resume one job: ckpt_path={p / jobs[0]}")
    if p.is_dir() and ((p / ".hydra").is_dir() or (p / "checkpoints").is_dir()):
        overrides = []
        saved = p / ".hydra" / "overrides.yaml"
        if saved.is_file():
            import yaml

            overrides = [str(o) for o in yaml.safe_load(saved.read_text()) or []
                         if not str(o).startswith(("ckpt_path=", "hydra.run.dir="))]
        again = " ".join(["python train.py", *overrides]) if overrides else "python train.py"
        return (f"ckpt_path={given}: this run has no checkpoint yet; start it again with the same "
                f"overrides: {again}")
    if p.exists():
        return f"ckpt_path={given} is neither a checkpoint file nor a run dir; {HINT}"
    return f"ckpt_path={given} does not exist; {HINT}"


def check_checkpoint(given: str | None, model_cfg: dict, optim_target: str | None,
                     validates: bool = True) -> str | None:
    """The checkpoint to resume from, checked against the config; None for a fresh run.

    A path that does not exist, a file that is not a Lightning checkpoint of this app, a
    checkpoint of another architecture or optimizer class, or of a run that trained epochs
    without validation resumed with it (`validates`), is a CheckpointError (one line)."""
    if not given:
        return None
    path = resolve_ckpt_path(str(given))
    if not path.is_file():
        raise CheckpointError(missing_checkpoint_message(str(given)))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and weights-only errors all mean "not a checkpoint"
        raise CheckpointError(f"ckpt_path={given} is not a checkpoint ({type(e).__name__}); {HINT}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "loops" not in ckpt:
        raise CheckpointError(f"ckpt_path={given} is not a training checkpoint (no weights/loop state); {HINT}")
    hp = ckpt.get("hyper_parameters") or {}
    saved = hp.get("model") or {}
    for key in ("hidden_sizes", "act_fn", "input_size", "num_classes"):
        if key in saved and key in model_cfg and saved[key] != model_cfg[key]:
            raise CheckpointError(
                f"ckpt_path={given} holds a model with model.{key}={saved[key]}, but this run has "
                f"model.{key}={model_cfg[key]}; resume with the checkpoint's model")
    saved_opt = (hp.get("optim_cfg") or {}).get("_target_")
    if saved_opt and optim_target and saved_opt != optim_target:
        raise CheckpointError(
            f"ckpt_path={given} was trained with optimizer {saved_opt}, but this run asks for {optim_target}; "
            "resume with the same optim= (its hyperparameters, e.g. optim.lr, may change)")
    history = ckpt.get("history") or {}
    trained, validated = len(history.get("train_scores") or []), len(history.get("val_scores") or [])
    if validates and trained > validated:
        # val_scores[i] is epoch i's (best_val_epoch, the report's curves): with validation
        # turned on now, the first score would be of epoch `trained`, read as epoch 0
        raise CheckpointError(
            f"ckpt_path={given}: the run trained {trained} epoch{'s' if trained != 1 else ''}, {validated} of them "
            "validated (trainer.limit_val_batches=0), and results.json's val_scores count epochs from the first, "
            "so it cannot validate from here on; resume it with trainer.limit_val_batches=0, or start a new run "
            "to validate")
    return str(path)


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """A kill during a checkpoint write leaves `.<name>.<random>.tmp`; a restarted run removes
    ours (only files of our naming, in this run's checkpoint dir)."""
    removed = []
    if directory.is_dir():
        for p in directory.glob(f".*{TMP_SUFFIX}"):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temp name + rename: a kill mid-save keeps
    the previous `last.ckpt` intact instead of leaving a truncated one. `stamp` goes into every
    checkpoint as `run`: train() gives what the run is trained with (config hash, seed, config,
    the config changes of earlier resumes), so a sweep started again resumes a killed job's
    checkpoint only under the same config, and a resume says what it changed."""

    def __init__(self, stamp: dict | None = None):
        super().__init__()
        self.stamp = dict(stamp or {})
        # What the writes cost this process (results.json's `timing`): on a GPU each one also
        # copies the weights and optimizer state to the host.
        self.writes = 0
        self.seconds = 0.0

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        started = time.perf_counter()
        try:
            self._save(checkpoint, path)
        finally:
            self.seconds += time.perf_counter() - started
        self.writes += 1

    def _save(self, checkpoint, path):
        if self.stamp:
            checkpoint = {**checkpoint, "run": self.stamp}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        os.fchmod(fd, umask_mode())
        os.close(fd)
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        except RuntimeError as e:
            # torch.save reports a full disk as "basic_ios::clear: iostream error" or "failed
            # writing": say what it is, with the path, like any other OSError.
            if "iostream" in str(e) or "failed writing" in str(e):
                import errno
                import shutil

                full = shutil.disk_usage(path.parent).free < (1 << 20)
                raise OSError(errno.ENOSPC if full else errno.EIO,
                              os.strerror(errno.ENOSPC if full else errno.EIO), str(path)) from None
            raise
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def checkpoint_stamp(path: Path) -> dict:
    """The `run` stamp AtomicCheckpointIO wrote into a checkpoint, with the checkpoint's
    `global_step`; {} if it has no stamp or does not load."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a checkpoint: check_checkpoint says so when it is resumed
        return {}
    stamp = ckpt.get("run") if isinstance(ckpt, dict) else None
    return {**stamp, "global_step": ckpt.get("global_step")} if isinstance(stamp, dict) else {}


def own_seed_and_init(stamp: dict) -> dict:
    """The seed, init and init_name a stamp's own try trained with (`first`'s shape)."""
    return {"seed": stamp.get("seed"), "init": stamp["config"].get("init"), "init_name": stamp["config"].get("init_name")}


def recorded_first_try(stamp: dict) -> dict | None:
    """A checkpoint stamp's record of the run's first try, whose seed and init made the initial
    weights every later try trained on: its `first` (src/training.py, first_try); for a stamp
    written before that record, its own seed and config when no resume had changed them
    (`changes` empty). None when nothing says."""
    if "first" in stamp:
        return stamp["first"]
    if isinstance(stamp.get("config"), dict) and stamp.get("changes") == []:
        return own_seed_and_init(stamp)
    return None


def collect_rng_states() -> dict:
    """torch (CPU, CUDA), numpy and Python RNG states, as plain tensors/lists/tuples so the
    checkpoint still loads with `torch.load(weights_only=True)`."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "python": random.getstate()}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def share_step_count(checkpoint: dict) -> None:
    """Lightning counts optimizer steps (`trainer.global_step`, what max_steps and the step
    checkpoints read) in the automatic loop's record or the manual one's, whichever ran. A run
    resumed in the other mode (a checkpoint from before manual steps, or gradient clipping
    added on resume) would read 0 from its own record: both get the count of the one that ran."""
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
    auto = fit_loop.get("epoch_loop.automatic_optimization.optim_progress", {}).get("optimizer", {})
    manual = fit_loop.get("epoch_loop.manual_optimization.optim_step_progress")
    if "step" not in auto or manual is None:
        return
    if auto["step"]["total"]["completed"] >= manual["total"]["completed"]:
        fit_loop["epoch_loop.manual_optimization.optim_step_progress"] = copy.deepcopy(auto["step"])
    else:
        auto["step"] = copy.deepcopy(manual)


def resume_a_cut_epoch(checkpoint: dict) -> str | None:
    """`trainer.max_steps` (or max_time) ends a fit mid-epoch, and Lightning then still runs the
    epoch's end: it counts the epoch processed, and the checkpoints written there (last.ckpt)
    say "at an epoch's end" while their position is mid-epoch. Resumed without the limit,
    Lightning took such an epoch as finished: it trained nothing (the next epoch was past
    max_epochs) or started the next one, skipping the rest of this one. Here the epoch is made
    unprocessed again, what a mid-epoch checkpoint says: the rest of it is trained, validated.
    But max_time (a stop by `should_stop`) validates the cut epoch: its val score is already
    epoch i's (val_scores count epochs), and a second validation would shift every later one.
    That epoch stays as it was validated, and the sentence returned says so (results.json)."""
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs = fit_loop.get("epoch_progress")
    batches = fit_loop.get("epoch_loop.batch_progress")
    if not epochs or not batches or batches.get("is_last_batch") or not batches["current"].get("completed"):
        return None  # an epoch's last batch (resume_after_epoch_end), or no batch of it: a real epoch end
    total = epochs["total"]
    if not total["ready"] == total["started"] == total["processed"] == total["completed"] + 1:
        return None
    if len((checkpoint.get("history") or {}).get("val_scores") or []) > total["completed"]:
        done = batches["current"]["completed"]
        return (f"epoch {total['completed']} was cut after {done} batch{'es' if done != 1 else ''} (trainer.max_time, or a callback) "
                "and validated as it stood; the resumed run goes on from the next epoch, and the cut epoch's "
                "other batches are not trained")
    total["processed"] -= 1
    epochs["current"]["processed"] -= 1
    return None


def resume_after_epoch_end(checkpoint: dict) -> None:
    """A checkpoint written at an epoch's end (after its validation: last.ckpt, best-*.ckpt; or at
    the end of the fit) holds that epoch's last batch as the loop's position. Without
    `trainer.max_steps` Lightning starts the next epoch from it. With max_steps it resumes
    "iteration-based" and goes on from that position instead: it runs the finished epoch again
    with no batches left, counting it twice (max_steps=10, 4 batches an epoch: 8 steps instead of
    10), or starts the next one at its end (the tensor pipeline's saved position) and trains
    nothing. Here such a checkpoint is made to say what it means, the start of the next epoch:
    the epoch completed, the new epoch's batch counts at zero as Lightning sets them when an
    epoch starts, and no saved position in the data. Mid-epoch checkpoints are left as they are.
    """
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs = fit_loop.get("epoch_progress")
    batches = fit_loop.get("epoch_loop.batch_progress")
    if not epochs or not batches or not batches.get("is_last_batch"):
        return
    total = epochs["total"]
    if not (total["ready"] == total["started"] == total["processed"]
            and total["completed"] in (total["processed"] - 1, total["processed"])):
        return
    if total["completed"] < total["processed"]:  # written before Lightning counted the epoch completed
        total["completed"] += 1
        epochs["current"]["completed"] += 1

    def zero(counts: dict) -> None:
        for key in counts:
            counts[key] = 0

    zero(batches["current"])
    batches["is_last_batch"] = False
    zero(fit_loop.get("epoch_loop.scheduler_progress", {}).get("current", {}))
    for progress in fit_loop.get("epoch_loop.automatic_optimization.optim_progress", {}).get("optimizer", {}).values():
        zero(progress["current"])
    zero(fit_loop.get("epoch_loop.val_loop.batch_progress", {}).get("total", {}))
    # The data loaders' positions (how many batches of the finished epoch were served): a new
    # epoch starts at its first batch.
    fit_loop.get("state_dict", {}).pop("combined_loader", None)
