"""The small modules every run goes through, in-process: atomic writes (src/utils.py), the config
resolvers (src/resolvers.py), the plain epoch line (callbacks/progress.py) and the graceful stop on
SIGTERM / Ctrl-C (callbacks/interrupt.py, with real signals sent to this process during a tiny
fit). test_endings.py checks the same endings through train.py subprocesses."""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.utilities.exceptions import SIGTERMException

import src.utils as utils
from callbacks.interrupt import GracefulInterrupt
from callbacks.progress import EpochLinePrinter, progress_display
from src.errors import Interrupted
from src.resolvers import TUTORIAL_LR, cores_at_least, lr_around
from src.utils import (
    _json_safe,
    atomic_savefig,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json_object,
    read_yaml,
    read_yaml_mapping,
)
from tests.test_weight_path import Line  # a 4 -> 3 linear model

# ---------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_writes_replace_whole_files_with_an_ordinary_mode(tmp_path):
    target = tmp_path / "new" / "dir" / "f.bin"  # the directories are made
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(str(target), b"two")
    assert target.read_bytes() == b"two" and sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]
    mask = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "t.txt", "héllo")
        assert utils.umask_mode() == 0o640
    finally:
        os.umask(mask)
    assert (tmp_path / "t.txt").read_text() == "héllo"
    assert stat.S_IMODE((tmp_path / "t.txt").stat().st_mode) == 0o640  # as open() makes it, not mkstemp's 0600
    mask = os.umask(0o022)
    try:
        assert utils.umask_mode() == 0o644 and os.umask(0o022) == 0o022  # and the mask is left as it was
    finally:
        os.umask(mask)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_text(target, "old")
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: renamed.append(Path(src)) or real_replace(src, dst))
    atomic_write_text(target, "mid")
    # a temp name of our own beside the target (a kill leaves it where remove_stale_temp_files looks)
    assert len(renamed) == 1 and renamed[0].parent == tmp_path
    assert renamed[0].name.startswith(".results.json.") and renamed[0].name.endswith(".tmp")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and len(synced) == 1  # on disk before the rename

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "newer")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_json_is_strict_nan_and_inf_become_null(tmp_path):
    data = {"a": math.nan, "b": [1.5, math.inf, (-math.inf, 2)], 3: {"c": "x", "d": None}, "e": True}
    assert _json_safe(data) == {"a": None, "b": [1.5, None, [None, 2]], "3": {"c": "x", "d": None}, "e": True}
    atomic_write_json(tmp_path / "r.json", data)
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text) == {"a": None, "b": [1.5, None, [None, 2]], "3": {"c": "x", "d": None}, "e": True}
    assert text.endswith("}\n") and '\n  "a": null' in text  # indented by 2, one newline at the end
    atomic_write_json(tmp_path / "c.json", [1, 2], indent=None)
    assert (tmp_path / "c.json").read_text() == "[1, 2]\n"


def test_a_json_object_is_read_as_a_dict_and_anything_else_as_empty(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"status": "ok"})
    (tmp_path / "broken.json").write_text('{"status": ')
    (tmp_path / "list.json").write_text('["ok"]')
    (tmp_path / "dir.json").mkdir()
    assert read_json_object(tmp_path / "r.json") == {"status": "ok"}
    for name in ("broken.json", "list.json", "dir.json", "missing.json"):
        assert read_json_object(str(tmp_path / name)) == {}


def test_a_yaml_file_is_read_as_its_value_and_a_broken_one_as_nothing(tmp_path):
    (tmp_path / "map.yaml").write_text("hydra:\n  run: {dir: x}\n")
    (tmp_path / "list.yaml").write_text("- optim=sgd\n")
    (tmp_path / "broken.yaml").write_text("a: [1,\n")
    (tmp_path / "dir.yaml").mkdir()
    assert read_yaml(tmp_path / "map.yaml") == {"hydra": {"run": {"dir": "x"}}}
    assert read_yaml(str(tmp_path / "list.yaml")) == ["optim=sgd"]
    assert read_yaml_mapping(tmp_path / "map.yaml") == {"hydra": {"run": {"dir": "x"}}}
    for name in ("broken.yaml", "dir.yaml", "missing.yaml"):
        assert read_yaml(tmp_path / name) is None and read_yaml_mapping(tmp_path / name) == {}
    assert read_yaml_mapping(tmp_path / "list.yaml") == {}


