"""Exact resume: a run SIGKILLed mid-epoch and resumed ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from tests.conftest import at_once, run_script


class KillAtStep(pl.Callback):
    """Test helper: SIGKILL this process when `at_step` optimizer steps are done, unless the run
    was itself resumed (so the resumed run goes to the end). Used as
    `+callbacks.kill._target_=tests.test_resume.KillAtStep +callbacks.kill.at_step=N`."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step and trainer.ckpt_path is None:
            os.kill(os.getpid(), signal.SIGKILL)


# 2 epochs of 5 steps (1280 images, batch 256); last.ckpt every 2 steps and after each validation.
SHORT = ["trainer.max_epochs=2", "data.train_subset=1280", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2", "trainer.accelerator=cpu", "callbacks=none",
         "print_config=false", "checkpoint.every_n_train_steps=2"]
METRICS = ("val_scores", "train_scores", "train_losses", "test_acc", "best_val_acc", "global_step",
           "epochs", "status")


def _popen_train(*args: str):
    import subprocess

    from tests.conftest import PYTHON, ROOT

    return subprocess.Popen([PYTHON, str(ROOT / "train.py"), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PROJECT_ROOT": str(ROOT)})


def _results(run) -> dict:
    return json.loads((run / "results.json").read_text())


def _last_ckpt(run) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


def _kill_and_resume(tmp_path, at_step: int, *resume_args: str):
    """Run until SIGKILLed before step `at_step`, then resume with only `ckpt_path=` (plus
    `resume_args`): the run's overrides and its run dir come from the checkpoint's run."""
    run = tmp_path / f"killed_at_{at_step}"
    res = run_script("train.py", *SHORT, f"hydra.run.dir={run}",
                     "+callbacks.kill._target_=tests.test_resume.KillAtStep",
                     f"+callbacks.kill.at_step={at_step}", timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert not (run / "results.json").exists()
    saved = _last_ckpt(run)
    resumed = run_script("train.py", f"ckpt_path={run}/checkpoints/last.ckpt", *resume_args, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return run, saved, resumed


class Background:
    """The uninterrupted run, started at once and waited for when needed: on 2 cores it
    overlaps with the killed run instead of adding its time to the test."""

    def __init__(self, run):
        self.run, self.proc = run, _popen_train(*SHORT, f"hydra.run.dir={run}")

    def path(self):
        if self.proc.returncode is None:
            _, err = self.proc.communicate(timeout=300)
            assert self.proc.returncode == 0, err[-2000:]
        return self.run


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    bg = Background(tmp_path_factory.mktemp("resume") / "uninterrupted")
    yield bg
    if bg.proc.poll() is None:
        bg.proc.kill()


def _assert_same_run(a, b) -> None:
    ra, rb = _results(a), _results(b)
    for key in METRICS:
        assert ra[key] == rb[key], key  # exact equality: bit-identical floats
    sa, sb = _last_ckpt(a), _last_ckpt(b)
    assert sa["state_dict"].keys() == sb["state_dict"].keys()
    for name, tensor in sa["state_dict"].items():
        assert torch.equal(tensor, sb["state_dict"][name]), name
    # the hand-written optimizer's state (Adam moments, step counts)
    oa, ob = sa["optimizer_states"][0]["state"], sb["optimizer_states"][0]["state"]
    assert oa.keys() == ob.keys()
    for i in oa:
        for k, v in oa[i].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(ob[i][k])), (i, k)


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, uninterrupted):
    # killed before step 9: last.ckpt is from step 8, the 3rd of epoch 1's 5 batches
    run, saved, resumed = _kill_and_resume(tmp_path, 9)
    assert saved["global_step"] == 8 and saved["epoch"] == 1
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "served": 3}]
    assert f"resuming {run}/checkpoints/last.ckpt in {run}" in resumed.stderr
    _assert_same_run(uninterrupted.path(), run)
    assert _results(run)["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
    # the same run dir and TensorBoard run: one more event file, no new run dir
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) >= 2
    assert list(run.parent.iterdir()) == [run]


