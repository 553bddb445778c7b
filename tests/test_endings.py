"""Every way a run ends leaves a true results.json: signals, a full disk, a first checkpoint
that never finished, a run that cannot learn, a sweep started again in its own dir."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import pytorch_lightning as pl
import yaml

from src.cli import EXIT_USER_ERROR, run_task
from src.training import train
from tests.conftest import FAST, PYTHON, ROOT, at_once, compose, run_script, warnings_of
from tests.test_resume import METRICS, SHORT


class SignalAtStep(pl.Callback):
    """Test helper: send `signum` to this process when `at_step` optimizer steps are done, unless
    the run was resumed. `+callbacks.sig._target_=tests.test_endings.SignalAtStep ...`."""

    def __init__(self, at_step: int, signum: int):
        self.at_step, self.signum = at_step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step and trainer.ckpt_path is None:
            os.kill(os.getpid(), self.signum)


class SignalWhileWaitingForData(pl.Callback):
    """Test helper: from `at_step` on, send `signum` to this process group once the main thread
    waits for a DataLoader worker's batch (the moment a worker's death is an error there)."""

    def __init__(self, at_step: int, signum: int):
        self.at_step, self.signum, self.sent = at_step, signum, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import threading

        if trainer.global_step == self.at_step and not self.sent:
            self.sent = True
            threading.Thread(target=self._when_waiting, args=(threading.main_thread().ident,), daemon=True).start()

    def _when_waiting(self, main: int) -> None:
        import sys
        import time

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(main)
            while frame is not None and "multiprocessing" not in frame.f_code.co_filename:
                frame = frame.f_back
            if frame is not None:
                break
            time.sleep(0.0005)
        os.killpg(os.getpgrp(), self.signum)


class SignalEveryProcessAtStep(SignalAtStep):
    """Test helper: at `at_step`, send `signum` to this process, then to each of its children (the
    data workers), as a scheduler that signals every process of a job (its cgroup) does."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import time

        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)
            pids = [p for children in Path("/proc/self/task").glob("*/children") for p in children.read_text().split()]
            # from another process: a worker exits quietly on its parent's SIGTERM (torch's handler)
            subprocess.run(["kill", f"-{self.signum}", *pids], check=True)
            while any(Path(f"/proc/{p}/stat").read_text().split(") ")[1][0] != "Z" for p in pids):
                time.sleep(0.01)  # torch's error about them comes at the next bytecode after this


def stop_with_a_signal(tmp_path, signum):
    run = tmp_path / "run"
    res = run_script("train.py", *SHORT, f"hydra.run.dir={run}",
                     "+callbacks.sig._target_=tests.test_endings.SignalAtStep",
                     "+callbacks.sig.at_step=3", f"+callbacks.sig.signum={int(signum)}", timeout=300)
    assert res.returncode == 128 + signum, res.stderr[-2000:]
    r = json.loads((run / "results.json").read_text())
    assert r["status"] == "interrupted" and r["signal"] == signal.Signals(signum).name
    assert r["global_step"] == 4  # sent before step 4: stopped at the end of that batch
    assert r["resume"] == f"python train.py ckpt_path={run}"
    assert r["test_acc"] is None and r["epochs"] == 0
    import torch

    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert line == [f"error: interrupted by {signal.Signals(signum).name}; resume with: "
                    f"python train.py ckpt_path={run}"]
    return run


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_last_ckpt_and_says_interrupted(tmp_path, signum, data_dir):
    stop_with_a_signal(tmp_path, signum)


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_resumes_to_the_uninterrupted_result(tmp_path, data_dir):
    run = stop_with_a_signal(tmp_path, signal.SIGTERM)
    resumed = run_script("train.py", f"ckpt_path={run}", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = tmp_path / "straight"
    assert run_script("train.py", *SHORT, f"hydra.run.dir={straight}", timeout=300).returncode == 0
    a = json.loads((run / "results.json").read_text())
    b = json.loads((straight / "results.json").read_text())
    assert {k: a[k] for k in METRICS} == {k: b[k] for k in METRICS}


def _stop_a_run_with_a_data_worker(tmp_path, helper: str, at_step: int):
    run = tmp_path / "run"
    command = [PYTHON, str(ROOT / "train.py"), *SHORT, "data.pipeline=torchvision", "data.num_workers=1",
               "data.train_subset=5000", f"hydra.run.dir={run}", f"+callbacks.sig._target_=tests.test_endings.{helper}",
               f"+callbacks.sig.at_step={at_step}", f"+callbacks.sig.signum={int(signal.SIGTERM)}"]
    # its own session: the signal to its group must not reach pytest
    res = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, start_new_session=True,
                         env={**os.environ, "PROJECT_ROOT": str(ROOT)})
    assert res.returncode == 128 + signal.SIGTERM, res.stderr[-2000:]
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")] == [
        f"error: interrupted by SIGTERM; resume with: python train.py ckpt_path={run}"]
    r = json.loads((run / "results.json").read_text())
    assert (r["status"], r["signal"], r["resume"]) == ("interrupted", "SIGTERM", f"python train.py ckpt_path={run}")
    assert len(r["train_losses"]) == r["global_step"], (len(r["train_losses"]), r["global_step"])
    import torch

    return r, torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


