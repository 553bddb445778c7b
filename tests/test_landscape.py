"""landscape.py and the weight-path recorder: the numbers against formulas and a plain loop, the
honesty checks, the recorded path through a SIGKILL + resume, bad input as one line. The pieces
that need no training (directions, PCA, the batched grid, memory, settings) are in
test_landscape_math.py.

One module fixture trains a tiny run with the path recorded every step, kills it after its first
checkpoints and resumes it (two train.py subprocesses); the landscape tests use that run dir."""

from __future__ import annotations

import io
import json
import re
import runpy
import signal
import sys

import numpy as np
import pytest
import torch

from callbacks.weight_path import load_path, point_file
from src.errors import CheckpointError
from src.landscape import (
    _epochs_done,
    landscape,
    load_run,
    recreate_init,
    run_config,
)
from tests.conftest import ROOT, at_once, compose, run_script

# 2 epochs of 5 steps (1280 images, batch 256); last.ckpt every 2 steps and after each epoch;
# the path every step. Killed before step 7: the checkpoint is from step 6, the path got to 7.
# callbacks=with_path without the diagnostics (their figures alone would take 10 s here).
TRAIN = ["trainer.max_epochs=2", "data.train_subset=1280", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2", "trainer.accelerator=cpu", "callbacks=with_path",
         *(f"~callbacks.{name}" for name in ("activation_stats", "gradient_stats", "weight_stats",
                                             "distribution_figures")),
         "callbacks.weight_path.every_n_steps=1", "print_config=false", "checkpoint.every_n_train_steps=2"]