def test_figures_are_written_in_the_format_their_name_says(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    FigureCanvasAgg(fig)
    atomic_savefig(fig, tmp_path / "a.png", dpi=20)
    atomic_savefig(fig, tmp_path / "a.svg")
    atomic_savefig(fig, tmp_path / "plain")  # no suffix: PNG
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "plain").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "a.svg").read_bytes()[:500]
    from PIL import Image

    assert Image.open(tmp_path / "a.png").size == (20, 20)  # keyword arguments reach savefig


# ---------------------------------------------------------------------------------------------
# resolvers


def test_lr_around_is_the_tutorials_rate_times_ten_to_the_decade():
    assert lr_around("sgd", 0) == 0.1 and lr_around("adam", 0) == 1e-3
    assert lr_around("sgd_mom", -1) == 0.01 and lr_around("adam", 1) == 0.01
    assert lr_around("torch_adam", 0.5) == 0.003162  # 4 significant digits
    assert lr_around("sgd", "-2") == 0.001
    assert set(TUTORIAL_LR) == {"sgd", "sgd_mom", "adam", "torch_sgd", "torch_sgd_mom", "torch_adam"}
    with pytest.raises(ValueError, match=r"^lr_around: no tutorial learning rate for optim=rmsprop; known: sgd, "
                                         r"sgd_mom, adam, torch_sgd, torch_sgd_mom, torch_adam$"):
        lr_around("rmsprop", 0)
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"lr": "${lr_around:adam,-1}", "jobs": "${cores_at_least:1}"})
    assert cfg.lr == 1e-4 and cfg.jobs == (os.cpu_count() or 1)


def test_cores_at_least(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert cores_at_least(4) == 16 and cores_at_least("20") == 20
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: one
    assert cores_at_least(0) == 1 and cores_at_least(3) == 3


# ---------------------------------------------------------------------------------------------
# the epoch line


def test_the_epoch_line(monkeypatch, capsys):
    clock = iter([10.0, 12.25, 99.0])
    monkeypatch.setattr("callbacks.progress.time.perf_counter", lambda: next(clock))
    printer = EpochLinePrinter()  # 10.0
    metrics = {"train/epoch_loss": torch.tensor(0.123456), "val/loss": torch.tensor(1.5), "train/acc": torch.tensor(0.5),
               "val/acc": torch.tensor(0.87654), "other": torch.tensor(3.0)}
    trainer = SimpleNamespace(is_global_zero=True, callback_metrics=metrics, current_epoch=2, max_epochs=40,
                              num_training_batches=4)

    def batches_done(n):  # what Lightning counts of the epoch so far
        trainer.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(
            batch_progress=SimpleNamespace(current=SimpleNamespace(completed=n))))

    printer.on_train_epoch_start(trainer, None)  # 12.25
    batches_done(4)  # the whole epoch
    printer.on_train_epoch_end(trainer, None)  # 99.0
    assert capsys.readouterr().out == "epoch 2/39  train loss 0.1235 acc 50.00 %  val loss 1.5000 acc 87.65 %  86.8 s\n"
    trainer.callback_metrics = {"train/acc": torch.tensor(1.0)}  # no validation, no epoch loss
    clock = iter([200.0, 201.04])
    printer.on_train_epoch_start(trainer, None)
    batches_done(4)
    printer.on_train_epoch_end(trainer, None)
    assert capsys.readouterr().out == "epoch 2/39  train acc 100.00 %  1.0 s\n"
    # trainer.max_steps stopped the epoch after 2 of 4 batches: the metrics are the last epoch's,
    # so none is printed
    clock = iter([300.0, 300.5])
    printer.on_train_epoch_start(trainer, None)
    batches_done(2)
    printer.on_train_epoch_end(trainer, None)
    assert capsys.readouterr().out == "epoch 2/39  stopped after 2 of 4 batches, not validated  0.5 s\n"
    clock = iter([400.0, 400.25])
    printer.on_train_epoch_start(trainer, None)
    batches_done(0)  # nothing ran in the epoch
    printer.on_train_epoch_end(trainer, None)
    assert capsys.readouterr().out == "epoch 2/39  stopped after 0 of 4 batches, not validated  0.2 s\n"
    # trainer.max_time: Lightning validates the stopped epoch; its val numbers are current
    trainer.callback_metrics = metrics
    clock = iter([500.0, 501.0])
    printer.on_train_epoch_start(trainer, None)
    batches_done(3)
    trainer.sanity_checking = False
    printer.on_validation_end(trainer, None)
    printer.on_train_epoch_end(trainer, None)
    assert capsys.readouterr().out == "epoch 2/39  stopped after 3 of 4 batches  val loss 1.5000 acc 87.65 %  1.0 s\n"
    clock = iter([600.0, 601.0])
    printer.on_train_epoch_start(trainer, None)  # a new epoch forgets the last one's validation
    trainer.sanity_checking = True
    printer.on_validation_end(trainer, None)  # the sanity check is no validation of this epoch
    batches_done(1)
    printer.on_train_epoch_end(trainer, None)
    assert capsys.readouterr().out == "epoch 2/39  stopped after 1 of 4 batches, not validated  1.0 s\n"
    trainer.num_training_batches = float("inf")  # an iterable dataset of unknown length: never "stopped"
    clock = iter([700.0, 702.0])
    printer.on_train_epoch_start(trainer, None)
    batches_done(6)
    printer.on_train_epoch_end(trainer, None)
    assert capsys.readouterr().out.startswith("epoch 2/39  train loss 0.1235 acc 50.00 %  val loss 1.5000 acc 87.65 %  ")
    # an epoch resumed mid-way starts at on_train_start (it has no on_train_epoch_start): the
    # setup and the checkpoint's loading before it are not in its time
    clock = iter([800.0, 830.0, 831.5])
    printer = EpochLinePrinter()  # 800.0
    printer.on_train_start(trainer, None)  # 830.0
    printer.on_train_epoch_end(trainer, None)
    assert capsys.readouterr().out.endswith("  1.5 s\n")
    trainer.is_global_zero = False  # other DDP ranks print nothing
    printer.on_train_epoch_end(trainer, None)
    assert capsys.readouterr().out == ""


