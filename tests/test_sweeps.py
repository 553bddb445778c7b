"""Multiruns, the sweep report, HParams, launchers and presets (issue 5).

The sweeps run `train.py -m` as a subprocess on a few batches; the report is also tested on
hand-made job dirs, which costs no training.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.report import TUTORIAL_TEST_ACC, write_report  # noqa: E402
from tests.conftest import at_once  # noqa: E402

QUICK = ["trainer.max_epochs=1", "trainer.limit_train_batches=10", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2", "callbacks=none", "print_config=false",
         f"paths.data_dir={ROOT / 'data'}"]
ENV = {**os.environ, "PROJECT_ROOT": str(ROOT), "PYTHONWARNINGS": "ignore"}


def run_train(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and (p / ".hydra").is_dir()),
                  key=lambda p: int(p.name.split("_", 1)[0]))


# --- this file's multiruns, run two at a time when its first test starts ----------------------

OPTUNA = ["-m", "hparams_search=sgd_lr", *QUICK]
FIXED = ["model.hidden_sizes=[512,256,256,128]", "optim.lr=0.1", "optim.weight_decay=0.0",
         "data.batch_size=256", "init=kaiming", "data.pipeline=tensor", "trainer.accelerator=cpu",
         "trainer.deterministic=true"]
SWEEPS = {
    "grid": ["-m", "optim=sgd,adam", "init=xavier,kaiming", *QUICK],
    "missing_gpu": ["-m", "trainer.accelerator=cpu,gpu", "optim=sgd", *QUICK],
    "fixed": ["-m", "optim=sgd", "seed=1,2", *QUICK, *FIXED],
    "optuna_mixed": [*OPTUNA, "hydra.sweeper.n_trials=3", 'hydra.sweeper.params={optim.lr:"choice(0.05, 1000.0)"}'],
    "optuna_all_diverged": [*OPTUNA, "hydra.sweeper.n_trials=2",
                            'hydra.sweeper.params={optim.lr:"choice(1000.0, 2000.0)"}'],
}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """{name: (its sweep dir, its train.py -m process)} for each of SWEEPS."""
    names = [n for n in SWEEPS if not (n == "missing_gpu" and torch.cuda.is_available())]
    dirs = {name: tmp_path_factory.mktemp(name) / "sweep" for name in names}
    done = at_once(*(lambda name=name: run_train(*SWEEPS[name], f"hydra.sweep.dir={dirs[name]}") for name in names))
    return {name: (dirs[name], proc) for name, proc in zip(names, done, strict=True)}


# --- a real 2 x 2 multirun, shared by the tests below -------------------------------------

@pytest.fixture(scope="module")
def grid_sweep(sweeps) -> tuple[Path, subprocess.CompletedProcess]:
    return sweeps["grid"]


def test_grid_sweep_writes_job_dirs_and_report(grid_sweep):
    sweep, proc = grid_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 4
    for job in jobs:  # descriptive names: number + the overrides
        assert "optim=" in job.name and "init=" in job.name, job.name
        assert json.loads((job / "results.json").read_text())["status"] == "ok"
    rows = read_csv(sweep / "summary.csv")
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert {(r["optim"], r["init"]) for r in rows} == {(o, i) for o in ("sgd", "adam") for i in ("xavier", "kaiming")}
    for r in rows:
        assert 0 < float(r["test_acc"]) <= 1 and r["epochs"] == "1" and r["best_val_epoch"] == "0"
    assert (sweep / "summary.png").stat().st_size > 10_000
    md = (sweep / "summary.md").read_text()
    assert "4 ok" in md and "| optim | init |" in md


def test_report_command_regenerates_the_same_csv(grid_sweep, capsys):
    sweep, _ = grid_sweep
    before = (sweep / "summary.csv").read_text()
    (sweep / "summary.csv").unlink()
    # `python -m src.report <dir>` is `sys.exit(main([dir]))`; in-process saves an interpreter start.
    from src.report import main

    assert main([str(sweep)]) == 0
    assert (sweep / "summary.csv").read_text() == before
    assert "Sweep report" in capsys.readouterr().out


def test_job_without_results_is_reported_incomplete(grid_sweep, tmp_path):
    sweep, _ = grid_sweep
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("*.ckpt", "events.*"))
    victim = job_dirs(copy)[1]
    (victim / "results.json").unlink()
    jobs = write_report(copy)
    assert [j.status for j in jobs] == ["ok", "incomplete", "ok", "ok"]
    row = read_csv(copy / "summary.csv")[1]
    assert row["status"] == "incomplete" and "no results.json" in row["error"]
    assert "1 incomplete" in (copy / "summary.md").read_text()


def test_hparams_reach_tensorboard(grid_sweep):
    """Each job's event file holds the HParams session (hyperparameters + the hp/* metrics),
    with the same keys in every job, so `tensorboard --logdir <sweep>` lists all columns."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    sweep, _ = grid_sweep
    keys = None
    for job in job_dirs(sweep):
        acc = EventAccumulator(str(job / "tensorboard"), size_guidance={"scalars": 0})
        acc.Reload()
        content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
        assert metadata.EXPERIMENT_TAG in content and metadata.SESSION_START_INFO_TAG in content
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        hp = dict(start.hparams)
        for k in ("optim", "lr", "momentum", "init", "act_fn", "hidden_sizes", "batch_size", "seed",
                  "accelerator", "beta1"):
            assert k in hp, k
        keys = keys or set(hp)
        assert set(hp) == keys  # TensorBoard takes its column list from one run
        experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
        assert {m.name.tag for m in experiment.metric_infos} == {"hp/best_val_acc", "hp/test_acc"}
        results = json.loads((job / "results.json").read_text())
        assert acc.Scalars("hp/test_acc")[-1].value == pytest.approx(results["test_acc"])
        assert acc.Scalars("hp/best_val_acc")[-1].value == pytest.approx(results["best_val_acc"])


