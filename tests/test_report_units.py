"""The sweep report's building blocks, each against the exact output it must give.

test_report_truth.py checks the report's files against the jobs' results.json from the outside;
these pin what those files are made of (job order, status rules, the override parsing, which keys
count as swept, pooling, number formats, table cells), so that a change of one comparison, one
format string or one default shows here. Mutation testing (docs/testing.md) found each of them
loose before.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats as sps

from src.report import (
    Group,
    Job,
    _cell,
    _fmt,
    _group_notes,
    _job_number,
    _md_table,
    _statuses,
    comparison_metric,
    find_jobs,
    group_jobs,
    group_rows,
    load_job,
    md_groups,
    md_jobs,
    rows_of,
    status_of,
    swept_keys,
    to_csv,
)
from src.stats import Summary, summarize


def ok_job(name: str, test_acc: float | None, seed=None, status: str = "ok", **results) -> Job:
    res = {"status": status, "test_acc": test_acc, **results}
    return Job(name=name, path=Path("/nonexistent") / name, overrides={} if seed is None else {"seed": str(seed)},
               results=res, status=status)


# --- finding and ordering jobs ------------------------------------------------------------------------

def test_jobs_are_found_by_their_marks_and_ordered_by_number(tmp_path):
    for name in ("10_c", "2_b", "0_a", "x_late", "b_late"):
        (tmp_path / name).mkdir()
    for name in ("10_c", "2_b", "0_a"):
        (tmp_path / name / ".hydra").mkdir()
    (tmp_path / "x_late" / "results.json").write_text("{}")
    (tmp_path / "b_late" / "results.json").write_text("{}")
    (tmp_path / "3_notes").mkdir()  # neither .hydra/ nor results.json: not a job
    (tmp_path / "4_file").mkdir()
    (tmp_path / "4_file" / ".hydra").write_text("")  # a file named .hydra is not Hydra's dir
    (tmp_path / "5_plain").write_text("")  # not a directory
    assert [p.name for p in find_jobs(tmp_path)] == ["0_a", "2_b", "10_c", "b_late", "x_late"]


def test_job_number_is_the_integer_before_the_first_underscore():
    assert _job_number(Path("/s/12_optim=sgd,seed=1_2")) == (12, "12_optim=sgd,seed=1_2")
    assert _job_number(Path("/s/7")) == (7, "7")
    assert _job_number(Path("/s/a_1")) == (math.inf, "a_1")
    assert _job_number(Path("/s/1a_2")) == (math.inf, "1a_2")


# --- one job ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("results, status", [
    ({}, "incomplete"),
    ({"status": None}, "incomplete"),
    ({"status": ""}, "incomplete"),
    ({"status": "ok"}, "ok"),
    ({"status": "ok", "train_losses": None}, "ok"),
    ({"status": "ok", "train_losses": [2.3, 1.1]}, "ok"),
    ({"status": "ok", "train_losses": [2.3, None]}, "diverged"),
    ({"status": "ok", "train_losses": [None]}, "diverged"),
    ({"status": "failed", "train_losses": [None]}, "failed"),
    ({"status": "interrupted"}, "interrupted"),
])
def test_status_of(results, status):
    assert status_of(results) == status


def test_job_value_is_a_finite_number_of_an_ok_job_only():
    assert ok_job("0", 0.8125).value("test_acc") == 0.8125
    v = ok_job("0", 1).value("test_acc")
    assert v == 1.0 and isinstance(v, float)
    assert ok_job("0", 0.0).value("test_acc") == 0.0  # zero is a value, not a missing one
    assert ok_job("0", 0.8, status="diverged").value("test_acc") is None
    assert ok_job("0", 0.8, status="failed").value("test_acc") is None
    assert ok_job("0", None).value("test_acc") is None
    for damaged in ("abc", [0.8], {"a": 1}, True):  # a hand-edited results.json: no number, no traceback
        assert ok_job("0", damaged).value("test_acc") is None
    assert ok_job("0", float("nan")).value("test_acc") is None
    assert ok_job("0", float("inf")).value("test_acc") is None
    assert ok_job("0", 0.8, best_val_acc=0.9).value("best_val_acc") == 0.9
    assert ok_job("0", 0.8).value("best_val_acc") is None


def write_job_dir(path: Path, overrides: list[str], choices: dict | None, results: dict | str | None) -> Path:
    path.mkdir(parents=True)
    if overrides is not None:
        (path / ".hydra").mkdir()
        (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if choices is not None:
        lines = "".join(f"      {k}: {'null' if v is None else v}\n" for k, v in choices.items())
        (path / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n" + lines)
    if results is not None:
        (path / "results.json").write_text(results if isinstance(results, str) else json.dumps(results))
    return path


def test_load_job_reads_overrides_choices_and_results(tmp_path):
    path = write_job_dir(tmp_path / "3_x", ["optim=adam", "+seed=2", "~callbacks.weight_stats",
                                            "optim.lr=1e-3", "+tag=a=b"],
                         {"optim": "adam", "init": "xavier", "hydra/launcher": "basic", "logger": None},
                         {"status": "ok", "test_acc": 0.85, "warnings": ["vanishing: layers.0"],
                          "val_scores": [0.5, 0.8], "train_losses": [1.0, 0.5], "config": {"seed": 2}})
    job = load_job(path)
    assert job.name == "3_x" and job.path == path and job.number == "3"
    assert job.overrides == {"optim": "adam", "seed": "2", "callbacks.weight_stats": "", "optim.lr": "1e-3",
                             "tag": "a=b"}
    assert job.choices == {"optim": "adam", "init": "xavier"}
    assert job.status == "ok" and job.error == ""
    assert job.notes == ["vanishing: layers.0"]
    assert job.value("test_acc") == 0.85 and job.seed == "2"


def test_load_job_says_what_is_missing(tmp_path):
    job = load_job(write_job_dir(tmp_path / "0_a", ["optim=sgd"], {"optim": "sgd"}, None))
    assert job.status == "incomplete" and job.results == {}
    assert job.error == "no results.json (job still running, killed, or crashed before writing it)"
    assert job.overrides == {"optim": "sgd"} and job.choices == {"optim": "sgd"}

    job = load_job(write_job_dir(tmp_path / "1_b", ["optim=sgd"], None, "{not json"))
    assert job.status == "incomplete" and job.error.startswith("unreadable results.json: ")
    job = load_job(write_job_dir(tmp_path / "1_list", ["optim=sgd"], None, "[1]"))
    assert (job.status, job.error) == ("incomplete", "unreadable results.json: a JSON list, not an object")

    # .hydra/ files that are not what Hydra writes are read as nothing, never a traceback
    odd = write_job_dir(tmp_path / "1_odd", None, None, {"status": "ok", "test_acc": 0.5, "config": {}})
    (odd / ".hydra").mkdir()
    (odd / ".hydra" / "hydra.yaml").write_text("- a list\n")
    (odd / ".hydra" / "overrides.yaml").write_text("optim: sgd\n")
    job = load_job(odd)
    assert job.status == "ok" and job.overrides == {} and job.choices == {"optim": "", "init": ""}

    job = load_job(write_job_dir(tmp_path / "2_c", ["optim=sgd"], None,
                                 {"status": "ok", "train_losses": [1.0, None], "config": {}}))
    assert (job.status, job.error) == ("diverged", "loss became NaN/inf")

    job = load_job(write_job_dir(tmp_path / "3_d", ["optim=sgd"], None,
                                 {"status": "failed", "error": "optim.lr=-1 must be > 0"}))
    assert (job.status, job.error) == ("failed", "optim.lr=-1 must be > 0")


def test_a_job_without_hydra_dir_still_says_what_it_ran(tmp_path):
    job = load_job(write_job_dir(tmp_path / "4_e", None, None,
                                 {"status": "ok", "config": {"optim_name": "sgd_mom", "init_name": "kaiming"}}))
    assert job.overrides == {}
    assert job.choices == {"optim": "sgd_mom", "init": "kaiming"}
    # a .hydra/ choice wins over the config's name
    job = load_job(write_job_dir(tmp_path / "5_f", [], {"optim": "adam"},
                                 {"status": "ok", "config": {"optim_name": "sgd", "init_name": "xavier"}}))
    assert job.choices == {"optim": "adam", "init": "xavier"}


def test_a_job_at_chance_is_noted(tmp_path):
    job = load_job(write_job_dir(tmp_path / "0_a", [], None,
                                 {"status": "ok", "val_scores": [0.3, 0.11], "config": {}}))
    assert job.notes == ["did not learn (final val acc 11.0 %, chance 10 %)"]


# --- which keys were swept ------------------------------------------------------------------------------

def test_swept_keys_are_declared_sweeps_plus_keys_that_differ(tmp_path):
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - optim=sgd,adam\n    - +extra=1,2\n    - data.batch_size=256\n"
        "  sweeper:\n    params:\n      +init: xavier\n")
    jobs = [Job("0", tmp_path, overrides={"data.batch_size": "256", "optim": "sgd", "init": "xavier",
                                          "extra": "1", "seed": "1", "trainer.max_epochs": "2"}),
            Job("1", tmp_path, overrides={"data.batch_size": "256", "optim": "adam", "init": "xavier",
                                          "extra": "1", "seed": "1", "trainer.max_epochs": "3"})]
    # optim and extra: swept on the command line; init: in sweeper params (one value, still an
    # axis); trainer.max_epochs: differs; batch size and seed: the same everywhere, not declared.
    assert swept_keys(jobs, tmp_path) == ["optim", "init", "extra", "trainer.max_epochs"]


@pytest.mark.parametrize("sweeper, task, planned", [
    ("_target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper", ["optim=sgd,adam", "seed=1,2", "x=3"], 4),
    ("_target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n    params:\n      optim: sgd,sgd_mom,adam\n"
     "      seed: range(42,47)", [], 15),  # a preset's params
    ("_target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n    params:\n      seed: range(42,47)",
     ["seed=1,2"], 2),  # the command line's sweep over the preset's
    ("_target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper", ["optim=sgd"], 1),
    ("_target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper\n    n_trials: 12", [], 12),
    ("_target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper", ["lr=glob(*)"], None),  # cannot tell
    ("_target_: some.other.Sweeper", ["optim=sgd,adam"], None),
])
def test_planned_jobs_are_read_from_multirun_yaml(tmp_path, sweeper, task, planned):
    from src.report import planned_jobs

    lines = "".join(f"\n    - {t}" for t in task)
    (tmp_path / "multirun.yaml").write_text(f"hydra:\n  sweeper:\n    {sweeper}\n  overrides:\n    task:{lines or ' []'}\n")
    assert planned_jobs(tmp_path) == planned
    assert planned_jobs(tmp_path / "nope") is None


def test_a_sweep_stopped_before_some_jobs_started_says_so(tmp_path):
    """Killed after its first jobs, the report listed 2 jobs and 'optim (1 value)', nothing about
    the 2 that never started."""
    (tmp_path / "multirun.yaml").write_text("hydra:\n  sweeper:\n    _target_: hydra._internal.core_plugins."
                                           "basic_sweeper.BasicSweeper\n  overrides:\n    task:\n    - optim=sgd,adam\n"
                                           "    - seed=1,2\n")
    from src.report import to_markdown

    jobs = [ok_job("0_optim=sgd,seed=1", 0.8, seed=1), ok_job("1_optim=sgd,seed=2", 0.81, seed=2)]
    text = to_markdown(tmp_path, jobs, ["seed"], group_jobs(jobs, []), "test_acc", [], [], 1.0, *rows_of(jobs, ["seed"], []))
    assert text.splitlines()[2] == ("2 jobs (of 4 planned: 2 never started; to run them, start the same command with "
                                    "this hydra.sweep.dir): 2 ok; swept: seed (2 values)")


def test_the_report_says_what_every_job_was_given_alike(tmp_path):
    """`data.train_subset=5000` given to a whole sweep was in no line of summary.md: its numbers
    read as those of the full split."""
    from src.report import fixed_overrides, to_markdown

    jobs = [Job(f"{i}_x", tmp_path / f"{i}_x", status="ok", results={"status": "ok", "test_acc": 0.8},
                overrides={"optim": optim, "seed": "1", "data.train_subset": "5000", "print_config": "false",
                           "trainer.max_epochs": str(2 + i)})
            for i, optim in enumerate(["sgd", "adam"])]
    assert fixed_overrides(jobs, ["optim"]) == ["seed=1", "data.train_subset=5000"]
    assert fixed_overrides([], []) == []
    text = to_markdown(tmp_path, jobs, ["optim"], group_jobs(jobs, ["optim"]), "test_acc", [], [], 1.0,
                       *rows_of(jobs, ["optim"], []))
    assert text.splitlines()[4] == "Given to every job: `seed=1` `data.train_subset=5000`"


def test_how_a_job_was_started_or_where_it_wrote_is_never_a_factor(tmp_path):
    (tmp_path / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - verbose=true,false\n")
    keys = {"print_config": ("false", "full"), "verbose": ("true", "false"), "sweep.rerun": ("all", "no"),
            "paths.log_dir": ("/a", "/b"), "data.data_dir": ("/a", "/b"), "ckpt_path": ("x", "y"),
            "task_name": ("a", "b"), "model.cache_path": ("a", "b"), "seed": ("1", "2"), "optim": ("sgd", "adam")}
    jobs = [Job(str(i), tmp_path, overrides={k: v[i] for k, v in keys.items()}) for i in (0, 1)]
    assert swept_keys(jobs, tmp_path) == ["seed", "optim"]  # the seed: the report's own axis


def test_swept_keys_without_multirun_yaml(tmp_path):
    jobs = [Job("0", tmp_path, overrides={"seed": "1", "optim": "sgd"}),
            Job("1", tmp_path, overrides={"seed": "2", "optim": "sgd"}),
            Job("2", tmp_path, overrides={"seed": "3", "optim": "sgd", "init": "xavier"})]
    assert swept_keys(jobs, tmp_path) == ["seed", "init"]


def test_a_default_named_in_one_sweep_and_left_out_in_another_is_one_setting(tmp_path):
    """Two sweeps into one dir, the second naming the default init=kaiming and lr 1e-3 (=0.001):
    one group per optimizer, not a `kaiming` and an empty `init=` group compared with each other."""
    def job(name, optim, seed, **named):
        return Job(name, tmp_path, overrides={"optim": optim, "seed": str(seed), **named},
                   choices={"optim": optim, "init": "kaiming"}, status="ok",
                   results={"status": "ok", "test_acc": 0.8, "provenance": prov(),
                            "config": {"optim": {"lr": 0.001}, "init": {"_target_": "src.init.Kaiming"}}})
    jobs = [job("0_a", "sgd", 1), job("1_a", "adam", 1),
            job("0_b", "sgd", 2, init="kaiming", **{"optim.lr": "1e-3"}),
            job("1_b", "adam", 2, init="kaiming", **{"optim.lr": "1e-3"})]
    assert [j.factor("init") for j in jobs] == ["kaiming"] * 4
    assert [j.factor("optim.lr") for j in jobs] == ["0.001", "0.001", "1e-3", "1e-3"]
    assert jobs[0].factor("data.batch_size") == ""  # in neither: empty, as before
    nulled = Job("n", tmp_path, results={"config": {"init": {"gain": None}}})
    assert nulled.factor("init.gain") == "null"  # as `init.gain=null` on a command line writes it
    assert swept_keys(jobs, tmp_path) == ["optim", "seed"]  # init and lr do not differ
    groups = group_jobs(jobs, ["optim", "init", "optim.lr"])
    assert [(g.factors, [j.name for j in g.jobs]) for g in groups] == [
        ({"optim": "sgd", "init": "kaiming", "optim.lr": "0.001"}, ["0_a", "0_b"]),
        ({"optim": "adam", "init": "kaiming", "optim.lr": "0.001"}, ["1_a", "1_b"])]
    _, rows = rows_of(jobs, ["init"], groups)
    assert [r["init"] for r in rows] == ["kaiming"] * 4


# --- groups --------------------------------------------------------------------------------------------

def prov(torch="2.14.1", device_type="cpu", config_hash="h1", **extra) -> dict:
    return {"torch": torch, "device_type": device_type, "config_hash": config_hash, **extra}


def test_groups_collect_jobs_that_differ_only_in_seed():
    jobs = [Job(f"{i}", Path("."), overrides={"optim": o, "seed": str(s)}, status="ok",
                results={"status": "ok", "provenance": prov()})
            for i, (o, s) in enumerate([("sgd", 1), ("adam", 1), ("sgd", 2), ("adam", 2), ("sgd", 3)])]
    groups = group_jobs(jobs, ["optim"])
    assert [(g.number, g.factors, [j.name for j in g.jobs], g.apart) for g in groups] == [
        (1, {"optim": "sgd"}, ["0", "2", "4"], ""), (2, {"optim": "adam"}, ["1", "3"], "")]
    # no factor: one group of everything
    assert [[j.name for j in g.jobs] for g in group_jobs(jobs, [])] == [["0", "1", "2", "3", "4"]]


def test_groups_split_by_torch_device_and_config_with_the_reason():
    jobs = [Job("0", Path("."), overrides={"optim": "sgd"}, results={"provenance": prov()}),
            Job("1", Path("."), overrides={"optim": "sgd"}, results={"provenance": prov(torch="2.5.0")}),
            Job("2", Path("."), overrides={"optim": "sgd"}, results={"provenance": prov()}),
            Job("3", Path("."), overrides={"optim": "sgd"}, results={}),  # failed early: no provenance
            Job("4", Path("."), overrides={"optim": "adam"}, results={}),
            Job("5", Path("."), overrides={"optim": "adam"}, results={"provenance": prov(device_type="cuda",
                                                                                        config_hash="h2")})]
    groups = group_jobs(jobs, ["optim"])
    assert [(g.number, [j.name for j in g.jobs], g.apart) for g in groups] == [
        (1, ["0", "2"], "not pooled: torch 2.14.1 (vs 2.5.0)"),
        (2, ["1"], "not pooled: torch 2.5.0 (vs 2.14.1)"),
        (3, ["3"], "no provenance (failed or incomplete jobs)"),
        (4, ["4", "5"], "")]  # one pool + jobs without provenance: together


def test_group_values_are_keyed_by_seed_only_when_seeds_pair():
    g = Group(1, {}, [ok_job("a", 0.8, seed=1), ok_job("b", 0.9, seed=2), ok_job("c", 0.7, seed=3, status="failed"),
                      ok_job("d", None, seed=4)])
    assert g.values("test_acc") == {"1": 0.8, "2": 0.9}
    # a seed run twice is one run of the seed, not two samples: counted once, the last job
    g = Group(1, {}, [ok_job("0_a", 0.8, seed=1), ok_job("1_b", 0.9, seed=1), ok_job("2_c", 0.7, seed=2),
                      ok_job("3_d", 0.5, seed=2, status="failed")])
    assert g.values("test_acc") == {"1": 0.9, "2": 0.7} and g.summary("test_acc").n == 2
    assert [j.name for j in g.counted] == ["1_b", "2_c"]
    assert {seed: [j.name for j in jobs] for seed, jobs in g.repeated_seeds.items()} == {"1": ["0_a", "1_b"]}
    assert _group_notes(g) == ["seed 1 ran 2 times (jobs 0_a, 1_b): counted once, the last to finish (1_b)"]
    # two sweeps into one dir, the second with seed=2,1: its job 0 (seed 2) finished after the first
    # sweep's job 1 (seed 2). The later run counts, whatever the dir names' order (it counted 1_s2).
    def at(name, acc, seed, finished):
        return ok_job(name, acc, seed=seed, provenance={"finished_at": f"2026-11-30T16:29:{finished}.000+00:00"})
    first, second = [at("0_s1", 0.61, 1, 30), at("1_s2", 0.62, 2, 34)], [at("0_s2", 0.50, 2, 46), at("1_s1", 0.70, 1, 52)]
    g = Group(1, {}, sorted(first + second, key=lambda j: j.name))  # dir order: 0_s1, 0_s2, 1_s1, 1_s2
    assert g.values("test_acc") == {"1": 0.70, "2": 0.50}
    assert _group_notes(g) == ["seed 1 ran 2 times (jobs 0_s1, 1_s1): counted once, the last to finish (1_s1)",
                               "seed 2 ran 2 times (jobs 1_s2, 0_s2): counted once, the last to finish (0_s2)"]
    # seed=42 given in one sweep (the string "42") and left at its default in another (the config's
    # int 42): one seed, counted once (it was two seeds, n inflated, and pairing lost)
    given = Job("0_a", Path("."), overrides={"seed": "42"}, status="ok", results={"status": "ok", "test_acc": 0.8})
    default = Job("0_b", Path("."), status="ok", results={"status": "ok", "test_acc": 0.81, "config": {"seed": 42}})
    assert given.seed == default.seed == "42" and Job("x", Path(".")).seed is None
    assert Group(1, {}, [given, default]).values("test_acc") == {"42": 0.81}
    # a job without finished_at (older results.json) comes first: one that has it is surely later
    g = Group(1, {}, [at("0_new", 0.9, 1, 10), ok_job("1_old", 0.8, seed=1)])
    assert [j.name for j in g.counted] == ["0_new"]
    g = Group(1, {}, [ok_job("a", 0.8), ok_job("b", 0.9, seed=1)])
    assert g.values("test_acc") == {"a": 0.8, "b": 0.9}  # a job without a seed: by job name
    s = Group(1, {}, [ok_job("a", 0.8, seed=1), ok_job("b", 0.9, seed=2)]).summary("test_acc")
    assert s == summarize([0.8, 0.9], bounds=(0.0, 1.0)) and s.n == 2 and s.mean == pytest.approx(0.85)


def test_a_groups_intervals_stay_inside_what_each_metric_can_take():
    g = Group(1, {}, [ok_job("a", 0.999, seed=1, best_val_epoch=39, epochs=40, seconds=2.0),
                      ok_job("b", 0.90, seed=2, best_val_epoch=30, epochs=40, seconds=4.0),
                      ok_job("c", 0.999, seed=3, best_val_epoch=39, epochs=40, seconds=300.0)])
    assert g.summary("test_acc").ci_high == 1.0 and summarize([0.999, 0.9, 0.999]).ci_high > 1.0
    assert g.summary("best_val_epoch").ci_high == 39.0  # epochs 0..39
    assert g.summary("seconds").ci_low == 0.0 and g.summary("seconds").ci_high > 300
    assert g.bounds("epochs") == (0.0, math.inf) and g.bounds("val_loss") is None
    assert Group(1, {}, [ok_job("a", 0.9, best_val_epoch=3)]).bounds("best_val_epoch") == (0.0, math.inf)


def test_best_val_epoch_minus_one_is_no_epoch_in_the_group_numbers():
    """results.json's `best_val_epoch: -1` (no epoch validated: trainer.limit_val_batches=0) was
    averaged: the Groups table read `-1.0 [-1.0, -1.0]` and summary_groups.csv -1.0, while the job
    rows left it empty. Now a missing value everywhere."""
    none = Group(1, {"optim": "sgd"}, [ok_job("a", 0.81, seed=1, best_val_epoch=-1, epochs=3, seconds=10.0),
                                       ok_job("b", 0.82, seed=2, best_val_epoch=-1, epochs=3, seconds=10.0)])
    assert none.values("best_val_epoch") == {} and none.summary("best_val_epoch") == Summary(n=0)
    assert none.counted[0].value("best_val_epoch") is None and none.counted[0].value("epochs") == 3.0
    assert md_groups([none], ["optim"], "test_acc", [])[6].endswith(" | – | – | 10 [10, 10] |  |")
    header, rows = group_rows([none], ["optim"], [])
    assert [rows[0][f"best_val_epoch_{s}"] for s in ("mean", "sd", "ci_low", "ci_high", "min", "max")] == [None] * 6
    assert "best_val_epoch_mean,best_val_epoch_sd,best_val_epoch_ci_low,best_val_epoch_ci_high," \
           "best_val_epoch_min,best_val_epoch_max" in to_csv(header, rows)
    assert ",,,,,,10.0,0.0,10.0,10.0,10.0,10.0," in to_csv(header, rows)
    # a group where some seeds validated: the mean of those, not pulled down by the -1
    some = Group(2, {"optim": "adam"}, [ok_job("c", 0.8, seed=1, best_val_epoch=-1, epochs=3),
                                        ok_job("d", 0.8, seed=2, best_val_epoch=2, epochs=3)])
    assert some.values("best_val_epoch") == {"2": 2.0}
    assert _cell("best_val_epoch", some.summary("best_val_epoch")) == "2.0"
    # the job rows read it through the same rule; a real epoch 0 stays
    _, job_rows = rows_of(none.jobs + [ok_job("e", 0.8, best_val_epoch=0)], [], [none])
    assert [r["best_val_epoch"] for r in job_rows] == [None, None, 0]


def test_the_learning_rate_curves_band_is_the_cut_interval_of_each_point():
    from src.report import figure_curve, find_curves

    def g(number, lr, accs):
        return Group(number, {"optim.lr": str(lr)}, [ok_job(f"{number}_{i}", a, seed=i) for i, a in enumerate(accs)])
    groups = [g(1, 0.01, [0.80, 0.84, 0.82]), g(2, 0.1, [0.999, 0.90, 0.999]), g(3, 1.0, [0.5])]
    (curve,) = find_curves(groups, ["optim.lr"], "test_acc")
    fig = figure_curve(curve, "test_acc", 1.0)
    band = fig.axes[0].collections[0].get_paths()[0].vertices[:, 1]
    s1, s2 = groups[0].summary("test_acc"), groups[1].summary("test_acc")
    # the band is the interval cut at 100 % and then to the data area: the strips above and below
    # (0.045 of the axes each, one line) hold the ranges and the × marks
    y0, y1 = fig.axes[0].get_ylim()
    floor, top = y0 + 0.045 * (y1 - y0), y1 - 0.045 * (y1 - y0)
    assert summarize([0.999, 0.9, 0.999]).ci_high > 1 and top < 100
    assert band.max() == pytest.approx(top)  # group 2's interval reaches past 100 %, cut at the strip
    assert band.min() == pytest.approx(floor) and 100 * s1.ci_low < floor  # 1 seed at 50 %: a ▼, no band
    assert min(abs(band - 100 * s1.ci_high)) < 1e-9 and min(abs(band - 100 * s2.ci_low)) < 1e-9


@pytest.mark.parametrize("epochs, first_in_view", [(3, True), (9, True), (10, False), (40, False)])
def test_the_val_curves_axis_leaves_out_only_a_long_runs_first_epoch(epochs, first_in_view):
    from src.report import figure_val_curves

    scores = [0.5] + [0.80 + 0.001 * e for e in range(1, epochs)]  # epoch 0 far below the rest
    jobs = [ok_job(str(seed), 0.8, seed=seed, val_scores=[v + 0.002 * seed for v in scores]) for seed in (1, 2)]
    low, high = figure_val_curves(group_jobs(jobs, []), []).axes[0].get_ylim()
    assert (low <= 50.3) == first_in_view and high > 80.0 + 0.1 * (epochs - 1)


def test_the_val_curves_panel_draws_at_most_eight_groups_and_says_which():
    """A 3-optimizer x 7-learning-rate sweep drew 21 overlapping bands in one panel: it now draws
    each curve line's best (★), or without a curve the 8 best by the metric, and says so."""
    from src.report import MAX_VAL_CURVES, figure_val_curves, find_curves

    def g(number, optim, lr, acc):
        return Group(number, {"optim": optim, "optim.lr": str(lr)},
                     [ok_job(f"{number}_{i}", acc + 0.001 * i, seed=i, val_scores=[acc - 0.1, acc])
                      for i in range(2)])
    lrs = [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1]
    peak = {"sgd": 0.1, "sgd_mom": 0.03, "adam": 0.001}
    groups = [g(7 * i + k + 1, optim, lr, 0.85 - 0.01 * abs(lrs.index(lr) - lrs.index(peak[optim])) + 0.002 * i)
              for i, optim in enumerate(peak) for k, lr in enumerate(lrs)]
    curves = find_curves(groups, ["optim", "optim.lr"], "test_acc")
    ax = figure_val_curves(groups, ["optim", "optim.lr"], curves, "test_acc").axes[0]
    assert sorted(line.get_label() for line in ax.lines) == sorted(
        f"optim={o},lr={peak[o]} (2 seeds)" for o in peak)
    assert ax.get_title().endswith("\n(drawn: each line's best lr (★) of 21 groups)")
    ax = figure_val_curves(groups, ["optim", "optim.lr"], [], "test_acc").axes[0]  # no curve: the best 8
    ranked = sorted(groups, key=lambda x: -x.summary("test_acc").mean)[:MAX_VAL_CURVES]
    assert len(ax.lines) == MAX_VAL_CURVES == 8
    assert [line.get_label() for line in ax.lines] == [
        f"optim={x.factors['optim']},lr={x.factors['optim.lr']} (2 seeds)" for x in groups if x in ranked]
    assert ax.get_title().endswith("\n(drawn: the 8 best of 21 groups by test accuracy)")
    # a curve line's best with no val scores is not drawn; one best left alone: the 8 best instead
    for j in groups[peak_index := 7 + lrs.index(peak["sgd_mom"])].jobs:
        j.results["val_scores"] = []
    for j in groups[14 + lrs.index(peak["adam"])].jobs:
        j.results["val_scores"] = []
    ax = figure_val_curves(groups, ["optim", "optim.lr"], curves, "test_acc").axes[0]
    assert len(ax.lines) == 8 and ax.get_title().endswith("(drawn: the 8 best of 19 groups by test accuracy)")
    assert groups[peak_index].factors["optim"] == "sgd_mom"
    few = groups[:MAX_VAL_CURVES]  # up to 8: all of them, and the title says nothing of a choice
    ax = figure_val_curves(few, ["optim", "optim.lr"], [], "test_acc").axes[0]
    assert len(ax.lines) == 8 and ax.get_title() == "Validation accuracy: mean ± 95 % band over seeds"
    # with groups that did not learn too, the note is wrapped: on one line it ran off the figure
    for j in groups[0].jobs:
        j.notes.append("did not learn (final val acc 10.0 %)")
    title = figure_val_curves(groups, ["optim", "optim.lr"], curves, "test_acc").axes[0].get_title()
    assert title.splitlines()[1:] == ["(drawn: the 8 best of 18 groups by test accuracy; not drawn: 1 group",
                                      "that did not learn)"]