def _epoch_line(capsys, monkeypatch, epoch, max_epochs, seconds, metrics, batches=215, done=215, validated=True):
    clock = iter([0.0, 0.0, seconds])
    monkeypatch.setattr("callbacks.progress.time.perf_counter", lambda: next(clock))
    printer = EpochLinePrinter()
    trainer = SimpleNamespace(is_global_zero=True, current_epoch=epoch, max_epochs=max_epochs, sanity_checking=False,
                              num_training_batches=batches, callback_metrics={k: torch.tensor(v) for k, v in metrics.items()},
                              fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(
                                  batch_progress=SimpleNamespace(current=SimpleNamespace(completed=done)))))
    printer.on_train_epoch_start(trainer, None)
    if validated:
        printer.on_validation_end(trainer, None)
    printer.on_train_epoch_end(trainer, None)
    return capsys.readouterr().out.removesuffix("\n")


def test_the_epoch_line_fits_80_columns(monkeypatch, capsys):
    """It was 91 columns for a default run's last epoch (`epoch 39/39  train loss 0.2950  val loss
    0.3267  train acc 89.31 %  val acc 88.61 %  10.9 s`); grouped by split it fits a terminal, up
    to 999 epochs of up to 999 s. Past 100 s an epoch's time is in whole seconds."""
    last = {"train/epoch_loss": 0.29503, "val/loss": 0.32671, "train/acc": 0.89312, "val/acc": 0.88614}
    line = _epoch_line(capsys, monkeypatch, 39, 40, 10.9, last)  # the default run's 40th epoch
    assert line == "epoch 39/39  train loss 0.2950 acc 89.31 %  val loss 0.3267 acc 88.61 %  10.9 s"
    assert len(line) <= 80
    line = _epoch_line(capsys, monkeypatch, 998, 999, 999.4, last)
    assert line == "epoch 998/998  train loss 0.2950 acc 89.31 %  val loss 0.3267 acc 88.61 %  999 s"
    assert len(line) <= 80
    assert _epoch_line(capsys, monkeypatch, 98, 999, 9999.4, last).endswith("  9999 s")
    assert len(_epoch_line(capsys, monkeypatch, 98, 999, 9999.4, last)) <= 80
    assert _epoch_line(capsys, monkeypatch, 0, 999, 99.94, last).endswith("  99.9 s")
    assert _epoch_line(capsys, monkeypatch, 0, 999, 99.95, last).endswith("  100 s")  # not "100.0 s"
    # an epoch stopped by trainer.max_steps (not validated) fits too
    line = _epoch_line(capsys, monkeypatch, 998, 999, 999.4, last, batches=1875, done=1874, validated=False)
    assert line == "epoch 998/998  stopped after 1874 of 1875 batches, not validated  999 s"
    assert len(line) <= 80
    # one stopped by trainer.max_time (validated as it stood; at most once a run) may wrap: 82
    # columns, kept whole rather than cut to "stopped after 123 of 215" of nothing said
    line = _epoch_line(capsys, monkeypatch, 39, 40, 10.9, last, done=123)
    assert line == "epoch 39/39  stopped after 123 of 215 batches  val loss 0.3267 acc 88.61 %  10.9 s"