KILL_AT = 7
FAST_LANDSCAPE = ["landscape.resolution=5", "landscape.subset=256", "landscape.alpha_points=5",
                  "landscape.device=cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """The module's train.py processes, started together: the killed run and its resume (one
    after the other) beside the lr sweep (lr_sweep below). {"killed": (run, its weight_path
    points and last.ckpt before the resume), "sweep": (sweep dir, its process)}."""
    run = tmp_path_factory.mktemp("landscape") / "run"
    sweep = tmp_path_factory.mktemp("lr_sweep") / "sweep"

    def killed_and_resumed():
        res = run_script("train.py", *TRAIN, f"hydra.run.dir={run}",
                         "+callbacks.kill._target_=tests.test_resume.KillAtStep", f"+callbacks.kill.at_step={KILL_AT}")
        assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
        before = {p.name: p.read_bytes() for p in (run / "weight_path").glob("step_*.pt")}
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        resumed = run_script("train.py", f"ckpt_path={run}")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        return run, before, ckpt

    killed, swept = at_once(killed_and_resumed, lambda: run_script("train.py", "-m", *SWEEP, f"hydra.sweep.dir={sweep}"))
    return {"killed": killed, "sweep": (sweep, swept)}


@pytest.fixture(scope="module")
def killed_and_resumed(trained):
    return trained["killed"]


def test_recorded_path_survives_kill_and_resume(killed_and_resumed):
    run, before, ckpt = killed_and_resumed
    # before the resume: points 0..7 on disk, the step-6 checkpoint knows 0..6
    assert sorted(before) == [point_file(run, s).name for s in range(KILL_AT + 1)]
    assert ckpt["global_step"] == 6 and ckpt["callbacks"]["WeightPath"]["steps"] == list(range(7))
    # written mid-epoch: 6 steps of 5 an epoch are 1.2 epochs, as the path says (was 2.0)
    assert ckpt["batches_per_epoch"] == 5 and _epochs_done(ckpt) == pytest.approx(1.2)
    assert _epochs_done({k: v for k, v in ckpt.items() if k != "batches_per_epoch"}) == pytest.approx(1.2)
    path = load_path(run)
    assert path["steps"] == list(range(11))  # every step of 2 x 5, once: no duplicates, no gap
    assert path["epochs"][5] == 1.0 and path["epochs"][10] == 2.0
    # points from before the kill are kept as they were; step 7, dropped and recorded again by the
    # resumed process, is the same (the resume is exact)
    for s in range(KILL_AT):
        assert point_file(run / "weight_path", s).read_bytes() == before[point_file(run, s).name], s
    old7 = torch.load(io.BytesIO(before[point_file(run, KILL_AT).name]), weights_only=True)
    assert torch.equal(old7["weights"], path["weights"][KILL_AT].half())
    # the last point is the final checkpoint's weights, in float16
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 10
    flat = torch.cat([final["state_dict"][n].reshape(-1) for n in path["names"]])
    assert torch.equal(path["weights"][-1], flat.half().float())
    # compact: 2 bytes a parameter (float16) plus a small header
    size = point_file(run / "weight_path", 0).stat().st_size
    assert 2 * flat.numel() < size < 2 * flat.numel() + 4096
    assert 41 * size < 60e6  # the default 40-epoch run: the init + one point an epoch, under 60 MB
    assert not list((run / "weight_path").glob(".*tmp"))  # no temp file left


def test_initial_weights_recreated_from_seed_equal_the_recorded_first_point(killed_and_resumed):
    run, _, _ = killed_and_resumed
    loaded = load_run(run)
    recreated = recreate_init(run_config(run), loaded.trained.config["model"])  # the run's config, resolved
    assert torch.equal(recreated.half().float(), load_path(run)["weights"][0])
    assert loaded.init_source.startswith("recreated from the first try's seed 42 and init (kaiming); equals")
    assert torch.equal(loaded.init, recreated)


def test_a_run_whose_hydra_files_or_results_are_broken_still_loads(killed_and_resumed, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(killed_and_resumed[0], run)
    (run / ".hydra" / "config.yaml").write_text("model: [1,\n")  # broken: results.json's config is read
    (run / ".hydra" / "hydra.yaml").write_text("- a list\n")
    loaded = load_run(run)
    assert loaded.config["seed"] == json.loads((run / "results.json").read_text())["config"]["seed"]
    (run / "results.json").write_text("[1]")  # and then only what the checkpoint says
    loaded = load_run(run)
    assert loaded.config == {} and loaded.trained.config["model"]["hidden_sizes"] == [512, 256, 256, 128]


@pytest.mark.parametrize("broken", ["meta_json", "meta_keys", "point_torn", "point_shape"])
def test_a_broken_recorded_path_is_named_not_a_traceback(killed_and_resumed, tmp_path, caplog, broken):
    import shutil

    from callbacks.weight_path import UnreadablePath

    run = tmp_path / "run"
    shutil.copytree(killed_and_resumed[0], run)
    directory = run / "weight_path"
    if broken == "meta_json":
        (directory / "meta.json").write_text('{"names": [')
    elif broken == "meta_keys":
        (directory / "meta.json").write_text('{"names": ["a"], "shapes": [[1]], "dtype": "int8"}')
    elif broken == "point_torn":
        point_file(directory, 3).write_bytes(point_file(directory, 3).read_bytes()[:1000])
    else:
        torch.save({"step": 3, "epoch": 0.6, "weights": torch.zeros(5)}, point_file(directory, 3))
    file = "meta.json" if broken.startswith("meta") else point_file(directory, 3).name
    with pytest.raises(UnreadablePath, match=f"{file} is unreadable"):
        load_path(run)
    loaded = load_run(run)  # the path is only drawn: left out, with a warning that names the file
    assert loaded.path is None and file in caplog.text and "left out" in caplog.text
    with pytest.raises(CheckpointError, match=f"{file} is unreadable.*directions=random"):
        load_run(run, need_path=True)  # directions=pca needs it: one error line, not a traceback


def test_a_path_that_overflowed_float16_is_one_line_naming_the_step(killed_and_resumed, tmp_path, caplog,
                                                                    monkeypatch, capsys):
    """A run recorded before the recorder kept such points in float32: its float16 points past
    65504 are inf, on which PCA failed with a traceback from eigh."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(killed_and_resumed[0], run)
    for step in (3, 4):
        point = torch.load(point_file(run / "weight_path", step), weights_only=True)
        point["weights"][0] = float("inf")
        torch.save(point, point_file(run / "weight_path", step))
    why = (f"{run}'s recorded weight path holds NaN or inf from step 3 (epoch 0.6) on: its weights outgrew "
           "float16 (|w| > 65504) or the run diverged; use directions=random, or train the run again")
    with pytest.raises(CheckpointError, match="^" + re.escape(why)):
        load_run(run, need_path=True)
    loaded = load_run(run)  # directions=auto or random: left out, as an unreadable path is
    assert loaded.path is None and "from step 3 (epoch 0.6) on" in caplog.text and "left out" in caplog.text
    assert loaded.init is not None and torch.isfinite(loaded.init).all()
    argv = ["landscape.py", f"run={run}", "directions=pca", f"hydra.run.dir={tmp_path / 'out'}",
            "hydra/job_logging=none", "hydra/hydra_logging=none"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "landscape.py"), run_name="__main__")
    assert e.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {run}'s recorded weight path holds NaN or inf from "
                                                   "step 3"), lines
    assert not (tmp_path / "out" / "landscape.json").exists()