def test_the_hparams_hint_counts_the_jobs_that_logged_to_tensorboard(tmp_path):
    from src.report import hparams_rows

    jobs = [Job(str(i), tmp_path / str(i), overrides={}, status="ok", results={"status": "ok"}) for i in range(3)]
    for j in jobs:
        j.path.mkdir()
    assert hparams_rows(jobs) == "no HParams rows: no job logged to TensorBoard (logger=tensorboard does)"
    (jobs[0].path / "tensorboard").mkdir()
    assert hparams_rows(jobs) == "HParams tab: a row for each of the 1 of 3 jobs that logged to TensorBoard"
    for j in jobs[1:]:
        (j.path / "tensorboard").mkdir()
    assert hparams_rows(jobs) == "HParams tab: one row per job"
    # the config says which logger ran: a tensorboard/ dir in a logger=csv job is not a row
    csv = {"csv": {"_target_": "pytorch_lightning.loggers.CSVLogger"}}
    tb = {"tensorboard": {"_target_": "pytorch_lightning.loggers.TensorBoardLogger"}}
    for j, logger in zip(jobs, (csv, {**csv, **tb}, {}), strict=True):
        j.results["config"] = {"logger": logger}
    assert hparams_rows(jobs) == "HParams tab: a row for each of the 1 of 3 jobs that logged to TensorBoard"