def test_a_terminal_gets_a_live_bar_a_pipe_gets_lines(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    bar = progress_display(refresh_rate=7)
    assert isinstance(bar, RichProgressBar) and bar.refresh_rate == 7
    assert progress_display().refresh_rate == 10
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert isinstance(progress_display(), EpochLinePrinter)


# ---------------------------------------------------------------------------------------------
# the graceful stop, with real signals


class SendAt(pl.Callback):
    """Sends `signals` to this process when the step `at` starts."""

    def __init__(self, at: int, *signals):
        self.at, self.signals = at, signals

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at:
            for s in self.signals:
                os.kill(os.getpid(), s)


def fit(tmp_path, *callbacks):
    gen = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(40, 4, generator=gen), torch.randint(0, 2, (40,), generator=gen))
    trainer = pl.Trainer(max_epochs=2, default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         callbacks=list(callbacks))
    trainer.fit(Line(), torch.utils.data.DataLoader(data, batch_size=4))
    return trainer


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_at_the_next_batch_boundary_with_a_checkpoint_there(tmp_path, signum):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stop = GracefulInterrupt(str(tmp_path / "ckpts"))
    with pytest.raises(Interrupted) as e:
        fit(tmp_path, stop, SendAt(3, signum))
    assert e.value.signum == signum and stop.received == signum
    ckpt = torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4  # the step it was in finished; saved right after it
    assert {s: signal.getsignal(s) for s in before} == before  # handlers given back