def test_a_resume_refused_for_bad_input_leaves_the_run_as_it_was(tmp_path, uninterrupted):
    """`ckpt_path=<finished run> optim.lr=abc`: one error line, and the run's results.json and
    .hydra/ untouched. Before, results.json became `failed` (test_acc gone) and overrides.yaml kept
    `optim.lr=abc`, so every later plain resume failed on it again; a damaged last.ckpt did the same."""
    import shutil

    run = tmp_path / "finished"
    shutil.copytree(uninterrupted.path(), run)
    records = ["results.json", ".hydra/overrides.yaml", ".hydra/config.yaml", ".hydra/hydra.yaml"]
    before = {name: (run / name).read_bytes() for name in records}
    assert json.loads(before["results.json"])["status"] == "ok"

    res = run_script("train.py", f"ckpt_path={run}", "optim.lr=abc", timeout=300)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and "optim.lr" in errors[0], res.stderr[-2000:]
    assert {name: (run / name).read_bytes() for name in records} == before

    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # damaged
    res = run_script("train.py", f"ckpt_path={run}", timeout=300)
    assert res.returncode == 2 and "is not a checkpoint" in res.stderr, res.stderr[-2000:]
    assert "optim.lr=abc" not in res.stderr  # the bad override was not kept for later resumes
    assert {name: (run / name).read_bytes() for name in records} == before


@pytest.mark.slow
def test_resume_from_the_end_of_epoch_checkpoint(tmp_path, uninterrupted):
    # killed before step 6 (at the start of epoch 1): last.ckpt was written after epoch 0's
    # validation, at step 5
    run, saved, _ = _kill_and_resume(tmp_path, 5)
    assert saved["global_step"] == 5
    _assert_same_run(uninterrupted.path(), run)


@pytest.mark.slow
def test_optimizer_overrides_on_resume_are_applied(tmp_path, uninterrupted):
    run, saved, resumed = _kill_and_resume(tmp_path, 9, "optim.lr=0.0005")
    assert saved["optimizer_states"][0]["param_groups"][0]["lr"] == 0.001
    assert "resume: optim.lr=0.0005 applied (the checkpoint had 0.001)" in resumed.stdout + resumed.stderr
    assert _last_ckpt(run)["optimizer_states"][0]["param_groups"][0]["lr"] == 0.0005
    assert _results(run)["config"]["optim"]["lr"] == 0.0005
    # results.json's config says 0.0005: its warnings keep what the first 8 steps ran with
    assert _results(run)["warnings"][0] == ("resumed at step 8 with a changed config: optim.lr 0.001 → 0.0005; "
                                            "results.json's config holds the new values")
    assert _results(run)["train_losses"][:8] == _results(uninterrupted.path())["train_losses"][:8]
    assert _results(run)["train_losses"][8:] != _results(uninterrupted.path())["train_losses"][8:]


def test_a_checkpoint_with_an_inert_step_checkpoint_resumes_without_lightnings_warning(tmp_path, data_dir):
    """Before train() left an inert StepCheckpoint out, checkpoints held an entry for it; resumed
    now, Lightning would warn that the callback is missing. Nothing was in it to restore, so
    that warning is dropped; for a step checkpoint that did save, it still shows."""
    from callbacks.checkpoint import StepCheckpoint
    from src.training import train
    from tests.conftest import compose

    # The first epoch in-process (the checkpoint is what matters); the resumes, whose warning
    # filter is the CLI's (src/cli.py), through train.py, both at once.
    one_epoch = [o for o in SHORT if not o.startswith(("trainer.max_epochs", "checkpoint."))]
    runs = {every: tmp_path / f"every{every}" for every in (0, 7)}
    for every, run in runs.items():
        train(compose([*one_epoch, "trainer.max_epochs=1"], run))
        ckpt = _last_ckpt(run)
        key = StepCheckpoint(dirpath=str(run), every_n_train_steps=every).state_key
        ckpt["callbacks"][key] = {"best_model_path": ""}  # as an older or other-config run left it
        torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    resumed = at_once(*(lambda run=run: run_script("train.py", *one_epoch, f"ckpt_path={run}", "trainer.max_epochs=2")
                        for run in runs.values()))
    for (every, run), res in zip(runs.items(), resumed, strict=True):
        assert res.returncode == 0, res.stderr
        assert ("Please add the following callbacks" in res.stdout + res.stderr) is (every == 7)
        assert _results(run)["status"] == "ok" and _results(run)["epochs"] == 2