# --- failures ---------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_missing_gpu_fails_its_jobs_only(sweeps):
    sweep, proc = sweeps["missing_gpu"]
    # Exit status 1: the report was written, and a job failed (src/hydra_callbacks.py).
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = {r["trainer.accelerator"]: r for r in read_csv(sweep / "summary.csv")}
    assert rows["cpu"]["status"] == "ok" and float(rows["cpu"]["test_acc"]) > 0
    assert rows["gpu"]["status"] == "failed" and "CUDA is not available" in rows["gpu"]["error"]
    assert "CUDA is not available" in (sweep / "summary.md").read_text()
    assert "error: trainer.accelerator=gpu" in proc.stderr


def test_a_sweep_with_many_fixed_overrides_runs_with_short_job_dirs(sweeps):
    """Named after all 15 overrides, Hydra's job dir was 280 characters: `error: file name too
    long` on a file system that allows 255, before the first job. The name keeps the swept ones."""
    sweep, proc = sweeps["fixed"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = [p.name for p in job_dirs(sweep)]
    assert [n.rsplit("_", 1)[0] for n in names] == ["0_seed=1,and_14_more", "1_seed=2,and_14_more"]
    assert all(len(n) <= 200 for n in names)
    rows = read_csv(sweep / "summary.csv")
    assert [(r["seed"], r["status"]) for r in rows] == [("1", "ok"), ("2", "ok")]  # from .hydra/overrides.yaml


def test_a_crashing_job_does_not_stop_the_sweep(tmp_path, monkeypatch):
    """Any exception, not only a UserError, becomes a failed results.json in a multirun."""
    import src.cli as cli

    monkeypatch.setattr(cli, "is_multirun", lambda: True)
    cfg = OmegaConf.create({"print_config": False, "paths": {"output_dir": str(tmp_path)}})

    def boom(_cfg):
        raise RuntimeError("segfault-ish")

    assert cli.run_task(boom, cfg) is None
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "failed" and results["error"] == "RuntimeError: segfault-ish"


def test_ddp_refused_inside_a_local_multirun(monkeypatch):
    import src.cli as cli
    from src.errors import ConfigError
    from src.training import check_run_settings

    def settings(devices):
        return OmegaConf.create({"seed": 1, "trainer": {"max_epochs": 1, "accelerator": "cpu",
                                                        "strategy": "ddp", "devices": devices}})

    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    check_run_settings(settings(2))  # a single run is fine
    monkeypatch.setattr(cli, "is_multirun", lambda: True)
    with pytest.raises(ConfigError, match="multirun"):
        check_run_settings(settings(2))
    check_run_settings(settings(1))


# --- the report on hand-made job dirs ------------------------------------------------------

def _fake_job(sweep: Path, name: str, overrides: list[str], results: dict | None, choices: dict) -> None:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  runtime:\n    choices:\n" + "".join(f"      {k}: {v}\n" for k, v in choices.items()))
    if results is not None:
        (job / "results.json").write_text(json.dumps(results))


def _ok(test_acc: float, optim: str, epochs: int = 40, lr: float = 0.1) -> dict:
    vals = [0.8 + 0.002 * i for i in range(epochs)]
    return {"status": "ok", "test_acc": test_acc, "best_val_acc": vals[-1], "best_val_epoch": epochs - 1,
            "epochs": epochs, "val_scores": vals, "train_losses": [0.5, 0.4], "seconds": 100.0,
            "config": {"optim_name": optim, "init_name": "kaiming", "model": {"act_fn": "relu",
                       "hidden_sizes": [512, 256, 256, 128]}, "data": {"batch_size": 256},
                       "trainer": {"max_epochs": epochs}, "optim": {"lr": lr}}}


def test_report_statuses_and_tutorial_column(tmp_path):
    sweep = tmp_path / "sweep"
    choices = {"init": "kaiming"}
    _fake_job(sweep, "0_experiment=compare_optimizers,optim=sgd", ["experiment=compare_optimizers", "optim=sgd"],
              _ok(0.8921, "sgd"), {**choices, "optim": "sgd"})
    _fake_job(sweep, "1_experiment=compare_optimizers,optim=sgd_mom", ["experiment=compare_optimizers", "optim=sgd_mom"],
              {"status": "failed", "error": "trainer.accelerator=gpu but CUDA is not available"},
              {**choices, "optim": "sgd_mom"})
    diverged = _ok(0.1, "adam", lr=1e-3)
    diverged["train_losses"] = [2.3, None]  # NaN, as atomic_write_json writes it
    _fake_job(sweep, "2_experiment=compare_optimizers,optim=adam", ["experiment=compare_optimizers", "optim=adam"],
              diverged, {**choices, "optim": "adam"})
    _fake_job(sweep, "3_experiment=compare_optimizers,optim=torch_sgd", ["experiment=compare_optimizers", "optim=torch_sgd"],
              None, {**choices, "optim": "torch_sgd"})
    jobs = write_report(sweep)
    assert [j.status for j in jobs] == ["ok", "failed", "diverged", "incomplete"]
    rows = read_csv(sweep / "summary.csv")
    assert list(rows[0]) == ["job", "group", "optim", "status", "test_acc", "best_val_acc", "best_val_epoch",
                             "epochs", "seconds", "tutorial_test_acc", "device", "notes", "error"]
    assert float(rows[0]["tutorial_test_acc"]) == TUTORIAL_TEST_ACC["sgd"]
    assert rows[1]["error"].startswith("trainer.accelerator=gpu") and rows[1]["test_acc"] == ""
    assert "NaN" in rows[2]["error"] and rows[3]["tutorial_test_acc"] == ""
    md = (sweep / "summary.md").read_text()
    assert "ours 89.21 %, tutorial 89.09 % (+0.12 pt)" in md
    assert "1 ok, 1 failed, 1 diverged, 1 incomplete" in md
    assert (sweep / "summary.png").exists()


# --- launchers, sweeper, presets ------------------------------------------------------------

def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("launcher", ["submitit_slurm", "slurm"])
def test_slurm_launcher_composes_and_instantiates(launcher):
    from hydra.utils import instantiate
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    cfg = _compose([f"hydra/launcher={launcher}", "hydra.launcher.partition=gpu", "trainer.accelerator=gpu"])
    assert cfg.hydra.launcher.partition == "gpu"
    launcher_obj = instantiate(cfg.hydra.launcher)
    assert type(launcher_obj).__name__ == SlurmLauncher.__name__  # Hydra loads plugins under its own module name
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min == 120


@pytest.mark.parametrize("optim", ["sgd", "sgd_mom", "adam"])
def test_optuna_presets_compose(optim):
    import optuna
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.utils import instantiate
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

    cfg = _compose([f"hparams_search={optim}_lr"])
    assert cfg.optim._target_ == {"sgd": "src.optim.SGD", "sgd_mom": "src.optim.SGDMomentum",
                                  "adam": "src.optim.Adam"}[optim]
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.optimized_metric == "best_val_acc"
    assert "diverged" not in cfg.hydra.callbacks.sweep_report.fail_on  # a too-large lr is an answer
    sweeper = instantiate(cfg.hydra.sweeper)
    # by name: Hydra's first plugin scan imports the plugin's module anew, so a class imported
    # before it is another object (this test failed when run alone)
    assert (type(sweeper).__module__, type(sweeper).__qualname__) == (
        "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper", "OptunaSweeper")
    override = OverridesParser.create().parse_overrides([f"optim.lr={cfg.hydra.sweeper.params['optim.lr']}"])[0]
    dist = create_optuna_distribution_from_override(override)
    assert isinstance(dist, optuna.distributions.LogUniformDistribution) and dist.low < dist.high


def test_a_jobs_dir_is_named_by_what_it_runs_not_by_how_it_was_started():
    """`+sweep.rerun=all` and the paths must not rename a job's dir: a sweep started again has to
    find its jobs (before, the rerun trained new dirs beside the old, and the report pooled both
    as two runs of one seed)."""
    plain = _compose(["optim=sgd", "seed=3"]).hydra.job.override_dirname
    assert plain == "optim=sgd,seed=3"
    assert _compose(["optim=sgd", "+sweep.rerun=all", "seed=3", "ckpt_path=null", "verbose=true",
                     "print_config=false", "paths.log_dir=/elsewhere"]).hydra.job.override_dirname == plain


def test_experiment_presets_compose():
    cfg = _compose(["experiment=compare_optimizers"])
    assert cfg.hydra.sweeper.params.optim == "sgd,sgd_mom,adam"
    # all three jobs at once on a small machine, one per core on a big one; one thread each
    assert cfg.hydra.launcher.n_jobs == max(3, os.cpu_count())
    assert cfg.hydra.job.env_set.OMP_NUM_THREADS == "1"
    assert (cfg.trainer.max_epochs, cfg.data.batch_size, cfg.seed, cfg.model.act_fn) == (40, 256, 42, "relu")
    assert cfg.init._target_ == "src.init.Kaiming"
    cfg = _compose(["experiment=init_study"])
    inits = cfg.hydra.sweeper.params.init.split(",")
    assert set(inits) == {p.stem for p in (ROOT / "conf" / "init").glob("*.yaml")}
    assert cfg.hydra.sweeper.params["model.act_fn"] == "tanh,relu"


@pytest.mark.slow
def test_joblib_runs_two_jobs_in_parallel(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_train("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optim=sgd,adam", *QUICK,
                     f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(sweep / "summary.csv")
    assert [(r["optim"], r["status"]) for r in rows] == [("sgd", "ok"), ("adam", "ok")]


@pytest.mark.slow
def test_optuna_search_runs(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_train("-m", "hparams_search=adam_lr", "hydra.sweeper.n_trials=2", *QUICK,
                     f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / "optimization_results.yaml").exists()
    rows = read_csv(sweep / "summary.csv")
    assert len(rows) == 2 and all(r["status"] == "ok" and r["optim.lr"] for r in rows)


def test_optuna_search_with_diverging_trials_goes_on_and_reports(sweeps):
    """A diverged trial returns no value: Optuna records it failed and the search goes on (a NaN
    value crashed the whole search with two tracebacks and no report). When no trial has a
    value, Optuna has no best one: one `error:` line, exit 1, and the report is written."""
    sweep, proc = sweeps["optuna_mixed"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    rows = read_csv(sweep / "summary.csv")
    assert sorted(r["status"] for r in rows) == ["diverged", "ok", "ok"]  # TPE's seed 42 picks 1000 first
    best = (sweep / "optimization_results.yaml").read_text()
    assert "optim.lr: 0.05" in best

    sweep, proc = sweeps["optuna_all_diverged"]
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: the sweeper stopped: no trial finished with a value (a diverged or failed trial has "
                      f"none), so Optuna has no best one; the sweep dir holds 2 jobs (2 diverged), report: "
                      f"{sweep / 'summary.md'}"]
    assert "Traceback" not in proc.stderr
    assert [r["status"] for r in read_csv(sweep / "summary.csv")] == ["diverged", "diverged"]
    assert not (sweep / "optimization_results.yaml").exists()


# --- DDP simulated on 2 CPU processes ------------------------------------------------------

def _ddp_sim(optim: str, tmp_path: Path) -> None:
    out = tmp_path / optim
    proc = run_train("trainer=ddp_sim", f"optim={optim}", *QUICK, f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "ok" and results["epochs"] == 1 and results["test_acc"] > 0.3
    assert results["config"]["trainer"]["devices"] == 2
    assert (out / "train_ddp_process_1.log").exists()  # the second rank really ran


@pytest.mark.slow  # tests/test_ddp.py checks the DDP split and gradients in the fast suite
def test_ddp_sim_trains_with_a_hand_written_optimizer(tmp_path):
    _ddp_sim("sgd_mom", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_ddp_sim_trains_with_each_hand_written_optimizer(optim, tmp_path):
    _ddp_sim(optim, tmp_path)