class Crash(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        raise ValueError("a bug")


def test_handlers_are_given_back_however_a_fit_ends(tmp_path):
    """Lightning's teardown, after on_exception, re-installs what it found: it must find the
    process's own handlers, not ours (else a later Ctrl-C is swallowed)."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    fit(tmp_path / "ok", GracefulInterrupt(str(tmp_path / "ok")))
    assert {s: signal.getsignal(s) for s in before} == before
    with pytest.raises(ValueError, match="a bug"):
        fit(tmp_path / "crash", GracefulInterrupt(str(tmp_path / "crash")), Crash())
    assert {s: signal.getsignal(s) for s in before} == before
    assert not (tmp_path / "crash" / "last.ckpt").exists()  # a crash is not a stop: no checkpoint


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    stop = GracefulInterrupt(str(tmp_path / "ckpts"))
    # Interrupted, not KeyboardInterrupt: Lightning answers that with sys.exit(1), no results.json
    with pytest.raises(Interrupted) as e:
        stop.on_fit_start(None, None)
        try:
            os.kill(os.getpid(), signal.SIGINT)  # the first: noted
            assert stop.received == signal.SIGINT
            os.kill(os.getpid(), signal.SIGINT)  # the second: now
        finally:
            stop._restore()  # as after on_exception (a fit stopped this way never reaches on_fit_end)
    assert e.value.signum == signal.SIGINT and e.value.at_once
    stop.on_fit_start(None, None)  # a new fit forgets the old signal
    try:
        assert stop.received is None
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C after a SIGTERM is only noted
        assert stop.received == signal.SIGINT
    finally:
        with pytest.raises(Interrupted):  # noted and not yet acted on: the fit's end stops the run
            stop.on_fit_end(None, None)


def test_sigterm_still_reaches_the_handler_before_ours(tmp_path):
    seen = []
    old = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        stop = GracefulInterrupt(str(tmp_path))
        stop.on_fit_start(None, None)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: not passed on
        with pytest.raises(Interrupted) as e:  # a signal noted after the last batch stops at the fit's end
            stop.on_fit_end(None, None)
        assert e.value.signum == signal.SIGINT and not e.value.at_once
        assert seen == [signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGTERM)  # given back: the old handler alone
        assert seen == [signal.SIGTERM, signal.SIGTERM] and stop.received == signal.SIGINT
    finally:
        signal.signal(signal.SIGTERM, old)


def test_when_a_checkpoint_is_written_on_a_stop(tmp_path):
    saved = []
    trainer = SimpleNamespace(state=SimpleNamespace(stage="train"), global_step=5,
                              save_checkpoint=lambda path, weights_only: saved.append(
                                  (str(path), trainer.global_step, weights_only)))
    stop = GracefulInterrupt(str(tmp_path))
    stop.on_exception(trainer, None, Interrupted(signal.SIGTERM))
    stop.on_exception(trainer, None, SIGTERMException())  # the same step again: once is enough
    assert saved == [(str(tmp_path / "last.ckpt"), 5, False)]  # the whole state, to resume from
    trainer.global_step = 6
    stop.on_exception(trainer, None, SIGTERMException())  # Lightning's own SIGTERM path
    trainer.state.stage = "validate"
    trainer.global_step = 7
    stop.on_exception(trainer, None, Interrupted(signal.SIGINT))  # during validation: the last one stands
    trainer.state.stage = "train"
    stop.on_exception(trainer, None, ValueError("a bug"))  # not a stop: no checkpoint
    stop.on_exception(trainer, None, Interrupted(signal.SIGINT, at_once=True))  # mid-step: the last one stands
    assert saved == [(str(tmp_path / "last.ckpt"), 5, False), (str(tmp_path / "last.ckpt"), 6, False)]
    for step in (0, 1):  # a stop in the first steps is saved too
        saved.clear()
        trainer.global_step = step
        GracefulInterrupt(str(tmp_path)).on_exception(trainer, None, Interrupted(signal.SIGTERM))
        assert saved == [(str(tmp_path / "last.ckpt"), step, False)]


# ---------------------------------------------------------------------------------------------
# the sweep's exit status (src/hydra_callbacks.py) and the step checkpoint's argument


def test_the_sweep_report_sets_the_exit_status(tmp_path, monkeypatch, capsys, caplog):
    from omegaconf import OmegaConf

    import src.report
    from src.hydra_callbacks import EXIT_SWEEP_HAD_FAILURES, SweepReport

    written = []
    jobs = [SimpleNamespace(name="0_lr=0.1", status="ok", error=None),
            SimpleNamespace(name="1_lr=50", status="diverged", error="loss is nan at step 3"),
            SimpleNamespace(name="2_lr=1", status="failed", error="ValueError: x")]
    monkeypatch.setattr(src.report, "write_report", lambda d, tol: written.append((d, tol)) or jobs)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with pytest.raises(SystemExit) as e:
        SweepReport(tolerance_pt=0.5).on_multirun_end(config)
    assert e.value.code == EXIT_SWEEP_HAD_FAILURES == 1 and written == [(tmp_path, 0.5)]
    assert capsys.readouterr().err.splitlines() == ["error: job 1_lr=50: diverged: loss is nan at step 3",
                                                   "error: job 2_lr=1: failed: ValueError: x"]
    with pytest.raises(SystemExit):  # a learning-rate search expects divergence: only the failure counts
        SweepReport(fail_on=["failed"]).on_multirun_end(config)
    assert capsys.readouterr().err.splitlines() == ["error: job 2_lr=1: failed: ValueError: x"]
    SweepReport(exit_on_failure=False).on_multirun_end(config)  # said, but the exit status stays 0
    assert len(capsys.readouterr().err.splitlines()) == 2
    jobs[1:] = []
    import logging

    with caplog.at_level(logging.INFO, logger="src.hydra_callbacks"):
        SweepReport().on_multirun_end(config)  # all ok: no error line, no exit
    assert caplog.messages == [f"Sweep report: {tmp_path / 'summary.md'} (1 jobs, 1 ok)"]
    assert capsys.readouterr().err == "" and written[-1] == (tmp_path, 1.0)
    written.clear()
    SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "none")}}}))
    assert written == []  # a sweep that launched nothing: no report


def test_step_checkpoint_argument():
    from callbacks.checkpoint import StepCheckpoint

    for bad in (-1, True, 1.5, "3", None):
        with pytest.raises(ValueError, match=rf"^checkpoint.every_n_train_steps={bad!r} must be an integer >= 0 "
                                             r"\(0 = only the per-epoch checkpoints\)$"):
            StepCheckpoint("/tmp/x", bad)
    on, off = StepCheckpoint("/tmp/x", 3), StepCheckpoint("/tmp/x")
    assert on.enabled and not off.enabled and on._every_n_train_steps == 3 and on.dirpath == "/tmp/x"
    assert (on.save_top_k, on.save_last, on._every_n_epochs, on._enable_version_counter) == (0, True, 0, False)


def test_a_signal_after_an_epochs_last_batch_stops_in_its_validation_without_a_checkpoint(tmp_path):
    """A checkpoint written at an epoch's last batch, before its validation, resumes past that
    validation (Lightning skips it): the stop waits for the validation, where none is written."""
    stop = GracefulInterrupt(str(tmp_path))
    stop.received = signal.SIGTERM
    trainer = SimpleNamespace(num_training_batches=5, state=SimpleNamespace(stage="validate"), global_step=10,
                              save_checkpoint=lambda *a, **k: pytest.fail("no checkpoint in a validation"))
    stop.on_train_batch_end(trainer, None, None, None, 4)  # the epoch's last batch: not here
    with pytest.raises(Interrupted):
        stop.on_train_batch_end(trainer, None, None, None, 3)
    with pytest.raises(Interrupted) as e:
        stop.on_validation_batch_end(trainer, None, None, None, 0)
    assert e.value.signum == signal.SIGTERM and not e.value.at_once
    stop.on_exception(trainer, None, e.value)  # stage validate: nothing written
    with pytest.raises(Interrupted) as e:  # noted after the last epoch's validation: the fit's end
        stop.on_fit_end(trainer, None)
    assert e.value.signum == signal.SIGTERM and not e.value.at_once
    trainer.state.stage = "train"
    stop.on_exception(trainer, None, e.value)  # raised at the fit's end: nothing written either


@pytest.mark.parametrize(("app", "cleared"), [({"task_name": "eval"}, True), ({"surface": {}}, True),
                                            ({"task_name": "train"}, False)])
def test_a_rerun_in_the_same_dir_starts_from_nothing_but_train_keeps_its_records(tmp_path, app, cleared):
    """An earlier try's results.json (failed, interrupted) stayed beside a rerun that succeeded
    (eval.json, trajectories.json), and `eval.py -m` / `surfaces.py -m` continued in the same
    sweep dir exited 1 for a job that was fine; surfaces.py's old TensorBoard events stayed
    beside the new. train.py keeps both: its resume and a continued sweep read them."""
    from omegaconf import OmegaConf

    from src.cli import run_task

    out = tmp_path / "run"
    (out / "tensorboard").mkdir(parents=True)
    (out / "results.json").write_text(json.dumps({"status": "interrupted"}))
    (out / "tensorboard" / "events.out.tfevents.1").write_text("")
    seen = {}

    def task(cfg):
        seen["results"] = (out / "results.json").exists()
        return 1

    cfg = OmegaConf.create({"paths": {"output_dir": str(out)}, "verbose": True, **app})
    assert run_task(task, cfg) == 1
    assert seen["results"] is not cleared and (out / "results.json").exists() is not cleared
    assert (out / "tensorboard").exists() is not (cleared and "surface" in app)


def test_eval_and_surfaces_multiruns_exit_1_for_a_failed_or_empty_job(tmp_path, capsys):
    """eval.py -m read its jobs as training runs (`incomplete`, exit 1 when both were fine);
    surfaces.py -m exited 0 with failed jobs. JobsExit: a job is fine when it wrote its file."""
    from omegaconf import OmegaConf

    from src.hydra_callbacks import JobsExit

    sweep = tmp_path / "sweep"
    for name in ("0_split=test", "1_split=val", "2_", "3_"):
        (sweep / name / ".hydra").mkdir(parents=True)
    (sweep / "0_split=test" / "eval.json").write_text("{}")
    (sweep / "1_split=val" / "eval.json").write_text("{}")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    callback = JobsExit(success_file="eval.json", tolerance_pt=1.0)  # the replaced report's keys are taken
    (sweep / "2_" / "eval.json").write_text("{}")
    (sweep / "3_" / "eval.json").write_text("{}")
    callback.on_multirun_end(config)  # all fine: no exit, nothing said
    assert capsys.readouterr().err == ""
    (sweep / "2_" / "eval.json").unlink()
    (sweep / "2_" / "results.json").write_text(json.dumps({"status": "failed", "error": "ckpt_path=x does not exist\nmore"}))
    (sweep / "3_" / "eval.json").unlink()  # killed before it wrote anything
    with pytest.raises(SystemExit) as e:
        callback.on_multirun_end(config)
    assert e.value.code == 1
    assert capsys.readouterr().err.splitlines() == ["error: job 2_: failed: ckpt_path=x does not exist",
                                                    "error: job 3_: incomplete: no eval.json"]
    JobsExit(success_file="eval.json", exit_on_failure=False).on_multirun_end(config)  # said, no exit
    assert len(capsys.readouterr().err.splitlines()) == 2
    with pytest.raises(SystemExit):
        JobsExit(success_file="eval.json", fail_on=["failed"]).on_multirun_end(config)
    assert capsys.readouterr().err.splitlines() == ["error: job 2_: failed: ckpt_path=x does not exist"]
    JobsExit(success_file="x").on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "no")}}}))


def test_optuna_logs_through_hydra_without_colour_codes():
    """An Optuna search printed `\\x1b[32m[I …` into pipes and log files (Optuna's own handler),
    and 7 "setup plugin alembic…" lines as its sweeper loaded."""
    import logging

    import optuna
    from omegaconf import OmegaConf

    from src.hydra_callbacks import SweepReport
    from tests.conftest import ROOT

    logger = logging.getLogger("optuna")
    try:
        SweepReport().on_multirun_start(OmegaConf.create({"hydra": {"sweeper": {"_target_": "x.BasicSweeper"}}}))
        assert logger.handlers and not logger.propagate  # another sweeper: Optuna left as it is
        SweepReport().on_multirun_start(OmegaConf.create(
            {"hydra": {"sweeper": {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"}}}))
        assert not logger.handlers and logger.propagate
    finally:
        optuna.logging.enable_default_handler()
        optuna.logging.disable_propagation()
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = hydra_compose("train", ["hparams_search=adam_lr"], return_hydra_config=True)
    assert cfg.hydra.hydra_logging.loggers.alembic.level == "WARNING"
    assert "optuna" in cfg.hydra.sweeper._target_


def test_an_approx_that_cannot_fail_is_refused():
    """tests/conftest.py: pytest.approx's default abs=1e-12 passed a rounding bound twice too
    large (1e-14 against 2e-14); below 1e-9 a test must say its abs=."""
    with pytest.raises(AssertionError, match="needs abs="):
        pytest.approx(1e-14)
    with pytest.raises(AssertionError, match="needs abs="):
        pytest.approx([1.0, 3e-12], rel=1e-3)
    assert 2e-14 != pytest.approx(1e-14, rel=1e-3, abs=0)
    assert 1e-14 == pytest.approx(1e-14, rel=1e-3, abs=0)
    assert 0.5 == pytest.approx(0.5) and [0.0, 1.0] == pytest.approx([0.0, 1.0])  # zeros are compared by abs