def test_statuses():
    assert _statuses([]) == ""
    assert _statuses([ok_job("a", 1), ok_job("b", 1)]) == "ok"
    assert _statuses([ok_job("a", 1, status="failed")]) == "failed"
    assert _statuses([ok_job("a", 1, status="failed"), ok_job("b", 1, status="diverged"),
                      ok_job("c", 1, status="failed")]) == "2 failed, 1 diverged"


def test_comparison_metric():
    assert comparison_metric([ok_job("a", None, best_val_acc=0.8), ok_job("b", 0.7)]) == "test_acc"
    assert comparison_metric([ok_job("a", None, best_val_acc=0.8)]) == "best_val_acc"
    assert comparison_metric([ok_job("a", 0.9, status="diverged")]) == "best_val_acc"
    assert comparison_metric([]) == "best_val_acc"


# --- cells, rows, tables ---------------------------------------------------------------------------------

def test_fmt():
    assert _fmt(None) == ""
    assert _fmt(0.0) == "0.0000"
    assert _fmt(0.123456) == "0.1235"
    assert _fmt(0.123456, 2) == "0.12"
    assert _fmt(3) == "3"
    assert _fmt("ok") == "ok"


def test_cell_formats_per_metric():
    s = Summary(n=3, mean=0.891234, sd=0.01, ci_low=0.880012, ci_high=0.902345, min=0.88, max=0.9)
    assert _cell("test_acc", s) == "89.12 [88.00, 90.23]"
    assert _cell("best_val_acc", s, with_ci=False) == "89.12"
    e = Summary(n=2, mean=12.25, sd=1.0, ci_low=3.25, ci_high=21.25, min=11.5, max=13.0)
    assert _cell("best_val_epoch", e) == "12.2 [3.2, 21.2]"
    assert _cell("seconds", Summary(n=2, mean=96.6, ci_low=90.4, ci_high=102.8)) == "97 [90, 103]"
    assert _cell("test_acc", Summary(n=1, mean=0.5, min=0.5, max=0.5)) == "50.00"
    assert _cell("test_acc", Summary(n=0)) == "–"