@pytest.mark.parametrize("resumed_with, pipeline", [([], "tensor"), (["+trainer.max_steps=100"], "tensor"),
                                                     ([], "torchvision")])
def test_a_run_max_steps_stopped_mid_epoch_resumes_the_rest_of_that_epoch(tmp_path, data_dir, resumed_with,
                                                                          pipeline):
    """max_steps=7 stops 2 batches into epoch 1 (5 an epoch). Lightning still ran that epoch's end
    and counted it processed; resumed without the limit (or a larger one) it took the epoch as
    done: it trained nothing (max_epochs=2, `ok`, 1 val score) or would start the next epoch.
    resume_a_cut_epoch (src/checkpointing.py) resumes the rest of epoch 1: the uninterrupted run.
    The torchvision pipeline's DataLoader had no state: resumed, it served epoch 1's first
    batches again (data.ResumableDataLoader)."""
    from src.training import train
    from tests.conftest import compose

    base = ["data.train_subset=1280", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
            "trainer.accelerator=cpu", "callbacks=none", "print_config=false", "trainer.max_epochs=2",
            f"data.pipeline={pipeline}"]
    whole, first = tmp_path / "whole", tmp_path / "first"
    train(compose(base, whole))
    train(compose([*base, "+trainer.max_steps=7"], first))
    saved = _last_ckpt(first)["loops"]["fit_loop"]
    assert saved["epoch_progress"]["total"] == {"ready": 2, "started": 2, "processed": 2, "completed": 1}
    assert saved["epoch_loop.batch_progress"]["current"]["completed"] == 2 and _results(first)["global_step"] == 7
    assert saved["state_dict"]["combined_loader"] == [{"epoch": 1, "served": 2}]
    train(compose([*base, *resumed_with, f"ckpt_path={first}/checkpoints/last.ckpt"], first))
    a, b = _results(whole), _results(first)
    assert a["global_step"] == 10 and len(a["val_scores"]) == 2
    for key in METRICS:
        assert a[key] == b[key], key
    assert len(b["timing"]["epoch_seconds"]) == 1  # the resumed epoch, timed in this process


def test_an_epoch_max_time_cut_and_validated_is_not_validated_again_on_resume(tmp_path, data_dir):
    """max_time stops by should_stop, and Lightning validates the cut epoch: its val score is
    epoch 0's. Reopening the epoch (as after max_steps) validated it a second time: val_scores
    [0.50, 0.87] for one epoch, best_val_epoch 1 of max_epochs 1. It stays cut, and results.json
    says so."""
    from src.training import train
    from tests.conftest import compose

    base = ["data.train_subset=1280", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
            "trainer.accelerator=cpu", "callbacks=none", "print_config=false", "trainer.max_epochs=2",
            "+callbacks.stop._target_=tests.test_resume.StopAfter", "+callbacks.stop.batches=2"]
    first = tmp_path / "first"
    train(compose(base, first))  # should_stop after 2 batches, as max_time sets it
    cut = _results(first)
    assert len(cut["val_scores"]) == 1 and cut["global_step"] == 2
    train(compose([*base[:-2], f"ckpt_path={first}/checkpoints/last.ckpt"], first))
    r = _results(first)
    assert r["status"] == "ok" and r["global_step"] == 7 and r["epochs"] == 2
    assert len(r["val_scores"]) == 2 and r["val_scores"][0] == cut["val_scores"][0]
    assert ("epoch 0 was cut after 2 batches (trainer.max_time, or a callback) and validated as it stood; the resumed run goes "
            "on from the next epoch, and the cut epoch's other batches are not trained") in r["warnings"]


class StopAfter(pl.Callback):
    """Sets trainer.should_stop after `batches` training batches, as trainer.max_time does."""

    def __init__(self, batches: int):
        self.batches = batches

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.batches:
            trainer.should_stop = True


