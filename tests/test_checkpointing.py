"""src/checkpointing.py in-process: which checkpoint a `ckpt_path` names, the one-line messages for
each wrong one, the atomic writer (a failed save keeps the old file; a full disk says so), the
stale temp files a kill leaves, the RNG states a resume restores, and the loop records it repairs. The same paths through a
real train.py are in test_resume.py, test_endings.py and test_bad_input.py (subprocesses)."""

from __future__ import annotations

import copy
import errno
import os
import random
import shutil
import stat
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from src.checkpointing import (
    HINT,
    AtomicCheckpointIO,
    check_checkpoint,
    checkpoint_stamp,
    collect_rng_states,
    missing_checkpoint_message,
    remove_stale_temp_files,
    resolve_ckpt_path,
    resume_a_cut_epoch,
    resume_after_epoch_end,
    set_rng_states,
    share_step_count,
)
from src.errors import CheckpointError

MODEL = {"act_fn": "relu", "input_size": 784, "num_classes": 10, "hidden_sizes": [512, 256, 256, 128]}


def save(path: Path, **hp) -> Path:
    """The parts of a Lightning checkpoint that check_checkpoint reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.ones(2)}, "loops": {}, "hyper_parameters": hp}, path)
    return path


class NotWeights:
    """Pickled code, not weights: what `torch.load(weights_only=True)` refuses to run."""


def test_ckpt_path_names_the_file_or_the_run_dir(tmp_path):
    run = tmp_path / "run"
    assert resolve_ckpt_path(run) == run  # nothing there: as given (the caller says so)
    flat = save(run / "last.ckpt")
    assert resolve_ckpt_path(run) == flat  # a checkpoints dir itself
    nested = save(run / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path(run) == nested and resolve_ckpt_path(str(run)) == nested  # the run dir first
    assert resolve_ckpt_path(nested) == nested
    (tmp_path / "d" / "checkpoints" / "last.ckpt").mkdir(parents=True)  # a directory is not a checkpoint
    assert resolve_ckpt_path(tmp_path / "d") == tmp_path / "d"


def test_missing_checkpoint_messages(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    assert missing_checkpoint_message(str(run)) == (
        f"ckpt_path={run}: this run has no checkpoint yet; start it again with the same overrides: python train.py")
    (run / ".hydra" / "overrides.yaml").write_text(
        "- optim=adam\n- seed=3\n- ckpt_path=/x\n- hydra.run.dir=/y\n- trainer.max_epochs=2\n")
    assert missing_checkpoint_message(str(run)).endswith(
        "same overrides: python train.py optim=adam seed=3 trainer.max_epochs=2")
    (run / ".hydra" / "overrides.yaml").write_text("")
    assert missing_checkpoint_message(str(run)).endswith("same overrides: python train.py")
    only_ckpts = tmp_path / "only"
    (only_ckpts / "checkpoints").mkdir(parents=True)
    assert missing_checkpoint_message(str(only_ckpts)).startswith(f"ckpt_path={only_ckpts}: this run has no")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert missing_checkpoint_message(str(plain)) == f"ckpt_path={plain} is neither a checkpoint file nor a run dir; {HINT}"
    file = tmp_path / "f.txt"
    file.write_text("x")
    assert missing_checkpoint_message(str(file)) == f"ckpt_path={file} is neither a checkpoint file nor a run dir; {HINT}"
    assert missing_checkpoint_message(str(tmp_path / "nope")) == f"ckpt_path={tmp_path / 'nope'} does not exist; {HINT}"
    assert HINT == "pass a run's checkpoints/last.ckpt (or the run dir)"
    # ~callbacks.model_checkpoint: Lightning's own checkpoint, no last.ckpt ("no checkpoint yet" was untrue)
    (only_ckpts / "checkpoints" / "epoch=0-step=7.ckpt").write_bytes(b"x")
    newest = only_ckpts / "checkpoints" / "epoch=1-step=14.ckpt"
    newest.write_bytes(b"x")
    os.utime(only_ckpts / "checkpoints" / "epoch=0-step=7.ckpt", (1, 1))
    assert missing_checkpoint_message(str(only_ckpts)) == (
        f"ckpt_path={only_ckpts}: this run has no checkpoints/last.ckpt (stopped before writing it, or run "
        f"without callbacks.model_checkpoint); resume from its newest checkpoint: \"ckpt_path='{newest}'\"")

def test_a_checkpoint_path_of_another_apps_run_or_of_a_sweep_says_what_it_is(tmp_path):
    """train.py ckpt_path=<a landscape.py run dir> said to start it again with that run's
    overrides (`python train.py run=… landscape.resolution=3`: refused, `run` is no key of
    train.py's); a sweep dir was "neither a checkpoint file nor a run dir"."""
    other = tmp_path / "landscape_run"
    (other / ".hydra").mkdir(parents=True)
    (other / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    name: landscape\n")
    (other / ".hydra" / "overrides.yaml").write_text("- run=/x\n- landscape.resolution=3\n")
    assert missing_checkpoint_message(str(other)) == f"ckpt_path={other} is a landscape.py run dir, not a training run's; {HINT}"
    (other / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    name: train\n")  # train.py's own: start it again
    assert "start it again with the same overrides: python train.py run=/x" in missing_checkpoint_message(str(other))
    (other / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    name: eval\n")
    assert missing_checkpoint_message(str(other)).startswith(f"ckpt_path={other} is an eval.py run dir, not")
    sweep = tmp_path / "sweep"
    for job in ("1_optim=sgd", "0_optim=adam"):
        (sweep / job / ".hydra").mkdir(parents=True)
    assert missing_checkpoint_message(str(sweep)) == (
        f"ckpt_path={sweep} is a sweep dir: continue the sweep (its stopped jobs resume) by running its command "
        f"again with hydra.sweep.dir={sweep}, or resume one job: ckpt_path={sweep / '0_optim=adam'}")


def test_check_checkpoint_accepts_the_same_model_and_optimizer(tmp_path):
    assert check_checkpoint(None, MODEL, "src.optim.Adam") is None and check_checkpoint("", MODEL, None) is None
    path = save(tmp_path / "run" / "checkpoints" / "last.ckpt", model=MODEL, optim_cfg={"_target_": "src.optim.Adam"})
    assert check_checkpoint(str(tmp_path / "run"), MODEL, "src.optim.Adam") == str(path)
    assert check_checkpoint(str(path), {**MODEL, "extra": 1}, None) == str(path)  # no optimizer asked: any
    bare = save(tmp_path / "bare.ckpt")  # no hyperparameters saved: nothing to compare
    assert check_checkpoint(str(bare), MODEL, "src.optim.SGD") == str(bare)
    partial = save(tmp_path / "partial.ckpt", model={"act_fn": "relu"}, optim_cfg={})
    assert check_checkpoint(str(partial), {"hidden_sizes": [3]}, "src.optim.SGD") == str(partial)


def test_check_checkpoint_messages(tmp_path):
    def err(path, model=MODEL, optim="src.optim.Adam"):
        with pytest.raises(CheckpointError) as e:
            check_checkpoint(str(path), model, optim)
        return str(e.value)

    assert err(tmp_path / "nope") == f"ckpt_path={tmp_path / 'nope'} does not exist; {HINT}"
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a zip")
    assert err(junk) == f"ckpt_path={junk} is not a checkpoint (UnpicklingError); {HINT}"
    torch.save({"state_dict": {}, "loops": {}, "hyper_parameters": NotWeights()}, tmp_path / "code.ckpt")
    assert err(tmp_path / "code.ckpt") == f"ckpt_path={tmp_path / 'code.ckpt'} is not a checkpoint (UnpicklingError); {HINT}"
    for content in ({"state_dict": {}}, {"loops": {}}, [1, 2]):
        torch.save(content, tmp_path / "x.ckpt")
        assert err(tmp_path / "x.ckpt") == \
            f"ckpt_path={tmp_path / 'x.ckpt'} is not a training checkpoint (no weights/loop state); {HINT}"
    for key, other in (("hidden_sizes", [64]), ("act_fn", "tanh"), ("input_size", 10), ("num_classes", 2)):
        path = save(tmp_path / f"{key}.ckpt", model={**MODEL, key: other})
        assert err(path) == (f"ckpt_path={path} holds a model with model.{key}={other}, but this run has "
                             f"model.{key}={MODEL[key]}; resume with the checkpoint's model")
    path = save(tmp_path / "sgd.ckpt", model=MODEL, optim_cfg={"_target_": "src.optim.SGD"})
    assert err(path) == (f"ckpt_path={path} was trained with optimizer src.optim.SGD, but this run asks for "
                         "src.optim.Adam; resume with the same optim= (its hyperparameters, e.g. optim.lr, may change)")


def test_a_run_that_trained_without_validation_resumes_only_without_it(tmp_path):
    """Resumed with validation turned on, its first val score was epoch 1's and results.json
    called it epoch 0 (best_val_epoch, `epochs` 1 of 2 trained)."""
    def ckpt(name, train_scores, val_scores):
        path = tmp_path / f"{name}.ckpt"
        torch.save({"state_dict": {"w": torch.ones(2)}, "loops": {}, "hyper_parameters": {},
                    "history": {"train_scores": train_scores, "val_scores": val_scores}}, path)
        return str(path)

    never = ckpt("never", [0.5], [])
    with pytest.raises(CheckpointError) as e:
        check_checkpoint(never, MODEL, None)
    assert str(e.value) == (f"ckpt_path={never}: the run trained 1 epoch, 0 of them validated "
                            "(trainer.limit_val_batches=0), and results.json's val_scores count epochs from the "
                            "first, so it cannot validate from here on; resume it with "
                            "trainer.limit_val_batches=0, or start a new run to validate")
    assert check_checkpoint(never, MODEL, None, validates=False) == never
    stopped = ckpt("stopped", [0.5, 0.6, 0.7], [0.4, 0.5])  # validation turned off after epoch 1
    with pytest.raises(CheckpointError, match=r"trained 3 epochs, 2 of them validated"):
        check_checkpoint(stopped, MODEL, None)
    every = ckpt("every", [0.5, 0.6], [0.4, 0.5])
    assert check_checkpoint(every, MODEL, None) == every == check_checkpoint(every, MODEL, None, validates=False)
    assert check_checkpoint(ckpt("none", [], []), MODEL, None) is not None  # mid-epoch 0: nothing to count


def test_stale_temp_files_of_our_naming_only(tmp_path):
    assert remove_stale_temp_files(tmp_path / "missing") == []
    ours = [tmp_path / ".last.ckpt.abc123.tmp", tmp_path / ".best-1.ckpt.x.tmp"]
    theirs = [tmp_path / "last.ckpt", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for p in ours + theirs:
        p.write_bytes(b"x")
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted(ours)
    assert not any(p.exists() for p in ours) and all(p.exists() for p in theirs)


def test_atomic_save_writes_and_replaces(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "new" / "dir" / "last.ckpt"  # the directory is made
    io.save_checkpoint({"a": torch.ones(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))
    io.save_checkpoint({"a": torch.zeros(2)}, str(target))
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.zeros(2))
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no temp file left
    # written under a temp name of our own (what remove_stale_temp_files removes), beside the target
    seen = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, tmp: seen.append(Path(tmp)) or real_save(obj, tmp))
    io.save_checkpoint({"a": torch.ones(1)}, target)
    assert len(seen) == 1 and seen[0].parent == target.parent and seen[0] != target
    assert seen[0].name.startswith(".last.ckpt.") and seen[0].name.endswith(".tmp")
    old = os.umask(0o022)
    os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~old  # as a plain open() would make it


def test_the_writer_counts_its_writes_and_their_seconds(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    assert (io.writes, io.seconds) == (0, 0.0)
    real_save = torch.save

    def slow_save(obj, path):
        time.sleep(0.05)
        real_save(obj, path)

    monkeypatch.setattr(torch, "save", slow_save)
    for _ in range(2):
        io.save_checkpoint({"a": torch.ones(2)}, tmp_path / "last.ckpt")
    assert io.writes == 2 and 0.1 <= io.seconds < 1.0

    def failing(obj, path):
        time.sleep(0.05)
        raise OSError(errno.EIO, "disk gone")

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(OSError):
        io.save_checkpoint({"a": torch.ones(2)}, tmp_path / "last.ckpt")
    # a write that failed is no write, but its time was spent
    assert io.writes == 2 and io.seconds >= 0.15


class Unpicklable:
    """Any class of ours: torch.load(weights_only=True) refuses it."""


def test_the_stamp_goes_into_every_checkpoint_and_is_read_back(tmp_path):
    target = tmp_path / "last.ckpt"
    checkpoint = {"a": torch.ones(2)}
    AtomicCheckpointIO(stamp={"config_hash": "abc", "seed": 3}).save_checkpoint(checkpoint, target)
    assert list(checkpoint) == ["a"]  # Lightning's dict is left as it was
    assert checkpoint_stamp(target) == {"config_hash": "abc", "seed": 3, "global_step": None}
    AtomicCheckpointIO(stamp={"seed": 3}).save_checkpoint({"global_step": 12}, target)
    assert checkpoint_stamp(target) == {"seed": 3, "global_step": 12}  # where the run stood
    AtomicCheckpointIO().save_checkpoint(checkpoint, target)
    assert "run" not in torch.load(target, weights_only=True) and checkpoint_stamp(target) == {}
    for junk in (b"", b"not a checkpoint"):
        target.write_bytes(junk)
        assert checkpoint_stamp(target) == {}
    torch.save([1, 2], target)
    assert checkpoint_stamp(target) == {}
    torch.save({"run": "abc"}, target)
    assert checkpoint_stamp(target) == {}
    # read with the safe loader: a pickled object of any other class is not unpickled
    torch.save({"run": {"config_hash": "abc"}, "x": Unpicklable()}, target)
    assert checkpoint_stamp(target) == {}
    assert checkpoint_stamp(tmp_path / "nope.ckpt") == {}


def test_a_failed_save_keeps_the_previous_checkpoint_and_says_what_failed(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"a": torch.ones(2)}, target)
    before = target.read_bytes()

    def failing(message):
        def save(obj, path):
            Path(path).write_bytes(b"half a checkp")  # what a kill or a full disk leaves
            raise RuntimeError(message)
        return save

    free = {"bytes": 0}
    monkeypatch.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(free=free["bytes"] if p == tmp_path else None))
    for message, free_bytes, code in (("basic_ios::clear: iostream error", 0, errno.ENOSPC),
                                      ("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing "
                                       "file data/0: file write failed", 1 << 30, errno.EIO),
                                      ("PytorchStreamWriter failed writing file", (1 << 20) - 1, errno.ENOSPC),
                                      ("PytorchStreamWriter failed writing file", 1 << 20, errno.EIO)):
        free["bytes"] = free_bytes
        monkeypatch.setattr(torch, "save", failing(message))
        with pytest.raises(OSError) as e:
            io.save_checkpoint({"a": torch.zeros(2)}, target)
        assert (e.value.errno, e.value.filename, e.value.strerror) == (code, str(target), os.strerror(code))
        assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    monkeypatch.setattr(torch, "save", failing("some other error"))
    with pytest.raises(RuntimeError, match="^some other error$"):
        io.save_checkpoint({"a": torch.zeros(2)}, target)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_rng_states_restore_every_stream_and_load_weights_only(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # numpy's cached Gaussian is part of its state
    states = collect_rng_states()
    assert states["cuda"] == [] or torch.cuda.is_available()
    torch.save(states, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)  # plain tensors, lists and tuples
    first = (torch.rand(3), np.random.standard_normal(3), np.random.randint(0, 1 << 30), random.random())
    set_rng_states(loaded)
    again = (torch.rand(3), np.random.standard_normal(3), np.random.randint(0, 1 << 30), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2:] == again[2:]
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    assert kind == "MT19937" and keys.dtype == np.uint32 and states["numpy"][1].dtype == torch.int64


def test_cuda_rng_states_restored_only_onto_as_many_gpus(monkeypatch):
    states = collect_rng_states()
    states["cuda"] = [torch.zeros(8, dtype=torch.uint8)]
    calls = []
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", calls.append)
    for available, count, restored in ((False, 1, False), (True, 2, False), (True, 1, True)):
        monkeypatch.setattr(torch.cuda, "is_available", lambda a=available: a)
        monkeypatch.setattr(torch.cuda, "device_count", lambda c=count: c)
        calls.clear()
        set_rng_states(states)
        assert calls == ([states["cuda"]] if restored else []), (available, count)
    calls.clear()
    set_rng_states({**states, "cuda": []})  # saved on a machine without a GPU
    assert calls == []


# ---------------------------------------------------------------------------------------------
# The loop records a resume reads (src/module.py's on_load_checkpoint calls these)


def _step_records(auto: int, manual: int) -> dict:
    def tracker(n):
        return {"total": {"ready": n, "completed": n}, "current": {"ready": n % 4, "completed": n % 4}}

    return {"loops": {"fit_loop": {
        "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {"step": tracker(auto), "zero_grad": {}}},
        "epoch_loop.manual_optimization.optim_step_progress": tracker(manual)}}}


@pytest.mark.parametrize("auto, manual", [(6, 0), (0, 6)])
def test_share_step_count_gives_both_records_the_count_that_ran(auto, manual):
    checkpoint = _step_records(auto, manual)
    share_step_count(checkpoint)
    fit_loop = checkpoint["loops"]["fit_loop"]
    step = fit_loop["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"]
    assert step == fit_loop["epoch_loop.manual_optimization.optim_step_progress"] == _step_records(6, 6)[
        "loops"]["fit_loop"]["epoch_loop.manual_optimization.optim_step_progress"]
    manual_step = fit_loop["epoch_loop.manual_optimization.optim_step_progress"]
    assert step is not manual_step and step["total"] is not manual_step["total"]  # copies, all the way down
    share_step_count({})  # a checkpoint without loops (weights only): nothing to do
    share_step_count({"loops": {"fit_loop": {}}})
    auto_only = _step_records(6, 0)
    del auto_only["loops"]["fit_loop"]["epoch_loop.manual_optimization.optim_step_progress"]
    share_step_count(auto_only)  # one record only (another Lightning's layout): left as it is
    assert "epoch_loop.manual_optimization.optim_step_progress" not in auto_only["loops"]["fit_loop"]


def loop_records(processed: int, completed: int, last_batch: bool, epochs_before: int = 0) -> dict:
    """A checkpoint's loop records as Lightning writes them, 4 batches an epoch: the epoch after
    `epochs_before` whole ones, `processed` / `completed` of it, at its last batch or not."""
    def counts(n):
        return {"ready": n, "completed": n, "started": n, "processed": n}

    def epoch(n_processed, n_completed):
        return {"ready": epochs_before + 1, "started": epochs_before + 1,
                "processed": epochs_before + n_processed, "completed": epochs_before + n_completed}

    return {"loops": {"fit_loop": {
        "epoch_progress": {"total": epoch(processed, completed), "current": epoch(processed, completed)},
        "epoch_loop.batch_progress": {"total": counts(4), "current": counts(4), "is_last_batch": last_batch},
        "epoch_loop.scheduler_progress": {"total": {"ready": 4, "completed": 4}, "current": {"ready": 4, "completed": 4}},
        "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {
            "step": {"total": {"ready": 4, "completed": 4}, "current": {"ready": 4, "completed": 4}},
            "zero_grad": {"total": counts(4), "current": counts(4)}}},
        "epoch_loop.val_loop.batch_progress": {"total": {"ready": 2, "completed": 2}},
        "state_dict": {"combined_loader": [{"epoch": 0, "served": 4}]}}}}


def _cut(done: int, val_scores: int, epochs_before: int = 1) -> dict:
    """A checkpoint written at the end of a fit that max_steps (or max_time) cut `done` batches
    into the epoch after `epochs_before` whole ones: Lightning counted that epoch processed."""
    ckpt = loop_records(1, 0, False, epochs_before=epochs_before)
    ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"] = {
        "ready": done, "completed": done, "started": done, "processed": done}
    ckpt["history"] = {"val_scores": [0.5] * val_scores}
    return ckpt


def test_resume_a_cut_epoch_reopens_only_an_unvalidated_cut_epoch():
    cut = _cut(2, val_scores=1)  # max_steps: epoch 1 cut after 2 batches, not validated
    assert resume_a_cut_epoch(cut) is None
    epochs = cut["loops"]["fit_loop"]["epoch_progress"]
    assert epochs["total"] == {"ready": 2, "started": 2, "processed": 1, "completed": 1}  # mid-epoch again
    assert epochs["current"] == {"ready": 2, "started": 2, "processed": 1, "completed": 1}
    # max_time: the cut epoch was validated (2 scores for 1 whole epoch): left as it is, and said
    validated = _cut(3, val_scores=2)
    assert resume_a_cut_epoch(validated) == (
        "epoch 1 was cut after 3 batches (trainer.max_time, or a callback) and validated as it stood; the resumed "
        "run goes on from the next epoch, and the cut epoch's other batches are not trained")
    assert validated == {**_cut(3, val_scores=2)}
    one = _cut(1, val_scores=2)
    assert "cut after 1 batch (" in resume_a_cut_epoch(one)
    # not a cut epoch: each left unchanged
    for ckpt in (loop_records(1, 0, True, epochs_before=1),  # at the epoch's last batch
                 _cut(0, val_scores=1),  # no batch of it served
                 loop_records(0, 0, False, epochs_before=1),  # a mid-epoch checkpoint: processed < started
                 loop_records(1, 1, False, epochs_before=1),  # counted completed
                 {"loops": {}}, {}):
        before = copy.deepcopy(ckpt)
        assert resume_a_cut_epoch(ckpt) is None and ckpt == before
    no_history = _cut(2, val_scores=0)
    del no_history["history"]
    assert resume_a_cut_epoch(no_history) is None  # an older checkpoint: reopened
    assert no_history["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"] == 1


def test_resume_after_epoch_end_changes_only_a_checkpoint_written_after_an_epochs_end():
    ended = loop_records(1, 0, True, epochs_before=2)  # the third epoch's end
    resume_after_epoch_end(ended)
    fit_loop = ended["loops"]["fit_loop"]
    assert fit_loop["epoch_progress"]["total"] == {"ready": 3, "started": 3, "processed": 3, "completed": 3}
    assert fit_loop["epoch_progress"]["current"]["completed"] == 3
    batches = fit_loop["epoch_loop.batch_progress"]
    assert set(batches["current"].values()) == {0} and batches["is_last_batch"] is False
    assert batches["total"]["completed"] == 4  # the run's totals stay
    assert set(fit_loop["epoch_loop.scheduler_progress"]["current"].values()) == {0}
    for progress in fit_loop["epoch_loop.automatic_optimization.optim_progress"]["optimizer"].values():
        assert set(progress["current"].values()) == {0} and set(progress["total"].values()) == {4}
    assert set(fit_loop["epoch_loop.val_loop.batch_progress"]["total"].values()) == {0}
    assert "combined_loader" not in fit_loop["state_dict"]
    at_fit_end = loop_records(1, 1, True)  # written after Lightning counted the epoch completed
    resume_after_epoch_end(at_fit_end)
    fit_loop = at_fit_end["loops"]["fit_loop"]
    assert fit_loop["epoch_progress"]["total"]["completed"] == fit_loop["epoch_progress"]["current"]["completed"] == 1
    assert set(fit_loop["epoch_loop.batch_progress"]["current"].values()) == {0}
    assert "combined_loader" not in fit_loop["state_dict"]
    for untouched in (loop_records(0, 0, False),   # mid-epoch (a step checkpoint, an interrupt)
                      loop_records(1, 0, False),   # processed, but not at the epoch's last batch
                      loop_records(0, 0, True)):   # at the last batch's end, before validation
        before = copy.deepcopy(untouched)
        resume_after_epoch_end(untouched)
        assert untouched == before
    resume_after_epoch_end({})  # weights only
    bare = loop_records(1, 0, True)  # only the two records it reads first (another Lightning's layout)
    bare["loops"]["fit_loop"] = {k: v for k, v in bare["loops"]["fit_loop"].items()
                                 if k in ("epoch_progress", "epoch_loop.batch_progress")}
    resume_after_epoch_end(bare)
    assert bare["loops"]["fit_loop"]["epoch_progress"]["total"]["completed"] == 1
    no_batches = loop_records(1, 0, True)
    del no_batches["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    before = copy.deepcopy(no_batches)
    resume_after_epoch_end(no_batches)
    assert no_batches == before


def test_the_epoch_checkpoint_keeps_model_checkpoints_state_key(tmp_path):
    """Its state in a checkpoint is found under ModelCheckpoint's key: one written by Lightning's
    own callback (before EpochCheckpoint) restores its best score and path on resume."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from callbacks.checkpoint import EpochCheckpoint

    args = dict(dirpath=tmp_path, monitor="val/acc", mode="max", save_top_k=1, save_last=True)
    assert EpochCheckpoint(**args).state_key == ModelCheckpoint(**args).state_key
    assert EpochCheckpoint(**args).state_key.startswith("ModelCheckpoint{'monitor': 'val/acc'")


def test_step_checkpoints_under_the_modules_own_step_write_without_lightnings_warning(tmp_path, recwarn):
    """Lightning warns at each step checkpoint under manual optimization (20 lines: the weights
    are those after the step, which is what it is meant to hold). Every 2 steps over 8: steps 2, 4
    and 6 write last.ckpt, none of them with that warning; not step 8, the epoch's last batch,
    whose checkpoint would resume past the epoch's validation (the epoch-end one follows it)."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from callbacks.checkpoint import StepCheckpoint
    from src.model import BaseNetwork
    from src.module import ClassifierModule
    from src.optim import SGD

    torch.manual_seed(0)
    net = BaseNetwork(input_size=4, hidden_sizes=[5], num_classes=3)
    module = ClassifierModule(net, SGD(net.parameters(), lr=0.1))
    data = TensorDataset(torch.randn(48, 4), torch.randint(0, 3, (48,)))
    io = AtomicCheckpointIO()
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, logger=False, accelerator="cpu",
                         callbacks=[StepCheckpoint(dirpath=str(tmp_path), every_n_train_steps=2)],
                         plugins=[io], enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(data, batch_size=6))
    assert module.automatic_optimization is False and trainer.global_step == 8
    assert io.writes == 3 and torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 6
    assert not [w for w in recwarn if "manual optimization" in str(w.message)]


@pytest.mark.parametrize("on_train_epoch_end", [None, False])
def test_the_epoch_checkpoint_writes_last_after_every_epoch_and_once(tmp_path, on_train_epoch_end):
    """lr=1e-30: the val accuracy never improves after epoch 0, so Lightning 2.6 alone writes best
    and last once and never again. EpochCheckpoint: last.ckpt after each of the 3 epochs, holding
    that epoch, and no second write at a step already saved (epoch 0: best + last = 2 writes).
    Saved at the train epoch's end (Lightning's choice here) or at validation's end."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from callbacks.checkpoint import EpochCheckpoint
    from src.model import BaseNetwork
    from src.module import ClassifierModule
    from src.optim import SGD

    torch.manual_seed(0)
    net = BaseNetwork(input_size=4, hidden_sizes=[5], num_classes=3)
    module = ClassifierModule(net, SGD(net.parameters(), lr=1e-30))  # a step too small to change a prediction
    data = TensorDataset(torch.randn(24, 4), torch.randint(0, 3, (24,)))
    io, epochs = AtomicCheckpointIO(), []

    class LastEpoch(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if (tmp_path / "last.ckpt").is_file():
                epochs.append(torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"])

    checkpoint = EpochCheckpoint(dirpath=tmp_path, filename="best-{epoch}", monitor="val/acc", mode="max",
                                 save_top_k=1, save_last=True, save_on_train_epoch_end=on_train_epoch_end)
    trainer = pl.Trainer(max_epochs=3, default_root_dir=tmp_path, logger=False, accelerator="cpu",
                         callbacks=[checkpoint, LastEpoch()], plugins=[io], enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module, DataLoader(data, batch_size=6), DataLoader(data, batch_size=12))
    epochs.append(torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"])
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["best-epoch=0.ckpt", "last.ckpt"]
    assert epochs == [0, 1, 2] and io.writes == 4