def test_md_table_escapes_pipes_and_newlines():
    assert _md_table(["a", "b"], [["x|y", "1\n2"], [3, None]]) == [
        "| a | b |", "|---|---|", "| x\\|y | 1 2 |", "| 3 | None |"]


def test_rows_of_and_to_csv_give_each_jobs_numbers(tmp_path):
    a = ok_job("0_optim=sgd", 0.8125, seed=1, best_val_acc=0.83, best_val_epoch=2, epochs=3, seconds=12.5,
               provenance={"device_type": "cpu"})
    a.overrides["optim"] = "sgd"
    b = ok_job("1_optim=adam", None, seed=1, status="failed", error="boom")
    b.overrides["optim"] = "adam"
    b.notes, b.error = ["warned once"], "boom"
    c = Job("2_optim=x", tmp_path, overrides={"optim": "x"}, error="no results.json")
    groups = [Group(1, {"optim": "sgd"}, [a]), Group(2, {"optim": "adam"}, [b])]
    header, rows = rows_of([a, b, c], ["optim"], groups)
    assert header == ["job", "group", "optim", "status", "test_acc", "best_val_acc", "best_val_epoch", "epochs",
                      "seconds", "device", "notes", "error"]
    assert rows[0] == {"job": "0_optim=sgd", "group": 1, "optim": "sgd", "status": "ok", "device": "cpu",
                       "test_acc": 0.8125, "best_val_acc": 0.83, "best_val_epoch": 2, "epochs": 3,
                       "seconds": 12.5, "notes": "", "error": ""}
    assert rows[1]["group"] == 2 and rows[1]["status"] == "failed" and rows[1]["test_acc"] is None
    assert (rows[1]["notes"], rows[1]["error"], rows[1]["device"]) == ("warned once", "boom", None)
    assert rows[2]["group"] is None and rows[2]["status"] == "incomplete" and rows[2]["seconds"] is None
    assert to_csv(header, rows) == (
        "job,group,optim,status,test_acc,best_val_acc,best_val_epoch,epochs,seconds,device,notes,error\n"
        "0_optim=sgd,1,sgd,ok,0.8125,0.83,2,3,12.5,cpu,,\n"
        "1_optim=adam,2,adam,failed,,,,,,,warned once,boom\n"
        "2_optim=x,,x,incomplete,,,,,,,,no results.json\n")
    assert to_csv(["a", "b"], [{"a": 0.0}]) == "a,b\n0.0,\n"


def test_group_rows_hold_each_groups_summary():
    g = Group(1, {"optim": "sgd"}, [
        ok_job("a", 0.80, seed=1, best_val_acc=0.81, best_val_epoch=3, seconds=10.0,
               provenance=prov(device="cpu")),
        ok_job("b", 0.90, seed=2, best_val_acc=0.93, best_val_epoch=5, seconds=14.0,
               provenance=prov(device="cpu")),
        ok_job("c", 0.99, seed=3, status="diverged", provenance=prov(config_hash="h2", device="cpu"))])
    header, rows = group_rows([g], ["optim"], [])
    assert header[:5] == ["group", "optim", "seeds", "jobs", "not_ok"]
    assert header[-4:] == ["notes", "config_hash", "torch", "device"]
    assert header[5:11] == ["test_acc_mean", "test_acc_sd", "test_acc_ci_low", "test_acc_ci_high",
                            "test_acc_min", "test_acc_max"]
    row = rows[0]
    assert (row["group"], row["optim"], row["seeds"], row["jobs"], row["not_ok"]) == (1, "sgd", 2, 3, "diverged")
    half = sps.t.ppf(0.975, 1) * math.sqrt(0.005) / math.sqrt(2)  # t(df 1) x sd / sqrt(n)
    assert row["test_acc_mean"] == pytest.approx(0.85)
    assert row["test_acc_sd"] == pytest.approx(math.sqrt(0.005))
    assert row["test_acc_ci_low"] == pytest.approx(0.85 - half) and 0.85 + half > 1
    assert row["test_acc_ci_high"] == 1.0  # an accuracy's interval ends at 100 %
    assert (row["test_acc_min"], row["test_acc_max"]) == (0.80, 0.90)
    assert row["best_val_acc_mean"] == pytest.approx(0.87) and row["best_val_epoch_mean"] == 4.0
    assert row["seconds_mean"] == 12.0 and (row["seconds_min"], row["seconds_max"]) == (10.0, 14.0)
    assert row["config_hash"] == "h1 | h2" and row["torch"] == "2.14.1" and row["device"] == "cpu"
    assert row["notes"] == ""