def test_a_sigterm_to_the_process_group_stops_a_run_with_data_workers_at_a_batch_boundary(tmp_path, data_dir):
    """`kill -TERM -<pgid>` (and a terminal's Ctrl-C) reached the torchvision pipeline's DataLoader
    workers too, and torch's error about the dead worker came before the batch boundary where
    the run stops: `error: EOFError`, results.json `failed` without scores, no mid-epoch
    checkpoint. Each worker has a process group of its own (data._WorkerInit)."""
    r, checkpoint_step = _stop_a_run_with_a_data_worker(tmp_path, "SignalWhileWaitingForData", at_step=3)
    assert 4 <= r["global_step"] < 2 * 19
    assert checkpoint_step == r["global_step"]  # stopped at a batch boundary, with a checkpoint there


def test_a_sigterm_to_every_process_of_the_job_is_still_an_interrupted_run(tmp_path, data_dir):
    """A scheduler that signals each process of a job (its cgroup) reaches the workers anyway: the
    worker's death is then the stop, not a crash (training._workers_stopped_with_the_run), and
    the run resumes from the last checkpoint written (checkpoint.every_n_train_steps=2)."""
    r, checkpoint_step = _stop_a_run_with_a_data_worker(tmp_path, "SignalEveryProcessAtStep", at_step=5)
    # Which comes first decides the checkpoint: torch's error about the dead worker (the last one
    # written, at step 4), or, on a loaded machine, the batch boundary (one there: seen at step 6)
    assert r["global_step"] in (5, 6) and checkpoint_step in (4, r["global_step"]), (
        r["global_step"], checkpoint_step, r.get("warnings"))


def test_a_full_disk_is_one_line_and_a_failed_results_json(tmp_path, monkeypatch, capsys, data_dir):
    import src.checkpointing as checkpointing

    def full(obj, path, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(checkpointing.torch, "save", full)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_task(train, compose(FAST, out))
    assert exit_info.value.code != 0
    line = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(line) == 1 and "no space left on device" in line[0] and str(out / "checkpoints") in line[0]
    r = json.loads((out / "results.json").read_text())
    assert r["status"] == "failed" and "no space left on device" in r["error"]


@pytest.fixture(scope="module")
def processes(tmp_path_factory, data_dir):
    """This file's train.py processes that no signal reaches, two at a time: {"first_write": (run
    dir, the resume of a run killed in its first checkpoint write), "sweep": (a finished sweep
    `-m <FAST> optim=sgd,adam`, its process)}. A test copies the sweep to change it."""
    run = tmp_path_factory.mktemp("first_write") / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["optim=sgd", "trainer.max_epochs=1"]))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / ".last.ckpt.x1y2.tmp").write_bytes(b"")  # a stale temp file of ours, no last.ckpt
    sweep = tmp_path_factory.mktemp("finished_sweep") / "sweep"
    resumed, swept = at_once(
        lambda: run_script("train.py", f"ckpt_path={run}", timeout=60),
        lambda: run_script("train.py", "-m", *FAST, "optim=sgd,adam", f"hydra.sweep.dir={sweep}", timeout=300))
    return {"first_write": (run, resumed), "sweep": (sweep, swept)}