def test_landscape_of_a_recorded_run(killed_and_resumed, tmp_path):
    run, _, _ = killed_and_resumed
    out = tmp_path / "out"
    cfg = compose([f"run={run}", "directions=pca", *FAST_LANDSCAPE], out, config_name="landscape")
    tb_before = set((run / "tensorboard").glob("events.out.tfevents.*"))
    weights_before = (run / "checkpoints" / "last.ckpt").read_bytes()
    record = landscape(cfg)
    r = record["runs"][0]
    checks = r["checks"]
    # grid centre = the checkpoint's own loss on the same images; the interpolation's ends = the
    # losses at the initial and final weights; nothing was modified
    assert checks["passed"] and checks["centre"]["relative_difference"] <= 1e-5
    assert max(checks["interpolation_ends"].values()) <= 1e-5
    assert checks["weights_unchanged"] and (run / "checkpoints" / "last.ckpt").read_bytes() == weights_before
    grid = np.asarray(r["grid"]["loss"])
    assert grid.shape == (5, 5) and np.isfinite(grid).all()
    assert r["grid"]["x"].count(0.0) == 1 and r["grid"]["y"].count(0.0) == 1
    # the path: 11 points, the last one is the checkpoint (origin, residual 0)
    p = r["path"]
    assert p["steps"] == list(range(11)) and p["x"][-1] == 0 and p["y"][-1] == 0 and p["residual"][-1] == 0
    assert all(0 <= v <= 1 for v in p["residual"])
    e = r["directions"]["explained_variance"]
    assert 0 < e[1] <= e[0] and sum(e) <= 1 + 1e-9
    assert p["loss"][0] == pytest.approx(r["interpolation"]["check"]["init_loss"], rel=1e-5)
    assert r["interpolation"]["train_loss"][r["interpolation"]["alpha"].index(1.0)] == pytest.approx(
        checks["centre"]["checkpoint"], rel=1e-5)
    # files
    saved = json.loads((out / "landscape.json").read_text())
    assert saved["runs"][0]["grid"]["loss"] == r["grid"]["loss"]
    for name in ("landscape_2d.png", "landscape_3d.png", "interpolation.png"):
        assert (out / name).stat().st_size > 20_000, name
    assert len(set((run / "tensorboard").glob("events.out.tfevents.*")) - tb_before) == 1
    assert r["tensorboard"] == {"dir": str(run / "tensorboard"), "left_out": None}  # its logger was tensorboard


def test_several_runs_and_random_directions(killed_and_resumed, tmp_path):
    run, _, _ = killed_and_resumed
    cfg = compose([f"runs=[{run},{run}]", "directions=random", *FAST_LANDSCAPE], tmp_path, config_name="landscape")
    record = landscape(cfg)
    a, b = record["runs"]
    assert a["directions"]["kind"] == "random" and a["path"] is None
    assert a["grid"]["loss"] == b["grid"]["loss"]  # same run, same seed: same directions, same grid
    assert a["grid"]["x"][0] == -1 and a["grid"]["x"][-1] == 1
    assert (tmp_path / "runs" / "run" / "landscape_2d.png").exists()  # each run's own, for its TensorBoard