def test_md_groups_table():
    g1 = Group(1, {"optim": "sgd"}, [ok_job("a", 0.80, seed=1, best_val_acc=0.81, best_val_epoch=3, seconds=10.0),
                                     ok_job("b", 0.90, seed=2, best_val_acc=0.83, best_val_epoch=5, seconds=14.0)])
    g2 = Group(2, {"optim": "adam"}, [ok_job("c", 0.85, seed=1, best_val_acc=0.86, best_val_epoch=1, seconds=9.0),
                                      ok_job("d", None, seed=2, status="failed")])
    lines = md_groups([g1, g2], ["optim"], "test_acc", [])
    s = summarize([0.8, 0.9])
    assert lines[4:] == [
        "| # | optim | seeds | test accuracy | 95 % CI | sd | min – max | best val acc | "
        "best val epoch (from 0) | seconds | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        # two seeds: Student t (df 1) is wide; cut to what each can take (not 148.53 %, -8.7, -13)
        f"| 1 | sgd | 2 | 85.00 | [{100 * s.ci_low:.2f}, 100.00] | 7.07 | 80.00 – 90.00 | "
        f"{_cell('best_val_acc', summarize([0.81, 0.83]))} | 4.0 [0.0, 16.7] | 12 [0, 37] |  |",
        "| 2 | adam | 1 of 2 (failed) | 85.00 | 1 seed: no interval | – | 85.00 – 85.00 | 86.00 | 1.0 | 9 |  |"]
    assert lines[0] == "## Groups: jobs that differ only in seed"
    # an interval inside [0, 100] %: both ends as computed
    g3 = Group(3, {"optim": "sgd"}, [ok_job(str(i), v, seed=i) for i, v in enumerate((0.80, 0.82, 0.81))])
    s3 = summarize([0.80, 0.82, 0.81])
    assert f"| 81.00 | [{100 * s3.ci_low:.2f}, {100 * s3.ci_high:.2f}] |" in md_groups([g3], ["optim"], "test_acc", [])[6]
    assert 100 * s3.ci_high < 100


def test_md_jobs_table_and_the_best_line(tmp_path):
    jobs = [ok_job("0_optim=sgd", 0.8125, seconds=12.4), ok_job("1_optim=adam", 0.95, status="diverged"),
            ok_job("2_optim=adam", 0.875, seconds=99.6), ok_job("3_optim=sgd", 0.5)]
    header = ["job", "group", "status", "test_acc", "seconds", "notes"]
    rows = [{"job": j.name, "group": 1, "status": j.status, "test_acc": j.get("test_acc"),
             "seconds": j.get("seconds"), "notes": ""} for j in jobs]
    for j in jobs:
        j.path = tmp_path  # timing_note reads results.json's time when provenance has none
    (tmp_path / "results.json").write_text("{}")
    lines = md_jobs(jobs, header, rows, "test_acc")
    assert lines[:8] == ["", "## Jobs", "", "| # | status | test_acc | seconds | notes |", "|---|---|---|---|---|",
                         "| 0 | ok | 81.25 % | 12 |  |", "| 1 | diverged | 95.00 % |  |  |",
                         "| 2 | ok | 87.50 % | 100 |  |"]
    assert lines[9] == ""
    assert lines[10] == ("Best single job by test accuracy: 87.50 % (`2_optim=adam`); compare groups, "
                         "not single jobs.")
    none_ok = md_jobs([ok_job("0_a", 0.9, status="failed")], ["job", "status"],
                      [{"job": "0_a", "status": "failed"}], "test_acc")
    assert not any(line.startswith("Best single job") for line in none_ok)


# --- what the first mutation run left alive (docs/testing.md) ---------------------------------------------

def test_a_job_without_names_anywhere_has_empty_choices(tmp_path):
    job = load_job(write_job_dir(tmp_path / "0_a", None, None, {"status": "failed", "config": {}}))
    assert job.choices == {"optim": "", "init": ""}


def test_a_job_without_a_factor_key_groups_under_the_empty_value():
    jobs = [Job("0", Path("."), overrides={"optim": "sgd"}), Job("1", Path("."), overrides={})]
    assert [g.factors for g in group_jobs(jobs, ["optim"])] == [{"optim": "sgd"}, {"optim": ""}]


def tutorial_job(name: str, optim: str, test_acc: float, seed: int) -> Job:
    from src.resolvers import TUTORIAL_LR

    config = {"model": {"act_fn": "relu", "hidden_sizes": [512, 256, 256, 128]}, "data": {"batch_size": 256},
              "trainer": {"max_epochs": 40}, "optim": {"lr": TUTORIAL_LR[optim]}}
    return Job(name, Path("."), overrides={"optim": optim, "seed": str(seed)}, choices={"optim": optim, "init": "kaiming"},
               results={"status": "ok", "test_acc": test_acc, "config": config}, status="ok")


def test_rows_of_adds_the_tutorials_number_and_joins_notes():
    a = tutorial_job("0_optim=adam", "adam", 0.9, 1)
    b = Job("1_x", Path("."), overrides={"seed": "2"}, results={"status": "ok"}, status="ok",
            notes=["did not learn (final val acc 10.0 %, chance 10 %)", "vanishing: layers.0"])
    header, rows = rows_of([a, b], ["optim", "seed"], [])
    assert header[-4:] == ["tutorial_test_acc", "device", "notes", "error"]
    assert rows[0]["tutorial_test_acc"] == 0.8946 and rows[1]["tutorial_test_acc"] is None
    assert rows[1]["optim"] == ""  # a job without the key: an empty cell, not None
    assert rows[1]["notes"] == "did not learn (final val acc 10.0 %, chance 10 %); vanishing: layers.0"
    assert to_csv(header, rows).splitlines()[1].startswith("0_optim=adam,,adam,1,ok,0.9,")


def curve_groups():
    from src.report import Curve, CurveLine

    g1 = Group(1, {"lr_decade": "-1"}, [ok_job("a", 0.80, seed=1)])
    g2 = Group(2, {"lr_decade": "-2"}, [ok_job("b", 0.85, seed=1)], apart="not pooled: torch 2.5.0 (vs 2.14.1)")
    g3 = Group(3, {"lr_decade": "x"}, [ok_job("c", 0.10, seed=1, status="failed"),
                                       ok_job("d", 0.10, seed=2, status="diverged")])
    curve = Curve("lr_decade", "optim.lr", True, [CurveLine("all", [g1, g2], [0.1, 0.01])])
    return [g1, g2, g3], [curve]


def test_group_tables_show_the_resolved_x_and_join_notes():
    groups, curves = curve_groups()
    groups[1].jobs[0].notes = ["did not learn (final val acc 10.0 %, chance 10 %)"]
    header, rows = group_rows(groups, ["lr_decade"], curves)
    assert header[:3] == ["group", "lr_decade", "optim.lr"]
    assert [r["optim.lr"] for r in rows] == [0.1, 0.01, None]
    assert rows[1]["notes"] == "not pooled: torch 2.5.0 (vs 2.14.1); did not learn"
    lines = md_groups(groups, ["lr_decade"], "test_acc", curves)
    assert lines[:4] == ["## Groups: jobs that differ only in seed", "",
                         "Mean over seeds, [95 % interval of the mean] (Student t); sd = standard deviation "
                         "across seeds. Accuracies in %. Only `ok` jobs enter the numbers.", ""]
    assert lines[4].startswith("| # | lr_decade | optim.lr | seeds | test accuracy |")
    assert lines[6].startswith("| 1 | -1 | 0.1 | 1 | 80.00 | 1 seed: no interval | – | 80.00 – 80.00 |")
    assert lines[7].startswith("| 2 | -2 | 0.01 | 1 | 85.00 |")
    assert lines[7].endswith("| not pooled: torch 2.5.0 (vs 2.14.1); did not learn |")
    # a group with no ok job: no numbers at all
    assert lines[8] == "| 3 | x |  | 0 of 2 (1 failed, 1 diverged) | – | – | – | – | – | – | – |  |"


def test_md_jobs_shows_the_job_number_only(tmp_path):
    job = ok_job("12_optim=sgd_mom,seed=1", 0.8)
    lines = md_jobs([job], ["job", "status"], [{"job": job.name, "status": "ok"}], "test_acc")
    assert lines[5] == "| 12 | ok |"
    assert lines[-2] == "" and lines[-1].startswith("`seconds` is the wall time")


def test_on_a_gpu_machine_each_job_is_named_by_the_accelerator_it_asked_for(monkeypatch):
    """Issue 11's cpu,gpu sweep, on a CPU: with CUDA there (faked), `cpu` stays the CPU and gpu,
    cuda and auto name the GPU; the jobs table shows `cpu` or that name."""
    import torch

    from src.provenance import cpu_model, device_of
    from src.report import device_column

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H200")
    assert device_of("cpu") == ("cpu", cpu_model())
    assert [device_of(a) for a in ("gpu", "cuda", "auto")] == [("cuda", "NVIDIA H200")] * 3
    assert device_column({"device_type": "cuda", "device": "NVIDIA H200"}) == "NVIDIA H200"
    assert device_column({"device_type": "cpu", "device": cpu_model()}) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_of("auto")[0] in ("cpu", "mps") and device_of("gpu")[0] == "cpu"


# --- the report's words, sentence by sentence ------------------------------------------------------

def test_group_labels():
    from src.report import Group

    g = Group(1, {"optim": "adam", "model.act_fn": "tanh"}, [])
    assert g.label() == "optim=adam,act_fn=tanh" and g.label(["model.act_fn"]) == "tanh"
    assert g.label(["optim", "model.act_fn"]) == "optim=adam,act_fn=tanh"
    assert Group(2, {}, []).label() == "all jobs" and Group(3, {"seed": "1"}, []).label() == "1"