def test_a_run_killed_in_its_first_checkpoint_write(processes):
    """A stale temp file of ours and no last.ckpt: resuming says to start again, with the
    run's overrides; starting again removes the temp file."""
    run, res = processes["first_write"]
    stale = run / "checkpoints" / ".last.ckpt.x1y2.tmp"
    assert res.returncode == EXIT_USER_ERROR
    assert res.stderr.strip() == (f"error: ckpt_path={run}: this run has no checkpoint yet; start it "
                                  "again with the same overrides: python train.py optim=sgd trainer.max_epochs=1")
    from src.checkpointing import remove_stale_temp_files

    assert remove_stale_temp_files(run / "checkpoints") == [stale] and not stale.exists()


def test_a_run_at_chance_level_is_ok_with_a_warning(tmp_path, data_dir):
    out = tmp_path / "run"
    train(compose([*FAST, "optim=sgd", "optim.lr=1e-9", "init=const"], out))
    r = json.loads((out / "results.json").read_text())
    assert r["status"] == "ok"
    assert len(warnings_of(r)) == 1 and warnings_of(r)[0].startswith("did not learn: final val acc")
    out2 = tmp_path / "learns"
    train(compose(FAST, out2))
    assert warnings_of(json.loads((out2 / "results.json").read_text())) == []


@pytest.fixture(scope="module")
def finished_sweep(processes):
    sweep, first = processes["sweep"]
    assert first.returncode == 0, first.stderr[-2000:]
    return sweep