def test_bad_input_names_the_callback_to_turn_on(tmp_path, killed_and_resumed):
    bare = tmp_path / "bare"
    (bare / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="checkpoints/last.ckpt"):
        landscape(compose([f"run={bare}"], tmp_path / "o1", config_name="landscape"))
    run, _, _ = killed_and_resumed
    no_path = tmp_path / "no_path"
    (no_path / "checkpoints").mkdir(parents=True)
    (no_path / "checkpoints" / "last.ckpt").write_bytes((run / "checkpoints" / "last.ckpt").read_bytes())
    with pytest.raises(CheckpointError, match="callbacks=with_path"):
        landscape(compose([f"run={no_path}", "directions=pca"], tmp_path / "o2", config_name="landscape"))


def test_which_checkpoint_is_drawn_and_what_is_refused(tmp_path, killed_and_resumed):
    """checkpoint=best is the highest val_acc (it was the last name in alphabetical order, and
    epoch=100 sorts before epoch=99); another run's file, an empty runs=[], NaN weights and a range
    whose grid overflows are one line each, before anything is written."""
    import shutil

    from src.errors import ConfigError
    from src.landscape import find_checkpoint

    run, _, _ = killed_and_resumed
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("tensorboard", "weight_path"))
    ckpts = copy / "checkpoints"
    for old in ckpts.glob("best-*.ckpt"):
        old.unlink()
    last = (ckpts / "last.ckpt").read_bytes()
    for name in ("best-epoch=99-val_acc=0.5000.ckpt", "best-epoch=100-val_acc=0.4000.ckpt",
                 "best-epoch=07-val_acc=0.9000.ckpt", "best-epoch=08-val_acc=0.9000.ckpt"):
        (ckpts / name).write_bytes(last)
    assert find_checkpoint(copy, "best").name == "best-epoch=07-val_acc=0.9000.ckpt"  # the earliest of the best
    assert find_checkpoint(copy, str(ckpts / "last.ckpt")) == ckpts / "last.ckpt"

    def refused(*overrides, error=ConfigError):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        with pytest.raises(error) as e:
            landscape(compose([*overrides, *FAST_LANDSCAPE], out, config_name="landscape"))
        assert "\n" not in str(e.value) and not (out / "landscape.json").exists()
        return str(e.value)

    assert refused(f"runs=[{copy},{run}]", f"checkpoint={ckpts / 'last.ckpt'}") == (
        f"checkpoint={ckpts / 'last.ckpt'} is not one of {run}'s checkpoints; accepted: last, best, or a file in "
        f"{run / 'checkpoints'} (to draw that file, pass it as run=<file>)")
    assert refused("runs=[]").startswith("runs=[] names no run: pass run=<run dir>, runs=[<run dir>,<run dir>]")
    assert refused("run=").startswith("run='' names no run: pass run=<run dir>")
    assert find_checkpoint(copy, "last.ckpt") == ckpts / "last.ckpt"  # a name in the run's checkpoints/
    # the one results.json names wins over the names' val_acc (a run that monitored val/loss)
    (copy / "results.json").write_text(json.dumps({"best_checkpoint": "/elsewhere/best-epoch=99-val_acc=0.5000.ckpt"}))
    assert find_checkpoint(copy, "best").name == "best-epoch=99-val_acc=0.5000.ckpt"
    (copy / "results.json").unlink()
    assert refused(f"run={copy}", "directions=random", "landscape.range=[-1e30,1e30]") == (
        "the loss is not finite at 24 of 25 grid points of copy: landscape.range=[-1e+30, 1e+30] reaches weights "
        "too large for float32; accepted: a narrower landscape.range, e.g. [-1, 1]")
    state = torch.load(ckpts / "last.ckpt", weights_only=True)
    next(iter(state["state_dict"].values())).fill_(float("nan"))
    torch.save(state, ckpts / "last.ckpt")
    assert refused(f"run={copy}", "directions=random", error=CheckpointError) == (
        f"{ckpts / 'last.ckpt'}'s weights hold NaN or inf (the run diverged): there is no landscape around them; "
        "draw an earlier checkpoint (checkpoint=best, or run=<its .ckpt>)")