def _verdict(n_a, n_b, test="paired t", p=0.01, p_holm=0.03, diff=0.0123, ci=(0.004, 0.0206), context=""):
    from src.report import Group, Verdict
    from src.stats import Difference

    a, b = Group(1, {"optim": "sgd"}, []), Group(2, {"optim": "adam"}, [])
    d = Difference(diff, *(ci if ci else (None, None)), p, test, n_a, n_b)
    return Verdict("optim", a, b, d, context, p_holm, 4 if p_holm is not None else 0)


def test_verdict_sentences():
    assert _verdict(3, 3, context="init=xavier").sentence() == (
        "optim: adam − sgd (init=xavier): +1.23 pt [+0.40, +2.06], 3 seeds each, paired by seed, p = 0.01, "
        "Holm-adjusted 0.03 (of 4): adam higher at 95 %")
    assert _verdict(3, 2, test="Welch t", diff=-0.05, ci=(-0.08, -0.02), p=0.002, p_holm=0.008).sentence() == (
        "optim: adam − sgd: -5.00 pt [-8.00, -2.00], 3 vs 2 seeds, Welch (seeds not paired), p = 0.002, "
        "Holm-adjusted 0.008 (of 4): sgd higher at 95 %")
    assert _verdict(1, 2, test="Welch t", p_holm=0.2).sentence().endswith(
        "1 vs 2 seeds, Welch (seeds not paired), p = 0.01, Holm-adjusted 0.2 (of 4): not distinguishable at 95 %")
    assert _verdict(2, 2, p_holm=0.05).sentence().endswith(": not distinguishable at 95 %")  # 0.05 is not < 0.05
    assert _verdict(1, 1, test="1 seed a side: no test", p=None, p_holm=None, ci=None).sentence() == \
        "optim: adam − sgd: +1.23 pt, 1 seed each: 1 seed a side: no test"
    for n_a, n_b in ((0, 3), (3, 0), (0, 0)):
        assert _verdict(n_a, n_b).sentence() == "optim: adam − sgd: not compared, no finished job on one side"


def test_verdicts_heading_says_why_nothing_was_tested():
    from src.report import md_verdicts

    groups = [Group(1, {"optim": "sgd"}, []), Group(2, {"optim": "adam"}, [])]
    untested = {"test": "1 seed a side: no test", "p": None, "p_holm": None, "ci": None}
    # every finished job on one side only: more seeds would not help (it said "sweep seed=1,2,3"
    # to a sweep that had run seed=1,2,3)
    assert md_verdicts([_verdict(0, 3, **untested)], groups, "test_acc")[3] == \
        "1 pair, none tested: 1 with no finished job on one side."
    assert md_verdicts([_verdict(1, 1, **untested), _verdict(3, 0, **untested)], groups, "test_acc")[3] == (
        "2 pairs, none tested: 1 with no finished job on one side; 1 with fewer than 2 finished seeds on a "
        "side, which a test needs (sweep `seed=1,2,3`).")
    # a preset with a seeds version: it is named (init_study was told only `seed=1,2,3`)
    study = [Group(i, {"init": name}, [Job(name, Path("."), choices={"experiment": "init_study"})])
             for i, name in enumerate(["xavier", "kaiming"], 1)]
    assert md_verdicts([_verdict(1, 1, **untested)], study, "test_acc")[3].endswith(
        "(sweep `seed=1,2,3`, or `experiment=init_study_seeds`).")
    study[0].jobs[0].choices["experiment"] = "compare_optimizers_seeds"  # two presets: no advice of one
    assert md_verdicts([_verdict(1, 1, **untested)], study, "test_acc")[3].endswith("(sweep `seed=1,2,3`).")
    # no pair at all; or none left over by a curve, which gets the pairs along its axis
    assert md_verdicts([], groups, "test_acc") == [
        "", "No pair of groups differs in exactly one factor (within the same torch version and device type): "
        "no verdicts."]
    curve, _ = _curve_line([[_ok(0.8, 1)], [_ok(0.9, 1)], [_ok(0.7, 1)]], [1e-3, 1e-2, 1e-1], None)
    assert md_verdicts([], groups, "test_acc", [curve]) == [
        "", "No pair of groups differs in exactly one factor other than `lr_decade` (within the same torch "
        "version and device type); pairs along it are read off its curve below."]
    assert md_verdicts([], groups[:1], "test_acc", [curve]) == []


def test_untested_pairs_are_counted_by_their_own_reason():
    """`optim=sgd,torch_sgd seed=1,2` (the same numbers on every seed) read `1 with fewer than 2
    finished seeds on a side ... (sweep seed=1,2,3)`: every pair with a finished job on both sides
    was counted as too few seeds. Only too few seeds advises more seeds."""
    from src.report import Verdict, md_verdicts
    from src.stats import compare

    sgd, torch_sgd, adam = (Group(i, {"optim": o}, []) for i, o in enumerate(("sgd", "torch_sgd", "adam"), 1))
    same = {"1": 0.81, "2": 0.82}
    identical = Verdict("optim", sgd, torch_sgd, compare(same, dict(same)), "")
    assert md_verdicts([identical], [sgd, torch_sgd], "test_acc")[3:] == [
        "1 pair, none tested: 1 with identical difference on every seed.", "",
        "- optim: torch_sgd − sgd: +0.00 pt [+0.00, +0.00], 2 seeds each: not tested: identical difference "
        "on every seed"]
    flat = Verdict("optim", sgd, adam, compare({"1": 0.8, "2": 0.8}, {"3": 0.9, "4": 0.9}), "")
    one_seed = Verdict("optim", torch_sgd, adam, compare({"1": 0.8}, {"1": 0.9, "2": 0.9}), "")
    empty = Verdict("optim", sgd, adam, compare({}, {"1": 0.9}), "")
    assert md_verdicts([identical, flat, one_seed, empty, identical], [sgd, torch_sgd, adam], "test_acc")[3] == (
        "5 pairs, none tested: 1 with no finished job on one side; 1 with fewer than 2 finished seeds on a "
        "side, which a test needs (sweep `seed=1,2,3`); 2 with identical difference on every seed; "
        "1 with no spread within either group.")


def test_a_group_without_provenance_is_still_paired():
    """A cell whose every job failed before writing provenance: its pairs are listed as not
    compared (they were dropped, and the report said no pair differed in one factor)."""
    from src.report import verdicts

    ok = [Job(f"{i}", Path("."), overrides={"optim": "sgd", "seed": str(i)}, status="ok",
              results={"status": "ok", "test_acc": 0.8 + i / 100, "provenance": prov()}) for i in (1, 2)]
    failed = [Job(f"f{i}", Path("."), overrides={"optim": "adam", "seed": str(i)}, status="failed",
                  results={"status": "failed"}) for i in (1, 2)]
    other_torch = [Job("t", Path("."), overrides={"optim": "torch_sgd", "seed": "1"}, status="ok",
                       results={"status": "ok", "test_acc": 0.8, "provenance": prov(torch="2.5.0")})]
    groups = group_jobs(ok + failed + other_torch, ["optim"])
    found = verdicts(groups, ["optim"], "test_acc")
    # sgd-adam and adam-torch_sgd are listed; sgd-torch_sgd ran on two torch versions: never compared
    assert [(v.a.factors["optim"], v.b.factors["optim"]) for v in found] == [("sgd", "adam"), ("adam", "torch_sgd")]
    assert found[0].sentence() == "optim: adam − sgd: not compared, no finished job on one side"


def _curve_line(points, x, tolerance, log=True, sampled=False):
    from src.report import Curve, CurveLine, Group

    groups = [Group(i + 1, {"lr_decade": str(v)}, jobs) for i, (v, jobs) in enumerate(zip(x, points, strict=True))]
    line = CurveLine("adam", groups, list(x), tolerance)
    return Curve("lr_decade", "optim.lr", log, [line], sampled), line


def _ok(acc, seed):
    return ok_job(f"j{seed}", acc, seed=seed)


def test_curve_sentences():
    from src.report import curve_sentence
    from src.stats import Tolerance

    x = [1e-4, 1e-3, 1e-2, 1e-1]
    points = [[_ok(0.80, 1), _ok(0.82, 2)], [_ok(0.85, 1), _ok(0.87, 2)], [_ok(0.855, 1), _ok(0.865, 2)],
              [ok_job("j9", None, seed=1, status="diverged"), _ok(0.5, 2)]]
    curve, line = _curve_line(points, x, Tolerance(best=1, low=1, high=2, width=1.0, open_low=False, open_high=False))
    assert curve_sentence(curve, line, "test_acc", 1.0) == (
        "adam stays within 1 pt of its best (86.00 % [73.29, 98.71] at lr = 0.001) over 1 decade, 0.001 to 0.01; "
        "not ok at 0.1 (1 of 2 diverged).")
    curve, line = _curve_line(points, x, Tolerance(best=1, low=0, high=2, width=2.0, open_low=True, open_high=False))
    assert curve_sentence(curve, line, "test_acc", 0.5) == (
        "adam stays within 0.5 pt of its best (86.00 % [73.29, 98.71] at lr = 0.001) over at least 2 decades, "
        "0.0001 to 0.01 (the range reaches the grid's edge); not ok at 0.1 (1 of 2 diverged).")
    curve, line = _curve_line(points[:3], [1, 2, 3], Tolerance(best=1, low=1, high=2, width=1.0, open_low=False,
                                                                open_high=True), log=False)
    assert curve_sentence(curve, line, "test_acc", 1.0) == (
        "adam stays within 1 pt of its best (86.00 % [73.29, 98.71] at lr = 2) over at least 1 lr, 2 to 3 "
        "(the range reaches the grid's edge).")
    one_seed = [[_ok(0.8, 1)], [_ok(0.9, 1)], [_ok(0.7, 1)]]
    curve, line = _curve_line(one_seed, x[:3], Tolerance(best=1, low=1, high=1, width=0.0, open_low=False,
                                                         open_high=False))
    assert curve_sentence(curve, line, "test_acc", 1.0) == \
        "adam is within 1 pt of its best (90.00 % (1 seed: no interval) at lr = 0.001) only at that grid point."
    curve, line = _curve_line([[ok_job("f", None, seed=1, status="failed")]], [0.1], None)
    assert curve_sentence(curve, line, "test_acc", 1.0) == \
        "adam: no point with a finished job; not ok at 0.1 (1 of 1 failed)."