def test_a_sweep_started_again_continues_where_it_stopped(tmp_path, finished_sweep):
    import shutil

    sweep = shutil.copytree(finished_sweep, tmp_path / "sweep")
    args = ["-m", *FAST, "optim=sgd,adam", f"hydra.sweep.dir={sweep}"]
    jobs = sorted(p for p in sweep.iterdir() if (p / "results.json").exists())
    assert len(jobs) == 2
    before = {j.name: (j / "results.json").read_bytes() for j in jobs}
    old_events = set((jobs[1] / "tensorboard").glob("events.out.tfevents.*"))
    assert old_events
    # job 1 "crashed" before its first checkpoint: results.json says failed, no checkpoints;
    # job 0 stays ok and must be skipped
    (jobs[1] / "results.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    shutil.rmtree(jobs[1] / "checkpoints")
    again = run_script("train.py", *args, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"skipping {jobs[0].name}: already ok" in again.stdout
    assert (jobs[0] / "results.json").read_bytes() == before[jobs[0].name]  # untouched
    redone = json.loads((jobs[1] / "results.json").read_text())
    assert redone["status"] == "ok"
    assert {k: redone[k] for k in METRICS} == {k: json.loads(before[jobs[1].name])[k] for k in METRICS}
    new_events = set((jobs[1] / "tensorboard").glob("events.out.tfevents.*"))
    assert new_events and not new_events & old_events  # no events of the dead try stay beside the new
    summary = (sweep / "summary.csv").read_text()
    assert summary.count(",ok,") + summary.count("ok") >= 2


@pytest.mark.slow
def test_rerun_all_trains_every_job_again_in_place_of_the_old(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, "optim=sgd", f"hydra.sweep.dir={sweep}"]
    assert run_script("train.py", *args, timeout=300).returncode == 0
    job = next(p for p in sweep.iterdir() if (p / "results.json").exists())
    old_events = set((job / "tensorboard").rglob("events.out.tfevents.*"))
    again = run_script("train.py", *args, "+sweep.rerun=all", timeout=300)
    assert again.returncode == 0 and "skipping" not in again.stdout
    assert f"rerunning {job.name} (+sweep.rerun=all): its earlier checkpoints and tensorboard are replaced" in again.stdout
    assert json.loads((job / "results.json").read_text())["status"] == "ok"
    new_events = set((job / "tensorboard").rglob("events.out.tfevents.*"))
    assert new_events and not new_events & old_events
    assert len(list((job / "checkpoints").glob("best-*.ckpt"))) == 1


class SigtermInValidation(pl.Callback):
    """Test helper: SIGTERM while the first epoch validates (Lightning's own stop path)."""

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if trainer.current_epoch == 0 and trainer.ckpt_path is None and not trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_validation_is_interrupted_too(tmp_path, data_dir):
    run = tmp_path / "run"
    res = run_script("train.py", *SHORT, f"hydra.run.dir={run}",
                     "+callbacks.sig._target_=tests.test_endings.SigtermInValidation", timeout=300)
    assert res.returncode == 128 + signal.SIGTERM, res.stderr[-2000:]
    r = json.loads((run / "results.json").read_text())
    assert r["status"] == "interrupted" and r["signal"] == "SIGTERM"
    resumed = run_script("train.py", f"ckpt_path={run}", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run / "results.json").read_text())["status"] == "ok"


def test_a_sweep_jobs_resume_command_runs_as_printed(tmp_path, finished_sweep):
    """A sweep job's dir is named by its overrides (`0_callbacks=none,optim=sgd,…`): the command
    results.json and the stop line give to resume it as a single run was a Hydra parse error
    (`ckpt_path=` unquoted). Run through the shell as printed, it resumes that job in its dir."""
    import shlex
    import shutil

    from src.cli import resume_command
    from tests.conftest import PYTHON, ROOT

    sweep = shutil.copytree(finished_sweep, tmp_path / "sweep")
    (job,) = [p for p in sweep.iterdir() if (p / "results.json").is_file() and p.name.startswith("0_")]
    assert "=" in job.name and "," in job.name
    command = shlex.split(resume_command(job))
    assert command[:2] == ["python", "train.py"]
    res = subprocess.run([PYTHON, str(ROOT / "train.py"), *command[2:], "trainer.max_epochs=2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PROJECT_ROOT": str(ROOT)})
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads((job / "results.json").read_text())
    assert (r["status"], r["epochs"], r["resumed_from"]) == ("ok", 2, str(job / "checkpoints" / "last.ckpt"))


class SignalIn(pl.Callback):
    """Test helper: send `signum` (`times` times) in the last epoch's validation, in the test pass,
    or at step `at_step` of a fresh run. `+callbacks.sig._target_=tests.test_endings.SignalIn ...`."""

    def __init__(self, where: str, signum: int, times: int = 1, at_step: int = 1):
        self.where, self.signum, self.times, self.at_step = where, signum, times, at_step

    def _send(self):
        for _ in range(self.times):
            os.kill(os.getpid(), self.signum)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        last = trainer.current_epoch == trainer.max_epochs - 1
        if self.where == "last_validation" and last and not trainer.sanity_checking and trainer.ckpt_path is None:
            self.where = "sent"
            self._send()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.where == "test" and trainer.ckpt_path and "best" in str(trainer.ckpt_path):
            self.where = "sent"
            self._send()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.where == "step" and trainer.global_step == self.at_step:
            self.where = "sent"
            self._send()


def resume_in_process(run):
    """What `python train.py ckpt_path=<run>` runs, in this process: the run's own overrides (the
    CLI reads them from .hydra/overrides.yaml) and its last.ckpt, in its run dir."""
    saved = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    train(compose([*saved, f"ckpt_path={run}/checkpoints/last.ckpt"], run))


def _signal_run(tmp_path, where, signum, times=1):
    run = tmp_path / "run"
    res = run_script("train.py", *SHORT, f"hydra.run.dir={run}", "+callbacks.sig._target_=tests.test_endings.SignalIn",
                     f"+callbacks.sig.where={where}", f"+callbacks.sig.signum={int(signum)}",
                     f"+callbacks.sig.times={times}", timeout=300)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    return run, res, json.loads((run / "results.json").read_text()), errors


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_in_the_last_validation_stops_the_run(tmp_path, data_dir, signum):
    """A Ctrl-C after the fit's last training batch was swallowed: the run validated, tested and
    ended `ok` with exit 0 (in a sweep every later job ran too). Now it stops there, untested, and
    the resume finishes it."""
    run, res, r, errors = _signal_run(tmp_path, "last_validation", signum)
    assert res.returncode == 128 + signum, res.stderr[-2000:]
    assert r["status"] == "interrupted" and r["test_acc"] is None and r["signal"] == signal.Signals(signum).name
    assert len(r["val_scores"]) == 1  # the first epoch's; the last one's validation was stopped
    assert errors == [f"error: interrupted by {signal.Signals(signum).name}; resume with: python train.py ckpt_path={run}"]
    resume_in_process(run)  # test_sigterm_during_validation_is_interrupted_too resumes through train.py
    done = json.loads((run / "results.json").read_text())
    assert done["status"] == "ok" and done["test_acc"] is not None and done["val_scores"][0] == r["val_scores"][0]
    assert len(done["val_scores"]) == 2


def test_a_signal_in_the_test_pass_keeps_the_fits_scores(tmp_path, data_dir):
    """results.json was a stub ({status, signal, error, resume}): the finished fit's val_scores
    were gone until the resume."""
    run, res, r, errors = _signal_run(tmp_path, "test", signal.SIGTERM)
    assert res.returncode == 128 + signal.SIGTERM, res.stderr[-2000:]
    assert r["status"] == "interrupted" and r["test_acc"] is None and len(r["val_scores"]) == 2
    assert r["best_val_acc"] == max(r["val_scores"]) and r["resume"] == f"python train.py ckpt_path={run}"


def test_a_second_ctrl_c_before_the_first_checkpoint_says_start_again(tmp_path, data_dir):
    """It offered `resume with: ... ckpt_path=<run>`, which was then refused: no checkpoint."""
    run, res, r, errors = _signal_run(tmp_path, "step", signal.SIGINT, times=2)
    assert res.returncode == 128 + signal.SIGINT, res.stderr[-2000:]
    assert not (run / "checkpoints" / "last.ckpt").exists()
    assert r["status"] == "interrupted" and "resume" not in r and r["again"].startswith("python train.py ")
    assert r["error"].endswith("before the first checkpoint")
    assert len(errors) == 1 and "before the first checkpoint; start it again: python train.py " in errors[0]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_between_a_sweeps_jobs_says_how_to_continue(tmp_path, data_dir, signum):
    """Between two jobs no job's handler is in charge: SIGTERM killed the sweep silently, Ctrl-C
    printed a 60-line KeyboardInterrupt traceback from Hydra's override parser."""
    from tests.conftest import PYTHON, ROOT

    sweep = tmp_path / "sweep"
    args = ["-m", "optim=sgd,adam", *FAST, "callbacks=essential", "logger=none", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen([PYTHON, str(ROOT / "train.py"), *args], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PROJECT_ROOT": str(ROOT)})
    for line in proc.stdout:
        if line.startswith("results: "):  # the first job has written its results: signal from here on
            proc.send_signal(signum)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-2000:]
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    # the signal lands in the first job's last lines or in Hydra's gap before the second: either
    # way the finished job stands, and the line says how to go on
    name = signal.Signals(signum).name
    assert len(errors) == 1 and any(errors[0].startswith(f"error: interrupted by {name}{where}; continue the sweep: "
                                                         "python train.py -m optim=sgd,adam ")
                                    for where in (" between the sweep's jobs",
                                                  " after the run had finished (its results.json is complete)"))
    assert errors[0].endswith(f"hydra.sweep.dir={sweep}")
    first = json.loads(next(sweep.glob("0_*/results.json")).read_text())
    assert first["status"] == "ok" and not list(sweep.glob("1_*/results.json"))


class StopInStep(pl.Callback):
    """Test helper: a stop at once (a second Ctrl-C) between step `at_step`'s loss and its
    optimizer step, as a data worker's death can come too."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == self.at_step:
            from src.errors import Interrupted

            raise Interrupted(signal.SIGINT, at_once=True)


def test_a_stop_inside_a_step_reports_the_steps_taken_and_their_losses(tmp_path, data_dir):
    """results.json had 6 train_losses for 5 steps: the loss of a step whose optimizer step never
    came (CI caught it once, when a data worker's death landed there)."""
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        run_task(train, compose([*FAST, "+callbacks.stop._target_=tests.test_endings.StopInStep",
                                 "+callbacks.stop.at_step=3"], out))
    assert info.value.code == 128 + signal.SIGINT
    r = json.loads((out / "results.json").read_text())
    assert r["status"] == "interrupted" and r["global_step"] == 3 and len(r["train_losses"]) == 3