def test_cli_error_is_one_line(tmp_path, monkeypatch, capsys):
    argv = ["landscape.py", f"run={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path / 'out'}",
            "hydra/job_logging=none", "hydra/hydra_logging=none"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "landscape.py"), run_name="__main__")
    assert e.value.code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0], err


def _landscape_quote():
    """What run_app does to landscape.py's command line: its path keys quoted for Hydra."""
    from functools import partial

    from src.cli import quote_path_values

    return partial(quote_path_values, keys=runpy.run_path(str(ROOT / "landscape.py"))["PATH_KEYS"])


def test_job_dir_names_are_quoted_for_hydra():
    """Sweep job dirs are named by their overrides; `run=<job dir>` must reach the app whole."""
    quote = _landscape_quote()
    job = "logs/x/multiruns/t/0_optim=sgd,trainer.max_epochs=3"
    assert quote(["landscape.py", f"run={job}", "landscape.resolution=5"]) == \
        ["landscape.py", f"run='{job}'", "landscape.resolution=5"]
    assert quote(["runs=[a,b]", "run='x=y'", "run=plain/dir"]) == ["runs=[a,b]", "run='x=y'", "run=plain/dir"]
    cfg = compose(quote(["x", f"run={job}"])[1:], ROOT / "logs" / "unused", config_name="landscape")
    assert cfg.run == job