def test_the_small_readers_and_joiners_of_the_words():
    from src.report import Group, _config_value, _number, _why_apart, curve_sentence
    from src.stats import Tolerance

    assert Group(1, {"model.net.act_fn": "tanh", "optim": "sgd"}, []).label() == "act_fn=tanh,optim=sgd"
    optuna = Group(1, {"optim.lr": "0.00031489116479568613", "optim": "sgd"}, [])
    assert optuna.label(["optim.lr"]) == "0.00031489116479568613"  # the tables keep every digit
    assert optuna.label(["optim.lr"], compact=True) == "0.000315"  # the figures' ticks: 3 digits
    assert optuna.label(compact=True) == "lr=0.000315,optim=sgd"
    assert Group(1, {"optim.lr": "0.1", "x": "1.2345678e-05"}, []).label(compact=True) == "lr=0.1,x=1.23e-05"
    assert [_number(v) for v in ("1e-3", 2, "-0.5", "nan", "inf", None, "abc", [1])] == \
        [0.001, 2.0, -0.5, None, None, None, None, None]
    config = {"optim": {"lr": 0.1, "betas": [0.9, 0.99]}, "seed": 3}
    assert _config_value(config, "optim.lr") == 0.1 and _config_value(config, "seed") == 3
    assert _config_value(config, "optim.momentum") is None and _config_value(config, "seed.x") is None
    assert _config_value(config, "optim.betas.0") is None and _config_value({}, "a") is None
    keys = [("2.14.1", "cpu", "h1"), ("2.11.0", "cuda", "h1"), ("2.13.0", "cuda", "h1")]
    assert _why_apart(keys[0], keys) == "not pooled: torch 2.14.1 (vs 2.11.0, 2.13.0); device cpu (vs cuda)"
    x = [1e-3, 1e-2, 1e-1]
    points = [[_ok(0.9, 1)], [ok_job("a", None, seed=1, status="diverged")], [ok_job("b", None, seed=1, status="failed")]]
    curve, line = _curve_line(points, x, Tolerance(best=0, low=0, high=0, width=0.0, open_low=True, open_high=False))
    assert curve_sentence(curve, line, "test_acc", 1.0).endswith(
        "only at that grid point, the grid's lowest (its best may lie beyond the grid: sweep further); "
        "not ok at 0.01 (1 of 1 diverged), 0.1 (1 of 1 failed).")
    points = [[_ok(0.5, 1)], [_ok(0.6, 1)], [_ok(0.9, 1)]]
    curve, line = _curve_line(points, x, Tolerance(best=2, low=2, high=2, width=0.0, open_low=False, open_high=True))
    assert curve_sentence(curve, line, "test_acc", 1.0).endswith(
        "at lr = 0.1) only at that grid point, the grid's highest (its best may lie beyond the grid: sweep further).")
    curve, line = _curve_line(points[2:], x[2:], Tolerance(best=0, low=0, high=0, width=0.0, open_low=True,
                                                           open_high=True))
    assert curve_sentence(curve, line, "test_acc", 1.0).endswith(
        "only at that grid point, at the grid's edge (its best may lie beyond the grid: sweep further).")


def test_curve_sentences_of_an_optuna_search_say_tried_not_grid():
    """An Optuna search's points are its trials' sampled values: no grid, no grid point, no
    grid's edge; its ends are the lowest and highest value tried."""
    from src.report import curve_sentence
    from src.stats import Tolerance

    def said(points, x, best, low, high, log=True):
        t = Tolerance(best=best, low=low, high=high, width=0.0 if low == high else 1.0,
                      open_low=low == 0, open_high=high == len(x) - 1)
        curve, line = _curve_line(points, x, t, log=log, sampled=True)
        text = curve_sentence(curve, line, "test_acc", 1.0)
        assert "grid" not in text and "sweep further" not in text
        return text

    x = [2.1e-4, 1.3e-3, 8.7e-3, 5.2e-2]
    one = [[_ok(a, 1)] for a in (0.80, 0.86, 0.90, 0.85)]
    assert said(one, x, 2, 2, 2) == (
        "adam is within 1 pt of its best (90.00 % (1 seed: no interval) at lr = 0.0087) only at that lr of the "
        "4 tried.")
    assert said(one[::-1], x, 0, 0, 0).endswith(
        "only at that lr of the 4 tried, the lowest (its best may lie below it: search lower).")
    assert said(one, x, 3, 3, 3).endswith(
        "at lr = 0.052) only at that lr of the 4 tried, the highest (its best may lie above it: search higher).")
    assert said(one[2:3], x[:1], 0, 0, 0).endswith(
        "only at that lr, the only one tried (its best may lie elsewhere: search further).")
    two = [[_ok(a, 1), _ok(a + 0.002, 2)] for a in (0.85, 0.87, 0.865, 0.80)]
    assert said(two, x, 1, 0, 2) == (
        "adam stays within 1 pt of its best (87.10 % [85.83, 88.37] at lr = 0.0013) over at least 1 decade, "
        "0.00021 to 0.0087 (the range reaches the lowest lr tried).")
    assert said(two[::-1], x, 2, 1, 3).endswith("0.0013 to 0.052 (the range reaches the highest lr tried).")
    assert said(two, x, 1, 0, 3).endswith("0.00021 to 0.052 (the range spans every lr tried).")
    assert said(two, x, 1, 1, 2).endswith("over 1 decade, 0.0013 to 0.0087.")  # inside: as a grid's
    # the same tolerances on a grid keep the grid's words
    curve, line = _curve_line(two, x, Tolerance(best=1, low=0, high=2, width=1.0, open_low=True, open_high=False))
    assert curve_sentence(curve, line, "test_acc", 1.0).endswith("(the range reaches the grid's edge).")
    # the figure's label of a range of one point at an end
    from src.report import _pyplot, figure_curve

    edge = Tolerance(best=3, low=3, high=3, width=0.0, open_low=False, open_high=True)
    for sampled, label in ((True, "best at the edge of those tried"), (False, "best at the grid's edge")):
        curve, _ = _curve_line(one, x, edge, sampled=sampled)
        fig = figure_curve(curve, "test_acc", 1.0)
        assert label in [t.get_text() for t in fig.axes[0].texts]
        _pyplot().close(fig)


def test_notes_did_not_learn_at_chance_and_the_runs_own_warnings():
    from src.report import notes_of

    def job(val, status="ok", warnings=None, classes=None):
        config = {"model": {"num_classes": classes}} if classes else {}
        return Job("0", Path("."), results={"val_scores": val, "warnings": warnings, "config": config}, status=status)

    assert notes_of(job([0.5, 0.12])) == ["did not learn (final val acc 12.0 %, chance 10 %)"]  # 0.12 <= 0.1 + 0.02
    assert notes_of(job([0.1, 0.1201])) == []
    assert notes_of(job([0.2, 0.22], classes=5)) == ["did not learn (final val acc 22.0 %, chance 20 %)"]
    assert notes_of(job([0.5, 0.1], status="diverged")) == []  # only a finished run is judged
    assert notes_of(job([None, None])) == [] and notes_of(job([])) == []
    own = ["did not learn: the loss never fell", "x"]
    assert notes_of(job([0.1], warnings=own)) == own  # the run said it already: not twice
    assert notes_of(job([0.9], warnings=["slow"])) == ["slow"]
    assert notes_of(job([0.1], warnings=["slow"])) == ["did not learn (final val acc 10.0 %, chance 10 %)", "slow"]
    assert notes_of(job([0.9, 0.5, 0.35], classes=3)) == ["did not learn (final val acc 35.0 %, chance 33 %)"]


def _tutorial_job(optim="adam", init="kaiming", **change):
    config = {"model": {"act_fn": "relu", "hidden_sizes": [512, 256, 256, 128]}, "data": {"batch_size": 256},
              "trainer": {"max_epochs": 40}, "optim": {"lr": {"sgd": 0.1, "sgd_mom": 0.1, "adam": 1e-3}[optim]}}
    for dotted, value in change.items():
        group, key = dotted.split("__")
        config[group][key] = value
    return Job("0", Path("."), choices={"optim": optim, "init": init}, results={"config": config}, status="ok")


def test_the_tutorials_number_only_for_the_tutorials_setting():
    from src.report import tutorial_reference

    assert [tutorial_reference(_tutorial_job(o)) for o in ("sgd", "sgd_mom", "adam")] == [0.8909, 0.8883, 0.8946]
    assert tutorial_reference(_tutorial_job("adam", optim__lr=1.0000000001e-3)) == 0.8946  # the same lr
    for change in ({"init": "xavier"}, {"model__act_fn": "tanh"}, {"model__hidden_sizes": [512, 256]},
                   {"data__batch_size": 128}, {"trainer__max_epochs": 3}, {"trainer__limit_train_batches": 10},
                   {"data__train_subset": 1000}, {"optim__lr": 0.01}, {"optim__lr": "${oops}"}):
        assert tutorial_reference(_tutorial_job(**change)) is None, change
    assert tutorial_reference(Job("0", Path("."), choices={"optim": "adam"}, results={}, status="ok")) is None
    full = _tutorial_job().config
    for partial in ({"optim": {"lr": 1e-3}}, {"model": {"act_fn": "relu"}},  # a failed job's partial config
                    {"model": full["model"], "optim": full["optim"], "trainer": full["trainer"]},
                    {"model": full["model"], "optim": full["optim"], "data": full["data"]}):
        job = Job("0", Path("."), choices={"optim": "adam", "init": "kaiming"}, results={"config": partial})
        assert tutorial_reference(job) is None
    job = _tutorial_job()
    job.choices["optim"] = "rmsprop"
    assert tutorial_reference(job) is None