@pytest.mark.parametrize("max_steps, validate", [(8, True), (100, True), (8, False)])
def test_a_run_with_max_steps_resumed_after_an_epoch_ends_where_an_uninterrupted_one_does(tmp_path, data_dir,
                                                                                           max_steps, validate):
    """With trainer.max_steps set Lightning resumes "iteration-based": from a checkpoint written after
    an epoch's validation it ran that finished epoch again, counted it twice and stopped an epoch
    short, and the tensor pipeline's saved position (the finished epoch's 5 batches served) left
    the next epoch no batch: the resumed run trained nothing and called itself stopped early by
    a callback. resume_after_epoch_end (src/checkpointing.py) makes such a checkpoint the start of the
    next epoch: 2 epochs of 5 steps, max_steps 8 (mid-epoch 1) or 100 (not reached). Without
    validation too, last.ckpt is written at the epoch's end (callbacks/checkpoint.py's
    EpochCheckpoint; Lightning 2.6 alone left the one written at the end of the fit, the epoch
    already counted completed, from which the resumed run trained no batch)."""
    from src.training import train
    from tests.conftest import compose

    base = ["data.train_subset=1280", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
            "trainer.accelerator=cpu", "callbacks=none", "print_config=false", f"+trainer.max_steps={max_steps}",
            *([] if validate else ["trainer.limit_val_batches=0"])]
    whole, first, resumed = tmp_path / "whole", tmp_path / "first", tmp_path / "resumed"
    train(compose([*base, "trainer.max_epochs=2"], whole))
    train(compose([*base, "trainer.max_epochs=1"], first))  # 5 steps
    saved = _last_ckpt(first)["loops"]["fit_loop"]
    assert saved["state_dict"]["combined_loader"] == [{"epoch": 0, "served": 5}]
    # at epoch 0's end (after its validation, if any), the epoch not yet counted completed
    assert saved["epoch_progress"]["total"] == {"ready": 1, "started": 1, "processed": 1, "completed": 0}
    train(compose([*base, "trainer.max_epochs=2", f"ckpt_path={first}/checkpoints/last.ckpt"], resumed))
    a, b = _results(whole), _results(resumed)
    assert a["global_step"] == min(max_steps, 10)
    for key in METRICS:
        assert a[key] == b[key], key
    assert not any("stopped early" in w and "callback" in w for w in b["warnings"])


@pytest.mark.parametrize("how", ["moved", "new_run_dir"])
def test_a_resume_elsewhere_keeps_the_best_checkpoint_and_its_score(tmp_path, data_dir, how):
    """Lightning forgets the best score when the checkpoint dir changed: a run dir moved, or a
    resume into another hydra.run.dir. The resumed epoch, at lr=1 (val acc ~10 %), became the
    best, and test_acc was its 10 % beside a best val acc of 78 %; with nothing more trained, the
    test read a best checkpoint of the old dir, or failed where it was gone
    (callbacks/checkpoint.EpochCheckpoint.load_state_dict)."""
    import shutil

    from src.training import train
    from tests.conftest import compose

    base = ["data.train_subset=1280", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
            "trainer.accelerator=cpu", "callbacks=none", "print_config=false", "optim=sgd", "trainer.max_epochs=1"]
    first = tmp_path / "first"
    train(compose(base, first))
    before = _results(first)
    if how == "moved":
        resumed = tmp_path / "moved"
        shutil.move(first, resumed)
        ckpt = resumed
    else:
        resumed, ckpt = tmp_path / "new", first / "checkpoints" / "last.ckpt"
        kept = sorted(p.name for p in (first / "checkpoints").iterdir())
    train(compose([*base[:-1], "trainer.max_epochs=2", "optim.lr=1", f"ckpt_path={ckpt}"], resumed))
    r = _results(resumed)
    assert r["status"] == "ok" and r["val_scores"][0] == before["val_scores"][0] and r["val_scores"][1] < 0.2
    assert r["best_val_epoch"] == 0 and r["test_acc"] == before["test_acc"]
    best = Path(r["best_checkpoint"])
    assert best.parent == resumed / "checkpoints" and best.name.startswith("best-epoch=00") and best.is_file()
    if how == "new_run_dir":  # the other run's files are as they were
        assert sorted(p.name for p in (first / "checkpoints").iterdir()) == kept