def test_a_multirun_over_comma_separated_paths_is_a_sweep_of_them(tmp_path):
    """`-m run=<dir>,<dir>` sweeps over the dirs (the whole value was quoted into one path that
    does not exist); a job dir's own commas still keep it whole, in a multirun or not."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    quote = _landscape_quote()
    a, b = tmp_path / "a", tmp_path / "b"
    job1, job2 = tmp_path / "6_init=kaiming,optim=adam", tmp_path / "7_init=xavier,optim=sgd"
    for d in (a, b, job1, job2):
        d.mkdir()

    def swept(*args: str) -> list[str]:
        """What Hydra makes of the quoted `run=` override: the values of its sweep, or the one value."""
        override = OverridesParser.create().parse_overrides(quote(list(args))[-1:])[0]
        values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        return [getattr(v, "text", v) for v in values]  # a quoted sweep value is a QuotedString

    assert swept("-m", f"run={a},{b}") == [str(a), str(b)]
    assert swept("--multirun", f"run={job1},{b},{job2}") == [str(job1), str(b), str(job2)]
    assert swept("-m", f"runs={a},{job2}") == [str(a), str(job2)]
    assert swept("-m", "checkpoint=last,best") == ["last", "best"]
    assert swept("-m", f"run={job1}") == [str(job1)]  # one job dir: its commas are its name's
    assert swept("-m", f"run={a},{tmp_path / 'nope'}") == [f"{a},{tmp_path / 'nope'}"]  # not all paths: as typed
    assert swept(f"run={a},{b}") == [f"{a},{b}"]  # no multirun: one value (run= is one run)
    assert swept(f"run={job1}") == [str(job1)]


def _run_with_points(run, dest, steps):
    """A run dir of links to `run`'s files whose weight_path/ holds only the points of `steps`
    (a run that recorded less), with a tensorboard/ of its own."""
    dest.mkdir()
    for name in ("checkpoints", ".hydra", "results.json"):
        (dest / name).symlink_to(run / name)
    (dest / "weight_path").mkdir()
    (dest / "weight_path" / "meta.json").symlink_to(run / "weight_path" / "meta.json")
    for step in steps:
        point_file(dest / "weight_path", step).symlink_to(point_file(run / "weight_path", step))
    return dest


def test_auto_directions_say_why_each_run_has_no_pca_plane(killed_and_resumed, tmp_path):
    """A run that recorded 2 points used callbacks=with_path: the fallback to random directions
    names its own reason, not "train with callbacks=with_path"."""
    run, _, _ = killed_and_resumed
    few = _run_with_points(run, tmp_path / "few", [0, 10])
    none = tmp_path / "none"
    none.mkdir()
    (none / "checkpoints").symlink_to(run / "checkpoints")
    out = tmp_path / "out"
    record = landscape(compose([f"runs=[{few},{none}]", *FAST_LANDSCAPE], out, config_name="landscape"))
    why = ("no PCA plane for few: its recorded path has 2 points (steps 0, 10); PCA needs at least 3: train more "
           "epochs, or record more often: callbacks.weight_path.every_n_steps=N (the default records the init "
           "and the end of each epoch); none: it recorded no weight path (no weight_path/); train with the "
           "weight-path recorder on: `python train.py callbacks=with_path`")
    assert record["directions"] == "random" and record["directions_reason"].startswith(why)
    assert json.loads((out / "landscape.json").read_text())["directions_reason"] == record["directions_reason"]


def test_a_path_that_ends_before_the_checkpoint_is_warned_about(killed_and_resumed, tmp_path, caplog):
    """Resumed without callbacks=with_path, a run's path stops short of its checkpoint: drawn
    without a word, it looked like the whole of training."""
    run, _, _ = killed_and_resumed
    short = _run_with_points(run, tmp_path / "short", range(9))  # steps 0..8; the checkpoint is step 10
    out = tmp_path / "out"
    r = landscape(compose([f"run={short}", "directions=pca", *FAST_LANDSCAPE], out, config_name="landscape"))["runs"][0]
    warning = ("the recorded path ends at step 8, before the checkpoint's step 10: the steps after it were not "
               "recorded (resumed without callbacks=with_path?); the PCA plane and the drawn path leave them out")
    assert r["path"]["steps"] == list(range(9)) and r["warnings"] == [warning]
    assert json.loads((out / "landscape.json").read_text())["runs"][0]["warnings"] == [warning]
    assert f"{short}: {warning}" in caplog.text
    full = landscape(compose([f"run={run}", "directions=random", *FAST_LANDSCAPE], tmp_path / "o2",
                             config_name="landscape"))["runs"][0]
    assert full["warnings"] == []  # the whole path: nothing to say


# ---------------------------------------------------------------------------------------------
# A learning-rate sweep whose second job diverges before its first checkpoint (by design), trained
# without a logger: the sweep is drawn without that job, and no TensorBoard dir is made in the
# job that is drawn.

SWEEP = ["optim=sgd", "optim.lr=0.1,100", "logger=none", "trainer.max_epochs=1", "data.train_subset=1280",
         "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.accelerator=cpu",
         "callbacks=essential", "print_config=false"]
NO_CHECKPOINT_ACCEPTED = ("accepted: a run dir of train.py with checkpoints/last.ckpt (its always-on "
                          "ModelCheckpoint writes it after each epoch), or a .ckpt file as run=<file>")


@pytest.fixture(scope="module")
def lr_sweep(trained):
    from src.report import find_jobs

    sweep, res = trained["sweep"]
    ok, diverged = find_jobs(sweep)
    assert (ok / "checkpoints" / "last.ckpt").is_file(), res.stderr[-3000:]
    results = json.loads((diverged / "results.json").read_text())
    assert results["status"] == "diverged" and not (diverged / "checkpoints").exists(), res.stderr[-3000:]
    assert not (ok / "tensorboard").exists() and not (diverged / "tensorboard").exists()
    return sweep, ok, diverged, results["error"].splitlines()[0]


def _landscape_cli(monkeypatch, capsys, *args) -> tuple[int, list[str], list[str]]:
    """landscape.py as a user runs it: (exit status, stdout lines, stderr lines)."""
    argv = ["landscape.py", *args, *FAST_LANDSCAPE, "hydra/job_logging=none", "hydra/hydra_logging=none"]
    monkeypatch.setattr(sys, "argv", argv)
    code = 0
    try:
        runpy.run_path(str(ROOT / "landscape.py"), run_name="__main__")
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out.splitlines(), [ln for ln in out.err.splitlines() if ln.strip()]


def test_a_sweeps_job_that_diverged_before_its_first_checkpoint_is_skipped_and_recorded(
        lr_sweep, tmp_path, monkeypatch, capsys):
    sweep, ok, diverged, error = lr_sweep
    assert error.startswith("loss became nan")
    out = tmp_path / "out"
    code, stdout, stderr = _landscape_cli(monkeypatch, capsys, f"runs={sweep}", f"hydra.run.dir={out}")
    assert code == 0 and stderr == [], stderr
    reason = f"diverged before its first checkpoint ({error})"
    assert [ln for ln in stdout if ln.startswith("skipped ")] == [f"skipped {diverged.name}: {reason}"]
    record = json.loads((out / "landscape.json").read_text())
    assert [r["name"] for r in record["runs"]] == [ok.name]
    assert record["skipped"] == [{"name": diverged.name, "run_dir": str(diverged), "sweep_dir": str(sweep),
                                  "status": "diverged", "reason": reason}]
    for name in ("landscape_2d.png", "landscape_3d.png", "interpolation.png"):
        assert (out / name).is_file(), name
    # bug 2: the job logged nothing to TensorBoard; landscape.py leaves it that way and says so
    assert record["runs"][0]["tensorboard"] == {"dir": None, "left_out": "it was trained with logger=none"}
    assert f"{ok.name}: no TensorBoard images: it was trained with logger=none, so its run dir gets no " \
           f"tensorboard/ (the figures and landscape.json are in {out})" in stdout
    assert not (ok / "tensorboard").exists()


def test_no_job_left_and_a_run_given_by_itself_without_a_checkpoint_are_one_error_line(
        lr_sweep, tmp_path, monkeypatch, capsys):
    import shutil

    sweep, ok, diverged, error = lr_sweep
    # run=<the diverged job>: an error, not a skip, and it does not ask for the run dir it was given
    code, _, stderr = _landscape_cli(monkeypatch, capsys, f"run={diverged}", f"hydra.run.dir={tmp_path / 'o1'}")
    message = (f"{diverged} has no checkpoint last.ckpt (checkpoint=last): the run diverged before its first "
               f"checkpoint ({error}); {NO_CHECKPOINT_ACCEPTED}")
    assert code == 2 and stderr == [f"error: {message}"]
    assert "pass its run dir" not in stderr[0]
    # an explicit list is no sweep dir: the same error
    with pytest.raises(CheckpointError) as e:
        landscape(compose([f"runs=['{ok}','{diverged}']", *FAST_LANDSCAPE], tmp_path / "o2", config_name="landscape"))
    assert str(e.value) == message
    # a sweep dir of which no job has a checkpoint: the diverged one, one killed before its first
    # (no results.json)
    only = tmp_path / "only"
    shutil.copytree(diverged, only / diverged.name)
    shutil.copytree(diverged, only / "2_killed")
    (only / "2_killed" / "results.json").unlink()
    code, stdout, stderr = _landscape_cli(monkeypatch, capsys, f"runs={only}", f"hydra.run.dir={tmp_path / 'o3'}")
    assert code == 2 and stderr == [
        f"error: no job of {only} has a checkpoint to draw: {diverged.name}: diverged before its first "
        f"checkpoint ({error}); 2_killed: no checkpoint and no results.json: killed before its first "
        "checkpoint, or still running"], stderr
    assert not [ln for ln in stdout if ln.startswith("skipped ")]
    for o in ("o1", "o2", "o3"):
        assert not (tmp_path / o / "landscape.json").exists()


def test_tensorboard_images_only_into_a_run_whose_own_logger_was_tensorboard(killed_and_resumed, tmp_path,
                                                                             capsys):
    """The run's config decides, not an existing tensorboard/ (an earlier landscape.py wrote one
    into logger=csv runs); only without a readable config does the dir's existence."""
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(killed_and_resumed[0], run, ignore=shutil.ignore_patterns("weight_path"))
    tb = run / "tensorboard"
    csv = {"_target_": "pytorch_lightning.loggers.CSVLogger", "save_dir": "${paths.output_dir}", "name": "csv",
           "version": ""}
    tensorboard = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["logger"]["tensorboard"]

    def draw(loggers: dict | None) -> tuple[dict, set, list[str]]:
        if loggers is not None:  # as `train.py logger=...` writes them: both files say the same
            config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
            config["logger"] = loggers
            (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
            results = json.loads((run / "results.json").read_text())
            results["config"]["logger"] = loggers
            (run / "results.json").write_text(json.dumps(results))
        before = set(tb.glob("events.out.tfevents.*"))
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        r = landscape(compose([f"run={run}", "directions=random", *FAST_LANDSCAPE], out,
                              config_name="landscape"))["runs"][0]
        assert json.loads((out / "landscape.json").read_text())["runs"][0]["tensorboard"] == r["tensorboard"]
        lines = [ln for ln in capsys.readouterr().out.splitlines() if "TensorBoard" in ln]
        return r["tensorboard"], set(tb.glob("events.out.tfevents.*")) - before, lines

    def left_out(why: str, out_index: int) -> list[str]:
        return [f"run: no TensorBoard images: {why}, so its run dir gets no tensorboard/ (the figures and "
                f"landscape.json are in {tmp_path / f'out{out_index}'})"]

    assert tb.is_dir()  # there, but not the run's logger's: left alone
    assert draw({"csv": csv}) == ({"dir": None, "left_out": "it was trained with logger=csv"}, set(),
                                  left_out("it was trained with logger=csv", 0))
    assert draw({}) == ({"dir": None, "left_out": "it was trained with logger=none"}, set(),
                        left_out("it was trained with logger=none", 1))
    info, new, lines = draw({"csv": csv, "tensorboard": tensorboard})
    assert info == {"dir": str(tb), "left_out": None} and len(new) == 1 and lines == []
    # no readable config (.hydra/ and results.json broken): an existing tensorboard/ is the run's
    (run / ".hydra" / "config.yaml").write_text("model: [1,\n")
    (run / "results.json").write_text("[1]")
    info, new, lines = draw(None)
    assert info == {"dir": str(tb), "left_out": None} and len(new) == 1 and lines == []
    shutil.rmtree(tb)
    why = "its config (.hydra/config.yaml, results.json) is unreadable and it has no tensorboard/ dir"
    assert draw(None) == ({"dir": None, "left_out": why}, set(), left_out(why, 4))
    assert not tb.exists()


def test_a_multirun_exits_1_with_a_line_per_failed_job(killed_and_resumed, tmp_path, monkeypatch, capsys):
    """`landscape.py -m run=<job dir>,<dir without a checkpoint>`: two jobs (the job dir's commas
    its own), the second fails; the sweep exits 1 and says so per job (it exited 0)."""
    run, _, _ = killed_and_resumed
    job = _run_with_points(run, tmp_path / "6_init=kaiming,optim=adam", range(11))
    bare = tmp_path / "bare"
    (bare / "checkpoints").mkdir(parents=True)
    sweep = tmp_path / "sweep"
    code, _, stderr = _landscape_cli(monkeypatch, capsys, "-m", f"run={job},{bare}", "directions=random",
                                     f"hydra.sweep.dir={sweep}")
    failure = f"{bare} has no checkpoint last.ckpt (checkpoint=last)"
    assert code == 1, stderr
    assert len(stderr) == 2 and stderr[0].startswith(f"error: {failure}"), stderr
    assert stderr[1].startswith(f"error: job 1: failed: {failure}"), stderr
    assert json.loads((sweep / "0" / "landscape.json").read_text())["runs"][0]["run_dir"] == str(job)
    assert json.loads((sweep / "1" / "results.json").read_text())["status"] == "failed"