def test_group_notes_and_the_provenance_line():
    from src.report import Group, _group_notes, provenance_lines

    def job(commit, dirty, val=0.9, **p):
        return Job("0", Path("."), status="ok", notes=["did not learn (x)"] if val < 0.2 else [],
                   results={"provenance": {"git_commit": commit, "git_dirty": dirty, **p}})

    assert _group_notes(Group(1, {}, [job("a", False), job("a", False)])) == []
    assert _group_notes(Group(1, {}, [job("a", False), job("a", True), job("b", False)], apart="not pooled: x")) == \
        ["not pooled: x", "ran on 3 code versions (git commit/dirty)"]
    assert _group_notes(Group(1, {}, [job("a", False, val=0.1)])) == ["did not learn"]
    assert _group_notes(Group(1, {}, [job("a", False), job("a", True)])) == ["ran on 2 code versions (git commit/dirty)"]
    warned = [ok_job("0", 0.5, seed=1, warnings=["stopped early: 1.40 of 3 epochs (7 steps) by trainer.max_steps=7; …",
                                                 "test_acc is of the final weights, not of the best-val checkpoint: …"]),
              ok_job("1", 0.5, seed=2, warnings=["did not learn: …", "trainer.fast_dev_run: a smoke test …"]),
              ok_job("2", 0.5, seed=3, warnings=["stopped early: 2.00 of 3 epochs (10 steps) by a callback …",
                                                 "test_acc is over 2048 of the 10000 test images (…), not all"]),
              ok_job("3", None, seed=4, status="diverged", warnings=["stopped early: …"])]  # not counted
    assert _group_notes(Group(1, {}, warned)) == [
        "stopped early: 2 of 3 jobs, see Jobs", "test_acc not of the best-val checkpoint: 1 of 3 jobs, see Jobs",
        "fast_dev_run smoke test: 1 of 3 jobs, see Jobs", "test_acc over part of the test set: 1 of 3 jobs, see Jobs"]
    assert _group_notes(Group(1, {}, warned[2:3])) == ["stopped early: 1 of 1 job, see Jobs",
                                                       "test_acc over part of the test set: 1 of 1 job, see Jobs"]
    warned[2].results["warnings"].append("val_scores are over 1024 of the 10000 val images (…), not all of them")
    assert _group_notes(Group(1, {}, warned[2:3]))[-1] == "val scores over part of the val split: 1 of 1 job, see Jobs"
    assert provenance_lines([Job("0", Path("."))]) == \
        ["Provenance: none recorded (results.json without a `provenance` entry)."]
    p = dict(python="3.11.2", torch="2.14.1", lightning="2.6.0", hydra="1.3.2", device_type="cpu", device="Xeon")
    jobs = [job("0123456789abcdef", False, **p), job("0123456789abcdef", True, **p), job("fedcba9876", False, **p),
            Job("3", Path("."))]
    assert provenance_lines([job("c", False, **{**p, "python": "3.12.1"}), *jobs])[0].startswith(
        "Provenance (4 of 5 jobs): Python 3.12.1, 3.11.2, torch 2.14.1,")
    assert provenance_lines(jobs) == [
        "Provenance (3 of 4 jobs): Python 3.11.2, torch 2.14.1, Lightning 2.6.0, Hydra 1.3.2; device cpu (Xeon); "
        "commit 0123456789, 0123456789 (dirty), fedcba9876."]


def test_timing_note_says_whether_jobs_shared_the_machine(tmp_path):
    from src.report import timing_note

    def job(end, seconds, load=None, cores=2, name="j"):  # end: minutes.seconds past 10:00
        prov = {"finished_at": f"2026-11-29T10:{end:05.2f}+00:00".replace(".", ":", 1) if end is not None else None,
                "load_avg_1min": load, "cpu_count": cores}
        return Job(name, tmp_path / name, results={"seconds": seconds, "provenance": prov}, status="ok")

    head = ("`seconds` is the wall time of `train(cfg)` inside the job: data loading, model build, training, "
            "validation and the test pass; not the interpreter start and imports. ")
    one_after_another = [job(1, 60), job(2, 60), job(3, 60)]  # each ended a minute after the last: no overlap
    assert timing_note(one_after_another) == head + "Jobs ran one after another."
    together = [Job("x", tmp_path, results={}, status="failed"), job(1, 60), job(1, 50), job(2, 100)]
    assert timing_note(together) == head + "Up to 3 jobs ran at the same time, so their times include waiting " \
                                           "for shared cores."
    # 1.2 s of overlap counts (only half a second on each side is forgiven as rounding)
    assert timing_note([job(1, 60), job(2, 61.2)]).endswith("Up to 2 jobs ran at the same time, so their times "
                                                            "include waiting for shared cores.")
    assert timing_note([job(1, 60), job(2, 60.8)]).endswith("Jobs ran one after another.")
    # two 0.8 s jobs that ended in the same second ran side by side; their spans turned inside out
    # when a whole second was trimmed, and the note said "one after another"
    assert "Up to 2 jobs" in timing_note([job(1.00, 0.8), job(1.00, 0.8)])
    assert timing_note([job(1.00, 0.8), job(1.01, 0.8)]).endswith("Jobs ran one after another.")
    assert timing_note([job(1, "abc"), job(2, -1), job(3, 60)]).endswith("Jobs ran one after another.")
    # (end is minutes.seconds) three at once only after one of four ended: each end counts one down
    assert "Up to 3 jobs" in timing_note([job(1.40, 100), job(0.20, 10), job(0.40, 10), job(0.45, 10)])
    assert timing_note([job(1, 60, load=2.0, cores=2)]).endswith("one after another.")  # at the core count: fine
    busy = [job(1, 60, load=3.25), job(2, 60, load=5.0, cores=4), job(3, 60, load=1.0)]
    assert timing_note(busy) == head + ("Jobs ran one after another. Load average up to 5.0 on 4 cores: the machine "
                                        "was shared; times are upper bounds.")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "results.json").write_text("{}")  # no finished_at: the file's time is the end
    assert timing_note([job(None, 60, name="m"), job(None, 60, name="m")]) == head + \
        "Up to 2 jobs ran at the same time, so their times include waiting for shared cores."


def test_val_curves_figure_counts_epochs_from_0_as_best_val_epoch_does():
    from src.report import figure_val_curves

    def job(name, optim, seed, scores):
        return ok_job(name, 0.5, seed=seed, val_scores=scores) if optim is None else Job(
            name, Path("/nonexistent"), overrides={"optim": optim, "seed": str(seed)}, status="ok",
            results={"status": "ok", "test_acc": 0.5, "val_scores": scores})
    jobs = [job("0", "sgd", 1, [0.5, 0.7, 0.8]), job("1", "sgd", 2, [0.6, 0.7, 0.9, 0.95]),
            job("2", "adam", 1, [0.1, 0.1, 0.1])]
    jobs[2].notes.append("did not learn (final val acc 10.0 %)")
    fig = figure_val_curves(group_jobs(jobs, ["optim"]), ["optim"])
    ax = fig.axes[0]
    (line,) = ax.lines  # the group that did not learn is left out, and the title says so
    assert list(line.get_xdata()) == [0, 1, 2]  # the shorter run sets the length
    assert list(line.get_ydata()) == pytest.approx([55.0, 70.0, 85.0])
    assert line.get_label() == "sgd (2 seeds)"
    assert ax.get_title().endswith("(not drawn: 1 group that did not learn)")
    band = ax.collections[0].get_paths()[0].vertices  # mean ± t(0.975, 1) · sd / √2
    half = sps.t.ppf(0.975, 1) * math.sqrt(0.005) / math.sqrt(2)
    assert 85.0 + 100 * half > 100 and band[:, 1].max() == 100.0  # the band ends at 100 %
    assert 55.0 - 100 * half < 0 and band[:, 1].min() == 0.0  # and at 0 %
    assert band[:, 0].min() == 0


def test_a_job_that_validated_no_epoch_has_no_best_epoch_in_its_row():
    """results.json's best_val_epoch -1 (a run that diverged in its first epoch) is no epoch: the
    row leaves it blank, as its test_acc, instead of showing -1. Epoch 0 stays 0."""
    d = ok_job("0_optim=sgd", None, seed=1, status="diverged", best_val_epoch=-1, epochs=0)
    e = ok_job("1_optim=sgd", 0.5, seed=2, best_val_epoch=0, epochs=1)
    _, rows = rows_of([d, e], [], [])
    assert (rows[0]["best_val_epoch"], rows[0]["epochs"]) == (None, 0)
    assert rows[1]["best_val_epoch"] == 0


def test_a_long_fraction_is_shown_to_4_digits_in_the_tables():
    """Optuna's lr 0.00031489116479568613 filled its column of summary.md; summary.csv keeps it."""
    from src.report import _shown

    assert _shown("0.00031489116479568613") == "0.0003149"
    assert [_shown(v) for v in ("0.001", "12345678", "kaiming_normal", "1e-05", None)] == \
        ["0.001", "12345678", "kaiming_normal", "1e-05", None]
